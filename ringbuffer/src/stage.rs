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

/// Runs `nodes` (in dependency order) on the calling thread until the pipeline
/// halts and nothing is left that they can handle. A panic in a handler stops
/// the pipeline with a failure that names the stage.
pub(crate) fn run_thread<E>(
    shared: Arc<Shared<E>>,
    mut nodes: Vec<StageNode<E>>,
    batch_size_max: u64,
) {
    let current = Cell::new(0usize);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        for (index, node) in nodes.iter_mut().enumerate() {
            current.set(index);
            node.run.on_start();
        }
        loop {
            let mut progressed = false;
            for (index, node) in nodes.iter_mut().enumerate() {
                current.set(index);
                progressed |= node.step(&shared, batch_size_max);
            }
            if progressed {
                continue;
            }
            if shared.is_halted() {
                break;
            }
            shared
                .waiter
                .wait(|| shared.is_halted() || nodes.iter().any(|node| node.has_work(&shared)));
        }
        if shared.failure().is_none() {
            for (index, node) in nodes.iter_mut().enumerate() {
                current.set(index);
                node.run.on_shutdown();
            }
        }
    }));
    if let Err(payload) = outcome {
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic with a non-string payload".to_owned()
        };
        shared.fail(StageFailure {
            stage: nodes[current.get()].name.clone(),
            message,
        });
    }
}
