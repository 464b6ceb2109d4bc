//! Property tests: random appends, rolls, reopens, deletions and reads
//! against a `Vec`.

mod util;

use courier_journal::{Durability, Journal, JournalConfig, Position};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        record_type: u16,
        payload: Vec<u8>,
    },
    Flush,
    Reopen,
    /// Delete the sealed segments more than this many (mod 3) before the
    /// active one; their files are kept and written again as new segments.
    DeleteBefore(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..700))
            .prop_map(|(record_type, payload)| Op::Append { record_type, payload }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

struct Entry {
    position: Position,
    record_type: u16,
    timestamp_ns: u64,
    payload: Vec<u8>,
}

fn with_deletions() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op(),
        2 => any::<u8>().prop_map(Op::DeleteBefore),
    ]
}

/// Checks the journal against `model`, whose records before `first` are
/// deleted.
fn check_from(
    journal: &Journal,
    model: &[Entry],
    first: u64,
    probe: u64,
) -> Result<(), TestCaseError> {
    let reader = journal.reader();
    prop_assert_eq!(journal.first_sequence(), first);
    if first > 0 {
        prop_assert!(reader.cursor_at_sequence(first - 1).is_err());
    }
    let kept = &model[first as usize..];
    // Every record by position.
    for (entry, sequence) in kept.iter().zip(first..) {
        let record = reader
            .read(entry.position)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(record.sequence(), sequence);
        prop_assert_eq!(record.record_type(), entry.record_type);
        prop_assert_eq!(record.timestamp_ns(), entry.timestamp_ns);
        prop_assert_eq!(record.payload(), &entry.payload[..]);
    }
    // A walk from the start gives the model, then nothing.
    let mut cursor = reader.cursor_at_start();
    for entry in kept {
        let record = cursor
            .next()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(record.map(|r| r.position()), Some(entry.position));
    }
    prop_assert!(cursor.next().unwrap().is_none());
    // A walk from any sequence gives the model's suffix.
    if !kept.is_empty() {
        let from = first + probe % (kept.len() as u64 + 1);
        let mut cursor = reader
            .cursor_at_sequence(from)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for entry in &model[from as usize..] {
            let record = cursor.next().unwrap();
            prop_assert_eq!(record.map(|r| r.position()), Some(entry.position));
        }
        prop_assert!(cursor.next().unwrap().is_none());
    }
    prop_assert_eq!(journal.next_sequence(), model.len() as u64);
    Ok(())
}

/// Appends to the journal and the model alike, 17 ns after the last record.
fn append_to(
    journal: &mut Journal,
    model: &mut Vec<Entry>,
    clock: &mut u64,
    record_type: u16,
    payload: Vec<u8>,
) -> Result<(), TestCaseError> {
    *clock += 17;
    let appended = journal.append(record_type, *clock, &payload).unwrap();
    prop_assert_eq!(appended.sequence, model.len() as u64);
    if let Some(last) = model.last() {
        prop_assert!(appended.position > last.position, "positions grow");
    }
    model.push(Entry {
        position: appended.position,
        record_type,
        timestamp_ns: *clock,
        payload,
    });
    Ok(())
}

fn check(journal: &Journal, model: &[Entry], probe: u64) -> Result<(), TestCaseError> {
    check_from(journal, model, 0, probe)
}

/// Runs `ops` on a journal in `dir` and on the model; returns them with the
/// sequence of the oldest record left.
fn run_ops(
    dir: &std::path::Path,
    config: &JournalConfig,
    ops: Vec<Op>,
    probe: u64,
) -> Result<(Journal, Vec<Entry>, u64), TestCaseError> {
    let mut journal = Journal::open(dir, config.clone()).unwrap();
    let mut model: Vec<Entry> = Vec::new();
    let mut first = 0u64;
    let mut clock = 0u64;
    for op in ops {
        match op {
            Op::Append {
                record_type,
                payload,
            } => append_to(&mut journal, &mut model, &mut clock, record_type, payload)?,
            Op::Flush => {
                let durable = journal.flush().unwrap();
                prop_assert_eq!(durable, journal.end_position());
                prop_assert_eq!(journal.durable_position(), durable);
            }
            Op::Reopen => {
                drop(journal);
                journal = Journal::open(dir, config.clone()).unwrap();
                prop_assert_eq!(journal.recovery().records, model.len() as u64 - first);
                prop_assert_eq!(journal.recovery().torn_at, None);
            }
            Op::DeleteBefore(back) => {
                let active = journal.end_position().segment;
                journal
                    .delete_before(active.saturating_sub(u64::from(back % 3)))
                    .unwrap();
                first = journal.first_sequence();
            }
        }
        check_from(&journal, &model, first, probe)?;
    }
    Ok((journal, model, first))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn journal_matches_a_vec(ops in proptest::collection::vec(op(), 1..120), probe in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let config = util::small(Durability::Batch);
        let (journal, model, _) = run_ops(dir.path(), &config, ops, probe)?;
        check(&journal, &model, probe)?;
        drop(journal);
        let journal = Journal::open(dir.path(), config).unwrap();
        check(&journal, &model, probe)?;
    }

    /// Deleted segments' files are written again as new segments, their old
    /// records still in them past the end: nothing of them is ever read as
    /// a record, and a reopen (after a clean close, or with the files of an
    /// appender that never closed) finds exactly what was appended.
    #[test]
    fn reused_segment_files_hold_exactly_what_was_appended(
        ops in proptest::collection::vec(with_deletions(), 1..200),
        probe in any::<u64>(),
        batch in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = util::small(if batch { Durability::Batch } else { Durability::None });
        let (journal, model, first) = run_ops(dir.path(), &config, ops, probe)?;
        // The files a process that never closed its journal would leave (a
        // crash) open to the same records: what the kill leaves is what is
        // in the page cache now.
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap();
            let copied = std::fs::copy(&path, copy.path().join(name));
            // The reserving thread may be renaming a kept file meanwhile.
            let settled = path.extension().is_some_and(|x| x == "segment" || x == "index");
            prop_assert!(copied.is_ok() || !settled, "{:?}: {:?}", name, copied);
        }
        let crashed = Journal::open(copy.path(), config.clone()).unwrap();
        prop_assert_eq!(crashed.recovery().torn_at, None);
        prop_assert_eq!(crashed.recovery().truncated_bytes, 0);
        check_from(&crashed, &model, first, probe)?;
        drop(crashed);
        drop(journal);
        let journal = Journal::open(dir.path(), config).unwrap();
        check_from(&journal, &model, first, probe)?;
        prop_assert_eq!(util::recycled_count(dir.path()), 0, "kept files go at close");
    }
}
