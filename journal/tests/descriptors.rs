//! A journal holds no file descriptor per segment: the maps keep the pages,
//! and a server needs its descriptors for connections. (Its own test binary,
//! so no other test opens files while this one counts them.)

#![cfg(target_os = "linux")]

mod util;

use courier_journal::{Durability, Journal, JournalConfig};
use util::segment_count;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn many_segments_hold_no_descriptor_each_while_appending_or_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        durability: Durability::None,
        segment_size_bytes: 4096,
        prepare_ahead_bytes: 4096,
        ..JournalConfig::default()
    };
    let before = open_descriptors();
    let mut journal = Journal::open(dir.path(), config.clone()).unwrap();
    for n in 0..2_000u64 {
        journal.append(1, n, &[7u8; 100]).unwrap();
    }
    let segments = segment_count(dir.path());
    assert!(segments >= 50, "only {segments} segments");
    let appending = open_descriptors();
    drop(journal);

    let journal = Journal::open(dir.path(), config).unwrap();
    let mut cursor = journal.reader().cursor_at_start();
    let mut read = 0;
    while cursor.next().unwrap().is_some() {
        read += 1;
    }
    assert_eq!(read, 2_000);
    let reopened = open_descriptors();
    // The directory lock, the spare segment being made, a reading handle or
    // two: a handful, never one per segment.
    assert!(
        appending < before + 10,
        "{before} descriptors before, {appending} with {segments} segments"
    );
    assert!(
        reopened < before + 10,
        "{before} descriptors before, {reopened} after reopening {segments} segments"
    );
}
