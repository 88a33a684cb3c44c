//! `shmq send` and `shmq recv`: messages from stdin into a segment, and from a
//! segment to stdout, one per line or as length-prefixed frames.

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use clap::Args;
use shmq::{Queue, RecvError, SendError};

use super::escape::shown;
use super::escaped;
use crate::error::{stdout_error, CliError, EX_DATAERR, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL};
use crate::units::parse_duration;

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
    let queue = Queue::open(&args.name).map_err(escaped)?;
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
fn send_frames(
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
fn send_lines(
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

/// `shmq recv`.
pub fn recv(args: &RecvArgs) -> Result<(), CliError> {
    let queue = Queue::open(&args.name).map_err(escaped)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut received = 0u64;
    let mut buffer = vec![0u8; queue.max_message_size() as usize];
    while args.count.is_none_or(|count| received < count) {
        // Flush before blocking so a pipeline sees each message promptly.
        out.flush().map_err(stdout_error)?;
        let len = match recv_within(&queue, &mut buffer, args.timeout) {
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
                eprintln!("shmq: {}", shown(&e.to_string()));
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

/// Receives one message into `buffer`, waiting at most `timeout` (none: forever).
/// Waits in slices of at most a second, so Ctrl-C (default action) and the timeout
/// both stay prompt.
fn recv_within(
    queue: &Queue,
    buffer: &mut [u8],
    timeout: Option<Duration>,
) -> Result<usize, RecvError> {
    let started = Instant::now();
    loop {
        let slice = match timeout {
            Some(t) => match t.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => left.min(Duration::from_secs(1)),
                _ => return Err(RecvError::Timeout),
            },
            None => Duration::from_secs(1),
        };
        match queue.recv_into_timeout(buffer, slice) {
            Err(RecvError::Timeout) => continue,
            other => return other,
        }
    }
}
