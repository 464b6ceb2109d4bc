//! The server under load: started by the bench (`--spawn`) or already
//! running, and its CPU time and memory read from /proc.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::Common;

/// A server the bench started; stopped (SIGTERM) and its data removed on drop.
pub struct Spawned {
    child: Child,
    dir: PathBuf,
}

impl Spawned {
    /// Takes charge of a started server and the directory it writes in.
    pub fn new(child: Child, dir: PathBuf) -> Self {
        Self { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the server has exited.
    pub fn exited(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `courier serve` (the binary next to this one) on a fresh data
/// directory with cheap password hashing, and returns its address.
pub fn spawn(common: &Common) -> anyhow::Result<(Spawned, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let courier = exe.with_file_name("courier");
    let dir = std::env::temp_dir().join(format!("courier-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("courier.toml");
    let mut text = String::from("listen = \"127.0.0.1:0\"\n");
    for setting in &common.server_settings {
        text.push_str(setting);
        text.push('\n');
    }
    // A load sender is one connection sending for many users' worth: no
    // per-connection limit, unless asked for.
    let limit_set = common
        .server_settings
        .iter()
        .any(|setting| setting.trim_start().starts_with("frames_per_second_max"));
    if !limit_set {
        text.push_str("frames_per_second_max = 0\n");
    }
    // The load sends between users who are not friends: open mode.
    text.push_str("[broker]\nopen_messaging = true\n");
    for setting in &common.broker_settings {
        text.push_str(setting);
        text.push('\n');
    }
    text.push_str("[broker.auth]\nmemory_kib = 8\niterations = 1\nchecks_per_address_max = 0\n");
    std::fs::write(&config, text)?;
    let mut child = Command::new(&courier)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--durability",
            &common.durability,
            "--placement",
            &common.placement,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", courier.display()))?;
    let mut stdout = child.stdout.take().context("the server has no stdout")?;
    let spawned = Spawned::new(child, dir);
    // Read the first line byte by byte: nothing past it is consumed.
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let address = line
        .strip_prefix("listening on ")
        .with_context(|| format!("the server did not start: {line:?}"))?
        .parse()?;
    Ok((spawned, address))
}

/// The CPU time of a process, in ns: every thread's, those that have ended
/// included (a server starts short-lived threads, such as the journal's
/// segment reserver, whose time per-thread counters lose when they end).
/// From `/proc/PID/stat`, in clock ticks (10 ms each, typically): the
/// kernel scales a process's user and system ticks to its exact run time,
/// so the sum is that time to within a tick.
pub fn cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces; fields follow it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user_ticks = fields.get(11)?.parse::<u64>().ok()?;
    let kernel_ticks = fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(CpuTime {
        user_ns: user_ticks * 1_000_000_000 / per_second,
        kernel_ns: kernel_ticks * 1_000_000_000 / per_second,
    })
}

/// A process's CPU time, split into its own code's and the kernel's on its
/// behalf (system calls, and here above all loopback TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    pub user_ns: u64,
    pub kernel_ns: u64,
}

impl CpuTime {
    pub fn total_ns(&self) -> u64 {
        self.user_ns + self.kernel_ns
    }

    /// The time spent since `start`, an earlier reading.
    pub fn since(&self, start: &CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns.saturating_sub(start.user_ns),
            kernel_ns: self.kernel_ns.saturating_sub(start.kernel_ns),
        }
    }

    /// The kernel's part of the total, 0 to 1; none without any time.
    pub fn kernel_share(&self) -> Option<f64> {
        (self.total_ns() > 0).then(|| self.kernel_ns as f64 / self.total_ns() as f64)
    }

    /// A summary's CPU figures for the time `cpu` a server spent over
    /// `seconds` doing `operations`: cores, µs per operation and the
    /// kernel's share, each none without a reading.
    pub fn figures(
        cpu: Option<CpuTime>,
        seconds: f64,
        operations: f64,
    ) -> (Option<f64>, Option<f64>, Option<f64>) {
        let Some(cpu) = cpu else {
            return (None, None, None);
        };
        let ns = cpu.total_ns() as f64;
        (
            Some(ns / 1e9 / seconds),
            Some(ns / 1000.0 / operations.max(1.0)),
            cpu.kernel_share(),
        )
    }
}

/// A process's resident memory, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A process's resident anonymous memory (its heap and stacks, not the
/// file pages it maps, such as courier's journal), in bytes.
pub fn anon_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "RssAnon:")
}

/// A size in kB that /proc/PID/status gives on the line starting `key`,
/// in bytes.
fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::{cpu_time, CpuTime};
    use std::time::{Duration, Instant};

    /// A thread that spins and ends leaves its CPU time in the process's.
    #[test]
    fn cpu_figures_are_cores_time_per_operation_and_the_kernel_share() {
        let cpu = CpuTime {
            user_ns: 1_500_000_000,
            kernel_ns: 500_000_000,
        };
        assert_eq!(
            CpuTime::figures(Some(cpu), 2.0, 1000.0),
            (Some(1.0), Some(2000.0), Some(0.25))
        );
        assert_eq!(CpuTime::figures(None, 2.0, 1000.0), (None, None, None));
    }

    #[test]
    fn cpu_time_counts_threads_that_have_ended() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("readable").total_ns();
        let spun = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut spins = 0u64;
            while cpu_time(pid).expect("readable").total_ns() < before + 100_000_000 {
                assert!(Instant::now() < deadline, "no CPU time counted");
                for _ in 0..100_000 {
                    spins = std::hint::black_box(spins + 1);
                }
            }
        });
        spun.join().unwrap();
        assert!(cpu_time(pid).unwrap().total_ns() >= before + 100_000_000);
    }
}
