//! End to end through one local `nats-server -js`, in one run:
//! - **bridged**: shmq segment A → `shmq-bridge out` → JetStream → `shmq-bridge in`
//!   → segment B, from a producer on A to a consumer on B;
//! - **direct** (the baseline): the same async-nats client publishing straight to
//!   JetStream (the same window of unacknowledged publishes as the bridge's
//!   in-flight tasks, the same `Nats-Msg-Id` header) and a pull consumer acking each.
//!
//! Throughput: `COUNT` messages of 64 bytes, from the first send to the last
//! receive. Latency: one message at a time, from its send to its receive, p50/p99.
//! Rounds alternate bridged and direct. `cargo bench -p shmq-bridge`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use common::{numbered, Bridge, NatsServer, Segments};
use futures::StreamExt;
use shmq::{Options, Queue};

const COUNT: u64 = 50_000;
const PINGS: usize = 500;
const SIZE: usize = 64;
const WINDOW: usize = 32;
const ROUNDS: usize = 3;

fn main() {
    if common::nats_server_available("end_to_end").is_none() {
        return;
    }
    let server = NatsServer::start("bench");
    let runtime = common::runtime();
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let bridged = bridged(&server, round);
        let direct = runtime.block_on(direct(&server.url(), round));
        eprintln!(
            "round {round}: bridged {:.0}/s p50 {:?} p99 {:?} | direct {:.0}/s p50 {:?} p99 {:?}",
            bridged.0, bridged.1, bridged.2, direct.0, direct.1, direct.2
        );
        rows.push((bridged, direct));
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let cost = median(rows.iter().map(|(b, d)| d.0 / b.0).collect());
    let p50 = median(
        rows.iter()
            .map(|(b, d)| b.1.as_secs_f64() / d.1.as_secs_f64())
            .collect(),
    );
    let p99 = median(
        rows.iter()
            .map(|(b, d)| b.2.as_secs_f64() / d.2.as_secs_f64())
            .collect(),
    );
    println!(
        "bridged / direct, median of {ROUNDS} rounds: cost per message {cost:.2}× (throughput {:.2}×), latency p50 {p50:.2}×, p99 {p99:.2}×",
        1.0 / cost
    );
}

/// Throughput (messages/s), latency p50 and p99 through the two bridges.
fn bridged(server: &NatsServer, round: usize) -> (f64, Duration, Duration) {
    let stream = format!("BRIDGED{round}");
    let subject = format!("bridged{round}.messages");
    let segments = Segments::new(&format!("bench{round}"), &["a", "b"]);
    let options = Options::new(1024, 256)
        .max_participants(128)
        .max_deliveries(0);
    let a = Queue::create(segments.name(0), &options).expect("segment A");
    let b = Queue::create(segments.name(1), &options).expect("segment B");
    let url = server.url();
    let window = WINDOW.to_string();
    let args = |segment: &str, direction: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = direction.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "--server",
                &url,
                "--stream",
                &stream,
                "--subject",
                &subject,
                "--segment",
                segment,
                "--stats-interval",
                "0",
                "--in-flight",
                &window,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args
    };
    let logs = std::env::temp_dir().join(format!("shmq-bridge-bench-{}", std::process::id()));
    let out_args = args(segments.name(0), &["out"]);
    let in_args = args(segments.name(1), &["in", "--consumer", "bench"]);
    let mut out = Bridge::start(&as_strs(&out_args), logs.with_extension("out"));
    let mut inbound = Bridge::start(&as_strs(&in_args), logs.with_extension("in"));

    // Warm up (connections, stream and consumer creation), then latency, then throughput.
    a.send(&numbered(0, SIZE)).expect("a send");
    b.recv_timeout(Duration::from_secs(30))
        .expect("the bridges run");
    let mut latencies = Vec::with_capacity(PINGS);
    for n in 0..PINGS as u64 {
        let sent = Instant::now();
        a.send(&numbered(n, SIZE)).expect("a send");
        b.recv_timeout(Duration::from_secs(30))
            .expect("a ping comes back");
        latencies.push(sent.elapsed());
    }
    let producer_name = segments.name(0).to_owned();
    let started = Instant::now();
    let producer = std::thread::spawn(move || {
        let a = Queue::open(&producer_name).expect("the producer attaches");
        for n in 0..COUNT {
            a.send(&numbered(n, SIZE)).expect("a send");
        }
    });
    for _ in 0..COUNT {
        b.recv_timeout(Duration::from_secs(30))
            .expect("a message comes through");
    }
    let elapsed = started.elapsed();
    producer.join().expect("the producer");
    out.stop();
    inbound.stop();
    let _ = std::fs::remove_file(logs.with_extension("out"));
    let _ = std::fs::remove_file(logs.with_extension("in"));
    let (p50, p99) = percentiles(latencies);
    (COUNT as f64 / elapsed.as_secs_f64(), p50, p99)
}

/// Throughput (messages/s), latency p50 and p99 straight through JetStream.
async fn direct(url: &str, round: usize) -> (f64, Duration, Duration) {
    let client = async_nats::connect(url).await.expect("the bench connects");
    let context = jetstream::new(client);
    let subject = format!("direct{round}.messages");
    let stream = context
        .get_or_create_stream(stream::Config {
            name: format!("DIRECT{round}"),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("the stream");
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            "bench",
            consumer::pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: WINDOW as i64,
                ..Default::default()
            },
        )
        .await
        .expect("the consumer");
    let mut messages = consumer.messages().await.expect("a message stream");
    let mut next_id = 0u64;
    let mut publish = move |n: u64| {
        next_id += 1;
        PublishMessage::build()
            .payload(numbered(n, SIZE).into())
            .message_id(format!("direct:{round}:{next_id}"))
    };
    let mut latencies = Vec::with_capacity(PINGS);
    for n in 0..PINGS as u64 {
        let sent = Instant::now();
        let ack = context
            .send_publish(subject.clone(), publish(n))
            .await
            .expect("a publish");
        ack.await.expect("stored");
        let message = messages
            .next()
            .await
            .expect("a message")
            .expect("a message");
        message.ack().await.expect("an ack");
        latencies.push(sent.elapsed());
    }
    let started = Instant::now();
    let publisher = {
        let context = context.clone();
        let subject = subject.clone();
        let mut publish = publish;
        tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
            for n in 0..COUNT {
                if pending.len() == WINDOW {
                    let ack: jetstream::context::PublishAckFuture =
                        pending.pop_front().expect("one");
                    ack.await.expect("stored");
                }
                pending.push_back(
                    context
                        .send_publish(subject.clone(), publish(n))
                        .await
                        .expect("a publish"),
                );
            }
            for ack in pending {
                ack.await.expect("stored");
            }
        })
    };
    for _ in 0..COUNT {
        let message = messages
            .next()
            .await
            .expect("a message")
            .expect("a message");
        message.ack().await.expect("an ack");
    }
    let elapsed = started.elapsed();
    publisher.await.expect("the publisher");
    let (p50, p99) = percentiles(latencies);
    (COUNT as f64 / elapsed.as_secs_f64(), p50, p99)
}

fn as_strs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

fn percentiles(mut latencies: Vec<Duration>) -> (Duration, Duration) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}
