//! An asymmetric fence for the wake-up protocol: cheap on the side that runs
//! per event (publishers), expensive on the side that runs before a sleep
//! (waiters).
//!
//! The protocol in [`crate::wait`] needs a store-load barrier on both sides: a
//! publisher stores its cursor and then loads the sleeper count, a waiter
//! stores the sleeper count and then loads the cursor. A `SeqCst` fence on the
//! publisher's side costs a full store-buffer drain on every publish, which
//! measured several times the rest of the publish. On Linux the waiter can
//! instead issue `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes
//! every running thread of the process execute a full barrier; the publisher
//! then needs only a compiler fence. Where `membarrier` is missing (other
//! systems, old kernels, a seccomp filter), both sides use `SeqCst` fences.

use std::sync::atomic::Ordering;
#[cfg(all(target_os = "linux", not(loom)))]
use std::sync::OnceLock;

use crate::sync::fence;

/// Which barrier pair this process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FenceKind {
    /// `SeqCst` fences on both sides.
    Symmetric,
    /// A compiler fence for publishers, `membarrier` for waiters.
    #[cfg_attr(loom, allow(dead_code))] // loom models the symmetric pair only
    Asymmetric,
}

impl FenceKind {
    /// The best pair this process can use, decided once.
    pub(crate) fn detect() -> Self {
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            static KIND: OnceLock<FenceKind> = OnceLock::new();
            *KIND.get_or_init(|| {
                if membarrier::register() {
                    FenceKind::Asymmetric
                } else {
                    FenceKind::Symmetric
                }
            })
        }
        #[cfg(not(all(target_os = "linux", not(loom))))]
        FenceKind::Symmetric
    }

    /// The publisher's side: after its cursor store, before its sleeper load.
    #[inline]
    pub(crate) fn light(self) {
        match self {
            FenceKind::Symmetric => fence(Ordering::SeqCst),
            FenceKind::Asymmetric => std::sync::atomic::compiler_fence(Ordering::SeqCst),
        }
    }

    /// The waiter's side: after its sleeper store, before its cursor load.
    pub(crate) fn heavy(self) {
        match self {
            FenceKind::Symmetric => fence(Ordering::SeqCst),
            FenceKind::Asymmetric => {
                #[cfg(all(target_os = "linux", not(loom)))]
                membarrier::expedited();
                #[cfg(not(all(target_os = "linux", not(loom))))]
                unreachable!("asymmetric fences are only detected on Linux");
            }
        }
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
mod membarrier {
    // From linux/membarrier.h.
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    /// Registers this process for private expedited barriers; false if the
    /// kernel refuses or lacks them.
    pub(super) fn register() -> bool {
        // SAFETY: membarrier takes no pointers; a refused or unknown command
        // returns -1 and changes nothing.
        let result = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        };
        result == 0
    }

    /// A full memory barrier on every running thread of this process.
    pub(super) fn expedited() {
        // SAFETY: as in `register`; the process registered before any
        // waiter could get here (`FenceKind::detect` is Asymmetric only after
        // a successful registration).
        let result = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        };
        // Registration succeeded, so the command is supported; a failure here
        // would break the wake-up protocol silently, so it must not pass.
        assert_eq!(result, 0, "membarrier failed after registration");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn detection_is_stable_and_both_sides_run() {
        let kind = FenceKind::detect();
        assert_eq!(kind, FenceKind::detect());
        // Both sides must be callable in whichever mode this machine has.
        kind.light();
        kind.heavy();
        #[cfg(target_os = "linux")]
        println!("fence kind on this machine: {kind:?}");
    }
}
