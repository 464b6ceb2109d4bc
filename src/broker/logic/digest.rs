//! A canonical text form of all state, for the replay tests.

use super::Logic;

impl Logic {
    /// Everything replay must rebuild, in a canonical text form: accounts,
    /// tokens, inboxes, read marks, recent client ids and live sessions.
    pub(crate) fn digest(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (index, user) in self.users.iter().enumerate() {
            let mut tokens: Vec<_> = user.tokens.iter().collect();
            tokens.sort();
            let inbox: Vec<_> = user
                .inbox
                .iter()
                .map(|e| {
                    (
                        e.server_message_id,
                        e.sender.0,
                        e.recipient.0,
                        e.timestamp_ms,
                        e.position,
                    )
                })
                .collect();
            let mut online = user.online.clone();
            online.sort();
            let mut conversations: Vec<_> = user
                .conversations
                .iter()
                .map(|(id, c)| (id.0, c.read_up_to, c.unread))
                .collect();
            conversations.sort();
            let mut contacts: Vec<_> = user
                .contacts
                .iter()
                .map(|(id, e)| (id.0, e.state as i32, e.version))
                .collect();
            contacts.sort();
            let _ = writeln!(
                out,
                "user {} {} {:?} inbox {:?} read {:?} unread {} online {:?} sent {:?} contacts {:?} v{}",
                index + 1,
                user.name,
                tokens,
                inbox,
                conversations,
                user.unread_count,
                online,
                user.sent.ids(),
                contacts,
                user.contact_version,
            );
        }
        let mut sessions: Vec<_> = self
            .conns
            .iter()
            .map(|(conn, c)| {
                (
                    conn.0,
                    c.session
                        .as_ref()
                        .map(|s| (s.user.0, s.device_id.clone(), s.mode as i32, s.lz4)),
                )
            })
            .collect();
        sessions.sort();
        let _ = writeln!(out, "sessions {sessions:?}");
        out
    }
}
