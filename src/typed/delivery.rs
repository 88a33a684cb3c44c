//! [`TypedDelivery`]: a typed queue's receive guard.

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::queue::{size_check, TypedQueue};
use crate::error::{RecvError, TryRecvError};
use crate::handle::Delivery;

/// A value held in its slot: derefs to `&T` (zero copy), says how many times it
/// has been delivered, and is acknowledged when dropped or given back with
/// [`abandon`](Self::abandon). The typed form of [`Delivery`].
///
/// ```
/// use shmq::{Options, TypedQueue};
///
/// # let name = "doc-typed-delivery";
/// let mut jobs = TypedQueue::<u64>::create(name, &Options::new(4, 0), 1)?;
/// jobs.send(&7)?;
/// let job = jobs.receive()?;
/// assert_eq!((*job, job.deliveries(), job.is_redelivery()), (7, 1, false));
/// assert!(job.abandon().is_ok()); // not done: deliver it again
/// let again = jobs.receive()?; // after the next sweep
/// assert_eq!((*again, again.deliveries()), (7, 2));
/// # drop(again);
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedDelivery<'q, T> {
    delivery: Delivery<'q>,
    _value: PhantomData<&'q T>,
}

impl<T> std::fmt::Debug for TypedDelivery<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedDelivery")
            .field("type", &std::any::type_name::<T>())
            .field("deliveries", &self.delivery.deliveries())
            .finish()
    }
}

impl<'q, T: FromBytes + IntoBytes + Immutable + KnownLayout> TypedDelivery<'q, T> {
    /// Wraps `delivery` if it holds exactly one `T`; otherwise acknowledges it (a
    /// message of another size, sent by an untyped handle, is consumed, as by
    /// [`TypedQueue::try_recv`]) and says why.
    fn new(delivery: Delivery<'q>) -> Result<Self, super::queue::WrongSize> {
        size_check::<T>(&delivery)?;
        Ok(Self {
            delivery,
            _value: PhantomData,
        })
    }

    /// Which delivery of the value this is: `1` the first time; one more for each
    /// consumer that died holding it or abandoned it.
    pub fn deliveries(&self) -> u32 {
        self.delivery.deliveries()
    }

    /// Whether the value was delivered before: handle it idempotently.
    pub fn is_redelivery(&self) -> bool {
        self.delivery.is_redelivery()
    }

    /// Gives the value back unacknowledged, for another delivery (see
    /// [`Delivery::abandon`]). Fails, handing the delivery back, only when every
    /// participant record is in use.
    pub fn abandon(self) -> Result<(), TypedAbandonError<'q, T>> {
        self.delivery.abandon().map_err(|e| TypedAbandonError {
            delivery: TypedDelivery {
                delivery: e.delivery,
                _value: PhantomData,
            },
        })
    }
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Deref for TypedDelivery<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        T::ref_from_bytes(&self.delivery)
            .expect("the size was checked on receipt and slot payloads are 16-byte aligned")
    }
}

/// Why [`TypedDelivery::abandon`] kept the value: every participant record is in
/// use. The delivery is handed back, still held.
#[derive(Debug, thiserror::Error)]
#[error(
    "no free participant record to carry the abandoned value: it is still yours; drop it to acknowledge, or create the segment with more max_participants"
)]
pub struct TypedAbandonError<'q, T> {
    /// The value, still held.
    pub delivery: TypedDelivery<'q, T>,
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> TypedQueue<T> {
    /// Dequeues the next value if there is one, holding it in its slot as a
    /// [`TypedDelivery`]: acknowledged when dropped, or abandoned for another
    /// delivery. One held value per handle (hence `&mut self`). A message of
    /// another size is consumed and reported as `WrongSize`.
    pub fn try_receive(&mut self) -> Result<TypedDelivery<'_, T>, TryRecvError> {
        let delivery = self.as_queue_mut().try_receive()?;
        Ok(TypedDelivery::new(delivery)?)
    }

    /// Like [`try_receive`](Self::try_receive), waiting while the queue is empty.
    pub fn receive(&mut self) -> Result<TypedDelivery<'_, T>, RecvError> {
        let delivery = self.as_queue_mut().receive()?;
        Ok(TypedDelivery::new(delivery)?)
    }

    /// Like [`receive`](Self::receive), waiting at most `timeout`.
    pub fn receive_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<TypedDelivery<'_, T>, RecvError> {
        let delivery = self.as_queue_mut().receive_timeout(timeout)?;
        Ok(TypedDelivery::new(delivery)?)
    }

    /// Like [`receive`](Self::receive), waiting until `deadline`.
    pub fn receive_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<TypedDelivery<'_, T>, RecvError> {
        let delivery = self.as_queue_mut().receive_deadline(deadline)?;
        Ok(TypedDelivery::new(delivery)?)
    }
}
