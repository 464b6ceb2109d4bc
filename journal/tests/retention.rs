//! Retention (the journal's own, or a caller's `delete_before`) deletes
//! whole old segments, never the active one and never one a live reader
//! holds; the interval policy flushes on its own.

mod util;

use std::time::{Duration, Instant};

use courier_journal::{Durability, Journal, JournalConfig, Retention};
use util::segment_count;

#[test]
fn size_retention_deletes_the_oldest_segments_but_not_held_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        retention: Retention {
            size_bytes_max: Some(4 * 4096),
            age_max: None,
        },
        ..util::small(Durability::None)
    };
    let mut journal = Journal::open(dir.path(), config).unwrap();
    // A reader holding the first segment.
    let mut cursor = journal.reader().cursor_at_start();
    util::append_pattern(&mut journal, 0, 200);
    let first = cursor
        .next()
        .unwrap()
        .expect("the held segment is still readable");
    assert_eq!(first.sequence(), 0);
    assert!(
        segment_count(dir.path()) > 4,
        "the held segment blocks deletion"
    );
    drop(first);
    drop(cursor);
    // With the reader gone, the next roll trims to the limit.
    util::append_pattern(&mut journal, 200, 260);
    assert!(
        segment_count(dir.path()) <= 5,
        "{} segments left",
        segment_count(dir.path())
    );
    // What is left reads from its first record on, and reopens.
    let mut cursor = journal.reader().cursor_at_start();
    let oldest = cursor.next().unwrap().unwrap().sequence();
    assert!(oldest > 0);
    assert!(
        journal.reader().cursor_at_sequence(0).is_err(),
        "deleted sequences are refused"
    );
    drop(cursor);
    drop(journal);
    let journal = Journal::open(dir.path(), util::small(Durability::None)).unwrap();
    assert_eq!(journal.recovery().first_sequence, Some(oldest));
    assert_eq!(journal.next_sequence(), 260);
}

#[test]
fn age_retention_uses_record_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        retention: Retention {
            size_bytes_max: None,
            age_max: Some(Duration::from_micros(50)),
        },
        ..util::small(Durability::None)
    };
    let mut journal = Journal::open(dir.path(), config).unwrap();
    // The pattern stamps sequence × 1 µs: segments of older records go.
    util::append_pattern(&mut journal, 0, 300);
    let mut cursor = journal.reader().cursor_at_start();
    let oldest = cursor.next().unwrap().unwrap();
    assert!(oldest.sequence() > 0, "old segments were deleted");
    assert!(300 - oldest.sequence() < 120, "only recent segments remain");
}

#[test]
fn delete_before_removes_older_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::None)).unwrap();
    util::append_pattern(&mut journal, 0, 200);
    let segments = segment_count(dir.path());
    assert!(segments > 4, "{segments} segments");
    assert_eq!(journal.first_sequence(), 0);
    // A reader on segment 2 stops the deletion there.
    let held = journal.reader().cursor_at_sequence(0).unwrap();
    assert!(journal.delete_before(2).unwrap().is_empty());
    drop(held);
    assert_eq!(journal.delete_before(2).unwrap(), [0, 1]);
    assert_eq!(segment_count(dir.path()), segments - 2);
    let oldest = journal.reader().cursor_at_start().next().unwrap().unwrap();
    assert_eq!(journal.first_sequence(), oldest.sequence());
    assert!(oldest.sequence() > 0);
    drop(oldest);
    // Never the active segment, whatever the caller asks.
    let deleted = journal.delete_before(u64::MAX).unwrap();
    assert_eq!(segment_count(dir.path()), 1, "deleted {deleted:?}");
    util::append_pattern(&mut journal, 200, 210);
    drop(journal);
    let journal = Journal::open(dir.path(), util::small(Durability::None)).unwrap();
    assert_eq!(journal.next_sequence(), 210);
    assert!(journal.first_sequence() > 0);
}

#[test]
fn a_pruner_deletes_from_another_thread_while_the_appender_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::None)).unwrap();
    let pruner = journal.pruner();
    util::append_pattern(&mut journal, 0, 100);
    let (first, active) = pruner.segment_range();
    assert!(first == 0 && active > 2, "segments {first}..={active}");
    // Another thread deletes while this one appends and rolls: each
    // deletion stops before the segment it is given and the active one.
    let deleting = std::thread::spawn(move || {
        let mut deleted = Vec::new();
        for _ in 0..200 {
            let (_, active) = pruner.segment_range();
            deleted.extend(pruner.delete_before(active.saturating_sub(1)).unwrap());
            std::thread::yield_now();
        }
        (deleted, pruner)
    });
    util::append_pattern(&mut journal, 100, 400);
    let (deleted, pruner) = deleting.join().unwrap();
    assert!(!deleted.is_empty());
    assert!(
        deleted.windows(2).all(|pair| pair[0] + 1 == pair[1]),
        "{deleted:?}"
    );
    assert_eq!(pruner.first_sequence(), journal.first_sequence());
    // What is left reads back in order to the end, and reopens.
    let mut cursor = journal.reader().cursor_at_start();
    let mut expected = journal.first_sequence();
    while let Some(record) = cursor.next().unwrap() {
        assert_eq!(record.sequence(), expected);
        expected += 1;
    }
    assert_eq!(expected, 400);
    drop(cursor);
    drop(journal);
    let journal = Journal::open(dir.path(), util::small(Durability::None)).unwrap();
    assert_eq!(journal.next_sequence(), 400);
}

/// Whether the segment file at `path` holds bytes past its last record:
/// an earlier segment's records, in a file written again. (Follows the
/// length words from the first record; a new file is zero past the end.)
fn holds_old_records(path: &std::path::Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let mut offset = courier_journal::format::SEGMENT_HEADER_SIZE;
    while offset + 4 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        offset += length.next_multiple_of(8);
    }
    bytes[offset.min(bytes.len())..].iter().any(|&b| b != 0)
}

/// Appends a segment's worth at a time, deleting all but the two newest
/// segments after each; returns how many segments were made and how many
/// of them were files written again.
fn append_and_delete(journal: &mut Journal, dir: &std::path::Path) -> (usize, usize) {
    let mut seen = std::collections::BTreeMap::new();
    for round in 0..12u64 {
        util::append_pattern(journal, round * 30, round * 30 + 30);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "segment") {
                let reused = holds_old_records(&path);
                *seen
                    .entry(path.file_name().unwrap().to_owned())
                    .or_default() |= reused;
            }
        }
        let active = journal.end_position().segment;
        journal.delete_before(active.saturating_sub(1)).unwrap();
    }
    (seen.len(), seen.values().filter(|&&reused| reused).count())
}

#[test]
fn deleted_segments_files_are_written_again_as_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::small(Durability::Batch);
    let mut journal = Journal::open(dir.path(), config.clone()).unwrap();
    let (segments, reused) = append_and_delete(&mut journal, dir.path());
    assert!(segments > 15, "{segments} segments made");
    // Each deletion keeps its files for the segments after it: all but the
    // first few segments are old files (on Linux, where the journal can
    // tell that a file is still all in memory).
    if cfg!(target_os = "linux") {
        assert!(reused * 2 > segments, "{reused} of {segments} reused");
    }
    // Every record left reads back, and a reopen finds them exactly.
    let first = journal.first_sequence();
    assert!(first > 0);
    let mut cursor = journal.reader().cursor_at_start();
    let mut expected = first;
    while let Some(record) = cursor.next().unwrap() {
        assert_eq!(record.sequence(), expected);
        assert_eq!(record.payload(), util::payload_of(expected));
        expected += 1;
    }
    assert_eq!(expected, 360);
    drop(cursor);
    drop(journal);
    assert_eq!(
        util::recycled_count(dir.path()),
        0,
        "kept files go at close"
    );
    let journal = Journal::open(dir.path(), config).unwrap();
    assert_eq!(journal.recovery().torn_at, None);
    assert_eq!(journal.recovery().records, 360 - first);
}

#[test]
fn without_recycling_each_new_segment_is_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        recycled_segments_max: 0,
        ..util::small(Durability::None)
    };
    let mut journal = Journal::open(dir.path(), config).unwrap();
    let (segments, reused) = append_and_delete(&mut journal, dir.path());
    assert!(segments > 15, "{segments} segments made");
    assert_eq!(reused, 0);
    assert_eq!(util::recycled_count(dir.path()), 0);
}

#[test]
fn interval_policy_makes_appends_durable_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(
        dir.path(),
        util::small(Durability::Interval(Duration::from_millis(5))),
    )
    .unwrap();
    let start = journal.durable_position();
    util::append_pattern(&mut journal, 0, 50);
    let end = journal.end_position();
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.durable_position() < end {
        assert!(Instant::now() < deadline, "the flusher never caught up");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(journal.durable_position() > start);
    assert!(!journal.flusher_failed());
}

#[test]
fn a_flusher_on_another_thread_makes_appends_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    let flusher = journal.flusher();
    util::append_pattern(&mut journal, 0, 50);
    let end = journal.end_position();
    assert!(journal.durable_position() < end, "nothing flushed yet");
    let durable = std::thread::spawn(move || flusher.flush().unwrap())
        .join()
        .unwrap();
    assert_eq!(durable, end);
    assert_eq!(journal.durable_position(), end);
}

#[test]
fn a_reader_tails_appends_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::None)).unwrap();
    let reader = journal.reader();
    let tail = std::thread::spawn(move || {
        let mut cursor = reader.cursor_at_sequence(0).unwrap();
        let mut seen = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen < 2_000 {
            assert!(Instant::now() < deadline, "tailing stalled at {seen}");
            match cursor.next().unwrap() {
                Some(record) => {
                    assert_eq!(record.sequence(), seen);
                    assert_eq!(record.payload(), util::payload_of(seen));
                    seen += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        seen
    });
    util::append_pattern(&mut journal, 0, 2_000);
    assert_eq!(tail.join().unwrap(), 2_000);
}
