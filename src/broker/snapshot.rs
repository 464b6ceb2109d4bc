//! Snapshots: all state as of a run's start marker, so that the next start
//! replays only the journal after it.
//!
//! The broker takes one as it opens, after replay and the new start marker,
//! when replay had many records to go through (`snapshot_min_records`): at
//! that moment no connection exists and nothing runs, so the state is
//! small to describe (accounts, contacts, groups, messages and inboxes;
//! no sessions) and nothing has to be paused. The journal stays the source
//! of truth: a snapshot that is damaged, or that does not match the journal
//! beside it, is skipped (with a warning) for an older one or a full replay.
//!
//! # File layout
//!
//! `snapshots/<sequence, 20 digits>.snapshot`, integers little endian:
//!
//! ```text
//!  offset  size  field
//!       0     8  magic "CRSNAPSH"
//!       8     4  format version (1)
//!      12     4  reserved (0)
//!      16     8  sequence: the start marker's journal sequence; replay
//!                resumes after it
//!      24     8  the start marker's timestamp (ns): ties the snapshot to
//!                its journal
//!      32     8  body length (bytes)
//!      40     4  body checksum (crc32c)
//!      44     4  reserved (0)
//!      48        body: logic's state, then the inboxes' (see their
//!                `encode` methods)
//! ```
//!
//! Inside the body a string or a list is a u64 count followed by its bytes
//! or items; ids are u64, inbox entries u32.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CRSNAPSH";
const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 48;
const SUFFIX: &str = "snapshot";

/// Why a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SnapshotError(pub(crate) String);

/// Where a snapshot stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotPoint {
    /// The start marker's sequence.
    pub(crate) sequence: u64,
    /// The start marker's timestamp.
    pub(crate) timestamp_ns: u64,
}

/// Builds a snapshot body.
#[derive(Default)]
pub(crate) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn count(&mut self, count: usize) {
        self.u64(count as u64);
    }

    pub(crate) fn str(&mut self, value: &str) {
        self.count(value.len());
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// The body built.
    #[cfg(test)]
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads a snapshot body back; every read checks that the bytes are there.
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .offset
            .checked_add(length)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error("the body ends early"))?;
        let taken = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(taken)
    }

    pub(crate) fn error(&self, reason: &str) -> SnapshotError {
        SnapshotError(format!("{reason} (body offset {})", self.offset))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("took 4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("took 8 bytes"),
        ))
    }

    /// A list's count, refused if `item_bytes_min` bytes per item cannot be
    /// left in the body (so a damaged count cannot ask for a huge
    /// allocation).
    pub(crate) fn count(&mut self, item_bytes_min: usize) -> Result<usize, SnapshotError> {
        let count = self.u64()?;
        let left = (self.bytes.len() - self.offset) as u64;
        if count.saturating_mul(item_bytes_min.max(1) as u64) > left {
            return Err(self.error("a count larger than the body"));
        }
        Ok(count as usize)
    }

    pub(crate) fn str(&mut self) -> Result<String, SnapshotError> {
        let length = self.count(1)?;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("a string is not UTF-8"))
    }

    /// An id in `1..=max`.
    pub(crate) fn id(&mut self, max: usize) -> Result<u64, SnapshotError> {
        let id = self.u64()?;
        if id == 0 || id > max as u64 {
            return Err(self.error("an id out of range"));
        }
        Ok(id)
    }

    pub(crate) fn finish(&self) -> Result<(), SnapshotError> {
        if self.offset != self.bytes.len() {
            return Err(self.error("bytes left after the state"));
        }
        Ok(())
    }
}

fn path_for(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.{SUFFIX}"))
}

/// Writes a snapshot of `body` at `point` into `dir` (made if missing),
/// durably: a temporary file, synced, renamed into place, and the directory
/// synced. Older snapshots are then deleted. Returns the file's path.
pub(crate) fn write(dir: &Path, point: SnapshotPoint, body: &Encoder) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&point.sequence.to_le_bytes());
    header.extend_from_slice(&point.timestamp_ns.to_le_bytes());
    header.extend_from_slice(&(body.bytes.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(&body.bytes).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_BYTES);
    let path = path_for(dir, point.sequence);
    let temporary = path.with_extension("tmp");
    {
        let mut file = File::create(&temporary)?;
        file.write_all(&header)?;
        file.write_all(&body.bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()?;
    for (sequence, older) in list(dir)? {
        if sequence < point.sequence {
            fs::remove_file(older)?;
        }
    }
    Ok(path)
}

/// The snapshots in `dir`, newest first (none if `dir` is missing).
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SUFFIX) {
            continue;
        }
        let sequence = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(sequence) = sequence {
            found.push((sequence, path));
        }
    }
    found.sort_by_key(|&(sequence, _)| std::cmp::Reverse(sequence));
    Ok(found)
}

/// Reads a snapshot file: its point and its checked body.
pub(crate) fn read(path: &Path) -> Result<(SnapshotPoint, Vec<u8>), SnapshotError> {
    let bytes = fs::read(path).map_err(|e| SnapshotError(format!("cannot read it: {e}")))?;
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(SnapshotError("not a courier snapshot".into()));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(SnapshotError(format!(
            "format version {version}; this build reads {FORMAT_VERSION}"
        )));
    }
    let point = SnapshotPoint {
        sequence: word(16),
        timestamp_ns: word(24),
    };
    let body_length = word(32);
    let checksum = u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes"));
    if body_length != (bytes.len() - HEADER_BYTES) as u64 {
        return Err(SnapshotError(format!(
            "{} body bytes where the header says {body_length}",
            bytes.len() - HEADER_BYTES
        )));
    }
    let body = bytes[HEADER_BYTES..].to_vec();
    if crc32c::crc32c(&body) != checksum {
        return Err(SnapshotError("the body's checksum does not match".into()));
    }
    Ok((point, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Encoder {
        let mut encoder = Encoder::default();
        encoder.str(text);
        encoder.u64(7);
        encoder
    }

    #[test]
    fn a_snapshot_reads_back_and_replaces_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = SnapshotPoint {
            sequence: 5,
            timestamp_ns: 50,
        };
        let second = SnapshotPoint {
            sequence: 9,
            timestamp_ns: 90,
        };
        write(dir.path(), first, &body("one")).unwrap();
        let path = write(dir.path(), second, &body("two")).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![(9, path.clone())], "the older one is gone");
        let (point, bytes) = read(&path).unwrap();
        assert_eq!(point, second);
        let mut decoder = Decoder::new(&bytes);
        assert_eq!(decoder.str().unwrap(), "two");
        assert_eq!(decoder.u64().unwrap(), 7);
        decoder.finish().unwrap();
    }

    #[test]
    fn damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let point = SnapshotPoint {
            sequence: 1,
            timestamp_ns: 2,
        };
        let path = write(dir.path(), point, &body("state")).unwrap();
        let good = fs::read(&path).unwrap();
        // Each case: a change to the file and a word of the error.
        type Damage = fn(&mut Vec<u8>);
        let cases: [(Damage, &str); 4] = [
            (|b| b[0] = b'X', "not a courier snapshot"),
            (|b| b[8] = 9, "format version"),
            (|b| b.truncate(b.len() - 1), "body bytes"),
            (|b| *b.last_mut().unwrap() ^= 1, "checksum"),
        ];
        for (damage, word) in cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            fs::write(&path, &bytes).unwrap();
            let error = read(&path).unwrap_err();
            assert!(error.0.contains(word), "{error}");
        }
    }

    #[test]
    fn a_decoder_refuses_what_is_not_there() {
        // A count of a million items in a body of 8 bytes.
        let mut encoder = Encoder::default();
        encoder.u64(1_000_000);
        let mut decoder = Decoder::new(&encoder.bytes);
        assert!(decoder.count(4).is_err());
        // An id out of range, and a string cut short.
        let mut encoder = Encoder::default();
        encoder.u64(3);
        encoder.u64(10);
        let mut decoder = Decoder::new(&encoder.bytes);
        assert!(decoder.id(2).is_err());
        assert!(decoder.str().is_err());
    }
}
