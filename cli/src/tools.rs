//! Segment tools: `create`, `send`, `recv`, `inspect`, `ls`, `rm`.

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use shmq::{Options, Queue, RecvError, SegmentInfo, SendError};

use crate::util::{
    parse_duration, CliError, EX_DATAERR, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE,
};

/// `shmq create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Segment name (the object is /dev/shm/shmq.NAME).
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
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| format!("`{text}` is not an octal mode such as 0660"))
}

/// `shmq send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Segment name.
    pub name: String,
    /// Read 4-byte little-endian length-prefixed frames instead of lines.
    #[arg(long)]
    pub framed: bool,
    /// Give up on a message if the queue stays full this long (e.g. 2s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// `shmq recv`.
#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Segment name.
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
}

/// `shmq inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Segment name.
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `shmq ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
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

pub fn create(args: &CreateArgs) -> Result<(), CliError> {
    let options = Options::new(args.capacity, args.max_size)
        .mode(args.mode)
        .max_participants(args.participants);
    let queue = Queue::create(&args.name, &options)?;
    eprintln!(
        "created segment `{}`: capacity {}, max message {} bytes, mode {:04o}",
        queue.name(),
        queue.capacity(),
        queue.max_message_size(),
        args.mode
    );
    Ok(())
}

fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // The reader went away (e.g. `| head`): a quiet, successful end.
        CliError::new(0, "")
    } else {
        CliError::new(EX_OSERR, format!("writing to stdout: {e}"))
    }
}

fn send_error(e: SendError, sent: u64) -> CliError {
    match e {
        SendError::Timeout => CliError::new(
            EX_TEMPFAIL,
            format!("timed out: the queue stayed full ({sent} messages sent)"),
        ),
        e @ SendError::TooLarge { .. } => {
            CliError::new(EX_DATAERR, format!("message {}: {e}", sent + 1))
        }
    }
}

pub fn send(args: &SendArgs) -> Result<(), CliError> {
    let queue = Queue::open(&args.name)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut sent = 0u64;
    let mut put = |message: &[u8]| -> Result<(), CliError> {
        match args.timeout {
            Some(t) => queue.send_timeout(message, t),
            None => queue.send(message),
        }
        .map_err(|e| send_error(e, sent))?;
        sent += 1;
        Ok(())
    };
    if args.framed {
        let mut frame = Vec::new();
        loop {
            let mut prefix = [0u8; 4];
            match read_full(&mut input, &mut prefix)
                .map_err(|e| CliError::new(EX_OSERR, format!("reading stdin: {e}")))?
            {
                0 => break,
                4 => {}
                n => {
                    return Err(CliError::new(
                        EX_DATAERR,
                        format!("stdin ends inside a frame's length prefix ({n} of 4 bytes)"),
                    ))
                }
            }
            let len = u32::from_le_bytes(prefix) as usize;
            if len as u64 > queue.max_message_size() {
                return Err(CliError::new(
                    EX_DATAERR,
                    format!(
                        "frame of {len} bytes exceeds the segment's maximum message size {}",
                        queue.max_message_size()
                    ),
                ));
            }
            frame.resize(len, 0);
            let got = read_full(&mut input, &mut frame)
                .map_err(|e| CliError::new(EX_OSERR, format!("reading stdin: {e}")))?;
            if got != len {
                return Err(CliError::new(
                    EX_DATAERR,
                    format!("stdin ends inside a frame ({got} of {len} bytes)"),
                ));
            }
            put(&frame)?;
        }
    } else {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| CliError::new(EX_OSERR, format!("reading stdin: {e}")))?;
            if n == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            put(&line)?;
        }
    }
    Ok(())
}

/// Reads until `buf` is full or end of input; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

pub fn recv(args: &RecvArgs) -> Result<(), CliError> {
    let queue = Queue::open(&args.name)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut received = 0u64;
    let mut buffer = vec![0u8; queue.max_message_size() as usize];
    while args.count.is_none_or(|count| received < count) {
        // Flush before blocking so a pipeline sees each message promptly.
        out.flush().map_err(stdout_error)?;
        let started = Instant::now();
        let result = loop {
            // Wait in slices so Ctrl-C (default action) and --timeout both stay prompt.
            let slice = match args.timeout {
                Some(t) => match t.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(Duration::from_secs(1)),
                    _ => break Err(RecvError::Timeout),
                },
                None => Duration::from_secs(1),
            };
            match queue.recv_into_timeout(&mut buffer, slice) {
                Err(RecvError::Timeout) => continue,
                other => break other,
            }
        };
        let len = match result {
            Ok(len) => len,
            Err(RecvError::Timeout) => {
                return Err(CliError::new(
                    EX_TEMPFAIL,
                    format!(
                        "timed out: no message within {:?} ({received} received)",
                        args.timeout.unwrap_or_default()
                    ),
                ))
            }
            Err(e @ RecvError::Corrupt { .. }) => {
                eprintln!("shmq: {e}");
                continue;
            }
            Err(e) => return Err(CliError::new(EX_SOFTWARE, e.to_string())),
        };
        let message = &buffer[..len];
        if args.framed {
            out.write_all(&(len as u32).to_le_bytes())
                .map_err(stdout_error)?;
            out.write_all(message).map_err(stdout_error)?;
        } else {
            out.write_all(message).map_err(stdout_error)?;
            out.write_all(b"\n").map_err(stdout_error)?;
        }
        received += 1;
    }
    out.flush().map_err(stdout_error)?;
    Ok(())
}

fn info_json(info: &SegmentInfo) -> Value {
    let id = &info.identity;
    json!({
        "name": info.name,
        "version": id.version,
        "capacity": id.capacity,
        "max_message_size": id.max_message_size,
        "slot_stride": id.slot_stride,
        "total_size": id.total_size,
        "max_participants": id.max_participants,
        "creator_pid": id.creator_pid,
        "creation_time_ns": id.creation_time_ns,
        "mode": format!("{:04o}", id.mode),
        "enqueue_pos": info.enqueue_pos,
        "dequeue_pos": info.dequeue_pos,
        "occupancy": info.occupancy,
        "waiting_consumers": info.waiters.0,
        "waiting_producers": info.waiters.1,
        "live": info.live(),
        "dead": info.dead(),
        "participants": info.participants.iter().map(|p| json!({
            "index": p.index,
            "pid": p.pid,
            "start_time": p.start_time,
            "alive": p.alive,
            "enqueue_claim": p.enqueue_claim,
            "dequeue_claim": p.dequeue_claim,
            "enqueue_stuck": p.enqueue_stuck,
            "dequeue_stuck": p.dequeue_stuck,
            "operations": p.operations,
        })).collect::<Vec<_>>(),
        "recovery": {
            "skipped": info.recovery[0],
            "redelivered": info.recovery[1],
            "freed": info.recovery[2],
            "corrupt": info.recovery[3],
        },
    })
}

fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(EX_SOFTWARE, format!("encoding JSON: {e}")))?;
    writeln!(std::io::stdout(), "{text}").map_err(stdout_error)
}

pub fn inspect(args: &InspectArgs) -> Result<(), CliError> {
    let info = Queue::inspect(&args.name)?;
    if args.json {
        return print_json(&info_json(&info));
    }
    let id = &info.identity;
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(text, "segment        {}", info.name);
    let _ = writeln!(text, "layout         v{}", id.version);
    let _ = writeln!(
        text,
        "capacity       {} messages of at most {} bytes (slot stride {} B, segment {} B)",
        id.capacity, id.max_message_size, id.slot_stride, id.total_size
    );
    let _ = writeln!(
        text,
        "occupancy      {} / {}",
        info.occupancy.min(id.capacity),
        id.capacity
    );
    let _ = writeln!(
        text,
        "cursors        enqueue {}  dequeue {}",
        info.enqueue_pos, info.dequeue_pos
    );
    let _ = writeln!(
        text,
        "waiters        {} consumers, {} producers asleep",
        info.waiters.0, info.waiters.1
    );
    let _ = writeln!(
        text,
        "created by     pid {} (mode {:04o})",
        id.creator_pid, id.mode
    );
    let _ = writeln!(
        text,
        "recovery       {} skipped, {} redelivered, {} records freed, {} corrupt",
        info.recovery[0], info.recovery[1], info.recovery[2], info.recovery[3]
    );
    let _ = writeln!(
        text,
        "participants   {} live, {} dead (table of {})",
        info.live(),
        info.dead(),
        id.max_participants
    );
    if !info.participants.is_empty() {
        let _ = writeln!(
            text,
            "  {:>5} {:>8} {:>5} {:>14} {:>14} {:>12}",
            "index", "pid", "alive", "enqueue claim", "dequeue claim", "operations"
        );
        for p in &info.participants {
            let claim = |c: Option<u64>, stuck: bool| match c {
                None => "-".to_owned(),
                Some(c) if stuck => format!("{c} STUCK"),
                Some(c) => c.to_string(),
            };
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
    let stuck: Vec<_> = info
        .participants
        .iter()
        .filter(|p| p.enqueue_stuck || p.dequeue_stuck)
        .collect();
    if !stuck.is_empty() {
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
    write!(std::io::stdout(), "{text}").map_err(stdout_error)
}

pub fn ls(args: &LsArgs) -> Result<(), CliError> {
    let segments = Queue::list()?;
    if args.json {
        let list: Vec<Value> = segments
            .iter()
            .map(|(name, info)| match info {
                Ok(info) => info_json(info),
                Err(e) => json!({ "name": name, "error": e.to_string() }),
            })
            .collect();
        return print_json(&Value::Array(list));
    }
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "{:<32} {:>10} {:>10} {:>6} {:>6}  state",
        "NAME", "OCCUPANCY", "CAPACITY", "LIVE", "DEAD"
    );
    for (name, info) in &segments {
        match info {
            Ok(info) => {
                let _ = writeln!(
                    text,
                    "{:<32} {:>10} {:>10} {:>6} {:>6}  {}",
                    name,
                    info.occupancy.min(info.identity.capacity),
                    info.identity.capacity,
                    info.live(),
                    info.dead(),
                    if info.live() > 0 { "in use" } else { "unused" }
                );
            }
            Err(e) => {
                let _ = writeln!(
                    text,
                    "{name:<32} {:>10} {:>10} {:>6} {:>6}  error: {e}",
                    "-", "-", "-", "-"
                );
            }
        }
    }
    write!(std::io::stdout(), "{text}").map_err(stdout_error)
}

pub fn rm(args: &RmArgs) -> Result<(), CliError> {
    let mut failure = None;
    for name in &args.names {
        let outcome = if args.force {
            Queue::unlink(name).map(|()| eprintln!("removed `{name}`"))
        } else {
            Queue::remove_if_unused(name).map(|decision| match decision {
                Ok(_) => eprintln!("removed `{name}`"),
                Err(info) => {
                    let pids: Vec<String> = info
                        .participants
                        .iter()
                        .filter(|p| p.alive)
                        .map(|p| p.pid.to_string())
                        .collect();
                    eprintln!(
                        "shmq: segment `{name}` has {} live participant(s) (pid {}); not removed (use --force)",
                        info.live(),
                        pids.join(", ")
                    );
                    failure.get_or_insert(CliError::new(EX_UNAVAILABLE, ""));
                }
            })
        };
        if let Err(e) = outcome {
            // A segment too broken to inspect can still be removed with --force.
            let e = CliError::from(e);
            eprintln!("shmq: {}", e.message);
            failure.get_or_insert(CliError::new(e.code, ""));
        }
    }
    failure.map_or(Ok(()), Err)
}
