//! Helpers shared by the journal's integration tests.
#![allow(dead_code)] // each test file uses part of this

use courier_journal::{Durability, Journal, JournalConfig};

/// A small-segment configuration, so tests roll segments often.
pub fn small(durability: Durability) -> JournalConfig {
    JournalConfig {
        segment_size_bytes: 4096,
        durability,
        prepare_ahead_bytes: 8192,
        ..JournalConfig::default()
    }
}

/// The payload the tests write for `sequence`: its length varies with the
/// sequence, so records straddle pages and segment ends in many ways.
pub fn payload_of(sequence: u64) -> Vec<u8> {
    let length = (sequence * 37 % 300) as usize;
    (0..length)
        .map(|i| (sequence as usize * 31 + i) as u8)
        .collect()
}

/// Appends records with sequences `from..to` in the test pattern.
pub fn append_pattern(journal: &mut Journal, from: u64, to: u64) {
    for sequence in from..to {
        let appended = journal
            .append(
                (sequence % 7) as u16,
                sequence * 1_000,
                &payload_of(sequence),
            )
            .unwrap_or_else(|e| panic!("append {sequence}: {e}"));
        assert_eq!(appended.sequence, sequence);
    }
}

/// Reads the whole journal and checks it holds exactly the pattern
/// `0..count`; returns `count`.
pub fn expect_pattern(journal: &Journal) -> u64 {
    let mut cursor = journal.reader().cursor_at_start();
    // From the oldest record retention left.
    let mut expected = journal.first_sequence();
    while let Some(record) = cursor.next().expect("readable journal") {
        assert_eq!(record.sequence(), expected, "sequences are contiguous");
        assert_eq!(record.record_type(), (expected % 7) as u16);
        assert_eq!(record.timestamp_ns(), expected * 1_000);
        assert_eq!(
            record.payload(),
            payload_of(expected),
            "payload of {expected}"
        );
        expected += 1;
    }
    assert_eq!(
        journal.next_sequence(),
        expected,
        "appends continue after the last record"
    );
    expected
}

/// Segment files in `dir`.
pub fn segment_count(dir: &std::path::Path) -> usize {
    count_with_extension(dir, "segment")
}

/// Retired segment files kept for reuse in `dir`.
pub fn recycled_count(dir: &std::path::Path) -> usize {
    count_with_extension(dir, "recycled")
}

fn count_with_extension(dir: &std::path::Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == extension)
        })
        .count()
}
