//! Stages run by a thread the ring does not own.

use std::sync::atomic::Ordering;

use crate::ring::Shared;
use crate::stage::Chain;
use crate::sync::{Arc, AtomicBool};
use crate::wait::ExternalPark;
use crate::{Halted, StageFailure};

/// Where a driver says it has finished: its stages shut down (or failed), so
/// [`crate::Pipeline::shutdown`] may return.
pub(crate) struct Finished(AtomicBool);

impl Finished {
    pub(crate) fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set<E>(&self, shared: &Shared<E>) {
        self.0.store(true, Ordering::Release);
        shared.waiter.wake_all();
    }
}

/// Every stage of a [`crate::Placement::Caller`] pipeline, run on a thread of
/// the caller's: a network loop that publishes a batch of frames and then
/// runs them through the stages itself, with no hand-off to another thread
/// and no wake-up.
///
/// Each [`run`](Self::run) takes one batch through each stage in turn, as a
/// fused stage thread would. Between runs the owning thread does its own work;
/// when it has none it may sleep, after [`prepare_wait`](Self::prepare_wait)
/// has arranged for a publish from another thread to wake it.
///
/// Keep running it until it returns `Err(Halted)`: that is when the pipeline
/// has stopped, every published event has passed every stage and the
/// handlers' `on_shutdown` has run. [`crate::Pipeline::shutdown`] waits for
/// that. Dropping a driver first runs what is left the same way if the
/// pipeline is stopping, and otherwise stops it with a
/// [`crate::StageFailure`] naming the driver.
pub struct Driver<E> {
    pub(crate) chain: Chain<E>,
    pub(crate) park: Arc<ExternalPark>,
    pub(crate) finished: Arc<Finished>,
    pub(crate) started: bool,
}

impl<E> Driver<E> {
    /// Runs one batch (what is available, at most the builder's
    /// `batch_size_max`) through each stage in turn. `Ok(true)` if any stage
    /// handled an event, `Ok(false)` if there was nothing to do, and
    /// `Err(Halted)` once the pipeline has stopped and the stages have shut
    /// down, or a handler panicked (the pipeline's failure names it).
    pub fn run(&mut self) -> Result<bool, Halted> {
        if self.finished.is_set() {
            return Err(Halted);
        }
        self.chain.shared.waiter.unpark_external(&self.park);
        if !self.started {
            self.started = true;
            if !self.chain.start() {
                return self.finish();
            }
        }
        match self.chain.pass() {
            None => self.finish(),
            Some(true) => Ok(true),
            Some(false) if self.chain.shared.is_halted() => {
                // An event published just before the halt must still be handled.
                while self.chain.pass() == Some(true) {}
                self.finish()
            }
            Some(false) => Ok(false),
        }
    }

    /// Shuts the stages down (unless one failed) and says so.
    fn finish(&mut self) -> Result<bool, Halted> {
        self.chain.shut_down();
        self.finished.set(&self.chain.shared);
        Err(Halted)
    }

    /// Whether some stage has an event to handle, or the pipeline has stopped
    /// and [`run`](Self::run) has shutting down to do.
    pub fn has_work(&self) -> bool {
        !self.finished.is_set() && (self.chain.shared.is_halted() || self.chain.has_work())
    }

    /// Sets what wakes the owning thread when an event is published while it
    /// sleeps (for a mio loop: `move || waker.wake()`). Set it once, before the
    /// first [`prepare_wait`](Self::prepare_wait).
    ///
    /// # Panics
    /// If a hook was set already.
    pub fn set_wake_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        assert!(
            self.park.set_hook(Box::new(hook)),
            "the driver already has a wake hook"
        );
    }

    /// Call just before the owning thread sleeps. Returns true if it may
    /// sleep: from now on the next publish (or the pipeline stopping) calls
    /// the wake hook, once. Returns false if there is work; run instead.
    ///
    /// # Panics
    /// If no wake hook was set.
    pub fn prepare_wait(&self) -> bool {
        assert!(
            self.park.has_hook(),
            "set a wake hook on the driver before calling prepare_wait"
        );
        self.chain
            .shared
            .waiter
            .park_external(&self.park, || self.has_work())
    }

    /// Call when the thread wakes from a sleep that
    /// [`prepare_wait`](Self::prepare_wait) allowed, whatever woke it: withdraws
    /// the sleep mark, so that what the thread publishes itself before its
    /// next [`run`](Self::run) does not call the wake hook. (`run` withdraws it
    /// too.)
    pub fn end_wait(&self) {
        self.chain.shared.waiter.unpark_external(&self.park);
    }

    /// Blocks the calling thread, with the ring's wait strategy, until there is
    /// work for [`run`](Self::run).
    pub fn wait(&self) {
        self.chain.shared.waiter.wait(|| self.has_work())
    }
}

impl<E> Drop for Driver<E> {
    fn drop(&mut self) {
        if self.finished.is_set() {
            return;
        }
        if self.chain.shared.is_halted() {
            // Stopping: finish the work as the owner would have.
            while self.run().is_ok() {}
            return;
        }
        // Nothing would run the stages any more: stop rather than leave
        // publishers waiting for ever.
        let names: Vec<&str> = self
            .chain
            .nodes
            .iter()
            .map(|node| node.name.as_str())
            .collect();
        self.chain.shared.fail(StageFailure {
            stage: names.join("+"),
            message: "the pipeline's driver was dropped while the pipeline ran".into(),
        });
        let _ = self.finish();
    }
}
