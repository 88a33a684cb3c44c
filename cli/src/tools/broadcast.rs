//! `shmq create --broadcast`, `shmq publish` and `shmq subscribe`: broadcast
//! segments, where every subscriber receives every message. Messages go in and out
//! in `shmq send` / `shmq recv`'s framings (lines, or 4-byte little-endian
//! length-prefixed frames).

use std::ffi::OsString;
use std::io::BufWriter;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use shmq::broadcast::{PublishError, Publisher, RecvError, SlowSubscriber, Subscriber};
use shmq::Options;

use super::escape::shown;
use super::stream::{next_slice, send_frames, send_lines};
use super::{dead::write_one, escaped, pipe, CreateArgs};
use crate::error::{stdout_error, CliError, EX_DATAERR, EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE};
use crate::units::parse_duration;

/// `shmq subscribe --fail-on-lag`'s exit code when the subscriber missed messages
/// (outside the sysexits range the other failures use, so a script can tell it).
pub const EX_LAGGED: u8 = 3;
/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EX_INTERRUPTED: u8 = 130;
/// Longest single wait for a message: between two, `subscribe` checks its timeout,
/// Ctrl-C, and whether stdout's reader is still there.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// What a broadcast segment does about a subscriber that falls a ring behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BroadcastMode {
    /// Publishers wait for the slowest live subscriber: nobody misses a message.
    Lossless,
    /// Publishers never wait: a slow subscriber misses messages and is told how many.
    Overwrite,
}

impl BroadcastMode {
    fn slow_subscriber(self) -> SlowSubscriber {
        match self {
            BroadcastMode::Lossless => SlowSubscriber::Lossless,
            BroadcastMode::Overwrite => SlowSubscriber::Overwrite,
        }
    }
}

/// `shmq publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Broadcast segment name.
    pub name: String,
    /// Messages to publish, one per argument; without any, each line of stdin (or
    /// each frame, with --framed) is one message.
    pub messages: Vec<OsString>,
    /// Read 4-byte little-endian length-prefixed frames from stdin instead of lines.
    #[arg(long, conflicts_with = "messages")]
    pub framed: bool,
    /// Lossless segments: give up on a message if the slowest live subscriber does
    /// not make room for this long (e.g. 2s); exit code 75.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// `shmq subscribe`.
#[derive(Args, Debug)]
#[command(after_help = "\
On an overwrite segment a subscriber that falls a ring behind misses messages: each \
time, `shmq: missed N messages` goes to stderr and the subscription continues from \
the oldest message still held (with --fail-on-lag it ends there, exit code 3). \
Exit codes: 0 done (--count reached, or stdout's reader went away), 3 lagged \
(--fail-on-lag), 75 --timeout, 130 interrupted (Ctrl-C, SIGTERM).")]
pub struct SubscribeArgs {
    /// Broadcast segment name.
    pub name: String,
    /// Stop after this many messages (default: run until stopped).
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit with code 75 if no message arrives for this long (500ms, 2s, 1m).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Write 4-byte little-endian length-prefixed frames instead of lines.
    #[arg(long)]
    pub framed: bool,
    /// Overwrite segments: end at the first lag (messages missed) with exit code 3,
    /// instead of reporting it on stderr and going on.
    #[arg(long)]
    pub fail_on_lag: bool,
}

/// `shmq create --broadcast MODE`: the segment, with a publisher attached only
/// while it is made.
pub fn create(args: &CreateArgs, mode: BroadcastMode) -> Result<(), CliError> {
    let options = Options::new(args.capacity, args.max_size)
        .mode(args.mode)
        .max_participants(args.participants);
    let publisher =
        Publisher::create(&args.name, &options, mode.slow_subscriber()).map_err(escaped)?;
    eprintln!(
        "created broadcast segment `{}` ({}): capacity {}, max message {} bytes, mode {:04o}",
        shown(&args.name),
        mode_name(mode.slow_subscriber()),
        publisher.capacity(),
        publisher.max_message_size(),
        args.mode
    );
    Ok(())
}

/// How the tools name a broadcast segment's mode.
pub fn mode_name(slow: SlowSubscriber) -> &'static str {
    match slow {
        SlowSubscriber::Lossless => "lossless",
        SlowSubscriber::Overwrite => "overwrite",
    }
}

/// The tool opening a segment, for [`open_error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Send,
    Recv,
    Publish,
    Subscribe,
}

impl Tool {
    /// Its name, the kind of segment it works on, and its counterpart for the
    /// other kind.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Tool::Send => ("send", "work queues", "publish"),
            Tool::Recv => ("recv", "work queues", "subscribe"),
            Tool::Publish => ("publish", "broadcast segments", "send"),
            Tool::Subscribe => ("subscribe", "broadcast segments", "recv"),
        }
    }
}

/// The error for opening a segment with `tool` when the segment is of the other
/// kind: which command fits it (exit code 64). Any other library error as the
/// tools report it.
pub fn open_error(e: shmq::Error, tool: Tool) -> CliError {
    let shmq::Error::WrongKind { name, found, .. } = &e else {
        return escaped(e);
    };
    let (command, works_on, instead) = tool.parts();
    CliError::new(
        EX_USAGE,
        format!(
            "segment `{name}` is a {found} segment, and `shmq {command}` works on {works_on}: \
             use `shmq {instead} {name}`",
            name = shown(name)
        ),
    )
}

/// `shmq publish`: each argument, or each line / frame of stdin, to every
/// subscriber.
pub fn publish(args: &PublishArgs) -> Result<(), CliError> {
    let publisher = Publisher::open(&args.name).map_err(|e| open_error(e, Tool::Publish))?;
    let mut published = 0u64;
    let mut put = |message: &[u8]| -> Result<(), CliError> {
        match args.timeout {
            Some(t) => publisher.publish_timeout(message, t),
            None => publisher.publish(message),
        }
        .map_err(|e| publish_error(e, published))?;
        published += 1;
        Ok(())
    };
    if !args.messages.is_empty() {
        return args
            .messages
            .iter()
            .try_for_each(|message| put(message.as_bytes()));
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let max = publisher.max_message_size();
    if args.framed {
        send_frames(&mut input, max, &mut put)
    } else {
        send_lines(&mut input, max, &mut put)
    }
}

fn publish_error(e: PublishError, published: u64) -> CliError {
    match e {
        PublishError::Timeout => CliError::new(
            EX_TEMPFAIL,
            format!(
                "timed out: the slowest live subscriber did not make room ({published} messages published)"
            ),
        ),
        e => CliError::new(EX_DATAERR, format!("message {}: {e}", published + 1)),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes Ctrl-C and SIGTERM end `subscribe` between two waits, so its record is
/// freed on the way out (a killed subscriber's is freed later, by a publisher or a
/// sweep).
fn stop_on_interrupt() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
        // `signal` with a valid function pointer has no other preconditions.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// `shmq subscribe`: every message published from now on, to stdout.
pub fn subscribe(args: &SubscribeArgs) -> Result<(), CliError> {
    let subscriber = Subscriber::open(&args.name).map_err(|e| open_error(e, Tool::Subscribe))?;
    stop_on_interrupt();
    let max = usize::try_from(subscriber.max_message_size()).unwrap_or(usize::MAX);
    let mut buffer = vec![0u8; max];
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(max.saturating_add(8), stdout.lock());
    let pipe = pipe::stdout_is_pipe();
    let mut tally = Tally::default();
    while args.count.is_none_or(|count| tally.received < count) {
        let waiting_since = Instant::now();
        let len = loop {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return Err(CliError::new(
                    EX_INTERRUPTED,
                    format!("interrupted; {}", tally.summary()),
                ));
            }
            if pipe && pipe::reader_gone().unwrap_or(false) {
                // `| head -n1`: the reader has what it wanted.
                return Ok(());
            }
            let Some(slice) = next_slice(args.timeout, waiting_since, WAIT_SLICE) else {
                return Err(CliError::new(
                    EX_TEMPFAIL,
                    format!(
                        "timed out: no message within {:?}; {}",
                        args.timeout.unwrap_or_default(),
                        tally.summary()
                    ),
                ));
            };
            match subscriber.recv_into_timeout(&mut buffer, slice) {
                Ok(len) => break len,
                Err(RecvError::Timeout) => {}
                Err(RecvError::Lagged { missed }) => {
                    tally.missed += missed;
                    eprintln!(
                        "shmq: missed {missed} messages (overwritten before this subscriber \
                         read them; {} received so far)",
                        tally.received
                    );
                    if args.fail_on_lag {
                        return Err(CliError::new(EX_LAGGED, ""));
                    }
                }
                Err(e @ RecvError::Corrupt { .. }) => eprintln!("shmq: {}", shown(&e.to_string())),
                Err(e) => return Err(CliError::new(EX_SOFTWARE, e.to_string())),
            }
        };
        write_one(&mut out, &buffer[..len], args.framed).map_err(stdout_error)?;
        tally.received += 1;
    }
    if tally.missed > 0 {
        eprintln!("shmq: {}", tally.summary());
    }
    Ok(())
}

/// What a subscription has seen so far.
#[derive(Debug, Default)]
struct Tally {
    /// Messages written to stdout.
    received: u64,
    /// Messages missed (overwritten before they were read).
    missed: u64,
}

impl Tally {
    fn summary(&self) -> String {
        format!("{} received, {} missed", self.received, self.missed)
    }
}
