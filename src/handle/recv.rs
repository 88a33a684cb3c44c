//! The receive half of the [`Queue`] grid: {try, blocking, timeout, deadline} ×
//! {owned `Vec`, into a buffer, zero copy}, all built on two steps (one non-blocking
//! receive, one blocking receive) that hand back the message still in its slot.

use std::time::{Duration, Instant};

use super::delivery::Screened;
use super::{Message, Queue};
use crate::error::{RecvError, TryRecvError};
use crate::ring::{Direction, Redelivery, Scope, Unread};
use crate::wait::{Wait, Waiter};

/// Messages one receive may move to the dead-letter segment before it reports
/// `Empty` (each costs a sweep).
const DEAD_LETTERS_PER_CALL: usize = 4;

impl Queue {
    // ---- receive: zero copy --------------------------------------------------------

    /// Dequeues the next message and lends its bytes to `f` in place (zero copy).
    /// The slot is released when `f` returns (or panics).
    ///
    /// The bytes live in memory that other processes map too: a well-behaved peer
    /// never writes a slot a consumer holds, but a faulty or hostile one could, so
    /// validate what you read before trusting it.
    ///
    /// ```
    /// # let name = "doc-try-recv-with";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// assert_eq!(queue.try_recv_with(|bytes| bytes.len())?, 3);
    /// assert_eq!(queue.try_recv_with(|bytes| bytes.len()), Err(shmq::TryRecvError::Empty));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, TryRecvError> {
        self.poll_once(f)
    }

    /// Receives the next message, waiting while the queue is empty, and lends its
    /// bytes to `f` in place (see [`try_recv_with`](Self::try_recv_with)).
    ///
    /// ```
    /// # let name = "doc-recv-with";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// assert_eq!(queue.recv_with(|bytes| bytes[0])?, b'a');
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, RecvError> {
        self.receive_until(None, f)
    }

    /// Like [`recv_with`](Self::recv_with), waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-recv-with-timeout";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let outcome = queue.recv_with_timeout(Duration::from_millis(1), |bytes| bytes.len());
    /// assert_eq!(outcome, Err(shmq::RecvError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn recv_with_timeout<R>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RecvError> {
        self.receive_until(Instant::now().checked_add(timeout), f)
    }

    /// Like [`recv_with`](Self::recv_with), waiting until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # let name = "doc-recv-with-deadline";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// let deadline = Instant::now() + Duration::from_millis(5);
    /// assert_eq!(queue.recv_with_deadline(deadline, |bytes| bytes.to_vec())?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_with_deadline<R>(
        &self,
        deadline: Instant,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RecvError> {
        self.receive_until(Some(deadline), f)
    }

    // ---- receive: into a buffer ----------------------------------------------------

    /// Dequeues the next message into `buffer`, which must hold
    /// [`max_message_size`](Self::max_message_size) bytes (else nothing is consumed),
    /// and returns its length.
    ///
    /// ```
    /// # let name = "doc-try-recv-into";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// let mut buffer = [0u8; 8];
    /// let len = queue.try_recv_into(&mut buffer)?;
    /// assert_eq!(&buffer[..len], b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_into(&self, buffer: &mut [u8]) -> Result<usize, TryRecvError> {
        self.check_buffer(buffer)?;
        self.try_recv_with(|bytes| copy_into(buffer, bytes))
    }

    /// Receives into `buffer` (at least the maximum message size), waiting while
    /// empty. Returns the message length.
    ///
    /// ```
    /// # let name = "doc-recv-into";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// let mut buffer = [0u8; 8];
    /// let len = queue.recv_into(&mut buffer)?;
    /// assert_eq!(&buffer[..len], b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_into(&self, buffer: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_into_until(buffer, None)
    }

    /// Receives into `buffer`, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-recv-into-timeout";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let mut buffer = [0u8; 8];
    /// let outcome = queue.recv_into_timeout(&mut buffer, Duration::from_millis(1));
    /// assert_eq!(outcome, Err(shmq::RecvError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn recv_into_timeout(
        &self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        self.recv_into_until(buffer, Instant::now().checked_add(timeout))
    }

    /// Receives into `buffer`, waiting until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # let name = "doc-recv-into-deadline";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// let mut buffer = [0u8; 8];
    /// let len = queue.recv_into_deadline(&mut buffer, Instant::now() + Duration::from_millis(5))?;
    /// assert_eq!(&buffer[..len], b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_into_deadline(
        &self,
        buffer: &mut [u8],
        deadline: Instant,
    ) -> Result<usize, RecvError> {
        self.recv_into_until(buffer, Some(deadline))
    }

    fn recv_into_until(
        &self,
        buffer: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<usize, RecvError> {
        self.check_buffer(buffer).map_err(blocking_recv_error)?;
        self.receive_until(deadline, |bytes| copy_into(buffer, bytes))
    }

    // ---- receive: owned ------------------------------------------------------------

    /// Dequeues the next message into a new `Vec` (allocates; see
    /// [`try_recv_with`](Self::try_recv_with) for the zero-copy form).
    ///
    /// ```
    /// # let name = "doc-try-recv";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// assert_eq!(queue.try_recv()?, b"abc");
    /// assert_eq!(queue.try_recv(), Err(shmq::TryRecvError::Empty));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        self.try_recv_with(<[u8]>::to_vec)
    }

    /// Receives the next message into a new `Vec`, waiting while empty.
    ///
    /// ```
    /// # let name = "doc-recv";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// assert_eq!(queue.recv()?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(<[u8]>::to_vec)
    }

    /// Receives the next message into a new `Vec`, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let name = "doc-recv-timeout";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.recv_timeout(Duration::from_millis(1)), Err(shmq::RecvError::Timeout));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_with_timeout(timeout, <[u8]>::to_vec)
    }

    /// Receives the next message into a new `Vec`, waiting until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # let name = "doc-recv-deadline";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// queue.send(b"abc")?;
    /// assert_eq!(queue.recv_deadline(Instant::now() + Duration::from_millis(5))?, b"abc");
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Vec<u8>, RecvError> {
        self.recv_with_deadline(deadline, <[u8]>::to_vec)
    }

    // ---- the receive steps every form shares ---------------------------------------

    /// One non-blocking receive; now and then an empty one also sweeps for messages
    /// that dead consumers held.
    #[inline(always)]
    fn poll_once<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, TryRecvError> {
        let f = self.holding(f);
        let received = self.ring.try_recv_with(f);
        if self.lost() {
            return Err(TryRecvError::Truncated);
        }
        match received {
            Ok(r) => Ok(r),
            Err(Unread::Empty(f)) if self.schedule.empty_poll_due() => {
                self.take_redelivery().map(|message| message.read(f))
            }
            Err(Unread::Empty(_)) => Err(TryRecvError::Empty),
            Err(Unread::Failed(e)) => Err(e),
        }
    }

    /// Receives into `f`, waiting per the wait strategy until `deadline` (`None`:
    /// forever).
    fn receive_until<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, RecvError> {
        self.wait_for_message(
            deadline,
            self.holding(f),
            |f| match self.ring.try_recv_with(f) {
                Ok(r) => Tried::Got(r),
                Err(Unread::Empty(f)) => Tried::Empty(f),
                Err(Unread::Failed(e)) => Tried::Failed(e),
            },
            |f, message| message.read(f),
        )
    }

    /// The loop every waiting receive runs: `attempt` tries once with `state` (a
    /// reader, or nothing), handing it back when the queue is empty; now and then a
    /// sweep may take over a dead consumer's message instead, which `redelivered`
    /// turns into the result; between tries, the segment's name is checked now and
    /// then and the waiter spins, yields or sleeps per the strategy.
    pub(super) fn wait_for_message<'q, S, R>(
        &'q self,
        deadline: Option<Instant>,
        mut state: S,
        mut attempt: impl FnMut(S) -> Tried<S, R>,
        redelivered: impl FnOnce(S, Message<'q>) -> R,
    ) -> Result<R, RecvError> {
        let mut waiter = Waiter::new(self.wait_strategy(), deadline);
        loop {
            let tried = attempt(state);
            if self.lost() {
                return Err(RecvError::Truncated);
            }
            state = match tried {
                Tried::Got(r) => return Ok(r),
                Tried::Empty(state) => state,
                Tried::Failed(e) => return Err(blocking_recv_error(e)),
            };
            if waiter.due_for_sweep(&self.ring, &self.schedule) {
                match self.take_redelivery() {
                    Ok(message) => return Ok(redelivered(state, message)),
                    Err(TryRecvError::Empty) => {}
                    Err(e) => return Err(blocking_recv_error(e)),
                }
                if self.orphaned() {
                    return Err(RecvError::Orphaned);
                }
            }
            if waiter.wait(&self.ring, &self.schedule, Direction::NotEmpty) == Wait::TimedOut {
                return Err(RecvError::Timeout);
            }
        }
    }

    /// Wraps a receive closure so that, while it runs, this handle refuses another
    /// receive (which would record its claim over the one the closure holds: a
    /// crash then could never give that message to anyone again). Panics if called
    /// from inside such a closure.
    #[inline(always)]
    fn holding<'a, R, F: FnOnce(&[u8]) -> R + 'a>(&'a self, f: F) -> impl FnOnce(&[u8]) -> R + 'a {
        assert!(
            !self.receiving.get(),
            "shmq: a receive on a handle inside that handle's own receive closure would \
             let a crash lose the message the closure holds; receive through another \
             handle (Queue::try_clone)"
        );
        move |bytes| {
            /// Clears the flag however the closure ends.
            struct Holding<'a>(&'a std::cell::Cell<bool>);
            impl Drop for Holding<'_> {
                fn drop(&mut self) {
                    self.0.set(false);
                }
            }
            self.receiving.set(true);
            let _holding = Holding(&self.receiving);
            f(bytes)
        }
    }

    /// [`Queue::holding`] for a closure called once per message of a batch.
    pub(super) fn holding_each<'a, F: FnMut(&[u8]) + 'a>(
        &'a self,
        mut f: F,
    ) -> impl FnMut(&[u8]) + 'a {
        // The check now, before any message is claimed; then the flag per call.
        drop(self.holding(|_: &[u8]| ()));
        move |bytes| self.holding(&mut f)(bytes)
    }

    /// Sweeps, taking over one message a dead consumer held (or one abandoned), if
    /// any (`Empty` if none). A message past its last allowed delivery goes to the
    /// dead-letter segment instead, and the sweep looks again (a few times: each
    /// sweep takes one message).
    pub(crate) fn take_redelivery(&self) -> Result<Message<'_>, TryRecvError> {
        let now = Instant::now();
        self.schedule.swept(now);
        if !self.schedule.redeliveries_allowed(now) {
            // Still repair dead producers' slots; leave dead consumers' messages.
            self.ring.sweep(Scope::Outstanding, Redelivery::Leave);
            return Err(TryRecvError::Empty);
        }
        for _ in 0..DEAD_LETTERS_PER_CALL {
            let message = self
                .ring
                .sweep(Scope::Outstanding, Redelivery::TakeOne)
                .redelivered
                .unwrap_or(Err(TryRecvError::Empty))?;
            match self.screen(message) {
                Screened::Deliver(message) => return Ok(message),
                Screened::DeadLettered => continue,
                Screened::Kept => break,
            }
        }
        Err(TryRecvError::Empty)
    }

    fn check_buffer(&self, buffer: &[u8]) -> Result<(), TryRecvError> {
        let max = self.max_message_size();
        if (buffer.len() as u64) < max {
            return Err(TryRecvError::BufferTooSmall {
                len: buffer.len(),
                max,
            });
        }
        Ok(())
    }
}

fn copy_into(buffer: &mut [u8], bytes: &[u8]) -> usize {
    crate::copy::copy_prefix(buffer, bytes);
    bytes.len()
}

/// A non-blocking receive error the blocking family reports as is (never `Empty`: a
/// blocking receive waits that out).
pub(crate) fn blocking_recv_error(e: TryRecvError) -> RecvError {
    RecvError::try_from(e).unwrap_or(RecvError::Timeout)
}

/// One try of a waiting receive (see [`Queue::wait_for_message`]).
pub(super) enum Tried<S, R> {
    /// A message was received.
    Got(R),
    /// The queue was empty: the state comes back for the next try.
    Empty(S),
    /// The receive failed.
    Failed(TryRecvError),
}
