//! The errors the ring buffer returns.

use thiserror::Error;

/// The pipeline stopped: a stage panicked, or it was shut down. Nothing more
/// will be consumed, so nothing more is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the pipeline has stopped and accepts no more events")]
pub struct Halted;

/// Why a `try_` publish did not publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TryPublishError {
    /// Every slot holds an event some stage has not finished with yet. This is
    /// backpressure: retry later, or shed the event.
    #[error("the ring is full: the slowest stage is a whole ring behind")]
    Full,
    /// The pipeline stopped.
    #[error(transparent)]
    Halted(#[from] Halted),
}

/// A stage's handler panicked; the pipeline stopped because of it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("stage `{stage}` panicked: {message}")]
pub struct StageFailure {
    /// The name the stage was added with.
    pub stage: String,
    /// The panic's message, when it was a string.
    pub message: String,
}

/// Why a pipeline could not be built. Each names the stage or thread at fault.
#[derive(Debug, Error)]
pub enum BuildError {
    /// A ring with no consumer would let the producer overwrite every event.
    #[error("the pipeline has no stage and no poller; add at least one consumer")]
    NoConsumers,
    /// Two stages (or pollers) share a name; placement and errors need them unique.
    #[error("two stages are named `{0}`; stage names must be unique")]
    DuplicateName(String),
    /// A stage was named after a stage that does not exist in this builder.
    #[error("stage `{stage}` depends on an unknown stage id {dependency}")]
    UnknownDependency {
        /// The stage being added.
        stage: String,
        /// The unknown id.
        dependency: usize,
    },
    /// An exclusive stage (one that gets `&mut E`) must be ordered with every
    /// other consumer, or the two could touch the same slot at once.
    #[error(
        "stage `{stage}` takes events exclusively (&mut), but `{other}` may run beside it; \
         make `{other}` depend on `{stage}` or the other way round, or make `{stage}` a shared stage"
    )]
    ExclusiveConflict {
        /// The exclusive stage.
        stage: String,
        /// A consumer that is neither upstream nor downstream of it.
        other: String,
    },
    /// The placement names a stage the builder does not have.
    #[error("placement names `{0}`, which is not a stage of this pipeline")]
    UnknownStage(String),
    /// The placement puts a poller on a thread; pollers run on their owner's thread.
    #[error("placement names `{0}`, which is a poller; pollers run on the caller's own thread")]
    PollerPlaced(String),
    /// The placement does not put this stage on any thread.
    #[error("placement puts stage `{0}` on no thread")]
    Unplaced(String),
    /// The placement puts this stage on two threads.
    #[error("placement puts stage `{0}` on more than one thread")]
    PlacedTwice(String),
    /// The placement has a thread with no stage.
    #[error("placement has a thread with no stage on it")]
    EmptyThread,
    /// The placement pins a thread to a core this machine does not have.
    #[error("placement pins a thread to core {core}, but this machine has cores 0..{available}")]
    NoSuchCore {
        /// The requested core.
        core: usize,
        /// How many cores there are.
        available: usize,
    },
    /// The operating system would not start a thread.
    #[error("could not start a stage thread: {0}")]
    Spawn(#[from] std::io::Error),
}
