//! What the ring buffer benchmarks share: the event, the four pipeline shapes,
//! and one "rig" per contender (this crate, the `disruptor` crate, crossbeam
//! channels) that runs a shape so the harnesses can drive them all alike.
#![allow(dead_code)] // each bench binary uses part of this module

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use courier_ringbuffer as ring;
use hdrhistogram::Histogram;

/// The 64-byte event every contender moves.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct Event {
    /// When it was published: nanoseconds since [`epoch`]; 0 when not timed.
    pub stamp_ns: u64,
    pub value: u64,
    pub payload: [u64; 6],
}

const _: () = assert!(std::mem::size_of::<Event>() == 64);

pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The shapes of the issue: who publishes, and which stages follow whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One producer, one consumer.
    Spsc,
    /// One producer, three stages in a chain.
    Pipeline3,
    /// Two producers, one consumer.
    Mpsc,
    /// decode → (journal ∥ replicate) → logic.
    Diamond,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Spsc, Shape::Pipeline3, Shape::Mpsc, Shape::Diamond];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Spsc => "1p-1c",
            Shape::Pipeline3 => "1p-3stage",
            Shape::Mpsc => "2p-1c",
            Shape::Diamond => "diamond",
        }
    }

    /// The stages before the last one, whose work a merged handler does
    /// before the last stage's.
    pub fn stages_before_last(self) -> usize {
        match self {
            Shape::Spsc | Shape::Mpsc => 0,
            Shape::Pipeline3 => 2,
            Shape::Diamond => 3,
        }
    }

    pub fn producers(self) -> usize {
        if self == Shape::Mpsc {
            2
        } else {
            1
        }
    }
}

/// The work of one stage: a little arithmetic on the event, as a decoder or
/// checksum would do, so the compiler cannot drop the stage.
#[inline]
fn work(acc: &mut u64, event: &Event) {
    *acc = acc
        .wrapping_mul(31)
        .wrapping_add(event.value ^ event.payload[0]);
}

/// The last stage: does its work, records latency for timed events, and says
/// how many events it has finished.
pub struct Sink {
    acc: u64,
    count: u64,
    done: Arc<AtomicU64>,
    histogram: Histogram<u64>,
    report: mpsc::Sender<Histogram<u64>>,
}

impl Sink {
    fn new(done: Arc<AtomicU64>, report: mpsc::Sender<Histogram<u64>>) -> Self {
        Self {
            acc: 0,
            count: 0,
            done,
            // 1 ns to 60 s, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            report,
        }
    }

    #[inline]
    fn on_event(&mut self, event: &Event, end_of_batch: bool) {
        work(&mut self.acc, event);
        if event.stamp_ns != 0 {
            let latency = now_ns().saturating_sub(event.stamp_ns).max(1);
            self.histogram.saturating_record(latency);
        }
        self.count += 1;
        if end_of_batch {
            self.done.store(self.count, Ordering::Release);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        black_box(self.acc);
        let _ = self.report.send(std::mem::replace(
            &mut self.histogram,
            Histogram::new(1).expect("valid"),
        ));
    }
}

/// A stage that is not last: does its work only.
fn middle() -> impl FnMut(&Event) + Send {
    let mut acc = 0u64;
    move |event| {
        work(&mut acc, event);
        black_box(acc);
    }
}

/// Publishes events into one contender's shape.
pub trait Publish: Send {
    fn publish(&mut self, stamp_ns: u64, value: u64);

    /// Publishes untimed events for `values`. A contender built to claim
    /// batches (see [`PUBLISH_BATCH`]) claims them all at once; the others
    /// publish one event at a time.
    fn publish_untimed(&mut self, values: std::ops::Range<u64>) {
        publish_each(self, values);
    }

    /// The end of a burst: a producer that runs the stages itself runs what
    /// it has left.
    fn flush(&mut self) {}

    /// The end of this producer's share of a burst with several producers:
    /// one that runs the stages itself keeps running them until the last
    /// stage has finished `target` events (the others' included).
    fn finish_share(&mut self, _done: &AtomicU64, _target: u64) {}
}

/// Publishes untimed events for `values`, one at a time.
fn publish_each<P: Publish + ?Sized>(producer: &mut P, values: std::ops::Range<u64>) {
    for value in values {
        producer.publish(0, value);
    }
}

/// A contender running one shape.
pub struct Rig {
    pub name: String,
    /// The core the harness should pin its publishing thread to, if any.
    pub producer_core: Option<usize>,
    /// One per producer of the shape.
    pub producers: Vec<Box<dyn Publish>>,
    done: Arc<AtomicU64>,
    stop: Box<dyn FnOnce()>,
    report: mpsc::Receiver<Histogram<u64>>,
}

impl Rig {
    /// Events the last stage has finished.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Waits until the last stage has finished `target` events.
    pub fn wait_done(&self, target: u64) {
        let mut spins = 0u32;
        while self.done() < target {
            spins += 1;
            if spins > 100 {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Publishes `count` events split across the producers, as fast as they
    /// go, and returns the time until the last stage finished them all.
    pub fn burst(&mut self, count: u64) -> Duration {
        let target = self.done() + count;
        let share = count / self.producers.len() as u64;
        let start = Instant::now();
        if self.producers.len() == 1 {
            let producer = &mut self.producers[0];
            publish_in_runs(producer.as_mut(), count);
            producer.flush();
        } else {
            let producer_count = self.producers.len() as u64;
            let done = &*self.done;
            thread::scope(|scope| {
                for (index, producer) in self.producers.iter_mut().enumerate() {
                    // The first producer also takes the remainder.
                    let mine = if index == 0 {
                        count - share * (producer_count - 1)
                    } else {
                        share
                    };
                    scope.spawn(move || {
                        publish_in_runs(producer.as_mut(), mine);
                        producer.finish_share(done, target);
                    });
                }
            });
        }
        self.wait_done(target);
        start.elapsed()
    }

    /// Stops the contender and returns the latencies its last stage recorded.
    pub fn finish(self) -> Histogram<u64> {
        let Rig {
            producers,
            stop,
            report,
            ..
        } = self;
        drop(producers);
        stop();
        let mut merged = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        // Every rig has one sink, which reports when it is dropped.
        let histogram = report
            .recv_timeout(Duration::from_secs(30))
            .expect("the sink reports");
        merged.add(&histogram).expect("same bounds");
        merged
    }
}

/// Slots in every ring, and capacity of every channel.
pub const CAPACITY: usize = 4096;

/// Events per claim for the contenders that publish in batches, as courier's
/// I/O thread publishes the frames of one read together.
pub const PUBLISH_BATCH: usize = 32;

/// Publishes `count` untimed events in runs of [`PUBLISH_BATCH`].
fn publish_in_runs(producer: &mut dyn Publish, count: u64) {
    let mut value = 0;
    while value < count {
        let end = (value + PUBLISH_BATCH as u64).min(count);
        producer.publish_untimed(value..end);
        value = end;
    }
}

/// Where this crate's stages run, for the benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Each stage on its own thread.
    PerStage,
    /// All stages on one thread.
    Fused,
    /// All stages on one thread pinned to core 0, with the producer pinned
    /// there too: the net thread and the pipeline sharing a core.
    FusedSharedCore,
    /// All stages run by the producer's own thread through the pipeline's
    /// driver (`Placement::Caller`), as courier's I/O thread runs them: a
    /// timed event at once, untimed ones once per 256 published. With two
    /// producers the first drives and the second only publishes; in a burst
    /// from both, the first goes on driving after its own share until the
    /// second's events are through (as courier's first I/O thread runs the
    /// stages for events the other I/O threads publish).
    Caller,
    /// One stage whose handler does every stage's work, one event at a time:
    /// how the `disruptor` crate and crossbeam's `Fused` contenders put the
    /// stages on one thread. Here for this crate, so the rings can be
    /// compared doing the same work; a merged stage gives up each stage's own
    /// end of batch.
    Merged,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::PerStage => "per-stage",
            Layout::Fused => "fused",
            Layout::FusedSharedCore => "fused, sharing the producer's core",
            Layout::Caller => "run by the producer (caller placement)",
            Layout::Merged => "merged into one handler",
        }
    }
}

fn sink_parts() -> (Arc<AtomicU64>, Sink, mpsc::Receiver<Histogram<u64>>) {
    let done = Arc::new(AtomicU64::new(0));
    let (report_tx, report_rx) = mpsc::channel();
    let sink = Sink::new(Arc::clone(&done), report_tx);
    (done, sink, report_rx)
}

fn fill(event: &mut Event, stamp_ns: u64, value: u64) {
    event.stamp_ns = stamp_ns;
    event.value = value;
    event.payload[0] = value.rotate_left(7);
}

// ----- this crate ---------------------------------------------------------

/// This crate's producers; with `batched`, untimed events are claimed
/// and published a run at a time.
struct CourierSingle {
    producer: ring::SingleProducer<Event>,
    batched: bool,
}

struct CourierMulti {
    producer: ring::MultiProducer<Event>,
    batched: bool,
}

/// Fills a claimed run of slots with untimed events for `values`.
fn fill_run<'a>(slots: impl Iterator<Item = &'a mut Event>, values: std::ops::Range<u64>) {
    for (event, value) in slots.zip(values) {
        fill(event, 0, value);
    }
}

/// The same `Publish` for both of this crate's producers, whose methods
/// share names and shapes but no trait.
macro_rules! courier_publish {
    ($producer:ident) => {
        impl Publish for $producer {
            #[inline]
            fn publish(&mut self, stamp_ns: u64, value: u64) {
                self.producer
                    .publish(|event| fill(event, stamp_ns, value))
                    .expect("the pipeline runs");
            }

            fn publish_untimed(&mut self, values: std::ops::Range<u64>) {
                if !self.batched {
                    return publish_each(self, values);
                }
                let count = (values.end - values.start) as usize;
                self.producer
                    .publish_batch(count, |slots| fill_run(slots, values))
                    .expect("the pipeline runs");
            }
        }
    };
}

courier_publish!(CourierSingle);
courier_publish!(CourierMulti);

/// Untimed events a [`CourierCaller`] publishes before it runs them.
const CALLER_BATCH: usize = 256;

/// A producer that runs the stages itself. The driver sits in a slot the
/// rig's stop can take it from once the producer is dropped.
struct CourierCaller {
    producer: CallerProducer,
    driver: Arc<std::sync::Mutex<Option<ring::Driver<Event>>>>,
    pending: usize,
}

enum CallerProducer {
    Single(ring::SingleProducer<Event>),
    Multi(ring::MultiProducer<Event>),
}

impl CallerProducer {
    #[inline]
    fn try_publish(&mut self, stamp_ns: u64, value: u64) -> Result<u64, ring::TryPublishError> {
        match self {
            CallerProducer::Single(producer) => {
                producer.try_publish(|event| fill(event, stamp_ns, value))
            }
            CallerProducer::Multi(producer) => {
                producer.try_publish(|event| fill(event, stamp_ns, value))
            }
        }
    }
}

impl CourierCaller {
    fn run_all(&mut self) {
        let mut slot = self.driver.lock().expect("not poisoned");
        let driver = slot.as_mut().expect("the driver is here until the stop");
        while driver.run() == Ok(true) {}
        self.pending = 0;
    }
}

impl Publish for CourierCaller {
    #[inline]
    fn publish(&mut self, stamp_ns: u64, value: u64) {
        while let Err(error) = self.producer.try_publish(stamp_ns, value) {
            assert_eq!(error, ring::TryPublishError::Full, "the pipeline runs");
            self.run_all();
        }
        self.pending += 1;
        if stamp_ns != 0 || self.pending >= CALLER_BATCH {
            self.run_all();
        }
    }

    fn flush(&mut self) {
        self.run_all();
    }

    fn finish_share(&mut self, done: &AtomicU64, target: u64) {
        while done.load(Ordering::Acquire) < target {
            self.run_all();
            std::hint::spin_loop();
        }
    }
}

/// This crate running `shape` with `wait` and `layout`.
pub fn courier(shape: Shape, wait: ring::WaitStrategy, layout: Layout, wait_name: &str) -> Rig {
    courier_rig(shape, wait, layout, wait_name, false)
}

/// [`courier`], with untimed events claimed [`PUBLISH_BATCH`] at a time.
pub fn courier_batched(
    shape: Shape,
    wait: ring::WaitStrategy,
    layout: Layout,
    wait_name: &str,
) -> Rig {
    assert_ne!(
        layout,
        Layout::Caller,
        "the caller rig publishes one at a time"
    );
    courier_rig(shape, wait, layout, wait_name, true)
}

/// The name suffix of a rig that claims batches.
fn batch_suffix(batched: bool) -> String {
    if batched {
        format!(", claims of {PUBLISH_BATCH}")
    } else {
        String::new()
    }
}

fn courier_rig(
    shape: Shape,
    wait: ring::WaitStrategy,
    layout: Layout,
    wait_name: &str,
    batched: bool,
) -> Rig {
    let (done, mut sink, report) = sink_parts();
    let placement = match layout {
        Layout::PerStage | Layout::Merged => ring::Placement::ThreadPerStage,
        Layout::Fused => ring::Placement::Fused,
        Layout::FusedSharedCore => {
            let stages: Vec<&str> = match shape {
                Shape::Spsc | Shape::Mpsc => vec!["sink"],
                Shape::Pipeline3 => vec!["a", "b", "sink"],
                Shape::Diamond => vec!["decode", "journal", "replicate", "logic"],
            };
            ring::Placement::Threads(vec![ring::ThreadSpec::new(stages).pinned(0)])
        }
        Layout::Caller => ring::Placement::Caller,
    };
    let mut builder = ring::Builder::new(CAPACITY, Event::default)
        .wait_strategy(wait)
        .placement(placement);
    if layout == Layout::Merged && shape.stages_before_last() > 0 {
        let mut before: Vec<_> = (0..shape.stages_before_last()).map(|_| middle()).collect();
        builder.stage("merged", &[], move |e: &Event, _, end| {
            for stage in &mut before {
                stage(e);
            }
            sink.on_event(e, end)
        });
        return courier_finish(builder, shape, layout, wait_name, batched, done, report);
    }
    let last = move |event: &Event, _, end_of_batch| sink.on_event(event, end_of_batch);
    match shape {
        Shape::Spsc | Shape::Mpsc => {
            builder.stage("sink", &[], last);
        }
        Shape::Pipeline3 => {
            let mut a = middle();
            let mut b = middle();
            let first = builder.stage("a", &[], move |e: &Event, _, _| a(e));
            let second = builder.stage("b", &[first], move |e: &Event, _, _| b(e));
            builder.stage("sink", &[second], last);
        }
        Shape::Diamond => {
            let (mut d, mut j, mut r) = (middle(), middle(), middle());
            let decode = builder.stage("decode", &[], move |e: &Event, _, _| d(e));
            let journal = builder.stage("journal", &[decode], move |e: &Event, _, _| j(e));
            let replicate = builder.stage("replicate", &[decode], move |e: &Event, _, _| r(e));
            builder.stage("logic", &[journal, replicate], last);
        }
    }
    courier_finish(builder, shape, layout, wait_name, batched, done, report)
}

/// Builds the pipeline whose stages `builder` holds, and its producers.
fn courier_finish(
    builder: ring::Builder<Event>,
    shape: Shape,
    layout: Layout,
    wait_name: &str,
    batched: bool,
    done: Arc<AtomicU64>,
    report: mpsc::Receiver<Histogram<u64>>,
) -> Rig {
    if layout == Layout::Caller {
        let (mut producers, (first, mut pipeline)): (Vec<Box<dyn Publish>>, _) =
            if shape.producers() == 1 {
                let (producer, pipeline) = builder.build_single_producer().expect("valid pipeline");
                (Vec::new(), (CallerProducer::Single(producer), pipeline))
            } else {
                let (producer, pipeline) = builder.build_multi_producer().expect("valid pipeline");
                let others = (1..shape.producers())
                    .map(|_| {
                        Box::new(CourierMulti {
                            producer: producer.clone(),
                            batched: false,
                        }) as Box<dyn Publish>
                    })
                    .collect();
                (others, (CallerProducer::Multi(producer), pipeline))
            };
        let driver = Arc::new(std::sync::Mutex::new(pipeline.take_driver()));
        let slot = Arc::clone(&driver);
        producers.insert(
            0,
            Box::new(CourierCaller {
                producer: first,
                driver,
                pending: 0,
            }),
        );
        return Rig {
            producer_core: None,
            name: format!("courier/{wait_name}/{}", layout.name()),
            producers,
            done,
            stop: Box::new(move || {
                let mut driver = slot.lock().expect("not poisoned").take().expect("a driver");
                // The stop waits for the driver to shut the stages down.
                thread::scope(|scope| {
                    let stopping = scope.spawn(|| pipeline.shutdown());
                    while driver.run().is_ok() {}
                    stopping.join().unwrap().expect("no stage panicked");
                });
            }),
            report,
        };
    }
    let (producers, pipeline): (Vec<Box<dyn Publish>>, _) = if shape.producers() == 1 {
        let (producer, pipeline) = builder.build_single_producer().expect("valid pipeline");
        (
            vec![Box::new(CourierSingle { producer, batched })],
            pipeline,
        )
    } else {
        let (producer, pipeline) = builder.build_multi_producer().expect("valid pipeline");
        let producers: Vec<Box<dyn Publish>> = (0..shape.producers())
            .map(|_| {
                Box::new(CourierMulti {
                    producer: producer.clone(),
                    batched,
                }) as Box<dyn Publish>
            })
            .collect();
        (producers, pipeline)
    };
    Rig {
        producer_core: (layout == Layout::FusedSharedCore).then_some(0),
        name: format!(
            "courier/{wait_name}/{}{}",
            layout.name(),
            batch_suffix(batched)
        ),
        producers,
        done,
        stop: Box::new(move || pipeline.shutdown().expect("no stage panicked")),
        report,
    }
}

// ----- the disruptor crate ------------------------------------------------

/// A producer of the `disruptor` crate; with `batched`, untimed events are
/// claimed and published a run at a time (its `batch_publish`).
struct DisruptorProducer<P> {
    producer: P,
    batched: bool,
}

impl<P: disruptor::Producer<Event> + Send> Publish for DisruptorProducer<P> {
    #[inline]
    fn publish(&mut self, stamp_ns: u64, value: u64) {
        self.producer.publish(|event| fill(event, stamp_ns, value));
    }

    fn publish_untimed(&mut self, values: std::ops::Range<u64>) {
        if !self.batched {
            return publish_each(self, values);
        }
        let count = (values.end - values.start) as usize;
        self.producer
            .batch_publish(count, |slots| fill_run(slots, values));
    }
}

/// The `disruptor` crate running `shape` with `wait`: a thread per stage, or
/// (`Layout::Fused`) one handler that does every stage's work, which is how
/// that crate fuses stages.
pub fn disruptor<W>(shape: Shape, wait: W, layout: Layout, wait_name: &str) -> Rig
where
    W: disruptor::wait_strategies::WaitStrategy + Copy + Send + Sync + 'static,
{
    disruptor_rig(shape, wait, layout, wait_name, false)
}

/// [`disruptor`], with untimed events claimed [`PUBLISH_BATCH`] at a time.
pub fn disruptor_batched<W>(shape: Shape, wait: W, layout: Layout, wait_name: &str) -> Rig
where
    W: disruptor::wait_strategies::WaitStrategy + Copy + Send + Sync + 'static,
{
    disruptor_rig(shape, wait, layout, wait_name, true)
}

fn disruptor_rig<W>(shape: Shape, wait: W, layout: Layout, wait_name: &str, batched: bool) -> Rig
where
    W: disruptor::wait_strategies::WaitStrategy + Copy + Send + Sync + 'static,
{
    let (done, mut sink, report) = sink_parts();
    let producers: Vec<Box<dyn Publish>> = match (shape, layout) {
        (Shape::Mpsc, _) => {
            let producer = disruptor::build_multi_producer(CAPACITY, Event::default, wait)
                .handle_events_with(move |e: &Event, _, end| sink.on_event(e, end))
                .build();
            vec![
                Box::new(DisruptorProducer {
                    producer: producer.clone(),
                    batched,
                }),
                Box::new(DisruptorProducer { producer, batched }),
            ]
        }
        (Shape::Spsc, _) => {
            let producer = disruptor::build_single_producer(CAPACITY, Event::default, wait)
                .handle_events_with(move |e: &Event, _, end| sink.on_event(e, end))
                .build();
            vec![Box::new(DisruptorProducer { producer, batched })]
        }
        (Shape::Pipeline3, Layout::PerStage) => {
            let (mut a, mut b) = (middle(), middle());
            let producer = disruptor::build_single_producer(CAPACITY, Event::default, wait)
                .handle_events_with(move |e: &Event, _, _| a(e))
                .and_then()
                .handle_events_with(move |e: &Event, _, _| b(e))
                .and_then()
                .handle_events_with(move |e: &Event, _, end| sink.on_event(e, end))
                .build();
            vec![Box::new(DisruptorProducer { producer, batched })]
        }
        (Shape::Diamond, Layout::PerStage) => {
            let (mut d, mut j, mut r) = (middle(), middle(), middle());
            let producer = disruptor::build_single_producer(CAPACITY, Event::default, wait)
                .handle_events_with(move |e: &Event, _, _| d(e))
                .and_then()
                .handle_events_with(move |e: &Event, _, _| j(e))
                .handle_events_with(move |e: &Event, _, _| r(e))
                .and_then()
                .handle_events_with(move |e: &Event, _, end| sink.on_event(e, end))
                .build();
            vec![Box::new(DisruptorProducer { producer, batched })]
        }
        (Shape::Pipeline3 | Shape::Diamond, Layout::Caller) => {
            panic!("the disruptor crate cannot run its handlers on the producer's thread")
        }
        (
            Shape::Pipeline3 | Shape::Diamond,
            Layout::Fused | Layout::FusedSharedCore | Layout::Merged,
        ) => {
            let mut before: Vec<_> = (0..shape.stages_before_last()).map(|_| middle()).collect();
            let producer = disruptor::build_single_producer(CAPACITY, Event::default, wait)
                .handle_events_with(move |e: &Event, _, end| {
                    for stage in &mut before {
                        stage(e);
                    }
                    sink.on_event(e, end)
                })
                .build();
            vec![Box::new(DisruptorProducer { producer, batched })]
        }
    };
    Rig {
        producer_core: None,
        name: format!(
            "disruptor/{wait_name}/{}{}",
            layout.name(),
            batch_suffix(batched)
        ),
        producers,
        done,
        // Dropping the producers stops and joins the consumers.
        stop: Box::new(|| {}),
        report,
    }
}

// ----- crossbeam channels -------------------------------------------------

struct ChannelProducer(crossbeam_channel::Sender<Event>);

impl Publish for ChannelProducer {
    #[inline]
    fn publish(&mut self, stamp_ns: u64, value: u64) {
        let mut event = Event::default();
        fill(&mut event, stamp_ns, value);
        self.0.send(event).expect("the consumer runs");
    }
}

/// Crossbeam bounded channels, a thread per stage joined by channels, or
/// (`Layout::Fused`) one consumer thread that does every stage's work.
pub fn crossbeam(shape: Shape, layout: Layout) -> Rig {
    use crossbeam_channel::{bounded, Receiver, Sender};
    let (done, mut sink, report) = sink_parts();
    let (tx, rx) = bounded::<Event>(CAPACITY);
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    // A stage thread: receive, work, pass on.
    let relay = |rx: Receiver<Event>, tx: Sender<Event>| {
        let mut stage = middle();
        thread::spawn(move || {
            for event in rx {
                stage(&event);
                if tx.send(event).is_err() {
                    return;
                }
            }
        })
    };
    let last_rx = match (shape, layout) {
        (Shape::Pipeline3, Layout::PerStage) => {
            let (tx1, rx1) = bounded(CAPACITY);
            let (tx2, rx2) = bounded(CAPACITY);
            threads.push(relay(rx, tx1));
            threads.push(relay(rx1, tx2));
            vec![rx2]
        }
        (Shape::Diamond, Layout::PerStage) => {
            let (tx_j, rx_j) = bounded::<Event>(CAPACITY);
            let (tx_r, rx_r) = bounded::<Event>(CAPACITY);
            let (tx_jl, rx_jl) = bounded(CAPACITY);
            let (tx_rl, rx_rl) = bounded(CAPACITY);
            let mut decode = middle();
            threads.push(thread::spawn(move || {
                for event in rx {
                    decode(&event);
                    if tx_j.send(event).is_err() || tx_r.send(event).is_err() {
                        return;
                    }
                }
            }));
            threads.push(relay(rx_j, tx_jl));
            threads.push(relay(rx_r, tx_rl));
            vec![rx_jl, rx_rl]
        }
        _ => vec![rx],
    };
    let fused = layout == Layout::Fused;
    threads.push(thread::spawn(move || {
        let mut before: Vec<_> = (0..if fused { shape.stages_before_last() } else { 0 })
            .map(|_| middle())
            .collect();
        if let [first, second] = &last_rx[..] {
            // The join: an event counts once both sides passed it on.
            while let (Ok(event), Ok(_)) = (first.recv(), second.recv()) {
                sink.on_event(&event, true);
            }
        } else {
            for event in &last_rx[0] {
                for stage in &mut before {
                    stage(&event);
                }
                sink.on_event(&event, true);
            }
        }
    }));
    let producers: Vec<Box<dyn Publish>> = (0..shape.producers())
        .map(|_| Box::new(ChannelProducer(tx.clone())) as Box<dyn Publish>)
        .collect();
    drop(tx);
    Rig {
        producer_core: None,
        name: format!("crossbeam/channel/{}", layout.name()),
        producers,
        done,
        stop: Box::new(move || {
            for thread in threads {
                thread.join().expect("no stage panicked");
            }
        }),
        report,
    }
}

/// Every contender for `shape` that publishes one event at a time: this
/// crate with busy-spin and blocking waits in both layouts and run by the
/// producer (with two producers, by the first, which goes on running the
/// stages after its share until the second's are through too), the
/// `disruptor` crate with busy-spin in both, and crossbeam channels in both.
pub fn per_event_contenders(shape: Shape) -> Vec<Box<dyn Fn() -> Rig>> {
    let mut rigs: Vec<Box<dyn Fn() -> Rig>> = Vec::new();
    for layout in [Layout::PerStage, Layout::Fused] {
        if layout == Layout::Fused && matches!(shape, Shape::Spsc | Shape::Mpsc) {
            continue; // one stage: nothing to fuse
        }
        rigs.push(Box::new(move || {
            courier(shape, ring::WaitStrategy::BusySpin, layout, "busy-spin")
        }));
        rigs.push(Box::new(move || {
            courier(shape, ring::WaitStrategy::BLOCKING, layout, "blocking")
        }));
        rigs.push(Box::new(move || {
            disruptor(shape, disruptor::BusySpin, layout, "busy-spin")
        }));
        rigs.push(Box::new(move || crossbeam(shape, layout)));
    }
    rigs.push(Box::new(move || {
        courier(
            shape,
            ring::WaitStrategy::BLOCKING,
            Layout::Caller,
            "blocking",
        )
    }));
    rigs
}

/// Every contender for `shape`, for a throughput run: the
/// [`per_event_contenders`], then this crate and the `disruptor` crate again
/// claiming [`PUBLISH_BATCH`] events at a time (crossbeam's channels have no
/// batch send).
pub fn throughput_contenders(shape: Shape) -> Vec<Box<dyn Fn() -> Rig>> {
    let mut rigs = per_event_contenders(shape);
    if matches!(shape, Shape::Pipeline3 | Shape::Diamond) {
        // The same merged handler as the `disruptor` crate's fused
        // contender, for a like-for-like view of the two rings.
        for (wait, name) in [
            (ring::WaitStrategy::BusySpin, "busy-spin"),
            (ring::WaitStrategy::BLOCKING, "blocking"),
        ] {
            rigs.push(Box::new(move || courier(shape, wait, Layout::Merged, name)));
        }
    }
    for layout in [Layout::PerStage, Layout::Fused] {
        if layout == Layout::Fused && matches!(shape, Shape::Spsc | Shape::Mpsc) {
            continue;
        }
        rigs.push(Box::new(move || {
            courier_batched(shape, ring::WaitStrategy::BusySpin, layout, "busy-spin")
        }));
        rigs.push(Box::new(move || {
            courier_batched(shape, ring::WaitStrategy::BLOCKING, layout, "blocking")
        }));
        rigs.push(Box::new(move || {
            disruptor_batched(shape, disruptor::BusySpin, layout, "busy-spin")
        }));
    }
    rigs
}
