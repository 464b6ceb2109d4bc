//! 1:1 chat over real sockets: several devices, live delivery, offline
//! sync, notices, idempotent resends, restart.

mod util;

use courier::codec::proto::{DeliveryMode, ErrorCode};
use courier::codec::Message;
use util::*;

#[test]
fn two_users_on_several_devices_send_receive_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let address = server.local_addr();
    let ana_id = register(address, "ana");
    let bo_id = register(address, "bo");
    assert_ne!(ana_id, bo_id);

    let mut ana_phone = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut ana_laptop = login(address, "ana", "laptop", DeliveryMode::PushMessage);
    let mut bo_phone = login(address, "bo", "phone", DeliveryMode::PushMessage);

    // Live: bo's device gets the message, ana's other device gets her copy.
    let ack = ana_phone.send("bo", 1, b"hello bo").unwrap();
    assert_eq!(ack.client_message_id, 1);
    assert_eq!(ack.inbox_sequence, 1);
    let Message::Deliver(delivered) = expect_push(&mut bo_phone) else {
        panic!("expected a delivery")
    };
    assert_eq!(delivered.sender, "ana");
    assert_eq!(delivered.recipient, "bo");
    assert_eq!(delivered.body, b"hello bo");
    assert_eq!(delivered.server_message_id, ack.server_message_id);
    let Message::Deliver(copy) = expect_push(&mut ana_laptop) else {
        panic!("expected the sender's copy")
    };
    assert_eq!(copy.inbox_sequence, ack.inbox_sequence);
    expect_no_push(&mut ana_phone);

    // Offline: bo disconnects, ana sends three more, bo syncs from where he was.
    drop(bo_phone);
    for id in 2..=4u64 {
        ana_laptop
            .send("bo", id, format!("message {id}").as_bytes())
            .unwrap();
    }
    let mut bo_tablet = login(address, "bo", "tablet", DeliveryMode::PushMessage);
    let synced = bo_tablet.sync_all(delivered.inbox_sequence).unwrap();
    let bodies: Vec<&[u8]> = synced.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"message 2"[..], b"message 3", b"message 4"]);
    let sequences: Vec<u64> = synced.iter().map(|m| m.inbox_sequence).collect();
    assert_eq!(
        sequences,
        [2, 3, 4],
        "ordered by inbox sequence, none missing"
    );
    // A full sync from zero has everything once.
    assert_eq!(bo_tablet.sync_all(0).unwrap().len(), 4);
    // ana's own inbox holds her sent messages too.
    assert_eq!(ana_phone.sync_all(0).unwrap().len(), 4);
    server.shutdown().unwrap();
}

#[test]
fn resend_with_the_same_client_id_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let first = ana.send("bo", 42, b"once").unwrap();
    let again = ana.send("bo", 42, b"once").unwrap();
    assert_eq!(first, again);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    assert_eq!(bo.sync_all(0).unwrap().len(), 1);
    server.shutdown().unwrap();
}

#[test]
fn notice_mode_pushes_the_count_and_the_device_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "watch", DeliveryMode::PushNotice);
    ana.send("bo", 1, b"one").unwrap();
    ana.send("bo", 2, b"two").unwrap();
    let Message::Notify(first) = expect_push(&mut bo) else {
        panic!("expected a notice")
    };
    assert_eq!((first.head_sequence, first.unread_count), (1, 1));
    let Message::Notify(second) = expect_push(&mut bo) else {
        panic!("expected a notice")
    };
    assert_eq!((second.head_sequence, second.unread_count), (2, 2));
    let pulled = bo.sync_all(0).unwrap();
    assert_eq!(pulled.len(), 2);
    // Pulling is not reading: the next login still counts both unread.
    let mut bo_again = courier::client::Client::connect(address).unwrap();
    let ok = bo_again
        .login("bo", &password("bo"), "watch", DeliveryMode::PushNotice)
        .unwrap();
    assert_eq!((ok.head_sequence, ok.unread_count), (2, 2));
    server.shutdown().unwrap();
}

#[test]
fn tokens_log_a_device_back_in_until_it_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana"]);
    let mut phone = courier::client::Client::connect(address).unwrap();
    let ok = phone
        .login("ana", &password("ana"), "phone", DeliveryMode::PushMessage)
        .unwrap();
    assert_eq!(ok.token.len(), 32);
    let mut again = courier::client::Client::connect(address).unwrap();
    again
        .login_token("ana", &ok.token, "phone", DeliveryMode::PushMessage)
        .unwrap();
    // The token belongs to its device.
    expect_code(
        again.login_token("ana", &ok.token, "laptop", DeliveryMode::PushMessage),
        ErrorCode::BadCredentials,
    );
    again.logout().unwrap();
    again.ping(1).unwrap(); // the logout was applied before the ping's reply
    let mut third = courier::client::Client::connect(address).unwrap();
    expect_code(
        third.login_token("ana", &ok.token, "phone", DeliveryMode::PushMessage),
        ErrorCode::BadCredentials,
    );
    server.shutdown().unwrap();
}

#[test]
fn a_restart_rebuilds_accounts_inboxes_and_tokens_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = courier::client::Client::connect(address).unwrap();
    let token = ana
        .login("ana", &password("ana"), "phone", DeliveryMode::PushMessage)
        .unwrap()
        .token;
    for id in 1..=10u64 {
        ana.send("bo", id, &id.to_be_bytes()).unwrap();
    }
    drop(ana);
    server.shutdown().unwrap();

    let server = start(dir.path());
    assert_eq!(server.report().users, 2);
    let address = server.local_addr();
    let mut ana = courier::client::Client::connect(address).unwrap();
    let ok = ana
        .login_token("ana", &token, "phone", DeliveryMode::PushMessage)
        .unwrap();
    assert_eq!(ok.head_sequence, 10);
    // A resend after the restart is still recognised.
    let ack = ana.send("bo", 10, &10u64.to_be_bytes()).unwrap();
    assert_eq!(ack.inbox_sequence, 10);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let bodies: Vec<Vec<u8>> = bo
        .sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    let expected: Vec<Vec<u8>> = (1..=10u64).map(|id| id.to_be_bytes().to_vec()).collect();
    assert_eq!(bodies, expected);
    server.shutdown().unwrap();

    // The SQLite projection has both accounts.
    let db = rusqlite::Connection::open(dir.path().join("courier.db")).unwrap();
    let count: i64 = db
        .query_row("SELECT count(*) FROM accounts", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 2);
}

#[test]
fn connections_spread_over_several_io_threads_reach_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.io_threads = 3;
    // The smallest rings allowed: batches must still fit.
    config.outbound_ring_slots = 64;
    config.broker.ring_slots = 64;
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
    for user in users {
        register(address, user);
    }
    // Accepted round-robin: six logins land on all three threads.
    let mut clients: Vec<_> = users
        .iter()
        .map(|user| login(address, user, "phone", DeliveryMode::PushMessage))
        .collect();
    for from in 0..users.len() {
        let to = (from + 1) % users.len();
        clients[from]
            .send(users[to], 1, users[from].as_bytes())
            .unwrap();
        let Message::Deliver(delivered) = expect_push(&mut clients[to]) else {
            panic!("expected a delivery")
        };
        assert_eq!(delivered.sender, users[from]);
    }
    // A burst between two connections of one I/O thread (logins are
    // accepted round-robin after the six registrations: u0 and u3 share
    // thread 0): more acks and deliveries in one batch than its ring holds.
    let burst: Vec<Message> = (10..110u64)
        .map(|id| courier::client::send_message("u3", id, b"burst"))
        .collect();
    clients[0].submit_many(&burst).unwrap();
    let mut acked = 0;
    while acked < burst.len() {
        match clients[0]
            .receive(std::time::Duration::from_secs(5))
            .unwrap()
        {
            Some((_, Message::SendAck(_))) => acked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    for _ in 0..burst.len() {
        assert!(matches!(expect_push(&mut clients[3]), Message::Deliver(_)));
    }
    server.shutdown().unwrap();
}

#[test]
fn large_sync_batches_are_compressed_for_devices_that_accept_lz4() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let bodies: Vec<Vec<u8>> = (0..50u64)
        .map(|i| format!("message {i}: {}", "the quick brown fox ".repeat(10)).into_bytes())
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        ana.send("bo", i as u64, body).unwrap();
    }
    // A device that accepts LZ4 (the client's default) gets compressed batches...
    let mut phone = login(address, "bo", "phone", DeliveryMode::PushNotice);
    let synced: Vec<Vec<u8>> = phone
        .sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(synced, bodies);
    assert!(phone.compressed_frames() > 0);
    // ...one that does not gets the same messages uncompressed.
    let mut old = courier::client::Client::connect(address).unwrap();
    old.set_accept_lz4(false);
    let ok = old
        .login("bo", &password("bo"), "old-phone", DeliveryMode::PushNotice)
        .unwrap();
    assert_eq!(
        ok.compression,
        courier::codec::proto::Compression::None as i32
    );
    let synced: Vec<Vec<u8>> = old
        .sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(synced, bodies);
    assert_eq!(old.compressed_frames(), 0);
    server.shutdown().unwrap();
}

#[test]
fn read_state_is_per_conversation_and_agrees_across_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    // bo's inbox: ana 1, ana 2, cy 3, ana 4, cy 5.
    ana.send("bo", 1, b"a1").unwrap();
    ana.send("bo", 2, b"a2").unwrap();
    cy.send("bo", 1, b"c1").unwrap();
    ana.send("bo", 3, b"a3").unwrap();
    cy.send("bo", 2, b"c2").unwrap();
    let mut phone = login(address, "bo", "phone", DeliveryMode::PushNotice);
    let mut tablet = login(address, "bo", "tablet", DeliveryMode::PushNotice);
    assert_eq!(
        phone
            .login("bo", &password("bo"), "phone", DeliveryMode::PushNotice)
            .unwrap()
            .unread_count,
        5
    );
    // Reading ana's conversation up to sequence 2 leaves ana's 4 and cy's two.
    let state = phone.mark_read("ana", 2).unwrap();
    assert_eq!((state.conversation_unread, state.unread_total), (1, 3));
    // The tablet learns it.
    let Message::ReadState(pushed) = expect_push(&mut tablet) else {
        panic!("expected the read state")
    };
    assert_eq!(pushed, state);
    // Marking an older point again changes nothing; past the head is refused.
    assert_eq!(tablet.mark_read("ana", 1).unwrap().unread_total, 3);
    expect_code(tablet.mark_read("ana", 6), ErrorCode::BadSequence);
    expect_code(tablet.mark_read("nobody", 1), ErrorCode::UnknownRecipient);
    let state = tablet.mark_read("cy", 5).unwrap();
    assert_eq!((state.conversation_unread, state.unread_total), (0, 1));
    server.shutdown().unwrap();
    // The read state survives a restart.
    let server = start(dir.path());
    let mut laptop = courier::client::Client::connect(server.local_addr()).unwrap();
    let ok = laptop
        .login("bo", &password("bo"), "laptop", DeliveryMode::PushNotice)
        .unwrap();
    assert_eq!(ok.unread_count, 1);
    server.shutdown().unwrap();
}

#[test]
fn the_largest_body_allowed_is_delivered_and_synced_and_a_larger_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let limit = courier::codec::FRAME_SIZE_MAX_BYTES_DEFAULT - courier::broker::BODY_HEADROOM_BYTES;
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    expect_code(
        ana.send("bo", 1, &vec![1; limit + 1]),
        ErrorCode::FrameTooLarge,
    );
    let largest = vec![2; limit];
    ana.send("bo", 2, &largest).unwrap();
    let Message::Deliver(pushed) = expect_push(&mut bo) else {
        panic!("expected a delivery")
    };
    assert_eq!(pushed.body, largest);
    // Two of them never fit one batch, yet Sync goes on, one per batch.
    ana.send("bo", 3, &largest).unwrap();
    let synced = bo.sync_all(0).unwrap();
    assert_eq!(synced.len(), 2);
    server.shutdown().unwrap();
}

#[test]
fn a_message_over_a_frame_limit_lowered_since_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    ana.send("bo", 1, b"small").unwrap();
    ana.send("bo", 2, &vec![7; 40_000]).unwrap();
    ana.send("bo", 3, b"small again").unwrap();
    drop(ana);
    server.shutdown().unwrap();

    // The operator lowers the frame limit below the stored 40 KB body.
    let mut lowered = config(dir.path());
    lowered.broker.frame_size_max_bytes = 8 * 1024;
    lowered.broker.group_members_max = 100;
    let server = courier::net::start(lowered).unwrap();
    let address = server.local_addr();
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let first = bo.sync(0, 0).unwrap();
    let lengths: Vec<usize> = first.messages.iter().map(|m| m.body.len()).collect();
    assert_eq!(first.messages.len(), 1, "the small one comes: {lengths:?}");
    assert!(first.more);
    // The large one is named, and the server goes on serving.
    let error = bo.sync(1, 0).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::FrameTooLarge), "{error}");
    assert!(error.to_string().contains("message 2"), "{error}");
    let rest = bo.sync(2, 0).unwrap();
    assert_eq!(rest.messages.len(), 1);
    assert_eq!(rest.messages[0].body, b"small again");
    server.shutdown().unwrap();
}

#[test]
fn messages_accepted_under_one_setting_survive_a_restart_under_a_stricter_one() {
    let dir = tempfile::tempdir().unwrap();
    // Open messaging: ana may write to bo, a stranger.
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let ack = ana.send("bo", 1, b"hello stranger").unwrap();
    drop(ana);
    server.shutdown().unwrap();

    // Friends only from now on: new messages to strangers are refused, and
    // the one acknowledged before is still there, for this start and the
    // next (which replays the journal again under the same rule).
    let mut strict = config(dir.path());
    strict.broker.open_messaging = false;
    for _ in 0..2 {
        let server = courier::net::start(strict.clone()).unwrap();
        let address = server.local_addr();
        let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
        let inbox = bo.sync_all(0).unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].server_message_id, ack.server_message_id);
        let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
        expect_code(ana.send("bo", 2, b"again"), ErrorCode::NotFriends);
        drop((ana, bo));
        server.shutdown().unwrap();
    }
}

#[test]
fn login_says_where_the_unread_messages_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["ana", "bo", "cy"]);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushNotice);
    assert_eq!(
        bo.login("bo", &password("bo"), "phone", DeliveryMode::PushNotice)
            .unwrap()
            .first_unread_sequence,
        0,
        "nothing unread"
    );
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    bo.send("ana", 1, b"from bo").unwrap(); // 1: bo's own, never unread
    ana.send("bo", 1, b"one").unwrap(); // 2
    cy.send("bo", 1, b"two").unwrap(); // 3
    ana.send("bo", 2, b"three").unwrap(); // 4
    bo.mark_read("ana", 2).unwrap();
    // Unread now: 3 (from cy) and 4 (from ana).
    let ok = bo
        .login("bo", &password("bo"), "laptop", DeliveryMode::PushNotice)
        .unwrap();
    assert_eq!(ok.unread_count, 2);
    assert!(
        (2..=3).contains(&ok.first_unread_sequence),
        "at or before the oldest unread, after what was read: {}",
        ok.first_unread_sequence
    );
    let unread: Vec<_> = bo
        .sync_all(ok.first_unread_sequence - 1)
        .unwrap()
        .into_iter()
        .filter(|m| m.sender != "bo")
        .map(|m| m.inbox_sequence)
        .collect();
    assert!(unread.ends_with(&[3, 4]), "{unread:?}");
}
