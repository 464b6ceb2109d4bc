//! `courier journal inspect` on a real journal directory, as a user runs it.

use std::process::Command;

use courier::journal::{Durability, Journal, JournalConfig};

fn courier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_courier"))
}

#[test]
fn inspect_lists_segments_and_dumps_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_size_bytes: 4096,
        durability: Durability::Batch,
        ..JournalConfig::default()
    };
    let mut journal = Journal::open(dir.path(), config).unwrap();
    for n in 0..100u64 {
        journal
            .append(3, n * 10, format!("message {n}").as_bytes())
            .unwrap();
    }
    drop(journal);

    let output = courier()
        .args(["journal", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("100 records"), "{text}");
    let segments: usize = text
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(segments > 1, "small segments roll: {text}");

    let output = courier()
        .args([
            "journal", "inspect", "--dump", "--from", "42", "--limit", "2",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let hex_42: String = b"message 42".iter().map(|b| format!("{b:02x}")).collect();
    assert!(text.contains(&hex_42), "{text}");
    let dumped = text
        .lines()
        .filter(|l| l.trim_start().starts_with("42 ") || l.trim_start().starts_with("43 "))
        .count();
    assert_eq!(dumped, 2, "{text}");
}

#[test]
fn inspect_of_a_missing_directory_fails_with_a_clear_message() {
    let output = courier()
        .args(["journal", "inspect", "/nonexistent/courier-journal"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("/nonexistent/courier-journal"), "{text}");
    assert!(text.contains("does not exist"), "{text}");
}

#[test]
fn inspect_counts_reused_segments_exactly_and_names_the_kept_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_size_bytes: 4096,
        durability: Durability::None,
        ..JournalConfig::default()
    };
    // A journal still open, as under a running server: old segments are
    // deleted as it goes, their files written again as new segments.
    let mut journal = Journal::open(dir.path(), config).unwrap();
    for n in 0..600u64 {
        journal
            .append(
                3,
                n * 10,
                format!("message {n:04}")
                    .repeat(1 + n as usize % 9)
                    .as_bytes(),
            )
            .unwrap();
        if n % 50 == 49 {
            let active = journal.end_position().segment;
            journal.delete_before(active.saturating_sub(1)).unwrap();
        }
    }
    let held = journal.next_sequence() - journal.first_sequence();

    let output = courier()
        .args(["journal", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains(&format!("{held} records")), "{text}");
    // (How many: the reserving thread may be taking one meanwhile.)
    let kept: usize = text
        .lines()
        .find(|line| line.contains("deleted segment files kept for reuse"))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no kept files named: {text}"));
    assert!(kept >= 1, "{text}");
    assert!(
        text.lines().all(|line| !line.contains("sequence")),
        "no old record is taken for a new one: {text}"
    );
    drop(journal);
}
