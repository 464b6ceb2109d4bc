//! Property tests: random pipelines against a simple model. Whatever the DAG,
//! capacity, placement, producers and batch sizes, every consumer sees every
//! event exactly once, in sequence order, never before its upstream stages,
//! and with the annotation the exclusive root stage wrote.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use courier_ringbuffer::{Builder, Placement, ThreadSpec, WaitStrategy};
use proptest::prelude::*;

#[derive(Default)]
struct Event {
    value: u64,
    stamp: u64,
}

/// What one stage saw: (sequence, value) pairs.
type Log = Arc<Mutex<Vec<(u64, u64)>>>;

const STAMP: u64 = 0x5a5a_5a5a;

#[derive(Debug, Clone)]
struct Shape {
    slot_count: usize,
    /// `deps[i]`: the stages stage `i + 1` runs after (stage 0 follows the producer).
    deps: Vec<Vec<usize>>,
    /// Stage index to thread index.
    threads: Vec<usize>,
    producers: usize,
    /// Sizes of the batches each producer publishes, in order.
    batches: Vec<usize>,
    batch_size_max: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..=5, 0u32..=5).prop_flat_map(|(stage_count, capacity_log2)| {
        let slot_count = 1usize << capacity_log2;
        let deps = (1..stage_count)
            .map(|i| proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 1..=i))
            .collect::<Vec<_>>();
        (
            Just(slot_count),
            deps,
            proptest::collection::vec(0usize..3, stage_count),
            1usize..=3,
            proptest::collection::vec(1usize..=slot_count, 0..60),
            1usize..=8,
        )
            .prop_map(
                |(slot_count, deps, threads, producers, batches, batch_size_max)| Shape {
                    slot_count,
                    deps,
                    threads,
                    producers,
                    batches,
                    batch_size_max,
                },
            )
    })
}

fn placement(shape: &Shape) -> Placement {
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); 3];
    for (stage, &thread) in shape.threads.iter().enumerate() {
        groups[thread].push(format!("s{stage}"));
    }
    Placement::Threads(
        groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(ThreadSpec::new)
            .collect(),
    )
}

fn run(shape: &Shape) -> Result<(), TestCaseError> {
    let stage_count = shape.threads.len();
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..stage_count).map(|_| AtomicU64::new(0)).collect());
    let seen: Vec<Log> = (0..stage_count).map(|_| Arc::default()).collect();
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));

    let mut builder = Builder::new(shape.slot_count, Event::default)
        .wait_strategy(WaitStrategy::BLOCKING)
        .placement(placement(shape))
        .batch_size_max(shape.batch_size_max);
    let mut ids = Vec::new();
    let (p, s) = (Arc::clone(&progress), Arc::clone(&seen[0]));
    ids.push(builder.stage_mut("s0", &[], move |e: &mut Event, seq, _| {
        e.stamp = e.value ^ STAMP;
        s.lock().unwrap().push((seq, e.value));
        p[0].store(seq + 1, Ordering::Release);
    }));
    for stage in 1..stage_count {
        let deps = shape.deps[stage - 1].clone();
        let (p, s, v) = (
            Arc::clone(&progress),
            Arc::clone(&seen[stage]),
            Arc::clone(&violations),
        );
        let after: Vec<_> = deps.iter().map(|&d| ids[d]).collect();
        ids.push(
            builder.stage(&format!("s{stage}"), &after, move |e: &Event, seq, _| {
                for &d in &deps {
                    if p[d].load(Ordering::Acquire) <= seq {
                        v.lock()
                            .unwrap()
                            .push(format!("s{stage} saw {seq} before s{d}"));
                    }
                }
                if e.stamp != e.value ^ STAMP {
                    v.lock()
                        .unwrap()
                        .push(format!("s{stage} saw {seq} without its stamp"));
                }
                s.lock().unwrap().push((seq, e.value));
                p[stage].store(seq + 1, Ordering::Release);
            }),
        );
    }

    // Each producer publishes the batches, tagging values with its id.
    let total: usize = shape.batches.iter().sum::<usize>() * shape.producers;
    if shape.producers == 1 {
        let (mut producer, pipeline) = builder.build_single_producer().unwrap();
        let mut n = 0;
        for &size in &shape.batches {
            producer
                .publish_batch(size, |slots| {
                    for e in slots {
                        e.value = n;
                        n += 1;
                    }
                })
                .unwrap();
        }
        pipeline.shutdown().unwrap();
    } else {
        let (producer, pipeline) = builder.build_multi_producer().unwrap();
        std::thread::scope(|scope| {
            for id in 0..shape.producers as u64 {
                let mut producer = producer.clone();
                let batches = &shape.batches;
                scope.spawn(move || {
                    let mut n = 0;
                    for &size in batches {
                        producer
                            .publish_batch(size, |slots| {
                                for e in slots {
                                    e.value = id << 32 | n;
                                    n += 1;
                                }
                            })
                            .unwrap();
                    }
                });
            }
        });
        pipeline.shutdown().unwrap();
    }

    let violations = violations.lock().unwrap();
    prop_assert!(
        violations.is_empty(),
        "{:?}",
        &violations[..violations.len().min(5)]
    );
    // Stage 0 defines the order; every stage must see exactly that order.
    let reference = seen[0].lock().unwrap().clone();
    prop_assert_eq!(reference.len(), total);
    for (index, &(seq, _)) in reference.iter().enumerate() {
        prop_assert_eq!(seq, index as u64);
    }
    // Per producer, values arrive in publication order.
    let mut next = vec![0u64; shape.producers];
    for &(_, value) in &reference {
        let id = (value >> 32) as usize;
        prop_assert_eq!(value & 0xffff_ffff, next[id]);
        next[id] += 1;
    }
    for (stage, log) in seen.iter().enumerate().skip(1) {
        prop_assert_eq!(&*log.lock().unwrap(), &reference, "stage s{}", stage);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_consumer_sees_every_event_once_in_order_after_its_upstream(shape in shape()) {
        run(&shape)?;
    }
}
