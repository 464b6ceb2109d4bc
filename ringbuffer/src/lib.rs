//! A disruptor-style ring buffer: the pipeline every courier stage runs on.
//!
//! Events live in a ring of preallocated slots, made once and reused in place,
//! so publishing allocates nothing. A producer claims a slot, writes the event
//! in it and publishes its sequence; stages follow the producer, each gated on
//! the stages before it, and see events in batches. Stages form any DAG: a
//! chain (decode → journal → logic), stages side by side (journal ∥ replicate)
//! and joins (logic after both).
//!
//! # Lifecycle
//!
//! 1. **Set up.** [`Builder::new`] allocates the ring. Add stages with
//!    [`Builder::stage`] (reads `&E`) or [`Builder::stage_mut`] (owns `&mut E`,
//!    to annotate events for later stages), and pollers for threads of your own
//!    with [`Builder::poller`]. Choose a [`WaitStrategy`] and a [`Placement`]:
//!    a thread per stage, several stages fused on one thread, or every stage
//!    run by a thread of yours through a [`Driver`] ([`Placement::Caller`]).
//! 2. **Run.** Building starts the stage threads and returns a
//!    [`SingleProducer`] or a cloneable [`MultiProducer`]. Publish with
//!    `publish` (waits while the ring is full) or `try_publish` (returns
//!    [`TryPublishError::Full`]: backpressure as a value).
//! 3. **Shut down.** [`Pipeline::shutdown`] waits until everything published
//!    has passed every stage, stops and joins the threads, and reports a stage
//!    whose handler panicked, by name. After a panic, publishing returns
//!    [`Halted`] instead of hanging.
//!
//! # Example
//!
//! ```
//! use courier_ringbuffer::{Builder, Placement, WaitStrategy};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! #[derive(Default)]
//! struct Event {
//!     value: u64,
//!     doubled: u64,
//! }
//!
//! let total = Arc::new(AtomicU64::new(0));
//! let seen = Arc::clone(&total);
//!
//! let mut builder = Builder::new(1024, Event::default)
//!     .wait_strategy(WaitStrategy::BLOCKING)
//!     .placement(Placement::Fused);
//! // An exclusive stage writes its result into the event...
//! let double = builder.stage_mut("double", &[], |event: &mut Event, _sequence, _end_of_batch| {
//!     event.doubled = event.value * 2;
//! });
//! // ...and the stage after it reads that result.
//! builder.stage("sum", &[double], move |event: &Event, _sequence, end_of_batch| {
//!     seen.fetch_add(event.doubled, Ordering::Relaxed);
//!     let _ = end_of_batch; // a real stage would flush here
//! });
//! let (mut producer, pipeline) = builder.build_single_producer().unwrap();
//!
//! for value in 1..=100 {
//!     producer.publish(|event| event.value = value).unwrap();
//! }
//! pipeline.shutdown().unwrap();
//! assert_eq!(total.load(Ordering::Relaxed), 2 * 5050);
//! ```
//!
//! # Safety
//!
//! `unsafe` is confined to slot access and one system call (`membarrier`,
//! for the asymmetric fence of the wake-up protocol). A slot is
//! reached only through the sequencing protocol, which the builder checks
//! (an exclusive stage must be ordered with every other consumer) and which the
//! loom models under `cfg(loom)` exercise:
//! `RUSTFLAGS="--cfg loom" cargo test -p courier-ringbuffer --release --test loom`.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod builder;
mod cursor;
mod driver;
mod error;
mod fence;
mod handler;
mod pipeline;
mod placement;
mod poller;
mod producer;
mod ring;
mod slots;
mod stage;
mod sync;
mod wait;

pub use builder::{Builder, StageId};
pub use driver::Driver;
pub use error::{BuildError, Halted, StageFailure, TryPublishError};
pub use handler::{Handler, MutHandler};
pub use pipeline::Pipeline;
pub use placement::{Placement, ThreadSpec};
pub use poller::{MutPoller, Poller};
pub use producer::{BatchSlots, MultiProducer, SingleProducer};
pub use wait::WaitStrategy;

/// A position in the ring's stream of events: the first event published is 0.
/// Sequences count events, never wrap in practice (2^64 of them), and map to
/// slot `sequence % capacity`.
pub type Sequence = u64;
