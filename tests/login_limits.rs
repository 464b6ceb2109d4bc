//! Password guessing over real sockets: failed logins lock the account and
//! the address for a growing time, an unknown user is refused the same way
//! as a wrong password, one connection checks one password at a time and
//! its replies keep request order, and a flood from one address leaves
//! logins from another unhurt.

mod util;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use courier::broker::Clock;
use courier::client::{Client, ClientError};
use courier::codec::proto::{self, DeliveryMode, ErrorCode};
use courier::codec::Message;
use util::*;

/// A client connected from `source` (an address of the loopback range),
/// so the server counts it under that address.
fn connect_from(source: Ipv4Addr, server: SocketAddr) -> Client {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&socket, &SocketAddrV4::new(source, 0)).unwrap();
    connect(&socket, &server).unwrap();
    let mut client = Client::from_stream(TcpStream::from(socket)).unwrap();
    client.hello().unwrap();
    client
}

fn try_login(
    client: &mut Client,
    user: &str,
    password: &str,
) -> Result<proto::LoginOk, ClientError> {
    client.login(user, password, "phone", DeliveryMode::PushMessage)
}

/// The wait a `TOO_MANY_ATTEMPTS` refusal asks for.
fn retry_after(result: Result<proto::LoginOk, ClientError>) -> u32 {
    match result {
        Err(ClientError::Server {
            code: ErrorCode::TooManyAttempts,
            retry_after_ms,
            ..
        }) => retry_after_ms,
        other => panic!("expected TOO_MANY_ATTEMPTS, got {other:?}"),
    }
}

#[test]
fn guessing_locks_the_account_then_the_right_password_waits_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let clock = Clock::manual();
    config.broker.clock = clock.clone();
    let server = courier::net::start(config).unwrap();
    let address = server.local_addr();
    register(address, "ana");
    register(address, "bo");
    let mut guesser = connect_from(Ipv4Addr::new(127, 0, 0, 2), address);
    // Five failures are free; the sixth locks the account for a second.
    for guess in 0..6 {
        let result = try_login(&mut guesser, "ana", &format!("guess{guess}"));
        expect_code(result, ErrorCode::BadCredentials);
    }
    let wait_ms = retry_after(try_login(&mut guesser, "ana", &password("ana")));
    assert!((1..=1000).contains(&wait_ms), "{wait_ms}");
    // The owner, from another address, waits out the account's lock too.
    let mut owner = connect_from(Ipv4Addr::new(127, 0, 0, 3), address);
    retry_after(try_login(&mut owner, "ana", &password("ana")));
    // The guesser's address is locked for every account.
    retry_after(try_login(&mut guesser, "bo", &password("bo")));
    // bo from elsewhere is not.
    let mut bo = connect_from(Ipv4Addr::new(127, 0, 0, 3), address);
    try_login(&mut bo, "bo", &password("bo")).unwrap();
    // The lock holds until the clock has moved all the way past it.
    clock.advance(Duration::from_millis(u64::from(wait_ms) - 1));
    assert_eq!(
        retry_after(try_login(&mut owner, "ana", &password("ana"))),
        1
    );
    // Once the lock runs out, the right password logs in.
    clock.advance(Duration::from_millis(1));
    try_login(&mut owner, "ana", &password("ana")).unwrap();
    let stats = server.stats();
    assert_eq!(stats.logins_failed, 6);
    assert_eq!(stats.logins_refused_account, 3);
    assert_eq!(stats.logins_refused_address, 1);
}

#[test]
fn an_unknown_user_is_refused_and_counted_as_a_wrong_password_is() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana"]);
    let mut client = Client::connect(address).unwrap();
    for _ in 0..6 {
        expect_code(
            try_login(&mut client, "nobody", "pw"),
            ErrorCode::BadCredentials,
        );
    }
    // Its password was checked (against a hash nobody knows the password
    // of), so it counts, and the name locks like a real one.
    assert_eq!(server.stats().logins_failed, 6);
    retry_after(try_login(&mut client, "nobody", "pw"));
}

#[test]
fn pipelined_register_login_send_sync_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start_with_users(dir.path(), &["bo"]);
    let mut ana = Client::connect(address).unwrap();
    let requests = [
        Message::Register(proto::Register {
            user: "ana".into(),
            password: "pw".into(),
        }),
        Message::Login(proto::Login {
            user: "ana".into(),
            secret: Some(proto::login::Secret::Password("pw".into())),
            device_id: "phone".into(),
            ..proto::Login::default()
        }),
        courier::client::send_message("bo", 1, b"hi"),
        Message::Sync(proto::Sync {
            after_sequence: 0,
            limit: 0,
        }),
    ];
    let first = ana.submit_many(&requests).unwrap()[0];
    let mut replies = Vec::new();
    while replies.len() < requests.len() {
        let (correlation_id, reply) = ana
            .receive(Duration::from_secs(5))
            .unwrap()
            .expect("a reply within 5 s");
        replies.push((correlation_id - first, reply.message_type()));
    }
    let expected = [
        (0, proto::MessageType::RegisterOk),
        (1, proto::MessageType::LoginOk),
        (2, proto::MessageType::SendAck),
        (3, proto::MessageType::SyncBatch),
    ];
    assert_eq!(replies, expected);
}

#[test]
fn a_flood_from_one_address_leaves_another_addresss_login_unhurt() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_with_users(dir.path(), &["ana", "bo"]);
    // Ten connections, each with 300 wrong logins pipelined, then gone.
    let wrong: Vec<Message> = (0..300)
        .map(|n| {
            Message::Login(proto::Login {
                user: "ana".into(),
                secret: Some(proto::login::Secret::Password(format!("guess{n}"))),
                device_id: "x".into(),
                ..proto::Login::default()
            })
        })
        .collect();
    let attackers: Vec<Client> = (0..10)
        .map(|_| {
            let mut attacker = connect_from(Ipv4Addr::new(127, 0, 0, 9), address);
            attacker.submit_many(&wrong).unwrap();
            attacker
        })
        .collect();
    let started = Instant::now();
    let mut bo = connect_from(Ipv4Addr::new(127, 0, 0, 10), address);
    try_login(&mut bo, "bo", &password("bo")).unwrap();
    eprintln!("bo logged in {:?} into the flood", started.elapsed());
    drop(attackers);
    // One check at a time per connection and at most four per address:
    // far fewer than the 3,000 sent were ever checked.
    let stats = server.stats();
    assert!(stats.logins_failed <= 40, "{stats:?}");
    let refused =
        stats.logins_refused_account + stats.logins_refused_address + stats.logins_refused_busy;
    assert!(refused > 0, "{stats:?}");
}
