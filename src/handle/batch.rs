//! Batches: many messages sent, or received, with one claim on the cursor (a run of
//! consecutive slots), for throughput. Per-producer order and exactly-once hold
//! across batch and single calls mixed; a process killed in the middle of a batch
//! has each slot of it skipped or redelivered on its own.

use std::time::{Duration, Instant};

use super::recv::Tried;
use super::{blocking_send_error, Queue};
use crate::error::{RecvError, SendError, TryRecvError, TrySendError};
use crate::ring::Direction;
use crate::wait::{Wait, Waiter};

impl Queue {
    /// Enqueues as many of `messages`, in order, as there are free slots for (at
    /// most 256 per call), with one claim; returns how many. Sends none, with
    /// `TooLarge`, if any message exceeds the maximum; `Full` if there is no room
    /// for even one. Never blocks.
    ///
    /// ```
    /// # let name = "doc-try-send-batch";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(4, 8))?;
    /// assert_eq!(queue.try_send_batch(&[b"a", b"b", b"c"])?, 3);
    /// assert_eq!(queue.try_send_batch(&[b"d", b"e"])?, 1); // one slot left
    /// assert_eq!(queue.try_send_batch(&[b"f"]), Err(shmq::TrySendError::Full));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send_batch<B: AsRef<[u8]>>(&self, messages: &[B]) -> Result<usize, TrySendError> {
        let sent = self.ring.try_send_batch(messages);
        if self.lost() {
            return Err(TrySendError::Truncated);
        }
        match sent? {
            0 if !messages.is_empty() => Err(TrySendError::Full),
            n => Ok(n),
        }
    }

    /// Enqueues all of `messages`, in order, waiting while the queue is full; each
    /// claim takes as many free slots as there are (up to 256). Sends none if any
    /// message exceeds the maximum. On `Timeout`-free errors after some were sent
    /// (the segment was removed and replaced, or truncated), the error says so and
    /// the messages before stay sent.
    ///
    /// ```
    /// # let name = "doc-send-batch";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(64, 8))?;
    /// let messages: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n]).collect();
    /// queue.send_batch(&messages)?;
    /// assert_eq!(queue.try_recv_batch(100)?.len(), 10);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_batch<B: AsRef<[u8]>>(&self, messages: &[B]) -> Result<(), SendError> {
        self.send_batch_until(messages, None).map(drop)
    }

    /// Like [`send_batch`](Self::send_batch), waiting at most `timeout` in all;
    /// returns how many were sent before it ran out (`Ok(messages.len())` if all).
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-send-batch-timeout";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let sent = queue.send_batch_timeout(&[b"1", b"2", b"3"], Duration::from_millis(5))?;
    /// assert_eq!(sent, 2);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_batch_timeout<B: AsRef<[u8]>>(
        &self,
        messages: &[B],
        timeout: Duration,
    ) -> Result<usize, SendError> {
        self.send_batch_until(messages, Instant::now().checked_add(timeout))
    }

    fn send_batch_until<B: AsRef<[u8]>>(
        &self,
        messages: &[B],
        deadline: Option<Instant>,
    ) -> Result<usize, SendError> {
        let mut sent = 0;
        let mut waiter = None;
        while sent < messages.len() {
            match self.try_send_batch(&messages[sent..]) {
                Ok(n) => {
                    sent += n;
                    continue;
                }
                Err(TrySendError::Full) => {}
                Err(e) => return Err(blocking_send_error(e)),
            }
            let waiter = waiter.get_or_insert_with(|| Waiter::new(self.wait, deadline));
            if waiter.due_for_sweep(&self.ring, &self.schedule) && self.orphaned() {
                return Err(SendError::Orphaned);
            }
            if waiter.wait(&self.ring, &self.schedule, Direction::NotFull) == Wait::TimedOut {
                return Ok(sent);
            }
        }
        Ok(sent)
    }

    /// Dequeues up to `max` messages (at most 256) with one claim and lends each to
    /// `f` in place, in order; each slot is released as soon as `f` returns for it.
    /// Returns how many; `Empty` if there were none. A message with a corrupt
    /// length is dropped (and counted in `inspect`); its error is returned only if
    /// it was the only one. If `f` panics, the message it had is released, as with
    /// [`try_recv_with`](Self::try_recv_with), and the rest of the batch is given
    /// back for another delivery.
    ///
    /// ```
    /// # let name = "doc-try-recv-batch-with";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(8, 8))?;
    /// queue.send_batch(&[&b"a"[..], b"bb", b"ccc"])?;
    /// let mut total = 0;
    /// assert_eq!(queue.try_recv_batch_with(64, |bytes| total += bytes.len())?, 3);
    /// assert_eq!(total, 6);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_batch_with(
        &self,
        max: usize,
        f: impl FnMut(&[u8]),
    ) -> Result<usize, TryRecvError> {
        let mut f = self.holding_each(f);
        let received = self.ring.try_recv_batch_with(max, &mut f);
        if self.lost() {
            return Err(TryRecvError::Truncated);
        }
        match received? {
            0 if max > 0 && self.schedule.empty_poll_due() => {
                // Maybe a dead consumer's message waits: one at a time.
                self.take_redelivery().map(|message| {
                    message.read(f);
                    1
                })
            }
            0 if max > 0 => Err(TryRecvError::Empty),
            n => Ok(n),
        }
    }

    /// Like [`try_recv_batch_with`](Self::try_recv_batch_with), waiting until at
    /// least one message arrives (at most `timeout`, if given).
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-recv-batch-with";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(8, 8))?;
    /// queue.send(b"x")?;
    /// let mut got = Vec::new();
    /// queue.recv_batch_with(8, Some(Duration::from_secs(1)), |m| got.push(m.to_vec()))?;
    /// assert_eq!(got, [b"x"]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_batch_with(
        &self,
        max: usize,
        timeout: Option<Duration>,
        f: impl FnMut(&[u8]),
    ) -> Result<usize, RecvError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.wait_for_message(
            deadline,
            self.holding_each(f),
            |mut f| match self.ring.try_recv_batch_with(max, &mut f) {
                Ok(0) if max > 0 => Tried::Empty(f),
                Ok(n) => Tried::Got(n),
                Err(e) => Tried::Failed(e),
            },
            |mut f, message| {
                message.read(&mut f);
                1
            },
        )
    }

    /// Dequeues up to `max` messages (at most 256) with one claim, into owned
    /// buffers; `Empty` if there were none.
    ///
    /// ```
    /// # let name = "doc-try-recv-batch";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(8, 8))?;
    /// queue.send_batch(&[b"a", b"b"])?;
    /// assert_eq!(queue.try_recv_batch(8)?, [b"a", b"b"]);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_batch(&self, max: usize) -> Result<Vec<Vec<u8>>, TryRecvError> {
        let mut messages = Vec::new();
        self.try_recv_batch_with(max, |bytes| messages.push(bytes.to_vec()))?;
        Ok(messages)
    }

    /// Like [`try_recv_batch`](Self::try_recv_batch), waiting until at least one
    /// message arrives (at most `timeout`, if given).
    pub fn recv_batch(
        &self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<Vec<u8>>, RecvError> {
        let mut messages = Vec::new();
        self.recv_batch_with(max, timeout, |bytes| messages.push(bytes.to_vec()))?;
        Ok(messages)
    }
}
