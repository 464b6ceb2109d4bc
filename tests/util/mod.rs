//! Shared helpers for the broker's integration tests: a server on
//! 127.0.0.1:0 over a temporary data directory, and `expect_*` checks.
#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use courier::broker::{AuthConfig, BrokerConfig, DurabilitySetting};
use courier::client::{Client, ClientError};
use courier::codec::proto::{DeliveryMode, ErrorCode};
use courier::codec::Message;
use courier::net::{self, ServerConfig, ServerHandle};

/// A server configuration for tests: an ephemeral port, `data_dir`, cheap
/// password hashing.
pub fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: BrokerConfig {
            data_dir: data_dir.to_path_buf(),
            durability: DurabilitySetting::Batch,
            segment_size_mb: 4,
            auth: AuthConfig::insecure_fast(),
            // Most tests are about delivery, not friendship.
            open_messaging: true,
            ..BrokerConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// Starts a server with [`config`].
pub fn start(data_dir: &Path) -> ServerHandle {
    net::start(config(data_dir)).expect("server starts")
}

/// Starts a server with [`config`] and registers `users`.
pub fn start_with_users(data_dir: &Path, users: &[&str]) -> (ServerHandle, SocketAddr) {
    let server = start(data_dir);
    let address = server.local_addr();
    for user in users {
        register(address, user);
    }
    (server, address)
}

/// Registers `user` (password "pw-<user>") on a fresh connection.
pub fn register(address: SocketAddr, user: &str) -> u64 {
    let mut client = Client::connect(address).expect("connect");
    client.register(user, &password(user)).expect("register")
}

pub fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// A connection logged in as `user` on `device`.
pub fn login(address: SocketAddr, user: &str, device: &str, mode: DeliveryMode) -> Client {
    let mut client = Client::connect(address).expect("connect");
    if let Err(error) = client.login(user, &password(user), device, mode) {
        panic!("{user} cannot log in on {device}: {error}");
    }
    client
}

/// Makes `a` and `b` friends (each logs in on a device named "setup").
pub fn befriend(address: SocketAddr, a: &str, b: &str) {
    let mut one = login(address, a, "setup", DeliveryMode::PushMessage);
    let mut two = login(address, b, "setup", DeliveryMode::PushMessage);
    let request = Message::ContactRequest(courier::codec::proto::ContactRequest { user: b.into() });
    assert!(matches!(one.request(&request), Ok(Message::ContactOk(_))));
    let accept = Message::ContactAccept(courier::codec::proto::ContactAccept { user: a.into() });
    assert!(matches!(two.request(&accept), Ok(Message::ContactOk(_))));
}

/// Polls `probe` every 10 ms until it gives `Ok`, and returns that; after
/// `timeout` it panics, saying `what` was awaited and the last `Err`'s
/// reason. The one way a test waits for something it can observe.
pub fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(reason) if std::time::Instant::now() >= deadline => {
                panic!("waited {timeout:?} for {what}: {reason}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The address a spawned `courier serve` prints first on its stdout
/// ("listening on ADDRESS"), which this takes from the child.
pub fn listening_address(child: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("the server prints its address");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address")
}

/// The next push, which must come within a few seconds.
pub fn expect_push(client: &mut Client) -> Message {
    client
        .next_push(Duration::from_secs(5))
        .expect("receive")
        .expect("a push within 5 s")
}

/// No push within a short while.
pub fn expect_no_push(client: &mut Client) {
    if let Some(push) = client
        .next_push(Duration::from_millis(200))
        .expect("receive")
    {
        panic!("unexpected push {push:?}");
    }
}

/// The error must carry `code`.
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, ClientError>, code: ErrorCode) {
    match result {
        Err(error) => assert_eq!(error.code(), Some(code), "{error}"),
        Ok(value) => panic!("expected {code:?}, got {value:?}"),
    }
}

/// The connection must be closed by the server within a few seconds
/// (whatever frames come first are skipped).
pub fn expect_closed(client: &mut Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match client.receive(Duration::from_millis(100)) {
            Err(ClientError::Closed) => return,
            Err(ClientError::Io(_)) => return,
            Err(ClientError::Protocol(_)) => return,
            Ok(_) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    panic!("the server did not close the connection");
}
