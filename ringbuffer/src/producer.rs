//! Producers: claim slots, write events in place, publish them.

use std::marker::PhantomData;
use std::ops::Range;

use crate::ring::Shared;
use crate::sync::Arc;
use crate::{Halted, Sequence, TryPublishError};

/// The slots of a claimed batch, yielded in sequence order as `&mut E`.
pub struct BatchSlots<'a, E> {
    shared: &'a Shared<E>,
    next: Sequence,
    end: Sequence,
    _slots: PhantomData<&'a mut E>,
}

impl<'a, E> Iterator for BatchSlots<'a, E> {
    type Item = &'a mut E;

    #[inline]
    fn next(&mut self) -> Option<&'a mut E> {
        if self.next == self.end {
            return None;
        }
        let sequence = self.next;
        self.next += 1;
        // SAFETY: the producer claimed `start..end` and has not published it,
        // so no consumer reads these slots and no other producer claimed them;
        // each sequence is yielded once, so the `&mut`s never alias.
        let event = unsafe { self.shared.slots.write(sequence, |event| event as *mut E) };
        // SAFETY: the pointer is valid for the lifetime of `shared`, and the
        // claim keeps it exclusive until the batch is published, which happens
        // only after the closure holding this iterator returns.
        Some(unsafe { &mut *event })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = (self.end - self.next) as usize;
        (remaining, Some(remaining))
    }
}

impl<E> ExactSizeIterator for BatchSlots<'_, E> {}

/// Publishes from one thread. The claim path has no atomic read-modify-write:
/// the producer alone owns the cursor.
///
/// # Invariants
/// - `next` equals the shared cursor (this producer is its only writer).
/// - `gating_cache + slot_count` never exceeds what the gating consumers allow:
///   the cache only ever lags the true minimum.
pub struct SingleProducer<E> {
    shared: Arc<Shared<E>>,
    next: Sequence,
    gating_cache: Sequence,
}

impl<E> SingleProducer<E> {
    pub(crate) fn new(shared: Arc<Shared<E>>) -> Self {
        Self {
            shared,
            next: 0,
            gating_cache: 0,
        }
    }

    /// Writes one event with `write` and publishes it, waiting (with the
    /// ring's strategy) while the ring is full. Returns its sequence.
    #[inline]
    pub fn publish(&mut self, write: impl FnOnce(&mut E)) -> Result<Sequence, Halted> {
        let sequence = self.next;
        self.claim(sequence + 1)?;
        // SAFETY: `claim` made sure every consumer is past `sequence - slot_count`
        // and nothing publishes `sequence` but this producer, so the slot is ours.
        unsafe { self.shared.slots.write(sequence, write) };
        self.commit(sequence + 1);
        Ok(sequence)
    }

    /// Like [`publish`](Self::publish), but returns [`TryPublishError::Full`]
    /// instead of waiting.
    #[inline]
    pub fn try_publish(&mut self, write: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        let sequence = self.next;
        self.try_claim(sequence + 1)?;
        // SAFETY: as in `publish`.
        unsafe { self.shared.slots.write(sequence, write) };
        self.commit(sequence + 1);
        Ok(sequence)
    }

    /// Claims `count` slots, lets `write` fill them through an iterator, and
    /// publishes them together; consumers see them as one batch.
    ///
    /// # Panics
    /// If `count` is zero or more than the ring's capacity.
    pub fn publish_batch<R>(
        &mut self,
        count: usize,
        write: impl FnOnce(BatchSlots<'_, E>) -> R,
    ) -> Result<(Range<Sequence>, R), Halted> {
        let range = self.batch_range(count);
        self.claim(range.end)?;
        let result = write(self.batch_slots(&range));
        self.commit(range.end);
        Ok((range, result))
    }

    /// Like [`publish_batch`](Self::publish_batch), but returns
    /// [`TryPublishError::Full`] instead of waiting.
    pub fn try_publish_batch<R>(
        &mut self,
        count: usize,
        write: impl FnOnce(BatchSlots<'_, E>) -> R,
    ) -> Result<(Range<Sequence>, R), TryPublishError> {
        let range = self.batch_range(count);
        self.try_claim(range.end)?;
        let result = write(self.batch_slots(&range));
        self.commit(range.end);
        Ok((range, result))
    }

    /// The sequence the next publish gets.
    pub fn next_sequence(&self) -> Sequence {
        self.next
    }

    fn batch_range(&self, count: usize) -> Range<Sequence> {
        assert!(count > 0, "a batch holds at least one event");
        assert!(
            count as u64 <= self.shared.slots.slot_count(),
            "a batch of {count} does not fit a ring of {}",
            self.shared.slots.slot_count()
        );
        self.next..self.next + count as u64
    }

    fn batch_slots(&self, range: &Range<Sequence>) -> BatchSlots<'_, E> {
        BatchSlots {
            shared: &self.shared,
            next: range.start,
            end: range.end,
            _slots: PhantomData,
        }
    }

    #[inline]
    fn commit(&mut self, end: Sequence) {
        self.next = end;
        self.shared.cursor.store(end);
        self.shared.waiter.signal();
    }

    #[inline]
    fn try_claim(&mut self, end: Sequence) -> Result<(), TryPublishError> {
        if self.shared.is_halted() {
            return Err(Halted.into());
        }
        if end > self.gating_cache + self.shared.slots.slot_count() {
            self.gating_cache = self.shared.gating_minimum();
            if end > self.gating_cache + self.shared.slots.slot_count() {
                return Err(TryPublishError::Full);
            }
        }
        Ok(())
    }

    #[inline]
    fn claim(&mut self, end: Sequence) -> Result<(), Halted> {
        if self.shared.is_halted() {
            return Err(Halted);
        }
        if end > self.gating_cache + self.shared.slots.slot_count() {
            self.gating_cache = wait_for_capacity(&self.shared, end)?;
        }
        Ok(())
    }
}

/// Publishes from any number of threads: clone it, one per thread. A claim is
/// one compare-and-swap; each claimed run then gets a publication mark (one
/// store, however long the run), so a consumer never reads a slot whose
/// producer is still writing it, however slow.
pub struct MultiProducer<E> {
    shared: Arc<Shared<E>>,
    gating_cache: Sequence,
}

impl<E> Clone for MultiProducer<E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            gating_cache: self.gating_cache,
        }
    }
}

impl<E> MultiProducer<E> {
    pub(crate) fn new(shared: Arc<Shared<E>>) -> Self {
        Self {
            shared,
            gating_cache: 0,
        }
    }

    /// Writes one event with `write` and publishes it, waiting while the ring
    /// is full. Returns its sequence.
    #[inline]
    pub fn publish(&mut self, write: impl FnOnce(&mut E)) -> Result<Sequence, Halted> {
        let range = self.claim(1)?;
        // SAFETY: the atomic claim gave `range` to this producer alone, and
        // `claim` waited until every consumer left the previous lap's slots.
        unsafe { self.shared.slots.write(range.start, write) };
        self.commit(range.clone());
        Ok(range.start)
    }

    /// Like [`publish`](Self::publish), but returns [`TryPublishError::Full`]
    /// instead of waiting.
    #[inline]
    pub fn try_publish(&mut self, write: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        let range = self.try_claim(1)?;
        // SAFETY: as in `publish`.
        unsafe { self.shared.slots.write(range.start, write) };
        self.commit(range.clone());
        Ok(range.start)
    }

    /// Claims `count` slots, lets `write` fill them, and publishes them.
    ///
    /// # Panics
    /// If `count` is zero or more than the ring's capacity.
    pub fn publish_batch<R>(
        &mut self,
        count: usize,
        write: impl FnOnce(BatchSlots<'_, E>) -> R,
    ) -> Result<(Range<Sequence>, R), Halted> {
        self.check_batch(count);
        let range = self.claim(count as u64)?;
        let result = write(self.batch_slots(&range));
        self.commit(range.clone());
        Ok((range, result))
    }

    /// Like [`publish_batch`](Self::publish_batch), but returns
    /// [`TryPublishError::Full`] instead of waiting.
    pub fn try_publish_batch<R>(
        &mut self,
        count: usize,
        write: impl FnOnce(BatchSlots<'_, E>) -> R,
    ) -> Result<(Range<Sequence>, R), TryPublishError> {
        self.check_batch(count);
        let range = self.try_claim(count as u64)?;
        let result = write(self.batch_slots(&range));
        self.commit(range.clone());
        Ok((range, result))
    }

    fn check_batch(&self, count: usize) {
        assert!(count > 0, "a batch holds at least one event");
        assert!(
            count as u64 <= self.shared.slots.slot_count(),
            "a batch of {count} does not fit a ring of {}",
            self.shared.slots.slot_count()
        );
    }

    fn batch_slots(&self, range: &Range<Sequence>) -> BatchSlots<'_, E> {
        BatchSlots {
            shared: &self.shared,
            next: range.start,
            end: range.end,
            _slots: PhantomData,
        }
    }

    /// Claims `count` slots, waiting while the ring is full. The claim is
    /// taken only once there is room for it: a producer never holds claimed
    /// slots while it waits, which would stall the consumers behind a thread
    /// that may be descheduled.
    #[inline]
    fn claim(&mut self, count: u64) -> Result<Range<Sequence>, Halted> {
        // Bounded by progress: each round either claims, or waits until the
        // consumers free room that another producer may take first.
        loop {
            match self.try_claim(count) {
                Ok(range) => return Ok(range),
                Err(TryPublishError::Halted(halted)) => return Err(halted),
                Err(TryPublishError::Full) => {
                    let end = self.shared.cursor.load() + count;
                    self.gating_cache = wait_for_capacity(&self.shared, end)?;
                }
            }
        }
    }

    #[inline]
    fn try_claim(&mut self, count: u64) -> Result<Range<Sequence>, TryPublishError> {
        let slot_count = self.shared.slots.slot_count();
        let mut start = self.shared.cursor.load();
        let mut backoff = 1u32;
        // Bounded: each failed exchange means another producer claimed, and a
        // ring only has so many slots to claim before it is full.
        loop {
            if self.shared.is_halted() {
                return Err(Halted.into());
            }
            let end = start + count;
            if end > self.gating_cache + slot_count {
                self.gating_cache = self.shared.gating_minimum();
                if end > self.gating_cache + slot_count {
                    return Err(TryPublishError::Full);
                }
            }
            match self.shared.cursor.compare_exchange(start, end) {
                Ok(()) => return Ok(start..end),
                Err(current) => {
                    // Another producer won the line: let it have it a moment
                    // rather than fight over it again at once.
                    start = current;
                    for _ in 0..backoff {
                        crate::sync::spin_hint();
                    }
                    backoff = (backoff * 2).min(CLAIM_BACKOFF_MAX);
                }
            }
        }
    }

    #[inline]
    fn commit(&self, range: Range<Sequence>) {
        // The claim invariant: `marks` is `Some` whenever the ring was built
        // for several producers, which is the only way to get a MultiProducer.
        let marks = self
            .shared
            .marks
            .as_ref()
            .expect("multi-producer ring has publish marks");
        marks.publish(range.start, range.end);
        self.shared.waiter.signal();
    }
}

/// The most spin hints between two claim attempts of a multi-producer.
const CLAIM_BACKOFF_MAX: u32 = 64;

/// Waits until the gating consumers leave room for sequences below `end`;
/// returns the gating minimum it saw.
#[cold]
fn wait_for_capacity<E>(shared: &Shared<E>, end: Sequence) -> Result<Sequence, Halted> {
    let slot_count = shared.slots.slot_count();
    let mut gating = shared.gating_minimum();
    if end <= gating + slot_count {
        return Ok(gating);
    }
    shared.waiter.wait(|| {
        gating = shared.gating_minimum();
        end <= gating + slot_count || shared.is_halted()
    });
    if end <= gating + slot_count {
        Ok(gating)
    } else {
        Err(Halted)
    }
}
