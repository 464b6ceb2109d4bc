//! Each courier-bench scenario, with tiny counts, against a server it
//! starts itself: the harness runs end to end and reports what it measured.

use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One test at a time: each starts servers and drives load, and on a
/// two-core machine the open-loop checks (what arrived in half a second)
/// would count a sibling test's load as the server's slowness.
fn serial() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs courier-bench with `args`.
fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(args)
        .output()
        .expect("courier-bench runs")
}

/// Runs courier-bench with tiny counts (half a second measured), expecting
/// it to succeed; returns what it printed.
fn succeed(args: &[&str]) -> String {
    let all = [&["--quiet", "--seconds", "0.5", "--warmup", "0.2"], args].concat();
    let output = bench(&all);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// One scenario against a server it starts; returns the table and the
/// summary.json.
fn run(args: &[&str]) -> (String, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let stdout = succeed(&[&["--spawn", "--out", dir], args].concat());
    let json = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
    assert!(out.path().join("latency.svg").exists());
    (stdout, serde_json::from_str(&json).unwrap())
}

/// A small `mixed` run: reconnects every 100 ms, half the posts to groups.
const MIXED: &[&str] = &[
    "mixed",
    "--users",
    "5",
    "--rate",
    "500",
    "--churn-ms",
    "100",
    "--group-percent",
    "50",
];

fn latency_count(summary: &serde_json::Value, index: usize) -> u64 {
    summary["latencies"][index][1]["count"].as_u64().unwrap()
}

#[test]
fn one_to_one_closed_and_open_loop() {
    let _serial = serial();
    let (table, summary) = run(&["one-to-one", "--pairs", "2", "--rate", "0"]);
    assert!(table.contains("delivery"), "{table}");
    assert!(latency_count(&summary, 0) > 0, "messages were delivered");
    assert_eq!(summary["errors"], 0);
    assert!(summary["server_cpu_us_per_op"].as_f64().unwrap() > 0.0);
    let (_, summary) = run(&[
        "--threads",
        "2",
        "one-to-one",
        "--pairs",
        "2",
        "--rate",
        "2000",
    ]);
    // About 1,000 messages are due in the half second measured.
    let count = latency_count(&summary, 0);
    assert!((500..=1500).contains(&count), "{count} deliveries");
}

#[test]
fn storm_idle_and_mixed() {
    let _serial = serial();
    let (_, summary) = run(&["storm", "--connections", "20"]);
    assert_eq!(latency_count(&summary, 0), 20, "every connection logged in");
    let (_, summary) = run(&["idle", "--connections", "10", "--ping-ms", "100"]);
    assert!(latency_count(&summary, 0) > 0, "pings were answered");
    let (_, summary) = run(MIXED);
    assert!(latency_count(&summary, 0) > 0, "messages were delivered");
    assert!(latency_count(&summary, 1) > 0, "devices reconnected");
    assert!(latency_count(&summary, 2) > 0, "group posts were delivered");
}

#[test]
fn group_closed_and_open_loop() {
    let _serial = serial();
    let (table, summary) = run(&["group", "--size", "5", "--groups", "2", "--rate", "0"]);
    assert!(table.contains("last member"), "{table}");
    // Each message reaches the 4 members other than its poster.
    let each = latency_count(&summary, 0);
    let last = latency_count(&summary, 1);
    assert!(last > 0, "messages reached every member");
    assert!(each >= 4 * last, "{each} deliveries for {last} messages");
    assert_eq!(summary["errors"], 0);
    let (_, summary) = run(&["group", "--size", "3", "--rate", "1000"]);
    // About 500 messages are due in the half second measured.
    let last = latency_count(&summary, 1);
    assert!((250..=750).contains(&last), "{last} messages");
}

#[test]
fn every_connection_through_a_websocket() {
    let _serial = serial();
    let (_, summary) = run(&["--websocket", "one-to-one", "--pairs", "2", "--rate", "0"]);
    assert!(latency_count(&summary, 0) > 0, "messages were delivered");
    assert_eq!(summary["errors"], 0);
    let (_, summary) = run(&[&["--websocket"], MIXED].concat());
    assert!(latency_count(&summary, 0) > 0, "messages were delivered");
    assert!(latency_count(&summary, 1) > 0, "devices reconnected");
}

/// Whether `nats-server` can be started. Under CI (`CI=true`, where
/// `.ci/run` installs it) or with `COURIER_REQUIRE_NATS` set, its absence
/// fails the test instead of leaving the run out.
fn nats_server_present() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    let required = std::env::var_os("COURIER_REQUIRE_NATS").is_some()
        || std::env::var("CI").is_ok_and(|ci| ci == "true");
    assert!(
        found || !required,
        "nats-server does not run, and this run requires it (CI or COURIER_REQUIRE_NATS)"
    );
    found
}

#[test]
fn every_nats_scenario_against_a_nats_server() {
    let _serial = serial();
    if !nats_server_present() {
        eprintln!("nats-server is not installed: the run against it is left out");
        return;
    }
    let (table, summary) = run(&["--nats", "one-to-one", "--pairs", "2", "--rate", "0"]);
    assert!(table.contains("NATS core"), "{table}");
    assert!(latency_count(&summary, 0) > 0, "messages were delivered");
    assert_eq!(summary["errors"], 0);
    assert!(summary["server_cpu_us_per_op"].as_f64().unwrap() > 0.0);
    // NATS acknowledges no send: the delivery latency is the only one.
    assert_eq!(summary["latencies"].as_array().unwrap().len(), 1);
    let (_, summary) = run(&["--nats", "one-to-one", "--pairs", "2", "--rate", "2000"]);
    let count = latency_count(&summary, 0);
    assert!((500..=1500).contains(&count), "{count} deliveries");
    // A group is a subject its members subscribe to.
    let (table, summary) = run(&[
        "--nats", "group", "--size", "5", "--groups", "2", "--rate", "0",
    ]);
    assert!(table.contains("NATS core"), "{table}");
    let (each, last) = (latency_count(&summary, 0), latency_count(&summary, 1));
    assert!(last > 0, "messages reached every member");
    assert!(each >= 4 * last, "{each} deliveries for {last} messages");
    assert_eq!(summary["latencies"].as_array().unwrap().len(), 2);
    let (_, summary) = run(&["--nats", "group", "--size", "3", "--rate", "1000"]);
    let last = latency_count(&summary, 1);
    assert!((250..=750).contains(&last), "{last} messages");
    // With JetStream every publish is kept and acknowledged.
    let (table, summary) = run(&[
        "--nats",
        "--jetstream",
        "one-to-one",
        "--pairs",
        "2",
        "--rate",
        "0",
    ]);
    assert!(table.contains("JetStream"), "{table}");
    assert!(latency_count(&summary, 0) > 0, "messages were delivered");
    assert!(
        latency_count(&summary, 1) > 0,
        "publishes were acknowledged"
    );
    assert_eq!(summary["errors"], 0);
    let (_, summary) = run(&[
        "--nats",
        "--jetstream",
        "group",
        "--size",
        "4",
        "--rate",
        "0",
    ]);
    assert!(latency_count(&summary, 1) > 0, "posts reached every member");
    assert!(latency_count(&summary, 2) > 0, "posts were acknowledged");
    assert_eq!(summary["errors"], 0);
    // Idle connections ping with the protocol's PING.
    let (_, summary) = run(&["--nats", "idle", "--connections", "10", "--ping-ms", "100"]);
    assert!(latency_count(&summary, 0) > 0, "pings were answered");
}

#[test]
fn nats_runs_are_refused_clearly_where_they_cannot_run() {
    let _serial = serial();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--nats-server-bin",
                "/nonexistent/nats-server",
                "one-to-one",
            ],
            "apt-get install nats-server",
        ),
        (&["mixed"], "one-to-one, group and idle scenarios only"),
        (&["--websocket", "one-to-one"], "do not go together"),
        (
            &["--jetstream", "idle"],
            "one-to-one and group scenarios only",
        ),
    ];
    for (args, expected) in cases {
        let output = bench(&[&["--spawn", "--nats", "--quiet"], args].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} ran");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Runs `compare` with tiny counts; returns its table.
/// `courier-bench compare` over `rounds` rounds of `servers`, each running
/// two closed-loop 1:1 pairs.
fn compare(rounds: &str, servers: &str) -> String {
    succeed(&[
        "compare",
        "--rounds",
        rounds,
        "--servers",
        servers,
        "--",
        "one-to-one",
        "--pairs",
        "2",
        "--rate",
        "0",
    ])
}

#[test]
fn compare_runs_every_server_each_round_and_sets_them_against_the_first() {
    let _serial = serial();
    let table = compare("2", "courier-none,courier-batch");
    assert!(table.contains("CPU vs courier-none"), "{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|line| line.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row in {table}"))
            .to_owned()
    };
    // The first server against itself, and two runs (rounds) of each.
    assert!(row("courier-none").ends_with("| 1.00 |"), "{table}");
    for name in ["courier-none", "courier-batch"] {
        let runs = row(name)
            .split('[')
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(runs.split(", ").count(), 2, "{table}");
    }
    if nats_server_present() {
        let table = compare("1", "nats,courier-none");
        assert!(
            table.contains("| nats |") && table.contains("| courier-none |"),
            "{table}"
        );
    }
    // It starts the servers itself.
    let output = bench(&["--server", "127.0.0.1:9", "compare", "--", "one-to-one"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("starts each server itself"));
}
