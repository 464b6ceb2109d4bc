//! The `courier serve` command line: `--print-config` prints a config file
//! that `--config` reads back to the same settings, optional keys included;
//! `--log-json` logs JSON; `cargo run -- serve` finds it.

use std::process::Command;

fn print_config(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--print-config"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_printed_config_reads_back_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = print_config(&[]);
    // The optional metrics address is named, though unset.
    assert!(defaults.contains("# metrics_listen = "), "{defaults}");
    assert!(
        defaults.contains("frames_per_second_max = 10000"),
        "{defaults}"
    );
    assert!(defaults.contains("websocket = true"), "{defaults}");
    let file = dir.path().join("courier.toml");
    std::fs::write(&file, &defaults).unwrap();
    assert_eq!(
        print_config(&["--config", file.to_str().unwrap()]),
        defaults
    );

    let with_metrics = print_config(&["--metrics-listen", "127.0.0.1:9420"]);
    assert!(
        with_metrics.contains("\nmetrics_listen = \"127.0.0.1:9420\"\n"),
        "{with_metrics}"
    );
    assert!(!with_metrics.contains("# metrics_listen"));
    std::fs::write(&file, &with_metrics).unwrap();
    assert_eq!(
        print_config(&["--config", file.to_str().unwrap()]),
        with_metrics
    );
}

#[test]
fn with_log_json_every_log_line_is_a_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = courier_serve();
    command.arg("--log-json").env("RUST_LOG", "info");
    let (child, _) = spawn_serve(command, dir.path());
    // SIGTERM: the server drains, logs its stop and exits 0.
    let logs = stop(child);
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("courier is serving")),
        "{logs}"
    );
}

/// The README's first command is `cargo run --release -- serve`: with two
/// binaries in the package, `cargo run` must know which one is meant.
#[test]
fn cargo_run_runs_the_server() {
    let output = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--", "serve", "--help"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("--print-config"), "{stdout}");
}

/// `courier serve`, to add arguments to.
fn courier_serve() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
    command.arg("serve");
    command
}

/// Spawns `command` (a `courier serve`, perhaps behind a shell) listening on
/// a free port with its data under `dir`; returns the child and the address
/// it printed.
fn spawn_serve(mut command: Command, dir: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (child, address)
}

/// Starts `courier serve` under the shell's `ulimit` arguments.
fn serve_under_ulimit(limit: &[&str], dir: &std::path::Path) -> (std::process::Child, String) {
    let script = format!("ulimit {} && exec \"$0\" \"$@\"", limit.join(" "));
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .arg(env!("CARGO_BIN_EXE_courier"))
        .arg("serve");
    spawn_serve(command, dir)
}

/// Stops a server with SIGTERM; checks that it exits 0 and returns its logs.
fn stop(child: std::process::Child) -> String {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

/// A server started under the common soft limit of open files (here 64)
/// raises it to the hard limit, so it serves many more connections than
/// the soft limit would let it accept.
#[test]
fn serve_raises_a_low_open_files_limit() {
    const CONNECTIONS: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = serve_under_ulimit(&["-Sn", "64"], dir.path());
    let mut clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| courier::client::Client::connect(address.as_str()).unwrap())
        .collect();
    for (nonce, client) in clients.iter_mut().enumerate() {
        client
            .ping(nonce as u64)
            .unwrap_or_else(|error| panic!("connection {nonce}: {error}"));
    }
    drop(clients);
    let logs = stop(child);
    assert!(logs.contains("open files limit"), "{logs}");
}

/// Under a hard limit too low for `connections_max`, the server lowers its
/// own limit to fit: connections past it are refused at once (closed), not
/// left hanging in the OS's accept queue.
#[test]
fn serve_refuses_what_the_open_files_limit_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    // 100 files: 64 kept for the server's own use and 2 for its I/O
    // thread, 34 for connections.
    let (child, address) = serve_under_ulimit(&["-n", "100"], dir.path());
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        let started = std::time::Instant::now();
        match courier::client::Client::connect(address.as_str()) {
            Ok(client) => served.push(client),
            Err(_) => {
                refused += 1;
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(2),
                    "a refusal is prompt"
                );
            }
        }
    }
    assert_eq!((served.len(), refused), (34, 16));
    drop(served);
    let logs = stop(child);
    assert!(logs.contains("lowered_to=34"), "{logs}");
    // The default connections_max means "what the limit holds": no warning.
    assert!(!logs.contains("cannot hold connections_max"), "{logs}");
}

/// A connections_max set in the config that the open files limit cannot
/// hold is lowered too, with a warning that says how to serve more.
#[test]
fn serve_warns_when_a_configured_connections_max_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(&config, "connections_max = 1000\n").unwrap();
    let script = "ulimit -n 100 && exec \"$0\" \"$@\"";
    let mut command = Command::new("sh");
    command
        .args(["-c", script])
        .arg(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--config"])
        .arg(&config);
    let (child, _) = spawn_serve(command, dir.path());
    let logs = stop(child);
    assert!(logs.contains("cannot hold connections_max"), "{logs}");
    assert!(
        logs.contains("connections_max=1000 lowered_to=34"),
        "{logs}"
    );
}

/// A server out of descriptors for reasons other than its connections
/// (here, its open-files limit lowered under it) refuses new clients at
/// once, closing them, instead of leaving them unanswered in the accept
/// queue; its metrics endpoint waits it out; once descriptors free up, both
/// serve again.
#[cfg(target_os = "linux")]
#[test]
fn serve_out_of_descriptors_refuses_clients_at_once_and_recovers() {
    use rustix::process::{prlimit, Pid, Resource, Rlimit};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 200 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_courier"))
        .arg("serve")
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
    let (child, address) = spawn_serve(command, dir.path());
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let set_soft_limit = |soft: u64| {
        prlimit(
            Some(pid),
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: Some(200),
            },
        )
        .unwrap();
    };
    // It sized its connections for 200 files; now it has 40.
    set_soft_limit(40);

    let mut served = Vec::new();
    let refused_after = loop {
        assert!(served.len() < 40, "no client refused");
        let started = Instant::now();
        match courier::client::Client::connect(address.as_str()) {
            Ok(client) => served.push(client),
            Err(_) => break started.elapsed(),
        }
    };
    assert!(
        refused_after < Duration::from_secs(2),
        "a refusal is prompt: {refused_after:?}"
    );
    // A scrape now waits in the metrics listener's queue.
    let scrape = move || -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    };
    let waiting = std::thread::spawn(scrape);
    std::thread::sleep(Duration::from_millis(300));

    set_soft_limit(200);
    let response = waiting
        .join()
        .unwrap()
        .expect("the waiting scrape is answered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("courier_connections_refused_total 1"),
        "{response}"
    );
    let mut client = courier::client::Client::connect(address.as_str()).unwrap();
    client.ping(1).unwrap();
    drop((client, served));
    let logs = stop(child);
    assert!(logs.contains("out of file descriptors"), "{logs}");
    assert!(logs.contains("refused=1"), "{logs}");
}

/// A second server on a data directory in use refuses to start, naming the
/// process that has it, instead of appending to the same journal.
#[test]
fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (first, address) = spawn_serve(courier_serve(), dir.path());
    let second = courier_serve()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let error = String::from_utf8_lossy(&second.stderr);
    let in_use = format!("is in use by process {}", first.id());
    assert_eq!(error.matches(&in_use).count(), 1, "said once: {error}");
    // The first goes on serving.
    courier::client::Client::connect(address.as_str())
        .unwrap()
        .ping(1)
        .unwrap();
    stop(first);
}

/// A log reader that goes away (a `tee` killed first on Ctrl-C, a fifo's
/// reader killed) costs log lines, never the server: it goes on serving
/// with stats and connection lines failing to print, and a SIGTERM still
/// stops it cleanly.
#[test]
fn a_vanished_log_reader_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("courier.toml");
    std::fs::write(&config, "stats_interval_s = 1\n").unwrap();
    let mut command = courier_serve();
    command.arg("--config").arg(&config).env("RUST_LOG", "info");
    let (mut child, address) = spawn_serve(command, dir.path());
    // Both of its output pipes lose their readers.
    drop(child.stderr.take());
    // Connections log as they close; the stats line every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let mut client = courier::client::Client::connect(address.as_str()).unwrap();
        client.ping(1).unwrap();
        drop(client);
        assert!(child.try_wait().unwrap().is_none(), "the server died");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop(child);
}

/// Mistakes at the command line get one clear sentence each: a data
/// directory that is a file, and a listen address given by host name is
/// resolved rather than refused.
#[test]
fn serve_explains_a_file_for_a_data_directory_and_resolves_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let output = courier_serve()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("a-file: not a directory"), "{error}");
    assert!(!error.contains("File exists"), "{error}");

    let mut command = courier_serve();
    command.args(["--listen", "localhost:0"]);
    let mut child = command
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    stop(child);
}
