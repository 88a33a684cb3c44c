//! How blocking calls wait: the [`WaitStrategy`] a user picks, the [`Waiter`] that
//! carries one blocking call through spinning, yielding and parking on the segment's
//! futex, and the [`SweepSchedule`] that decides when a waiting participant checks
//! for dead peers. Works on any [`Ring`]; knows nothing of the handle.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::ring::{Direction, Pending, Platform, Readiness, Redelivery, Ring, RingMemory, Scope};

/// How a blocking call waits.
///
/// ```
/// use std::time::Duration;
/// use shmq::{Options, Queue, WaitStrategy};
/// # let name = "doc-wait-strategy";
/// let mut queue = Queue::create(name, &Options::new(2, 8))?;
/// assert_eq!(queue.wait_strategy(), WaitStrategy::default());
/// queue.set_wait_strategy(WaitStrategy::Hybrid {
///     spin: Duration::from_micros(5),
///     yield_for: Duration::from_micros(20),
/// });
/// assert!(queue.recv_timeout(Duration::from_millis(1)).is_err());
/// # Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Busy-poll: lowest latency, burns a core while waiting. Only sensible with the
    /// peer pinned to another core.
    Spin,
    /// Poll, giving the core away (`sched_yield`) between polls.
    Yield,
    /// Spin for `spin`, then yield for `yield_for`, then sleep on the segment's
    /// futex until woken (the default: 20 µs, 50 µs).
    Hybrid {
        /// Busy-poll budget.
        spin: Duration,
        /// Yield budget after spinning.
        yield_for: Duration,
    },
    /// Sleep on the futex at once.
    Futex,
}

impl Default for WaitStrategy {
    /// `Hybrid` with 20 µs of spinning and 50 µs of yielding.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(
    ///     shmq::WaitStrategy::default(),
    ///     shmq::WaitStrategy::Hybrid {
    ///         spin: Duration::from_micros(20),
    ///         yield_for: Duration::from_micros(50)
    ///     }
    /// );
    /// ```
    fn default() -> Self {
        WaitStrategy::Hybrid {
            spin: Duration::from_micros(20),
            yield_for: Duration::from_micros(50),
        }
    }
}

/// Longest single futex sleep: a sleeper re-checks (and sweeps) at least this often,
/// so a dead peer can never make it sleep forever unnoticed.
pub(crate) const PARK_SLICE: Duration = Duration::from_millis(50);
/// How long a participant waits behind a claimed-but-unfinished slot before it asks
/// whether the claimer is alive.
pub(crate) const STUCK_BOUND: Duration = Duration::from_millis(2);
/// How often an idle consumer looks for messages held by dead consumers.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// For this long a waiter looks at nothing but its slot: reading the cursors or the
/// participant table would pull lines the other side writes on every operation and
/// cost it a coherence miss on its next claim. Stall detection starts after it.
const WATCH_AFTER: Duration = Duration::from_millis(1);
/// Sleep slice for a sleeping strategy stuck behind a live but stalled claimer (a
/// preempted or stopped peer): bounded, because its finish may not wake us.
pub(crate) const STALL_SLICE: Duration = Duration::from_millis(1);

/// When one handle last swept for dead peers, and how many empty non-blocking
/// receives it has made since it last looked at the clock.
#[derive(Debug)]
pub(crate) struct SweepSchedule {
    last_sweep: Cell<Instant>,
    empty_polls: Cell<u32>,
    /// When a waiting call last checked whether the name still points at this
    /// handle's segment.
    last_name_check: Cell<Instant>,
    /// Before this, sweeps leave dead consumers' messages alone (a move to the
    /// dead-letter segment just failed).
    redeliveries_held_until: Cell<Option<Instant>>,
}

/// How often a waiting call checks that the segment's name still points at its
/// segment (a system call).
const NAME_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A producer spinning on a full ring waits for this many free slots (at most an
/// eighth of the ring) before trying again.
const ROOM_RUN: u64 = 32;

/// Polls of [`Ring::has_room`] per spinning wait step, at most (a few µs), before
/// the step ends and the caller tries its send again. Also how many such extra
/// polls may pass between two clock reads of a spinning waiter.
const ROOM_POLLS: u32 = 256;

/// One spinning wait step. A consumer spins once. A producer on a full ring
/// spins until a run of slots is free: polling the one slot it needs would pull
/// that slot's line away from the consumer reading it, every message (measured:
/// the producer-faster regime of `shmq bench --workload throughput`); polling a
/// slot a run further on leaves the consumer alone until the run is free, and the
/// producer then fills it back to back. Returns the spins beyond the first.
fn spin<M: RingMemory, P: Platform>(ring: &Ring<M, P>, direction: Direction) -> u32 {
    let run = (ring.capacity() / 8).min(ROOM_RUN);
    if direction == Direction::NotEmpty || run <= 1 {
        crate::sync::spin_hint();
        return 0;
    }
    for spins in 0..ROOM_POLLS {
        if ring.has_room(run) {
            return spins.saturating_sub(1);
        }
        crate::sync::spin_hint();
    }
    ROOM_POLLS - 1
}

impl SweepSchedule {
    pub(crate) fn new() -> Self {
        Self {
            last_sweep: Cell::new(Instant::now()),
            empty_polls: Cell::new(0),
            last_name_check: Cell::new(Instant::now()),
            redeliveries_held_until: Cell::new(None),
        }
    }

    /// Makes sweeps leave dead consumers' messages alone until `until`.
    pub(crate) fn hold_redeliveries_until(&self, until: Instant) {
        self.redeliveries_held_until.set(Some(until));
    }

    /// Whether a sweep at `now` may take a dead consumer's message over.
    pub(crate) fn redeliveries_allowed(&self, now: Instant) -> bool {
        self.redeliveries_held_until
            .get()
            .is_none_or(|until| now >= until)
    }

    /// Whether a waiting call should check its segment's name now (at most every
    /// [`NAME_CHECK_INTERVAL`]); records the check.
    pub(crate) fn name_check_due(&self) -> bool {
        let now = Instant::now();
        if now.saturating_duration_since(self.last_name_check.get()) < NAME_CHECK_INTERVAL {
            return false;
        }
        self.last_name_check.set(now);
        true
    }

    /// Records that a sweep starts now.
    pub(crate) fn swept(&self, now: Instant) {
        self.last_sweep.set(now);
    }

    pub(crate) fn since_sweep(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_sweep.get())
    }

    /// After an empty non-blocking receive: whether to sweep for dead consumers'
    /// messages now. A cheap rate limit: the clock is read every 256 empty polls.
    pub(crate) fn empty_poll_due(&self) -> bool {
        let polls = self.empty_polls.get().wrapping_add(1);
        self.empty_polls.set(polls);
        polls % 256 == 0 && self.since_sweep(Instant::now()) >= SWEEP_INTERVAL
    }
}

/// What a wait step says about the blocking call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Try the operation again.
    Again,
    /// The deadline has passed.
    TimedOut,
}

/// The state of one blocking call's wait: which phase of the strategy it is in, and
/// how long it has been stuck behind an unfinished claim.
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    started: Option<Instant>,
    polls: u32,
    /// Extra spins since the last clock read (a producer waiting for room spins
    /// many times per step): the clock is read once they reach [`ROOM_POLLS`] too.
    spun: u32,
    /// Start of the current stretch in which the other side's claim is pending.
    pending_since: Option<Instant>,
    /// A sweep found the slot held by a dead consumer: sleep rather than spin.
    blocked_on_dead: bool,
    /// Hybrid: the spin budget is spent (every poll reads the clock from then on).
    spin_over: bool,
}

/// What the current wait step does, decided from the strategy and the clock.
enum Step {
    /// Spin or yield once, per the strategy.
    Poll,
    /// Park on the futex in bounded slices.
    Park,
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy, deadline: Option<Instant>) -> Self {
        Self {
            strategy,
            deadline,
            started: None,
            polls: 0,
            spun: 0,
            pending_since: None,
            blocked_on_dead: false,
            spin_over: false,
        }
    }

    fn sleeps(&self) -> bool {
        matches!(
            self.strategy,
            WaitStrategy::Futex | WaitStrategy::Hybrid { .. }
        )
    }

    fn stalled(&self, now: Instant) -> bool {
        self.pending_since
            .is_some_and(|since| now - since >= STUCK_BOUND)
    }

    /// Consumers: whether to sweep now (for dead producers' holes and dead
    /// consumers' messages). Spinners read the clock every 256 polls (Hybrid: every
    /// 16 while in its spin budget); the other strategies pay a system call or a
    /// sleep per poll anyway.
    pub(crate) fn due_for_sweep<M: RingMemory, P: Platform>(
        &mut self,
        ring: &Ring<M, P>,
        schedule: &SweepSchedule,
    ) -> bool {
        let skip = match self.strategy {
            WaitStrategy::Spin => self.polls % 256 != 255,
            WaitStrategy::Hybrid { .. } => !self.spin_over && self.polls % 16 != 15,
            WaitStrategy::Yield | WaitStrategy::Futex => false,
        };
        if skip {
            return false;
        }
        let now = Instant::now();
        if self
            .started
            .is_none_or(|started| now - started < WATCH_AFTER)
        {
            return false;
        }
        let since_sweep = schedule.since_sweep(now);
        let suspicious = self.stalled(now) || ring.outstanding_claims();
        (suspicious && since_sweep >= STUCK_BOUND) || since_sweep >= SWEEP_INTERVAL
    }

    /// Spinning polls read the clock only now and then: a clock read is as long as a
    /// hand-off, and a poll that takes it makes the waiter late by as much.
    fn clock(&mut self) -> Option<Instant> {
        self.polls = self.polls.wrapping_add(1);
        let check = match self.strategy {
            WaitStrategy::Spin => self.polls % 256 == 0,
            WaitStrategy::Hybrid { .. } if !self.spin_over => self.polls % 16 == 1,
            _ => true,
        } || self.spun >= ROOM_POLLS;
        if check {
            self.spun = 0;
        }
        check.then(Instant::now)
    }

    /// Which phase of the strategy this step is in (`None`: spin, no clock read).
    fn phase(&mut self, now: Option<Instant>, started: Instant) -> Option<Step> {
        let sleep_phase = match self.strategy {
            WaitStrategy::Spin | WaitStrategy::Yield => false,
            WaitStrategy::Futex => true,
            WaitStrategy::Hybrid { spin, yield_for } => {
                // Between clock reads, still within the spin budget.
                let waited = now? - started;
                if waited < spin {
                    return None;
                }
                self.spin_over = true;
                waited >= spin + yield_for
            }
        };
        Some(if sleep_phase { Step::Park } else { Step::Poll })
    }

    /// One wait step in `direction`.
    pub(crate) fn wait<M: RingMemory, P: Platform>(
        &mut self,
        ring: &Ring<M, P>,
        schedule: &SweepSchedule,
        direction: Direction,
    ) -> Wait {
        let now = self.clock();
        if let (Some(now), Some(deadline)) = (now, self.deadline) {
            if now >= deadline {
                return Wait::TimedOut;
            }
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let Some(step) = self.phase(now, started) else {
            self.spun += spin(ring, direction);
            return Wait::Again;
        };
        let stalled = match now {
            Some(now) if now - started >= WATCH_AFTER => {
                self.track_pending(ring, schedule, direction, now);
                self.stalled(now)
            }
            _ => false,
        };
        if self.blocked_on_dead {
            // The slot we need belongs to a dead consumer; a live consumer's sweep
            // releases it (and wakes us). Sleep in bounded slices meanwhile.
            ring.park(direction, Pending::Sleep, Some(self.slice()));
            self.blocked_on_dead = false;
        } else if stalled && self.sleeps() {
            // A live peer sits on its claim (preempted, stopped): don't burn a core.
            ring.park(
                direction,
                Pending::Sleep,
                Some(self.slice().min(STALL_SLICE)),
            );
        } else {
            self.poll_or_park(ring, direction, step);
        }
        Wait::Again
    }

    fn poll_or_park<M: RingMemory, P: Platform>(
        &mut self,
        ring: &Ring<M, P>,
        direction: Direction,
        step: Step,
    ) {
        match step {
            Step::Poll if self.strategy == WaitStrategy::Spin => {
                self.spun += spin(ring, direction);
            }
            Step::Poll => crate::sync::yield_now(),
            Step::Park => {
                // A full slice, unless some claim is outstanding (a peer
                // mid-operation, or a dead one that a sweep after waking must
                // repair), which no wake-up may announce.
                let mut slice = self.slice();
                if ring.outstanding_claims() {
                    slice = slice.min(STALL_SLICE);
                }
                if ring.park(direction, Pending::Spin, Some(slice)) == Readiness::Pending {
                    crate::sync::yield_now();
                }
            }
        }
    }

    /// The next sleep's length: a park slice, cut short by the deadline. Only the
    /// sleeping branches read the clock for it: a spinning poll must stay a few
    /// loads long, or every hand-off waits out a clock read.
    fn slice(&self) -> Duration {
        match self.deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(PARK_SLICE),
            None => PARK_SLICE,
        }
    }

    /// Notes whether the other side's claim is pending; a producer stuck past
    /// [`STUCK_BOUND`] sweeps (at most once per bound). Consumers sweep from their
    /// receive loop instead, where they can take a dead consumer's message.
    fn track_pending<M: RingMemory, P: Platform>(
        &mut self,
        ring: &Ring<M, P>,
        schedule: &SweepSchedule,
        direction: Direction,
        now: Instant,
    ) {
        if ring.readiness(direction) != Readiness::Pending {
            self.pending_since = None;
            return;
        }
        self.pending_since.get_or_insert(now);
        if direction == Direction::NotEmpty
            || !self.stalled(now)
            || schedule.since_sweep(now) < STUCK_BOUND
        {
            return;
        }
        schedule.swept(now);
        let outcome = ring.sweep(Scope::Outstanding, Redelivery::Leave);
        self.blocked_on_dead = outcome.dead_consumer_pending;
    }
}
