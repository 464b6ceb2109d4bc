//! How a thread waits for a sequence, and how publishers wake it.

use std::sync::atomic::Ordering;
use std::sync::{OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::fence::FenceKind;
use crate::sync::{spin_hint, yield_now, Arc, AtomicBool, AtomicUsize, Condvar, Mutex};

/// How a stage (or a producer facing a full ring) waits for work.
///
/// The choice trades CPU for latency. On a machine with a core per stage the
/// spinning strategies give the lowest latency; on a small machine, or a server
/// that must use no CPU when idle, [`WaitStrategy::Blocking`] is the one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Re-check in a tight loop. Lowest latency; one full core per waiting
    /// thread, always.
    BusySpin,
    /// Re-check in a loop with a spin-loop hint (`pause` on x86), which saves
    /// power and lets a hyper-threaded sibling run. Still a full core.
    SpinHint,
    /// Spin for `spin`, then give up the time slice between checks. Cheaper
    /// when threads outnumber cores; never sleeps, so never wholly idle.
    Yield {
        /// How long to spin before yielding.
        spin: Duration,
    },
    /// Spin for `spin`, then yield the time slice for `yield_for` (so a
    /// thread this one waits on can run on this core), then park on a
    /// condition variable until a publisher wakes the thread. An idle
    /// pipeline uses no CPU, and a publisher pays for a wake-up only when
    /// some thread is actually parked.
    Blocking {
        /// How long to spin before yielding; a short spin catches events that
        /// arrive back to back without a system call.
        spin: Duration,
        /// How long to keep yielding before parking.
        yield_for: Duration,
    },
}

impl WaitStrategy {
    /// The default blocking strategy: no timed spin (one check), yield for
    /// up to 5 µs, then park. On a small machine a waiting thread is often
    /// waiting on a thread that needs its core, and yielding gives the core
    /// away where spinning would keep it; on an idle core a yield returns at
    /// once and catches back-to-back events like a spin. The tuning table in
    /// docs/notes/benchmarks-history.md is the measurement behind the
    /// figures.
    pub const BLOCKING: WaitStrategy = WaitStrategy::Blocking {
        spin: Duration::ZERO,
        yield_for: Duration::from_micros(5),
    };
}

impl Default for WaitStrategy {
    /// [`WaitStrategy::BLOCKING`]: an idle pipeline must not burn CPU.
    fn default() -> Self {
        Self::BLOCKING
    }
}

/// A thread the ring does not own (see [`crate::Poller`]) that has said it is
/// about to sleep, and how to wake it.
pub(crate) struct ExternalPark {
    parked: AtomicBool,
    hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl ExternalPark {
    pub(crate) fn new() -> Self {
        Self {
            parked: AtomicBool::new(false),
            hook: OnceLock::new(),
        }
    }

    pub(crate) fn set_hook(&self, hook: Box<dyn Fn() + Send + Sync>) -> bool {
        self.hook.set(hook).is_ok()
    }

    pub(crate) fn has_hook(&self) -> bool {
        self.hook.get().is_some()
    }
}

/// The waiting side of a ring: the strategy, and the bookkeeping that lets a
/// publisher skip the wake-up when nobody sleeps.
///
/// # Invariants
/// - `sleepers` counts the threads inside the parked section of
///   [`Waiter::wait`] plus the external parks whose flag is set.
/// - A waiter increments `sleepers` and issues the heavy side of `fence` *before*
///   its last check of the condition; a publisher stores its cursor and issues
///   the light side *before* it loads `sleepers`. The pair is a full store-load
///   barrier on both sides (two `SeqCst` fences, or a compiler fence against a
///   `membarrier`: see [`crate::fence`]), so either the waiter's check sees the
///   new cursor or the publisher sees the sleeper and wakes it: no wake-up is
///   lost.
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    /// Whether a publisher must look for sleepers at all: false when nothing
    /// can ever sleep (spinning strategies and no external parks).
    signals: bool,
    fence: FenceKind,
    sleepers: CachePadded<AtomicUsize>,
    lock: Mutex<()>,
    wakeup: Condvar,
    parks: Vec<Arc<ExternalPark>>,
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy, parks: Vec<Arc<ExternalPark>>) -> Self {
        let signals = matches!(strategy, WaitStrategy::Blocking { .. }) || !parks.is_empty();
        Self {
            strategy,
            signals,
            fence: FenceKind::detect(),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            lock: Mutex::new(()),
            wakeup: Condvar::new(),
            parks,
        }
    }

    /// Returns once `ready` returns true. `ready` must become true eventually
    /// through some other thread's cursor store followed by [`Waiter::signal`]
    /// (or [`Waiter::wake_all`]), and must include any halt condition.
    pub(crate) fn wait(&self, mut ready: impl FnMut() -> bool) {
        match self.strategy {
            WaitStrategy::BusySpin => {
                while !ready() {
                    #[cfg(loom)]
                    loom::thread::yield_now();
                }
            }
            WaitStrategy::SpinHint => {
                while !ready() {
                    spin_hint();
                }
            }
            WaitStrategy::Yield { spin } => {
                if spin_for(spin, &mut ready) {
                    return;
                }
                while !ready() {
                    yield_now();
                }
            }
            WaitStrategy::Blocking { spin, yield_for } => {
                if spin_for(spin, &mut ready) || yield_until(yield_for, &mut ready) {
                    return;
                }
                self.park(ready);
            }
        }
    }

    #[cold]
    fn park(&self, mut ready: impl FnMut() -> bool) {
        // A poisoned lock only means another waiter panicked while holding
        // it; the `()` it guards cannot be left inconsistent.
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        self.fence.heavy();
        while !ready() {
            guard = self
                .wakeup
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
        drop(guard);
    }

    /// Called by a publisher after it stores a cursor: wakes sleepers, if any.
    /// Costs the light fence and one load when nobody sleeps.
    #[inline]
    pub(crate) fn signal(&self) {
        if !self.signals {
            return;
        }
        self.fence.light();
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_all();
        }
    }

    /// Wakes every parked thread and every parked external poller.
    #[cold]
    pub(crate) fn wake_all(&self) {
        // Taking and dropping the lock orders this wake after any waiter's
        // check: a waiter that counted itself a sleeper holds the lock until
        // it is inside `wait`. Notifying after the lock is dropped lets the
        // woken thread take the lock at once instead of sleeping on it again.
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
        self.wakeup.notify_all();
        for park in &self.parks {
            self.wake_external(park);
        }
    }

    fn wake_external(&self, park: &ExternalPark) {
        if park.parked.swap(false, Ordering::AcqRel) {
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            if let Some(hook) = park.hook.get() {
                hook();
            }
        }
    }

    /// Marks an external poller as about to sleep, then re-checks `has_work`
    /// (after the fence, see the invariants). Returns true when the caller may
    /// sleep, false when work arrived and the mark was withdrawn.
    pub(crate) fn park_external(
        &self,
        park: &ExternalPark,
        has_work: impl FnOnce() -> bool,
    ) -> bool {
        if park.parked.load(Ordering::Relaxed) {
            // Still marked from an earlier call whose wake-up has not come.
            return !has_work();
        }
        park.parked.store(true, Ordering::Relaxed);
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        self.fence.heavy();
        if has_work() {
            self.unpark_external(park);
            return false;
        }
        true
    }

    /// Withdraws an external poller's sleep mark, if it is still set.
    #[inline]
    pub(crate) fn unpark_external(&self, park: &ExternalPark) {
        if park.parked.load(Ordering::Relaxed) && park.parked.swap(false, Ordering::AcqRel) {
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Yields between checks of `ready` for up to `duration`; true if it became
/// ready.
#[inline]
fn yield_until(duration: Duration, ready: &mut impl FnMut() -> bool) -> bool {
    if duration.is_zero() {
        return ready();
    }
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= duration {
            return false;
        }
        yield_now();
    }
}

/// Spins on `ready` for up to `spin`; true if it became ready.
#[inline]
fn spin_for(spin: Duration, ready: &mut impl FnMut() -> bool) -> bool {
    if spin.is_zero() {
        return ready();
    }
    let start = Instant::now();
    loop {
        // Reading the clock costs more than a check, so check a few times
        // between readings.
        for _ in 0..32 {
            if ready() {
                return true;
            }
            spin_hint();
        }
        if start.elapsed() >= spin {
            return false;
        }
    }
}
