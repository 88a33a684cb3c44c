//! The async broadcast handles (cargo feature `tokio`): [`AsyncSubscriber`] and
//! [`AsyncPublisher`]. Each operation is a non-blocking attempt on the wrapped
//! [`Subscriber`] or [`Publisher`]; when it finds nothing to receive (or, lossless,
//! no room) the task registers with the broadcast segment's waiter protocol
//! (`wake.rs`: count, epoch, re-check) and hands its waker to the process's waker
//! thread (`src/async_queue/reactor.rs`), which sleeps on the segment's futex word
//! with every other awaited word, and returns `Pending`.
//!
//! Every attempt completes within one poll (a position is claimed, written and
//! published, or read and passed, in the poll that returns `Ready`), so nothing is
//! held between polls: every future here is cancel safe, and a registration is
//! withdrawn when its future (or its handle) is dropped.
//!
//! Unlike [`AsyncQueue`](crate::AsyncQueue), these handles have no spin phase:
//! a poll that finds nothing parks at once (it yields instead, for up to
//! `STUCK_BOUND`, while a peer is mid-publish).

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;

use super::handle::{repair, Core};
use super::ring::Role;
use super::wake::Readiness;
use super::{PublishError, Publisher, RecvError, SlowSubscriber, Subscriber, TryPublishError};
use crate::async_queue::reactor::{self, Key, Reactor, Watched};
use crate::error::Error;
use crate::options::Options;
use crate::ring::Direction;
use crate::wait::{PARK_SLICE, STALL_SLICE, STUCK_BOUND};

/// Retries one poll makes when the re-check after registering says "ready" but the
/// attempt then finds nothing (another publisher took the position first); then it
/// yields.
const READY_RETRIES: u32 = 64;

/// Which broadcast handle an async side wraps: gives the algorithm's view.
trait Side {
    fn core(&self) -> &Core;
}

impl Side for Subscriber {
    fn core(&self) -> &Core {
        &self.core
    }
}

impl Side for Publisher {
    fn core(&self) -> &Core {
        &self.core
    }
}

/// A registration: the handle counts as a waiter on its word, and the waker thread
/// holds its waker under `key`.
#[derive(Clone, Copy, Debug)]
struct Parked {
    key: Key,
    epoch: u32,
}

/// The state of one operation across its polls.
#[derive(Debug, Default)]
struct OpState {
    /// When the operation first found nothing to do.
    waiting_since: Option<Instant>,
    /// Start of the current stretch in which a peer's claim is pending.
    pending_since: Option<Instant>,
    /// When this operation last repaired (swept for dead publishers, reclaimed
    /// dead gating subscribers).
    repaired_at: Option<Instant>,
}

/// A blocking handle with what an async wait needs: the waker thread, this
/// handle's registration, and the state of the operation in progress (kept
/// between a stream's polls).
struct AsyncSide<H: Side> {
    handle: H,
    reactor: &'static Reactor,
    parked: Option<Parked>,
    op: OpState,
}

impl<H: Side> AsyncSide<H> {
    fn new(handle: H) -> Result<Self, Error> {
        let reactor = reactor::reactor().map_err(|source| Error::Io {
            operation: "starting the shmq-waker thread (async handles need it)",
            name: handle.core().memory().name().to_owned(),
            source,
        })?;
        Ok(Self {
            handle,
            reactor,
            parked: None,
            op: OpState::default(),
        })
    }

    /// The word this side sleeps on: subscribers wait for a publish, publishers
    /// for the slowest live subscriber.
    fn direction(&self) -> Direction {
        match self.handle.core().role() {
            Role::Subscriber => Direction::NotEmpty,
            Role::Publisher => Direction::NotFull,
        }
    }

    /// Ends this side's registration, if it has one.
    fn withdraw(&mut self) {
        if let Some(parked) = self.parked.take() {
            self.reactor.cancel(parked.key);
            self.handle.core().withdraw_waiter();
        }
    }

    /// Whether the registration is still waiting (then it will wake `cx`'s waker);
    /// if not, it is withdrawn.
    fn still_parked(&mut self, cx: &Context<'_>) -> bool {
        let Some(parked) = self.parked else {
            return false;
        };
        // Relaxed: a first look only; a moved epoch sends us to the attempt, which
        // reads the segment with its own orderings.
        let moved = self
            .handle
            .core()
            .epoch_word()
            .load(std::sync::atomic::Ordering::Relaxed)
            != parked.epoch;
        if !moved && self.reactor.still_waiting(parked.key, cx.waker()) {
            return true;
        }
        self.withdraw();
        false
    }

    /// One poll of an operation: unless a registration still waits, attempt; when
    /// the attempt finds nothing, register as a waiter, re-check, and park with the
    /// waker thread (or retry at once if the re-check says ready, or yield while a
    /// peer is mid-publish). `attempt` completes its whole operation within the
    /// call or does nothing, so nothing is held between polls.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: &mut dyn FnMut(&H) -> Option<T>,
    ) -> Poll<T> {
        if self.still_parked(cx) {
            return Poll::Pending;
        }
        for _ in 0..READY_RETRIES {
            if let Some(done) = attempt(&self.handle) {
                self.op = OpState::default();
                return Poll::Ready(done);
            }
            let now = Instant::now();
            let since = *self.op.waiting_since.get_or_insert(now);
            let last = self.op.repaired_at.unwrap_or(since);
            if now.saturating_duration_since(last) >= STUCK_BOUND {
                // Held up this long: a dead peer may be the cause (as a blocking
                // wait repairs).
                self.op.repaired_at = Some(now);
                repair(self.handle.core());
                if let Some(done) = attempt(&self.handle) {
                    self.op = OpState::default();
                    return Poll::Ready(done);
                }
            }
            match self.park(cx, now) {
                Some(pending) => return pending,
                None => continue,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Registers, re-checks, and parks with the waker thread: `Some(Pending)`, or
    /// `None` when the re-check says to attempt again now.
    fn park<T>(&mut self, cx: &Context<'_>, now: Instant) -> Option<Poll<T>> {
        let core = self.handle.core();
        let (epoch, readiness) = core.register_waiter();
        let recheck_at = match readiness {
            Readiness::Ready => {
                core.withdraw_waiter();
                self.op.pending_since = None;
                return None;
            }
            Readiness::Idle => {
                self.op.pending_since = None;
                // A subscriber that dies while it gates a lossless publisher is
                // announced by no wake-up: look again in a while (and repair).
                // Subscribers need no recheck: the waker thread's tick nudges one
                // task when a claim is left outstanding by a dead publisher.
                match (core.role(), core.policy()) {
                    (Role::Publisher, SlowSubscriber::Lossless) => Some(now + PARK_SLICE),
                    _ => None,
                }
            }
            Readiness::Pending => {
                let since = *self.op.pending_since.get_or_insert(now);
                if now.saturating_duration_since(since) < STUCK_BOUND {
                    // A peer is mid-publish: yield and come back, as a blocking
                    // waiter spins.
                    core.withdraw_waiter();
                    cx.waker().wake_by_ref();
                    return Some(Poll::Pending);
                }
                // Stuck behind a claim: short slices, repairing on each poll.
                Some(now + STALL_SLICE)
            }
        };
        let key = self.reactor.register_on(
            core.memory(),
            &core.platform,
            Watched::Broadcast(self.direction()),
            epoch,
            cx.waker(),
            recheck_at,
        );
        self.parked = Some(Parked { key, epoch });
        Some(Poll::Pending)
    }

    /// The wrapped handle, this side's registration withdrawn.
    fn into_handle(mut self) -> H {
        self.withdraw();
        self.op = OpState::default();
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again; `handle` is read out once,
        // and the other fields (a `&'static`, `parked` now `None`, plain state)
        // need no drop.
        unsafe { std::ptr::read(&this.handle) }
    }
}

impl<H: Side + std::fmt::Debug> std::fmt::Debug for AsyncSide<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSide")
            .field("handle", &self.handle)
            .field("parked", &self.parked.is_some())
            .finish()
    }
}

impl<H: Side> Drop for AsyncSide<H> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// One operation in progress: withdraws its registration however it ends
/// (completed, failed, or dropped while pending).
struct Op<'a, H: Side> {
    side: &'a mut AsyncSide<H>,
}

impl<'a, H: Side> Op<'a, H> {
    fn new(side: &'a mut AsyncSide<H>) -> Self {
        // A registration or wait left by a stream poll is not this operation's.
        side.withdraw();
        side.op = OpState::default();
        Self { side }
    }

    fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: &mut dyn FnMut(&H) -> Option<T>,
    ) -> Poll<T> {
        self.side.poll_op(cx, attempt)
    }
}

impl<H: Side> Drop for Op<'_, H> {
    fn drop(&mut self) {
        self.side.withdraw();
    }
}

/// A receive's answer as an attempt: `None` when there was nothing yet.
fn recv_outcome<T>(received: Result<T, super::TryRecvError>) -> Option<Result<T, RecvError>> {
    match received {
        Ok(value) => Some(Ok(value)),
        Err(e) => Option::<RecvError>::from(e).map(Err),
    }
}

/// A publish's answer as an attempt: `None` on `Full`.
fn publish_outcome<T>(published: Result<T, TryPublishError>) -> Option<Result<T, PublishError>> {
    match published {
        Ok(value) => Some(Ok(value)),
        Err(TryPublishError::Full) => None,
        Err(TryPublishError::TooLarge { len, max }) => {
            Some(Err(PublishError::TooLarge { len, max }))
        }
    }
}

/// An async [`Subscriber`] (cargo feature `tokio`), for tokio or any other
/// executor: receives every message published after it subscribed, awaiting
/// without a thread of its own (the process's `shmq-waker` thread sleeps on the
/// segment's futex word for every awaiting task).
///
/// It borrows itself mutably for each operation: one handle per task. It is a
/// [`Stream`] of received messages too. Errors are [`RecvError`]s; `Timeout` is
/// never one of them (wrap a future in `tokio::time::timeout` instead).
///
/// **Cancellation.** A message is read, and the cursor moved past it, only in the
/// poll that completes: a receive future dropped before it completes has taken
/// nothing, and its registration with the waker thread is withdrawn.
///
/// ```
/// use shmq::broadcast::{AsyncSubscriber, Publisher, SlowSubscriber};
/// # let name = "doc-async-subscriber";
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let publisher = Publisher::create(name, &shmq::Options::new(64, 128), SlowSubscriber::Overwrite)?;
/// let mut subscriber = AsyncSubscriber::open(name)?;
/// let receiver = tokio::spawn(async move { subscriber.recv().await });
/// publisher.publish(b"price 101")?;
/// assert_eq!(receiver.await.unwrap()?, b"price 101");
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct AsyncSubscriber {
    side: AsyncSide<Subscriber>,
}

impl AsyncSubscriber {
    /// Wraps `subscriber`, starting the process's waker thread if it is not running.
    ///
    /// ```
    /// use shmq::broadcast::{AsyncSubscriber, SlowSubscriber, Subscriber};
    /// # let name = "doc-async-subscriber-new";
    /// let subscriber = Subscriber::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = AsyncSubscriber::new(subscriber)?;
    /// assert_eq!(subscriber.get_ref().capacity(), 4);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn new(subscriber: Subscriber) -> Result<Self, Error> {
        Ok(Self {
            side: AsyncSide::new(subscriber)?,
        })
    }

    /// [`Subscriber::open`], as an async handle.
    ///
    /// (Example: see [`AsyncSubscriber`].)
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::new(Subscriber::open(name)?)
    }

    /// [`Subscriber::create`], as an async handle.
    ///
    /// ```
    /// # let name = "doc-async-subscriber-create";
    /// use shmq::broadcast::{AsyncSubscriber, SlowSubscriber};
    /// let subscriber = AsyncSubscriber::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn create(name: &str, options: &Options, slow: SlowSubscriber) -> Result<Self, Error> {
        Self::new(Subscriber::create(name, options, slow)?)
    }

    /// The blocking handle inside, for its non-blocking calls and accessors.
    ///
    /// (Example: see [`new`](Self::new).)
    pub fn get_ref(&self) -> &Subscriber {
        &self.side.handle
    }

    /// The blocking handle inside, given back (its cursor where this one's was).
    ///
    /// ```
    /// # let name = "doc-async-subscriber-into-inner";
    /// use shmq::broadcast::{AsyncSubscriber, SlowSubscriber, Subscriber};
    /// let subscriber = AsyncSubscriber::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let blocking: Subscriber = subscriber.into_inner();
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn into_inner(self) -> Subscriber {
        self.side.into_handle()
    }

    /// Receives the next message and lends its bytes to `f` where they lie (zero
    /// copy), waiting while there is none. As with
    /// [`Subscriber::try_recv_with`], in overwrite mode `f` may see bytes a
    /// publisher overwrote while it read them; its result is then dropped and the
    /// answer is `Lagged`: act on the returned value, not inside `f`.
    ///
    /// **Cancel safe**: the message is read and passed within the poll that
    /// completes; a future dropped before that has taken nothing.
    ///
    /// ```
    /// # use shmq::broadcast::{AsyncSubscriber, Publisher, SlowSubscriber};
    /// # let name = "doc-async-recv-with-broadcast";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let mut subscriber = AsyncSubscriber::open(name)?;
    /// publisher.publish(b"abc")?;
    /// assert_eq!(subscriber.recv_with(|bytes| bytes.len()).await?, 3);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        let mut f = Some(f);
        let mut op = Op::new(&mut self.side);
        poll_fn(|cx| {
            op.poll(cx, &mut |subscriber| {
                // `f` is taken only by a read, and a read completes the operation
                // (a message, or `Lagged` for a torn one): it is there whenever a
                // read happens.
                let received = subscriber
                    .core
                    .try_recv_with(|bytes| f.take().map(|read| read(bytes)));
                recv_outcome(received)
            })
        })
        .await
    }

    /// Receives the next message into a new `Vec`, waiting while there is none;
    /// `Lagged { missed }` (overwrite mode) if it fell a ring behind, after which
    /// it continues from the oldest message still held.
    ///
    /// **Cancel safe** (see [`recv_with`](Self::recv_with)).
    ///
    /// (Example: see [`AsyncSubscriber`].)
    pub async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut op = Op::new(&mut self.side);
        poll_fn(|cx| op.poll(cx, &mut |subscriber| recv_outcome(subscriber.try_recv()))).await
    }

    /// Receives a run of up to `max` messages (at most a ring's capacity) with one
    /// cursor advance, waiting until there is at least one; lags as in
    /// [`Subscriber::try_recv_batch_with`].
    ///
    /// **Cancel safe**: the run is read within the poll that completes.
    ///
    /// ```
    /// # use shmq::broadcast::{AsyncSubscriber, Publisher, SlowSubscriber};
    /// # let name = "doc-async-recv-batch";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let publisher = Publisher::create(name, &shmq::Options::new(8, 8), SlowSubscriber::Lossless)?;
    /// let mut subscriber = AsyncSubscriber::open(name)?;
    /// publisher.publish_batch(&[b"a", b"b"])?;
    /// assert_eq!(subscriber.recv_batch(8).await?, [b"a", b"b"]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_batch(&mut self, max: usize) -> Result<Vec<Vec<u8>>, RecvError> {
        let mut op = Op::new(&mut self.side);
        poll_fn(|cx| {
            op.poll(cx, &mut |subscriber| {
                recv_outcome(subscriber.try_recv_batch(max))
            })
        })
        .await
    }
}

/// Received messages, each as a new `Vec`; a lag is an item
/// (`Err(RecvError::Lagged { missed })`) and the stream goes on after it. The
/// stream never ends.
///
/// **Cancel safe**: a message is read only in the poll that yields it.
///
/// ```
/// use futures::StreamExt;
/// # use shmq::broadcast::{AsyncSubscriber, Publisher, SlowSubscriber};
/// # let name = "doc-async-subscriber-stream";
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
/// let mut subscriber = AsyncSubscriber::open(name)?;
/// publisher.publish(b"a")?;
/// publisher.publish(b"b")?;
/// let two: Vec<_> = (&mut subscriber).take(2).collect().await;
/// assert_eq!(two, [Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
impl Stream for AsyncSubscriber {
    type Item = Result<Vec<u8>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The registration stays between polls (withdrawn by the next poll, the
        // next operation, or the handle's drop).
        self.get_mut()
            .side
            .poll_op(cx, &mut |subscriber| recv_outcome(subscriber.try_recv()))
            .map(Some)
    }
}

/// An async [`Publisher`] (cargo feature `tokio`). In lossless mode a publish waits
/// (without a thread) for the slowest live subscriber; in overwrite mode it
/// completes at once but for a publisher a lap back still writing.
///
/// **Cancellation.** A position is claimed, written and published within the
/// poll that completes: a publish future dropped before it completes has
/// published nothing, and its registration with the waker thread is withdrawn.
///
/// ```
/// use shmq::broadcast::{AsyncPublisher, SlowSubscriber, Subscriber};
/// # let name = "doc-async-publisher";
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut publisher = AsyncPublisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
/// let subscriber = Subscriber::open(name)?;
/// publisher.publish(b"1").await?;
/// publisher.publish(b"2").await?;
/// let reader = std::thread::spawn(move || subscriber.recv().unwrap());
/// publisher.publish(b"3").await?; // waits for the subscriber to read "1"
/// assert_eq!(reader.join().unwrap(), b"1");
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct AsyncPublisher {
    side: AsyncSide<Publisher>,
}

impl AsyncPublisher {
    /// Wraps `publisher`, starting the process's waker thread if it is not running.
    ///
    /// ```
    /// use shmq::broadcast::{AsyncPublisher, Publisher, SlowSubscriber};
    /// # let name = "doc-async-publisher-new";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let publisher = AsyncPublisher::new(publisher)?;
    /// assert_eq!(publisher.get_ref().capacity(), 4);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn new(publisher: Publisher) -> Result<Self, Error> {
        Ok(Self {
            side: AsyncSide::new(publisher)?,
        })
    }

    /// [`Publisher::create`], as an async handle.
    ///
    /// (Example: see [`AsyncPublisher`].)
    pub fn create(name: &str, options: &Options, slow: SlowSubscriber) -> Result<Self, Error> {
        Self::new(Publisher::create(name, options, slow)?)
    }

    /// [`Publisher::open`], as an async handle.
    ///
    /// ```
    /// # let name = "doc-async-publisher-open";
    /// use shmq::broadcast::{AsyncPublisher, SlowSubscriber, Subscriber};
    /// let _subscriber = Subscriber::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let publisher = AsyncPublisher::open(name)?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::new(Publisher::open(name)?)
    }

    /// The blocking handle inside, for its non-blocking calls and accessors.
    ///
    /// (Example: see [`new`](Self::new).)
    pub fn get_ref(&self) -> &Publisher {
        &self.side.handle
    }

    /// The blocking handle inside, given back.
    ///
    /// ```
    /// # let name = "doc-async-publisher-into-inner";
    /// use shmq::broadcast::{AsyncPublisher, Publisher, SlowSubscriber};
    /// let publisher = AsyncPublisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let blocking: Publisher = publisher.into_inner();
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn into_inner(self) -> Publisher {
        self.side.into_handle()
    }

    /// Publishes `message`, waiting while the ring is full (lossless mode: until
    /// the slowest live subscriber moves on; dead ones are reclaimed).
    ///
    /// **Cancel safe**: the message is published within the poll that completes;
    /// a future dropped before that has published nothing.
    ///
    /// (Example: see [`AsyncPublisher`].)
    pub async fn publish(&mut self, message: &[u8]) -> Result<(), PublishError> {
        let mut op = Op::new(&mut self.side);
        poll_fn(|cx| {
            op.poll(cx, &mut |publisher| {
                publish_outcome(publisher.try_publish(message))
            })
        })
        .await
    }

    /// Claims a position (waiting while the ring is full) and lends `write` its
    /// slot's first `len` bytes to build the message in place, as
    /// [`Publisher::try_publish_with`] does (a panic in `write` leaves a skip).
    ///
    /// **Cancel safe**: the claim, `write` and the publish happen within the poll
    /// that completes; a future dropped before that has claimed nothing and never
    /// runs `write`.
    ///
    /// ```
    /// # use shmq::broadcast::{AsyncPublisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-async-publish-with";
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut publisher = AsyncPublisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish_with(2, |buf| buf.copy_from_slice(b"hi")).await?;
    /// assert_eq!(subscriber.try_recv()?, b"hi");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn publish_with<R>(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, PublishError> {
        let mut op = Op::new(&mut self.side);
        let pos = poll_fn(|cx| {
            op.poll(cx, &mut |publisher| {
                publish_outcome(publisher.core.claim_for(len))
            })
        })
        .await?;
        // No await between the claim and this: written and published in the poll
        // that claimed.
        Ok(op.side.handle.core.write_with(pos, len, write))
    }
}
