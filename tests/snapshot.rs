//! Snapshots over real restarts: a start after many records writes one,
//! the next start loads it and replays only the journal after it, and
//! everything (accounts, contacts, groups, inboxes, read state, resends) is
//! as a full replay leaves it; a damaged snapshot is skipped for a full
//! replay.

mod util;

use courier::codec::proto::DeliveryMode;
use courier::net::{self, ServerConfig};
use util::*;

/// A user's view of the state: inbox (server id, group, body), unread
/// count, groups.
type View = (Vec<(u64, u64, Vec<u8>)>, u64, Vec<u64>);

/// What `user` sees after a start of the server.
fn view(config: &ServerConfig, user: &str) -> View {
    let server = net::start(config.clone()).unwrap();
    let address = server.local_addr();
    let mut client = courier::client::Client::connect(address).unwrap();
    let ok = client
        .login(user, &password(user), "checker", DeliveryMode::PushNotice)
        .unwrap();
    let inbox = client
        .sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| (m.server_message_id, m.group_id, m.body))
        .collect();
    let groups = client
        .groups()
        .unwrap()
        .iter()
        .map(|g| g.group_id)
        .collect();
    drop(client);
    server.shutdown().unwrap();
    (inbox, ok.unread_count, groups)
}

#[test]
fn a_restart_loads_the_snapshot_and_replays_only_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.open_messaging = false;
    config.broker.snapshot_min_records = 20;
    let server = net::start(config.clone()).unwrap();
    let address = server.local_addr();
    assert_eq!(server.report().snapshot_loaded, None);
    for user in ["ana", "bo", "cy"] {
        register(address, user);
    }
    befriend(address, "ana", "bo");
    befriend(address, "ana", "cy");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let group = ana.group_create("trip", &["bo", "cy"]).unwrap().group_id;
    for n in 1..=10u64 {
        ana.send("bo", n, &n.to_le_bytes()).unwrap();
        ana.send_group(group, 100 + n, &n.to_le_bytes()).unwrap();
    }
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    bo.mark_read("ana", 5).unwrap();
    drop((ana, bo));
    server.shutdown().unwrap();

    // The second start replays everything and writes a snapshot at its
    // start marker.
    let server = net::start(config.clone()).unwrap();
    let second = server.report().clone();
    assert_eq!(second.snapshot_loaded, None);
    let written = second
        .snapshot_written
        .expect("a snapshot after 20 records");
    let address = server.local_addr();
    // More traffic after the snapshot, including a resend of an old id
    // from the device that sent it (its key is in the snapshot).
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let again = ana.send("bo", 3, &3u64.to_le_bytes()).unwrap();
    ana.send_group(group, 200, b"after the snapshot").unwrap();
    drop(ana);
    server.shutdown().unwrap();
    // What bo sees after a start that loads the snapshot; the damaged
    // snapshot below makes a full replay to compare it with.
    let expected = view(&config, "bo");

    // Every later start loads it and replays only the records after it.
    let server = net::start(config.clone()).unwrap();
    let third = server.report().clone();
    server.shutdown().unwrap();
    assert_eq!(third.snapshot_loaded, Some(written));
    assert!(
        third.records_replayed < second.records_replayed,
        "{} records replayed after the snapshot, {} without",
        third.records_replayed,
        second.records_replayed
    );
    assert_eq!(third.users, 3);
    let (inbox, unread, groups) = view(&config, "bo");
    assert_eq!((inbox.clone(), unread, groups.clone()), expected.clone());
    assert_eq!(
        inbox.len(),
        21,
        "ten 1:1, eleven group messages, the resend stored once"
    );
    assert!(inbox.iter().any(|m| m.0 == again.server_message_id));
    // bo marked its first five entries read: three of them 1:1 messages
    // (the 1:1 and group messages alternate), all from ana.
    assert_eq!(unread, 18);
    assert_eq!(groups, [group]);

    // A damaged snapshot is skipped: a full replay gives the same state.
    let snapshot = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .expect("a snapshot file");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&snapshot, bytes).unwrap();
    let server = net::start(config.clone()).unwrap();
    let fourth = server.report().clone();
    server.shutdown().unwrap();
    assert_eq!(fourth.snapshot_loaded, None);
    assert_eq!(view(&config, "bo"), expected);
}
