//! The client message ids a sender used lately, for idempotent resends.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

/// A client id and what it was given: (server message id, inbox sequence).
type Ack = (u64, u64);

/// The client message ids a user sent lately, with what they were given,
/// so a resend is acknowledged with the original ids and stored once.
///
/// Clients almost always number their messages upwards, so the ids are kept
/// in arrival order in one ring: a new id above the newest needs no lookup,
/// and a resend is found by binary search, all in contiguous memory (a hash
/// map per sender missed the cache on every message). The first id that is
/// not above the newest builds a hash index, kept from then on.
///
/// # Invariants
/// - `recent.len() <= window`, oldest first.
/// - Without `index`, the ids in `recent` strictly increase.
/// - With `index`, it maps exactly the ids in `recent`.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    recent: VecDeque<(u64, Ack)>,
    index: Option<HashMap<u64, Ack>>,
}

impl Dedup {
    pub(super) fn get(&self, client_message_id: u64) -> Option<Ack> {
        if let Some(index) = &self.index {
            return index.get(&client_message_id).copied();
        }
        match self.recent.back() {
            Some(&(newest, _)) if client_message_id <= newest => self
                .recent
                .binary_search_by_key(&client_message_id, |&(id, _)| id)
                .ok()
                .map(|at| self.recent[at].1),
            _ => None,
        }
    }

    /// Remembers a new id (one `get` did not find).
    pub(super) fn insert(&mut self, client_message_id: u64, ack: Ack, window: usize) {
        if window == 0 {
            return;
        }
        // `while`, not `if`: a ring from a snapshot taken under a larger
        // window shrinks to this one.
        while self.recent.len() >= window {
            let (oldest, _) = self.recent.pop_front().expect("a full window is not empty");
            if let Some(index) = &mut self.index {
                index.remove(&oldest);
            }
        }
        let in_order = self
            .recent
            .back()
            .is_none_or(|&(newest, _)| client_message_id > newest);
        if !in_order && self.index.is_none() {
            self.index = Some(self.recent.iter().copied().collect());
        }
        if let Some(index) = &mut self.index {
            index.insert(client_message_id, ack);
        }
        self.recent.push_back((client_message_id, ack));
    }

    /// The remembered ids with what they were given, oldest first.
    pub(super) fn entries(&self) -> impl ExactSizeIterator<Item = (u64, Ack)> + '_ {
        self.recent.iter().copied()
    }

    /// A ring holding `entries` (oldest first), as [`Dedup::entries`] gave
    /// them.
    pub(super) fn from_entries(entries: Vec<(u64, Ack)>) -> Self {
        let in_order = entries.windows(2).all(|pair| pair[0].0 < pair[1].0);
        let index = (!in_order).then(|| entries.iter().copied().collect());
        Self {
            recent: entries.into(),
            index,
        }
    }

    /// The remembered ids, oldest first.
    #[cfg(test)]
    pub(super) fn ids(&self) -> Vec<u64> {
        self.recent.iter().map(|&(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(dedup.get(3), Some((30, 3)));
        assert!(dedup.index.is_none(), "increasing ids need no index");
    }

    #[test]
    fn a_ring_from_a_larger_window_shrinks_to_the_new_one() {
        let entries: Vec<(u64, Ack)> = (0..10).map(|id| (id, (id, id))).collect();
        let mut dedup = Dedup::from_entries(entries);
        dedup.insert(10, (10, 10), 4);
        assert_eq!(dedup.ids(), [7, 8, 9, 10]);
        // Out of order, so the index is kept too.
        let mut dedup = Dedup::from_entries(vec![(5, (1, 1)), (2, (2, 2)), (9, (3, 3))]);
        dedup.insert(1, (4, 4), 2);
        assert_eq!(dedup.ids(), [9, 1]);
        assert_eq!((dedup.get(5), dedup.get(9)), (None, Some((3, 3))));
    }

    proptest! {
        /// Whatever order ids come in, the ring answers as a plain map of
        /// the last `window` ids would.
        #[test]
        fn agrees_with_a_model(ids in proptest::collection::vec(0u64..40, 0..200), window in 1usize..10) {
            let mut dedup = Dedup::default();
            let mut model: VecDeque<(u64, Ack)> = VecDeque::new();
            for (step, id) in ids.into_iter().enumerate() {
                let expected = model.iter().find(|(m, _)| *m == id).map(|&(_, ack)| ack);
                prop_assert_eq!(dedup.get(id), expected);
                if expected.is_none() {
                    let ack = (step as u64, id);
                    dedup.insert(id, ack, window);
                    if model.len() == window {
                        model.pop_front();
                    }
                    model.push_back((id, ack));
                }
                prop_assert_eq!(dedup.ids(), model.iter().map(|(m, _)| *m).collect::<Vec<_>>());
            }
        }
    }
}
