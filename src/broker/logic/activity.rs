//! Who was active lately: users who sent anything (any frame, a ping
//! included) in the last minute. Live state only, counted from the time
//! the logic stage reads off the broker's clock; replay leaves it empty.
//!
//! # Invariants
//! - Each user marked `queued` has exactly one entry in `queue`, at a time
//!   no later than its last activity, and `active` counts them; once
//!   [`Activity::active`] has looked at a time, they are exactly the users
//!   whose last activity is within the window before it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::UserId;

/// How long a user counts as active after its last frame.
pub(crate) const ACTIVE_WINDOW_MS: u64 = 60_000;

/// Users' last activity, and how many were active within the window.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Per user (index = id - 1): when it last sent a frame (ms of the
    /// broker's monotonic clock), and whether it has an entry in `queue`.
    users: Vec<(u64, bool)>,
    /// (time, user), oldest on top: when each active user became active,
    /// or its last activity when it was last looked at; who may have left
    /// the window is found on top only.
    queue: BinaryHeap<Reverse<(u64, UserId)>>,
    active: u64,
}

impl Activity {
    /// `user` sent a frame at `now_ms`.
    pub(super) fn touch(&mut self, user: UserId, now_ms: u64) {
        let index = (user.0 - 1) as usize;
        if self.users.len() <= index {
            self.users.resize(index + 1, (0, false));
        }
        let (last, queued) = &mut self.users[index];
        *last = now_ms;
        // One entry a user: a later frame moves its time, not the entry
        // (whoever takes the entry off finds the newer time).
        if !*queued {
            *queued = true;
            self.active += 1;
            self.queue.push(Reverse((now_ms, user)));
        }
    }

    /// How many users were active in the window before `now_ms`: the ones
    /// whose last frame is older leave the count (those active since are
    /// queued again at their last time).
    pub(super) fn active(&mut self, now_ms: u64) -> u64 {
        while let Some(&Reverse((at, user))) = self.queue.peek() {
            if now_ms.saturating_sub(at) < ACTIVE_WINDOW_MS {
                break;
            }
            self.queue.pop();
            let (last, queued) = &mut self.users[(user.0 - 1) as usize];
            if now_ms.saturating_sub(*last) < ACTIVE_WINDOW_MS {
                self.queue.push(Reverse((*last, user)));
            } else {
                *queued = false;
                self.active -= 1;
            }
        }
        self.active
    }

    /// Forgets everyone (a new run: nobody has sent anything yet).
    pub(super) fn clear(&mut self) {
        self.users.clear();
        self.queue.clear();
        self.active = 0;
    }

    /// Checks the module's `# Invariants` at `now_ms`.
    #[cfg(test)]
    pub(super) fn check_invariants(&mut self, now_ms: u64) {
        let active = self.active(now_ms);
        let counted = self
            .users
            .iter()
            .filter(|&&(last, queued)| queued && now_ms.saturating_sub(last) < ACTIVE_WINDOW_MS)
            .count() as u64;
        let queued = self.users.iter().filter(|&&(_, queued)| queued).count() as u64;
        assert_eq!(queued, counted, "every queued user is in the window");
        assert_eq!(active, counted, "users active in the window");
        assert_eq!(self.queue.len() as u64, active, "one entry per active user");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_counts_for_a_minute_after_its_last_frame() {
        let mut activity = Activity::default();
        let (ana, bo) = (UserId(1), UserId(2));
        activity.touch(ana, 1_000);
        activity.touch(bo, 2_000);
        activity.touch(ana, 30_000);
        assert_eq!(activity.active(30_000), 2);
        // bo's minute is up; ana's (from 30 s) is not.
        assert_eq!(activity.active(62_000), 1);
        activity.check_invariants(62_000);
        assert_eq!(activity.active(90_000), 0);
        activity.touch(bo, 95_000);
        assert_eq!(activity.active(95_000), 1);
        activity.check_invariants(95_000);
    }

    #[test]
    fn random_activity_keeps_the_count_exact() {
        let mut activity = Activity::default();
        let mut now = 1;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly frames close together, sometimes a long quiet spell.
            now += if seed.is_multiple_of(50) {
                seed % 90_000
            } else {
                seed % 3_000
            };
            activity.touch(UserId(1 + seed % 40), now);
            if seed.is_multiple_of(5) {
                activity.check_invariants(now);
            }
        }
    }
}
