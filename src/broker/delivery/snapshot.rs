//! The inboxes' part of a snapshot: the run's settings, messages, inboxes,
//! read state, recent client ids, group members, online devices and how
//! far messages have expired, with the expiry schedule: a snapshot may be
//! taken at any record, and the records after it expire as they did.
//! (The index of inbox fronts is rebuilt from the inboxes.)

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use super::dedup::Dedup;
use super::read::Conversation;
use super::{Delivery, DeliveryConfig, Device, Mailbox, MessageIndex, Stored};
use crate::broker::ids::{ConnId, DeviceId};
use crate::broker::ids::{InboxSeq, MessageId, Peer, UserId};
use crate::codec::proto::DeliveryMode;
use std::io::{Read, Write};

use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};
use crate::journal::{JournalReader, Position};

impl Delivery {
    /// Writes the state into `out`.
    pub(crate) fn encode<W: Write>(&self, out: &mut Encoder<W>) {
        out.u64(self.config.dedup_window as u64);
        out.u64(self.config.message_retention_ms);
        out.u32(self.config.rules_version);
        // The counts first, so that every id can be checked as it is read.
        out.count(self.users.len());
        out.count(self.groups.len());
        out.count(self.messages.len());
        out.u64(self.first);
        out.u64(self.expire_end);
        out.u64(self.next_expiry_ms);
        for message in &self.messages {
            out.u64(message.server_message_id.0);
            out.u64(message.sender.0);
            out.u64(message.to.raw());
            out.u64(message.timestamp_ms);
            out.u64(message.position.segment);
            out.u64(message.position.offset);
        }
        for members in &self.groups {
            out.count(members.len());
            for member in members {
                out.u64(member.0);
            }
        }
        for user in &self.users {
            out.str(&user.name);
            out.u64(user.expired);
            out.count(user.inbox.len());
            for index in &user.inbox {
                out.u32(index.0);
            }
            out.count(user.conversations.len());
            for (peer, conversation) in &user.conversations {
                out.u64(peer.raw());
                out.u64(conversation.read_up_to);
                out.u64(conversation.unread);
                out.u64(conversation.unread_from);
            }
            out.u64(user.unread_count);
            out.count(user.device_ids.len());
            for device_id in &user.device_ids {
                out.str(device_id.as_str());
            }
            out.count(user.sent.entries().len());
            for ((slot, client_message_id), (server_message_id, sequence)) in user.sent.entries() {
                out.u32(slot);
                out.u64(client_message_id);
                out.u64(server_message_id.0);
                out.u64(sequence.0);
            }
            // In the order they logged in.
            out.count(user.devices.len());
            for device in &user.devices {
                out.u64(device.conn.0);
                out.u32(device.mode as u32);
                out.u32(u32::from(device.lz4));
                out.u32(device.slot);
            }
        }
    }

    /// Reads what [`Delivery::encode`] wrote.
    pub(crate) fn decode<R: Read>(
        config: DeliveryConfig,
        reader: JournalReader,
        input: &mut Decoder<R>,
    ) -> Result<Self, SnapshotError> {
        let mut delivery = Delivery::new(config, reader);
        // Windows and retentions far past any configured one are damage.
        delivery.config.dedup_window = input.u64()?.min(1 << 32) as usize;
        delivery.config.message_retention_ms = input.u64()?;
        // Version 3 was written only under the rules before per-device
        // resend keys, and has none of their fields.
        let v4 = input.version >= 4;
        delivery.config.rules_version = if v4 { input.u32()? } else { 0 };
        let user_count = input.count(48)?;
        let group_count = input.count(8)?;
        let message_count = input.count(48)?;
        delivery.first = input.u64()?;
        delivery.expire_end = input.u64()?;
        delivery.next_expiry_ms = input.u64()?;
        if delivery.expire_end < delivery.first
            || delivery.expire_end - delivery.first > message_count as u64
        {
            return Err(input.error("messages expired out of range"));
        }
        for _ in 0..message_count {
            let stored = decode_message(input, user_count, group_count)?;
            delivery.messages.push_back(stored);
        }
        for _ in 0..group_count {
            let mut members = Vec::new();
            for _ in 0..input.count(8)? {
                members.push(UserId(input.id(user_count)?));
            }
            delivery.groups.push(members);
        }
        let first = delivery.first;
        for _ in 0..user_count {
            let mailbox = decode_mailbox(input, v4, (first, message_count))?;
            delivery.entries_held += mailbox.inbox.len() as u64;
            delivery.users.push(mailbox);
        }
        delivery.index_fronts();
        Ok(delivery)
    }
}

/// Reads one stored message, its sender and recipient checked against
/// the counts of users and groups.
fn decode_message<R: Read>(
    input: &mut Decoder<R>,
    user_count: usize,
    group_count: usize,
) -> Result<Stored, SnapshotError> {
    let server_message_id = input.u64()?;
    let sender = UserId(input.id(user_count)?);
    let to = Peer::from_raw(input.u64()?);
    let (to_id, to_max) = match (to.as_user(), to.as_group()) {
        (Some(user), _) => (user.0, user_count),
        (None, Some(group)) => (group.0, group_count),
        (None, None) => unreachable!("a peer is a user or a group"),
    };
    if to_id == 0 || to_id > to_max as u64 {
        return Err(input.error("a message to an id out of range"));
    }
    Ok(Stored {
        server_message_id: MessageId(server_message_id),
        sender,
        to,
        timestamp_ms: input.u64()?,
        position: Position {
            segment: input.u64()?,
            offset: input.u64()?,
        },
    })
}

/// Reads one user's mailbox; `v4` says whether the snapshot has the
/// per-device fields, `(first, message_count)` which messages an inbox
/// entry may name.
fn decode_mailbox<R: Read>(
    input: &mut Decoder<R>,
    v4: bool,
    (first, message_count): (u64, usize),
) -> Result<Mailbox, SnapshotError> {
    let name = input.str()?;
    let expired = input.u64()?;
    // Far past any real count, and no sequence can overflow.
    if expired > 1 << 62 {
        return Err(input.error("an expired count out of range"));
    }
    let mut inbox = VecDeque::new();
    for _ in 0..input.count(4)? {
        let index = input.u32()?;
        // Numbered modulo 2^32 from `first` (see `MessageIndex`).
        if index.wrapping_sub(first as u32) as usize >= message_count {
            return Err(input.error("an inbox entry out of range"));
        }
        inbox.push_back(MessageIndex(index));
    }
    let mut conversations = HashMap::default();
    for _ in 0..input.count(32)? {
        let peer = Peer::from_raw(input.u64()?);
        let conversation = Conversation {
            read_up_to: input.u64()?,
            unread: input.u64()?,
            unread_from: input.u64()?,
        };
        conversations.insert(peer, conversation);
    }
    let unread_count = input.u64()?;
    let mut device_ids = Vec::new();
    if v4 {
        for _ in 0..input.count(8)? {
            device_ids.push(DeviceId::from(input.str()?.as_str()));
        }
    }
    let mut sent = Vec::new();
    for _ in 0..input.count(24)? {
        let slot = if v4 { input.u32()? } else { 0 };
        if slot as usize > device_ids.len() {
            return Err(input.error("a resend key of an unknown device"));
        }
        sent.push((
            (slot, input.u64()?),
            (MessageId(input.u64()?), InboxSeq(input.u64()?)),
        ));
    }
    let devices = decode_devices(input, v4, device_ids.len())?;
    Ok(Mailbox {
        name,
        inbox,
        expired,
        conversations,
        unread_count,
        devices,
        device_ids,
        sent: Dedup::from_entries(sent),
    })
}

/// Reads a mailbox's devices online, whose slots name one of its
/// `slots` device ids.
fn decode_devices<R: Read>(
    input: &mut Decoder<R>,
    v4: bool,
    slots: usize,
) -> Result<Vec<Device>, SnapshotError> {
    let mut devices = Vec::new();
    for _ in 0..input.count(16)? {
        let conn = ConnId(input.u64()?);
        let mode = DeliveryMode::try_from(input.u32()? as i32)
            .map_err(|_| input.error("an unknown delivery mode"))?;
        let lz4 = input.u32()? != 0;
        let slot = if v4 { input.u32()? } else { 0 };
        if slot as usize > slots {
            return Err(input.error("a device slot out of range"));
        }
        devices.push(Device {
            conn,
            mode,
            lz4,
            slot,
        });
    }
    Ok(devices)
}
