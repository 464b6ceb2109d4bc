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
        let read_up_to = user
            .conversations
            .get(&peer)
            .map_or(0, |conversation| conversation.read_up_to);
        let newly_read = if up_to > read_up_to {
            user.inbox[read_up_to as usize..up_to as usize]
                .iter()
                .map(|index| &self.messages[index.0 as usize])
                .filter(|m| m.sender != user_id && m.conversation(user_id) == peer)
                .count() as u64
        } else {
            0
        };
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
            user.unread_count -= newly_read;
            *conversation
        } else {
            user.conversations.get(&peer).copied().unwrap_or_default()
        };
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
}
