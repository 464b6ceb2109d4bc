//! Logic's part of a snapshot: the run's settings, and each room's part
//! (accounts, tokens, contacts, groups and the connections open at the
//! snapshot's record, with their sessions, since a snapshot may be taken
//! at any record). The layout interleaves the rooms per user, as format 3
//! wrote it.

use std::io::{Read, Write};

use super::{Logic, LogicConfig, UserId};
use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};

impl Logic {
    /// Writes the state into `out`.
    ///
    /// # Panics
    /// If a registration is under way: a snapshot is taken of replayed
    /// state, and replay never sees one (a password is hashed before its
    /// registration is journaled).
    pub(crate) fn encode<W: Write>(&self, out: &mut Encoder<W>) {
        // The run's settings, which the records after the snapshot were
        // decided under.
        assert!(
            !self.accounts.has_pending(),
            "a snapshot is taken of replayed state, without registrations under way"
        );
        out.u64(self.config.frame_size_max as u64);
        out.u32(u32::from(self.config.open_messaging));
        out.u64(self.config.group_members_max as u64);
        out.u32(self.config.rules_version);
        // The counts first, so that every id can be checked as it is read.
        out.count(self.accounts.len());
        self.groups.encode_count(out);
        for id in (1..=self.accounts.len() as u64).map(UserId) {
            self.accounts.encode_user(id, out);
            self.contacts.encode_user(id, out);
            self.groups.encode_user(id, out);
            self.sessions.encode_user(id, out);
        }
        self.groups.encode_groups(out);
        self.sessions.encode_conns(out);
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
            logic.accounts.decode_user(input)?;
            logic.contacts.decode_user(user_count, input)?;
            logic.groups.decode_user(group_count, input)?;
            logic.sessions.decode_user(input)?;
        }
        logic.groups.decode_groups(group_count, input)?;
        logic.sessions.decode_conns(input)?;
        Ok(logic)
    }
}
