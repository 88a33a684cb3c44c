//! Handles on one segment for one Python `Queue` object: a pool of library handles
//! (`shmq::Queue` is `Send` but not `Sync`, one participant record each), lent to one
//! operation at a time so that Python threads sharing a `Queue` never share a
//! handle; and what happens to them across `fork`.
//!
//! A forked child inherits its parent's handles: their participant records name the
//! parent, and their descriptors carry the parent's liveness locks. The child must
//! neither use them nor drop them (dropping would retire the parent's records), so
//! after a fork every inherited handle is forgotten, its descriptor closed (see
//! [`after_fork_in_child`]), and the child opens handles of its own by name.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Incremented in a forked child: handles made under an older generation belong to
/// an ancestor process.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn generation() -> u64 {
    // Relaxed: only the thread that forked runs in the child when it changes, and
    // every handle is lent under the pool's mutex, which orders the rest.
    GENERATION.load(Ordering::Relaxed)
}

/// Marks every handle made so far as inherited, and closes the descriptors of
/// inherited handles (any descriptor on an shmq segment is one: the child opened
/// none yet), so that the parent's liveness locks die with the parent.
/// Called in a child right after `fork` (`os.register_at_fork`).
pub(crate) fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let descriptors: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in descriptors {
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        if target.to_string_lossy().starts_with("/dev/shm/shmq.") {
            // SAFETY: `fd` is open (just listed) and belongs to a handle inherited
            // from the parent, which this process never drops (it is forgotten, see
            // `Pool`), so nothing closes or uses it again.
            unsafe { libc::close(fd) };
        }
    }
}

/// Idle handles of one segment, all made under `generation`.
struct Pool {
    generation: u64,
    // Boxed: a handle stays at one address while lent, so that a receive guard
    // borrowing it can be kept beside it (see `view`).
    #[allow(clippy::vec_box)]
    idle: Vec<Box<shmq::Queue>>,
}

impl Pool {
    /// Forgets handles inherited across a fork (see the module doc).
    fn refresh(&mut self) {
        let now = generation();
        if self.generation != now {
            for handle in self.idle.drain(..) {
                std::mem::forget(handle);
            }
            self.generation = now;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.refresh();
    }
}

/// The handles of one segment.
pub(crate) struct Handles {
    name: String,
    pool: Mutex<Pool>,
}

impl Handles {
    /// Starts the pool with `first`, a handle just made by this process.
    pub(crate) fn new(first: shmq::Queue) -> Arc<Self> {
        Arc::new(Self {
            name: first.name().to_owned(),
            pool: Mutex::new(Pool {
                generation: generation(),
                idle: vec![Box::new(first)],
            }),
        })
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves the pool a valid Vec: keep using it.
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.refresh();
        pool
    }

    /// Lends an idle handle, or attaches a new one by name if all are in use.
    pub(crate) fn lend(self: &Arc<Self>) -> Result<Lent, shmq::Error> {
        let idle = self.pool().idle.pop();
        let handle = match idle {
            Some(handle) => handle,
            None => Box::new(shmq::Queue::open(&self.name)?),
        };
        Ok(Lent {
            handles: Arc::clone(self),
            handle: ManuallyDrop::new(handle),
            generation: generation(),
        })
    }

    /// Drops the idle handles (the segment stays; handles lent out come back and
    /// are kept).
    pub(crate) fn close(&self) {
        let idle = std::mem::take(&mut self.pool().idle);
        drop(idle);
    }
}

/// A handle lent to one operation; back to the pool when dropped.
pub(crate) struct Lent {
    handles: Arc<Handles>,
    handle: ManuallyDrop<Box<shmq::Queue>>,
    generation: u64,
}

impl Lent {
    /// The handle, at an address that stays put while this `Lent` lives (it is
    /// boxed), for a receive guard kept beside it (see `view`).
    pub(crate) fn handle_ptr(&mut self) -> *mut shmq::Queue {
        &mut **self.handle
    }

    /// Whether this handle was lent before a fork, in an ancestor process: neither
    /// it nor a message it holds is this process's to touch.
    pub(crate) fn inherited(&self) -> bool {
        self.generation != generation()
    }
}

impl std::ops::Deref for Lent {
    type Target = shmq::Queue;
    fn deref(&self) -> &shmq::Queue {
        &self.handle
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // SAFETY: `handle` is taken exactly once, here, and not used afterwards.
        let handle = unsafe { ManuallyDrop::take(&mut self.handle) };
        if self.inherited() {
            // Lent in a parent before a fork: the parent's record, not ours to touch.
            std::mem::forget(handle);
            return;
        }
        let mut pool = self.handles.pool();
        pool.idle.push(handle);
    }
}
