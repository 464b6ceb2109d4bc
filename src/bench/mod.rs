//! The load generator's parts that do not touch sockets: the open-loop
//! schedule, latency recording corrected for coordinated omission, merging
//! per-thread results, and the reports (summary, JSON, HdrHistogram
//! percentile files, an SVG percentile plot). `courier-bench` drives real
//! connections with them.

mod report;

pub use report::{percentile_svg, write_percentiles, Percentiles, Summary};

use hdrhistogram::Histogram;

/// When each message of an open-loop run is due: message `k` (from 0) at
/// `k / rate` seconds after the start, whatever the server does. Latency is
/// measured from the due time, so a stall that delays sending counts in full
/// (the coordinated-omission correction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rate_per_s: u64,
}

impl Schedule {
    /// A schedule of `rate_per_s` messages per second.
    ///
    /// # Panics
    /// If the rate is zero (a closed loop has no schedule).
    pub fn new(rate_per_s: u64) -> Self {
        assert!(rate_per_s > 0, "an open loop needs a positive rate");
        Self { rate_per_s }
    }

    /// When message `k` is due, in ns after the start.
    pub fn due_ns(&self, k: u64) -> u64 {
        // u128: k * 1e9 overflows u64 after 1.8e10 messages.
        (u128::from(k) * 1_000_000_000 / u128::from(self.rate_per_s)) as u64
    }

    /// How many messages are due by `elapsed_ns` after the start (those
    /// with a due time at or before it).
    pub fn due_by(&self, elapsed_ns: u64) -> u64 {
        (u128::from(elapsed_ns) * u128::from(self.rate_per_s) / 1_000_000_000) as u64 + 1
    }
}

/// Latencies of one kind (delivery, acknowledgement), in ns.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// The longest latency recorded exactly: one minute.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self {
            // 1 ns to a minute with 3 significant digits: bounds checked here.
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl Latencies {
    /// Records a message due at `due_ns` that arrived at `arrived_ns`
    /// (both from the same start). An arrival before its due time (clock
    /// granularity) counts as 1 ns; one past the range as the maximum.
    pub fn record(&mut self, due_ns: u64, arrived_ns: u64) {
        let latency = arrived_ns.saturating_sub(due_ns).max(1);
        self.histogram.saturating_record(latency);
    }

    /// Adds another thread's recordings.
    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        self.histogram
            .add(&other.histogram)
            .expect("histograms of equal bounds merge");
    }

    /// Forgets everything (at the end of the warm-up).
    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at quantile `q` (0..=1), in ns.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }

    /// The largest latency, in ns.
    pub fn max_ns(&self) -> u64 {
        self.histogram.max()
    }

    /// The underlying histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_messages_evenly_and_counts_what_is_due() {
        let schedule = Schedule::new(1000); // one per ms
                                            // Each case: a message index and its due time.
        for (k, due) in [(0, 0), (1, 1_000_000), (1500, 1_500_000_000)] {
            assert_eq!(schedule.due_ns(k), due);
        }
        // Each case: elapsed ns and how many messages are due by then.
        for (elapsed, due) in [(0, 1), (999_999, 1), (1_000_000, 2), (10_000_000, 11)] {
            assert_eq!(schedule.due_by(elapsed), due, "at {elapsed} ns");
        }
        // No overflow for long runs at high rates.
        let fast = Schedule::new(10_000_000);
        assert_eq!(fast.due_ns(100_000_000_000), 10_000_000_000_000);
    }

    #[test]
    fn latency_counts_from_the_due_time_so_a_stall_is_not_hidden() {
        let schedule = Schedule::new(1000);
        let mut latencies = Latencies::default();
        // The server stalls for 100 ms at the start: the 100 messages due
        // meanwhile are all sent and answered at 100 ms. Measured from when
        // they were sent (all at once, at 100 ms) they would look instant;
        // from their due times they waited 100 ms down to 1 ms.
        for k in 0..100 {
            latencies.record(schedule.due_ns(k), 100_000_000);
        }
        assert_eq!(latencies.count(), 100);
        assert!(latencies.max_ns() >= 99_900_000);
        let median = latencies.quantile_ns(0.5);
        assert!((49_000_000..=51_100_000).contains(&median), "{median}");
        // Early arrivals and huge values are clamped, not lost.
        latencies.record(10, 5);
        latencies.record(0, u64::MAX);
        assert_eq!(latencies.count(), 102);
    }

    #[test]
    fn merged_latencies_equal_recording_all_in_one() {
        let (mut a, mut b, mut all) = (
            Latencies::default(),
            Latencies::default(),
            Latencies::default(),
        );
        for value in 1..=1000u64 {
            let target = if value % 3 == 0 { &mut a } else { &mut b };
            target.record(0, value * 1000);
            all.record(0, value * 1000);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.quantile_ns(q), all.quantile_ns(q), "q {q}");
        }
    }
}
