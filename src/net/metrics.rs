//! A Prometheus endpoint: `GET /metrics` on `metrics_listen` answers the
//! server's counters, the broker's census and per-stage latency histograms
//! in the text exposition format. It runs on a thread of its own and only
//! reads shared counters, so a scrape never touches the pipeline.
//!
//! One scrape at a time, each with a time limit and a size limit on its
//! request, and the connection closed after the answer: a scraper (or
//! anyone who reaches the port) holds at most one descriptor and this one
//! thread, never more, and the endpoint outlives running out of file
//! descriptors. (A general HTTP server library was tried first; it gave
//! each connection a thread of its own with no time limit, stopped
//! accepting for good after one failed accept, and panicked on another.)

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stats::{Counters, ServerStats};
use crate::broker::{BrokerWatch, LatencyHistogram, BUCKET_BOUNDS_NS};

/// The metrics thread's name.
pub const METRICS_THREAD: &str = "courier-metrics";
/// How long a scraper may take to send its request, or to take the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read; a longer one gets 431.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// After a failed accept (out of descriptors, say), the pause before the
/// next, so that the thread does not spin while nothing can be accepted.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The running endpoint.
pub(crate) struct MetricsServer {
    address: SocketAddr,
    listener: Option<Arc<TcpListener>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address`; nothing is served until [`serve`](Self::serve).
    /// (Binding comes first so that a taken port stops the server before
    /// anything else starts.)
    pub(crate) fn bind(address: SocketAddr) -> Result<Self, std::io::Error> {
        let listener = TcpListener::bind(address)?;
        Ok(Self {
            address: listener.local_addr()?,
            listener: Some(Arc::new(listener)),
            stopping: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// Serves on a thread of its own until [`stop`](Self::stop).
    pub(crate) fn serve(
        &mut self,
        counters: Arc<Counters>,
        broker: BrokerWatch,
    ) -> Result<(), std::io::Error> {
        let Some(listener) = self.listener.clone() else {
            return Ok(());
        };
        let stopping = Arc::clone(&self.stopping);
        let thread = std::thread::Builder::new()
            .name(METRICS_THREAD.into())
            .spawn(move || {
                let mut last_warning: Option<Instant> = None;
                loop {
                    let accepted = listener.accept();
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    match accepted {
                        Ok((stream, _)) => {
                            // A panic loses this scrape, not the endpoint
                            // (and, see `courier serve`, not the server).
                            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                scrape(stream, &counters, &broker)
                            }));
                        }
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                            {
                                last_warning = Some(Instant::now());
                                tracing::warn!(%error, "metrics: accept failed; trying again");
                            }
                            std::thread::sleep(ACCEPT_RETRY);
                        }
                    }
                }
            })?;
        self.thread = Some(thread);
        Ok(())
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving and closes the listener.
    pub(crate) fn stop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(listener) = self.listener.take() {
            // Wakes the thread from `accept` (Linux returns an error to it
            // at once); a connection does the same elsewhere.
            let _ = rustix::net::shutdown(&*listener, rustix::net::Shutdown::Read);
            let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(200));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request from `stream`, answers it, and closes the connection.
fn scrape(mut stream: TcpStream, counters: &Counters, broker: &BrokerWatch) {
    let _ = stream.set_read_timeout(Some(SCRAPE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SCRAPE_TIMEOUT));
    let (status, body) = match read_request(&mut stream) {
        Ok(Some((method, path))) => respond(&method, &path, counters, broker),
        Ok(None) => (431, "request header too large\n".to_owned()),
        Err(RequestError::Malformed) => (400, "not an HTTP request\n".to_owned()),
        // Timed out or gone: nobody to answer.
        Err(RequestError::Io) => return,
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let content_type = if status == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    // One write: a second, small one could wait on the scraper's delayed
    // acknowledgement of the first.
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A scraper that went away gets nothing; nothing else to do.
    let _ = stream.write_all(response.as_bytes());
}

enum RequestError {
    Malformed,
    Io,
}

/// The method and path of the request on `stream`; `None` if its head is
/// longer than [`REQUEST_BYTES_MAX`].
fn read_request(stream: &mut TcpStream) -> Result<Option<(String, String)>, RequestError> {
    let mut buffer = vec![0u8; REQUEST_BYTES_MAX];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            return Ok(None);
        }
        let read = stream
            .read(&mut buffer[filled..])
            .map_err(|_| RequestError::Io)?;
        if read == 0 {
            return Err(RequestError::Io);
        }
        filled += read;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_owned();
                let path = request.path.unwrap_or_default().to_owned();
                return Ok(Some((method, path)));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Ok(None),
            Err(_) => return Err(RequestError::Malformed),
        }
    }
}

/// The status and body for `method` and `path`.
fn respond(method: &str, path: &str, counters: &Counters, broker: &BrokerWatch) -> (u16, String) {
    match (method, path) {
        ("GET", "/metrics") => {
            let stats = counters.read_with(broker);
            let commits = broker.group_commits();
            (
                200,
                render(&stats, &broker.stage_latencies(), Some(&commits)),
            )
        }
        ("GET", _) => (404, "not found: the metrics are at /metrics\n".to_owned()),
        _ => (405, "only GET is served here\n".to_owned()),
    }
}

/// Every plain metric: its name (after `courier_`), its kind, its help
/// text and where its value is in the stats.
#[allow(clippy::type_complexity)]
const METRICS: &[(&str, &str, &str, fn(&ServerStats) -> u64)] = &[
    ("users_registered", "gauge", "Registered accounts.", |s| s.users_registered),
    ("users_online", "gauge", "Users with at least one device logged in.", |s| s.users_online),
    ("users_active", "gauge", "Users who sent anything (a ping included) in the last minute.", |s| s.users_active),
    ("devices_online", "gauge", "Devices logged in.", |s| s.devices_online),
    ("messages_held", "gauge", "Messages held in memory (48 bytes each; bodies stay in the journal).", |s| s.messages_held),
    ("inbox_entries", "gauge", "Inbox entries held in memory (4 bytes each).", |s| s.inbox_entries),
    ("connections_open", "gauge", "Client connections open.", |s| s.connections_open),
    ("connections_accepted_total", "counter", "Client connections accepted.", |s| s.connections_accepted),
    ("connections_refused_total", "counter", "Client connections refused at connections_max.", |s| s.connections_refused),
    ("closed_slow_reader_total", "counter", "Connections closed because their unsent output passed output_cap_bytes.", |s| s.closed_slow_reader),
    ("closed_heartbeat_timeout_total", "counter", "Connections closed because nothing arrived for heartbeat_timeout_ms.", |s| s.closed_heartbeat_timeout),
    ("closed_bad_framing_total", "counter", "Connections closed for bytes that are not framing.", |s| s.closed_bad_framing),
    ("reads_paused_total", "counter", "Times a connection's reading was paused for sending over frames_per_second_max.", |s| s.reads_paused),
    ("logins_failed_total", "counter", "Password logins that failed (wrong password, or no such user).", |s| s.logins_failed),
    ("logins_refused_account_total", "counter", "Logins refused at once: the account name failed too often lately.", |s| s.logins_refused_account),
    ("logins_refused_address_total", "counter", "Logins refused at once: the client address failed too often lately.", |s| s.logins_refused_address),
    ("logins_refused_busy_total", "counter", "Logins and registrations refused at once: the address had as many password checks under way as it may.", |s| s.logins_refused_busy),
    ("log_lines_dropped_total", "counter", "Log lines that could not be written (their reader gone); serving goes on.", |s| s.log_lines_dropped),
    ("frames_in_total", "counter", "Frames read from clients.", |s| s.frames_in),
    ("bytes_in_total", "counter", "Bytes read from clients.", |s| s.bytes_in),
    ("bytes_out_total", "counter", "Bytes written to clients.", |s| s.bytes_out),
    ("journal_records_total", "counter", "Records written to the journal.", |s| s.journal_records),
    ("journal_bytes", "gauge", "Bytes of the journal's files (segments are preallocated whole).", |s| s.journal_bytes),
    ("snapshots_taken_total", "counter", "Snapshots taken while serving (under a message retention).", |s| s.snapshots_taken),
    ("journal_segments_deleted_total", "counter", "Journal segments deleted under a message retention (at the start and while serving).", |s| s.journal_segments_deleted),
    ("disk_free_bytes", "gauge", "Bytes free on the data directory's file system; the server stops when the journal cannot make its next segment.", |s| s.disk_free_bytes),
];

/// The exposition text for the counters and the latency histograms.
pub(crate) fn render(
    stats: &ServerStats,
    latencies: &[LatencyHistogram],
    group_commits: Option<&LatencyHistogram>,
) -> String {
    let mut text = String::with_capacity(4096);
    for (name, kind, help, value) in METRICS {
        let _ = writeln!(text, "# HELP courier_{name} {help}");
        let _ = writeln!(text, "# TYPE courier_{name} {kind}");
        let _ = writeln!(text, "courier_{name} {}", value(stats));
    }
    let _ = writeln!(
        text,
        "# HELP courier_stage_latency_seconds From an event's arrival in the inbound ring to the end of the batch in which the stage finished it."
    );
    let _ = writeln!(text, "# TYPE courier_stage_latency_seconds histogram");
    for histogram in latencies {
        let labels = format!("stage=\"{}\"", histogram.stage);
        write_histogram(
            &mut text,
            "courier_stage_latency_seconds",
            &labels,
            histogram,
        );
    }
    if let Some(commits) = group_commits {
        let _ = writeln!(
            text,
            "# HELP courier_group_commit_seconds How long each group commit (the journal's msync of a batch, under durability batch) took; its count is the number of group commits."
        );
        let _ = writeln!(text, "# TYPE courier_group_commit_seconds histogram");
        write_histogram(&mut text, "courier_group_commit_seconds", "", commits);
    }
    text
}

/// One histogram's cumulative buckets, sum and count, under `name` with
/// `labels` (`key="value"`, or empty).
fn write_histogram(text: &mut String, name: &str, labels: &str, histogram: &LatencyHistogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let braces = |more: &str| {
        format!(
            "{{{labels}{}{more}}}",
            if more.is_empty() { "" } else { sep }
        )
    };
    let mut cumulative = 0;
    for (bound, count) in BUCKET_BOUNDS_NS.iter().zip(&histogram.counts) {
        cumulative += count;
        let le = format!("le=\"{}\"", *bound as f64 / 1e9);
        let _ = writeln!(text, "{name}_bucket{} {cumulative}", braces(&le));
    }
    let _ = writeln!(
        text,
        "{name}_bucket{} {}",
        braces("le=\"+Inf\""),
        histogram.count
    );
    let plain = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(text, "{name}_sum{plain} {}", histogram.sum_ns as f64 / 1e9);
    let _ = writeln!(text, "{name}_count{plain} {}", histogram.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_rendered_cumulative_with_an_infinite_bucket() {
        let mut counts = vec![0; BUCKET_BOUNDS_NS.len() + 1];
        counts[0] = 3; // ≤ 10 µs
        counts[2] = 2; // ≤ 50 µs
        counts[BUCKET_BOUNDS_NS.len()] = 1; // over a second
        let histogram = LatencyHistogram {
            stage: "flush",
            counts,
            count: 6,
            sum_ns: 1_500_000_000,
        };
        let stats = ServerStats {
            users_registered: 7,
            frames_in: 42,
            ..ServerStats::default()
        };
        let text = render(&stats, std::slice::from_ref(&histogram), Some(&histogram));
        assert!(
            text.contains("courier_group_commit_seconds_count 6\n"),
            "{text}"
        );
        assert!(text.contains("courier_group_commit_seconds_bucket{le=\"+Inf\"} 6\n"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"courier_users_registered 7"));
        assert!(lines.contains(&"courier_frames_in_total 42"));
        assert!(lines.contains(&"# TYPE courier_frames_in_total counter"));
        assert!(lines
            .contains(&"courier_stage_latency_seconds_bucket{stage=\"flush\",le=\"0.00001\"} 3"));
        assert!(lines
            .contains(&"courier_stage_latency_seconds_bucket{stage=\"flush\",le=\"0.000025\"} 3"));
        assert!(lines
            .contains(&"courier_stage_latency_seconds_bucket{stage=\"flush\",le=\"0.00005\"} 5"));
        assert!(lines.contains(&"courier_stage_latency_seconds_bucket{stage=\"flush\",le=\"1\"} 5"));
        assert!(
            lines.contains(&"courier_stage_latency_seconds_bucket{stage=\"flush\",le=\"+Inf\"} 6")
        );
        assert!(lines.contains(&"courier_stage_latency_seconds_sum{stage=\"flush\"} 1.5"));
        assert!(lines.contains(&"courier_stage_latency_seconds_count{stage=\"flush\"} 6"));
        // Every sample line is a name (with labels) and a number.
        for line in lines.iter().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
