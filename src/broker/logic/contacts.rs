//! Contacts: mutual friendship, requests, blocking, versioned lists.

use super::{ConnId, Logic, UserId};
use crate::broker::event::{Outbox, Projection};
use crate::codec::proto::{self, ContactState, ErrorCode};
use crate::codec::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContactEntry {
    pub(super) state: ContactState,
    pub(super) version: u64,
}

/// A change a user asks of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContactOp {
    Request,
    Accept,
    Decline,
    Remove,
    Block,
    Unblock,
}

impl Logic {
    pub(super) fn contact_state(&self, owner: UserId, other: UserId) -> ContactState {
        self.user(owner)
            .contacts
            .get(&other)
            .map_or(ContactState::None, |entry| entry.state)
    }

    /// Sets `owner`'s entry for `other`, bumping the owner's version; tells
    /// the owner's devices (all but `except`) and the store.
    fn set_contact(
        &mut self,
        owner: UserId,
        other: UserId,
        state: ContactState,
        except: Option<ConnId>,
        out: &mut Outbox,
    ) {
        let user = self.user_mut(owner);
        user.contact_version += 1;
        let version = user.contact_version;
        user.contacts.insert(other, ContactEntry { state, version });
        out.projections.push(Projection::Contact {
            owner,
            contact: other,
            state,
            version,
        });
        let changed = Message::ContactChanged(proto::ContactChanged {
            contact: Some(proto::Contact {
                user: self.user(other).name.clone(),
                state: state as i32,
                version,
            }),
        });
        for &device in &self.user(owner).online {
            if Some(device) != except {
                out.send(device, 0, &changed);
            }
        }
    }

    pub(super) fn contact(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        op: ContactOp,
        name: &str,
        out: &mut Outbox,
    ) {
        let Some(me) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let Some(&other) = self.by_name.get(name.as_bytes()) else {
            out.error(
                conn,
                correlation_id,
                ErrorCode::UnknownRecipient,
                format!("no user {name:?}"),
            );
            return;
        };
        let refuse = |out: &mut Outbox, why: &str| {
            out.error(
                conn,
                correlation_id,
                ErrorCode::ContactState,
                why.to_owned(),
            )
        };
        if other == me {
            return refuse(out, "that is you");
        }
        use ContactState::{Blocked, Friend, RequestReceived, RequestSent};
        let mine = self.contact_state(me, other);
        let theirs = self.contact_state(other, me);
        // (my new state, their new state); None leaves an entry as it is.
        let (my_new, their_new) = match op {
            ContactOp::Request => match mine {
                Friend => return refuse(out, "already friends"),
                Blocked => return refuse(out, "unblock them first"),
                RequestReceived => (Some(Friend), Some(Friend)),
                // Someone who blocked the requester never hears of it, and
                // the requester is not told (blocking stays private).
                _ if theirs == Blocked => (Some(RequestSent), None),
                _ => (Some(RequestSent), Some(RequestReceived)),
            },
            ContactOp::Accept => match mine {
                RequestReceived => (Some(Friend), Some(Friend)),
                _ => return refuse(out, "no request from them to accept"),
            },
            ContactOp::Decline => match mine {
                RequestReceived => (
                    Some(ContactState::None),
                    (theirs == RequestSent).then_some(ContactState::None),
                ),
                _ => return refuse(out, "no request from them to decline"),
            },
            ContactOp::Remove => match mine {
                Friend => (Some(ContactState::None), Some(ContactState::None)),
                _ => return refuse(out, "not friends"),
            },
            ContactOp::Block => match mine {
                Blocked => return refuse(out, "already blocked"),
                _ => (
                    Some(Blocked),
                    matches!(theirs, Friend | RequestSent | RequestReceived)
                        .then_some(ContactState::None),
                ),
            },
            ContactOp::Unblock => match mine {
                // A request they made while blocked (they were not told)
                // arrives now, so both lists agree again; before rules 1
                // it stayed one-sided.
                Blocked if theirs == RequestSent && self.config.rules_version >= 1 => {
                    (Some(RequestReceived), None)
                }
                Blocked => (Some(ContactState::None), None),
                _ => return refuse(out, "not blocked"),
            },
        };
        if let Some(state) = my_new {
            self.set_contact(me, other, state, Some(conn), out);
        }
        if let Some(state) = their_new {
            self.set_contact(other, me, state, None, out);
        }
        let version = self.user(me).contact_version;
        out.send(
            conn,
            correlation_id,
            &Message::ContactOk(proto::ContactOk { version }),
        );
    }

    pub(super) fn contact_sync(
        &mut self,
        conn: ConnId,
        correlation_id: u64,
        after: u64,
        out: &mut Outbox,
    ) {
        let Some(me) = self.logged_in(conn, correlation_id, out) else {
            return;
        };
        let user = self.user(me);
        let mut changed: Vec<(UserId, ContactEntry)> = user
            .contacts
            .iter()
            .filter(|(_, entry)| entry.version > after)
            .map(|(&id, &entry)| (id, entry))
            .collect();
        changed.sort_by_key(|(_, entry)| entry.version);
        // Oldest changes first, as many as fit a frame.
        let budget =
            self.config.frame_size_max - crate::broker::delivery::SYNC_BATCH_OVERHEAD_BYTES;
        let mut list = proto::ContactList {
            contacts: Vec::new(),
            version: user.contact_version,
            more: false,
        };
        let mut size = 0;
        for (id, entry) in changed {
            let contact = proto::Contact {
                user: self.user(id).name.clone(),
                state: entry.state as i32,
                version: entry.version,
            };
            let encoded = prost::Message::encoded_len(&contact) + 4;
            if size + encoded > budget {
                list.more = true;
                list.version = list.contacts.last().map_or(after, |c| c.version);
                break;
            }
            size += encoded;
            list.contacts.push(contact);
        }
        out.send(conn, correlation_id, &Message::ContactList(list));
    }
}
