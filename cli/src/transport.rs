//! The transports a workload can run over, as the controller sets them up: shmq
//! segments it creates (and removes), kernel channels whose descriptors the children
//! inherit, or crossbeam inside one child. Also how each is labelled in the output.

use std::os::fd::{AsRawFd, OwnedFd};

use serde_json::{json, Value};
use shmq::{Options, Queue};

use crate::baselines::{FdChannel, FdKind};
use crate::error::CliError;
use crate::protocol::Side;
use crate::settings::Settings;

/// A transport for the comparisons.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Shmq,
    Fd(FdKind),
    Crossbeam,
}

impl Transport {
    /// The name in progress lines, errors and labels.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Shmq => "shmq",
            Transport::Fd(kind) => kind.name(),
            Transport::Crossbeam => "crossbeam (2 threads)",
        }
    }

    /// The label of a measurement of `what` over this transport with `size`-byte
    /// messages (an eventfd carries 8 bytes whatever the size).
    pub fn label(self, size: u64, what: &str) -> String {
        match self {
            Transport::Fd(FdKind::EventFd) if size != 8 => format!("eventfd (8 B) {what}"),
            t => format!("{} {what}", t.name()),
        }
    }
}

/// Segments this run created: removed when dropped, whatever happened.
#[derive(Default)]
pub struct Segments {
    names: Vec<String>,
    next: u32,
}

impl Segments {
    /// Creates a fresh segment for `settings` and returns its name.
    pub fn create(&mut self, settings: &Settings) -> Result<String, CliError> {
        let name = format!("bench.{}.{}", std::process::id(), self.next);
        self.next += 1;
        let participants = (settings.producers + settings.consumers + 8).min(1024);
        let options =
            Options::new(settings.capacity, settings.size.max(8)).max_participants(participants);
        // The controller's handle is dropped at once: the children attach themselves.
        drop(Queue::create(&name, &options)?);
        self.names.push(name.clone());
        Ok(name)
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Queue::unlink(name);
        }
    }
}

/// Whether a workload's channel runs both ways (ping-pong) or one way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// a→b only.
    OneWay,
    /// a→b and b→a.
    BothWays,
}

/// Fills in the spec fields (`transport`, `wait` or `poll`, and the ends of each
/// [`Side`]) through which the children find their channels,
/// creating segments or descriptors; returns the descriptors the children inherit.
pub fn wire(
    settings: &Settings,
    segments: &mut Segments,
    transport: Transport,
    direction: Direction,
    spec: &mut Value,
) -> Result<Vec<OwnedFd>, CliError> {
    let mut inherited = Vec::new();
    let both_ways = direction == Direction::BothWays;
    match transport {
        Transport::Shmq => {
            spec["transport"] = json!("shmq");
            spec["wait"] = json!(settings.wait_spec());
            let forward = segments.create(settings)?;
            spec[Side::A.tx()] = json!(forward);
            spec[Side::B.rx()] = json!(forward);
            if both_ways {
                let backward = segments.create(settings)?;
                spec[Side::B.tx()] = json!(backward);
                spec[Side::A.rx()] = json!(backward);
            }
        }
        Transport::Fd(kind) => {
            spec["transport"] = json!(kind.name());
            spec["poll"] = json!(settings.poll_spec());
            let forward = FdChannel::new(kind)?;
            spec[Side::A.tx()] = json!(forward.tx.as_raw_fd());
            spec[Side::B.rx()] = json!(forward.rx.as_raw_fd());
            inherited.extend([forward.tx, forward.rx]);
            if both_ways {
                let backward = FdChannel::new(kind)?;
                spec[Side::B.tx()] = json!(backward.tx.as_raw_fd());
                spec[Side::A.rx()] = json!(backward.rx.as_raw_fd());
                inherited.extend([backward.tx, backward.rx]);
            }
        }
        Transport::Crossbeam => {}
    }
    Ok(inherited)
}
