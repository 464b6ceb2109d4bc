//! One segment file: its header, its map, and its sparse sequence index.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::format::{
    decode_record_header, record_checksum, stored_header_words, HeaderProblem, RecordHeader,
    SegmentHeader, FORMAT_VERSION, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
};
use crate::mmap::{preallocate, Appender, Mapping, Slot};
use crate::JournalError;

/// Segment files are `{id:020}.segment`, so names sort in log order.
pub(crate) const SEGMENT_SUFFIX: &str = "segment";
/// A segment being made; removed at open if a crash left one.
pub(crate) const TEMPORARY_SUFFIX: &str = "segment.tmp";
/// Sparse index files sit beside their segment: `{id:020}.index`.
pub(crate) const INDEX_SUFFIX: &str = "index";
/// A segment retired by retention and kept to be written again as a new
/// segment: `{id:020}.recycled`, under its old id. Open removes any left.
pub(crate) const RECYCLED_SUFFIX: &str = "recycled";

/// An index entry every this many bytes of records.
pub(crate) const INDEX_INTERVAL_BYTES: usize = 64 * 1024;

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_SUFFIX}"))
}

fn index_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{INDEX_SUFFIX}"))
}

fn recycled_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{RECYCLED_SUFFIX}"))
}

/// What a record offset holds, checked.
pub(crate) enum Read<'a> {
    /// Nothing yet.
    Empty,
    /// A record whose checksum holds.
    Record(RecordHeader, &'a [u8]),
    /// Something that is not a valid record.
    Invalid(String),
}

/// One segment file, mapped.
///
/// # Invariants
/// - The map's published end is the offset just past the last published
///   record; it only grows, and every record below it is complete.
/// - `index` entries are (sequence, offset) of records below `written_end`,
///   in increasing order.
pub(crate) struct Segment {
    pub(crate) id: u64,
    pub(crate) base_sequence: u64,
    pub(crate) path: PathBuf,
    pub(crate) dir: PathBuf,
    mapping: Mapping,
    /// Timestamp of the last record appended (or recovered), for retention.
    pub(crate) last_timestamp_ns: AtomicU64,
    index: RwLock<Vec<(u64, u32)>>,
}

impl Segment {
    /// Makes a new segment now: reserves it, heads it, syncs it and its
    /// directory. (The appender reserves segments ahead of need instead; see
    /// [`Reserved`].)
    pub(crate) fn create(
        dir: &Path,
        id: u64,
        base_sequence: u64,
        size_bytes: u64,
    ) -> Result<(Self, Appender), JournalError> {
        let (segment, appender) =
            Self::reserve(dir, id, size_bytes)?.activate(base_sequence, true)?;
        sync_directory(dir)?;
        Ok((segment, appender))
    }

    /// Makes the file of segment `id` under a temporary name, preallocated
    /// and mapped but without a header: the slow part of making a segment,
    /// done before the segment is needed.
    pub(crate) fn reserve(dir: &Path, id: u64, size_bytes: u64) -> Result<Reserved, JournalError> {
        let temporary = temporary_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(|e| JournalError::io(&temporary, e))?;
        let discard = |error| {
            let _ = std::fs::remove_file(&temporary);
            error
        };
        preallocate(&file, size_bytes).map_err(|error| {
            discard(if error.raw_os_error() == Some(libc_enospc()) {
                JournalError::DiskFull {
                    path: segment_path(dir, id),
                    bytes: size_bytes,
                }
            } else {
                JournalError::io(&temporary, error)
            })
        })?;
        let (mapping, appender) =
            Mapping::writable(&file, size_bytes as usize, SEGMENT_HEADER_SIZE)
                .map_err(|e| discard(JournalError::io(&temporary, e)))?;
        Ok(Reserved {
            dir: dir.to_owned(),
            id,
            size_bytes,
            temporary,
            file,
            mapping,
            appender,
        })
    }

    /// Makes the file of segment `id` out of a retired segment's file (see
    /// [`Segment::retire`]), as [`Segment::reserve`] makes a new one: renamed
    /// to the temporary name, its header and first length word zeroed,
    /// mapped. Its old records stay where they are: the appender
    /// zeroes the length word after each record it writes (see
    /// [`Mapping::append`]), so a scan stops there, and an old record is
    /// never taken for a new one since its sequence is below the new base.
    /// `None` if the file is gone, has another size or has left the page
    /// cache (making it ready would read it back from disk); it is then
    /// deleted and the caller makes a new one.
    pub(crate) fn reuse(
        dir: &Path,
        id: u64,
        size_bytes: u64,
        retired: Retired,
    ) -> Option<Reserved> {
        let temporary = temporary_path(dir, id);
        std::fs::rename(&retired.path, &temporary).ok()?;
        let reused = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&temporary)
                .ok()?;
            if file.metadata().ok()?.len() != size_bytes {
                return None;
            }
            // The header goes (the file is half made until the roll heads
            // it), and a scan must find nothing at the first record. No
            // sync: that would write back every page the old segment left
            // dirty. A power loss may so leave the old header on disk under
            // the new name; recovery takes that for a half-made newest
            // segment, as it does a zero header (see `recovery`).
            // (A file opened afresh is written from its start; the header
            // is written there later, so the position goes back.)
            (&file).write_all(&[0u8; SEGMENT_HEADER_SIZE + 8]).ok()?;
            (&file).seek(SeekFrom::Start(0)).ok()?;
            // The old map, made over (see `Mapping::reset`).
            let (mapping, appender) = match retired.mapping {
                Some(mapping) if mapping.len() == size_bytes as usize && mapping.is_writable() => {
                    mapping.reset(SEGMENT_HEADER_SIZE)
                }
                _ => Mapping::writable(&file, size_bytes as usize, SEGMENT_HEADER_SIZE).ok()?,
            };
            if !mapping.fully_resident() {
                return None;
            }
            Some(Reserved {
                dir: dir.to_owned(),
                id,
                size_bytes,
                temporary: temporary.clone(),
                file,
                mapping,
                appender,
            })
        })();
        if reused.is_none() {
            let _ = std::fs::remove_file(&temporary);
        }
        reused
    }

    fn assemble(dir: &Path, id: u64, base_sequence: u64, path: PathBuf, mapping: Mapping) -> Self {
        Self {
            id,
            base_sequence,
            path,
            dir: dir.to_owned(),
            mapping,
            last_timestamp_ns: AtomicU64::new(0),
            index: RwLock::new(Vec::new()),
        }
    }

    /// Opens an existing segment and checks its header against its name; with
    /// `writable`, also returns its appender (nothing is published yet: the
    /// caller scans and publishes).
    pub(crate) fn open(
        dir: &Path,
        id: u64,
        writable: bool,
    ) -> Result<(Self, Option<Appender>), JournalError> {
        let path = segment_path(dir, id);
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        let size = file
            .metadata()
            .map_err(|e| JournalError::io(&path, e))?
            .len();
        let mut bytes = [0u8; SEGMENT_HEADER_SIZE];
        if size < SEGMENT_HEADER_SIZE as u64 || file.read_exact(&mut bytes).is_err() {
            return Err(JournalError::NotAJournal(path));
        }
        let header = SegmentHeader::decode(&bytes).map_err(|problem| match problem {
            HeaderProblem::NotAJournal => JournalError::NotAJournal(path.clone()),
            HeaderProblem::Version(found) => JournalError::UnsupportedVersion {
                path: path.clone(),
                found,
                supported: FORMAT_VERSION,
            },
            HeaderProblem::Checksum => JournalError::Corrupt {
                segment: id,
                offset: 0,
                reason: "segment header checksum fails".into(),
            },
        })?;
        if header.segment_id != id || header.segment_size_bytes != size {
            return Err(JournalError::Corrupt {
                segment: id,
                offset: 0,
                reason: format!(
                    "header says segment {} of {} bytes, file is {} of {size} bytes",
                    header.segment_id,
                    header.segment_size_bytes,
                    path.display()
                ),
            });
        }
        let (mapping, appender) = if writable {
            let (mapping, appender) = Mapping::writable(&file, size as usize, SEGMENT_HEADER_SIZE)
                .map_err(|e| JournalError::io(&path, e))?;
            (mapping, Some(appender))
        } else {
            let mapping =
                Mapping::read_only(&file, size as usize).map_err(|e| JournalError::io(&path, e))?;
            (mapping, None)
        };
        // The map keeps the file's pages; the descriptor is not needed, and
        // a journal of thousands of segments would otherwise hold thousands
        // of them, which a server needs for its connections.
        drop(file);
        let segment = Self::assemble(dir, id, header.base_sequence, path, mapping);
        Ok((segment, appender))
    }

    pub(crate) fn size_bytes(&self) -> usize {
        self.mapping.len()
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The offset past the last published record, with `Acquire`.
    pub(crate) fn written_end(&self) -> usize {
        self.mapping.published_end()
    }

    /// Reads and checks the published record at `offset`.
    pub(crate) fn read(&self, offset: usize) -> Read<'_> {
        check(self.mapping.slot(offset))
    }

    /// Reads and checks what is written at `offset`, published or not
    /// (recovery, holding the appender).
    pub(crate) fn scan_read(&self, appender: &Appender, offset: usize) -> Read<'_> {
        check(self.mapping.scan_slot(appender, offset))
    }

    /// The length word at `offset`, published or not, if it is plausible.
    pub(crate) fn scan_length(&self, appender: &Appender, offset: usize) -> Option<u32> {
        match self.mapping.scan_slot(appender, offset) {
            Slot::Written(bytes) => Some(bytes.len() as u32),
            Slot::Empty | Slot::BadLength(_) => None,
        }
    }
    /// Publishes everything below `end` (recovery, after checking it).
    pub(crate) fn publish_to(&self, appender: &mut Appender, end: usize) {
        self.mapping.publish_to(appender, end);
    }

    /// Zeroes the unpublished rest of the segment and flushes it, so no
    /// stale bytes of a torn tail are ever taken for records. Returns the
    /// bytes zeroed.
    pub(crate) fn zero_tail(&self, appender: &mut Appender) -> Result<u64, JournalError> {
        let from = self.written_end();
        let zeroed = self.mapping.zero_tail(appender);
        self.mapping
            .flush(from, self.mapping.len() - from)
            .map_err(|e| JournalError::io(&self.path, e))?;
        Ok(zeroed)
    }

    /// Records an index entry if `offset` starts a new index interval.
    pub(crate) fn note_for_index(&self, sequence: u64, offset: usize) {
        let mut index = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = index
            .last()
            .is_none_or(|&(_, last)| offset >= last as usize + INDEX_INTERVAL_BYTES);
        if due {
            index.push((sequence, offset as u32));
        }
    }

    /// The offset of the indexed record at or before `sequence`, to scan from.
    pub(crate) fn index_floor(&self, sequence: u64) -> usize {
        let index = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = index.partition_point(|&(s, _)| s <= sequence);
        if at == 0 {
            SEGMENT_HEADER_SIZE
        } else {
            index[at - 1].1 as usize
        }
    }

    /// Writes the sparse index beside the segment (when it is sealed), with
    /// a checksum, so the next open need not scan the segment to rebuild it.
    pub(crate) fn write_index(&self) -> Result<(), JournalError> {
        let index = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut bytes = Vec::with_capacity(16 + index.len() * 12);
        bytes.extend_from_slice(&(index.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.written_end() as u64).to_le_bytes());
        bytes.extend_from_slice(&self.last_timestamp_ns.load(Ordering::Relaxed).to_le_bytes());
        for &(sequence, offset) in index.iter() {
            bytes.extend_from_slice(&sequence.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        let path = index_path(&self.dir, self.id);
        std::fs::write(&path, &bytes).map_err(|e| JournalError::io(&path, e))
    }

    /// Loads the index written by [`write_index`](Self::write_index) and
    /// returns the segment's recorded end; `None` if the index is missing or
    /// damaged (then the caller scans instead).
    pub(crate) fn load_index(&self) -> Option<usize> {
        let bytes = std::fs::read(index_path(&self.dir, self.id)).ok()?;
        if bytes.len() < 28 {
            return None;
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
            return None;
        }
        let count = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes")) as usize;
        if body.len() != 24 + count * 12 {
            return None;
        }
        let written_end = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")) as usize;
        if written_end < SEGMENT_HEADER_SIZE || written_end > self.mapping.len() {
            return None;
        }
        let entries = body[24..]
            .chunks_exact(12)
            .map(|c| {
                (
                    u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
                    u32::from_le_bytes(c[8..12].try_into().expect("4 bytes")),
                )
            })
            .collect();
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = entries;
        self.last_timestamp_ns.store(
            u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
        Some(written_end)
    }

    /// The segment's map, for reuse once the segment is retired.
    pub(crate) fn into_mapping(self) -> Mapping {
        self.mapping
    }

    /// Whether the segment can be kept for reuse: every page of it is in
    /// the page cache.
    pub(crate) fn reusable(&self) -> bool {
        self.mapping.fully_resident()
    }

    /// Deletes the segment's index, then renames its file for reuse as a
    /// later segment (retention, keeping the file); returns the file's new
    /// path. The index goes first: if that fails, the segment is untouched
    /// (a missing index is rebuilt when needed).
    pub(crate) fn retire(&self) -> Result<PathBuf, JournalError> {
        self.delete_index()?;
        let retired = recycled_path(&self.dir, self.id);
        std::fs::rename(&self.path, &retired).map_err(|e| JournalError::io(&self.path, e))?;
        Ok(retired)
    }

    /// Deletes the segment's files (retention), the index first, as
    /// [`Segment::retire`] does. The map stays valid until the last holder
    /// drops it.
    pub(crate) fn delete_files(&self) -> Result<(), JournalError> {
        self.delete_index()?;
        std::fs::remove_file(&self.path).map_err(|e| JournalError::io(&self.path, e))
    }

    fn delete_index(&self) -> Result<(), JournalError> {
        let index = index_path(&self.dir, self.id);
        match std::fs::remove_file(&index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(JournalError::io(&index, e)),
            _ => Ok(()),
        }
    }
}

/// Where a walk over a segment's records stopped.
pub(crate) struct WalkEnd {
    /// The offset past the last record the walk accepted.
    pub(crate) offset: usize,
    /// The sequence after the last record the walk accepted.
    pub(crate) next_sequence: u64,
    /// What stopped it before the unwritten space, if anything.
    pub(crate) problem: Option<String>,
}

/// Walks a segment's records from the first, through `read`, checking that
/// sequences follow on from the segment's base; stops at the unwritten
/// space, at the first bad record, or when `visit` returns false.
pub(crate) fn walk<'a>(
    segment: &Segment,
    read: impl Fn(usize) -> Read<'a>,
    mut visit: impl FnMut(usize, &RecordHeader, &[u8]) -> bool,
) -> WalkEnd {
    let mut offset = SEGMENT_HEADER_SIZE;
    let mut expected = segment.base_sequence;
    // Bounded: each step moves `offset` forward by at least one header.
    let problem = loop {
        match read(offset) {
            Read::Empty => break None,
            Read::Record(header, payload) if header.sequence == expected => {
                if !visit(offset, &header, payload) {
                    break None;
                }
                offset += header.stride();
                expected += 1;
            }
            Read::Record(header, _) => {
                break Some(format!(
                    "sequence {} where {expected} was expected",
                    header.sequence
                ))
            }
            Read::Invalid(reason) => break Some(reason),
        }
    };
    WalkEnd {
        offset,
        next_sequence: expected,
        problem,
    }
}

/// Checks what a slot holds.
fn check(slot: Slot<'_>) -> Read<'_> {
    match slot {
        Slot::Empty => Read::Empty,
        Slot::BadLength(length) => Read::Invalid(format!("impossible record length {length}")),
        Slot::Written(bytes) => {
            let header = decode_record_header(bytes);
            let payload = &bytes[RECORD_HEADER_SIZE..];
            let words = stored_header_words(&bytes[..RECORD_HEADER_SIZE]);
            let checksum = record_checksum(header.length, &words, payload);
            if checksum != header.checksum {
                return Read::Invalid(format!(
                    "checksum {:#010x} does not match the stored {:#010x}",
                    checksum, header.checksum
                ));
            }
            Read::Record(header, payload)
        }
    }
}

/// A segment file retired by retention and kept for reuse (see
/// [`Segment::reuse`]): its path, and its map when the segment's last holder
/// gave it up.
pub(crate) struct Retired {
    pub(crate) path: PathBuf,
    pub(crate) mapping: Option<Mapping>,
}

/// A segment file made ahead of need (see [`Segment::reserve`]). A crash
/// leaves it under its temporary name, which the next open removes.
pub(crate) struct Reserved {
    dir: PathBuf,
    id: u64,
    size_bytes: u64,
    temporary: PathBuf,
    file: File,
    mapping: Mapping,
    appender: Appender,
}

impl Reserved {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Writes the header (its first record will have `base_sequence`) and
    /// renames the file into place. With `sync`, the header is on disk
    /// before the rename; without, a power loss may leave a segment whose
    /// header is zero, which recovery removes when it is the last one. The
    /// directory entry is the caller's to sync.
    pub(crate) fn activate(
        self,
        base_sequence: u64,
        sync: bool,
    ) -> Result<(Segment, Appender), JournalError> {
        let header = SegmentHeader {
            segment_id: self.id,
            base_sequence,
            segment_size_bytes: self.size_bytes,
        };
        let mut file = &self.file;
        file.write_all(&header.encode())
            .map_err(|e| JournalError::io(&self.temporary, e))?;
        if sync {
            self.file
                .sync_all()
                .map_err(|e| JournalError::io(&self.temporary, e))?;
        }
        let path = segment_path(&self.dir, self.id);
        std::fs::rename(&self.temporary, &path).map_err(|e| JournalError::io(&path, e))?;
        let segment = Segment::assemble(&self.dir, self.id, base_sequence, path, self.mapping);
        Ok((segment, self.appender))
    }

    /// Removes the file (the journal closed before it was needed).
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Makes `dir` and whichever of its parents are missing, each durably: a
/// new directory's name is durable only once the directory holding it is
/// synced, so each is synced after the directory made in it. Without this
/// a power cut soon after the first start could take the whole data
/// directory, acknowledged records and all.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while std::fs::symlink_metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    for path in missing.into_iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Makes the directory's entries (a new or renamed segment) durable.
pub(crate) fn sync_directory(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

fn temporary_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{TEMPORARY_SUFFIX}"))
}

fn libc_enospc() -> i32 {
    #[cfg(unix)]
    return libc::ENOSPC;
    #[cfg(not(unix))]
    return 28;
}
