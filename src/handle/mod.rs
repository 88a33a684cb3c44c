//! [`Queue`]: the handle users hold. Attaching to a segment, and the send/receive
//! grid: {try, blocking, timeout, deadline} × {owned `Vec`, into a buffer, zero copy}.

use std::cell::{Cell, OnceCell};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::Access;
use crate::error::{Error, SendError, TrySendError};
use crate::options::Options;
use crate::platform;
use crate::ring::{Received, Redelivery, Ring, Scope};
use crate::segment::{NameStatus, Patience, Segment};
use crate::shm::ShmPlatform;
use crate::wait::{SweepSchedule, WaitStrategy};

mod batch;
mod delivery;
mod loan;
mod recv;

pub use delivery::{AbandonError, Delivery};
#[cfg(feature = "tokio")]
pub(crate) use recv::blocking_recv_error;

pub(crate) type ShmRing = Ring<Arc<Segment>, ShmPlatform>;
pub(crate) type Message<'a> = Received<'a, Arc<Segment>, ShmPlatform>;

/// A handle on a named shared-memory queue: any number of handles, in any number of
/// processes, may send and receive on the same segment.
///
/// A `Queue` is `Send` but not `Sync`: it owns a participant record that only one
/// thread may write. For another thread, [`Queue::try_clone`] a second handle.
/// Dropping a handle never removes the segment; [`Queue::unlink`] does.
///
/// ```
/// use shmq::{Options, Queue};
/// # let name = "doc-queue";
/// let producer = Queue::create(name, &Options::new(1024, 256))?;
/// let consumer = Queue::open(name)?;
/// producer.send(b"one lemonade")?;
/// assert_eq!(consumer.recv()?, b"one lemonade");
/// Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue {
    pub(crate) ring: ShmRing,
    wait: WaitStrategy,
    pub(crate) schedule: SweepSchedule,
    /// The dead-letter segment, once a message needed it.
    dead_letters: OnceCell<Box<Queue>>,
    /// Set while a receive closure runs (see `holding` in `recv.rs`).
    receiving: Cell<bool>,
    /// Set by the `SIGBUS` guard if it replaced the segment's mapping (kept here
    /// so that the check after each operation is one load).
    lost: &'static std::sync::atomic::AtomicBool,
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

impl Queue {
    /// Creates the segment `name` (an error if it exists) and attaches to it.
    ///
    /// ```
    /// use shmq::{Error, Options, Queue};
    /// # let name = "doc-create";
    /// let queue = Queue::create(name, &Options::new(64, 128))?;
    /// assert_eq!((queue.capacity(), queue.max_message_size()), (64, 128));
    /// assert!(matches!(
    ///     Queue::create(name, &Options::new(64, 128)),
    ///     Err(Error::AlreadyExists { .. })
    /// ));
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn create(name: &str, options: &Options) -> Result<Self, Error> {
        let (segment, fd) = Segment::create(name, options)?;
        Self::attach(segment, fd)
    }

    /// Attaches to the existing segment `name`, if its file is one this process
    /// trusts by default: owned by this process's effective user, not writable by
    /// every user, not readable without write by anyone (see [`Access`];
    /// [`open_with`](Self::open_with) trusts more).
    ///
    /// ```
    /// use shmq::{Options, Queue};
    /// # let name = "doc-open";
    /// let created = Queue::create(name, &Options::new(64, 128))?;
    /// let opened = Queue::open(name)?;
    /// assert_eq!(opened.capacity(), 64);
    /// # Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::open_with(name, &Access::default())
    }

    /// Attaches to the existing segment `name` if its file passes `access`: for a
    /// segment another user (or group) creates for this one.
    ///
    /// ```
    /// use shmq::{Access, Error, Options, Queue, TrustProblem};
    /// # let name = "doc-open-with";
    /// let shared = Queue::create(name, &Options::new(2, 8).mode(0o666))?;
    /// // Writable by every user: refused unless asked for.
    /// assert!(matches!(
    ///     Queue::open(name),
    ///     Err(Error::Untrusted { problem: TrustProblem::WorldWritable { .. }, .. })
    /// ));
    /// let opened = Queue::open_with(name, &Access::new().allow_world_writable())?;
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn open_with(name: &str, access: &Access) -> Result<Self, Error> {
        let (segment, fd) = Segment::open(name, access, Patience::WaitForCreator)?;
        segment.expect_kind(crate::segment::ExpectedKind::WorkQueue)?;
        Self::attach(segment, fd)
    }

    /// Opens `name`, creating it with `options` if it does not exist. An existing
    /// segment keeps its own capacity and message size, and must pass
    /// `options.access` (a world-writable segment also passes if `options.mode` is
    /// world-writable): another user's file under the name is refused, never used.
    ///
    /// ```
    /// use shmq::{Options, Queue};
    /// # let name = "doc-open-or-create";
    /// let first = Queue::open_or_create(name, &Options::new(64, 128))?;
    /// let second = Queue::open_or_create(name, &Options::new(8, 8))?;
    /// assert_eq!(second.capacity(), 64);
    /// # Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open_or_create(name: &str, options: &Options) -> Result<Self, Error> {
        loop {
            match Self::create(name, options) {
                Err(Error::AlreadyExists { .. }) => {}
                other => return other,
            }
            match Self::open_with(name, &options.effective_access()) {
                // Removed between our two calls: try creating again.
                Err(Error::NotFound { .. }) => continue,
                other => return other,
            }
        }
    }

    fn attach(segment: Arc<Segment>, fd: OwnedFd) -> Result<Self, Error> {
        let platform = ShmPlatform::new(fd);
        let pid = platform::pid();
        let start_time = platform::process_start_time(pid);
        let register = || Ring::register(Arc::clone(&segment), platform.clone(), pid, start_time);
        let ring = match register() {
            Some(ring) => Some(ring),
            None => {
                // The table may be full of dead participants' records: free them
                // through a record-less view, then retry once.
                Ring::observer(Arc::clone(&segment), platform.clone())
                    .sweep(Scope::Housekeeping, Redelivery::Leave);
                register()
            }
        };
        let Some(ring) = ring else {
            return Err(Error::ParticipantTableFull {
                name: segment.name().to_owned(),
                max: segment.identity().max_participants,
            });
        };
        // Repair what dead participants left and free their records, so a restarted
        // process starts from a clean table.
        ring.sweep(Scope::Housekeeping, Redelivery::Leave);
        Ok(Self {
            ring,
            wait: WaitStrategy::default(),
            schedule: SweepSchedule::new(),
            dead_letters: OnceCell::new(),
            receiving: Cell::new(false),
            lost: segment.lost_flag(),
        })
    }

    /// A second handle on the same segment (its own participant record and its own
    /// liveness lock), for another thread. Works even after the name was unlinked.
    ///
    /// ```
    /// use shmq::{Options, Queue};
    /// # let name = "doc-try-clone";
    /// let queue = Queue::create(name, &Options::new(64, 128))?;
    /// let for_thread = queue.try_clone()?;
    /// std::thread::spawn(move || for_thread.send(b"hi").unwrap()).join().unwrap();
    /// assert_eq!(queue.recv()?, b"hi");
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// # let name = "doc-name";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.name(), "doc-name");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.ring.memory().name()
    }

    /// When the segment was created, by its creator's clock (nanoseconds). With the
    /// name it tells this segment from an earlier or later one of the same name:
    /// together with [`Delivery::position`] it names a message for the segment's
    /// life. Read from the shared segment, so a hostile peer could have forged it.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// # let name = "doc-created";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let age = SystemTime::now().duration_since(queue.created()).unwrap_or_default();
    /// assert!(age < Duration::from_secs(60));
    /// assert_eq!(shmq::Queue::open(name)?.created(), queue.created());
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn created(&self) -> std::time::SystemTime {
        let nanos = self.ring.memory().identity().creation_time_ns;
        std::time::SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// The message type the segment was created for by a typed queue
    /// (`TypedQueue`, cargo feature `zerocopy`), or `None` if it is untyped. Any handle
    /// may still send and receive bytes on a typed segment.
    ///
    /// ```
    /// # let name = "doc-message-type";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.message_type(), None);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn message_type(&self) -> Option<crate::MessageType> {
        self.ring.memory().message_type()
    }

    /// Capacity in messages.
    ///
    /// ```
    /// # let name = "doc-capacity";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(16, 8))?;
    /// assert_eq!(queue.capacity(), 16);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// How many messages are in the queue: positions producers have claimed and
    /// consumers have not (so sends under way count), between 0 and the capacity. A
    /// snapshot, stale as soon as it is read while others send or receive; like
    /// `multiprocessing.Queue.qsize`, good for monitoring and sizing, not for
    /// deciding whether a receive will succeed.
    ///
    /// ```
    /// # let name = "doc-len";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(4, 8))?;
    /// assert!(queue.is_empty());
    /// queue.send(b"a")?;
    /// queue.send(b"b")?;
    /// assert_eq!(queue.len(), 2);
    /// queue.recv()?;
    /// assert_eq!(queue.len(), 1);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> u64 {
        self.ring.occupancy()
    }

    /// Whether [`Queue::len`] is 0 (a snapshot, likewise).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`Queue::len`] equals the capacity (a snapshot, likewise).
    ///
    /// ```
    /// # let name = "doc-is-full";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"a")?;
    /// queue.send(b"b")?;
    /// assert!(queue.is_full());
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Largest message in bytes.
    ///
    /// ```
    /// # let name = "doc-max-message-size";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(16, 100))?;
    /// assert_eq!(queue.max_message_size(), 100);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn max_message_size(&self) -> u64 {
        self.ring.max_message_size()
    }

    /// How blocking calls on this handle wait (see [`WaitStrategy`]).
    ///
    /// ```
    /// # let name = "doc-wait-strategy-get";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.wait_strategy(), shmq::WaitStrategy::default());
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Sets how blocking calls on this handle wait.
    ///
    /// ```
    /// # let name = "doc-wait-strategy-set";
    /// let mut queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.set_wait_strategy(shmq::WaitStrategy::Futex);
    /// assert_eq!(queue.wait_strategy(), shmq::WaitStrategy::Futex);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    // ---- send ----------------------------------------------------------------------

    /// Enqueues `message` if there is room. Never blocks; no system call unless a
    /// consumer sleeps.
    ///
    /// ```
    /// use shmq::{Options, Queue, TrySendError};
    /// # let name = "doc-try-send";
    /// let queue = Queue::create(name, &Options::new(2, 8))?;
    /// queue.try_send(b"one")?;
    /// queue.try_send(b"two")?;
    /// assert_eq!(queue.try_send(b"three"), Err(TrySendError::Full));
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_send(&self, message: &[u8]) -> Result<(), TrySendError> {
        let sent = self.ring.try_send(message);
        if self.lost() {
            return Err(TrySendError::Truncated);
        }
        sent
    }

    /// Enqueues `message`, waiting while the queue is full.
    ///
    /// ```
    /// # let name = "doc-send";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"hello")?;
    /// assert_eq!(queue.recv()?, b"hello");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, message: &[u8]) -> Result<(), SendError> {
        self.send_until(message, None)
    }

    /// Enqueues `message`, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-send-timeout";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send_timeout(b"1", Duration::from_millis(1))?;
    /// queue.send_timeout(b"2", Duration::from_millis(1))?;
    /// assert_eq!(
    ///     queue.send_timeout(b"3", Duration::from_millis(1)),
    ///     Err(shmq::SendError::Timeout)
    /// );
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&self, message: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_until(message, Instant::now().checked_add(timeout))
    }

    /// Enqueues `message`, waiting for room until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # let name = "doc-send-deadline";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let deadline = Instant::now() + Duration::from_millis(5);
    /// queue.send_deadline(b"1", deadline)?;
    /// queue.send_deadline(b"2", deadline)?;
    /// assert_eq!(queue.send_deadline(b"3", deadline), Err(shmq::SendError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_deadline(&self, message: &[u8], deadline: Instant) -> Result<(), SendError> {
        self.send_until(message, Some(deadline))
    }

    fn send_until(&self, message: &[u8], deadline: Option<Instant>) -> Result<(), SendError> {
        // The copy a blocking send makes: the same inline one as `try_send`.
        self.send_with_until(message.len(), deadline, |slot| {
            crate::copy::copy_prefix(slot, message)
        })
    }
}

/// A non-blocking send error the blocking family reports as is (never `Full`: a
/// blocking send waits that out).
pub(crate) fn blocking_send_error(e: TrySendError) -> SendError {
    SendError::try_from(e).unwrap_or(SendError::Timeout)
}

impl Queue {
    /// Whether the `SIGBUS` guard replaced the segment's memory under this handle
    /// (checked after every operation: one load of a flag no one writes otherwise).
    #[inline(always)]
    pub(crate) fn lost(&self) -> bool {
        // Relaxed: see `guard::Registration::lost_flag`.
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the segment's name now points at another segment (checked now and
    /// then by waiting calls; a system call).
    pub(crate) fn orphaned(&self) -> bool {
        self.schedule.name_check_due() && self.ring.memory().name_status() == NameStatus::Elsewhere
    }
}
