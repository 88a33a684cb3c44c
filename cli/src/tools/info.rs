//! `shmq inspect` and `shmq ls`: what the tools show of a segment, as text or JSON.
//!
//! [`SegmentView::of`] is the one place in the CLI that reads a work queue's
//! [`SegmentInfo`] fields; everything printed goes through the view, so a change in
//! the library's snapshot type is a change to that function alone. A broadcast
//! segment is shown by [`broadcast_info`](super::broadcast_info), from the library's
//! broadcast [`Snapshot`].

use std::fmt::Write as _;
use std::io::Write as _;

use clap::Args;
use serde_json::{json, Value};
use shmq::broadcast::Snapshot;
use shmq::{ParticipantInfo, Queue, RecoveryCounts, SegmentInfo};

use super::broadcast_info;
use super::escape::{ascii_json, shown};
use super::escaped;
use crate::error::{stdout_error, CliError, EX_SOFTWARE};

/// `shmq inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Segment name.
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `shmq ls`. For a broadcast segment, OCCUPANCY is what its slowest live
/// subscriber has not read yet.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// How `ls` and `inspect` name a work queue's kind.
const WORK_QUEUE: &str = "work queue";

/// What the tools show of one segment.
struct SegmentView<'a> {
    name: &'a str,
    version: u32,
    capacity: u64,
    max_message_size: u64,
    slot_stride: u64,
    total_size: u64,
    max_participants: u64,
    creator_pid: u64,
    creation_time_ns: u64,
    mode: u64,
    enqueue_pos: u64,
    dequeue_pos: u64,
    occupancy: u64,
    waiting_consumers: u32,
    waiting_producers: u32,
    participants: &'a [ParticipantInfo],
    live: usize,
    dead: usize,
    recovery: RecoveryCounts,
    max_deliveries: u64,
    dead_letters: Option<String>,
    message_type: Option<String>,
}

impl<'a> SegmentView<'a> {
    /// Reads everything the tools show from `info`.
    fn of(info: &'a SegmentInfo) -> Self {
        Self {
            name: &info.name,
            version: info.layout_version,
            capacity: info.capacity,
            max_message_size: info.max_message_size,
            slot_stride: info.slot_stride,
            total_size: info.total_size,
            max_participants: info.max_participants,
            creator_pid: info.creator_pid,
            creation_time_ns: info
                .created
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            mode: u64::from(info.mode),
            enqueue_pos: info.enqueue_pos,
            dequeue_pos: info.dequeue_pos,
            occupancy: info.occupancy,
            waiting_consumers: info.waiters.consumers,
            waiting_producers: info.waiters.producers,
            participants: &info.participants,
            live: info.live(),
            dead: info.dead(),
            recovery: info.recovery,
            max_deliveries: info.max_deliveries,
            dead_letters: info.dead_letter_name(),
            message_type: info.message_type.as_ref().map(ToString::to_string),
        }
    }

    /// Occupancy as shown: never above the capacity (the cursors may move while
    /// the snapshot is read).
    fn shown_occupancy(&self) -> u64 {
        self.occupancy.min(self.capacity)
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "kind": WORK_QUEUE,
            "version": self.version,
            "capacity": self.capacity,
            "max_message_size": self.max_message_size,
            "slot_stride": self.slot_stride,
            "total_size": self.total_size,
            "max_participants": self.max_participants,
            "creator_pid": self.creator_pid,
            "creation_time_ns": self.creation_time_ns,
            "mode": format!("{:04o}", self.mode),
            "enqueue_pos": self.enqueue_pos,
            "dequeue_pos": self.dequeue_pos,
            "occupancy": self.occupancy,
            "waiting_consumers": self.waiting_consumers,
            "waiting_producers": self.waiting_producers,
            "live": self.live,
            "dead": self.dead,
            "participants": self.participants.iter().map(participant_json).collect::<Vec<_>>(),
            "recovery": {
                "skipped": self.recovery.skipped,
                "redelivered": self.recovery.redelivered,
                "freed": self.recovery.freed,
                "corrupt": self.recovery.corrupt,
                "abandoned": self.recovery.abandoned,
                "dead_lettered": self.recovery.dead_lettered,
                "dead_letter_failures": self.recovery.dead_letter_failures,
            },
            "max_deliveries": self.max_deliveries,
            "dead_letter_segment": self.dead_letters,
            "message_type": self.message_type,
        })
    }

    /// `shmq inspect`'s text: the header lines, then the participants and any
    /// stuck claims.
    fn text(&self) -> String {
        let mut text = String::new();
        let r = &self.recovery;
        let _ = writeln!(text, "segment        {}", shown(self.name));
        let _ = writeln!(text, "kind           {WORK_QUEUE}");
        let _ = writeln!(text, "layout         v{}", self.version);
        let _ = writeln!(
            text,
            "capacity       {} messages of at most {} bytes (slot stride {} B, segment {} B)",
            self.capacity, self.max_message_size, self.slot_stride, self.total_size
        );
        if let Some(message_type) = &self.message_type {
            let _ = writeln!(text, "message type   {}", shown(message_type));
        }
        let _ = writeln!(
            text,
            "occupancy      {} / {}",
            self.shown_occupancy(),
            self.capacity
        );
        let _ = writeln!(
            text,
            "cursors        enqueue {}  dequeue {}",
            self.enqueue_pos, self.dequeue_pos
        );
        let _ = writeln!(
            text,
            "waiters        {} consumers, {} producers asleep",
            self.waiting_consumers, self.waiting_producers
        );
        let _ = writeln!(
            text,
            "created by     pid {} (mode {:04o})",
            self.creator_pid, self.mode
        );
        let _ = writeln!(
            text,
            "recovery       {} skipped, {} redelivered, {} records freed, {} corrupt",
            r.skipped, r.redelivered, r.freed, r.corrupt
        );
        let _ = match &self.dead_letters {
            Some(dead) => writeln!(
                text,
                "deliveries     at most {}, then to `{}`: {} abandoned, {} dead-lettered, {} failed moves",
                self.max_deliveries,
                shown(dead),
                r.abandoned,
                r.dead_lettered,
                r.dead_letter_failures
            ),
            None => writeln!(
                text,
                "deliveries     no limit (no dead letters): {} abandoned",
                r.abandoned
            ),
        };
        let _ = writeln!(
            text,
            "participants   {} live, {} dead (table of {})",
            self.live, self.dead, self.max_participants
        );
        participants_table(&mut text, self.participants);
        stuck_claims(&mut text, self.participants);
        text
    }

    /// `shmq ls`'s row for the segment listed as `name`.
    fn ls_row(&self, name: &str) -> String {
        format!(
            "{:<32} {:<20} {:>10} {:>10} {:>6} {:>6}  {}",
            shown(name),
            WORK_QUEUE,
            self.shown_occupancy(),
            self.capacity,
            self.live,
            self.dead,
            if self.live > 0 { "in use" } else { "unused" }
        )
    }
}

fn participant_json(p: &ParticipantInfo) -> Value {
    json!({
        "index": p.index,
        "pid": p.pid,
        "start_time": p.start_time,
        "alive": p.alive,
        "enqueue_claim": p.enqueue_claim,
        "dequeue_claim": p.dequeue_claim,
        "enqueue_stuck": p.enqueue_stuck,
        "dequeue_stuck": p.dequeue_stuck,
        "operations": p.operations,
    })
}

fn participants_table(text: &mut String, participants: &[ParticipantInfo]) {
    if participants.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "  {:>5} {:>8} {:>5} {:>14} {:>14} {:>12}",
        "index", "pid", "alive", "enqueue claim", "dequeue claim", "operations"
    );
    let claim = |c: Option<u64>, stuck: bool| match c {
        None => "-".to_owned(),
        Some(c) if stuck => format!("{c} STUCK"),
        Some(c) => c.to_string(),
    };
    for p in participants {
        let _ = writeln!(
            text,
            "  {:>5} {:>8} {:>5} {:>14} {:>14} {:>12}",
            p.index,
            p.pid,
            if p.alive { "yes" } else { "DEAD" },
            claim(p.enqueue_claim, p.enqueue_stuck),
            claim(p.dequeue_claim, p.dequeue_stuck),
            p.operations
        );
    }
}

fn stuck_claims(text: &mut String, participants: &[ParticipantInfo]) {
    let stuck: Vec<_> = participants
        .iter()
        .filter(|p| p.enqueue_stuck || p.dequeue_stuck)
        .collect();
    if stuck.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "stuck claims   {} (held by {}); a live participant's next sweep repairs dead ones",
        stuck.len(),
        stuck
            .iter()
            .map(|p| format!("pid {}{}", p.pid, if p.alive { "" } else { " (dead)" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Why `shmq rm` left segment `name` alone.
pub(super) fn in_use_message(name: &str, info: &SegmentInfo) -> String {
    let view = SegmentView::of(info);
    let pids: Vec<String> = view
        .participants
        .iter()
        .filter(|p| p.alive)
        .map(|p| p.pid.to_string())
        .collect();
    format!(
        "segment `{}` has {} live participant(s) (pid {}); not removed (use --force)",
        shown(name),
        view.live,
        pids.join(", ")
    )
}

/// Prints `value` as ASCII JSON (names may hold anything; see [`ascii_json`]).
fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(EX_SOFTWARE, format!("encoding JSON: {e}")))?;
    writeln!(std::io::stdout(), "{}", ascii_json(&text)).map_err(stdout_error)
}

/// A segment's snapshot, of whichever kind it is.
enum Shown {
    WorkQueue(SegmentInfo),
    Broadcast(Snapshot),
}

impl Shown {
    /// Reads segment `name` as a work queue (`work_queue` gives its snapshot) or,
    /// if that says it is a broadcast segment ([`shmq::Error::WrongKind`]), as one.
    fn read(
        name: &str,
        work_queue: impl FnOnce() -> Result<SegmentInfo, shmq::Error>,
    ) -> Result<Self, shmq::Error> {
        match work_queue() {
            Ok(info) => Ok(Shown::WorkQueue(info)),
            Err(shmq::Error::WrongKind { .. }) => Snapshot::read(name).map(Shown::Broadcast),
            Err(e) => Err(e),
        }
    }

    fn json(&self) -> Value {
        match self {
            Shown::WorkQueue(info) => SegmentView::of(info).json(),
            Shown::Broadcast(snapshot) => broadcast_info::json(snapshot),
        }
    }

    fn text(&self) -> String {
        match self {
            Shown::WorkQueue(info) => SegmentView::of(info).text(),
            Shown::Broadcast(snapshot) => broadcast_info::text(snapshot),
        }
    }

    fn ls_row(&self, name: &str) -> String {
        match self {
            Shown::WorkQueue(info) => SegmentView::of(info).ls_row(name),
            Shown::Broadcast(snapshot) => broadcast_info::ls_row(snapshot, name),
        }
    }
}

/// `shmq inspect`.
pub fn inspect(args: &InspectArgs) -> Result<(), CliError> {
    let segment = Shown::read(&args.name, || Queue::inspect(&args.name)).map_err(escaped)?;
    if args.json {
        return print_json(&segment.json());
    }
    write!(std::io::stdout(), "{}", segment.text()).map_err(stdout_error)
}

/// `shmq ls`.
pub fn ls(args: &LsArgs) -> Result<(), CliError> {
    // `Queue::list` snapshots work queues; a broadcast segment's entry is
    // `WrongKind`, and it is read again as what it is.
    let segments: Vec<(String, Result<Shown, shmq::Error>)> = Queue::list()
        .map_err(escaped)?
        .into_iter()
        .map(|entry| {
            let segment = Shown::read(&entry.name, || entry.info);
            (entry.name, segment)
        })
        .collect();
    if args.json {
        let list: Vec<Value> = segments
            .iter()
            .map(|(name, segment)| match segment {
                Ok(segment) => segment.json(),
                Err(e) => json!({ "name": name, "error": e.to_string() }),
            })
            .collect();
        return print_json(&Value::Array(list));
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<32} {:<20} {:>10} {:>10} {:>6} {:>6}  state",
        "NAME", "KIND", "OCCUPANCY", "CAPACITY", "LIVE", "DEAD"
    );
    for (name, segment) in &segments {
        let _ = match segment {
            Ok(segment) => writeln!(text, "{}", segment.ls_row(name)),
            Err(e) => writeln!(
                text,
                "{:<32} {:<20} {:>10} {:>10} {:>6} {:>6}  error: {}",
                shown(name),
                "-",
                "-",
                "-",
                "-",
                "-",
                shown(&e.to_string())
            ),
        };
    }
    write!(std::io::stdout(), "{text}").map_err(stdout_error)
}
