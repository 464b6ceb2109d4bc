//! WebSocket on the client port, over real sockets: a browser-like client
//! (tungstenite) chats with a TCP client through the same server, the
//! WebSocket's own pings and closes are answered, and breaches of the
//! protocol close that connection alone.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use courier::codec::proto::{self, DeliveryMode};
use courier::codec::{FrameDecoder, Message, PROTOCOL_VERSION};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message as WsMessage;
use util::*;

/// A client that speaks courier frames in WebSocket binary messages.
struct WsClient {
    ws: tungstenite::WebSocket<TcpStream>,
    next_correlation: u64,
    early: Vec<(u64, Message)>,
}

impl WsClient {
    fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (ws, response) = tungstenite::client(format!("ws://{address}/chat"), stream).unwrap();
        assert_eq!(response.status(), 101);
        Self {
            ws,
            next_correlation: 1,
            early: Vec::new(),
        }
    }

    fn submit(&mut self, message: &Message) -> u64 {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let mut bytes = Vec::new();
        message.encode_frame(correlation_id, &mut bytes);
        self.ws.send(WsMessage::Binary(bytes.into())).unwrap();
        correlation_id
    }

    /// The next frame; each arrives in a binary message of its own.
    fn receive(&mut self) -> (u64, Message) {
        loop {
            match self.ws.read().unwrap() {
                WsMessage::Binary(bytes) => {
                    let mut buffer = BytesMut::from(&bytes[..]);
                    let frame = FrameDecoder::new(1 << 20)
                        .decode(&mut buffer)
                        .unwrap()
                        .expect("a whole frame in the message");
                    assert!(buffer.is_empty(), "one frame per message");
                    return (frame.correlation_id, Message::decode(&frame).unwrap());
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    fn request(&mut self, message: &Message) -> Message {
        let correlation_id = self.submit(message);
        loop {
            let (c, reply) = self.receive();
            if c == correlation_id {
                return reply;
            }
            self.early.push((c, reply));
        }
    }

    fn push(&mut self) -> Message {
        if let Some(index) = self.early.iter().position(|(c, _)| *c == 0) {
            return self.early.remove(index).1;
        }
        loop {
            let (c, message) = self.receive();
            if c == 0 {
                return message;
            }
            self.early.push((c, message));
        }
    }

    fn hello_and_login(&mut self, user: &str) {
        let hello = Message::Hello(proto::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "browser".into(),
        });
        assert!(matches!(self.request(&hello), Message::HelloOk(_)));
        let login = Message::Login(proto::Login {
            user: user.into(),
            secret: Some(proto::login::Secret::Password(password(user))),
            device_id: "browser".into(),
            delivery_mode: DeliveryMode::PushMessage as i32,
            accept_compression: Vec::new(),
        });
        let reply = self.request(&login);
        assert!(matches!(reply, Message::LoginOk(_)), "{reply:?}");
    }
}

#[test]
fn a_websocket_client_and_a_tcp_client_chat_through_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut browser = WsClient::connect(address);
    browser.hello_and_login("bo");
    let mut phone = login(address, "ana", "phone", DeliveryMode::PushMessage);

    // TCP → WebSocket.
    phone.send("bo", 1, b"hello browser").unwrap();
    match browser.push() {
        Message::Deliver(deliver) => {
            assert_eq!(deliver.sender, "ana");
            assert_eq!(deliver.body, b"hello browser");
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    // WebSocket → TCP, with a frame split over two messages and two frames
    // in one: the messages carry a byte stream.
    let mut bytes = Vec::new();
    courier::client::send_message("ana", 7, b"split in two").encode_frame(50, &mut bytes);
    courier::client::send_message("ana", 8, b"second").encode_frame(51, &mut bytes);
    let cut = 9;
    browser
        .ws
        .send(WsMessage::Binary(bytes[..cut].to_vec().into()))
        .unwrap();
    browser
        .ws
        .send(WsMessage::Binary(bytes[cut..].to_vec().into()))
        .unwrap();
    for (correlation, body) in [(50, &b"split in two"[..]), (51, &b"second"[..])] {
        let (c, reply) = browser.receive();
        assert_eq!(c, correlation);
        assert!(matches!(reply, Message::SendAck(_)), "{reply:?}");
        match expect_push(&mut phone) {
            Message::Deliver(deliver) => assert_eq!(deliver.body, body),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    // The WebSocket's own ping is answered by a pong.
    browser
        .ws
        .send(WsMessage::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match browser.ws.read().unwrap() {
        WsMessage::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }

    // A close is answered and ends the connection; the device goes offline.
    browser.ws.close(None).unwrap();
    loop {
        match browser.ws.read() {
            Ok(WsMessage::Close(_)) => {}
            Ok(other) => panic!("expected the close, got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("{error}"),
        }
    }
    eventually(Duration::from_secs(5), "bo to go offline", || {
        let online = server.stats().devices_online;
        (online == 1)
            .then_some(())
            .ok_or_else(|| format!("{online} devices online"))
    });
    drop(phone);
    server.shutdown().unwrap();
}

#[test]
fn websocket_breaches_close_that_connection_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana"]);
    let mut bystander = login(address, "ana", "phone", DeliveryMode::PushMessage);

    // A text message: closed with "unsupported data".
    let mut texter = WsClient::connect(address);
    texter.ws.send(WsMessage::Text("hello".into())).unwrap();
    match texter.ws.read().unwrap() {
        WsMessage::Close(Some(close)) => assert_eq!(close.code, CloseCode::Unsupported),
        other => panic!("expected a close, got {other:?}"),
    }

    // Bytes that are not framing inside the WebSocket: an error frame, then
    // a close with "protocol error".
    let mut garbler = WsClient::connect(address);
    garbler
        .ws
        .send(WsMessage::Binary(vec![0xff; 16].into()))
        .unwrap();
    let (_, error) = garbler.receive();
    assert!(matches!(error, Message::Error(_)), "{error:?}");
    match garbler.ws.read().unwrap() {
        WsMessage::Close(Some(close)) => assert_eq!(close.code, CloseCode::Protocol),
        other => panic!("expected a close, got {other:?}"),
    }

    // An HTTP request that is not an upgrade: 400 and closed.
    let mut browser = TcpStream::connect(address).unwrap();
    browser
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    browser
        .write_all(b"GET / HTTP/1.1\r\nHost: courier\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    browser.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");

    bystander.ping(1).unwrap();
    server.shutdown().unwrap();
}

#[test]
fn with_websocket_off_an_upgrade_is_just_bad_framing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.websocket = false;
    let server = courier::net::start(config).unwrap();
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    assert!(tungstenite::client(url, stream).is_err());
    server.shutdown().unwrap();
}

#[test]
fn the_library_client_chats_over_a_websocket_too() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    let mut browser = courier::client::Client::connect_websocket(address).unwrap();
    assert!(browser.is_websocket());
    browser
        .login("bo", &password("bo"), "browser", DeliveryMode::PushMessage)
        .unwrap();
    let mut phone = login(address, "ana", "phone", DeliveryMode::PushMessage);
    phone.send("bo", 1, b"to the browser").unwrap();
    match expect_push(&mut browser) {
        Message::Deliver(deliver) => assert_eq!(deliver.body, b"to the browser"),
        other => panic!("expected a delivery, got {other:?}"),
    }
    for n in 0..20u64 {
        browser.send("ana", n, b"to the phone").unwrap();
    }
    for _ in 0..20 {
        expect_push(&mut phone);
    }
    // Sync pulls the same inbox over either transport.
    assert_eq!(browser.sync_all(0).unwrap().len(), 21);
    server.shutdown().unwrap();
}
