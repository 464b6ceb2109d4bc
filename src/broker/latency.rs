//! How long events take to get through each stage: per-stage latency
//! histograms, from the moment an event is published into the inbound ring
//! to the end of the batch in which a stage finished it.
//!
//! The clock is read once per publish and once per batch a stage ends, not
//! per event; each event then costs one bucket search per measured stage.
//! Stages keep their counts locally and add them to the shared histogram
//! once per batch, so a reader (a metrics scrape) never slows a stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Upper bounds of the histogram's buckets, in nanoseconds (a last bucket
/// catches everything above). Chosen for a chat pipeline: tens of
/// microseconds when idle, milliseconds under group commit or load.
pub const BUCKET_BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

const BUCKETS: usize = BUCKET_BOUNDS_NS.len() + 1;
const _: () = assert!(BUCKETS <= 32, "a bucket's mark is one bit of a u32");

/// Nanoseconds on a monotonic clock since the first call in this process.
pub(crate) fn monotonic_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One stage's histogram, shared with readers.
#[derive(Debug)]
pub(crate) struct StageLatency {
    stage: &'static str,
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl StageLatency {
    pub(crate) fn new(stage: &'static str) -> Arc<Self> {
        Arc::new(Self {
            stage,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        })
    }

    /// Counts one duration measured elsewhere (a group commit's).
    pub(crate) fn record(&self, ns: u64) {
        // Relaxed: counts for readers, ordering nothing.
        self.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A copy of the counts so far.
    pub(crate) fn read(&self) -> LatencyHistogram {
        // Relaxed: counts only grow, and a scrape may see a batch half added.
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        LatencyHistogram {
            stage: self.stage,
            count: counts.iter().sum(),
            counts,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A reading of one stage's histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// The stage: `journal` (appended), `flush` (durable), `logic`
    /// (applied), `fan-out` (its frames handed to the egress).
    pub stage: &'static str,
    /// Events per bucket: `counts[i]` took at most [`BUCKET_BOUNDS_NS`]`[i]`
    /// (and more than the bound before); the last counts the rest.
    pub counts: Vec<u64>,
    /// Events counted.
    pub count: u64,
    /// Their latencies added up, in nanoseconds.
    pub sum_ns: u64,
}

/// A stage's side of its histogram: the publish times of the events of the
/// current batch, and counts not yet added to the shared histogram.
pub(crate) struct LatencyRecorder {
    shared: Arc<StageLatency>,
    batch: Vec<u64>,
    local: [u64; BUCKETS],
    /// Bit `i` set: `local[i]` is not zero. A batch's events mostly fall in
    /// one or two buckets, and only those are added to the shared counts.
    touched: u32,
}

impl LatencyRecorder {
    pub(crate) fn new(shared: Arc<StageLatency>) -> Self {
        Self {
            shared,
            batch: Vec::new(),
            local: [0; BUCKETS],
            touched: 0,
        }
    }

    /// Notes an event of the current batch, published at `published_ns`.
    #[inline]
    pub(crate) fn note(&mut self, published_ns: u64) {
        self.batch.push(published_ns);
    }

    /// The batch is done: counts each of its events as finished now.
    pub(crate) fn end_batch(&mut self) {
        if !self.batch.is_empty() {
            self.end_batch_at(monotonic_ns());
        }
    }

    fn end_batch_at(&mut self, now: u64) {
        let mut sum = 0u64;
        for &published in &self.batch {
            let latency = now.saturating_sub(published);
            sum = sum.wrapping_add(latency);
            let index = bucket(latency);
            self.local[index] += 1;
            self.touched |= 1 << index;
        }
        self.batch.clear();
        while self.touched != 0 {
            let index = self.touched.trailing_zeros() as usize;
            self.touched &= self.touched - 1;
            self.shared.buckets[index].fetch_add(self.local[index], Ordering::Relaxed);
            self.local[index] = 0;
        }
        self.shared.sum_ns.fetch_add(sum, Ordering::Relaxed);
    }
}

/// The bucket of a latency: the first whose bound it does not exceed.
fn bucket(latency_ns: u64) -> usize {
    BUCKET_BOUNDS_NS.partition_point(|&bound| bound < latency_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(10_000), 0);
        assert_eq!(bucket(10_001), 1);
        assert_eq!(bucket(1_000_000), 6);
        assert_eq!(bucket(1_000_000_000), BUCKETS - 2);
        assert_eq!(bucket(1_000_000_001), BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_batch_is_counted_when_it_ends_and_readers_see_it() {
        let shared = StageLatency::new("logic");
        let mut recorder = LatencyRecorder::new(Arc::clone(&shared));
        // Published at 1 s and at 1.2 s; the batch ends at 1.5 s.
        recorder.note(1_000_000_000);
        recorder.note(1_200_000_000);
        assert_eq!(shared.read().count, 0, "nothing before the batch ends");
        recorder.end_batch_at(1_500_000_000);
        let reading = shared.read();
        assert_eq!(reading.stage, "logic");
        assert_eq!(reading.count, 2);
        assert_eq!(reading.counts.len(), BUCKETS);
        // 500 ms and 300 ms: both in the bucket up to 500 ms.
        assert_eq!(reading.counts[bucket(500_000_000)], 2);
        assert_eq!(reading.sum_ns, 800_000_000);
        // An empty batch changes nothing.
        recorder.end_batch();
        assert_eq!(shared.read(), reading);
    }

    #[test]
    fn batches_spread_over_buckets_add_each_count_once() {
        let shared = StageLatency::new("fan-out");
        let mut recorder = LatencyRecorder::new(Arc::clone(&shared));
        let end = 10_000_000_000;
        // 5 µs, 30 µs and 2 s: the first, the third and the last bucket.
        for latency in [5_000, 30_000, 2_000_000_000] {
            recorder.note(end - latency);
        }
        recorder.end_batch_at(end);
        recorder.note(end - 7_000);
        recorder.end_batch_at(end);
        let reading = shared.read();
        let mut expected = vec![0; BUCKETS];
        expected[0] = 2;
        expected[2] = 1;
        expected[BUCKETS - 1] = 1;
        assert_eq!(reading.counts, expected);
        assert_eq!(reading.count, 4);
        assert_eq!(reading.sum_ns, 5_000 + 30_000 + 2_000_000_000 + 7_000);
    }
}
