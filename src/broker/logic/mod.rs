//! The chat logic: one thread owns every piece of state.
//!
//! Logic applies commands in journal order. It is deterministic: ids and
//! times come from the journaled record (the message id is the record's
//! sequence, its time the record's timestamp), never from a clock or a
//! random source here, so replaying the journal rebuilds the same state.
//! Commands that are not journaled (a ping, a password still to be hashed)
//! change nothing that replay needs.
//!
//! The state is kept in rooms, one per domain, each a struct in a module
//! of its own that owns its data: accounts (`accounts.rs`: names, hashes,
//! tokens), sessions (`sessions.rs`: connections, devices online),
//! contacts (`contacts.rs`) and groups (`groups.rs`). [`Logic`] routes each
//! command to its room, with a [`Call`] (who asked, where answers go) and
//! read-only views of the rooms it consults; registering and logging in,
//! which cross the accounts, the sessions and the login gate, are in
//! `sign_in.rs`. Logic reaches nothing outside: password work leaves as
//! [`Outbox::auth`] jobs, which the logic stage hands to the workers.
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
//! 3. **Room.** A struct that owns the domain's state, in a module of its
//!    own beside this one, with a `# Invariants` section in its module
//!    docs, its command handlers (taking a [`Call`] and what they consult
//!    of the other rooms, such as a `Directory` of names and devices
//!    online), and a field of [`Logic`] that `Logic::room` routes its
//!    message types to. A command changes nothing or is refused with an
//!    error to its connection only. A rule that changes what a journaled
//!    command does is gated on `rules_version` (bumping
//!    [`RULES_VERSION`]), so old journals replay as they were. A room that
//!    keeps something per user grows in `Logic::registered`.
//! 4. **Fan-out.** Work on the inboxes or other per-recipient state leaves
//!    as an [`Intent`] for the fan-out stage, which also answers the
//!    command when its answer needs that state (a `SendAck`).
//! 5. **Snapshot.** The room's `encode` / `decode` of its part, called
//!    from `snapshot.rs` (bumping the snapshot format, and reading the
//!    version before it), and its `digest`, called from `digest.rs` for the
//!    replay tests.
//! 6. **Invariants.** The room's `check_invariants` checks what its
//!    `# Invariants` claim; `Logic::check_invariants` (`digest.rs`) calls
//!    it, and the simulation runs that after every step.
//! 7. **Projection.** What operators query, as a [`Projection`] the SQLite
//!    store applies in its batches (`store.rs`).
//! 8. **Simulation.** Steps for its commands in `broker/sim/mod.rs`, and what
//!    its promises are, checked against the simulation's oracle.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::event::{Command, Intent, Journaled, Outbox};
use super::ids::{ConnId, DeviceId, GroupId, InboxSeq, Peer, UserId};

use crate::codec::proto::{self, Compression, ContactState, DeliveryMode, ErrorCode};
use crate::codec::SendView;
use crate::codec::{Message, PROTOCOL_VERSION};

mod accounts;
mod activity;
mod contacts;
#[cfg(test)]
mod digest;
mod gate;
mod groups;
mod names;
mod sessions;
mod sign_in;
mod snapshot;

use accounts::Accounts;
use activity::Activity;
use contacts::{ContactOp, Contacts, Directory};
pub(crate) use gate::address_key;
use gate::LoginGate;
pub use gate::{LoginCounters, LoginCounts};
pub use groups::GROUP_NAME_BYTES_MAX;
use groups::{GroupRules, Groups};
pub(crate) use groups::{GROUP_INFO_BYTES_PER_MEMBER, GROUP_INFO_OVERHEAD_BYTES};

use sessions::{Check, Session, Sessions};

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
    pub(crate) heartbeat_interval_ms_max: u32,
    /// Any user may message (or invite into a group) any other, as a plain
    /// broker; otherwise only friends.
    pub(crate) open_messaging: bool,
    /// The most members a group may have.
    pub(crate) group_members_max: usize,
    /// The rules the records being applied were decided under.
    pub(crate) rules_version: u32,
}

/// All chat state, one room per domain, and the routing of commands to
/// them. Logic reaches nothing outside: password work leaves as
/// [`Outbox::auth`] jobs, inbox work as intents.
pub(crate) struct Logic {
    config: LogicConfig,
    accounts: Accounts,
    sessions: Sessions,
    contacts: Contacts,
    groups: Groups,
    /// The hash a login for an unknown user is checked against (so it
    /// costs what a wrong password does); `None` while replaying, which
    /// never meets a password.
    dummy_hash: Option<Arc<str>>,
    /// Limits on password guessing (live state only).
    gate: LoginGate,
    /// Who sent anything lately (live state only).
    activity: Activity,
    /// Serving, not replaying: set with the auth workers.
    live: bool,
    /// When the command being applied arrived (monotonic ms): for the
    /// gate alone.
    now_ms: u64,
}

/// Who asked, and where the answers go: what a room's command handler
/// gets from the routing.
pub(super) struct Call<'a> {
    pub(super) conn: ConnId,
    pub(super) correlation_id: u64,
    /// The user the connection is logged in as.
    pub(super) me: UserId,
    pub(super) out: &'a mut Outbox,
}

impl Call<'_> {
    pub(super) fn error(&mut self, code: ErrorCode, text: impl Into<String>) {
        self.out.error(self.conn, self.correlation_id, code, text);
    }

    pub(super) fn send(&mut self, message: &Message) {
        self.out.send(self.conn, self.correlation_id, message);
    }

    pub(super) fn ok_group(&mut self, group: GroupId) {
        self.send(&Message::GroupOk(proto::GroupOk { group_id: group.0 }));
    }
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
    /// Users who sent anything (a ping included) in the last minute.
    pub users_active: u64,
}

impl Logic {
    pub(crate) fn new(config: LogicConfig) -> Self {
        Self {
            config,
            accounts: Accounts::default(),
            sessions: Sessions::default(),
            contacts: Contacts::default(),
            groups: Groups::default(),
            dummy_hash: None,
            gate: LoginGate::new(Arc::default(), 0),
            activity: Activity::default(),
            live: false,
            now_ms: 0,
        }
    }

    /// The counts of users, of who is online now, and of who sent
    /// anything in the last minute (as of the last command applied).
    pub(crate) fn census(&mut self) -> Census {
        Census {
            users_registered: self.accounts.len() as u64,
            users_online: self.sessions.users_online,
            devices_online: self.sessions.devices_online,
            users_active: self.activity.active(self.now_ms),
            ..Census::default()
        }
    }

    /// Lets logic take password logins and registrations, once replay is
    /// done: `dummy_hash` is what a login for an unknown user is checked
    /// against, and `counters` where the gate counts failures and refusals.
    pub(crate) fn set_auth(
        &mut self,
        dummy_hash: String,
        counters: Arc<LoginCounters>,
        checks_per_address_max: u32,
    ) {
        self.dummy_hash = Some(dummy_hash.into());
        self.gate = LoginGate::new(counters, checks_per_address_max);
        self.live = true;
    }

    /// How many accounts exist.
    pub(crate) fn user_count(&self) -> usize {
        self.accounts.len()
    }

    /// Applies one command from `conn`. `body` is the bytes the command was
    /// decoded from (a `Send`'s ranges point into it); `journaled` is where
    /// it was journaled (`None` for one that is not); `now_ms` is when it
    /// arrived, by a monotonic clock, which only the login limits read
    /// (never anything replay rebuilds). Replies, the changes the SQLite
    /// store projects, the intents for the inboxes and the jobs for the
    /// auth workers go to `out`.
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
                self.sessions.clear();
                self.activity.clear();
                self.gate.clear_checks();
                self.accounts.release_all();
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
                self.sessions.connect(conn, *ip);
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
                    let ip = self.sessions.conn(conn).and_then(|c| c.ip);
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

    /// The auth workers did not take the job logic left for `conn` (their
    /// queue is full, or they have stopped): the check ends without a
    /// result, and the client is told why.
    pub(crate) fn check_not_started(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        stopping: bool,
        out: &mut Outbox,
    ) {
        if let Some(check) = self.check_done(conn) {
            if check.registration {
                self.accounts.release(&check.name);
            }
        }
        if stopping {
            out.error(
                conn,
                correlation_id,
                ErrorCode::Internal,
                "the server is stopping",
            );
        } else {
            let text = "too many logins at once; try again";
            out.error(conn, correlation_id, ErrorCode::Overloaded, text);
        }
    }

    /// Ends `conn`: its session, and any password check it has under way
    /// (a worker that has not started it skips it).
    fn disconnect(&mut self, conn: ConnId, out: &mut Outbox) {
        self.end_session(conn, out);
        if let Some(check) = self.check_done(conn) {
            check.cancelled.store(true, Ordering::Relaxed);
            if check.registration {
                self.accounts.release(&check.name);
            }
        }
        self.sessions.remove(conn);
    }

    /// The password check `conn` had under way, now done.
    fn check_done(&mut self, conn: ConnId) -> Option<Check> {
        let state = self.sessions.conn_mut(conn)?;
        let check = state.check.take()?;
        let ip = state.ip;
        self.gate.check_ended(ip);
        Some(check)
    }

    fn client(&mut self, conn: ConnId, correlation_id: u64, message: &Message, out: &mut Outbox) {
        if let (true, Some(session)) = (self.live, self.sessions.session(conn)) {
            self.activity.touch(session.user, self.now_ms);
        }
        match message {
            Message::Hello(hello) => self.hello(conn, correlation_id, hello, out),
            Message::Ping(ping) => {
                // The network layer holds the connection to the same
                // interval (it reads the Ping too).
                let interval_ms = crate::codec::accepted_heartbeat_interval(
                    ping.interval_ms,
                    self.config.heartbeat_interval_ms,
                    self.config.heartbeat_interval_ms_max,
                );
                let pong = Message::Pong(proto::Pong {
                    nonce: ping.nonce,
                    interval_ms,
                });
                out.send(conn, correlation_id, &pong);
            }
            Message::Register(register) => self.register(conn, correlation_id, register, out),
            Message::Login(login) => self.login(conn, correlation_id, login, out),
            Message::Logout(_) => {
                if let Some(session) = self.end_session(conn, out) {
                    let account = self.accounts.get_mut(session.user);
                    account.tokens.remove(session.device_id.as_str());
                }
            }
            Message::Sync(sync) => self.sync(conn, correlation_id, sync, out),
            Message::MarkRead(mark) => self.mark_read(conn, correlation_id, mark, out),
            _ => self.room(conn, correlation_id, message, out),
        }
    }

    fn hello(&self, conn: ConnId, correlation_id: u64, hello: &proto::Hello, out: &mut Outbox) {
        if hello.protocol_version != PROTOCOL_VERSION {
            let text = format!(
                "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            );
            out.error(conn, correlation_id, ErrorCode::UnsupportedVersion, text);
            out.close(conn);
            return;
        }
        let reply = Message::HelloOk(proto::HelloOk {
            protocol_version: PROTOCOL_VERSION,
            max_frame_bytes: self.config.frame_size_max as u32,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            heartbeat_interval_ms_max: self.config.heartbeat_interval_ms_max,
        });
        out.send(conn, correlation_id, &reply);
    }

    /// Routes a logged-in user's command to the room of its domain.
    fn room(&mut self, conn: ConnId, correlation_id: u64, message: &Message, out: &mut Outbox) {
        let Some(room) = Room::of(message) else {
            let text = format!("a client does not send {:?}", message.message_type());
            out.error(conn, correlation_id, ErrorCode::UnknownMessageType, text);
            return;
        };
        let Some(me) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let mut call = Call {
            conn,
            correlation_id,
            me,
            out,
        };
        let who = Directory {
            accounts: &self.accounts,
            sessions: &self.sessions,
        };
        match room {
            Room::Contact(op, name) => {
                let rules_version = self.config.rules_version;
                self.contacts
                    .change(&who, rules_version, &mut call, op, name);
            }
            Room::ContactSync(after) => {
                let budget =
                    self.config.frame_size_max - crate::broker::delivery::SYNC_BATCH_OVERHEAD_BYTES;
                self.contacts.sync(&who, &mut call, after, budget);
            }
            Room::Group => {
                let (config, contacts) = (&self.config, &self.contacts);
                let may_invite = |from, to| may_message(config, contacts, from, to);
                let rules = GroupRules {
                    who,
                    may_invite: &may_invite,
                    members_max: config.group_members_max,
                    frame_size_max: config.frame_size_max,
                };
                self.groups.command(&rules, &mut call, message);
            }
        }
    }

    /// The user `conn` is logged in as; if none, answers `NOT_LOGGED_IN`.
    fn logged_in(&self, conn: ConnId, correlation_id: u64, out: &mut Outbox) -> Option<UserId> {
        let user = self.sessions.session(conn).map(|session| session.user);
        if user.is_none() {
            out.error(conn, correlation_id, ErrorCode::NotLoggedIn, "log in first");
        }
        user
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
        if self.sessions.conn(conn).is_none() {
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
            device_id: DeviceId::from(login.device_id.as_str()),
            lz4,
        };
        self.sessions.open(conn, session);
        if self.live {
            self.activity.touch(user_id, self.now_ms);
        }
        // The fan-out stage answers LoginOk: it knows the inbox head.
        out.intents.push(Intent::SessionOpened {
            user: user_id,
            device_id: DeviceId::from(login.device_id.as_str()),
            mode,
            lz4,
            correlation_id,
            token: token.into(),
        });
    }

    fn end_session(&mut self, conn: ConnId, out: &mut Outbox) -> Option<Session> {
        let session = self.sessions.close(conn)?;
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
        if self.live {
            self.activity.touch(sender_id, self.now_ms);
        }
        let body_max = self.config.frame_size_max - BODY_HEADROOM_BYTES;
        if view.body.len() > body_max {
            let text = format!("a message body has at most {body_max} bytes");
            out.error(conn, correlation_id, ErrorCode::FrameTooLarge, text);
            return;
        }
        let recipient = view.recipient_bytes(body);
        let (to, refusal) = if view.group_id != 0 {
            if !recipient.is_empty() {
                let text = "a Send names a recipient or a group, not both";
                out.error(conn, correlation_id, ErrorCode::MalformedFrame, text);
                return;
            }
            let group = GroupId(view.group_id);
            let refusal = match self.groups.live(group) {
                None => Some((ErrorCode::UnknownGroup, format!("no group {}", group.0))),
                Some(_) if !self.groups.is_member(sender_id, group) => Some((
                    ErrorCode::NotMember,
                    format!("you are not a member of group {}", group.0),
                )),
                Some(_) => None,
            };
            (Peer::group(group), refusal)
        } else {
            let Some(recipient_id) = self.accounts.find(recipient) else {
                let text = format!("no user {:?}", view.recipient(body));
                out.error(conn, correlation_id, ErrorCode::UnknownRecipient, text);
                return;
            };
            let allowed = may_message(&self.config, &self.contacts, sender_id, recipient_id);
            let refusal = (!allowed).then(|| {
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

    fn sync(&self, conn: ConnId, correlation_id: u64, sync: &proto::Sync, out: &mut Outbox) {
        let Some(session) = self.sessions.session(conn) else {
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
            let Some(found) = self.groups.live(group) else {
                let text = format!("no group {}", group.0);
                out.error(conn, correlation_id, ErrorCode::UnknownGroup, text);
                return;
            };
            // A former member may still mark what it received read; from
            // rules 1 someone the group never reached may not (the fan-out
            // stage, which holds the inboxes, tells them apart).
            former_member = self.config.rules_version >= 1 && !found.members.contains(&user_id);
            Peer::group(group)
        } else {
            let Some(peer) = self.accounts.find(mark.peer.as_bytes()) else {
                let text = format!("no user {:?}", mark.peer);
                out.error(conn, correlation_id, ErrorCode::UnknownRecipient, text);
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

/// The room a logged-in user's message goes to.
enum Room<'a> {
    Contact(ContactOp, &'a str),
    ContactSync(u64),
    Group,
}

impl<'a> Room<'a> {
    /// The room of `message`; `None` for one a client does not send.
    fn of(message: &'a Message) -> Option<Self> {
        Some(match message {
            Message::ContactRequest(m) => Room::Contact(ContactOp::Request, &m.user),
            Message::ContactAccept(m) => Room::Contact(ContactOp::Accept, &m.user),
            Message::ContactDecline(m) => Room::Contact(ContactOp::Decline, &m.user),
            Message::ContactRemove(m) => Room::Contact(ContactOp::Remove, &m.user),
            Message::ContactBlock(m) if m.blocked => Room::Contact(ContactOp::Block, &m.user),
            Message::ContactBlock(m) => Room::Contact(ContactOp::Unblock, &m.user),
            Message::ContactSync(m) => Room::ContactSync(m.after_version),
            Message::GroupCreate(_)
            | Message::GroupInvite(_)
            | Message::GroupJoin(_)
            | Message::GroupLeave(_)
            | Message::GroupRemove(_)
            | Message::GroupRename(_)
            | Message::GroupMembers(_)
            | Message::GroupListRequest(_) => Room::Group,
            _ => return None,
        })
    }
}

/// Whether `from` may message (or invite) `to`: friends only, unless
/// the server runs open.
fn may_message(config: &LogicConfig, contacts: &Contacts, from: UserId, to: UserId) -> bool {
    config.open_messaging || from == to || contacts.state(from, to) == ContactState::Friend
}

fn user_exists(name: &str) -> String {
    format!("user {name:?} exists, or one whose name looks the same")
}

fn accepts_lz4(login: &proto::Login) -> bool {
    login
        .accept_compression
        .contains(&(Compression::Lz4 as i32))
}

#[cfg(test)]
mod tests;
