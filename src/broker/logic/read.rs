//! Read state per conversation, agreed across a user's devices.

use super::{ConnId, Logic};
use crate::broker::event::Outbox;
use crate::codec::proto::{self, ErrorCode};
use crate::codec::Message;

/// A conversation's read state, seen by one of its users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Conversation {
    /// Inbox sequences up to this one are read.
    pub(super) read_up_to: u64,
    /// Entries from the peer above `read_up_to`.
    pub(super) unread: u64,
}

impl Logic {
    pub(super) fn mark_read(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        mark: &proto::MarkRead,
        out: &mut Outbox,
    ) {
        let Some(user_id) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let Some(&peer) = self.by_name.get(&mark.peer) else {
            out.error(
                conn,
                correlation_id,
                ErrorCode::UnknownRecipient,
                format!("no user {:?}", mark.peer),
            );
            return;
        };
        let user = self.user_mut(user_id);
        if mark.up_to_sequence > user.head() {
            let head = user.head();
            out.error(
                conn,
                correlation_id,
                ErrorCode::BadSequence,
                format!(
                    "sequence {} is past the inbox head {head}",
                    mark.up_to_sequence
                ),
            );
            return;
        }
        let conversation = user.conversations.entry(peer).or_default();
        if mark.up_to_sequence > conversation.read_up_to {
            let from = conversation.read_up_to as usize;
            let newly_read = user.inbox[from..mark.up_to_sequence as usize]
                .iter()
                .filter(|e| e.sender == peer && e.recipient == user_id)
                .count() as u64;
            let conversation = user.conversations.get_mut(&peer).expect("made above");
            conversation.read_up_to = mark.up_to_sequence;
            conversation.unread -= newly_read;
            user.unread_count -= newly_read;
        }
        let conversation = user.conversations[&peer];
        let state = Message::ReadState(proto::ReadState {
            peer: mark.peer.clone(),
            up_to_sequence: conversation.read_up_to,
            conversation_unread: conversation.unread,
            unread_total: user.unread_count,
        });
        for &device in &user.online {
            if device != conn {
                out.send(device, 0, &state);
            }
        }
        out.send(conn, correlation_id, &state);
    }
}
