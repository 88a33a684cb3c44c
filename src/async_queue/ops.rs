//! The async methods of [`AsyncQueue`]: each is one [`Op`] polled to completion.

use std::future::poll_fn;

use super::poll::{attempt_receive, attempt_recv, send_outcome, Op};
use super::AsyncQueue;
use crate::error::{RecvError, SendError, TryRecvError};
use crate::handle::{blocking_recv_error, blocking_send_error, Delivery};
use crate::ring::{Direction, Unsent};

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
    /// while the queue is full (see [`Queue::send_with`](crate::Queue::send_with)).
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
