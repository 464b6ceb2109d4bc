//! The sequence counter each producer and stage publishes its progress through.

use crossbeam_utils::CachePadded;

use crate::sync::AtomicU64;
use crate::Sequence;
use std::sync::atomic::Ordering;

/// A progress counter on a cache line of its own, so that two threads advancing
/// neighbouring cursors never contend for one line (false sharing).
///
/// The value is a count, not an index: a cursor at `n` says sequences `0..n` are
/// done (published, for a producer; processed, for a stage). A fresh cursor is
/// at 0, so no sequence is ever "minus one".
///
/// # Invariants
/// - The value never decreases.
/// - Only one thread stores to a given cursor (its owner); any may load it.
#[derive(Debug)]
pub(crate) struct Cursor {
    value: CachePadded<AtomicU64>,
}

impl Cursor {
    pub(crate) fn new(value: Sequence) -> Self {
        Self {
            value: CachePadded::new(AtomicU64::new(value)),
        }
    }

    /// Loads the count with `Acquire` ordering: everything the owner wrote to
    /// the slots below the count is visible to the caller afterwards.
    #[inline]
    pub(crate) fn load(&self) -> Sequence {
        self.value.load(Ordering::Acquire)
    }

    /// Loads the count with `Relaxed` ordering. Only the owner may use this, to
    /// read back its own last store.
    #[inline]
    pub(crate) fn load_own(&self) -> Sequence {
        self.value.load(Ordering::Relaxed)
    }

    /// Stores the count with `Release` ordering: the owner's writes to the slots
    /// below it happen-before any `load` that observes it.
    #[inline]
    pub(crate) fn store(&self, value: Sequence) {
        debug_assert!(value >= self.load_own(), "a cursor never moves back");
        self.value.store(value, Ordering::Release);
    }

    /// Moves the count from `current` to `new` if no other thread did first,
    /// with `AcqRel` ordering on success and `Acquire` on failure. Used only by
    /// the multi-producer `try_` claim.
    #[inline]
    pub(crate) fn compare_exchange(
        &self,
        current: Sequence,
        new: Sequence,
    ) -> Result<(), Sequence> {
        self.value
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
}

/// The lowest value among `cursors`, or `ceiling` when there are none.
#[inline]
pub(crate) fn minimum(cursors: &[crate::sync::Arc<Cursor>], ceiling: Sequence) -> Sequence {
    cursors
        .iter()
        .map(|c| c.load())
        .fold(ceiling, Sequence::min)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    #[test]
    fn minimum_of_cursors() {
        let cursors: Vec<Arc<Cursor>> = [5, 3, 9]
            .into_iter()
            .map(|v| Arc::new(Cursor::new(v)))
            .collect();
        // The slowest cursor bounds everyone after it.
        assert_eq!(minimum(&cursors, u64::MAX), 3);
        // With no cursors, the ceiling stands.
        assert_eq!(minimum(&[], 42), 42);
        // A ceiling below every cursor wins.
        assert_eq!(minimum(&cursors, 1), 1);
    }

    #[test]
    fn cursor_is_alone_on_its_cache_line() {
        assert!(std::mem::align_of::<Cursor>() >= 64);
        assert!(std::mem::size_of::<Cursor>() >= 64);
    }
}
