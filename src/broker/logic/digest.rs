//! A canonical text form of logic's state, for the replay tests, and the
//! check of every room's invariants, for the simulation.

use super::{Logic, UserId};

impl Logic {
    /// Everything replay must rebuild here, in a canonical text form:
    /// accounts, tokens, contacts, groups and live sessions.
    pub(crate) fn digest(&self) -> String {
        let mut out = String::new();
        for id in (1..=self.accounts.len() as u64).map(UserId) {
            out += &format!(
                "user {} {} {} {}\n",
                self.accounts.digest_user(id),
                self.sessions.digest_user(id),
                self.contacts.digest_user(id),
                self.groups.digest_user(id),
            );
        }
        out += &self.groups.digest();
        out += &self.sessions.digest();
        out += &format!(
            "settings: frames {}, open {}, group members {}, rules {}\n",
            self.config.frame_size_max,
            self.config.open_messaging,
            self.config.group_members_max,
            self.config.rules_version,
        );
        out
    }

    /// Checks what each room's `# Invariants` claim, panicking at the
    /// first that does not hold. The simulation runs it after every step.
    pub(crate) fn check_invariants(&self) {
        let users = self.accounts.len();
        self.accounts.check_invariants();
        self.sessions
            .check_invariants(|key| self.accounts.is_reserved(key));
        self.contacts.check_invariants(users);
        self.groups
            .check_invariants(users, self.config.group_members_max);
    }
}
