//! # shmq-bridge — shmq segments to and from NATS JetStream, with nothing lost
//!
//! Two directions, each a loop over one local segment and one JetStream stream:
//! - [`out`]: receives from a segment and publishes to a subject. A message leaves
//!   the segment only once JetStream acknowledged it: the bridge holds the message's
//!   [`shmq::Delivery`] across the publish and its `PubAck`, so a bridge killed before
//!   the ack leaves the message in the segment, redelivered by shmq. Each publish
//!   carries a `Nats-Msg-Id` made of the segment's identity and the message's
//!   position, the same for every delivery of the message, so JetStream's duplicate
//!   window drops a redelivered copy it already stored.
//! - [`inbound`] (`in` on the command line): pulls from a durable JetStream consumer
//!   and sends into a segment, acknowledging to JetStream only after the local send
//!   returned `Ok`. A full segment holds the pull back; nothing is dropped.
//!
//! [`nats`] connects and sets up the stream (work-queue retention) and the consumer;
//! [`stats`] counts what happened and prints it on stderr; [`shutdown`] is the signal
//! that lets in-flight messages finish.

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod error;
pub mod inbound;
pub mod nats;
pub mod out;
pub mod shutdown;
pub mod stats;

pub use error::BridgeError;

/// Runs `attach` (opening a segment, or cloning a handle) until it succeeds,
/// waiting while the segment's participant table is full: after a bridge is killed,
/// the records of its tasks stay taken until the messages they held are delivered
/// again, which the new bridge's own receives do. `None` if `shutdown` comes first.
pub async fn attach<T>(
    segment: &str,
    mut attach: impl FnMut() -> Result<T, shmq::Error>,
    shutdown: &shutdown::Shutdown,
) -> Result<Option<T>, BridgeError> {
    let mut shutdown = shutdown.clone();
    let mut told = false;
    loop {
        match attach() {
            Ok(handle) => return Ok(Some(handle)),
            Err(shmq::Error::ParticipantTableFull { .. }) => {
                if !told {
                    eprintln!("shmq-bridge: every participant record of segment `{segment}` is taken (a killed bridge's tasks hold messages?); waiting for records to free up");
                    told = true;
                }
            }
            Err(source) => {
                return Err(BridgeError::Segment {
                    segment: segment.to_owned(),
                    source: Box::new(source),
                })
            }
        }
        tokio::select! {
            () = shutdown.stopping() => return Ok(None),
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}
