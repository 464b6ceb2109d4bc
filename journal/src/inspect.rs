//! Looking inside a journal without changing it: what `courier journal
//! inspect` prints.

use std::path::{Path, PathBuf};

use crate::format::RecordHeader;
use crate::recovery::list_segments;
use crate::segment::{walk, Segment};
use crate::JournalError;

/// One segment, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment's id.
    pub id: u64,
    /// Its file.
    pub path: PathBuf,
    /// The sequence its first record has (or will have).
    pub base_sequence: u64,
    /// The file's size.
    pub size_bytes: u64,
    /// Valid records, from the start up to the first problem.
    pub records: u64,
    /// The first valid record's sequence.
    pub first_sequence: Option<u64>,
    /// The last valid record's sequence.
    pub last_sequence: Option<u64>,
    /// Bytes of valid records, header included.
    pub written_bytes: u64,
    /// What stopped the scan before the zeroed space, if anything: a torn
    /// tail in the last segment, damage elsewhere.
    pub problem: Option<String>,
}

/// The retired segment files in `dir` kept for reuse (see
/// [`JournalConfig::recycled_segments_max`](crate::JournalConfig::recycled_segments_max)),
/// with their sizes: an appender that is open will write them again as
/// new segments; the next open deletes those left.
pub fn kept_for_reuse(dir: impl AsRef<Path>) -> Result<Vec<(PathBuf, u64)>, JournalError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(JournalError::MissingDirectory(dir.to_owned()));
    }
    let mut kept = Vec::new();
    for path in list_segments(dir)?.recycled {
        // One the appender takes meanwhile is no longer kept.
        if let Ok(metadata) = std::fs::metadata(&path) {
            kept.push((path, metadata.len()));
        }
    }
    kept.sort();
    Ok(kept)
}

/// Summarises every segment in `dir`, reading only.
pub fn inspect(dir: impl AsRef<Path>) -> Result<Vec<SegmentSummary>, JournalError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(JournalError::MissingDirectory(dir.to_owned()));
    }
    let ids = list_segments(dir)?.ids;
    let mut summaries = Vec::with_capacity(ids.len());
    for id in ids {
        let (segment, _) = Segment::open(dir, id, false)?;
        let mut summary = SegmentSummary {
            id,
            path: segment.path.clone(),
            base_sequence: segment.base_sequence,
            size_bytes: segment.size_bytes() as u64,
            records: 0,
            first_sequence: None,
            last_sequence: None,
            written_bytes: 0,
            problem: None,
        };
        walk_published(&segment, |_, header, _| {
            summary.records += 1;
            summary.first_sequence.get_or_insert(header.sequence);
            summary.last_sequence = Some(header.sequence);
            summary.written_bytes += header.stride() as u64;
            true
        })
        .unwrap_or_else(|problem| summary.problem = Some(problem));
        summaries.push(summary);
    }
    Ok(summaries)
}

/// Calls `visit(segment id, offset, header, payload)` for up to `limit`
/// records from the first with a sequence at or past `from_sequence`,
/// reading only. Stops at the first damaged record, with an error naming it.
pub fn dump(
    dir: impl AsRef<Path>,
    from_sequence: u64,
    limit: usize,
    mut visit: impl FnMut(u64, u64, &RecordHeader, &[u8]),
) -> Result<(), JournalError> {
    let dir = dir.as_ref();
    let ids = list_segments(dir)?.ids;
    let mut left = limit;
    for id in ids {
        if left == 0 {
            break;
        }
        let (segment, _) = Segment::open(dir, id, false)?;
        walk_published(&segment, |offset, header, payload| {
            if header.sequence >= from_sequence {
                visit(id, offset as u64, header, payload);
                left -= 1;
            }
            left > 0
        })
        .map_err(|reason| JournalError::Corrupt {
            segment: id,
            offset: 0,
            reason,
        })?;
    }
    Ok(())
}

/// Walks a segment's published records while `visit` returns true; `Err`
/// names the first damaged record.
fn walk_published(
    segment: &Segment,
    visit: impl FnMut(usize, &RecordHeader, &[u8]) -> bool,
) -> Result<(), String> {
    let end = walk(segment, |offset| segment.read(offset), visit);
    match end.problem {
        None => Ok(()),
        Some(problem) => Err(format!("offset {}: {problem}", end.offset)),
    }
}
