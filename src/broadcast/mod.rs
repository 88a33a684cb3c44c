//! Publish/subscribe on a broadcast segment: every message to every subscriber.
//!
//! A [`Publisher`] and any number of [`Subscriber`]s, in any processes, attach to
//! one named segment created in one of two modes ([`SlowSubscriber`]):
//! `Lossless` (publishers wait for the slowest *live* subscriber) or `Overwrite`
//! (publishers never wait; a subscriber that fell a ring behind gets
//! [`TryRecvError::Lagged`] with the exact count it missed, and continues from the
//! oldest message still held). A subscriber receives every message published after
//! it subscribed, each publisher's in order; a torn message is never returned.
//! A killed subscriber stops holding publishers back; a publisher killed between
//! claiming a slot and publishing it never stops subscribers (its slot is skipped).
//!
//! ```
//! use shmq::broadcast::{Publisher, SlowSubscriber, Subscriber};
//! # let name = "doc-broadcast-module";
//! let publisher = Publisher::create(name, &shmq::Options::new(1024, 64), SlowSubscriber::Lossless)?;
//! let first = Subscriber::open(name)?;
//! let second = Subscriber::open(name)?;
//! publisher.publish(b"config v2")?;
//! assert_eq!(first.recv()?, b"config v2");
//! assert_eq!(second.recv()?, b"config v2");
//! # shmq::Queue::unlink(name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The API families
//! As the work queue's: each publish and receive comes as `try_` (never blocks),
//! blocking (per the [`WaitStrategy`](crate::WaitStrategy)), `_timeout` and
//! `_deadline`. Besides copies in and out there are:
//! - **receive into a buffer** ([`Subscriber::try_recv_into`]) and **zero copy**
//!   ([`Subscriber::try_recv_with`]);
//! - **publish in place** ([`Publisher::try_publish_with`] and its blocking
//!   forms): the writer closure fills the slot itself; if it panics, or its process
//!   is killed inside it, the position becomes a skip that subscribers step over;
//! - **batches**: [`Subscriber::try_recv_batch_with`] reads a run of messages with
//!   one cursor advance (a lag or a corrupt slot ends the run and is reported by
//!   the next call); [`Publisher::try_publish_batch`] publishes a slice with one
//!   claim of a run of positions (a publisher killed mid-run leaves the rest of
//!   the run to the sweep, which skips it);
//! - **async** (cargo feature `tokio`): `AsyncSubscriber` (a `Stream` too) and
//!   `AsyncPublisher`, on the process's waker thread, cancel safe.
//!
//! The design, with the orderings and the crash arguments, is in
//! `docs/broadcast.md`; the algorithm is in this module's private `ring.rs`
//! (`recovery.rs`, `wake.rs`), the handles in `handle.rs`, the read-only
//! [`Snapshot`] (what `shmq inspect` shows) in `inspect.rs`.

#[cfg(all(not(loom), feature = "tokio"))]
mod async_handle;
mod error;
#[cfg(not(loom))]
mod handle;
#[cfg(loom)]
mod heap;
#[cfg(not(loom))]
mod inspect;
mod recovery;
mod ring;
mod wake;

pub use crate::layout::SlowSubscriber;
#[cfg(all(not(loom), feature = "tokio"))]
pub use async_handle::{AsyncPublisher, AsyncSubscriber};
pub use error::{PublishError, RecvError, TryPublishError, TryRecvError};
#[cfg(not(loom))]
pub use handle::{Publisher, Subscriber};
#[cfg(not(loom))]
pub use inspect::{RecordInfo, RecordRole, Snapshot};
#[cfg(all(not(loom), feature = "tokio"))]
pub(crate) use recovery::any_claim_outstanding;
#[cfg(not(loom))]
pub(crate) use ring::{initialise, BroadcastMemory};

/// The algorithm's own types, for the loom models (`--cfg loom` builds only).
#[cfg(loom)]
pub mod model {
    pub use super::heap::BroadcastHeap;
    pub use super::ring::{published, writing, Blocked, Broadcast, BroadcastMemory, Role};
    pub use super::wake::Readiness;
}
