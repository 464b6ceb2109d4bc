//! Throughput of the four pipeline shapes, for this crate and its baselines,
//! in one run: `cargo bench -p courier-ringbuffer --bench throughput`.
//!
//! Each iteration publishes a burst of 1,000 events and ends when the last
//! stage has handled them all, so the figure is events through the whole
//! shape per second.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use common::{throughput_contenders, Shape};

const BURST: u64 = 1_000;

fn shapes(c: &mut Criterion) {
    for shape in Shape::ALL {
        let mut group = c.benchmark_group(shape.name());
        group.throughput(Throughput::Elements(BURST));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        // The harness's own cost: the loop that would publish, with no ring.
        group.bench_function("baseline/no-ring", |b| {
            b.iter(|| {
                for value in 0..BURST {
                    std::hint::black_box(value);
                }
            })
        });
        for make in throughput_contenders(shape) {
            let mut rig = make();
            let name = rig.name.clone();
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter_custom(|iters| rig.burst(iters * BURST))
            });
            drop(rig.finish());
        }
        group.finish();
    }
}

criterion_group!(benches, shapes);
criterion_main!(benches);
