//! A canonical text form of logic's state, for the replay tests.

use super::Logic;

impl Logic {
    /// Everything replay must rebuild here, in a canonical text form:
    /// accounts, tokens, contacts, groups and live sessions.
    pub(crate) fn digest(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (index, user) in self.users.iter().enumerate() {
            let mut tokens: Vec<_> = user.tokens.iter().collect();
            tokens.sort();
            let mut online = user.online.clone();
            online.sort();
            let mut contacts: Vec<_> = user
                .contacts
                .iter()
                .map(|(id, e)| (id.0, e.state as i32, e.version))
                .collect();
            contacts.sort();
            let _ = writeln!(
                out,
                "user {} {} {:?} online {:?} contacts {:?} v{} groups {:?} invitations {:?}",
                index + 1,
                user.name,
                tokens,
                online,
                contacts,
                user.contact_version,
                user.groups,
                user.invitations,
            );
        }
        for (index, group) in self.groups.iter().enumerate() {
            let _ = writeln!(
                out,
                "group {} {:?} owner {} members {:?} invited {:?}",
                index + 1,
                group.name,
                group.owner.0,
                group.members,
                group.invited,
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
                        .map(|s| (s.user.0, s.device_id.clone(), s.lz4)),
                )
            })
            .collect();
        sessions.sort();
        let _ = writeln!(out, "sessions {sessions:?}");
        let _ = writeln!(
            out,
            "online: {} users, {} devices; settings: frames {}, open {}, group members {}, rules {}",
            self.users_online,
            self.devices_online,
            self.config.frame_size_max,
            self.config.open_messaging,
            self.config.group_members_max,
            self.config.rules_version,
        );
        out
    }
}
