//! Throughput, latency percentiles and CPU use of the four pipeline shapes,
//! for this crate and its baselines, in one run:
//!
//! ```text
//! cargo bench -p courier-ringbuffer --bench shapes            # everything
//! cargo bench -p courier-ringbuffer --bench shapes -- sleep   # one part
//! ```
//!
//! Parts: `throughput` (bursts as fast as the producers go; every contender
//! in turn, round after round, so that drift on a shared machine hits them
//! alike; medians reported), `tune` (the blocking strategy's spin and yield
//! times against throughput and sleeping-producer latency), `paced` (a
//! producer that spins to publish at a fixed rate), `sleep`
//! (a producer that sleeps between events, as an epoll thread does, at 10,000
//! events/s), `idle` (CPU of a built pipeline with nothing to do). In the
//! throughput part, `CONTENDER=text` keeps the contenders whose name contains
//! `text`. Each event is stamped at publish and recorded at the last stage
//! in an hdrhistogram.
//! CPU is this process's user + system time over the run's wall time, so it
//! counts the producer too.

mod common;

use std::time::{Duration, Instant};

use courier_ringbuffer as ring;
use hdrhistogram::Histogram;

use common::{courier, crossbeam, disruptor, now_ns, Layout, Rig, Shape};

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// This process's CPU time so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat line")
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / TICKS_PER_SECOND
}

enum Pacing {
    /// Busy-wait until each event's time.
    Spin,
    /// Sleep until each event's time.
    Sleep,
}

struct Outcome {
    name: String,
    histogram: Histogram<u64>,
    cores: f64,
    rate_achieved: f64,
}

/// Publishes `count` events at `rate` per second, the first due at `start`.
fn publish_paced(
    producer: &mut dyn common::Publish,
    rate: u64,
    count: u64,
    pacing: &Pacing,
    start: Instant,
) {
    let period = Duration::from_nanos(1_000_000_000 / rate);
    for value in 0..count {
        let due = start + period * value as u32;
        match pacing {
            Pacing::Spin => {
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
            }
            Pacing::Sleep => {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        producer.publish(now_ns(), value);
    }
}

/// Publishes `count` events at `rate` per second from the rig's first
/// producer, then stops the rig.
fn run(mut rig: Rig, rate: u64, count: u64, pacing: &Pacing) -> Outcome {
    // Let the threads start and settle.
    std::thread::sleep(Duration::from_millis(50));
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let core = rig.producer_core;
    let producer = &mut rig.producers[0];
    // Publish from a thread of its own, so it can be pinned without pinning
    // the harness.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Some(id) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            publish_paced(producer.as_mut(), rate, count, pacing, start);
        });
    });
    rig.wait_done(count);
    let wall = start.elapsed().as_secs_f64();
    let cores = (cpu_seconds() - cpu_before) / wall;
    let name = rig.name.clone();
    let histogram = rig.finish();
    Outcome {
        name,
        rate_achieved: count as f64 / wall,
        histogram,
        cores,
    }
}

fn print_header() {
    println!("| shape | contender | events/s | p50 µs | p99 µs | p99.9 µs | max µs | cores |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
}

/// Runs every contender once per round, interleaved, and returns each one's
/// outcomes; on a shared machine, drift then hits all contenders alike.
fn interleaved(
    contenders: &[Box<dyn Fn() -> Rig>],
    rounds: usize,
    rate: u64,
    count: u64,
    pacing: &Pacing,
) -> Vec<Vec<Outcome>> {
    let mut outcomes: Vec<Vec<Outcome>> = contenders.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (index, make) in contenders.iter().enumerate() {
            outcomes[index].push(run(make(), rate, count, pacing));
        }
    }
    outcomes
}

/// The median over rounds of each figure, as one table row.
fn print_median_row(shape: Shape, outcomes: &[Outcome]) {
    let pick = |f: &dyn Fn(&Outcome) -> f64| {
        let mut values: Vec<f64> = outcomes.iter().map(f).collect();
        median(&mut values)
    };
    let quantile = |q: f64| pick(&|o: &Outcome| o.histogram.value_at_quantile(q) as f64 / 1_000.0);
    println!(
        "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
        shape.name(),
        outcomes[0].name,
        pick(&|o: &Outcome| o.rate_achieved),
        quantile(0.50),
        quantile(0.99),
        quantile(0.999),
        pick(&|o: &Outcome| o.histogram.max() as f64 / 1_000.0),
        pick(&|o: &Outcome| o.cores),
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Events/s of one burst, sized to take about `seconds`.
fn burst_rate(rig: &mut Rig, seconds: f64) -> f64 {
    // A short burst to warm up and estimate the rate.
    let probe = 20_000;
    let estimate = probe as f64 / rig.burst(probe).as_secs_f64();
    let count = ((estimate * seconds) as u64).clamp(20_000, 50_000_000);
    count as f64 / rig.burst(count).as_secs_f64()
}

fn throughput(quick: bool, shapes: &[Shape]) {
    let rounds = if quick { 3 } else { 7 };
    let seconds = if quick { 0.1 } else { 0.3 };
    println!("\n### Throughput: bursts of about {seconds} s, {rounds} rounds, median (min–max) in M events/s\n");
    println!("| shape | contender | median | min | max |");
    println!("| --- | --- | ---: | ---: | ---: |");
    // `CONTENDER=text` keeps the contenders whose name contains it (to
    // profile one, say).
    let only = std::env::var("CONTENDER").ok();
    for &shape in shapes {
        let contenders: Vec<_> = common::throughput_contenders(shape)
            .into_iter()
            .filter(|make| {
                only.as_ref().is_none_or(|text| {
                    let rig = make();
                    let keep = rig.name.contains(text.as_str());
                    drop(rig.finish());
                    keep
                })
            })
            .collect();
        let mut rates: Vec<(String, Vec<f64>)> = Vec::new();
        for _ in 0..rounds {
            for (index, make) in contenders.iter().enumerate() {
                let mut rig = make();
                let rate = burst_rate(&mut rig, seconds);
                if rates.len() <= index {
                    rates.push((rig.name.clone(), Vec::new()));
                }
                rates[index].1.push(rate / 1e6);
                drop(rig.finish());
            }
        }
        for (name, mut values) in rates {
            let (min, max) = (
                values.iter().copied().fold(f64::MAX, f64::min),
                values.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "| {} | {name} | {:.2} | {min:.2} | {max:.2} |",
                shape.name(),
                median(&mut values)
            );
        }
    }
}

fn tune(quick: bool) {
    let count = if quick { 5_000 } else { 20_000 };
    let rounds = if quick { 1 } else { 5 };
    println!(
        "\n### Tuning the blocking strategy: 3-stage pipeline, median of {rounds} interleaved rounds\n"
    );
    println!("| spin µs | yield µs | per-stage M events/s | fused M events/s | sleeping 10k/s per-stage p99 µs | cores | fused p99 µs | cores |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let configs = [(0, 0), (2, 0), (0, 5), (1, 5), (2, 8), (0, 10), (5, 20)];
    for (spin, yield_for) in configs {
        let wait = ring::WaitStrategy::Blocking {
            spin: Duration::from_micros(spin),
            yield_for: Duration::from_micros(yield_for),
        };
        let mut cells = Vec::new();
        for layout in [Layout::PerStage, Layout::Fused] {
            let mut rates = Vec::new();
            for _ in 0..rounds {
                let mut rig = courier(Shape::Pipeline3, wait, layout, "blocking");
                rates.push(burst_rate(&mut rig, 0.2) / 1e6);
                drop(rig.finish());
            }
            cells.push(format!("{:.2}", median(&mut rates)));
        }
        let contenders: Vec<Box<dyn Fn() -> Rig>> = [Layout::PerStage, Layout::Fused]
            .into_iter()
            .map(|layout| {
                Box::new(move || courier(Shape::Pipeline3, wait, layout, "blocking"))
                    as Box<dyn Fn() -> Rig>
            })
            .collect();
        for outcomes in interleaved(&contenders, rounds, 10_000, count, &Pacing::Sleep) {
            let mut p99: Vec<f64> = outcomes
                .iter()
                .map(|o| o.histogram.value_at_quantile(0.99) as f64 / 1e3)
                .collect();
            let mut cores: Vec<f64> = outcomes.iter().map(|o| o.cores).collect();
            cells.push(format!("{:.1}", median(&mut p99)));
            cells.push(format!("{:.2}", median(&mut cores)));
        }
        println!("| {spin} | {yield_for} | {} |", cells.join(" | "));
    }
}

/// Prints a latency part's heading and table header.
fn latency_heading(title: &str, rate: u64, pacing: &str, count: u64, rounds: usize) {
    println!(
        "\n### {title}: {rate} events/s, {pacing} between events, {count} events, \
         median of {rounds} interleaved rounds\n"
    );
    print_header();
}

fn paced(quick: bool, shapes: &[Shape]) {
    let rate = 100_000;
    let count = if quick { 20_000 } else { 100_000 };
    let rounds = if quick { 1 } else { 3 };
    latency_heading("Paced producer", rate, "spinning", count, rounds);
    for &shape in shapes {
        let contenders = common::per_event_contenders(shape);
        for outcomes in interleaved(&contenders, rounds, rate, count, &Pacing::Spin) {
            print_median_row(shape, &outcomes);
        }
    }
}

fn sleep(quick: bool, shapes: &[Shape]) {
    let rate = 10_000;
    let count = if quick { 5_000 } else { 20_000 };
    let rounds = if quick { 1 } else { 5 };
    latency_heading("Sleeping producer", rate, "sleeping", count, rounds);
    for &shape in shapes {
        let mut contenders: Vec<Box<dyn Fn() -> Rig>> = Vec::new();
        for layout in [
            Layout::PerStage,
            Layout::Fused,
            Layout::FusedSharedCore,
            Layout::Caller,
        ] {
            if layout == Layout::Fused && matches!(shape, Shape::Spsc | Shape::Mpsc) {
                continue;
            }
            contenders.push(Box::new(move || {
                courier(shape, ring::WaitStrategy::BLOCKING, layout, "blocking")
            }));
        }
        contenders.push(Box::new(move || crossbeam(shape, Layout::PerStage)));
        contenders.push(Box::new(move || {
            disruptor(
                shape,
                disruptor::Sleep::new(Duration::from_micros(100)),
                Layout::PerStage,
                "sleep-100us",
            )
        }));
        contenders.push(Box::new(move || {
            disruptor(shape, disruptor::BusySpin, Layout::PerStage, "busy-spin")
        }));
        for outcomes in interleaved(&contenders, rounds, rate, count, &Pacing::Sleep) {
            print_median_row(shape, &outcomes);
        }
    }
}

fn idle() {
    println!("\n### Idle: a built pipeline with nothing to do, for 2 s\n");
    println!("| shape | contender | cores |");
    println!("| --- | --- | ---: |");
    for shape in [Shape::Pipeline3, Shape::Diamond] {
        for layout in [Layout::PerStage, Layout::Fused] {
            let rig = courier(shape, ring::WaitStrategy::BLOCKING, layout, "blocking");
            std::thread::sleep(Duration::from_millis(100));
            let before = cpu_seconds();
            let start = Instant::now();
            std::thread::sleep(Duration::from_secs(2));
            let cores = (cpu_seconds() - before) / start.elapsed().as_secs_f64();
            println!("| {} | {} | {:.3} |", shape.name(), rig.name, cores);
            drop(rig.finish());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let parts: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // Shape names among the arguments narrow the run to those shapes.
    let mut shapes: Vec<Shape> = Shape::ALL
        .into_iter()
        .filter(|s| parts.contains(&s.name()))
        .collect();
    if shapes.is_empty() {
        shapes = Shape::ALL.to_vec();
    }
    let parts: Vec<&str> = parts
        .into_iter()
        .filter(|p| Shape::ALL.iter().all(|s| s.name() != *p))
        .collect();
    let wants = |part: &str| parts.is_empty() || parts.contains(&part);
    println!(
        "cpu: {}; cores: {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |info| info.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_else(|| "unknown".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("throughput") {
        throughput(quick, &shapes);
    }
    if wants("tune") {
        tune(quick);
    }
    if wants("paced") {
        paced(quick, &shapes);
    }
    if wants("sleep") {
        sleep(quick, &shapes);
    }
    if wants("idle") {
        idle();
    }
}
