//! Contacts: mutual friendship, requests, blocking, versioned lists.
//!
//! # Invariants
//! - Every user has a list (index = id - 1) and its version is at least
//!   every entry's.
//! - The two sides agree: a friend's entry says friend, a request sent is
//!   a request received on the other side, except that one who is blocked
//!   is not told (their side may still say they asked).

use rustc_hash::FxHashMap as HashMap;

use super::accounts::Accounts;
use super::sessions::Sessions;
use super::{Call, ConnId, UserId};
use crate::broker::event::{Outbox, Projection};
use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};
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

/// One user's contact list.
#[derive(Debug, Default)]
struct ContactList {
    /// An entry whose state is NONE stays, so a device syncing from an
    /// older version learns of the removal.
    entries: HashMap<UserId, ContactEntry>,
    /// Bumped by each change to `entries`.
    version: u64,
}

/// Every user's contact list.
#[derive(Debug, Default)]
pub(super) struct Contacts {
    lists: Vec<ContactList>,
}

/// Who is who and who is online, for a room that answers by name and
/// tells devices.
pub(super) struct Directory<'a> {
    pub(super) accounts: &'a Accounts,
    pub(super) sessions: &'a Sessions,
}

impl Directory<'_> {
    /// The user named `name`; if none, answers `UNKNOWN_RECIPIENT`.
    pub(super) fn user_named(&self, name: &str, call: &mut Call<'_>) -> Option<UserId> {
        let found = self.accounts.find(name.as_bytes());
        if found.is_none() {
            call.error(ErrorCode::UnknownRecipient, format!("no user {name:?}"));
        }
        found
    }

    /// Sends `message` to every device of `user` but `except`.
    pub(super) fn tell(
        &self,
        user: UserId,
        except: Option<ConnId>,
        message: &Message,
        out: &mut Outbox,
    ) {
        for &device in self.sessions.devices(user) {
            if Some(device) != except {
                out.send(device, 0, message);
            }
        }
    }
}

impl Contacts {
    /// Makes the new user's (empty) list.
    pub(super) fn add_user(&mut self) {
        self.lists.push(ContactList::default());
    }

    fn list(&self, user: UserId) -> &ContactList {
        &self.lists[(user.0 - 1) as usize]
    }

    /// What `owner`'s list says of `other`.
    pub(super) fn state(&self, owner: UserId, other: UserId) -> ContactState {
        self.list(owner)
            .entries
            .get(&other)
            .map_or(ContactState::None, |entry| entry.state)
    }

    /// Sets `owner`'s entry for `other`, bumping the owner's version; tells
    /// the owner's devices (all but `except`) and the store.
    fn set(
        &mut self,
        who: &Directory<'_>,
        (owner, other): (UserId, UserId),
        state: ContactState,
        except: Option<ConnId>,
        out: &mut Outbox,
    ) {
        let list = &mut self.lists[(owner.0 - 1) as usize];
        list.version += 1;
        let version = list.version;
        list.entries.insert(other, ContactEntry { state, version });
        out.projections.push(Projection::Contact {
            owner,
            contact: other,
            state,
            version,
        });
        let changed = Message::ContactChanged(proto::ContactChanged {
            contact: Some(proto::Contact {
                user: who.accounts.name(other).to_owned(),
                state: state as i32,
                version,
            }),
        });
        who.tell(owner, except, &changed, out);
    }

    /// Carries out `op` on `call.me`'s entry for the user named `name`.
    pub(super) fn change(
        &mut self,
        who: &Directory<'_>,
        rules_version: u32,
        call: &mut Call<'_>,
        op: ContactOp,
        name: &str,
    ) {
        let Some(other) = who.user_named(name, call) else {
            return;
        };
        let me = call.me;
        if other == me {
            return call.error(ErrorCode::ContactState, "that is you");
        }
        match self.transition(op, (me, other), rules_version) {
            Err(why) => call.error(ErrorCode::ContactState, why),
            Ok((my_new, their_new)) => {
                if let Some(state) = my_new {
                    self.set(who, (me, other), state, Some(call.conn), call.out);
                }
                if let Some(state) = their_new {
                    self.set(who, (other, me), state, None, call.out);
                }
                let version = self.list(me).version;
                call.send(&Message::ContactOk(proto::ContactOk { version }));
            }
        }
    }

    /// What `op` from `me` about `other` makes of (my entry, their entry);
    /// `None` leaves an entry as it is.
    fn transition(
        &self,
        op: ContactOp,
        (me, other): (UserId, UserId),
        rules_version: u32,
    ) -> Result<(Option<ContactState>, Option<ContactState>), &'static str> {
        use ContactState::{Blocked, Friend, RequestReceived, RequestSent};
        let mine = self.state(me, other);
        let theirs = self.state(other, me);
        Ok(match op {
            ContactOp::Request => match mine {
                Friend => return Err("already friends"),
                Blocked => return Err("unblock them first"),
                RequestReceived => (Some(Friend), Some(Friend)),
                // Someone who blocked the requester never hears of it, and
                // the requester is not told (blocking stays private).
                _ if theirs == Blocked => (Some(RequestSent), None),
                _ => (Some(RequestSent), Some(RequestReceived)),
            },
            ContactOp::Accept => match mine {
                RequestReceived => (Some(Friend), Some(Friend)),
                _ => return Err("no request from them to accept"),
            },
            ContactOp::Decline => match mine {
                RequestReceived => (
                    Some(ContactState::None),
                    (theirs == RequestSent).then_some(ContactState::None),
                ),
                _ => return Err("no request from them to decline"),
            },
            ContactOp::Remove => match mine {
                Friend => (Some(ContactState::None), Some(ContactState::None)),
                _ => return Err("not friends"),
            },
            ContactOp::Block => match mine {
                Blocked => return Err("already blocked"),
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
                Blocked if theirs == RequestSent && rules_version >= 1 => {
                    (Some(RequestReceived), None)
                }
                Blocked => (Some(ContactState::None), None),
                _ => return Err("not blocked"),
            },
        })
    }

    /// Answers `call.me`'s changes after version `after`, oldest first, as
    /// many as fit `budget` bytes of a frame.
    pub(super) fn sync(&self, who: &Directory<'_>, call: &mut Call<'_>, after: u64, budget: usize) {
        let list = self.list(call.me);
        let mut changed: Vec<(UserId, ContactEntry)> = list
            .entries
            .iter()
            .filter(|(_, entry)| entry.version > after)
            .map(|(&id, &entry)| (id, entry))
            .collect();
        changed.sort_by_key(|(_, entry)| entry.version);
        let mut reply = proto::ContactList {
            contacts: Vec::new(),
            version: list.version,
            more: false,
        };
        let mut size = 0;
        for (id, entry) in changed {
            let contact = proto::Contact {
                user: who.accounts.name(id).to_owned(),
                state: entry.state as i32,
                version: entry.version,
            };
            let encoded = prost::Message::encoded_len(&contact) + 4;
            if size + encoded > budget {
                reply.more = true;
                reply.version = reply.contacts.last().map_or(after, |c| c.version);
                break;
            }
            size += encoded;
            reply.contacts.push(contact);
        }
        call.send(&Message::ContactList(reply));
    }

    /// Writes user `id`'s list.
    pub(super) fn encode_user<W: std::io::Write>(&self, id: UserId, out: &mut Encoder<W>) {
        let list = self.list(id);
        out.count(list.entries.len());
        for (contact, entry) in &list.entries {
            out.u64(contact.0);
            out.u32(entry.state as u32);
            out.u64(entry.version);
        }
        out.u64(list.version);
    }

    /// Reads what [`Contacts::encode_user`] wrote, as the next user's.
    pub(super) fn decode_user<R: std::io::Read>(
        &mut self,
        user_count: usize,
        input: &mut Decoder<R>,
    ) -> Result<(), SnapshotError> {
        let mut entries = HashMap::default();
        for _ in 0..input.count(20)? {
            let contact = UserId(input.id(user_count)?);
            let state = ContactState::try_from(input.u32()? as i32)
                .map_err(|_| input.error("an unknown contact state"))?;
            let version = input.u64()?;
            entries.insert(contact, ContactEntry { state, version });
        }
        let version = input.u64()?;
        self.lists.push(ContactList { entries, version });
        Ok(())
    }

    /// User `id`'s list in the replay tests' canonical form.
    #[cfg(test)]
    pub(super) fn digest_user(&self, id: UserId) -> String {
        let list = self.list(id);
        let mut entries: Vec<_> = list
            .entries
            .iter()
            .map(|(id, e)| (id.0, e.state as i32, e.version))
            .collect();
        entries.sort();
        format!("contacts {entries:?} v{}", list.version)
    }

    /// Checks the module's `# Invariants` for `user_count` users.
    #[cfg(test)]
    pub(super) fn check_invariants(&self, user_count: usize) {
        assert_eq!(self.lists.len(), user_count, "a list per user");
        for (index, list) in self.lists.iter().enumerate() {
            let id = UserId(index as u64 + 1);
            for (&other, entry) in &list.entries {
                assert!(entry.version <= list.version);
                let theirs = self.state(other, id);
                let expected = match entry.state {
                    ContactState::Friend => Some(ContactState::Friend),
                    ContactState::RequestSent => Some(ContactState::RequestReceived),
                    ContactState::RequestReceived => Some(ContactState::RequestSent),
                    // A block is one-sided; a cleared entry says nothing.
                    ContactState::Blocked | ContactState::None => None,
                };
                if let (Some(expected), false) = (expected, theirs == ContactState::Blocked) {
                    assert_eq!(theirs, expected, "{id:?} and {other:?}");
                }
            }
        }
    }
}
