//! Describing a pipeline: stages, their dependencies, placement and waiting.

use std::collections::HashSet;

use crate::cursor::Cursor;
use crate::driver::{Driver, Finished};
use crate::handler::{Exclusive, Run, Shared as SharedRun};
use crate::pipeline::{Pipeline, PollerSlot};
use crate::poller::PollerCore;
use crate::ring::{Barrier, Shared};
use crate::slots::Slots;
use crate::stage::{Chain, StageNode};
use crate::sync::Arc;
use crate::wait::{ExternalPark, Waiter};
use crate::{
    BuildError, Handler, MultiProducer, MutHandler, Placement, SingleProducer, ThreadSpec,
    WaitStrategy,
};

/// The default cap on a stage's batch. A fused thread runs a batch through
/// each of its stages in turn; a batch this size (16 KiB of 64-byte events)
/// stays in the core's L1/L2 cache between stages.
const BATCH_SIZE_MAX_DEFAULT: u64 = 256;

/// Names a stage or poller of one [`Builder`], to depend on it or take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StageId(usize);

/// A thread to start: node indices in dependency order, and the core to pin it to.
type ResolvedThread = (Vec<usize>, Option<usize>);

enum NodeKind<E> {
    Stage(Box<dyn Run<E>>),
    Poller,
}

struct NodeSpec<E> {
    name: String,
    after: Vec<StageId>,
    exclusive: bool,
    kind: NodeKind<E>,
}

/// Builds a ring and the stages that consume it.
///
/// Stages form a DAG: each names the stages it runs after (none: it reads
/// straight from the producer). Stages that follow the same stage run side by
/// side; a stage that follows several waits for all of them.
pub struct Builder<E> {
    slots: Slots<E>,
    wait: WaitStrategy,
    placement: Placement,
    batch_size_max: u64,
    nodes: Vec<NodeSpec<E>>,
}

impl<E: Send + Sync + 'static> Builder<E> {
    /// A ring of `slot_count` events, each made once by `factory` and reused
    /// in place from then on.
    ///
    /// # Panics
    /// If `slot_count` is not a power of two.
    pub fn new(slot_count: usize, factory: impl FnMut() -> E) -> Self {
        Self {
            slots: Slots::new(slot_count, factory),
            wait: WaitStrategy::default(),
            placement: Placement::default(),
            batch_size_max: (slot_count as u64).min(BATCH_SIZE_MAX_DEFAULT),
            nodes: Vec::new(),
        }
    }

    /// How stages, and producers facing a full ring, wait.
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Which thread runs which stage.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The most events a stage handles before it publishes its progress (256
    /// by default, or the ring's capacity if smaller). Smaller batches let a fused thread pass events
    /// on sooner, at some cost in throughput.
    ///
    /// # Panics
    /// If `batch_size_max` is zero.
    pub fn batch_size_max(mut self, batch_size_max: usize) -> Self {
        assert!(batch_size_max > 0, "a batch holds at least one event");
        self.batch_size_max = batch_size_max as u64;
        self
    }

    /// Adds a stage that reads events (`&E`), after the stages in `after`.
    pub fn stage(
        &mut self,
        name: &str,
        after: &[StageId],
        handler: impl Handler<E> + 'static,
    ) -> StageId {
        self.add(
            name,
            after,
            false,
            NodeKind::Stage(Box::new(SharedRun(handler))),
        )
    }

    /// Adds a stage that owns each event while it runs (`&mut E`), after the
    /// stages in `after`. Every other consumer must end up ordered with it.
    pub fn stage_mut(
        &mut self,
        name: &str,
        after: &[StageId],
        handler: impl MutHandler<E> + 'static,
    ) -> StageId {
        self.add(
            name,
            after,
            true,
            NodeKind::Stage(Box::new(Exclusive(handler))),
        )
    }

    /// Adds a consumer that reads (`&E`) on a thread of the caller's; take it
    /// with [`Pipeline::take_poller`] once built.
    pub fn poller(&mut self, name: &str, after: &[StageId]) -> StageId {
        self.add(name, after, false, NodeKind::Poller)
    }

    /// Adds a consumer that owns each event (`&mut E`) on a thread of the
    /// caller's; take it with [`Pipeline::take_mut_poller`] once built.
    pub fn mut_poller(&mut self, name: &str, after: &[StageId]) -> StageId {
        self.add(name, after, true, NodeKind::Poller)
    }

    fn add(
        &mut self,
        name: &str,
        after: &[StageId],
        exclusive: bool,
        kind: NodeKind<E>,
    ) -> StageId {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            after: after.to_vec(),
            exclusive,
            kind,
        });
        StageId(self.nodes.len() - 1)
    }

    /// Starts the stages; returns the one producer and the running pipeline.
    pub fn build_single_producer(self) -> Result<(SingleProducer<E>, Pipeline<E>), BuildError> {
        let (shared, pipeline) = self.build(false)?;
        Ok((SingleProducer::new(shared), pipeline))
    }

    /// Starts the stages; returns a producer to clone, one per publishing
    /// thread, and the running pipeline.
    pub fn build_multi_producer(self) -> Result<(MultiProducer<E>, Pipeline<E>), BuildError> {
        let (shared, pipeline) = self.build(true)?;
        Ok((MultiProducer::new(shared), pipeline))
    }

    fn build(self, multi_producer: bool) -> Result<(Arc<Shared<E>>, Pipeline<E>), BuildError> {
        self.validate()?;
        let threads = self.resolve_placement()?;
        let node_count = self.nodes.len();
        let cursors: Vec<Arc<Cursor>> = (0..node_count).map(|_| Arc::new(Cursor::new(0))).collect();
        let mut has_dependents = vec![false; node_count];
        for node in &self.nodes {
            for dependency in &node.after {
                has_dependents[dependency.0] = true;
            }
        }
        let gating = (0..node_count)
            .filter(|&index| !has_dependents[index])
            .map(|index| Arc::clone(&cursors[index]))
            .collect();
        let caller = self.placement == Placement::Caller;
        let driver_park = caller.then(|| Arc::new(ExternalPark::new()));
        let parks: Vec<Option<Arc<ExternalPark>>> = self
            .nodes
            .iter()
            .map(|node| {
                matches!(node.kind, NodeKind::Poller).then(|| Arc::new(ExternalPark::new()))
            })
            .collect();
        let waiter = Waiter::new(
            self.wait,
            parks
                .iter()
                .flatten()
                .chain(&driver_park)
                .cloned()
                .collect(),
        );
        // With several producers, each consumer that reads the publication
        // marks (one with no upstream) keeps where its reading got to.
        let run_ends: Vec<Option<Arc<Cursor>>> = self
            .nodes
            .iter()
            .map(|node| (multi_producer && node.after.is_empty()).then(|| Arc::new(Cursor::new(0))))
            .collect();
        let shared = Arc::new(Shared::new(
            self.slots,
            run_ends.iter().flatten().cloned().collect(),
            gating,
            waiter,
        ));

        let mut runs: Vec<Option<StageNode<E>>> = Vec::with_capacity(node_count);
        let mut pollers = Vec::new();
        for (index, node) in self.nodes.into_iter().enumerate() {
            let barrier = Barrier::new(
                node.after
                    .iter()
                    .map(|d| Arc::clone(&cursors[d.0]))
                    .collect(),
                run_ends[index].clone(),
            );
            match node.kind {
                NodeKind::Stage(run) => runs.push(Some(StageNode {
                    name: node.name,
                    barrier,
                    cursor: Arc::clone(&cursors[index]),
                    next: 0,
                    run,
                })),
                NodeKind::Poller => {
                    runs.push(None);
                    pollers.push(PollerSlot {
                        id: StageId(index),
                        exclusive: node.exclusive,
                        core: Some(PollerCore {
                            name: node.name,
                            shared: Arc::clone(&shared),
                            barrier,
                            cursor: Arc::clone(&cursors[index]),
                            next: 0,
                            // Every poller got a park above.
                            park: parks[index].clone().expect("poller has a park"),
                        }),
                    });
                }
            }
        }
        let owned = runs
            .iter()
            .flatten()
            .map(|node| Arc::clone(&node.cursor))
            .collect();
        let mut placed = Vec::with_capacity(threads.len());
        for (indices, core) in threads {
            // `resolve_placement` places each stage exactly once.
            let nodes = indices
                .iter()
                .map(|&i| runs[i].take().expect("placed once"))
                .collect();
            placed.push((nodes, core));
        }
        let driver = driver_park.map(|park| Driver {
            chain: Chain {
                shared: Arc::clone(&shared),
                // Index order is a dependency order.
                nodes: runs.iter_mut().filter_map(Option::take).collect(),
                batch_size_max: self.batch_size_max,
            },
            park,
            finished: Arc::new(Finished::new()),
            started: false,
        });
        let pipeline = Pipeline::start(
            Arc::clone(&shared),
            placed,
            owned,
            pollers,
            driver,
            self.batch_size_max,
        )?;
        Ok((shared, pipeline))
    }

    fn validate(&self) -> Result<(), BuildError> {
        if self.nodes.is_empty() {
            return Err(BuildError::NoConsumers);
        }
        let mut names = HashSet::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if !names.insert(node.name.as_str()) {
                return Err(BuildError::DuplicateName(node.name.clone()));
            }
            // A dependency must have been added before its dependent, which
            // also makes the graph acyclic.
            if let Some(bad) = node.after.iter().find(|d| d.0 >= index) {
                return Err(BuildError::UnknownDependency {
                    stage: node.name.clone(),
                    dependency: bad.0,
                });
            }
        }
        let ancestors = self.ancestors();
        for (index, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.exclusive) {
            for (other, other_node) in self.nodes.iter().enumerate() {
                let ordered = other == index || ancestors[index][other] || ancestors[other][index];
                if !ordered {
                    return Err(BuildError::ExclusiveConflict {
                        stage: node.name.clone(),
                        other: other_node.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `ancestors[i][j]`: node `j` is upstream of node `i`, directly or not.
    fn ancestors(&self) -> Vec<Vec<bool>> {
        let count = self.nodes.len();
        let mut ancestors = vec![vec![false; count]; count];
        // Dependencies precede dependents, so one pass in index order sees
        // each dependency's full ancestry before it is needed.
        for index in 0..count {
            for dependency in &self.nodes[index].after {
                let inherited = ancestors[dependency.0].clone();
                let row = &mut ancestors[index];
                row[dependency.0] = true;
                for (cell, from) in row.iter_mut().zip(inherited) {
                    *cell |= from;
                }
            }
        }
        ancestors
    }

    /// The threads to start: node indices in dependency order, and a core.
    fn resolve_placement(&self) -> Result<Vec<ResolvedThread>, BuildError> {
        let stage_indices: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| matches!(self.nodes[i].kind, NodeKind::Stage(_)))
            .collect();
        let specs: Vec<ThreadSpec> = match &self.placement {
            Placement::ThreadPerStage => stage_indices
                .iter()
                .map(|&i| ThreadSpec::new([self.nodes[i].name.clone()]))
                .collect(),
            Placement::Fused if stage_indices.is_empty() => Vec::new(),
            Placement::Fused => vec![ThreadSpec::new(
                stage_indices.iter().map(|&i| self.nodes[i].name.clone()),
            )],
            // The driver takes every stage.
            Placement::Caller => return Ok(Vec::new()),
            Placement::Threads(specs) => specs.clone(),
        };
        let core_count = core_affinity::get_core_ids().map_or(0, |ids| ids.len());
        let mut placed = vec![false; self.nodes.len()];
        let mut threads = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.stages.is_empty() {
                return Err(BuildError::EmptyThread);
            }
            if let Some(core) = spec.core.filter(|&core| core >= core_count) {
                return Err(BuildError::NoSuchCore {
                    core,
                    available: core_count,
                });
            }
            let mut indices = Vec::with_capacity(spec.stages.len());
            for name in &spec.stages {
                let index = self
                    .nodes
                    .iter()
                    .position(|node| &node.name == name)
                    .ok_or_else(|| BuildError::UnknownStage(name.clone()))?;
                if matches!(self.nodes[index].kind, NodeKind::Poller) {
                    return Err(BuildError::PollerPlaced(name.clone()));
                }
                if std::mem::replace(&mut placed[index], true) {
                    return Err(BuildError::PlacedTwice(name.clone()));
                }
                indices.push(index);
            }
            // Index order is a dependency order.
            indices.sort_unstable();
            threads.push((indices, spec.core));
        }
        if let Some(&unplaced) = stage_indices.iter().find(|&&i| !placed[i]) {
            return Err(BuildError::Unplaced(self.nodes[unplaced].name.clone()));
        }
        Ok(threads)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    type Event = u64;

    fn read(_: &Event, _: u64, _: bool) {}
    fn write(_: &mut Event, _: u64, _: bool) {}

    fn error_of(builder: Builder<Event>) -> BuildError {
        match builder.build_single_producer() {
            Ok(_) => panic!("the builder accepted an invalid pipeline"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_pipeline_needs_a_consumer() {
        let builder = Builder::new(8, || 0);
        assert!(matches!(error_of(builder), BuildError::NoConsumers));
    }

    #[test]
    fn names_are_unique() {
        let mut builder = Builder::new(8, || 0);
        builder.stage("a", &[], read);
        builder.stage("a", &[], read);
        assert!(matches!(error_of(builder), BuildError::DuplicateName(name) if name == "a"));
    }

    #[test]
    fn a_dependency_must_exist_before_its_dependent() {
        let mut builder = Builder::new(8, || 0);
        builder.stage("a", &[StageId(5)], read);
        assert!(matches!(
            error_of(builder),
            BuildError::UnknownDependency { dependency: 5, .. }
        ));
    }

    #[test]
    fn exclusive_stage_beside_another_is_refused() {
        // decode (&mut) and audit (&E) both follow the producer directly: they
        // could touch the same slot at once.
        let mut builder = Builder::new(8, || 0);
        builder.stage_mut("decode", &[], write);
        builder.stage("audit", &[], read);
        let error = error_of(builder);
        assert!(
            matches!(&error, BuildError::ExclusiveConflict { stage, other } if stage == "decode" && other == "audit"),
            "{error}"
        );
    }

    #[test]
    fn exclusive_stage_in_a_diamond_is_refused_on_the_sides() {
        // journal (&mut) runs beside replicate: refused.
        let mut builder = Builder::new(8, || 0);
        let decode = builder.stage_mut("decode", &[], write);
        let journal = builder.stage_mut("journal", &[decode], write);
        let replicate = builder.stage("replicate", &[decode], read);
        builder.stage_mut("logic", &[journal, replicate], write);
        assert!(matches!(
            error_of(builder),
            BuildError::ExclusiveConflict { stage, .. } if stage == "journal"
        ));
    }

    #[test]
    fn exclusive_stages_in_a_diamond_are_accepted_at_the_ends() {
        // decode and logic are ordered with every other stage; the side
        // stages share.
        let mut builder = Builder::new(8, || 0);
        let decode = builder.stage_mut("decode", &[], write);
        let journal = builder.stage("journal", &[decode], read);
        let replicate = builder.stage("replicate", &[decode], read);
        builder.stage_mut("logic", &[journal, replicate], write);
        let (_producer, pipeline) = builder.build_single_producer().expect("valid diamond");
        pipeline.shutdown().expect("no stage failed");
    }

    #[test]
    fn placement_errors_name_the_stage() {
        // Each case: a placement and the error it must give.
        type Case = (Placement, fn(&BuildError) -> bool);
        let cases: Vec<Case> = vec![
            // A name that is no stage.
            (
                Placement::Threads(vec![ThreadSpec::new(["a", "b", "zz"])]),
                |e| matches!(e, BuildError::UnknownStage(n) if n == "zz"),
            ),
            // Stage b on no thread.
            (
                Placement::Threads(vec![ThreadSpec::new(["a"])]),
                |e| matches!(e, BuildError::Unplaced(n) if n == "b"),
            ),
            // Stage a on two threads.
            (
                Placement::Threads(vec![ThreadSpec::new(["a", "b"]), ThreadSpec::new(["a"])]),
                |e| matches!(e, BuildError::PlacedTwice(n) if n == "a"),
            ),
            // A thread with nothing to run.
            (
                Placement::Threads(vec![
                    ThreadSpec::new(["a", "b"]),
                    ThreadSpec::new(Vec::<String>::new()),
                ]),
                |e| matches!(e, BuildError::EmptyThread),
            ),
            // A poller cannot be given a thread.
            (
                Placement::Threads(vec![ThreadSpec::new(["a", "b", "out"])]),
                |e| matches!(e, BuildError::PollerPlaced(n) if n == "out"),
            ),
            // A core far beyond any machine's.
            (
                Placement::Threads(vec![ThreadSpec::new(["a", "b"]).pinned(100_000)]),
                |e| matches!(e, BuildError::NoSuchCore { core: 100_000, .. }),
            ),
        ];
        for (placement, expected) in cases {
            let mut builder = Builder::new(8, || 0u64).placement(placement.clone());
            let a = builder.stage("a", &[], read);
            let b = builder.stage("b", &[a], read);
            builder.poller("out", &[b]);
            let error = error_of(builder);
            assert!(expected(&error), "{placement:?} gave {error}");
        }
    }

    #[test]
    fn ancestors_are_transitive() {
        let mut builder = Builder::new(8, || 0u64);
        let a = builder.stage("a", &[], read);
        let b = builder.stage("b", &[a], read);
        let c = builder.stage("c", &[], read);
        builder.stage("d", &[b, c], read);
        let ancestors = builder.ancestors();
        // d is downstream of a through b, and of c directly.
        assert!(ancestors[3][0] && ancestors[3][1] && ancestors[3][2]);
        // a and c are unrelated.
        assert!(!ancestors[0][2] && !ancestors[2][0]);
        // Nothing is its own ancestor.
        assert!((0..4).all(|i| !ancestors[i][i]));
    }
}
