//! Logic's part of a snapshot: the run's settings, accounts, tokens,
//! contacts, groups and the connections open at the snapshot's record
//! (with their sessions), since a snapshot may be taken at any record.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;

use super::contacts::ContactEntry;
use super::groups::Group;
use super::names::name_key;
use super::{Conn, ConnId, GroupId, Logic, LogicConfig, Session, User, UserId};
use std::io::{Read, Write};

use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};
use crate::codec::proto::ContactState;

impl Logic {
    /// Writes the state into `out`.
    ///
    /// # Panics
    /// If a registration is under way: a snapshot is taken of replayed
    /// state, and replay never sees one (a password is hashed before its
    /// registration is journaled).
    pub(crate) fn encode<W: Write>(&self, out: &mut Encoder<W>) {
        assert!(
            self.pending_names.is_empty(),
            "a snapshot is taken of replayed state, without registrations under way"
        );
        // The run's settings, which the records after the snapshot were
        // decided under.
        out.u64(self.config.frame_size_max as u64);
        out.u32(u32::from(self.config.open_messaging));
        out.u64(self.config.group_members_max as u64);
        out.u32(self.config.rules_version);
        // The counts first, so that every id can be checked as it is read.
        out.count(self.users.len());
        out.count(self.groups.len());
        for user in &self.users {
            out.str(&user.name);
            out.str(&user.password_hash);
            out.count(user.tokens.len());
            for (device, token) in &user.tokens {
                out.str(device);
                out.str(token);
            }
            out.count(user.contacts.len());
            for (contact, entry) in &user.contacts {
                out.u64(contact.0);
                out.u32(entry.state as u32);
                out.u64(entry.version);
            }
            out.u64(user.contact_version);
            for set in [&user.groups, &user.invitations] {
                out.count(set.len());
                for group in set {
                    out.u64(group.0);
                }
            }
            // In the order the devices logged in.
            out.count(user.online.len());
            for conn in &user.online {
                out.u64(conn.0);
            }
        }
        for group in &self.groups {
            out.str(&group.name);
            out.u64(group.owner.0);
            for list in [&group.members, &group.invited] {
                out.count(list.len());
                for user in list {
                    out.u64(user.0);
                }
            }
        }
        // Sorted, so that equal states write equal bytes.
        let mut conns: Vec<_> = self.conns.iter().collect();
        conns.sort_unstable_by_key(|(conn, _)| **conn);
        out.count(conns.len());
        for (conn, state) in conns {
            out.u64(conn.0);
            match &state.session {
                None => out.u64(0),
                Some(session) => {
                    out.u64(session.user.0);
                    out.str(&session.device_id);
                    out.u32(u32::from(session.lz4));
                }
            }
        }
    }

    /// Reads what [`Logic::encode`] wrote.
    pub(crate) fn decode<R: Read>(
        config: LogicConfig,
        input: &mut Decoder<R>,
    ) -> Result<Self, SnapshotError> {
        let mut logic = Logic::new(config);
        logic.config.frame_size_max = input.u64()? as usize;
        logic.config.open_messaging = input.u32()? != 0;
        logic.config.group_members_max = input.u64()? as usize;
        // Version 3 was written only under the rules before their version.
        logic.config.rules_version = if input.version >= 4 { input.u32()? } else { 0 };
        let user_count = input.count(48)?;
        let group_count = input.count(32)?;
        for _ in 0..user_count {
            let name = input.str()?;
            let password_hash = input.str()?;
            let mut tokens = HashMap::default();
            for _ in 0..input.count(16)? {
                let device = input.str()?;
                tokens.insert(device, input.str()?);
            }
            let mut contacts = HashMap::default();
            for _ in 0..input.count(20)? {
                let contact = UserId(input.id(user_count)?);
                let state = ContactState::try_from(input.u32()? as i32)
                    .map_err(|_| input.error("an unknown contact state"))?;
                let version = input.u64()?;
                contacts.insert(contact, ContactEntry { state, version });
            }
            let contact_version = input.u64()?;
            let mut sets = [BTreeSet::new(), BTreeSet::new()];
            for set in &mut sets {
                for _ in 0..input.count(8)? {
                    set.insert(GroupId(input.id(group_count)?));
                }
            }
            let [groups, invitations] = sets;
            let mut online = Vec::new();
            for _ in 0..input.count(8)? {
                online.push(ConnId(input.u64()?));
            }
            let user_id = UserId(logic.users.len() as u64 + 1);
            if logic
                .by_name
                .insert(name.as_bytes().into(), user_id)
                .is_some()
            {
                return Err(input.error("a user name twice"));
            }
            logic.by_key.entry(name_key(&name)).or_insert(user_id);
            logic.users.push(User {
                name,
                password_hash,
                tokens,
                online,
                contacts,
                contact_version,
                groups,
                invitations,
            });
        }
        for _ in 0..group_count {
            let name = input.str()?;
            let owner = UserId(input.id(user_count)?);
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                for _ in 0..input.count(8)? {
                    list.push(UserId(input.id(user_count)?));
                }
            }
            let [members, invited] = lists;
            logic.groups.push(Group {
                name,
                owner,
                members,
                invited,
            });
        }
        for _ in 0..input.count(16)? {
            let conn = ConnId(input.u64()?);
            let session = match input.u64()? {
                0 => None,
                user => {
                    if user > user_count as u64 {
                        return Err(input.error("a session of a user out of range"));
                    }
                    Some(Session {
                        user: UserId(user),
                        device_id: input.str()?,
                        lz4: input.u32()? != 0,
                    })
                }
            };
            let state = Conn {
                session,
                ..Conn::default()
            };
            if logic.conns.insert(conn, state).is_some() {
                return Err(input.error("a connection twice"));
            }
        }
        // Each device in its user's list, once, and nowhere else.
        let mut listed = rustc_hash::FxHashSet::default();
        for (index, user) in logic.users.iter().enumerate() {
            for conn in &user.online {
                if !listed.insert(*conn) {
                    return Err(input.error("a device online twice"));
                }
                let owner = logic
                    .conns
                    .get(conn)
                    .and_then(|c| c.session.as_ref())
                    .map(|session| session.user.0);
                if owner != Some(index as u64 + 1) {
                    return Err(input.error("a device online without its session"));
                }
            }
        }
        let sessions = logic.conns.values().filter(|c| c.session.is_some()).count();
        if listed.len() != sessions {
            return Err(input.error("a session without its device online"));
        }
        logic.devices_online = sessions as u64;
        logic.users_online = logic.users.iter().filter(|u| !u.online.is_empty()).count() as u64;
        Ok(logic)
    }
}
