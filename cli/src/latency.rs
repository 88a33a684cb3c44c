//! The latency workload: a ping-pong over two channels. The ping process stamps a
//! message, sends it, and times the echo (round trip); for the last part of the run
//! it flags its stamps and the pong process records the one-way time instead.
//!
//! The controller side ([`measure`]) plans the two processes over a transport; the
//! child side is [`ping`] and [`pong`].

use serde_json::{json, Value};

use crate::control::Control;
use crate::error::{CliError, EX_SOFTWARE};
use crate::histogram::{from_results, new_histogram, record, to_json};
use crate::link::Link;
use crate::os::now_ns;
use crate::phase::{ChildPlan, Context, Phase};
use crate::protocol::{nanos, progress, schedule, stamp, Role, Spec, ONE_WAY, STOP};
use crate::report::Series;
use crate::transport::{wire, Direction, Segments, Transport};

/// Round trip, then (except crossbeam, whose two threads share one clock reading)
/// one-way latency over `transport`.
pub fn measure(
    ctx: &mut Context,
    segments: &mut Segments,
    transport: Transport,
) -> Result<Vec<Series>, CliError> {
    let settings = ctx.settings;
    let oneway = settings.duration / 2;
    let mut spec = json!({
        "size": settings.size,
        "capacity": settings.capacity,
        "duration_ns": nanos(settings.duration),
        "warmup_ns": nanos(settings.warmup),
        "oneway_ns": nanos(oneway),
    });
    let seconds = (settings.warmup + settings.duration + oneway).as_secs_f64();
    let round_trip = |results: &[Value]| -> Result<Series, CliError> {
        Ok(Series {
            label: transport.label(settings.size, "round trip"),
            histogram: from_results(&results[0], "rtt")?,
        })
    };
    if transport == Transport::Crossbeam {
        spec["cpu_b"] = json!(ctx.cpu(1));
        let plans = vec![ChildPlan {
            role: Role::CrossbeamPingPong,
            spec,
            cpu: ctx.cpu(0),
        }];
        let phase = Phase::new(transport.name(), plans, seconds).ready_count(2);
        return Ok(vec![round_trip(&ctx.run(phase)?)?]);
    }
    let inherited = wire(
        &settings,
        segments,
        transport,
        Direction::BothWays,
        &mut spec,
    )?;
    let plans = vec![
        ChildPlan {
            role: Role::Ping,
            spec: spec.clone(),
            cpu: ctx.cpu(0),
        },
        ChildPlan {
            role: Role::Pong,
            spec,
            cpu: ctx.cpu(1),
        },
    ];
    let phase = Phase::new(transport.name(), plans, seconds).inheriting(inherited);
    let results = ctx.run(phase)?;
    Ok(vec![
        round_trip(&results)?,
        Series {
            label: transport.label(settings.size, "one-way"),
            histogram: from_results(&results[1], "oneway")?,
        },
    ])
}

/// Sends stamped messages and waits for each echo; records round trips after the
/// warm-up, then flags its stamps one-way until the end of the schedule.
pub fn ping(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    let mut reply = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut histogram = new_histogram();
    let mut count = 0u64;
    loop {
        let t0 = now_ns();
        if t0 >= plan.until || control.stopping() {
            break;
        }
        let one_way = t0 >= plan.round_trip_until;
        stamp(&mut buffer, (t0 & !ONE_WAY) | u64::from(one_way));
        link.send(&buffer)?;
        while link.recv(&mut reply)?.is_none() {
            if control.stopping() {
                return Err(CliError::new(EX_SOFTWARE, "ping: peer stopped"));
            }
        }
        let t1 = now_ns();
        if t0 >= plan.measure_from && !one_way {
            record(&mut histogram, t1 - t0);
        }
        count += 1;
        progress(control, count);
    }
    stamp(&mut buffer, STOP);
    link.send(&buffer)?;
    Ok(json!({ "rtt": to_json(&histogram), "count": count }))
}

/// Echoes every message until STOP; records the one-way time of flagged ones.
pub fn pong(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    control.ready_and_wait();
    let mut histogram = new_histogram();
    loop {
        let (word, received) = match link.forward(&mut buffer)? {
            Some(echoed) => echoed,
            None if control.stopping() => break,
            None => continue,
        };
        if word == STOP {
            break;
        }
        if word & ONE_WAY != 0 {
            record(&mut histogram, received.saturating_sub(word & !ONE_WAY));
        }
    }
    Ok(json!({ "oneway": to_json(&histogram) }))
}
