//! Which thread runs which stage: configuration, not code.

/// Where a pipeline's stages run.
///
/// The same stages run one per thread or fused several to a thread; only this
/// value changes. On a machine with a core per stage, a thread per stage with a
/// spinning wait gives the lowest latency. Where stages outnumber cores,
/// fusing them avoids a thread hand-off per stage: a fused thread runs each
/// batch through its first stage, then its second, and so on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// Each stage on a thread of its own, unpinned.
    #[default]
    ThreadPerStage,
    /// Every stage on one thread.
    Fused,
    /// Every stage run by a thread of the caller's, through the pipeline's
    /// [`crate::Driver`] (take it with [`crate::Pipeline::take_driver`]): no
    /// stage thread at all. For a loop that publishes and then processes,
    /// such as a network thread on a small machine, this saves the hand-off
    /// and the wake-up between threads.
    Caller,
    /// Stages on the threads listed; every stage exactly once. A thread runs
    /// its stages in dependency order whatever order they are listed in.
    Threads(Vec<ThreadSpec>),
}

/// One thread of a [`Placement::Threads`] placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSpec {
    /// The names of the stages this thread runs.
    pub stages: Vec<String>,
    /// The core to pin the thread to, if any.
    pub core: Option<usize>,
}

impl ThreadSpec {
    /// A thread running `stages`, unpinned.
    pub fn new<S: Into<String>>(stages: impl IntoIterator<Item = S>) -> Self {
        Self {
            stages: stages.into_iter().map(Into::into).collect(),
            core: None,
        }
    }

    /// Pins this thread to `core`.
    pub fn pinned(mut self, core: usize) -> Self {
        self.core = Some(core);
        self
    }
}
