//! A running pipeline: its threads, its pollers, and how it stops.

use std::thread::JoinHandle;

use crate::cursor::Cursor;
use crate::driver::{Driver, Finished};
use crate::poller::PollerCore;
use crate::ring::Shared;
use crate::stage::{run_thread, Chain, StageNode};
use crate::sync::Arc;
use crate::{BuildError, MutPoller, Poller, Sequence, StageFailure, StageId};

pub(crate) struct PollerSlot<E> {
    pub(crate) id: StageId,
    pub(crate) exclusive: bool,
    pub(crate) core: Option<PollerCore<E>>,
}

/// The stage threads of a built ring, and its pollers until they are taken.
///
/// Stop it with [`shutdown`](Self::shutdown), which drains what was published
/// and reports a stage that panicked; dropping it does the same but throws the
/// report away.
pub struct Pipeline<E> {
    shared: Arc<Shared<E>>,
    threads: Vec<JoinHandle<()>>,
    owned: Vec<Arc<Cursor>>,
    pollers: Vec<PollerSlot<E>>,
    /// The driver of a [`crate::Placement::Caller`] pipeline until it is
    /// taken, and how it says it has finished.
    driver: Option<Driver<E>>,
    finished: Option<Arc<Finished>>,
    stopped: bool,
}

impl<E: Send + Sync + 'static> Pipeline<E> {
    pub(crate) fn start(
        shared: Arc<Shared<E>>,
        placed: Vec<(Vec<StageNode<E>>, Option<usize>)>,
        owned: Vec<Arc<Cursor>>,
        pollers: Vec<PollerSlot<E>>,
        driver: Option<Driver<E>>,
        batch_size_max: u64,
    ) -> Result<Self, BuildError> {
        let mut pipeline = Self {
            shared,
            threads: Vec::with_capacity(placed.len()),
            owned,
            pollers,
            finished: driver.as_ref().map(|driver| Arc::clone(&driver.finished)),
            driver,
            stopped: false,
        };
        for (nodes, core) in placed {
            let names: Vec<&str> = nodes.iter().map(|node| node.name.as_str()).collect();
            let thread_name = names.join("+");
            let shared = Arc::clone(&pipeline.shared);
            let spawned = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || {
                    if let Some(id) = core {
                        // Pinning is best effort: the core was checked to exist,
                        // and a refusal (a restricted cpuset) only costs locality.
                        core_affinity::set_for_current(core_affinity::CoreId { id });
                    }
                    run_thread(Chain {
                        shared,
                        nodes,
                        batch_size_max,
                    });
                });
            match spawned {
                Ok(handle) => pipeline.threads.push(handle),
                Err(error) => {
                    // Stop what already started before reporting.
                    pipeline.shared.halt();
                    pipeline.join_threads();
                    pipeline.stopped = true;
                    return Err(BuildError::Spawn(error));
                }
            }
        }
        Ok(pipeline)
    }
}

impl<E> Pipeline<E> {
    /// Takes the reading poller added as `id`; `None` if `id` is not a
    /// reading poller of this pipeline or was taken already.
    pub fn take_poller(&mut self, id: StageId) -> Option<Poller<E>> {
        self.take(id, false).map(|core| Poller { core })
    }

    /// Takes the owning poller added as `id`; `None` if `id` is not an
    /// owning poller of this pipeline or was taken already.
    pub fn take_mut_poller(&mut self, id: StageId) -> Option<MutPoller<E>> {
        self.take(id, true).map(|core| MutPoller { core })
    }

    fn take(&mut self, id: StageId, exclusive: bool) -> Option<PollerCore<E>> {
        self.pollers
            .iter_mut()
            .find(|slot| slot.id == id && slot.exclusive == exclusive)?
            .core
            .take()
    }

    /// Takes the driver of a [`crate::Placement::Caller`] pipeline, to run its
    /// stages on a thread of the caller's; `None` for other placements or
    /// once taken. A driver never taken is run by
    /// [`shutdown`](Self::shutdown), on the thread that calls it.
    pub fn take_driver(&mut self) -> Option<Driver<E>> {
        self.driver.take()
    }

    /// The failure that stopped the pipeline, if a stage panicked.
    pub fn failure(&self) -> Option<StageFailure> {
        self.shared.failure()
    }

    /// Whether the pipeline has stopped (a stage panicked, or it was shut down).
    pub fn is_halted(&self) -> bool {
        self.shared.is_halted()
    }

    /// How many sequences the slowest consumer has finished.
    pub fn consumed(&self) -> Sequence {
        self.shared.gating_minimum()
    }

    /// Waits until the stages this pipeline runs have handled every event
    /// published before the call, then stops them and joins their threads.
    /// A taken [`Driver`] must go on running meanwhile: this waits until it
    /// has shut its stages down.
    /// Returns the failure of a stage that panicked, if one did.
    ///
    /// Publishers should stop first: what is published during the call may or
    /// may not be handled. Pollers drain on their own thread's schedule; a
    /// stage that runs after a poller drains only as far as that poller got.
    pub fn shutdown(mut self) -> Result<(), StageFailure> {
        self.stop();
        match self.shared.failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !self.owned.is_empty() {
            let target = self.shared.published_end();
            let drained = || {
                self.shared.is_halted() || self.owned.iter().all(|cursor| cursor.load() >= target)
            };
            match &mut self.driver {
                // Nobody took the driver: run it here.
                Some(driver) => while !drained() && driver.run().is_ok() {},
                None => self.shared.waiter.wait(drained),
            }
        }
        self.shared.halt();
        if let Some(mut driver) = self.driver.take() {
            while driver.run().is_ok() {}
        } else if let Some(finished) = &self.finished {
            // The driver's owner runs the stages' shutdown.
            self.shared.waiter.wait(|| finished.is_set());
        }
        self.join_threads();
    }

    fn join_threads(&mut self) {
        for handle in self.threads.drain(..) {
            // Stage threads catch their handlers' panics and report them
            // through `failure`, so a join error adds nothing to report.
            let _ = handle.join();
        }
    }
}

impl<E> Drop for Pipeline<E> {
    fn drop(&mut self) {
        self.stop();
    }
}
