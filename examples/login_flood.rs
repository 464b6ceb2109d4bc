//! How long a legitimate password login takes while other connections
//! flood the server with wrong-password logins for another account.
//!
//! ```sh
//! cargo run --release -- serve --data-dir /tmp/flood &      # default argon2 cost
//! cargo run --release --example login_flood -- 127.0.0.1:7420 10 20
//! ```
//!
//! Arguments: the server's address, the flooding connections (each
//! pipelining 300 wrong logins at a time from 127.0.0.9, again and again),
//! and the seconds to run. The legitimate user logs in from 127.0.0.10 on a
//! fresh connection every 200 ms; the login latencies' percentiles are
//! printed at the end. Everything stays on the loopback range.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::client::Client;
use courier::codec::proto::{self, DeliveryMode, ErrorCode};
use courier::codec::Message;

fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<Client> {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    bind(&socket, &SocketAddrV4::new(source, 0))?;
    connect(&socket, &server)?;
    let mut client = Client::from_stream(TcpStream::from(socket)).map_err(std::io::Error::other)?;
    client.hello().map_err(std::io::Error::other)?;
    Ok(client)
}

fn register(address: SocketAddr, user: &str) {
    let mut client = Client::connect(address).expect("connect");
    match client.register(user, "right password") {
        Ok(_) => {}
        Err(error) if error.code() == Some(ErrorCode::UserExists) => {}
        Err(error) => panic!("cannot register {user}: {error}"),
    }
}

fn flood(address: SocketAddr, stop: &AtomicBool, answered: &AtomicU64) {
    let wrong: Vec<Message> = (0..300)
        .map(|n| {
            Message::Login(proto::Login {
                user: "victim".into(),
                secret: Some(proto::login::Secret::Password(format!("guess{n}"))),
                device_id: "x".into(),
                ..proto::Login::default()
            })
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = connect_from(Ipv4Addr::new(127, 0, 0, 9), address) else {
            return;
        };
        if client.submit_many(&wrong).is_err() {
            continue;
        }
        for _ in 0..wrong.len() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match client.receive(Duration::from_secs(30)) {
                Ok(Some(_)) => {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                _ => break,
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let address: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7420".into())
        .parse()
        .expect("an address such as 127.0.0.1:7420");
    let attackers: usize = args.next().map_or(1, |a| a.parse().expect("a count"));
    let seconds: u64 = args.next().map_or(20, |a| a.parse().expect("seconds"));
    register(address, "victim");
    register(address, "legit");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..attackers)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || flood(address, &stop, &answered))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies_us = Vec::new();
    let mut failures = 0;
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let started = Instant::now();
        let result = connect_from(Ipv4Addr::new(127, 0, 0, 10), address)
            .map_err(|e| e.to_string())
            .and_then(|mut client| {
                client
                    .login(
                        "legit",
                        "right password",
                        "phone",
                        DeliveryMode::PushMessage,
                    )
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(_) => latencies_us.push(started.elapsed().as_micros() as u64),
            Err(error) => {
                failures += 1;
                eprintln!("legit login failed: {error}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    latencies_us.sort_unstable();
    let at = |q: f64| {
        latencies_us
            .get(((latencies_us.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    println!(
        "{attackers} flooding connections: {} legit logins, {failures} failed; \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} flood answers",
        latencies_us.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        answered.load(Ordering::Relaxed),
    );
}
