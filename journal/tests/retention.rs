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
