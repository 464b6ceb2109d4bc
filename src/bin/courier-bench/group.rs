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

/// The connections of every group, and what NATS needs to reach them.
struct Groups {
    /// `conns[g * size + i]`: member i of group g; member 0 owns and posts.
    conns: Vec<Conn>,
    /// Over NATS: each group's subject, and over JetStream the owner's
    /// inbox for acknowledgements.
    subjects: Vec<String>,
    replies: Vec<Option<String>>,
    /// Over courier: each group's id.
    group_ids: Vec<u64>,
}

/// Connects every member of every group: over NATS, subscribed to the
/// group's subject; over courier, registered, logged in and in a group
/// the owner created.
fn connect_groups(common: &Common, args: &Args, target: &Target) -> anyhow::Result<Groups> {
    let mut groups = Groups {
        conns: Vec::with_capacity(args.groups * args.size),
        subjects: Vec::new(),
        replies: Vec::new(),
        group_ids: Vec::with_capacity(args.groups),
    };
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
                groups.conns.push(Conn::from_stream(stream, None)?);
            }
            groups.subjects.push(subject);
            groups.replies.push(inbox);
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
        groups.group_ids.push(info.group_id);
        for (i, mut client) in clients.into_iter().enumerate() {
            // Members were told of the group: drop that push.
            if i > 0 {
                client.next_push(Duration::from_secs(5))?;
            }
            groups.conns.push(Conn::from_client(client, None)?);
        }
    }
    Ok(groups)
}

/// A run under way: the groups, the posts in flight and what was measured.
struct Posting<'a> {
    args: &'a Args,
    target: &'a Target,
    /// The groups, without their connections.
    groups: Groups,
    schedule: Option<Schedule>,
    /// NATS core acknowledges nothing: a post is in flight until its last
    /// member has it.
    core_nats: bool,
    tally: Tally,
    pending: Pending,
    next_message: u64,
    /// Messages numbered below this were posted in the warm-up: not measured.
    first_measured: u64,
    /// Over NATS core: per group, posts not yet at their last member.
    open: Vec<usize>,
    body: Vec<u8>,
}

impl Posting<'_> {
    /// Posts every message due by `now` (ns since the epoch), or as many
    /// as the closed loop's window allows.
    fn post_due(&mut self, conns: &mut [Conn], now: u64) -> anyhow::Result<()> {
        let args = self.args;
        loop {
            let g = (self.next_message % args.groups as u64) as usize;
            let owner = &mut conns[g * args.size];
            let due = match &self.schedule {
                Some(schedule) if schedule.due_ns(self.next_message) <= now => {
                    schedule.due_ns(self.next_message)
                }
                Some(_) => return Ok(()),
                None if self.core_nats && self.open[g] < args.window => now,
                None if !self.core_nats && owner.in_flight.len() < args.window => now,
                None => return Ok(()),
            };
            let number = self.next_message;
            self.body[..8].copy_from_slice(&due.to_le_bytes());
            self.body[8..16].copy_from_slice(&number.to_le_bytes());
            if self.target.nats {
                let subject = &self.groups.subjects[g];
                let reply = self.groups.replies[g].as_deref();
                nats::publish(&mut owner.output, subject, reply, &self.body);
            } else {
                group_message(self.groups.group_ids[g], number, &self.body)
                    .encode_frame(number, &mut owner.output);
            }
            if self.core_nats {
                self.open[g] += 1;
            } else {
                owner.in_flight.push_back(due);
            }
            owner.flush()?;
            self.pending.insert(number, (due, args.size - 1, 0));
            self.next_message += 1;
        }
    }

    /// A member got a post's `body` at `arrived`.
    fn delivered(&mut self, body: &[u8], arrived: u64) -> anyhow::Result<()> {
        let stamp = body.get(..16).context("a body under 16 bytes")?;
        let due = u64::from_le_bytes(stamp[..8].try_into()?);
        let number = u64::from_le_bytes(stamp[8..].try_into()?);
        self.tally.deliver.record(due, arrived);
        self.tally.deliveries += 1;
        if let Some(entry) = self.pending.get_mut(&number) {
            entry.1 -= 1;
            entry.2 = entry.2.max(arrived);
            if entry.1 == 0 {
                if number >= self.first_measured {
                    self.tally.last.record(entry.0, entry.2);
                }
                self.pending.remove(&number);
                if self.core_nats {
                    self.open[(number % self.args.groups as u64) as usize] -= 1;
                }
            }
        }
        Ok(())
    }

    /// Reads what `conn` (connection `index`) has, at `arrived`.
    fn read(
        &mut self,
        conn: &mut Conn,
        index: usize,
        decoder: &FrameDecoder,
        arrived: u64,
    ) -> anyhow::Result<()> {
        if self.target.jetstream && index.is_multiple_of(self.args.size) {
            // An owner hears only JetStream's acknowledgements.
            self.tally.errors += nats::settle_acks(conn, arrived, &mut self.tally.ack)?;
            return Ok(());
        }
        if self.target.nats {
            return nats::receive(conn, |op| match op {
                nats::Op::Msg(body) => self.delivered(body, arrived),
                _ => Ok(()),
            });
        }
        conn.receive(decoder, |in_flight, message_type, payload| {
            match message_type {
                MessageType::Deliver => self.delivered(deliver_fields(payload)?.1, arrived)?,
                other => settle(
                    in_flight,
                    other,
                    arrived,
                    &mut self.tally.ack,
                    &mut self.tally.errors,
                )?,
            }
            Ok(())
        })
    }
}

pub fn run(
    common: &Common,
    args: &Args,
    target: &Target,
) -> anyhow::Result<(Summary, Vec<(String, Latencies)>)> {
    if args.size < 2 || args.groups == 0 || args.body < 16 || args.window == 0 {
        bail!("--size must be at least 2, --groups and --window positive, --body at least 16");
    }
    let mut poll = Poll::new()?;
    let mut groups = connect_groups(common, args, target)?;
    let mut conns = std::mem::take(&mut groups.conns);
    register(&poll, &mut conns)?;
    let decoder = FrameDecoder::new(16 << 20);
    let mut window = Window::new(common);
    let epoch = window.epoch;
    let mut run = Posting {
        args,
        target,
        groups,
        schedule: (args.rate > 0).then(|| Schedule::new(args.rate)),
        core_nats: target.nats && !target.jetstream,
        tally: Tally::default(),
        pending: Pending::new(),
        next_message: 0,
        first_measured: 0,
        open: vec![0; args.groups],
        body: vec![0; args.body],
    };
    let mut events = Events::with_capacity(1024);
    let pacer_token = Token(usize::MAX);
    let mut pacer = Pacer::new(&poll, pacer_token)?;
    while let Some(measuring_starts) = window.tick(target) {
        if measuring_starts {
            run.tally = Tally::default();
            run.first_measured = run.next_message;
        }
        run.post_due(&mut conns, epoch.elapsed().as_nanos() as u64)?;
        if let Some(schedule) = &run.schedule {
            let due = Duration::from_nanos(schedule.due_ns(run.next_message));
            pacer.arm(due.saturating_sub(epoch.elapsed()));
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
            if event.is_readable() {
                let arrived = epoch.elapsed().as_nanos() as u64;
                run.read(conn, index, &decoder, arrived)?;
            }
        }
    }
    let (seconds, cpu) = window.finish(target)?;
    Ok(summarize(args, target, run, seconds, cpu))
}

/// The run's summary and its latency histograms.
fn summarize(
    args: &Args,
    target: &Target,
    run: Posting<'_>,
    seconds: f64,
    cpu: Option<crate::server::CpuTime>,
) -> (Summary, Vec<(String, Latencies)>) {
    let tally = run.tally;
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
    if !run.core_nats {
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
                run.pending.len() as f64,
            ),
        ],
    };
    (summary, latencies)
}
