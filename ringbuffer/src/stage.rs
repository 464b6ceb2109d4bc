//! A stage at run time, and the loop of a thread that runs one or more stages.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::cursor::Cursor;
use crate::handler::Run;
use crate::ring::{Barrier, Shared};
use crate::sync::Arc;
use crate::{Sequence, StageFailure};

/// One stage: where it is, what it waits on, and its handler.
///
/// # Invariants
/// - `next` equals `cursor` (the stage is the cursor's only writer).
/// - The handler only ever sees sequences below what `barrier` allowed.
pub(crate) struct StageNode<E> {
    pub(crate) name: String,
    pub(crate) barrier: Barrier,
    pub(crate) cursor: Arc<Cursor>,
    pub(crate) next: Sequence,
    pub(crate) run: Box<dyn Run<E>>,
}

impl<E> StageNode<E> {
    /// Handles what is available, at most `batch_size_max` events. Returns
    /// whether it handled anything.
    #[inline]
    fn step(&mut self, shared: &Shared<E>, batch_size_max: u64) -> bool {
        let available = self.barrier.available(shared, self.next);
        if available <= self.next {
            return false;
        }
        let end = available.min(self.next + batch_size_max);
        // SAFETY: the barrier says every upstream consumer is past `end` (or
        // the producer published it), and downstream consumers wait for this
        // stage's cursor, which is still at `next`; the builder checked that an
        // exclusive stage has no consumer beside it. So this stage holds the
        // access its kind needs on `next..end`.
        unsafe { self.run.run(&shared.slots, self.next, end) };
        self.next = end;
        self.cursor.store(end);
        shared.waiter.signal();
        true
    }

    #[inline]
    fn has_work(&self, shared: &Shared<E>) -> bool {
        self.barrier.available(shared, self.next) > self.next
    }
}

/// Stages run in turn by one thread: a fused thread's, or the caller's
/// through a [`crate::Driver`]. A panic in a handler stops the pipeline
/// with a failure that names the stage.
pub(crate) struct Chain<E> {
    pub(crate) shared: Arc<Shared<E>>,
    /// In dependency order.
    pub(crate) nodes: Vec<StageNode<E>>,
    pub(crate) batch_size_max: u64,
}

impl<E> Chain<E> {
    /// Runs `work` on the nodes; a panic in it fails the pipeline, naming the
    /// node `work` was at, and returns `None`.
    #[inline]
    fn guarded<T>(
        &mut self,
        work: impl FnOnce(&Shared<E>, &mut [StageNode<E>], &Cell<usize>) -> T,
    ) -> Option<T> {
        let current = Cell::new(0usize);
        // Borrowed, not cloned: an `Arc` clone per pass would be two atomic
        // read-modify-writes on a cache line the producer reads.
        let shared = &*self.shared;
        let nodes = &mut self.nodes;
        match catch_unwind(AssertUnwindSafe(|| work(shared, nodes, &current))) {
            Ok(value) => Some(value),
            Err(payload) => {
                let message = if let Some(text) = payload.downcast_ref::<&str>() {
                    (*text).to_owned()
                } else if let Some(text) = payload.downcast_ref::<String>() {
                    text.clone()
                } else {
                    "a panic with a non-string payload".to_owned()
                };
                self.shared.fail(StageFailure {
                    stage: self.nodes[current.get()].name.clone(),
                    message,
                });
                None
            }
        }
    }

    /// Calls every handler's `on_start`; false if one panicked.
    pub(crate) fn start(&mut self) -> bool {
        self.guarded(|_, nodes, current| {
            for (index, node) in nodes.iter_mut().enumerate() {
                current.set(index);
                node.run.on_start();
            }
        })
        .is_some()
    }

    /// Runs one batch (if any is available) through each node in turn.
    /// `Some(progressed)`, or `None` if a handler panicked.
    #[inline]
    pub(crate) fn pass(&mut self) -> Option<bool> {
        let batch_size_max = self.batch_size_max;
        self.guarded(|shared, nodes, current| {
            let mut progressed = false;
            for (index, node) in nodes.iter_mut().enumerate() {
                current.set(index);
                progressed |= node.step(shared, batch_size_max);
            }
            progressed
        })
    }

    /// Whether some node has an event to handle.
    pub(crate) fn has_work(&self) -> bool {
        self.nodes.iter().any(|node| node.has_work(&self.shared))
    }

    /// Calls every handler's `on_shutdown` unless the pipeline failed.
    pub(crate) fn shut_down(&mut self) {
        if self.shared.failure().is_some() {
            return;
        }
        self.guarded(|_, nodes, current| {
            for (index, node) in nodes.iter_mut().enumerate() {
                current.set(index);
                node.run.on_shutdown();
            }
        });
    }
}

/// Runs a chain on the calling thread until the pipeline halts and nothing
/// is left that it can handle.
pub(crate) fn run_thread<E>(mut chain: Chain<E>) {
    if !chain.start() {
        return;
    }
    loop {
        match chain.pass() {
            None => return,
            Some(true) => continue,
            Some(false) => {}
        }
        if chain.shared.is_halted() {
            break;
        }
        let shared = &chain.shared;
        let nodes = &chain.nodes;
        shared
            .waiter
            .wait(|| shared.is_halted() || nodes.iter().any(|node| node.has_work(shared)));
    }
    chain.shut_down();
}
