//! Sending in place: the `send_with` family lends the producer the slot's payload
//! bytes to build a message where the consumer will read it (no copy), with the
//! same {try, blocking, timeout, deadline} forms as every other send.

use std::time::{Duration, Instant};

use super::{blocking_send_error, Queue};
use crate::error::{SendError, TrySendError};
use crate::ring::{Direction, Unsent};
use crate::wait::{Wait, Waiter};

impl Queue {
    /// Claims a free slot, if there is one, and lends `write` its first `len` bytes
    /// to build the message in place (no copy); the message is published when
    /// `write` returns. `write` runs only if a slot was claimed; it gets bytes left
    /// from an earlier message, so it should write all `len` of them. If `write`
    /// panics, the slot is published as a skip, which consumers step over, and the
    /// panic continues. Consumers behind this slot wait while `write` runs: keep it
    /// short. A producer killed inside `write` leaves a skip too (crash recovery).
    ///
    /// ```
    /// use shmq::{Options, Queue, TrySendError};
    /// # let name = "doc-try-send-with";
    /// let queue = Queue::create(name, &Options::new(2, 16))?;
    /// let id = queue.try_send_with(8, |buf| {
    ///     buf.copy_from_slice(&42u64.to_le_bytes());
    ///     42
    /// })?;
    /// assert_eq!(id, 42);
    /// assert_eq!(queue.recv()?, 42u64.to_le_bytes());
    /// assert!(matches!(queue.try_send_with(17, |_| ()), Err(TrySendError::TooLarge { .. })));
    /// # Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send_with<R>(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, TrySendError> {
        let sent = self.ring.try_send_with(len, write);
        if self.lost() {
            return Err(TrySendError::Truncated);
        }
        match sent {
            Ok(r) => Ok(r),
            Err(Unsent::Full(_)) => Err(TrySendError::Full),
            Err(Unsent::Failed(e)) => Err(e),
        }
    }

    /// Like [`try_send_with`](Self::try_send_with), waiting while the queue is full.
    ///
    /// ```
    /// # let name = "doc-send-with";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 16))?;
    /// queue.send_with(3, |buf| buf.copy_from_slice(b"abc"))?;
    /// assert_eq!(queue.recv()?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_with<R>(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, SendError> {
        self.send_with_until(len, None, write)
    }

    /// Like [`send_with`](Self::send_with), waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-send-with-timeout";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 16))?;
    /// queue.send(b"1")?;
    /// queue.send(b"2")?;
    /// let full = queue.send_with_timeout(1, Duration::from_millis(1), |buf| buf[0] = 3);
    /// assert_eq!(full, Err(shmq::SendError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_with_timeout<R>(
        &self,
        len: usize,
        timeout: Duration,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, SendError> {
        self.send_with_until(len, Instant::now().checked_add(timeout), write)
    }

    /// Like [`send_with`](Self::send_with), waiting for room until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # let name = "doc-send-with-deadline";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 16))?;
    /// let deadline = Instant::now() + Duration::from_millis(5);
    /// queue.send_with_deadline(2, deadline, |buf| buf.copy_from_slice(b"hi"))?;
    /// assert_eq!(queue.recv()?, b"hi");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_with_deadline<R>(
        &self,
        len: usize,
        deadline: Instant,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, SendError> {
        self.send_with_until(len, Some(deadline), write)
    }

    /// The blocking send every form shares: claims a slot (waiting per the wait
    /// strategy until `deadline`; `None`: forever) and lets `write` fill it.
    pub(super) fn send_with_until<R>(
        &self,
        len: usize,
        deadline: Option<Instant>,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, SendError> {
        let mut waiter = None;
        let mut write = write;
        loop {
            let sent = self.ring.try_send_with(len, write);
            if self.lost() {
                return Err(SendError::Truncated);
            }
            write = match sent {
                Ok(r) => return Ok(r),
                Err(Unsent::Full(write)) => write,
                Err(Unsent::Failed(e)) => return Err(blocking_send_error(e)),
            };
            let waiter = waiter.get_or_insert_with(|| Waiter::new(self.wait, deadline));
            if waiter.due_for_sweep(&self.ring, &self.schedule) && self.orphaned() {
                return Err(SendError::Orphaned);
            }
            if waiter.wait(&self.ring, &self.schedule, Direction::NotFull) == Wait::TimedOut {
                return Err(SendError::Timeout);
            }
        }
    }
}
