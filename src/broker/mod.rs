//! The broker: the chat pipeline, without sockets.
//!
//! ```text
//!  Ingress ─▶ inbound ring ─▶ decode ─▶ journal ─▶ flush ─▶ logic ─┬▶ fan-out ─▶ Egress
//!  auth workers ──┘                                                └▶ store (SQLite)
//! ```
//!
//! Logic owns accounts, sessions, contacts and groups and checks every
//! command; the fan-out stage owns the inboxes and carries out what logic
//! decided (appends, acknowledgements, pushes, syncs), so a message to a
//! 500-member group is fanned out on the fan-out thread.
//!
//! An embedding gateway (or the mio server in [`crate::net`]) builds a
//! [`Broker`] from a [`BrokerConfig`] and an [`Egress`], pushes connection
//! events and frames in through an [`Ingress`], and receives the frames to
//! send out through its `Egress`, per connection.
//!
//! # Lifecycle
//!
//! 1. [`Broker::open`] opens the journal under the data directory (recovering
//!    a torn tail), replays it into fresh state, catches the SQLite
//!    projection up, journals a start marker (every connection of an earlier
//!    run is gone), and starts the stages and the auth workers.
//! 2. The gateway publishes through [`Broker::ingress`] handles: one per
//!    thread, cloned. A frame's reply arrives through the egress. Under
//!    [`PlacementSetting::Inline`] no thread of the broker's runs the stages:
//!    the gateway takes the [`BrokerDriver`] ([`Broker::take_driver`]) and
//!    runs it on its own thread after it publishes, as `courier serve` does
//!    on its first I/O thread.
//! 3. [`Broker::shutdown`] (after the gateway stops publishing) drains
//!    everything published, flushes the journal and stops the threads.

mod auth;
mod clock;
mod compactor;
mod config;
mod delivery;
mod event;
mod ids;
mod latency;
mod logic;
mod recover;
#[cfg(test)]
mod sim;
mod snapshot;
mod stages;
mod store;
#[cfg(test)]
mod test;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use auth::AuthConfig;
pub use clock::Clock;
pub use config::{BrokerConfig, DurabilitySetting, PlacementSetting, WaitSetting};
pub use event::{
    Inbound, Out, Outbox, RecordError, RECORD_CONNECTED, RECORD_DISCONNECTED, RECORD_FRAME,
    RECORD_LOGIN, RECORD_REGISTERED, RECORD_START,
};
pub use ids::GroupId;
pub use ids::{ConnId, UserId};
pub use latency::{LatencyHistogram, BUCKET_BOUNDS_NS};
pub use logic::{
    Census, LoginCounts, BODY_HEADROOM_BYTES, GROUP_NAME_BYTES_MAX, NAME_BYTES_MAX,
    PASSWORD_BYTES_MAX,
};
pub use store::StoreError;

use crate::journal::{Journal, JournalError};
use crate::ringbuffer::{
    BuildError, Builder, Halted, MultiProducer, Pipeline, StageFailure, TryPublishError,
};
use delivery::Delivery;
use event::Origin;
use latency::{LatencyRecorder, StageLatency};
pub(crate) use logic::address_key;
use logic::Logic;
use logic::LoginCounters;
use recover::Recovered;
use stages::{Decode, FanOut, FlushStage, JournalStage, LogicStage, StoreStage};
use store::Store;

/// Where the broker's frames go: one implementation per gateway. The mio
/// server's routes each frame to the outbound ring of the connection's I/O
/// thread.
///
/// Calls come from the fan-out stage's thread, in order per connection.
/// An implementation must not block for long (a slow client is cut off by
/// the gateway, never waited for), or the whole pipeline waits with it.
pub trait Egress: Send + 'static {
    /// Sends one whole frame (length prefix included) to `conn`. A frame for
    /// a connection that is gone is dropped.
    fn send(&mut self, conn: ConnId, frame: &[u8]);
    /// Closes `conn` once what was sent to it before is written.
    fn close(&mut self, conn: ConnId);
    /// The end of a batch: a place to write or wake once for many frames.
    fn flush(&mut self) {}
}

/// Runs the broker's stages on a thread of the gateway's, under
/// [`PlacementSetting::Inline`]: taken once with [`Broker::take_driver`].
///
/// A gateway's loop publishes what it read, calls [`run`](Self::run) until
/// it returns `Ok(false)` (frames come out through the egress, on this
/// thread), writes, and before it sleeps calls
/// [`prepare_wait`](Self::prepare_wait), so that a publish from another
/// thread (the auth workers, say) wakes it through the hook. It must go on
/// running the driver until `run` returns `Err(Halted)`:
/// [`Broker::shutdown`] waits for that.
pub struct BrokerDriver {
    driver: crate::ringbuffer::Driver<Inbound>,
}

impl BrokerDriver {
    /// Takes one batch of what was published through every stage.
    /// `Ok(true)` if there was one, `Ok(false)` if there was nothing to do,
    /// `Err(Halted)` once the broker has stopped (drained, flushed and shut
    /// down) or a stage failed ([`Broker::failure`] says which).
    pub fn run(&mut self) -> Result<bool, Halted> {
        self.driver.run()
    }

    /// Whether [`run`](Self::run) has work.
    pub fn has_work(&self) -> bool {
        self.driver.has_work()
    }

    /// Sets what wakes the gateway's thread when something is published
    /// while it sleeps (`move || waker.wake()` for a mio loop). Once.
    pub fn set_wake_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.driver.set_wake_hook(hook)
    }

    /// Call just before the thread sleeps: true if it may (the next
    /// publish calls the wake hook), false if there is work to run first.
    pub fn prepare_wait(&self) -> bool {
        self.driver.prepare_wait()
    }

    /// Call when the thread wakes, whatever woke it: its own publishes
    /// before the next [`run`](Self::run) then do not call the wake hook.
    pub fn end_wait(&self) {
        self.driver.end_wait()
    }

    /// Blocks until there is work to run (for a thread with nothing else
    /// to wait on).
    pub fn wait(&self) {
        self.driver.wait()
    }
}

/// Why the broker failed to open or stopped with an error.
///
/// Each message is whole, its cause's text included, and names no separate
/// source: a program that prints the chain of causes (anyhow's `{:?}`)
/// shows each cause once.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory cannot be used.
    #[error("data directory {path}: {error}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The journal failed to open or to write.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// A journal record cannot be replayed.
    #[error("replay: {0}")]
    Replay(RecordError),
    /// The SQLite projection failed.
    #[error("{0}")]
    Store(StoreError),
    /// The pipeline could not be built.
    #[error("pipeline: {0}")]
    Build(BuildError),
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    /// A stage failed while running (for instance, the journal could not
    /// write): the broker stopped so that nothing unjournaled is acknowledged.
    #[error("stage failed: {0}")]
    Stage(StageFailure),
    /// The journal's oldest records were deleted (message retention), and
    /// what replaced them (a snapshot, the SQLite projection) is missing.
    #[error("{0}")]
    History(String),
    /// A snapshot taken while serving could not be written or read.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// The conversions `?` makes into a [`BrokerError`].
macro_rules! broker_error_from {
    ($($source:ty => $variant:ident),* $(,)?) => {
        $(impl From<$source> for BrokerError {
            fn from(error: $source) -> Self {
                BrokerError::$variant(error)
            }
        })*
    };
}

broker_error_from!(
    JournalError => Journal,
    RecordError => Replay,
    StoreError => Store,
    BuildError => Build,
    StageFailure => Stage,
);

/// What [`Broker::open`] found and rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The journal sequence of the snapshot state was loaded from, if any.
    pub snapshot_loaded: Option<u64>,
    /// Journal records replayed (after the snapshot, if one was loaded).
    pub records_replayed: u64,
    /// The journal sequence of the snapshot written at this start, if one
    /// was (see [`BrokerConfig::snapshot_min_records`]).
    pub snapshot_written: Option<u64>,
    /// Accounts after replay.
    pub users: usize,
    /// Bytes of a torn tail the journal cut off at open.
    pub torn_bytes_truncated: u64,
    /// Journal records the SQLite projection was behind by.
    pub store_records_caught_up: u64,
    /// Journal segments deleted at this start: with a message retention,
    /// those before both the snapshot and the oldest message held.
    pub segments_deleted: usize,
}

/// Pushes connection events and frames into the broker. Clone one per
/// publishing thread.
#[derive(Clone)]
pub struct Ingress {
    producer: MultiProducer<Inbound>,
}

impl Ingress {
    /// A connection opened; send this before its first frame.
    pub fn connected(&mut self, conn: ConnId) -> Result<(), Halted> {
        self.publish(conn, Origin::Connected, &[])
    }

    /// As [`Ingress::connected`], with the client's address: failed logins
    /// are then limited per address too (see docs/PROTOCOL.md, Login), and
    /// the address is journaled with the connection.
    pub fn connected_from(&mut self, conn: ConnId, ip: IpAddr) -> Result<(), Halted> {
        let (bytes, length) = event::encode_address(ip);
        self.publish(conn, Origin::Connected, &bytes[..length])
    }

    /// A connection closed; nothing more is sent to it.
    pub fn disconnected(&mut self, conn: ConnId) -> Result<(), Halted> {
        self.publish(conn, Origin::Disconnected, &[])
    }

    /// A frame from `conn`: its header and payload, without the length
    /// prefix (what [`crate::codec::FrameDecoder`] cut out, re-joined).
    /// Waits while the ring is full.
    pub fn frame(&mut self, conn: ConnId, frame: &[u8]) -> Result<(), Halted> {
        self.publish(conn, Origin::Frame, frame)
    }

    /// As [`Ingress::connected`], but returns `Full` instead of waiting.
    pub fn try_connected(&mut self, conn: ConnId) -> Result<(), TryPublishError> {
        self.try_publish(conn, Origin::Connected, &[])
    }

    /// As [`Ingress::connected_from`], but returns `Full` instead of waiting.
    pub fn try_connected_from(&mut self, conn: ConnId, ip: IpAddr) -> Result<(), TryPublishError> {
        let (bytes, length) = event::encode_address(ip);
        self.try_publish(conn, Origin::Connected, &bytes[..length])
    }

    /// As [`Ingress::disconnected`], but returns `Full` instead of waiting.
    pub fn try_disconnected(&mut self, conn: ConnId) -> Result<(), TryPublishError> {
        self.try_publish(conn, Origin::Disconnected, &[])
    }

    /// As [`Ingress::frame`], but returns `Full` instead of waiting: for a
    /// network thread that must go on writing while the ring is full.
    pub fn try_frame(&mut self, conn: ConnId, frame: &[u8]) -> Result<(), TryPublishError> {
        self.try_publish(conn, Origin::Frame, frame)
    }

    /// Several frames from `conn` at once, each a range of `buffer` (header
    /// and payload, no length prefix): one claim and at most one wake-up for
    /// all of them. Returns `Full` (publishing none) if they do not all fit.
    ///
    /// # Panics
    /// If a range is outside `buffer`, or there are more frames than ring slots.
    pub fn try_frames_in(
        &mut self,
        conn: ConnId,
        buffer: &[u8],
        frames: &[std::ops::Range<usize>],
    ) -> Result<(), TryPublishError> {
        if frames.is_empty() {
            return Ok(());
        }
        let now = latency::monotonic_ns();
        self.producer
            .try_publish_batch(frames.len(), |slots| {
                for (slot, range) in slots.zip(frames) {
                    slot.fill(conn, Origin::Frame, &buffer[range.clone()], now);
                }
            })
            .map(drop)
    }

    fn publish(&mut self, conn: ConnId, origin: Origin, body: &[u8]) -> Result<(), Halted> {
        let now = latency::monotonic_ns();
        self.producer
            .publish(|event| event.fill(conn, origin, body, now))
            .map(drop)
    }

    fn try_publish(
        &mut self,
        conn: ConnId,
        origin: Origin,
        body: &[u8],
    ) -> Result<(), TryPublishError> {
        self.producer
            .try_publish(|event| event.fill(conn, origin, body, latency::monotonic_ns()))
            .map(drop)
    }
}

/// Reads a running broker's figures from any thread (see [`Broker::watch`]).
#[derive(Clone)]
pub struct BrokerWatch {
    records: Arc<AtomicU64>,
    compaction: Arc<compactor::CompactionCounts>,
    census: Arc<stages::CensusCell>,
    logins: Arc<LoginCounters>,
    latencies: Vec<Arc<StageLatency>>,
    group_commits: Arc<StageLatency>,
    data_dir: PathBuf,
}

/// What the journal takes on disk and what the data directory's file system
/// has left: the broker stops (refusing to acknowledge what it cannot
/// journal) when the journal cannot make its next segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of the journal's files. Segments are preallocated, so this
    /// grows a whole segment (`segment_size_mb`) at a time, one ahead of
    /// the records.
    pub journal_bytes: u64,
    /// Bytes the server may still write on the data directory's file system.
    pub free_bytes: u64,
}

impl BrokerWatch {
    /// As [`Broker::journal_records`].
    pub fn journal_records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// As [`Broker::census`].
    pub fn census(&self) -> Census {
        self.census.load()
    }

    /// Failed password logins, and logins refused by the limits on
    /// guessing, since the broker opened.
    pub fn logins(&self) -> LoginCounts {
        self.logins.load()
    }

    /// Snapshots taken while serving, and journal segments deleted (at
    /// the start and while serving), under a message retention.
    pub fn compaction(&self) -> (u64, u64) {
        (
            self.compaction.snapshots.load(Ordering::Relaxed),
            self.compaction.segments_deleted.load(Ordering::Relaxed),
        )
    }

    /// As [`Broker::stage_latencies`].
    pub fn stage_latencies(&self) -> Vec<LatencyHistogram> {
        self.latencies.iter().map(|stage| stage.read()).collect()
    }

    /// How long each group commit (the msync of a batch under `batch`
    /// durability) took, as a histogram named `group-commit`; its count is
    /// the number of group commits.
    pub fn group_commits(&self) -> LatencyHistogram {
        self.group_commits.read()
    }

    /// The journal's size on disk and the free space beside it, read now
    /// (a directory listing and a `statvfs`).
    pub fn disk_usage(&self) -> std::io::Result<DiskUsage> {
        let mut journal_bytes = 0;
        for entry in std::fs::read_dir(self.data_dir.join("journal"))? {
            let metadata = entry?.metadata()?;
            if metadata.is_file() {
                journal_bytes += metadata.len();
            }
        }
        Ok(DiskUsage {
            journal_bytes,
            free_bytes: free_bytes(&self.data_dir)?,
        })
    }
}

/// What the stages publish for readers on other threads.
struct Shared {
    records: Arc<AtomicU64>,
    census: Arc<stages::CensusCell>,
    /// The journal, flush, logic and fan-out stages' latencies.
    latencies: [Arc<StageLatency>; 4],
    /// Each group commit's duration.
    group_commits: Arc<StageLatency>,
    /// The auth workers' queue, where the logic stage hands password work.
    auth: crossbeam_channel::Sender<auth::AuthJob>,
}

/// The recovered state the stages take over: journal, SQLite store, logic,
/// inboxes, and where frames go.
type StageState = (Journal, Store, Logic, Delivery, Box<dyn Egress>);

/// Wires the stages (decode, journal, flush, logic, then fan-out and the
/// store side by side) around the recovered state, placed as configured.
fn build_pipeline(
    config: &BrokerConfig,
    (journal, store, logic, delivery, egress): StageState,
    shared: Shared,
) -> Result<(MultiProducer<Inbound>, Pipeline<Inbound>), BrokerError> {
    let [journal_latency, flush_latency, logic_latency, fan_out_latency] = shared.latencies;
    let mut builder = Builder::new(config.ring_slots, Inbound::default)
        .wait_strategy(config.wait_strategy())
        .placement(config.ring_placement());
    let decode = builder.stage_mut("decode", &[], Decode);
    let flusher = journal.flusher();
    let journal = JournalStage {
        journal,
        scratch: Vec::new(),
        batch_timestamp_ns: None,
        clock: config.clock.clone(),
        records: shared.records,
        latency: LatencyRecorder::new(journal_latency),
    };
    let journal_stage = builder.stage_mut("journal", &[decode], journal);
    let flush = FlushStage {
        flusher,
        durability: config.journal_durability(),
        unflushed: false,
        latency: LatencyRecorder::new(flush_latency),
        group_commits: shared.group_commits,
    };
    let flush_stage = builder.stage("flush", &[journal_stage], flush);
    let logic = LogicStage {
        logic,
        census: Arc::clone(&shared.census),
        latency: LatencyRecorder::new(logic_latency),
        auth: shared.auth,
        clock: config.clock.clone(),
        batch_now_ms: None,
    };
    let logic_stage = builder.stage_mut("logic", &[flush_stage], logic);
    let fan_out = FanOut {
        egress,
        delivery,
        census: shared.census,
        out: Outbox::default(),
        scratch: Vec::new(),
        latency: LatencyRecorder::new(fan_out_latency),
    };
    builder.stage("fan-out", &[logic_stage], fan_out);
    builder.stage("store", &[logic_stage], StoreStage { store });
    Ok(builder.build_multi_producer()?)
}

/// Bytes an unprivileged writer may still use on the file system of `path`.
fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// A running broker.
pub struct Broker {
    /// Takes snapshots while serving, under a message retention.
    compactor: Option<compactor::Compactor>,
    pipeline: Pipeline<Inbound>,
    ingress: Ingress,
    watch: BrokerWatch,
    auth: auth::AuthPool,
    report: OpenReport,
}

impl Broker {
    /// Opens the data directory, rebuilds state from the journal, and starts
    /// the pipeline, sending out through `egress`.
    pub fn open(config: &BrokerConfig, egress: impl Egress) -> Result<Self, BrokerError> {
        config.validate().map_err(BrokerError::Config)?;
        if config.message_retention_s > 0 && !config.snapshots {
            tracing::warn!(
                message_retention_s = config.message_retention_s,
                "messages expire from memory, but without snapshots no journal segment is ever \
                 deleted: the journal grows without bound (set snapshots = true)"
            );
        }
        let Recovered {
            journal,
            store,
            mut logic,
            delivery,
            report,
            compactor,
        } = recover::recover(config)?;
        let segments_deleted = report.segments_deleted;
        // The compactor reads, prunes and flushes the journal the journal
        // stage is about to own.
        let compactor = compactor.map(|(settings, base)| {
            (
                settings,
                base,
                journal.reader(),
                journal.pruner(),
                journal.flusher(),
            )
        });
        let (jobs_sender, jobs) = auth::AuthPool::queue(&config.auth);
        let logins = Arc::new(LoginCounters::default());
        logic.set_auth(
            auth::dummy_hash(&config.auth),
            logins.clone(),
            config.auth.checks_per_address_max,
        );

        let records = Arc::new(AtomicU64::new(journal.next_sequence()));
        let census = Arc::new(stages::CensusCell::default());
        let latencies = ["journal", "flush", "logic", "fan-out"].map(StageLatency::new);
        let group_commits = StageLatency::new("group-commit");
        census.store(logic.census());
        census.store_held(&delivery);
        let shared = Shared {
            records: Arc::clone(&records),
            census: Arc::clone(&census),
            latencies: latencies.clone(),
            group_commits: Arc::clone(&group_commits),
            auth: jobs_sender,
        };
        let state = (
            journal,
            store,
            logic,
            delivery,
            Box::new(egress) as Box<dyn Egress>,
        );
        let (producer, pipeline) = build_pipeline(config, state, shared)?;
        let auth = auth::AuthPool::start(&config.auth, jobs, producer.clone())
            .map_err(BrokerError::Thread)?;
        let compaction = Arc::new(compactor::CompactionCounts {
            segments_deleted: AtomicU64::new(segments_deleted as u64),
            ..compactor::CompactionCounts::default()
        });
        let compactor = match compactor {
            Some((settings, base, reader, pruner, flusher)) => Some(compactor::Compactor::start(
                settings,
                reader,
                pruner,
                flusher,
                base,
                Arc::clone(&compaction),
            )?),
            None => None,
        };
        Ok(Self {
            compactor,
            pipeline,
            ingress: Ingress { producer },
            watch: BrokerWatch {
                records,
                compaction,
                census,
                logins,
                latencies: latencies.to_vec(),
                group_commits,
                data_dir: config.data_dir.clone(),
            },
            auth,
            report,
        })
    }

    /// A handle to publish with; clone it per thread.
    pub fn ingress(&self) -> Ingress {
        self.ingress.clone()
    }

    /// What opening found.
    pub fn report(&self) -> &OpenReport {
        &self.report
    }

    /// Journal records written so far (the journal's next sequence), as of
    /// the last batch the journal stage finished.
    pub fn journal_records(&self) -> u64 {
        self.watch.journal_records()
    }

    /// Registered users, users online and devices online, as of the last
    /// batch the logic stage finished. A device counts from its login until
    /// its logout or its connection closes (a dropped link, once the
    /// heartbeat timeout notices it).
    pub fn census(&self) -> Census {
        self.watch.census()
    }

    /// A handle that reads the broker's figures (journal records, census,
    /// stage latencies) from another thread, as a metrics endpoint does.
    pub fn watch(&self) -> BrokerWatch {
        self.watch.clone()
    }

    /// Per-stage latency histograms: from an event's publish into the
    /// inbound ring to the end of the batch in which each stage finished
    /// it (`journal`: appended; `flush`: durable under batch durability;
    /// `logic`: applied; `fan-out`: its frames handed to the egress).
    pub fn stage_latencies(&self) -> Vec<LatencyHistogram> {
        self.watch.stage_latencies()
    }

    /// How long each group commit took (see [`BrokerWatch::group_commits`]).
    pub fn group_commits(&self) -> LatencyHistogram {
        self.watch.group_commits()
    }

    /// The driver that runs the stages under [`PlacementSetting::Inline`];
    /// `None` under other placements, or once taken. If nobody takes it,
    /// nothing runs the stages until [`shutdown`](Self::shutdown) does.
    pub fn take_driver(&mut self) -> Option<BrokerDriver> {
        self.pipeline
            .take_driver()
            .map(|driver| BrokerDriver { driver })
    }

    /// The journal's size on disk and the data directory's free space.
    pub fn disk_usage(&self) -> std::io::Result<DiskUsage> {
        self.watch.disk_usage()
    }

    /// Whether a stage failed (the broker then refuses new input).
    pub fn failure(&self) -> Option<StageFailure> {
        self.pipeline.failure()
    }

    /// Drains everything published, flushes the journal, commits the store
    /// and stops every thread. Stop publishing first.
    pub fn shutdown(self) -> Result<(), BrokerError> {
        let Self {
            compactor,
            pipeline,
            ingress,
            auth,
            ..
        } = self;
        // Stopped first: it reads the journal the pipeline closes.
        drop(compactor);
        drop(ingress);
        let outcome = pipeline.shutdown();
        // The logic stage held the auth queue's sender; with the pipeline
        // stopped it is gone, and the workers finish.
        auth.join();
        outcome.map_err(BrokerError::Stage)
    }
}
