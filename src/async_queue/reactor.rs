//! The process's waker thread: one thread, started by the first
//! [`AsyncQueue`](super::AsyncQueue), sleeps on the wait words of every segment that
//! some task awaits and wakes those tasks' [`Waker`]s when a word's epoch moves.
//!
//! # Why this design
//! A segment's futex word lives in shared memory: it is not a file descriptor, so it
//! cannot be registered with epoll (tokio's I/O driver). Some thread must sleep on
//! it. One per task or per queue would make a thousand idle tasks a thousand
//! threads; one per process, sleeping on all the words at once with
//! `futex_waitv(2)` (Linux 5.16, up to 128 words), costs one thread and nothing
//! while idle.
//!
//! The thread wakes a task by calling its `Waker` directly. The alternative, an
//! eventfd the thread writes and tokio's `AsyncFd` reads, adds a system call and a
//! second hand-off (thread → I/O driver → task) to every wake-up and ties the
//! handles to tokio; `Waker::wake` is a plain call that any executor implements,
//! and on tokio it unparks a worker the way a tokio channel does.
//!
//! # The protocol (no lost wake-up)
//! A task's poll finds its queue empty (or full), then registers exactly as a
//! blocking waiter does ([`Ring::register_waiter`](crate::ring::Ring)): it counts
//! itself in the direction's `waiters` (SeqCst), reads the epoch, re-checks
//! readiness, and only if nothing is in flight hands `(word, epoch, waker)` to this
//! thread and returns `Pending`. The thread waits in the kernel while the word
//! still holds that epoch. A producer that publishes after the registration sees
//! the count, bumps the epoch and futex-wakes the word (`wake_if_waiting`), which
//! wakes this thread, or makes its wait return at once if the bump came first;
//! either way it finds the epoch moved and wakes the task. The task's next poll
//! withdraws the count and tries again. `loom-tests/tests/async_wake.rs` models
//! this on the shipped ring code.
//!
//! Registrations are added under a mutex and announced by bumping `changes`, a
//! futex word of this process the thread also waits on, so it rebuilds its list.
//!
//! # Limits
//! `futex_waitv` takes at most 128 words (127 besides `changes`): beyond that, the
//! thread watches the first 127 and rechecks the rest every millisecond. On a
//! kernel without `futex_waitv` it falls back to the same millisecond rechecks.
//! While any task waits, the thread also wakes every [`TICK`] to look for claims
//! left outstanding (a peer that died mid-operation, which no wake-up announces)
//! and wakes one task per such segment and direction, which sweeps.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::broadcast::BroadcastMemory;
use crate::handle::ShmRing;
use crate::platform::{self, Waitv, FUTEX_WAITV_MAX};
use crate::ring::{epoch_word, Direction};
use crate::segment::Segment;
use crate::shm::ShmPlatform;
use crate::wait::SWEEP_INTERVAL;

/// How often the thread looks for outstanding claims while any task waits.
pub(crate) const TICK: Duration = SWEEP_INTERVAL;
/// Recheck period for words the thread cannot sleep on (too many, or no
/// `futex_waitv`).
const OVERFLOW_SLICE: Duration = Duration::from_millis(1);

/// One registration's identity.
pub(crate) type Key = u64;

/// The wait word a registration sleeps on: a work queue's in a direction, or a
/// broadcast segment's (`NotEmpty` for subscribers, `NotFull` for lossless
/// publishers). A segment is one kind or the other, so a segment and a direction
/// name one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watched {
    /// A work queue's word (`src/ring/wake.rs`).
    Queue(Direction),
    /// A broadcast segment's word (`src/broadcast/wake.rs`).
    Broadcast(Direction),
}

impl Watched {
    /// The futex word itself, in `segment`.
    fn word(self, segment: &Segment) -> &AtomicU32 {
        match self {
            Self::Queue(direction) => epoch_word(segment, direction),
            Self::Broadcast(direction) => {
                let shared = BroadcastMemory::shared(segment);
                match direction {
                    Direction::NotEmpty => &shared.not_empty.epoch,
                    Direction::NotFull => &shared.not_full.epoch,
                }
            }
        }
    }

    fn not_empty(self) -> bool {
        matches!(
            self,
            Self::Queue(Direction::NotEmpty) | Self::Broadcast(Direction::NotEmpty)
        )
    }

    /// Whether a claim is outstanding on `segment` (a peer mid-operation, or dead
    /// in one), asked without a record of our own.
    fn outstanding(self, segment: &Arc<Segment>, platform: &ShmPlatform) -> bool {
        match self {
            Self::Queue(_) => {
                ShmRing::observer(Arc::clone(segment), platform.clone()).outstanding_claims()
            }
            Self::Broadcast(_) => crate::broadcast::any_claim_outstanding(&**segment),
        }
    }
}

/// The waker thread's shared state.
pub(crate) struct Reactor {
    state: Mutex<State>,
    /// Bumped and futex-woken whenever a registration is added, so the thread
    /// rebuilds its list of words.
    changes: AtomicU32,
}

struct State {
    entries: HashMap<Key, Entry>,
    next_key: Key,
    next_tick: Instant,
    /// Whether the thread has been started.
    started: bool,
    /// The words (segment, direction is not-empty, epoch) the thread sleeps on
    /// since its last scan: a registration on one of them needs no rescan.
    watching: HashSet<(usize, bool, u32)>,
}

/// A task waiting on one segment's word.
struct Entry {
    /// The segment (kept mapped while the thread may sleep on its word).
    segment: Arc<Segment>,
    /// The registering handle's platform, for a record-less view of the ring that
    /// asks whether claims are outstanding.
    platform: ShmPlatform,
    watched: Watched,
    /// The epoch the task read after registering.
    epoch: u32,
    /// `None` once the thread has woken it (the entry stays until the task polls).
    waker: Option<Waker>,
    /// Wake the task at this instant even without a wake-up (a stalled peer).
    recheck_at: Option<Instant>,
}

/// The words the thread sleeps on next, and until when.
struct Watch {
    words: Vec<(Arc<Segment>, Watched, u32)>,
    deadline: Option<Instant>,
}

/// The process's reactor, starting its thread on first use. Fails only if the
/// thread cannot be spawned (the error says why); a later call tries again.
pub(crate) fn reactor() -> std::io::Result<&'static Reactor> {
    static REACTOR: std::sync::OnceLock<Reactor> = std::sync::OnceLock::new();
    let reactor = REACTOR.get_or_init(|| Reactor {
        state: Mutex::new(State {
            entries: HashMap::new(),
            next_key: 0,
            next_tick: Instant::now(),
            started: false,
            watching: HashSet::new(),
        }),
        changes: AtomicU32::new(0),
    });
    let mut state = reactor.lock();
    if !state.started {
        std::thread::Builder::new()
            .name("shmq-waker".into())
            .spawn(move || reactor.run())?;
        state.started = true;
    }
    Ok(reactor)
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held (a Waker's code runs outside it) leaves the
        // map consistent: each step is one insert, update or removal.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a registered waiter's wait to the thread: wake `waker` once `ring`'s
    /// `direction` epoch is no longer `epoch` (or at `recheck_at`).
    pub(crate) fn register(
        &self,
        ring: &ShmRing,
        direction: Direction,
        epoch: u32,
        waker: &Waker,
        recheck_at: Option<Instant>,
    ) -> Key {
        self.register_on(
            ring.memory(),
            ring.platform(),
            Watched::Queue(direction),
            epoch,
            waker,
            recheck_at,
        )
    }

    /// [`register`](Self::register) for any segment's word: wake `waker` once the
    /// `watched` epoch of `segment` is no longer `epoch` (or at `recheck_at`).
    pub(crate) fn register_on(
        &self,
        segment: &Arc<Segment>,
        platform: &ShmPlatform,
        watched: Watched,
        epoch: u32,
        waker: &Waker,
        recheck_at: Option<Instant>,
    ) -> Key {
        let (key, covered) = {
            let mut state = self.lock();
            // Already watched with this epoch, and no recheck to schedule: the
            // thread's sleep covers this registration too (a bump of the word wakes
            // it, and its scan then finds this entry).
            let covered = recheck_at.is_none()
                && state.watching.contains(&(
                    Arc::as_ptr(segment) as usize,
                    watched.not_empty(),
                    epoch,
                ));
            let key = state.next_key;
            state.next_key += 1;
            state.entries.insert(
                key,
                Entry {
                    segment: Arc::clone(segment),
                    platform: platform.clone(),
                    watched,
                    epoch,
                    waker: Some(waker.clone()),
                    recheck_at,
                },
            );
            (key, covered)
        };
        if !covered {
            self.announce_change();
        }
        key
    }

    /// Whether the registration `key` is still waiting; if so, it will wake `waker`
    /// (the task's current one). `false` once the thread woke it, or it is gone.
    pub(crate) fn still_waiting(&self, key: Key, waker: &Waker) -> bool {
        let mut state = self.lock();
        match state.entries.get_mut(&key) {
            Some(Entry {
                waker: Some(current),
                ..
            }) => {
                if !current.will_wake(waker) {
                    *current = waker.clone();
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets the registration `key` (woken or not).
    pub(crate) fn cancel(&self, key: Key) {
        let removed = self.lock().entries.remove(&key);
        if removed.as_ref().is_some_and(|entry| entry.waker.is_some()) {
            // Still watched (a future dropped while pending): have the thread
            // rebuild its list, so it stops sleeping on (and keeping mapped) a
            // segment no task awaits.
            self.announce_change();
        }
        // The entry's segment reference is dropped here, outside the lock.
        drop(removed);
    }

    /// Makes the thread rescan: bumps `changes` and wakes it.
    fn announce_change(&self) {
        // Relaxed: the mutex orders it. The thread loads `changes` before it locks to
        // scan; if its scan missed a change made under the lock, its load preceded
        // that change (mutex order) and so this bump, and its futex wait on the old
        // value returns at once or is woken below.
        self.changes.fetch_add(1, Ordering::Relaxed);
        platform::futex_wake_all(&self.changes);
    }

    /// The thread: scan, wake, sleep, forever.
    fn run(&self) {
        let mut waitv_supported = true;
        loop {
            // Relaxed: see `announce_change`.
            let changes = self.changes.load(Ordering::Relaxed);
            let now = Instant::now();
            let max_words = if waitv_supported {
                FUTEX_WAITV_MAX - 1
            } else {
                0
            };
            let (to_wake, watch) = self.scan(now, max_words);
            for waker in to_wake {
                // An executor's waker that panics must not take down the thread
                // every task of the process relies on: the panic is reported by the
                // hook and the rest are still woken.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
            let watched = if waitv_supported {
                watch.words.len().min(FUTEX_WAITV_MAX - 1)
            } else {
                0
            };
            let mut deadline = watch.deadline;
            if watched < watch.words.len() {
                deadline =
                    Some(deadline.map_or(now + OVERFLOW_SLICE, |d| d.min(now + OVERFLOW_SLICE)));
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut words: Vec<(&AtomicU32, u32)> = Vec::with_capacity(watched + 1);
            words.push((&self.changes, changes));
            for (segment, word, epoch) in &watch.words[..watched] {
                words.push((word.word(segment), *epoch));
            }
            if waitv_supported {
                if platform::futex_waitv(&words, timeout) == Waitv::Unsupported {
                    waitv_supported = false;
                }
            } else {
                platform::futex_wait(&self.changes, changes, timeout);
            }
            // `watch` (and the mappings it keeps alive) is dropped only now.
            drop(words);
            drop(watch);
        }
    }

    /// Takes the wakers of every registration whose epoch moved or whose recheck is
    /// due, and lists the words to sleep on for the rest.
    fn scan(&self, now: Instant, max_words: usize) -> (Vec<Waker>, Watch) {
        let mut state = self.lock();
        let tick = !state.entries.is_empty() && now >= state.next_tick;
        if tick {
            state.next_tick = now + TICK;
        }
        let next_tick = state.next_tick;
        // Per segment, whether a claim is outstanding (asked once per tick).
        let mut outstanding: HashMap<usize, bool> = HashMap::new();
        // Segments and directions one of whose tasks this tick wakes.
        let mut nudged: HashSet<(usize, bool)> = HashSet::new();
        // Segments and directions already in `watch`.
        let mut watched: HashSet<(usize, bool)> = HashSet::new();
        let mut to_wake = Vec::new();
        let mut watch = Watch {
            words: Vec::new(),
            deadline: None,
        };
        for entry in state.entries.values_mut() {
            if entry.waker.is_none() {
                continue;
            }
            // Relaxed: only decides whether to wake the task; the task's next poll
            // reads the ring with its own orderings (and, if it registers again,
            // its SeqCst epoch load synchronises with the bump).
            let current = entry.watched.word(&entry.segment).load(Ordering::Relaxed);
            let recheck = entry.recheck_at.is_some_and(|at| now >= at);
            // On a tick, one task per segment and direction with a claim outstanding
            // (its sweep repairs what a dead peer left, and a repair wakes the rest
            // through the epoch): a live peer holding a message for long costs one
            // poll per tick, not one per waiting task.
            let key = (
                Arc::as_ptr(&entry.segment) as usize,
                entry.watched.not_empty(),
            );
            let stalled = tick
                && *outstanding
                    .entry(key.0)
                    .or_insert_with(|| entry.watched.outstanding(&entry.segment, &entry.platform))
                && nudged.insert(key);
            if current != entry.epoch || recheck || stalled {
                to_wake.extend(entry.waker.take());
                continue;
            }
            if let Some(at) = entry.recheck_at {
                watch.deadline = Some(watch.deadline.map_or(at, |d| d.min(at)));
            }
            // One word per segment and direction: if two registrations on it hold
            // different epochs, the older is stale, and sleeping on it returns at
            // once (then the next scan wakes its task).
            if watched.insert(key) {
                watch
                    .words
                    .push((Arc::clone(&entry.segment), entry.watched, entry.epoch));
            }
        }
        state.watching = watch
            .words
            .iter()
            .take(max_words)
            .map(|(segment, watched, epoch)| {
                (Arc::as_ptr(segment) as usize, watched.not_empty(), *epoch)
            })
            .collect();
        if !watch.words.is_empty() {
            watch.deadline = Some(watch.deadline.map_or(next_tick, |d| d.min(next_tick)));
        }
        (to_wake, watch)
    }
}
