//! 1:1 chat between pairs: sender i sends to receiver i.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use courier::bench::{Latencies, Percentiles, Schedule, Summary};
use courier::codec::proto::{self, DeliveryMode, MessageType};
use courier::codec::{FrameDecoder, Message};
use mio::{Events, Interest, Poll, Token};

use crate::load::{deliver_fields, settle, Conn, Pacer};
use crate::nats;
use crate::{progress, register_and_login, user_name, Common, Meter, Target};

/// Options of the 1:1 scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Sender/receiver pairs (two connections each).
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
    /// Messages per second over all senders (open loop: latency from each
    /// message's due time); 0 for a closed loop, which finds the maximum.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Message body bytes (at least 8: the due time travels in it).
    #[arg(long, default_value_t = 128)]
    pub body: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            pairs: 8,
            rate: 20_000,
            window: 64,
            body: 128,
        }
    }
}

/// What one load thread measured.
#[derive(Default)]
struct Tally {
    deliver: Latencies,
    ack: Latencies,
    errors: u64,
}

struct Plan {
    schedule: Option<Schedule>,
    window: usize,
    body: usize,
    warmup: Duration,
    end: Duration,
    /// Speak NATS: publish to the subject in each sender's `recipient`.
    nats: bool,
    /// With `nats`: ask JetStream to acknowledge each publish.
    jetstream: bool,
}

pub fn run(
    common: &Common,
    args: &Args,
    target: &Target,
) -> anyhow::Result<(Summary, Vec<(String, Latencies)>)> {
    if args.body < 8 {
        bail!("--body must be at least 8 bytes");
    }
    if args.pairs == 0 {
        bail!("--pairs must be positive");
    }
    let threads = common.threads.min(args.pairs);
    let groups = connect_pairs(common, args, target, threads)?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let reporter = progress(
        "delivered",
        Arc::clone(&delivered),
        Arc::clone(&stop),
        common.quiet,
    );
    let epoch = Instant::now();
    let warmup = Duration::from_secs_f64(common.warmup);
    let end = warmup + Duration::from_secs_f64(common.seconds);
    let handles: Vec<_> = groups
        .into_iter()
        .map(|pairs| {
            let plan = Plan {
                // Each thread takes its share of the rate.
                schedule: (args.rate > 0)
                    .then(|| Schedule::new((args.rate / threads as u64).max(1))),
                window: args.window,
                body: args.body,
                warmup,
                end,
                nats: target.nats,
                jetstream: target.jetstream,
            };
            let delivered = Arc::clone(&delivered);
            std::thread::spawn(move || drive(pairs, &plan, epoch, &delivered))
        })
        .collect();
    std::thread::sleep(warmup.saturating_sub(epoch.elapsed()));
    let meter = Meter::start(target);
    let delivered_at_start = delivered.load(Ordering::Relaxed);
    std::thread::sleep(end.saturating_sub(epoch.elapsed()));
    let (seconds, cpu) = meter.finish(target);
    let delivered_measured = delivered.load(Ordering::Relaxed) - delivered_at_start;
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.deliver.merge(&tally.deliver);
        total.ack.merge(&tally.ack);
        total.errors += tally.errors;
    }
    stop.store(1, Ordering::Relaxed);
    let _ = reporter.join();
    let measured = (seconds, cpu, delivered_measured);
    Ok(summarize(args, target, threads, total, measured))
}

/// Connects every pair (over NATS, a publisher and a subscriber of the
/// receiver's subject), dealt out to `threads` load threads.
fn connect_pairs(
    common: &Common,
    args: &Args,
    target: &Target,
    threads: usize,
) -> anyhow::Result<Vec<Vec<(Conn, Conn)>>> {
    let mut groups: Vec<Vec<(Conn, Conn)>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..args.pairs {
        let receiver = user_name(common, "r", i);
        let pair = if target.nats {
            let subject = nats::subject(&receiver);
            let receiver = nats::connect(target.address, Some(&subject))?;
            // A JetStream sender hears its acknowledgements on an inbox.
            let inbox = target.jetstream.then(|| nats::reply_inbox(&subject));
            let sender = nats::connect(target.address, inbox.as_deref())?;
            (
                Conn::from_stream(sender, Some(subject))?,
                Conn::from_stream(receiver, None)?,
            )
        } else {
            let sender = user_name(common, "s", i);
            let (sender_client, _) =
                register_and_login(target.endpoint(), &sender, DeliveryMode::PushMessage)?;
            let (receiver_client, _) =
                register_and_login(target.endpoint(), &receiver, DeliveryMode::PushMessage)?;
            (
                Conn::from_client(sender_client, Some(receiver))?,
                Conn::from_client(receiver_client, None)?,
            )
        };
        groups[i % threads].push(pair);
    }
    Ok(groups)
}

/// The run's summary and its latency histograms.
fn summarize(
    args: &Args,
    target: &Target,
    threads: usize,
    total: Tally,
    (seconds, cpu, delivered_measured): (f64, Option<crate::server::CpuTime>, u64),
) -> (Summary, Vec<(String, Latencies)>) {
    let mode = if args.rate > 0 {
        format!("open loop at {}/s", args.rate)
    } else {
        format!("closed loop, window {}", args.window)
    };
    let mut latencies = vec![("delivery".to_owned(), total.deliver)];
    // NATS core acknowledges no send.
    if !target.nats || target.jetstream {
        latencies.push(("send-ack".into(), total.ack));
    }
    let server = match (target.nats, target.jetstream) {
        (true, true) => "NATS JetStream (file storage), ",
        (true, false) => "NATS core, ",
        (false, _) => "",
    };
    let (server_cores, server_cpu_us_per_op, server_kernel_share) =
        crate::server::CpuTime::figures(cpu, seconds, delivered_measured as f64);
    let summary = Summary {
        scenario: "one-to-one".into(),
        shape: format!(
            "{server}{}, {}-byte bodies, {mode}, {}",
            crate::plural(args.pairs, "pair"),
            args.body,
            crate::plural(threads, "load thread")
        ),
        seconds,
        rate_per_s: delivered_measured as f64 / seconds,
        latencies: latencies
            .iter()
            .map(|(name, histogram)| (name.replace('-', " "), Percentiles::of(histogram)))
            .collect(),
        errors: total.errors,
        server_cores,
        server_cpu_us_per_op,
        server_kernel_share,
        server_rss_bytes: target.rss_bytes(),
        server_anon_bytes: target.anon_bytes(),
        extra: Vec::new(),
    };
    (summary, latencies)
}

/// One load thread: its pairs on one mio loop.
fn drive(
    mut pairs: Vec<(Conn, Conn)>,
    plan: &Plan,
    epoch: Instant,
    delivered: &AtomicU64,
) -> anyhow::Result<Tally> {
    let mut poll = Poll::new()?;
    for (index, (sender, receiver)) in pairs.iter_mut().enumerate() {
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut sender.stream, Token(2 * index), interest)?;
        poll.registry()
            .register(&mut receiver.stream, Token(2 * index + 1), interest)?;
    }
    let decoder = FrameDecoder::new(16 << 20);
    // Over JetStream: each sender's acknowledgement inbox.
    let replies: Vec<Option<String>> = pairs
        .iter()
        .map(|(sender, _)| {
            let subject = sender.recipient.as_deref().filter(|_| plan.jetstream);
            subject.map(nats::reply_inbox)
        })
        .collect();
    let mut tally = Tally::default();
    let mut measuring = false;
    let mut outgoing = Outgoing {
        next_message: 0,
        body: vec![0u8; plan.body],
        send: Message::Send(proto::Send::default()),
    };
    let mut events = Events::with_capacity(1024);
    let pacer_token = Token(usize::MAX);
    let mut pacer = Pacer::new(&poll, pacer_token)?;
    loop {
        let now = epoch.elapsed();
        if now >= plan.end {
            return Ok(tally);
        }
        if !measuring && now >= plan.warmup {
            measuring = true;
            tally = Tally::default();
        }
        // Queue what is due (open loop) or what the windows allow (closed).
        let queued = queue_due(&mut pairs, plan, &mut outgoing, &replies, now)?;
        if queued > 0 {
            for (sender, _) in pairs.iter_mut() {
                sender.flush()?;
            }
        }
        if let Some(schedule) = &plan.schedule {
            pacer.arm(
                Duration::from_nanos(schedule.due_ns(outgoing.next_message))
                    .saturating_sub(epoch.elapsed()),
            );
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in events.iter() {
            if event.token() == pacer_token {
                pacer.clear();
                continue;
            }
            let index = event.token().0;
            let (sender, receiver) = &mut pairs[index / 2];
            let (conn, sender_in_flight) = if index % 2 == 0 {
                (sender, None)
            } else {
                (receiver, Some(&mut sender.in_flight))
            };
            if event.is_writable() {
                conn.flush()?;
            }
            if !event.is_readable() {
                continue;
            }
            let arrived = epoch.elapsed().as_nanos() as u64;
            let from_sender = index % 2 == 0;
            let count = receive(
                conn,
                sender_in_flight,
                from_sender,
                plan,
                &decoder,
                &mut tally,
                arrived,
            )?;
            delivered.fetch_add(count, Ordering::Relaxed);
        }
    }
}

/// What a load thread reuses from one message to the next.
struct Outgoing {
    next_message: u64,
    body: Vec<u8>,
    send: Message,
}

/// Queues, round robin over the senders, the messages due by `now`
/// (open loop) or as many as the senders' windows allow, 64 at most
/// (closed loop); returns how many.
fn queue_due(
    pairs: &mut [(Conn, Conn)],
    plan: &Plan,
    outgoing: &mut Outgoing,
    replies: &[Option<String>],
    now: Duration,
) -> anyhow::Result<usize> {
    let senders = pairs.len() as u64;
    let mut queued = 0;
    loop {
        let number = outgoing.next_message;
        let index = (number % senders) as usize;
        let sender = &mut pairs[index].0;
        let due_ns = match &plan.schedule {
            Some(schedule) => {
                let due = schedule.due_ns(number);
                if due > now.as_nanos() as u64 {
                    return Ok(queued);
                }
                due
            }
            None => {
                if sender.in_flight.len() >= plan.window || queued >= 64 {
                    return Ok(queued);
                }
                now.as_nanos() as u64
            }
        };
        outgoing.body[..8].copy_from_slice(&due_ns.to_le_bytes());
        let recipient = sender.recipient.as_ref().context("a sender")?;
        if plan.nats {
            let reply = replies[index].as_deref();
            nats::publish(&mut sender.output, recipient, reply, &outgoing.body);
        } else {
            if let Message::Send(message) = &mut outgoing.send {
                message.recipient.clone_from(recipient);
                message.client_message_id = number;
                message.body.clone_from(&outgoing.body);
            }
            outgoing.send.encode_frame(number, &mut sender.output);
        }
        sender.in_flight.push_back(due_ns);
        outgoing.next_message += 1;
        queued += 1;
    }
}

/// Reads what `conn` has at `arrived`: a sender's acknowledgements
/// (`from_sender`), or a receiver's deliveries (settling its sender's
/// `sender_in_flight` where NATS core acknowledges nothing); returns the
/// messages delivered.
#[allow(clippy::too_many_arguments)]
fn receive(
    conn: &mut Conn,
    sender_in_flight: Option<&mut std::collections::VecDeque<u64>>,
    from_sender: bool,
    plan: &Plan,
    decoder: &FrameDecoder,
    tally: &mut Tally,
    arrived: u64,
) -> anyhow::Result<u64> {
    let mut count = 0;
    if plan.nats && from_sender {
        tally.errors += nats::settle_acks(conn, arrived, &mut tally.ack)?;
        return Ok(0);
    }
    if plan.nats {
        // Without JetStream a message is in flight until delivered.
        let mut in_flight = sender_in_flight.filter(|_| !plan.jetstream);
        nats::receive(conn, |op| {
            let nats::Op::Msg(body) = op else {
                return Ok(());
            };
            let due = body.get(..8).context("a message under 8 bytes")?;
            tally
                .deliver
                .record(u64::from_le_bytes(due.try_into()?), arrived);
            count += 1;
            // In order: one publisher, one subscriber.
            if let Some(in_flight) = in_flight.as_mut() {
                in_flight
                    .pop_front()
                    .context("a message nobody sent to this connection")?;
            }
            Ok(())
        })?;
        return Ok(count);
    }
    conn.receive(decoder, |in_flight, message_type, payload| {
        match message_type {
            MessageType::Deliver => {
                let (_, body) = deliver_fields(payload)?;
                let due = u64::from_le_bytes(body[..8].try_into()?);
                tally.deliver.record(due, arrived);
                count += 1;
            }
            other => settle(in_flight, other, arrived, &mut tally.ack, &mut tally.errors)?,
        }
        Ok(())
    })?;
    Ok(count)
}
