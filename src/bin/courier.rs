//! The `courier` command.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use courier::broker::{DurabilitySetting, PlacementSetting};
use courier::client::{Client, ClientError};
use courier::codec::proto::{DeliveryMode, ErrorCode};
use courier::codec::Message;
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
    Chat(ChatArgs),
    /// Work with a journal directory (the append-only log of every command).
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of settings (see --print-config for every key).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, for TCP clients and WebSocket upgrades alike
    /// [default: 127.0.0.1:7420].
    #[arg(long)]
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
    #[arg(long)]
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

#[derive(Debug, clap::Args)]
struct ChatArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:7420")]
    server: String,
    /// Your user name.
    #[arg(long)]
    user: String,
    /// Your password (or set COURIER_PASSWORD).
    #[arg(long, env = "COURIER_PASSWORD", hide_env_values = true)]
    password: String,
    /// This device's id; each device syncs on its own.
    #[arg(long, default_value = "terminal")]
    device: String,
    /// Create the account first.
    #[arg(long)]
    register: bool,
    /// Receive only notices (head sequence, unread count), not messages.
    #[arg(long)]
    notices: bool,
    /// Connect through a WebSocket upgrade, as a browser does.
    #[arg(long)]
    websocket: bool,
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Chat(args) => chat(args),
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log reader that goes away loses log lines (counted), never the
    // server: see `net::LogSink`.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(|| net::LogSink);
    if args.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let mut config = config;
    if let Some(connections_max) = connections_within_open_files(&config) {
        config.connections_max = connections_max;
    }
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
    tracing::warn!(
        open_files_max = limit,
        connections_max = config.connections_max,
        lowered_to = fitting,
        "the open files limit cannot hold connections_max connections on every I/O thread; \
         serving at most the lower number per thread (raise the hard limit with ulimit -Hn \
         or LimitNOFILE= to serve more)"
    );
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

fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let mode = if args.notices {
        DeliveryMode::PushNotice
    } else {
        DeliveryMode::PushMessage
    };
    let (mut client, mut heartbeat, head) = chat_session(&args, mode, args.register)?;
    println!("{CHAT_HELP}");
    let (lines_sender, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    // The newest inbox sequence shown (or there at login): after a
    // reconnection, what came since is pulled with Sync.
    let mut seen = head;
    let mut last_ping = std::time::Instant::now();
    loop {
        let lost = match chat_turn(
            &mut client,
            &lines,
            &mut next_id,
            &mut seen,
            &mut last_ping,
            heartbeat,
        ) {
            Ok(Turn::Go) => continue,
            Ok(Turn::Quit) => return Ok(()),
            Err(lost) => lost,
        };
        println!("! connection lost ({lost}); reconnecting, /quit to leave");
        let mut last_failure = String::new();
        loop {
            match lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line.trim() == "/quit" => return Ok(()),
                Ok(_) => println!("! not connected: nothing sent"),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            match chat_session(&args, mode, false) {
                Ok((again, interval, _)) => {
                    (client, heartbeat) = (again, interval);
                    break;
                }
                Err(error) => {
                    // Said once, not every second while it lasts.
                    let why = format!("{error:#}");
                    if why != last_failure {
                        println!("! still not connected: {why}");
                        last_failure = why;
                    }
                }
            }
        }
        last_ping = std::time::Instant::now();
        let missed = client
            .sync_all(seen)
            .context("cannot sync after reconnecting")?;
        println!("reconnected: {} new since #{seen}", missed.len());
        for message in missed {
            seen = seen.max(message.inbox_sequence);
            print_message(&Message::Deliver(message));
        }
    }
}

/// A `courier chat` connection: connected, greeted, registered if asked,
/// logged in; with the heartbeat interval the server asked for and the
/// inbox's head sequence.
fn chat_session(
    args: &ChatArgs,
    mode: DeliveryMode,
    register: bool,
) -> anyhow::Result<(Client, Duration, u64)> {
    let connected = if args.websocket {
        Client::connect_websocket_raw(args.server.as_str())
    } else {
        Client::connect_raw(args.server.as_str())
    };
    let mut client = connected.with_context(|| format!("cannot reach {}", args.server))?;
    let hello = client.hello().context("the server refused the hello")?;
    let heartbeat = Duration::from_millis(u64::from(hello.heartbeat_interval_ms.max(1000)));
    if register {
        match client.register(&args.user, &args.password) {
            Ok(id) => println!("registered {} as user {id}", args.user),
            Err(error) if error.code() == Some(ErrorCode::UserExists) => {
                println!("{} exists already; logging in", args.user)
            }
            Err(error) => return Err(error).context("cannot register"),
        }
    }
    let ok = client
        .login(&args.user, &args.password, &args.device, mode)
        .context("cannot log in")?;
    println!(
        "logged in as {} on {}: {} messages, {} unread",
        args.user, args.device, ok.head_sequence, ok.unread_count
    );
    Ok((client, heartbeat, ok.head_sequence))
}

/// What the chat loop does after a turn.
enum Turn {
    Go,
    Quit,
}

/// One turn of `courier chat`: a typed line if there is one, a heartbeat
/// when due, and what the server pushed. An error is a lost connection.
fn chat_turn(
    client: &mut Client,
    lines: &crossbeam_channel::Receiver<String>,
    next_id: &mut u64,
    seen: &mut u64,
    last_ping: &mut std::time::Instant,
    heartbeat: Duration,
) -> Result<Turn, ClientError> {
    match lines.recv_timeout(Duration::from_millis(50)) {
        Ok(line) => {
            let line = line.trim();
            if line == "/quit" {
                return Ok(Turn::Quit);
            }
            match chat_line(client, line, next_id, seen) {
                Ok(()) => {}
                Err(error @ (ClientError::Io(_) | ClientError::Closed)) => return Err(error),
                Err(error) => println!("! {error}"),
            }
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(Turn::Quit),
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
    }
    if last_ping.elapsed() >= heartbeat {
        // Tells the server the link is alive while the user is quiet.
        client.ping(0)?;
        *last_ping = std::time::Instant::now();
    }
    while let Some(push) = client.next_push(Duration::ZERO)? {
        if let Message::Deliver(deliver) = &push {
            *seen = (*seen).max(deliver.inbox_sequence);
        }
        print_message(&push);
    }
    Ok(Turn::Go)
}

/// What `courier chat` understands, printed at login and by `/help`.
const CHAT_HELP: &str =
    "type `name: text` to send, `/sync [after]` to pull, `/friend name` to ask, \
     `/accept name` to accept, `/contacts` to list, `/help` for this, `/quit` to leave;\n\
     groups: `/group name member...` creates one, `#id: text` posts, `/groups` lists, \
     `/invite id name`, `/join id`, `/leave id`, `/members id`";

fn chat_line(
    client: &mut Client,
    line: &str,
    next_id: &mut u64,
    seen: &mut u64,
) -> Result<(), ClientError> {
    if line == "/help" {
        println!("{CHAT_HELP}");
        return Ok(());
    }
    let contact_request = |user: &str| {
        Message::ContactRequest(courier::codec::proto::ContactRequest { user: user.into() })
    };
    if let Some(user) = line.strip_prefix("/friend ") {
        client.request(&contact_request(user.trim()))?;
        println!("  asked {}", user.trim());
        return Ok(());
    }
    if let Some(user) = line.strip_prefix("/accept ") {
        let accept = Message::ContactAccept(courier::codec::proto::ContactAccept {
            user: user.trim().into(),
        });
        client.request(&accept)?;
        println!("  {} is a friend", user.trim());
        return Ok(());
    }
    if line == "/contacts" {
        let sync = Message::ContactSync(courier::codec::proto::ContactSync { after_version: 0 });
        if let Message::ContactList(list) = client.request(&sync)? {
            for contact in list.contacts {
                print_contact(&contact);
            }
        }
        return Ok(());
    }
    if let Some(done) = group_line(client, line, next_id, seen)? {
        println!("  {done}");
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("/sync") {
        let after = rest.trim().parse().unwrap_or(0);
        for message in client.sync_all(after)? {
            *seen = (*seen).max(message.inbox_sequence);
            print_message(&Message::Deliver(message));
        }
        return Ok(());
    }
    if let Some(command) = line.strip_prefix('/') {
        let name = command.split_whitespace().next().unwrap_or("");
        println!("? no command /{name}: /help lists them");
        return Ok(());
    }
    let Some((recipient, text)) = line.split_once(':') else {
        if !line.is_empty() {
            println!("? `name: text` sends text to name (/help lists the rest)");
        }
        return Ok(());
    };
    let Some(text) = nonempty(text) else {
        println!("? nothing to send: `name: text`");
        return Ok(());
    };
    *next_id += 1;
    let ack = client.send(recipient.trim(), *next_id, text.as_bytes())?;
    println!("  sent (#{})", ack.inbox_sequence);
    mark_shown(seen, ack.inbox_sequence);
    Ok(())
}

/// Counts an acknowledged send of this terminal's as shown, if every entry
/// before it in the inbox was (inbox sequences have no gaps), so that a
/// reconnection neither shows it again nor skips a message not yet read.
fn mark_shown(seen: &mut u64, acknowledged: u64) {
    if acknowledged == *seen + 1 {
        *seen = acknowledged;
    }
}

/// The text of a message typed after its `:`, unless there is none.
fn nonempty(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|text| !text.is_empty())
}

/// A group command of `courier chat`, if `line` is one: what was done.
fn group_line(
    client: &mut Client,
    line: &str,
    next_id: &mut u64,
    seen: &mut u64,
) -> Result<Option<String>, ClientError> {
    let group_id = |word: Option<&str>| -> Result<u64, ClientError> {
        word.and_then(|w| w.trim_start_matches('#').parse().ok())
            .ok_or_else(|| ClientError::Protocol("give a group id (a number)".into()))
    };
    let mut words = line.split_whitespace();
    let done = match words.next() {
        Some("/group") => {
            let name = words
                .next()
                .ok_or_else(|| ClientError::Protocol("/group name member...".into()))?;
            let members: Vec<&str> = words.collect();
            let info = client.group_create(name, &members)?;
            format!(
                "group #{} {}: {}",
                info.group_id,
                info.name,
                info.members.join(", ")
            )
        }
        Some("/groups") => {
            let groups = client.groups()?;
            let lines: Vec<String> = groups
                .iter()
                .map(|g| {
                    let invited = if g.invited { " (invited: /join)" } else { "" };
                    format!(
                        "#{} {} ({} members, owner {}){invited}",
                        g.group_id, g.name, g.member_count, g.owner
                    )
                })
                .collect();
            format!(
                "{} groups
  {}",
                groups.len(),
                lines.join(
                    "
  "
                )
            )
        }
        Some("/invite") => {
            let id = group_id(words.next())?;
            let user = words
                .next()
                .ok_or_else(|| ClientError::Protocol("/invite id name".into()))?;
            client.group_invite(id, user)?;
            format!("invited {user} to #{id}")
        }
        Some("/join") => {
            let id = group_id(words.next())?;
            client.group_join(id)?;
            format!("joined #{id}")
        }
        Some("/leave") => {
            let id = group_id(words.next())?;
            client.group_leave(id)?;
            format!("left #{id}")
        }
        Some("/members") => {
            let info = client.group_members(group_id(words.next())?)?;
            format!(
                "#{} {} (owner {}): {}",
                info.group_id,
                info.name,
                info.owner,
                info.members.join(", ")
            )
        }
        Some(word) if word.starts_with('#') => {
            let Some((id, text)) = line.split_once(':') else {
                return Err(ClientError::Protocol("`#id: text` posts to a group".into()));
            };
            let id = group_id(Some(id.trim()))?;
            let text = nonempty(text)
                .ok_or_else(|| ClientError::Protocol("nothing to post: `#id: text`".into()))?;
            *next_id += 1;
            let ack = client.send_group(id, *next_id, text.as_bytes())?;
            mark_shown(seen, ack.inbox_sequence);
            format!("posted (#{})", ack.inbox_sequence)
        }
        _ => return Ok(None),
    };
    Ok(Some(done))
}

fn print_contact(contact: &courier::codec::proto::Contact) {
    let state = courier::codec::proto::ContactState::try_from(contact.state)
        .map_or("?", |state| state.as_str_name());
    println!("[contact] {}: {state}", contact.user);
}

fn print_message(message: &Message) {
    match message {
        Message::Deliver(m) if m.group_id != 0 => println!(
            "[#{}] {} → group #{}: {}",
            m.inbox_sequence,
            m.sender,
            m.group_id,
            String::from_utf8_lossy(&m.body)
        ),
        Message::Deliver(m) => println!(
            "[#{}] {} → {}: {}",
            m.inbox_sequence,
            m.sender,
            m.recipient,
            String::from_utf8_lossy(&m.body)
        ),
        Message::GroupChanged(changed) => {
            let change = changed.change().as_str_name().to_lowercase();
            let about = if changed.user.is_empty() {
                String::new()
            } else {
                format!(" {}", changed.user)
            };
            println!(
                "[group #{} {}]{about} {change}, by {}",
                changed.group_id, changed.name, changed.by
            );
        }
        Message::ContactChanged(changed) => {
            if let Some(contact) = &changed.contact {
                print_contact(contact);
            }
        }
        Message::Notify(n) => println!(
            "[notice] {} messages, {} unread: /sync to read",
            n.head_sequence, n.unread_count
        ),
        other => println!("[{:?}]", other.message_type()),
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
