//! Where the server's log lines go: stderr, without ever stopping the
//! service over it.
//!
//! A log reader that goes away (`courier serve 2>&1 | tee log`, then the
//! pipe's reader killed) makes every write to stderr fail. A failed line is
//! dropped and counted (`log_lines_dropped` in the stats, and
//! `courier_log_lines_dropped_total`): the server goes on serving. Nothing
//! here prints about the failure, since printing is what failed.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines that could not be written, since the process started.
static LOG_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written (to a closed pipe, a full disk),
/// since the process started.
pub fn log_lines_dropped() -> u64 {
    // Relaxed: a counter for people.
    LOG_LINES_DROPPED.load(Ordering::Relaxed)
}

/// Stderr for log lines: a line that cannot be written is dropped and
/// counted, never an error to the logger (whose own error report would go
/// to the same stderr). Use it as a `tracing_subscriber` writer:
/// `.with_writer(|| LogSink)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if io::stderr().lock().write_all(bytes).is_err() {
            // Relaxed: a counter for people, ordering nothing.
            LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Writes `text` to stdout, ignoring a closed or failed stdout: for the
/// server's own lines (its address), which must not stop it either.
pub fn print_line(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}
