//! `courier chat` as a person uses it: two terminal clients against a live
//! server, typing commands on stdin and reading what they print.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// A running `courier chat`: what it prints arrives line by line.
struct Terminal {
    child: Child,
    input: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Terminal {
    /// `courier chat` with `extra` arguments.
    fn start(address: std::net::SocketAddr, user: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
            .args([
                "chat",
                "--server",
                &address.to_string(),
                "--user",
                user,
                "--register",
            ])
            .args(extra)
            .env("COURIER_PASSWORD", "correct horse")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("courier runs");
        let input = child.stdin.take().unwrap();
        let output = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            input,
            lines,
            seen: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.input, "{line}").unwrap();
        self.input.flush().unwrap();
    }

    /// Waits for a printed line containing `text`.
    fn expect(&mut self, text: &str) {
        self.expect_within(text, Duration::from_secs(10));
    }

    /// Waits up to `wait` for a printed line containing `text`.
    fn expect_within(&mut self, text: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {text:?}; printed: {:#?}", self.seen);
    }

    /// A terminal started for `user`, once it says it has logged in.
    fn logged_in(address: std::net::SocketAddr, user: &str, extra: &[&str]) -> Self {
        let mut terminal = Self::start(address, user, extra);
        terminal.expect(&format!("logged in as {user}"));
        terminal
    }

    fn quit(mut self) {
        self.type_line("/quit");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "courier chat exited with {status}");
    }
}

#[test]
fn two_terminals_chat_one_to_one_and_in_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = util::start(dir.path());
    let address = server.local_addr();
    let mut ana = Terminal::logged_in(address, "ana", &[]);
    // bo comes in through a WebSocket, as a browser would.
    let mut bo = Terminal::logged_in(address, "bo", &["--websocket"]);

    ana.type_line("bo: hello bo");
    ana.expect("sent [1]");
    bo.expect("ana → bo: hello bo");

    ana.type_line("/group trip bo");
    ana.expect("group #1 trip: ana, bo");
    bo.expect("[group #1 trip] created, by ana");
    ana.type_line("#1: hello group");
    ana.expect("sent [2]");
    bo.expect("ana → #1: hello group");
    bo.type_line("/groups");
    bo.expect("#1 trip (2 members, owner ana)");
    bo.type_line("/leave 1");
    bo.expect("left #1");
    ana.expect("[group #1 trip] bo left, by bo");
    ana.type_line("/members 1");
    ana.expect("#1 trip (owner ana): ana");
    // A mistake is reported and the terminal goes on.
    bo.type_line("#1: am I still here?");
    bo.expect("you are not a member of group 1");
    bo.type_line("/sync");
    bo.expect("ana → #1: hello group");
    // Slips at the keyboard send nothing and say what went wrong.
    bo.type_line("ana:   ");
    bo.expect("? nothing to send");
    bo.type_line("/fiend ana");
    bo.expect("? no command /fiend: /help lists them");
    bo.type_line("/invite 1");
    bo.expect("? /invite takes other words: /help shows them");
    bo.type_line("/help");
    bo.expect("/help shows this");
    bo.type_line("ana: still here");
    bo.expect("sent [");
    ana.expect("bo → ana: still here");
    ana.quit();
    bo.quit();
    server.shutdown().unwrap();
}

#[test]
fn a_terminal_reconnects_after_the_server_restarts_and_shows_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = util::start(dir.path());
    let address = server.local_addr();
    let mut ana = Terminal::logged_in(address, "ana", &[]);
    let mut bo = Terminal::logged_in(address, "bo", &[]);
    ana.type_line("bo: before the restart");
    bo.expect("ana → bo: before the restart");
    // What a terminal shows it marks read; wait for the mark to land.
    bo.type_line("/read");
    bo.expect("all shown marked read; 0 unread in all");

    server.shutdown().unwrap();
    ana.expect("connection lost");
    bo.expect("connection lost");
    bo.type_line("ana: into the void");
    bo.expect("not connected: that line was not sent");
    bo.type_line("/quit");
    assert!(bo.child.wait().unwrap().success());

    ana.expect("still not connected: cannot reach");

    // The same address and data directory: the journal brings back users,
    // and ana's terminal logs in again on its own.
    let mut config = util::config(dir.path());
    config.listen = address;
    let server = courier::net::start(config).expect("the server starts again");
    ana.expect("reconnected: 0 messages since [1]");
    // bo, offline, misses nothing: a message sent now is there at the next
    // reconnection's sync, and live after it.
    let mut bo = Terminal::start(address, "bo", &[]);
    bo.expect("logged in as bo on terminal: 1 message, 0 unread");
    ana.type_line("bo: after the restart");
    ana.expect("sent [2]");
    bo.expect("ana → bo: after the restart");
    ana.quit();
    bo.quit();
    server.shutdown().unwrap();
}

/// A `courier serve` process (cheap password hashing, anyone may message
/// anyone) on a free port, for what only a process can show.
struct ServerProcess {
    child: Child,
    address: std::net::SocketAddr,
}

impl ServerProcess {
    fn start(dir: &std::path::Path) -> Self {
        let config = dir.join("courier.toml");
        std::fs::write(
            &config,
            "[broker]\nopen_messaging = true\n[broker.auth]\nmemory_kib = 8\niterations = 1\n",
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = util::listening_address(&mut child);
        Self { child, address }
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line typed while the server cannot answer is kept, shown as not
/// acknowledged, and sent again after the reconnection under its own id:
/// the server, which had it all along, stores it once.
#[test]
fn a_line_typed_as_the_server_stalls_is_sent_again_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut ana = Terminal::logged_in(server.address, "ana", &[]);
    let mut bo = Terminal::logged_in(server.address, "bo", &[]);
    ana.type_line("bo: first");
    ana.expect("sent [1]");
    bo.expect("ana → bo: first");

    server.signal("-STOP");
    ana.type_line("bo: typed as it stalled");
    // The client's own reply timeout runs first: room for a machine busy
    // with the rest of the suite.
    ana.expect_within("connection lost (no reply within", Duration::from_secs(30));
    ana.expect("1 message not acknowledged yet");
    server.signal("-CONT");
    ana.expect("sent [2] (again, after reconnecting)");
    bo.expect("ana → bo: typed as it stalled");
    bo.type_line("/sync 0");
    bo.expect("[1]");
    bo.expect("[2]");
    bo.type_line("/sync 2");
    bo.expect("nothing new after [2]");
    let copies = bo
        .seen
        .iter()
        .filter(|line| line.contains("typed as it stalled"))
        .count();
    assert_eq!(copies, 2, "once live, once in the sync: {:#?}", bo.seen);
    ana.quit();
    bo.quit();
}

/// What arrived while a user was away is shown at login and marked read,
/// so the next login has nothing unread; contact requests say what to type.
#[test]
fn a_login_shows_what_is_unread_and_marks_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = util::start(dir.path());
    let address = server.local_addr();
    let bo = Terminal::logged_in(address, "bo", &[]);
    bo.quit();
    let mut ana = Terminal::logged_in(address, "ana", &[]);
    ana.type_line("bo: one");
    ana.expect("sent [1]");
    ana.type_line("bo: two");
    ana.expect("sent [2]");
    ana.type_line("/friend bo");
    ana.expect("asked bo");

    let mut bo = Terminal::start(address, "bo", &[]);
    bo.expect("2 messages, 2 unread");
    bo.expect("unread since [0]");
    bo.expect("ana → bo: one");
    bo.expect("ana → bo: two");
    bo.type_line("/contacts");
    bo.expect("ana asks to be your friend: /accept ana or /decline ana");
    bo.type_line("/decline ana");
    bo.expect("declined ana");
    bo.type_line("/read");
    bo.expect("all shown marked read; 0 unread in all");
    bo.quit();
    let bo = Terminal::start(address, "bo", &[]);
    let mut bo = bo;
    bo.expect("2 messages, 0 unread");
    bo.quit();
    ana.quit();
    server.shutdown().unwrap();
}

/// Pointed at something that is not courier (a NATS server greets with
/// text), `courier chat` says so instead of quoting a frame length.
#[test]
fn chat_at_a_port_that_is_not_courier_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = stream.write_all(b"INFO {\"server_id\":\"not courier\"}\r\n");
        std::thread::sleep(Duration::from_secs(2));
    });
    let output = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["chat", "--server", &address.to_string(), "--user", "ana"])
        .env("COURIER_PASSWORD", "pw")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("does not speak the courier protocol"),
        "{error}"
    );
    assert!(!error.contains("frame length"), "{error}");
}
