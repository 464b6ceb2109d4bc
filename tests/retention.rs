//! Message retention over real restarts: messages older than
//! `message_retention_s` leave the inboxes and the unread counts, the next
//! start that has a snapshot deletes the journal segments nothing needs
//! any more, and a start refuses to go on when what stands in for the
//! deleted records (the snapshot, the SQLite projection) is gone. While
//! the server runs, snapshots taken in the background delete them too.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use courier::broker::Clock;
use courier::client::Client;
use courier::codec::proto::DeliveryMode;
use courier::net::{self, ServerConfig};
use util::*;

const RETENTION_S: u64 = 3;

fn retention_config(dir: &std::path::Path) -> ServerConfig {
    let mut config = config(dir);
    config.broker.message_retention_s = RETENTION_S;
    // Small segments, so that the old messages fill several; a snapshot
    // at every start.
    config.broker.segment_size_mb = 1;
    config.broker.snapshot_min_records = 1;
    // Only the starts delete segments here (the last test covers the
    // snapshots taken while serving).
    config.broker.snapshot_every_segments = 0;
    config
}

/// The journal's segments, as `courier journal inspect` lists them.
fn segments(dir: &std::path::Path) -> usize {
    courier::journal::inspect(dir.join("journal"))
        .unwrap()
        .len()
}

/// The 16 KiB body of every message ana sends.
const BODY: [u8; 16 * 1024] = [7; 16 * 1024];

/// Registers ana and bo, and has ana send bo `count` messages (client ids
/// from 1); returns ana's connection.
fn ana_sends_bo(address: SocketAddr, count: u64) -> Client {
    register(address, "ana");
    register(address, "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushNotice);
    for n in 1..=count {
        ana.send("bo", n, &BODY).unwrap();
    }
    ana
}

#[test]
fn old_messages_expire_and_their_segments_go_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = retention_config(dir.path());
    let clock = Clock::manual();
    config.broker.clock = clock.clone();
    let server = net::start(config.clone()).unwrap();
    let address = server.local_addr();
    // 200 messages of 16 KiB: about three 1 MiB segments.
    let mut ana = ana_sends_bo(address, 200);
    let full = segments(dir.path());
    assert!(full >= 4, "{full} segments");
    // Time moves past the retention of every message sent so far.
    clock.advance(Duration::from_millis(RETENTION_S * 1000 + 500));
    // The next message's journaled time is past the retention of all
    // the others: it runs the expiry pass.
    let fresh = ana.send("bo", 201, b"fresh").unwrap();
    assert_eq!(fresh.inbox_sequence, 201, "sequences never change");
    let mut bo = Client::connect(address).unwrap();
    let ok = bo
        .login("bo", &password("bo"), "phone", DeliveryMode::PushNotice)
        .unwrap();
    assert_eq!((ok.head_sequence, ok.unread_count), (201, 1));
    let synced = bo.sync_all(0).unwrap();
    assert_eq!(synced.len(), 1, "only the fresh message is held");
    assert_eq!(
        (synced[0].inbox_sequence, synced[0].body.as_slice()),
        (201, &b"fresh"[..])
    );
    // A resend of an expired message's client id is still recognised.
    let again = ana.send("bo", 5, &BODY).unwrap();
    assert_eq!(again.inbox_sequence, 5);
    // The census counts what memory holds: the fresh message, in two
    // inboxes (published once per batch, so wait for it).
    eventually(Duration::from_secs(5), "1 message in 2 entries", || {
        let stats = server.stats();
        let held = (stats.messages_held, stats.inbox_entries);
        (held == (1, 2))
            .then_some(())
            .ok_or_else(|| format!("held {} messages in {} entries", held.0, held.1))
    });
    drop((ana, bo));
    server.shutdown().unwrap();

    // The next start writes a snapshot and deletes the segments before
    // the fresh message, which it still holds.
    let server = net::start(config.clone()).unwrap();
    let report = server.report().clone();
    assert!(report.snapshot_written.is_some());
    assert!(
        report.segments_deleted >= 3,
        "{} of {full} segments deleted",
        report.segments_deleted
    );
    assert_eq!(segments(dir.path()), full - report.segments_deleted);
    assert_eq!(
        server.stats().journal_segments_deleted,
        report.segments_deleted as u64
    );
    let mut bo = login(
        server.local_addr(),
        "bo",
        "laptop",
        DeliveryMode::PushNotice,
    );
    let synced = bo.sync_all(0).unwrap();
    assert_eq!(
        synced
            .iter()
            .map(|m| (m.inbox_sequence, m.body.clone()))
            .collect::<Vec<_>>(),
        [(201, b"fresh".to_vec())]
    );
    drop(bo);
    server.shutdown().unwrap();

    // Starts go on loading the snapshot, and account logins still work.
    let server = net::start(config.clone()).unwrap();
    assert!(server.report().snapshot_loaded.is_some());
    login(
        server.local_addr(),
        "ana",
        "tablet",
        DeliveryMode::PushNotice,
    );
    server.shutdown().unwrap();

    // Without the snapshot the rest of the journal cannot rebuild the
    // accounts: the start refuses, naming what is missing.
    let kept = dir.path().join("kept-snapshots");
    std::fs::rename(dir.path().join("snapshots"), &kept).unwrap();
    let error = net::start(config.clone()).err().expect("the start refuses");
    let message = error.to_string();
    assert!(
        message.contains("no usable snapshot") && message.contains("message retention"),
        "{message}"
    );
    std::fs::rename(&kept, dir.path().join("snapshots")).unwrap();
    // Nor can the SQLite projection be rebuilt from it.
    std::fs::remove_file(dir.path().join("courier.db")).unwrap();
    let error = net::start(config.clone()).err().expect("the start refuses");
    assert!(error.to_string().contains("courier.db"), "{error}");
}

#[test]
fn without_a_retention_nothing_expires_or_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = retention_config(dir.path());
    config.broker.message_retention_s = 0;
    let server = net::start(config.clone()).unwrap();
    drop(ana_sends_bo(server.local_addr(), 100));
    server.shutdown().unwrap();
    let full = segments(dir.path());
    let server = net::start(config.clone()).unwrap();
    assert_eq!(server.report().segments_deleted, 0);
    assert_eq!(segments(dir.path()), full);
    let mut bo = login(server.local_addr(), "bo", "phone", DeliveryMode::PushNotice);
    assert_eq!(bo.sync_all(0).unwrap().len(), 100);
    drop(bo);
    server.shutdown().unwrap();
}

/// The ids of the journal's oldest and newest segments.
fn segment_ids(dir: &std::path::Path) -> (u64, u64) {
    let found = courier::journal::inspect(dir.join("journal")).unwrap();
    (found[0].id, found[found.len() - 1].id)
}

#[test]
fn snapshots_taken_while_serving_delete_old_segments_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = retention_config(dir.path());
    config.broker.message_retention_s = 1;
    config.broker.snapshot_every_segments = 1;
    let server = net::start(config.clone()).unwrap();
    let address = server.local_addr();
    // 100 messages of 16 KiB: segments 0 and 1 fill.
    let mut ana = ana_sends_bo(address, 100);
    assert!(segment_ids(dir.path()).1 >= 1);
    // New messages go on (each runs an expiry pass) until the background
    // snapshot, once the old ones expired, deletes segment 0.
    let mut client_id = 100;
    eventually(Duration::from_secs(60), "segment 0 to be deleted", || {
        let segments = segment_ids(dir.path());
        if segments.0 != 0 {
            return Ok(());
        }
        client_id += 1;
        ana.send("bo", client_id, b"fresh").unwrap();
        Err(format!("segments {segments:?}"))
    });
    let stats = server.stats();
    assert!(stats.snapshots_taken >= 1, "{stats:?}");
    assert!(stats.journal_segments_deleted >= 1, "{stats:?}");
    // The deleted segment's file is kept to be written again as a later
    // segment (no segment has been made since), and goes at the stop.
    assert!(kept_files(dir.path()) >= 1);
    let snapshots: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(snapshots.len(), 1, "the newest only: {snapshots:?}");
    // Nothing still held was lost: bo's inbox holds the recent messages,
    // and sequences never change.
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
    let synced = bo.sync_all(0).unwrap();
    assert!(!synced.is_empty());
    assert_eq!(synced.last().unwrap().inbox_sequence, client_id);
    assert!(synced.iter().all(|m| m.body == b"fresh"));
    drop(bo);

    // The next start loads the snapshot taken while serving (the journal
    // no longer holds the accounts).
    drop(ana);
    server.shutdown().unwrap();
    assert_eq!(kept_files(dir.path()), 0);
    let server = net::start(config.clone()).unwrap();
    let report = server.report().clone();
    assert!(report.snapshot_loaded.is_some(), "{report:?}");
    let mut bo = login(
        server.local_addr(),
        "bo",
        "laptop",
        DeliveryMode::PushNotice,
    );
    let synced = bo.sync_all(0).unwrap();
    assert_eq!(synced.last().unwrap().inbox_sequence, client_id);
    let mut ana = login(
        server.local_addr(),
        "ana",
        "phone",
        DeliveryMode::PushNotice,
    );
    let again = ana.send("bo", client_id, b"fresh").unwrap();
    assert_eq!(again.inbox_sequence, client_id, "a resend is recognised");
    drop((ana, bo));
    server.shutdown().unwrap();
}

/// Journal segment files kept for reuse (`journal/*.recycled`).
fn kept_files(data_dir: &std::path::Path) -> usize {
    std::fs::read_dir(data_dir.join("journal"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "recycled")
        })
        .count()
}

#[test]
fn a_snapshot_that_cannot_be_written_deletes_nothing_and_harms_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = retention_config(dir.path());
    config.broker.message_retention_s = 1;
    config.broker.snapshot_every_segments = 1;
    // A file where the snapshots' directory should be: every snapshot
    // write fails.
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("snapshots"), b"in the way").unwrap();
    let server = net::start(config.clone()).unwrap();
    let address = server.local_addr();
    let mut ana = ana_sends_bo(address, 100);
    std::thread::sleep(Duration::from_millis(1500));
    // Snapshots fall due and fail, for 3 s; the messages go on.
    for n in 101..=130 {
        let ack = ana.send("bo", n, b"fresh").unwrap();
        assert_eq!(ack.inbox_sequence, n);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        segment_ids(dir.path()).0,
        0,
        "no segment goes without a snapshot to stand in for it"
    );
    let stats = server.stats();
    assert_eq!(
        (stats.snapshots_taken, stats.journal_segments_deleted),
        (0, 0)
    );
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
    assert_eq!(bo.sync_all(0).unwrap().last().unwrap().inbox_sequence, 130);
    drop((ana, bo));
    server.shutdown().unwrap();
}
