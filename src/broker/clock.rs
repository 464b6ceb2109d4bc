//! Where the broker reads time: the system's clocks, or a manual clock
//! that tests (and simulations of an embedder) move by hand.
//!
//! The broker reads two times. The wall clock stamps each journaled batch
//! (message times, message retention, an account's creation); replay reads
//! the stamps back, never the clock. The monotonic clock drives what is
//! live only: heartbeat timeouts, the frame allowance, login locks. Both
//! come from one [`Clock`], so a test that moves it by an hour sees
//! messages expire and locks run out without waiting.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The broker's source of time: [`Clock::system`] (the default) or
/// [`Clock::manual`]. Clones share one clock.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

/// A clock that moves only when told.
struct Manual {
    /// The instant and wall time it started at.
    start: Instant,
    start_wall_ns: u64,
    /// How far it has been moved.
    elapsed_ns: AtomicU64,
    /// Run after every move: threads that sleep until a deadline wake and
    /// look at the clock again.
    wakers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that starts at the system's time now and stands still until
    /// [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(Manual {
                start: Instant::now(),
                start_wall_ns: system_wall_ns(),
                elapsed_ns: AtomicU64::new(0),
                wakers: Mutex::new(Vec::new()),
            })),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Moves a manual clock forward by `by`, and wakes the threads that
    /// wait on it.
    ///
    /// # Panics
    /// On the system clock, which nobody moves.
    pub fn advance(&self, by: Duration) {
        let manual = self.manual.as_ref().expect("only a manual clock moves");
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        manual.elapsed_ns.fetch_add(by_ns, Ordering::AcqRel);
        for wake in manual.wakers.lock().expect("a waker panicked").iter() {
            wake();
        }
    }

    /// The monotonic time now.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => manual.start + Duration::from_nanos(manual.elapsed()),
        }
    }

    /// The monotonic time now, in milliseconds since a fixed, arbitrary
    /// start (the first call, for the system clock).
    pub fn monotonic_ms(&self) -> u64 {
        match &self.manual {
            None => super::latency::monotonic_ns() / 1_000_000,
            Some(manual) => manual.elapsed() / 1_000_000,
        }
    }

    /// The wall-clock time now, in nanoseconds since the Unix epoch.
    pub fn wall_ns(&self) -> u64 {
        match &self.manual {
            None => system_wall_ns(),
            Some(manual) => manual.start_wall_ns + manual.elapsed(),
        }
    }

    /// Has `wake` run whenever a manual clock moves (the system clock
    /// never jumps, and drops it).
    pub(crate) fn on_advance(&self, wake: impl Fn() + Send + Sync + 'static) {
        if let Some(manual) = &self.manual {
            let mut wakers = manual.wakers.lock().expect("a waker panicked");
            wakers.push(Box::new(wake));
        }
    }
}

impl Manual {
    fn elapsed(&self) -> u64 {
        self.elapsed_ns.load(Ordering::Acquire)
    }
}

fn system_wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system()"),
            Some(manual) => write!(
                f,
                "Clock::manual(+{:?})",
                Duration::from_nanos(manual.elapsed())
            ),
        }
    }
}

/// Two clocks are equal when they are the same clock.
impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        match (&self.manual, &other.manual) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved_and_wakes_its_waiters() {
        let clock = Clock::manual();
        let (now, wall, ms) = (clock.now(), clock.wall_ns(), clock.monotonic_ms());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((clock.now(), clock.wall_ns()), (now, wall));
        let woken = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&woken);
        clock.on_advance(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        clock.clone().advance(Duration::from_secs(90));
        assert_eq!(clock.now() - now, Duration::from_secs(90));
        assert_eq!(clock.wall_ns() - wall, 90_000_000_000);
        assert_eq!(clock.monotonic_ms() - ms, 90_000);
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert_ne!(clock, Clock::manual());
        assert_eq!(Clock::system(), Clock::default());
    }

    #[test]
    fn the_system_clock_moves_by_itself() {
        let clock = Clock::system();
        let (now, wall) = (clock.now(), clock.wall_ns());
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.now() > now && clock.wall_ns() > wall);
        assert!(!clock.is_manual());
    }
}
