//! **out**: a local segment to a JetStream subject.
//!
//! Each of `in_flight` tasks owns a handle on the segment and holds at most one
//! message: it receives a [`Delivery`], publishes a copy with a `Nats-Msg-Id`, waits
//! for JetStream's `PubAck`, and only then drops the delivery, which acknowledges it
//! to shmq. A bridge killed at any point before that leaves the message claimed by a
//! dead participant, and shmq delivers it again (to the next bridge). The id is the
//! segment's name and creation time and the message's position, none of which
//! changes on redelivery, so a copy JetStream already stored is dropped by its
//! duplicate window (and counted here as a duplicate).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use shmq::{AsyncQueue, Delivery};
use tokio::task::JoinSet;

use crate::shutdown::{Shutdown, Trigger};
use crate::stats::Stats;
use crate::BridgeError;

/// The de-duplication id of the message at `position` of the segment `segment`
/// created at `created_ns` (nanoseconds since the Unix epoch): the same for every
/// delivery of that message, different for every other message of any segment.
///
/// ```
/// assert_eq!(shmq_bridge::out::message_id("jobs", 17, 5), "shmq:jobs:17:5");
/// ```
pub fn message_id(segment: &str, created_ns: u128, position: u64) -> String {
    format!("shmq:{segment}:{created_ns}:{position}")
}

/// Carries messages from `queue`'s segment to `subject` until `shutdown` (then
/// finishes the messages held) or an error (then raises `stop` for the others and
/// returns the first error). Runs `in_flight` tasks on the current `LocalSet`.
pub async fn run(
    context: jetstream::Context,
    subject: String,
    queue: AsyncQueue,
    in_flight: usize,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    stop: Arc<Trigger>,
) -> Result<(), BridgeError> {
    let segment = queue.get_ref().name().to_owned();
    let mut workers = JoinSet::new();
    for _ in 0..in_flight {
        let Some(handle) = crate::attach(&segment, || queue.try_clone(), &shutdown).await? else {
            break; // stopping
        };
        let publisher = Publisher {
            context: context.clone(),
            subject: subject.clone(),
            stats: Arc::clone(&stats),
        };
        workers.spawn_local(carry(handle, publisher, shutdown.clone()));
    }
    drop(queue);
    let mut outcome = Ok(());
    while let Some(joined) = workers.join_next().await {
        let result = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        if let Err(e) = result {
            stop.stop();
            if outcome.is_ok() {
                outcome = Err(e);
            }
        }
    }
    outcome
}

/// Where and how a task publishes.
struct Publisher {
    context: jetstream::Context,
    subject: String,
    stats: Arc<Stats>,
}

/// One task: receive, publish, wait for the ack, acknowledge; until `shutdown`.
async fn carry(
    mut queue: AsyncQueue,
    publisher: Publisher,
    mut shutdown: Shutdown,
) -> Result<(), BridgeError> {
    let segment = queue.get_ref().name().to_owned();
    let created_ns = queue
        .get_ref()
        .created()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    loop {
        let delivery = tokio::select! {
            biased;
            () = shutdown.stopping() => return Ok(()),
            received = queue.receive() => received.map_err(|source| BridgeError::Receive {
                segment: segment.clone(),
                source,
            })?,
        };
        let held = Held::new(delivery, &publisher.stats);
        let id = message_id(&segment, created_ns, held.position());
        let payload = Bytes::copy_from_slice(held.bytes());
        if publisher.publish(&id, payload, &mut shutdown).await {
            held.acknowledge();
        }
        // Otherwise `held` is dropped here: given back to shmq.
    }
}

impl Publisher {
    /// Publishes until JetStream acknowledges (`true`), retrying with backoff
    /// through disconnections; `false` if the server refuses the message for good
    /// (too large) or `shutdown` comes while retrying.
    async fn publish(&self, id: &str, payload: Bytes, shutdown: &mut Shutdown) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            let kind = match self
                .context
                .send_publish(self.subject.clone(), message)
                .await
            {
                Ok(ack) => match ack.await {
                    Ok(ack) => {
                        if ack.duplicate {
                            Stats::bump(&self.stats.duplicates);
                        }
                        Stats::bump(&self.stats.carried);
                        return true;
                    }
                    Err(e) => e.kind(),
                },
                Err(e) => e.kind(),
            };
            if kind == PublishErrorKind::MaxPayloadExceeded {
                eprintln!(
                    "shmq-bridge out: message {id} is larger than the server's max_payload: given back to the segment (after its max_deliveries it goes to the dead-letter segment)"
                );
                return false;
            }
            Stats::bump(&self.stats.retries);
            if backoff >= Duration::from_millis(800) {
                eprintln!("shmq-bridge out: publish of {id} failed ({kind}); retrying");
            }
            tokio::select! {
                biased;
                () = shutdown.stopping() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// A message held across its publish: acknowledged to shmq by
/// [`acknowledge`](Held::acknowledge), given back for another delivery if dropped
/// otherwise (a task dropped mid-publish never acknowledges an unpublished message).
struct Held<'q> {
    delivery: Option<Delivery<'q>>,
    stats: &'q Stats,
}

impl<'q> Held<'q> {
    fn new(delivery: Delivery<'q>, stats: &'q Stats) -> Self {
        Stats::bump(&stats.in_flight);
        Self {
            delivery: Some(delivery),
            stats,
        }
    }

    fn delivery(&self) -> &Delivery<'q> {
        // Present from `new` until `acknowledge` or `drop`, which consume `self`.
        self.delivery.as_ref().expect("a held message is present")
    }

    fn position(&self) -> u64 {
        self.delivery().position()
    }

    fn bytes(&self) -> &[u8] {
        self.delivery()
    }

    /// JetStream stored the message: let it leave the segment.
    fn acknowledge(mut self) {
        drop(self.delivery.take());
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.stats
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let Some(delivery) = self.delivery.take() else {
            return;
        };
        Stats::bump(&self.stats.returned);
        if let Err(refused) = delivery.abandon() {
            // Every participant record is in use, so the message cannot be handed
            // back now. Dropping it would acknowledge it unpublished; leaking the
            // guard instead leaves the claim on this handle's record, and the
            // message is delivered again once this process exits.
            eprintln!("shmq-bridge out: {refused}");
            std::mem::forget(refused.delivery);
        }
    }
}
