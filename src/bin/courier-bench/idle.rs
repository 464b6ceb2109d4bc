//! Idle connections: what they cost the server in memory, and in CPU while
//! they only send heartbeats.
//!
//! With --nats, each connection subscribes to a subject of its own (as a
//! logged-in device has an inbox) and its heartbeat is the protocol's
//! `PING`.

use std::time::Duration;

use anyhow::bail;
use courier::bench::{Latencies, Percentiles, Summary};
use courier::codec::proto::{self, DeliveryMode, MessageType};
use courier::codec::{FrameDecoder, Message};
use mio::{Events, Poll, Token};

use crate::load::{register, Conn, Pacer};
use crate::{nats, register_and_login, user_name, Common, Target, Window};

/// Options of the idle scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Idle connections, each logged in as its own user.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Each connection pings this often (a phone's heartbeat).
    #[arg(long, default_value_t = 1000)]
    pub ping_ms: u64,
}

pub fn run(
    common: &Common,
    args: &Args,
    target: &Target,
) -> anyhow::Result<(Summary, Vec<(String, Latencies)>)> {
    if args.connections == 0 || args.ping_ms == 0 {
        bail!("--connections and --ping-ms must be positive");
    }
    let rss_before = target.rss_bytes();
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let user = user_name(common, "i", i);
        if target.nats {
            let subject = nats::subject(&user);
            let stream = nats::connect(target.address, Some(&subject))?;
            conns.push(Conn::from_stream(stream, None)?);
            continue;
        }
        let (client, _) = register_and_login(target.endpoint(), &user, DeliveryMode::PushNotice)?;
        conns.push(Conn::from_client(client, None)?);
    }
    let rss_connected = target.rss_bytes();
    let mut poll = Poll::new()?;
    register(&poll, &mut conns)?;
    let decoder = FrameDecoder::new(16 << 20);
    let mut window = Window::new(common);
    let epoch = window.epoch;
    let interval = Duration::from_millis(args.ping_ms);
    // Spread the pings over the interval, as independent phones would.
    let step = interval / conns.len() as u32;
    let mut next_ping = 0u64;
    let mut rtt = Latencies::default();
    let mut events = Events::with_capacity(1024);
    let pacer_token = Token(usize::MAX);
    let mut pacer = Pacer::new(&poll, pacer_token)?;
    while let Some(measuring_starts) = window.tick(target) {
        if measuring_starts {
            rtt.reset();
        }
        let now = epoch.elapsed();
        loop {
            let due = step.as_nanos() as u64 * next_ping;
            if due > now.as_nanos() as u64 {
                break;
            }
            let count = conns.len() as u64;
            let conn = &mut conns[(next_ping % count) as usize];
            if target.nats {
                conn.output.extend_from_slice(b"PING\r\n");
            } else {
                Message::Ping(proto::Ping {
                    nonce: due,
                    ..Default::default()
                })
                .encode_frame(0, &mut conn.output);
            }
            conn.in_flight.push_back(due);
            conn.flush()?;
            next_ping += 1;
        }
        let next_due = Duration::from_nanos(step.as_nanos() as u64 * next_ping);
        pacer.arm(next_due.saturating_sub(epoch.elapsed()));
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            if event.token() == pacer_token {
                pacer.clear();
                continue;
            }
            let conn = &mut conns[event.token().0];
            if event.is_writable() {
                conn.flush()?;
            }
            if event.is_readable() {
                let arrived = epoch.elapsed().as_nanos() as u64;
                read_pongs(conn, target.nats, &decoder, &mut rtt, arrived)?;
            }
        }
    }
    let (seconds, cpu) = window.finish(target)?;
    let memory = (rss_before, rss_connected);
    Ok(summarize(
        args,
        target,
        conns.len(),
        rtt,
        (seconds, cpu),
        memory,
    ))
}

/// Reads the pongs `conn` has at `arrived`, each answering its oldest
/// ping in flight.
fn read_pongs(
    conn: &mut Conn,
    nats: bool,
    decoder: &FrameDecoder,
    rtt: &mut Latencies,
    arrived: u64,
) -> anyhow::Result<()> {
    if nats {
        let mut pongs = 0;
        nats::receive(conn, |op| {
            if op == nats::Op::Pong {
                pongs += 1;
            }
            Ok(())
        })?;
        // PONGs answer PINGs in order.
        for _ in 0..pongs {
            if let Some(due) = conn.in_flight.pop_front() {
                rtt.record(due, arrived);
            }
        }
        return Ok(());
    }
    conn.receive(decoder, |in_flight, message_type, _| {
        if message_type == MessageType::Pong {
            if let Some(due) = in_flight.pop_front() {
                rtt.record(due, arrived);
            }
        }
        Ok(())
    })
}

/// The run's summary: pings answered, their round trip, and the server's
/// memory per connection from `(before, connected)`.
fn summarize(
    args: &Args,
    target: &Target,
    connections: usize,
    rtt: Latencies,
    (seconds, cpu): (f64, Option<crate::server::CpuTime>),
    (rss_before, rss_connected): (Option<u64>, Option<u64>),
) -> (Summary, Vec<(String, Latencies)>) {
    let pings = rtt.count() as f64;
    let mut extra = vec![("connections".into(), connections as f64)];
    if let (Some(before), Some(after)) = (rss_before, rss_connected) {
        extra.push((
            "server memory per connection (bytes)".into(),
            after.saturating_sub(before) as f64 / connections as f64,
        ));
    }
    let (server_cores, server_cpu_us_per_op, server_kernel_share) =
        crate::server::CpuTime::figures(cpu, seconds, pings);
    let summary = Summary {
        scenario: "idle".into(),
        shape: format!(
            "{}{} connections, a ping each per {} ms",
            if target.nats { "NATS core, " } else { "" },
            connections,
            args.ping_ms
        ),
        seconds,
        rate_per_s: pings / seconds.max(f64::MIN_POSITIVE),
        latencies: vec![("ping".into(), Percentiles::of(&rtt))],
        errors: 0,
        server_cores,
        server_cpu_us_per_op,
        server_kernel_share,
        server_rss_bytes: target.rss_bytes(),
        server_anon_bytes: target.anon_bytes(),
        extra,
    };
    (summary, vec![("ping".into(), rtt)])
}
