//! Connections per client address: a limit the listening thread checks
//! before it hands a connection to an I/O thread, so that one address
//! cannot take every connection the server has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Live connections by client address. An address with none has no entry,
/// so the table holds only as many entries as there are connections.
pub(crate) struct PerIp {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// # Panics
    /// If `limit` is zero (no limit is no table).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        assert!(limit > 0, "a limit of at least one connection");
        Arc::new(Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` if that address
    /// is at the limit. The slot gives itself back when dropped, however
    /// the connection ends.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        // At the limit the entry exists already (the limit is at least one).
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: Arc::clone(self),
            key,
        })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&key(ip)).copied().unwrap_or(0)
    }
}

/// One connection's place in [`PerIp`].
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .table
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What the limit counts by: an IPv4 address (IPv4-mapped IPv6 included),
/// or an IPv6 address's /64 prefix, the block one host or subscriber
/// usually has to itself.
/// (The login limits count addresses the same way.)
fn key(ip: IpAddr) -> IpAddr {
    crate::broker::address_key(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_up_to_the_limit_and_its_slots_come_back_when_dropped() {
        let table = PerIp::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = table.take(ip).expect("first");
        let second = table.take(ip).expect("second");
        assert!(table.take(ip).is_none(), "a third is over the limit");
        let elsewhere = table.take(other).expect("another address has its own");
        drop(first);
        let third = table.take(ip).expect("a slot came back");
        drop((second, third, elsewhere));
        assert_eq!(table.count(ip), 0);
        assert!(table.counts.lock().unwrap().is_empty(), "no entry is kept");
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let table = PerIp::new(1);
        let _a = table.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(table
            .take("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        assert!(table.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = table.take("192.0.2.7".parse().unwrap()).unwrap();
        assert!(table.take("::ffff:192.0.2.7".parse().unwrap()).is_none());
    }
}
