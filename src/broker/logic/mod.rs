//! The chat logic: one thread owns every piece of state.
//!
//! Logic applies commands in journal order. It is deterministic: ids and
//! times come from the journaled record (the message id is the record's
//! sequence, its time the record's timestamp), never from a clock or a
//! random source here, so replaying the journal rebuilds the same state.
//! Commands that are not journaled (a ping, a password still to be hashed)
//! change nothing that replay needs.
//!
//! The inboxes are not here: logic checks a message, a sync or a read mark
//! against accounts, sessions, contacts and groups, and leaves an
//! [`Intent`] that the fan-out stage's [`crate::broker::delivery`] state
//! carries out.
//!
//! # Adding a domain
//!
//! Contacts (`contacts.rs`) and groups (`groups.rs`) are the pattern a new
//! domain (red packets, moments, location) follows; each step names where
//! it lands:
//!
//! 1. **Protocol.** Its messages and error codes in `proto/courier.proto`
//!    (new numbers only), in `codec::Message`, and in docs/PROTOCOL.md.
//! 2. **Journal.** Whether each command is journaled, in
//!    `Command::record_type`: everything that changes state is, as the
//!    client sent it; what a worker computes (a hash) is journaled as its
//!    result. Time and randomness come from the record (its timestamp,
//!    its sequence as a seed), never from a clock here.
//! 3. **State and rules.** The domain's state and the checks of its
//!    commands, in a module of its own beside this one, reached from
//!    [`Logic::apply`] by message type; a command changes nothing or is
//!    refused with an error to its connection only. A rule that changes
//!    what a journaled command does is gated on `rules_version` (bumping
//!    [`RULES_VERSION`]), so old journals replay as they were.
//! 4. **Fan-out.** Work on the inboxes or other per-recipient state leaves
//!    as an [`Intent`] for the fan-out stage, which also answers the
//!    command when its answer needs that state (a `SendAck`).
//! 5. **Snapshot.** The state's part of `encode` / `decode` in
//!    `snapshot.rs` (bumping the snapshot format, and reading the version
//!    before it), and of `digest` in `digest.rs` for the replay tests.
//! 6. **Invariants.** What its `# Invariants` docs claim, checked in
//!    `check_invariants` (`digest.rs`), which the simulation runs after
//!    every step.
//! 7. **Projection.** What operators query, as a [`Projection`] the SQLite
//!    store applies in its batches (`store.rs`).
//! 8. **Simulation.** Steps for its commands in `broker/sim.rs`, and what
//!    its promises are, checked against the simulation's oracle.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crossbeam_channel::{Sender, TrySendError};

use super::auth::AuthJob;
use super::event::{Command, Intent, Journaled, Outbox, Projection};
use super::ids::{ConnId, GroupId, InboxSeq, Peer, UserId};
use crate::codec::journal_proto::{LoginVerified, Registered};
use crate::codec::proto::{self, login, Compression, ContactState, DeliveryMode, ErrorCode};
use crate::codec::SendView;
use crate::codec::{Message, PROTOCOL_VERSION};

mod contacts;
#[cfg(test)]
mod digest;
mod gate;
mod groups;
mod names;
mod snapshot;

pub(crate) use gate::address_key;
use gate::LoginGate;
pub use gate::{LoginCounters, LoginCounts};
use names::{check_name, check_user_name, name_key};

use contacts::{ContactEntry, ContactOp};
use groups::Group;
pub use groups::GROUP_NAME_BYTES_MAX;
pub(crate) use groups::{GROUP_INFO_BYTES_PER_MEMBER, GROUP_INFO_OVERHEAD_BYTES};

/// Longest user name or device id, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Longest password, in bytes.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// What a message body may not use of the frame limit: the room a Deliver
/// needs around it (two names of up to 64 bytes, ids, keys) inside a
/// SyncBatch frame, so every stored message can be pushed and synced.
pub const BODY_HEADROOM_BYTES: usize = 512;
const _: () = assert!(
    BODY_HEADROOM_BYTES > super::delivery::SYNC_BATCH_OVERHEAD_BYTES + 2 * NAME_BYTES_MAX + 64
);

/// The rules this build applies to a new run (written in its start
/// record, `Started.rules_version`; replay applies each run's own).
/// 1: resends keyed per device, client id 0 is no key, a reused id with
/// other content refused; new user names normalised and unique by their
/// look-alike key; MarkRead of a group needs membership or its messages.
pub(crate) const RULES_VERSION: u32 = 1;

/// What logic needs to know of the broker's configuration.
#[derive(Debug, Clone)]
pub(crate) struct LogicConfig {
    pub(crate) frame_size_max: usize,
    pub(crate) heartbeat_interval_ms: u32,
    /// Any user may message (or invite into a group) any other, as a plain
    /// broker; otherwise only friends.
    pub(crate) open_messaging: bool,
    /// The most members a group may have.
    pub(crate) group_members_max: usize,
    /// The rules the records being applied were decided under.
    pub(crate) rules_version: u32,
}

#[derive(Debug)]
struct User {
    name: String,
    password_hash: String,
    /// Device id to its login token.
    tokens: HashMap<String, String>,
    /// Connections logged in as this user.
    online: Vec<ConnId>,
    /// This user's contact list; an entry whose state is NONE stays, so a
    /// device syncing from an older version learns of the removal.
    contacts: HashMap<UserId, ContactEntry>,
    /// Bumped by each change to `contacts`.
    contact_version: u64,
    /// Groups this user is a member of.
    groups: BTreeSet<GroupId>,
    /// Groups this user is invited to and has not joined.
    invitations: BTreeSet<GroupId>,
}

#[derive(Debug, Clone)]
struct Session {
    user: UserId,
    device_id: String,
    /// The device accepts LZ4-compressed frames.
    lz4: bool,
}

/// The state of one live connection.
#[derive(Debug, Default)]
struct Conn {
    session: Option<Session>,
    /// The client's address, where the network layer said.
    ip: Option<IpAddr>,
    /// The password check this connection has at the auth workers (one at
    /// a time).
    check: Option<Check>,
}

/// A password check under way for a connection (live state, never in a
/// snapshot: replay sees only the checks' journaled results).
#[derive(Debug)]
struct Check {
    /// Set when the connection closes, so a worker skips the job.
    cancelled: Arc<AtomicBool>,
    /// The name a login was for (its failures count against it), or the
    /// key a registration holds in `pending` (released if it is dropped).
    name: String,
    registration: bool,
}

impl Check {
    fn login(name: String) -> Self {
        Self {
            cancelled: Arc::default(),
            name,
            registration: false,
        }
    }

    fn registration(key: String) -> Self {
        Self {
            cancelled: Arc::default(),
            name: key,
            registration: true,
        }
    }
}

/// All chat state, and the rules that change it.
pub(crate) struct Logic {
    config: LogicConfig,
    users: Vec<User>,
    /// Keyed by the name's bytes, so that a Send's recipient, checked as
    /// UTF-8 when its frame was decoded, is looked up without a second check.
    by_name: HashMap<Box<[u8]>, UserId>,
    conns: HashMap<ConnId, Conn>,
    /// Every user by the key look-alike names share (the first user, where
    /// names registered before that rule share one).
    by_key: HashMap<String, UserId>,
    /// Names (their keys, from rules 1) whose registration is at an auth
    /// worker.
    pending_names: HashSet<String>,
    /// Every group (index = id - 1), dissolved ones included.
    groups: Vec<Group>,
    /// The auth workers, and the hash a login for an unknown user is
    /// checked against (so it costs what a wrong password does); `None`
    /// while replaying.
    auth: Option<(Sender<AuthJob>, Arc<str>)>,
    /// Limits on password guessing (live state only).
    gate: LoginGate,
    /// When the command being applied arrived (monotonic ms): for the
    /// gate alone.
    now_ms: u64,
    /// Users with at least one device logged in.
    users_online: u64,
    /// Devices (sessions) logged in.
    devices_online: u64,
}

/// How many users there are and how many are online, as logic counts them,
/// and how many messages the inboxes hold, as the fan-out stage counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Registered accounts.
    pub users_registered: u64,
    /// Users with at least one device logged in.
    pub users_online: u64,
    /// Devices logged in (a user on a phone and a laptop counts twice).
    pub devices_online: u64,
    /// Messages held in memory (48 bytes each; their bodies stay in the
    /// journal). Without a message retention, every message ever sent.
    pub messages_held: u64,
    /// Inbox entries held in memory (4 bytes each; one per member a
    /// message went to).
    pub inbox_entries: u64,
}

impl Logic {
    pub(crate) fn new(config: LogicConfig) -> Self {
        Self {
            config,
            users: Vec::new(),
            by_name: HashMap::default(),
            by_key: HashMap::default(),
            conns: HashMap::default(),
            pending_names: HashSet::default(),
            groups: Vec::new(),
            auth: None,
            gate: LoginGate::new(Arc::default(), 0),
            now_ms: 0,
            users_online: 0,
            devices_online: 0,
        }
    }

    /// The counts of users and of who is online now.
    pub(crate) fn census(&self) -> Census {
        Census {
            users_registered: self.users.len() as u64,
            users_online: self.users_online,
            devices_online: self.devices_online,
            ..Census::default()
        }
    }

    /// Connects logic to the auth workers, once replay is done;
    /// `dummy_hash` is what a login for an unknown user is checked
    /// against, and `counters` where the gate counts failures and refusals.
    pub(crate) fn set_auth(
        &mut self,
        auth: Sender<AuthJob>,
        dummy_hash: String,
        counters: Arc<LoginCounters>,
        checks_per_address_max: u32,
    ) {
        self.auth = Some((auth, dummy_hash.into()));
        self.gate = LoginGate::new(counters, checks_per_address_max);
    }

    /// How many accounts exist.
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    fn user(&self, id: UserId) -> &User {
        &self.users[(id.0 - 1) as usize]
    }

    fn user_mut(&mut self, id: UserId) -> &mut User {
        &mut self.users[(id.0 - 1) as usize]
    }

    /// Applies one command from `conn`. `body` is the bytes the command was
    /// decoded from (a `Send`'s ranges point into it); `journaled` is where
    /// it was journaled (`None` for one that is not); `now_ms` is when it
    /// arrived, by a monotonic clock, which only the login limits read
    /// (never anything replay rebuilds). Replies, the changes the SQLite
    /// store projects and the intents for the inboxes go to `out`.
    pub(crate) fn apply(
        &mut self,
        conn: ConnId,
        command: &Command,
        body: &[u8],
        journaled: Option<Journaled>,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        self.now_ms = now_ms;
        match command {
            Command::Send {
                correlation_id,
                view,
            } => {
                self.send(conn, *correlation_id, view, body, out);
            }
            Command::Empty => {}
            Command::Start(started) => {
                self.conns.clear();
                self.gate.clear_checks();
                self.pending_names.clear();
                for user in &mut self.users {
                    user.online.clear();
                }
                self.users_online = 0;
                self.devices_online = 0;
                if let Some(started) = started {
                    // The run's own settings: replay decides as it did.
                    self.config.frame_size_max = started.frame_size_max_bytes as usize;
                    self.config.open_messaging = started.open_messaging;
                    self.config.group_members_max = started.group_members_max as usize;
                }
                self.config.rules_version = started.as_ref().map_or(0, |s| s.rules_version);
                out.intents.push(Intent::Start {
                    dedup_window: started.as_ref().map(|s| s.dedup_window as usize),
                    message_retention_ms: started.as_ref().map(|s| s.message_retention_ms),
                    rules_version: self.config.rules_version,
                });
            }
            Command::Connected(ip) => {
                // A connection id is new (a gateway that announces one twice
                // opens it afresh): a session left on it would stay online
                // with no connection to end it.
                self.disconnect(conn, out);
                self.conns.insert(
                    conn,
                    Conn {
                        ip: *ip,
                        ..Conn::default()
                    },
                );
            }
            Command::Disconnected => self.disconnect(conn, out),
            Command::Invalid {
                correlation_id,
                error,
            } => out.error(conn, *correlation_id, error.code(), error.to_string()),
            Command::Client {
                correlation_id,
                message,
            } => self.client(conn, *correlation_id, message, out),
            Command::Registered(registered) => {
                self.check_done(conn);
                self.registered(conn, registered, journaled, out);
            }
            Command::LoginVerified(verified) => {
                if let Some(check) = self.check_done(conn) {
                    self.gate.succeeded(check.name.as_bytes());
                }
                self.login_verified(conn, verified, out);
            }
            Command::LoginRefused { correlation_id } => {
                if let Some(check) = self.check_done(conn) {
                    let ip = self.conns.get(&conn).and_then(|c| c.ip);
                    self.gate.failed(check.name.as_bytes(), ip, self.now_ms);
                }
                out.error(
                    conn,
                    *correlation_id,
                    ErrorCode::BadCredentials,
                    "wrong user or password",
                );
            }
        }
    }

    /// Ends `conn`: its session, and any password check it has under way
    /// (a worker that has not started it skips it).
    fn disconnect(&mut self, conn: ConnId, out: &mut Outbox) {
        self.end_session(conn, out);
        if let Some(check) = self.check_done(conn) {
            check.cancelled.store(true, Ordering::Relaxed);
            if check.registration {
                self.pending_names.remove(&check.name);
            }
        }
        self.conns.remove(&conn);
    }

    /// The password check `conn` had under way, now done.
    fn check_done(&mut self, conn: ConnId) -> Option<Check> {
        let state = self.conns.get_mut(&conn)?;
        let check = state.check.take()?;
        let ip = state.ip;
        self.gate.check_ended(ip);
        Some(check)
    }

    fn client(&mut self, conn: ConnId, correlation_id: u64, message: &Message, out: &mut Outbox) {
        match message {
            Message::Hello(hello) => {
                if hello.protocol_version != PROTOCOL_VERSION {
                    out.error(
                        conn,
                        correlation_id,
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                            hello.protocol_version
                        ),
                    );
                    out.close(conn);
                    return;
                }
                let reply = Message::HelloOk(proto::HelloOk {
                    protocol_version: PROTOCOL_VERSION,
                    max_frame_bytes: self.config.frame_size_max as u32,
                    heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                });
                out.send(conn, correlation_id, &reply);
            }
            Message::Ping(ping) => {
                out.send(
                    conn,
                    correlation_id,
                    &Message::Pong(proto::Pong { nonce: ping.nonce }),
                );
            }
            Message::Register(register) => self.register(conn, correlation_id, register, out),
            Message::Login(login) => self.login(conn, correlation_id, login, out),
            Message::Logout(_) => {
                if let Some(session) = self.end_session(conn, out) {
                    self.user_mut(session.user)
                        .tokens
                        .remove(&session.device_id);
                }
            }
            Message::Sync(sync) => self.sync(conn, correlation_id, sync, out),
            Message::MarkRead(mark) => self.mark_read(conn, correlation_id, mark, out),
            Message::ContactRequest(m) => {
                self.contact(conn, correlation_id, ContactOp::Request, &m.user, out)
            }
            Message::ContactAccept(m) => {
                self.contact(conn, correlation_id, ContactOp::Accept, &m.user, out)
            }
            Message::ContactDecline(m) => {
                self.contact(conn, correlation_id, ContactOp::Decline, &m.user, out)
            }
            Message::ContactRemove(m) => {
                self.contact(conn, correlation_id, ContactOp::Remove, &m.user, out)
            }
            Message::ContactBlock(m) => {
                let op = if m.blocked {
                    ContactOp::Block
                } else {
                    ContactOp::Unblock
                };
                self.contact(conn, correlation_id, op, &m.user, out)
            }
            Message::ContactSync(m) => {
                self.contact_sync(conn, correlation_id, m.after_version, out)
            }
            Message::GroupCreate(_)
            | Message::GroupInvite(_)
            | Message::GroupJoin(_)
            | Message::GroupLeave(_)
            | Message::GroupRemove(_)
            | Message::GroupRename(_)
            | Message::GroupMembers(_)
            | Message::GroupListRequest(_) => self.group(conn, correlation_id, message, out),
            other => out.error(
                conn,
                correlation_id,
                ErrorCode::UnknownMessageType,
                format!("a client does not send {:?}", other.message_type()),
            ),
        }
    }

    fn session(&self, conn: ConnId) -> Option<&Session> {
        self.conns.get(&conn).and_then(|c| c.session.as_ref())
    }

    /// The user `conn` is logged in as; if none, answers `NOT_LOGGED_IN`.
    fn logged_in(&self, conn: ConnId, correlation_id: u64, out: &mut Outbox) -> Option<UserId> {
        let user = self.session(conn).map(|session| session.user);
        if user.is_none() {
            out.error(conn, correlation_id, ErrorCode::NotLoggedIn, "log in first");
        }
        user
    }

    fn register(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        register: &proto::Register,
        out: &mut Outbox,
    ) {
        if let Err(reason) = check_user_name(&register.user, self.config.rules_version) {
            out.error(conn, correlation_id, ErrorCode::MalformedFrame, reason);
            return;
        }
        if register.password.is_empty() || register.password.len() > PASSWORD_BYTES_MAX {
            out.error(
                conn,
                correlation_id,
                ErrorCode::MalformedFrame,
                format!("a password has 1 to {PASSWORD_BYTES_MAX} bytes"),
            );
            return;
        }
        let key = self.registration_key(&register.user);
        if self.name_taken(&register.user, &key) || self.pending_names.contains(&key) {
            out.error(
                conn,
                correlation_id,
                ErrorCode::UserExists,
                format!(
                    "user {:?} exists, or one whose name looks the same",
                    register.user
                ),
            );
            return;
        }
        let job = |cancelled| AuthJob::Hash {
            conn,
            correlation_id,
            user: register.user.clone(),
            password: register.password.clone(),
            cancelled,
        };
        if self.submit(
            conn,
            correlation_id,
            Check::registration(key.clone()),
            job,
            out,
        ) {
            self.pending_names.insert(key);
        }
    }

    /// What a registration of `name` is known by while it is hashed, and
    /// is checked against: from rules 1 the key look-alike names share,
    /// before them the name itself.
    fn registration_key(&self, name: &str) -> String {
        if self.config.rules_version >= 1 {
            name_key(name)
        } else {
            name.to_owned()
        }
    }

    /// Whether a new registration may not take `name` (whose
    /// [`Logic::registration_key`] is `key`): a user has it, or (from
    /// rules 1) a name that looks the same.
    fn name_taken(&self, name: &str, key: &str) -> bool {
        self.by_name.contains_key(name.as_bytes())
            || (self.config.rules_version >= 1 && self.by_key.contains_key(key))
    }

    fn login(&mut self, conn: ConnId, correlation_id: u64, login: &proto::Login, out: &mut Outbox) {
        if let Err(reason) = check_name("device id", &login.device_id) {
            out.error(conn, correlation_id, ErrorCode::MalformedFrame, reason);
            return;
        }
        let refuse = |out: &mut Outbox| {
            out.error(
                conn,
                correlation_id,
                ErrorCode::BadCredentials,
                "wrong user or password",
            )
        };
        let user_id = self.by_name.get(login.user.as_bytes()).copied();
        match &login.secret {
            Some(login::Secret::Password(password)) => {
                // An unknown user's password is checked too, against a hash
                // nobody knows the password of: both take one argon2 check.
                let password_hash = match user_id {
                    Some(user_id) => self.user(user_id).password_hash.as_str().into(),
                    None => self.dummy_hash(),
                };
                let job = |cancelled| AuthJob::Verify {
                    conn,
                    correlation_id,
                    user_id,
                    device_id: login.device_id.clone(),
                    delivery_mode: login.delivery_mode,
                    lz4: accepts_lz4(login),
                    password: password.clone(),
                    password_hash,
                    cancelled,
                };
                let check = Check::login(login.user.clone());
                self.submit(conn, correlation_id, check, job, out);
            }
            Some(login::Secret::Token(token)) => {
                // Not limited by the gate: a token login is journaled, and
                // replay must open the same sessions without it. A token
                // is 128 random bits, not a guess away.
                let Some(user_id) = user_id else {
                    return refuse(out);
                };
                let known = self.user(user_id).tokens.get(&login.device_id);
                if known.is_none_or(|known| known != token) {
                    return refuse(out);
                }
                let token = token.clone();
                self.open_session(conn, correlation_id, user_id, login, token, out);
            }
            None => refuse(out),
        }
    }

    fn dummy_hash(&self) -> Arc<str> {
        let Some((_, dummy_hash)) = &self.auth else {
            unreachable!("a password login while replaying");
        };
        dummy_hash.clone()
    }

    /// Hands `check` for `conn` to the auth workers, as the job `job`
    /// builds around the check's cancel flag, and records it on the
    /// connection; false, with an error to the client, if the gate refuses
    /// it, the connection has one under way, or the workers are saturated.
    fn submit(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        check: Check,
        job: impl FnOnce(Arc<AtomicBool>) -> AuthJob,
        out: &mut Outbox,
    ) -> bool {
        let Some((auth, _)) = &self.auth else {
            // Replay never meets a command that needs the workers: only
            // their results are journaled.
            unreachable!("an auth job while replaying");
        };
        let Some(state) = self.conns.get(&conn) else {
            // A gateway that never announced the connection.
            out.error(
                conn,
                correlation_id,
                ErrorCode::Internal,
                "unknown connection",
            );
            return false;
        };
        if state.check.is_some() {
            out.error(
                conn,
                correlation_id,
                ErrorCode::Overloaded,
                "one login or registration at a time on a connection: wait for its answer",
            );
            return false;
        }
        let login_name = (!check.registration).then_some(check.name.as_bytes());
        if let Err(refusal) = self.gate.check(login_name, state.ip, self.now_ms) {
            let retry_after_ms = u32::try_from(refusal.retry_after_ms()).unwrap_or(u32::MAX);
            out.send(
                conn,
                correlation_id,
                &Message::retry_after(retry_after_ms, refusal.text()),
            );
            return false;
        }
        match auth.try_send(job(check.cancelled.clone())) {
            Ok(()) => {
                let ip = state.ip;
                self.gate.check_started(ip);
                self.conns.get_mut(&conn).expect("looked up above").check = Some(check);
                true
            }
            Err(TrySendError::Full(_)) => {
                out.error(
                    conn,
                    correlation_id,
                    ErrorCode::Overloaded,
                    "too many logins at once; try again",
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                out.error(
                    conn,
                    correlation_id,
                    ErrorCode::Internal,
                    "the server is stopping",
                );
                false
            }
        }
    }

    fn registered(
        &mut self,
        conn: ConnId,
        registered: &Registered,
        journaled: Option<Journaled>,
        out: &mut Outbox,
    ) {
        let key = self.registration_key(&registered.user);
        self.pending_names.remove(&key);
        if self.name_taken(&registered.user, &key) {
            out.error(
                conn,
                registered.correlation_id,
                ErrorCode::UserExists,
                format!(
                    "user {:?} exists, or one whose name looks the same",
                    registered.user
                ),
            );
            return;
        }
        let journaled = journaled.expect("a registration is always journaled before logic");
        let user_id = UserId(self.users.len() as u64 + 1);
        self.users.push(User {
            name: registered.user.clone(),
            password_hash: registered.password_hash.clone(),
            tokens: HashMap::default(),
            online: Vec::new(),
            contacts: HashMap::default(),
            contact_version: 0,
            groups: BTreeSet::new(),
            invitations: BTreeSet::new(),
        });
        out.intents.push(Intent::Account {
            name: registered.user.clone(),
        });
        self.by_name
            .insert(registered.user.as_bytes().into(), user_id);
        // Under rules 0 the registration key was the name itself.
        let look_alike_key = if self.config.rules_version >= 1 {
            key
        } else {
            name_key(&registered.user)
        };
        self.by_key.entry(look_alike_key).or_insert(user_id);
        out.send(
            conn,
            registered.correlation_id,
            &Message::RegisterOk(proto::RegisterOk { user_id: user_id.0 }),
        );
        out.projections.push(Projection::Account {
            user_id,
            name: registered.user.clone(),
            password_hash: registered.password_hash.clone(),
            created_ms: journaled.timestamp_ns / 1_000_000,
        });
    }

    fn login_verified(&mut self, conn: ConnId, verified: &LoginVerified, out: &mut Outbox) {
        let user_id = UserId(verified.user_id);
        if !self.conns.contains_key(&conn)
            || verified.user_id == 0
            || verified.user_id > self.users.len() as u64
        {
            // The device left before its password was checked.
            return;
        }
        let login = proto::Login {
            user: String::new(),
            secret: None,
            device_id: verified.device_id.clone(),
            delivery_mode: verified.delivery_mode,
            accept_compression: if verified.lz4 {
                vec![Compression::Lz4 as i32]
            } else {
                Vec::new()
            },
        };
        self.user_mut(user_id)
            .tokens
            .insert(verified.device_id.clone(), verified.token.clone());
        self.open_session(
            conn,
            verified.correlation_id,
            user_id,
            &login,
            verified.token.clone(),
            out,
        );
    }

    fn open_session(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        user_id: UserId,
        login: &proto::Login,
        token: String,
        out: &mut Outbox,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.end_session(conn, out);
        let mode = match DeliveryMode::try_from(login.delivery_mode) {
            Ok(DeliveryMode::PushNotice) => DeliveryMode::PushNotice,
            _ => DeliveryMode::PushMessage,
        };
        let lz4 = accepts_lz4(login);
        let session = Session {
            user: user_id,
            device_id: login.device_id.clone(),
            lz4,
        };
        self.conns.get_mut(&conn).expect("checked above").session = Some(session);
        let online = &mut self.user_mut(user_id).online;
        online.push(conn);
        if online.len() == 1 {
            self.users_online += 1;
        }
        self.devices_online += 1;
        // The fan-out stage answers LoginOk: it knows the inbox head.
        out.intents.push(Intent::SessionOpened {
            user: user_id,
            device_id: login.device_id.as_str().into(),
            mode,
            lz4,
            correlation_id,
            token: token.into(),
        });
    }

    fn end_session(&mut self, conn: ConnId, out: &mut Outbox) -> Option<Session> {
        let session = self.conns.get_mut(&conn)?.session.take()?;
        let online = &mut self.user_mut(session.user).online;
        online.retain(|&c| c != conn);
        if online.is_empty() {
            self.users_online -= 1;
        }
        self.devices_online -= 1;
        out.intents
            .push(Intent::SessionClosed { user: session.user });
        Some(session)
    }

    fn send(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        view: &SendView,
        body: &[u8],
        out: &mut Outbox,
    ) {
        let Some(sender_id) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let body_max = self.config.frame_size_max - BODY_HEADROOM_BYTES;
        if view.body.len() > body_max {
            out.error(
                conn,
                correlation_id,
                ErrorCode::FrameTooLarge,
                format!("a message body has at most {body_max} bytes"),
            );
            return;
        }
        let recipient = view.recipient_bytes(body);
        let (to, refusal) = if view.group_id != 0 {
            if !recipient.is_empty() {
                out.error(
                    conn,
                    correlation_id,
                    ErrorCode::MalformedFrame,
                    "a Send names a recipient or a group, not both",
                );
                return;
            }
            let group = GroupId(view.group_id);
            let refusal = match self.group_ref(group) {
                None => Some((ErrorCode::UnknownGroup, format!("no group {}", group.0))),
                Some(_) if !self.user(sender_id).groups.contains(&group) => Some((
                    ErrorCode::NotMember,
                    format!("you are not a member of group {}", group.0),
                )),
                Some(_) => None,
            };
            (Peer::group(group), refusal)
        } else {
            let Some(&recipient_id) = self.by_name.get(recipient) else {
                out.error(
                    conn,
                    correlation_id,
                    ErrorCode::UnknownRecipient,
                    format!("no user {:?}", view.recipient(body)),
                );
                return;
            };
            let refusal = (!self.may_message(sender_id, recipient_id)).then(|| {
                let text = format!("{} is not your friend", view.recipient(body));
                (ErrorCode::NotFriends, text)
            });
            (Peer::user(recipient_id), refusal)
        };
        // A refused Send may be the resend of a message stored before the
        // sender left the group or lost the friend: from rules 1 the
        // fan-out stage, which holds the resend keys, answers it with the
        // original acknowledgement if so, and with the refusal if not.
        let keyed = self.config.rules_version >= 1 && view.client_message_id != 0;
        if let (Some((code, text)), false) = (&refusal, keyed) {
            out.error(conn, correlation_id, *code, text.clone());
            return;
        }
        out.intents.push(Intent::Message {
            sender: sender_id,
            to,
            correlation_id,
            client_message_id: view.client_message_id,
            body: view.body.clone(),
            refused: refusal.map(Box::new),
        });
    }

    /// Whether `from` may message (or invite) `to`: friends only, unless
    /// the server runs open.
    fn may_message(&self, from: UserId, to: UserId) -> bool {
        self.config.open_messaging
            || from == to
            || self.contact_state(from, to) == ContactState::Friend
    }

    fn sync(&self, conn: ConnId, correlation_id: u64, sync: &proto::Sync, out: &mut Outbox) {
        let Some(session) = self.session(conn) else {
            out.error(conn, correlation_id, ErrorCode::NotLoggedIn, "log in first");
            return;
        };
        out.intents.push(Intent::Sync {
            user: session.user,
            correlation_id,
            after: InboxSeq(sync.after_sequence),
            limit: sync.limit,
            lz4: session.lz4,
        });
    }

    fn mark_read(
        &self,
        conn: ConnId,
        correlation_id: u64,
        mark: &proto::MarkRead,
        out: &mut Outbox,
    ) {
        let Some(user_id) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let mut former_member = false;
        let peer = if mark.group_id != 0 {
            let group = GroupId(mark.group_id);
            let Some(found) = self.group_ref(group) else {
                out.error(
                    conn,
                    correlation_id,
                    ErrorCode::UnknownGroup,
                    format!("no group {}", group.0),
                );
                return;
            };
            // A former member may still mark what it received read; from
            // rules 1 someone the group never reached may not (the fan-out
            // stage, which holds the inboxes, tells them apart).
            former_member = self.config.rules_version >= 1 && !found.members.contains(&user_id);
            Peer::group(group)
        } else {
            let Some(&peer) = self.by_name.get(mark.peer.as_bytes()) else {
                out.error(
                    conn,
                    correlation_id,
                    ErrorCode::UnknownRecipient,
                    format!("no user {:?}", mark.peer),
                );
                return;
            };
            Peer::user(peer)
        };
        out.intents.push(Intent::MarkRead {
            user: user_id,
            correlation_id,
            peer,
            up_to: InboxSeq(mark.up_to_sequence),
            former_member,
        });
    }
}

fn accepts_lz4(login: &proto::Login) -> bool {
    login
        .accept_compression
        .contains(&(Compression::Lz4 as i32))
}
