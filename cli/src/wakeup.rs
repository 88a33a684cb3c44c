//! The wake-up workload: a consumer asleep on an empty channel; the producer sends
//! one stamped message after each random 1–5 ms pause, and the consumer records the
//! time from the stamp to its receipt.
//!
//! The controller side is [`measure`]; the child side is [`wake_producer`] and the
//! throughput workload's [`consumer`](crate::throughput::consumer).

use std::time::Duration;

use serde_json::{json, Value};

use crate::control::Control;
use crate::error::CliError;
use crate::histogram::from_results;
use crate::link::Link;
use crate::os::now_ns;
use crate::phase::{ChildPlan, Context, Phase};
use crate::protocol::{nanos, progress, schedule, stamp, Role, Spec, ONE_WAY, STOP};
use crate::report::Series;
use crate::transport::{wire, Direction, Segments, Transport};

/// Wake-up latency over `transport`.
pub fn measure(
    ctx: &mut Context,
    segments: &mut Segments,
    transport: Transport,
) -> Result<Series, CliError> {
    let settings = ctx.settings;
    let mut spec = json!({
        "size": settings.size,
        "capacity": settings.capacity,
        "duration_ns": nanos(settings.duration),
        "warmup_ns": nanos(settings.warmup),
    });
    let inherited = wire(&settings, segments, transport, Direction::OneWay, &mut spec)?;
    let plans = vec![
        ChildPlan {
            role: Role::WakeProducer,
            spec: spec.clone(),
            cpu: ctx.cpu(0),
        },
        ChildPlan {
            role: Role::Consumer,
            spec,
            cpu: ctx.cpu(1),
        },
    ];
    let seconds = (settings.warmup + settings.duration).as_secs_f64();
    let phase = Phase::new(transport.name(), plans, seconds).inheriting(inherited);
    let results = ctx.run(phase)?;
    Ok(Series {
        label: transport.label(settings.size, "wake-up"),
        histogram: from_results(&results[1], "latency")?,
    })
}

/// Sleeps a random 1–5 ms, then stamps and sends one message: the consumer (asleep by
/// then) records the time from the stamp to its receipt.
pub fn wake_producer(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut rng = Rng::new();
    let mut sent = 0u64;
    while now_ns() < plan.round_trip_until && !control.stopping() {
        std::thread::sleep(Duration::from_micros(1000 + rng.next() % 4000));
        stamp(&mut buffer, now_ns() & !ONE_WAY);
        link.send(&buffer)?;
        sent += 1;
        progress(control, sent);
    }
    stamp(&mut buffer, STOP);
    link.send(&buffer)?;
    Ok(json!({ "sent": sent }))
}

/// A small xorshift generator for the pauses (not for anything else).
struct Rng(u64);

impl Rng {
    /// Seeded from the pid and the clock.
    fn new() -> Self {
        Self((u64::from(std::process::id()) << 32) ^ now_ns() | 1)
    }

    /// Next pseudo-random value.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
