//! [`TypedQueue`]: a queue of values of one plain-old-data type.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::MessageType;
use crate::access::Access;
use crate::error::{Error, RecvError, SendError, TryRecvError, TrySendError};
use crate::options::Options;
use crate::Queue;

/// Slot payloads start 16 bytes into a 64-byte-aligned slot: values are read and
/// written in place, so their alignment may be at most this.
const PAYLOAD_ALIGN: usize = 16;

/// A queue of `T` values: the segment records `T`'s [`MessageType`] (name, size,
/// alignment, schema version) and every handle checks it on attach. Values travel
/// as their bytes (zerocopy's `IntoBytes`/`FromBytes`: no serialisation), by copy,
/// in place (`send_with` / `try_recv_with` lend `&mut T` / `&T` in the slot) and in
/// batches. Everything else (waiting, recovery, dead letters, inspection) is the
/// [`Queue`]'s, reachable with [`as_queue`](Self::as_queue).
///
/// ```
/// use shmq::{Options, TypedQueue};
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Fill { order: u64, price: f64, quantity: u32, side: u32 }
///
/// # let name = "doc-typed";
/// let fills = TypedQueue::<Fill>::create(name, &Options::new(1024, 0), 1)?;
/// let fill = Fill { order: 7, price: 101.5, quantity: 3, side: 1 };
/// fills.send(&fill)?;
/// assert_eq!(fills.recv()?, fill);
/// // Another type, or another schema version, is refused on attach.
/// assert!(matches!(TypedQueue::<u64>::open(name, 1), Err(shmq::Error::TypeMismatch { .. })));
/// assert!(matches!(TypedQueue::<Fill>::open(name, 2), Err(shmq::Error::TypeMismatch { .. })));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedQueue<T> {
    queue: Queue,
    _values: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for TypedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedQueue")
            .field("type", &std::any::type_name::<T>())
            .field("queue", &self.queue)
            .finish()
    }
}

/// Lets a slice of values be sent as a batch of byte strings without copying it.
#[repr(transparent)]
struct AsBytes<T>(T);

impl<T: IntoBytes + Immutable> AsRef<[u8]> for AsBytes<T> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> TypedQueue<T> {
    const ALIGNED: () = assert!(
        std::mem::align_of::<T>() <= PAYLOAD_ALIGN,
        "TypedQueue: values are read in place, so their alignment may be at most 16"
    );

    /// `T`'s message type at schema `version`.
    pub fn message_type(version: u32) -> MessageType {
        MessageType::of::<T>(version)
    }

    fn size() -> usize {
        std::mem::size_of::<T>()
    }

    /// Creates the segment `name` for `T` values at schema `version`, with the
    /// `options`' capacity, mode and limits (its message size is `T`'s).
    pub fn create(name: &str, options: &Options, version: u32) -> Result<Self, Error> {
        let () = Self::ALIGNED;
        let mut options = options.clone();
        options.max_message_size = Self::size().max(1) as u64;
        options.message_type = Some(Self::message_type(version));
        Self::typed(Queue::create(name, &options)?, version)
    }

    /// Attaches to the existing segment `name`, which must record `T` at `version`.
    pub fn open(name: &str, version: u32) -> Result<Self, Error> {
        Self::open_with(name, &Access::default(), version)
    }

    /// [`open`](Self::open), trusting segments `access` allows (see [`Access`]).
    pub fn open_with(name: &str, access: &Access, version: u32) -> Result<Self, Error> {
        let () = Self::ALIGNED;
        Self::typed(Queue::open_with(name, access)?, version)
    }

    /// Opens `name` for `T` at `version`, creating it with `options` if it does
    /// not exist.
    pub fn open_or_create(name: &str, options: &Options, version: u32) -> Result<Self, Error> {
        let () = Self::ALIGNED;
        let mut options = options.clone();
        options.max_message_size = Self::size().max(1) as u64;
        options.message_type = Some(Self::message_type(version));
        Self::typed(Queue::open_or_create(name, &options)?, version)
    }

    /// Checks that `queue`'s segment records `T` at `version`.
    fn typed(queue: Queue, version: u32) -> Result<Self, Error> {
        let expected = Self::message_type(version);
        match queue.message_type() {
            Some(found) if found.matches(&expected) => Ok(Self {
                queue,
                _values: PhantomData,
            }),
            found => Err(Error::TypeMismatch {
                name: queue.name().to_owned(),
                expected,
                found,
            }),
        }
    }

    /// The untyped handle underneath: waiting strategy, info, sweeps, dead letters.
    pub fn as_queue(&self) -> &Queue {
        &self.queue
    }

    /// The untyped handle underneath, mutably (to set its wait strategy).
    pub fn as_queue_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }

    // ---- send ----------------------------------------------------------------------

    /// Enqueues a copy of `value` if there is room. Never blocks.
    pub fn try_send(&self, value: &T) -> Result<(), TrySendError> {
        self.queue.try_send(value.as_bytes())
    }

    /// Enqueues a copy of `value`, waiting while the queue is full.
    pub fn send(&self, value: &T) -> Result<(), SendError> {
        self.queue.send(value.as_bytes())
    }

    /// Like [`send`](Self::send), waiting at most `timeout`.
    pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendError> {
        self.queue.send_timeout(value.as_bytes(), timeout)
    }

    /// Like [`send`](Self::send), waiting until `deadline`.
    pub fn send_deadline(&self, value: &T, deadline: Instant) -> Result<(), SendError> {
        self.queue.send_deadline(value.as_bytes(), deadline)
    }

    /// Builds a value in place in a free slot, if there is one: `write` gets the
    /// slot's bytes as a `&mut T` (holding whatever an earlier message left: set
    /// every field). See [`Queue::try_send_with`].
    ///
    /// ```
    /// # let name = "doc-typed-send-with";
    /// let queue = shmq::TypedQueue::<[u32; 4]>::create(name, &shmq::Options::new(8, 0), 1)?;
    /// queue.try_send_with(|value| *value = [1, 2, 3, 4])?;
    /// assert_eq!(queue.try_recv_with(|value| value.iter().sum::<u32>())?, 10);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send_with<R>(&self, write: impl FnOnce(&mut T) -> R) -> Result<R, TrySendError> {
        self.queue
            .try_send_with(Self::size(), |bytes| write(value_mut(bytes)))
    }

    /// Like [`try_send_with`](Self::try_send_with), waiting while the queue is full.
    pub fn send_with<R>(&self, write: impl FnOnce(&mut T) -> R) -> Result<R, SendError> {
        self.queue
            .send_with(Self::size(), |bytes| write(value_mut(bytes)))
    }

    /// Enqueues as many of `values`, in order, as there is room for, with one
    /// claim (see [`Queue::try_send_batch`]).
    pub fn try_send_batch(&self, values: &[T]) -> Result<usize, TrySendError> {
        self.queue.try_send_batch(as_byte_strings(values))
    }

    /// Enqueues all of `values`, in order, waiting while full (see
    /// [`Queue::send_batch`]).
    pub fn send_batch(&self, values: &[T]) -> Result<(), SendError> {
        self.queue.send_batch(as_byte_strings(values))
    }

    // ---- receive -------------------------------------------------------------------

    /// Dequeues the next value, if any. A message of another size (sent by an
    /// untyped handle) is consumed and reported as `WrongSize`.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.try_recv_with(read)
    }

    /// Dequeues the next value, waiting while the queue is empty.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_with(read)
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        let outcome = self
            .queue
            .recv_with_timeout(timeout, |bytes| value(bytes).map(read));
        outcome.and_then(|value| value.map_err(RecvError::from))
    }

    /// Like [`recv`](Self::recv), waiting until `deadline`.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvError> {
        let outcome = self
            .queue
            .recv_with_deadline(deadline, |bytes| value(bytes).map(read));
        outcome.and_then(|value| value.map_err(RecvError::from))
    }

    /// Lends the next value to `f` in its slot (zero copy), if any.
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, TryRecvError> {
        let outcome = self.queue.try_recv_with(|bytes| value(bytes).map(f));
        outcome.and_then(|value| value.map_err(TryRecvError::from))
    }

    /// Lends the next value to `f` in its slot, waiting while the queue is empty.
    pub fn recv_with<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, RecvError> {
        let outcome = self.queue.recv_with(|bytes| value(bytes).map(f));
        outcome.and_then(|value| value.map_err(RecvError::from))
    }

    /// Lends up to `max` values to `f`, in order, with one claim (see
    /// [`Queue::try_recv_batch_with`]). A message of the wrong size (sent by an
    /// untyped handle) is dropped and counted as corrupt.
    pub fn try_recv_batch_with(
        &self,
        max: usize,
        mut f: impl FnMut(&T),
    ) -> Result<usize, TryRecvError> {
        let mut wrong = 0;
        let taken = self
            .queue
            .try_recv_batch_with(max, |bytes| match value(bytes) {
                Ok(value) => f(value),
                Err(_) => wrong += 1,
            })?;
        Ok(taken - wrong)
    }
}

/// A message whose length is not the type's size (sent by an untyped handle).
pub(super) struct WrongSize {
    len: usize,
    expected: usize,
}

impl From<WrongSize> for TryRecvError {
    fn from(e: WrongSize) -> Self {
        TryRecvError::WrongSize {
            len: e.len,
            expected: e.expected,
        }
    }
}

impl From<WrongSize> for RecvError {
    fn from(e: WrongSize) -> Self {
        RecvError::WrongSize {
            len: e.len,
            expected: e.expected,
        }
    }
}

/// Whether `bytes` holds exactly one `T` (by size: slot payloads are aligned for
/// any `T` a typed queue accepts).
pub(super) fn size_check<T>(bytes: &[u8]) -> Result<(), WrongSize> {
    if bytes.len() == std::mem::size_of::<T>() {
        Ok(())
    } else {
        Err(WrongSize {
            len: bytes.len(),
            expected: std::mem::size_of::<T>(),
        })
    }
}

/// The value in a slot's bytes, or why not (it is consumed either way).
fn value<T: FromBytes + Immutable + KnownLayout>(bytes: &[u8]) -> Result<&T, WrongSize> {
    T::ref_from_bytes(bytes).map_err(|_| WrongSize {
        len: bytes.len(),
        expected: std::mem::size_of::<T>(),
    })
}

/// The value in a claimed slot's bytes, for writing. The slot holds exactly
/// `size_of::<T>()` bytes, 16-byte aligned (checked at compile time against `T`).
fn value_mut<T: FromBytes + IntoBytes + KnownLayout>(bytes: &mut [u8]) -> &mut T {
    T::mut_from_bytes(bytes).expect("a claimed slot holds exactly one aligned value")
}

/// A copy of a value lent in its slot.
fn read<T: FromBytes + IntoBytes + Immutable + KnownLayout>(value: &T) -> T {
    T::read_from_bytes(value.as_bytes()).expect("a value's own bytes")
}

/// `values` as byte strings, without copying them.
fn as_byte_strings<T: IntoBytes + Immutable>(values: &[T]) -> &[AsBytes<T>] {
    // SAFETY: `AsBytes<T>` is `repr(transparent)` over `T`, so a slice of `T` is a
    // valid slice of `AsBytes<T>` of the same length.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<AsBytes<T>>(), values.len()) }
}
