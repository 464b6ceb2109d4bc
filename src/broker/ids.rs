//! Identifiers that cross module boundaries.

use std::fmt;

/// A client connection, as the network layer (or an embedding gateway)
/// names it. The broker never reuses one within a run; the journal records
/// them, and a run's start marker tells replay that every older connection
/// is gone. The broker gives the bits no meaning: the mio server puts its
/// I/O thread's index in them (`net::conn`), and a gateway may use the
/// whole 64 bits as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{:x}", self.0)
    }
}

/// A registered user: 1 for the first account, then counting up. Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// A group: 1 for the first group created, then counting up. Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

/// One of a user's devices, as its client names it at login (1 to 64
/// bytes, checked there). A login token and the resend keys of a user's
/// messages are per device.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DeviceId(Box<str>);

/// As the string it is, so that dumps read as the client named it.
impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl DeviceId {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for DeviceId {
    fn from(name: &str) -> Self {
        DeviceId(name.into())
    }
}

impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A message's place in one user's inbox: 1 for the first entry, then
/// counting up without gaps, assigned in journal order. On the wire it is
/// `inbox_sequence` (and `after_sequence`, `up_to_sequence`, `head_sequence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct InboxSeq(pub(crate) u64);

/// A stored message's id: the journal sequence of the record that carried
/// it (`server_message_id` on the wire), the same in every inbox it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct MessageId(pub(crate) u64);

/// A journal record's sequence: 1 for the first record ever written, then
/// counting up without gaps across segments and runs. A stored message's
/// [`MessageId`] is its record's sequence; the SQLite projection records
/// how far it has applied in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct RecordSeq(pub(crate) u64);

impl RecordSeq {
    /// The id of the message this record carried.
    pub(crate) fn message_id(self) -> MessageId {
        MessageId(self.0)
    }
}

/// The other side of a conversation: a user (1:1) or a group, in one word
/// (the top bit marks a group), so an inbox entry stays 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Peer(u64);

impl Peer {
    const GROUP_BIT: u64 = 1 << 63;

    pub(crate) fn user(id: UserId) -> Self {
        debug_assert!(id.0 & Self::GROUP_BIT == 0);
        Peer(id.0)
    }

    pub(crate) fn group(id: GroupId) -> Self {
        debug_assert!(id.0 & Self::GROUP_BIT == 0);
        Peer(id.0 | Self::GROUP_BIT)
    }

    pub(crate) fn as_user(self) -> Option<UserId> {
        (self.0 & Self::GROUP_BIT == 0).then_some(UserId(self.0))
    }

    pub(crate) fn as_group(self) -> Option<GroupId> {
        (self.0 & Self::GROUP_BIT != 0).then_some(GroupId(self.0 & !Self::GROUP_BIT))
    }

    /// The word itself, for snapshots and canonical dumps.
    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    /// A peer from the word [`Peer::raw`] gave.
    pub(crate) fn from_raw(raw: u64) -> Self {
        Peer(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_a_user_or_a_group() {
        let user = Peer::user(UserId(7));
        let group = Peer::group(GroupId(7));
        assert_ne!(user, group);
        assert_eq!((user.as_user(), user.as_group()), (Some(UserId(7)), None));
        assert_eq!(
            (group.as_user(), group.as_group()),
            (None, Some(GroupId(7)))
        );
    }
}
