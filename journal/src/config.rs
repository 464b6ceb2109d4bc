//! How a journal is laid out, how hard it works to be durable, and what it
//! keeps.

use std::time::Duration;

use crate::format::SEGMENT_HEADER_SIZE;
use crate::JournalError;

/// When appended records reach the disk, and so what a power loss can take.
///
/// Every policy survives a crash of the process (even `kill -9`): records
/// are written into the kernel's page cache through the map as they are
/// appended. The policies differ on a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never flush; the kernel writes pages back when it likes (typically
    /// within 30 s). A power loss may take any record not yet written back,
    /// and may tear the tail. [`Journal::durable_position`](crate::Journal::durable_position)
    /// stays where the journal was opened.
    None,
    /// A background thread flushes (msync) every interval. A power loss takes
    /// at most the records appended since the last flush, plus the interval.
    Interval(Duration),
    /// The caller flushes: append a batch, then call
    /// [`Journal::flush`](crate::Journal::flush), which returns once the batch
    /// is on disk (group commit). Acknowledge only what a flush covered.
    Batch,
}

/// Which whole segments to delete. Only sealed segments are deleted (never
/// the one being appended to), oldest first, and never one a live reader
/// holds; deleting stops at the first segment that must stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep the journal at most this large (whole segments, so it may run
    /// over by up to one segment).
    pub size_bytes_max: Option<u64>,
    /// Delete a segment whose newest record is older than this, measured in
    /// the records' own timestamps against the newest record appended.
    pub age_max: Option<Duration>,
}

/// A journal's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Each segment file's size, header included; preallocated when made.
    pub segment_size_bytes: u64,
    /// When records reach the disk.
    pub durability: Durability,
    /// What to delete.
    pub retention: Retention,
    /// Create the directory (and its parents) if it is missing.
    pub create_dir: bool,
    /// How far ahead of the appender pages are made ready, so appends do not
    /// stall on first-touch page faults.
    pub prepare_ahead_bytes: usize,
    /// How many segment files that retention retires are kept to be written
    /// again as new segments instead of being deleted (0: delete each one).
    /// A new file's pages must be allocated and zeroed by the kernel as they
    /// are first written; a retired file's pages are still in the page cache
    /// and its blocks on disk, so writing it again costs neither. A segment
    /// is kept only while every page of it is in memory, and kept files are
    /// deleted when the journal closes or opens. They take disk space beyond
    /// the retention limit: up to this many segments.
    pub recycled_segments_max: usize,
}

impl Default for JournalConfig {
    /// 64 MiB segments, batch durability (group commit), keep everything,
    /// and up to 4 retired segments kept for reuse.
    fn default() -> Self {
        Self {
            segment_size_bytes: 64 * 1024 * 1024,
            durability: Durability::Batch,
            retention: Retention::default(),
            create_dir: true,
            prepare_ahead_bytes: 4 * 1024 * 1024,
            recycled_segments_max: 4,
        }
    }
}

impl JournalConfig {
    pub(crate) fn validate(&self) -> Result<(), JournalError> {
        const MIN: u64 = 4096;
        if self.segment_size_bytes < MIN {
            return Err(JournalError::Config(format!(
                "segment_size_bytes is {}, at least {MIN} is needed",
                self.segment_size_bytes
            )));
        }
        if self.segment_size_bytes > u32::MAX as u64 {
            return Err(JournalError::Config(format!(
                "segment_size_bytes is {}, at most {} (4 GiB) is supported",
                self.segment_size_bytes,
                u32::MAX
            )));
        }
        if !self.segment_size_bytes.is_multiple_of(8)
            || (SEGMENT_HEADER_SIZE as u64) >= self.segment_size_bytes
        {
            return Err(JournalError::Config(format!(
                "segment_size_bytes {} must be a multiple of 8",
                self.segment_size_bytes
            )));
        }
        if let Durability::Interval(interval) = self.durability {
            if interval.is_zero() {
                return Err(JournalError::Config(
                    "the flush interval must be above zero".into(),
                ));
            }
        }
        Ok(())
    }
}
