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
///   claimed runs are published).
/// - `run_ends` holds, with several producers, one cursor per consumer that
///   reads the marks (a stage or poller with no upstream): the end of the
///   published runs it has seen, always a run start, below which everything
///   is published. Empty with one producer.
/// - `gating` holds the cursors of the consumers nobody depends on. Every
///   consumer is upstream of (or is) one of them, so once all of them pass `s`,
///   nobody touches slot `s` any more and the producer may reuse it.
/// - `halted` goes from false to true once and never back.
pub(crate) struct Shared<E> {
    pub(crate) slots: Slots<E>,
    pub(crate) cursor: Cursor,
    pub(crate) marks: Option<PublishMarks>,
    run_ends: Vec<Arc<Cursor>>,
    pub(crate) gating: Vec<Arc<Cursor>>,
    pub(crate) waiter: Waiter,
    halted: AtomicBool,
    failure: Mutex<Option<StageFailure>>,
}

impl<E> Shared<E> {
    /// `run_ends` as in the invariants: one per marks-reading consumer with
    /// several producers, none with one.
    pub(crate) fn new(
        slots: Slots<E>,
        run_ends: Vec<Arc<Cursor>>,
        gating: Vec<Arc<Cursor>>,
        waiter: Waiter,
    ) -> Self {
        assert!(
            !gating.is_empty(),
            "a ring needs at least one gating consumer"
        );
        let marks = (!run_ends.is_empty()).then(|| PublishMarks::new(slots.slot_count() as usize));
        Self {
            slots,
            cursor: Cursor::new(0),
            marks,
            run_ends,
            gating,
            waiter,
            halted: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// The end (exclusive) of what is published without a gap: the sequence
    /// a drain must reach. For the consumers, [`Barrier::available`].
    pub(crate) fn published_end(&self) -> Sequence {
        match &self.marks {
            None => self.cursor.load(),
            Some(marks) => {
                // Every run end a consumer saw starts a run, and everything
                // below it is published: scan on from the furthest.
                let from = self.run_ends.iter().map(|c| c.load()).max().unwrap_or(0);
                marks.published_end(from)
            }
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
///
/// # Invariants
/// - `run_end` is `Some` exactly for a consumer with no upstream on a ring with
///   several producers; it is one of the ring's `run_ends`, stored only here.
pub(crate) struct Barrier {
    upstream: Vec<Arc<Cursor>>,
    run_end: Option<Arc<Cursor>>,
}

impl Barrier {
    /// A barrier on `upstream` stages, or on the producer when that is empty;
    /// `run_end` as in the invariants.
    pub(crate) fn new(upstream: Vec<Arc<Cursor>>, run_end: Option<Arc<Cursor>>) -> Self {
        debug_assert!(upstream.is_empty() || run_end.is_none());
        Self { upstream, run_end }
    }

    /// The end (exclusive) of what a consumer at `next` may process now.
    /// Only the consumer that owns the barrier calls it.
    #[inline]
    pub(crate) fn available<E>(&self, shared: &Shared<E>, next: Sequence) -> Sequence {
        if self.upstream.is_empty() {
            match (&shared.marks, &self.run_end) {
                (Some(marks), Some(run_end)) => {
                    // Resume from the end of the runs seen so far, which may be
                    // past `next` when a batch was cut at its maximum size.
                    let known = run_end.load_own();
                    debug_assert!(next <= known, "a consumer never passes what it saw");
                    let end = marks.published_end(known);
                    if end != known {
                        run_end.store(end);
                    }
                    end
                }
                _ => shared.cursor.load(),
            }
        } else {
            // Every upstream stage is itself gated on the producer, so the
            // lowest upstream cursor never passes what was published.
            minimum(&self.upstream, Sequence::MAX)
        }
    }
}
