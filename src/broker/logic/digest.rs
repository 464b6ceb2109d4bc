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

impl Logic {
    /// Checks what logic's comments and `# Invariants` claim, panicking at
    /// the first that does not hold: the online counts, sessions, names,
    /// group membership and contact lists agree with each other. The
    /// simulation runs it after every step.
    pub(crate) fn check_invariants(&self) {
        use crate::codec::proto::ContactState;
        let sessions = self.conns.values().filter(|c| c.session.is_some()).count();
        let online_users = self.users.iter().filter(|u| !u.online.is_empty()).count();
        let online_devices: usize = self.users.iter().map(|u| u.online.len()).sum();
        assert_eq!(self.devices_online as usize, sessions, "devices online");
        assert_eq!(
            self.devices_online as usize, online_devices,
            "devices listed"
        );
        assert_eq!(self.users_online as usize, online_users, "users online");
        for (conn, state) in &self.conns {
            if let Some(session) = &state.session {
                let user = self.user(session.user);
                assert!(user.online.contains(conn), "{conn:?} online as its user");
            }
            if let Some(check) = state.check.as_ref().filter(|c| c.registration) {
                assert!(self.pending_names.contains(&check.name), "{conn:?} pending");
            }
        }
        assert_eq!(self.by_name.len(), self.users.len(), "one name per user");
        for (index, user) in self.users.iter().enumerate() {
            let id = super::UserId(index as u64 + 1);
            assert_eq!(
                self.by_name.get(user.name.as_bytes()),
                Some(&id),
                "{}",
                user.name
            );
            let key = super::name_key(&user.name);
            let first = self.by_key.get(&key).expect("every name has its key");
            assert_eq!(super::name_key(&self.user(*first).name), key);
            for &group in &user.groups {
                let members = &self.groups[(group.0 - 1) as usize].members;
                assert!(members.contains(&id), "{} in group {}", user.name, group.0);
            }
            for &group in &user.invitations {
                let invited = &self.groups[(group.0 - 1) as usize].invited;
                assert!(
                    invited.contains(&id),
                    "{} invited to {}",
                    user.name,
                    group.0
                );
            }
            for (&other, entry) in &user.contacts {
                let theirs = self
                    .user(other)
                    .contacts
                    .get(&id)
                    .map_or(ContactState::None, |e| e.state);
                let expected = match entry.state {
                    ContactState::Friend => Some(ContactState::Friend),
                    ContactState::RequestSent => Some(ContactState::RequestReceived),
                    ContactState::RequestReceived => Some(ContactState::RequestSent),
                    // A block is one-sided; a cleared entry says nothing.
                    ContactState::Blocked | ContactState::None => None,
                };
                // One who is blocked is not told: their side may still say
                // they asked.
                if let (Some(expected), false) = (expected, theirs == ContactState::Blocked) {
                    assert_eq!(theirs, expected, "{} and {other:?}", user.name);
                }
                assert!(entry.version <= user.contact_version);
            }
        }
        for (index, group) in self.groups.iter().enumerate() {
            let id = super::GroupId(index as u64 + 1);
            for member in &group.members {
                assert!(
                    self.user(*member).groups.contains(&id),
                    "member of {}",
                    id.0
                );
            }
            for invited in &group.invited {
                assert!(!group.members.contains(invited), "invited and a member");
                assert!(self.user(*invited).invitations.contains(&id));
            }
            if !group.members.is_empty() {
                assert!(
                    group.members.contains(&group.owner),
                    "the owner is a member"
                );
                assert!(group.members.len() <= self.config.group_members_max);
            }
        }
    }
}
