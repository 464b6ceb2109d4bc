//! Crash tests with a real process: a child appends the test pattern under
//! each durability policy and is killed with SIGKILL at random moments; on
//! reopen exactly a valid prefix is there, and under the batch policy every
//! record the child reported durable before the kill. With retention, the
//! child deletes old segments as it goes and writes their files again as
//! new segments.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use courier_journal::{Durability, Journal, JournalConfig, Retention};

const CHILD_DIR: &str = "COURIER_JOURNAL_CRASH_DIR";
const CHILD_POLICY: &str = "COURIER_JOURNAL_CRASH_POLICY";

fn policy(name: &str) -> Durability {
    match name.strip_suffix("+retention").unwrap_or(name) {
        "none" => Durability::None,
        "interval" => Durability::Interval(Duration::from_millis(2)),
        "batch" => Durability::Batch,
        other => panic!("unknown policy {other}"),
    }
}

/// The child's configuration: with `+retention`, at most six segments kept.
fn child_config(name: &str) -> JournalConfig {
    let mut config = util::small(policy(name));
    if name.ends_with("+retention") {
        config.retention = Retention {
            size_bytes_max: Some(6 * config.segment_size_bytes),
            age_max: None,
        };
    }
    config
}

/// The child: appends the pattern in batches until killed, printing after
/// each flush the sequence below which everything is durable.
#[test]
#[ignore = "the child process of the crash tests; they run it"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by the crash tests");
    let name = std::env::var(CHILD_POLICY).expect("run by the crash tests");
    let durability = policy(&name);
    let mut journal = Journal::open(&dir, child_config(&name)).unwrap();
    let mut next = journal.next_sequence();
    println!("ready {next}");
    let mut batch = 1;
    // Runs until the parent kills it; the bound only guards a lost parent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        util::append_pattern(&mut journal, next, next + batch);
        next += batch;
        batch = batch % 37 + 1;
        if durability == Durability::Batch {
            journal.flush().unwrap();
            println!("durable {next}");
        }
    }
}

/// A small deterministic generator for kill times.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

fn crash_cycles(name: &str, cycles: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Lcg(name.len() as u64 * 7919 + 17);
    let mut survived = 0;
    let mut deleted = false;
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_POLICY, name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to have opened (and so recovered) the journal.
        // The test harness prints lines of its own first.
        let start: u64 = loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("cycle {cycle}: the child did not start: {e}"));
            // libtest may put "test crash_child ... " before it on the line.
            if let Some(at) = line.find("ready ") {
                break line[at + "ready ".len()..].parse().unwrap();
            }
        };
        assert_eq!(
            start, survived,
            "cycle {cycle}: the child resumed where recovery ended"
        );
        std::thread::sleep(Duration::from_millis(1 + random.next(40)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let durable = lines_rx
            .try_iter()
            .filter_map(|line| {
                line.strip_prefix("durable ")
                    .map(|n| n.parse::<u64>().unwrap())
            })
            .max()
            .unwrap_or(start);
        let journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
        // A killed process leaves its writes in the page cache: the length
        // word stored last means a record is whole or absent, never torn.
        assert_eq!(journal.recovery().torn_at, None, "cycle {cycle}");
        let count = util::expect_pattern(&journal);
        deleted |= journal.first_sequence() > 0;
        assert!(
            count >= survived,
            "cycle {cycle}: records were lost ({count} < {survived})"
        );
        assert!(
            count >= durable,
            "cycle {cycle}: {count} records, but {durable} were reported durable"
        );
        survived = count;
    }
    assert!(survived > 0, "the children appended something");
    assert_eq!(
        deleted,
        name.ends_with("+retention"),
        "retention deleted segments"
    );
}

#[test]
fn killed_appender_leaves_a_valid_prefix_without_flushes() {
    crash_cycles("none", 25);
}

#[test]
fn killed_appender_leaves_a_valid_prefix_with_interval_flushes() {
    crash_cycles("interval", 25);
}

#[test]
fn killed_appender_keeps_everything_flushed_in_batches() {
    crash_cycles("batch", 25);
}

#[test]
fn killed_appender_writing_reused_segment_files_leaves_a_valid_prefix() {
    crash_cycles("none+retention", 25);
}

#[test]
fn killed_appender_writing_reused_segment_files_keeps_everything_flushed() {
    crash_cycles("batch+retention", 25);
}
