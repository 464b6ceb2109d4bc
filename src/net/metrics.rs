//! A Prometheus endpoint: `GET /metrics` on `metrics_listen` answers the
//! server's counters, the broker's census and per-stage latency histograms
//! in the text exposition format. It runs on a thread of its own and only
//! reads shared counters, so a scrape never touches the pipeline.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::stats::{Counters, ServerStats};
use crate::broker::{BrokerWatch, LatencyHistogram, BUCKET_BOUNDS_NS};

/// The running endpoint.
pub(crate) struct MetricsServer {
    address: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address`; nothing is served until [`serve`](Self::serve).
    /// (Binding comes first so that a taken port stops the server before
    /// anything else starts.)
    pub(crate) fn bind(address: SocketAddr) -> Result<Self, std::io::Error> {
        let server = tiny_http::Server::http(address).map_err(std::io::Error::other)?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics listener has no IP address"))?;
        Ok(Self {
            address,
            server: Arc::new(server),
            thread: None,
        })
    }

    /// Serves on a thread of its own until [`stop`](Self::stop).
    pub(crate) fn serve(
        &mut self,
        counters: Arc<Counters>,
        broker: BrokerWatch,
    ) -> Result<(), std::io::Error> {
        let serving = Arc::clone(&self.server);
        let thread = std::thread::Builder::new()
            .name("courier-metrics".into())
            .spawn(move || {
                // Ends when `stop` unblocks the server.
                for request in serving.incoming_requests() {
                    respond(request, &counters, &broker);
                }
            })?;
        self.thread = Some(thread);
        Ok(())
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn stop(&mut self) {
        self.server.unblock();
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

fn respond(request: tiny_http::Request, counters: &Counters, broker: &BrokerWatch) {
    let response = match (request.method(), request.url()) {
        (tiny_http::Method::Get, "/metrics") => {
            let stats = counters.read_with(broker);
            let text = render(&stats, &broker.stage_latencies());
            let content_type = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"text/plain; version=0.0.4; charset=utf-8"[..],
            )
            .expect("a valid header");
            tiny_http::Response::from_string(text).with_header(content_type)
        }
        (tiny_http::Method::Get, _) => {
            tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                .with_status_code(404)
        }
        _ => tiny_http::Response::from_string("only GET is served here\n").with_status_code(405),
    };
    // A scraper that went away gets nothing; nothing else to do.
    let _ = request.respond(response);
}

/// The exposition text for the counters and the latency histograms.
pub(crate) fn render(stats: &ServerStats, latencies: &[LatencyHistogram]) -> String {
    let mut text = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(text, "# HELP courier_{name} {help}");
        let _ = writeln!(text, "# TYPE courier_{name} {kind}");
        let _ = writeln!(text, "courier_{name} {value}");
    };
    metric(
        "users_registered",
        "gauge",
        "Registered accounts.",
        stats.users_registered,
    );
    metric(
        "users_online",
        "gauge",
        "Users with at least one device logged in.",
        stats.users_online,
    );
    metric(
        "devices_online",
        "gauge",
        "Devices logged in.",
        stats.devices_online,
    );
    metric(
        "connections_open",
        "gauge",
        "Client connections open.",
        stats.connections_open,
    );
    metric(
        "connections_accepted_total",
        "counter",
        "Client connections accepted.",
        stats.connections_accepted,
    );
    metric(
        "connections_refused_total",
        "counter",
        "Client connections refused at connections_max.",
        stats.connections_refused,
    );
    metric(
        "closed_slow_reader_total",
        "counter",
        "Connections closed because their unsent output passed output_cap_bytes.",
        stats.closed_slow_reader,
    );
    metric(
        "closed_heartbeat_timeout_total",
        "counter",
        "Connections closed because nothing arrived for heartbeat_timeout_ms.",
        stats.closed_heartbeat_timeout,
    );
    metric(
        "closed_bad_framing_total",
        "counter",
        "Connections closed for bytes that are not framing.",
        stats.closed_bad_framing,
    );
    metric(
        "reads_paused_total",
        "counter",
        "Times a connection's reading was paused for sending over frames_per_second_max.",
        stats.reads_paused,
    );
    metric(
        "frames_in_total",
        "counter",
        "Frames read from clients.",
        stats.frames_in,
    );
    metric(
        "bytes_in_total",
        "counter",
        "Bytes read from clients.",
        stats.bytes_in,
    );
    metric(
        "bytes_out_total",
        "counter",
        "Bytes written to clients.",
        stats.bytes_out,
    );
    metric(
        "journal_records_total",
        "counter",
        "Records written to the journal.",
        stats.journal_records,
    );
    metric(
        "journal_bytes",
        "gauge",
        "Bytes of the journal's files (segments are preallocated whole).",
        stats.journal_bytes,
    );
    metric(
        "disk_free_bytes",
        "gauge",
        "Bytes free on the data directory's file system; the server stops when the journal cannot make its next segment.",
        stats.disk_free_bytes,
    );
    let _ = writeln!(
        text,
        "# HELP courier_stage_latency_seconds From an event's arrival in the inbound ring to the end of the batch in which the stage finished it."
    );
    let _ = writeln!(text, "# TYPE courier_stage_latency_seconds histogram");
    for histogram in latencies {
        let stage = histogram.stage;
        let mut cumulative = 0;
        for (bound, count) in BUCKET_BOUNDS_NS.iter().zip(&histogram.counts) {
            cumulative += count;
            let _ = writeln!(
                text,
                "courier_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e9
            );
        }
        let _ = writeln!(
            text,
            "courier_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(
            text,
            "courier_stage_latency_seconds_sum{{stage=\"{stage}\"}} {}",
            histogram.sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            text,
            "courier_stage_latency_seconds_count{{stage=\"{stage}\"}} {}",
            histogram.count
        );
    }
    text
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
        let text = render(&stats, &[histogram]);
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
