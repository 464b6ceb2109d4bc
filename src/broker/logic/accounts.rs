//! Accounts: names, password hashes and login tokens, and the names whose
//! registration is at an auth worker.
//!
//! # Invariants
//! - User ids are dense: user `n` is `accounts[n - 1]`, and ids are never
//!   reused.
//! - `by_name` maps every account's name, and nothing else, to its id.
//! - `by_key` holds every account's look-alike key, mapped to the first
//!   account with it (names registered before that rule may share one).
//! - `pending` holds keys of registrations under way only (never in a
//!   snapshot, which is taken of replayed state).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::names::name_key;
use super::{DeviceId, UserId};
use crate::broker::snapshot::{Decoder, Encoder, SnapshotError};

#[derive(Debug)]
pub(super) struct Account {
    pub(super) name: String,
    pub(super) password_hash: String,
    /// Device id to its login token.
    pub(super) tokens: HashMap<DeviceId, String>,
}

/// Every account, by id and by name.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    accounts: Vec<Account>,
    /// Keyed by the name's bytes, so that a Send's recipient, checked as
    /// UTF-8 when its frame was decoded, is looked up without a second check.
    by_name: HashMap<Box<[u8]>, UserId>,
    /// Every account by the key look-alike names share.
    by_key: HashMap<String, UserId>,
    /// Registration keys (from rules 1, look-alike keys) at an auth worker.
    pending: HashSet<String>,
}

impl Accounts {
    pub(super) fn len(&self) -> usize {
        self.accounts.len()
    }

    pub(super) fn get(&self, id: UserId) -> &Account {
        &self.accounts[(id.0 - 1) as usize]
    }

    pub(super) fn get_mut(&mut self, id: UserId) -> &mut Account {
        &mut self.accounts[(id.0 - 1) as usize]
    }

    /// The name of `id`.
    pub(super) fn name(&self, id: UserId) -> &str {
        &self.get(id).name
    }

    /// The account named `name` exactly.
    pub(super) fn find(&self, name: &[u8]) -> Option<UserId> {
        self.by_name.get(name).copied()
    }

    /// What a registration of `name` is known by while it is hashed, and
    /// is checked against: from rules 1 the key look-alike names share,
    /// before them the name itself.
    pub(super) fn registration_key(name: &str, rules_version: u32) -> String {
        if rules_version >= 1 {
            name_key(name)
        } else {
            name.to_owned()
        }
    }

    /// Whether a new registration may not take `name` (whose registration
    /// key is `key`): an account has it, one is being registered under the
    /// key, or (from rules 1) an account's name looks the same.
    pub(super) fn taken(&self, name: &str, key: &str, rules_version: u32) -> bool {
        self.by_name.contains_key(name.as_bytes())
            || self.pending.contains(key)
            || (rules_version >= 1 && self.by_key.contains_key(key))
    }

    /// Holds `key` while its registration is hashed.
    pub(super) fn reserve(&mut self, key: String) {
        self.pending.insert(key);
    }

    /// Releases a key [`Accounts::reserve`] held.
    pub(super) fn release(&mut self, key: &str) {
        self.pending.remove(key);
    }

    /// Forgets every registration under way (a new run starts).
    pub(super) fn release_all(&mut self) {
        self.pending.clear();
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    #[cfg(test)]
    pub(super) fn is_reserved(&self, key: &str) -> bool {
        self.pending.contains(key)
    }

    /// Adds an account; its id.
    pub(super) fn add(&mut self, name: &str, password_hash: &str) -> UserId {
        let id = UserId(self.accounts.len() as u64 + 1);
        self.accounts.push(Account {
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
            tokens: HashMap::default(),
        });
        self.by_name.insert(name.as_bytes().into(), id);
        self.by_key.entry(name_key(name)).or_insert(id);
        id
    }

    /// Writes account `id`'s part of the snapshot.
    pub(super) fn encode_user<W: std::io::Write>(&self, id: UserId, out: &mut Encoder<W>) {
        let account = self.get(id);
        out.str(&account.name);
        out.str(&account.password_hash);
        out.count(account.tokens.len());
        for (device, token) in &account.tokens {
            out.str(device.as_str());
            out.str(token);
        }
    }

    /// Reads what [`Accounts::encode_user`] wrote, as the next account.
    pub(super) fn decode_user<R: std::io::Read>(
        &mut self,
        input: &mut Decoder<R>,
    ) -> Result<UserId, SnapshotError> {
        let name = input.str()?;
        let password_hash = input.str()?;
        if self.by_name.contains_key(name.as_bytes()) {
            return Err(input.error("a user name twice"));
        }
        let id = self.add(&name, &password_hash);
        for _ in 0..input.count(16)? {
            let device = input.str()?;
            let token = input.str()?;
            let device = DeviceId::from(device.as_str());
            self.get_mut(id).tokens.insert(device, token);
        }
        Ok(id)
    }

    /// Account `id` in the replay tests' canonical text form.
    #[cfg(test)]
    pub(super) fn digest_user(&self, id: UserId) -> String {
        let account = self.get(id);
        let mut tokens: Vec<_> = account.tokens.iter().collect();
        tokens.sort();
        format!("{} {} {:?}", id.0, account.name, tokens)
    }

    /// Checks the module's `# Invariants`.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        assert_eq!(self.by_name.len(), self.accounts.len(), "one name per user");
        for (index, account) in self.accounts.iter().enumerate() {
            let id = UserId(index as u64 + 1);
            assert_eq!(
                self.find(account.name.as_bytes()),
                Some(id),
                "{}",
                account.name
            );
            let key = name_key(&account.name);
            let first = self.by_key.get(&key).expect("every name has its key");
            assert!(*first <= id, "the first account with a key keeps it");
            assert_eq!(name_key(self.name(*first)), key);
        }
        assert!(self.by_key.len() <= self.accounts.len());
    }
}
