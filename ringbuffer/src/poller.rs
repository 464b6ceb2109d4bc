//! Consumers driven by a thread the ring does not own.

use crate::cursor::Cursor;
use crate::ring::{Barrier, Shared};
use crate::sync::Arc;
use crate::wait::ExternalPark;
use crate::{Halted, Sequence, StageFailure};

/// The part of a poller that both kinds share.
pub(crate) struct PollerCore<E> {
    pub(crate) name: String,
    pub(crate) shared: Arc<Shared<E>>,
    pub(crate) barrier: Barrier,
    pub(crate) cursor: Arc<Cursor>,
    pub(crate) next: Sequence,
    pub(crate) park: Arc<ExternalPark>,
}

impl<E> PollerCore<E> {
    /// The range to handle now, or `Err(Halted)` when there is none and the
    /// pipeline has stopped.
    #[inline]
    fn range(&mut self, limit: usize) -> Result<(Sequence, Sequence), Halted> {
        self.shared.waiter.unpark_external(&self.park);
        let mut available = self.barrier.available(&self.shared, self.next);
        if available <= self.next && self.shared.is_halted() {
            // Check once more: an event published just before the halt must
            // still be handed out.
            available = self.barrier.available(&self.shared, self.next);
            if available <= self.next {
                return Err(Halted);
            }
        }
        Ok((self.next, available.min(self.next + limit as u64)))
    }

    #[inline]
    fn finish(&mut self, end: Sequence) -> usize {
        let count = (end - self.next) as usize;
        if count > 0 {
            self.next = end;
            self.cursor.store(end);
            self.shared.waiter.signal();
        }
        count
    }

    fn has_work(&self) -> bool {
        self.barrier.available(&self.shared, self.next) > self.next
    }

    fn prepare_wait(&self) -> bool {
        assert!(
            self.park.has_hook(),
            "poller `{}`: set a wake hook before calling prepare_wait",
            self.name
        );
        self.shared
            .waiter
            .park_external(&self.park, || self.has_work() || self.shared.is_halted())
    }

    fn wait(&self) {
        self.shared
            .waiter
            .wait(|| self.has_work() || self.shared.is_halted());
    }

    fn set_wake_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        assert!(
            self.park.set_hook(hook),
            "poller `{}` already has a wake hook",
            self.name
        );
    }
}

impl<E> Drop for PollerCore<E> {
    /// A poller that goes away while the pipeline runs would hold the ring
    /// back for ever (the producer waits for it); stopping the pipeline with
    /// a failure that names it turns that hang into an error.
    fn drop(&mut self) {
        if !self.shared.is_halted() {
            self.shared.fail(StageFailure {
                stage: self.name.clone(),
                message: "the poller was dropped while the pipeline ran".into(),
            });
        }
    }
}

macro_rules! poller_common {
    () => {
        /// The name the poller was added with.
        pub fn name(&self) -> &str {
            &self.core.name
        }

        /// The sequence the next event handed out will have.
        pub fn next_sequence(&self) -> Sequence {
            self.core.next
        }

        /// Whether an event is ready to poll.
        pub fn has_work(&self) -> bool {
            self.core.has_work()
        }

        /// Sets what wakes the owning thread when an event is published while
        /// it sleeps (for a mio loop: `move || waker.wake()`). Set it once,
        /// before the first [`prepare_wait`](Self::prepare_wait).
        ///
        /// # Panics
        /// If a hook was set already.
        pub fn set_wake_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
            self.core.set_wake_hook(Box::new(hook))
        }

        /// Call just before the owning thread sleeps (in `epoll_wait`, say).
        /// Returns true if it may sleep: from now on the next publish calls the
        /// wake hook, once. Returns false if events arrived meanwhile; poll
        /// them instead. Publishers pay for the hook only while a poller is
        /// marked as sleeping.
        ///
        /// # Panics
        /// If no wake hook was set.
        pub fn prepare_wait(&self) -> bool {
            self.core.prepare_wait()
        }

        /// Blocks the calling thread, with the ring's wait strategy, until an
        /// event is ready or the pipeline stops.
        pub fn wait(&self) {
            self.core.wait()
        }
    };
}

/// A consumer that reads (`&E`) on a thread of the caller's: the mio loop
/// reads its outbound ring this way. It takes part in gating like any stage,
/// so the producer never laps it.
///
/// Keep it until the pipeline has stopped (poll until `Err(Halted)`):
/// dropping it while the pipeline runs would leave the ring waiting for it,
/// so the drop stops the pipeline with a [`crate::StageFailure`] naming it.
pub struct Poller<E> {
    pub(crate) core: PollerCore<E>,
}

impl<E> Poller<E> {
    /// Hands every available event, at most `limit`, to `handle` in order, and
    /// returns how many. `Err(Halted)` once the pipeline has stopped and every
    /// event published before the stop has been handed out.
    #[inline]
    pub fn poll(
        &mut self,
        limit: usize,
        mut handle: impl FnMut(&E, Sequence, bool),
    ) -> Result<usize, Halted> {
        let (from, end) = self.core.range(limit)?;
        for sequence in from..end {
            // SAFETY: the barrier allows `from..end`, consumers after this one
            // wait on its cursor, and the builder made sure any exclusive
            // stage is ordered with it; so shared access holds.
            unsafe {
                self.core.shared.slots.read(sequence, |event| {
                    handle(event, sequence, sequence + 1 == end)
                })
            };
        }
        Ok(self.core.finish(end))
    }

    poller_common!();
}

/// A consumer that owns each event (`&mut E`) on a thread of the caller's; it
/// can take what the event holds (a frame's bytes, say) instead of copying.
/// Like [`Poller`], keep it until the pipeline has stopped.
pub struct MutPoller<E> {
    pub(crate) core: PollerCore<E>,
}

impl<E> MutPoller<E> {
    /// As [`Poller::poll`], with `&mut E`.
    #[inline]
    pub fn poll(
        &mut self,
        limit: usize,
        mut handle: impl FnMut(&mut E, Sequence, bool),
    ) -> Result<usize, Halted> {
        let (from, end) = self.core.range(limit)?;
        for sequence in from..end {
            // SAFETY: as in `Poller::poll`, and the builder checked that every
            // other consumer is ordered with this exclusive one.
            unsafe {
                self.core.shared.slots.write(sequence, |event| {
                    handle(event, sequence, sequence + 1 == end)
                })
            };
        }
        Ok(self.core.finish(end))
    }

    poller_common!();
}
