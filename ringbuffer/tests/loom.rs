//! Model tests of the sequencing protocol, run under loom, which explores the
//! thread interleavings (and weak-memory reorderings) a real machine might
//! produce. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p courier-ringbuffer --release --test loom
//! ```
//!
//! Each model drives the real ring through pollers on loom threads, so the
//! code under test is the code that ships.
#![cfg(loom)]

use std::time::Duration;

use courier_ringbuffer::{Builder, Placement, WaitStrategy};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// Polls until `count` events are handed out, collecting their values.
fn drain(poller: &mut courier_ringbuffer::Poller<u64>, count: usize) -> Vec<u64> {
    let mut values = Vec::new();
    while values.len() < count {
        poller
            .poll(count, |value, _, _| values.push(*value))
            .unwrap();
        if values.len() < count {
            poller.wait();
        }
    }
    values
}

#[test]
fn single_producer_laps_a_one_slot_ring_without_overwriting() {
    loom::model(|| {
        let mut builder = Builder::new(1, || 0u64).wait_strategy(WaitStrategy::BusySpin);
        let out = builder.poller("out", &[]);
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let mut poller = pipeline.take_poller(out).unwrap();
        let consumer = thread::spawn(move || (drain(&mut poller, 2), poller));
        // The second publish must wait for the consumer to free the one slot.
        producer.publish(|value| *value = 1).unwrap();
        producer.publish(|value| *value = 2).unwrap();
        let (values, poller) = consumer.join().unwrap();
        assert_eq!(values, vec![1, 2]);
        // Pollers outlive the pipeline's run (dropping one earlier stops it).
        drop(pipeline);
        drop(poller);
    });
}

#[test]
fn multi_producer_never_exposes_an_unwritten_slot() {
    loom::model(|| {
        let mut builder = Builder::new(2, || 0u64).wait_strategy(WaitStrategy::BusySpin);
        let out = builder.poller("out", &[]);
        let (producer, mut pipeline) = builder.build_multi_producer().unwrap();
        let mut poller = pipeline.take_poller(out).unwrap();
        let producers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|value| {
                let mut producer = producer.clone();
                thread::spawn(move || {
                    producer.publish(|slot| *slot = value).unwrap();
                })
            })
            .collect();
        let mut values = drain(&mut poller, 2);
        for handle in producers {
            handle.join().unwrap();
        }
        // Zero is the factory's value: seeing it means a slot was read before
        // its producer wrote it.
        values.sort_unstable();
        assert_eq!(values, vec![1, 2]);
        drop(pipeline);
    });
}

#[test]
fn multi_producer_runs_are_read_whole_or_one_event_at_a_time() {
    loom::model(|| {
        let mut builder = Builder::new(4, || 0u64).wait_strategy(WaitStrategy::BusySpin);
        let out = builder.poller("out", &[]);
        let (producer, mut pipeline) = builder.build_multi_producer().unwrap();
        let mut poller = pipeline.take_poller(out).unwrap();
        // One producer publishes a run of two (one mark), the other a run of one.
        let mut pair = producer.clone();
        let a = thread::spawn(move || {
            pair.publish_batch(2, |slots| {
                for (slot, value) in slots.zip([1, 2]) {
                    *slot = value;
                }
            })
            .unwrap();
        });
        let mut single = producer.clone();
        let b = thread::spawn(move || {
            single.publish(|slot| *slot = 3).unwrap();
        });
        // Taking one event at a time stops the poller inside the run of two:
        // it must resume there, not take the run's other slot for unpublished.
        let mut values = Vec::new();
        while values.len() < 3 {
            poller.poll(1, |value, _, _| values.push(*value)).unwrap();
            if values.len() < 3 {
                poller.wait();
            }
        }
        a.join().unwrap();
        b.join().unwrap();
        assert!(
            values == [1, 2, 3] || values == [3, 1, 2],
            "runs arrive whole and in claim order: {values:?}"
        );
        drop(pipeline);
    });
}

#[test]
fn a_stage_never_runs_ahead_of_the_stage_it_follows() {
    loom::model(|| {
        let mut builder = Builder::new(2, || (0u64, 0u64)).wait_strategy(WaitStrategy::BusySpin);
        let first = builder.mut_poller("first", &[]);
        let second = builder.poller("second", &[first]);
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let mut first = pipeline.take_mut_poller(first).unwrap();
        let mut second = pipeline.take_poller(second).unwrap();
        let annotate = thread::spawn(move || {
            let mut done = 0;
            while done < 2 {
                done += first.poll(2, |event, _, _| event.1 = event.0 * 10).unwrap();
                if done < 2 {
                    first.wait();
                }
            }
            first
        });
        let read = thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 2 {
                second.poll(2, |event, _, _| seen.push(*event)).unwrap();
                if seen.len() < 2 {
                    second.wait();
                }
            }
            (seen, second)
        });
        producer.publish(|event| event.0 = 1).unwrap();
        producer.publish(|event| event.0 = 2).unwrap();
        let first = annotate.join().unwrap();
        let (seen, second) = read.join().unwrap();
        // The second stage sees each event only after the first annotated it.
        assert_eq!(seen, vec![(1, 10), (2, 20)]);
        drop(pipeline);
        drop((first, second));
    });
}

#[test]
fn a_parked_consumer_is_always_woken() {
    loom::model(|| {
        let mut builder = Builder::new(2, || 0u64).wait_strategy(WaitStrategy::Blocking {
            spin: Duration::ZERO,
            yield_for: Duration::ZERO,
        });
        let out = builder.poller("out", &[]);
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let mut poller = pipeline.take_poller(out).unwrap();
        // The consumer parks on the condition variable when it finds nothing;
        // a lost wake-up would leave it parked forever, which loom reports.
        let consumer = thread::spawn(move || (drain(&mut poller, 1), poller));
        producer.publish(|value| *value = 7).unwrap();
        let (values, poller) = consumer.join().unwrap();
        assert_eq!(values, vec![7]);
        drop(pipeline);
        drop(poller);
    });
}

#[test]
fn a_sleeping_poller_gets_its_wake_hook() {
    loom::model(|| {
        let mut builder = Builder::new(2, || 0u64).wait_strategy(WaitStrategy::BusySpin);
        let out = builder.poller("out", &[]);
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let mut poller = pipeline.take_poller(out).unwrap();
        // The hook stands for a mio::Waker: it wakes a thread that sleeps on
        // a condition variable until it is told to get up.
        let woken = Arc::new((Mutex::new(false), Condvar::new()));
        let alarm = Arc::clone(&woken);
        poller.set_wake_hook(move || {
            *alarm.0.lock().unwrap() = true;
            alarm.1.notify_one();
        });
        let consumer = thread::spawn(move || {
            let mut values = Vec::new();
            loop {
                poller.poll(2, |value, _, _| values.push(*value)).unwrap();
                if !values.is_empty() {
                    return (values, poller);
                }
                if poller.prepare_wait() {
                    // Sleep until the hook fires; if the publisher missed the
                    // mark, this thread sleeps forever and loom reports it.
                    let mut up = woken.0.lock().unwrap();
                    while !*up {
                        up = woken.1.wait(up).unwrap();
                    }
                    *up = false;
                }
            }
        });
        producer.publish(|value| *value = 5).unwrap();
        let (values, poller) = consumer.join().unwrap();
        assert_eq!(values, vec![5]);
        drop(pipeline);
        drop(poller);
    });
}

#[test]
fn a_sleeping_driver_gets_its_wake_hook() {
    loom::model(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let mut builder = Builder::new(2, || 0u64)
            .wait_strategy(WaitStrategy::BusySpin)
            .placement(Placement::Caller);
        builder.stage("sink", &[], move |value: &u64, _, _| {
            sink.lock().unwrap().push(*value)
        });
        let (mut producer, mut pipeline) = builder.build_single_producer().unwrap();
        let mut driver = pipeline.take_driver().unwrap();
        // As for the poller: the hook wakes a thread asleep on a condition
        // variable, standing for an event loop in epoll_wait.
        let woken = Arc::new((Mutex::new(false), Condvar::new()));
        let alarm = Arc::clone(&woken);
        driver.set_wake_hook(move || {
            *alarm.0.lock().unwrap() = true;
            alarm.1.notify_one();
        });
        let handled = Arc::clone(&seen);
        let owner = thread::spawn(move || loop {
            driver.run().unwrap();
            if !handled.lock().unwrap().is_empty() {
                return driver;
            }
            if driver.prepare_wait() {
                // A missed mark leaves this thread asleep for ever, which
                // loom reports.
                let mut up = woken.0.lock().unwrap();
                while !*up {
                    up = woken.1.wait(up).unwrap();
                }
                *up = false;
                driver.end_wait();
            }
        });
        producer.publish(|value| *value = 5).unwrap();
        let driver = owner.join().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![5]);
        // Dropped while the pipeline runs, the driver stops it: the drop of
        // the pipeline after it then has nothing to wait for.
        drop(driver);
        drop(pipeline);
    });
}
