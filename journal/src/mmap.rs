//! The journal's one window onto the operating system: preallocation,
//! memory maps and the atomic length word. All of the journal's `unsafe`
//! that touches memory lives here, behind functions whose contracts the
//! writer and readers keep. (The one other block calls the checksum's
//! CPU-specific code after detecting the CPU features it needs.)

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::format::{record, HeaderWords, RECORD_ALIGNMENT, RECORD_HEADER_SIZE};

/// Reserves `bytes` of disk for `file`, so that writes through a map of it
/// can never fail for want of space (which would raise SIGBUS, not an error).
pub(crate) fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fallocate reads no memory of ours; the descriptor is
        // open for writing for the duration of the call.
        let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
        if code != 0 {
            return Err(io::Error::from_raw_os_error(code));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Elsewhere, extend the file; space is then taken as pages are written.
        file.set_len(bytes)
    }
}

/// What is at a record offset.
pub(crate) enum Slot<'a> {
    /// Nothing published (or, for recovery, written) there.
    Empty,
    /// A record: header and payload (`length` bytes), not yet verified.
    Written(&'a [u8]),
    /// A length word that cannot be right: shorter than a header or past the
    /// readable end.
    BadLength(u32),
}

/// The right to write one map: exactly one exists per writable map, held by
/// its appender (recovery first, then the journal). Holding it `&mut` is
/// what makes writing sound; holding it `&` is what lets recovery read past
/// the published end.
pub(crate) struct Appender {
    map_address: usize,
}

/// A memory map of a whole segment file.
///
/// # Invariants
/// - `len` is the file's size, fixed for the map's life (segments are
///   preallocated and never truncated while mapped).
/// - `published_end` only grows. Every byte below it is part of a complete
///   record (or the header) and never changes again; readers without the
///   [`Appender`] read nothing at or past it. Bytes at or past it are
///   written only through the one `Appender`. So reads and writes never
///   touch the same bytes at once.
/// - A record's length word is stored last of its bytes, with `Release`, and
///   `published_end` after it, with `Release`.
/// - The length word at the published end is zero (if the map has room for
///   one): a new file is zero, and each append zeroes the word after its
///   record before storing its own. A reused file holds old records past it.
pub(crate) struct Mapping {
    raw: MmapRaw,
    len: usize,
    published_end: AtomicU64,
    writable: bool,
}

impl Mapping {
    /// Maps `file` for reading and writing; returns the map and its one
    /// appender. Nothing past `header_len` is published yet.
    pub(crate) fn writable(
        file: &File,
        len: usize,
        header_len: usize,
    ) -> io::Result<(Self, Appender)> {
        assert!(header_len <= len);
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        let appender = Appender {
            map_address: raw.as_ptr() as usize,
        };
        let mapping = Self {
            raw,
            len,
            published_end: AtomicU64::new(header_len as u64),
            writable: true,
        };
        Ok((mapping, appender))
    }

    /// The map of a retired segment, made over for a new segment in the
    /// same file: nothing past `header_len` is published, and it gets its
    /// one appender anew.
    ///
    /// Its page-table entries go; the pages stay in the page cache. After a
    /// flush they are write-protected, and a write to one then faults once
    /// per 4 KiB page, where ext4 walks the buffers of the whole (large)
    /// folio each time: that made the preparing thread of a server under
    /// retention as busy as with new files (1.26–1.37 s against 1.35 in a
    /// 20 s run). Mapped afresh, a fault maps a whole folio, and the same
    /// runs measured 0.69–0.77 s (a new map of the file, 0.74–0.88).
    ///
    /// Taking `self` by value is what makes the new appender the only one:
    /// a map's appender borrows nothing from it, but the journal drops a
    /// segment's appender when it rolls past the segment, long before
    /// retention retires it, and recovery keeps only the newest segment's.
    pub(crate) fn reset(self, header_len: usize) -> (Self, Appender) {
        assert!(self.writable && header_len <= self.len);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: dropping the page-table entries of a shared file map
            // loses nothing: its pages stay in the page cache, dirty ones
            // dirty, and the next touch maps them again. Nothing reads or
            // writes the map meanwhile (taken by value, no appender yet).
            let _ = unsafe {
                self.raw
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
        }
        self.published_end
            .store(header_len as u64, Ordering::Release);
        let appender = Appender {
            map_address: self.raw.as_ptr() as usize,
        };
        (self, appender)
    }

    /// Maps `file` for reading only. With no writer in this process, the
    /// whole file counts as published.
    pub(crate) fn read_only(file: &File, len: usize) -> io::Result<Self> {
        let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(Self {
            raw,
            len,
            published_end: AtomicU64::new(len as u64),
            writable: false,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// The end of what readers may read, with `Acquire`.
    pub(crate) fn published_end(&self) -> usize {
        self.published_end.load(Ordering::Acquire) as usize
    }

    fn check(&self, appender: &Appender) {
        assert_eq!(
            appender.map_address,
            self.raw.as_ptr() as usize,
            "an appender writes only its own map"
        );
    }

    /// The bytes `offset..offset + len`, which the caller has checked lie
    /// below `end`, an end it may read to.
    fn bytes(&self, offset: usize, len: usize, end: usize) -> &[u8] {
        assert!(offset + len <= end && end <= self.len);
        // SAFETY: in bounds (asserted); below the published end nothing is
        // written any more, and past it only the appender reads (it passed
        // `end` beyond the published end only when holding the appender,
        // which is then borrowed and cannot write).
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(offset), len) }
    }

    /// What is at `offset`, reading only below `end`.
    fn slot_below(&self, offset: usize, end: usize) -> Slot<'_> {
        assert!(
            offset.is_multiple_of(RECORD_ALIGNMENT),
            "record offsets are aligned"
        );
        if offset + RECORD_HEADER_SIZE > end {
            return Slot::Empty;
        }
        // SAFETY: in bounds and aligned (the map is page aligned); length
        // words are only ever accessed atomically or below the published end.
        let word = unsafe { &*(self.raw.as_ptr().add(offset) as *const AtomicU32) };
        let length = word.load(Ordering::Acquire);
        if length == 0 {
            return Slot::Empty;
        }
        if (length as usize) < RECORD_HEADER_SIZE || offset as u64 + length as u64 > end as u64 {
            return Slot::BadLength(length);
        }
        Slot::Written(self.bytes(offset, length as usize, end))
    }

    /// The published record at `offset`, if any. In a writable map, every
    /// offset below the published end that a reader reaches starts a record,
    /// so a zero length word there is damage (a page lost in a power loss),
    /// not the end. (A read-only map counts the whole file as published, so
    /// there zero is the end.)
    pub(crate) fn slot(&self, offset: usize) -> Slot<'_> {
        // One load of the end: a second could see a record published since.
        let end = self.published_end();
        match self.slot_below(offset, end) {
            Slot::Empty if self.writable && offset + RECORD_HEADER_SIZE <= end => {
                Slot::BadLength(0)
            }
            slot => slot,
        }
    }

    /// What is written at `offset`, published or not: for recovery, which
    /// holds the appender and so knows nobody writes.
    pub(crate) fn scan_slot(&self, appender: &Appender, offset: usize) -> Slot<'_> {
        self.check(appender);
        self.slot_below(offset, self.len)
    }

    /// Appends a record at the published end: the checksum, the header
    /// words and the payload, then the length word, then the new end.
    /// Returns the record's offset. The caller checked that it fits.
    pub(crate) fn append(
        &self,
        appender: &mut Appender,
        checksum: u32,
        words: &HeaderWords,
        payload: &[u8],
        stride: usize,
    ) -> usize {
        self.check(appender);
        assert!(self.writable, "append to a read-only map");
        let offset = self.published_end();
        let length = RECORD_HEADER_SIZE + payload.len();
        assert!(
            stride >= length && offset + stride <= self.len,
            "record does not fit"
        );
        assert!(
            offset.is_multiple_of(RECORD_ALIGNMENT),
            "record offsets are aligned"
        );
        // SAFETY: `offset..offset + stride` and the next record's length
        // word are at or past the published end, which no reader reads, and
        // the `&mut Appender` makes this the only writer; in bounds
        // (asserted, and checked for the next word: `offset + stride` is a
        // multiple of 8 below `len`, which is too). The map is page aligned
        // and `offset` a multiple of 8 (asserted), so the word stores are
        // aligned. The length word (bytes 0..4) is left for the atomic
        // store below.
        unsafe {
            let base = self.raw.as_mut_ptr().add(offset);
            base.add(record::CHECKSUM)
                .cast::<u32>()
                .write(checksum.to_le());
            // Word by word, each its own 8-byte store (volatile, so the
            // compiler does not merge them into a block copy): a block copy
            // reads the words back from the stack with wider loads than
            // they were written with, and such a load waits until every
            // store before it, the previous record's included, reaches the
            // cache.
            let [sequence, timestamp, record_type] = *words;
            let header = base.add(record::SEQUENCE).cast::<u64>();
            std::ptr::write_volatile(header, sequence.to_le());
            std::ptr::write_volatile(header.add(1), timestamp.to_le());
            std::ptr::write_volatile(header.add(2), record_type.to_le());
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                base.add(RECORD_HEADER_SIZE),
                payload.len(),
            );
            // The length word after this record is zero before this one's
            // is stored: a reused segment file holds an earlier segment's
            // records past the end, and a scan must stop at the end.
            if offset + stride < self.len {
                let next = &*(base.add(stride) as *const AtomicU32);
                next.store(0, Ordering::Relaxed);
            }
            let word = &*(base as *const AtomicU32);
            word.store(length as u32, Ordering::Release);
        }
        self.published_end
            .store((offset + stride) as u64, Ordering::Release);
        offset
    }

    /// Moves the published end to `end` (recovery, after a scan).
    pub(crate) fn publish_to(&self, appender: &mut Appender, end: usize) {
        self.check(appender);
        assert!(
            end >= self.published_end() && end <= self.len,
            "the published end only grows"
        );
        self.published_end.store(end as u64, Ordering::Release);
    }

    /// Zeroes every nonzero byte from the published end to the end of the
    /// map (recovery, cutting off a torn tail); returns the bytes zeroed.
    pub(crate) fn zero_tail(&self, appender: &mut Appender) -> u64 {
        const CHUNK: usize = 64 * 1024;
        self.check(appender);
        assert!(self.writable, "zero a read-only map");
        let mut at = self.published_end();
        let mut zeroed = 0;
        while at < self.len {
            let len = CHUNK.min(self.len - at);
            // SAFETY: at or past the published end, so no reader; the
            // `&mut Appender` makes this the only writer; in bounds.
            unsafe {
                let chunk = std::slice::from_raw_parts_mut(self.raw.as_mut_ptr().add(at), len);
                if chunk.iter().any(|&b| b != 0) {
                    chunk.fill(0);
                    zeroed += len as u64;
                }
            }
            at += len;
        }
        zeroed
    }

    /// Whether every page of the map is in memory (the page cache), so that
    /// touching it reads nothing from disk. False where that cannot be told.
    pub(crate) fn fully_resident(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf reads no memory of ours.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let Ok(page) = usize::try_from(page) else {
                return false;
            };
            if page == 0 {
                return false;
            }
            let mut pages = vec![0u8; self.len.div_ceil(page)];
            // SAFETY: the range is this map, mapped for the call (`self` is
            // borrowed) and page aligned; `pages` has one byte for each of
            // its pages, which mincore writes and nothing else.
            let code = unsafe {
                libc::mincore(
                    self.raw.as_mut_ptr().cast::<libc::c_void>(),
                    self.len,
                    pages.as_mut_ptr(),
                )
            };
            code == 0 && pages.iter().all(|&flags| flags & 1 == 1)
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Writes back `offset..offset + len` to the file and waits (msync).
    pub(crate) fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.raw.flush_range(offset, len)
    }

    /// Asks the kernel to cache the pages this map faults in from now on as
    /// single pages. Since Linux 6.16, ext4 caches file data in large folios
    /// (up to megabytes), and a folio is dirtied and written back whole: a
    /// group commit that changed 18 KiB wrote back about 800 KiB, and the
    /// next append faulted the folio again. Single pages make each flush
    /// write what changed. (The advice is for random access, which turns
    /// off the fault-time readahead that picks large folios.) Best effort:
    /// elsewhere it only costs what readahead would have saved.
    pub(crate) fn use_single_pages(&self) {
        if self.writable {
            let _ = self.raw.advise(memmap2::Advice::Random);
        }
    }

    /// Asks the kernel to make `offset..offset + len` ready for writing now,
    /// so the appender does not stall on page faults there later. Best
    /// effort: an old kernel without the advice only loses the head start.
    pub(crate) fn prepare(&self, offset: usize, len: usize) {
        let len = len.min(self.len.saturating_sub(offset));
        if len == 0 || !self.writable {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            if self
                .raw
                .advise_range(memmap2::Advice::PopulateWrite, offset, len)
                .is_err()
            {
                let _ = self
                    .raw
                    .advise_range(memmap2::Advice::WillNeed, offset, len);
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    /// A file written, synced and dropped from the page cache is not all in
    /// memory; read once, it is.
    #[test]
    fn a_map_tells_whether_its_pages_are_in_memory() {
        const LEN: usize = 64 * 4096;
        // Beside the sources, on a disk (/tmp may be tmpfs, which keeps
        // every page in memory).
        let mut file = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        file.write_all(&vec![7u8; LEN]).unwrap();
        file.sync_all().unwrap();
        // SAFETY: fadvise reads no memory of ours.
        let code = unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                0,
                LEN as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(code, 0);
        let map = Mapping::read_only(&file, LEN).unwrap();
        assert!(!map.fully_resident(), "the pages were dropped");
        let sum: u64 = map.bytes(0, LEN, LEN).iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 7 * LEN as u64);
        assert!(map.fully_resident(), "every page was read");
    }
}
