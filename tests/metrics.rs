//! The Prometheus endpoint over a real socket: the counters, the user
//! census and per-stage latency histograms move with the traffic.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use courier::codec::proto::DeliveryMode;
use util::*;

/// A plain HTTP/1.0 GET; returns the status code and the body.
fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: courier\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// A server with its metrics on a free loopback port; returns it and that
/// port's address.
fn start_with_metrics(data_dir: &std::path::Path) -> (courier::net::ServerHandle, SocketAddr) {
    let mut config = config(data_dir);
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = courier::net::start(config).unwrap();
    let metrics = server.metrics_addr().expect("metrics are served");
    (server, metrics)
}

/// The samples of an exposition text, by name with labels.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name and value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn metrics_follow_the_traffic_and_only_metrics_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_with_metrics(dir.path());
    let address = server.local_addr();
    register(address, "ana");
    register(address, "bo");
    let mut ana = login(address, "ana", "phone", DeliveryMode::PushMessage);
    let mut bo = login(address, "bo", "phone", DeliveryMode::PushMessage);
    const MESSAGES: u64 = 50;
    for n in 0..MESSAGES {
        ana.send("bo", n, b"measured").unwrap();
    }
    for _ in 0..MESSAGES {
        expect_push(&mut bo);
    }

    // The counters are added up once per loop pass: wait until they show.
    let values = eventually(Duration::from_secs(5), "the counters to move", || {
        let (status, body) = get(metrics, "/metrics");
        assert_eq!(status, 200);
        let values = samples(&body);
        let moved = values["courier_users_online"] == 2.0
            && values["courier_frames_in_total"] >= 54.0
            && values["courier_messages_held"] == MESSAGES as f64;
        if moved {
            Ok(values)
        } else {
            Err(format!("\n{body}"))
        }
    });
    assert_eq!(values["courier_users_registered"], 2.0);
    assert_eq!(values["courier_devices_online"], 2.0);
    // Each 1:1 message is in two inboxes: the recipient's and the sender's.
    assert_eq!(values["courier_inbox_entries"], 2.0 * MESSAGES as f64);
    assert!(values["courier_journal_records_total"] >= MESSAGES as f64);
    assert!(values["courier_bytes_out_total"] > 0.0);
    assert!(values["courier_journal_bytes"] > 0.0);
    // No message retention here: nothing is deleted, no snapshot taken.
    assert_eq!(values["courier_snapshots_taken_total"], 0.0);
    assert_eq!(values["courier_journal_segments_deleted_total"], 0.0);
    assert!(values["courier_disk_free_bytes"] > 0.0);
    // Every stage saw at least the 50 sends, and its buckets are cumulative
    // up to +Inf, which equals the count.
    for stage in ["journal", "flush", "logic", "fan-out"] {
        let bucket = |le: &str| {
            values
                [&format!("courier_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}}")]
        };
        let count = values[&format!("courier_stage_latency_seconds_count{{stage=\"{stage}\"}}")];
        assert!(count >= MESSAGES as f64, "{stage}: {count}");
        assert_eq!(bucket("+Inf"), count, "{stage}");
        let bounds: Vec<f64> = courier::broker::BUCKET_BOUNDS_NS
            .iter()
            .map(|ns| bucket(&(*ns as f64 / 1e9).to_string()))
            .collect();
        assert!(
            bounds.windows(2).all(|w| w[0] <= w[1]),
            "{stage}: {bounds:?}"
        );
        assert!(bounds.last().copied().unwrap_or(0.0) <= count);
        assert!(values[&format!("courier_stage_latency_seconds_sum{{stage=\"{stage}\"}}")] > 0.0);
    }

    assert_eq!(get(metrics, "/").0, 404);
    drop((ana, bo));
    server.shutdown().unwrap();
    // Stopped with the server.
    assert!(TcpStream::connect(metrics).is_err());
}

#[test]
fn a_taken_metrics_port_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config(dir.path());
    config.metrics_listen = Some(taken.local_addr().unwrap());
    let error = courier::net::start(config)
        .err()
        .expect("the port is taken");
    assert!(
        error
            .to_string()
            .contains(&taken.local_addr().unwrap().to_string()),
        "{error}"
    );
}

/// The endpoint answers one scrape at a time with limits: a request that is
/// not HTTP gets 400, a head past 8 KiB gets 431, and a connection that
/// sends nothing is closed after its time limit, after which the next
/// scrape is served.
#[test]
fn bad_and_idle_scrapers_are_answered_or_dropped_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_with_metrics(dir.path());
    let exchange = |request: &[u8]| {
        let mut stream = TcpStream::connect(metrics).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The peer may close before reading everything (431): ignore that.
        let _ = stream.write_all(request);
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(
        exchange(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
            .starts_with("HTTP/1.1 400")
    );
    let long = format!(
        "GET /metrics HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert!(exchange(long.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(exchange(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));

    let started = Instant::now();
    let mut idle = TcpStream::connect(metrics).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("courier_connections_accepted_total"));
    // The idle one was closed by the server, unanswered, within its limit.
    let mut nothing = Vec::new();
    assert_eq!(idle.read_to_end(&mut nothing).unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    server.shutdown().unwrap();
}
