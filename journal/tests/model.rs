//! Property tests: random appends, rolls, reopens and reads against a `Vec`.

mod util;

use courier_journal::{Durability, Journal, Position};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { record_type: u16, payload: Vec<u8> },
    Flush,
    Reopen,
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

fn check(journal: &Journal, model: &[Entry], probe: u64) -> Result<(), TestCaseError> {
    let reader = journal.reader();
    // Every record by position.
    for (sequence, entry) in model.iter().enumerate() {
        let record = reader
            .read(entry.position)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(record.sequence(), sequence as u64);
        prop_assert_eq!(record.record_type(), entry.record_type);
        prop_assert_eq!(record.timestamp_ns(), entry.timestamp_ns);
        prop_assert_eq!(record.payload(), &entry.payload[..]);
    }
    // A walk from the start gives the model, then nothing.
    let mut cursor = reader.cursor_at_start();
    for entry in model {
        let record = cursor
            .next()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(record.map(|r| r.position()), Some(entry.position));
    }
    prop_assert!(cursor.next().unwrap().is_none());
    // A walk from any sequence gives the model's suffix.
    if !model.is_empty() {
        let from = probe % (model.len() as u64 + 1);
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn journal_matches_a_vec(ops in proptest::collection::vec(op(), 1..120), probe in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let config = util::small(Durability::Batch);
        let mut journal = Journal::open(dir.path(), config.clone()).unwrap();
        let mut model: Vec<Entry> = Vec::new();
        let mut clock = 0u64;
        for op in ops {
            match op {
                Op::Append { record_type, payload } => {
                    clock += 17;
                    let appended = journal.append(record_type, clock, &payload).unwrap();
                    prop_assert_eq!(appended.sequence, model.len() as u64);
                    if let Some(last) = model.last() {
                        prop_assert!(appended.position > last.position, "positions grow");
                    }
                    model.push(Entry { position: appended.position, record_type, timestamp_ns: clock, payload });
                }
                Op::Flush => {
                    let durable = journal.flush().unwrap();
                    prop_assert_eq!(durable, journal.end_position());
                    prop_assert_eq!(journal.durable_position(), durable);
                }
                Op::Reopen => {
                    drop(journal);
                    journal = Journal::open(dir.path(), config.clone()).unwrap();
                    prop_assert_eq!(journal.recovery().records, model.len() as u64);
                    prop_assert_eq!(journal.recovery().torn_at, None);
                }
            }
        }
        check(&journal, &model, probe)?;
        drop(journal);
        let journal = Journal::open(dir.path(), config).unwrap();
        check(&journal, &model, probe)?;
    }
}
