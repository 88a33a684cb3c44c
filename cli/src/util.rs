//! Exit codes and errors, clocks, durations, and the small shared mapping the
//! benchmark processes coordinate through.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// sysexits.h: command line usage error.
pub const EX_USAGE: u8 = 64;
/// sysexits.h: data format error.
pub const EX_DATAERR: u8 = 65;
/// sysexits.h: cannot open input (here: no such segment).
pub const EX_NOINPUT: u8 = 66;
/// sysexits.h: service unavailable (here: segment in use, not ready, table full).
pub const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h: internal software error.
pub const EX_SOFTWARE: u8 = 70;
/// sysexits.h: system error.
pub const EX_OSERR: u8 = 71;
/// sysexits.h: cannot create output (here: segment exists, /dev/shm full).
pub const EX_CANTCREAT: u8 = 73;
/// sysexits.h: temporary failure (here: a timeout).
pub const EX_TEMPFAIL: u8 = 75;
/// sysexits.h: permission denied.
pub const EX_NOPERM: u8 = 77;

/// An error a subcommand ends with: the exit code and the message for stderr.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code (sysexits style).
    pub code: u8,
    /// One-line message (without the `shmq:` prefix); empty for none.
    pub message: String,
}

impl CliError {
    /// An error with this exit code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<shmq::Error> for CliError {
    fn from(e: shmq::Error) -> Self {
        use shmq::Error as E;
        let code = match &e {
            E::NotFound { .. } => EX_NOINPUT,
            E::AlreadyExists { .. } | E::OutOfSpace { .. } => EX_CANTCREAT,
            E::PermissionDenied { .. } => EX_NOPERM,
            E::IncompatibleVersion { .. } | E::Corrupt { .. } => EX_DATAERR,
            E::NotReady { .. } | E::ParticipantTableFull { .. } => EX_UNAVAILABLE,
            E::InvalidName { .. } | E::InvalidOptions(_) | E::TooLarge { .. } => EX_USAGE,
            E::Io { .. } => EX_OSERR,
            _ => EX_SOFTWARE,
        };
        CliError::new(code, e.to_string())
    }
}

/// An I/O error as an `EX_OSERR` failure of `what`.
pub fn os_error(what: &str, e: std::io::Error) -> CliError {
    CliError::new(EX_OSERR, format!("{what}: {e}"))
}

pub use crate::os::now_ns;

/// Parses `500ms`, `2s`, `1m`, `1.5s`, `250us`, `10ns`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 2s, 1m)"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ns, us, ms, s, m or h)"
            ))
        }
    };
    let seconds = value * scale;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a rate such as `100000`, `100000/s`, `50k/s`, `2M/s` into messages per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let body = text.trim().trim_end_matches("/s");
    let (number, scale) = match body.chars().last() {
        Some('k' | 'K') => (&body[..body.len() - 1], 1e3),
        Some('M') => (&body[..body.len() - 1], 1e6),
        _ => (body, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (examples: 100000/s, 50k/s, 2M/s)"))?;
    let rate = value * scale;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("rate `{text}` must be positive"));
    }
    Ok(rate)
}

/// Formats nanoseconds with a readable unit.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Formats a count per second with an SI prefix.
pub fn fmt_rate(per_second: f64, unit: &str) -> String {
    if per_second >= 1e9 {
        format!("{:.2} G{unit}/s", per_second / 1e9)
    } else if per_second >= 1e6 {
        format!("{:.2} M{unit}/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.2} k{unit}/s", per_second / 1e3)
    } else {
        format!("{per_second:.1} {unit}/s")
    }
}

/// A small xorshift generator for benchmark pauses (not for anything else).
pub struct Rng(u64);

impl Rng {
    /// Seeded from the pid and the clock.
    pub fn new() -> Self {
        Self((u64::from(std::process::id()) << 32) ^ now_ns() | 1)
    }
    /// Next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Bytes between independently written words of the control mapping (two lines,
/// against the adjacent-line prefetcher).
const STRIDE: usize = 128;
/// Size of the control words' part of the mapping.
const CONTROL_SIZE: usize = 4096;
/// Largest scratch region a control file may carry (a child refuses bigger files).
const SCRATCH_MAX: usize = 1 << 30;

/// Words of the control mapping, each on its own 128-byte stride.
#[derive(Clone, Copy)]
pub enum Word {
    /// The cache line the floor measurement bounces.
    Bounce = 0,
    /// Children that are ready to start.
    Ready = 1,
    /// Start time (CLOCK_MONOTONIC ns), 0 until the controller says go.
    Go = 2,
    /// Producers that have finished (throughput runs).
    ProducersDone = 3,
    /// Messages handled so far, updated every few thousand (progress display).
    Progress = 4,
    /// Set when the controller wants everyone to stop.
    Stop = 5,
    /// The second line of the two-line floor (`--anatomy`).
    Bounce2 = 6,
}

/// A file in /dev/shm mapped shared by the controller and its children: 4 KiB of
/// words (start barrier, stop flag, progress counter, the floor's cache lines), then
/// an optional scratch region (the bare ring of `--anatomy`). Made with plain
/// `std::fs` + `mmap` because it is not a queue.
pub struct Control {
    base: *mut u8,
    len: usize,
    path: String,
    owner: bool,
}

impl Control {
    /// Creates a fresh control file (the controller) with `scratch` zeroed bytes
    /// after the words.
    pub fn create(tag: &str, scratch: usize) -> Result<Self, CliError> {
        if scratch > SCRATCH_MAX {
            return Err(CliError::new(
                EX_USAGE,
                format!(
                    "a {scratch} B scratch region is too large; use a smaller --capacity or --size"
                ),
            ));
        }
        let path = format!("/dev/shm/shmq-bench-{}-{tag}.ctl", std::process::id());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| os_error(&format!("creating {path}"), e))?;
        let len = CONTROL_SIZE + scratch;
        file.set_len(len as u64)
            .map_err(|e| os_error(&format!("sizing {path}"), e))?;
        Self::map(&file, len, path, true)
    }

    /// Opens the controller's file (a child).
    pub fn open(path: &str) -> Result<Self, CliError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| os_error(&format!("opening {path}"), e))?;
        let len = file
            .metadata()
            .map_err(|e| os_error(&format!("stat {path}"), e))?
            .len();
        if len < CONTROL_SIZE as u64 || len > (CONTROL_SIZE + SCRATCH_MAX) as u64 {
            return Err(CliError::new(
                EX_DATAERR,
                format!("{path} is {len} bytes, not a control file"),
            ));
        }
        Self::map(&file, len as usize, path.to_owned(), false)
    }

    fn map(file: &std::fs::File, len: usize, path: String, owner: bool) -> Result<Self, CliError> {
        // SAFETY: mapping a regular file we hold open, `len` bytes (its length was
        // set or checked by the caller), shared; no address hint.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error(
                &format!("mmap {path}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            base: base.cast(),
            len,
            path,
            owner,
        })
    }

    /// Where children find it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// One of the control words.
    pub fn word(&self, word: Word) -> &AtomicU64 {
        let offset = word as usize * STRIDE;
        debug_assert!(offset + 8 <= CONTROL_SIZE);
        // SAFETY: offset + 8 <= CONTROL_SIZE, inside the live mapping; the offset is a
        // multiple of 128 from a page-aligned base, so aligned for u64; the words are
        // only ever accessed atomically, by every process.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast::<u64>()) }
    }

    /// The scratch region after the words: its start (page aligned) and length.
    /// Only ever accessed through atomics or by one process at a time under a
    /// protocol the user of the region defines.
    pub fn scratch(&self) -> (*mut u8, usize) {
        // SAFETY: CONTROL_SIZE <= len (checked at create and open), so the result is
        // inside or one past the end of the live mapping.
        (
            unsafe { self.base.add(CONTROL_SIZE) },
            self.len - CONTROL_SIZE,
        )
    }

    /// A child: says it is ready, waits for the go time, and returns it.
    pub fn ready_and_wait(&self) -> u64 {
        // Release/Acquire pairs with the controller's reads of Ready and store of Go.
        self.word(Word::Ready).fetch_add(1, Ordering::AcqRel);
        loop {
            let go = self.word(Word::Go).load(Ordering::Acquire);
            if go != 0 {
                while now_ns() < go {
                    std::hint::spin_loop();
                }
                return go;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Whether the controller asked to stop.
    pub fn stopping(&self) -> bool {
        self.word(Word::Stop).load(Ordering::Relaxed) != 0
    }
}

// SAFETY: the mapping is only accessed through atomics (`word`), which are safe to
// use from any thread; the pointer itself is never written after creation.
unsafe impl Sync for Control {}
// SAFETY: as above; the mapping is not tied to the creating thread.
unsafe impl Send for Control {}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: `base` came from a successful mmap of `len` bytes and no reference
        // into it outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
