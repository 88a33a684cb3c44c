//! What `shmq inspect` and `shmq ls` show of a broadcast segment: its mode, the
//! tail, each subscriber's cursor and how far it is behind, the publishers and
//! their claims, dead records and the counters. Everything comes from the library's
//! read-only [`Snapshot`]; [`info`](super::info) dispatches here.

use std::fmt::Write as _;

use serde_json::{json, Value};
use shmq::broadcast::{RecordInfo, RecordRole, Snapshot};

use super::broadcast::mode_name;
use super::escape::shown;

/// How `ls` and `inspect` name the segment's kind.
pub fn kind_name(snapshot: &Snapshot) -> String {
    format!("broadcast/{}", mode_name(snapshot.slow_subscriber))
}

fn role_name(role: RecordRole) -> &'static str {
    match role {
        RecordRole::Publisher => "publisher",
        RecordRole::Subscriber => "subscriber",
        _ => "none",
    }
}

/// Records in `role` whose process is alive.
fn live_in(snapshot: &Snapshot, role: RecordRole) -> usize {
    snapshot
        .records
        .iter()
        .filter(|r| r.alive && r.role == role)
        .count()
}

/// Messages the slowest live subscriber has not read and the ring still holds
/// (`ls`'s occupancy column): 0 without a live subscriber.
fn backlog(snapshot: &Snapshot) -> u64 {
    snapshot
        .slowest_behind()
        .unwrap_or(0)
        .min(snapshot.capacity)
}

/// `shmq inspect --json` (and `shmq ls --json`'s entry) for a broadcast segment.
pub fn json(snapshot: &Snapshot) -> Value {
    json!({
        "name": snapshot.name,
        "kind": "broadcast",
        "slow_subscriber": mode_name(snapshot.slow_subscriber),
        "version": snapshot.layout_version,
        "capacity": snapshot.capacity,
        "max_message_size": snapshot.max_message_size,
        "slot_stride": snapshot.slot_stride,
        "total_size": snapshot.total_size,
        "max_participants": snapshot.max_participants,
        "creator_pid": snapshot.creator_pid,
        "creation_time_ns": snapshot
            .created
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        "mode": format!("{:04o}", snapshot.mode),
        "tail": snapshot.tail,
        "slowest_behind": snapshot.slowest_behind(),
        "sleeping_subscribers": snapshot.sleeping_subscribers,
        "sleeping_publishers": snapshot.sleeping_publishers,
        "live": snapshot.live(),
        "dead": snapshot.dead(),
        "publishers": live_in(snapshot, RecordRole::Publisher),
        "subscribers": live_in(snapshot, RecordRole::Subscriber),
        "records": snapshot.records.iter().map(record_json).collect::<Vec<_>>(),
        "recovery": {
            "skipped": snapshot.skipped,
            "freed": snapshot.freed,
            "lagged": snapshot.lagged,
        },
    })
}

fn record_json(r: &RecordInfo) -> Value {
    json!({
        "index": r.index,
        "role": role_name(r.role),
        "pid": r.pid,
        "start_time": r.start_time,
        "alive": r.alive,
        "claim": r.claim,
        "claim_outstanding": r.claim_outstanding,
        "cursor": r.cursor,
        "behind": r.behind,
        "operations": r.operations,
    })
}

/// `shmq inspect`'s text for a broadcast segment.
pub fn text(snapshot: &Snapshot) -> String {
    let s = snapshot;
    let mut text = String::new();
    let _ = writeln!(text, "segment        {}", shown(&s.name));
    let _ = writeln!(
        text,
        "kind           {} ({})",
        kind_name(s),
        match s.slow_subscriber {
            shmq::broadcast::SlowSubscriber::Lossless =>
                "publishers wait for the slowest live subscriber",
            _ => "publishers never wait; a subscriber a ring behind misses messages",
        }
    );
    let _ = writeln!(text, "layout         v{}", s.layout_version);
    let _ = writeln!(
        text,
        "capacity       {} messages of at most {} bytes (slot stride {} B, segment {} B)",
        s.capacity, s.max_message_size, s.slot_stride, s.total_size
    );
    let _ = writeln!(text, "tail           {} (next position published)", s.tail);
    let _ = match s.slowest_behind() {
        Some(behind) => writeln!(
            text,
            "slowest        {behind} behind the tail (slowest live subscriber)"
        ),
        None => writeln!(text, "slowest        - (no live subscriber)"),
    };
    let _ = writeln!(
        text,
        "waiters        {} subscribers, {} publishers asleep",
        s.sleeping_subscribers, s.sleeping_publishers
    );
    let _ = writeln!(
        text,
        "created by     pid {} (mode {:04o})",
        s.creator_pid, s.mode
    );
    let _ = writeln!(
        text,
        "recovery       {} skipped, {} records freed, {} missed by lagging subscribers",
        s.skipped, s.freed, s.lagged
    );
    let _ = writeln!(
        text,
        "participants   {} live, {} dead (table of {}): {} publishers, {} subscribers alive",
        s.live(),
        s.dead(),
        s.max_participants,
        live_in(s, RecordRole::Publisher),
        live_in(s, RecordRole::Subscriber)
    );
    records_table(&mut text, s);
    text
}

fn records_table(text: &mut String, s: &Snapshot) {
    if s.records.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "  {:>5} {:>8} {:>5} {:>10} {:>14} {:>14} {:>14} {:>12}",
        "index", "pid", "alive", "role", "claim", "cursor", "behind", "operations"
    );
    let or_dash = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for r in &s.records {
        let claim = match r.claim {
            Some(c) if r.claim_outstanding => format!("{c} WRITING"),
            c => or_dash(c),
        };
        let behind = match r.behind {
            // Overwrite mode: more than a ring behind, it will be told it lagged.
            Some(b) if b > s.capacity => format!("{b} LAGGING"),
            b => or_dash(b),
        };
        let _ = writeln!(
            text,
            "  {:>5} {:>8} {:>5} {:>10} {:>14} {:>14} {:>14} {:>12}",
            r.index,
            r.pid,
            if r.alive { "yes" } else { "DEAD" },
            role_name(r.role),
            claim,
            or_dash(r.cursor),
            behind,
            r.operations
        );
    }
}

/// `shmq ls`'s row for the broadcast segment listed as `name`.
pub fn ls_row(snapshot: &Snapshot, name: &str) -> String {
    let live = snapshot.live();
    format!(
        "{:<32} {:<20} {:>10} {:>10} {:>6} {:>6}  {}",
        shown(name),
        kind_name(snapshot),
        backlog(snapshot),
        snapshot.capacity,
        live,
        snapshot.dead(),
        if live > 0 {
            format!(
                "in use ({} publishers, {} subscribers)",
                live_in(snapshot, RecordRole::Publisher),
                live_in(snapshot, RecordRole::Subscriber)
            )
        } else {
            "unused".to_owned()
        }
    )
}

/// Why `shmq rm` left broadcast segment `name` alone.
pub fn in_use_message(name: &str, snapshot: &Snapshot) -> String {
    let pids: Vec<String> = snapshot
        .records
        .iter()
        .filter(|r| r.alive)
        .map(|r| format!("{} {}", role_name(r.role), r.pid))
        .collect();
    format!(
        "segment `{}` has {} live participant(s) ({}); not removed (use --force)",
        shown(name),
        snapshot.live(),
        pids.join(", ")
    )
}
