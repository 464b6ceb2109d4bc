//! The whole-broker simulation: one seed drives many simulated devices
//! against the real broker core (decode, journal, logic, the inboxes, the
//! auth workers' results) and crashes it, checking after every step.
//!
//! A step is one device's action (connect and log in, send, resend, post
//! to a group, sync, mark read, join or leave a group, be removed from
//! one, be invited and join later, have an invitation withdrawn, make a
//! group that dissolves with an invitation pending, change a contact,
//! disconnect, log out), a lost acknowledgement
//! (the connection drops with a `SendAck` unread), or a crash: all
//! in-memory state is dropped, a torn record may be left after the
//! journal's end, and the broker is reopened from the journal as written,
//! as `Broker::open` does. The clock is simulated: each record is a
//! millisecond after the one before.
//!
//! After every step: logic's and the inboxes' `check_invariants`, and the
//! end-to-end promises against an oracle built from every `SendAck` the
//! core emitted (read before the simulated network may lose it):
//! - every acknowledged message is in each of its recipients' inboxes
//!   exactly once, in journal order, and nothing else is, across crashes;
//! - a resend (same device, same client message id) is acknowledged with
//!   the original ids and never stored twice;
//! - every device sees, by push and sync, each inbox entry under one
//!   sequence, in order within a session, and a full sync gives the whole
//!   inbox from sequence 1 without a gap.
//!
//! A failure names the seed: `COURIER_SIM_SEED=N cargo test --lib sim`
//! replays it. `cargo test` runs [`SEEDS`] seeds; `COURIER_SIM_SEEDS=N
//! cargo test --release --lib sim -- --ignored` runs N more.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::event::Origin;
use super::ids::{ConnId, UserId};
use crate::codec::proto::{self, ErrorCode};
use crate::codec::{Message, LENGTH_PREFIX_BYTES};

mod core;

use self::core::{Core, Out2, Rng};

/// Seeds `cargo test` runs.
const SEEDS: u64 = 24;
/// Steps per seed.
const STEPS: usize = 400;
const USERS: usize = 5;
const DEVICES: usize = 2;
/// Groups, each of the first `GROUP_SIZE` users from a starting user.
const GROUPS: usize = 2;
const GROUP_SIZE: usize = 3;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum To {
    User(usize),
    Group(usize),
}

/// A message a device sent, and what it is resent as.
#[derive(Debug, Clone)]
struct Sent {
    client_message_id: u64,
    to: To,
    body: Vec<u8>,
}

/// What the core acknowledged for a message.
#[derive(Debug, Clone)]
struct Acked {
    server_message_id: u64,
    /// The sender's inbox sequence.
    sequence: u64,
    /// Whose inboxes it went to: the two users of a 1:1 message, or the
    /// group's members when it was acknowledged.
    recipients: Vec<usize>,
}

/// A simulated device of a user.
#[derive(Debug, Default)]
struct Device {
    conn: Option<ConnId>,
    logged_in: bool,
    token: Option<String>,
    next_id: u64,
    /// Sent without an acknowledgement seen (it may have been lost).
    unacked: Vec<Sent>,
    /// Sent and acknowledged: (message, server message id, sequence).
    acked: Vec<(Sent, u64, u64)>,
    /// Every inbox entry this device has seen: sequence to server id.
    seen: BTreeMap<u64, u64>,
    /// The newest sequence pushed in this session (pushes come in order).
    pushed_up_to: u64,
}

/// The simulation of one seed.
struct Sim {
    seed: u64,
    rng: Rng,
    dir: PathBuf,
    core: Option<Core>,
    users: Vec<String>,
    devices: Vec<Vec<Device>>,
    groups: Vec<(u64, Vec<usize>)>,
    /// Per group: users invited who have not joined.
    invited: Vec<Vec<usize>>,
    next_conn: u64,
    /// Every acknowledged message, by (user, device, client message id),
    /// read off the core's frames, lost or not.
    oracle: HashMap<(usize, usize, u64), Acked>,
    /// The frame a step's request was answered with.
    answer: Option<Message>,
    crashes: usize,
}

impl Sim {
    fn new(seed: u64, dir: PathBuf) -> Self {
        let core = Core::open(&dir, 0);
        let mut sim = Self {
            seed,
            rng: Rng(seed),
            dir,
            core: Some(core),
            users: (0..USERS).map(|u| format!("user{u}")).collect(),
            devices: (0..USERS)
                .map(|_| (0..DEVICES).map(|_| Device::default()).collect())
                .collect(),
            groups: Vec::new(),
            invited: vec![Vec::new(); GROUPS],
            next_conn: 1,
            oracle: HashMap::new(),
            answer: None,
            crashes: 0,
        };
        sim.setup();
        sim
    }

    fn core(&mut self) -> &mut Core {
        self.core.as_mut().expect("the core is open")
    }

    /// Registers every user and makes the groups.
    fn setup(&mut self) {
        for user in 0..USERS {
            let conn = self.open_conn();
            let register = Message::Register(proto::Register {
                user: self.users[user].clone(),
                password: format!("pw{user}"),
            });
            assert!(matches!(
                self.request(conn, &register),
                Some(Message::RegisterOk(_))
            ));
            self.event(conn, Origin::Disconnected, &[]);
        }
        for group in 0..GROUPS {
            let members: Vec<usize> = (0..GROUP_SIZE).map(|m| (group + m) % USERS).collect();
            let owner = members[0];
            self.connect(owner, 0);
            let create = Message::GroupCreate(proto::GroupCreate {
                name: format!("g{group}"),
                members: members[1..]
                    .iter()
                    .map(|&m| self.users[m].clone())
                    .collect(),
            });
            let conn = self.devices[owner][0].conn.expect("connected");
            let Some(Message::GroupInfo(info)) = self.request(conn, &create) else {
                panic!("seed {}: a group could not be made", self.seed);
            };
            self.groups.push((info.group_id, members));
        }
    }

    fn open_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.event(conn, Origin::Connected, &[127, 0, 0, 1]);
        conn
    }

    /// Runs one event and routes what it made; a step's answer (the frame
    /// with `correlation_id` for `conn`) is kept in `answer`.
    fn event(&mut self, conn: ConnId, origin: Origin, body: &[u8]) {
        let outs = self.core().event(conn, origin, body);
        for out in outs {
            match out {
                Out2::Frame(to, correlation_id, message) => {
                    self.route(to, correlation_id, conn, message)
                }
                Out2::Close(to) => {
                    if let Some((user, device)) = self.device_of(to) {
                        self.drop_conn(user, device);
                    }
                }
            }
        }
    }

    fn device_of(&self, conn: ConnId) -> Option<(usize, usize)> {
        (0..USERS)
            .flat_map(|u| (0..DEVICES).map(move |d| (u, d)))
            .find(|&(u, d)| self.devices[u][d].conn == Some(conn))
    }

    /// A frame to `to`; `from` made the request being answered.
    fn route(&mut self, to: ConnId, correlation_id: u64, from: ConnId, message: Message) {
        let owner = self.device_of(to);
        if let (Message::SendAck(ack), Some((user, device))) = (&message, owner) {
            self.note_ack(user, device, ack);
        }
        if let (Message::Deliver(deliver), Some((user, device))) = (&message, owner) {
            let seed = self.seed;
            let state = &mut self.devices[user][device];
            assert!(
                deliver.inbox_sequence > state.pushed_up_to,
                "seed {seed}: pushes to a device come in sequence order"
            );
            state.pushed_up_to = deliver.inbox_sequence;
            self.saw(
                user,
                device,
                deliver.inbox_sequence,
                deliver.server_message_id,
            );
        }
        if to == from && correlation_id != 0 {
            self.answer = Some(message);
        }
    }

    /// Records an acknowledgement in the oracle, or checks a resend's
    /// against it.
    fn note_ack(&mut self, user: usize, device: usize, ack: &proto::SendAck) {
        let state = &self.devices[user][device];
        let Some(sent) = state
            .unacked
            .iter()
            .chain(state.acked.iter().map(|(sent, _, _)| sent))
            .find(|s| s.client_message_id == ack.client_message_id)
            .cloned()
        else {
            panic!("seed {}: an ack for a message never sent", self.seed);
        };
        let key = (user, device, ack.client_message_id);
        let mut recipients = match sent.to {
            To::User(to) => vec![user, to],
            To::Group(group) => self.groups[group].1.clone(),
        };
        recipients.dedup();
        let acked = Acked {
            server_message_id: ack.server_message_id,
            sequence: ack.inbox_sequence,
            recipients,
        };
        match self.oracle.get(&key) {
            Some(first) => assert_eq!(
                (first.server_message_id, first.sequence),
                (acked.server_message_id, acked.sequence),
                "seed {}: a resend is acknowledged with the original ids",
                self.seed
            ),
            None => {
                self.oracle.insert(key, acked);
            }
        }
    }

    fn saw(&mut self, user: usize, device: usize, sequence: u64, server_id: u64) {
        let seed = self.seed;
        let seen = &mut self.devices[user][device].seen;
        if let Some(&before) = seen.get(&sequence) {
            assert_eq!(
                before, server_id,
                "seed {seed}: sequence {sequence} of user {user} is one message"
            );
        }
        seen.insert(sequence, server_id);
    }

    /// Sends `message` on `conn` and returns its answer.
    fn request(&mut self, conn: ConnId, message: &Message) -> Option<Message> {
        let mut frame = Vec::new();
        let correlation_id = self.rng.next() | 1;
        message.encode_frame(correlation_id, &mut frame);
        self.answer = None;
        self.event(conn, Origin::Frame, &frame[LENGTH_PREFIX_BYTES..]);
        self.answer.take()
    }

    fn drop_conn(&mut self, user: usize, device: usize) {
        let state = &mut self.devices[user][device];
        state.conn = None;
        state.logged_in = false;
        state.pushed_up_to = 0;
    }

    /// Connects a device and logs it in (with its token if it has one).
    fn connect(&mut self, user: usize, device: usize) {
        if self.devices[user][device].logged_in {
            return;
        }
        let conn = match self.devices[user][device].conn {
            Some(conn) => conn,
            None => {
                let conn = self.open_conn();
                self.devices[user][device].conn = Some(conn);
                conn
            }
        };
        let secret = match &self.devices[user][device].token {
            Some(token) => proto::login::Secret::Token(token.clone()),
            None => proto::login::Secret::Password(format!("pw{user}")),
        };
        let login = Message::Login(proto::Login {
            user: self.users[user].clone(),
            secret: Some(secret),
            device_id: format!("d{device}"),
            ..proto::Login::default()
        });
        match self.request(conn, &login) {
            Some(Message::LoginOk(ok)) => {
                let state = &mut self.devices[user][device];
                state.logged_in = true;
                state.token = Some(ok.token);
            }
            other => panic!("seed {}: a login failed: {other:?}", self.seed),
        }
    }

    fn disconnect(&mut self, user: usize, device: usize) {
        if let Some(conn) = self.devices[user][device].conn {
            self.event(conn, Origin::Disconnected, &[]);
            self.drop_conn(user, device);
        }
    }

    fn send(&mut self, user: usize, device: usize, sent: Sent, lose_ack: bool) {
        self.connect(user, device);
        let conn = self.devices[user][device].conn.expect("connected");
        let message = match sent.to {
            To::User(to) => Message::Send(proto::Send {
                recipient: self.users[to].clone(),
                client_message_id: sent.client_message_id,
                body: sent.body.clone(),
                group_id: 0,
            }),
            To::Group(group) => Message::Send(proto::Send {
                recipient: String::new(),
                client_message_id: sent.client_message_id,
                body: sent.body.clone(),
                group_id: self.groups[group].0,
            }),
        };
        let state = &mut self.devices[user][device];
        if !state
            .unacked
            .iter()
            .any(|s| s.client_message_id == sent.client_message_id)
            && !state
                .acked
                .iter()
                .any(|(s, _, _)| s.client_message_id == sent.client_message_id)
        {
            state.unacked.push(sent.clone());
        }
        let answer = self.request(conn, &message);
        let Some(Message::SendAck(ack)) = answer else {
            panic!("seed {}: a send was refused: {answer:?}", self.seed);
        };
        if lose_ack {
            // The connection drops with the acknowledgement unread.
            self.disconnect(user, device);
            return;
        }
        let state = &mut self.devices[user][device];
        state
            .unacked
            .retain(|s| s.client_message_id != ack.client_message_id);
        if !state
            .acked
            .iter()
            .any(|(s, _, _)| s.client_message_id == ack.client_message_id)
        {
            state
                .acked
                .push((sent, ack.server_message_id, ack.inbox_sequence));
        }
    }

    /// Pulls everything after what the device has seen, in pages.
    fn sync(&mut self, user: usize, device: usize, from_start: bool) {
        self.connect(user, device);
        let conn = self.devices[user][device].conn.expect("connected");
        let mut after = if from_start {
            0
        } else {
            contiguous(&self.devices[user][device].seen)
        };
        loop {
            let sync = Message::Sync(proto::Sync {
                after_sequence: after,
                limit: 0,
            });
            let Some(Message::SyncBatch(batch)) = self.request(conn, &sync) else {
                panic!("seed {}: a sync failed", self.seed);
            };
            for (offset, message) in batch.messages.iter().enumerate() {
                assert_eq!(
                    message.inbox_sequence,
                    after + 1 + offset as u64,
                    "seed {}: a sync has no gap",
                    self.seed
                );
                self.saw(
                    user,
                    device,
                    message.inbox_sequence,
                    message.server_message_id,
                );
            }
            after += batch.messages.len() as u64;
            if !batch.more {
                break;
            }
        }
    }

    fn step(&mut self) {
        let user = self.rng.below(USERS);
        let device = self.rng.below(DEVICES);
        match self.rng.below(100) {
            0..=24 => {
                let to = To::User(self.rng.below(USERS));
                let sent = self.new_message(user, device, to);
                let lose_ack = self.rng.chance(10);
                self.send(user, device, sent, lose_ack);
            }
            25..=36 => {
                let mine: Vec<usize> = (0..GROUPS)
                    .filter(|&g| self.groups[g].1.contains(&user))
                    .collect();
                if let Some(&group) = mine.get(self.rng.below(mine.len().max(1))) {
                    let sent = self.new_message(user, device, To::Group(group));
                    let lose_ack = self.rng.chance(10);
                    self.send(user, device, sent, lose_ack);
                }
            }
            37..=45 => {
                // Resend what was never acknowledged, or something that was.
                let state = &self.devices[user][device];
                let again = state.unacked.first().cloned().or_else(|| {
                    let acked = &state.acked;
                    acked.last().map(|(sent, _, _)| sent.clone())
                });
                if let Some(sent) = again {
                    self.send(user, device, sent, false);
                }
            }
            46..=57 => self.sync(user, device, false),
            58..=63 => self.change_group(user, device),
            64..=69 => self.change_contact(user, device),
            70..=75 => {
                self.connect(user, device);
                let conn = self.devices[user][device].conn.expect("connected");
                let head = contiguous(&self.devices[user][device].seen);
                let peer = self.users[(user + 1) % USERS].clone();
                let mark = Message::MarkRead(proto::MarkRead {
                    peer,
                    up_to_sequence: head,
                    group_id: 0,
                });
                match self.request(conn, &mark) {
                    Some(Message::ReadState(_)) => {}
                    Some(Message::Error(error)) if error.code == ErrorCode::BadSequence as i32 => {}
                    other => panic!("seed {}: a mark failed: {other:?}", self.seed),
                }
            }
            76..=86 => self.disconnect(user, device),
            87..=90 => {
                if let Some(conn) = self.devices[user][device].conn {
                    self.connect(user, device);
                    self.request(conn, &Message::Logout(proto::Logout {}));
                    self.devices[user][device].token = None;
                    self.devices[user][device].logged_in = false;
                }
            }
            91..=96 => self.connect(user, device),
            _ => self.crash(),
        }
        self.check();
    }

    /// A change to a group's membership: a member leaves (while two
    /// others stay) or the owner removes one; someone is invited and joins
    /// at once, or is invited and joins later, or the owner withdraws the
    /// invitation; or a short-lived group is made, invites someone and
    /// dissolves as its members leave, taking the invitation with it.
    fn change_group(&mut self, user: usize, device: usize) {
        let group = self.rng.below(GROUPS);
        if self.rng.chance(15) {
            return self.short_lived_group(user, device);
        }
        let (group_id, members) = self.groups[group].clone();
        self.connect(user, device);
        let conn = self.devices[user][device].conn.expect("connected");
        let owner = members[0];
        if members.contains(&user) {
            if members.len() <= 2 {
                return;
            }
            let leaving = if user == owner && self.rng.chance(50) {
                let other = members[1 + self.rng.below(members.len() - 1)];
                let remove = Message::GroupRemove(proto::GroupRemove {
                    group_id,
                    user: self.users[other].clone(),
                });
                self.expect_group_ok(conn, &remove);
                other
            } else {
                let leave = Message::GroupLeave(proto::GroupLeave { group_id });
                self.expect_group_ok(conn, &leave);
                user
            };
            self.groups[group].1.retain(|&m| m != leaving);
            return;
        }
        let join = Message::GroupJoin(proto::GroupJoin { group_id });
        if self.invited[group].contains(&user) {
            self.expect_group_ok(conn, &join);
            self.invited[group].retain(|&u| u != user);
            self.groups[group].1.push(user);
            return;
        }
        let inviter = members[self.rng.below(members.len())];
        self.connect(inviter, 0);
        let inviter_conn = self.devices[inviter][0].conn.expect("connected");
        let invite = Message::GroupInvite(proto::GroupInvite {
            group_id,
            user: self.users[user].clone(),
        });
        self.expect_group_ok(inviter_conn, &invite);
        match self.rng.below(3) {
            0 => {
                self.expect_group_ok(conn, &join);
                self.groups[group].1.push(user);
            }
            1 => self.invited[group].push(user),
            _ => {
                // The owner withdraws it; a join then finds none.
                self.connect(owner, 0);
                let owner_conn = self.devices[owner][0].conn.expect("connected");
                let withdraw = Message::GroupRemove(proto::GroupRemove {
                    group_id,
                    user: self.users[user].clone(),
                });
                self.expect_group_ok(owner_conn, &withdraw);
                match self.request(conn, &join) {
                    Some(Message::Error(error)) if error.code == ErrorCode::NotInvited as i32 => {}
                    other => panic!("seed {}: a withdrawn join got {other:?}", self.seed),
                }
            }
        }
    }

    /// `user` makes a group with the next user, invites the one after,
    /// and both members leave: the group dissolves and the invitation
    /// goes with it (no message is sent to it).
    fn short_lived_group(&mut self, user: usize, device: usize) {
        let (member, invitee) = ((user + 1) % USERS, (user + 2) % USERS);
        self.connect(user, device);
        self.connect(member, 0);
        let conn = self.devices[user][device].conn.expect("connected");
        let create = Message::GroupCreate(proto::GroupCreate {
            name: "passing".into(),
            members: vec![self.users[member].clone()],
        });
        let Some(Message::GroupInfo(info)) = self.request(conn, &create) else {
            panic!("seed {}: a short-lived group could not be made", self.seed);
        };
        let group_id = info.group_id;
        let invite = Message::GroupInvite(proto::GroupInvite {
            group_id,
            user: self.users[invitee].clone(),
        });
        self.expect_group_ok(conn, &invite);
        let member_conn = self.devices[member][0].conn.expect("connected");
        let leave = Message::GroupLeave(proto::GroupLeave { group_id });
        self.expect_group_ok(conn, &leave);
        self.expect_group_ok(member_conn, &leave);
        self.connect(invitee, 0);
        let invitee_conn = self.devices[invitee][0].conn.expect("connected");
        let join = Message::GroupJoin(proto::GroupJoin { group_id });
        match self.request(invitee_conn, &join) {
            Some(Message::Error(error)) if error.code == ErrorCode::UnknownGroup as i32 => {}
            other => panic!(
                "seed {}: a join of a dissolved group got {other:?}",
                self.seed
            ),
        }
    }

    fn expect_group_ok(&mut self, conn: ConnId, message: &Message) {
        match self.request(conn, message) {
            Some(Message::GroupOk(_)) => {}
            other => panic!("seed {}: {message:?} got {other:?}", self.seed),
        }
    }

    /// A contact request, acceptance, refusal, removal or block: accepted
    /// or refused as the two users' lists stand (the invariants check that
    /// the lists agree either way).
    fn change_contact(&mut self, user: usize, device: usize) {
        let other = self.users[self.rng.below(USERS)].clone();
        let message = match self.rng.below(6) {
            0 => Message::ContactRequest(proto::ContactRequest { user: other }),
            1 => Message::ContactAccept(proto::ContactAccept { user: other }),
            2 => Message::ContactDecline(proto::ContactDecline { user: other }),
            3 => Message::ContactRemove(proto::ContactRemove { user: other }),
            blocking => Message::ContactBlock(proto::ContactBlock {
                user: other,
                blocked: blocking == 4,
            }),
        };
        self.connect(user, device);
        let conn = self.devices[user][device].conn.expect("connected");
        match self.request(conn, &message) {
            Some(Message::ContactOk(_)) => {}
            Some(Message::Error(error)) if error.code == ErrorCode::ContactState as i32 => {}
            other => panic!("seed {}: {message:?} got {other:?}", self.seed),
        }
    }

    fn new_message(&mut self, user: usize, device: usize, to: To) -> Sent {
        let state = &mut self.devices[user][device];
        state.next_id += 1;
        let length = self.rng.below(40);
        Sent {
            // Each device numbers its own from 1: the ids collide across
            // devices on purpose.
            client_message_id: state.next_id,
            to,
            body: (0..length).map(|_| self.rng.next() as u8).collect(),
        }
    }

    /// Drops all in-memory state, may leave a torn record after the
    /// journal's end, and reopens from the journal as written.
    fn crash(&mut self) {
        let core = self.core.take().expect("the core is open");
        let clock_ns = core.clock_ns;
        let end = core.journal.end_position();
        drop(core);
        if self.rng.chance(50) {
            // A record being written when the power went: its length word
            // and part of its bytes, never acknowledged.
            let segment = self
                .dir
                .join("journal")
                .join(format!("{:020}.segment", end.segment));
            let mut torn = vec![0u8; 40];
            torn[..4].copy_from_slice(&200u32.to_le_bytes());
            for byte in &mut torn[4..] {
                *byte = self.rng.next() as u8;
            }
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&segment)
                .expect("the segment is there");
            file.write_all_at(&torn, end.offset).expect("written");
        }
        self.core = Some(Core::open(&self.dir, clock_ns + 1_000_000_000));
        self.crashes += 1;
        for user in 0..USERS {
            for device in 0..DEVICES {
                self.drop_conn(user, device);
            }
        }
    }

    /// The end-to-end promises against the oracle.
    fn check(&mut self) {
        let seed = self.seed;
        let core = self.core.as_mut().expect("the core is open");
        core.check_invariants();
        // The census counts exactly the devices logged in, and the users
        // with one (a dropped or crashed link no longer counts).
        let census = core.logic.census();
        let devices: Vec<usize> = self
            .devices
            .iter()
            .map(|user| user.iter().filter(|d| d.logged_in).count())
            .collect();
        assert_eq!(
            (census.users_online, census.devices_online),
            (
                devices.iter().filter(|&&n| n > 0).count() as u64,
                devices.iter().sum::<usize>() as u64
            ),
            "seed {seed}: the online counts are the devices logged in"
        );
        let core = self.core.as_ref().expect("the core is open");
        let mut expected: Vec<Vec<u64>> = vec![Vec::new(); USERS];
        for acked in self.oracle.values() {
            let server_id = &acked.server_message_id;
            for &recipient in &acked.recipients {
                if !expected[recipient].contains(server_id) {
                    expected[recipient].push(*server_id);
                }
            }
        }
        for (user, expected) in expected.iter_mut().enumerate() {
            expected.sort_unstable();
            let inbox = core.delivery.inbox_ids(UserId(user as u64 + 1));
            let ids: Vec<u64> = inbox.iter().map(|&(_, id)| id.0).collect();
            assert_eq!(
                &ids, expected,
                "seed {seed}: user {user}'s inbox holds every acknowledged message once, in order"
            );
            for device in &self.devices[user] {
                for (sequence, id) in &device.seen {
                    let entry = inbox.iter().find(|(s, _)| s.0 == *sequence);
                    assert_eq!(
                        entry.map(|(_, id)| id.0),
                        Some(*id),
                        "seed {seed}: what user {user}'s device saw is in the inbox"
                    );
                }
            }
        }
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
        // Every device, synced from the start, sees its whole inbox.
        for user in 0..USERS {
            for device in 0..DEVICES {
                self.sync(user, device, true);
                let head = self
                    .core()
                    .delivery
                    .inbox_ids(UserId(user as u64 + 1))
                    .len() as u64;
                let seen = &self.devices[user][device].seen;
                assert_eq!(contiguous(seen), head, "seed {}: a full sync", self.seed);
            }
        }
    }
}

/// The newest sequence up to which `seen` has no gap.
fn contiguous(seen: &BTreeMap<u64, u64>) -> u64 {
    let mut head = 0;
    while seen.contains_key(&(head + 1)) {
        head += 1;
    }
    head
}

fn run_seed(seed: u64) -> (usize, usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut sim = Sim::new(seed, dir.path().to_path_buf());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run(STEPS)));
    if let Err(panic) = outcome {
        eprintln!(
            "the simulation failed with seed {seed}: COURIER_SIM_SEED={seed} cargo test --lib sim"
        );
        std::panic::resume_unwind(panic);
    }
    (sim.crashes, sim.oracle.len())
}

#[test]
fn the_broker_keeps_its_promises_under_random_steps_and_crashes() {
    let seeds: Vec<u64> = match std::env::var("COURIER_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("COURIER_SIM_SEED is a number")],
        Err(_) => (1..=SEEDS).collect(),
    };
    let (mut crashes, mut acked) = (0, 0);
    for seed in seeds {
        let (c, a) = run_seed(seed);
        crashes += c;
        acked += a;
    }
    assert!(crashes > 0, "the seeds crash the broker");
    assert!(acked > 0, "the seeds acknowledge messages");
}

/// `COURIER_SIM_SEEDS=N`: N seeds after the ones `cargo test` runs.
#[test]
#[ignore]
fn many_seeds() {
    let count: u64 = std::env::var("COURIER_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let started = std::time::Instant::now();
    let (mut crashes, mut acked) = (0, 0);
    for seed in SEEDS + 1..=SEEDS + count {
        let (c, a) = run_seed(seed);
        crashes += c;
        acked += a;
    }
    eprintln!(
        "{count} seeds of {STEPS} steps in {:.1?}: {crashes} crashes, {acked} messages acknowledged",
        started.elapsed()
    );
}
