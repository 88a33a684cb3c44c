//! The fan-out workload (issue #14): one publisher process sends paced 64-byte
//! messages, each stamped with CLOCK_MONOTONIC, to N subscriber processes; each
//! subscriber records receipt − stamp. Measured over shmq's broadcast segments and,
//! with the cli feature `iceoryx2`, over iceoryx2's publish/subscribe in the same
//! run, the two alternating in every round (which goes first alternates too).
//!
//! The controller side is [`measure_rounds`]; the child side is [`publisher`] and
//! [`subscriber`]. A message is eight little-endian words: the stamp (or
//! [`STOP`]), then the message's measured index plus one (0 during the warm-up);
//! the rest is zero.

use std::time::Duration;

use serde_json::{json, Value};
use shmq::broadcast::{self, SlowSubscriber};
use shmq::{Options, Queue, WaitStrategy};

use crate::control::Control;
use crate::error::{CliError, EX_SOFTWARE};
use crate::histogram::{from_results, new_histogram, record, to_json};
use crate::os::{now_ns, sleep_until_ns};
use crate::phase::{ChildPlan, Context, Phase};
use crate::protocol::{bad_spec, nanos, progress, Role, Spec, STOP, STOP_CHECK};
use crate::report::{merge_series, Delivery, Measurements, Series};
use crate::settings::Wait;

/// Message size: eight words.
pub const SIZE: u64 = 64;
/// Words in a message.
const WORDS: usize = 8;
/// A subscriber that saw no STOP this long after the schedule's end gives up.
const STOP_GRACE_NS: u64 = 10_000_000_000;
/// Most measured messages a subscriber keeps a receipt time for (the "last receipt"
/// series); a longer run records only its histograms beyond that.
const MAX_RECEIPTS: u64 = 4_000_000;

/// A transport the fan-out workload measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fanout {
    /// shmq broadcast segment (lossless).
    Shmq,
    /// iceoryx2 publish/subscribe (cli feature `iceoryx2`).
    #[cfg_attr(not(feature = "iceoryx2"), allow(dead_code))]
    Iceoryx2,
}

impl Fanout {
    /// The name in progress lines, labels and specs.
    pub fn name(self) -> &'static str {
        match self {
            Fanout::Shmq => "shmq",
            Fanout::Iceoryx2 => "iceoryx2",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Fanout::Shmq, Fanout::Iceoryx2]
            .into_iter()
            .find(|t| t.name() == text)
    }

    /// The transports this build measures.
    pub fn built_in() -> Vec<Fanout> {
        let mut all = vec![Fanout::Shmq];
        if cfg!(feature = "iceoryx2") {
            all.push(Fanout::Iceoryx2);
        }
        all
    }
}

/// How the workload waits, as the header says it.
pub fn describe_wait(wait: Wait) -> &'static str {
    match wait {
        Wait::Yield => "yield (every subscriber polls, sched_yield between empty polls)",
        _ => "block (shmq: futex sleep, woken by the publisher; iceoryx2: listener of an event service, notified after each send)",
    }
}

/// Label of a series: `shmq ×4 each receipt`.
fn label(transport: Fanout, subscribers: u64, what: &str) -> String {
    format!("{} ×{subscribers} {what}", transport.name())
}

/// What one round of one transport at one subscriber count measured.
struct Measured {
    each: Series,
    last: Series,
    delivery: Delivery,
}

/// Fan-out in `rounds` rounds: in each, for every subscriber count, each transport
/// once (the order alternating between rounds), and the ratios of shmq's p50 and p99
/// to iceoryx2's of the same round.
pub fn measure_rounds(
    ctx: &mut Context,
    subscriber_counts: &[u64],
    interval: Duration,
    rounds: u32,
    measured: &mut Measurements,
) -> Result<(), CliError> {
    let transports = Fanout::built_in();
    let mut round_ctx = ctx.with_settings(ctx.settings.per_round(rounds));
    let mut names = Names::default();
    for round in 0..rounds {
        for &n in subscriber_counts {
            let mut order = transports.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut results = Vec::new();
            for &t in &order {
                results.push((t, measure(&mut round_ctx, &mut names, t, n, interval)?));
            }
            add_round(measured, n, results);
        }
    }
    Ok(())
}

/// Adds one round at one subscriber count: the same-round ratios, then the
/// histograms and delivery counts merged into the run's.
fn add_round(measured: &mut Measurements, n: u64, results: Vec<(Fanout, Measured)>) {
    let find = |t: Fanout| results.iter().find(|(r, _)| *r == t).map(|(_, m)| m);
    if let (Some(shmq), Some(other)) = (find(Fanout::Shmq), find(Fanout::Iceoryx2)) {
        let pairs = [
            ("p50 each receipt", &shmq.each, &other.each, 0.5),
            ("p99 each receipt", &shmq.each, &other.each, 0.99),
            ("p50 last receipt", &shmq.last, &other.last, 0.5),
        ];
        for (what, ours, theirs, q) in pairs {
            let ours = ours.histogram.value_at_quantile(q) as f64;
            let theirs = theirs.histogram.value_at_quantile(q) as f64;
            if ours > 0.0 && theirs > 0.0 {
                let label = format!("×{n} {what}: shmq ÷ iceoryx2");
                measured.round_ratios.push(label, ours / theirs);
            }
        }
    }
    for (_, m) in results {
        merge_series(&mut measured.series, m.each);
        merge_series(&mut measured.series, m.last);
        measured.deliveries.push(m.delivery);
    }
}

/// Runs one phase: `transport` with `n` subscribers.
fn measure(
    ctx: &mut Context,
    names: &mut Names,
    transport: Fanout,
    n: u64,
    interval: Duration,
) -> Result<Measured, CliError> {
    let settings = ctx.settings;
    let name = names.next();
    let mut spec = json!({
        "transport": transport.name(),
        "name": name,
        "wait": wait_name(settings.wait),
        "interval_ns": nanos(interval),
        "warmup_ns": nanos(settings.warmup),
        "duration_ns": nanos(settings.duration),
    });
    let measuring = match settings.count {
        Some(count) => {
            spec["messages"] = json!(count);
            interval * u32::try_from(count).unwrap_or(u32::MAX)
        }
        None => settings.duration,
    };
    // Held until the phase is over: the segment or services the children open.
    let _endpoint = names.create(transport, &name, n, &settings)?;
    let mut plans = vec![ChildPlan {
        role: Role::FanoutPublisher,
        spec: spec.clone(),
        // The publisher on the first core; subscribers wherever the scheduler puts them.
        cpu: ctx.cpu(0),
    }];
    for _ in 0..n {
        plans.push(ChildPlan {
            role: Role::FanoutSubscriber,
            spec: spec.clone(),
            cpu: None,
        });
    }
    let seconds = (settings.warmup + measuring).as_secs_f64();
    let phase_label = format!("{} ×{n}", transport.name());
    let results = ctx.run(Phase::new(&phase_label, plans, seconds))?;
    collect(transport, n, &results)
}

/// Merges a phase's results: every subscriber's histogram, and the latest receipt
/// of each message all subscribers received.
fn collect(transport: Fanout, n: u64, results: &[Value]) -> Result<Measured, CliError> {
    let bad = || CliError::new(EX_SOFTWARE, "a fan-out child sent malformed results");
    let sent = results[0]
        .get("sent")
        .and_then(Value::as_u64)
        .ok_or_else(bad)?;
    let mut each = new_histogram();
    let mut received = 0;
    let mut lagged = 0;
    let mut latest: Vec<Option<u64>> = vec![Some(0); sent.min(MAX_RECEIPTS) as usize];
    for result in &results[1..] {
        let _ = each.add(from_results(result, "latency")?);
        received += result
            .get("received")
            .and_then(Value::as_u64)
            .ok_or_else(bad)?;
        lagged += result.get("lagged").and_then(Value::as_u64).unwrap_or(0);
        let receipts = result
            .get("receipts")
            .and_then(Value::as_array)
            .ok_or_else(bad)?;
        for (i, slot) in latest.iter_mut().enumerate() {
            // 0 (or absent): this subscriber did not receive message i.
            match receipts.get(i).and_then(Value::as_u64).unwrap_or(0) {
                0 => *slot = None,
                ns => *slot = slot.map(|l| l.max(ns)),
            }
        }
    }
    let mut last = new_histogram();
    for ns in latest.into_iter().flatten() {
        record(&mut last, ns);
    }
    Ok(Measured {
        each: Series {
            label: label(transport, n, "each receipt"),
            histogram: each,
        },
        last: Series {
            label: label(transport, n, "last receipt"),
            histogram: last,
        },
        delivery: Delivery {
            label: format!("{} ×{n}", transport.name()),
            expected: sent * n,
            received,
            lagged,
        },
    })
}

/// The spec's name of a wait mode.
fn wait_name(wait: Wait) -> &'static str {
    match wait {
        Wait::Yield => "yield",
        _ => "block",
    }
}

/// Fresh segment / service names for each phase; the segments are removed when
/// this is dropped, whatever happened.
#[derive(Default)]
struct Names {
    next: u32,
    segments: Vec<String>,
}

/// What the controller holds open while a phase runs.
enum Endpoint {
    Shmq,
    #[cfg(feature = "iceoryx2")]
    Iceoryx2 {
        _services: crate::iceoryx::Services,
    },
}

impl Names {
    fn next(&mut self) -> String {
        let name = format!("bench.{}.fanout.{}", std::process::id(), self.next);
        self.next += 1;
        name
    }

    /// Creates `transport`'s segment or services `name` for one publisher and `n`
    /// subscribers.
    fn create(
        &mut self,
        transport: Fanout,
        name: &str,
        n: u64,
        settings: &crate::settings::Settings,
    ) -> Result<Endpoint, CliError> {
        match transport {
            Fanout::Shmq => {
                let options = Options::new(settings.capacity, SIZE).max_participants(n + 8);
                // The controller's handle is dropped at once: the children attach.
                drop(broadcast::Publisher::create(
                    name,
                    &options,
                    SlowSubscriber::Lossless,
                )?);
                self.segments.push(name.to_owned());
                Ok(Endpoint::Shmq)
            }
            #[cfg(feature = "iceoryx2")]
            Fanout::Iceoryx2 => Ok(Endpoint::Iceoryx2 {
                _services: crate::iceoryx::Services::create(
                    name,
                    n,
                    settings.capacity,
                    waiting(settings.wait),
                )?,
            }),
            #[cfg(not(feature = "iceoryx2"))]
            Fanout::Iceoryx2 => Err(not_built_in()),
        }
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        for name in &self.segments {
            let _ = Queue::unlink(name);
        }
    }
}

#[cfg(not(feature = "iceoryx2"))]
fn not_built_in() -> CliError {
    CliError::new(
        crate::error::EX_UNAVAILABLE,
        "iceoryx2 is not built in: build with `--features iceoryx2`",
    )
}

#[cfg(feature = "iceoryx2")]
fn waiting(wait: Wait) -> crate::iceoryx::Waiting {
    match wait {
        Wait::Yield => crate::iceoryx::Waiting::Yield,
        _ => crate::iceoryx::Waiting::Block,
    }
}

/// A child's end of the transport under test.
enum End {
    ShmqPublisher(broadcast::Publisher),
    ShmqSubscriber(broadcast::Subscriber),
    #[cfg(feature = "iceoryx2")]
    IceoryxPublisher(crate::iceoryx::PublisherEnd),
    #[cfg(feature = "iceoryx2")]
    IceoryxSubscriber(crate::iceoryx::SubscriberEnd),
}

/// Which end a child opens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Publisher,
    Subscriber,
}

/// What one wait for a message gave.
enum Received {
    /// A message, and the CLOCK_MONOTONIC time it was received at.
    Message([u64; WORDS], u64),
    /// `missed` messages were overwritten before this subscriber read them.
    Lagged(u64),
    /// Nothing within [`STOP_CHECK`].
    Nothing,
}

impl End {
    fn open(spec: &Spec, side: Side) -> Result<Self, CliError> {
        let transport =
            Fanout::parse(spec.str("transport")?).ok_or_else(|| bad_spec("transport"))?;
        let name = spec.str("name")?;
        let wait = spec.str("wait")?;
        let strategy = match wait {
            "block" => WaitStrategy::Futex,
            "yield" => WaitStrategy::Yield,
            _ => return Err(bad_spec("wait")),
        };
        match (transport, side) {
            (Fanout::Shmq, Side::Publisher) => {
                let mut publisher = broadcast::Publisher::open(name)?;
                publisher.set_wait_strategy(strategy);
                Ok(End::ShmqPublisher(publisher))
            }
            (Fanout::Shmq, Side::Subscriber) => {
                let mut subscriber = broadcast::Subscriber::open(name)?;
                subscriber.set_wait_strategy(strategy);
                Ok(End::ShmqSubscriber(subscriber))
            }
            #[cfg(feature = "iceoryx2")]
            (Fanout::Iceoryx2, side) => {
                let waiting = if wait == "yield" {
                    crate::iceoryx::Waiting::Yield
                } else {
                    crate::iceoryx::Waiting::Block
                };
                Ok(match side {
                    Side::Publisher => {
                        End::IceoryxPublisher(crate::iceoryx::PublisherEnd::open(name, waiting)?)
                    }
                    Side::Subscriber => {
                        End::IceoryxSubscriber(crate::iceoryx::SubscriberEnd::open(name, waiting)?)
                    }
                })
            }
            #[cfg(not(feature = "iceoryx2"))]
            (Fanout::Iceoryx2, _) => Err(not_built_in()),
        }
    }

    fn publish(&self, message: [u64; WORDS]) -> Result<(), CliError> {
        match self {
            End::ShmqPublisher(publisher) => publisher
                .publish(&to_bytes(message))
                .map_err(|e| CliError::new(EX_SOFTWARE, format!("publish: {e}"))),
            #[cfg(feature = "iceoryx2")]
            End::IceoryxPublisher(publisher) => publisher.publish(message),
            _ => Err(bad_spec("role")),
        }
    }

    fn receive(&self) -> Result<Received, CliError> {
        match self {
            End::ShmqSubscriber(subscriber) => {
                let mut bytes = [0u8; SIZE as usize];
                match subscriber.recv_into_timeout(&mut bytes, STOP_CHECK) {
                    Ok(_) => {
                        let received = now_ns();
                        Ok(Received::Message(from_bytes(&bytes), received))
                    }
                    Err(broadcast::RecvError::Timeout) => Ok(Received::Nothing),
                    Err(broadcast::RecvError::Lagged { missed }) => Ok(Received::Lagged(missed)),
                    Err(e) => Err(CliError::new(EX_SOFTWARE, format!("receive: {e}"))),
                }
            }
            #[cfg(feature = "iceoryx2")]
            End::IceoryxSubscriber(subscriber) => Ok(match subscriber.receive(STOP_CHECK)? {
                Some((message, received)) => Received::Message(message, received),
                None => Received::Nothing,
            }),
            _ => Err(bad_spec("role")),
        }
    }
}

fn to_bytes(words: [u64; WORDS]) -> [u8; SIZE as usize] {
    let mut bytes = [0u8; SIZE as usize];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

fn from_bytes(bytes: &[u8; SIZE as usize]) -> [u64; WORDS] {
    let mut words = [0u64; WORDS];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        *word = u64::from_le_bytes(eight);
    }
    words
}

/// Publishes one message every `interval_ns` (sleeping until each send time, so
/// the stamp is read just before the send): the warm-up's unrecorded, then
/// `messages` (or `duration_ns` of) measured ones, then STOP.
pub fn publisher(spec: &Spec, control: &Control) -> Result<Value, CliError> {
    let end = End::open(spec, Side::Publisher)?;
    let interval = spec.u64("interval_ns")?.max(1);
    let messages = spec.opt_u64("messages");
    let start = control.ready_and_wait();
    let measure_from = start + spec.u64("warmup_ns")?;
    let measure_until = measure_from + spec.u64("duration_ns")?;
    let mut next = start;
    let mut sent = 0u64;
    let mut count = 0u64;
    while !control.stopping() {
        sleep_until_ns(next);
        let stamp = now_ns();
        let measuring = stamp >= measure_from;
        let done = match messages {
            Some(messages) => sent >= messages,
            None => stamp >= measure_until,
        };
        if measuring && done {
            break;
        }
        let index = if measuring { sent + 1 } else { 0 };
        end.publish([stamp, index, 0, 0, 0, 0, 0, 0])?;
        sent += u64::from(measuring);
        count += 1;
        progress(control, count);
        // The next send time; after a stall, no burst to catch up.
        next = (next + interval).max(stamp);
    }
    end.publish([STOP, 0, 0, 0, 0, 0, 0, 0])?;
    Ok(json!({ "sent": sent }))
}

/// Receives every message until STOP; records receipt − stamp of each measured one,
/// and keeps each one's latency by index for the "last receipt" series.
pub fn subscriber(spec: &Spec, control: &Control) -> Result<Value, CliError> {
    let end = End::open(spec, Side::Subscriber)?;
    let start = control.ready_and_wait();
    let schedule_end = start
        + spec.u64("warmup_ns")?
        + match spec.opt_u64("messages") {
            Some(messages) => messages.saturating_mul(spec.u64("interval_ns")?),
            None => spec.u64("duration_ns")?,
        };
    let mut histogram = new_histogram();
    let mut receipts: Vec<u64> = Vec::new();
    let (mut received, mut lagged) = (0u64, 0u64);
    loop {
        match end.receive()? {
            Received::Message([STOP, ..], _) => break,
            Received::Message([stamp, index, ..], at) => {
                if index == 0 {
                    continue;
                }
                let latency = at.saturating_sub(stamp).max(1);
                record(&mut histogram, latency);
                received += 1;
                if index <= MAX_RECEIPTS {
                    let i = (index - 1) as usize;
                    if receipts.len() <= i {
                        receipts.resize(i + 1, 0);
                    }
                    receipts[i] = latency;
                }
            }
            Received::Lagged(missed) => lagged += missed,
            Received::Nothing if control.stopping() => break,
            Received::Nothing if now_ns() > schedule_end + STOP_GRACE_NS => {
                return Err(CliError::new(
                    EX_SOFTWARE,
                    "fan-out subscriber: no STOP message 10 s after the schedule ended",
                ));
            }
            Received::Nothing => {}
        }
    }
    Ok(json!({
        "latency": to_json(&histogram),
        "received": received,
        "lagged": lagged,
        "receipts": receipts,
    }))
}
