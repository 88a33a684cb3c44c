//! Sleeping without lost wake-ups (module docs of [`crate::ring`]): the readiness
//! check a waiter makes after registering, parking on the futex word, and the
//! waker's side.

use std::time::Duration;

use super::{Platform, Ring, RingMemory};
use crate::layout::{pos_add, pos_diff, waiting, WaitWord, POS_MASK};
use crate::sync::{AtomicU32, Ordering};

/// Answer to "would a wait on this side sleep?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The next operation may succeed: try it.
    Ready,
    /// The slot is claimed by the other side and will be done soon (or its owner is
    /// dead and a sweep will repair it): don't sleep long.
    Pending,
    /// Nothing is in flight: sleeping is safe, a waker will come.
    Idle,
}

/// A waiter's registration (see [`Ring::register_waiter`]): the futex epoch it
/// read after counting itself, and the readiness it saw after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The value of the direction's epoch word the waiter may sleep on.
    pub epoch: u32,
    /// The re-check made after registering.
    pub readiness: Readiness,
}

/// Which way a participant waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A consumer waiting for a message.
    NotEmpty,
    /// A producer waiting for a free slot.
    NotFull,
}

/// Whether a park may sleep while the other side's claim is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Only sleep when nothing is in flight ([`Readiness::Idle`]).
    Spin,
    /// Sleep on `Pending` too: for a producer whose slot is held by a dead consumer,
    /// which only a consumer's sweep can release (and that sweep wakes us).
    Sleep,
}

/// The futex word waiters in `direction` sleep on in `memory`: every waker bumps it.
pub fn epoch_word<M: RingMemory>(memory: &M, direction: Direction) -> &AtomicU32 {
    let shared = memory.shared();
    match direction {
        Direction::NotEmpty => &shared.not_empty.epoch,
        Direction::NotFull => &shared.not_full.epoch,
    }
}

impl<M: RingMemory, P: Platform> Ring<M, P> {
    pub(super) fn wake_if_waiting(&self, word: &WaitWord) {
        // SeqCst: totally ordered with the waiter's SeqCst increment and its SeqCst
        // cursor load (module docs): we see it, or it sees our claim.
        if word.waiters.load(Ordering::SeqCst) != 0 {
            // SeqCst (a release): a waiter that reads this epoch sees our publish.
            word.epoch.fetch_add(1, Ordering::SeqCst);
            self.platform.wake_all(&word.epoch);
        }
    }

    /// Producers: whether `run` slots from the enqueue cursor on are free, judged
    /// by the last of them (consumers release in order, near enough: a hint).
    /// Reads only that slot's line and the cursor, so a producer waiting on a full
    /// ring can poll it without touching the slot a consumer is reading.
    pub fn has_room(&self, run: u64) -> bool {
        // Relaxed, both: a hint for when to try again; the claim step's own
        // Acquire load decides whether a slot is free.
        let tail = self
            .memory
            .shared()
            .enqueue_pos
            .value
            .load(Ordering::Relaxed);
        let last = pos_add(tail, run.saturating_sub(1));
        let (_, slot) = self.slot_at(last);
        pos_diff(slot.sequence.load(Ordering::Relaxed), last) >= 0
    }

    /// Whether a wait in `direction` would sleep now (see [`Readiness`]).
    pub fn readiness(&self, direction: Direction) -> Readiness {
        let shared = self.memory.shared();
        match direction {
            Direction::NotEmpty => {
                // Relaxed: a first look. The wake-up argument (module docs) rests on
                // the SeqCst load of `enqueue_pos` below: a stale head makes the
                // answer Ready or Pending, or Idle only when it equals that tail, and
                // then every position claimed before our registration was taken by a
                // consumer too, while a later claim sees us waiting.
                let head = shared.dequeue_pos.value.load(Ordering::Relaxed);
                let (_, slot) = self.slot_at(head);
                // Relaxed: Ready only sends the caller back to the claim step, whose
                // own Acquire reads the slot; nothing is read on the strength of this.
                let sequence = slot.sequence.load(Ordering::Relaxed);
                if pos_diff(sequence, pos_add(head, 1)) >= 0 {
                    return Readiness::Ready;
                }
                // SeqCst: the load the wake-up argument rests on.
                let tail = shared.enqueue_pos.value.load(Ordering::SeqCst);
                if tail == head {
                    Readiness::Idle
                } else {
                    Readiness::Pending
                }
            }
            Direction::NotFull => {
                // Relaxed: mirror of the above; the argument rests on the SeqCst load
                // of `dequeue_pos` below.
                let tail = shared.enqueue_pos.value.load(Ordering::Relaxed);
                let (_, slot) = self.slot_at(tail);
                // Relaxed: as above, Ready sends the caller to the claim step.
                let sequence = slot.sequence.load(Ordering::Relaxed);
                if pos_diff(sequence, tail) >= 0 {
                    return Readiness::Ready;
                }
                // SeqCst: the load the wake-up argument rests on.
                let head = shared.dequeue_pos.value.load(Ordering::SeqCst);
                let needed = tail.wrapping_sub(self.capacity) & POS_MASK;
                if pos_diff(head, needed) > 0 {
                    Readiness::Pending
                } else {
                    Readiness::Idle
                }
            }
        }
    }

    /// The shared wait word of `direction` and this handle's bit for it.
    fn wait_word(&self, direction: Direction) -> (&WaitWord, u32) {
        let shared = self.memory.shared();
        match direction {
            Direction::NotEmpty => (&shared.not_empty, waiting::NOT_EMPTY),
            Direction::NotFull => (&shared.not_full, waiting::NOT_FULL),
        }
    }

    /// The futex word a waiter in `direction` sleeps on (see [`epoch_word`]).
    pub fn epoch_word(&self, direction: Direction) -> &AtomicU32 {
        epoch_word(&self.memory, direction)
    }

    /// The first half of a wait: counts this handle as a waiter in `direction`,
    /// reads the futex epoch, then re-checks readiness. The caller may sleep on
    /// [`epoch_word`](Self::epoch_word) while it still holds the returned epoch
    /// only if the readiness is [`Readiness::Idle`] (or `Pending`, as
    /// [`Pending::Sleep`] allows), and must call
    /// [`withdraw_waiter`](Self::withdraw_waiter) once, whether it slept or not.
    /// A handle has at most one registration per direction at a time (its record
    /// holds one bit per direction, which a sweep uses if the handle dies).
    /// [`park`](Self::park) is this, a futex wait, and the withdrawal; an async
    /// task registers here and lets the process's waker thread do the sleeping.
    pub fn register_waiter(&self, direction: Direction) -> Registration {
        let (word, bit) = self.wait_word(direction);
        let record = self.record();
        // SeqCst: the registration a waker's SeqCst load of `waiters` must see or be
        // seen by (module docs).
        word.waiters.fetch_add(1, Ordering::SeqCst);
        // Relaxed: read only by a sweeper after we are dead. Set after the increment,
        // so a death in between leaks a count (a spare wake-up), never the reverse.
        record.waiting.fetch_or(bit, Ordering::Relaxed);
        // SeqCst (an acquire): if we read a waker's bump, its publish is visible to
        // the readiness check below.
        let epoch = word.epoch.load(Ordering::SeqCst);
        let readiness = self.readiness(direction);
        Registration { epoch, readiness }
    }

    /// The second half of a wait: this handle no longer counts as a waiter in
    /// `direction` (see [`register_waiter`](Self::register_waiter)).
    pub fn withdraw_waiter(&self, direction: Direction) {
        let (word, bit) = self.wait_word(direction);
        // Relaxed: as in `register_waiter`; cleared before the decrement for the
        // same reason.
        self.record().waiting.fetch_and(!bit, Ordering::Relaxed);
        // SeqCst: a waker's SeqCst load that reads this decrement is thereby ordered
        // before our next SeqCst increment (C++20 coherence-ordered-before), which
        // the wake-up argument needs when we park again. Loom does not derive that
        // from a Relaxed write, and on x86 this is the same locked instruction.
        word.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Registers as a waiter in `direction`, re-checks, and sleeps on the futex word
    /// if (and only if) nothing is in flight (or, with [`Pending::Sleep`], only the
    /// other side's claim is), for at most `timeout` (`None`: until woken). Returns
    /// the readiness seen just before deciding.
    pub fn park(
        &self,
        direction: Direction,
        pending: Pending,
        timeout: Option<Duration>,
    ) -> Readiness {
        let Registration { epoch, readiness } = self.register_waiter(direction);
        if readiness == Readiness::Idle
            || (pending == Pending::Sleep && readiness == Readiness::Pending)
        {
            self.platform
                .wait(self.epoch_word(direction), epoch, timeout);
        }
        self.withdraw_waiter(direction);
        readiness
    }
}
