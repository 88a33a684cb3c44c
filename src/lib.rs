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
//! ## The API
//! [`Queue`] is the handle: [`Queue::create`], [`Queue::open`],
//! [`Queue::open_or_create`], then sends and receives in every combination of
//! {non-blocking `try_`, blocking, `_timeout`, `_deadline`} × {owned `Vec`
//! (`recv`), into a caller's buffer (`recv_into`), zero copy (`recv_with`)}.
//! [`Options`] sets up a new segment, [`WaitStrategy`] how blocking calls wait.
//! Segments are looked after with [`Queue::list`], [`Queue::inspect`],
//! [`Queue::unlink`] and [`Queue::remove_if_unused`]. Errors are typed enums: see
//! the [`error`](Error) types.
//!
//! ## Inside
//! One module per concern, private: `ring` is the algorithm (generic over where its
//! memory lives, with `recovery` and `wake` as submodules), `layout` every shared
//! byte, `segment` a segment's lifecycle, `shm` the shared-memory `Platform`
//! (liveness and recovery locks, futexes), `platform` the system calls, `handle`
//! the [`Queue`], `wait` the strategies, `admin` listing and inspecting, `sync` the
//! std/loom switch.
//!
//! The loom models (`loom-tests/`) need the algorithm's own types. They get them
//! from the module `model`, which exists only in `--cfg loom` builds: a normal build
//! has no trace of it, so the public API is exactly what is listed here.

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod broadcast;
#[cfg(not(loom))]
mod copy;
mod error;
#[cfg(loom)]
mod heap;
mod layout;
mod ready;
mod ring;
mod sync;
mod typed;

#[cfg(not(loom))]
mod access;
#[cfg(not(loom))]
mod admin;
#[cfg(all(not(loom), feature = "tokio"))]
mod async_queue;
#[cfg(not(loom))]
mod guard;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod name;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod platform;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod shm;
#[cfg(not(loom))]
mod wait;

/// Model-checking support, in `--cfg loom` builds only: the algorithm, its memory
/// on the heap, the layout and the concurrency primitives, for the `loom-tests`
/// crate's models and platform model.
#[cfg(loom)]
pub mod model {
    pub use crate::heap::HeapMemory;
    /// The create/open handshake on a segment's state word.
    pub mod ready {
        pub use crate::ready::{is_ready, publish};
    }
    /// Layout constants the models use.
    pub mod layout {
        pub use crate::layout::POS_MASK;
    }
    pub use crate::ring::{
        epoch_word, Direction, End, Pending, Platform, Readiness, Received, Redelivery,
        Registration, Ring, RingMemory, Scope, Sweep, Unread, Unsent,
    };
    pub use crate::sync::{spin_hint, yield_now, AtomicU32, Ordering};
    /// Layout constants of broadcast segments.
    pub mod broadcast_layout {
        pub use crate::layout::{BroadcastShared, SlowSubscriber};
    }
}

#[cfg(not(loom))]
pub use access::Access;
#[cfg(not(loom))]
pub use admin::{Listed, ParticipantInfo, RecoveryCounts, Removal, SegmentInfo, Waiters};
#[cfg(all(not(loom), feature = "tokio"))]
pub use async_queue::AsyncQueue;
pub use error::{
    Error, GeometryError, HeaderProblem, RecvError, SendError, TrustProblem, TryRecvError,
    TrySendError,
};
#[cfg(not(loom))]
pub use guard::install_sigbus_guard;
#[cfg(not(loom))]
pub use handle::{AbandonError, Delivery, Queue};
#[cfg(not(loom))]
pub use options::Options;
pub use typed::MessageType;
#[cfg(all(not(loom), feature = "zerocopy"))]
pub use typed::{TypedAbandonError, TypedDelivery, TypedQueue};
#[cfg(not(loom))]
pub use wait::WaitStrategy;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
