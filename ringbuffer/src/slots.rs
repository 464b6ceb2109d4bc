//! Preallocated slot storage, and the publication marks that the
//! multi-producer claim needs.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::sync::{AtomicU64, SlotCell};
use crate::Sequence;

/// Where the slot array starts: on a boundary of this many bytes. Two cache
/// lines, since x86 processors fetch lines in adjacent pairs. From the
/// allocator the array starts wherever its 16-byte alignment put it, so a
/// 64-byte event would straddle two lines, one of them shared with the next
/// event: the producer writing event `s + 1` and a stage reading event `s`
/// would fight over it.
const SLOTS_ALIGN: usize = 128;

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
    cells: AlignedArray<SlotCell<E>>,
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
        let cells = AlignedArray::new(slot_count, || SlotCell::new(factory()));
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
        let cells = self.cells.as_slice();
        debug_assert!(index < cells.len());
        // SAFETY: `mask == cells.len() - 1` with `cells.len()` a power of two
        // (invariant), so `sequence & mask` is always in bounds. This runs per
        // event per stage, where the bounds check measured as a cost.
        unsafe { cells.get_unchecked(index) }
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

/// A fixed-length heap array that starts on a [`SLOTS_ALIGN`] boundary.
///
/// # Invariants
/// - `ptr` points to an allocation made with `layout` and owned by this
///   array, whose first `len` values of `T` are initialised; or, when
///   `layout` has size zero, it is dangling and nothing was allocated.
struct AlignedArray<T> {
    ptr: NonNull<T>,
    len: usize,
    layout: Layout,
    /// Owns the values, for the drop check.
    _values: PhantomData<T>,
}

impl<T> AlignedArray<T> {
    /// `len` values made by `make`, in order. If `make` panics, the values
    /// made so far are dropped and the memory freed.
    fn new(len: usize, mut make: impl FnMut() -> T) -> Self {
        let layout = Layout::array::<T>(len)
            .and_then(|layout| layout.align_to(SLOTS_ALIGN))
            .expect("the ring's slots fit in the address space");
        let ptr = if layout.size() == 0 {
            // Zero-sized values (or none): nothing to allocate, and writing
            // one through a dangling pointer writes nothing.
            NonNull::dangling()
        } else {
            // SAFETY: the layout's size is not zero.
            let raw = unsafe { alloc::alloc(layout) };
            NonNull::new(raw.cast::<T>()).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        };
        // Counts the values as they are made, so that a panic in `make`
        // drops exactly those.
        let mut array = Self {
            ptr,
            len: 0,
            layout,
            _values: PhantomData,
        };
        while array.len < len {
            let value = make();
            // SAFETY: `array.len` is below the `len` values the layout holds,
            // and that slot is not initialised yet (for a zero-sized `T`,
            // the write touches no memory).
            unsafe { ptr.add(array.len).write(value) };
            array.len += 1;
        }
        array
    }

    #[inline]
    fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised values (invariant), which
        // live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for AlignedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the first `len` values are initialised and owned here
        // (invariant), and nothing uses them after this.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ))
        };
        if self.layout.size() != 0 {
            // SAFETY: the memory came from `alloc` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr().cast(), self.layout) };
        }
    }
}

/// Publication marks: the multi-producer counterpart of a single cursor.
///
/// With several producers, claims complete out of order: the claim counter can
/// be ahead of a run whose producer is still writing it. Each claim is a run
/// of sequences `start..end`, and the claims tile the sequence space: each
/// run starts where the one claimed before it ends. Publishing a run is one
/// store, `marks[start & mask] = end`, however long the run. A consumer that
/// knows everything below `start` is published reads that one mark to learn
/// whether the run from `start` is, and where it ends; it never reads the
/// claim counter, the line the producers fight over.
///
/// # Invariants
/// - A mark is only stored by the producer that claimed the run starting at
///   its slot, once, after writing every slot of the run.
/// - A run is never longer than `mask + 1` slots. So a mark left from an
///   earlier lap holds a value at most the current sequence of its slot, and
///   "`marks[s & mask] > s`" means exactly "the run from `s` is published"
///   for any `s` that starts a run. The initial 0 reads as unpublished too.
/// - Marks are read only at run starts: a consumer resumes from the end of
///   the last run it saw, which is where the next run starts.
pub(crate) struct PublishMarks {
    marks: Box<[AtomicU64]>,
    mask: u64,
}

impl PublishMarks {
    pub(crate) fn new(slot_count: usize) -> Self {
        assert!(
            slot_count.is_power_of_two(),
            "slot count must be a power of two"
        );
        Self {
            marks: (0..slot_count).map(|_| AtomicU64::new(0)).collect(),
            mask: slot_count as u64 - 1,
        }
    }

    /// Marks the run `start..end` as published, with `Release` ordering so
    /// the events written before it are visible to whoever observes the mark.
    #[inline]
    pub(crate) fn publish(&self, start: Sequence, end: Sequence) {
        debug_assert!(start < end && end - start <= self.mask + 1);
        self.marks[(start & self.mask) as usize].store(end, Ordering::Release);
    }

    /// The end of the run that starts at `start`, if it is published; with
    /// `Acquire` ordering. `start` must start a run.
    ///
    /// A mark from a later lap (its run starting at `start` plus the ring's
    /// capacity or more) reads as unpublished too: a consumer at `start`
    /// never sees one, but the drain at shutdown scans from where a consumer
    /// was, and the consumers may have moved on a lap by the time it reads.
    #[inline]
    pub(crate) fn run_end(&self, start: Sequence) -> Option<Sequence> {
        let end = self.marks[(start & self.mask) as usize].load(Ordering::Acquire);
        (end > start && end - start <= self.mask + 1).then_some(end)
    }

    /// The end of the published runs that follow one another from `from`,
    /// which must start a run (or be 0), looking about one lap ahead at most.
    #[inline]
    pub(crate) fn published_end(&self, from: Sequence) -> Sequence {
        let limit = from + self.mask + 1;
        let mut end = from;
        while end < limit {
            match self.run_end(end) {
                Some(next) => end = next,
                None => break,
            }
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
    fn slots_start_on_a_line_pair_boundary() {
        // Each allocation of 64-byte events, whatever the allocator would
        // have given, starts on a 128-byte boundary, so each event sits in
        // one cache line of its own.
        let mut held = Vec::new();
        for round in 0..8 {
            // Allocations of odd sizes between the rings move where the
            // allocator would put the next one.
            held.push(Vec::<u8>::with_capacity(8 + 16 * round));
            let slots = Slots::new(64, || [0u64; 8]);
            let base = slots.cells.as_slice().as_ptr() as usize;
            assert_eq!(base % SLOTS_ALIGN, 0, "base {base:#x}");
        }
        // Zero-sized events allocate nothing and still count.
        let slots = Slots::new(8, || ());
        assert_eq!(slots.cells.as_slice().len(), 8);
    }

    #[test]
    fn slots_drop_every_event_once() {
        use std::rc::Rc;
        let token = Rc::new(());
        let slots = Slots::new(16, || Rc::clone(&token));
        assert_eq!(Rc::strong_count(&token), 17);
        drop(slots);
        assert_eq!(Rc::strong_count(&token), 1);
    }

    #[test]
    fn a_panicking_factory_drops_the_events_made_so_far() {
        use std::rc::Rc;
        let token = Rc::new(());
        let mut made = 0;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Slots::new(16, || {
                made += 1;
                assert!(made <= 5, "the factory fails at its sixth event");
                Rc::clone(&token)
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(Rc::strong_count(&token), 1, "the five made were dropped");
    }

    #[test]
    fn publish_marks_report_the_contiguous_published_run() {
        let marks = PublishMarks::new(8);
        // Nothing published: the run from 0 is empty.
        assert_eq!(marks.published_end(0), 0);
        // Runs 0..2, 2..3 and 3..6 claimed; 0..2 and 3..6 published, 2..3
        // still being written: the known run stops at 2.
        marks.publish(0, 2);
        marks.publish(3, 6);
        assert_eq!(marks.published_end(0), 2);
        assert_eq!(marks.run_end(3), Some(6));
        // 2..3 lands: the run reaches 6, where nothing is published.
        marks.publish(2, 3);
        assert_eq!(marks.published_end(0), 6);
        assert_eq!(marks.published_end(2), 6);
        // 6..8 and then a whole lap, 8..16, in one run.
        marks.publish(6, 8);
        assert_eq!(marks.published_end(0), 8, "the scan stops one lap on");
        assert_eq!(
            marks.run_end(8),
            None,
            "slot 0's mark is from the lap before"
        );
        marks.publish(8, 16);
        assert_eq!(marks.run_end(8), Some(16));
        assert_eq!(marks.published_end(8), 16);
        // The next lap starts unpublished everywhere, whatever was left.
        for start in 16..24 {
            assert_eq!(marks.run_end(start), None, "sequence {start}");
        }
        // A run from a later lap is not taken for one from this lap.
        marks.publish(16, 20);
        assert_eq!(marks.run_end(16), Some(20));
        assert_eq!(marks.run_end(8), None, "slot 0 now holds the run from 16");
    }
}
