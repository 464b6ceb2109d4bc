//! A canonical text form of the inboxes, for the replay tests.

use super::Delivery;

impl Delivery {
    /// Everything replay must rebuild here, in a canonical text form:
    /// inboxes, read marks, recent client ids, online devices and group
    /// members.
    pub(crate) fn digest(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (index, user) in self.users.iter().enumerate() {
            // The counts agree with a count from scratch, in every state a
            // replay test looks at.
            let owner = super::UserId(index as u64 + 1);
            for &peer in user.conversations.keys() {
                self.check_conversation(owner, peer);
            }
            let unread: u64 = user.conversations.values().map(|c| c.unread).sum();
            assert_eq!(unread, user.unread_count, "{}", user.name);
            let inbox: Vec<_> = user
                .inbox
                .iter()
                .map(|&index| self.stored(index))
                .map(|e| {
                    (
                        e.server_message_id.0,
                        e.sender.0,
                        e.to.raw(),
                        e.timestamp_ms,
                        e.position,
                    )
                })
                .collect();
            let mut conversations: Vec<_> = user
                .conversations
                .iter()
                .map(|(peer, c)| (peer.raw(), c.read_up_to, c.unread, c.unread_from))
                .collect();
            conversations.sort();
            let mut devices: Vec<_> = user
                .devices
                .iter()
                .map(|d| (d.conn.0, d.mode as i32, d.lz4, d.slot))
                .collect();
            devices.sort();
            let _ = writeln!(
                out,
                "mailbox {} {} expired {} inbox {:?} read {:?} unread {} devices {:?} {:?} sent {:?}",
                index + 1,
                user.name,
                user.expired,
                inbox,
                conversations,
                user.unread_count,
                devices,
                user.device_ids,
                user.sent.entries().collect::<Vec<_>>(),
            );
        }
        let entries: u64 = self.users.iter().map(|u| u.inbox.len() as u64).sum();
        assert_eq!(entries, self.entries_held, "the entries counted");
        // The expiry index holds each non-empty inbox's front, and only that.
        let mut fronts: Vec<_> = self.fronts.iter().map(|front| front.0).collect();
        fronts.sort();
        let mut expected: Vec<_> = self
            .users
            .iter()
            .zip(1..)
            .filter_map(|(user, id)| {
                let &front = user.inbox.front()?;
                Some((self.first + self.offset(front) as u64, id))
            })
            .collect();
        expected.sort();
        assert_eq!(fronts, expected, "the expiry index");
        let _ = writeln!(
            out,
            "messages from {} expired to {} held {} next expiry {}; settings: dedup {}, retention {}, rules {}",
            self.first,
            self.expire_end,
            self.messages.len(),
            self.next_expiry_ms,
            self.config.dedup_window,
            self.config.message_retention_ms,
            self.config.rules_version,
        );
        for (index, members) in self.groups.iter().enumerate() {
            let members: Vec<_> = members.iter().map(|m| m.0).collect();
            let _ = writeln!(out, "group {} members {members:?}", index + 1);
        }
        out
    }
}

impl Delivery {
    /// Checks what the inboxes' `# Invariants` claim, panicking at the
    /// first that does not hold (the counts, the expiry index, every
    /// conversation's unread count: what [`Delivery::digest`] asserts), and
    /// that messages are held in journal order, every inbox entry refers to
    /// a held message in sequence order, and every online device has a
    /// resend slot. The simulation runs it after every step.
    pub(crate) fn check_invariants(&self) {
        let _ = self.digest();
        let ids: Vec<_> = self.messages.iter().map(|m| m.server_message_id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "messages in journal order"
        );
        assert!(self.first <= self.expire_end);
        assert!(self.expire_end <= self.first + self.messages.len() as u64);
        for user in &self.users {
            let mut last = None;
            for &index in &user.inbox {
                let offset = self.offset(index);
                assert!(
                    offset < self.messages.len(),
                    "{}: an entry refers to a message held",
                    user.name
                );
                let id = self.messages[offset].server_message_id;
                assert!(last < Some(id), "{}: entries in journal order", user.name);
                last = Some(id);
            }
            for device in &user.devices {
                assert!(
                    device.slot as usize <= user.device_ids.len(),
                    "{}: a device slot",
                    user.name
                );
                if self.config.rules_version >= 1 {
                    assert!(device.slot >= 1, "{}: per-device resend keys", user.name);
                }
            }
        }
    }

    /// A user's inbox as (inbox sequence, server message id), oldest first.
    pub(crate) fn inbox_ids(
        &self,
        user: super::UserId,
    ) -> Vec<(super::InboxSeq, super::MessageId)> {
        let mailbox = self.user(user);
        let first = super::InboxSeq(mailbox.expired + 1);
        mailbox
            .inbox
            .iter()
            .enumerate()
            .map(|(at, &index)| {
                let sequence = super::InboxSeq(first.0 + at as u64);
                (sequence, self.stored(index).server_message_id)
            })
            .collect()
    }
}
