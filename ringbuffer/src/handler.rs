//! What a stage runs: handlers that see events in batches.

use crate::slots::Slots;
use crate::Sequence;

/// A stage that reads events (`&E`). Several shared stages may read the same
/// event at once, for instance a journal and a replicator side by side.
///
/// `end_of_batch` is true on the last event of the run available now: the
/// place to flush a buffer, write once, or commit a transaction.
///
/// Closures `FnMut(&E, Sequence, bool)` are handlers.
pub trait Handler<E>: Send {
    /// Handles one event.
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool);

    /// Runs on the stage's thread before the first event.
    fn on_start(&mut self) {}

    /// Runs on the stage's thread after the last event, when the pipeline
    /// shuts down cleanly.
    fn on_shutdown(&mut self) {}
}

/// A stage that owns each event while it runs (`&mut E`), so it can annotate
/// it for the stages after it: a decoder writes the decoded command, a journal
/// writes the record's position.
///
/// The builder accepts an exclusive stage only where every other consumer is
/// ordered with it (upstream or downstream), so no one else can see the event
/// while it is being changed.
///
/// Closures `FnMut(&mut E, Sequence, bool)` are handlers.
pub trait MutHandler<E>: Send {
    /// Handles one event, with leave to change it.
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool);

    /// Runs on the stage's thread before the first event.
    fn on_start(&mut self) {}

    /// Runs on the stage's thread after the last event, when the pipeline
    /// shuts down cleanly.
    fn on_shutdown(&mut self) {}
}

impl<E, F> Handler<E> for F
where
    F: FnMut(&E, Sequence, bool) + Send,
{
    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) {
        self(event, sequence, end_of_batch)
    }
}

impl<E, F> MutHandler<E> for F
where
    F: FnMut(&mut E, Sequence, bool) + Send,
{
    #[inline]
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool) {
        self(event, sequence, end_of_batch)
    }
}

/// A handler with its access mode erased, so stages of both kinds can share a
/// thread. Called once per batch, so the dynamic dispatch is per batch, and
/// the per-event loop inside is monomorphised.
pub(crate) trait Run<E>: Send {
    /// Handles `from..end`.
    ///
    /// # Safety
    /// The caller holds the access the handler's kind needs on `from..end`
    /// (shared for [`Handler`], exclusive for [`MutHandler`]) under the
    /// sequencing protocol, for the whole call.
    unsafe fn run(&mut self, slots: &Slots<E>, from: Sequence, end: Sequence);
    fn on_start(&mut self);
    fn on_shutdown(&mut self);
}

pub(crate) struct Shared<H>(pub(crate) H);
pub(crate) struct Exclusive<H>(pub(crate) H);

impl<E, H: Handler<E>> Run<E> for Shared<H> {
    #[inline]
    unsafe fn run(&mut self, slots: &Slots<E>, from: Sequence, end: Sequence) {
        for sequence in from..end {
            // SAFETY: the caller holds shared access to `from..end`.
            unsafe {
                slots.read(sequence, |event| {
                    self.0.on_event(event, sequence, sequence + 1 == end)
                })
            };
        }
    }

    fn on_start(&mut self) {
        self.0.on_start()
    }

    fn on_shutdown(&mut self) {
        self.0.on_shutdown()
    }
}

impl<E, H: MutHandler<E>> Run<E> for Exclusive<H> {
    #[inline]
    unsafe fn run(&mut self, slots: &Slots<E>, from: Sequence, end: Sequence) {
        for sequence in from..end {
            // SAFETY: the caller holds exclusive access to `from..end`.
            unsafe {
                slots.write(sequence, |event| {
                    self.0.on_event(event, sequence, sequence + 1 == end)
                })
            };
        }
    }

    fn on_start(&mut self) {
        self.0.on_start()
    }

    fn on_shutdown(&mut self) {
        self.0.on_shutdown()
    }
}
