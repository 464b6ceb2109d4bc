//! The library API a gateway embeds: frames in through `Ingress`, frames
//! out through an `Egress` of the gateway's own (here: a channel).

use std::time::Duration;

use bytes::BytesMut;
use courier::broker::{AuthConfig, Broker, BrokerConfig, ConnId, Egress};
use courier::codec::proto::{self, ErrorCode};
use courier::codec::{FrameDecoder, Message};
use crossbeam_channel::{Receiver, Sender};

/// What the broker asked the gateway to do.
#[derive(Debug, PartialEq)]
enum Action {
    Send(ConnId, Message),
    Close(ConnId),
}

struct Recorder(Sender<Action>);

impl Egress for Recorder {
    fn send(&mut self, conn: ConnId, frame: &[u8]) {
        let mut buffer = BytesMut::from(frame);
        let frame = FrameDecoder::default()
            .decode(&mut buffer)
            .unwrap()
            .unwrap();
        assert!(buffer.is_empty(), "one whole frame per call");
        let _ = self
            .0
            .send(Action::Send(conn, Message::decode(&frame).unwrap()));
    }

    fn close(&mut self, conn: ConnId) {
        let _ = self.0.send(Action::Close(conn));
    }
}

fn body(message: &Message, correlation_id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    message.encode_frame(correlation_id, &mut bytes);
    bytes.split_off(courier::codec::LENGTH_PREFIX_BYTES)
}

fn next(actions: &Receiver<Action>) -> Action {
    actions
        .recv_timeout(Duration::from_secs(5))
        .expect("an action within 5 s")
}

#[test]
fn a_gateway_gets_replies_errors_and_closes_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthConfig::insecure_fast(),
        ..BrokerConfig::default()
    };
    let (sender, actions) = crossbeam_channel::unbounded();
    let broker = Broker::open(&config, Recorder(sender)).unwrap();
    let mut ingress = broker.ingress();
    let conn = ConnId(0xfeed);
    ingress.connected(conn).unwrap();

    // A reply carries the request's correlation id back to its connection.
    ingress
        .frame(
            conn,
            &body(
                &Message::Ping(proto::Ping {
                    nonce: 5,
                    ..Default::default()
                }),
                77,
            ),
        )
        .unwrap();
    assert_eq!(
        next(&actions),
        Action::Send(
            conn,
            Message::Pong(proto::Pong {
                nonce: 5,
                ..Default::default()
            })
        )
    );

    // A gateway that hands over less than a header gets an error, not a crash.
    ingress.frame(conn, &[1, 2, 3]).unwrap();
    let Action::Send(to, Message::Error(error)) = next(&actions) else {
        panic!("expected an error")
    };
    assert_eq!((to, error.code), (conn, ErrorCode::MalformedFrame as i32));

    // A fatal protocol error asks the gateway to close the connection.
    let hello = Message::Hello(proto::Hello {
        protocol_version: 0,
        client_name: String::new(),
    });
    ingress.frame(conn, &body(&hello, 1)).unwrap();
    assert!(matches!(next(&actions), Action::Send(_, Message::Error(_))));
    assert_eq!(next(&actions), Action::Close(conn));

    drop(ingress);
    broker.shutdown().unwrap();

    // Reopened after that clean stop: the journal replays (the start
    // marker, the connection, nothing else journaled), and the SQLite
    // projection is not behind.
    let (sender, _actions) = crossbeam_channel::unbounded();
    let broker = Broker::open(&config, Recorder(sender)).unwrap();
    let report = broker.report().clone();
    assert_eq!(report.records_replayed, 2);
    assert_eq!(report.store_records_caught_up, 0);
    broker.shutdown().unwrap();
}

/// Under `placement = "inline"` the gateway runs the stages on its own
/// thread: it publishes, runs the driver, and sleeps until a publish from
/// another thread (here the auth worker's verdict on a registration) wakes
/// it. The shutdown waits for the driver to finish.
#[test]
fn a_gateway_can_run_the_stages_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthConfig::insecure_fast(),
        placement: courier::broker::PlacementSetting::Inline,
        ..BrokerConfig::default()
    };
    let (sender, actions) = crossbeam_channel::unbounded();
    let mut broker = Broker::open(&config, Recorder(sender)).unwrap();
    let mut driver = broker.take_driver().expect("inline has a driver");
    assert!(broker.take_driver().is_none(), "taken once");
    let (wake, woken) = crossbeam_channel::unbounded::<()>();
    driver.set_wake_hook(move || {
        let _ = wake.send(());
    });
    let mut ingress = broker.ingress();
    let gateway = std::thread::spawn(move || {
        let conn = ConnId(7);
        ingress.connected(conn).unwrap();
        let register = Message::Register(proto::Register {
            user: "ana".into(),
            password: "correct horse".into(),
        });
        ingress.frame(conn, &body(&register, 9)).unwrap();
        // The gateway's loop: run while there is work, else sleep until woken.
        loop {
            match driver.run() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(_) => return,
            }
            if driver.prepare_wait() {
                woken
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the auth verdict (or the stop) wakes the gateway");
                driver.end_wait();
            }
        }
    });
    let Action::Send(conn, Message::RegisterOk(_)) = next(&actions) else {
        panic!("expected RegisterOk")
    };
    assert_eq!(conn, ConnId(7));
    broker.shutdown().unwrap();
    gateway.join().unwrap();
}
