//! `shmq send` and `shmq recv`: messages from stdin into a segment, and from a
//! segment to stdout, one per line or as length-prefixed frames.

use std::io::{BufRead, BufWriter, Read, StdoutLock, Write};
use std::time::{Duration, Instant};

use clap::Args;
use shmq::{Delivery, Queue, RecvError, SendError};

use super::broadcast::{open_error, Tool};
use super::escape::shown;
use super::pipe;
use crate::error::{CliError, EX_DATAERR, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL};
use crate::units::parse_duration;

/// Longest single wait for a message: between two, `recv` checks its timeout and
/// whether stdout's reader is still there.
const WAIT_SLICE: Duration = Duration::from_millis(250);

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

/// `shmq send`.
pub fn send(args: &SendArgs) -> Result<(), CliError> {
    let queue = Queue::open(&args.name).map_err(|e| open_error(e, Tool::Send))?;
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
        send_frames(&mut input, queue.max_message_size(), &mut put)
    } else {
        send_lines(&mut input, queue.max_message_size(), &mut put)
    }
}

fn send_error(e: SendError, sent: u64) -> CliError {
    match e {
        SendError::Timeout => CliError::new(
            EX_TEMPFAIL,
            format!("timed out: the queue stayed full ({sent} messages sent)"),
        ),
        e => CliError::new(EX_DATAERR, format!("message {}: {e}", sent + 1)),
    }
}

fn stdin_error(e: std::io::Error) -> CliError {
    CliError::new(EX_OSERR, format!("reading stdin: {e}"))
}

/// Each 4-byte little-endian length prefix and the bytes after it, to `put`.
pub(super) fn send_frames(
    input: &mut impl Read,
    max_message_size: u64,
    put: &mut impl FnMut(&[u8]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut frame = Vec::new();
    loop {
        let mut prefix = [0u8; 4];
        match read_full(input, &mut prefix).map_err(stdin_error)? {
            0 => return Ok(()),
            4 => {}
            n => {
                return Err(CliError::new(
                    EX_DATAERR,
                    format!("stdin ends inside a frame's length prefix ({n} of 4 bytes)"),
                ))
            }
        }
        let len = u32::from_le_bytes(prefix) as usize;
        // Checked before a byte of the frame is read: the buffer never grows past
        // the segment's maximum.
        if len as u64 > max_message_size {
            return Err(CliError::new(
                EX_DATAERR,
                format!(
                    "frame of {len} bytes exceeds the segment's maximum message size {max_message_size}"
                ),
            ));
        }
        frame.resize(len, 0);
        let got = read_full(input, &mut frame).map_err(stdin_error)?;
        if got != len {
            return Err(CliError::new(
                EX_DATAERR,
                format!("stdin ends inside a frame ({got} of {len} bytes)"),
            ));
        }
        put(&frame)?;
    }
}

/// Each line, without its newline, to `put`. A line longer than the segment's
/// maximum message size ends the run with a data error, as soon as it is known to
/// be too long: at most that many bytes of a line are ever held.
pub(super) fn send_lines(
    input: &mut impl BufRead,
    max_message_size: u64,
    put: &mut impl FnMut(&[u8]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let max = usize::try_from(max_message_size).unwrap_or(usize::MAX);
    let mut line = Vec::new();
    let mut lines = 0u64;
    loop {
        match read_line_within(input, &mut line, max).map_err(stdin_error)? {
            Line::End => return Ok(()),
            Line::Fits => put(&line)?,
            Line::TooLong => {
                return Err(CliError::new(
                    EX_DATAERR,
                    format!(
                        "message {}: line longer than this segment's maximum of {max} bytes; \
                         stopped reading it",
                        lines + 1
                    ),
                ))
            }
        }
        lines += 1;
    }
}

/// What [`read_line_within`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// End of input: no line.
    End,
    /// A line of at most the maximum length (without its newline).
    Fits,
    /// A line longer than the maximum; its first bytes were read, the rest were not.
    TooLong,
}

/// Reads the next line, without its newline, into `line`, holding at most `max`
/// bytes of it. The last line may lack a newline.
fn read_line_within(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut started = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if started { Line::Fits } else { Line::End });
        }
        started = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        if part.len() > max - line.len() {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(part);
        let used = part.len() + usize::from(newline.is_some());
        input.consume(used);
        if newline.is_some() {
            return Ok(Line::Fits);
        }
    }
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

/// `shmq recv`: each message is written and flushed while its slot is held, and
/// acknowledged only once written (and, when stdout is a pipe, read: see [`pipe`]).
/// A message whose write fails, or that the pipe's reader goes away without reading,
/// is given back to the queue for another consumer.
pub fn recv(args: &RecvArgs) -> Result<(), CliError> {
    let mut queue = Queue::open(&args.name).map_err(|e| open_error(e, Tool::Recv))?;
    let stdout = std::io::stdout();
    let mut output = Output::new(stdout.lock(), queue.max_message_size(), args.framed);
    while args.count.is_none_or(|count| output.written < count) {
        let waiting_since = Instant::now();
        loop {
            output.check_reader()?;
            let Some(slice) = next_slice(args.timeout, waiting_since, WAIT_SLICE) else {
                return Err(CliError::new(
                    EX_TEMPFAIL,
                    format!(
                        "timed out: no message within {:?} ({} received)",
                        args.timeout.unwrap_or_default(),
                        output.written
                    ),
                ));
            };
            match queue.receive_timeout(slice) {
                Ok(delivery) => {
                    output.deliver(delivery)?;
                    break;
                }
                Err(RecvError::Timeout) => continue,
                Err(e @ RecvError::Corrupt { .. }) => {
                    eprintln!("shmq: {}", shown(&e.to_string()));
                    break;
                }
                Err(e) => return Err(CliError::new(EX_SOFTWARE, e.to_string())),
            }
        }
    }
    Ok(())
}

/// How long the next wait for a message may last: at most `slice`, and none once
/// `timeout` (counted from `since`) has passed.
pub(super) fn next_slice(
    timeout: Option<Duration>,
    since: Instant,
    slice: Duration,
) -> Option<Duration> {
    match timeout {
        Some(t) => match t.checked_sub(since.elapsed()) {
            Some(left) if !left.is_zero() => Some(left.min(slice)),
            _ => None,
        },
        None => Some(slice),
    }
}

/// `shmq recv`'s stdout, and the count of what went through it.
struct Output<'a> {
    out: BufWriter<StdoutLock<'a>>,
    framed: bool,
    /// Stdout is a pipe: a message written is delivered once its reader has read it.
    pipe: bool,
    /// Messages taken from the queue.
    taken: u64,
    /// Messages written to stdout.
    written: u64,
}

impl<'a> Output<'a> {
    fn new(stdout: StdoutLock<'a>, max_message_size: u64, framed: bool) -> Self {
        // Room for the largest message and its frame prefix or newline: one write
        // per message.
        let capacity = usize::try_from(max_message_size).map_or(1 << 16, |max| max + 8);
        Self {
            out: BufWriter::with_capacity(capacity, stdout),
            framed,
            pipe: pipe::stdout_is_pipe(),
            taken: 0,
            written: 0,
        }
    }

    /// Writes one message taken from the queue and acknowledges it once written and
    /// read; gives it back if either fails.
    fn deliver(&mut self, delivery: Delivery<'_>) -> Result<(), CliError> {
        self.taken += 1;
        if let Err(e) = self.write(&delivery) {
            return Err(self.undelivered(delivery, self.write_failed(&e)));
        }
        self.written += 1;
        match self.wait_until_read() {
            Ok(()) => Ok(()),
            Err(what) => Err(self.undelivered(delivery, what)),
        }
    }

    /// Writes and flushes one message.
    fn write(&mut self, message: &[u8]) -> std::io::Result<()> {
        if self.framed {
            self.out.write_all(&(message.len() as u32).to_le_bytes())?;
            self.out.write_all(message)?;
        } else {
            self.out.write_all(message)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }

    /// Before taking a message: fails if stdout is a pipe nobody reads any more.
    fn check_reader(&self) -> Result<(), CliError> {
        if !self.pipe || !pipe::reader_gone().map_err(|e| self.stdout_failed(&e))? {
            return Ok(());
        }
        Err(CliError::new(
            EX_OSERR,
            format!(
                "stdout's reader went away; {} taken from the queue, every one written \
                 and read",
                self.taken
            ),
        ))
    }

    /// After a message is written: when stdout is a pipe, waits until the reader
    /// has read it. `Err` says what went wrong if the reader went away first.
    fn wait_until_read(&self) -> Result<(), String> {
        if !self.pipe {
            return Ok(());
        }
        match pipe::wait_until_read() {
            Ok(pipe::Drained::Read) => Ok(()),
            Ok(pipe::Drained::ReaderGone) => Err(format!(
                "stdout's reader went away without reading message {}",
                self.taken
            )),
            Err(e) => Err(format!("watching stdout: {e}")),
        }
    }

    /// What a failed write of the message just taken means.
    fn write_failed(&self, e: &std::io::Error) -> String {
        let n = self.taken;
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => {
                format!("stdout's reader went away before message {n} could be written")
            }
            _ => format!("writing message {n} to stdout failed: {e}"),
        }
    }

    /// `what` happened to the message just taken: it goes back to the queue (or, if
    /// no participant record is free to carry it, is lost), and the run ends.
    fn undelivered(&self, delivery: Delivery<'_>, what: String) -> CliError {
        let fate = match delivery.abandon() {
            Ok(()) => "was given back to the queue",
            Err(_) => "is lost (no free participant record to give it back)",
        };
        CliError::new(
            EX_OSERR,
            format!(
                "{what}; {} taken from the queue, {} delivered: message {} {fate}",
                self.taken,
                self.taken - 1,
                self.taken
            ),
        )
    }

    /// The error for a failed look at stdout (not a write).
    fn stdout_failed(&self, e: &std::io::Error) -> CliError {
        CliError::new(
            EX_OSERR,
            format!(
                "watching stdout: {e} ({} taken from the queue, {} written)",
                self.taken, self.written
            ),
        )
    }
}
