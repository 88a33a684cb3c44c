//! `shmq __child ROLE SPEC`: one process of a benchmark, started by the controller.
//! It opens the control mapping, pins itself, runs its role, and prints its results
//! as one JSON line on stdout (or tells the controller to give up, on failure).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::baselines;
use crate::control::{Control, Word};
use crate::error::{CliError, EX_USAGE};
use crate::fanout;
use crate::floors;
use crate::latency;
use crate::link::Link;
use crate::os::pin_to_cpu;
use crate::protocol::{Role, Side, Spec};
use crate::throughput;
use crate::wakeup;

/// Entry point of `shmq __child`.
pub fn run(role: &str, spec_text: &str) -> Result<(), CliError> {
    let role = Role::parse(role)
        .ok_or_else(|| CliError::new(EX_USAGE, format!("unknown child role `{role}`")))?;
    let value: Value = serde_json::from_str(spec_text)
        .map_err(|e| CliError::new(EX_USAGE, format!("internal child spec: {e}")))?;
    let spec = Spec::new(&value);
    let control = Control::open(spec.str("control")?)?;
    let pin_error = spec.opt_u64("cpu").and_then(|cpu| {
        pin_to_cpu(cpu as usize)
            .err()
            .map(|e| format!("cpu {cpu}: {e}"))
    });
    let mut output = match play(role, &spec, &control) {
        Ok(output) => output,
        Err(e) => {
            // Tell the controller to give up, so the peer does not wait forever.
            control.word(Word::Stop).store(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    if let (Some(error), Value::Object(map)) = (pin_error, &mut output) {
        map.insert("pin_error".into(), json!(error));
    }
    println!("{output}");
    Ok(())
}

/// Runs `role` to the end and returns its results.
fn play(role: Role, spec: &Spec, control: &Control) -> Result<Value, CliError> {
    match role {
        Role::FloorA => floors::floor_measure(spec, control),
        Role::FloorB => floors::floor_echo(control),
        Role::TwoLineA => floors::two_line_measure(spec, control),
        Role::TwoLineB => floors::two_line_echo(control),
        Role::BareRingA => floors::bare_ring_ping(spec, control),
        Role::BareRingB => floors::bare_ring_pong(spec, control),
        Role::Ping => latency::ping(spec, control, &mut Link::open(spec, Side::A)?),
        Role::Pong => latency::pong(spec, control, &mut Link::open(spec, Side::B)?),
        Role::Producer => throughput::producer(spec, control, &mut Link::open(spec, Side::A)?),
        Role::Consumer => throughput::consumer(spec, control, &mut Link::open(spec, Side::B)?),
        Role::WakeProducer => wakeup::wake_producer(spec, control, &mut Link::open(spec, Side::A)?),
        Role::CrossbeamPingPong | Role::CrossbeamThroughput => {
            baselines::crossbeam(role, spec, control)
        }
        Role::FanoutPublisher => fanout::publisher(spec, control),
        Role::FanoutSubscriber => fanout::subscriber(spec, control),
    }
}
