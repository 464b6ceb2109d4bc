//! Embedding courier behind a gateway of your own.
//!
//! A gateway that already terminates client connections (a WebSocket
//! front end, an HTTP/2 edge, a test harness) gives each connection an id,
//! pushes its frames into the broker through an `Ingress`, and receives the
//! broker's frames through an `Egress` it implements. The broker runs its
//! stages on a thread of its own here (the library's default placement); a
//! gateway with an event loop of its own can run them on that loop instead,
//! with `placement = "inline"` and `Broker::take_driver` (tests/embed.rs
//! shows one). Here the "connections" are in-process channels, so the
//! example runs without a network:
//!
//! ```text
//! cargo run --example gateway
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use courier::broker::{AuthConfig, Broker, BrokerConfig, ConnId, Egress};
use courier::codec::proto::{self, login, DeliveryMode};
use courier::codec::{FrameDecoder, Message, PROTOCOL_VERSION};
use crossbeam_channel::{Receiver, Sender};

/// The gateway's side of its connections: one channel per connection.
#[derive(Clone, Default)]
struct Connections {
    outbound: Arc<Mutex<HashMap<ConnId, Sender<Vec<u8>>>>>,
}

impl Connections {
    fn open(&self, conn: ConnId) -> Receiver<Vec<u8>> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        self.outbound.lock().unwrap().insert(conn, sender);
        receiver
    }
}

/// The egress: the broker calls it from its fan-out thread.
struct ChannelEgress(Connections);

impl Egress for ChannelEgress {
    fn send(&mut self, conn: ConnId, frame: &[u8]) {
        if let Some(sender) = self.0.outbound.lock().unwrap().get(&conn) {
            let _ = sender.send(frame.to_vec());
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.0.outbound.lock().unwrap().remove(&conn);
    }
}

/// A frame for the ingress: header and payload, without the length prefix.
fn frame(message: &Message, correlation_id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    message.encode_frame(correlation_id, &mut bytes);
    bytes.split_off(courier::codec::LENGTH_PREFIX_BYTES)
}

/// The next message for a connection.
fn next(receiver: &Receiver<Vec<u8>>) -> Message {
    let bytes = receiver
        .recv_timeout(Duration::from_secs(5))
        .expect("a reply within 5 s");
    let mut buffer = BytesMut::from(&bytes[..]);
    let frame = FrameDecoder::default()
        .decode(&mut buffer)
        .expect("valid framing")
        .expect("a whole frame");
    Message::decode(&frame).expect("a known message")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir =
        std::env::temp_dir().join(format!("courier-gateway-example-{}", std::process::id()));
    let config = BrokerConfig {
        data_dir: data_dir.clone(),
        // Cheap hashing keeps the example quick; keep the default in production.
        auth: AuthConfig::insecure_fast(),
        // Any user may message any other, as in a plain broker (by default
        // messages go to friends only).
        open_messaging: true,
        ..BrokerConfig::default()
    };
    let connections = Connections::default();
    let broker = Broker::open(&config, ChannelEgress(connections.clone()))?;
    let mut ingress = broker.ingress();

    let (ana, bo) = (ConnId(1), ConnId(2));
    let ana_out = connections.open(ana);
    let bo_out = connections.open(bo);
    ingress.connected(ana)?;
    ingress.connected(bo)?;

    let hello = Message::Hello(proto::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "gateway-example".into(),
    });
    ingress.frame(ana, &frame(&hello, 1))?;
    println!("ana <- {:?}", next(&ana_out));

    for (conn, out, user) in [(ana, &ana_out, "ana"), (bo, &bo_out, "bo")] {
        let register = Message::Register(proto::Register {
            user: user.into(),
            password: "correct horse".into(),
        });
        ingress.frame(conn, &frame(&register, 2))?;
        println!("{user} <- {:?}", next(out));
        let login = Message::Login(proto::Login {
            user: user.into(),
            secret: Some(login::Secret::Password("correct horse".into())),
            device_id: "gateway".into(),
            delivery_mode: DeliveryMode::PushMessage as i32,
            accept_compression: Vec::new(),
        });
        ingress.frame(conn, &frame(&login, 3))?;
        println!("{user} <- {:?}", next(out));
    }

    let send = Message::Send(proto::Send {
        recipient: "bo".into(),
        client_message_id: 1,
        body: b"hello through the gateway".to_vec(),
        group_id: 0,
    });
    ingress.frame(ana, &frame(&send, 4))?;
    println!("ana <- {:?}", next(&ana_out));
    println!("bo  <- {:?}", next(&bo_out));

    ingress.disconnected(ana)?;
    ingress.disconnected(bo)?;
    drop(ingress);
    broker.shutdown()?;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
