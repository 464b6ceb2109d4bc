//! The `courier` command.

mod chat;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use courier::broker::{DurabilitySetting, PlacementSetting};
use courier::journal;
use courier::net::{self, ServerConfig};

/// courier: the message core of a WeChat-style chat system.
///
/// courier runs chat traffic through an LMAX-disruptor pipeline: the network
/// layer publishes frames into a ring buffer, and staged consumers decode,
/// journal, run the chat logic on one thread and fan out to recipients.
/// Every acknowledged message is in the journal first; a restart rebuilds
/// all state from it.
///
/// Start a server with `courier serve` (data under ./data, port 7420), talk
/// to it with `courier chat`, look inside its journal with
/// `courier journal inspect data/journal`.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server until SIGINT or SIGTERM (then drain, flush the
    /// journal and exit 0).
    ///
    /// Settings come from the defaults, then the TOML file given with
    /// --config, then the flags. `courier serve --print-config` shows the
    /// result as TOML: a starting point for a config file.
    Serve(ServeArgs),
    /// A terminal chat client: register or log in, then type messages.
    Chat(chat::ChatArgs),
    /// Work with a journal directory (the append-only log of every command).
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of settings (see --print-config for every key).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, for TCP clients and WebSocket upgrades alike:
    /// an IP and port, or a host name and port (localhost:7420)
    /// [default: 127.0.0.1:7420].
    #[arg(long, value_parser = resolve_address)]
    listen: Option<SocketAddr>,
    /// Directory for the journal and the SQLite database [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// When acknowledged messages reach the disk: batch (group commit; survives
    /// power loss), interval (flush every flush_interval_ms), none (page
    /// cache; survives a crash of the process only) [default: batch].
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// fused: every stage on one thread; split: decode and journal on one
    /// thread, the flush on another, logic, fan-out and store on a third;
    /// per-stage: a thread each; inline: every stage on the first I/O
    /// thread, right after it reads (no hand-off between threads: the least
    /// CPU per message) [default: inline].
    #[arg(long, value_enum)]
    placement: Option<Placement>,
    /// Network I/O threads [default: 1].
    #[arg(long)]
    io_threads: Option<usize>,
    /// Serve Prometheus metrics (GET /metrics: counters, users online,
    /// per-stage latency histograms) on this address [default: none;
    /// config key metrics_listen].
    #[arg(long, value_parser = resolve_address)]
    metrics_listen: Option<SocketAddr>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log one JSON object per line (for a log collector) instead of text.
    /// The level comes from RUST_LOG (default info).
    #[arg(long)]
    log_json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Durability {
    Batch,
    Interval,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Placement {
    Fused,
    Split,
    PerStage,
    Inline,
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// List a journal's segments (records, sequences, bytes, damage) and
    /// optionally dump its records. Reads only: safe on a live journal.
    Inspect {
        /// The journal directory (a server's is DATA_DIR/journal).
        dir: PathBuf,
        /// Also print records, one line each.
        #[arg(long)]
        dump: bool,
        /// With --dump: start at this sequence.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// With --dump: print at most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// A listen address as typed: `IP:port`, or `host:port` resolved (its
/// first address, so `localhost:7420` listens on 127.0.0.1 where that is
/// what the name gives first).
fn resolve_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|error| format!("not an address (IP:port or host:port): {error}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Chat(args) => chat::chat(args),
        Command::Journal(JournalCommand::Inspect {
            dir,
            dump,
            from,
            limit,
        }) => inspect(dir, dump, from, limit),
    }
}

fn serve_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.broker.data_dir = dir.clone();
    }
    if let Some(durability) = args.durability {
        config.broker.durability = match durability {
            Durability::Batch => DurabilitySetting::Batch,
            Durability::Interval => DurabilitySetting::Interval,
            Durability::None => DurabilitySetting::None,
        };
    }
    if let Some(placement) = args.placement {
        config.broker.placement = match placement {
            Placement::Fused => PlacementSetting::Fused,
            Placement::Split => PlacementSetting::Split,
            Placement::PerStage => PlacementSetting::PerStage,
            Placement::Inline => PlacementSetting::Inline,
        };
    }
    if let Some(threads) = args.io_threads {
        config.io_threads = threads;
    }
    if let Some(address) = args.metrics_listen {
        config.metrics_listen = Some(address);
    }
    if let Err(error) = config.validate() {
        bail!("invalid configuration: {error}");
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = serve_config(&args)?;
    if args.print_config {
        if config.metrics_listen.is_none() {
            // TOML has no "unset": name the optional key in a comment.
            println!("# metrics_listen = \"127.0.0.1:9420\"  # off unless set: Prometheus metrics");
        }
        print!(
            "{}",
            toml::to_string(&config).context("cannot print the config")?
        );
        return Ok(());
    }
    init_logs(args.log_json);
    let mut config = config;
    if let Some(connections_max) = connections_within_open_files(&config) {
        config.connections_max = connections_max;
    }
    let (signal_received, failure) = watch_signals_and_failures()?;
    let server = net::start(config.clone()).context("cannot start the server")?;
    // Scripts and tests read this line for the address (the port may be 0).
    net::print_line(&format!("listening on {}", server.local_addr()));
    let ticks = match config.stats_interval_s {
        0 => crossbeam_channel::never(),
        seconds => crossbeam_channel::tick(Duration::from_secs(seconds)),
    };
    let mut last = (std::time::Instant::now(), server.stats());
    loop {
        crossbeam_channel::select! {
            recv(signal_received) -> signal => {
                tracing::info!(signal = ?signal.ok(), "stopping: draining and flushing the journal");
                break;
            }
            recv(failure) -> _ => {
                tracing::error!("a pipeline stage failed; stopping");
                break;
            }
            recv(ticks) -> _ => {
                let now = (std::time::Instant::now(), server.stats());
                log_stats(&last, &now);
                warn_if_disk_low(&now.1, config.broker.segment_size_mb);
                last = now;
            }
        }
    }
    server
        .shutdown()
        .context("the server stopped with an error")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Logs to stderr, as JSON lines or text (coloured on a terminal),
/// filtered by `RUST_LOG` (default `info`).
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log reader that goes away loses log lines (counted), never the
    // server: see `net::LogSink`.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(|| net::LogSink);
    if json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Signals (SIGINT, SIGTERM) and failed stages, as two channels the
/// serving loop waits on.
fn watch_signals_and_failures() -> anyhow::Result<(
    crossbeam_channel::Receiver<std::ffi::c_int>,
    crossbeam_channel::Receiver<()>,
)> {
    // Register the signals before serving, so none is missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;
    let (signal_sender, signal_received) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("courier-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = signal_sender.send(signal);
            }
        })
        .context("cannot start the signal thread")?;
    // A stage that fails (the journal cannot write: a full disk) panics on
    // its thread and stops the pipeline; this brings the server down with
    // it, with an error, instead of leaving it up and refusing everything.
    // A panic on the metrics thread is the exception: whatever a scraper
    // sends must not stop the server, so that panic loses one scrape (the
    // thread catches it and goes on).
    let (failure_sender, failure) = crossbeam_channel::bounded(1);
    let print_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print_panic(info);
        if std::thread::current().name() == Some(net::METRICS_THREAD) {
            tracing::error!("a scrape of the metrics failed; serving goes on");
        } else {
            let _ = failure_sender.try_send(());
        }
    }));
    Ok((signal_received, failure))
}

/// Descriptors the server needs besides its connections: the listener,
/// the journal's lock and the segment being made ahead, SQLite, the metrics
/// endpoint (one scrape at a time), with room to spare; about 20 are in use
/// with one I/O thread. Each I/O thread adds its own (see
/// [`FILES_PER_IO_THREAD`]). Should they run out anyway, the listener
/// refuses clients at once (see `net::io`).
const FILES_BESIDE_CONNECTIONS: u64 = 64;

/// An I/O thread's own descriptors: its poll and its waker.
const FILES_PER_IO_THREAD: u64 = 2;

/// Descriptors the server needs besides its connections, for `io_threads`.
fn files_beside_connections(io_threads: usize) -> u64 {
    FILES_BESIDE_CONNECTIONS + FILES_PER_IO_THREAD * io_threads as u64
}

/// Raises the soft limit on open files to the hard limit, as a network
/// server must (the usual soft limit, 1,024, would refuse connections long
/// before `connections_max`). Returns the limit now, `None` for unlimited.
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return limit.current;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open files limit");
            limit.current
        }
    }
}

/// Raises the open files limit, and if even the hard limit cannot hold
/// `connections_max` connections on every I/O thread, returns the
/// `connections_max` that fits: the server then refuses the connections
/// beyond it itself (accept, close), where the OS would leave them hanging
/// unaccepted.
fn connections_within_open_files(config: &ServerConfig) -> Option<usize> {
    let limit = raise_open_files_limit()?;
    tracing::info!(open_files_max = limit, "open files limit");
    let beside = files_beside_connections(config.io_threads);
    let wanted = (config.connections_max as u64)
        .saturating_mul(config.io_threads as u64)
        .saturating_add(beside);
    if limit >= wanted {
        return None;
    }
    let fitting = (limit.saturating_sub(beside) / config.io_threads as u64).max(1) as usize;
    if config.connections_max == ServerConfig::default().connections_max {
        // The default is "as many as the machine allows": fitting it to
        // the limit is what it means, not something to warn about.
        tracing::info!(
            open_files_max = limit,
            lowered_to = fitting,
            "connections per I/O thread: as many as the open files limit holds"
        );
    } else {
        tracing::warn!(
            open_files_max = limit,
            connections_max = config.connections_max,
            lowered_to = fitting,
            "the open files limit cannot hold connections_max connections on every I/O \
             thread; serving at most the lower number per thread (raise the hard limit with \
             ulimit -Hn or LimitNOFILE= to serve more)"
        );
    }
    Some(fitting)
}

/// Logs the server's counters now, with rates since the last reading.
fn log_stats(
    (then, before): &(std::time::Instant, net::ServerStats),
    (now, stats): &(std::time::Instant, net::ServerStats),
) {
    let seconds = now.duration_since(*then).as_secs_f64().max(1e-9);
    let rate = |now: u64, then: u64| ((now - then) as f64 / seconds).round() as u64;
    tracing::info!(
        users_registered = stats.users_registered,
        users_online = stats.users_online,
        users_active = stats.users_active,
        devices_online = stats.devices_online,
        messages_held = stats.messages_held,
        inbox_entries = stats.inbox_entries,
        connections_open = stats.connections_open,
        frames_in_per_s = rate(stats.frames_in, before.frames_in),
        bytes_in_per_s = rate(stats.bytes_in, before.bytes_in),
        bytes_out_per_s = rate(stats.bytes_out, before.bytes_out),
        journal_records_per_s = rate(stats.journal_records, before.journal_records),
        journal_records = stats.journal_records,
        connections_accepted = stats.connections_accepted,
        connections_refused = stats.connections_refused,
        closed_slow_reader = stats.closed_slow_reader,
        closed_heartbeat_timeout = stats.closed_heartbeat_timeout,
        closed_bad_framing = stats.closed_bad_framing,
        reads_paused = stats.reads_paused,
        journal_mb = stats.journal_bytes >> 20,
        disk_free_mb = stats.disk_free_bytes >> 20,
        snapshots_taken = stats.snapshots_taken,
        journal_segments_deleted = stats.journal_segments_deleted,
        logins_failed = stats.logins_failed,
        logins_refused =
            stats.logins_refused_account + stats.logins_refused_address + stats.logins_refused_busy,
        log_lines_dropped = stats.log_lines_dropped,
        "stats"
    );
}

/// Segments' worth of free space below which each stats line comes with a
/// warning.
const LOW_DISK_SEGMENTS: u64 = 4;

/// Whether the data directory's file system has room for fewer than
/// [`LOW_DISK_SEGMENTS`] more journal segments. A reading that failed (no
/// journal bytes: the journal always has a segment) says nothing.
fn disk_is_low(stats: &net::ServerStats, segment_size_mb: u64) -> bool {
    stats.journal_bytes != 0 && stats.disk_free_bytes < LOW_DISK_SEGMENTS * (segment_size_mb << 20)
}

/// Warns when the data directory's file system is nearly full: the server
/// stops when the journal cannot make its next segment.
fn warn_if_disk_low(stats: &net::ServerStats, segment_size_mb: u64) {
    if disk_is_low(stats, segment_size_mb) {
        tracing::warn!(
            disk_free_mb = stats.disk_free_bytes >> 20,
            segment_size_mb,
            "the data directory's disk is nearly full: the server stops when the journal cannot make its next segment"
        );
    }
}

fn inspect(dir: PathBuf, dump: bool, from: u64, limit: usize) -> anyhow::Result<()> {
    let segments = journal::inspect(&dir)
        .with_context(|| format!("cannot inspect the journal in {}", dir.display()))?;
    println!(
        "{:>8}  {:>14}  {:>10}  {:>14}  {:>14}  {:>12}  {:>12}  problem",
        "segment", "base seq", "records", "first seq", "last seq", "used bytes", "size bytes"
    );
    let show = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for segment in &segments {
        println!(
            "{:>8}  {:>14}  {:>10}  {:>14}  {:>14}  {:>12}  {:>12}  {}",
            segment.id,
            segment.base_sequence,
            segment.records,
            show(segment.first_sequence),
            show(segment.last_sequence),
            segment.written_bytes,
            segment.size_bytes,
            segment.problem.as_deref().unwrap_or("-"),
        );
    }
    let records: u64 = segments.iter().map(|s| s.records).sum();
    println!("{} segments, {records} records", segments.len());
    let kept = journal::kept_for_reuse(&dir)
        .with_context(|| format!("cannot inspect the journal in {}", dir.display()))?;
    if !kept.is_empty() {
        let bytes: u64 = kept.iter().map(|(_, size)| size).sum();
        println!(
            "{} deleted segment files kept for reuse (*.recycled, {bytes} bytes): the running \
             server writes them again as new segments; the next start deletes those left",
            kept.len()
        );
    }
    if dump {
        println!();
        println!(
            "{:>14}  {:>24}  {:>6}  {:>20}  {:>8}  payload (first 32 bytes)",
            "sequence", "position", "type", "timestamp ns", "bytes"
        );
        journal::dump(&dir, from, limit, |segment, offset, header, payload| {
            let head: String = payload
                .iter()
                .take(32)
                .map(|b| format!("{b:02x}"))
                .collect();
            println!(
                "{:>14}  {:>24}  {:>6}  {:>20}  {:>8}  {head}",
                header.sequence,
                format!("{segment}:{offset}"),
                header.record_type,
                header.timestamp_ns,
                payload.len(),
            );
        })
        .with_context(|| format!("cannot dump the journal in {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_is_low_below_four_segments_of_free_space() {
        let stats = |journal_bytes, disk_free_bytes| net::ServerStats {
            journal_bytes,
            disk_free_bytes,
            ..net::ServerStats::default()
        };
        let segment = 64 << 20;
        assert!(!disk_is_low(&stats(segment, 4 * segment), 64));
        assert!(disk_is_low(&stats(segment, 4 * segment - 1), 64));
        assert!(disk_is_low(&stats(segment, 0), 64), "a full disk is low");
        assert!(!disk_is_low(&stats(0, 0), 64), "no reading says nothing");
    }
}
