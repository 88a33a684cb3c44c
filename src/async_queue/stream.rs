//! [`AsyncQueue`] as a [`Stream`] of received messages and a [`Sink`] of messages
//! to send (`futures-core` / `futures-sink`), on the same poll step as its async
//! methods.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;

use super::poll::{attempt_recv, send_outcome, OpState, Sweep};
use super::AsyncQueue;
use crate::error::{RecvError, SendError, TrySendError};
use crate::handle::blocking_send_error;
use crate::ring::Direction;

impl AsyncQueue {
    /// [`AsyncQueue::poll_op`] with the state the stream and sink keep between polls.
    fn poll_stream_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
        attempt: &mut dyn FnMut(&crate::Queue, Sweep) -> Option<T>,
    ) -> Poll<T> {
        let mut op = std::mem::take(&mut self.stream_op);
        let polled = self.poll_op(cx, direction, &mut op, attempt);
        self.stream_op = if polled.is_ready() {
            OpState::default()
        } else {
            op
        };
        polled
    }
}

/// Received messages, each as a new `Vec`. The stream never ends: a queue has no
/// end of input (errors are items; after `Orphaned` or `Truncated` every later
/// item fails too).
///
/// **Cancel safe**: a message is claimed only in the poll that yields it.
///
/// ```
/// use futures::StreamExt;
/// # let name = "doc-async-stream";
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(4, 8))?;
/// queue.send(b"a").await?;
/// queue.send(b"b").await?;
/// let two: Vec<_> = (&mut queue).take(2).collect().await;
/// assert_eq!(two, [Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
impl Stream for AsyncQueue {
    type Item = Result<Vec<u8>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_stream_op(cx, Direction::NotEmpty, &mut |queue, sweep| {
                attempt_recv(queue, <[u8]>::to_vec, sweep).ok()
            })
            .map(Some)
    }
}

/// Messages to send. `start_send` sends at once if there is room, else keeps the
/// one message (a copy) until the next `poll_ready` / `poll_flush` finds room:
/// flush before dropping the sink, or that message is not sent.
///
/// ```
/// use futures::SinkExt;
/// # let name = "doc-async-sink";
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut queue = shmq::AsyncQueue::create(name, &shmq::Options::new(4, 8))?;
/// queue.send_all(&mut futures::stream::iter([Ok(b"a"), Ok(b"b")])).await?;
/// assert_eq!(queue.recv().await?, b"a");
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
impl<B: AsRef<[u8]>> Sink<B> for AsyncQueue {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_unsent(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: B) -> Result<(), SendError> {
        let this = self.get_mut();
        debug_assert!(this.unsent.is_none(), "start_send without poll_ready");
        match this.queue.try_send(item.as_ref()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full) => {
                this.unsent = Some(item.as_ref().to_vec());
                Ok(())
            }
            Err(e) => Err(blocking_send_error(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_unsent(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_unsent(cx)
    }
}

impl AsyncQueue {
    /// Sends the message the sink keeps, if any, waiting for room.
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let Some(message) = self.unsent.take() else {
            return Poll::Ready(Ok(()));
        };
        let polled = self.poll_stream_op(cx, Direction::NotFull, &mut |queue, _| {
            send_outcome(queue.try_send(&message))
        });
        if polled.is_pending() {
            self.unsent = Some(message);
        }
        polled
    }
}
