//! Torn writes and damage: cut the last record at every byte offset, flip
//! every bit of it, and damage records inside the log. Exactly the complete
//! prefix must survive a tear; damage inside the log must be refused by name.

mod util;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use courier_journal::{Durability, Journal, JournalError, Position};

const RECORDS: u64 = 40;

/// Writes `RECORDS` records (the last with a 64-byte payload) and returns
/// the directory, the last record's position and its length.
fn base() -> (tempfile::TempDir, Position, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    util::append_pattern(&mut journal, 0, RECORDS - 1);
    let last = journal.append(9, 42, &[0xab; 64]).unwrap();
    drop(journal);
    (dir, last.position, 32 + 64)
}

fn segment_file(dir: &Path, segment: u64) -> std::path::PathBuf {
    dir.join(format!("{segment:020}.segment"))
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

fn edit(path: &Path, offset: u64, change: impl FnOnce(&mut [u8]), len: usize) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut bytes = vec![0u8; len];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut bytes).unwrap();
    change(&mut bytes);
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&bytes).unwrap();
}

/// Reopens and checks: `complete` records of the pattern survive (the last
/// record too when `last_survives`), and appending goes on from there.
fn expect_prefix(dir: &Path, last_survives: bool, torn_at: Option<Position>) {
    let mut journal = Journal::open(dir, util::small(Durability::Batch)).unwrap();
    let count = if last_survives { RECORDS } else { RECORDS - 1 };
    assert_eq!(journal.recovery().records, count);
    assert_eq!(journal.recovery().torn_at, torn_at);
    let mut cursor = journal.reader().cursor_at_start();
    for sequence in 0..count {
        let record = cursor.next().unwrap().expect("record of the prefix");
        assert_eq!(record.sequence(), sequence);
        if sequence < RECORDS - 1 {
            assert_eq!(record.payload(), util::payload_of(sequence));
        }
    }
    assert!(cursor.next().unwrap().is_none(), "nothing past the prefix");
    // The journal goes on where the prefix ends.
    let appended = journal.append(1, 1, b"after").unwrap();
    assert_eq!(appended.sequence, count);
    drop(journal);
    let journal = Journal::open(dir, util::small(Durability::Batch)).unwrap();
    assert_eq!(journal.recovery().records, count + 1);
    assert_eq!(journal.recovery().torn_at, None);
}

#[test]
fn a_record_cut_at_any_byte_is_dropped_whole() {
    let (base, last, length) = base();
    let file = segment_file(base.path(), last.segment);
    for kept in 0..=length {
        let dir = copy_dir(base.path());
        let file = dir.path().join(file.file_name().unwrap());
        // Only the first `kept` bytes of the record reached the disk.
        edit(
            &file,
            last.offset + kept as u64,
            |b| b.fill(0),
            length - kept,
        );
        let complete = kept == length;
        let torn = if kept == 0 || complete {
            None
        } else {
            Some(last)
        };
        expect_prefix(dir.path(), complete, torn);
    }
}

#[test]
fn a_flipped_bit_in_the_last_record_drops_it() {
    let (base, last, length) = base();
    let file = segment_file(base.path(), last.segment);
    for bit in 0..length * 8 {
        let dir = copy_dir(base.path());
        let file = dir.path().join(file.file_name().unwrap());
        edit(
            &file,
            last.offset + (bit / 8) as u64,
            |b| b[0] ^= 1 << (bit % 8),
            1,
        );
        expect_prefix(dir.path(), false, Some(last));
    }
}

#[test]
fn damage_inside_the_last_segment_is_an_error_naming_it() {
    let (base, last, _) = base();
    // The record just before the last one: valid records follow it.
    let journal = Journal::open(base.path(), util::small(Durability::Batch)).unwrap();
    let mut cursor = journal
        .reader()
        .cursor(Position {
            segment: last.segment,
            offset: 64,
        })
        .unwrap();
    let victim = cursor.next().unwrap().unwrap().position();
    drop(cursor);
    drop(journal);
    assert!(victim < last);
    edit(
        &segment_file(base.path(), victim.segment),
        victim.offset + 40,
        |b| b[0] ^= 0x10,
        1,
    );
    match Journal::open(base.path(), util::small(Durability::Batch)) {
        Err(JournalError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (victim.segment, victim.offset));
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("a damaged record inside the log was accepted"),
    }
}

#[test]
fn damage_in_a_sealed_segment_is_an_error_at_open_or_read() {
    let (base, _, _) = base();
    // Segment 0 is sealed. Damage its first record.
    let victim = Position {
        segment: 0,
        offset: 64,
    };
    edit(
        &segment_file(base.path(), 0),
        victim.offset + 20,
        |b| b[0] ^= 0x01,
        1,
    );

    // With its index, open trusts the sealed segment; the read finds it.
    let journal = Journal::open(base.path(), util::small(Durability::Batch)).unwrap();
    match journal.reader().read(victim) {
        Err(JournalError::Corrupt {
            segment: 0,
            offset: 64,
            ..
        }) => {}
        other => panic!("expected Corrupt at 0:64, got {other:?}"),
    }
    drop(journal);

    // Without its index, open scans it and refuses.
    std::fs::remove_file(base.path().join(format!("{:020}.index", 0))).unwrap();
    match Journal::open(base.path(), util::small(Durability::Batch)) {
        Err(JournalError::Corrupt {
            segment: 0,
            offset: 64,
            ..
        }) => {}
        Err(other) => panic!("expected Corrupt at 0:64, got {other}"),
        Ok(_) => panic!("a damaged sealed segment was accepted"),
    }
}

#[test]
fn a_missing_index_is_rebuilt() {
    let (base, _, _) = base();
    for entry in std::fs::read_dir(base.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "index") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let journal = Journal::open(base.path(), util::small(Durability::Batch)).unwrap();
    assert_eq!(journal.recovery().records, RECORDS);
    let mut cursor = journal.reader().cursor_at_sequence(17).unwrap();
    assert_eq!(cursor.next().unwrap().unwrap().sequence(), 17);
}

#[test]
fn a_lost_page_inside_a_sealed_segment_is_damage_not_the_end() {
    let (base, _, _) = base();
    // Zero the start of segment 0's records, as a page lost in a power loss
    // would; its index still says the records are there.
    edit(&segment_file(base.path(), 0), 64, |b| b.fill(0), 64);
    let journal = Journal::open(base.path(), util::small(Durability::Batch)).unwrap();
    let mut cursor = journal.reader().cursor_at_start();
    match cursor.next() {
        Err(JournalError::Corrupt {
            segment: 0,
            offset: 64,
            ..
        }) => {}
        other => panic!("expected Corrupt at 0:64, got {other:?}"),
    }
}
