//! The server's counters move with what happens on the wire: connections
//! accepted and closed (and why), frames and bytes in and out, journal
//! records.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use courier::codec::proto::DeliveryMode;
use courier::net::ServerStats;
use util::*;

/// Waits until `check` holds for the server's counters (they are added up
/// once per I/O loop pass).
fn stats_when(
    server: &courier::net::ServerHandle,
    check: impl Fn(&ServerStats) -> bool,
) -> ServerStats {
    eventually(Duration::from_secs(5), "the counters", || {
        let stats = server.stats();
        if check(&stats) {
            Ok(stats)
        } else {
            Err(format!("{stats:?}"))
        }
    })
}

#[test]
fn counters_follow_connections_frames_bytes_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    // The registering clients are gone.
    let start = stats_when(&server, |s| s.connections_open == 0);
    assert_eq!(start.connections_accepted, 2);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    for n in 0..10u64 {
        ana.send("bo", n, b"counted").unwrap();
    }
    for _ in 0..10 {
        expect_push(&mut bo);
    }
    // The counters are added up at the end of an I/O pass, which may come
    // just after the pass's writes reach the client.
    let during = stats_when(&server, |s| {
        s.connections_open == 2 && s.frames_in >= start.frames_in + 14
    });
    // Hello and Login on each, then ten Sends.
    assert!(during.frames_in >= start.frames_in + 14, "{during:?}");
    assert!(during.bytes_in > start.bytes_in);
    assert!(during.bytes_out > start.bytes_out);
    // Two connections, two logins (journaled once verified), ten messages.
    assert!(
        during.journal_records >= start.journal_records + 14,
        "{during:?}"
    );
    // The journal's files, as the directory lists them (the next segment
    // is made in the background, so look until the two agree), and the
    // room left.
    let journal_files = || -> u64 {
        std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum()
    };
    let sized = stats_when(&server, |s| s.journal_bytes == journal_files());
    assert!(sized.journal_bytes >= 4 << 20, "a whole segment: {sized:?}");
    assert!(sized.disk_free_bytes > 0, "{sized:?}");

    // A client that sends bytes that are not framing is closed, and counted.
    let mut bad = TcpStream::connect(address).unwrap();
    bad.write_all(&[0, 0, 0, 1, 9]).unwrap();
    let after = stats_when(&server, |s| {
        s.closed_bad_framing == 1 && s.connections_open == 2
    });
    assert_eq!(after.connections_accepted, during.connections_accepted + 1);
    drop((ana, bo));
    stats_when(&server, |s| s.connections_open == 0);
    server.shutdown().unwrap();
}

#[test]
fn the_census_counts_registered_users_and_who_is_online_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    stats_when(&server, |s| {
        s.users_registered == 3 && s.users_online == 0 && s.devices_online == 0
    });
    let ana_phone = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut ana_laptop = login(address, "ana", "laptop", DeliveryMode::PushNotice);
    let bo_phone = login(address, "bo", "phone", DeliveryMode::PushMessage);
    stats_when(&server, |s| s.users_online == 2 && s.devices_online == 3);

    // A logout and a dropped connection each take a device off; ana stays
    // online while one of her devices is.
    ana_laptop.logout().unwrap();
    stats_when(&server, |s| s.users_online == 2 && s.devices_online == 2);
    drop(bo_phone);
    let during = stats_when(&server, |s| s.users_online == 1 && s.devices_online == 1);
    assert_eq!(during.users_registered, 3);
    drop((ana_phone, ana_laptop));
    stats_when(&server, |s| s.devices_online == 0);
    server.shutdown().unwrap();

    // After a restart the accounts are still there and no one is online.
    let server = courier::net::start(config(dir.path())).unwrap();
    let after = server.stats();
    assert_eq!(
        (
            after.users_registered,
            after.users_online,
            after.devices_online
        ),
        (3, 0, 0)
    );
    let address = server.local_addr();
    let _cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    stats_when(&server, |s| s.users_online == 1 && s.devices_online == 1);
    server.shutdown().unwrap();
}

#[test]
fn links_that_go_silent_are_counted_offline_once_the_heartbeat_timeout_passes() {
    // Phones whose network vanished: their sockets stay open (no FIN, no
    // logout), they just stop sending. The census counts them online until
    // the heartbeat timeout closes them, then not at all.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.heartbeat_timeout_ms = 60_000;
    let clock = courier::broker::Clock::manual();
    config.broker.clock = clock.clone();
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    for user in ["ana", "bo"] {
        register(address, user);
    }
    let silent = [
        login(address, "ana", "phone", DeliveryMode::PushMessage),
        login(address, "ana", "laptop", DeliveryMode::PushNotice),
        login(address, "bo", "phone", DeliveryMode::PushMessage),
    ];
    stats_when(&server, |s| s.users_online == 2 && s.devices_online == 3);
    // Just short of the timeout: still online (the overstatement the
    // documented bound allows).
    clock.advance(Duration::from_millis(59_000));
    std::thread::sleep(Duration::from_millis(100));
    let before = server.stats();
    assert_eq!((before.users_online, before.devices_online), (2, 3));
    // The timeout is checked every quarter of it: past 1.25 timeouts of
    // silence every one of them is offline.
    clock.advance(Duration::from_millis(16_001));
    let after = stats_when(&server, |s| s.users_online == 0 && s.devices_online == 0);
    assert_eq!(after.closed_heartbeat_timeout, 3);
    drop(silent);
    server.shutdown().unwrap();
}

#[test]
fn users_active_counts_who_sent_anything_in_the_last_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.heartbeat_timeout_ms = 600_000;
    let clock = courier::broker::Clock::manual();
    config.broker.clock = clock.clone();
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    for user in ["ana", "bo", "cy"] {
        register(address, user);
    }
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    // A login is a frame: both count.
    stats_when(&server, |s| s.users_active == 2);
    clock.advance(Duration::from_secs(40));
    ana.ping(1).unwrap();
    clock.advance(Duration::from_secs(30));
    // 70 s after his login bo has been quiet for more than a minute, ana
    // for 30 s; bo's ping makes him active again. (The count is taken as
    // logic applies a command.)
    bo.ping(2).unwrap();
    stats_when(&server, |s| s.users_active == 2);
    // A minute later nobody has sent anything but cy, who logs in.
    clock.advance(Duration::from_secs(61));
    let _cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    let now = stats_when(&server, |s| s.users_active == 1);
    assert_eq!(now.users_online, 3, "online and active are apart");
    server.shutdown().unwrap();
}

#[test]
fn bytes_in_counts_every_byte_even_when_a_frame_arrives_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut client = courier::client::Client::connect(server.local_addr()).unwrap();
    let start = stats_when(&server, |s| s.frames_in >= 1);
    // Two pings, the second cut in half: the first is taken, the half is
    // kept (and moved to the front of the buffer) until the rest comes.
    let mut bytes = Vec::new();
    for nonce in [1, 2] {
        courier::codec::Message::Ping(courier::codec::proto::Ping {
            nonce,
            ..Default::default()
        })
        .encode_frame(nonce, &mut bytes);
    }
    let cut = bytes.len() - 5;
    client.stream().write_all(&bytes[..cut]).unwrap();
    stats_when(&server, |s| s.frames_in == start.frames_in + 1);
    client.stream().write_all(&bytes[cut..]).unwrap();
    let after = stats_when(&server, |s| s.frames_in == start.frames_in + 2);
    assert_eq!(after.bytes_in, start.bytes_in + bytes.len() as u64);
    server.shutdown().unwrap();
}

/// One address holds at most `connections_per_ip_max` connections: the
/// next is refused (closed at once) and counted; when one closes, its place
/// comes back, whichever I/O thread had it.
#[test]
fn an_address_over_connections_per_ip_max_is_refused_until_one_of_its_connections_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.connections_per_ip_max = 3;
    config.io_threads = 2;
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    let mut held: Vec<_> = (0..3)
        .map(|_| courier::client::Client::connect(address).unwrap())
        .collect();
    for (nonce, client) in held.iter_mut().enumerate() {
        client.ping(nonce as u64).unwrap();
    }
    let started = Instant::now();
    assert!(courier::client::Client::connect(address).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    stats_when(&server, |s| s.connections_refused == 1);

    // Closing either thread's connection gives its place back.
    for _ in 0..2 {
        drop(held.remove(0));
        let again = eventually(Duration::from_secs(5), "the place to come back", || {
            courier::client::Client::connect(address).map_err(|e| e.to_string())
        });
        let mut client = again;
        client.ping(7).unwrap();
        held.push(client);
    }
    drop(held);
    server.shutdown().unwrap();
}
