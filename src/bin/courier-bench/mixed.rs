//! A WeChat-like mix: mostly 1:1 messages between random users on a
//! schedule, some posts to groups of random users, while devices drop off,
//! come back with their token and sync what they missed.

use std::time::{Duration, Instant};

use anyhow::bail;
use courier::bench::{Latencies, Percentiles, Schedule, Summary};
use courier::client::group_message;
use courier::codec::proto::{self, DeliveryMode, MessageType};
use courier::codec::{FrameDecoder, Message};
use mio::{Events, Interest, Poll, Token};
use prost::Message as _;

use crate::load::{deliver_fields, Conn, Pacer};
use crate::{register_and_login, user_name, Common, Target, Window};

/// Options of the mixed scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Users, one device each.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Messages per second over all users.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Every this many ms a random device drops, reconnects with its token
    /// and syncs what it missed.
    #[arg(long, default_value_t = 200)]
    pub churn_ms: u64,
    /// Message body bytes (at least 9).
    #[arg(long, default_value_t = 128)]
    pub body: usize,
    /// Groups, each of --group-size random users (0: 1:1 only).
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Members per group (at most --users).
    #[arg(long, default_value_t = 20)]
    pub group_size: usize,
    /// Percent of messages posted to a group (by a random member).
    #[arg(long, default_value_t = 10)]
    pub group_percent: u32,
}

struct User {
    name: String,
    token: String,
    conn: Option<Conn>,
    /// The highest inbox sequence this device has seen.
    seen: u64,
}

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    deliver: Latencies,
    group_deliver: Latencies,
    reconnect: Latencies,
    synced: u64,
    errors: u64,
}

pub fn run(
    common: &Common,
    args: &Args,
    target: &Target,
) -> anyhow::Result<(Summary, Vec<(String, Latencies)>)> {
    if args.users < 2 || args.rate == 0 || args.churn_ms == 0 || args.body < 9 {
        bail!("--users must be at least 2; --rate and --churn-ms positive; --body at least 9");
    }
    if args.groups > 0 && args.group_size < 2 {
        bail!("--group-size must be at least 2");
    }
    if args.group_percent > 100 {
        bail!("--group-percent is at most 100");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut users, groups, mut poll) = setup(common, args, target, &mut rng)?;
    let decoder = FrameDecoder::new(16 << 20);
    let schedule = Schedule::new(args.rate);
    let churn = Duration::from_millis(args.churn_ms);
    let mut window = Window::new(common);
    let epoch = window.epoch;
    let mut tally = Tally::default();
    let mut next_message = 0u64;
    let mut next_churn = churn;
    let mut delivered_measured = 0u64;
    let mut outgoing = Outgoing {
        body: vec![0u8; args.body],
        send: Message::Send(proto::Send::default()),
    };
    let mut events = Events::with_capacity(1024);
    let pacer_token = Token(usize::MAX);
    let mut pacer = Pacer::new(&poll, pacer_token)?;
    while let Some(measuring_starts) = window.tick(target) {
        if measuring_starts {
            tally = Tally::default();
            delivered_measured = 0;
        }
        let now = epoch.elapsed();
        while schedule.due_ns(next_message) <= now.as_nanos() as u64 {
            let due = schedule.due_ns(next_message);
            next_message += 1;
            let message = (next_message, due);
            send_one(args, &mut users, &groups, &mut rng, &mut outgoing, message)?;
        }
        if now >= next_churn {
            next_churn += churn;
            let index = rng.below(users.len());
            let synced = reconnect(
                &mut users[index],
                target.endpoint(),
                &poll,
                index,
                epoch,
                &mut tally,
            )?;
            delivered_measured += synced;
        }
        let wait = Duration::from_nanos(schedule.due_ns(next_message))
            .min(next_churn)
            .saturating_sub(epoch.elapsed());
        pacer.arm(wait);
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in events.iter() {
            if event.token() == pacer_token {
                pacer.clear();
                continue;
            }
            let user = &mut users[event.token().0];
            let Some(conn) = user.conn.as_mut() else {
                continue;
            };
            if event.is_writable() {
                conn.flush()?;
            }
            if !event.is_readable() {
                continue;
            }
            let arrived = epoch.elapsed().as_nanos() as u64;
            delivered_measured += receive(user, &decoder, arrived, &mut tally)?;
        }
    }
    let (seconds, cpu) = window.finish(target)?;
    Ok(summarize(
        args,
        target,
        tally,
        (seconds, cpu),
        delivered_measured,
    ))
}

/// The run's summary and its latency histograms.
fn summarize(
    args: &Args,
    target: &Target,
    tally: Tally,
    (seconds, cpu): (f64, Option<crate::server::CpuTime>),
    delivered_measured: u64,
) -> (Summary, Vec<(String, Latencies)>) {
    let group_size = args.group_size.min(args.users);
    let (server_cores, server_cpu_us_per_op, server_kernel_share) =
        crate::server::CpuTime::figures(cpu, seconds, delivered_measured as f64);
    let summary = Summary {
        scenario: "mixed".into(),
        shape: format!(
            "{} users, {}/s messages ({}% to {} groups of {}), a reconnect + sync every {} ms",
            args.users, args.rate, args.group_percent, args.groups, group_size, args.churn_ms
        ),
        seconds,
        rate_per_s: delivered_measured as f64 / seconds,
        latencies: vec![
            ("delivery".into(), Percentiles::of(&tally.deliver)),
            ("reconnect".into(), Percentiles::of(&tally.reconnect)),
            ("group member".into(), Percentiles::of(&tally.group_deliver)),
        ],
        errors: tally.errors,
        server_cores,
        server_cpu_us_per_op,
        server_kernel_share,
        server_rss_bytes: target.rss_bytes(),
        server_anon_bytes: target.anon_bytes(),
        extra: vec![("messages recovered by sync".into(), tally.synced as f64)],
    };
    (
        summary,
        vec![
            ("delivery".into(), tally.deliver),
            ("reconnect".into(), tally.reconnect),
            ("group-member".into(), tally.group_deliver),
        ],
    )
}

/// Registers and logs in every user, creates the groups (each its id and
/// its members' indexes, the first its owner), and registers each user's
/// connection with a new poll under its index.
#[allow(clippy::type_complexity)]
fn setup(
    common: &Common,
    args: &Args,
    target: &Target,
    rng: &mut Rng,
) -> anyhow::Result<(Vec<User>, Vec<(u64, Vec<usize>)>, Poll)> {
    let group_size = args.group_size.min(args.users);
    let mut clients = Vec::with_capacity(args.users);
    let mut names = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let name = user_name(common, "m", i);
        clients.push(register_and_login(
            target.endpoint(),
            &name,
            DeliveryMode::PushMessage,
        )?);
        names.push(name);
    }
    // Each group: its id and its members (user indexes), the first its owner.
    let mut groups: Vec<(u64, Vec<usize>)> = Vec::with_capacity(args.groups);
    for g in 0..args.groups {
        let mut members = vec![g % args.users];
        while members.len() < group_size {
            let candidate = rng.below(args.users);
            if !members.contains(&candidate) {
                members.push(candidate);
            }
        }
        let others: Vec<&str> = members[1..].iter().map(|&m| names[m].as_str()).collect();
        let info = clients[members[0]]
            .0
            .group_create(&format!("mix {g}"), &others)?;
        groups.push((info.group_id, members));
    }
    // Take the group notices a creator may have read along with its replies.
    for (client, _) in &mut clients {
        while client.next_push(Duration::from_millis(1))?.is_some() {}
    }
    let mut users = Vec::with_capacity(args.users);
    let poll = Poll::new()?;
    for (i, ((client, token), name)) in clients.into_iter().zip(names).enumerate() {
        let mut conn = Conn::from_client(client, None)?;
        poll.registry().register(
            &mut conn.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        users.push(User {
            name,
            token,
            conn: Some(conn),
            seen: 0,
        });
    }
    Ok((users, groups, poll))
}

/// What a sender reuses from one message to the next.
struct Outgoing {
    body: Vec<u8>,
    send: Message,
}

/// Sends message `number`, due at `due`: to a random group from one of
/// its members (as often as --group-percent says), else from a random
/// user to another; skipped if the sender is offline.
fn send_one(
    args: &Args,
    users: &mut [User],
    groups: &[(u64, Vec<usize>)],
    rng: &mut Rng,
    outgoing: &mut Outgoing,
    (number, due): (u64, u64),
) -> anyhow::Result<()> {
    let body = &mut outgoing.body;
    body[..8].copy_from_slice(&due.to_le_bytes());
    let to_group = !groups.is_empty() && rng.below(100) < args.group_percent as usize;
    // Byte 8 tells a group message from a 1:1 one at delivery.
    body[8] = u8::from(to_group);
    let from = if to_group {
        let (group_id, members) = &groups[rng.below(groups.len())];
        let from = members[rng.below(members.len())];
        let Some(conn) = users[from].conn.as_mut() else {
            return Ok(()); // the poster is offline right now
        };
        group_message(*group_id, number, body).encode_frame(number, &mut conn.output);
        from
    } else {
        let from = rng.below(users.len());
        let to = (from + 1 + rng.below(users.len() - 1)) % users.len();
        let recipient = users[to].name.clone();
        let Some(conn) = users[from].conn.as_mut() else {
            return Ok(()); // the sender is offline right now
        };
        if let Message::Send(message) = &mut outgoing.send {
            message.recipient = recipient;
            message.client_message_id = number;
            message.body.clone_from(body);
        }
        outgoing.send.encode_frame(number, &mut conn.output);
        from
    };
    if let Some(conn) = users[from].conn.as_mut() {
        conn.flush()?;
    }
    Ok(())
}

/// Reads what `user`'s connection has, at `arrived`; returns the
/// messages delivered.
fn receive(
    user: &mut User,
    decoder: &FrameDecoder,
    arrived: u64,
    tally: &mut Tally,
) -> anyhow::Result<u64> {
    let Some(conn) = user.conn.as_mut() else {
        return Ok(0);
    };
    let seen = &mut user.seen;
    let mut delivered = 0;
    conn.receive(decoder, |_, message_type, payload| {
        match message_type {
            MessageType::Deliver => {
                let (sequence, body) = deliver_fields(payload)?;
                *seen = (*seen).max(sequence);
                let due = u64::from_le_bytes(body[..8].try_into()?);
                if body[8] == 1 {
                    tally.group_deliver.record(due, arrived);
                } else {
                    tally.deliver.record(due, arrived);
                }
                delivered += 1;
            }
            MessageType::SendAck => {
                let ack = proto::SendAck::decode(payload)?;
                *seen = (*seen).max(ack.inbox_sequence);
            }
            MessageType::Error => tally.errors += 1,
            _ => {}
        }
        Ok(())
    })?;
    Ok(delivered)
}

/// Drops a user's connection, logs back in with its token on a new one and
/// syncs what it has not seen (the messages sent meanwhile, and any the
/// old connection had not read). Returns how many messages the sync brought.
fn reconnect(
    user: &mut User,
    endpoint: crate::Endpoint,
    poll: &Poll,
    token: usize,
    epoch: Instant,
    tally: &mut Tally,
) -> anyhow::Result<u64> {
    let started = epoch.elapsed().as_nanos() as u64;
    if let Some(mut old) = user.conn.take() {
        poll.registry().deregister(&mut old.stream)?;
    }
    let mut client = endpoint.connect()?;
    client.login_token(&user.name, &user.token, "bench", DeliveryMode::PushMessage)?;
    let messages = client.sync_all(user.seen)?;
    let arrived = epoch.elapsed().as_nanos() as u64;
    let mut received = 0;
    for message in &messages {
        user.seen = user.seen.max(message.inbox_sequence);
        if message.sender == user.name {
            continue; // its own message, in its own inbox
        }
        if let Some(due) = message.body.get(..8) {
            let due = u64::from_le_bytes(due.try_into()?);
            if message.group_id != 0 {
                tally.group_deliver.record(due, arrived);
            } else {
                tally.deliver.record(due, arrived);
            }
            received += 1;
        }
    }
    tally.reconnect.record(started, arrived);
    tally.synced += received;
    let mut conn = Conn::from_client(client, None)?;
    poll.registry().register(
        &mut conn.stream,
        Token(token),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    user.conn = Some(conn);
    Ok(received)
}
