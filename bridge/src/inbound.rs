//! **in**: a durable JetStream pull consumer to a local segment.
//!
//! One task pulls at most as many messages as the segment has room for (and at
//! most `batch`), sends each into the segment, and acknowledges it to JetStream
//! only after the send returned `Ok`. A full segment therefore holds back the next
//! pull; a send that waits long tells JetStream the message is still in progress,
//! so it is not delivered again meanwhile. A bridge killed between a send and its
//! ack leaves a message JetStream delivers again: at-least-once, and the copy is
//! counted (`duplicates`) by the bridge that gets it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer::PullConsumer, AckKind, Message};
use futures::StreamExt;
use shmq::{AsyncQueue, SendError};

use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::BridgeError;

/// How long one pull request waits for messages before the bridge pulls again.
const PULL_EXPIRY: Duration = Duration::from_secs(1);
/// How long to wait before pulling again when the segment has no room.
const FULL_PAUSE: Duration = Duration::from_millis(2);
/// How long JetStream waits before offering again a message the segment refused
/// as too large.
const TOO_LARGE_DELAY: Duration = Duration::from_secs(5);

/// The in-direction's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Messages per pull, at most.
    pub batch: usize,
    /// The consumer's ack wait: a send blocked on a full segment reports progress
    /// three times per ack wait.
    pub ack_wait: Duration,
}

/// Carries messages from `consumer` into `queue`'s segment until `shutdown` (the
/// messages already received are finished) or a local error.
pub async fn run(
    consumer: PullConsumer,
    mut queue: AsyncQueue,
    settings: Settings,
    stats: Arc<Stats>,
    mut shutdown: Shutdown,
) -> Result<(), BridgeError> {
    let mut backoff = Duration::from_millis(50);
    while !shutdown.is_stopping() {
        let room = queue.get_ref().capacity() - queue.get_ref().len();
        let wanted = settings
            .batch
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        if wanted == 0 {
            pause(FULL_PAUSE, &mut shutdown).await;
            continue;
        }
        let pull = consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages();
        let mut messages = tokio::select! {
            biased;
            () = shutdown.stopping() => break,
            pulled = pull => match pulled {
                Ok(messages) => messages,
                Err(e) => {
                    Stats::bump(&stats.retries);
                    eprintln!("shmq-bridge in: pull failed ({e}); retrying");
                    pause(backoff, &mut shutdown).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(50);
        loop {
            // Messages the server sends after this stops waiting are delivered,
            // unacknowledged, and JetStream offers them again after the ack wait.
            let next = tokio::select! {
                biased;
                () = shutdown.stopping() => break,
                next = messages.next() => next,
            };
            match next {
                None => break,
                Some(Ok(message)) => {
                    deliver(&mut queue, &message, settings, &stats, &mut shutdown).await?
                }
                Some(Err(e)) => {
                    Stats::bump(&stats.retries);
                    eprintln!("shmq-bridge in: pull interrupted ({e}); pulling again");
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Sleeps `duration`, or less if `shutdown` comes.
async fn pause(duration: Duration, shutdown: &mut Shutdown) {
    tokio::select! {
        () = shutdown.stopping() => {}
        () = tokio::time::sleep(duration) => {}
    }
}

/// Sends one message into the segment, then acknowledges it to JetStream; or gives
/// it back to JetStream (a negative ack) if the segment refuses it as too large or
/// `shutdown` comes while the segment is full.
async fn deliver(
    queue: &mut AsyncQueue,
    message: &Message,
    settings: Settings,
    stats: &Stats,
    shutdown: &mut Shutdown,
) -> Result<(), BridgeError> {
    if message.info().is_ok_and(|info| info.delivered > 1) {
        Stats::bump(&stats.duplicates);
    }
    Stats::bump(&stats.in_flight);
    let outcome = send_then_ack(queue, message, settings, stats, shutdown).await;
    stats
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    outcome
}

/// [`deliver`]'s work, once the message is counted in flight.
async fn send_then_ack(
    queue: &mut AsyncQueue,
    message: &Message,
    settings: Settings,
    stats: &Stats,
    shutdown: &mut Shutdown,
) -> Result<(), BridgeError> {
    let progress_every = (settings.ack_wait / 3).max(Duration::from_millis(100));
    let sent = loop {
        tokio::select! {
            biased;
            sent = queue.send(&message.payload) => break sent,
            () = tokio::time::sleep(progress_every) => {
                // Best effort: if it is lost, the message may come again (a
                // duplicate), never go missing.
                let _ = message.ack_with(AckKind::Progress).await;
            }
            () = shutdown.stopping() => {
                give_back(message, None, stats).await;
                return Ok(());
            }
        }
    };
    match sent {
        Ok(()) => {
            Stats::bump(&stats.carried);
            if message.ack().await.is_err() {
                // The server will deliver it again: a duplicate in the segment.
                Stats::bump(&stats.retries);
            }
            Ok(())
        }
        Err(SendError::TooLarge { .. }) => {
            eprintln!(
                "shmq-bridge in: a message of {} bytes is larger than segment `{}` accepts ({} bytes): left in JetStream, offered again in {TOO_LARGE_DELAY:?}; recreate the segment with a larger --max-message-size",
                message.payload.len(),
                queue.get_ref().name(),
                queue.get_ref().max_message_size(),
            );
            give_back(message, Some(TOO_LARGE_DELAY), stats).await;
            Ok(())
        }
        Err(source) => {
            give_back(message, None, stats).await;
            Err(BridgeError::Send {
                segment: queue.get_ref().name().to_owned(),
                source,
            })
        }
    }
}

/// A negative ack: JetStream offers the message again (after `delay`).
async fn give_back(message: &Message, delay: Option<Duration>, stats: &Stats) {
    Stats::bump(&stats.returned);
    // If the nak is lost, the ack wait brings the message back all the same.
    let _ = message.ack_with(AckKind::Nak(delay)).await;
}
