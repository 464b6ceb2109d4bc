//! Snapshots taken while the broker runs, so that under a message retention
//! the journal on disk stops growing without a restart.
//!
//! The stages never pause for it. A thread of its own rebuilds the state
//! as of a recent record the way a restart would: it loads the last
//! snapshot, replays the journal after it into state of its own (replay is
//! deterministic, so that state equals what the stages held at that
//! record), writes a snapshot there, and deletes the journal segments that
//! neither the snapshot nor a message still held needs.
//!
//! The record it stops at is one the SQLite projection has durably applied
//! (the next start checks that the projection is past its snapshot, and
//! past the first record the journal keeps), and the journal is flushed up
//! to it before the snapshot is written. Its memory is a second copy of the
//! state while a snapshot is taken, dropped after. Its work per snapshot is
//! reading and writing the state, and replaying what the journal grew by;
//! as it waits until the journal has grown by at least the last snapshot's
//! size, the state's share is never more than the replay's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::delivery::{Delivery, DeliveryConfig};
use super::logic::{Logic, LogicConfig};
use super::recover::{apply_records, cursor_after, read_snapshot};
use super::snapshot::{self, SnapshotError, SnapshotPoint};
use super::store::Checkpointer;
use super::BrokerError;
use crate::journal::{Flusher, JournalReader, Pruner};

/// How often the thread looks at the journal's size.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long it waits after a failed snapshot (a full disk, say) before the
/// next try, so that a lasting failure costs neither a replay a second nor
/// a warning a second.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the compactor needs to know.
pub(crate) struct CompactorSettings {
    pub(crate) snapshots_dir: PathBuf,
    pub(crate) database: PathBuf,
    pub(crate) logic_config: LogicConfig,
    pub(crate) delivery_config: DeliveryConfig,
    /// Segments the journal grows by between two snapshots, at least.
    pub(crate) every_segments: u64,
    pub(crate) segment_size_bytes: u64,
}

/// The newest snapshot on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Base {
    pub(crate) sequence: u64,
    /// The segment its record is in.
    pub(crate) segment: u64,
    pub(crate) size_bytes: u64,
    /// The segments before this one are not needed: neither the snapshot
    /// nor a message it holds refers to them.
    pub(crate) needed: u64,
    /// When it was taken (or found, at the start).
    pub(crate) taken: Instant,
}

/// What the compactor has done since the broker opened, for the stats.
#[derive(Debug, Default)]
pub(crate) struct CompactionCounts {
    /// Snapshots taken while serving.
    pub(crate) snapshots: AtomicU64,
    /// Journal segments deleted, at the start and while serving.
    pub(crate) segments_deleted: AtomicU64,
}

/// The compactor's thread; stopped (and joined) when dropped.
pub(crate) struct Compactor {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// What one compaction did.
#[derive(Debug)]
struct Compaction {
    sequence: u64,
    records_replayed: u64,
    snapshot_bytes: u64,
    segments_deleted: usize,
}

struct Worker {
    settings: CompactorSettings,
    reader: JournalReader,
    pruner: Pruner,
    flusher: Flusher,
    checkpointer: Checkpointer,
    /// `None`: no snapshot yet, replay from the journal's first record.
    base: Option<Base>,
    counts: Arc<CompactionCounts>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Compactor {
    pub(crate) fn start(
        settings: CompactorSettings,
        reader: JournalReader,
        pruner: Pruner,
        flusher: Flusher,
        base: Option<Base>,
        counts: Arc<CompactionCounts>,
    ) -> Result<Self, BrokerError> {
        let checkpointer = Checkpointer::open(&settings.database)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let worker = Worker {
            settings,
            reader,
            pruner,
            flusher,
            checkpointer,
            base,
            counts,
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("courier-compact".into())
            .spawn(move || worker.run())
            .map_err(BrokerError::Thread)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        let (stopped, signal) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        signal.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic there has been reported by the panic hook already; the
            // broker goes on without runtime snapshots.
            let _ = thread.join();
        }
    }
}

impl Worker {
    fn run(mut self) {
        let mut retry_at = None;
        while !self.wait(CHECK_EVERY) {
            self.delete_unneeded();
            if retry_at.is_some_and(|at| Instant::now() < at) || !self.due() {
                continue;
            }
            retry_at = None;
            let started = Instant::now();
            match self.compact() {
                Ok(Some(done)) => tracing::info!(
                    sequence = done.sequence,
                    records_replayed = done.records_replayed,
                    snapshot_bytes = done.snapshot_bytes,
                    segments_deleted = done.segments_deleted,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot taken while serving"
                ),
                Ok(None) => {}
                Err(error) => {
                    retry_at = Some(Instant::now() + RETRY_AFTER);
                    tracing::warn!(
                        %error,
                        retry_in_s = RETRY_AFTER.as_secs(),
                        "cannot take a snapshot while serving"
                    );
                }
            }
        }
    }

    /// Waits up to `timeout`; true once the broker stops.
    fn wait(&self, timeout: Duration) -> bool {
        let (stopped, signal) = &*self.stop;
        let stopped = stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = signal
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }

    fn stopping(&self) -> bool {
        *self.stop.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes the segments the last snapshot made unneeded, if some are
    /// left (a reader held one when the snapshot was taken); returns how
    /// many.
    fn delete_unneeded(&self) -> usize {
        let Some(base) = self.base else {
            return 0;
        };
        if self.pruner.segment_range().0 >= base.needed {
            return 0;
        }
        match self.pruner.delete_before(base.needed) {
            Ok(deleted) => {
                self.counts
                    .segments_deleted
                    .fetch_add(deleted.len() as u64, Ordering::Relaxed);
                deleted.len()
            }
            Err(error) => {
                tracing::warn!(%error, "cannot delete an old journal segment; trying again later");
                0
            }
        }
    }

    /// Whether a snapshot is due: the journal has grown enough since the
    /// last one, or that one kept segments for messages that have expired
    /// since (a retention ago).
    fn due(&self) -> bool {
        let (first, active) = self.pruner.segment_range();
        let (since, size_bytes) = match self.base {
            Some(base) => (base.segment, base.size_bytes),
            None => (first, 0),
        };
        let grown = active.saturating_sub(since);
        let grown_enough = grown >= self.settings.every_segments
            && grown * self.settings.segment_size_bytes >= size_bytes;
        let retention = Duration::from_millis(self.settings.delivery_config.message_retention_ms);
        let expired_since = self.base.is_some_and(|base| {
            base.needed < base.segment && base.taken.elapsed() >= retention + CHECK_EVERY
        });
        grown_enough || expired_since
    }

    /// Takes a snapshot at the newest record the projection has durably
    /// applied, and deletes what it makes unneeded. `None` if there is
    /// nothing new to take, or the broker is stopping.
    fn compact(&mut self) -> Result<Option<Compaction>, BrokerError> {
        let Some(applied_until) = self.checkpointer.durable_applied_until()? else {
            return Ok(None);
        };
        let Some(until) = applied_until.checked_sub(1) else {
            return Ok(None);
        };
        if self.base.is_some_and(|base| until <= base.sequence) {
            return Ok(None);
        }
        let (mut logic, mut delivery) = self.load_base()?;
        let mut cursor = cursor_after(&self.reader, self.base.map(|base| base.sequence))?;
        let mut replayed = 0u64;
        let mut last = None;
        apply_records(
            &mut cursor,
            Some(until),
            &mut logic,
            &mut delivery,
            |sequence, _| {
                replayed += 1;
                last = Some(sequence);
                Ok(!(replayed.is_multiple_of(4096) && self.stopping()))
            },
        )?;
        if last != Some(until) {
            // Stopped, or (never, as the projection follows the journal)
            // the journal ended first.
            return Ok(None);
        }
        let record = self
            .reader
            .cursor_at_sequence(until)?
            .next()?
            .filter(|record| record.sequence() == until)
            .ok_or_else(|| BrokerError::History(format!("journal record {until} is missing")))?;
        let point = SnapshotPoint {
            sequence: until,
            timestamp_ns: record.timestamp_ns(),
        };
        let segment = record.position().segment;
        drop(record);
        drop(cursor);
        // The snapshot's record must outlive a power loss, as the
        // projection's commit of it does.
        self.flusher.flush()?;
        let path = snapshot::write(&self.settings.snapshots_dir, point, |body| {
            logic.encode(body);
            delivery.encode(body);
        })
        .map_err(|error| BrokerError::Snapshot(error.to_string()))?;
        let snapshot_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        self.base = Some(Base {
            sequence: until,
            segment,
            size_bytes: snapshot_bytes,
            needed: needed_from(&delivery, segment),
            taken: Instant::now(),
        });
        drop(delivery);
        self.counts.snapshots.fetch_add(1, Ordering::Relaxed);
        let segments_deleted = self.delete_unneeded();
        Ok(Some(Compaction {
            sequence: until,
            records_replayed: replayed,
            snapshot_bytes,
            segments_deleted,
        }))
    }

    /// The state of the last snapshot, or fresh state if there is none.
    fn load_base(&self) -> Result<(Logic, Delivery), BrokerError> {
        let settings = &self.settings;
        let Some(base) = self.base else {
            return Ok((
                Logic::new(settings.logic_config.clone()),
                Delivery::new(settings.delivery_config.clone(), self.reader.clone()),
            ));
        };
        let path = snapshot::list(&settings.snapshots_dir)
            .map_err(|error| BrokerError::Snapshot(error.to_string()))?
            .into_iter()
            .find(|(sequence, _)| *sequence == base.sequence)
            .map(|(_, path)| path)
            .ok_or_else(|| {
                BrokerError::Snapshot(format!(
                    "the snapshot at journal record {} is gone from {}",
                    base.sequence,
                    settings.snapshots_dir.display()
                ))
            })?;
        let (_, logic, delivery) = read_snapshot(
            &path,
            &self.reader,
            &settings.logic_config,
            &settings.delivery_config,
            |point| {
                if point.sequence == base.sequence {
                    Ok(())
                } else {
                    Err(SnapshotError(format!(
                        "it says journal record {}",
                        point.sequence
                    )))
                }
            },
        )
        .map_err(|error| BrokerError::Snapshot(format!("{}: {error}", path.display())))?;
        Ok((logic, delivery))
    }
}

/// The first segment still needed by a snapshot whose record is in
/// `segment`, holding the inboxes `delivery`: the records after the
/// snapshot's, and the bodies of the messages it holds (Sync reads them).
pub(crate) fn needed_from(delivery: &Delivery, segment: u64) -> u64 {
    delivery
        .oldest_message_position()
        .map_or(segment, |position| position.segment.min(segment))
}
