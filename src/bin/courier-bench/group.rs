//! Group chat: the owner of each group posts to it on a schedule (or in a
//! closed loop), and every other member, online on one connection, gets
//! each message pushed. Reports member deliveries per second, the latency
//! to each member and to the last member of each message, and to SendAck.
//!
//! Against a running server (--server) the members must be allowed into a
//! group without being friends: run that server with
//! `open_messaging = true` (--spawn does).
//!
//! With --nats, a group is a subject every member but the owner subscribes
//! to, and a closed-loop post stays in flight until its last member has it
//! (NATS core acknowledges no post); with --jetstream as well, the owner
//! publishes with a reply inbox and a post is in flight until JetStream
//! acknowledges it, as a courier post is until its SendAck.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use courier::bench::{Latencies, Percentiles, Schedule, Summary};
use courier::client::group_message;
use courier::codec::proto::{DeliveryMode, MessageType};
use courier::codec::FrameDecoder;
use mio::{Events, Poll, Token};

use crate::load::{deliver_fields, register, settle, Conn, Pacer};
use crate::{nats, register_and_login, user_name, Common, Target, Window};

/// Options of the group scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Members per group, the owner (who posts) included.
    #[arg(long, default_value_t = 50)]
    pub size: usize,
    /// Groups, each with its own members.
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Group messages per second over all groups (open loop: latency from
    /// each post's due time); 0 for a closed loop, which finds the maximum.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Closed loop: messages in flight (posted, not acknowledged) per group;
    /// with --nats, posted and not yet at their last member.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Message body bytes (at least 16: the due time and the message
    /// number travel in it).
    #[arg(long, default_value_t = 128)]
    pub body: usize,
}

#[derive(Default)]
struct Tally {
    deliver: Latencies,
    last: Latencies,
    ack: Latencies,
    deliveries: u64,
    errors: u64,
}

/// A message on its way to its members: (due, members still to get it,
/// the latest arrival so far).
type Pending = HashMap<u64, (u64, usize, u64)>;

pub fn run(
    common: &Common,
    args: &Args,
    target: &Target,
) -> anyhow::Result<(Summary, Vec<(String, Latencies)>)> {
    if args.size < 2 || args.groups == 0 || args.body < 16 || args.window == 0 {
        bail!("--size must be at least 2, --groups and --window positive, --body at least 16");
    }
    let mut poll = Poll::new()?;
    // conns[g * size + i]: member i of group g; member 0 owns and posts.
    let mut conns = Vec::with_capacity(args.groups * args.size);
    // Over NATS: each group's subject, and over JetStream the owner's inbox
    // for acknowledgements.
    let mut subjects = Vec::new();
    let mut replies = Vec::new();
    let core_nats = target.nats && !target.jetstream;
    let mut group_ids = Vec::with_capacity(args.groups);
    for g in 0..args.groups {
        let names: Vec<String> = (0..args.size)
            .map(|i| user_name(common, &format!("g{g}m"), i))
            .collect();
        if target.nats {
            let subject = nats::subject(&names[0]);
            let inbox = target.jetstream.then(|| nats::reply_inbox(&subject));
            for i in 0..args.size {
                let listens = if i == 0 {
                    inbox.as_deref()
                } else {
                    Some(subject.as_str())
                };
                let stream = nats::connect(target.address, listens)?;
                conns.push(Conn::from_stream(stream, None)?);
            }
            subjects.push(subject);
            replies.push(inbox);
            continue;
        }
        let mut clients = Vec::with_capacity(args.size);
        for name in &names {
            clients.push(register_and_login(target.endpoint(), name, DeliveryMode::PushMessage)?.0);
        }
        let members: Vec<&str> = names[1..].iter().map(String::as_str).collect();
        let info = clients[0]
            .group_create(&format!("bench {g}"), &members)
            .context("cannot create the group (a --server must run with open_messaging)")?;
        group_ids.push(info.group_id);
        for (i, mut client) in clients.into_iter().enumerate() {
            // Members were told of the group: drop that push.
            if i > 0 {
                client.next_push(Duration::from_secs(5))?;
            }
            conns.push(Conn::from_client(client, None)?);
        }
    }
    register(&poll, &mut conns)?;
    let decoder = FrameDecoder::new(16 << 20);
    let schedule = (args.rate > 0).then(|| Schedule::new(args.rate));
    let mut window = Window::new(common);
    let epoch = window.epoch;
    let mut tally = Tally::default();
    let mut pending = Pending::new();
    let mut next_message = 0u64;
    let mut body = vec![0u8; args.body];
    let mut events = Events::with_capacity(1024);
    let pacer_token = Token(usize::MAX);
    let mut pacer = Pacer::new(&poll, pacer_token)?;
    let receivers = args.size - 1;
    // Messages numbered below this were posted in the warm-up: not measured.
    let mut first_measured = 0;
    // Over NATS: per group, posts not yet at their last member.
    let mut open = vec![0usize; args.groups];
    while let Some(measuring_starts) = window.tick(target) {
        if measuring_starts {
            tally = Tally::default();
            first_measured = next_message;
        }
        let now = epoch.elapsed().as_nanos() as u64;
        loop {
            let g = (next_message % args.groups as u64) as usize;
            let owner = &mut conns[g * args.size];
            let due = match &schedule {
                Some(schedule) if schedule.due_ns(next_message) <= now => {
                    schedule.due_ns(next_message)
                }
                Some(_) => break,
                None if core_nats && open[g] < args.window => now,
                None if !core_nats && owner.in_flight.len() < args.window => now,
                None => break,
            };
            body[..8].copy_from_slice(&due.to_le_bytes());
            body[8..16].copy_from_slice(&next_message.to_le_bytes());
            if target.nats {
                nats::publish(
                    &mut owner.output,
                    &subjects[g],
                    replies[g].as_deref(),
                    &body,
                );
            } else {
                group_message(group_ids[g], next_message, &body)
                    .encode_frame(next_message, &mut owner.output);
            }
            if core_nats {
                open[g] += 1;
            } else {
                owner.in_flight.push_back(due);
            }
            owner.flush()?;
            pending.insert(next_message, (due, receivers, 0));
            next_message += 1;
        }
        if let Some(schedule) = &schedule {
            pacer.arm(
                Duration::from_nanos(schedule.due_ns(next_message)).saturating_sub(epoch.elapsed()),
            );
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in events.iter() {
            if event.token() == pacer_token {
                pacer.clear();
                continue;
            }
            let index = event.token().0;
            let conn = &mut conns[index];
            if event.is_writable() {
                conn.flush()?;
            }
            if !event.is_readable() {
                continue;
            }
            let arrived = epoch.elapsed().as_nanos() as u64;
            let mut delivered = |body: &[u8]| -> anyhow::Result<()> {
                let stamp = body.get(..16).context("a body under 16 bytes")?;
                let due = u64::from_le_bytes(stamp[..8].try_into()?);
                let number = u64::from_le_bytes(stamp[8..].try_into()?);
                tally.deliver.record(due, arrived);
                tally.deliveries += 1;
                if let Some(entry) = pending.get_mut(&number) {
                    entry.1 -= 1;
                    entry.2 = entry.2.max(arrived);
                    if entry.1 == 0 {
                        if number >= first_measured {
                            tally.last.record(entry.0, entry.2);
                        }
                        pending.remove(&number);
                        if core_nats {
                            open[(number % args.groups as u64) as usize] -= 1;
                        }
                    }
                }
                Ok(())
            };
            if target.jetstream && index % args.size == 0 {
                // An owner hears only JetStream's acknowledgements.
                tally.errors += nats::settle_acks(conn, arrived, &mut tally.ack)?;
                continue;
            }
            if target.nats {
                nats::receive(conn, |op| match op {
                    nats::Op::Msg(body) => delivered(body),
                    _ => Ok(()),
                })?;
                continue;
            }
            conn.receive(&decoder, |in_flight, message_type, payload| {
                match message_type {
                    MessageType::Deliver => delivered(deliver_fields(payload)?.1)?,
                    other => settle(in_flight, other, arrived, &mut tally.ack, &mut tally.errors)?,
                }
                Ok(())
            })?;
        }
    }
    let (seconds, cpu) = window.finish(target)?;
    let mode = match args.rate {
        0 => format!("closed loop, window {} per group", args.window),
        rate => format!("open loop at {rate} messages/s"),
    };
    let messages = tally.last.count();
    let mut latencies = vec![
        ("member-delivery".to_owned(), tally.deliver),
        ("last-member".into(), tally.last),
    ];
    // NATS core acknowledges no post.
    if !core_nats {
        latencies.push(("send-ack".into(), tally.ack));
    }
    let server = match (target.nats, target.jetstream) {
        (true, true) => "NATS JetStream (file storage), ",
        (true, false) => "NATS core, ",
        (false, _) => "",
    };
    let (server_cores, server_cpu_us_per_op, server_kernel_share) =
        crate::server::CpuTime::figures(cpu, seconds, tally.deliveries as f64);
    let summary = Summary {
        scenario: "group".into(),
        shape: format!(
            "{server}{} group(s) of {}, {}-byte bodies, {mode}",
            args.groups, args.size, args.body
        ),
        seconds,
        rate_per_s: tally.deliveries as f64 / seconds,
        latencies: latencies
            .iter()
            .map(|(name, histogram)| {
                let name = match name.as_str() {
                    "member-delivery" => "each member".to_owned(),
                    other => other.replace('-', " "),
                };
                (name, Percentiles::of(histogram))
            })
            .collect(),
        errors: tally.errors,
        server_cores,
        server_cpu_us_per_op,
        server_kernel_share,
        server_rss_bytes: target.rss_bytes(),
        server_anon_bytes: target.anon_bytes(),
        extra: vec![
            (
                "group messages/s (to every member)".into(),
                messages as f64 / seconds,
            ),
            (
                "messages short of a member at the end".into(),
                pending.len() as f64,
            ),
        ],
    };
    Ok((summary, latencies))
}
