//! Sleeping without lost wake-ups, for broadcast handles: subscribers wait on the
//! not-empty word for a publish, lossless publishers on the not-full word for the
//! slowest live subscriber to move on. The protocol is the work queue's
//! (`src/ring/wake.rs`): count yourself a waiter (SeqCst), read the epoch, re-check
//! with a SeqCst load of what the waker changes; the waker changes it (SeqCst) and
//! then loads the waiter count (SeqCst).

use std::time::Duration;

use super::ring::{compare_stamp, pos_sub, Broadcast, BroadcastMemory, Freshness, Role, Stamp};
use crate::layout::{waiting, WaitWord};
use crate::ring::Platform;
use crate::sync::{AtomicU32, Ordering};

/// Answer to "would this handle's wait sleep now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The next operation may succeed: try it.
    Ready,
    /// Held up by a claim in flight (a publisher between claim and publish, or one a
    /// lap back): it will finish soon, or its owner is dead and a sweep repairs it.
    /// Don't sleep long.
    Pending,
    /// Nothing in flight: sleeping is safe, a waker will come.
    Idle,
}

impl<M: BroadcastMemory, P: Platform> Broadcast<M, P> {
    /// The wait word this handle sleeps on and its bit for it.
    fn wait_word(&self) -> (&WaitWord, u32) {
        let shared = self.memory.shared();
        match self.role {
            Role::Subscriber => (&shared.not_empty, waiting::NOT_EMPTY),
            Role::Publisher => (&shared.not_full, waiting::NOT_FULL),
        }
    }

    /// The futex word this handle sleeps on.
    pub fn epoch_word(&self) -> &AtomicU32 {
        &self.wait_word().0.epoch
    }

    /// Whether this handle's next operation would have to wait (see [`Readiness`]).
    pub fn readiness(&self) -> Readiness {
        let tail = &self.memory.shared().tail.value;
        match self.role {
            Role::Subscriber => {
                let pos = self.cursor.get();
                let (_, slot) = self.slot_at(pos);
                // Relaxed: Ready only sends the caller to the receive, whose own
                // Acquire reads the slot.
                let stamp = slot.stamp.load(Ordering::Relaxed);
                if matches!(compare_stamp(stamp, pos), Stamp::Published | Stamp::After) {
                    return Readiness::Ready;
                }
                // SeqCst: the load the wake-up argument rests on: a publisher's claim
                // before our registration shows here.
                if tail.load(Ordering::SeqCst) == pos {
                    Readiness::Idle
                } else {
                    Readiness::Pending
                }
            }
            Role::Publisher => {
                // SeqCst: as the claim step's tail load. Stronger than this check
                // needs, so no model fails without it (loom-tests/README.md): a stale
                // tail names a slot already taken again (`After` below: Ready), and
                // the Idle answer rests on the gate scan's SeqCst cursor loads.
                let pos = tail.load(Ordering::SeqCst);
                let (_, slot) = self.slot_at(pos);
                // Relaxed: a hint; the claim step's Acquire decides.
                let stamp = slot.stamp.load(Ordering::Relaxed);
                match compare_stamp(stamp, pos_sub(pos, self.capacity)) {
                    Stamp::Published => {}
                    Stamp::After => return Readiness::Ready,
                    Stamp::Before | Stamp::Writing => return Readiness::Pending,
                }
                // The gate's SeqCst cursor loads are the re-check of the not-full
                // protocol: a subscriber that moved before our registration shows.
                if self.policy == crate::layout::SlowSubscriber::Overwrite
                    || self.gate_open(pos, Freshness::Fresh)
                {
                    Readiness::Ready
                } else {
                    Readiness::Idle
                }
            }
        }
    }

    /// Counts this handle as a waiter, reads the epoch, re-checks. The caller may
    /// sleep on [`epoch_word`](Self::epoch_word) while it holds the returned epoch
    /// only if the readiness is `Idle` (or, bounded, `Pending`), and must call
    /// [`withdraw_waiter`](Self::withdraw_waiter) once after.
    pub fn register_waiter(&self) -> (u32, Readiness) {
        let (word, bit) = self.wait_word();
        // SeqCst: the registration a waker's SeqCst load of `waiters` must see or be
        // seen by.
        word.waiters.fetch_add(1, Ordering::SeqCst);
        // Relaxed: read only by a sweeper after we are dead; set after the increment,
        // so a death in between leaks a count (a spare wake-up), never the reverse.
        self.record().waiting.fetch_or(bit, Ordering::Relaxed);
        // SeqCst (an acquire): a waker's bump we read makes its progress visible.
        // Beyond loom, as the work queue's epoch pair (loom-tests/README.md).
        let epoch = word.epoch.load(Ordering::SeqCst);
        (epoch, self.readiness())
    }

    /// This handle no longer counts as a waiter.
    pub fn withdraw_waiter(&self) {
        let (word, bit) = self.wait_word();
        // Relaxed: as in `register_waiter`.
        self.record().waiting.fetch_and(!bit, Ordering::Relaxed);
        // SeqCst: as the work queue's `withdraw_waiter`: orders a waker's load that
        // reads this decrement before our next increment.
        word.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Registers, re-checks, and sleeps if nothing is in flight (`Idle`), or for at
    /// most `pending_timeout` if something is (`Pending`), for at most `timeout`.
    /// Returns the readiness seen before deciding.
    pub fn park(&self, timeout: Option<Duration>, pending_timeout: Duration) -> Readiness {
        let (epoch, readiness) = self.register_waiter();
        match readiness {
            Readiness::Idle => self.platform.wait(self.epoch_word(), epoch, timeout),
            Readiness::Pending => {
                let bounded = timeout.map_or(pending_timeout, |t| t.min(pending_timeout));
                self.platform.wait(self.epoch_word(), epoch, Some(bounded));
            }
            Readiness::Ready => {}
        }
        self.withdraw_waiter();
        readiness
    }
}
