//! The bridge against a real `nats-server -js`: two segments and two bridges
//! through one server, bridges killed with `kill -9` mid-stream, and the server
//! restarted mid-stream. Each test starts its own server on a free loopback port
//! (skipped, with a message, only when `nats-server` is absent and `CI` is unset).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{
    drain_until, nats_server_available, numbered, read_stream, runtime, stream_messages, Bridge,
    NatsServer, Segments,
};
use shmq::{Options, Queue};

const MESSAGE_SIZE: usize = 64;

/// A segment as the tests use it: redelivered for ever (no dead letters), so a
/// message held by many killed bridges in a row is still delivered; participant
/// records for two bridges (a restarted one and the records its killed predecessor
/// left holding messages) and the test's own handles.
fn segment(name: &str) -> Queue {
    let options = Options::new(1024, 256)
        .max_deliveries(0)
        .max_participants(128);
    Queue::create(name, &options).expect("a test segment")
}

/// The arguments every bridge of a test shares, then `extra`.
fn arguments<'a>(
    server: &'a str,
    stream: &'a str,
    segment: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--server",
        server,
        "--stream",
        stream,
        "--subject",
        "",
        "--segment",
        segment,
        "--stats-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    args
}

/// Sends `count` numbered messages into `segment` from another thread, pausing
/// `pause` after every 100 (to keep a stream going while a test kills things).
fn produce(segment: String, count: u64, pause: Duration) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let queue = Queue::open(&segment).expect("the producer attaches");
        for n in 0..count {
            // A bound, so a bridge that died for good fails the test, not hangs it.
            queue
                .send_timeout(&numbered(n, MESSAGE_SIZE), Duration::from_secs(60))
                .expect("a send within a minute");
            if n % 100 == 99 {
                thread::sleep(pause);
            }
        }
    })
}

/// Receives whatever else arrives within `quiet`: nothing should.
fn settle(queue: &Queue, counts: &mut [u32], quiet: Duration) {
    let deadline = Instant::now() + quiet;
    drain_until(queue, counts, quiet * 2, |_| Instant::now() >= deadline);
}

/// A small pseudo-random pause in [low, low + spread) milliseconds.
fn jitter(state: &mut u64, low: u64, spread: u64) -> Duration {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Duration::from_millis(low + (*state >> 33) % spread)
}

fn subject_for(stream: &str) -> String {
    format!("{}.messages", stream.to_lowercase())
}

#[test]
fn a_to_b_through_one_server_carries_every_message_exactly_once() {
    let test = "a_to_b";
    let Some(()) = nats_server_available(test) else {
        return;
    };
    let server = NatsServer::start(test);
    let segments = Segments::new("ab", &["a", "b"]);
    let (a, b) = (segment(segments.name(0)), segment(segments.name(1)));
    let url = server.url();
    let subject = subject_for("AB");
    let logs = std::env::temp_dir().join(format!("shmq-bridge-ab-{}", std::process::id()));
    let mut out_args = arguments(&url, "AB", segments.name(0), &["out"]);
    out_args[5] = &subject;
    let mut in_args = arguments(&url, "AB", segments.name(1), &["in", "--consumer", "ab"]);
    in_args[5] = &subject;
    let mut out = Bridge::start(&out_args, logs.with_extension("out"));
    let mut inbound = Bridge::start(&in_args, logs.with_extension("in"));

    const COUNT: u64 = 20_000;
    let started = Instant::now();
    let producer = produce(segments.name(0).to_owned(), COUNT, Duration::ZERO);
    let mut counts = vec![0u32; COUNT as usize];
    drain_until(&b, &mut counts, Duration::from_secs(120), |counts| {
        counts.iter().all(|&c| c > 0)
    });
    let elapsed = started.elapsed();
    producer.join().expect("the producer finishes");
    settle(&b, &mut counts, Duration::from_millis(500));

    assert!(
        out.stop().success(),
        "bridge out exits cleanly: {}",
        out.log()
    );
    assert!(
        inbound.stop().success(),
        "bridge in exits cleanly: {}",
        inbound.log()
    );
    let runtime = runtime();
    assert_eq!(
        stream_messages(&runtime, &url, "AB"),
        0,
        "every message was acknowledged"
    );
    assert!(
        counts.iter().all(|&c| c == 1),
        "each message arrived exactly once"
    );
    assert!(
        (a.is_empty(), b.is_empty()) == (true, true),
        "both segments are empty"
    );
    // Retries are not counted against the bridges: on a loaded machine a publish or
    // pull can time out and be tried again. What must hold is the accounting: every
    // message carried once, none stored twice, none handed back.
    let expected = format!("stopped: carried={COUNT} duplicates=0 retries=");
    for log in [out.log(), inbound.log()] {
        let line = log
            .lines()
            .find(|line| line.contains(&expected))
            .unwrap_or_else(|| panic!("the bridges account for every message: {log}"));
        assert!(
            line.contains(" returned=0 in_flight=0"),
            "nothing handed back, nothing left in flight: {log}"
        );
    }
    eprintln!(
        "a_to_b: {COUNT} messages of {MESSAGE_SIZE} bytes A → JetStream → B in {elapsed:?} ({:.0}/s)",
        COUNT as f64 / elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_file(logs.with_extension("out"));
    let _ = std::fs::remove_file(logs.with_extension("in"));
}

#[test]
fn out_bridge_killed_ten_times_mid_stream_loses_nothing_and_stores_no_duplicate() {
    let test = "out_killed";
    let Some(()) = nats_server_available(test) else {
        return;
    };
    let server = NatsServer::start(test);
    let segments = Segments::new("outkill", &["a"]);
    let a = segment(segments.name(0));
    let url = server.url();
    let subject = subject_for("OUTKILL");
    let log = std::env::temp_dir().join(format!("shmq-bridge-outkill-{}.log", std::process::id()));
    let mut args = arguments(&url, "OUTKILL", segments.name(0), &["out"]);
    args[5] = &subject;
    let mut out = Bridge::start(&args, log.clone());
    let runtime = runtime();

    const COUNT: u64 = 30_000;
    const KILLS: usize = 10;
    let producer = produce(
        segments.name(0).to_owned(),
        COUNT,
        Duration::from_millis(10),
    );
    let mut seed = u64::from(std::process::id());
    let mut stored_at_kill = Vec::new();
    for _ in 0..KILLS {
        thread::sleep(jitter(&mut seed, 80, 120));
        out.kill_and_restart();
        stored_at_kill.push(stream_messages(&runtime, &url, "OUTKILL"));
    }
    assert!(
        stored_at_kill[0] > 0 && stored_at_kill[KILLS - 1] < COUNT,
        "the kills fell mid-stream (messages stored at each kill: {stored_at_kill:?})"
    );
    producer.join().expect("the producer finishes");
    let deadline = Instant::now() + Duration::from_secs(120);
    while stream_messages(&runtime, &url, "OUTKILL") < COUNT || !a.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stream did not fill: {}",
            out.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        out.stop().success(),
        "the last bridge exits cleanly: {}",
        out.log()
    );

    let mut numbers = read_stream(&runtime, &url, "OUTKILL", &subject);
    assert_eq!(
        numbers.len() as u64,
        COUNT,
        "the stream holds each message once"
    );
    numbers.sort_unstable();
    assert!(
        numbers.iter().copied().eq(0..COUNT),
        "no message is missing or repeated"
    );
    let last = out.log();
    let summary = last
        .lines()
        .rfind(|l| l.contains("stopped:"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "out_killed: {KILLS} kill -9s, stored at each: {stored_at_kill:?}; {COUNT} messages in the stream, 0 lost, 0 repeated; the last bridge: {summary} (duplicates = redelivered copies JetStream's window dropped)"
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn in_bridge_killed_ten_times_mid_stream_loses_nothing_and_bounds_duplicates() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let test = "in_killed";
    let Some(()) = nats_server_available(test) else {
        return;
    };
    let server = NatsServer::start(test);
    let segments = Segments::new("inkill", &["b"]);
    // A small segment and a paced reader, so the bridge waits on a full segment
    // and the stream lasts through the kills.
    let b = Queue::create(segments.name(0), &Options::new(64, 256).max_deliveries(0))
        .expect("a test segment");
    let url = server.url();
    let subject = subject_for("INKILL");
    const COUNT: u64 = 20_000;
    const KILLS: u64 = 10;
    const IN_FLIGHT: u64 = 32;
    let runtime = runtime();
    runtime.block_on(async {
        let client = async_nats::connect(url.as_str())
            .await
            .expect("the test connects");
        let context = async_nats::jetstream::new(client);
        context
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "INKILL".into(),
                subjects: vec![subject.clone()],
                retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .expect("the stream");
        // In chunks: the client allows a bounded number of acks outstanding, and
        // waits for a permit, so acks must be awaited before more are asked for.
        for chunk in (0..COUNT).collect::<Vec<_>>().chunks(500) {
            let mut acks = Vec::new();
            for &n in chunk {
                let payload = numbered(n, MESSAGE_SIZE).into();
                acks.push(
                    context
                        .publish(subject.clone(), payload)
                        .await
                        .expect("a publish"),
                );
            }
            for ack in acks {
                ack.await.expect("stored");
            }
        }
    });
    assert_eq!(stream_messages(&runtime, &url, "INKILL"), COUNT);

    let log = std::env::temp_dir().join(format!("shmq-bridge-inkill-{}.log", std::process::id()));
    let in_flight = IN_FLIGHT.to_string();
    let mut args = arguments(
        &url,
        "INKILL",
        segments.name(0),
        &[
            "in",
            "--consumer",
            "inkill",
            "--ack-wait",
            "1",
            "--in-flight",
            &in_flight,
        ],
    );
    args[5] = &subject;
    let mut inbound = Bridge::start(&args, log.clone());

    let distinct = Arc::new(AtomicU64::new(0));
    let reader = {
        let distinct = Arc::clone(&distinct);
        let name = segments.name(0).to_owned();
        thread::spawn(move || {
            let queue = Queue::open(&name).expect("the reader attaches");
            let mut counts = vec![0u32; COUNT as usize];
            let mut received = 0u64;
            drain_until(&queue, &mut counts, Duration::from_secs(180), |counts| {
                received += 1;
                if received.is_multiple_of(10) {
                    thread::sleep(Duration::from_millis(1));
                    let seen = counts.iter().filter(|&&c| c > 0).count() as u64;
                    distinct.store(seen, Ordering::Relaxed);
                    return seen == COUNT;
                }
                false
            });
            counts
        })
    };
    let mut seed = u64::from(std::process::id()) ^ 0x5eed;
    let mut distinct_at_kill = Vec::new();
    for _ in 0..KILLS {
        thread::sleep(jitter(&mut seed, 80, 120));
        inbound.kill_and_restart();
        distinct_at_kill.push(distinct.load(Ordering::Relaxed));
    }
    assert!(
        distinct_at_kill[0] > 0 && distinct_at_kill[KILLS as usize - 1] < COUNT,
        "the kills fell mid-stream (distinct messages in B at each kill: {distinct_at_kill:?})"
    );
    let mut counts = reader.join().expect("the reader finishes");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_messages(&runtime, &url, "INKILL") > 0 {
        assert!(
            Instant::now() < deadline,
            "JetStream still holds unacknowledged messages"
        );
        settle(&b, &mut counts, Duration::from_millis(100));
    }
    // Anything delivered again after the last ack went out arrives within an ack wait.
    settle(&b, &mut counts, Duration::from_millis(1500));
    assert!(
        inbound.stop().success(),
        "the last bridge exits cleanly: {}",
        inbound.log()
    );

    assert!(counts.iter().all(|&c| c >= 1), "no message is lost");
    let duplicates: u64 = counts.iter().map(|&c| u64::from(c) - 1).sum();
    // A duplicate is a message a killed bridge had sent into B whose ack had not
    // reached JetStream: at most the consumer's max ack pending per kill.
    assert!(
        duplicates <= KILLS * IN_FLIGHT,
        "{duplicates} duplicates, more than {KILLS} kills × {IN_FLIGHT} unacknowledged each"
    );
    eprintln!(
        "in_killed: {KILLS} kill -9s (distinct in B at each: {distinct_at_kill:?}); {COUNT} messages, 0 lost, {duplicates} duplicates (≤ {KILLS} × {IN_FLIGHT}: each was in B, its ack not yet at JetStream when its bridge died)"
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn nats_server_restarted_mid_stream_loses_nothing_acknowledged() {
    let test = "server_restart";
    let Some(()) = nats_server_available(test) else {
        return;
    };
    let mut server = NatsServer::start(test);
    let segments = Segments::new("restart", &["a", "b"]);
    let (a, b) = (segment(segments.name(0)), segment(segments.name(1)));
    let url = server.url();
    let subject = subject_for("RESTART");
    let logs = std::env::temp_dir().join(format!("shmq-bridge-restart-{}", std::process::id()));
    let mut out_args = arguments(&url, "RESTART", segments.name(0), &["out"]);
    out_args[5] = &subject;
    let mut in_args = arguments(
        &url,
        "RESTART",
        segments.name(1),
        &["in", "--consumer", "restart", "--ack-wait", "2"],
    );
    in_args[5] = &subject;
    let mut out = Bridge::start(&out_args, logs.with_extension("out"));
    let mut inbound = Bridge::start(&in_args, logs.with_extension("in"));

    const COUNT: u64 = 20_000;
    let producer = produce(
        segments.name(0).to_owned(),
        COUNT,
        Duration::from_millis(10),
    );
    let mut counts = vec![0u32; COUNT as usize];
    // Restart once the stream is flowing (some messages through to B), not at a
    // fixed time: on a loaded machine the bridges may take seconds to start.
    let restart_at = Instant::now() + Duration::from_millis(700);
    drain_until(&b, &mut counts, Duration::from_secs(60), |counts| {
        Instant::now() >= restart_at && counts.iter().filter(|&&c| c > 0).count() >= 500
    });
    let before = counts.iter().filter(|&&c| c > 0).count() as u64;
    server.restart(Duration::from_millis(300));
    assert!(
        before > 0 && before < COUNT,
        "the restart fell mid-stream ({before} of {COUNT} in B)"
    );
    drain_until(&b, &mut counts, Duration::from_secs(120), |counts| {
        counts.iter().all(|&c| c > 0)
    });
    producer.join().expect("the producer finishes");
    settle(&b, &mut counts, Duration::from_millis(2500));

    assert!(
        out.stop().success(),
        "bridge out exits cleanly: {}",
        out.log()
    );
    assert!(
        inbound.stop().success(),
        "bridge in exits cleanly: {}",
        inbound.log()
    );
    assert!(a.is_empty(), "A was emptied");
    let duplicates: u64 = counts.iter().map(|&c| u64::from(c) - 1).sum();
    let out_log = out.log();
    assert!(
        out_log.contains("nats disconnected"),
        "bridge out saw the server go: {out_log}"
    );
    eprintln!(
        "server_restart: restarted with {before} of {COUNT} in B; all {COUNT} arrived, {duplicates} duplicates (messages whose ack was lost with the connection)"
    );
    let _ = std::fs::remove_file(logs.with_extension("out"));
    let _ = std::fs::remove_file(logs.with_extension("in"));
}
