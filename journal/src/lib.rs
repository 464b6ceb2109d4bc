//! courier's journal: append-only, memory-mapped segment files that are the
//! source of truth for every state change.
//!
//! Every command is appended before it is acknowledged; all state is rebuilt
//! from the journal after a restart; inboxes point into it for message
//! bodies. The on-disk layout is drawn in [`format`](mod@format).
//!
//! # Lifecycle
//!
//! 1. **Open.** [`Journal::open`] makes the directory and a first segment,
//!    or recovers what is there: it checks every record of the last segment,
//!    cuts off a torn tail (reported in [`Journal::recovery`]) and refuses,
//!    with an error naming segment and offset, damage anywhere else.
//! 2. **Append.** [`Journal::append`] writes a record through the map and
//!    publishes it to readers at once; it rolls to a new preallocated
//!    segment when the current one is full.
//! 3. **Make durable.** Per [`Durability`]: never (page cache only), on an
//!    interval, or when the caller calls [`Journal::flush`] after a batch
//!    (group commit). [`Journal::durable_position`] says what survives a
//!    power loss.
//! 4. **Read.** A [`JournalReader`] reads by position, or walks with a
//!    [`Cursor`] from a position or sequence, tailing new records from
//!    another thread.
//! 5. **Retire.** Retention ([`Retention`], or a caller's
//!    [`Journal::delete_before`] and [`Pruner`]) takes whole old segments
//!    out; up to [`JournalConfig::recycled_segments_max`] of their files are
//!    kept, with their maps, and written again as the next segments, which
//!    spares the kernel allocating and zeroing fresh pages.
//! 6. **Close.** Dropping the journal flushes everything and deletes the
//!    kept files.
//!
//! # Example
//!
//! ```
//! use courier_journal::{Durability, Journal, JournalConfig};
//!
//! let dir = std::env::temp_dir().join(format!("courier-journal-doc-{}", std::process::id()));
//! let config = JournalConfig { durability: Durability::Batch, ..JournalConfig::default() };
//! let mut journal = Journal::open(&dir, config.clone()).unwrap();
//! let first = journal.append(1, 1_000, b"hello").unwrap();
//! journal.append(1, 2_000, b"world").unwrap();
//! let durable = journal.flush().unwrap(); // group commit: both are on disk now
//! assert!(durable > first.position);
//!
//! let reader = journal.reader();
//! assert_eq!(reader.read(first.position).unwrap().payload(), b"hello");
//! drop(journal);
//!
//! // Reopening recovers both records.
//! let journal = Journal::open(&dir, config).unwrap();
//! assert_eq!(journal.recovery().records, 2);
//! let mut cursor = journal.reader().cursor_at_sequence(1).unwrap();
//! assert_eq!(cursor.next().unwrap().unwrap().payload(), b"world");
//! # drop(journal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// unsafe lives in two modules only: the memory map and the checksum's
// CPU instructions.
#![deny(unsafe_code)]

#[allow(unsafe_code)] // CRC-32C and carry-less multiply instructions
mod checksum;
mod config;
mod error;
pub mod format;
mod inspect;
#[allow(unsafe_code)] // the memory map of a segment
mod mmap;
mod reader;
mod recovery;
mod segment;
mod writer;

pub use config::{Durability, JournalConfig, Retention};
pub use error::JournalError;
pub use format::RecordHeader;
pub use inspect::{dump, inspect, kept_for_reuse, SegmentSummary};
pub use reader::{Cursor, JournalReader, Record};
pub use recovery::Recovery;
pub use segment::create_dir_durably;
pub use writer::{Appended, Flusher, Journal, Pruner};

/// Where a record is: a segment and a byte offset in it. Positions order as
/// the log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The segment's id.
    pub segment: u64,
    /// Bytes from the start of the segment file.
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}
