//! [`AsyncQueue`]: the async handle (cargo feature `tokio`). Every operation is a
//! non-blocking attempt on the wrapped [`Queue`]; when it finds the queue empty (or
//! full) the task registers with the process's waker thread (`reactor.rs`) and
//! returns `Pending`, so an awaiting task costs no CPU and holds no slot.

use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{Error, RecvError, SendError, TryRecvError, TrySendError};
use crate::handle::{blocking_recv_error, blocking_send_error, Delivery, Queue};
use crate::options::Options;
use crate::ring::{
    epoch_word, Direction, Readiness, Redelivery, Registration, Scope, Unread, Unsent,
};
use crate::wait::{WaitStrategy, STALL_SLICE, STUCK_BOUND, SWEEP_INTERVAL};

mod reactor;
mod stream;

use reactor::{Key, Reactor};

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

/// Retries one poll makes when the re-check after registering says "ready" but the
/// attempt then loses the slot to another participant; then it yields.
const READY_RETRIES: u32 = 64;

/// An async handle on a shared-memory queue, for tokio or any other executor
/// (cargo feature `tokio`).
///
/// It wraps a [`Queue`] (one participant record) and borrows itself mutably for
/// each operation, like tokio's channel receivers: give each task its own handle
/// ([`try_clone`](Self::try_clone)). An awaiting task is woken by one background
/// thread per process (named `shmq-waker`), which sleeps on the futex words of
/// every segment some task awaits; a task awaiting an empty queue uses no CPU.
/// Blocking [`Queue`]s and `AsyncQueue`s mix freely on one segment, across
/// processes, and a process killed with `kill -9` while its tasks await is
/// recovered like any other participant.
///
/// **Cancellation.** Every future here claims a slot only in the poll that
/// completes with it: a receive future dropped before it completes has taken no
/// message, and a send future dropped before it completes has published nothing.
/// Timeouts are tokio's own `tokio::time::timeout` around any of them.
///
/// ```
/// use shmq::{AsyncQueue, Options};
/// # let name = "doc-async-queue";
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut producer = AsyncQueue::create(name, &Options::new(64, 128))?;
/// let mut consumer = AsyncQueue::open(name)?;
/// let receiver = tokio::spawn(async move { consumer.recv().await });
/// producer.send(b"one lemonade").await?;
/// assert_eq!(receiver.await.unwrap()?, b"one lemonade");
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct AsyncQueue {
    queue: Queue,
    reactor: &'static Reactor,
    /// This handle's registration with the waker thread, while a future of it waits.
    parked: Option<Parked>,
    /// The [`Stream`](futures_core::Stream) / [`Sink`](futures_sink::Sink) side's
    /// operation state, kept between their polls.
    stream_op: OpState,
    /// A message the `Sink` accepted while the queue was full, sent by its next
    /// flush.
    unsent: Option<Vec<u8>>,
}

impl std::fmt::Debug for AsyncQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncQueue")
            .field("queue", &self.queue)
            .field("parked", &self.parked.is_some())
            .finish()
    }
}

/// A registration: the handle counts as a waiter in `direction` and the waker thread
/// holds its waker under `key`.
#[derive(Clone, Copy, Debug)]
struct Parked {
    key: Key,
    direction: Direction,
    epoch: u32,
}

/// Whether an attempt should also sweep for messages dead consumers held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sweep {
    Skip,
    Due,
}

/// The state of one operation across its polls.
#[derive(Debug, Default)]
struct OpState {
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

impl AsyncQueue {
    /// Wraps `queue`, starting the process's waker thread if it is not running yet.
    ///
    /// ```
    /// # let name = "doc-async-new";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let queue = shmq::AsyncQueue::new(queue)?;
    /// assert_eq!(queue.get_ref().capacity(), 2);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn new(queue: Queue) -> Result<Self, Error> {
        let reactor = reactor::reactor().map_err(|source| Error::Io {
            operation: "starting the shmq-waker thread (async handles need it)",
            name: queue.name().to_owned(),
            source,
        })?;
        Ok(Self {
            queue,
            reactor,
            parked: None,
            stream_op: OpState::default(),
            unsent: None,
        })
    }

    /// [`Queue::create`], as an async handle.
    ///
    /// ```
    /// # let name = "doc-async-create";
    /// let queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn create(name: &str, options: &Options) -> Result<Self, Error> {
        Self::new(Queue::create(name, options)?)
    }

    /// [`Queue::open`], as an async handle.
    ///
    /// ```
    /// # let name = "doc-async-open";
    /// let created = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let opened = shmq::AsyncQueue::open(name)?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::new(Queue::open(name)?)
    }

    /// [`Queue::open_or_create`], as an async handle.
    ///
    /// ```
    /// # let name = "doc-async-open-or-create";
    /// let queue = shmq::AsyncQueue::open_or_create(name, &shmq::Options::new(2, 8))?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open_or_create(name: &str, options: &Options) -> Result<Self, Error> {
        Self::new(Queue::open_or_create(name, options)?)
    }

    /// A second handle on the same segment (its own participant record), for
    /// another task.
    ///
    /// ```
    /// # let name = "doc-async-try-clone";
    /// let queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// let for_another_task = queue.try_clone()?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self, Error> {
        Self::new(self.queue.try_clone()?)
    }

    /// The blocking handle inside, for its non-blocking calls and its accessors.
    ///
    /// ```
    /// # let name = "doc-async-get-ref";
    /// let queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.get_ref().try_send(b"now")?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_ref(&self) -> &Queue {
        &self.queue
    }

    /// The blocking handle inside, given back.
    ///
    /// ```
    /// # let name = "doc-async-into-inner";
    /// let queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// let blocking: shmq::Queue = queue.into_inner();
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn into_inner(mut self) -> Queue {
        self.withdraw();
        let mut this = std::mem::ManuallyDrop::new(self);
        drop(this.unsent.take());
        // SAFETY: `this` is never used or dropped again; `queue` is read out once,
        // and the other fields (a `&'static`, a `Duration`, `parked` and `unsent`
        // now `None`, plain state) need no drop.
        unsafe { std::ptr::read(&this.queue) }
    }

    /// How this handle's operations wait (see [`set_wait_strategy`](Self::set_wait_strategy)).
    ///
    /// ```
    /// # let name = "doc-async-wait-strategy";
    /// let queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.wait_strategy(), shmq::WaitStrategy::default());
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.queue.wait_strategy()
    }

    /// Sets how this handle's operations wait on an empty (or full) queue, in the
    /// terms of the blocking strategies: `Hybrid { spin, yield_for }` (the default,
    /// 20 µs and 50 µs) spins in the poll for up to `spin`, then returns `Pending`
    /// with the task woken again at once (letting the executor run other tasks)
    /// until `spin + yield_for` has passed since the wait began, then parks with the
    /// waker thread; `Futex` parks at once; `Spin` and `Yield` never park (`Spin`
    /// spins up to 20 µs per poll): they hold the executor's thread busy and suit
    /// only a runtime dedicated to the queue. The yield phase is what lets two
    /// tasks in a ping-pong catch each other's replies without a wake-up: it must
    /// outlast a wake-up of the peer.
    ///
    /// ```
    /// # let name = "doc-async-set-wait-strategy";
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.set_wait_strategy(shmq::WaitStrategy::Futex);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.queue.set_wait_strategy(wait);
    }
}

/// One operation in progress: withdraws its registration however it ends (completed,
/// failed, or dropped while pending).
struct Op<'a> {
    queue: &'a mut AsyncQueue,
    state: OpState,
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        self.queue.withdraw();
    }
}

impl<'a> Op<'a> {
    fn new(queue: &'a mut AsyncQueue) -> Self {
        // A registration left by a stream poll is not this operation's.
        queue.withdraw();
        Self {
            queue,
            state: OpState::default(),
        }
    }

    fn poll<T>(
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
    /// else attempt (spinning up to the budget), and on empty (or full) register,
    /// re-check, and park with the waker thread. The attempt claims and finishes its
    /// slot within the call, so nothing is held between polls.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        op: &mut OpState,
        attempt: &mut dyn FnMut(&Queue, Sweep) -> Option<T>,
    ) -> Poll<T> {
        if self
            .parked
            .is_some_and(|parked| parked.direction != direction)
        {
            self.withdraw();
        }
        if let Some(parked) = self.parked {
            // Relaxed: a first look only; a moved epoch sends us to the attempt,
            // which reads the ring with its own orderings.
            let moved = epoch_word(self.queue.ring.memory().as_ref(), parked.direction)
                .load(std::sync::atomic::Ordering::Relaxed)
                != parked.epoch;
            if !moved && self.reactor.still_waiting(parked.key, cx.waker()) {
                return Poll::Pending;
            }
            self.withdraw();
        }
        // Spin on the first attempt only: a retry follows a re-check that saw the
        // queue ready, and spinning again would hold the executor's thread longer.
        let mut phase = self.phase(op);
        for _ in 0..READY_RETRIES {
            let spin = match phase {
                Phase::Spin(spin) => spin,
                Phase::Yield | Phase::Park => Duration::ZERO,
            };
            let attempted = self.attempt_spinning(direction, op, spin, attempt);
            if let Some(done) = attempted {
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
            if phase != Phase::Park {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let ring = &self.queue.ring;
            let Registration { epoch, readiness } = ring.register_waiter(direction);
            let now = Instant::now();
            let recheck_at = match readiness {
                // Something arrived (or left) between the attempt and the re-check.
                Readiness::Ready => {
                    ring.withdraw_waiter(direction);
                    op.pending_since = None;
                    continue;
                }
                // Nothing in flight: a waker will come. A claim left by a peer that
                // dies meanwhile is announced by no wake-up: the waker thread's tick
                // finds it and wakes one task to sweep.
                Readiness::Idle => {
                    op.pending_since = None;
                    None
                }
                Readiness::Pending => {
                    let since = *op.pending_since.get_or_insert(now);
                    if now.saturating_duration_since(since) < STUCK_BOUND {
                        // The other side is mid-operation: yield and come back,
                        // as a blocking waiter spins.
                        ring.withdraw_waiter(direction);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
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
            return Poll::Pending;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
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
    fn withdraw(&mut self) {
        if let Some(parked) = self.parked.take() {
            self.reactor.cancel(parked.key);
            self.queue.ring.withdraw_waiter(parked.direction);
        }
    }
}

impl Drop for AsyncQueue {
    fn drop(&mut self) {
        self.withdraw();
    }
}

// ---- the attempts ----------------------------------------------------------------

/// One receive into `f`; `Err(f)` when there was nothing to take.
fn attempt_recv<R, F: FnOnce(&[u8]) -> R>(
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
fn attempt_receive(queue: &Queue, sweep: Sweep) -> Option<Result<Delivery<'_>, RecvError>> {
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
fn send_outcome<T>(sent: Result<T, TrySendError>) -> Option<Result<T, SendError>> {
    match sent {
        Ok(done) => Some(Ok(done)),
        Err(TrySendError::Full) => None,
        Err(e) => Some(Err(blocking_send_error(e))),
    }
}

// ---- the operations --------------------------------------------------------------

impl AsyncQueue {
    /// Receives the next message and lends its bytes to `f` in place (zero copy);
    /// the slot is released when `f` returns. Waits while the queue is empty.
    ///
    /// **Cancel safe**: the message is claimed, read and released within the poll
    /// that completes; a future dropped before that has taken nothing.
    ///
    /// ```
    /// # let name = "doc-async-recv-with";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc").await?;
    /// assert_eq!(queue.recv_with(|bytes| bytes.len()).await?, 3);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        let mut f = Some(f);
        let mut op = Op::new(self);
        poll_fn(|cx| {
            op.poll(
                cx,
                Direction::NotEmpty,
                &mut |queue, sweep| match attempt_recv(queue, f.take()?, sweep) {
                    Ok(done) => Some(done),
                    Err(unused) => {
                        f = Some(unused);
                        None
                    }
                },
            )
        })
        .await
    }

    /// Receives the next message into a new `Vec`, waiting while the queue is empty.
    ///
    /// **Cancel safe** (see [`recv_with`](Self::recv_with)).
    ///
    /// ```
    /// # let name = "doc-async-recv";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc").await?;
    /// assert_eq!(queue.recv().await?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(<[u8]>::to_vec).await
    }

    /// Receives the next message into `buffer` (at least the maximum message size,
    /// else `BufferTooSmall` and nothing is consumed) and returns its length.
    ///
    /// **Cancel safe**: `buffer` is written only in the poll that completes.
    ///
    /// ```
    /// # let name = "doc-async-recv-into";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc").await?;
    /// let mut buffer = [0u8; 8];
    /// let len = queue.recv_into(&mut buffer).await?;
    /// assert_eq!(&buffer[..len], b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_into(&mut self, buffer: &mut [u8]) -> Result<usize, RecvError> {
        let max = self.queue.max_message_size();
        if (buffer.len() as u64) < max {
            return Err(RecvError::BufferTooSmall {
                len: buffer.len(),
                max,
            });
        }
        self.recv_with(|bytes| {
            crate::copy::copy_prefix(buffer, bytes);
            bytes.len()
        })
        .await
    }

    /// Receives the next message and holds it in its slot as a [`Delivery`]
    /// (acknowledged when dropped, or abandoned for another delivery), waiting
    /// while the queue is empty.
    ///
    /// **Cancel safe**: the slot is claimed only in the poll that completes with the
    /// `Delivery`; from then on the `Delivery` owns it (a process that dies holding
    /// it has the message delivered again).
    ///
    /// ```
    /// # let name = "doc-async-receive";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"job").await?;
    /// let delivery = queue.receive().await?;
    /// assert_eq!(&*delivery, b"job");
    /// assert_eq!(delivery.deliveries(), 1);
    /// # drop(delivery);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn receive(&mut self) -> Result<Delivery<'_>, RecvError> {
        let mut op = Op::new(self);
        let delivery = poll_fn(|cx| {
            op.poll(cx, Direction::NotEmpty, &mut |queue, sweep| {
                attempt_receive(queue, sweep).map(|outcome| {
                    // SAFETY: lengthens the delivery's borrow of `queue` (the handle's
                    // `Queue`, reached through `op`'s reborrow of `self`) to `self`'s
                    // lifetime, which the signature ties the result to. Sound because
                    // the borrow is only used after this poll completes, when `op` is
                    // gone: its drop touches `parked` (`None` here, as the attempt ran
                    // with nothing registered) and nothing else, and the returned
                    // `Delivery` keeps `self` borrowed for as long as it lives. Safe
                    // Rust cannot say this (a borrow returned from one branch of a
                    // loop: "NLL problem case 3").
                    outcome.map(|delivery| unsafe {
                        std::mem::transmute::<Delivery<'_>, Delivery<'static>>(delivery)
                    })
                })
            })
        })
        .await;
        drop(op);
        delivery
    }

    /// Receives at least one and up to `max` messages (with one claim on the
    /// cursor, at most 256), lending each to `f` in place, waiting while the queue
    /// is empty. Returns how many.
    ///
    /// **Cancel safe**: the run is claimed and read in the poll that completes.
    ///
    /// ```
    /// # let name = "doc-async-recv-batch-with";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(8, 8))?;
    /// queue.send_batch(&[b"a", b"b"]).await?;
    /// let mut total = 0;
    /// assert_eq!(queue.recv_batch_with(8, |bytes| total += bytes.len()).await?, 2);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_batch_with(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, RecvError> {
        let mut op = Op::new(self);
        poll_fn(|cx| {
            op.poll(cx, Direction::NotEmpty, &mut |queue, sweep| match queue
                .try_recv_batch_with(max, &mut f)
            {
                Ok(n) => Some(Ok(n)),
                Err(TryRecvError::Empty) => match attempt_recv(queue, &mut f, sweep) {
                    Ok(done) => Some(done.map(|()| 1)),
                    Err(_) => None,
                },
                Err(e) => Some(Err(blocking_recv_error(e))),
            })
        })
        .await
    }

    /// Receives at least one and up to `max` messages into new `Vec`s.
    ///
    /// **Cancel safe** (see [`recv_batch_with`](Self::recv_batch_with)).
    ///
    /// ```
    /// # let name = "doc-async-recv-batch";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(8, 8))?;
    /// queue.send_batch(&[b"a", b"b"]).await?;
    /// assert_eq!(queue.recv_batch(8).await?, [b"a", b"b"]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_batch(&mut self, max: usize) -> Result<Vec<Vec<u8>>, RecvError> {
        let mut messages = Vec::new();
        self.recv_batch_with(max, |bytes| messages.push(bytes.to_vec()))
            .await?;
        Ok(messages)
    }

    /// Enqueues `message`, waiting while the queue is full.
    ///
    /// **Cancel safe**: the message is copied and published within the poll that
    /// completes; a future dropped before that has published nothing.
    ///
    /// ```
    /// # let name = "doc-async-send";
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"first").await?;
    /// queue.send(b"second").await?;
    /// // Full now: a timeout around the send gives up, having sent nothing.
    /// let late = std::time::Duration::from_millis(5);
    /// assert!(tokio::time::timeout(late, queue.send(b"third")).await.is_err());
    /// assert_eq!(queue.recv().await?, b"first");
    /// assert_eq!(queue.recv().await?, b"second");
    /// assert!(queue.get_ref().try_recv().is_err());
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn send(&mut self, message: &[u8]) -> Result<(), SendError> {
        let mut op = Op::new(self);
        poll_fn(|cx| {
            op.poll(cx, Direction::NotFull, &mut |queue, _| {
                send_outcome(queue.try_send(message))
            })
        })
        .await
    }

    /// Builds a message of `len` bytes in place in its slot with `fill`, waiting
    /// while the queue is full (see [`Queue::send_with`]).
    ///
    /// **Cancel safe**: the slot is claimed, filled and published within the poll
    /// that completes; `fill` runs only then.
    ///
    /// ```
    /// # let name = "doc-async-send-with";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send_with(3, |slot| slot.copy_from_slice(b"xyz")).await?;
    /// assert_eq!(queue.recv().await?, b"xyz");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn send_with<R>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, SendError> {
        let mut fill = Some(fill);
        let mut op = Op::new(self);
        poll_fn(|cx| {
            op.poll(cx, Direction::NotFull, &mut |queue, _| {
                let sent = queue.ring.try_send_with(len, fill.take()?);
                if queue.lost() {
                    return Some(Err(SendError::Truncated));
                }
                match sent {
                    Ok(r) => Some(Ok(r)),
                    Err(Unsent::Full(unused)) => {
                        fill = Some(unused);
                        None
                    }
                    Err(Unsent::Failed(e)) => Some(Err(blocking_send_error(e))),
                }
            })
        })
        .await
    }

    /// Enqueues as many of `messages`, in order, as there is room for (at least one,
    /// waiting while the queue is full; at most 256 per claim) and returns how many.
    /// Send the rest with another call.
    ///
    /// **Cancel safe**: the messages are published within the poll that completes;
    /// a future dropped before that has published none. (Waiting for room for all
    /// of them would not be: a drop could leave some sent and some not.)
    ///
    /// ```
    /// # let name = "doc-async-send-batch";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.send_batch(&[b"a", b"b", b"c"]).await?, 2);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn send_batch<B: AsRef<[u8]>>(&mut self, messages: &[B]) -> Result<usize, SendError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let mut op = Op::new(self);
        poll_fn(|cx| {
            op.poll(cx, Direction::NotFull, &mut |queue, _| {
                send_outcome(queue.try_send_batch(messages))
            })
        })
        .await
    }
}
