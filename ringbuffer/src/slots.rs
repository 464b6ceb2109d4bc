//! Preallocated slot storage, and the per-slot publication marks that the
//! multi-producer claim needs.

use std::sync::atomic::Ordering;

use crate::sync::{AtomicU64, SlotCell};
use crate::Sequence;

/// The ring's events, allocated once and reused in place.
///
/// # Invariants
/// - `slot_count` is a power of two and `mask == slot_count - 1`, so that
///   `sequence & mask` is the slot index of `sequence`.
/// - The slot of sequence `s` is accessed only by whoever the sequencing
///   protocol grants it to: the producer that claimed `s` (exclusively) until it
///   publishes `s`; then each stage in the order of the DAG, exclusively for a
///   stage declared exclusive and shared for stages declared shared; then, once
///   every terminal stage has passed `s`, the producer that claims
///   `s + slot_count`.
pub(crate) struct Slots<E> {
    cells: Box<[SlotCell<E>]>,
    mask: u64,
}

// SAFETY: the slots hand `&mut E` to one thread at a time and `&E` to several
// threads at once, never both together (see the invariants above); that is
// sound for events that may move between threads (`Send`) and be read from
// several at once (`Sync`).
unsafe impl<E: Send + Sync> Sync for Slots<E> {}
// SAFETY: moving the storage to another thread moves the events with it, which
// `E: Send` allows.
unsafe impl<E: Send> Send for Slots<E> {}

impl<E> Slots<E> {
    /// Allocates `slot_count` events, each made by `factory`.
    ///
    /// # Panics
    /// If `slot_count` is zero or not a power of two.
    pub(crate) fn new(slot_count: usize, mut factory: impl FnMut() -> E) -> Self {
        assert!(slot_count > 0, "ring capacity must be at least one slot");
        assert!(
            slot_count.is_power_of_two(),
            "ring capacity must be a power of two, got {slot_count}"
        );
        let cells: Box<[SlotCell<E>]> = (0..slot_count).map(|_| SlotCell::new(factory())).collect();
        Self {
            cells,
            mask: slot_count as u64 - 1,
        }
    }

    #[inline]
    pub(crate) fn slot_count(&self) -> u64 {
        self.mask + 1
    }

    #[inline]
    fn cell(&self, sequence: Sequence) -> &SlotCell<E> {
        let index = (sequence & self.mask) as usize;
        debug_assert!(index < self.cells.len());
        // SAFETY: `mask == cells.len() - 1` with `cells.len()` a power of two
        // (invariant), so `sequence & mask` is always in bounds. This runs per
        // event per stage, where the bounds check measured as a cost.
        unsafe { self.cells.get_unchecked(index) }
    }

    /// Runs `f` on the event of `sequence`, shared.
    ///
    /// # Safety
    /// The caller holds shared access to `sequence` under the sequencing
    /// protocol: nobody holds or can gain exclusive access while `f` runs.
    #[inline]
    pub(crate) unsafe fn read<R>(&self, sequence: Sequence, f: impl FnOnce(&E) -> R) -> R {
        // SAFETY: the caller guarantees no exclusive access exists, so a shared
        // reference for the duration of `f` aliases nothing mutable.
        unsafe { self.cell(sequence).with(|ptr| f(&*ptr)) }
    }

    /// Runs `f` on the event of `sequence`, exclusively.
    ///
    /// # Safety
    /// The caller holds exclusive access to `sequence` under the sequencing
    /// protocol: nobody else reads or writes that slot while `f` runs.
    #[inline]
    pub(crate) unsafe fn write<R>(&self, sequence: Sequence, f: impl FnOnce(&mut E) -> R) -> R {
        // SAFETY: the caller guarantees exclusive access, so this is the only
        // reference to the event for the duration of `f`.
        unsafe { self.cell(sequence).with_mut(|ptr| f(&mut *ptr)) }
    }
}

/// Per-slot marks saying which sequence a slot last had published into it; the
/// multi-producer counterpart of a single cursor.
///
/// With several producers, claims complete out of order: the claim counter can
/// be ahead of a slot whose producer is still writing. A consumer therefore
/// trusts sequence `s` only once `marks[s & mask] == s`.
///
/// # Invariants
/// - A mark only ever holds `UNPUBLISHED` or a sequence whose slot index is its
///   own index; it is stored once per publication, by the producer that claimed
///   that sequence.
pub(crate) struct PublishMarks {
    marks: Box<[AtomicU64]>,
    mask: u64,
}

/// The initial mark: no sequence below `u64::MAX` ever equals it.
const UNPUBLISHED: u64 = u64::MAX;

impl PublishMarks {
    pub(crate) fn new(slot_count: usize) -> Self {
        assert!(
            slot_count.is_power_of_two(),
            "slot count must be a power of two"
        );
        Self {
            marks: (0..slot_count)
                .map(|_| AtomicU64::new(UNPUBLISHED))
                .collect(),
            mask: slot_count as u64 - 1,
        }
    }

    /// Marks `sequence` as published, with `Release` ordering so the event
    /// written before it is visible to whoever observes the mark.
    #[inline]
    pub(crate) fn publish(&self, sequence: Sequence) {
        self.marks[(sequence & self.mask) as usize].store(sequence, Ordering::Release);
    }

    /// Whether `sequence` is published, with `Acquire` ordering.
    #[inline]
    pub(crate) fn is_published(&self, sequence: Sequence) -> bool {
        self.marks[(sequence & self.mask) as usize].load(Ordering::Acquire) == sequence
    }

    /// The end of the contiguous run of published sequences that starts at
    /// `from`, looking no further than `claimed` (exclusive).
    #[inline]
    pub(crate) fn published_end(&self, from: Sequence, claimed: Sequence) -> Sequence {
        let mut end = from;
        while end < claimed && self.is_published(end) {
            end += 1;
        }
        end
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sequences_map_to_slots_modulo_capacity() {
        let slots = Slots::new(4, || 0u64);
        // Write each sequence's value into its slot, across two laps.
        for sequence in 0..8 {
            // SAFETY: single-threaded test, no other access exists.
            unsafe { slots.write(sequence, |value| *value = sequence) };
        }
        for sequence in 4..8 {
            // SAFETY: as above.
            let seen = unsafe { slots.read(sequence, |value| *value) };
            // The second lap overwrote the first in place.
            assert_eq!(seen, sequence);
            // SAFETY: as above.
            let lapped = unsafe { slots.read(sequence - 4, |value| *value) };
            assert_eq!(
                lapped,
                sequence,
                "sequence {} shares a slot with {sequence}",
                sequence - 4
            );
        }
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        let _ = Slots::new(6, || 0u8);
    }

    #[test]
    #[should_panic(expected = "at least one slot")]
    fn capacity_must_not_be_zero() {
        let _ = Slots::new(0, || 0u8);
    }

    #[test]
    fn publish_marks_report_the_contiguous_published_run() {
        let marks = PublishMarks::new(8);
        // Nothing published: the run from 0 is empty whatever was claimed.
        assert_eq!(marks.published_end(0, 5), 0);
        // 0, 1 and 3 published, 2 still being written: the run stops at 2.
        marks.publish(0);
        marks.publish(1);
        marks.publish(3);
        assert_eq!(marks.published_end(0, 5), 2);
        // 2 lands: the run reaches 4, where nothing is published.
        marks.publish(2);
        assert_eq!(marks.published_end(0, 5), 4);
        // The claim bounds the scan even where marks would allow more.
        assert_eq!(marks.published_end(0, 3), 3);
        // A mark from the previous lap does not count for this one.
        assert!(!marks.is_published(8));
        marks.publish(8);
        assert!(marks.is_published(8));
        assert!(!marks.is_published(0), "slot 0 now holds sequence 8");
    }
}
