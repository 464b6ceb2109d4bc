//! A client that never reads is cut off once its output passes the cap,
//! and the pipeline keeps serving everyone else.

mod util;

use std::time::{Duration, Instant};

use courier::client::{send_message, Client};
use courier::codec::proto::DeliveryMode;
use courier::codec::Message;
use util::*;

#[test]
fn a_reader_that_falls_behind_is_disconnected_and_others_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.output_cap_bytes = 256 * 1024;
    config.broker.durability = courier::broker::DurabilitySetting::None;
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    for user in ["ana", "bo", "cy", "dee"] {
        register(address, user);
    }
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    // bo logs in and then never reads again.
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    let mut cy = login(address, "cy", "phone", DeliveryMode::PushMessage);
    let mut dee = login(address, "dee", "phone", DeliveryMode::PushMessage);

    // 32 MiB for bo: more than the socket buffers and the cap can hold.
    let body = vec![7u8; 32 * 1024];
    let started = Instant::now();
    let mut id = 0;
    for _ in 0..64 {
        let batch: Vec<Message> = (0..16)
            .map(|_| {
                id += 1;
                send_message("bo", id, &body)
            })
            .collect();
        ana.submit_many(&batch).unwrap();
        // Every send is acknowledged: ana is not held up by bo.
        let mut acked = 0;
        while acked < batch.len() {
            match ana.receive(Duration::from_secs(10)).unwrap() {
                Some((_, Message::SendAck(_))) => acked += 1,
                Some((_, other)) => panic!("unexpected {other:?}"),
                None => panic!("an acknowledgement is late"),
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));

    // Others' traffic flows.
    cy.send("dee", 1, b"unaffected").unwrap();
    let Message::Deliver(delivered) = expect_push(&mut dee) else {
        panic!("expected a delivery")
    };
    assert_eq!(delivered.body, b"unaffected");

    // bo finds his connection closed once he reads what was buffered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frames = 0u64;
    loop {
        assert!(Instant::now() < deadline, "bo was never disconnected");
        match bo.receive(Duration::from_secs(5)) {
            Ok(Some(_)) => frames += 1,
            Ok(None) => panic!("bo's connection is open but silent after {frames} frames"),
            Err(_) => break,
        }
    }
    assert!(
        frames < 64 * 16,
        "bo cannot have received everything: {frames}"
    );
    // The messages are not lost: bo syncs them on a new connection.
    let mut bo_again = Client::connect(address).unwrap();
    bo_again
        .login("bo", &password("bo"), "phone", DeliveryMode::PushNotice)
        .unwrap();
    assert_eq!(bo_again.sync_all(0).unwrap().len(), 64 * 16);
    server.shutdown().unwrap();
}
