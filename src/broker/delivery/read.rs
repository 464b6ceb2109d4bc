//! Read state per conversation, agreed across a user's devices.

use super::{ConnId, Delivery, Peer, UserId};
use crate::broker::event::Outbox;
use crate::codec::proto::{self, ErrorCode};
use crate::codec::Message;

/// A conversation's read state, seen by one of its users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Conversation {
    /// Inbox sequences up to this one are read.
    pub(super) read_up_to: u64,
    /// Entries from others above `read_up_to`.
    pub(super) unread: u64,
    /// While `unread > 0`: no unread entry has a sequence below this, so a
    /// mark need not look at the inbox before it.
    pub(super) unread_from: u64,
}

impl Delivery {
    pub(super) fn mark_read(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        user_id: UserId,
        peer: Peer,
        up_to: u64,
        out: &mut Outbox,
    ) {
        let user = self.user(user_id);
        if up_to > user.head() {
            out.error(
                conn,
                correlation_id,
                ErrorCode::BadSequence,
                format!("sequence {up_to} is past the inbox head {}", user.head()),
            );
            return;
        }
        let known = user.conversations.get(&peer).copied().unwrap_or_default();
        let read_up_to = known.read_up_to;
        // Look only where unread entries can be, and stop once all are
        // found: a mark costs at most the stretch of inbox it newly covers,
        // and nothing for a conversation with nothing unread.
        let mut newly_read = 0;
        let from = read_up_to.max(known.unread_from.saturating_sub(1));
        if up_to > from && known.unread > 0 {
            // Expired entries no longer count as unread.
            for (_, index) in user.entries(from, up_to) {
                let message = self.stored(index);
                if message.sender != user_id && message.conversation(user_id) == peer {
                    newly_read += 1;
                    if newly_read == known.unread {
                        break;
                    }
                }
            }
        }
        let (peer_name, group_id) = match (peer.as_user(), peer.as_group()) {
            (Some(other), _) => (self.user(other).name.clone(), 0),
            (None, Some(group)) => (String::new(), group.0),
            (None, None) => unreachable!("a peer is a user or a group"),
        };
        let user = self.user_mut(user_id);
        // A mark that changes nothing keeps no entry (marks for arbitrary
        // peers must not grow the map).
        let conversation = if up_to > read_up_to {
            let conversation = user.conversations.entry(peer).or_default();
            conversation.read_up_to = up_to;
            conversation.unread -= newly_read;
            conversation.unread_from = conversation.unread_from.max(up_to + 1);
            user.unread_count -= newly_read;
            *conversation
        } else {
            user.conversations.get(&peer).copied().unwrap_or_default()
        };
        #[cfg(test)]
        self.check_conversation(user_id, peer);
        let user = self.user(user_id);
        let state = Message::ReadState(proto::ReadState {
            peer: peer_name,
            group_id,
            up_to_sequence: conversation.read_up_to,
            conversation_unread: conversation.unread,
            unread_total: user.unread_count,
        });
        for device in &user.devices {
            if device.conn != conn {
                out.send(device.conn, 0, &state);
            }
        }
        out.send(conn, correlation_id, &state);
    }

    /// Checks a conversation's counts against a count from scratch: its
    /// `unread` is the entries from others above `read_up_to` and not
    /// expired, none of them below `unread_from`. The replay property tests
    /// run every mark, and every state they compare, through it.
    #[cfg(test)]
    pub(super) fn check_conversation(&self, user_id: UserId, peer: Peer) {
        let user = self.user(user_id);
        let conversation = user.conversations.get(&peer).copied().unwrap_or_default();
        let unread: Vec<u64> = user
            .entries(conversation.read_up_to, user.head())
            .filter(|&(_, index)| {
                let message = self.stored(index);
                message.sender != user_id && message.conversation(user_id) == peer
            })
            .map(|(sequence, _)| sequence)
            .collect();
        assert_eq!(unread.len() as u64, conversation.unread, "{peer:?}");
        assert!(
            unread
                .iter()
                .all(|&sequence| sequence >= conversation.unread_from),
            "{peer:?}: unread {unread:?} below {}",
            conversation.unread_from
        );
    }
}
