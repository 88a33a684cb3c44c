//! The poll step every [`AsyncQueue`] operation shares: try the non-blocking
//! operation, follow the wait strategy (spin, yield), then register with the ring's
//! waiter protocol, re-check, and park with the waker thread. An attempt claims and
//! finishes its slot within the call, so nothing is held between polls: that is
//! what makes every operation cancel safe.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::reactor::Key;
use super::AsyncQueue;
use crate::error::{RecvError, SendError, TryRecvError, TrySendError};
use crate::handle::{blocking_recv_error, blocking_send_error, Delivery, Queue};
use crate::ring::{epoch_word, Direction, Readiness, Redelivery, Registration, Scope, Unread};
use crate::wait::{WaitStrategy, STALL_SLICE, STUCK_BOUND, SWEEP_INTERVAL};

/// How long `Spin` and `Yield` spin per poll (`Spin`) before they yield.
const SPIN_PER_POLL: Duration = Duration::from_micros(20);

/// What a poll does after its attempts found the queue empty (or full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Spin (attempting) for this long, then go on to the next phase.
    Spin(Duration),
    /// Yield: `Pending` with the task woken at once.
    Yield,
    /// Register and park with the waker thread.
    Park,
}

/// What [`AsyncQueue::park`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parking {
    /// The re-check says the queue is ready: attempt again.
    Retry,
    /// The task waits (parked with the waker thread, or yielding).
    Pending,
}

/// Retries one poll makes when the re-check after registering says "ready" but the
/// attempt then loses the slot to another participant; then it yields.
const READY_RETRIES: u32 = 64;

/// A registration: the handle counts as a waiter in `direction` and the waker thread
/// holds its waker under `key`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parked {
    pub(super) key: Key,
    pub(super) direction: Direction,
    pub(super) epoch: u32,
}

/// Whether an attempt should also sweep for messages dead consumers held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sweep {
    Skip,
    Due,
}

/// The state of one operation across its polls.
#[derive(Debug, Default)]
pub(super) struct OpState {
    /// When the operation first found the queue empty (or full).
    waiting_since: Option<Instant>,
    /// Start of the current stretch in which the other side's claim is pending.
    pending_since: Option<Instant>,
}

impl OpState {
    fn stalled(&self, now: Instant) -> bool {
        self.pending_since
            .is_some_and(|since| now.saturating_duration_since(since) >= STUCK_BOUND)
    }
}

/// One operation in progress: withdraws its registration however it ends (completed,
/// failed, or dropped while pending).
pub(super) struct Op<'a> {
    queue: &'a mut AsyncQueue,
    state: OpState,
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        self.queue.withdraw();
    }
}

impl<'a> Op<'a> {
    pub(super) fn new(queue: &'a mut AsyncQueue) -> Self {
        // A registration left by a stream poll is not this operation's.
        queue.withdraw();
        Self {
            queue,
            state: OpState::default(),
        }
    }

    pub(super) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        attempt: &mut dyn FnMut(&Queue, Sweep) -> Option<T>,
    ) -> Poll<T> {
        self.queue.poll_op(cx, direction, &mut self.state, attempt)
    }
}

impl AsyncQueue {
    /// One poll of an operation: if a registration is still waiting, stay pending;
    /// else attempt (spinning, then yielding, per the wait strategy), and on empty
    /// (or full) register, re-check, and park with the waker thread. The attempt
    /// claims and finishes its slot within the call, so nothing is held between
    /// polls.
    pub(super) fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        op: &mut OpState,
        attempt: &mut dyn FnMut(&Queue, Sweep) -> Option<T>,
    ) -> Poll<T> {
        if self.still_parked(cx, direction) {
            return Poll::Pending;
        }
        // Spin on the first attempt only: a retry follows a re-check that saw the
        // queue ready, and spinning again would hold the executor's thread longer.
        let mut phase = self.phase(op);
        for _ in 0..READY_RETRIES {
            let spin = match phase {
                Phase::Spin(spin) => spin,
                Phase::Yield | Phase::Park => Duration::ZERO,
            };
            if let Some(done) = self.attempt_spinning(direction, op, spin, attempt) {
                *op = OpState::default();
                return Poll::Ready(done);
            }
            // The wait began when the spin did (the clock is read only now, so
            // that an operation that succeeds at once never reads it).
            op.waiting_since.get_or_insert_with(|| {
                Instant::now()
                    .checked_sub(spin)
                    .unwrap_or_else(Instant::now)
            });
            if phase != Phase::Park {
                phase = self.phase(op);
            }
            match phase {
                // Yield to the executor, and come straight back.
                Phase::Spin(_) | Phase::Yield => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Phase::Park => {
                    if self.park(cx, direction, op) == Parking::Pending {
                        return Poll::Pending;
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether this handle's registration for `direction` is still waiting (then it
    /// will wake `cx`'s waker); if not, it is withdrawn.
    fn still_parked(&mut self, cx: &Context<'_>, direction: Direction) -> bool {
        let Some(parked) = self.parked else {
            return false;
        };
        if parked.direction == direction {
            // Relaxed: a first look only; a moved epoch sends us to the attempt,
            // which reads the ring with its own orderings.
            let moved = epoch_word(self.queue.ring.memory().as_ref(), parked.direction)
                .load(std::sync::atomic::Ordering::Relaxed)
                != parked.epoch;
            if !moved && self.reactor.still_waiting(parked.key, cx.waker()) {
                return true;
            }
        }
        self.withdraw();
        false
    }

    /// Registers as a waiter, re-checks, and parks with the waker thread, unless the
    /// re-check says to try again now ([`Parking::Retry`]). `Pending` also covers a
    /// yield (the task woken at once) while the other side is mid-operation.
    fn park(&mut self, cx: &Context<'_>, direction: Direction, op: &mut OpState) -> Parking {
        let ring = &self.queue.ring;
        let Registration { epoch, readiness } = ring.register_waiter(direction);
        let now = Instant::now();
        let recheck_at = match readiness {
            // Something arrived (or left) between the attempt and the re-check.
            Readiness::Ready => {
                ring.withdraw_waiter(direction);
                op.pending_since = None;
                return Parking::Retry;
            }
            // Nothing in flight: a waker will come. A claim left by a peer that dies
            // meanwhile is announced by no wake-up: the waker thread's tick finds it
            // and wakes one task to sweep.
            Readiness::Idle => {
                op.pending_since = None;
                None
            }
            Readiness::Pending => {
                let since = *op.pending_since.get_or_insert(now);
                if now.saturating_duration_since(since) < STUCK_BOUND {
                    // The other side is mid-operation: yield and come back, as a
                    // blocking waiter spins.
                    ring.withdraw_waiter(direction);
                    cx.waker().wake_by_ref();
                    return Parking::Pending;
                }
                // Stuck behind a claim: a producer sweeps for a dead consumer
                // (consumers sweep in their attempt); both then sleep in short
                // slices, as a blocking waiter does.
                if direction == Direction::NotFull
                    && self.queue.schedule.since_sweep(now) >= STUCK_BOUND
                {
                    self.queue.schedule.swept(now);
                    ring.sweep(Scope::Outstanding, Redelivery::Leave);
                }
                Some(now + STALL_SLICE)
            }
        };
        let key = self
            .reactor
            .register(ring, direction, epoch, cx.waker(), recheck_at);
        self.parked = Some(Parked {
            key,
            direction,
            epoch,
        });
        Parking::Pending
    }

    /// Which phase of the handle's wait strategy `op` is in.
    fn phase(&self, op: &OpState) -> Phase {
        let waited = op
            .waiting_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        match self.queue.wait_strategy() {
            WaitStrategy::Hybrid { spin, .. } if waited < spin => Phase::Spin(spin - waited),
            WaitStrategy::Hybrid { spin, yield_for } if waited < spin + yield_for => Phase::Yield,
            WaitStrategy::Spin => Phase::Spin(SPIN_PER_POLL),
            WaitStrategy::Yield => Phase::Yield,
            _ => Phase::Park,
        }
    }

    /// Attempts until it succeeds or the spin budget is spent; the last attempt
    /// sweeps for dead consumers' messages when one is due (receives only).
    fn attempt_spinning<T>(
        &self,
        direction: Direction,
        op: &OpState,
        spin: Duration,
        attempt: &mut dyn FnMut(&Queue, Sweep) -> Option<T>,
    ) -> Option<T> {
        if let Some(done) = attempt(&self.queue, Sweep::Skip) {
            return Some(done);
        }
        if !spin.is_zero() {
            let started = Instant::now();
            let mut polls = 0u32;
            loop {
                std::hint::spin_loop();
                if let Some(done) = attempt(&self.queue, Sweep::Skip) {
                    return Some(done);
                }
                polls = polls.wrapping_add(1);
                // A clock read is as long as a hand-off: look every 16 polls.
                if polls % 16 == 0 && started.elapsed() >= spin {
                    break;
                }
            }
        }
        let now = Instant::now();
        let since_sweep = self.queue.schedule.since_sweep(now);
        let due = direction == Direction::NotEmpty
            && (since_sweep >= SWEEP_INTERVAL
                || (since_sweep >= STUCK_BOUND
                    && (op.stalled(now) || self.queue.ring.outstanding_claims())));
        if due {
            return attempt(&self.queue, Sweep::Due);
        }
        None
    }

    /// Ends this handle's registration, if it has one.
    pub(super) fn withdraw(&mut self) {
        if let Some(parked) = self.parked.take() {
            self.reactor.cancel(parked.key);
            self.queue.ring.withdraw_waiter(parked.direction);
        }
    }
}

// ---- the attempts ----------------------------------------------------------------

/// One receive into `f`; `Err(f)` when there was nothing to take.
pub(super) fn attempt_recv<R, F: FnOnce(&[u8]) -> R>(
    queue: &Queue,
    f: F,
    sweep: Sweep,
) -> Result<Result<R, RecvError>, F> {
    let received = queue.ring.try_recv_with(f);
    if queue.lost() {
        return Ok(Err(RecvError::Truncated));
    }
    let f = match received {
        Ok(r) => return Ok(Ok(r)),
        Err(Unread::Failed(e)) => return Ok(Err(blocking_recv_error(e))),
        Err(Unread::Empty(f)) => f,
    };
    if sweep == Sweep::Due {
        match queue.take_redelivery() {
            Ok(message) => return Ok(Ok(message.read(f))),
            Err(TryRecvError::Empty) => {}
            Err(e) => return Ok(Err(blocking_recv_error(e))),
        }
        if queue.orphaned() {
            return Ok(Err(RecvError::Orphaned));
        }
    }
    Err(f)
}

/// One guarded receive: a message held in its slot, or `None` when there was none.
pub(super) fn attempt_receive(
    queue: &Queue,
    sweep: Sweep,
) -> Option<Result<Delivery<'_>, RecvError>> {
    let received = queue.ring.try_recv_message();
    if queue.lost() {
        return Some(Err(RecvError::Truncated));
    }
    match received {
        Ok(Some(message)) => return Some(Ok(Delivery::new(message))),
        Ok(None) => {}
        Err(e) => return Some(Err(blocking_recv_error(e))),
    }
    if sweep == Sweep::Due {
        match queue.take_redelivery() {
            Ok(message) => return Some(Ok(Delivery::new(message))),
            Err(TryRecvError::Empty) => {}
            Err(e) => return Some(Err(blocking_recv_error(e))),
        }
        if queue.orphaned() {
            return Some(Err(RecvError::Orphaned));
        }
    }
    None
}

/// The answer of a non-blocking send, as an attempt: `None` on `Full`.
pub(super) fn send_outcome<T>(sent: Result<T, TrySendError>) -> Option<Result<T, SendError>> {
    match sent {
        Ok(done) => Some(Ok(done)),
        Err(TrySendError::Full) => None,
        Err(e) => Some(Err(blocking_send_error(e))),
    }
}
