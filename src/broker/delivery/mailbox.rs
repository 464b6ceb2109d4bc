//! A user's mailbox: the inbox (entries pointing at stored messages, in
//! inbox-sequence order), read state per conversation, the devices online
//! and the resend keys of what the user sent.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use super::dedup::Dedup;
use super::read::Conversation;
use super::{MessageIndex, Stored};
use crate::broker::ids::{ConnId, DeviceId, Peer, UserId};
use crate::codec::proto::DeliveryMode;

/// An online device of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Device {
    pub(super) conn: ConnId,
    pub(super) mode: DeliveryMode,
    pub(super) lz4: bool,
    /// The device's place in [`Mailbox::device_ids`], plus one: its part
    /// of the resend keys (0 under rules that keyed resends by user).
    pub(super) slot: u32,
}

/// # Invariants
/// - The entry `inbox[i]` has inbox sequence `expired + i + 1`.
/// - Every entry refers to a message still held (numbered
///   [`Delivery::first`] or later).
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    pub(super) name: String,
    /// The entries not expired, oldest first.
    pub(super) inbox: VecDeque<MessageIndex>,
    /// Entries dropped from the front by expiry.
    pub(super) expired: u64,
    /// Read state per conversation.
    pub(super) conversations: HashMap<Peer, Conversation>,
    /// Unread entries over all conversations.
    pub(super) unread_count: u64,
    pub(super) devices: Vec<Device>,
    /// Every device id that sent under per-device resend keys, in the
    /// order they first logged in; a device's slot is its place plus one.
    pub(super) device_ids: Vec<DeviceId>,
    pub(super) sent: Dedup,
}

impl Mailbox {
    pub(super) fn head(&self) -> u64 {
        self.expired + self.inbox.len() as u64
    }

    /// A sequence no unread entry is below (0 when none is unread): the
    /// earliest point any conversation's unread entries start from.
    pub(super) fn first_unread(&self) -> u64 {
        if self.unread_count == 0 {
            return 0;
        }
        let from = self
            .conversations
            .values()
            .filter(|c| c.unread > 0)
            .map(|c| c.unread_from)
            .min()
            .expect("an unread entry is in some conversation");
        // Entries expired from the front are no longer unread.
        from.max(self.expired + 1)
    }

    /// The resend-key slot of `device_id`, given one if it has none.
    pub(super) fn device_slot(&mut self, device_id: &DeviceId) -> u32 {
        let at = match self.device_ids.iter().position(|id| id == device_id) {
            Some(at) => at,
            None => {
                self.device_ids.push(device_id.clone());
                self.device_ids.len() - 1
            }
        };
        u32::try_from(at + 1).expect("fewer than 2^32 devices per user")
    }

    /// The entries with sequences in `from + 1..=to` that are still held,
    /// with their sequences.
    pub(super) fn entries(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (u64, MessageIndex)> + '_ {
        let start = from.max(self.expired);
        let end = to.min(self.head()).max(start);
        self.inbox
            .range((start - self.expired) as usize..(end - self.expired) as usize)
            .zip(start + 1..)
            .map(|(&index, sequence)| (sequence, index))
    }

    /// Appends the message at `index`; counts it unread unless the owner
    /// sent it.
    pub(super) fn append(&mut self, owner: UserId, index: MessageIndex, message: &Stored) -> u64 {
        self.inbox.push_back(index);
        if message.sender != owner {
            let sequence = self.head();
            self.unread_count += 1;
            let conversation = self
                .conversations
                .entry(message.conversation(owner))
                .or_default();
            if conversation.unread == 0 {
                conversation.unread_from = sequence;
            }
            conversation.unread += 1;
        }
        self.head()
    }
}
