//! The opt-in `SIGBUS` guard (issue 16, item 5): surviving a peer that shrinks a
//! segment's file under this process.
//!
//! Touching a page of a shared mapping beyond the end of its file raises `SIGBUS`,
//! whose default action kills the process. Nothing in shmq can stop a process with
//! write access from `ftruncate`-ing the file (POSIX shm objects cannot be sealed),
//! so by default a truncation kills every process using the segment. With the guard
//! installed ([`install_sigbus_guard`]), a `SIGBUS` whose address falls inside a
//! segment mapping is answered the way Wayland compositors answer it for client
//! buffers: the whole mapping is replaced, in place, by private zero-filled memory,
//! the segment is marked lost, and the faulting access resumes on the new memory.
//! Every handle on that mapping then fails each call with a `Truncated` error
//! (checked after each operation, so an operation that ran on the replacement is
//! never reported as done). A `SIGBUS` anywhere else goes to the handler installed
//! before ours, or kills the process as it would have.
//!
//! Every mapping registers here whether or not the guard is installed (a few atomic
//! stores), so installing it later also covers segments opened before.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// How many mappings the guard can tell apart; a mapping beyond that is not guarded
/// (a fault in it is passed on as if the guard were not installed).
const REGISTRY_SIZE: usize = 1024;

/// One registered mapping: its address range and whether it was lost.
struct Entry {
    /// First byte (0: entry free).
    start: AtomicUsize,
    /// Length in bytes.
    len: AtomicUsize,
    /// Set by the handler once the mapping was replaced.
    lost: AtomicBool,
}

static REGISTRY: [Entry; REGISTRY_SIZE] = [const {
    Entry {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        lost: AtomicBool::new(false),
    }
}; REGISTRY_SIZE];

/// The `lost` flag of a mapping the registry had no room for: never set.
static NEVER_LOST: AtomicBool = AtomicBool::new(false);

/// The `SIGBUS` action before ours, for faults that are not ours.
struct Previous(libc::sigaction);
// SAFETY: plain data (a handler address, flags and a signal mask), written once
// before our handler is installed and only read afterwards.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// Serialises registrations and removals (the handler only reads).
static REGISTERING: Mutex<()> = Mutex::new(());

/// A mapping's place in the registry; frees it when dropped (after the unmap).
#[derive(Debug)]
pub(crate) struct Registration {
    entry: Option<usize>,
    lost: &'static AtomicBool,
}

impl Registration {
    /// Registers the mapping of `len` bytes at `start`.
    pub(crate) fn new(start: *mut u8, len: usize) -> Self {
        let _one_at_a_time = REGISTERING.lock().unwrap_or_else(|e| e.into_inner());
        for (index, entry) in REGISTRY.iter().enumerate() {
            // Relaxed: entries change only under the lock we hold.
            if entry.start.load(Ordering::Relaxed) != 0 {
                continue;
            }
            // Relaxed (both): published by the Release store of `start` below.
            entry.len.store(len, Ordering::Relaxed);
            entry.lost.store(false, Ordering::Relaxed);
            // Release: pairs with the handler's Acquire load of `start`, so it
            // reads this mapping's `len`.
            entry.start.store(start as usize, Ordering::Release);
            return Self {
                entry: Some(index),
                lost: &entry.lost,
            };
        }
        Self {
            entry: None,
            lost: &NEVER_LOST,
        }
    }

    /// The flag the handler sets once it replaced this mapping after a `SIGBUS`
    /// (handles keep the reference, to check it with one load). Read it Relaxed:
    /// the handler sets it before the faulting access resumes on the same thread,
    /// and other threads' handles see it at the latest on their next call.
    pub(crate) fn lost_flag(&self) -> &'static AtomicBool {
        self.lost
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(index) = self.entry {
            let _one_at_a_time = REGISTERING.lock().unwrap_or_else(|e| e.into_inner());
            // Relaxed: the range was unmapped before, so no fault can name it; the
            // next registrant publishes its own values with Release.
            REGISTRY[index].start.store(0, Ordering::Relaxed);
        }
    }
}

/// Installs the process-wide `SIGBUS` handler that keeps a peer's truncation of a
/// segment from killing this process (see the module docs of the crate's README,
/// "Security"). Idempotent; a `SIGBUS` outside shmq's mappings goes to the handler
/// that was installed before, or has its default effect.
///
/// Opt-in because signal handling is process-wide: call it early (before other
/// libraries that install a `SIGBUS` handler, if they chain, or after them, if they
/// do not).
///
/// ```
/// shmq::install_sigbus_guard()?;
/// shmq::install_sigbus_guard()?; // a second call does nothing
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn install_sigbus_guard() -> io::Result<()> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if PREVIOUS.get().is_some() {
        return Ok(());
    }
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null new action only
    // queries the current one.
    let previous = unsafe {
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
            return Err(io::Error::last_os_error());
        }
        previous
    };
    let _ = PREVIOUS.set(Previous(previous));
    // SAFETY: a fully initialised action (zeroed, then handler, flags and an empty
    // mask) for a signal we may handle; the handler only calls async-signal-safe
    // functions (mmap, sigaction) and reads atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The `SIGBUS` handler: replaces a faulting segment mapping, or passes the fault on.
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    for entry in &REGISTRY {
        // Acquire: pairs with the registration's Release, so `len` is this
        // mapping's.
        let start = entry.start.load(Ordering::Acquire);
        // Relaxed: ordered by the Acquire above.
        let len = entry.len.load(Ordering::Relaxed);
        if start == 0 || address < start || address - start >= len {
            continue;
        }
        // SAFETY: exactly the range of a live shmq mapping (registered until after
        // its unmap); MAP_FIXED replaces it in place with private zeroed pages, so
        // every pointer into it stays valid and the faulting access can resume.
        let replaced = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if replaced != libc::MAP_FAILED {
            // Relaxed: see `Registration::lost`.
            entry.lost.store(true, Ordering::Relaxed);
            return;
        }
        break;
    }
    pass_on(signal, info, context);
}

/// Hands a `SIGBUS` that is not ours to the previous handler, or restores the
/// default action so that the fault, repeated on return, has its usual effect.
fn pass_on(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if let Some(Previous(previous)) = PREVIOUS.get() {
        let handler = previous.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous action said its handler takes siginfo.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                handler(signal, info, context);
            } else {
                // SAFETY: the previous action said its handler takes the signal only.
                let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                handler(signal);
            }
            return;
        }
    }
    // SAFETY: a zeroed action with SIG_DFL is the default disposition.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
    }
}
