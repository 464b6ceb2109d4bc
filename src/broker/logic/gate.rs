//! Limits on password guessing: failed logins per account name and per
//! client address, with a lock that doubles with each failure past a free
//! few, and a cap on password checks under way per address.
//!
//! A locked login is refused at once with `TOO_MANY_ATTEMPTS` and the time
//! to wait: nothing is held, neither the logic thread nor an auth worker.
//! The gate is live state only: password logins and their refusals are not
//! journaled, so replay never consults it, and a restart forgets it.
//!
//! # Invariants
//! - Each map holds at most `records_max` records.
//! - A record's `locked_until_ms` is 0 until its failures pass the free ones.
//! - `checks` holds only addresses with checks under way (counts above 0).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

/// Failed logins allowed before the first lock, per account and per address.
const FAILURES_FREE: u32 = 5;
/// The first lock; each further failure doubles it.
const LOCK_FIRST_MS: u64 = 1_000;
/// The longest lock.
const LOCK_MS_MAX: u64 = 15 * 60 * 1_000;
/// A record with no failure for this long is forgotten.
const FORGET_AFTER_MS: u64 = 15 * 60 * 1_000;
/// Records per map; past it, a sweep drops forgotten ones, and a new key
/// that still finds no room goes unrecorded (the other map still holds).
const RECORDS_MAX: usize = 65_536;

/// Why a login is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The account name failed too often lately.
    Account { retry_after_ms: u64 },
    /// The client address failed too often lately.
    Address { retry_after_ms: u64 },
    /// The address has as many checks under way as it may.
    Busy { checks_max: u32 },
}

impl Refusal {
    pub(crate) fn retry_after_ms(self) -> u64 {
        match self {
            Refusal::Account { retry_after_ms } | Refusal::Address { retry_after_ms } => {
                retry_after_ms
            }
            // About one argon2 check: the earliest one of them may be done.
            Refusal::Busy { .. } => 100,
        }
    }

    pub(crate) fn text(self) -> String {
        let wait_s = self.retry_after_ms().div_ceil(1000);
        match self {
            Refusal::Account { .. } => {
                format!("too many failed logins for this user; try again in {wait_s} s")
            }
            Refusal::Address { .. } => {
                format!("too many failed logins from your address; try again in {wait_s} s")
            }
            Refusal::Busy { checks_max } => format!(
                "{checks_max} password checks from your address are under way; \
                 wait for their answers"
            ),
        }
    }
}

/// Counts for operators (Prometheus, the stats line), shared with readers
/// on other threads.
#[derive(Debug, Default)]
pub struct LoginCounters {
    failed: AtomicU64,
    refused_account: AtomicU64,
    refused_address: AtomicU64,
    refused_busy: AtomicU64,
}

/// Login counts since the broker opened (`BrokerWatch::logins`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoginCounts {
    /// Password logins that failed (wrong password or unknown user).
    pub failed: u64,
    /// Logins refused because the account name was locked.
    pub refused_account: u64,
    /// Logins refused because the client address was locked.
    pub refused_address: u64,
    /// Logins and registrations refused because the address had as many
    /// password checks under way as it may.
    pub refused_busy: u64,
}

impl LoginCounters {
    /// The counts now.
    pub fn load(&self) -> LoginCounts {
        // Relaxed: independent counters for people.
        LoginCounts {
            failed: self.failed.load(Ordering::Relaxed),
            refused_account: self.refused_account.load(Ordering::Relaxed),
            refused_address: self.refused_address.load(Ordering::Relaxed),
            refused_busy: self.refused_busy.load(Ordering::Relaxed),
        }
    }

    fn count(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::Account { .. } => &self.refused_account,
            Refusal::Address { .. } => &self.refused_address,
            Refusal::Busy { .. } => &self.refused_busy,
        };
        // Relaxed: a counter for people, ordering nothing.
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    last_failure_ms: u64,
    locked_until_ms: u64,
}

impl Record {
    fn forgotten(&self, now_ms: u64) -> bool {
        now_ms >= self.locked_until_ms
            && now_ms.saturating_sub(self.last_failure_ms) >= FORGET_AFTER_MS
    }

    fn remaining_ms(&self, now_ms: u64) -> Option<u64> {
        (self.locked_until_ms > now_ms).then(|| self.locked_until_ms - now_ms)
    }

    fn fail(&mut self, now_ms: u64) {
        if self.forgotten(now_ms) {
            *self = Record::default();
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure_ms = now_ms;
        if self.failures > FAILURES_FREE {
            let doublings = (self.failures - FAILURES_FREE - 1).min(32);
            let lock_ms = LOCK_FIRST_MS
                .saturating_mul(1 << doublings)
                .min(LOCK_MS_MAX);
            self.locked_until_ms = now_ms + lock_ms;
        }
    }
}

/// Failure records by key, bounded.
#[derive(Debug)]
struct Records<K> {
    map: HashMap<K, Record>,
}

impl<K: std::hash::Hash + Eq> Records<K> {
    fn new() -> Self {
        Self {
            map: HashMap::default(),
        }
    }

    fn remaining_ms<Q>(&self, key: &Q, now_ms: u64) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map.get(key).and_then(|r| r.remaining_ms(now_ms))
    }

    fn fail(&mut self, key: K, now_ms: u64) {
        if self.map.len() >= RECORDS_MAX && !self.map.contains_key(&key) {
            self.map.retain(|_, record| !record.forgotten(now_ms));
            if self.map.len() >= RECORDS_MAX {
                return;
            }
        }
        self.map.entry(key).or_default().fail(now_ms);
        debug_assert!(self.map.len() <= RECORDS_MAX);
    }
}

/// The limits on password logins; see the module docs.
#[derive(Debug)]
pub(crate) struct LoginGate {
    accounts: Records<Box<[u8]>>,
    addresses: Records<IpAddr>,
    /// Password checks under way, by address.
    checks: HashMap<IpAddr, u32>,
    /// The most checks one address may have under way (0: no limit), so a
    /// flood from one place waits behind its own, not everyone's.
    checks_per_address_max: u32,
    counters: Arc<LoginCounters>,
}

impl LoginGate {
    pub(crate) fn new(counters: Arc<LoginCounters>, checks_per_address_max: u32) -> Self {
        Self {
            accounts: Records::new(),
            addresses: Records::new(),
            checks: HashMap::default(),
            checks_per_address_max,
            counters,
        }
    }

    /// Whether a password login as `name` from `ip` may go to the auth
    /// workers now (`name` is `None` for a registration, which only the
    /// address's checks under way limit); a refusal is counted.
    pub(crate) fn check(
        &self,
        name: Option<&[u8]>,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let ip = ip.map(address_key);
        let refusal = if let Some(retry_after_ms) =
            name.and_then(|name| self.accounts.remaining_ms(name, now_ms))
        {
            Some(Refusal::Account { retry_after_ms })
        } else if let Some(retry_after_ms) =
            ip.and_then(|ip| self.addresses.remaining_ms(&ip, now_ms))
        {
            Some(Refusal::Address { retry_after_ms })
        } else if self.checks_per_address_max > 0
            && ip.is_some_and(|ip| self.checks.get(&ip) >= Some(&self.checks_per_address_max))
        {
            Some(Refusal::Busy {
                checks_max: self.checks_per_address_max,
            })
        } else {
            None
        };
        match refusal {
            Some(refusal) => {
                self.counters.count(refusal);
                Err(refusal)
            }
            None => Ok(()),
        }
    }

    /// Every connection is gone (a run started): no check is under way.
    pub(crate) fn clear_checks(&mut self) {
        self.checks.clear();
    }

    /// A password check from `ip` went to the auth workers.
    pub(crate) fn check_started(&mut self, ip: Option<IpAddr>) {
        if let Some(ip) = ip.map(address_key) {
            *self.checks.entry(ip).or_default() += 1;
        }
    }

    /// A password check from `ip` came back, or its connection closed.
    pub(crate) fn check_ended(&mut self, ip: Option<IpAddr>) {
        let Some(ip) = ip.map(address_key) else {
            return;
        };
        let count = self
            .checks
            .get_mut(&ip)
            .expect("a check ends only after it started");
        *count -= 1;
        if *count == 0 {
            self.checks.remove(&ip);
        }
    }

    /// A password login as `name` from `ip` failed.
    pub(crate) fn failed(&mut self, name: &[u8], ip: Option<IpAddr>, now_ms: u64) {
        // Relaxed: a counter for people.
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.accounts.fail(name.into(), now_ms);
        if let Some(ip) = ip.map(address_key) {
            self.addresses.fail(ip, now_ms);
        }
    }

    /// A password login as `name` succeeded: the account starts afresh.
    /// The address does not: one good account must not unlock guessing at
    /// others.
    pub(crate) fn succeeded(&mut self, name: &[u8]) {
        self.accounts.map.remove(name);
    }
}

/// The key an address is counted under: an IPv6 client by its /64 (one
/// machine usually has a whole one), an IPv4-mapped one as IPv4.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKS_MAX: u32 = 4;

    fn gate() -> LoginGate {
        LoginGate::new(Arc::default(), CHECKS_MAX)
    }

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));

    #[test]
    fn an_account_locks_after_the_free_failures_and_the_lock_doubles() {
        let mut gate = gate();
        let mut now = 0;
        for _ in 0..FAILURES_FREE {
            assert_eq!(gate.check(Some(b"ana"), None, now), Ok(()));
            gate.failed(b"ana", None, now);
        }
        assert_eq!(gate.check(Some(b"ana"), None, now), Ok(()));
        // Each case: the lock that the next failure sets.
        for lock_ms in [1_000, 2_000, 4_000, 8_000] {
            gate.failed(b"ana", None, now);
            assert_eq!(
                gate.check(Some(b"ana"), None, now + 1),
                Err(Refusal::Account {
                    retry_after_ms: lock_ms - 1
                })
            );
            assert_eq!(
                gate.check(Some(b"bo"), None, now + 1),
                Ok(()),
                "bo is not locked"
            );
            now += lock_ms;
            assert_eq!(
                gate.check(Some(b"ana"), None, now),
                Ok(()),
                "the lock ran out"
            );
        }
        gate.succeeded(b"ana");
        gate.failed(b"ana", None, now);
        assert_eq!(
            gate.check(Some(b"ana"), None, now),
            Ok(()),
            "a success starts afresh"
        );
        assert_eq!(gate.counters.load().refused_account, 4);
    }

    #[test]
    fn the_longest_lock_is_bounded_and_old_failures_are_forgotten() {
        let mut gate = gate();
        for _ in 0..100 {
            gate.failed(b"ana", None, 0);
        }
        let refusal = gate.check(Some(b"ana"), None, 0).unwrap_err();
        assert_eq!(refusal.retry_after_ms(), LOCK_MS_MAX);
        let later = LOCK_MS_MAX.max(FORGET_AFTER_MS);
        gate.failed(b"ana", None, later);
        assert_eq!(
            gate.check(Some(b"ana"), None, later),
            Ok(()),
            "starts from one failure"
        );
    }

    #[test]
    fn an_address_locks_across_names_and_a_success_does_not_unlock_it() {
        let mut gate = gate();
        for round in 0..=FAILURES_FREE {
            gate.failed(format!("user{round}").as_bytes(), IP, 0);
        }
        gate.succeeded(b"mine");
        assert!(matches!(
            gate.check(Some(b"mine"), IP, 10),
            Err(Refusal::Address { .. })
        ));
        assert_eq!(
            gate.check(Some(b"mine"), None, 10),
            Ok(()),
            "another address"
        );
        // An IPv6 client is counted by its /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..=FAILURES_FREE {
            gate.failed(b"x", Some(a), 0);
        }
        assert!(gate.check(None, Some(b), 10).is_err());
    }

    #[test]
    fn checks_under_way_are_capped_per_address() {
        let mut gate = gate();
        for _ in 0..CHECKS_MAX {
            assert_eq!(gate.check(None, IP, 0), Ok(()));
            gate.check_started(IP);
        }
        let busy = Refusal::Busy {
            checks_max: CHECKS_MAX,
        };
        assert_eq!(gate.check(None, IP, 0), Err(busy));
        let mut unlimited = LoginGate::new(Arc::default(), 0);
        for _ in 0..100 {
            unlimited.check_started(IP);
        }
        assert_eq!(unlimited.check(None, IP, 0), Ok(()), "0 is no limit");
        gate.check_ended(IP);
        assert_eq!(gate.check(None, IP, 0), Ok(()));
        for _ in 1..CHECKS_MAX {
            gate.check_ended(IP);
        }
        assert!(gate.checks.is_empty(), "no count is kept at zero");
    }

    #[test]
    fn records_are_bounded() {
        let mut gate = gate();
        for n in 0..RECORDS_MAX + 10 {
            gate.failed(&(n as u64).to_le_bytes(), None, 0);
        }
        assert_eq!(gate.accounts.map.len(), RECORDS_MAX);
        // Once the old ones are forgotten, a new one finds room.
        gate.failed(b"new", None, FORGET_AFTER_MS + LOCK_MS_MAX);
        assert_eq!(gate.accounts.map.len(), 1);
    }
}
