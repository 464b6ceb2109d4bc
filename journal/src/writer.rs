//! The appender: one per journal, owning the tail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::format::{
    header_words, record_checksum, record_stride, PAYLOAD_SIZE_MAX, RECORD_ALIGNMENT,
    RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
};
use crate::mmap::Appender;
use crate::recovery::{recover, Recovered};
use crate::segment::{sync_directory, Reserved, Retired, Segment, INDEX_INTERVAL_BYTES};
use crate::{Durability, JournalConfig, JournalError, JournalReader, Position, Recovery};

/// What the journal's handles share.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// Every retained segment, in id order, ids contiguous.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    durable: Mutex<Position>,
    flush_lock: Mutex<()>,
    closed: Mutex<bool>,
    closed_signal: Condvar,
    failed_flush: AtomicBool,
    /// A segment was renamed into place since the directory was last synced.
    directory_unsynced: AtomicBool,
    /// Retired segment files kept for reuse, oldest first (see
    /// [`JournalConfig::recycled_segments_max`]).
    recycled: Mutex<Vec<Retired>>,
    recycled_max: usize,
}

impl Shared {
    pub(crate) fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let first = segments.first()?.id;
        segments.get(id.checked_sub(first)? as usize).cloned()
    }

    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn first_sequence(&self) -> u64 {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
            .map_or(0, |segment| segment.base_sequence)
    }

    fn delete_before(&self, segment: u64) -> Result<Vec<u64>, JournalError> {
        self.delete_oldest_while(|oldest, _| oldest.id < segment)
    }

    /// Deletes the oldest segment while `doomed(oldest, total bytes held)`
    /// says so, stopping at the active segment (which the appender holds)
    /// and at one a live reader holds; returns the ids deleted.
    fn delete_oldest_while(
        &self,
        mut doomed: impl FnMut(&Segment, u64) -> bool,
    ) -> Result<Vec<u64>, JournalError> {
        let mut deleted = Vec::new();
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let total: u64 = segments.iter().map(|s| s.size_bytes() as u64).sum();
            let Some(oldest) = segments.first() else {
                break;
            };
            // One holder is this list; more are the appender (of the active
            // segment) or live readers.
            if segments.len() == 1 || !doomed(oldest, total) || Arc::strong_count(oldest) > 1 {
                break;
            }
            let retired = self.retire(oldest)?;
            deleted.push(oldest.id);
            let segment = segments.remove(0);
            if let Some(path) = retired {
                // The list held the last reference, so the map goes with the
                // file. (If the preparer holds the segment for a moment, the
                // file goes alone.)
                let mapping = Arc::try_unwrap(segment).ok().map(Segment::into_mapping);
                self.recycled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Retired { path, mapping });
            }
        }
        Ok(deleted)
    }

    /// Takes a retired segment out of the journal's files: keeps its file
    /// for reuse (returning its new path) while there is room and the file
    /// is all in memory, or deletes it.
    fn retire(&self, segment: &Segment) -> Result<Option<PathBuf>, JournalError> {
        let kept = self
            .recycled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if kept < self.recycled_max && segment.reusable() {
            return segment.retire().map(Some);
        }
        segment.delete_files().map(|()| None)
    }

    /// A retired segment file to reuse, if one is kept.
    fn take_recycled(&self) -> Option<Retired> {
        let mut recycled = self.recycled.lock().unwrap_or_else(PoisonError::into_inner);
        (!recycled.is_empty()).then(|| recycled.remove(0))
    }

    /// Deletes the retired segment files kept for reuse (the journal closes).
    fn delete_recycled(&self) {
        for retired in self
            .recycled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = std::fs::remove_file(retired.path);
        }
    }

    pub(crate) fn durable(&self) -> Position {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flushes every record published so far and returns the new durable
    /// position. Flushes are serialised; each covers what the one before
    /// left.
    pub(crate) fn flush(&self) -> Result<Position, JournalError> {
        let _serial = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A record in a new segment is durable only once the segment's name is.
        if self.directory_unsynced.swap(false, Ordering::AcqRel) {
            if let Err(error) = sync_directory(&self.dir) {
                self.directory_unsynced.store(true, Ordering::Release);
                return Err(error);
            }
        }
        let mut durable = self.durable();
        let first = durable.segment;
        // Only the segments with something to flush: one held here counts
        // as a reader, and retention must not find older ones held by a
        // flush that has nothing to do with them.
        let pending: Vec<_> = self
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.id >= first)
            .cloned()
            .collect();
        for segment in &pending {
            let from = if segment.id == durable.segment {
                durable.offset as usize
            } else {
                SEGMENT_HEADER_SIZE
            };
            let end = segment.written_end();
            if end > from {
                // With the zero length word after the last record: in a
                // reused segment file, the word on disk there may otherwise
                // be an old record's, and a restart after a power loss
                // would take the durable end for a torn tail.
                let through = (end + RECORD_ALIGNMENT).min(segment.size_bytes());
                segment
                    .mapping()
                    .flush(from, through - from)
                    .map_err(|e| JournalError::io(&segment.path, e))?;
            }
            durable = Position {
                segment: segment.id,
                offset: end as u64,
            };
        }
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = durable;
        Ok(durable)
    }
}

/// A stretch of a segment for the preparer thread to make ready:
/// (segment, offset, length). The segment is held weakly: a request still
/// queued is not a reader, and must not keep retention from deleting it.
type PrepareRequest = (Weak<Segment>, usize, usize);

/// Flushes a journal from another thread than its appender's (see
/// [`Journal::flusher`]).
#[derive(Clone)]
pub struct Flusher {
    shared: Arc<Shared>,
}

impl Flusher {
    /// As [`Journal::flush`]: writes every record published so far to disk
    /// and waits; returns the durable position. Flushes from several
    /// handles are serialised.
    pub fn flush(&self) -> Result<Position, JournalError> {
        self.shared.flush()
    }

    /// As [`Journal::durable_position`].
    pub fn durable_position(&self) -> Position {
        self.shared.durable()
    }
}

/// Deletes old segments from another thread than the appender's (see
/// [`Journal::pruner`]): for a caller that keeps its own retention and
/// learns which records it no longer needs away from the appending thread.
#[derive(Clone)]
pub struct Pruner {
    shared: Arc<Shared>,
}

impl Pruner {
    /// As [`Journal::delete_before`]: deletes the sealed segments with ids
    /// below `segment`, never the active one or one a live reader holds,
    /// and returns the ids deleted.
    pub fn delete_before(&self, segment: u64) -> Result<Vec<u64>, JournalError> {
        self.shared.delete_before(segment)
    }

    /// As [`Journal::first_sequence`].
    pub fn first_sequence(&self) -> u64 {
        self.shared.first_sequence()
    }

    /// The ids of the oldest and the active segment.
    pub fn segment_range(&self) -> (u64, u64) {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let id = |segment: Option<&Arc<Segment>>| segment.map_or(0, |s| s.id);
        (id(segments.first()), id(segments.last()))
    }
}

/// What [`Journal::append`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's sequence.
    pub sequence: u64,
    /// Where it starts.
    pub position: Position,
}

/// The journal's appender: appends records, rolls segments, flushes, and
/// applies retention. Readers come from [`Journal::reader`].
///
/// # Invariants
/// - `offset` is the active segment's written end: every record below it is
///   published, nothing at or past it is.
/// - `next_sequence` is one more than the last record's sequence.
pub struct Journal {
    shared: Arc<Shared>,
    config: JournalConfig,
    active: Arc<Segment>,
    appender: Appender,
    offset: usize,
    next_sequence: u64,
    next_index_offset: usize,
    prepared_until: usize,
    newest_timestamp_ns: u64,
    preparer: Option<(mpsc::Sender<PrepareRequest>, JoinHandle<()>)>,
    /// The next segment, being made ahead of need on a thread of its own.
    spare: Option<JoinHandle<Result<Reserved, JournalError>>>,
    flusher: Option<JoinHandle<()>>,
    recovery: Recovery,
    /// The directory's lock: one appender per journal.
    _lock: std::fs::File,
}

impl Journal {
    /// Opens the journal in `dir`, recovering it (a torn tail is cut off and
    /// reported in [`recovery`](Self::recovery)), or makes a new one.
    pub fn open(dir: impl AsRef<Path>, config: JournalConfig) -> Result<Self, JournalError> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        let Recovered {
            lock,
            segments,
            appender,
            next_sequence,
            recovery,
        } = recover(&dir, &config)?;
        // `recover` always leaves at least one segment to append to.
        let active = Arc::clone(segments.last().expect("recovery leaves a segment"));
        let offset = active.written_end();
        let newest_timestamp_ns = active.last_timestamp_ns.load(Ordering::Relaxed);
        let durable = Position {
            segment: active.id,
            offset: offset as u64,
        };
        let shared = Arc::new(Shared {
            dir,
            segments: RwLock::new(segments),
            durable: Mutex::new(durable),
            flush_lock: Mutex::new(()),
            closed: Mutex::new(false),
            closed_signal: Condvar::new(),
            failed_flush: AtomicBool::new(false),
            directory_unsynced: AtomicBool::new(false),
            recycled: Mutex::new(Vec::new()),
            recycled_max: config.recycled_segments_max,
        });
        let mut journal = Self {
            shared,
            active,
            appender,
            offset,
            next_sequence,
            next_index_offset: offset,
            prepared_until: offset,
            newest_timestamp_ns,
            preparer: None,
            spare: None,
            flusher: None,
            recovery,
            config,
            _lock: lock,
        };
        if journal.single_pages() {
            journal.active.mapping().use_single_pages();
        }
        journal.start_preparer();
        journal.prepare_ahead();
        journal.reserve_next();
        if let Durability::Interval(interval) = journal.config.durability {
            let flusher = start_flusher(Arc::clone(&journal.shared), interval)
                .map_err(|e| JournalError::io(&journal.shared.dir, e))?;
            journal.flusher = Some(flusher);
        }
        Ok(journal)
    }

    /// Appends a record and publishes it to readers. `timestamp_ns` is the
    /// caller's clock (stamped on ingest, so replay is deterministic);
    /// `record_type` is the caller's tag. The record is durable once a flush
    /// covers it (see [`Durability`]).
    pub fn append(
        &mut self,
        record_type: u16,
        timestamp_ns: u64,
        payload: &[u8],
    ) -> Result<Appended, JournalError> {
        let stride = record_stride(payload.len());
        let capacity = self.config.segment_size_bytes as usize - SEGMENT_HEADER_SIZE;
        if payload.len() > PAYLOAD_SIZE_MAX || stride > capacity {
            return Err(JournalError::RecordTooLarge {
                length: (RECORD_HEADER_SIZE + payload.len()) as u64,
                segment_size_bytes: self.config.segment_size_bytes,
            });
        }
        if self.offset + stride > self.active.size_bytes() {
            self.roll()?;
        }
        let sequence = self.next_sequence;
        let words = header_words(sequence, timestamp_ns, record_type);
        let length = (RECORD_HEADER_SIZE + payload.len()) as u32;
        let checksum = record_checksum(length, &words, payload);
        let offset =
            self.active
                .mapping()
                .append(&mut self.appender, checksum, &words, payload, stride);
        debug_assert_eq!(offset, self.offset);
        self.offset += stride;
        self.next_sequence += 1;
        self.newest_timestamp_ns = self.newest_timestamp_ns.max(timestamp_ns);
        self.active
            .last_timestamp_ns
            .store(timestamp_ns, Ordering::Relaxed);
        if offset >= self.next_index_offset {
            self.active.note_for_index(sequence, offset);
            self.next_index_offset = offset + INDEX_INTERVAL_BYTES;
        }
        if self.offset + self.config.prepare_ahead_bytes / 2 > self.prepared_until {
            self.prepare_ahead();
        }
        Ok(Appended {
            sequence,
            position: Position {
                segment: self.active.id,
                offset: offset as u64,
            },
        })
    }

    /// Writes every record appended so far to disk and waits; returns the
    /// durable position (group commit: call it once per batch of appends).
    pub fn flush(&self) -> Result<Position, JournalError> {
        self.shared.flush()
    }

    /// Everything before this position survives a power loss.
    pub fn durable_position(&self) -> Position {
        self.shared.durable()
    }

    /// A handle that flushes from another thread, so a group commit can
    /// wait for the disk while the appender goes on appending.
    pub fn flusher(&self) -> Flusher {
        Flusher {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Where the next record will go (if it fits the active segment).
    pub fn end_position(&self) -> Position {
        Position {
            segment: self.active.id,
            offset: self.offset as u64,
        }
    }

    /// The sequence the next record will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// What recovery found when the journal was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// A reader of this journal; it may move to another thread and tail the
    /// appends as they are published.
    pub fn reader(&self) -> JournalReader {
        JournalReader::new(Arc::clone(&self.shared))
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether the interval flusher has failed (an I/O error); appends still
    /// work but the durable position stops moving.
    pub fn flusher_failed(&self) -> bool {
        self.shared.failed_flush.load(Ordering::Relaxed)
    }

    /// Deletes whole sealed segments as the retention policy says; returns
    /// the ids deleted. Runs on its own after each roll.
    pub fn retain(&mut self) -> Result<Vec<u64>, JournalError> {
        let retention = self.config.retention;
        if retention.size_bytes_max.is_none() && retention.age_max.is_none() {
            return Ok(Vec::new());
        }
        let newest_ns = self.newest_timestamp_ns;
        self.shared.delete_oldest_while(|oldest, total| {
            let too_big = retention.size_bytes_max.is_some_and(|max| total > max);
            let too_old = retention.age_max.is_some_and(|age| {
                let newest = oldest.last_timestamp_ns.load(Ordering::Relaxed);
                newest_ns.saturating_sub(newest) > age.as_nanos() as u64
            });
            too_big || too_old
        })
    }

    /// Deletes the sealed segments with ids below `segment`, for a caller
    /// that keeps its own retention (one that knows which records it still
    /// needs). Returns the ids deleted. Like [`Journal::retain`], it never
    /// deletes the active segment or one that a live reader holds, and
    /// stops there.
    pub fn delete_before(&mut self, segment: u64) -> Result<Vec<u64>, JournalError> {
        self.shared.delete_before(segment)
    }

    /// A handle that deletes old segments from another thread (see
    /// [`Pruner`]).
    pub fn pruner(&self) -> Pruner {
        Pruner {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The sequence of the oldest record held: 0 until retention deletes a
    /// segment, then the base sequence of the oldest segment left.
    pub fn first_sequence(&self) -> u64 {
        self.shared.first_sequence()
    }

    /// Starts making the segment after the active one, so a roll finds it
    /// preallocated and mapped instead of paying for that on the appender.
    fn reserve_next(&mut self) {
        let dir = self.shared.dir.clone();
        let id = self.active.id + 1;
        let size_bytes = self.config.segment_size_bytes;
        let prepare_bytes = self.config.prepare_ahead_bytes;
        let single_pages = self.single_pages();
        let recycled = self.shared.take_recycled();
        let spawned = std::thread::Builder::new()
            .name("journal-reserve".into())
            .spawn(move || {
                let reused =
                    recycled.and_then(|retired| Segment::reuse(&dir, id, size_bytes, retired));
                let reserved = match reused {
                    Some(reserved) => reserved,
                    None => Segment::reserve(&dir, id, size_bytes)?,
                };
                if single_pages {
                    reserved.mapping().use_single_pages();
                }
                reserved
                    .mapping()
                    .prepare(SEGMENT_HEADER_SIZE, prepare_bytes);
                Ok(reserved)
            });
        // Without the thread, the roll makes the segment itself.
        self.spare = spawned.ok();
    }

    fn roll(&mut self) -> Result<(), JournalError> {
        self.active.write_index()?;
        let id = self.active.id + 1;
        let reserved = match self.spare.take().map(JoinHandle::join) {
            Some(Ok(reserved)) => reserved?,
            // The reserving thread panicked or never started: make it here.
            Some(Err(_)) | None => {
                let reserved =
                    Segment::reserve(&self.shared.dir, id, self.config.segment_size_bytes)?;
                if self.single_pages() {
                    reserved.mapping().use_single_pages();
                }
                reserved
            }
        };
        debug_assert_eq!(reserved.id(), id);
        // No fsync here: the next flush syncs the directory, and its msync
        // covers the header's page (see `Shared::flush`).
        let (next, appender) = reserved.activate(self.next_sequence, false)?;
        self.shared
            .directory_unsynced
            .store(true, Ordering::Release);
        let next = Arc::new(next);
        self.appender = appender;
        self.shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&next));
        self.active = next;
        self.offset = SEGMENT_HEADER_SIZE;
        self.next_index_offset = SEGMENT_HEADER_SIZE;
        // The reserving thread prepared the first pages.
        self.prepared_until = SEGMENT_HEADER_SIZE + self.config.prepare_ahead_bytes;
        self.prepare_ahead();
        self.reserve_next();
        self.retain()?;
        Ok(())
    }

    /// Whether segments are mapped page by page: whenever the journal
    /// flushes (group commit, or the interval flusher), so that a flush
    /// writes back only what changed since the last one (see
    /// [`Mapping::use_single_pages`](crate::mmap::Mapping::use_single_pages)).
    /// Under the interval policy at 20 MB/s of appends, large pages wrote
    /// 4.7 bytes to disk per byte appended, single pages 1.13. Without
    /// flushes to pay for, large pages fault in faster.
    fn single_pages(&self) -> bool {
        matches!(
            self.config.durability,
            Durability::Batch | Durability::Interval(_)
        )
    }

    fn start_preparer(&mut self) {
        let (sender, receiver) = mpsc::channel::<PrepareRequest>();
        let spawned = std::thread::Builder::new()
            .name("journal-prepare".into())
            .spawn(move || {
                for (segment, offset, len) in receiver {
                    // A segment deleted meanwhile needs no pages.
                    if let Some(segment) = segment.upgrade() {
                        segment.mapping().prepare(offset, len);
                    }
                }
            });
        // Without the thread, pages are simply faulted in by the appender.
        if let Ok(handle) = spawned {
            self.preparer = Some((sender, handle));
        }
    }

    /// Asks the preparer to make the next stretch of pages ready.
    fn prepare_ahead(&mut self) {
        let target = (self.offset + self.config.prepare_ahead_bytes).min(self.active.size_bytes());
        if target <= self.prepared_until {
            return;
        }
        if let Some((sender, _)) = &self.preparer {
            let _ = sender.send((
                Arc::downgrade(&self.active),
                self.prepared_until,
                target - self.prepared_until,
            ));
        }
        self.prepared_until = target;
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        *self
            .shared
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.closed_signal.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Some((sender, handle)) = self.preparer.take() {
            drop(sender);
            let _ = handle.join();
        }
        if let Some(Ok(Ok(reserved))) = self.spare.take().map(JoinHandle::join) {
            reserved.discard();
        }
        self.shared.delete_recycled();
        // A clean close makes everything durable, whatever the policy: the
        // cost is paid once, and a restart then finds no torn tail.
        let _ = self.shared.flush();
    }
}

fn start_flusher(shared: Arc<Shared>, interval: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("journal-flush".into())
        .spawn(move || loop {
            let closed = shared.closed.lock().unwrap_or_else(PoisonError::into_inner);
            let (closed, _) = shared
                .closed_signal
                .wait_timeout_while(closed, interval, |closed| !*closed)
                .unwrap_or_else(PoisonError::into_inner);
            if *closed {
                return;
            }
            drop(closed);
            if shared.flush().is_err() {
                shared.failed_flush.store(true, Ordering::Relaxed);
            }
        })
}
