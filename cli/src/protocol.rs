//! What the benchmark controller and its child processes agree on, and what the two
//! sides of a measurement agree on.
//!
//! The controller starts `shmq __child ROLE SPEC`: [`Role`] names what the child
//! does, SPEC is a JSON object read through [`Spec`]. The child joins the start
//! barrier in the control mapping, runs until its [`Schedule`] ends, publishes
//! [`progress`] on the way, and prints one JSON line of results on stdout.
//!
//! Messages carry a CLOCK_MONOTONIC timestamp in their first 8 bytes ([`stamp`],
//! [`word_of`]). Its low bit is a flag ([`ONE_WAY`]); [`STOP`] there ends the
//! receiving loop.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use shmq::WaitStrategy;

use crate::control::{Control, Word};
use crate::error::{CliError, EX_USAGE};
use crate::histogram::to_json;

/// Low bit of the timestamp word: the receiver should record one-way latency.
pub const ONE_WAY: u64 = 1;
/// Timestamp word that ends a receiving loop (also a valid eventfd value).
pub const STOP: u64 = u64::MAX - 1;
/// Throughput producers stamp one message in this many (the rest carry 0), so the
/// clock is not read per message; rate-limited producers stamp every message.
pub const SAMPLE_EVERY: u64 = 64;
/// How long a child waits in one blocking receive before looking at the stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(20);

/// What a child process does. Each measurement runs two sides, `…A` measuring and
/// `…B` answering, or a producer and a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Cache-line floor, measuring side.
    FloorA,
    /// Cache-line floor, echo side.
    FloorB,
    /// Two-line floor, measuring side.
    TwoLineA,
    /// Two-line floor, echo side.
    TwoLineB,
    /// Bare slot ring, measuring side.
    BareRingA,
    /// Bare slot ring, echo side.
    BareRingB,
    /// Latency: sends stamped messages and times the echoes.
    Ping,
    /// Latency: echoes every message, records one-way latency of flagged ones.
    Pong,
    /// Throughput: sends flat out or at a rate.
    Producer,
    /// Throughput and wake-up: receives until a STOP message.
    Consumer,
    /// Wake-up: sends one message after each random pause.
    WakeProducer,
    /// Crossbeam baseline, ping-pong between two threads of one process.
    CrossbeamPingPong,
    /// Crossbeam baseline, throughput between two threads of one process.
    CrossbeamThroughput,
    /// Fan-out: publishes paced, stamped messages to every subscriber.
    FanoutPublisher,
    /// Fan-out: receives every message until STOP, records publish→receipt.
    FanoutSubscriber,
}

impl Role {
    const ALL: [Role; 15] = [
        Role::FloorA,
        Role::FloorB,
        Role::TwoLineA,
        Role::TwoLineB,
        Role::BareRingA,
        Role::BareRingB,
        Role::Ping,
        Role::Pong,
        Role::Producer,
        Role::Consumer,
        Role::WakeProducer,
        Role::CrossbeamPingPong,
        Role::CrossbeamThroughput,
        Role::FanoutPublisher,
        Role::FanoutSubscriber,
    ];

    /// The name on the child's command line and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::FloorA => "floor-a",
            Role::FloorB => "floor-b",
            Role::TwoLineA => "two-line-a",
            Role::TwoLineB => "two-line-b",
            Role::BareRingA => "bare-ring-a",
            Role::BareRingB => "bare-ring-b",
            Role::Ping => "ping",
            Role::Pong => "pong",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::WakeProducer => "wake-producer",
            Role::CrossbeamPingPong => "crossbeam-pingpong",
            Role::CrossbeamThroughput => "crossbeam-throughput",
            Role::FanoutPublisher => "fanout-publisher",
            Role::FanoutSubscriber => "fanout-subscriber",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == text)
    }
}

/// Which end of a workload's channels a child holds. The controller wires side A's
/// sending end to side B's receiving end and, for a ping-pong, side B's sending end
/// to side A's receiving end; the spec names each end (a segment name or an inherited
/// descriptor number) under the keys below.
#[derive(Clone, Copy)]
pub enum Side {
    A,
    B,
}

impl Side {
    /// The spec key of this side's sending end.
    pub fn tx(self) -> &'static str {
        match self {
            Side::A => "a_tx",
            Side::B => "b_tx",
        }
    }

    /// The spec key of this side's receiving end.
    pub fn rx(self) -> &'static str {
        match self {
            Side::A => "a_rx",
            Side::B => "b_rx",
        }
    }
}

/// The error for a spec that lacks `what` or holds a bad value there.
pub fn bad_spec(what: &str) -> CliError {
    CliError::new(EX_USAGE, format!("internal child spec lacks `{what}`"))
}

/// A child's spec: typed reads of the JSON object the controller passed.
pub struct Spec<'a>(&'a Value);

impl<'a> Spec<'a> {
    /// Reads `value` as a spec.
    pub fn new(value: &'a Value) -> Self {
        Self(value)
    }
    /// A required unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64, CliError> {
        self.opt_u64(key).ok_or_else(|| bad_spec(key))
    }
    /// A required string.
    pub fn str(&self, key: &str) -> Result<&'a str, CliError> {
        self.opt_str(key).ok_or_else(|| bad_spec(key))
    }
    /// An optional unsigned integer.
    pub fn opt_u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }
    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }
    /// An optional signed integer (a descriptor number).
    pub fn opt_i64(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }
}

/// A duration as a spec gives it: nanoseconds (saturating).
pub fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// The spec text of a hybrid wait: `hybrid:SPIN_NS:YIELD_NS`.
pub fn hybrid_spec(spin: Duration, yield_for: Duration) -> String {
    format!("hybrid:{}:{}", spin.as_nanos(), yield_for.as_nanos())
}

/// Parses `spin`, `yield`, `futex`, `hybrid:SPIN_NS:YIELD_NS`.
pub fn wait_from_spec(text: &str) -> Result<WaitStrategy, CliError> {
    let mut parts = text.split(':');
    Ok(match parts.next() {
        Some("spin") => WaitStrategy::Spin,
        Some("yield") => WaitStrategy::Yield,
        Some("futex") => WaitStrategy::Futex,
        Some("hybrid") => {
            let mut next = || {
                parts
                    .next()
                    .and_then(|p| p.parse().ok())
                    .map(Duration::from_nanos)
                    .ok_or_else(|| bad_spec("wait"))
            };
            WaitStrategy::Hybrid {
                spin: next()?,
                yield_for: next()?,
            }
        }
        _ => return Err(bad_spec("wait")),
    })
}

/// Writes `word` into the first 8 bytes of `buffer`.
pub fn stamp(buffer: &mut [u8], word: u64) {
    buffer[..8].copy_from_slice(&word.to_le_bytes());
}

/// Fletcher-32 of `bytes` (sums of single bytes, reduced modulo 65535 after each
/// 4 KiB): each step depends on the one before, so it costs about a cycle per byte
/// whatever the compiler does.
fn checksum(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (0u64, 0u64);
    for chunk in bytes.chunks(4096) {
        for &byte in chunk {
            a += u64::from(byte);
            b += a;
        }
        a %= 65_535;
        b %= 65_535;
    }
    ((b << 16) | a) as u32
}

/// The consumer-faster regime's extra work for producers, as a program building
/// its message: writes every byte after the 8-byte stamp (a pattern of message
/// number `n`) and checksums them.
pub fn build(buffer: &mut [u8], n: u64) {
    for (i, byte) in buffer.iter_mut().enumerate().skip(8) {
        *byte = (n as u8) ^ (i as u8);
    }
    std::hint::black_box(checksum(&buffer[8..]));
}

/// The producer-faster regime's extra work for consumers, as a program checking
/// its message: a checksum over every byte of `bytes` (kept from the optimiser).
pub fn inspect(bytes: &[u8]) {
    std::hint::black_box(checksum(std::hint::black_box(bytes)));
}

/// Running sum of a queue's fill (messages waiting ÷ capacity) sampled by a
/// consumer, one sample per stamped message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fill {
    sum: f64,
    samples: u64,
}

impl Fill {
    /// Adds a sample: `len` messages waiting in a queue of `capacity`.
    pub fn sample(&mut self, len: u64, capacity: u64) {
        if capacity > 0 {
            self.sum += len as f64 / capacity as f64;
            self.samples += 1;
        }
    }

    /// The fields a consumer's results carry.
    pub fn to_json(self) -> Value {
        json!({ "sum": self.sum, "samples": self.samples })
    }

    /// Reads back [`Fill::to_json`] (absent or malformed: no samples).
    pub fn from_json(value: Option<&Value>) -> Self {
        let field = |key: &str| value.and_then(|v| v.get(key));
        Self {
            sum: field("sum").and_then(Value::as_f64).unwrap_or(0.0),
            samples: field("samples").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// Adds another consumer's samples.
    pub fn merge(&mut self, other: Fill) {
        self.sum += other.sum;
        self.samples += other.samples;
    }

    /// Mean fill (0 to 1), if any sample was taken.
    pub fn mean(self) -> Option<f64> {
        (self.samples > 0).then(|| self.sum / self.samples as f64)
    }
}

/// The word in the first 8 bytes of `buffer`.
pub fn word_of(buffer: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buffer[..8]);
    u64::from_le_bytes(bytes)
}

/// Start, warm-up end, measurement end, and one-way phase end of a timed run
/// (CLOCK_MONOTONIC nanoseconds).
pub struct Schedule {
    pub start: u64,
    pub measure_from: u64,
    pub round_trip_until: u64,
    pub until: u64,
}

/// The schedule of a run that started at `start`, from the spec's `warmup_ns`,
/// `duration_ns` and (optional) `oneway_ns`.
pub fn schedule(spec: &Spec, start: u64) -> Result<Schedule, CliError> {
    let measure_from = start + spec.u64("warmup_ns")?;
    let round_trip_until = measure_from + spec.u64("duration_ns")?;
    let until = round_trip_until + spec.opt_u64("oneway_ns").unwrap_or(0);
    Ok(Schedule {
        start,
        measure_from,
        round_trip_until,
        until,
    })
}

/// A consumer's results: its latency histogram, messages received, and the window
/// (first and last clock reading after the warm-up, messages between them).
pub fn consumer_results(
    histogram: &Histogram<u64>,
    received: u64,
    first: Option<(u64, u64)>,
    last: Option<(u64, u64)>,
    fill: Fill,
) -> Value {
    let (first, last) = (first.unwrap_or((0, 0)), last.unwrap_or((0, 0)));
    json!({
        "latency": to_json(histogram),
        "received": received,
        "window_start_ns": first.0,
        "window_end_ns": last.0,
        "window_messages": last.1.saturating_sub(first.1),
        "fill": fill.to_json(),
    })
}

/// Publishes progress without touching the hot path more than once per 4096 loops.
pub fn progress(control: &Control, count: u64) {
    if count % 4096 == 0 {
        control.word(Word::Progress).store(count, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fletcher-32 reduced after every byte, the textbook way.
    fn reference(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (0u32, 0u32);
        for &byte in bytes {
            a = (a + u32::from(byte)) % 65_535;
            b = (b + a) % 65_535;
        }
        (b << 16) | a
    }

    #[test]
    fn the_regime_checksum_is_fletcher_32_at_every_length() {
        let bytes: Vec<u8> = (0..9000u32)
            .map(|i| (i * 7 + i / 255) as u8 | 0x80)
            .collect();
        for len in [0, 1, 7, 64, 4095, 4096, 4097, 9000] {
            assert_eq!(
                checksum(&bytes[..len]),
                reference(&bytes[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn build_writes_every_byte_after_the_stamp_and_differs_per_message() {
        let mut one = [0xAAu8; 64];
        let mut two = [0xAAu8; 64];
        build(&mut one, 1);
        build(&mut two, 2);
        assert_eq!(&one[..8], &[0xAA; 8], "the stamp is left alone");
        assert!(one[8..].iter().zip(&two[8..]).all(|(a, b)| a != b));
    }
}
