//! The same chat under every stage placement: fused on one thread, split
//! over three, a thread per stage, inline on the I/O thread. Acknowledgements, deliveries, sync and a
//! restart agree whichever threads the stages run on.

mod util;

use std::time::Duration;

use courier::broker::PlacementSetting;
use courier::client::send_message;
use courier::codec::proto::DeliveryMode;
use courier::codec::Message;
use util::*;

fn chat_under(placement: PlacementSetting, io_threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.broker.placement = placement;
    config.io_threads = io_threads;
    let server = courier::net::start(config.clone()).unwrap();
    let address = server.local_addr();
    register(address, "ana");
    register(address, "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    // Pipelined: 200 sends in flight at once.
    let sends: Vec<Message> = (1..=200u64)
        .map(|n| send_message("bo", n, &n.to_le_bytes()))
        .collect();
    ana.submit_many(&sends).unwrap();
    let mut acked = Vec::new();
    while acked.len() < 200 {
        match ana.receive(Duration::from_secs(5)).unwrap() {
            Some((_, Message::SendAck(ack))) => acked.push(ack.client_message_id),
            other => panic!("{placement:?}: expected an ack, got {other:?}"),
        }
    }
    assert_eq!(
        acked,
        (1..=200).collect::<Vec<_>>(),
        "{placement:?}: acks in order"
    );
    let pushed: Vec<u64> = (0..200)
        .map(|_| match expect_push(&mut bo) {
            Message::Deliver(d) => u64::from_le_bytes(d.body.try_into().unwrap()),
            other => panic!("{placement:?}: expected a Deliver, got {other:?}"),
        })
        .collect();
    assert_eq!(pushed, acked, "{placement:?}: deliveries in order");
    drop((ana, bo));
    server.shutdown().unwrap();

    let server = courier::net::start(config).unwrap();
    let mut bo = login(
        server.local_addr(),
        "bo",
        "laptop",
        DeliveryMode::PushNotice,
    );
    let synced: Vec<u64> = bo
        .sync_all(0)
        .unwrap()
        .into_iter()
        .map(|m| u64::from_le_bytes(m.body.try_into().unwrap()))
        .collect();
    assert_eq!(synced, acked, "{placement:?}: the inbox after a restart");
    drop(bo);
    server.shutdown().unwrap();
}

#[test]
fn fused() {
    chat_under(PlacementSetting::Fused, 1);
}

#[test]
fn split() {
    chat_under(PlacementSetting::Split, 1);
}

#[test]
fn per_stage() {
    chat_under(PlacementSetting::PerStage, 1);
}

#[test]
fn inline() {
    chat_under(PlacementSetting::Inline, 1);
}

/// The first I/O thread runs the stages; the second publishes into them
/// (waking the first) and gets its frames through its outbound ring. The
/// connections alternate between the threads, so ana and bo are on
/// different ones.
#[test]
fn inline_with_two_io_threads() {
    chat_under(PlacementSetting::Inline, 2);
}
