//! Reading the journal: one record by position, or a cursor that walks
//! forward from a position or sequence and tails new appends.

use std::sync::Arc;

use crate::format::{RecordHeader, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::mmap::Slot;
use crate::segment::{Read, Segment};
use crate::writer::Shared;
use crate::{JournalError, Position};

/// A record read from the journal. It holds its segment, so retention keeps
/// the segment while the record lives.
pub struct Record {
    segment: Arc<Segment>,
    offset: usize,
    header: RecordHeader,
}

impl Record {
    /// The record's sequence.
    pub fn sequence(&self) -> u64 {
        self.header.sequence
    }

    /// The timestamp given at append.
    pub fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns
    }

    /// The type tag given at append.
    pub fn record_type(&self) -> u16 {
        self.header.record_type
    }

    /// Where the record starts.
    pub fn position(&self) -> Position {
        Position {
            segment: self.segment.id,
            offset: self.offset as u64,
        }
    }

    /// The position just past the record: where the next one starts.
    pub fn next_position(&self) -> Position {
        Position {
            segment: self.segment.id,
            offset: (self.offset + self.header.stride()) as u64,
        }
    }

    /// The payload, read in place from the map (checked when the record was read).
    pub fn payload(&self) -> &[u8] {
        match self.segment.mapping().slot(self.offset) {
            Slot::Written(bytes) => &bytes[RECORD_HEADER_SIZE..],
            // The record was read from this slot once, and published records
            // never change.
            Slot::Empty | Slot::BadLength(_) => unreachable!("a published record changed"),
        }
    }

    /// The decoded header.
    pub fn header(&self) -> &RecordHeader {
        &self.header
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("position", &self.position())
            .field("header", &self.header)
            .finish()
    }
}

/// Reads a journal; clone it freely and move it to other threads.
#[derive(Clone)]
pub struct JournalReader {
    shared: Arc<Shared>,
}

impl JournalReader {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The record at `position`.
    pub fn read(&self, position: Position) -> Result<Record, JournalError> {
        let segment = self.segment(position)?;
        let offset = position.offset as usize;
        if offset < SEGMENT_HEADER_SIZE || !offset.is_multiple_of(crate::format::RECORD_ALIGNMENT) {
            return Err(no_record(position, "not a record boundary"));
        }
        match segment.read(offset) {
            Read::Record(header, _) => Ok(Record {
                segment,
                offset,
                header,
            }),
            Read::Empty => Err(no_record(position, "nothing written there")),
            Read::Invalid(reason) => Err(JournalError::Corrupt {
                segment: position.segment,
                offset: position.offset,
                reason,
            }),
        }
    }

    /// A cursor that starts at `position` (which must be a record boundary,
    /// or the end).
    pub fn cursor(&self, position: Position) -> Result<Cursor, JournalError> {
        let segment = self.segment(position)?;
        Ok(Cursor {
            shared: Arc::clone(&self.shared),
            segment,
            offset: position.offset as usize,
        })
    }

    /// A cursor at the oldest retained record.
    pub fn cursor_at_start(&self) -> Cursor {
        let segments = self.shared.segments();
        Cursor {
            shared: Arc::clone(&self.shared),
            // The journal always has at least one segment.
            segment: Arc::clone(segments.first().expect("a journal has a segment")),
            offset: SEGMENT_HEADER_SIZE,
        }
    }

    /// A cursor whose first record is the one with `sequence` (or, for the
    /// next sequence to be appended, which waits for it). Uses the sparse
    /// index, then scans at most one index interval.
    pub fn cursor_at_sequence(&self, sequence: u64) -> Result<Cursor, JournalError> {
        let segments = self.shared.segments();
        let first = segments.first().map_or(0, |s| s.base_sequence);
        let position = segments.partition_point(|s| s.base_sequence <= sequence);
        if position == 0 {
            return Err(JournalError::NoRecord {
                segment: segments.first().map_or(0, |s| s.id),
                offset: 0,
                reason: if sequence < first {
                    "that sequence is no longer retained"
                } else {
                    "no segment"
                },
            });
        }
        let segment = Arc::clone(&segments[position - 1]);
        let mut offset = segment.index_floor(sequence);
        // Bounded by the segment's size: each step moves past one record.
        loop {
            match segment.read(offset) {
                Read::Record(header, _) if header.sequence < sequence => offset += header.stride(),
                Read::Record(..) => break,
                Read::Empty => {
                    if position < segments.len() {
                        // Past this segment's records, but a later segment
                        // starts after `sequence`: a gap, which cannot be.
                        return Err(no_record(
                            Position {
                                segment: segment.id,
                                offset: offset as u64,
                            },
                            "sequence not found in its segment",
                        ));
                    }
                    break;
                }
                Read::Invalid(reason) => {
                    return Err(JournalError::Corrupt {
                        segment: segment.id,
                        offset: offset as u64,
                        reason,
                    })
                }
            }
        }
        Ok(Cursor {
            shared: Arc::clone(&self.shared),
            segment,
            offset,
        })
    }

    fn segment(&self, position: Position) -> Result<Arc<Segment>, JournalError> {
        self.shared.segment(position.segment).ok_or_else(|| {
            no_record(
                position,
                "no such segment (never written, or deleted by retention)",
            )
        })
    }
}

fn no_record(position: Position, reason: &'static str) -> JournalError {
    JournalError::NoRecord {
        segment: position.segment,
        offset: position.offset,
        reason,
    }
}

/// Walks the journal forward. At the end it returns `Ok(None)`; call again
/// later to get records appended since (tailing).
pub struct Cursor {
    shared: Arc<Shared>,
    segment: Arc<Segment>,
    offset: usize,
}

impl Cursor {
    /// Where the next record will be read from.
    pub fn position(&self) -> Position {
        Position {
            segment: self.segment.id,
            offset: self.offset as u64,
        }
    }

    /// The next record, `Ok(None)` if none is published yet, or an error for
    /// a damaged record.
    #[allow(clippy::should_implement_trait)] // it returns a Result, and `None` is not the end
    pub fn next(&mut self) -> Result<Option<Record>, JournalError> {
        // Bounded: moves to a later segment at most once per segment.
        loop {
            match self.segment.read(self.offset) {
                Read::Record(header, _) => {
                    let record = Record {
                        segment: Arc::clone(&self.segment),
                        offset: self.offset,
                        header,
                    };
                    self.offset += header.stride();
                    return Ok(Some(record));
                }
                Read::Invalid(reason) => {
                    return Err(JournalError::Corrupt {
                        segment: self.segment.id,
                        offset: self.offset as u64,
                        reason,
                    })
                }
                Read::Empty => {
                    let Some(next) = self.shared.segment(self.segment.id + 1) else {
                        return Ok(None);
                    };
                    // The next segment exists, so this one is sealed; but a
                    // record published just before the roll may have been
                    // missed by the read above. The segment list was read
                    // after the roll published it, so a second read sees it.
                    if let Read::Empty = self.segment.read(self.offset) {
                        self.segment = next;
                        self.offset = SEGMENT_HEADER_SIZE;
                    }
                }
            }
        }
    }
}
