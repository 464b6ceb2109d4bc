//! The inboxes, owned by the fan-out stage.
//!
//! Logic checks each command against accounts, sessions, contacts and group
//! membership, and leaves [`Intent`]s in the event; this state carries them
//! out on the fan-out thread: it appends to inboxes (one entry per member
//! for a group message: fan-out on write; an entry is a 4-byte reference to
//! the message, stored once), keeps read state and unread
//! counts, acknowledges sends, pushes to online devices and answers Sync.
//! A 500-member group message thus costs the logic thread one membership
//! check, not 500 appends.
//!
//! Like logic, it is deterministic: it learns accounts, sessions and group
//! members only from intents, and takes ids and times from the journaled
//! record, so replay (logic, then this, record by record) rebuilds it.
//!
//! With a message retention (`message_retention_s`), messages older than it
//! leave memory: every inbox drops its expired entries from the front, so
//! inbox sequences never change, and an expired unread entry no longer
//! counts as unread. Expiry, too, goes by the journaled times (see
//! [`Delivery::expire`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::event::{Intent, Journaled, Outbox};
use super::ids::{ConnId, DeviceId, GroupId, InboxSeq, MessageId, Peer, UserId};
use crate::codec::proto::{self, Compression, DeliveryMode, ErrorCode};
use crate::codec::{DeliverRef, Message};
use crate::journal::Position;

mod dedup;
#[cfg(test)]
mod digest;
#[cfg(test)]
mod expiry_probe;
mod mailbox;
mod read;
mod snapshot;
mod sync;

use dedup::Key;
use mailbox::{Device, Mailbox};
pub(crate) use sync::Bodies;

/// What a SyncBatch needs beside its messages (head, flag, keys, header).
pub(super) const SYNC_BATCH_OVERHEAD_BYTES: usize = 64;

/// What the inboxes need to know of the broker's configuration.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryConfig {
    pub(crate) frame_size_max: usize,
    pub(crate) dedup_window: usize,
    pub(crate) sync_limit_max: u32,
    /// How long a message stays in the inboxes, by journaled time; 0 keeps
    /// it for ever.
    pub(crate) message_retention_ms: u64,
    /// The rules the records being applied were decided under (see
    /// `Started.rules_version`): from 1, resends are keyed per device.
    pub(crate) rules_version: u32,
}

/// The longest time between two expiry passes (a pass runs at least 16
/// times per retention, and at most this far apart), so that a message
/// outlasts its retention by at most this much.
const EXPIRY_PASS_EVERY_MS_MAX: u64 = 1_000;

/// The most inboxes one event trims of expired entries: a pass that
/// expires many messages at once (a large group's, say) is spread over
/// the events after it instead of stalling one. One in unit tests, so
/// that their few users leave a backlog to carry over.
const EXPIRY_INBOXES_PER_EVENT_SERVED: usize = 256;
#[cfg(not(test))]
const EXPIRY_INBOXES_PER_EVENT: usize = EXPIRY_INBOXES_PER_EVENT_SERVED;
#[cfg(test)]
const EXPIRY_INBOXES_PER_EVENT: usize = 1;

/// A message, stored once for every inbox it is in.
#[derive(Debug, Clone, Copy)]
struct Stored {
    server_message_id: MessageId,
    sender: UserId,
    /// The recipient of a 1:1 message, or the group of a group message.
    to: Peer,
    timestamp_ms: u64,
    /// Where the `Send` that carried the body is in the journal.
    position: Position,
}

/// An inbox entry: its message's number among all messages ever stored,
/// modulo 2^32 (see [`Delivery::stored`]). Four bytes, because a group
/// message makes one per member; the numbers in memory at once always span
/// less than 2^32 (that many messages of 48 bytes would need 192 GiB), so
/// the wrap never makes two of them equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MessageIndex(u32);

// These sizes set the server's memory per message and per inbox entry
// (docs/OPERATIONS.md quotes them).
const _: () = assert!(std::mem::size_of::<Stored>() == 48);
const _: () = assert!(std::mem::size_of::<MessageIndex>() == 4);

impl Stored {
    /// The conversation this message belongs to, seen by `owner`: the
    /// group, or the other user of a 1:1 conversation.
    fn conversation(&self, owner: UserId) -> Peer {
        if self.to.as_group().is_some() || self.sender == owner {
            self.to
        } else {
            Peer::user(self.sender)
        }
    }
}

/// Every user's inbox and online devices, and every group's members.
///
/// # Invariants
/// - `messages[i]` is message number `first + i`.
/// - Every inbox entry refers to a message in `messages`.
/// - `first <= expire_end <= first + messages.len()`.
/// - `fronts` holds, for each non-empty inbox, its first entry's number.
pub(crate) struct Delivery {
    config: DeliveryConfig,
    users: Vec<Mailbox>,
    /// Every message an inbox may still refer to, in journal order: those
    /// not expired, and expired ones in inboxes not trimmed yet.
    messages: VecDeque<Stored>,
    /// The number of `messages[0]`: how many messages have left memory.
    first: u64,
    /// Messages numbered below this have expired; an inbox may still hold
    /// some of them until it is trimmed (see [`Delivery::trim`]).
    expire_end: u64,
    /// The journaled time (ms) from which the next event runs an expiry
    /// pass.
    next_expiry_ms: u64,
    /// Entries over all inboxes.
    entries_held: u64,
    /// (number of the oldest message in the inbox, user id), once for each
    /// user whose inbox holds an entry: an expiry pass visits only the
    /// users with an expired entry, not every user. Derived from the
    /// inboxes (not in snapshots).
    fronts: BinaryHeap<Reverse<(u64, u64)>>,
    /// Members of each group (index = id - 1), in the order they joined.
    groups: Vec<Vec<UserId>>,
    /// Where message bodies are read from for a sync or a push.
    bodies: Box<dyn Bodies>,
}

impl Delivery {
    pub(crate) fn new(config: DeliveryConfig, bodies: impl Bodies + 'static) -> Self {
        Self {
            config,
            users: Vec::new(),
            messages: VecDeque::new(),
            first: 0,
            expire_end: 0,
            next_expiry_ms: 0,
            entries_held: 0,
            fronts: BinaryHeap::new(),
            groups: Vec::new(),
            bodies: Box::new(bodies),
        }
    }

    /// (messages, inbox entries) held in memory.
    pub(crate) fn held(&self) -> (u64, u64) {
        (self.messages.len() as u64, self.entries_held)
    }

    /// Where the oldest message held is in the journal: no record before
    /// it is needed for Sync.
    pub(crate) fn oldest_message_position(&self) -> Option<Position> {
        self.messages.front().map(|message| message.position)
    }

    /// The message an inbox entry refers to.
    fn stored(&self, index: MessageIndex) -> &Stored {
        &self.messages[self.offset(index)]
    }

    /// Where in `messages` an inbox entry's message is.
    fn offset(&self, index: MessageIndex) -> usize {
        index.0.wrapping_sub(self.first as u32) as usize
    }

    /// Appends the message at `index` to `user`'s inbox (see
    /// [`Mailbox::append`]); returns its inbox sequence.
    fn append(&mut self, user: UserId, index: MessageIndex, message: &Stored) -> u64 {
        let number = self.first + self.offset(index) as u64;
        if self.user(user).inbox.is_empty() {
            self.fronts.push(Reverse((number, user.0)));
        }
        self.entries_held += 1;
        self.user_mut(user).append(user, index, message)
    }

    /// Rebuilds [`Delivery::fronts`] from the inboxes.
    fn index_fronts(&mut self) {
        let fronts: Vec<_> = self
            .users
            .iter()
            .zip(1..)
            .filter_map(|(user, id)| {
                let &front = user.inbox.front()?;
                Some(Reverse((self.first + self.offset(front) as u64, id)))
            })
            .collect();
        self.fronts = fronts.into();
    }

    /// Expires the messages older than the retention at journaled time
    /// `now_ms`, when a pass is due, and trims inboxes of expired entries:
    /// at most `budget` inboxes (all for `None`). Goes by journaled times
    /// and events only, so replay expires exactly what the live run did.
    fn expire(&mut self, now_ms: u64, budget: Option<usize>) {
        let retention = self.config.message_retention_ms;
        if retention > 0 && now_ms >= self.next_expiry_ms {
            self.next_expiry_ms = now_ms + (retention / 16).clamp(1, EXPIRY_PASS_EVERY_MS_MAX);
            let cutoff = now_ms.saturating_sub(retention);
            // Journaled times follow the clock, which may step back: stop
            // at the first message that is not expired, and keep the ones
            // after it.
            let expired = self
                .messages
                .range((self.expire_end - self.first) as usize..)
                .take_while(|message| message.timestamp_ms < cutoff)
                .count();
            self.expire_end += expired as u64;
        }
        self.trim(budget);
    }

    /// Drops expired entries from the front of the inboxes that hold some
    /// (at most `budget` inboxes), oldest first; an expired entry that was
    /// unread stops counting. Then drops the messages no inbox refers to.
    fn trim(&mut self, budget: Option<usize>) {
        let first = self.first;
        let end = self.expire_end;
        let mut trimmed = 0;
        while let Some(&Reverse((front, user_id))) = self.fronts.peek() {
            if front >= end || budget.is_some_and(|budget| trimmed == budget) {
                break;
            }
            trimmed += 1;
            self.fronts.pop();
            let owner = UserId(user_id);
            let user = &mut self.users[(user_id - 1) as usize];
            while let Some(&MessageIndex(index)) = user.inbox.front() {
                // Every entry refers to a message numbered `first` or later.
                let number = first + u64::from(index.wrapping_sub(first as u32));
                if number >= end {
                    self.fronts.push(Reverse((number, user_id)));
                    break;
                }
                user.inbox.pop_front();
                user.expired += 1;
                self.entries_held -= 1;
                let message = &self.messages[(number - first) as usize];
                if message.sender == owner {
                    continue;
                }
                // An entry from another user made its conversation's
                // read state when it was appended.
                let conversation = user.conversations.get_mut(&message.conversation(owner));
                debug_assert!(conversation.is_some());
                if let Some(conversation) = conversation {
                    if user.expired > conversation.read_up_to {
                        conversation.unread -= 1;
                        user.unread_count -= 1;
                    }
                }
            }
        }
        // Every message is in its sender's inbox, so the oldest front is
        // the oldest message still referred to.
        let keep_from = self
            .fronts
            .peek()
            .map_or(end, |&Reverse((front, _))| front.min(end));
        self.messages.drain(..(keep_from - first) as usize);
        self.first = keep_from;
    }

    fn user(&self, id: UserId) -> &Mailbox {
        &self.users[(id.0 - 1) as usize]
    }

    fn user_mut(&mut self, id: UserId) -> &mut Mailbox {
        &mut self.users[(id.0 - 1) as usize]
    }

    /// Carries out one intent for `conn`; `body` is the event's bytes (a
    /// message's body is a range of them), `journaled` where its command was
    /// journaled. Frames go to `out`.
    pub(crate) fn apply(
        &mut self,
        conn: ConnId,
        intent: &Intent,
        body: &[u8],
        journaled: Option<Journaled>,
        out: &mut Outbox,
    ) {
        match intent {
            Intent::Start {
                dedup_window,
                message_retention_ms,
                rules_version,
            } => {
                let settings = (*dedup_window, *message_retention_ms, *rules_version);
                self.start(settings, journaled);
            }
            Intent::Account { name } => self.users.push(Mailbox {
                name: name.clone(),
                ..Mailbox::default()
            }),
            Intent::SessionOpened {
                user,
                device_id,
                mode,
                lz4,
                correlation_id,
                token,
            } => {
                let device = (device_id, *mode, *lz4);
                self.session_opened(conn, *correlation_id, *user, device, token, out);
            }
            Intent::SessionClosed { user } => {
                self.user_mut(*user).devices.retain(|d| d.conn != conn);
            }
            Intent::Message {
                sender,
                to,
                correlation_id,
                client_message_id,
                body: range,
                refused,
            } => {
                let journaled = journaled.expect("a message is always journaled before fan-out");
                let message = NewMessage {
                    sender: *sender,
                    to: *to,
                    client_message_id: *client_message_id,
                    body: &body[range.clone()],
                    refused: refused.as_deref(),
                };
                self.message(conn, *correlation_id, &message, journaled, out);
            }
            Intent::Sync {
                user,
                correlation_id,
                after,
                limit,
                lz4,
            } => self.sync(conn, *correlation_id, *user, after.0, *limit, *lz4, out),
            Intent::MarkRead {
                user,
                correlation_id,
                peer,
                up_to,
                former_member,
            } => {
                if *former_member && !self.user(*user).conversations.contains_key(peer) {
                    out.error(
                        conn,
                        *correlation_id,
                        ErrorCode::NotMember,
                        "you are not a member of this group",
                    );
                    return;
                }
                self.mark_read(conn, *correlation_id, *user, *peer, up_to.0, out)
            }
            Intent::Member {
                group,
                user,
                joined,
            } => self.member(*group, *user, *joined),
        }
    }

    /// A run starts with `settings` (dedup window, retention, rules):
    /// every device is offline.
    fn start(
        &mut self,
        (dedup_window, message_retention_ms, rules_version): (Option<usize>, Option<u64>, u32),
        journaled: Option<Journaled>,
    ) {
        self.config.rules_version = rules_version;
        for user in &mut self.users {
            user.devices.clear();
        }
        if let Some(window) = dedup_window {
            self.config.dedup_window = window;
        }
        if let Some(retention) = message_retention_ms {
            self.config.message_retention_ms = retention;
        }
        // Every start runs a pass under the run's retention and trims
        // every inbox it concerns (nobody waits on a start). Replay from a
        // snapshot applies the start marker it was taken at once more; a
        // second pass at the same time finds nothing.
        if let Some(journaled) = journaled {
            self.next_expiry_ms = 0;
            self.expire(journaled.timestamp_ns / 1_000_000, None);
        }
    }

    /// `user` logged in on `conn` with `device` (its id, delivery mode and
    /// compression): answers `LoginOk` with the inbox's head.
    fn session_opened(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        user: UserId,
        (device_id, mode, lz4): (&DeviceId, DeliveryMode, bool),
        token: &str,
        out: &mut Outbox,
    ) {
        let per_device = self.config.rules_version >= 1;
        let mailbox = self.user_mut(user);
        let slot = if per_device {
            mailbox.device_slot(device_id)
        } else {
            0
        };
        mailbox.devices.push(Device {
            conn,
            mode,
            lz4,
            slot,
        });
        let compression = if lz4 {
            Compression::Lz4
        } else {
            Compression::None
        };
        let reply = Message::LoginOk(proto::LoginOk {
            user_id: user.0,
            token: token.to_string(),
            head_sequence: mailbox.head(),
            unread_count: mailbox.unread_count,
            first_unread_sequence: mailbox.first_unread(),
            compression: compression as i32,
        });
        out.send(conn, correlation_id, &reply);
    }

    /// `user` joined or left `group`.
    fn member(&mut self, group: GroupId, user: UserId, joined: bool) {
        let index = (group.0 - 1) as usize;
        if self.groups.len() <= index {
            self.groups.resize_with(index + 1, Vec::new);
        }
        let members = &mut self.groups[index];
        if joined {
            members.push(user);
        } else {
            members.retain(|&m| m != user);
        }
    }

    fn message(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        message: &NewMessage<'_>,
        journaled: Journaled,
        out: &mut Outbox,
    ) {
        let sender = message.sender;
        let client_message_id = message.client_message_id;
        let ack = |MessageId(server_message_id), InboxSeq(inbox_sequence)| {
            Message::SendAck(proto::SendAck {
                client_message_id,
                server_message_id,
                inbox_sequence,
            })
        };
        let key = self.resend_key(sender, conn, client_message_id);
        if let Some(key) = key {
            let found = self.user(sender).sent.get_for_device(key);
            if let Some((server_message_id, inbox_sequence)) = found {
                // Rules 0 acknowledged any resend as the original.
                let per_device = self.config.rules_version >= 1;
                if per_device && !self.same_message(sender, inbox_sequence, message) {
                    out.error(
                        conn,
                        correlation_id,
                        ErrorCode::ClientIdReused,
                        format!(
                            "client message id {client_message_id} was used lately for another \
                             message (#{}); number each new message anew",
                            inbox_sequence.0
                        ),
                    );
                    return;
                }
                // A resend: acknowledged with the original ids, stored once.
                out.send(
                    conn,
                    correlation_id,
                    &ack(server_message_id, inbox_sequence),
                );
                return;
            }
        }
        if let Some((code, text)) = message.refused {
            out.error(conn, correlation_id, *code, text.clone());
            return;
        }
        let stored = Stored {
            server_message_id: journaled.sequence.message_id(),
            sender,
            to: message.to,
            timestamp_ms: journaled.timestamp_ns / 1_000_000,
            position: journaled.position,
        };
        self.expire(stored.timestamp_ms, Some(EXPIRY_INBOXES_PER_EVENT));
        assert!(
            self.messages.len() < u32::MAX as usize,
            "2^32 messages do not fit in memory"
        );
        // Numbered modulo 2^32 (see `MessageIndex`).
        let index = MessageIndex((self.first + self.messages.len() as u64) as u32);
        self.messages.push_back(stored);
        // The sender's own entry first, so the acknowledgement leads the
        // frames this message makes (a large group's come after it).
        let sender_sequence = self.append(sender, index, &stored);
        if let Some(key) = key {
            let window = self.config.dedup_window;
            self.user_mut(sender).sent.insert(
                key,
                (stored.server_message_id, InboxSeq(sender_sequence)),
                window,
            );
        }
        out.send(
            conn,
            correlation_id,
            &ack(stored.server_message_id, InboxSeq(sender_sequence)),
        );
        self.push(sender, conn, &stored, sender_sequence, message.body, out);
        self.fan_out(conn, index, &stored, message.body, out);
    }

    /// The key a Send from `conn` is deduplicated by, or `None` for none.
    /// Under rules 0 (journals written before per-device keys) it is the
    /// user's client id, 0 included, as it was; from rules 1 it is the
    /// sending device's slot and the id, and 0 is no key.
    fn resend_key(&self, sender: UserId, conn: ConnId, client_message_id: u64) -> Option<Key> {
        if self.config.rules_version == 0 {
            return Some((0, client_message_id));
        }
        if client_message_id == 0 {
            return None;
        }
        let device = self.user(sender).devices.iter().find(|d| d.conn == conn);
        // Logic lets a Send through only from a logged-in connection, and
        // every session it opens reaches this state first.
        let slot = device.expect("a Send comes from a logged-in device").slot;
        Some((slot, client_message_id))
    }

    /// Whether `message` is the one `sender`'s inbox holds at `sequence`
    /// (same conversation, same body): a true resend. A message that has
    /// expired from the inbox cannot be compared, and counts as the same.
    fn same_message(&self, sender: UserId, sequence: InboxSeq, message: &NewMessage<'_>) -> bool {
        let user = self.user(sender);
        let Some(index) = sequence
            .0
            .checked_sub(user.expired + 1)
            .and_then(|at| user.inbox.get(at as usize))
        else {
            return true;
        };
        let stored = *self.stored(*index);
        if stored.to != message.to {
            return false;
        }
        // Read back only on a resend, which is rare: the first send paid
        // nothing for this check.
        match self.body(stored.position) {
            Ok(body) => body == message.body,
            Err(reason) => {
                tracing::error!(%reason, "a resend could not be compared with its original");
                true
            }
        }
    }

    /// Appends a new message to the inbox of everyone else in its
    /// conversation and pushes it to their online devices.
    fn fan_out(
        &mut self,
        conn: ConnId,
        index: MessageIndex,
        stored: &Stored,
        body: &[u8],
        out: &mut Outbox,
    ) {
        let sender = stored.sender;
        let mut deliver_to = |this: &mut Self, user: UserId| {
            let sequence = this.append(user, index, stored);
            this.push(user, conn, stored, sequence, body, out);
        };
        match (stored.to.as_user(), stored.to.as_group()) {
            (Some(recipient), _) => {
                if recipient != sender {
                    deliver_to(self, recipient);
                }
            }
            (None, Some(group)) => {
                // Members are taken out for the loop and put back: the
                // list is not changed by appending to inboxes.
                let members = std::mem::take(&mut self.groups[(group.0 - 1) as usize]);
                for &member in members.iter().filter(|&&m| m != sender) {
                    deliver_to(self, member);
                }
                self.groups[(group.0 - 1) as usize] = members;
            }
            (None, None) => unreachable!("a peer is a user or a group"),
        }
    }

    /// Tells each online device of `user_id` (but `except`) of a new entry:
    /// the message itself, or a notice, as the device asked at login.
    fn push(
        &self,
        user_id: UserId,
        except: ConnId,
        entry: &Stored,
        inbox_sequence: u64,
        body: &[u8],
        out: &mut Outbox,
    ) {
        let user = self.user(user_id);
        // Most often the only device is the sending one: nothing to build.
        if user.devices.iter().all(|device| device.conn == except) {
            return;
        }
        let (recipient, group_id) = self.to_fields(entry.to);
        let deliver = DeliverRef {
            sender: &self.user(entry.sender).name,
            server_message_id: entry.server_message_id.0,
            inbox_sequence,
            timestamp_ms: entry.timestamp_ms,
            body,
            recipient,
            group_id,
        };
        for device in &user.devices {
            if device.conn == except {
                continue;
            }
            if device.mode == DeliveryMode::PushNotice {
                let notify = proto::Notify {
                    head_sequence: user.head(),
                    unread_count: user.unread_count,
                };
                out.send(device.conn, 0, &Message::Notify(notify));
                continue;
            }
            out.send_deliver(device.conn, &deliver);
        }
    }

    /// A Deliver's recipient and group fields for a conversation peer.
    fn to_fields(&self, to: Peer) -> (&str, u64) {
        match (to.as_user(), to.as_group()) {
            (Some(user), _) => (&self.user(user).name, 0),
            (None, Some(group)) => ("", group.0),
            (None, None) => unreachable!("a peer is a user or a group"),
        }
    }

    fn deliver(&self, entry: &Stored, inbox_sequence: u64, body: Vec<u8>) -> proto::Deliver {
        let (recipient, group_id) = self.to_fields(entry.to);
        proto::Deliver {
            sender: self.user(entry.sender).name.clone(),
            server_message_id: entry.server_message_id.0,
            inbox_sequence,
            timestamp_ms: entry.timestamp_ms,
            body,
            recipient: recipient.to_owned(),
            group_id,
        }
    }
}

/// A new message's fields, borrowed from the event.
struct NewMessage<'a> {
    sender: UserId,
    to: Peer,
    client_message_id: u64,
    body: &'a [u8],
    /// Logic's refusal, answered unless this is a resend.
    refused: Option<&'a (ErrorCode, String)>,
}
