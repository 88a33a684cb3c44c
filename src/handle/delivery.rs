//! The receive guard: [`Delivery`], a message held in its slot until it is dropped
//! (acknowledged) or abandoned (given back for another delivery), and how many times
//! it was delivered; and dead letters: a message given back `max_deliveries` times
//! goes to the segment `NAME.dead` instead of to yet another consumer.

use std::ops::Deref;
use std::time::{Duration, Instant};

use super::recv::Tried;
use super::{Message, Queue};
use crate::access::Access;
use crate::error::{Error, RecvError, TryRecvError};
use crate::options::Options;
use crate::platform;
use crate::ring::RingMemory;
use crate::sync::Ordering;

/// A received message, still in its slot: the bytes are read in place (`Deref` to
/// `[u8]`). Dropping it acknowledges the message (the slot goes back to producers);
/// [`abandon`](Delivery::abandon) gives it back for another delivery instead.
///
/// While a `Delivery` is alive its queue handle is borrowed mutably, so the handle
/// holds at most one message at a time: that is what lets crash recovery find the
/// message again if this process dies holding it.
///
/// As with [`Queue::recv_with`], the bytes live in memory other processes map: a
/// faulty or hostile peer could write them while you read, so validate what you read.
///
/// ```
/// use shmq::{Options, Queue};
/// # let name = "doc-delivery";
/// let mut queue = Queue::create(name, &Options::new(4, 16))?;
/// queue.send(b"job 1")?;
/// let delivery = queue.receive()?;
/// assert_eq!(&*delivery, b"job 1");
/// assert_eq!(delivery.deliveries(), 1);
/// assert!(!delivery.is_redelivery());
/// drop(delivery); // acknowledged
/// assert!(queue.try_receive().is_err());
/// # Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Delivery<'q> {
    message: Message<'q>,
    bytes: *const [u8],
}

impl std::fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.len())
            .field("deliveries", &self.deliveries())
            .finish()
    }
}

impl<'q> Delivery<'q> {
    pub(crate) fn new(message: Message<'q>) -> Self {
        let bytes = message.peek(|bytes| bytes as *const [u8]);
        Self { message, bytes }
    }

    /// Which delivery of the message this is: `1` the first time; one more for each
    /// consumer that died holding it or abandoned it.
    pub fn deliveries(&self) -> u32 {
        self.message.returns().saturating_add(1)
    }

    /// Whether the message was delivered before (to a consumer that died holding it
    /// or abandoned it): handle it idempotently.
    pub fn is_redelivery(&self) -> bool {
        self.message.returns() != 0
    }

    /// The message's position in the segment: the count of messages sent to the
    /// segment before it (modulo 2^63). A redelivered message keeps its position, and
    /// no other message of the segment takes it, so [`Queue::created`] and the
    /// position name a message for the segment's life: an idempotency key, such as
    /// a broker's de-duplication id.
    ///
    /// ```
    /// use shmq::{Options, Queue};
    /// # let name = "doc-position";
    /// let mut queue = Queue::create(name, &Options::new(4, 16))?;
    /// queue.send_batch(&[&b"first"[..], b"second"])?;
    /// assert_eq!(queue.receive()?.position(), 0);
    /// let second = queue.receive()?;
    /// let position = second.position();
    /// assert_eq!(position, 1);
    /// second.abandon().unwrap();
    /// let again = queue.receive()?; // after the next sweep
    /// assert_eq!((again.position(), again.deliveries()), (position, 2));
    /// # drop(again);
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn position(&self) -> u64 {
        self.message.position()
    }

    /// Gives the message back unacknowledged, for another delivery: a consumer sweep
    /// (another consumer's, or this handle's own next receive on an empty queue;
    /// within about 50 ms when consumers are idle) takes it over and delivers it
    /// again, counting the delivery. A message abandoned or held by a dying consumer
    /// `max_deliveries` times goes to the dead-letter segment instead.
    ///
    /// Fails, handing the delivery back, only when every participant record is in
    /// use: the message is carried by a record of its own until it is taken over.
    ///
    /// ```
    /// use shmq::{Options, Queue};
    /// # let name = "doc-abandon";
    /// let mut queue = Queue::create(name, &Options::new(4, 16))?;
    /// queue.send(b"retry me")?;
    /// assert!(queue.receive()?.abandon().is_ok());
    /// let again = queue.receive()?; // after the next sweep
    /// assert_eq!((&*again, again.deliveries()), (&b"retry me"[..], 2));
    /// # drop(again);
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abandon(self) -> Result<(), AbandonError<'q>> {
        self.message.abandon().map_err(|message| AbandonError {
            delivery: Delivery::new(message),
        })
    }
}

impl Deref for Delivery<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `bytes` points at this message's payload (bounds-checked length)
        // in the segment, which the borrowed handle keeps mapped; the slot stays
        // claimed by us, so no well-behaved participant writes it, until `message`
        // is dropped or abandoned, which consumes `self`.
        unsafe { &*self.bytes }
    }
}

/// Why [`Delivery::abandon`] kept the message: every participant record is in use.
/// The delivery is handed back, still held.
#[derive(Debug, thiserror::Error)]
#[error(
    "no free participant record to carry the abandoned message: it is still yours; drop it to acknowledge, or create the segment with more max_participants"
)]
pub struct AbandonError<'q> {
    /// The message, still held.
    pub delivery: Delivery<'q>,
}

impl Queue {
    /// Dequeues the next message if there is one, holding it in its slot as a
    /// [`Delivery`]: acknowledged when dropped, or abandoned for another delivery.
    ///
    /// ```
    /// # let name = "doc-try-receive";
    /// let mut queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.try_receive().unwrap_err(), shmq::TryRecvError::Empty);
    /// queue.send(b"abc")?;
    /// assert_eq!(&*queue.try_receive()?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_receive(&mut self) -> Result<Delivery<'_>, TryRecvError> {
        let received = self.ring.try_recv_message();
        if self.lost() {
            return Err(TryRecvError::Truncated);
        }
        if let Some(message) = received? {
            return Ok(Delivery::new(message));
        }
        if self.schedule.empty_poll_due() {
            return self.take_redelivery().map(Delivery::new);
        }
        Err(TryRecvError::Empty)
    }

    /// Like [`try_receive`](Self::try_receive), waiting while the queue is empty.
    ///
    /// ```
    /// # let name = "doc-receive";
    /// let mut queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// assert_eq!(queue.receive()?.deliveries(), 1);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive(&mut self) -> Result<Delivery<'_>, RecvError> {
        self.receive_delivery(None)
    }

    /// Like [`receive`](Self::receive), waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-receive-timeout";
    /// let mut queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let outcome = queue.receive_timeout(Duration::from_millis(1));
    /// assert_eq!(outcome.unwrap_err(), shmq::RecvError::Timeout);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn receive_timeout(&mut self, timeout: Duration) -> Result<Delivery<'_>, RecvError> {
        self.receive_delivery(Instant::now().checked_add(timeout))
    }

    /// Like [`receive`](Self::receive), waiting until `deadline`.
    pub fn receive_deadline(&mut self, deadline: Instant) -> Result<Delivery<'_>, RecvError> {
        self.receive_delivery(Some(deadline))
    }

    fn receive_delivery(&mut self, deadline: Option<Instant>) -> Result<Delivery<'_>, RecvError> {
        // Every step below needs only a shared borrow; the exclusive one taken by
        // the signature keeps a second receive out while the delivery lives.
        let this = &*self;
        this.wait_for_message(
            deadline,
            (),
            |()| match this.ring.try_recv_message() {
                Ok(Some(message)) => Tried::Got(Delivery::new(message)),
                Ok(None) => Tried::Empty(()),
                Err(e) => Tried::Failed(e),
            },
            |(), message| Delivery::new(message),
        )
    }
}

/// How long a handle leaves messages of dead consumers alone after failing to move
/// one to the dead-letter segment (each retry takes the message over and gives it
/// back: not something to do in a spin loop).
const DEAD_LETTER_BACKOFF: Duration = Duration::from_millis(100);

/// What [`Queue::screen`] did with a message taken over by a sweep.
pub(super) enum Screened<'q> {
    /// Deliver it.
    Deliver(Message<'q>),
    /// It went to the dead-letter segment.
    DeadLettered,
    /// It should have gone to the dead-letter segment but could not; it was given
    /// back to this segment.
    Kept,
}

/// Whether a message has had its last allowed delivery.
fn exhausted(max_deliveries: u64, returns: u32) -> bool {
    max_deliveries != 0 && u64::from(returns) >= max_deliveries
}

impl Queue {
    /// Delivers `message` unless it has had its last allowed delivery; then moves
    /// it to the dead-letter segment. Nothing is lost: if the move fails (the
    /// dead-letter segment is full or cannot be opened), the message is abandoned
    /// again and this handle stops taking messages over for [`DEAD_LETTER_BACKOFF`]
    /// (a later sweep retries); if even abandoning fails, it is delivered after all.
    pub(super) fn screen<'q>(&'q self, message: Message<'q>) -> Screened<'q> {
        let max = self.ring.memory().identity().max_deliveries;
        if !exhausted(max, message.returns()) {
            return Screened::Deliver(message);
        }
        let stats = &self.ring.memory().shared().stats;
        let moved = self
            .dead_letter_queue()
            .map(|dead| message.peek(|bytes| dead.try_send(bytes)).is_ok())
            .unwrap_or(false);
        if moved {
            drop(message);
            // Relaxed: a statistic.
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            return Screened::DeadLettered;
        }
        // Relaxed: a statistic.
        stats.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
        self.schedule
            .hold_redeliveries_until(Instant::now() + DEAD_LETTER_BACKOFF);
        match message.abandon() {
            Ok(()) => Screened::Kept,
            Err(message) => Screened::Deliver(message),
        }
    }

    /// The dead-letter segment, opened (or created like this one: same capacity,
    /// message size and mode, trusting this segment's owner) on first use.
    fn dead_letter_queue(&self) -> Result<&Queue, Error> {
        if let Some(queue) = self.dead_letters.get() {
            return Ok(queue);
        }
        let name = crate::name::dead_letters(self.name());
        let file = platform::fstat(self.ring.platform().fd()).map_err(|source| Error::Io {
            operation: "fstat",
            name: self.name().to_owned(),
            source,
        })?;
        let mut access = Access::new().trust_owner(file.uid);
        if file.mode & 0o020 != 0 {
            access = access.trust_group(file.gid);
        }
        let options = Options::new(self.capacity(), self.max_message_size())
            .mode(file.mode & 0o666)
            .max_participants(self.ring.memory().geometry().max_participants)
            .max_deliveries(0)
            .access(access);
        let queue = Queue::open_or_create(&name, &options)?;
        Ok(self.dead_letters.get_or_init(|| Box::new(queue)))
    }
}
