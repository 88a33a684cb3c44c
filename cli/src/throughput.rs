//! The throughput workload: P producer and C consumer processes over one channel,
//! sending flat out (or at a fixed offered load, `--rate`) and counting what arrives
//! in the measuring window; sampled stamps give the send→receive latency.
//!
//! The controller side ([`measure`]) plans the processes and turns the consumers'
//! counts into a [`Rate`]; the child side is [`producer`] and [`consumer`] (which the
//! wake-up workload also uses).

use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use shmq::Queue;

use crate::control::{Control, Word};
use crate::error::{CliError, EX_SOFTWARE};
use crate::histogram::{from_results, new_histogram, record};
use crate::link::Link;
use crate::os::now_ns;
use crate::phase::{AfterProducers, ChildPlan, Context, Phase};
use crate::protocol::{
    build, consumer_results, inspect, nanos, progress, schedule, stamp, word_of, Fill, Role,
    Schedule, Side, Spec, ONE_WAY, SAMPLE_EVERY, STOP,
};
use crate::report::{Rate, Series};
use crate::settings::{Regime, Settings};
use crate::transport::{wire, Direction, Segments, Transport};

/// Messages per second from `transport` (shmq with the configured producers and
/// consumers, the baselines 1P1C).
pub fn measure(
    ctx: &mut Context,
    segments: &mut Segments,
    transport: Transport,
) -> Result<Rate, CliError> {
    let settings = ctx.settings;
    let (producers, consumers) = if transport == Transport::Shmq {
        (settings.producers, settings.consumers)
    } else {
        (1, 1)
    };
    let label = transport.name();
    let mut spec = spec_for(&settings, producers);
    if transport == Transport::Shmq && settings.batch > 1 {
        spec["batch"] = json!(settings.batch);
    }
    let seconds = expected_seconds(&settings, producers);
    if transport == Transport::Crossbeam {
        spec["cpu_b"] = json!(ctx.cpu(1));
        let plans = vec![ChildPlan {
            role: Role::CrossbeamThroughput,
            spec,
            cpu: ctx.cpu(0),
        }];
        let results = ctx.run(Phase::new(label, plans, seconds).ready_count(2))?;
        return rate_from(label, &results, latency_label(&settings, transport));
    }
    let inherited = wire(&settings, segments, transport, Direction::OneWay, &mut spec)?;
    let plans = plans(ctx, &spec, transport, producers, consumers);
    let queue_name = spec
        .get(Side::A.tx())
        .and_then(Value::as_str)
        .map(str::to_owned);
    // shmq: once every producer is done, the controller itself sends one STOP per
    // consumer (each consumer takes exactly one and exits).
    let mut send_stops = || match &queue_name {
        Some(name) => send_stop_messages(name, consumers, settings.size),
        None => Ok(()),
    };
    let hook: AfterProducers<'_> = if transport == Transport::Shmq {
        Some((producers, &mut send_stops))
    } else {
        None
    };
    let phase = Phase::new(label, plans, seconds)
        .inheriting(inherited)
        .after_producers(hook);
    let results = ctx.run(phase)?;
    let consumers_results = &results[producers as usize..];
    rate_from(
        label,
        consumers_results,
        latency_label(&settings, transport),
    )
}

/// The spec both sides start from.
fn spec_for(settings: &Settings, producers: u64) -> Value {
    let mut spec = json!({
        "size": settings.size,
        "capacity": settings.capacity,
        "duration_ns": nanos(settings.duration),
        "warmup_ns": nanos(settings.warmup),
    });
    if let Some(count) = settings.count {
        // A counted run is measured whole: no warm-up to discard.
        spec["count"] = json!(count);
        spec["warmup_ns"] = json!(0);
    }
    if let Some(rate) = settings.rate {
        spec["interval_ns"] = json!(((1e9 * producers as f64) / rate).max(1.0) as u64);
    }
    match settings.regime {
        Some(Regime::ConsumerFaster) => spec["build"] = json!(1),
        Some(Regime::ProducerFaster) => spec["inspect"] = json!(1),
        None => {}
    }
    spec
}

/// How long the phase should take, for progress and the hard time limit.
fn expected_seconds(settings: &Settings, producers: u64) -> f64 {
    match (settings.count, settings.rate) {
        (Some(count), Some(rate)) => count as f64 * producers as f64 / rate,
        (Some(_), None) => settings.duration.as_secs_f64(),
        _ => (settings.warmup + settings.duration).as_secs_f64(),
    }
}

fn latency_label(settings: &Settings, transport: Transport) -> String {
    if settings.rate.is_some() {
        format!(
            "{} send→receive (from intended send time)",
            transport.name()
        )
    } else {
        format!("{} send→receive (saturated, 1 in 64)", transport.name())
    }
}

/// Producers first, then consumers, spread over the cores in that order. Over a
/// kernel channel each producer ends with a STOP of its own.
fn plans(
    ctx: &Context,
    spec: &Value,
    transport: Transport,
    producers: u64,
    consumers: u64,
) -> Vec<ChildPlan> {
    let mut plans = Vec::new();
    for i in 0..producers {
        let mut spec = spec.clone();
        if transport != Transport::Shmq {
            spec["send_stop"] = json!(1);
        }
        plans.push(ChildPlan {
            role: Role::Producer,
            spec,
            cpu: ctx.cpu(i as usize),
        });
    }
    for i in 0..consumers {
        plans.push(ChildPlan {
            role: Role::Consumer,
            spec: spec.clone(),
            cpu: ctx.cpu((producers + i) as usize),
        });
    }
    plans
}

/// Sends one STOP message per consumer into the segment `name`.
fn send_stop_messages(name: &str, consumers: u64, size: u64) -> Result<(), CliError> {
    let queue = Queue::open(name)?;
    let mut message = vec![0u8; size as usize];
    stamp(&mut message, STOP);
    for _ in 0..consumers {
        queue
            .send(&message)
            .map_err(|e| CliError::new(EX_SOFTWARE, format!("sending stop: {e}")))?;
    }
    Ok(())
}

/// The rate over the union of the consumers' measuring windows, and their merged
/// latency histograms.
fn rate_from(label: &str, consumers: &[Value], latency_label: String) -> Result<Rate, CliError> {
    let mut messages = 0u64;
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut histogram = new_histogram();
    let mut fill = Fill::default();
    for c in consumers {
        fill.merge(Fill::from_json(c.get("fill")));
        let field = |key: &str| c.get(key).and_then(Value::as_u64).unwrap_or(0);
        messages += field("window_messages");
        let s = field("window_start_ns");
        if s > 0 {
            start = start.min(s);
        }
        end = end.max(field("window_end_ns"));
        histogram
            .add(from_results(c, "latency")?)
            .map_err(|_| CliError::new(EX_SOFTWARE, "merging histograms"))?;
    }
    let seconds = if end > start {
        (end - start) as f64 / 1e9
    } else {
        0.0
    };
    Ok(Rate {
        label: label.to_owned(),
        messages_per_s: if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        },
        messages,
        latency: Series {
            label: latency_label,
            histogram,
        },
        fill,
    })
}

/// Sends as fast as it can (or at `interval_ns`, stamping each message with its
/// *intended* send time so a stall shows up in every message it delayed); with
/// `batch`, as batches of claims.
pub fn producer(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let count_limit = spec.opt_u64("count");
    let interval_ns = spec.opt_u64("interval_ns");
    let mut buffer = vec![0u8; size];
    let build = spec.opt_u64("build") == Some(1);
    let plan = schedule(spec, control.ready_and_wait())?;
    let sent = match spec.opt_u64("batch").unwrap_or(1) as usize {
        batch if batch > 1 => {
            produce_batches(link, control, &plan, size, count_limit, batch, build)?
        }
        _ => produce_singles(
            link,
            control,
            &plan,
            &mut buffer,
            count_limit,
            interval_ns,
            build,
        )?,
    };
    let end = now_ns();
    if spec.opt_u64("send_stop").unwrap_or(0) == 1 {
        stamp(&mut buffer, STOP);
        link.send(&buffer)?;
    }
    control
        .word(Word::ProducersDone)
        .fetch_add(1, Ordering::Release);
    Ok(json!({ "sent": sent, "start_ns": plan.start, "end_ns": end }))
}

/// The producer loop, one message per send. Returns how many were sent.
fn produce_singles(
    link: &mut Link,
    control: &Control,
    plan: &Schedule,
    buffer: &mut [u8],
    count_limit: Option<u64>,
    interval_ns: Option<u64>,
    build_each: bool,
) -> Result<u64, CliError> {
    let timed = count_limit.is_none();
    let mut sent = 0u64;
    loop {
        if count_limit.is_some_and(|limit| sent >= limit) {
            return Ok(sent);
        }
        let word = match interval_ns {
            Some(interval) => {
                let intended = plan.start + sent * interval;
                if timed && intended >= plan.round_trip_until {
                    return Ok(sent);
                }
                wait_until(intended);
                intended.max(2) & !ONE_WAY
            }
            None if sent % SAMPLE_EVERY == 0 => {
                let now = now_ns();
                if (timed && now >= plan.round_trip_until) || control.stopping() {
                    return Ok(sent);
                }
                now & !ONE_WAY
            }
            None => 0,
        };
        if build_each {
            build(buffer, sent);
        }
        stamp(buffer, word);
        link.send(buffer)?;
        sent += 1;
        progress(control, sent);
    }
}

/// The flat-out producer loop with batch sends of `batch` messages: one in
/// [`SAMPLE_EVERY`] carries its send time, as in the single loop. Returns how many
/// were sent.
fn produce_batches(
    link: &mut Link,
    control: &Control,
    plan: &Schedule,
    size: usize,
    count_limit: Option<u64>,
    batch: usize,
    build_each: bool,
) -> Result<u64, CliError> {
    let mut buffers = vec![vec![0u8; size]; batch];
    let mut sent = 0u64;
    loop {
        let n = count_limit.map_or(batch as u64, |limit| (limit - sent).min(batch as u64));
        if n == 0 {
            return Ok(sent);
        }
        for (i, buffer) in buffers[..n as usize].iter_mut().enumerate() {
            let word = if (sent + i as u64) % SAMPLE_EVERY == 0 {
                let now = now_ns();
                if (count_limit.is_none() && now >= plan.round_trip_until) || control.stopping() {
                    return Ok(sent);
                }
                now & !ONE_WAY
            } else {
                0
            };
            if build_each {
                build(buffer, sent + i as u64);
            }
            stamp(buffer, word);
        }
        link.send_batch(&buffers[..n as usize])?;
        sent += n;
        progress(control, sent);
    }
}

/// Sleeps, then spins, until CLOCK_MONOTONIC reaches `instant` (returns at once if
/// it already has: a late producer sends its backlog immediately).
fn wait_until(instant: u64) {
    let mut now = now_ns();
    while now < instant {
        if instant - now > 200_000 {
            std::thread::sleep(Duration::from_nanos(instant - now - 100_000));
        } else {
            std::hint::spin_loop();
        }
        now = now_ns();
    }
}

/// Receives until a STOP message; records latency of stamped messages sent after the
/// warm-up, and counts messages between its first and last clock reading after it.
/// With `batch`, receives up to that many per claim.
pub fn consumer(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let batch = spec.opt_u64("batch").unwrap_or(1) as usize;
    let inspect_each = spec.opt_u64("inspect") == Some(1);
    let capacity = spec.u64("capacity")?;
    let mut tally = Tally {
        histogram: new_histogram(),
        received: 0,
        first: None,
        last: None,
        measure_from: plan.measure_from,
        fill_due: false,
        fill: Fill::default(),
    };
    loop {
        if batch > 1 {
            let mut stops = 0;
            let taken = link.recv_batch(batch, |message| {
                if inspect_each {
                    inspect(message);
                }
                match word_of(message) {
                    STOP => stops += 1,
                    word => tally.count(word),
                }
            })?;
            tally.sample_fill(link, capacity);
            if taken == 0 && control.stopping() {
                break;
            }
            if stops > 0 {
                // One STOP is ours; any other went to the wrong consumer.
                stamp(&mut buffer, STOP);
                link.hand_on(&buffer, stops - 1)?;
                break;
            }
        } else {
            match link.recv(&mut buffer)? {
                Some(()) => {}
                None if control.stopping() => break,
                None => continue,
            }
            if inspect_each {
                inspect(&buffer);
            }
            match word_of(&buffer) {
                STOP => break,
                word => tally.count(word),
            }
            tally.sample_fill(link, capacity);
        }
        progress(control, tally.received);
    }
    Ok(consumer_results(
        &tally.histogram,
        tally.received,
        tally.first,
        tally.last,
        tally.fill,
    ))
}

/// What a consumer counts: messages, sampled latencies, and its measuring window.
struct Tally {
    histogram: Histogram<u64>,
    received: u64,
    /// (time, messages received by then) at the first and last clock reading after
    /// the warm-up.
    first: Option<(u64, u64)>,
    last: Option<(u64, u64)>,
    measure_from: u64,
    /// A stamped message arrived since the last fill sample.
    fill_due: bool,
    /// The queue's fill, sampled after receiving a stamped message in the window.
    fill: Fill,
}

impl Tally {
    /// Counts one message whose first word is `word` (a send time, or 0).
    fn count(&mut self, word: u64) {
        self.received += 1;
        if word == 0 {
            return;
        }
        let now = now_ns();
        // A stamp from the future is two eventfd writes summed before one read (the
        // reader was late): not a sample.
        if word >= self.measure_from && word <= now {
            record(&mut self.histogram, now.saturating_sub(word));
        }
        if now >= self.measure_from {
            self.first.get_or_insert((now, self.received));
            self.last = Some((now, self.received));
            self.fill_due = true;
        }
    }

    /// Samples the queue's fill if a stamped message in the window came since the
    /// last sample (one in [`SAMPLE_EVERY`] messages: a load of two cursors).
    fn sample_fill(&mut self, link: &Link, capacity: u64) {
        if std::mem::take(&mut self.fill_due) {
            if let Some(len) = link.len() {
                self.fill.sample(len, capacity);
            }
        }
    }
}
