//! The client message ids a sender used lately, for idempotent resends.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

/// The client message ids a user sent lately, with what they were given,
/// so a resend is acknowledged with the original ids and stored once.
///
/// # Invariants
/// - `order` holds exactly the keys of `acks`, oldest first.
/// - `order.len() <= window`.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    acks: HashMap<u64, (u64, u64)>,
    pub(super) order: VecDeque<u64>,
}

impl Dedup {
    pub(super) fn get(&self, client_message_id: u64) -> Option<(u64, u64)> {
        self.acks.get(&client_message_id).copied()
    }

    pub(super) fn insert(&mut self, client_message_id: u64, ack: (u64, u64), window: usize) {
        if window == 0 {
            return;
        }
        if self.order.len() == window {
            let oldest = self.order.pop_front().expect("a full window is not empty");
            self.acks.remove(&oldest);
        }
        self.acks.insert(client_message_id, ack);
        self.order.push_back(client_message_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_forgets_the_oldest_past_its_window() {
        let mut dedup = Dedup::default();
        for id in 0..5 {
            dedup.insert(id, (id * 10, id), 3);
        }
        // Each case: a client id and whether it is still remembered.
        for (id, known) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
            assert_eq!(dedup.get(id).is_some(), known, "id {id}");
        }
        assert_eq!(dedup.order.len(), 3);
        assert_eq!(dedup.acks.len(), 3);
    }
}
