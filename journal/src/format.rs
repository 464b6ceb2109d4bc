//! The on-disk layout: segment headers and records. Everything is
//! little-endian and fixed-width.
//!
//! A segment file is a header followed by records, preallocated to a fixed
//! size. Unwritten space is zero in a new file; a file written again after
//! retention retired it holds its earlier records there. Either way the
//! length word after the last record is zero.
//!
//! ```text
//! segment header (64 bytes)
//!  0        8        12       16               24               32
//!  +--------+--------+--------+----------------+----------------+
//!  | magic  | version| header | base_sequence  | segment_size   |
//!  | 8 B    | u32    | crc u32| u64            | u64            |
//!  +--------+--------+--------+----------------+----------------+
//!  32               40                                         64
//!  +----------------+-------------------------------------------+
//!  | segment_id u64 | zero                                      |
//!  +----------------+-------------------------------------------+
//!
//! record (header 32 bytes, then the payload, then zero padding to 8 bytes)
//!  0        4        8                16               24       26       28       32
//!  +--------+--------+----------------+----------------+--------+--------+--------+----------
//!  | length | crc32c | sequence u64   | timestamp_ns   | type   | zero   | zero   | payload ..
//!  | u32    | u32    |                | u64            | u16    | u16    | u32    |
//!  +--------+--------+----------------+----------------+--------+--------+--------+----------
//! ```
//!
//! `length` counts the record header and payload, not the padding, so it is
//! never zero for a record and zero means "nothing written here yet". It is
//! stored last, with release ordering, after everything else is in place. The
//! checksum (CRC-32C) covers the length word and bytes 8 up to the end of the
//! payload, so a torn record, a flipped bit or a record from a previous use of
//! the space all fail it.

/// The first 8 bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"CRJOURNL";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes in a segment header; records start here.
pub const SEGMENT_HEADER_SIZE: usize = 64;
/// Bytes in a record header.
pub const RECORD_HEADER_SIZE: usize = 32;
/// Records start on multiples of this.
pub const RECORD_ALIGNMENT: usize = 8;
/// The largest payload a record can hold, whatever the segment size.
pub const PAYLOAD_SIZE_MAX: usize = (u32::MAX as usize) - RECORD_HEADER_SIZE;

const _: () = assert!(SEGMENT_HEADER_SIZE.is_multiple_of(RECORD_ALIGNMENT));
const _: () = assert!(RECORD_HEADER_SIZE.is_multiple_of(RECORD_ALIGNMENT));
const _: () = assert!(RECORD_ALIGNMENT.is_power_of_two());

/// Offsets of the record header's fields.
pub(crate) mod record {
    pub const LENGTH: usize = 0;
    pub const CHECKSUM: usize = 4;
    pub const SEQUENCE: usize = 8;
    pub const TIMESTAMP: usize = 16;
    pub const TYPE: usize = 24;
}

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number: 0 for the first, one more for each after.
    pub segment_id: u64,
    /// The sequence of the first record the segment holds (or will hold).
    pub base_sequence: u64,
    /// The file's size, header included.
    pub segment_size_bytes: u64,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// The magic is wrong: not a journal segment at all.
    NotAJournal,
    /// A journal segment of another format version.
    Version(u32),
    /// The header's own checksum fails.
    Checksum,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut bytes = [0u8; SEGMENT_HEADER_SIZE];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.base_sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.segment_id.to_le_bytes());
        let checksum = header_checksum(&bytes);
        bytes[12..16].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, HeaderProblem> {
        if bytes.len() < SEGMENT_HEADER_SIZE || bytes[0..8] != MAGIC {
            return Err(HeaderProblem::NotAJournal);
        }
        let version = read_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::Version(version));
        }
        if read_u32(bytes, 12) != header_checksum(bytes) {
            return Err(HeaderProblem::Checksum);
        }
        Ok(Self {
            base_sequence: read_u64(bytes, 16),
            segment_size_bytes: read_u64(bytes, 24),
            segment_id: read_u64(bytes, 32),
        })
    }
}

/// CRC-32C of a segment header with its checksum field taken as zero.
fn header_checksum(bytes: &[u8]) -> u32 {
    let checksum = crc32c::crc32c(&bytes[0..12]);
    crc32c::crc32c_append(checksum, &bytes[16..SEGMENT_HEADER_SIZE])
}

/// A record header, as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header plus payload bytes, padding excluded.
    pub length: u32,
    /// CRC-32C as stored.
    pub checksum: u32,
    /// The record's sequence: one more than the record before it.
    pub sequence: u64,
    /// The time the caller gave at append, in nanoseconds.
    pub timestamp_ns: u64,
    /// The caller's type tag.
    pub record_type: u16,
}

impl RecordHeader {
    /// Payload bytes.
    pub fn payload_length(&self) -> usize {
        self.length as usize - RECORD_HEADER_SIZE
    }

    /// Bytes the record takes in the segment, padding included.
    pub fn stride(&self) -> usize {
        record_stride(self.payload_length())
    }
}

/// Bytes a record with `payload_length` payload bytes takes, padding included.
pub const fn record_stride(payload_length: usize) -> usize {
    (RECORD_HEADER_SIZE + payload_length).next_multiple_of(RECORD_ALIGNMENT)
}

/// A record header's bytes 8..32 (sequence, timestamp, type and the
/// reserved zero bytes) as the three little-endian words they are stored as.
/// The appender builds them in registers and writes them word by word: a
/// header assembled in memory field by field and read back whole would make
/// each read wait until the previous record's bytes reach the cache.
pub(crate) type HeaderWords = [u64; 3];

/// The header words of a new record.
pub(crate) fn header_words(sequence: u64, timestamp_ns: u64, record_type: u16) -> HeaderWords {
    [sequence, timestamp_ns, u64::from(record_type)]
}

/// The header words as stored in `header[8..32]`, reserved bytes included.
pub(crate) fn stored_header_words(header: &[u8]) -> HeaderWords {
    [
        read_u64(header, record::SEQUENCE),
        read_u64(header, record::TIMESTAMP),
        read_u64(header, record::TYPE),
    ]
}

/// CRC-32C over the length word, the header words and the payload, back to
/// back (computed in [`checksum`](crate::checksum)).
pub(crate) fn record_checksum(length: u32, words: &HeaderWords, payload: &[u8]) -> u32 {
    crate::checksum::record_checksum(length, words, payload)
}

const _: () = assert!(RECORD_HEADER_SIZE - record::SEQUENCE == 8 * 3);

/// The checksum a record's header must hold: CRC-32C over its length word,
/// its bytes 8..32 and `payload` (the stored checksum, bytes 4..8, is not
/// read). For tools that write or check records outside this crate.
pub fn record_checksum_of(header: &[u8; RECORD_HEADER_SIZE], payload: &[u8]) -> u32 {
    record_checksum(
        read_u32(header, record::LENGTH),
        &stored_header_words(header),
        payload,
    )
}

/// Decodes a record header (length included) from 32 bytes.
pub(crate) fn decode_record_header(bytes: &[u8]) -> RecordHeader {
    RecordHeader {
        length: read_u32(bytes, record::LENGTH),
        checksum: read_u32(bytes, record::CHECKSUM),
        sequence: read_u64(bytes, record::SEQUENCE),
        timestamp_ns: read_u64(bytes, record::TIMESTAMP),
        record_type: u16::from_le_bytes([bytes[record::TYPE], bytes[record::TYPE + 1]]),
    }
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    // The slice is exactly 4 bytes long, so the conversion cannot fail.
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    // The slice is exactly 8 bytes long, so the conversion cannot fail.
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            segment_id: 3,
            base_sequence: 1_000,
            segment_size_bytes: 1 << 20,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        // Each case: a byte to change and the problem it must cause.
        let cases = [
            (0, HeaderProblem::NotAJournal),       // magic
            (8, HeaderProblem::Version(1 ^ 0x40)), // version
            (17, HeaderProblem::Checksum),         // base sequence
            (40, HeaderProblem::Checksum),         // reserved zero
        ];
        for (at, problem) in cases {
            let mut damaged = bytes;
            damaged[at] ^= 0x40;
            assert_eq!(SegmentHeader::decode(&damaged), Err(problem), "byte {at}");
        }
        // Too short to be a header.
        assert_eq!(
            SegmentHeader::decode(&bytes[..10]),
            Err(HeaderProblem::NotAJournal)
        );
    }

    #[test]
    fn strides_are_aligned_and_cover_the_record() {
        // (payload bytes, stride)
        let cases = [(0, 32), (1, 40), (7, 40), (8, 40), (9, 48), (256, 288)];
        for (payload, stride) in cases {
            assert_eq!(record_stride(payload), stride, "payload {payload}");
            assert_eq!(stride % RECORD_ALIGNMENT, 0);
        }
    }

    #[test]
    fn record_checksum_is_crc32c_of_length_header_tail_and_payload_in_order() {
        // The on-disk format: however it is computed, the checksum is one
        // CRC-32C over these bytes, back to back.
        let payload = b"a payload that is not a multiple of eight";
        let words = header_words(41, 1_700_000_000, 9);
        let length = (RECORD_HEADER_SIZE + payload.len()) as u32;
        let checksum = record_checksum(length, &words, payload);
        let mut covered = length.to_le_bytes().to_vec();
        covered.extend_from_slice(&41u64.to_le_bytes());
        covered.extend_from_slice(&1_700_000_000u64.to_le_bytes());
        covered.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]);
        covered.extend_from_slice(payload);
        assert_eq!(checksum, crc32c::crc32c(&covered));
    }

    #[test]
    fn the_public_checksum_reads_the_header_it_is_given() {
        let mut header = [0u8; RECORD_HEADER_SIZE];
        header[record::LENGTH..4].copy_from_slice(&37u32.to_le_bytes());
        header[record::CHECKSUM..8].copy_from_slice(&[0xff; 4]);
        header[record::SEQUENCE..record::SEQUENCE + 8].copy_from_slice(&7u64.to_le_bytes());
        let words = header_words(7, 0, 0);
        assert_eq!(
            record_checksum_of(&header, b"hello"),
            record_checksum(37, &words, b"hello")
        );
    }

    #[test]
    fn stored_header_words_are_the_bytes_written() {
        let mut header = [0u8; RECORD_HEADER_SIZE];
        header[record::SEQUENCE..record::SEQUENCE + 8].copy_from_slice(&7u64.to_le_bytes());
        header[record::TIMESTAMP..record::TIMESTAMP + 8].copy_from_slice(&99u64.to_le_bytes());
        header[record::TYPE..record::TYPE + 2].copy_from_slice(&0x0102u16.to_le_bytes());
        assert_eq!(stored_header_words(&header), header_words(7, 99, 0x0102));
        // A nonzero reserved byte is part of the words, so the checksum sees it.
        header[RECORD_HEADER_SIZE - 1] = 1;
        assert_ne!(stored_header_words(&header), header_words(7, 99, 0x0102));
    }

    #[test]
    fn record_checksum_covers_length_header_and_payload() {
        let words = header_words(7, 99, 2);
        let length = (RECORD_HEADER_SIZE + 5) as u32;
        let checksum = record_checksum(length, &words, b"hello");
        // Another length, payload, sequence or reserved byte changes it.
        assert_ne!(record_checksum(length + 8, &words, b"hello"), checksum);
        assert_ne!(record_checksum(length, &words, b"hellp"), checksum);
        assert_ne!(
            record_checksum(length, &header_words(6, 99, 2), b"hello"),
            checksum
        );
        let mut reserved = words;
        reserved[2] |= 1 << 63;
        assert_ne!(record_checksum(length, &reserved, b"hello"), checksum);
    }
}
