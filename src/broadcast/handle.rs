//! The broadcast handles: [`Publisher`] and [`Subscriber`], on a named segment.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{BatchStep, Broadcast, Role};
use super::wake::Readiness;
use super::{PublishError, RecvError, TryPublishError, TryRecvError};
use crate::access::Access;
use crate::error::Error;
use crate::layout::{LayoutKind, SlowSubscriber};
use crate::options::Options;
use crate::platform;
use crate::segment::{ExpectedKind, Patience, Segment};
use crate::shm::ShmPlatform;
use crate::wait::{WaitStrategy, PARK_SLICE, STALL_SLICE, STUCK_BOUND};

pub(super) type Core = Broadcast<Arc<Segment>, ShmPlatform>;

/// Publishes messages that every subscriber of a broadcast segment receives.
///
/// `Send`, not `Sync` (its record is written without synchronisation): one per
/// thread. Dropping it never removes the segment.
///
/// ```
/// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
/// use shmq::Options;
/// # let name = "doc-broadcast";
/// let publisher = Publisher::create(name, &Options::new(64, 128), SlowSubscriber::Lossless)?;
/// let subscriber = Subscriber::open(name)?;        // receives what is published from now on
/// publisher.publish(b"tick")?;
/// assert_eq!(subscriber.try_recv()?, b"tick");
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Publisher {
    pub(super) core: Core,
    wait: WaitStrategy,
}

/// Receives every message published on a broadcast segment after it subscribed, in
/// each publisher's order.
///
/// `Send`, not `Sync`: one per thread.
///
/// ```
/// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber, TryRecvError};
/// use shmq::Options;
/// # let name = "doc-subscriber";
/// let publisher = Publisher::create(name, &Options::new(2, 16), SlowSubscriber::Overwrite)?;
/// let subscriber = Subscriber::open(name)?;
/// for n in 0..5u8 {
///     publisher.try_publish(&[n])?;                 // overwrite mode: never waits
/// }
/// assert_eq!(subscriber.try_recv(), Err(TryRecvError::Lagged { missed: 3 }));
/// assert_eq!(subscriber.try_recv()?, [3]);
/// assert_eq!(subscriber.try_recv()?, [4]);
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Subscriber {
    pub(super) core: Core,
    wait: WaitStrategy,
    /// Overwrite mode: where a batch receive copies each message to check it whole
    /// before lending it.
    scratch: RefCell<Vec<u8>>,
}

/// Creates a broadcast segment and registers a handle in `role` on it.
fn create(
    name: &str,
    options: &Options,
    policy: SlowSubscriber,
    role: Role,
) -> Result<Core, Error> {
    let mut options = options.clone();
    options.kind = LayoutKind::Broadcast(policy);
    let (segment, fd) = Segment::create(name, &options)?;
    attach(segment, fd, role)
}

/// Opens a broadcast segment and registers a handle in `role` on it.
fn open(name: &str, access: &Access, role: Role) -> Result<Core, Error> {
    let (segment, fd) = Segment::open(name, access, Patience::WaitForCreator)?;
    segment.expect_kind(ExpectedKind::Broadcast)?;
    attach(segment, fd, role)
}

fn attach(segment: Arc<Segment>, fd: std::os::fd::OwnedFd, role: Role) -> Result<Core, Error> {
    let LayoutKind::Broadcast(policy) = segment.kind() else {
        return Err(segment
            .expect_kind(ExpectedKind::Broadcast)
            .expect_err("not a broadcast segment"));
    };
    let platform = ShmPlatform::new(fd);
    let pid = platform::pid();
    let start_time = platform::process_start_time(pid);
    let register = || {
        Broadcast::register(
            Arc::clone(&segment),
            platform.clone(),
            role,
            policy,
            pid,
            start_time,
        )
    };
    let core = register().or_else(|| {
        // The table may be full of dead handles' records: free them, then retry once.
        super::recovery::free_dead_records(&segment, &platform, None);
        register()
    });
    let Some(core) = core else {
        return Err(Error::ParticipantTableFull {
            name: segment.name().to_owned(),
            max: segment.identity().max_participants,
        });
    };
    // Repair what dead handles left and free their records.
    core.housekeeping();
    Ok(core)
}

/// Runs `attempt` until it gives an answer, waiting between tries as `wait` says;
/// `None` from `attempt` means "try again". Gives `None` at `deadline`.
fn wait_for<T>(
    core: &Core,
    wait: WaitStrategy,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    let mut last_repair = start;
    loop {
        if let Some(answer) = attempt() {
            return Some(answer);
        }
        let now = Instant::now();
        let remaining = match deadline {
            Some(deadline) if now >= deadline => return None,
            Some(deadline) => Some(deadline - now),
            None => None,
        };
        let elapsed = now - start;
        let sleep = match wait {
            WaitStrategy::Spin => false,
            WaitStrategy::Yield => {
                crate::sync::yield_now();
                continue;
            }
            WaitStrategy::Hybrid { spin, yield_for } => {
                if elapsed < spin {
                    false
                } else if elapsed < spin + yield_for {
                    crate::sync::yield_now();
                    continue;
                } else {
                    true
                }
            }
            WaitStrategy::Futex => true,
        };
        if now - last_repair >= STUCK_BOUND {
            // Held up this long: a dead peer may be the cause.
            last_repair = now;
            repair(core);
        }
        if !sleep {
            crate::sync::spin_hint();
            continue;
        }
        let slice = remaining.map_or(PARK_SLICE, |r| r.min(PARK_SLICE));
        if core.park(Some(slice), STALL_SLICE) == Readiness::Pending {
            repair(core);
        }
    }
}

/// What a waiting handle does about dead peers: a sweep for dead publishers'
/// slots; a lossless publisher also frees dead subscribers that gate it.
pub(super) fn repair(core: &Core) {
    core.sweep();
    if core.role() == Role::Publisher && core.policy() == SlowSubscriber::Lossless {
        core.reclaim_gating_subscribers();
    }
}

impl Publisher {
    /// Creates the broadcast segment `name` (capacity, message size, mode and
    /// participant count from `options`; `slow` says what happens to subscribers
    /// that fall a ring behind) and attaches a publisher to it. Fails with
    /// `AlreadyExists` if the name is taken.
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber};
    /// # let name = "doc-publisher-create";
    /// let publisher = Publisher::create(name, &shmq::Options::new(1024, 64), SlowSubscriber::Overwrite)?;
    /// assert_eq!(publisher.slow_subscriber(), SlowSubscriber::Overwrite);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn create(name: &str, options: &Options, slow: SlowSubscriber) -> Result<Self, Error> {
        Ok(Self::wrap(create(name, options, slow, Role::Publisher)?))
    }

    /// Attaches a publisher to the existing broadcast segment `name` (trusted as
    /// [`Queue::open`](crate::Queue::open) trusts). A work queue is refused with
    /// [`Error::WrongKind`].
    ///
    /// ```
    /// use shmq::broadcast::Publisher;
    /// # let name = "doc-publisher-open";
    /// shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert!(matches!(Publisher::open(name), Err(shmq::Error::WrongKind { .. })));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::open_with(name, &Access::default())
    }

    /// [`open`](Self::open), trusting the segment's file as `access` says.
    ///
    /// ```
    /// # let name = "doc-publisher-open-with";
    /// # let _p = shmq::broadcast::Publisher::create(name, &shmq::Options::new(2, 8), shmq::broadcast::SlowSubscriber::Lossless)?;
    /// let publisher = shmq::broadcast::Publisher::open_with(name, &shmq::Access::default())?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open_with(name: &str, access: &Access) -> Result<Self, Error> {
        Ok(Self::wrap(open(name, access, Role::Publisher)?))
    }

    fn wrap(core: Core) -> Self {
        Self {
            core,
            wait: WaitStrategy::default(),
        }
    }

    /// Publishes `message` now, or fails with `Full` (see [`TryPublishError`]).
    /// Never blocks; a system call only to wake sleeping subscribers, or, when full,
    /// to ask whether whoever holds it up is alive.
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber, TryPublishError};
    /// # let name = "doc-try-publish";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
    /// let _slow = Subscriber::open(name)?;
    /// publisher.try_publish(b"a")?;
    /// publisher.try_publish(b"b")?;
    /// assert_eq!(publisher.try_publish(b"c"), Err(TryPublishError::Full)); // lossless: waits for _slow
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_publish(&self, message: &[u8]) -> Result<(), TryPublishError> {
        self.core.try_publish(message)
    }

    /// Publishes `message`, waiting (per the [`WaitStrategy`]) while the ring is
    /// full (lossless mode: until the slowest live subscriber moves on).
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber};
    /// # let name = "doc-publish";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
    /// for n in 0..10u8 {
    ///     publisher.publish(&[n])?; // no subscriber: nothing to wait for
    /// }
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish(&self, message: &[u8]) -> Result<(), PublishError> {
        self.publish_until(message, None)
    }

    /// [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, PublishError, SlowSubscriber, Subscriber};
    /// # use std::time::Duration;
    /// # let name = "doc-publish-timeout";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
    /// let _slow = Subscriber::open(name)?;
    /// publisher.publish(b"1")?;
    /// publisher.publish(b"2")?;
    /// assert_eq!(publisher.publish_timeout(b"3", Duration::from_millis(5)), Err(PublishError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_timeout(&self, message: &[u8], timeout: Duration) -> Result<(), PublishError> {
        self.publish_until(message, Some(Instant::now() + timeout))
    }

    /// [`publish`](Self::publish), waiting until `deadline` at most.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber};
    /// # let name = "doc-publish-deadline";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Overwrite)?;
    /// publisher.publish_deadline(b"x", std::time::Instant::now())?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_deadline(&self, message: &[u8], deadline: Instant) -> Result<(), PublishError> {
        self.publish_until(message, Some(deadline))
    }

    fn publish_until(&self, message: &[u8], deadline: Option<Instant>) -> Result<(), PublishError> {
        let outcome = wait_for(&self.core, self.wait, deadline, || {
            match self.core.try_publish(message) {
                Ok(()) => Some(Ok(())),
                Err(TryPublishError::Full) => None,
                Err(TryPublishError::TooLarge { len, max }) => {
                    Some(Err(PublishError::TooLarge { len, max }))
                }
            }
        });
        outcome.unwrap_or(Err(PublishError::Timeout))
    }

    /// Claims a position now, if one can be claimed, and lends `write` its slot's
    /// first `len` bytes to build the message in place (no copy); the message is
    /// published when `write` returns, and `write`'s result is returned. `write`
    /// runs only if a position was claimed; it gets bytes left from an earlier
    /// message, so it should write all `len` of them. If `write` panics, the
    /// position is published as a skip, which subscribers step over (they never
    /// see a torn or stale message), and the panic continues. Subscribers behind
    /// this position wait while `write` runs: keep it short. A publisher killed
    /// inside `write` leaves a skip too (the dead-publisher sweep).
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber, TryPublishError};
    /// # let name = "doc-try-publish-with";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 16), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// let id = publisher.try_publish_with(8, |buf| {
    ///     buf.copy_from_slice(&42u64.to_le_bytes());
    ///     42
    /// })?;
    /// assert_eq!(id, 42);
    /// assert_eq!(subscriber.try_recv()?, 42u64.to_le_bytes());
    /// assert!(matches!(publisher.try_publish_with(17, |_| ()), Err(TryPublishError::TooLarge { .. })));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_publish_with<R>(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, TryPublishError> {
        let pos = self.core.claim_for(len)?;
        Ok(self.core.write_with(pos, len, write))
    }

    /// Like [`try_publish_with`](Self::try_publish_with), waiting (per the
    /// [`WaitStrategy`]) while the ring is full.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-publish-with";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 16), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish_with(3, |buf| buf.copy_from_slice(b"abc"))?;
    /// assert_eq!(subscriber.recv()?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_with<R>(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, PublishError> {
        self.publish_with_until(len, None, write)
    }

    /// Like [`publish_with`](Self::publish_with), waiting at most `timeout` for room.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, PublishError, SlowSubscriber, Subscriber};
    /// use std::time::Duration;
    /// # let name = "doc-publish-with-timeout";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 16), SlowSubscriber::Lossless)?;
    /// let _slow = Subscriber::open(name)?;
    /// publisher.publish(b"1")?;
    /// publisher.publish(b"2")?;
    /// let full = publisher.publish_with_timeout(1, Duration::from_millis(1), |buf| buf[0] = 3);
    /// assert_eq!(full, Err(PublishError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_with_timeout<R>(
        &self,
        len: usize,
        timeout: Duration,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, PublishError> {
        self.publish_with_until(len, Instant::now().checked_add(timeout), write)
    }

    /// Like [`publish_with`](Self::publish_with), waiting for room until `deadline`.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// use std::time::{Duration, Instant};
    /// # let name = "doc-publish-with-deadline";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 16), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// let deadline = Instant::now() + Duration::from_millis(5);
    /// publisher.publish_with_deadline(2, deadline, |buf| buf.copy_from_slice(b"hi"))?;
    /// assert_eq!(subscriber.try_recv()?, b"hi");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_with_deadline<R>(
        &self,
        len: usize,
        deadline: Instant,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, PublishError> {
        self.publish_with_until(len, Some(deadline), write)
    }

    fn publish_with_until<R>(
        &self,
        len: usize,
        deadline: Option<Instant>,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, PublishError> {
        let claimed = wait_for(&self.core, self.wait, deadline, || {
            match self.core.claim_for(len) {
                Ok(pos) => Some(Ok(pos)),
                Err(TryPublishError::Full) => None,
                Err(TryPublishError::TooLarge { len, max }) => {
                    Some(Err(PublishError::TooLarge { len, max }))
                }
            }
        });
        let pos = claimed.unwrap_or(Err(PublishError::Timeout))?;
        Ok(self.core.write_with(pos, len, write))
    }

    /// Publishes as many of `messages`, in order, as there is room for now (at most
    /// 256 per call), with one claim of a run of consecutive positions; returns how
    /// many. Publishes none, with `TooLarge`, if any message exceeds the maximum;
    /// `Full` if there is room for not even one. Never blocks.
    ///
    /// The run is claimed with one CAS of the tail, so no other publisher's message
    /// interleaves with it. A publisher killed while publishing a run leaves the
    /// rest of it to the dead-publisher sweep, which skips each unpublished
    /// position: subscribers receive a prefix of the run, then what follows.
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber, TryPublishError};
    /// # let name = "doc-try-publish-batch";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let _subscriber = Subscriber::open(name)?;
    /// assert_eq!(publisher.try_publish_batch(&[b"a", b"b", b"c"])?, 3);
    /// assert_eq!(publisher.try_publish_batch(&[b"d", b"e"])?, 1); // one slot left
    /// assert_eq!(publisher.try_publish_batch(&[b"f"]), Err(TryPublishError::Full));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_publish_batch<B: AsRef<[u8]>>(
        &self,
        messages: &[B],
    ) -> Result<usize, TryPublishError> {
        let max = self.core.max_message_size();
        if let Some(large) = messages.iter().find(|m| m.as_ref().len() as u64 > max) {
            return Err(TryPublishError::TooLarge {
                len: large.as_ref().len(),
                max,
            });
        }
        self.core.try_publish_run(messages)
    }

    /// Publishes all of `messages`, in order, waiting (per the [`WaitStrategy`])
    /// while the ring is full; each claim takes as many positions as there is room
    /// for (up to 256). Publishes none if any message exceeds the maximum.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-publish-batch";
    /// let publisher = Publisher::create(name, &shmq::Options::new(64, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// let messages: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n]).collect();
    /// publisher.publish_batch(&messages)?;
    /// assert_eq!(subscriber.try_recv_batch(100)?.len(), 10);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_batch<B: AsRef<[u8]>>(&self, messages: &[B]) -> Result<(), PublishError> {
        self.publish_batch_until(messages, None).map(drop)
    }

    /// Like [`publish_batch`](Self::publish_batch), waiting at most `timeout` in
    /// all; returns how many were published before it ran out
    /// (`Ok(messages.len())` if all).
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// use std::time::Duration;
    /// # let name = "doc-publish-batch-timeout";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
    /// let _slow = Subscriber::open(name)?;
    /// let published = publisher.publish_batch_timeout(&[b"1", b"2", b"3"], Duration::from_millis(5))?;
    /// assert_eq!(published, 2);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_batch_timeout<B: AsRef<[u8]>>(
        &self,
        messages: &[B],
        timeout: Duration,
    ) -> Result<usize, PublishError> {
        self.publish_batch_until(messages, Instant::now().checked_add(timeout))
    }

    fn publish_batch_until<B: AsRef<[u8]>>(
        &self,
        messages: &[B],
        deadline: Option<Instant>,
    ) -> Result<usize, PublishError> {
        let mut published = 0;
        while published < messages.len() {
            let more = wait_for(&self.core, self.wait, deadline, || {
                match self.try_publish_batch(&messages[published..]) {
                    Ok(n) => Some(Ok(n)),
                    Err(TryPublishError::Full) => None,
                    Err(TryPublishError::TooLarge { len, max }) => {
                        Some(Err(PublishError::TooLarge { len, max }))
                    }
                }
            });
            match more {
                Some(n) => published += n?,
                None => break,
            }
        }
        Ok(published)
    }

    /// What the segment does about slow subscribers.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber};
    /// # let name = "doc-publisher-slow";
    /// let publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
    /// assert_eq!(publisher.slow_subscriber(), SlowSubscriber::Lossless);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn slow_subscriber(&self) -> SlowSubscriber {
        self.core.policy()
    }

    /// Messages the ring holds.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber};
    /// # let name = "doc-publisher-capacity";
    /// let publisher = Publisher::create(name, &shmq::Options::new(8, 16), SlowSubscriber::Lossless)?;
    /// assert_eq!((publisher.capacity(), publisher.max_message_size()), (8, 16));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn capacity(&self) -> u64 {
        self.core.capacity()
    }

    /// Largest message in bytes.
    ///
    /// (Example: see [`capacity`](Self::capacity).)
    pub fn max_message_size(&self) -> u64 {
        self.core.max_message_size()
    }

    /// How blocking calls wait (default `Hybrid`).
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber};
    /// # let name = "doc-publisher-wait";
    /// let mut publisher = Publisher::create(name, &shmq::Options::new(2, 8), SlowSubscriber::Lossless)?;
    /// publisher.set_wait_strategy(shmq::WaitStrategy::Futex);
    /// assert_eq!(publisher.wait_strategy(), shmq::WaitStrategy::Futex);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Sets how blocking calls wait.
    ///
    /// (Example: see [`wait_strategy`](Self::wait_strategy).)
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }
}

impl Subscriber {
    /// Subscribes to the existing broadcast segment `name`: this subscriber receives
    /// every message published after this call returns. A work queue is refused with
    /// [`Error::WrongKind`].
    ///
    /// ```
    /// use shmq::broadcast::Subscriber;
    /// # let name = "doc-subscriber-open";
    /// shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let refused = Subscriber::open(name).unwrap_err();
    /// assert!(refused.to_string().contains("work queue"));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::open_with(name, &Access::default())
    }

    /// [`open`](Self::open), trusting the segment's file as `access` says.
    ///
    /// ```
    /// # let name = "doc-subscriber-open-with";
    /// # let _p = shmq::broadcast::Publisher::create(name, &shmq::Options::new(2, 8), shmq::broadcast::SlowSubscriber::Lossless)?;
    /// let subscriber = shmq::broadcast::Subscriber::open_with(name, &shmq::Access::default())?;
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open_with(name: &str, access: &Access) -> Result<Self, Error> {
        Ok(Self::wrap(open(name, access, Role::Subscriber)?))
    }

    /// Creates the broadcast segment `name` and subscribes to it (for a subscriber
    /// that starts before any publisher).
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-subscriber-create";
    /// let subscriber = Subscriber::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// Publisher::open(name)?.publish(b"hello")?;
    /// assert_eq!(subscriber.recv()?, b"hello");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(name: &str, options: &Options, slow: SlowSubscriber) -> Result<Self, Error> {
        Ok(Self::wrap(create(name, options, slow, Role::Subscriber)?))
    }

    fn wrap(core: Core) -> Self {
        Self {
            core,
            wait: WaitStrategy::default(),
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// Lends the next message's bytes to `f` where they lie in the segment (zero
    /// copy), and returns what `f` returns.
    ///
    /// **Overwrite mode:** a publisher may overwrite the slot while `f` reads it;
    /// then `f`'s result is dropped and the call returns `Lagged`. So `f` may see
    /// torn bytes and must not act on them (write them anywhere that matters, or
    /// trust their values) before this call returns `Ok`: decode into a value and
    /// act on the returned value, or copy first. In lossless mode the bytes cannot
    /// change while `f` runs.
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-try-recv-with";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish(&7u32.to_le_bytes())?;
    /// let value = subscriber.try_recv_with(|bytes| u32::from_le_bytes(bytes.try_into().unwrap()))?;
    /// assert_eq!(value, 7);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, TryRecvError> {
        self.core.try_recv_with(|bytes| Some(f(bytes)))
    }

    /// Copies the next message into `buffer` and returns its length; a message
    /// longer than `buffer` stays unread (`BufferTooSmall`).
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber, TryRecvError};
    /// # let name = "doc-try-recv-into";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// let mut buffer = [0u8; 8];
    /// assert_eq!(subscriber.try_recv_into(&mut buffer), Err(TryRecvError::Empty));
    /// publisher.publish(b"abc")?;
    /// assert_eq!(subscriber.try_recv_into(&mut buffer)?, 3);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_into(&self, buffer: &mut [u8]) -> Result<usize, TryRecvError> {
        self.core.try_recv_with(|bytes| {
            let target = buffer.get_mut(..bytes.len())?;
            target.copy_from_slice(bytes);
            Some(bytes.len())
        })
    }

    /// The next message, copied into a new `Vec`.
    ///
    /// (Example: see [`Subscriber`].)
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        self.core.try_recv_with(|bytes| Some(bytes.to_vec()))
    }

    /// Waits (per the [`WaitStrategy`]) for the next message and copies it into
    /// `buffer`.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-recv-into";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// std::thread::spawn(move || publisher.publish(b"late").unwrap());
    /// let mut buffer = [0u8; 8];
    /// assert_eq!(subscriber.recv_into(&mut buffer)?, 4);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_into(&self, buffer: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_until(None, |s| s.try_recv_into(buffer))
    }

    /// [`recv_into`](Self::recv_into), waiting at most `timeout`.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, RecvError, SlowSubscriber, Subscriber};
    /// # let name = "doc-recv-into-timeout";
    /// # let _p = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// let mut buffer = [0u8; 8];
    /// let waited = subscriber.recv_into_timeout(&mut buffer, std::time::Duration::from_millis(2));
    /// assert_eq!(waited, Err(RecvError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_into_timeout(
        &self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        self.recv_until(Some(Instant::now() + timeout), |s| s.try_recv_into(buffer))
    }

    /// Waits for the next message and returns it in a new `Vec`.
    ///
    /// (Example: see [`Subscriber::create`].)
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(None, Self::try_recv)
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, RecvError, SlowSubscriber, Subscriber};
    /// # let name = "doc-recv-timeout";
    /// # let _p = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// assert_eq!(subscriber.recv_timeout(std::time::Duration::ZERO), Err(RecvError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_until(Some(Instant::now() + timeout), Self::try_recv)
    }

    /// [`recv`](Self::recv), waiting until `deadline` at most.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, RecvError, SlowSubscriber, Subscriber};
    /// # let name = "doc-recv-deadline";
    /// # let _p = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// assert_eq!(subscriber.recv_deadline(std::time::Instant::now()), Err(RecvError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Vec<u8>, RecvError> {
        self.recv_until(Some(deadline), Self::try_recv)
    }

    fn recv_until<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&Self) -> Result<T, TryRecvError>,
    ) -> Result<T, RecvError> {
        let outcome = wait_for(&self.core, self.wait, deadline, || match attempt(self) {
            Ok(value) => Some(Ok(value)),
            Err(e) => Option::<RecvError>::from(e).map(Err),
        });
        outcome.unwrap_or(Err(RecvError::Timeout))
    }

    /// Receives a run of up to `max` messages (at most a ring's capacity) with one
    /// advance of this subscriber's cursor, handing each to `f` in order; returns
    /// how many. `Empty` if there were none.
    ///
    /// **Where `f` reads.** In lossless mode each message is lent where it lies in
    /// the segment (zero copy: no publisher can overwrite a slot this subscriber
    /// has not passed). In overwrite mode each message is first copied into a
    /// buffer the handle keeps and checked whole (the slot's stamp unchanged), so
    /// `f` only ever sees whole messages, and never one it would have to take back.
    ///
    /// **Lags and corrupt slots.** A batch stops before anything that is not a
    /// message: if it received some, it returns them and the *next* call reports
    /// the lag (`Lagged` with the exact count) or the corrupt slot; if it received
    /// none, this call reports it. Messages received plus `missed` always equals
    /// the messages published since this subscriber subscribed (a skipped slot of a
    /// dead or panicked publisher counts in `missed` only when a lag stepped over
    /// it).
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-try-recv-batch-with";
    /// let publisher = Publisher::create(name, &shmq::Options::new(8, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish_batch(&[&b"a"[..], b"bb", b"ccc"])?;
    /// let mut total = 0;
    /// assert_eq!(subscriber.try_recv_batch_with(64, |bytes| total += bytes.len())?, 3);
    /// assert_eq!(total, 6);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_batch_with(
        &self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, TryRecvError> {
        match self.core.policy() {
            SlowSubscriber::Lossless => self.core.try_recv_batch(max, |step| {
                if let BatchStep::Read(bytes) = step {
                    f(bytes);
                }
            }),
            SlowSubscriber::Overwrite => {
                let mut scratch = self.scratch.borrow_mut();
                self.core.try_recv_batch(max, |step| match step {
                    BatchStep::Read(bytes) => {
                        scratch.clear();
                        scratch.extend_from_slice(bytes);
                    }
                    BatchStep::Whole => f(&scratch),
                })
            }
        }
    }

    /// Like [`try_recv_batch_with`](Self::try_recv_batch_with), waiting (per the
    /// [`WaitStrategy`]) until at least one message arrives (at most `timeout`, if
    /// given).
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// use std::time::Duration;
    /// # let name = "doc-recv-batch-with";
    /// let publisher = Publisher::create(name, &shmq::Options::new(8, 8), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish(b"x")?;
    /// let mut got = Vec::new();
    /// subscriber.recv_batch_with(8, Some(Duration::from_secs(1)), |m| got.push(m.to_vec()))?;
    /// assert_eq!(got, [b"x"]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_batch_with(
        &self,
        max: usize,
        timeout: Option<Duration>,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, RecvError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.recv_until(deadline, |s| s.try_recv_batch_with(max, &mut f))
    }

    /// Receives a run of up to `max` messages (at most a ring's capacity) with one
    /// cursor advance, into owned buffers; `Empty` if there were none. Lags as in
    /// [`try_recv_batch_with`](Self::try_recv_batch_with).
    ///
    /// ```
    /// use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber, TryRecvError};
    /// # let name = "doc-try-recv-batch";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish_batch(&[b"a", b"b"])?;
    /// assert_eq!(subscriber.try_recv_batch(8)?, [b"a", b"b"]);
    /// for n in 0..6u8 {
    ///     publisher.publish(&[n])?; // two more than the ring holds
    /// }
    /// assert_eq!(subscriber.try_recv_batch(8), Err(TryRecvError::Lagged { missed: 2 }));
    /// assert_eq!(subscriber.try_recv_batch(8)?, [[2], [3], [4], [5]]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_batch(&self, max: usize) -> Result<Vec<Vec<u8>>, TryRecvError> {
        let mut messages = Vec::new();
        self.try_recv_batch_owned(max, &mut messages)?;
        Ok(messages)
    }

    /// Like [`try_recv_batch`](Self::try_recv_batch), waiting until at least one
    /// message arrives (at most `timeout`, if given).
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-recv-batch";
    /// let publisher = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// std::thread::spawn(move || publisher.publish_batch(&[b"x", b"y"]).unwrap());
    /// let mut got = subscriber.recv_batch(8, None)?;
    /// if got.len() < 2 {
    ///     got.extend(subscriber.recv_batch(8, None)?);
    /// }
    /// assert_eq!(got, [b"x", b"y"]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_batch(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<Vec<u8>>, RecvError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut messages = Vec::new();
        self.recv_until(deadline, |s| s.try_recv_batch_owned(max, &mut messages))?;
        Ok(messages)
    }

    /// Appends a batch to `messages` as owned buffers, copying each message once
    /// (in overwrite mode the copy is the one checked whole).
    fn try_recv_batch_owned(
        &self,
        max: usize,
        messages: &mut Vec<Vec<u8>>,
    ) -> Result<usize, TryRecvError> {
        let mut pending = None;
        self.core.try_recv_batch(max, |step| match step {
            BatchStep::Read(bytes) => pending = Some(bytes.to_vec()),
            BatchStep::Whole => messages.extend(pending.take()),
        })
    }

    /// What the segment does about slow subscribers.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-subscriber-slow";
    /// # let _p = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// assert_eq!(Subscriber::open(name)?.slow_subscriber(), SlowSubscriber::Overwrite);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn slow_subscriber(&self) -> SlowSubscriber {
        self.core.policy()
    }

    /// Messages the ring holds.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-subscriber-capacity";
    /// # let _p = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// let subscriber = Subscriber::open(name)?;
    /// assert_eq!((subscriber.capacity(), subscriber.max_message_size()), (4, 8));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn capacity(&self) -> u64 {
        self.core.capacity()
    }

    /// Largest message in bytes.
    ///
    /// (Example: see [`capacity`](Self::capacity).)
    pub fn max_message_size(&self) -> u64 {
        self.core.max_message_size()
    }

    /// How blocking calls wait (default `Hybrid`).
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
    /// # let name = "doc-subscriber-wait";
    /// # let _p = Publisher::create(name, &shmq::Options::new(4, 8), SlowSubscriber::Overwrite)?;
    /// let mut subscriber = Subscriber::open(name)?;
    /// subscriber.set_wait_strategy(shmq::WaitStrategy::Yield);
    /// assert_eq!(subscriber.wait_strategy(), shmq::WaitStrategy::Yield);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Sets how blocking calls wait.
    ///
    /// (Example: see [`wait_strategy`](Self::wait_strategy).)
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }
}
