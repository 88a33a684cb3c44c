//! `shmq dead-letters`: what a segment's dead-letter segment holds, and taking the
//! dead letters out (to stdout, or back into the segment once the bug that made
//! them poison is fixed).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use shmq::{Queue, RecvError};

use super::escape::shown;
use super::escaped;
use crate::error::{CliError, EX_OSERR, EX_SOFTWARE, EX_USAGE};

/// How long `--drain` / `--requeue` wait for a dead letter that a sweep is moving.
const SETTLE: Duration = Duration::from_millis(200);

/// `shmq dead-letters`.
#[derive(Args, Debug)]
pub struct DeadLettersArgs {
    /// The segment whose dead letters to show (they live in NAME.dead).
    pub name: String,
    /// Take every dead letter out and write it to stdout, one per line (or framed).
    #[arg(long, conflicts_with = "requeue")]
    pub drain: bool,
    /// Take every dead letter out and send it to NAME again (a fresh delivery count).
    #[arg(long)]
    pub requeue: bool,
    /// With --drain: 4-byte little-endian length-prefixed frames instead of lines.
    #[arg(long, requires = "drain")]
    pub framed: bool,
}

/// `shmq dead-letters`: a summary on stderr; with `--drain` or `--requeue`, each
/// dead letter is acknowledged only after it was written or sent.
pub fn dead_letters(args: &DeadLettersArgs) -> Result<(), CliError> {
    if let Ok(snapshot) = shmq::broadcast::Snapshot::read(&args.name) {
        return Err(CliError::new(
            EX_USAGE,
            format!(
                "segment `{}` is a {} segment: it has no dead letters (every subscriber \
                 gets every message; nothing is redelivered)",
                shown(&args.name),
                super::broadcast_info::kind_name(&snapshot)
            ),
        ));
    }
    let info = Queue::inspect(&args.name).map_err(escaped)?;
    let Some(dead_name) = info.dead_letter_name() else {
        return Err(CliError::new(
            EX_USAGE,
            format!(
                "segment `{}` has no delivery limit, so no dead letters",
                shown(&args.name)
            ),
        ));
    };
    let waiting = match Queue::inspect(&dead_name) {
        Ok(dead) => dead.occupancy.min(dead.capacity),
        Err(shmq::Error::NotFound { .. }) => 0,
        Err(e) => return Err(escaped(e)),
    };
    eprintln!(
        "`{}`: at most {} deliveries; {} dead-lettered so far, {} failed moves; `{}` holds {waiting}",
        shown(&args.name),
        info.max_deliveries,
        info.recovery.dead_lettered,
        info.recovery.dead_letter_failures,
        shown(&dead_name),
    );
    if !(args.drain || args.requeue) || waiting == 0 {
        return Ok(());
    }
    let mut dead = Queue::open(&dead_name).map_err(escaped)?;
    let target = if args.requeue {
        Some(Queue::open(&args.name).map_err(escaped)?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let mut moved = 0u64;
    loop {
        let delivery = match dead.receive_timeout(SETTLE) {
            Ok(delivery) => delivery,
            Err(RecvError::Timeout) => break,
            Err(e) => return Err(CliError::new(EX_SOFTWARE, e.to_string())),
        };
        let outcome = match &target {
            Some(queue) => queue.send(&delivery).map_err(|e| e.to_string()),
            None => write_one(&mut out, &delivery, args.framed).map_err(|e| e.to_string()),
        };
        if let Err(e) = outcome {
            let _ = delivery.abandon();
            return Err(CliError::new(
                EX_OSERR,
                format!(
                    "after {moved} dead letters: {e}; the one in hand was given back to `{}`",
                    shown(&dead_name)
                ),
            ));
        }
        moved += 1;
    }
    eprintln!(
        "{} {moved} dead letters",
        if args.requeue { "requeued" } else { "drained" }
    );
    Ok(())
}

pub(super) fn write_one(out: &mut impl Write, message: &[u8], framed: bool) -> std::io::Result<()> {
    if framed {
        out.write_all(&(message.len() as u32).to_le_bytes())?;
        out.write_all(message)?;
    } else {
        out.write_all(message)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
