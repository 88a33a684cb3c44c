//! A child's end of a transport under test, whatever it is: shmq queues opened by
//! name, or pipe / socket / eventfd descriptors inherited from the controller. The
//! workloads' loops send, receive and forward through it without knowing which.

use std::time::Instant;

use shmq::{Queue, RecvError, TryRecvError, WaitStrategy};

use crate::baselines::{FdKind, FdLink, Poll};
use crate::error::{CliError, EX_SOFTWARE};
use crate::os::now_ns;
use crate::protocol::{bad_spec, wait_from_spec, word_of, Side, Spec, ONE_WAY, STOP, STOP_CHECK};

/// One side of a transport: shmq queues, or inherited descriptors. (One per
/// process, never moved in the hot loop: the size difference does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Link {
    Shmq {
        tx: Option<Queue>,
        rx: Option<Queue>,
        /// Receive buffer of the segment's maximum message size.
        buffer: Vec<u8>,
    },
    Fd(FdLink),
}

impl Link {
    /// Opens `side` of the transport the spec describes.
    pub fn open(spec: &Spec, side: Side) -> Result<Self, CliError> {
        let transport = spec.str("transport")?;
        if transport == "shmq" {
            return Self::open_shmq(spec, side);
        }
        let kind = FdKind::parse(transport).ok_or_else(|| bad_spec("transport"))?;
        let poll = poll_from_spec(spec.str("poll")?)?;
        let fd = |key: &str| spec.opt_i64(key).map_or(-1, |v| v as i32);
        Ok(Link::Fd(FdLink::new(
            kind,
            fd(side.rx()),
            fd(side.tx()),
            poll,
        )?))
    }

    fn open_shmq(spec: &Spec, side: Side) -> Result<Self, CliError> {
        let wait = wait_from_spec(spec.str("wait")?)?;
        let open = |key: &str| -> Result<Option<Queue>, CliError> {
            match spec.opt_str(key) {
                Some(name) => {
                    let mut queue = Queue::open(name)?;
                    queue.set_wait_strategy(wait);
                    Ok(Some(queue))
                }
                None => Ok(None),
            }
        };
        let tx = open(side.tx())?;
        let rx = open(side.rx())?;
        let size = rx.as_ref().map_or(0, |q| q.max_message_size() as usize);
        Ok(Link::Shmq {
            tx,
            rx,
            buffer: vec![0; size],
        })
    }

    /// Sends one message, waiting while the transport is full.
    pub fn send(&mut self, message: &[u8]) -> Result<(), CliError> {
        match self {
            Link::Shmq { tx: Some(tx), .. } => tx
                .send(message)
                .map_err(|e| CliError::new(EX_SOFTWARE, format!("send: {e}"))),
            Link::Shmq { tx: None, .. } => Err(bad_spec("tx")),
            Link::Fd(link) => link.send(message),
        }
    }

    /// Sends `messages` in order, as batches of claims (shmq only; the descriptors
    /// get them one at a time).
    pub fn send_batch(&mut self, messages: &[Vec<u8>]) -> Result<(), CliError> {
        match self {
            Link::Shmq { tx: Some(tx), .. } => tx
                .send_batch(messages)
                .map_err(|e| CliError::new(EX_SOFTWARE, format!("send: {e}"))),
            Link::Shmq { tx: None, .. } => Err(bad_spec("tx")),
            Link::Fd(link) => messages.iter().try_for_each(|m| link.send(m)),
        }
    }

    /// Receives up to `max` messages with one claim (shmq only), lending each to
    /// `f`; `Ok(0)` if nothing came within a few ms.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize, CliError> {
        let Link::Shmq { rx: Some(rx), .. } = self else {
            return Err(bad_spec("batch"));
        };
        let fail = |e: String| CliError::new(EX_SOFTWARE, format!("recv: {e}"));
        match rx.try_recv_batch_with(max, &mut f) {
            Ok(n) => Ok(n),
            Err(TryRecvError::Empty) => match rx.recv_batch_with(max, Some(STOP_CHECK), &mut f) {
                Ok(n) => Ok(n),
                Err(RecvError::Timeout) => Ok(0),
                Err(e) => Err(fail(e.to_string())),
            },
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Messages waiting in the queue this side receives from (shmq only).
    pub fn len(&self) -> Option<u64> {
        match self {
            Link::Shmq { rx: Some(rx), .. } => Some(rx.len()),
            _ => None,
        }
    }

    /// Sends `message` `count` times into the queue this side receives from (a
    /// consumer that took other consumers' STOPs in one batch hands them on).
    pub fn hand_on(&mut self, message: &[u8], count: usize) -> Result<(), CliError> {
        let Link::Shmq { rx: Some(rx), .. } = self else {
            return Err(bad_spec("batch"));
        };
        let queue = Queue::open(rx.name())?;
        for _ in 0..count {
            queue
                .send(message)
                .map_err(|e| CliError::new(EX_SOFTWARE, format!("send: {e}")))?;
        }
        Ok(())
    }

    /// Receives one message into `out`; `Ok(None)` if nothing came within a few ms
    /// (shmq) or the stream ended (fd).
    pub fn recv(&mut self, out: &mut [u8]) -> Result<Option<()>, CliError> {
        match self {
            Link::Shmq {
                rx: Some(rx),
                buffer,
                ..
            } => {
                let fail = |e: String| CliError::new(EX_SOFTWARE, format!("recv: {e}"));
                let len = match rx.try_recv_into(buffer) {
                    Ok(len) => len,
                    Err(TryRecvError::Empty) => match rx.recv_into_timeout(buffer, STOP_CHECK) {
                        Ok(len) => len,
                        Err(RecvError::Timeout) => return Ok(None),
                        Err(e) => return Err(fail(e.to_string())),
                    },
                    Err(e) => return Err(fail(e.to_string())),
                };
                let n = len.min(out.len());
                out[..n].copy_from_slice(&buffer[..n]);
                Ok(Some(()))
            }
            Link::Shmq { rx: None, .. } => Err(bad_spec("rx")),
            Link::Fd(link) => Ok(link.recv(out)?.then_some(())),
        }
    }

    /// Echo side: receives one message and sends it straight back. Over shmq the
    /// message is forwarded from its slot, zero copy, before the slot is released
    /// (`recv_with`), which is how a forwarding stage uses the queue. Returns the
    /// message's first word and, for one-way stamps, the receipt time (read before
    /// the echo is sent), or `None` if nothing came within a few ms.
    pub fn forward(&mut self, scratch: &mut [u8]) -> Result<Option<(u64, u64)>, CliError> {
        if let Link::Shmq {
            tx: Some(tx),
            rx: Some(rx),
            ..
        } = self
        {
            return forward_in_place(tx, rx);
        }
        if self.recv(scratch)?.is_none() {
            return Ok(None);
        }
        let word = word_of(scratch);
        let received = if word & ONE_WAY != 0 { now_ns() } else { 0 };
        if word != STOP {
            self.send(scratch)?;
        }
        Ok(Some((word, received)))
    }
}

/// [`Link::forward`] over shmq: `tx.send` runs on the bytes still in `rx`'s slot.
fn forward_in_place(tx: &Queue, rx: &Queue) -> Result<Option<(u64, u64)>, CliError> {
    let fail = |e: String| CliError::new(EX_SOFTWARE, format!("forward: {e}"));
    let echo = |bytes: &[u8]| {
        let word = word_of(bytes);
        let received = if word & ONE_WAY != 0 { now_ns() } else { 0 };
        let sent = if word == STOP { Ok(()) } else { tx.send(bytes) };
        sent.map(|()| (word, received))
    };
    let outcome = match rx.try_recv_with(echo) {
        Err(TryRecvError::Empty) => recv_with_until(rx, Instant::now() + STOP_CHECK, echo),
        other => other.map_err(as_recv_error),
    };
    match outcome {
        Ok(sent) => sent.map(Some).map_err(|e| fail(e.to_string())),
        Err(RecvError::Timeout) => Ok(None),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Lends the next message to `f`, waiting until `deadline` at most. The one call of
/// `Queue::recv_with_deadline` in the CLI.
fn recv_with_until<R>(
    queue: &Queue,
    deadline: Instant,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, RecvError> {
    queue.recv_with_deadline(deadline, f)
}

/// A non-blocking receive's error as the blocking call's: `Corrupt` carries over;
/// anything else (`Empty` is waited out before this is called) reads as a timeout.
fn as_recv_error(e: TryRecvError) -> RecvError {
    match e {
        TryRecvError::Corrupt { position, len, max } => RecvError::Corrupt { position, len, max },
        _ => RecvError::Timeout,
    }
}

/// Parses the `poll` spec: `block`, `spin`, `yield`, or a hybrid wait's spec.
fn poll_from_spec(text: &str) -> Result<Poll, CliError> {
    Ok(match text {
        "block" => Poll::Block,
        "spin" => Poll::Spin,
        "yield" => Poll::Yield,
        hybrid => match wait_from_spec(hybrid)? {
            WaitStrategy::Hybrid { spin, yield_for } => Poll::Hybrid { spin, yield_for },
            _ => return Err(bad_spec("poll")),
        },
    })
}
