//! The ring buffer end to end: real threads, every shape, placement and wait.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_ringbuffer::{
    Builder, Halted, Handler, Pipeline, Placement, Sequence, ThreadSpec, TryPublishError,
    WaitStrategy,
};

const STRATEGIES: [WaitStrategy; 4] = [
    WaitStrategy::BusySpin,
    WaitStrategy::SpinHint,
    WaitStrategy::Yield {
        spin: Duration::from_micros(5),
    },
    WaitStrategy::BLOCKING,
];

#[derive(Default)]
struct Event {
    value: u64,
    decoded: u64,
    journaled: u64,
}

/// Collects what a stage saw, to compare with what was published.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Sequence, u64)>>>);

impl Seen {
    fn push(&self, sequence: Sequence, value: u64) {
        self.0.lock().unwrap().push((sequence, value));
    }
    fn take(&self) -> Vec<(Sequence, u64)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn expect_in_order(seen: &[(Sequence, u64)], count: u64, value_of: impl Fn(u64) -> u64) {
    assert_eq!(seen.len() as u64, count, "every event exactly once");
    for (index, &(sequence, value)) in seen.iter().enumerate() {
        assert_eq!(sequence, index as u64, "in sequence order");
        assert_eq!(value, value_of(sequence), "with the value written for it");
    }
}

/// Runs a [`Placement::Caller`] pipeline's driver on a thread of the test's,
/// as an event loop would: run while there is work, otherwise sleep until the
/// wake hook fires. `None` for other placements.
fn drive<E: Send + Sync + 'static>(
    pipeline: &mut Pipeline<E>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut driver = pipeline.take_driver()?;
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    driver.set_wake_hook(move || {
        let _ = wake_tx.send(());
    });
    Some(std::thread::spawn(move || loop {
        match driver.run() {
            Err(Halted) => return,
            Ok(true) => {}
            Ok(false) => {
                if driver.prepare_wait() {
                    wake_rx
                        .recv_timeout(Duration::from_secs(10))
                        .expect("a publish or the stop wakes the driver");
                }
            }
        }
    }))
}

#[test]
fn pipeline_of_three_stages_annotates_events_for_later_stages() {
    const COUNT: u64 = 20_000;
    for strategy in STRATEGIES {
        for placement in [
            Placement::ThreadPerStage,
            Placement::Fused,
            Placement::Threads(vec![
                ThreadSpec::new(["decode", "journal"]),
                ThreadSpec::new(["logic"]),
            ]),
            Placement::Caller,
        ] {
            let seen = Seen::default();
            let sink = seen.clone();
            // A small ring, so the producer laps it many times.
            let mut builder = Builder::new(64, Event::default)
                .wait_strategy(strategy)
                .placement(placement.clone());
            let decode =
                builder.stage_mut("decode", &[], |e: &mut Event, _, _| e.decoded = e.value * 3);
            let journal = builder.stage_mut("journal", &[decode], |e: &mut Event, s, _| {
                assert_eq!(e.decoded, e.value * 3, "decode ran before journal");
                e.journaled = s + 1;
            });
            builder.stage("logic", &[journal], move |e: &Event, s, _| {
                assert_eq!(e.journaled, s + 1, "journal ran before logic");
                sink.push(s, e.decoded);
            });
            let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
            let driving = drive(&mut pipeline);
            for value in 0..COUNT {
                producer.publish(|e| e.value = value).unwrap();
            }
            pipeline
                .shutdown()
                .unwrap_or_else(|f| panic!("{strategy:?} {placement:?}: {f}"));
            if let Some(thread) = driving {
                thread.join().unwrap();
            }
            expect_in_order(&seen.take(), COUNT, |s| s * 3);
        }
    }
}

#[test]
fn diamond_joins_wait_for_both_sides() {
    const COUNT: u64 = 20_000;
    for placement in [
        Placement::ThreadPerStage,
        Placement::Fused,
        Placement::Caller,
    ] {
        let journal_done = Arc::new(AtomicU64::new(0));
        let replicate_done = Arc::new(AtomicU64::new(0));
        let seen = Seen::default();
        let mut builder = Builder::new(128, Event::default)
            .wait_strategy(WaitStrategy::BLOCKING)
            .placement(placement);
        let decode =
            builder.stage_mut("decode", &[], |e: &mut Event, _, _| e.decoded = e.value + 1);
        let done = Arc::clone(&journal_done);
        let journal = builder.stage("journal", &[decode], move |e: &Event, s, _| {
            assert_eq!(e.decoded, e.value + 1);
            done.store(s + 1, Ordering::Release);
        });
        let done = Arc::clone(&replicate_done);
        let replicate = builder.stage("replicate", &[decode], move |_: &Event, s, _| {
            done.store(s + 1, Ordering::Release);
        });
        let (j, r, sink) = (
            Arc::clone(&journal_done),
            Arc::clone(&replicate_done),
            seen.clone(),
        );
        builder.stage_mut(
            "logic",
            &[journal, replicate],
            move |e: &mut Event, s, _| {
                // The join sees an event only after both sides handled it.
                assert!(
                    j.load(Ordering::Acquire) > s,
                    "logic ran before journal at {s}"
                );
                assert!(
                    r.load(Ordering::Acquire) > s,
                    "logic ran before replicate at {s}"
                );
                sink.push(s, e.decoded);
            },
        );
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let driving = drive(&mut pipeline);
        for value in 0..COUNT {
            producer.publish(|e| e.value = value).unwrap();
        }
        pipeline.shutdown().unwrap();
        if let Some(thread) = driving {
            thread.join().unwrap();
        }
        expect_in_order(&seen.take(), COUNT, |s| s + 1);
    }
}

#[test]
fn several_producers_each_arrive_once_and_in_their_own_order() {
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 30_000;
    for strategy in [WaitStrategy::SpinHint, WaitStrategy::BLOCKING] {
        let seen = Seen::default();
        let sink = seen.clone();
        let mut builder = Builder::new(256, Event::default).wait_strategy(strategy);
        builder.stage("sink", &[], move |e: &Event, s, _| sink.push(s, e.value));
        let (producer, pipeline) = builder.build_multi_producer().unwrap();
        let threads: Vec<_> = (0..PRODUCERS)
            .map(|id| {
                let mut producer = producer.clone();
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        // Half single events, half batches of three.
                        if n % 2 == 0 {
                            producer.publish(|e| e.value = id << 32 | n).unwrap();
                        } else {
                            producer
                                .publish_batch(1, |mut slots| {
                                    slots.next().unwrap().value = id << 32 | n
                                })
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        pipeline.shutdown().unwrap();
        let seen = seen.take();
        assert_eq!(seen.len() as u64, PRODUCERS * EACH);
        let mut next = vec![0u64; PRODUCERS as usize];
        for (index, &(sequence, value)) in seen.iter().enumerate() {
            assert_eq!(sequence, index as u64);
            let (id, n) = ((value >> 32) as usize, value & 0xffff_ffff);
            assert_eq!(
                n, next[id],
                "producer {id}'s events arrive in its order, once each"
            );
            next[id] += 1;
        }
    }
}

#[test]
fn batches_end_where_the_available_run_ends() {
    let flags = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&flags);
    let mut builder = Builder::new(64, Event::default);
    let out = builder.poller("out", &[]);
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    let mut poller = pipeline.take_poller(out).unwrap();
    let (range, ()) = producer
        .publish_batch(5, |slots| {
            assert_eq!(slots.len(), 5);
            for (i, e) in slots.enumerate() {
                e.value = i as u64;
            }
        })
        .unwrap();
    assert_eq!(range, 0..5);
    let handled = poller
        .poll(64, |e, s, end| sink.lock().unwrap().push((s, e.value, end)))
        .unwrap();
    assert_eq!(handled, 5);
    let flags = flags.lock().unwrap().clone();
    // Only the last event of the run carries end_of_batch.
    assert_eq!(
        flags,
        vec![
            (0, 0, false),
            (1, 1, false),
            (2, 2, false),
            (3, 3, false),
            (4, 4, true)
        ]
    );
    // A limit cuts the batch, and end_of_batch follows the cut.
    producer
        .publish_batch(3, |slots| slots.for_each(|e| e.value = 9))
        .unwrap();
    let mut ends = Vec::new();
    assert_eq!(poller.poll(2, |_, s, end| ends.push((s, end))).unwrap(), 2);
    assert_eq!(poller.poll(2, |_, s, end| ends.push((s, end))).unwrap(), 1);
    assert_eq!(ends, vec![(5, false), (6, true), (7, true)]);
    drop(pipeline);
}

#[test]
fn a_full_ring_is_a_value_not_a_wait() {
    let mut builder = Builder::new(4, Event::default);
    let out = builder.poller("out", &[]);
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    let mut poller = pipeline.take_poller(out).unwrap();
    for value in 0..4 {
        producer.try_publish(|e| e.value = value).unwrap();
    }
    // Four slots, none consumed: the fifth does not fit.
    assert_eq!(
        producer.try_publish(|e| e.value = 4),
        Err(TryPublishError::Full)
    );
    // A batch that does not fit is refused whole.
    assert!(matches!(
        producer.try_publish_batch(2, |_| ()),
        Err(TryPublishError::Full)
    ));
    // Consuming two frees two.
    assert_eq!(poller.poll(2, |_, _, _| ()).unwrap(), 2);
    producer
        .try_publish_batch(2, |s| s.for_each(|e| e.value = 7))
        .unwrap();
    assert_eq!(producer.try_publish(|_| ()), Err(TryPublishError::Full));
    assert_eq!(producer.next_sequence(), 6);

    // The same for several producers.
    let mut builder = Builder::new(2, Event::default);
    let out = builder.poller("out", &[]);
    let (mut producer, mut pipeline2) = builder.build_multi_producer().unwrap();
    let mut poller = pipeline2.take_poller(out).unwrap();
    let mut other = producer.clone();
    producer.try_publish(|e| e.value = 1).unwrap();
    other.try_publish(|e| e.value = 2).unwrap();
    assert_eq!(other.try_publish(|_| ()), Err(TryPublishError::Full));
    let mut values = Vec::new();
    poller.poll(8, |e, _, _| values.push(e.value)).unwrap();
    assert_eq!(values, vec![1, 2]);
    other.try_publish(|_| ()).unwrap();
    drop((pipeline, pipeline2));
}

#[test]
fn a_panicking_stage_stops_the_pipeline_and_is_named() {
    for placement in [
        Placement::ThreadPerStage,
        Placement::Fused,
        Placement::Caller,
    ] {
        let mut builder = Builder::new(8, Event::default)
            .wait_strategy(WaitStrategy::BLOCKING)
            .placement(placement);
        let decode = builder.stage("decode", &[], |_: &Event, _, _| {});
        builder.stage("logic", &[decode], |e: &Event, _, _| {
            assert!(e.value != 13, "unlucky value");
        });
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let driving = drive(&mut pipeline);
        // Keep publishing: the ring (8 slots) fills once logic is dead, and the
        // producer must then get `Halted`, not wait forever.
        let mut outcome = Ok(0);
        for value in 0..1_000 {
            outcome = producer.publish(|e| e.value = value);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(Halted));
        assert!(pipeline.is_halted());
        if let Some(thread) = driving {
            thread.join().unwrap();
        }
        let failure = pipeline.shutdown().unwrap_err();
        assert_eq!(failure.stage, "logic");
        assert!(failure.message.contains("unlucky value"), "{failure}");
        assert_eq!(
            failure.to_string(),
            format!("stage `logic` panicked: {}", failure.message)
        );
    }
}

#[test]
fn shutdown_drains_everything_published() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let mut builder = Builder::new(1024, Event::default).wait_strategy(WaitStrategy::BLOCKING);
    builder.stage("slow", &[], move |_: &Event, _, _| {
        std::thread::sleep(Duration::from_micros(50));
        count.fetch_add(1, Ordering::Relaxed);
    });
    let (mut producer, pipeline) = builder.build_single_producer().unwrap();
    for value in 0..500 {
        producer.publish(|e| e.value = value).unwrap();
    }
    // Most of it is still queued when shutdown starts.
    pipeline.shutdown().unwrap();
    assert_eq!(handled.load(Ordering::Relaxed), 500);
    // Publishing after the stop is refused.
    assert_eq!(producer.publish(|_| ()), Err(Halted));
}

struct Lifecycle {
    log: Arc<Mutex<Vec<String>>>,
}

impl Handler<Event> for Lifecycle {
    fn on_event(&mut self, _: &Event, sequence: Sequence, _: bool) {
        self.log.lock().unwrap().push(format!("event {sequence}"));
    }
    fn on_start(&mut self) {
        self.log.lock().unwrap().push("start".into());
    }
    fn on_shutdown(&mut self) {
        self.log.lock().unwrap().push("shutdown".into());
    }
}

#[test]
fn handlers_see_start_events_and_shutdown_on_their_thread() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut builder = Builder::new(8, Event::default)
        .placement(Placement::Threads(vec![ThreadSpec::new(["h"]).pinned(0)]));
    builder.stage(
        "h",
        &[],
        Lifecycle {
            log: Arc::clone(&log),
        },
    );
    let (mut producer, pipeline) = builder.build_single_producer().unwrap();
    producer.publish(|_| ()).unwrap();
    producer.publish(|_| ()).unwrap();
    pipeline.shutdown().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["start", "event 0", "event 1", "shutdown"]
    );
}

#[test]
fn poller_wake_hook_fires_only_for_a_sleeping_poller() {
    let wakes = Arc::new(AtomicUsize::new(0));
    let mut builder = Builder::new(64, Event::default).wait_strategy(WaitStrategy::BusySpin);
    let out = builder.poller("net", &[]);
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    let mut poller = pipeline.take_poller(out).unwrap();
    assert!(
        pipeline.take_poller(out).is_none(),
        "a poller is taken once"
    );
    assert_eq!(poller.name(), "net");
    let count = Arc::clone(&wakes);
    poller.set_wake_hook(move || {
        count.fetch_add(1, Ordering::SeqCst);
    });

    // Not sleeping: publishing costs no wake-up.
    producer.publish(|_| ()).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
    // Work is pending, so the poller may not sleep.
    assert!(!poller.prepare_wait());
    assert_eq!(poller.poll(64, |_, _, _| ()).unwrap(), 1);

    // Sleeping: the next publish wakes it exactly once.
    assert!(poller.prepare_wait());
    producer.publish(|_| ()).unwrap();
    producer.publish(|_| ()).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(poller.poll(64, |_, _, _| ()).unwrap(), 2);

    // Woken by something else (a socket), the poller polls: the mark clears
    // and later publishes do not call the hook.
    assert!(poller.prepare_wait());
    assert_eq!(poller.poll(64, |_, _, _| ()).unwrap(), 0);
    producer.publish(|_| ()).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    drop(pipeline);
    // After the stop, the last event is still handed out, then `Halted`.
    assert_eq!(poller.poll(64, |_, _, _| ()).unwrap(), 1);
    assert_eq!(poller.poll(64, |_, _, _| ()), Err(Halted));
}

#[test]
fn a_poller_on_its_own_thread_sleeps_and_is_woken() {
    let mut builder = Builder::new(64, Event::default).wait_strategy(WaitStrategy::BLOCKING);
    let decode = builder.stage_mut("decode", &[], |e: &mut Event, _, _| e.decoded = e.value * 2);
    let out = builder.mut_poller("net", &[decode]);
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    let mut poller = pipeline.take_mut_poller(out).unwrap();
    assert!(
        pipeline.take_poller(out).is_none(),
        "an owning poller is not a reading one"
    );
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    poller.set_wake_hook(move || {
        let _ = wake_tx.send(());
    });
    let consumer = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut count = 0;
        while count < 1_000 {
            count += poller
                .poll(16, |e, _, _| total += std::mem::take(&mut e.decoded))
                .unwrap();
            if count < 1_000 && poller.prepare_wait() {
                // Sleep as an epoll thread would, until the hook fires.
                wake_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("woken by the publisher");
            }
        }
        // A poller outlives the pipeline's run: dropping it earlier would
        // stop the pipeline (see the next test).
        (total, poller)
    });
    for value in 0..1_000u64 {
        producer.publish(|e| e.value = value).unwrap();
        if value % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (total, poller) = consumer.join().unwrap();
    assert_eq!(total, 2 * (0..1_000).sum::<u64>());
    pipeline.shutdown().unwrap();
    drop(poller);
}

/// CPU ticks (user + system) of this process's threads whose name starts with `prefix`.
#[cfg(target_os = "linux")]
fn cpu_ticks_of_threads(prefix: &str) -> (usize, u64) {
    let mut threads = 0;
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = entry.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        // Fields after the parenthesised name: state is the 1st, utime the
        // 12th and stime the 13th.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        threads += 1;
    }
    (threads, ticks)
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_blocking_pipeline_uses_no_cpu() {
    let mut builder = Builder::new(64, Event::default)
        .wait_strategy(WaitStrategy::BLOCKING)
        .placement(Placement::ThreadPerStage);
    let a = builder.stage("idle-a", &[], |_: &Event, _, _| {});
    builder.stage("idle-b", &[a], |_: &Event, _, _| {});
    let (mut producer, pipeline) = builder.build_single_producer().unwrap();
    producer.publish(|_| ()).unwrap();
    // Let the threads finish their spin and park.
    std::thread::sleep(Duration::from_millis(100));
    let (threads, before) = cpu_ticks_of_threads("idle-");
    assert_eq!(threads, 2);
    std::thread::sleep(Duration::from_millis(500));
    let (_, after) = cpu_ticks_of_threads("idle-");
    // A spinning thread would gain ~50 ticks (at 100 Hz) in 500 ms.
    assert!(
        after - before <= 1,
        "idle stage threads used {} ticks",
        after - before
    );
    // And they still wake for the next event.
    let woke = Arc::new(AtomicBool::new(false));
    producer.publish(|_| ()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pipeline.consumed() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    woke.store(pipeline.consumed() == 2, Ordering::Relaxed);
    assert!(
        woke.load(Ordering::Relaxed),
        "parked stages woke for the next event"
    );
    pipeline.shutdown().unwrap();
}

/// Many park/wake hand-offs through the real (membarrier or fence) wake-up
/// path: a lost wake-up would leave a stage parked with work waiting, which
/// the watchdog turns into a failure instead of a hang.
#[test]
fn blocking_hand_offs_never_lose_a_wake_up() {
    const COUNT: u64 = 3_000;
    let wait = WaitStrategy::Blocking {
        spin: Duration::ZERO,
        yield_for: Duration::ZERO,
    };
    let mut builder = Builder::new(8, Event::default)
        .wait_strategy(wait)
        .placement(Placement::ThreadPerStage);
    let a = builder.stage("a", &[], |_: &Event, _, _| {});
    builder.stage("b", &[a], |_: &Event, _, _| {});
    let (mut producer, pipeline) = builder.build_single_producer().unwrap();
    for value in 0..COUNT {
        producer.publish(|e| e.value = value).unwrap();
        // Vary the gap so stages park at every point of the protocol.
        match value % 4 {
            0 => std::thread::yield_now(),
            1 => std::thread::sleep(Duration::from_micros(20)),
            _ => {}
        }
        if value % 100 == 99 {
            // Wait for the stages to catch up: every publish must reach them
            // without another publish to wake them.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pipeline.consumed() < value + 1 {
                assert!(
                    Instant::now() < deadline,
                    "stages stuck at {} of {}",
                    pipeline.consumed(),
                    value + 1
                );
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    pipeline.shutdown().unwrap();
}

#[test]
fn dropping_a_poller_stops_the_pipeline_instead_of_hanging_it() {
    let mut builder = Builder::new(4, Event::default);
    let out = builder.poller("net", &[]);
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    let poller = pipeline.take_poller(out).unwrap();
    producer.publish(|_| ()).unwrap();
    drop(poller);
    // The ring (4 slots) would fill and wait for the poller for ever; the
    // producer is told instead.
    let mut outcome = Ok(0);
    for _ in 0..10 {
        outcome = producer.publish(|_| ());
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(Halted));
    let failure = pipeline.shutdown().unwrap_err();
    assert_eq!(failure.stage, "net");
    assert!(failure.message.contains("dropped"), "{failure}");
}

#[test]
fn a_caller_placement_runs_every_stage_on_the_drivers_thread() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let threads = Arc::new(Mutex::new(Vec::new()));
    let mut builder = Builder::new(8, Event::default).placement(Placement::Caller);
    let seen_on = Arc::clone(&threads);
    let decode = builder.stage_mut("decode", &[], move |e: &mut Event, _, _| {
        seen_on.lock().unwrap().push(std::thread::current().id());
        e.decoded = e.value + 1;
    });
    builder.stage(
        "h",
        &[decode],
        Lifecycle {
            log: Arc::clone(&log),
        },
    );
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    let driving = drive(&mut pipeline).expect("a caller placement has a driver");
    let driver_thread = driving.thread().id();
    assert!(pipeline.take_driver().is_none(), "the driver is taken once");
    for value in 0..20 {
        producer.publish(|e| e.value = value).unwrap();
    }
    pipeline.shutdown().unwrap();
    driving.join().unwrap();
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 20);
    assert!(threads.iter().all(|&id| id == driver_thread));
    let log = log.lock().unwrap();
    assert_eq!(log.first().map(String::as_str), Some("start"));
    assert_eq!(log.len(), 22, "start, 20 events, shutdown: {log:?}");
    assert_eq!(log.last().map(String::as_str), Some("shutdown"));
}

#[test]
fn a_driver_nobody_took_is_run_by_shutdown() {
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut builder = Builder::new(64, Event::default).placement(Placement::Caller);
    let first = builder.stage("count", &[], move |_: &Event, _, _| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    builder.stage(
        "h",
        &[first],
        Lifecycle {
            log: Arc::clone(&log),
        },
    );
    let (mut producer, pipeline) = builder.build_single_producer().unwrap();
    for value in 0..50 {
        producer.publish(|e| e.value = value).unwrap();
    }
    assert_eq!(
        handled.load(Ordering::Relaxed),
        0,
        "nothing runs the stages yet"
    );
    pipeline.shutdown().unwrap();
    assert_eq!(handled.load(Ordering::Relaxed), 50);
    assert_eq!(
        log.lock().unwrap().last().map(String::as_str),
        Some("shutdown")
    );
}

#[test]
fn driver_wake_hook_fires_only_when_it_sleeps() {
    let wakes = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let mut builder = Builder::new(64, Event::default).placement(Placement::Caller);
    builder.stage("count", &[], move |_: &Event, _, _| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    let (mut producer, mut pipeline) = builder.build_multi_producer().unwrap();
    let mut driver = pipeline.take_driver().unwrap();
    let woken = Arc::clone(&wakes);
    driver.set_wake_hook(move || {
        woken.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(driver.run(), Ok(false), "nothing published yet");

    // Not sleeping: publishing costs no wake-up, and the driver may not sleep.
    producer.publish(|_| ()).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
    assert!(driver.has_work());
    assert!(!driver.prepare_wait());
    assert_eq!(driver.run(), Ok(true));
    assert_eq!(handled.load(Ordering::Relaxed), 1);

    // Sleeping: a publish from another thread wakes it exactly once.
    assert!(driver.prepare_wait());
    let mut other = producer.clone();
    std::thread::spawn(move || {
        other.publish(|_| ()).unwrap();
        other.publish(|_| ()).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(driver.run(), Ok(true));
    assert_eq!(handled.load(Ordering::Relaxed), 3);

    // Woken by something else (a socket), the thread says so: what it
    // publishes itself then calls no hook.
    assert!(driver.prepare_wait());
    driver.end_wait();
    producer.publish(|_| ()).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(driver.run(), Ok(true));
    assert_eq!(handled.load(Ordering::Relaxed), 4);

    // The stop wakes a sleeping driver too; it then shuts the stages down.
    assert!(driver.prepare_wait());
    let stopping = std::thread::spawn(move || pipeline.shutdown());
    while wakes.load(Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    while driver.run().is_ok() {}
    stopping.join().unwrap().unwrap();
    assert_eq!(driver.run(), Err(Halted), "finished for good");
}

#[test]
fn dropping_a_driver_stops_the_pipeline_instead_of_hanging_it() {
    let mut builder = Builder::new(8, Event::default).placement(Placement::Caller);
    builder.stage("a", &[], |_: &Event, _, _| {});
    builder.stage("b", &[], |_: &Event, _, _| {});
    let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
    drop(pipeline.take_driver().unwrap());
    // Without the failure, the ninth publish would wait for ever.
    let mut outcome = Ok(0);
    for _ in 0..9 {
        outcome = producer.publish(|_| ());
    }
    assert_eq!(outcome, Err(Halted));
    let failure = pipeline.shutdown().unwrap_err();
    assert_eq!(failure.stage, "a+b");
    assert!(failure.message.contains("driver was dropped"), "{failure}");
}
