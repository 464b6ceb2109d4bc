//! The client message ids a sender's devices used lately, for idempotent
//! resends.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use crate::broker::ids::{InboxSeq, MessageId};

/// What a client id was given: the message's id and the sender's inbox
/// sequence.
pub(super) type Ack = (MessageId, InboxSeq);

/// A resend key: the sending device's slot among its user's devices (0 for
/// ids remembered under rules that keyed by user alone), then the client
/// message id.
pub(super) type Key = (u32, u64);

/// The resend keys a user's devices sent lately, with what they were
/// given, so a resend is acknowledged with the original ids and stored
/// once.
///
/// Devices almost always number their messages upwards, so the keys are
/// kept in arrival order in one ring: a new key above the newest needs no
/// lookup, and a resend is found by binary search, all in contiguous memory
/// (a hash map per sender missed the cache on every message). The first key
/// that is not above the newest (a second device, or an id out of order)
/// builds a hash index, kept from then on.
///
/// # Invariants
/// - `recent.len() <= window`, oldest first.
/// - Without `index`, the keys in `recent` strictly increase.
/// - With `index`, it maps exactly the keys in `recent`.
/// - `legacy` counts the keys in `recent` with slot 0.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    recent: VecDeque<(Key, Ack)>,
    index: Option<HashMap<Key, Ack>>,
    legacy: usize,
}

impl Dedup {
    pub(super) fn get(&self, key: Key) -> Option<Ack> {
        if let Some(index) = &self.index {
            return index.get(&key).copied();
        }
        match self.recent.back() {
            Some(&(newest, _)) if key <= newest => self
                .recent
                .binary_search_by_key(&key, |&(key, _)| key)
                .ok()
                .map(|at| self.recent[at].1),
            _ => None,
        }
    }

    /// As [`Dedup::get`], and for a device's key (slot above 0) falling
    /// back to the same id remembered under the rules that keyed by user
    /// alone (slot 0), so a resend across the upgrade to per-device keys
    /// is still stored once.
    pub(super) fn get_for_device(&self, key: Key) -> Option<Ack> {
        self.get(key).or_else(|| {
            (self.legacy > 0 && key.0 != 0)
                .then(|| self.get((0, key.1)))
                .flatten()
        })
    }

    /// Remembers a new key (one `get` did not find).
    pub(super) fn insert(&mut self, key: Key, ack: Ack, window: usize) {
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
            if oldest.0 == 0 {
                self.legacy -= 1;
            }
        }
        let in_order = self.recent.back().is_none_or(|&(newest, _)| key > newest);
        if !in_order && self.index.is_none() {
            self.index = Some(self.recent.iter().copied().collect());
        }
        if let Some(index) = &mut self.index {
            index.insert(key, ack);
        }
        if key.0 == 0 {
            self.legacy += 1;
        }
        self.recent.push_back((key, ack));
    }

    /// The remembered keys with what they were given, oldest first.
    pub(super) fn entries(&self) -> impl ExactSizeIterator<Item = (Key, Ack)> + '_ {
        self.recent.iter().copied()
    }

    /// A ring holding `entries` (oldest first), as [`Dedup::entries`] gave
    /// them.
    pub(super) fn from_entries(entries: Vec<(Key, Ack)>) -> Self {
        let in_order = entries.windows(2).all(|pair| pair[0].0 < pair[1].0);
        let index = (!in_order).then(|| entries.iter().copied().collect());
        let legacy = entries.iter().filter(|((slot, _), _)| *slot == 0).count();
        Self {
            recent: entries.into(),
            index,
            legacy,
        }
    }

    /// The remembered client ids, oldest first.
    #[cfg(test)]
    pub(super) fn ids(&self) -> Vec<u64> {
        self.recent.iter().map(|&((_, id), _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An acknowledgement of message `id` at inbox sequence `sequence`.
    fn ack(id: u64, sequence: u64) -> Ack {
        (MessageId(id), InboxSeq(sequence))
    }

    #[test]
    fn dedup_forgets_the_oldest_past_its_window() {
        let mut dedup = Dedup::default();
        for id in 0..5 {
            dedup.insert((0, id), ack(id * 10, id), 3);
        }
        // Each case: a client id and whether it is still remembered.
        for (id, known) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
            assert_eq!(dedup.get((0, id)).is_some(), known, "id {id}");
        }
        assert_eq!(dedup.get((0, 3)), Some(ack(30, 3)));
        assert!(dedup.index.is_none(), "increasing ids need no index");
    }

    #[test]
    fn a_ring_from_a_larger_window_shrinks_to_the_new_one() {
        let entries: Vec<(Key, Ack)> = (0..10).map(|id| ((0, id), ack(id, id))).collect();
        let mut dedup = Dedup::from_entries(entries);
        dedup.insert((0, 10), ack(10, 10), 4);
        assert_eq!(dedup.ids(), [7, 8, 9, 10]);
        // Out of order, so the index is kept too.
        let mut dedup = Dedup::from_entries(vec![
            ((0, 5), ack(1, 1)),
            ((0, 2), ack(2, 2)),
            ((0, 9), ack(3, 3)),
        ]);
        dedup.insert((0, 1), ack(4, 4), 2);
        assert_eq!(dedup.ids(), [9, 1]);
        assert_eq!(
            (dedup.get((0, 5)), dedup.get((0, 9))),
            (None, Some(ack(3, 3)))
        );
    }

    #[test]
    fn a_device_key_falls_back_to_an_id_kept_before_per_device_keys() {
        let mut dedup = Dedup::default();
        dedup.insert((0, 7), ack(70, 1), 4);
        // Each case: a key, and what a device's lookup finds.
        let cases = [
            ((1, 7), Some(ack(70, 1))), // a slot-0 id stands for every device
            ((2, 7), Some(ack(70, 1))),
            ((1, 8), None),
        ];
        for (key, found) in cases {
            assert_eq!(dedup.get_for_device(key), found, "{key:?}");
        }
        dedup.insert((1, 9), ack(90, 2), 4);
        assert_eq!(dedup.get_for_device((2, 9)), None, "another device's id");
        // Once the slot-0 id leaves the window, nothing falls back.
        for id in 10..14 {
            dedup.insert((1, id), ack(id, id), 4);
        }
        assert_eq!(dedup.legacy, 0);
        assert_eq!(dedup.get_for_device((1, 7)), None);
    }

    proptest! {
        /// Whatever order keys come in, from whichever devices, the ring
        /// answers as a plain map of the last `window` keys would.
        #[test]
        fn agrees_with_a_model(
            keys in proptest::collection::vec((0u32..3, 0u64..40), 0..200),
            window in 1usize..10,
        ) {
            let mut dedup = Dedup::default();
            let mut model: VecDeque<(Key, Ack)> = VecDeque::new();
            for (step, key) in keys.into_iter().enumerate() {
                let expected = model.iter().find(|(m, _)| *m == key).map(|&(_, ack)| ack);
                prop_assert_eq!(dedup.get(key), expected);
                if expected.is_none() {
                    let given = ack(step as u64, key.1);
                    dedup.insert(key, given, window);
                    if model.len() == window {
                        model.pop_front();
                    }
                    model.push_back((key, given));
                }
                prop_assert_eq!(dedup.ids(), model.iter().map(|((_, m), _)| *m).collect::<Vec<_>>());
                let legacy = model.iter().filter(|((slot, _), _)| *slot == 0).count();
                prop_assert_eq!(dedup.legacy, legacy);
            }
        }
    }
}
