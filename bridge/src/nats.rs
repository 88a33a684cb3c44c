//! The JetStream side: connecting (with reconnection for ever, and connection
//! events on stderr), the stream with work-queue retention, the durable pull
//! consumer.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::BridgeError;

/// Where and how to reach JetStream, and the stream to use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// A `.creds` file (user JWT and nkey seed), if the server wants one.
    pub credentials: Option<PathBuf>,
    /// Stream name.
    pub stream: String,
    /// Subject the bridge publishes to (out) or consumes from (in).
    pub subject: String,
    /// The stream's duplicate window, if the bridge creates it: redelivered copies
    /// that reach JetStream within it are dropped.
    pub duplicate_window: Duration,
}

/// Connects, retrying the first connection too, and reconnecting for ever after a
/// loss; connection events go to stderr.
pub async fn connect(endpoint: &Endpoint) -> Result<async_nats::Client, BridgeError> {
    let options = match &endpoint.credentials {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| BridgeError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    options
        .name("shmq-bridge")
        .max_reconnects(None)
        .retry_on_initial_connect()
        .event_callback(|event| async move { eprintln!("shmq-bridge: nats {event}") })
        .connect(endpoint.url.as_str())
        .await
        .map_err(|source| BridgeError::Connect {
            url: endpoint.url.clone(),
            source,
        })
}

/// The stream `endpoint.stream`, created for `endpoint.subject` with work-queue
/// retention (each message kept until one consumer acknowledges it) if missing.
pub async fn stream(
    context: &jetstream::Context,
    endpoint: &Endpoint,
) -> Result<stream::Stream, BridgeError> {
    let config = stream::Config {
        name: endpoint.stream.clone(),
        subjects: vec![endpoint.subject.clone()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: endpoint.duplicate_window,
        ..Default::default()
    };
    let failed = |detail: String| BridgeError::Stream {
        stream: endpoint.stream.clone(),
        subject: endpoint.subject.clone(),
        detail,
    };
    let mut stream = context
        .get_or_create_stream(config)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let info = stream.info().await.map_err(|e| failed(e.to_string()))?;
    if info.config.retention != stream::RetentionPolicy::WorkQueue {
        eprintln!(
            "shmq-bridge: warning: stream `{}` exists with {:?} retention, not work-queue: messages stay after they are acknowledged",
            endpoint.stream, info.config.retention
        );
    }
    Ok(stream)
}

/// The consumer's settings the bridge chooses.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable name.
    pub name: String,
    /// How long JetStream waits for an ack before delivering a message again.
    pub ack_wait: Duration,
    /// Messages delivered and not yet acknowledged, at most.
    pub max_ack_pending: i64,
}

/// The durable pull consumer `settings.name` on `stream`, for `subject`, with
/// explicit acks; created if missing (an existing one keeps its settings).
pub async fn consumer(
    stream: &stream::Stream,
    subject: &str,
    settings: &ConsumerSettings,
) -> Result<consumer::PullConsumer, BridgeError> {
    let config = consumer::pull::Config {
        durable_name: Some(settings.name.clone()),
        filter_subject: subject.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_ack_pending: settings.max_ack_pending,
        max_deliver: -1,
        ..Default::default()
    };
    stream
        .get_or_create_consumer(&settings.name, config)
        .await
        .map_err(|e| BridgeError::Consumer {
            consumer: settings.name.clone(),
            stream: stream.cached_info().config.name.clone(),
            detail: e.to_string(),
        })
}
