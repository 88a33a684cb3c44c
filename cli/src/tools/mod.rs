//! Segment tools: `create`, `send`, `recv`, `publish`, `subscribe`, `inspect`, `ls`,
//! `rm`, `dead-letters`. Sending and receiving through stdin / stdout are in
//! [`stream`], and what `recv` knows of a pipe on stdout in [`pipe`]; broadcast
//! segments (`create --broadcast`, `publish`, `subscribe`) are in [`broadcast`];
//! what `inspect` and `ls` show of a segment is in [`info`] ([`broadcast_info`] for
//! a broadcast segment); how every name is printed is in [`escape`].

mod broadcast;
mod broadcast_info;
mod dead;
mod escape;
mod info;
mod pipe;
mod stream;

use clap::Args;
use shmq::broadcast::Snapshot;
use shmq::{Options, Queue, Removal};

use crate::error::{CliError, EX_UNAVAILABLE};
use escape::shown;

pub use broadcast::{publish, subscribe, PublishArgs, SubscribeArgs};
pub use dead::{dead_letters, DeadLettersArgs};
pub use info::{inspect, ls, InspectArgs, LsArgs};
pub use stream::{recv, send, RecvArgs, SendArgs};

/// `shmq create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Segment name: ASCII letters, digits and . _ - @ + : (starting with a letter,
    /// digit or _); the object is /dev/shm/shmq.NAME.
    pub name: String,
    /// Messages the queue holds (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub capacity: u64,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 240)]
    pub max_size: u64,
    /// Permission bits, octal (e.g. 0660 to share with the group).
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
    /// Handles that may be attached at once.
    #[arg(long, default_value_t = 64)]
    pub participants: u64,
    /// Deliveries a message gets before it moves to the dead-letter segment
    /// NAME.dead (0: no limit).
    #[arg(long, default_value_t = 5)]
    pub max_deliveries: u32,
    /// Make a broadcast segment instead of a work queue: every subscriber receives
    /// every message (`shmq publish`, `shmq subscribe`). `lossless`: publishers wait
    /// for the slowest live subscriber; `overwrite`: publishers never wait, and a
    /// subscriber that falls a ring behind is told how many messages it missed.
    #[arg(long, value_name = "MODE", conflicts_with = "max_deliveries")]
    pub broadcast: Option<broadcast::BroadcastMode>,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| format!("`{text}` is not an octal mode such as 0660"))
}

/// `shmq rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Segment names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove even if live processes are attached (they keep their mapping).
    #[arg(long)]
    pub force: bool,
}

/// `shmq create`.
pub fn create(args: &CreateArgs) -> Result<(), CliError> {
    if let Some(mode) = args.broadcast {
        return broadcast::create(args, mode);
    }
    let options = Options::new(args.capacity, args.max_size)
        .mode(args.mode)
        .max_participants(args.participants)
        .max_deliveries(args.max_deliveries);
    let queue = Queue::create(&args.name, &options).map_err(escaped)?;
    eprintln!(
        "created segment `{}`: capacity {}, max message {} bytes, mode {:04o}",
        shown(queue.name()),
        queue.capacity(),
        queue.max_message_size(),
        args.mode
    );
    Ok(())
}

/// `shmq rm`: removes each segment nobody alive uses (every one with `--force`).
pub fn rm(args: &RmArgs) -> Result<(), CliError> {
    let mut failure = None;
    for name in &args.names {
        let outcome = if args.force {
            Queue::unlink(name).map(|()| Removed::Yes)
        } else {
            remove_if_unused(name)
        };
        match outcome {
            Ok(Removed::Yes) => eprintln!("removed `{}`", shown(name)),
            Ok(Removed::LeftAlone) => {
                failure.get_or_insert(CliError::new(EX_UNAVAILABLE, ""));
            }
            Err(e) => {
                // A segment too broken to inspect can still be removed with --force.
                let e = escaped(e);
                eprintln!("shmq: {}", e.message);
                failure.get_or_insert(CliError::new(e.code, ""));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// What `shmq rm` did with one name.
#[derive(Debug, PartialEq, Eq)]
enum Removed {
    Yes,
    /// Left alone; why is already on stderr.
    LeftAlone,
}

/// Removes `name` unless a live process is attached to it (or, for a work queue,
/// messages wait in it: a broadcast segment holds nothing anyone is owed once no
/// subscriber is alive).
fn remove_if_unused(name: &str) -> Result<Removed, shmq::Error> {
    let removal = match Queue::remove_if_unused(name) {
        Err(shmq::Error::WrongKind { .. }) => {
            let snapshot = Snapshot::read(name)?;
            if snapshot.live() > 0 {
                eprintln!("shmq: {}", broadcast_info::in_use_message(name, &snapshot));
                return Ok(Removed::LeftAlone);
            }
            return Queue::unlink(name).map(|()| Removed::Yes);
        }
        other => other?,
    };
    Ok(match removal {
        Removal::Removed(_) => Removed::Yes,
        Removal::InUse(info) => {
            eprintln!("shmq: {}", info::in_use_message(name, &info));
            Removed::LeftAlone
        }
        Removal::NotEmpty(info) => {
            eprintln!(
                "shmq: segment `{}` holds {} undelivered message(s); not removed (use --force to drop them)",
                shown(name),
                info.occupancy
            );
            Removed::LeftAlone
        }
        // A later library version's outcome: say so rather than guess.
        other => {
            eprintln!("shmq: segment `{}`: {other:?}", shown(name));
            Removed::LeftAlone
        }
    })
}

/// A library error as the tools report it: its message quotes names, escaped.
fn escaped(e: shmq::Error) -> CliError {
    let e = CliError::from(e);
    CliError::new(e.code, shown(&e.message))
}
