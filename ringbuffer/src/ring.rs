//! The state shared by the producers, stages and pollers of one ring.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use crate::cursor::{minimum, Cursor};
use crate::slots::{PublishMarks, Slots};
use crate::sync::{Arc, AtomicBool, Mutex};
use crate::wait::Waiter;
use crate::{Sequence, StageFailure};

/// Everything one ring's threads share.
///
/// # Invariants
/// - `cursor` is the producer side: the published count for a single producer,
///   the claimed count for several (then `marks` is `Some` and says which
///   claimed sequences are published).
/// - `gating` holds the cursors of the consumers nobody depends on. Every
///   consumer is upstream of (or is) one of them, so once all of them pass `s`,
///   nobody touches slot `s` any more and the producer may reuse it.
/// - `halted` goes from false to true once and never back.
pub(crate) struct Shared<E> {
    pub(crate) slots: Slots<E>,
    pub(crate) cursor: Cursor,
    pub(crate) marks: Option<PublishMarks>,
    pub(crate) gating: Vec<Arc<Cursor>>,
    pub(crate) waiter: Waiter,
    halted: AtomicBool,
    failure: Mutex<Option<StageFailure>>,
}

impl<E> Shared<E> {
    pub(crate) fn new(
        slots: Slots<E>,
        multi_producer: bool,
        gating: Vec<Arc<Cursor>>,
        waiter: Waiter,
    ) -> Self {
        assert!(
            !gating.is_empty(),
            "a ring needs at least one gating consumer"
        );
        let marks = multi_producer.then(|| PublishMarks::new(slots.slot_count() as usize));
        Self {
            slots,
            cursor: Cursor::new(0),
            marks,
            gating,
            waiter,
            halted: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// The end (exclusive) of the published run that starts at `next`.
    #[inline]
    pub(crate) fn published_end(&self, next: Sequence) -> Sequence {
        match &self.marks {
            None => self.cursor.load(),
            Some(marks) => marks.published_end(next, self.cursor.load()),
        }
    }

    /// The lowest sequence some gating consumer has not finished.
    #[inline]
    pub(crate) fn gating_minimum(&self) -> Sequence {
        minimum(&self.gating, Sequence::MAX)
    }

    /// Whether the pipeline stopped, with `Acquire` ordering so a stopped
    /// pipeline's failure is visible.
    #[inline]
    pub(crate) fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    /// Stops the pipeline and wakes everything that waits, so it can see that.
    pub(crate) fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        self.waiter.wake_all();
    }

    /// Records the first stage failure and stops the pipeline.
    pub(crate) fn fail(&self, failure: StageFailure) {
        {
            let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(failure);
            }
        }
        self.halt();
    }

    pub(crate) fn failure(&self) -> Option<StageFailure> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What a consumer waits on: the producer, or the stages it depends on.
pub(crate) struct Barrier {
    upstream: Vec<Arc<Cursor>>,
}

impl Barrier {
    /// A barrier on `upstream` stages, or on the producer when that is empty.
    pub(crate) fn new(upstream: Vec<Arc<Cursor>>) -> Self {
        Self { upstream }
    }

    /// The end (exclusive) of what a consumer at `next` may process now.
    #[inline]
    pub(crate) fn available<E>(&self, shared: &Shared<E>, next: Sequence) -> Sequence {
        if self.upstream.is_empty() {
            shared.published_end(next)
        } else {
            // Every upstream stage is itself gated on the producer, so the
            // lowest upstream cursor never passes what was published.
            minimum(&self.upstream, Sequence::MAX)
        }
    }
}
