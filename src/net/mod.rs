//! The TCP server: the broker's first gateway, on mio.
//!
//! One listener and `io_threads` I/O threads. Each I/O thread reads frames
//! from its connections into the broker's inbound ring (never waiting: when
//! the ring is full it stops reading and goes on writing) and drains its own
//! outbound ring, fed by the broker's fan-out stage, writing once per ready
//! connection per batch. A `mio::Waker` wakes it only when it sleeps.
//!
//! # Shutdown
//! [`ServerHandle::shutdown`]: stop accepting and reading, let the broker
//! drain what was published and flush the journal, write out what the
//! broker sent (for two seconds at most), close every connection.

mod accept;
mod conn;
mod io;
mod log_sink;
mod metrics;
mod per_ip;
mod session;
mod stats;

pub use log_sink::{log_lines_dropped, print_line, LogSink};
pub use metrics::METRICS_THREAD;
pub use stats::ServerStats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use serde::{Deserialize, Serialize};

use crate::broker::{
    Broker, BrokerConfig, BrokerDriver, BrokerError, ConnId, Egress, OpenReport, PlacementSetting,
};
use crate::ringbuffer::{Builder, Pipeline, Poller, SingleProducer, WaitStrategy};
use crossbeam_channel::Receiver;
use io::{IoThread, Sibling, WAKE};

/// The server's configuration: the network settings and the broker's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// I/O threads (each with its own mio loop and outbound ring).
    pub io_threads: usize,
    /// Bytes a connection may have waiting to be written; a client that
    /// reads so slowly that it falls further behind is disconnected.
    pub output_cap_bytes: usize,
    /// Slots of each I/O thread's outbound ring (a power of two).
    pub outbound_ring_slots: usize,
    /// A connection from which nothing (not even a ping) arrives for this
    /// long is closed.
    pub heartbeat_timeout_ms: u64,
    /// Connections per I/O thread beyond which new ones are refused.
    pub connections_max: usize,
    /// Connections one client address may hold at once (an IPv4 address,
    /// or an IPv6 /64); more are refused (closed at once). 0 for no limit,
    /// the default: many users may share an address behind a carrier's or
    /// an office's NAT.
    pub connections_per_ip_max: usize,
    /// Frames a connection may send per second, on average; bursts of up
    /// to one second's worth pass at once. A client that sends faster is
    /// read more slowly (its socket is left unread until its allowance
    /// refills, so TCP slows the client down): nothing is dropped, and no
    /// one else waits. 0 for no limit.
    pub frames_per_second_max: u32,
    /// How often `courier serve` logs its counters (connections, frames
    /// and bytes per second, journal records); 0 for never.
    pub stats_interval_s: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`): the counters,
    /// the user census and per-stage latency histograms. None (the
    /// default) serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Accept WebSocket upgrades on the client port (for browsers): the
    /// same frames travel in binary messages.
    pub websocket: bool,
    /// The broker.
    pub broker: BrokerConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            io_threads: 1,
            output_cap_bytes: 4 << 20,
            outbound_ring_slots: 4096,
            heartbeat_timeout_ms: 90_000,
            connections_max: 100_000,
            connections_per_ip_max: 0,
            frames_per_second_max: 10_000,
            stats_interval_s: 60,
            metrics_listen: None,
            websocket: true,
            broker: BrokerConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Checks what types cannot; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.io_threads == 0 || self.io_threads > 64 {
            return Err(format!(
                "io_threads must be 1 to 64 (is {})",
                self.io_threads
            ));
        }
        if !self.outbound_ring_slots.is_power_of_two() || self.outbound_ring_slots < 64 {
            return Err(format!(
                "outbound_ring_slots must be a power of two, at least 64 (is {})",
                self.outbound_ring_slots
            ));
        }
        if self.output_cap_bytes < self.broker.frame_size_max_bytes {
            return Err("output_cap_bytes must hold at least one frame of the largest size".into());
        }
        if self.heartbeat_timeout_ms == 0 {
            return Err("heartbeat_timeout_ms must be positive".into());
        }
        self.broker.validate()
    }
}

/// Why the server could not start or stopped with an error. Each message
/// is whole, its cause's text included, and names no separate source (see
/// [`BrokerError`]).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("listening on {address}: {error}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// An OS resource (poll, waker, thread) could not be made.
    #[error("{what}: {error}")]
    Os {
        /// What was being made.
        what: &'static str,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The broker failed.
    #[error("{0}")]
    Broker(BrokerError),
}

impl From<BrokerError> for ServerError {
    fn from(error: BrokerError) -> Self {
        ServerError::Broker(error)
    }
}

/// A slot of an outbound ring: one frame (or a close) for one connection.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    pub(crate) conn: ConnId,
    pub(crate) close: bool,
    pub(crate) frame: Vec<u8>,
}

/// Shared between the server handle and its I/O threads.
pub(crate) struct Control {
    pub(crate) stop_reading: AtomicBool,
}

/// Frames the egress gathers for one ring before it publishes them.
const EGRESS_BATCH_MAX: usize = 256;

/// The broker's egress for this server: each frame goes to the outbound
/// ring of its connection's I/O thread. Frames are gathered per ring and
/// published as one batch at the end of the fan-out's batch (one claim and
/// at most one wake-up of the I/O thread for all of them).
struct NetEgress {
    rings: Vec<EgressRing>,
}

struct EgressRing {
    producer: SingleProducer<Outbound>,
    /// Frames published with one claim at most: a batch never needs more
    /// than half the ring, so the I/O thread drains while it fills.
    batch_max: usize,
    /// The frames gathered since the last publish.
    pending: FrameBatch,
    /// Under the inline placement, for the I/O thread that runs the stages:
    /// frames are handed over here instead of through the ring, which that
    /// thread cannot drain while it runs them.
    local: Option<Arc<Mutex<FrameBatch>>>,
}

/// Frames of the fan-out, gathered for one I/O thread: published to its
/// ring as a batch, or under the inline placement taken by the thread that
/// runs the stages after each run.
#[derive(Debug, Default)]
pub(crate) struct FrameBatch {
    /// (connection, close, range of `bytes`) per frame, in order.
    pub(crate) frames: Vec<(ConnId, bool, std::ops::Range<usize>)>,
    pub(crate) bytes: Vec<u8>,
}

impl FrameBatch {
    fn push(&mut self, conn: ConnId, close: bool, frame: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(frame);
        self.frames.push((conn, close, start..self.bytes.len()));
    }

    /// Moves `other`'s frames to the end of this batch.
    fn append(&mut self, other: &mut FrameBatch) {
        if self.frames.is_empty() {
            std::mem::swap(self, other);
        } else {
            let base = self.bytes.len();
            self.bytes.extend_from_slice(&other.bytes);
            self.frames.extend(
                other.frames.iter().map(|(conn, close, range)| {
                    (*conn, *close, base + range.start..base + range.end)
                }),
            );
        }
        other.clear();
    }

    pub(crate) fn clear(&mut self) {
        self.frames.clear();
        self.bytes.clear();
    }
}

impl EgressRing {
    fn publish(&mut self) {
        if let Some(local) = &self.local {
            // Only the thread that runs the stages takes the lock, between
            // runs: it is never contended.
            local
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut self.pending);
            return;
        }
        let pending = &self.pending;
        let mut from = 0;
        while from < pending.frames.len() {
            let count = (pending.frames.len() - from).min(self.batch_max);
            let items = &pending.frames[from..from + count];
            // The I/O thread drains its ring without ever waiting on the
            // broker, so this wait is short; it fails only once the server
            // is stopping, and then the frames have nowhere to go.
            let _ = self.producer.publish_batch(count, |slots| {
                for (slot, (conn, close, range)) in slots.zip(items) {
                    slot.conn = *conn;
                    slot.close = *close;
                    slot.frame.clear();
                    slot.frame.extend_from_slice(&pending.bytes[range.clone()]);
                }
            });
            from += count;
        }
        self.pending.clear();
    }
}

impl NetEgress {
    fn queue(&mut self, conn: ConnId, close: bool, frame: &[u8]) {
        let Some(ring) = self
            .rings
            .get_mut(conn::numbering::thread_of(conn) as usize)
        else {
            // Not an id this server made; nothing to deliver to.
            return;
        };
        ring.pending.push(conn, close, frame);
        if ring.pending.frames.len() >= EGRESS_BATCH_MAX {
            ring.publish();
        }
    }
}

impl Egress for NetEgress {
    fn send(&mut self, conn: ConnId, frame: &[u8]) {
        self.queue(conn, false, frame);
    }

    fn close(&mut self, conn: ConnId) {
        self.queue(conn, true, &[]);
    }

    fn flush(&mut self) {
        for ring in &mut self.rings {
            if !ring.pending.frames.is_empty() {
                ring.publish();
            }
        }
    }
}

/// A running server.
pub struct ServerHandle {
    address: SocketAddr,
    broker: Broker,
    control: Arc<Control>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    outbound: Vec<Pipeline<Outbound>>,
    stopped_reading: crossbeam_channel::Receiver<u16>,
    counters: Arc<stats::Counters>,
    metrics: Option<metrics::MetricsServer>,
}

/// Starts a server: binds, opens the broker (replaying its journal) and
/// starts the I/O threads.
pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let (listener, address, mut metrics) = bind(&config)?;
    // Under the inline placement (this server's default) the first I/O
    // thread runs the stages and takes its own frames straight from the
    // fan-out.
    let mut config = config;
    if config.broker.placement == PlacementSetting::Auto {
        config.broker.placement = PlacementSetting::Inline;
    }
    let inline = config.broker.placement == PlacementSetting::Inline;
    let local = inline.then(|| Arc::new(Mutex::new(FrameBatch::default())));
    let (rings, pollers, outbound) = outbound_rings(&config, local.as_ref())?;
    let mut broker = Broker::open(&config.broker, NetEgress { rings })?;
    let driver = broker.take_driver();
    let report = broker.report().clone();
    log_report(&report, address);

    let control = Arc::new(Control {
        stop_reading: AtomicBool::new(false),
    });
    let (stopped_sender, stopped_reading) = crossbeam_channel::unbounded();
    let counters = Arc::new(stats::Counters::default());
    let (polls, siblings, handoffs) = polls_and_siblings(&config)?;
    let wakers: Vec<Arc<Waker>> = siblings.iter().map(|s| Arc::clone(&s.waker)).collect();
    let first = FirstThread {
        listener,
        siblings,
        driver,
        local,
    };
    let common = ThreadCommon {
        control: Arc::clone(&control),
        config: config.clone(),
        stopped_reading: stopped_sender,
        counters: Arc::clone(&counters),
    };
    let threads = spawn_io_threads((polls, handoffs, pollers), &wakers, first, &common, &broker)?;
    if let Some(metrics) = &mut metrics {
        metrics
            .serve(Arc::clone(&counters), broker.watch())
            .map_err(os_error("starting the metrics thread"))?;
    }
    Ok(ServerHandle {
        address,
        broker,
        control,
        wakers,
        threads,
        outbound,
        stopped_reading,
        counters,
        metrics,
    })
}

/// An OS error while starting, named by `what` failed.
fn os_error(what: &'static str) -> impl Fn(std::io::Error) -> ServerError {
    move |error| ServerError::Os { what, error }
}

/// Binds the client listener (non-blocking) and the metrics listener.
fn bind(
    config: &ServerConfig,
) -> Result<(TcpListener, SocketAddr, Option<metrics::MetricsServer>), ServerError> {
    let std_listener =
        std::net::TcpListener::bind(config.listen).map_err(|error| ServerError::Listen {
            address: config.listen,
            error,
        })?;
    std_listener
        .set_nonblocking(true)
        .map_err(os_error("listener"))?;
    let address = std_listener.local_addr().map_err(os_error("listener"))?;
    let metrics = match config.metrics_listen {
        Some(address) => Some(
            metrics::MetricsServer::bind(address)
                .map_err(|error| ServerError::Listen { address, error })?,
        ),
        None => None,
    };
    Ok((TcpListener::from_std(std_listener), address, metrics))
}

/// The outbound rings, one per I/O thread: the producers the egress
/// writes to, each thread's poller, and the pipelines that own them.
#[allow(clippy::type_complexity)]
fn outbound_rings(
    config: &ServerConfig,
    local: Option<&Arc<Mutex<FrameBatch>>>,
) -> Result<
    (
        Vec<EgressRing>,
        Vec<Poller<Outbound>>,
        Vec<Pipeline<Outbound>>,
    ),
    ServerError,
> {
    let mut rings = Vec::new();
    let mut pollers = Vec::new();
    let mut outbound = Vec::new();
    for index in 0..config.io_threads {
        let mut builder = Builder::new(config.outbound_ring_slots, Outbound::default)
            .wait_strategy(WaitStrategy::BLOCKING);
        let id = builder.poller(&format!("io-{index}"), &[]);
        let (producer, mut pipeline) =
            builder.build_single_producer().map_err(BrokerError::from)?;
        pollers.push(
            pipeline
                .take_poller(id)
                .expect("the poller was added above"),
        );
        rings.push(EgressRing {
            producer,
            batch_max: EGRESS_BATCH_MAX.min(config.outbound_ring_slots / 2),
            pending: FrameBatch::default(),
            local: if index == 0 { local.cloned() } else { None },
        });
        outbound.push(pipeline);
    }
    Ok((rings, pollers, outbound))
}

/// Each I/O thread's poll, its waker and hand-over channel (as the
/// listening thread's siblings), and the receiving ends.
#[allow(clippy::type_complexity)]
fn polls_and_siblings(
    config: &ServerConfig,
) -> Result<(Vec<Poll>, Vec<Sibling>, Vec<Receiver<io::Accepted>>), ServerError> {
    let mut polls = Vec::new();
    let mut siblings = Vec::new();
    let mut handoffs = Vec::new();
    for _ in 0..config.io_threads {
        let poll = Poll::new().map_err(os_error("mio poll"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(os_error("mio waker"))?);
        // A manual clock that moves wakes the thread to look at its
        // deadlines (heartbeats, pauses) again.
        let woken = Arc::clone(&waker);
        config.broker.clock.on_advance(move || {
            let _ = woken.wake();
        });
        let (sockets, handoff) = crossbeam_channel::unbounded();
        siblings.push(Sibling {
            sockets,
            waker: Arc::clone(&waker),
        });
        handoffs.push(handoff);
        polls.push(poll);
    }
    Ok((polls, siblings, handoffs))
}

/// What only the first I/O thread gets: the listener, the siblings to
/// hand connections to, and under the inline placement the driver and
/// its frames.
struct FirstThread {
    listener: TcpListener,
    siblings: Vec<Sibling>,
    driver: Option<BrokerDriver>,
    local: Option<Arc<Mutex<FrameBatch>>>,
}

/// What every I/O thread gets a copy of.
struct ThreadCommon {
    control: Arc<Control>,
    config: ServerConfig,
    stopped_reading: crossbeam_channel::Sender<u16>,
    counters: Arc<stats::Counters>,
}

/// Starts the I/O threads, the first with what [`FirstThread`] holds.
fn spawn_io_threads(
    (polls, handoffs, pollers): (
        Vec<Poll>,
        Vec<Receiver<io::Accepted>>,
        Vec<Poller<Outbound>>,
    ),
    wakers: &[Arc<Waker>],
    first: FirstThread,
    common: &ThreadCommon,
    broker: &Broker,
) -> Result<Vec<std::thread::JoinHandle<()>>, ServerError> {
    let mut first = Some(first);
    let mut threads = Vec::new();
    for (index, ((poll, handoff), poller)) in
        polls.into_iter().zip(handoffs).zip(pollers).enumerate()
    {
        let waker = Arc::clone(&wakers[index]);
        poller.set_wake_hook(move || {
            // A failed wake leaves the thread to its next timeout or event.
            let _ = waker.wake();
        });
        let (mut listener, siblings, driver, local) = match first.take() {
            Some(first) => (
                Some(first.listener),
                first.siblings,
                first.driver,
                first.local,
            ),
            None => (None, Vec::new(), None, None),
        };
        if let Some(driver) = &driver {
            let waker = Arc::clone(&wakers[index]);
            driver.set_wake_hook(move || {
                let _ = waker.wake();
            });
        }
        if let Some(listener) = &mut listener {
            poll.registry()
                .register(listener, io::LISTENER_TOKEN, Interest::READABLE)
                .map_err(os_error("registering the listener"))?;
        }
        let per_ip_max = common.config.connections_per_ip_max;
        let thread = IoThread {
            index: index as u16,
            poll,
            per_ip: (listener.is_some() && per_ip_max > 0).then(|| per_ip::PerIp::new(per_ip_max)),
            listener,
            siblings,
            driver,
            local,
            handoff,
            outbound: poller,
            ingress: Some(broker.ingress()),
            control: Arc::clone(&common.control),
            config: common.config.clone(),
            stopped_reading: common.stopped_reading.clone(),
            counters: Arc::clone(&common.counters),
        };
        let handle = std::thread::Builder::new()
            .name(format!("courier-io-{index}"))
            .spawn(move || thread.run())
            .map_err(os_error("starting an I/O thread"))?;
        threads.push(handle);
    }
    Ok(threads)
}

fn log_report(report: &OpenReport, address: SocketAddr) {
    tracing::info!(
        %address,
        snapshot_loaded = ?report.snapshot_loaded,
        records_replayed = report.records_replayed,
        snapshot_written = ?report.snapshot_written,
        users = report.users,
        torn_bytes_truncated = report.torn_bytes_truncated,
        store_records_caught_up = report.store_records_caught_up,
        segments_deleted = report.segments_deleted,
        "courier is serving"
    );
}

impl ServerHandle {
    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The address the metrics endpoint listens on, if `metrics_listen`
    /// was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(metrics::MetricsServer::address)
    }

    /// What opening the broker found.
    pub fn report(&self) -> &OpenReport {
        self.broker.report()
    }

    /// The server's counters now (connections, frames, bytes, journal
    /// records), each since it started.
    pub fn stats(&self) -> ServerStats {
        self.counters.read_with(&self.broker.watch())
    }

    /// Stops the server: no new connections or frames, everything already
    /// read goes through the pipeline and into the journal (flushed), the
    /// replies are written out, every connection is closed.
    pub fn shutdown(self) -> Result<(), ServerError> {
        let Self {
            broker,
            control,
            wakers,
            threads,
            outbound,
            stopped_reading,
            metrics,
            ..
        } = self;
        // Stop serving metrics first: they describe a server still running.
        drop(metrics);
        control.stop_reading.store(true, Ordering::Release);
        for waker in &wakers {
            let _ = waker.wake();
        }
        for _ in 0..threads.len() {
            // A thread that died (a bug) drops its sender; go on without it.
            if stopped_reading.recv().is_err() {
                break;
            }
        }
        let outcome = broker.shutdown();
        for pipeline in outbound {
            // Poller-only rings: stopping them cannot fail.
            let _ = pipeline.shutdown();
        }
        for waker in &wakers {
            let _ = waker.wake();
        }
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("an I/O thread panicked");
            }
        }
        outcome.map_err(ServerError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(batch: &FrameBatch) -> Vec<(ConnId, bool, &[u8])> {
        batch
            .frames
            .iter()
            .map(|(conn, close, range)| (*conn, *close, &batch.bytes[range.clone()]))
            .collect()
    }

    #[test]
    fn a_frame_batch_appended_to_another_keeps_every_frame_in_order() {
        let mut taken = FrameBatch::default();
        let mut gathered = FrameBatch::default();
        gathered.push(ConnId(1), false, b"one");
        gathered.push(ConnId(2), true, b"");
        // Into an empty batch: moved whole.
        taken.append(&mut gathered);
        assert!(gathered.frames.is_empty() && gathered.bytes.is_empty());
        gathered.push(ConnId(3), false, b"three");
        // Into a batch with frames: its ranges move past what is there.
        taken.append(&mut gathered);
        assert_eq!(
            frames(&taken),
            [
                (ConnId(1), false, &b"one"[..]),
                (ConnId(2), true, &b""[..]),
                (ConnId(3), false, &b"three"[..]),
            ]
        );
        assert!(gathered.frames.is_empty() && gathered.bytes.is_empty());
    }
}
