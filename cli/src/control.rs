//! The control mapping: a small file in /dev/shm that the benchmark controller and
//! its child processes map shared, to start together, publish progress, stop, and
//! (for the reference floors) bounce cache lines and lay out a bare slot ring.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{os_error, CliError, EX_DATAERR, EX_USAGE};
use crate::os::now_ns;

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
    role: Holder,
}

/// Who holds a control mapping: the controller removes the file when done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    Controller,
    Child,
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
        Self::map(&file, len, path, Holder::Controller)
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
        Self::map(&file, len as usize, path.to_owned(), Holder::Child)
    }

    fn map(file: &std::fs::File, len: usize, path: String, role: Holder) -> Result<Self, CliError> {
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
            role,
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
        if self.role == Holder::Controller {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
