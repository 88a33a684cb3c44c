//! [`AsyncQueue`]: the async handle (cargo feature `tokio`). Every operation is a
//! non-blocking attempt on the wrapped [`Queue`]; when it finds the queue empty (or
//! full) the task registers with the process's waker thread (`reactor.rs`) and
//! returns `Pending`, so an awaiting task costs no CPU and holds no slot.
//!
//! `poll.rs` is the poll step every operation shares, `ops.rs` the async methods,
//! `stream.rs` the `Stream`/`Sink` impls, `reactor.rs` the waker thread.

use crate::error::Error;
use crate::handle::Queue;
use crate::options::Options;
use crate::wait::WaitStrategy;

mod ops;
mod poll;
pub(crate) mod reactor;
mod stream;

use poll::{OpState, Parked};
use reactor::Reactor;

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

impl Drop for AsyncQueue {
    fn drop(&mut self) {
        self.withdraw();
    }
}
