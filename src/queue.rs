//! [`Queue`]: the handle users hold. Non-blocking and blocking send/receive, wait
//! strategies, and the timing side of crash recovery (when to sweep).

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, RecvError, SendError, TryRecvError, TrySendError};
use crate::platform;
use crate::ring::{register, Direction, Readiness, Ring};
use crate::segment::{snapshot, Options, Segment, SegmentInfo, ShmPlatform};

/// What [`Queue::list`] returns: each segment's name with its snapshot, or the error
/// opening it gave (a segment of another layout version, a corrupt one, ...).
pub type Listing = Vec<(String, Result<SegmentInfo, Error>)>;

/// How a blocking call waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    fn default() -> Self {
        WaitStrategy::Hybrid {
            spin: Duration::from_micros(20),
            yield_for: Duration::from_micros(50),
        }
    }
}

/// Longest single futex sleep: a sleeper re-checks (and sweeps) at least this often,
/// so a dead peer can never make it sleep forever unnoticed.
pub const PARK_SLICE: Duration = Duration::from_millis(50);
/// How long a participant waits behind a claimed-but-unfinished slot before it asks
/// whether the claimer is alive.
pub const STUCK_BOUND: Duration = Duration::from_millis(2);
/// How often an idle consumer looks for messages held by dead consumers.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// A handle on a named shared-memory queue: any number of handles, in any number of
/// processes, may send and receive on the same segment.
///
/// A `Queue` is `Send` but not `Sync`: it owns a participant record that only one
/// thread may write. For another thread, [`Queue::try_clone`] a second handle.
/// Dropping a handle never removes the segment; [`Queue::unlink`] does.
pub struct Queue {
    ring: Ring<Arc<Segment>, ShmPlatform>,
    wait: WaitStrategy,
    /// When this handle last ran a recovery sweep.
    last_sweep: Cell<Instant>,
    /// Empty polls since the last clock read (try_recv's cheap rate limit).
    empty_polls: Cell<u32>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name())
            .field("participant", &self.ring.participant_index())
            .field("wait", &self.wait)
            .finish()
    }
}

enum Loop {
    Again,
    Stop,
}

impl Queue {
    /// Creates the segment `name` (an error if it exists) and attaches to it.
    pub fn create(name: &str, options: &Options) -> Result<Self, Error> {
        let (segment, fd) = Segment::create(name, options)?;
        Self::attach(segment, fd)
    }

    /// Attaches to the existing segment `name`.
    pub fn open(name: &str) -> Result<Self, Error> {
        let (segment, fd) = Segment::open(name)?;
        Self::attach(segment, fd)
    }

    /// Opens `name`, creating it with `options` if it does not exist. An existing
    /// segment keeps its own capacity and message size.
    pub fn open_or_create(name: &str, options: &Options) -> Result<Self, Error> {
        loop {
            match Self::create(name, options) {
                Err(Error::AlreadyExists { .. }) => {}
                other => return other,
            }
            match Self::open(name) {
                // Removed between our two calls: try creating again.
                Err(Error::NotFound { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Removes the name `name`. Handles already attached keep working; the memory is
    /// freed when the last one is dropped.
    pub fn unlink(name: &str) -> Result<(), Error> {
        Segment::unlink(name)
    }

    /// A snapshot of segment `name` without attaching to it.
    pub fn inspect(name: &str) -> Result<SegmentInfo, Error> {
        let (segment, fd) = Segment::open(name)?;
        Ok(snapshot(&segment, &fd, None))
    }

    /// Every shmq segment on this host, with its state or the error opening it gave.
    pub fn list() -> Result<Listing, Error> {
        let names =
            platform::list_shm(crate::segment::OBJECT_PREFIX).map_err(|source| Error::Io {
                operation: "listing /dev/shm",
                name: String::new(),
                source,
            })?;
        Ok(names
            .into_iter()
            .map(|name| {
                let info = Self::inspect(&name);
                (name, info)
            })
            .collect())
    }

    /// Removes segment `name` only if no live process is attached to it (dead
    /// participants do not count). Returns the snapshot it decided on.
    pub fn remove_if_unused(name: &str) -> Result<Result<SegmentInfo, SegmentInfo>, Error> {
        let info = Self::inspect(name)?;
        if info.live() > 0 {
            return Ok(Err(info));
        }
        Self::unlink(name)?;
        Ok(Ok(info))
    }

    fn attach(segment: Arc<Segment>, fd: OwnedFd) -> Result<Self, Error> {
        let pid = platform::pid();
        let start_time = platform::process_start_time(pid);
        let try_register = |fd: &OwnedFd| {
            register(
                &segment,
                pid,
                start_time,
                |i| {
                    platform::ofd_try_lock(fd, platform::participant_lock_offset(i))
                        .unwrap_or(false)
                },
                |i| platform::ofd_unlock(fd, platform::participant_lock_offset(i)),
            )
        };
        let mut index = try_register(&fd);
        if index.is_none() {
            // The table may be full of dead participants' records: free them through
            // a record-less view (with its own descriptor), then retry once.
            let observer_fd = platform::reopen(&fd).map_err(|source| Error::Io {
                operation: "reopening the segment",
                name: segment.name().to_owned(),
                source,
            })?;
            Ring::observer(Arc::clone(&segment), ShmPlatform::new(observer_fd))
                .sweep(true, None::<fn(&[u8])>);
            index = try_register(&fd);
        }
        Self::finish_attach(segment, fd, index)
    }

    fn finish_attach(
        segment: Arc<Segment>,
        fd: OwnedFd,
        index: Option<u64>,
    ) -> Result<Self, Error> {
        let Some(index) = index else {
            return Err(Error::ParticipantTableFull {
                name: segment.name().to_owned(),
                max: segment.identity().max_participants,
            });
        };
        let queue = Self {
            ring: Ring::new(segment, ShmPlatform::new(fd), index),
            wait: WaitStrategy::default(),
            last_sweep: Cell::new(Instant::now()),
            empty_polls: Cell::new(0),
        };
        // Repair what dead participants left and free their records, so a restarted
        // process starts from a clean table.
        queue.ring.sweep(true, None::<fn(&[u8])>);
        Ok(queue)
    }

    /// A second handle on the same segment (its own participant record and its own
    /// liveness lock), for another thread. Works even after the name was unlinked.
    pub fn try_clone(&self) -> Result<Self, Error> {
        let segment = Arc::clone(self.ring.memory());
        let fd = platform::reopen(self.ring.platform().fd()).map_err(|source| Error::Io {
            operation: "reopening the segment",
            name: segment.name().to_owned(),
            source,
        })?;
        let mut queue = Self::attach(segment, fd)?;
        queue.wait = self.wait;
        Ok(queue)
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.ring.memory().name()
    }

    /// Capacity in messages.
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.ring.max_message_size()
    }

    /// How blocking calls on this handle wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Sets how blocking calls on this handle wait.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// A snapshot of this segment's state.
    pub fn info(&self) -> SegmentInfo {
        snapshot(
            self.ring.memory(),
            self.ring.platform().fd(),
            Some(self.ring.participant_index()),
        )
    }

    /// Runs a full recovery sweep now (normally automatic): repairs slots of dead
    /// producers and frees dead participants' records. A dead consumer's message is
    /// left for the next receive, which delivers it.
    pub fn sweep(&self) {
        self.ring.sweep(true, None::<fn(&[u8])>);
    }

    // ---- non-blocking ----------------------------------------------------------

    /// Enqueues `message` if there is room. No system call unless a consumer sleeps.
    pub fn try_send(&self, message: &[u8]) -> Result<(), TrySendError> {
        self.ring.try_send(message)
    }

    /// Dequeues the next message and lends its bytes to `f` in place (zero copy).
    /// The slot is released when `f` returns (or panics).
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, TryRecvError> {
        let mut f = Some(f);
        let mut call = |bytes: &[u8]| f.take().map(|f| f(bytes));
        match self.ring.try_recv_with(&mut call) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(TryRecvError::Empty), // unreachable: the ring calls f once
            Err(TryRecvError::Empty) => {
                // Cheap rate limit: look at the clock every 256 empty polls only.
                let polls = self.empty_polls.get().wrapping_add(1);
                self.empty_polls.set(polls);
                if polls % 256 == 0 && self.last_sweep.get().elapsed() >= SWEEP_INTERVAL {
                    if let Some(result) = self.sweep_delivering(&mut call) {
                        return result.and_then(|r| r.ok_or(TryRecvError::Empty));
                    }
                }
                Err(TryRecvError::Empty)
            }
            Err(e) => Err(e),
        }
    }

    /// Dequeues the next message into `buffer` (which must hold
    /// [`max_message_size`](Self::max_message_size) bytes) and returns its length.
    pub fn try_recv_into(&self, buffer: &mut [u8]) -> Result<usize, TryRecvError> {
        check_buffer(buffer, self.max_message_size())?;
        self.try_recv_with(|bytes| copy_into(buffer, bytes))
    }

    /// Dequeues the next message into a new `Vec` (allocates; see
    /// [`try_recv_with`](Self::try_recv_with) for the zero-copy form).
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        self.try_recv_with(<[u8]>::to_vec)
    }

    fn sweep_delivering<R>(
        &self,
        deliver: &mut impl FnMut(&[u8]) -> Option<R>,
    ) -> Option<Result<Option<R>, TryRecvError>> {
        self.last_sweep.set(Instant::now());
        self.ring.sweep(false, Some(deliver)).redelivered
    }

    // ---- blocking ----------------------------------------------------------------

    /// Enqueues `message`, waiting while the queue is full.
    pub fn send(&self, message: &[u8]) -> Result<(), SendError> {
        self.send_deadline(message, None)
    }

    /// Enqueues `message`, waiting at most `timeout` for room.
    pub fn send_timeout(&self, message: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_deadline(message, Instant::now().checked_add(timeout))
    }

    /// Enqueues `message`, waiting for room until `deadline` (`None`: forever).
    pub fn send_deadline(
        &self,
        message: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        match self.ring.try_send(message) {
            Ok(()) => return Ok(()),
            Err(TrySendError::TooLarge { len, max }) => {
                return Err(SendError::TooLarge { len, max })
            }
            Err(TrySendError::Full) => {}
        }
        let mut waiter = Waiter::new(self.wait, deadline);
        loop {
            match self.ring.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::TooLarge { len, max }) => {
                    return Err(SendError::TooLarge { len, max })
                }
                Err(TrySendError::Full) => {}
            }
            if let Loop::Stop = waiter.wait(self, Direction::NotFull) {
                return Err(SendError::Timeout);
            }
        }
    }

    /// Receives the next message, waiting while the queue is empty, and lends its
    /// bytes to `f` in place.
    pub fn recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        self.recv_with_deadline(f, None)
    }

    /// Receives into `buffer` (at least the maximum message size), waiting while
    /// empty. Returns the message length.
    pub fn recv_into(&self, buffer: &mut [u8]) -> Result<usize, RecvError> {
        check_buffer(buffer, self.max_message_size()).map_err(TryRecvError::into_recv_error)?;
        self.recv_with(|bytes| copy_into(buffer, bytes))
    }

    /// Receives the next message into a new `Vec`, waiting while empty.
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(<[u8]>::to_vec)
    }

    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_with_deadline(<[u8]>::to_vec, Instant::now().checked_add(timeout))
    }

    /// Receives into `buffer`, waiting at most `timeout`.
    pub fn recv_into_timeout(
        &self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        check_buffer(buffer, self.max_message_size()).map_err(TryRecvError::into_recv_error)?;
        self.recv_with_deadline(
            |bytes| copy_into(buffer, bytes),
            Instant::now().checked_add(timeout),
        )
    }

    /// Receives the next message, lending it to `f`, waiting until `deadline`
    /// (`None`: forever).
    pub fn recv_with_deadline<R>(
        &self,
        f: impl FnOnce(&[u8]) -> R,
        deadline: Option<Instant>,
    ) -> Result<R, RecvError> {
        let mut f = Some(f);
        let mut call = |bytes: &[u8]| f.take().map(|f| f(bytes));
        let mut waiter = Waiter::new(self.wait, deadline);
        loop {
            match self.ring.try_recv_with(&mut call) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) | Err(TryRecvError::Empty) => {}
                Err(e) => return Err(e.into_recv_error()),
            }
            if waiter.due_for_sweep(self) {
                match self.sweep_delivering(&mut call) {
                    Some(Ok(Some(r))) => return Ok(r),
                    Some(Err(e)) if e != TryRecvError::Empty => return Err(e.into_recv_error()),
                    _ => {}
                }
            }
            if let Loop::Stop = waiter.wait(self, Direction::NotEmpty) {
                return Err(RecvError::Timeout);
            }
        }
    }
}

fn check_buffer(buffer: &[u8], max: u64) -> Result<(), TryRecvError> {
    if (buffer.len() as u64) < max {
        Err(TryRecvError::BufferTooSmall {
            len: buffer.len(),
            max,
        })
    } else {
        Ok(())
    }
}

fn copy_into(buffer: &mut [u8], bytes: &[u8]) -> usize {
    crate::copy::copy_prefix(buffer, bytes);
    bytes.len()
}

/// The state of one blocking call's wait: which phase of the strategy it is in, and
/// how long it has been stuck behind an unfinished claim.
struct Waiter {
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    started: Option<Instant>,
    polls: u32,
    /// Start of the current stretch in which the other side's claim is pending.
    pending_since: Option<Instant>,
    /// A sweep found the slot held by a dead consumer: sleep rather than spin.
    blocked_on_dead: bool,
    /// Hybrid: the spin budget is spent (every poll reads the clock from then on).
    spin_over: bool,
}

/// For this long a waiter looks at nothing but its slot: reading the cursors or the
/// participant table would pull lines the other side writes on every operation and
/// cost it a coherence miss on its next claim. Stall detection starts after it.
const WATCH_AFTER: Duration = Duration::from_millis(1);

/// How long to sleep when nothing is in flight for us: a full slice, unless some
/// claim is outstanding (a peer mid-operation, or a dead one that a sweep after
/// waking must repair), which no wake-up may announce.
fn parking_slice(queue: &Queue, slice: Duration) -> Duration {
    if queue.ring.outstanding_claims() {
        slice.min(STALL_SLICE)
    } else {
        slice
    }
}

/// Sleep slice for a sleeping strategy stuck behind a live but stalled claimer (a
/// preempted or stopped peer): bounded, because its finish may not wake us.
const STALL_SLICE: Duration = Duration::from_millis(1);

impl Waiter {
    fn new(strategy: WaitStrategy, deadline: Option<Instant>) -> Self {
        Self {
            strategy,
            deadline,
            started: None,
            polls: 0,
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
    fn due_for_sweep(&mut self, queue: &Queue) -> bool {
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
        let since_sweep = now - queue.last_sweep.get();
        let suspicious = self.stalled(now) || queue.ring.outstanding_claims();
        (suspicious && since_sweep >= STUCK_BOUND) || since_sweep >= SWEEP_INTERVAL
    }

    /// One wait step. `Stop` when the deadline has passed.
    fn wait(&mut self, queue: &Queue, direction: Direction) -> Loop {
        self.polls = self.polls.wrapping_add(1);
        // Spinning polls read the clock only now and then: a clock read is as long
        // as a hand-off, and a poll that takes it makes the waiter late by as much.
        let check_clock = match self.strategy {
            WaitStrategy::Spin => self.polls % 256 == 0,
            WaitStrategy::Hybrid { .. } if !self.spin_over => self.polls % 16 == 1,
            _ => true,
        };
        let now = if check_clock {
            Some(Instant::now())
        } else {
            None
        };
        if let (Some(now), Some(deadline)) = (now, self.deadline) {
            if now >= deadline {
                return Loop::Stop;
            }
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let sleep_phase = match self.strategy {
            WaitStrategy::Spin | WaitStrategy::Yield => false,
            WaitStrategy::Futex => true,
            WaitStrategy::Hybrid { spin, yield_for } => {
                let Some(now) = now else {
                    // Between clock reads, still within the spin budget.
                    crate::sync::spin_hint();
                    return Loop::Again;
                };
                let waited = now - started;
                if waited < spin {
                    crate::sync::spin_hint();
                    return Loop::Again;
                }
                self.spin_over = true;
                waited >= spin + yield_for
            }
        };
        let stalled = match now {
            Some(now) if now - started >= WATCH_AFTER => {
                self.track_pending(queue, direction, now);
                self.stalled(now)
            }
            _ => false,
        };
        // Only the sleeping branches read the clock for it: a spinning poll must stay
        // a few loads long, or every hand-off waits out a clock read.
        let slice = || match self.deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(PARK_SLICE),
            None => PARK_SLICE,
        };
        if self.blocked_on_dead {
            // The slot we need belongs to a dead consumer; a live consumer's sweep
            // releases it (and wakes us). Sleep in bounded slices meanwhile.
            queue.ring.park_forced(direction, Some(slice()));
            self.blocked_on_dead = false;
        } else if stalled && self.sleeps() {
            // A live peer sits on its claim (preempted, stopped): don't burn a core.
            queue
                .ring
                .park_forced(direction, Some(slice().min(STALL_SLICE)));
        } else if !sleep_phase {
            if self.strategy == WaitStrategy::Spin {
                crate::sync::spin_hint();
            } else {
                crate::sync::yield_now();
            }
        } else if queue
            .ring
            .park(direction, Some(parking_slice(queue, slice())))
            == Readiness::Pending
        {
            crate::sync::yield_now();
        }
        Loop::Again
    }

    /// Notes whether the other side's claim is pending; a producer stuck past
    /// [`STUCK_BOUND`] sweeps (at most once per bound). Consumers sweep from their
    /// receive loop instead, where they can take a dead consumer's message.
    fn track_pending(&mut self, queue: &Queue, direction: Direction, now: Instant) {
        if queue.ring.readiness(direction) != Readiness::Pending {
            self.pending_since = None;
            return;
        }
        self.pending_since.get_or_insert(now);
        if direction == Direction::NotEmpty
            || !self.stalled(now)
            || now - queue.last_sweep.get() < STUCK_BOUND
        {
            return;
        }
        queue.last_sweep.set(now);
        let outcome = queue.ring.sweep(false, None::<fn(&[u8])>);
        self.blocked_on_dead = outcome.dead_consumer_pending;
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.ring.unregister();
        platform::ofd_unlock(
            self.ring.platform().fd(),
            platform::participant_lock_offset(self.ring.participant_index()),
        );
    }
}
