//! Opening a journal directory: finding the segments, checking them, and
//! cutting off a torn tail.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::{record_stride, SegmentHeader, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::mmap::Appender;
use crate::segment::{
    segment_path, walk, Read, Segment, WalkEnd, RECYCLED_SUFFIX, SEGMENT_SUFFIX, TEMPORARY_SUFFIX,
};
use crate::{JournalConfig, JournalError, Position};

/// What recovery found when a journal was opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Segments found (a new journal has one, just made).
    pub segments: usize,
    /// Records in the journal after recovery.
    pub records: u64,
    /// The first record's sequence, if there is a record.
    pub first_sequence: Option<u64>,
    /// The last record's sequence, if there is a record.
    pub last_sequence: Option<u64>,
    /// Where a torn tail was cut off, if one was.
    pub torn_at: Option<Position>,
    /// Bytes of the torn tail that were zeroed.
    pub truncated_bytes: u64,
    /// Half-made segments (from a crash or power loss while rolling) that
    /// were removed: temporary files, and a newest segment whose header never
    /// reached the disk.
    pub removed_temporaries: usize,
}

pub(crate) struct Recovered {
    /// The directory's lock, held for as long as the journal is open.
    pub(crate) lock: std::fs::File,
    pub(crate) segments: Vec<Arc<Segment>>,
    /// The appender of the last segment, where appends continue.
    pub(crate) appender: Appender,
    pub(crate) next_sequence: u64,
    pub(crate) recovery: Recovery,
}

/// The files of a journal directory.
pub(crate) struct Listing {
    /// The segment ids, sorted.
    pub(crate) ids: Vec<u64>,
    /// Segments being made when the journal last closed (a crash).
    pub(crate) temporaries: Vec<PathBuf>,
    /// Retired segment files that were kept for reuse.
    pub(crate) recycled: Vec<PathBuf>,
}

/// What is in `dir`.
pub(crate) fn list_segments(dir: &Path) -> Result<Listing, JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut ids = Vec::new();
    let mut temporaries = Vec::new();
    let mut recycled = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(&format!(".{TEMPORARY_SUFFIX}")) {
            temporaries.push(entry.path());
        } else if name.ends_with(&format!(".{RECYCLED_SUFFIX}")) {
            recycled.push(entry.path());
        } else if let Some(stem) = name.strip_suffix(&format!(".{SEGMENT_SUFFIX}")) {
            let id = stem
                .parse::<u64>()
                .map_err(|_| JournalError::NotAJournal(entry.path()))?;
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(Listing {
        ids,
        temporaries,
        recycled,
    })
}

/// The file whose lock keeps a second appender out of a journal directory;
/// it holds the appending process's id, for the error the second one gets.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// How long opening waits for a journal directory's lock before it says the
/// journal is in use. A lock can outlive its journal by a moment: a child
/// process forked meanwhile (by a program that embeds the journal) shares
/// the locked file until it execs, which closes it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the journal directory's lock, before anything in it is touched (a
/// recovery would cut what another appender is writing). The operating
/// system drops the lock when the process ends, however it ends.
fn lock_directory(dir: &Path) -> Result<std::fs::File, JournalError> {
    use std::io::{Read, Seek, Write};

    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut locked = file.try_lock();
    while matches!(locked, Err(std::fs::TryLockError::WouldBlock))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {
            let mark = format!("process {}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(mark.as_bytes()))
                .map_err(|e| JournalError::io(&path, e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Err(JournalError::InUse {
                path: dir.to_owned(),
                holder: if holder.is_empty() {
                    "another appender".to_owned()
                } else {
                    holder.to_owned()
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(JournalError::io(&path, e)),
    }
}

/// Opens (or makes) the journal in `dir`, locks it and recovers it.
pub(crate) fn recover(dir: &Path, config: &JournalConfig) -> Result<Recovered, JournalError> {
    prepare_directory(dir, config)?;
    let lock = lock_directory(dir)?;
    let Listing {
        mut ids,
        temporaries,
        recycled,
    } = list_segments(dir)?;
    let mut recovery = Recovery::default();
    for temporary in &temporaries {
        std::fs::remove_file(temporary).map_err(|e| JournalError::io(temporary, e))?;
        recovery.removed_temporaries += 1;
    }
    // Kept for reuse by a journal that did not close (a clean close deletes
    // them); this one starts its own.
    for path in &recycled {
        std::fs::remove_file(path).map_err(|e| JournalError::io(path, e))?;
    }
    // A power loss right after a roll can leave the newest segment renamed
    // into place before its header reached the disk: a new file's header is
    // then zero, a reused file's the one of the segment it was. It holds no
    // durable record: a flush writes back the header's page with the first.
    if let Some(&last) = ids.last() {
        if header_is_unwritten(&segment_path(dir, last), last)? {
            let path = segment_path(dir, last);
            std::fs::remove_file(&path).map_err(|e| JournalError::io(&path, e))?;
            recovery.removed_temporaries += 1;
            ids.pop();
        }
    }
    if ids.is_empty() {
        let (segment, appender) = Segment::create(dir, 0, 0, config.segment_size_bytes)?;
        recovery.segments = 1;
        return Ok(Recovered {
            lock,
            segments: vec![Arc::new(segment)],
            appender,
            next_sequence: 0,
            recovery,
        });
    }
    if let Some(window) = ids.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(JournalError::Corrupt {
            segment: window[0] + 1,
            offset: 0,
            reason: format!("segment missing between {} and {}", window[0], window[1]),
        });
    }
    let mut segments = Vec::with_capacity(ids.len());
    let mut next_sequence = None;
    let mut last_appender = None;
    for (index, &id) in ids.iter().enumerate() {
        let (segment, appender) = Segment::open(dir, id, true)?;
        // A writable open always returns the appender.
        let mut appender = appender.expect("writable segment has an appender");
        if let Some(expected) = next_sequence {
            if segment.base_sequence != expected {
                return Err(JournalError::Corrupt {
                    segment: id,
                    offset: 0,
                    reason: format!(
                        "segment starts at sequence {}, the one before ends at {}",
                        segment.base_sequence,
                        expected as i128 - 1
                    ),
                });
            }
        }
        let last = index + 1 == ids.len();
        let indexed_end = if last { None } else { segment.load_index() };
        let end = match indexed_end {
            // A sealed segment with a good index: trust its recorded end.
            Some(end) => {
                segment.publish_to(&mut appender, end);
                next_sequence_of_sealed(&segment, ids[index + 1], dir)?
            }
            None => scan(&segment, &mut appender, last, &mut recovery)?,
        };
        next_sequence = Some(end);
        segments.push(Arc::new(segment));
        last_appender = Some(appender);
    }
    // `ids` is not empty, so the loop ran and left the last appender.
    let appender = last_appender.expect("at least one segment");
    let next_sequence = next_sequence.unwrap_or(0);
    let first_sequence = segments[0].base_sequence;
    recovery.segments = segments.len();
    recovery.records = next_sequence - first_sequence;
    if recovery.records > 0 {
        recovery.first_sequence = Some(first_sequence);
        recovery.last_sequence = Some(next_sequence - 1);
    }
    Ok(Recovered {
        lock,
        segments,
        appender,
        next_sequence,
        recovery,
    })
}

/// Whether the header of segment `id`'s file was never written: all zero,
/// or the valid header of an earlier segment (a retired file reused).
fn header_is_unwritten(path: &Path, id: u64) -> Result<bool, JournalError> {
    use std::io::Read;
    let mut header = [0u8; SEGMENT_HEADER_SIZE];
    let mut file = std::fs::File::open(path).map_err(|e| JournalError::io(path, e))?;
    match file.read_exact(&mut header) {
        Ok(()) => Ok(header.iter().all(|&b| b == 0)
            || SegmentHeader::decode(&header).is_ok_and(|old| old.segment_id < id)),
        // Shorter than a header: not a zeroed segment; opening it says what it is.
        Err(_) => Ok(false),
    }
}

fn prepare_directory(dir: &Path, config: &JournalConfig) -> Result<(), JournalError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(JournalError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !config.create_dir {
                return Err(JournalError::MissingDirectory(dir.to_owned()));
            }
            crate::segment::create_dir_durably(dir).map_err(|e| JournalError::io(dir, e))
        }
        Err(e) => Err(JournalError::io(dir, e)),
    }
}

/// A sealed segment's end sequence is the next segment's base.
fn next_sequence_of_sealed(
    segment: &Segment,
    next_id: u64,
    dir: &Path,
) -> Result<u64, JournalError> {
    let (next, _) = Segment::open(dir, next_id, false)?;
    if next.base_sequence < segment.base_sequence {
        return Err(JournalError::Corrupt {
            segment: next_id,
            offset: 0,
            reason: format!(
                "{} starts before its predecessor",
                segment_path(dir, next_id).display()
            ),
        });
    }
    Ok(next.base_sequence)
}

/// Scans a segment from its first record, verifying each, and publishes
/// what is good; returns the sequence after its last good record. A bad
/// record ends the scan: in the last segment, with nothing valid after it,
/// it is a torn tail and is cut off; anywhere else it is corruption.
pub(crate) fn scan(
    segment: &Segment,
    appender: &mut Appender,
    last: bool,
    recovery: &mut Recovery,
) -> Result<u64, JournalError> {
    let WalkEnd {
        offset,
        next_sequence: expected,
        problem,
    } = walk(
        segment,
        |offset| segment.scan_read(appender, offset),
        |offset, header, _| {
            segment.note_for_index(header.sequence, offset);
            segment
                .last_timestamp_ns
                .store(header.timestamp_ns, Ordering::Relaxed);
            true
        },
    );
    segment.publish_to(appender, offset);
    if let Some(problem) = problem {
        if !last || valid_record_follows(segment, appender, offset, expected) {
            return Err(JournalError::Corrupt {
                segment: segment.id,
                offset: offset as u64,
                reason: problem,
            });
        }
        recovery.torn_at = Some(Position {
            segment: segment.id,
            offset: offset as u64,
        });
        recovery.truncated_bytes = segment.zero_tail(appender)?;
    }
    Ok(expected)
}

/// Whether the record after a bad one at `offset` is the intact record with
/// the next sequence: then the bad one is damage inside the log, not a tear.
fn valid_record_follows(
    segment: &Segment,
    appender: &Appender,
    offset: usize,
    expected: u64,
) -> bool {
    let Some(length) = segment.scan_length(appender, offset) else {
        return false;
    };
    let next = offset + record_stride((length as usize).saturating_sub(RECORD_HEADER_SIZE));
    matches!(segment.scan_read(appender, next), Read::Record(header, _) if header.sequence == expected + 1)
}
