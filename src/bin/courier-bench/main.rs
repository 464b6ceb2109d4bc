//! `courier-bench`: the load generator and benchmark report.
//!
//! It drives a courier server with real TCP connections (thousands of them
//! if asked), registers and logs them in, runs a named scenario and reports
//! throughput, latency percentiles (hdrhistogram, corrected for coordinated
//! omission in the open loop) and the server's CPU and memory when it runs
//! on this machine. With `--nats` it drives a NATS server with the same
//! load instead (`nats.rs`), so the two can be compared in one sitting.

mod compare;
mod disk;
mod group;
mod idle;
mod load;
mod mixed;
mod nats;
mod one_to_one;
mod server;
mod storm;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use courier::bench::{percentile_svg, write_percentiles, Latencies, Summary};
use courier::client::Client;
use courier::codec::proto::DeliveryMode;

/// Load generator for courier.
///
/// Every scenario connects real TCP clients to a server (one started here
/// with --spawn, or one at --server; courier, or with --nats a NATS server
/// for comparison), then prints a summary table: the rate,
/// latency percentiles, errors, and with --spawn or --server-pid the
/// server's CPU time (and the kernel's part of it) and memory. --out DIR
/// also writes summary.json, an HdrHistogram percentile file per latency
/// (.hgrm) and latency.svg.
#[derive(Debug, Parser)]
#[command(name = "courier-bench", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Option<Scenario>,
}

/// Settings every scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Start `courier serve` (the binary next to this one) on a fresh data
    /// directory, with cheap password hashing, and stop it afterwards.
    #[arg(long, global = true, conflicts_with = "server")]
    pub spawn: bool,
    /// The address of a running server.
    #[arg(long, global = true)]
    pub server: Option<SocketAddr>,
    /// The pid of a running server on this machine, to report its CPU and memory.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Connect every load connection through a WebSocket upgrade, as
    /// browsers do, instead of plain TCP.
    #[arg(long, global = true)]
    pub websocket: bool,
    /// Run the load against a NATS server instead (core NATS: nothing
    /// persisted, no send acknowledgements), to compare courier with it on
    /// the same machine; one-to-one, group and idle only. With --spawn it
    /// starts --nats-server-bin on a free loopback port; with --server it
    /// connects to a running one.
    #[arg(long, global = true)]
    pub nats: bool,
    /// With --nats: keep every message in a JetStream stream (in files) and
    /// have each sender wait for JetStream's acknowledgement of it, as
    /// courier's journal and SendAck do (a --server must run with -js);
    /// one-to-one and group only.
    #[arg(long, global = true, requires = "nats")]
    pub jetstream: bool,
    /// With --nats --spawn: the NATS server to start (Debian: `apt-get
    /// install nats-server`).
    #[arg(long, global = true, default_value = "nats-server")]
    pub nats_server_bin: PathBuf,
    /// With --spawn: the durability (batch, interval, none).
    #[arg(long, global = true, default_value = "batch")]
    pub durability: String,
    /// With --spawn: stage placement (fused, split, per-stage, inline).
    #[arg(long, global = true, default_value = "inline")]
    pub placement: String,
    /// With --spawn: a server setting for its config file, TOML `key=value`
    /// (`heartbeat_timeout_ms=5000`); repeatable.
    #[arg(long = "server-setting", value_name = "KEY=VALUE", global = true)]
    pub server_settings: Vec<String>,
    /// With --spawn: a broker setting, TOML `key=value` (`wait_yield_us=50`);
    /// repeatable.
    #[arg(long = "broker-setting", value_name = "KEY=VALUE", global = true)]
    pub broker_settings: Vec<String>,
    /// Measured seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured seconds before.
    #[arg(long, global = true, default_value_t = 2.0)]
    pub warmup: f64,
    /// Load threads (connections are split among them).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Write summary.json, the .hgrm percentile files and latency.svg here.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// No progress line.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// A prefix for user names, so runs against one server do not collide
    /// (default: from the clock).
    #[arg(long, global = true)]
    pub prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// 1:1 chat between pairs of users (the default scenario).
    OneToOne(one_to_one::Args),
    /// Group chat: owners post to groups of --size members, all online;
    /// reports member deliveries/s and latency to the last member (one
    /// load thread, whatever --threads says).
    Group(group::Args),
    /// A connection storm: connect, register and log in as fast as possible.
    Storm(storm::Args),
    /// Idle connections: memory per connection and CPU while they only
    /// send heartbeats.
    Idle(idle::Args),
    /// A WeChat-like mix: mostly 1:1 messages between random users, some
    /// posts to groups, while devices drop, reconnect with their token and
    /// sync what they missed (one load thread, whatever --threads says).
    Mixed(mixed::Args),
    /// Run a scenario in interleaved rounds against several servers, each
    /// started afresh, and print a Markdown table of medians with each
    /// server's CPU per operation against the first's in the same round:
    /// `courier-bench compare --servers nats,courier-none -- one-to-one
    /// --rate 0`. --seconds, --warmup, --threads and the courier settings
    /// apply to every run; --out DIR keeps each run's files.
    Compare(compare::Args),
    /// The disk's floor, with no server: how long one small write takes to
    /// become durable (pwrite, then fdatasync) in a file of --dir, as p50,
    /// p99 and p99.9. A group commit cannot be faster.
    Disk(disk::Args),
}

/// The server under load.
pub struct Target {
    pub address: SocketAddr,
    /// Connect through WebSocket upgrades (`--websocket`).
    pub websocket: bool,
    pub pid: Option<u32>,
    /// A NATS server, not courier (`--nats`).
    pub nats: bool,
    /// With `nats`: publishes go to a JetStream stream and are acknowledged.
    pub jetstream: bool,
    _spawned: Option<server::Spawned>,
}

impl Target {
    fn open(common: &Common) -> anyhow::Result<Self> {
        match (common.spawn, common.server) {
            (true, _) => {
                let (spawned, address) = if common.nats {
                    nats::spawn(common)?
                } else {
                    server::spawn(common)?
                };
                Ok(Self {
                    address,
                    websocket: common.websocket,
                    pid: Some(spawned.pid()),
                    nats: common.nats,
                    jetstream: common.jetstream,
                    _spawned: Some(spawned),
                })
            }
            (false, Some(address)) => Ok(Self {
                address,
                websocket: common.websocket,
                pid: common.server_pid,
                nats: common.nats,
                jetstream: common.jetstream,
                _spawned: None,
            }),
            (false, None) => bail!("give --spawn, or --server ADDRESS for a running server"),
        }
    }

    /// Where and how the load connects.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            websocket: self.websocket,
        }
    }

    pub fn cpu_time(&self) -> Option<server::CpuTime> {
        self.pid.and_then(server::cpu_time)
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        self.pid.and_then(server::rss_bytes)
    }

    pub fn anon_bytes(&self) -> Option<u64> {
        self.pid.and_then(server::anon_bytes)
    }
}

/// A user name unique to this run.
/// `count` and `word`, with an s where it is not 1 ("1 load thread").
pub fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

pub fn user_name(common: &Common, role: &str, index: usize) -> String {
    // Read off the clock once: a run's users share one prefix, even when
    // making them takes past the turn of a second.
    static FROM_THE_CLOCK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = common.prefix.as_deref().unwrap_or_else(|| {
        FROM_THE_CLOCK.get_or_init(|| {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() % 100_000);
            format!("b{stamp}p{}", std::process::id() % 100_000)
        })
    });
    format!("{prefix}{role}{index}")
}

/// The password every load user has.
pub const PASSWORD: &str = "bench-password";

/// Where the load connects, and whether through WebSocket upgrades.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub websocket: bool,
}

impl Endpoint {
    /// A new connection that has said hello.
    pub fn connect(self) -> anyhow::Result<Client> {
        let client = if self.websocket {
            Client::connect_websocket(self.address)
        } else {
            Client::connect(self.address)
        };
        client.with_context(|| format!("cannot connect to {}", self.address))
    }
}

/// Registers `user` and logs it in on a new connection.
pub fn register_and_login(
    endpoint: Endpoint,
    user: &str,
    mode: DeliveryMode,
) -> anyhow::Result<(Client, String)> {
    let mut client = endpoint.connect()?;
    client
        .register(user, PASSWORD)
        .with_context(|| format!("cannot register {user}"))?;
    let ok = client
        .login(user, PASSWORD, "bench", mode)
        .with_context(|| format!("cannot log {user} in"))?;
    Ok((client, ok.token))
}

/// Measures the server over the measured window: call `start` at the end of
/// the warm-up and `finish` at the end.
pub struct Meter {
    cpu_start: Option<server::CpuTime>,
    started: Instant,
}

impl Meter {
    pub fn start(target: &Target) -> Self {
        Self {
            cpu_start: target.cpu_time(),
            started: Instant::now(),
        }
    }

    /// (seconds, server CPU time) since `start`.
    pub fn finish(&self, target: &Target) -> (f64, Option<server::CpuTime>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = match (self.cpu_start, target.cpu_time()) {
            (Some(start), Some(end)) => Some(end.since(&start)),
            _ => None,
        };
        (seconds, cpu)
    }
}

/// A single-threaded run's clock: the warm-up, then the measured seconds,
/// with the server metered over the latter.
pub struct Window {
    pub epoch: Instant,
    warmup: Duration,
    end: Duration,
    meter: Option<Meter>,
}

impl Window {
    pub fn new(common: &Common) -> Self {
        let warmup = Duration::from_secs_f64(common.warmup);
        Self {
            epoch: Instant::now(),
            warmup,
            end: warmup + Duration::from_secs_f64(common.seconds),
            meter: None,
        }
    }

    /// Where the run is: `None` once it is over; `Some(true)` once, when
    /// measuring starts (reset the tallies then); `Some(false)` otherwise.
    pub fn tick(&mut self, target: &Target) -> Option<bool> {
        let now = self.epoch.elapsed();
        if now >= self.end {
            return None;
        }
        if self.meter.is_none() && now >= self.warmup {
            self.meter = Some(Meter::start(target));
            return Some(true);
        }
        Some(false)
    }

    /// (measured seconds, server CPU ns over them).
    pub fn finish(self, target: &Target) -> anyhow::Result<(f64, Option<server::CpuTime>)> {
        let meter = self.meter.context("the run ended before the warm-up did")?;
        Ok(meter.finish(target))
    }
}

/// Prints `done` per second on one line of stderr until `stop` is set.
pub fn progress(
    label: &'static str,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
    quiet: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = 0;
        while stop.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_secs(1));
            let now = done.load(Ordering::Relaxed);
            if !quiet {
                eprint!(
                    "\r{:>6.0} s  {label}: {:>10}  ({:>8}/s)   ",
                    started.elapsed().as_secs_f64(),
                    now,
                    now - last
                );
            }
            last = now;
        }
        if !quiet {
            eprintln!();
        }
    })
}

/// Prints the summary and writes the files of --out.
fn publish(
    common: &Common,
    summary: &Summary,
    latencies: &[(&str, &Latencies)],
) -> anyhow::Result<()> {
    print!("{}", summary.table());
    let Some(dir) = &common.out else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary)?,
    )?;
    for (name, latencies) in latencies {
        let mut file = std::fs::File::create(dir.join(format!("{name}.hgrm")))?;
        write_percentiles(latencies.histogram(), &mut file)?;
    }
    let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = latencies
        .iter()
        .filter(|(_, l)| l.count() > 0)
        .map(|(name, l)| (*name, l.histogram()))
        .collect();
    let title = format!("courier {}: {}", summary.scenario, summary.shape);
    std::fs::write(dir.join("latency.svg"), percentile_svg(&title, &series))?;
    println!("  wrote {}", dir.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let common = &cli.common;
    if common.threads == 0 {
        bail!("--threads must be positive");
    }
    let scenario = cli
        .scenario
        .unwrap_or_else(|| Scenario::OneToOne(one_to_one::Args::default()));
    if let Scenario::Compare(args) = &scenario {
        return compare::run(common, args);
    }
    if let Scenario::Disk(args) = &scenario {
        return disk::run(args);
    }
    if common.nats {
        if !matches!(
            scenario,
            Scenario::OneToOne(_) | Scenario::Group(_) | Scenario::Idle(_)
        ) {
            bail!("--nats runs the one-to-one, group and idle scenarios only");
        }
        if common.websocket {
            bail!("--nats and --websocket do not go together");
        }
        if common.jetstream && !matches!(scenario, Scenario::OneToOne(_) | Scenario::Group(_)) {
            bail!("--jetstream runs the one-to-one and group scenarios only");
        }
    }
    let target = Target::open(common)?;
    if target.jetstream {
        nats::create_stream(target.address)?;
    }
    let (summary, latencies) = match scenario {
        Scenario::OneToOne(args) => one_to_one::run(common, &args, &target)?,
        Scenario::Group(args) => group::run(common, &args, &target)?,
        Scenario::Storm(args) => storm::run(common, &args, &target)?,
        Scenario::Idle(args) => idle::run(common, &args, &target)?,
        Scenario::Mixed(args) => mixed::run(common, &args, &target)?,
        Scenario::Compare(_) | Scenario::Disk(_) => unreachable!("returned above"),
    };
    let named: Vec<(&str, &Latencies)> = latencies.iter().map(|(n, l)| (n.as_str(), l)).collect();
    publish(common, &summary, &named)
}
