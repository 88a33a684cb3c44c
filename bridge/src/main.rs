//! `shmq-bridge`: carries messages between a local shmq segment and a NATS
//! JetStream stream, in one direction per process (`out` or `in`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shmq::{AsyncQueue, Options};
use shmq_bridge::nats::{self, ConsumerSettings, Endpoint};
use shmq_bridge::shutdown::{self, Trigger};
use shmq_bridge::stats::{self, Stats};
use shmq_bridge::{inbound, out, BridgeError};

/// Carries messages between a shmq segment and NATS JetStream, with nothing lost:
/// a message leaves its source only once its destination has it.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    direction: Direction,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum Direction {
    /// Segment → JetStream: receive from the segment, publish to the subject; a
    /// message leaves the segment once JetStream acknowledged it.
    Out,
    /// JetStream → segment: pull from the durable consumer, send into the segment;
    /// a message is acknowledged to JetStream once the segment has it.
    In {
        /// Durable pull consumer name (created if missing).
        #[arg(long, default_value = "shmq-bridge")]
        consumer: String,
        /// Seconds JetStream waits for an ack before delivering a message again
        /// (when the bridge creates the consumer).
        #[arg(long, default_value_t = 30.0)]
        ack_wait: f64,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// NATS server URL.
    #[arg(long, global = true, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// JetStream stream (created with work-queue retention if missing).
    #[arg(long, global = true, default_value = "SHMQ")]
    stream: String,
    /// Subject published to (out) or consumed from (in).
    #[arg(long, global = true, default_value = "shmq.messages")]
    subject: String,
    /// Local shmq segment (opened, or created with --capacity and --max-message-size).
    #[arg(long, global = true, default_value = "bridge")]
    segment: String,
    /// Capacity in messages, if the bridge creates the segment.
    #[arg(long, global = true, default_value_t = 1024)]
    capacity: u64,
    /// Largest message in bytes, if the bridge creates the segment.
    #[arg(long, global = true, default_value_t = 4096)]
    max_message_size: u64,
    /// Deliveries a message gets before shmq moves it to the dead-letter segment
    /// `SEGMENT.dead`, if the bridge creates the segment (0: no limit; a message
    /// held by bridges killed in a row is then always delivered again).
    #[arg(long, global = true, default_value_t = 0)]
    max_deliveries: u32,
    /// Messages per pull (in).
    #[arg(long, global = true, default_value_t = 64)]
    batch: usize,
    /// Messages held at once, waiting for JetStream: concurrent publishes (out),
    /// the consumer's max ack pending (in).
    #[arg(long, global = true, default_value_t = 32)]
    in_flight: usize,
    /// A NATS credentials (.creds) file.
    #[arg(long, global = true)]
    creds: Option<PathBuf>,
    /// Seconds of the stream's duplicate window (when the bridge creates the stream).
    #[arg(long, global = true, default_value_t = 120.0)]
    duplicate_window: f64,
    /// Seconds between progress lines on stderr (0: none; a last line is always
    /// printed at exit).
    #[arg(long, global = true, default_value_t = 5.0)]
    stats_interval: f64,
}

fn seconds(name: &str, value: f64) -> Result<Duration, BridgeError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| BridgeError::Limits(format!("--{name} must be a number of seconds ≥ 0")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shmq-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Deliveries are held across awaits and are not `Send`: every task runs on
    // this thread.
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, bridge(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmq-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bridge(cli: Cli) -> Result<(), BridgeError> {
    let common = &cli.common;
    if common.in_flight == 0 || common.batch == 0 {
        return Err(BridgeError::Limits(
            "--in-flight and --batch must be at least 1".into(),
        ));
    }
    let endpoint = Endpoint {
        url: common.server.clone(),
        credentials: common.creds.clone(),
        stream: common.stream.clone(),
        subject: common.subject.clone(),
        duplicate_window: seconds("duplicate-window", common.duplicate_window)?,
    };
    // Participant records: one per in-flight task and the handle they are cloned
    // from, twice over (a bridge restarted after `kill -9` attaches while the dead
    // one's records still carry the messages it held), and room for other users.
    let participants = (2 * (common.in_flight as u64 + 1) + 16).max(64);
    let options = Options::new(common.capacity, common.max_message_size)
        .max_participants(participants)
        .max_deliveries(common.max_deliveries);
    let (trigger, shutdown) = shutdown::channel();
    let trigger = Arc::new(trigger);
    tokio::task::spawn_local(stop_on_signal(Arc::clone(&trigger)));
    let open = || AsyncQueue::open_or_create(&common.segment, &options);
    let Some(queue) = shmq_bridge::attach(&common.segment, open, &shutdown).await? else {
        return Ok(());
    };
    // Setting up waits for the server (the first connection is retried, the
    // stream request times out after a while); a signal meanwhile stops.
    let setup = async {
        let client = nats::connect(&endpoint).await?;
        let context = async_nats::jetstream::new(client.clone());
        let stream = nats::stream(&context, &endpoint).await?;
        Ok::<_, BridgeError>((client, context, stream))
    };
    let mut waiting = shutdown.clone();
    let (client, context, stream) = tokio::select! {
        ready = setup => ready?,
        () = waiting.stopping() => return Ok(()),
    };
    let stats = Arc::new(Stats::default());
    let interval = seconds("stats-interval", common.stats_interval)?;
    let name = match cli.direction {
        Direction::Out => "out",
        Direction::In { .. } => "in",
    };
    let reporter = {
        let (stats, shutdown) = (Arc::clone(&stats), shutdown.clone());
        tokio::task::spawn_local(
            async move { stats::report(name, &stats, interval, shutdown).await },
        )
    };
    eprintln!(
        "shmq-bridge {name}: segment `{}` {} stream `{}` subject `{}` at {}",
        common.segment,
        if name == "out" { "→" } else { "←" },
        common.stream,
        common.subject,
        common.server
    );
    let outcome = match cli.direction {
        Direction::Out => {
            let subject = common.subject.clone();
            let stats = Arc::clone(&stats);
            out::run(
                context,
                subject,
                queue,
                common.in_flight,
                stats,
                shutdown,
                trigger,
            )
            .await
        }
        Direction::In { consumer, ack_wait } => {
            let ack_wait = seconds("ack-wait", ack_wait)?;
            let settings = ConsumerSettings {
                name: consumer,
                ack_wait,
                max_ack_pending: i64::try_from(common.in_flight).unwrap_or(i64::MAX),
            };
            let consumer = nats::consumer(&stream, &common.subject, &settings).await?;
            let settings = inbound::Settings {
                batch: common.batch,
                ack_wait,
            };
            inbound::run(consumer, queue, settings, Arc::clone(&stats), shutdown).await
        }
    };
    // Acks and publishes still buffered in the client go out before we exit.
    if let Err(e) = client.flush().await {
        eprintln!("shmq-bridge {name}: flushing the NATS connection failed: {e}");
    }
    reporter.abort();
    eprintln!("shmq-bridge {name}: stopped: {}", stats.line());
    outcome
}

/// Raises the stop signal on the first SIGINT or SIGTERM.
async fn stop_on_signal(trigger: Arc<Trigger>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("shmq-bridge: cannot install signal handlers: stop it with SIGKILL (messages held are redelivered)");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("shmq-bridge: stopping: finishing the messages in flight");
    trigger.stop();
}
