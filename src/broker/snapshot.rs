//! Snapshots: all state as of one journal record, so that the next start
//! replays only the journal after it.
//!
//! The broker takes one as it opens, after replay and the new start marker,
//! when replay had many records to go through (`snapshot_min_records`);
//! under a message retention, a background thread also takes them while
//! the broker runs (see `compactor`), by replaying the journal from the
//! last snapshot into state of its own, so the running stages never pause.
//! Both describe replayed state as of a record: accounts, contacts, groups,
//! messages and inboxes, the connections and sessions open at that record,
//! and the run's settings. The journal stays the source of truth: a
//! snapshot that is damaged, or that does not match the journal beside it,
//! is skipped (with a warning) for an older one or a full replay.
//!
//! # File layout
//!
//! `snapshots/<sequence, 20 digits>.snapshot`, integers little endian:
//!
//! ```text
//!  offset  size  field
//!       0     8  magic "CRSNAPSH"
//!       8     4  format version (4; 3 is read too, as state under the
//!                rules before per-device resend keys; versions 1 and 2,
//!                taken only at start markers, are skipped and the
//!                journal replayed)
//!      12     4  reserved (0)
//!      16     8  sequence: the last journal record in the state; replay
//!                resumes after it
//!      24     8  that record's timestamp (ns): ties the snapshot to its
//!                journal
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
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CRSNAPSH";
const FORMAT_VERSION: u32 = 4;
/// The oldest format version this build reads.
const FORMAT_VERSION_MIN: u32 = 3;
pub(crate) const HEADER_BYTES: usize = 48;
const SUFFIX: &str = "snapshot";

/// Why a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SnapshotError(pub(crate) String);

/// Where a snapshot stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotPoint {
    /// The last record in the state.
    pub(crate) sequence: u64,
    /// That record's timestamp.
    pub(crate) timestamp_ns: u64,
}

/// Writes a snapshot body to `W` as it is built, keeping its length and
/// checksum; the first write error is kept for [`Encoder::finish`].
///
/// The body goes out in chunks of [`CHUNK_BYTES`], each checksummed and
/// written whole: a snapshot is millions of 4- and 8-byte fields, and a
/// checksum call and a buffered write per field cost the compactor more
/// than the fields themselves.
pub(crate) struct Encoder<W: Write> {
    out: W,
    /// Body bytes not yet checksummed and written.
    pending: Vec<u8>,
    length: u64,
    checksum: u32,
    error: Option<io::Error>,
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(out: W) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(CHUNK_BYTES),
            length: 0,
            checksum: 0,
            error: None,
        }
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHUNK_BYTES {
            self.write_pending();
        }
    }

    /// Checksums and writes what is pending.
    fn write_pending(&mut self) {
        self.checksum = crc32c::crc32c_append(self.checksum, &self.pending);
        self.length += self.pending.len() as u64;
        if self.error.is_none() {
            if let Err(error) = self.out.write_all(&self.pending) {
                self.error = Some(error);
            }
        }
        self.pending.clear();
    }

    #[inline]
    pub(crate) fn u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }

    #[inline]
    pub(crate) fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    pub(crate) fn count(&mut self, count: usize) {
        self.u64(count as u64);
    }

    pub(crate) fn str(&mut self, value: &str) {
        self.count(value.len());
        self.put(value.as_bytes());
    }

    /// The sink, the body's length and its checksum; or the first error.
    pub(crate) fn finish(mut self) -> io::Result<(W, u64, u32)> {
        self.write_pending();
        match self.error {
            Some(error) => Err(error),
            None => Ok((self.out, self.length, self.checksum)),
        }
    }
}

/// Reads a snapshot body as it is decoded, a chunk at a time, without
/// holding it all: every read checks that the bytes are there, and
/// [`Decoder::finish`] checks the checksum once the whole body is read (so
/// state decoded from a damaged body is thrown away, never used).
pub(crate) struct Decoder<R: Read> {
    input: R,
    /// Body bytes not yet read from `input`.
    unread: u64,
    /// A chunk of the body; `chunk[at..]` is not decoded yet.
    chunk: Vec<u8>,
    at: usize,
    /// Body bytes decoded so far.
    offset: u64,
    checksum: u32,
    checksum_expected: u32,
    /// The format version the body was written in.
    pub(crate) version: u32,
}

/// How much of a body is checksummed and written, or read and checksummed,
/// at a time.
const CHUNK_BYTES: usize = 1 << 20;

impl<R: Read> Decoder<R> {
    pub(crate) fn new(input: R, length: u64, checksum_expected: u32) -> Self {
        Self {
            input,
            unread: length,
            chunk: Vec::new(),
            at: 0,
            offset: 0,
            checksum: 0,
            checksum_expected,
            version: FORMAT_VERSION,
        }
    }

    /// Body bytes not decoded yet.
    fn left(&self) -> u64 {
        self.unread + (self.chunk.len() - self.at) as u64
    }

    /// Reads the next chunk (keeping what is not decoded yet).
    fn refill(&mut self) -> Result<(), SnapshotError> {
        self.chunk.drain(..self.at);
        self.at = 0;
        let kept = self.chunk.len();
        let more = self.unread.min(CHUNK_BYTES as u64) as usize;
        self.chunk.resize(kept + more, 0);
        self.input
            .read_exact(&mut self.chunk[kept..])
            .map_err(|e| SnapshotError(format!("cannot read: {e}")))?;
        self.checksum = crc32c::crc32c_append(self.checksum, &self.chunk[kept..]);
        self.unread -= more as u64;
        Ok(())
    }

    #[inline]
    fn take(&mut self, target: &mut [u8]) -> Result<(), SnapshotError> {
        // Nearly every field lies inside the chunk already read.
        if let Some(bytes) = self.chunk.get(self.at..self.at + target.len()) {
            target.copy_from_slice(bytes);
            self.at += target.len();
            self.offset += target.len() as u64;
            return Ok(());
        }
        self.take_across(target)
    }

    /// [`take`](Self::take) for bytes that run past the chunk read.
    #[cold]
    #[inline(never)]
    fn take_across(&mut self, target: &mut [u8]) -> Result<(), SnapshotError> {
        if target.len() as u64 > self.left() {
            return Err(self.error("the body ends early"));
        }
        let mut done = 0;
        // Bounded: each round decodes at least one byte or reads a chunk.
        while done < target.len() {
            if self.at == self.chunk.len() {
                self.refill()?;
            }
            let n = (target.len() - done).min(self.chunk.len() - self.at);
            target[done..done + n].copy_from_slice(&self.chunk[self.at..self.at + n]);
            self.at += n;
            done += n;
        }
        self.offset += target.len() as u64;
        Ok(())
    }

    pub(crate) fn error(&self, reason: &str) -> SnapshotError {
        SnapshotError(format!("{reason} (body offset {})", self.offset))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut bytes = [0; 4];
        self.take(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut bytes = [0; 8];
        self.take(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// A list's count, refused if `item_bytes_min` bytes per item cannot be
    /// left in the body (so a damaged count cannot ask for a huge
    /// allocation).
    pub(crate) fn count(&mut self, item_bytes_min: usize) -> Result<usize, SnapshotError> {
        let count = self.u64()?;
        if count.saturating_mul(item_bytes_min.max(1) as u64) > self.left() {
            return Err(self.error("a count larger than the body"));
        }
        Ok(count as usize)
    }

    pub(crate) fn str(&mut self) -> Result<String, SnapshotError> {
        let length = self.count(1)?;
        let mut bytes = vec![0; length];
        self.take(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| self.error("a string is not UTF-8"))
    }

    /// An id in `1..=max`.
    pub(crate) fn id(&mut self, max: usize) -> Result<u64, SnapshotError> {
        let id = self.u64()?;
        if id == 0 || id > max as u64 {
            return Err(self.error("an id out of range"));
        }
        Ok(id)
    }

    /// Checks that the whole body was read and that its checksum matches.
    pub(crate) fn finish(&self) -> Result<(), SnapshotError> {
        if self.left() != 0 {
            return Err(self.error("bytes left after the state"));
        }
        if self.checksum != self.checksum_expected {
            return Err(SnapshotError("the body's checksum does not match".into()));
        }
        Ok(())
    }
}

fn path_for(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.{SUFFIX}"))
}

fn header(point: SnapshotPoint, length: u64, checksum: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&point.sequence.to_le_bytes());
    header[24..32].copy_from_slice(&point.timestamp_ns.to_le_bytes());
    header[32..40].copy_from_slice(&length.to_le_bytes());
    header[40..44].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Writes a snapshot at `point` into `dir` (made if missing), its body
/// streamed out by `encode`, durably: a temporary file, synced, renamed
/// into place, and the directory synced. Older snapshots are then
/// deleted. Returns the file's path.
pub(crate) fn write(
    dir: &Path,
    point: SnapshotPoint,
    encode: impl FnOnce(&mut Encoder<File>),
) -> io::Result<PathBuf> {
    crate::journal::create_dir_durably(dir)?;
    let path = path_for(dir, point.sequence);
    let temporary = path.with_extension("tmp");
    let written = write_file(&temporary, point, encode);
    if let Err(error) = written {
        // A disk that is full now may not be later: leave nothing behind.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()?;
    for (sequence, older) in list(dir)? {
        if sequence < point.sequence {
            fs::remove_file(older)?;
        }
    }
    // Files a write left half-done when its process was killed.
    for entry in fs::read_dir(dir)? {
        let leftover = entry?.path();
        if leftover.extension().and_then(|e| e.to_str()) == Some("tmp") {
            fs::remove_file(leftover)?;
        }
    }
    Ok(path)
}

/// Writes a whole snapshot file at `path`, synced.
fn write_file(
    path: &Path,
    point: SnapshotPoint,
    encode: impl FnOnce(&mut Encoder<File>),
) -> io::Result<()> {
    let mut file = File::create(path)?;
    // The header is written last, once the length and checksum are known.
    file.write_all(&[0; HEADER_BYTES])?;
    let mut body = Encoder::new(file);
    encode(&mut body);
    let (mut file, length, checksum) = body.finish()?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header(point, length, checksum))?;
    file.sync_all()
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

/// Opens a snapshot file: its point, and a decoder of its body.
pub(crate) fn open(path: &Path) -> Result<(SnapshotPoint, Decoder<File>), SnapshotError> {
    let fail = |e: io::Error| SnapshotError(format!("cannot read it: {e}"));
    let mut file = File::open(path).map_err(fail)?;
    let file_length = file.metadata().map_err(fail)?.len();
    let mut bytes = [0; HEADER_BYTES];
    if file_length < HEADER_BYTES as u64
        || file.read_exact(&mut bytes).is_err()
        || &bytes[..8] != MAGIC
    {
        return Err(SnapshotError("not a courier snapshot".into()));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError(format!(
            "format version {version}; this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"
        )));
    }
    let point = SnapshotPoint {
        sequence: word(16),
        timestamp_ns: word(24),
    };
    let body_length = word(32);
    let checksum = u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes"));
    if body_length != file_length - HEADER_BYTES as u64 {
        return Err(SnapshotError(format!(
            "{} body bytes where the header says {body_length}",
            file_length - HEADER_BYTES as u64
        )));
    }
    let mut decoder = Decoder::new(file, body_length, checksum);
    decoder.version = version;
    Ok((point, decoder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> impl FnOnce(&mut Encoder<File>) + '_ {
        move |out| {
            out.str(text);
            out.u64(7);
        }
    }

    fn decode(path: &Path) -> Result<(SnapshotPoint, String, u64), SnapshotError> {
        let (point, mut input) = open(path)?;
        let text = input.str()?;
        let number = input.u64()?;
        input.finish()?;
        Ok((point, text, number))
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
        write(dir.path(), first, body("one")).unwrap();
        // What a write killed halfway leaves.
        let leftover = path_for(dir.path(), 7).with_extension("tmp");
        fs::write(&leftover, b"half").unwrap();
        let path = write(dir.path(), second, body("two")).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![(9, path.clone())], "the older one is gone");
        assert!(!leftover.exists(), "and so is the leftover");
        assert_eq!(decode(&path).unwrap(), (second, "two".into(), 7));
    }

    #[test]
    fn a_body_larger_than_a_chunk_reads_back_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let point = SnapshotPoint {
            sequence: 3,
            timestamp_ns: 4,
        };
        // A string longer than a chunk, then values that straddle chunks.
        let long = "x".repeat(CHUNK_BYTES + 5);
        let path = write(dir.path(), point, |out| {
            out.str(&long);
            for value in 0..300_000u64 {
                out.u64(value);
                out.u32(value as u32);
            }
        })
        .unwrap();
        let (_, mut input) = open(&path).unwrap();
        assert_eq!(input.str().unwrap(), long);
        for value in 0..300_000u64 {
            assert_eq!(input.u64().unwrap(), value);
            assert_eq!(input.u32().unwrap(), value as u32);
        }
        input.finish().unwrap();
    }

    #[test]
    fn the_length_and_checksum_are_those_of_the_bytes_written() {
        let mut encoder = Encoder::new(Vec::new());
        // Fields that cross the chunks' edges, and a last part short of one.
        for value in 0..(CHUNK_BYTES as u64 / 4) {
            encoder.u64(value);
            encoder.u32(value as u32);
            encoder.str(if value % 7 == 0 { "seven" } else { "" });
        }
        let (bytes, length, checksum) = encoder.finish().unwrap();
        assert!(bytes.len() > 2 * CHUNK_BYTES);
        assert_eq!(length, bytes.len() as u64);
        assert_eq!(checksum, crc32c::crc32c(&bytes));
        assert_eq!(&bytes[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &bytes[12..20],
            &5u64.to_le_bytes(),
            "the length of \"seven\""
        );
    }

    #[test]
    fn damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let point = SnapshotPoint {
            sequence: 1,
            timestamp_ns: 2,
        };
        let path = write(dir.path(), point, body("state")).unwrap();
        let good = fs::read(&path).unwrap();
        // Each case: a change to the file and a word of the error.
        type Damage = fn(&mut Vec<u8>);
        let cases: [(Damage, &str); 5] = [
            (|b| b[0] = b'X', "not a courier snapshot"),
            (|b| b[8] = 9, "format version"),
            (|b| b.truncate(b.len() - 1), "body bytes"),
            (|b| *b.last_mut().unwrap() ^= 1, "checksum"),
            (|b| b.truncate(20), "not a courier snapshot"),
        ];
        for (damage, word) in cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            fs::write(&path, &bytes).unwrap();
            let error = decode(&path).unwrap_err();
            assert!(error.0.contains(word), "{error}");
        }
    }

    #[test]
    fn a_decoder_refuses_what_is_not_there() {
        // A count of a million items in a body of 8 bytes.
        let mut encoder = Encoder::new(Vec::new());
        encoder.u64(1_000_000);
        let (bytes, length, checksum) = encoder.finish().unwrap();
        let mut decoder = Decoder::new(&bytes[..], length, checksum);
        assert!(decoder.count(4).is_err());
        // An id out of range, and a string cut short.
        let mut encoder = Encoder::new(Vec::new());
        encoder.u64(3);
        encoder.u64(10);
        let (bytes, length, checksum) = encoder.finish().unwrap();
        let mut decoder = Decoder::new(&bytes[..], length, checksum);
        assert!(decoder.id(2).is_err());
        assert!(decoder.str().is_err());
    }
}
