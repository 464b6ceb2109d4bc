//! Hostile and mistaken clients on a live server: each gets an error frame
//! or a disconnect of its own connection, and a bystander keeps chatting.

mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use courier::broker::Clock;
use courier::client::Client;
use courier::codec::proto::{self, DeliveryMode, ErrorCode, MessageType};
use courier::codec::Message;
use util::*;

/// The bystanders: ana sends to bo, bo must get it.
struct Bystanders {
    ana: Client,
    bo: Client,
    next_id: u64,
}

impl Bystanders {
    fn new(address: SocketAddr) -> Self {
        register(address, "ana");
        register(address, "bo");
        Self {
            ana: login(address, "ana", "phone", DeliveryMode::PushMessage),
            bo: login(address, "bo", "phone", DeliveryMode::PushMessage),
            next_id: 0,
        }
    }

    fn still_chatting(&mut self) {
        self.next_id += 1;
        let body = format!("still here {}", self.next_id);
        self.ana.send("bo", self.next_id, body.as_bytes()).unwrap();
        let Message::Deliver(delivered) = expect_push(&mut self.bo) else {
            panic!("expected a delivery")
        };
        assert_eq!(delivered.body, body.as_bytes());
    }
}

fn raw_frame(message_type: u16, correlation_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(12 + payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&message_type.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.extend_from_slice(&correlation_id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads until an `Error` frame arrives and returns its code.
fn expect_error_frame(client: &mut Client) -> ErrorCode {
    loop {
        match client.receive(Duration::from_secs(5)).unwrap() {
            Some((_, Message::Error(error))) => {
                return ErrorCode::try_from(error.code).unwrap();
            }
            Some(_) => continue,
            None => panic!("no error frame within 5 s"),
        }
    }
}

#[test]
fn bad_input_harms_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let address = server.local_addr();
    let mut bystanders = Bystanders::new(address);
    bystanders.still_chatting();

    // Random bytes: whatever they decode to, the connection is answered or
    // closed, and the bystanders go on.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        let mut noise = Client::connect_raw(address).unwrap();
        let bytes: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        noise.stream().write_all(&bytes).unwrap();
        drop(noise);
    }
    bystanders.still_chatting();

    // A frame over the limit: refused by its prefix, then closed.
    let mut big = Client::connect_raw(address).unwrap();
    big.stream()
        .write_all(&(1_000_000u32).to_be_bytes())
        .unwrap();
    assert_eq!(expect_error_frame(&mut big), ErrorCode::FrameTooLarge);
    expect_closed(&mut big);
    bystanders.still_chatting();

    // A truncated frame, then close.
    let mut cut = Client::connect_raw(address).unwrap();
    let frame = raw_frame(MessageType::Ping as u16, 1, &[8, 1]);
    cut.stream().write_all(&frame[..frame.len() - 1]).unwrap();
    drop(cut);
    bystanders.still_chatting();

    // An unknown message type: an error, and the connection stays usable.
    let mut odd = Client::connect(address).unwrap();
    odd.stream().write_all(&raw_frame(999, 5, b"")).unwrap();
    assert_eq!(expect_error_frame(&mut odd), ErrorCode::UnknownMessageType);
    odd.ping(7).unwrap();
    // A payload that is not protobuf for its type.
    odd.stream()
        .write_all(&raw_frame(MessageType::Send as u16, 6, &[0x0a, 0x05, b'a']))
        .unwrap();
    assert_eq!(expect_error_frame(&mut odd), ErrorCode::MalformedFrame);
    // A server-to-client type sent by a client.
    let pong = Message::HelloOk(proto::HelloOk::default());
    expect_code(odd.request(&pong), ErrorCode::UnknownMessageType);
    odd.ping(8).unwrap();
    bystanders.still_chatting();

    // Send before login; a wrong password; an unknown user; an unknown recipient.
    let mut eve = Client::connect(address).unwrap();
    expect_code(eve.send("bo", 1, b"spam"), ErrorCode::NotLoggedIn);
    expect_code(
        eve.login("ana", "wrong", "laptop", DeliveryMode::PushMessage),
        ErrorCode::BadCredentials,
    );
    expect_code(
        eve.login("nobody", "pw", "laptop", DeliveryMode::PushMessage),
        ErrorCode::BadCredentials,
    );
    expect_code(eve.register("ana", "another"), ErrorCode::UserExists);
    expect_code(eve.register("has space", "pw"), ErrorCode::MalformedFrame);
    expect_code(eve.register("", "pw"), ErrorCode::MalformedFrame);
    eve.login("ana", &password("ana"), "laptop", DeliveryMode::PushMessage)
        .unwrap();
    expect_code(eve.send("nobody", 2, b"?"), ErrorCode::UnknownRecipient);
    bystanders.still_chatting();

    // A client of another protocol version is told so and closed.
    let mut future = Client::connect_raw(address).unwrap();
    let hello = Message::Hello(proto::Hello {
        protocol_version: 99,
        client_name: "future".into(),
    });
    expect_code(future.request(&hello), ErrorCode::UnsupportedVersion);
    expect_closed(&mut future);
    bystanders.still_chatting();

    // None of it reached an inbox: bo has only the bystander messages.
    let inbox = bystanders.bo.sync_all(0).unwrap();
    assert_eq!(inbox.len() as u64, bystanders.next_id);
    assert!(inbox
        .iter()
        .all(|m| m.sender == "ana" && m.body.starts_with(b"still here")));
    server.shutdown().unwrap();
}

#[test]
fn a_silent_connection_is_closed_by_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.heartbeat_timeout_ms = 300;
    let clock = Clock::manual();
    config.broker.clock = clock.clone();
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    let mut silent = Client::connect(address).unwrap();
    let mut chatty = Client::connect(address).unwrap();
    // Time stands still: nobody times out, however long the wait.
    chatty.ping(100).unwrap();
    silent.ping(100).unwrap();
    for nonce in 0..8 {
        clock.advance(Duration::from_millis(100));
        chatty.ping(nonce).unwrap();
    }
    expect_closed(&mut silent);
    chatty.ping(99).unwrap();
    assert_eq!(server.stats().closed_heartbeat_timeout, 1);
    server.shutdown().unwrap();
}

#[test]
fn a_client_that_declares_a_longer_heartbeat_interval_is_held_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.heartbeat_timeout_ms = 90_000;
    config.broker.heartbeat_interval_ms = 30_000;
    config.broker.heartbeat_interval_ms_max = 600_000;
    let clock = Clock::manual();
    config.broker.clock = clock.clone();
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    let mut phone = Client::connect(address).unwrap();
    let mut eager = Client::connect(address).unwrap();
    let mut silent = Client::connect(address).unwrap();
    silent.ping(1).unwrap();
    // Held to what it declared, within 30 s to 600 s.
    assert_eq!(phone.heartbeat(1, 3_600_000).unwrap(), 600_000);
    assert_eq!(eager.heartbeat(1, 5_000).unwrap(), 30_000);
    // 100 s of silence: past the server's 90 s, not the phone's 1,800 s.
    clock.advance(Duration::from_secs(100));
    expect_closed(&mut silent);
    expect_closed(&mut eager);
    phone.ping(2).unwrap();
    // The phone's ping began a new 1,800 s; past it, it is closed too.
    clock.advance(Duration::from_secs(1_801));
    expect_closed(&mut phone);
    eventually(
        Duration::from_secs(5),
        "three heartbeat closes",
        || match server.stats().closed_heartbeat_timeout {
            3 => Ok(()),
            n => Err(format!("{n} counted")),
        },
    );
    server.shutdown().unwrap();
}

/// The pongs that arrive on `client` until none comes for a while.
fn pongs_until_quiet(client: &mut Client) -> Vec<u64> {
    let mut nonces = Vec::new();
    while let Some(received) = client.receive(Duration::from_millis(300)).unwrap() {
        match received {
            (_, Message::Pong(pong)) => nonces.push(pong.nonce),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    nonces
}

#[test]
fn a_flooding_connection_is_read_at_its_allowance_and_no_one_else_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.frames_per_second_max = 100;
    let clock = Clock::manual();
    config.broker.clock = clock.clone();
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    let mut bystander = Client::connect(address).unwrap();
    let mut flooder = Client::connect(address).unwrap();

    // 300 pings in one write: with the hello, one second's allowance (100)
    // passes at once, and then 100 for each second the clock moves.
    const PINGS: u64 = 300;
    let pings: Vec<Message> = (0..PINGS)
        .map(|nonce| {
            Message::Ping(proto::Ping {
                nonce,
                ..Default::default()
            })
        })
        .collect();
    flooder.submit_many(&pings).unwrap();
    let mut nonces = pongs_until_quiet(&mut flooder);
    assert_eq!(
        nonces.len(),
        99,
        "the first second's allowance, less the hello"
    );
    // Meanwhile the bystander is answered as usual.
    for nonce in 0..5 {
        bystander.ping(nonce).unwrap();
    }
    let mut seconds = 0;
    while (nonces.len() as u64) < PINGS {
        clock.advance(Duration::from_secs(1));
        seconds += 1;
        let more = pongs_until_quiet(&mut flooder);
        assert!(
            (1..=100).contains(&more.len()),
            "{} frames in second {seconds}",
            more.len()
        );
        nonces.extend(more);
    }
    // Nothing dropped, nothing reordered: only slowed.
    assert_eq!(nonces, (0..PINGS).collect::<Vec<_>>());
    assert_eq!(
        seconds, 3,
        "201 frames after the first second at 100 a second"
    );
    assert!(server.stats().reads_paused > 0);
    server.shutdown().unwrap();
}
