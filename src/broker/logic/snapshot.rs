//! Logic's part of a snapshot: accounts, tokens, contacts and groups.
//! Sessions are not in it: a snapshot is taken at a run's start, when
//! there are none.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;

use super::contacts::ContactEntry;
use super::groups::Group;
use super::{GroupId, Logic, LogicConfig, User, UserId};
use std::io::{Read, Write};

use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};
use crate::codec::proto::ContactState;

impl Logic {
    /// Writes the state into `out`.
    ///
    /// # Panics
    /// If a session or a pending registration exists: a snapshot is only
    /// taken at a run's start.
    pub(crate) fn encode<W: Write>(&self, out: &mut Encoder<W>) {
        assert!(
            self.conns.is_empty(),
            "a snapshot is taken without sessions"
        );
        assert!(self.pending_names.is_empty(), "nor registrations under way");
        // The counts first, so that every id can be checked as it is read.
        out.count(self.users.len());
        out.count(self.groups.len());
        for user in &self.users {
            assert!(
                user.online.is_empty(),
                "a snapshot is taken without sessions"
            );
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
    }

    /// Reads what [`Logic::encode`] wrote.
    pub(crate) fn decode<R: Read>(
        config: LogicConfig,
        input: &mut Decoder<R>,
    ) -> Result<Self, SnapshotError> {
        let mut logic = Logic::new(config);
        let user_count = input.count(40)?;
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
            let user_id = UserId(logic.users.len() as u64 + 1);
            if logic.by_name.insert(name.clone(), user_id).is_some() {
                return Err(input.error("a user name twice"));
            }
            logic.users.push(User {
                name,
                password_hash,
                tokens,
                online: Vec::new(),
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
        Ok(logic)
    }
}
