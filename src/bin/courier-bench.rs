//! `courier-bench`: drives a courier server with real TCP connections and
//! reports throughput, latency percentiles and the server's CPU time per
//! delivered message.
//!
//! Open loop by default: message k is due at `start + k / rate`, and its
//! latency is measured from that due time (so a stalled server cannot hide
//! the queue it builds: coordinated omission is corrected). With
//! `--rate 0` each sender keeps `--window` messages in flight instead
//! (closed loop), which finds the maximum throughput.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use courier::client::Client;
use courier::codec::proto::{self, DeliveryMode, MessageType};
use courier::codec::{FrameDecoder, Message, FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use prost::Message as _;

/// Load generator for courier: 1:1 messages between pairs of users.
///
/// Registers 2 × --pairs users, logs each in on its own connection, and has
/// sender i send to receiver i for --seconds. Prints messages/s, latency
/// percentiles from the due time to delivery and to SendAck, and (with
/// --spawn or --server-pid) the server's CPU time per delivered message.
#[derive(Debug, Parser)]
#[command(name = "courier-bench", version, about, long_about)]
struct Args {
    /// Start `courier serve` (the binary next to this one) on a fresh data
    /// directory, with cheap password hashing, and stop it afterwards.
    #[arg(long, conflicts_with = "server")]
    spawn: bool,
    /// With --spawn: the durability (batch, interval, none).
    #[arg(long, default_value = "batch")]
    durability: String,
    /// With --spawn: stage placement (fused, per-stage).
    #[arg(long, default_value = "fused")]
    placement: String,
    /// With --spawn: a broker setting for the server's config file, as
    /// `key=value` in TOML (`wait_yield_us=50`); repeatable.
    #[arg(long = "broker-setting", value_name = "KEY=VALUE")]
    broker_settings: Vec<String>,
    /// The address of a running server.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The pid of a running server on this machine, to report its CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Sender/receiver pairs (two connections each).
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Messages per second over all senders; 0 for closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Message body bytes (at least 16).
    #[arg(long, default_value_t = 128)]
    body: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unmeasured seconds before.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A prefix for user names, so runs against one server do not collide.
    #[arg(long)]
    prefix: Option<String>,
}

/// Handles every whole frame in a connection's input. Only the frame type
/// and, for a delivery, the first bytes of the body are read: the load
/// generator must cost far less than the server it measures.
fn take_frames(
    conn: &mut Conn,
    decoder: &FrameDecoder,
    arrived: u64,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    loop {
        let input = &conn.input[conn.input_start..conn.input_end];
        let total = match decoder.frame_bytes(input)? {
            Some(total) if total <= input.len() => total,
            _ => return Ok(()),
        };
        let frame = &input[LENGTH_PREFIX_BYTES..total];
        let message_type = u16::from_be_bytes([frame[0], frame[1]]);
        let payload = &frame[FRAME_HEADER_BYTES..];
        match MessageType::try_from(i32::from(message_type)) {
            Ok(MessageType::Deliver) => {
                let body = deliver_body(payload).context("a Deliver without a body")?;
                let due = u64::from_le_bytes(body[..8].try_into()?);
                stats
                    .deliver
                    .saturating_record(arrived.saturating_sub(due).max(1));
                stats.delivered += 1;
            }
            Ok(MessageType::SendAck) => {
                let due = conn
                    .in_flight
                    .pop_front()
                    .context("an unexpected SendAck")?;
                stats
                    .ack
                    .saturating_record(arrived.saturating_sub(due).max(1));
                stats.acked += 1;
            }
            Ok(MessageType::Error) => {
                // A refused send frees its place in the window too.
                conn.in_flight.pop_front();
                stats.errors += 1;
                if stats.errors < 5 {
                    let error = proto::Error::decode(payload)?;
                    eprintln!("server error: {error:?}");
                }
            }
            _ => {}
        }
        conn.input_start += total;
    }
}

/// The body field (5) of a `Deliver` payload, found without decoding the rest.
fn deliver_body(mut payload: &[u8]) -> Option<&[u8]> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    while !payload.is_empty() {
        let (field, wire_type) = decode_key(&mut payload).ok()?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut payload).ok()?;
            }
            WireType::LengthDelimited => {
                let length = decode_varint(&mut payload).ok()? as usize;
                let value = payload.get(..length)?;
                if field == 5 {
                    return Some(value);
                }
                payload = &payload[length..];
            }
            WireType::SixtyFourBit => payload = payload.get(8..)?,
            WireType::ThirtyTwoBit => payload = payload.get(4..)?,
            WireType::StartGroup | WireType::EndGroup => return None,
        }
    }
    None
}

/// Sums the CPU time of every thread of a process, in ns.
fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

struct Spawned {
    child: Child,
    dir: PathBuf,
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

fn spawn_server(args: &Args) -> anyhow::Result<(Spawned, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let courier = exe.with_file_name("courier");
    let dir = std::env::temp_dir().join(format!("courier-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("courier.toml");
    let mut text = String::from("listen = \"127.0.0.1:0\"\n[broker]\n");
    for setting in &args.broker_settings {
        text.push_str(setting);
        text.push('\n');
    }
    text.push_str("[broker.auth]\nmemory_kib = 8\niterations = 1\n");
    std::fs::write(&config, text)?;
    let mut child = Command::new(&courier)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--durability",
            &args.durability,
            "--placement",
            &args.placement,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", courier.display()))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let address = line
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected server output {line:?}"))?
        .parse()?;
    Ok((Spawned { child, dir }, address))
}

/// One connection of the load.
struct Conn {
    stream: TcpStream,
    /// Bytes read; `input[input_start..input_end]` is not yet parsed.
    input: Vec<u8>,
    input_start: usize,
    input_end: usize,
    output: Vec<u8>,
    written: usize,
    /// Sender: the receiver's user name.
    recipient: Option<String>,
    /// Sender: the due times of the messages in flight, oldest first (acks
    /// come back in order on a connection).
    in_flight: std::collections::VecDeque<u64>,
}

impl Conn {
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }
}

struct Stats {
    deliver: Histogram<u64>,
    ack: Histogram<u64>,
    delivered: u64,
    acked: u64,
    errors: u64,
}

fn login_all(address: SocketAddr, prefix: &str, pairs: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    for role in ["s", "r"] {
        for i in 0..pairs {
            let user = format!("{prefix}{role}{i}");
            let mut client = Client::connect(address)?;
            client
                .register(&user, "bench-password")
                .with_context(|| format!("cannot register {user}"))?;
            client
                .login(&user, "bench-password", "bench", DeliveryMode::PushMessage)
                .with_context(|| format!("cannot log {user} in"))?;
            let stream = client.into_stream()?;
            stream.set_nonblocking(true)?;
            conns.push(Conn {
                stream: TcpStream::from_std(stream),
                input: vec![0; 256 * 1024],
                input_start: 0,
                input_end: 0,
                output: Vec::new(),
                written: 0,
                recipient: (role == "s").then(|| format!("{prefix}r{i}")),
                in_flight: std::collections::VecDeque::new(),
            });
        }
    }
    Ok(conns)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.body < 16 {
        bail!("--body must be at least 16 bytes (it carries the due time)");
    }
    if args.pairs == 0 {
        bail!("--pairs must be positive");
    }
    let (spawned, address) = match (args.spawn, args.server) {
        (true, _) => {
            let (spawned, address) = spawn_server(&args)?;
            (Some(spawned), address)
        }
        (false, Some(address)) => (None, address),
        (false, None) => bail!("give --spawn or --server ADDRESS"),
    };
    let pid = spawned.as_ref().map(|s| s.child.id()).or(args.server_pid);
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        format!(
            "b{}x",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() % 1_000_000)
        )
    });
    let mut conns = login_all(address, &prefix, args.pairs)?;
    drive(&args, &mut conns, pid)?;
    drop(spawned);
    Ok(())
}

fn drive(args: &Args, conns: &mut [Conn], pid: Option<u32>) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    for (index, conn) in conns.iter_mut().enumerate() {
        poll.registry().register(
            &mut conn.stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    let decoder = FrameDecoder::new(16 << 20);
    let epoch = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.seconds);
    let end = warmup + measured;
    let mut stats = Stats {
        deliver: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        ack: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        delivered: 0,
        acked: 0,
        errors: 0,
    };
    let senders = args.pairs;
    let mut next_message: u64 = 0;
    let mut body = vec![0u8; args.body];
    let mut events = Events::with_capacity(1024);
    let mut cpu_start = None;
    let mut measuring_since = None;
    let mut message = Message::Send(proto::Send::default());
    loop {
        let now = epoch.elapsed();
        if now >= end {
            break;
        }
        if measuring_since.is_none() && now >= warmup {
            measuring_since = Some(now);
            cpu_start = pid.and_then(process_cpu_ns);
            stats.deliver.reset();
            stats.ack.reset();
            stats.delivered = 0;
            stats.acked = 0;
        }
        // Queue what is due (open loop) or what the window allows (closed).
        let mut queued = false;
        loop {
            let sender = (next_message % senders as u64) as usize;
            let due_ns = if let Some(due) = (next_message * 1_000_000_000).checked_div(args.rate) {
                if due > now.as_nanos() as u64 {
                    break;
                }
                due
            } else {
                if conns[..senders]
                    .iter()
                    .all(|c| c.in_flight.len() >= args.window)
                {
                    break;
                }
                if conns[sender].in_flight.len() >= args.window {
                    next_message += 1;
                    continue;
                }
                now.as_nanos() as u64
            };
            body[..8].copy_from_slice(&due_ns.to_le_bytes());
            let conn = &mut conns[sender];
            if let Message::Send(send) = &mut message {
                send.recipient
                    .clone_from(conn.recipient.as_ref().expect("a sender"));
                send.client_message_id = next_message;
                send.body.clone_from(&body);
            }
            message.encode_frame(next_message, &mut conn.output);
            conn.in_flight.push_back(due_ns);
            next_message += 1;
            queued = true;
            if args.rate == 0 && next_message % 64 == 0 {
                break;
            }
        }
        if queued {
            for conn in conns[..senders].iter_mut() {
                conn.flush()?;
            }
        }
        let idle_max = Duration::from_millis(10);
        let timeout = match (next_message * 1_000_000_000).checked_div(args.rate) {
            Some(next_due) => Duration::from_nanos(next_due)
                .saturating_sub(epoch.elapsed())
                .min(idle_max),
            None => idle_max,
        };
        poll.poll(&mut events, Some(timeout))?;
        for event in events.iter() {
            let index = event.token().0;
            let conn = &mut conns[index];
            if event.is_writable() {
                conn.flush()?;
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                if conn.input_start > 0 {
                    conn.input.copy_within(conn.input_start..conn.input_end, 0);
                    conn.input_end -= conn.input_start;
                    conn.input_start = 0;
                }
                if conn.input_end == conn.input.len() {
                    let size = conn.input.len() * 2;
                    conn.input.resize(size, 0);
                }
                match conn.stream.read(&mut conn.input[conn.input_end..]) {
                    Ok(0) => bail!("the server closed a connection"),
                    Ok(n) => conn.input_end += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
                let arrived = epoch.elapsed().as_nanos() as u64;
                take_frames(conn, &decoder, arrived, &mut stats)?;
            }
        }
    }
    let elapsed = measuring_since.map_or(Duration::ZERO, |since| epoch.elapsed() - since);
    let cpu_ns = match (cpu_start, pid.and_then(process_cpu_ns)) {
        (Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    report(args, &stats, elapsed, cpu_ns);
    Ok(())
}

fn report(args: &Args, stats: &Stats, elapsed: Duration, cpu_ns: Option<u64>) {
    let seconds = elapsed.as_secs_f64();
    let mode = if args.rate > 0 {
        format!("open loop at {} msg/s", args.rate)
    } else {
        format!("closed loop, window {}", args.window)
    };
    println!(
        "1:1, {} pairs, {}-byte bodies, {mode}, {seconds:.1} s measured",
        args.pairs, args.body
    );
    println!(
        "delivered {} ({:.0} msg/s), acknowledged {} ({:.0} msg/s), errors {}",
        stats.delivered,
        stats.delivered as f64 / seconds,
        stats.acked,
        stats.acked as f64 / seconds,
        stats.errors
    );
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, h) in [("delivery", &stats.deliver), ("send ack", &stats.ack)] {
        println!(
            "{name:>9} latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
    if let Some(cpu_ns) = cpu_ns {
        println!(
            "server CPU: {:.2} cores, {:.3} µs per delivered message",
            cpu_ns as f64 / 1e9 / seconds,
            cpu_ns as f64 / 1000.0 / stats.delivered.max(1) as f64
        );
    }
}
