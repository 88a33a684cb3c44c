//! # shmq — a lock-free MPMC queue in POSIX shared memory
//!
//! Processes on one Linux host exchange byte messages through a bounded ring of
//! fixed-size slots in a named shared-memory segment: no broker, no lock, and no
//! system call on the send/receive path. The ring is Dmitry Vyukov's bounded MPMC
//! queue, extended so that a process killed with `kill -9` at any instant neither
//! wedges the queue nor loses a message whose `send` returned `Ok`.
//!
//! ```no_run
//! use shmq::{Options, Queue};
//!
//! // Process A
//! let queue = Queue::create("orders", &Options::new(1024, 256))?;
//! queue.send(b"one lemonade")?;
//!
//! // Process B
//! let queue = Queue::open("orders")?;
//! let order = queue.recv()?;
//! assert_eq!(order, b"one lemonade");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Delivery semantics
//! - Without crashes each message is delivered to exactly one consumer, and the
//!   messages of one producer are received in the order sent (by any one consumer;
//!   with several consumers, each sees that producer's messages in order).
//! - Capacity is exact: `capacity` messages fit, the next `try_send` is `Full`.
//! - A message whose `send` returned `Ok` is never lost while the host is up. If a
//!   consumer dies holding a message (after claiming, before releasing), that message
//!   is delivered again to another consumer: at-least-once, possibly out of order,
//!   for that message only. A producer that dies before publishing never got `Ok`;
//!   its slot is skipped.
//! - `try_send` may report `Full` while a consumer is still reading the oldest slot,
//!   and `try_recv` may report `Empty` while a producer is still writing the next
//!   one even if later slots are published: Vyukov's ring is FIFO by position, and a
//!   position is only handed over once its owner finishes. Blocking calls wait.
//!
//! ## Modules
//! [`layout`] is the shared-memory format, [`ring`] the algorithm (generic over
//! where its memory lives, model-checked with loom), the platform layer is private,
//! and [`Queue`] is the handle.

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod copy;
pub mod error;
pub mod heap;
pub mod layout;
pub mod ring;
mod sync;

#[cfg(not(loom))]
mod platform;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
pub mod segment;

/// Model-checking support: the primitives the algorithm is written against, for the
/// `loom-tests` crate's platform model.
#[cfg(loom)]
pub mod model {
    pub use crate::sync::{spin_hint, yield_now, AtomicU32, Ordering};
}

pub use error::{Error, RecvError, SendError, TryRecvError, TrySendError};
#[cfg(not(loom))]
pub use queue::{Listing, Queue, WaitStrategy, PARK_SLICE, STUCK_BOUND, SWEEP_INTERVAL};
#[cfg(not(loom))]
pub use segment::{Options, ParticipantInfo, SegmentInfo};

/// Operating-system helpers the `shmq` binary and tests use (pinning, CPU time).
#[cfg(not(loom))]
pub mod os {
    pub use crate::platform::{available_cpus, pin_to_cpu, process_cpu_time};
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
