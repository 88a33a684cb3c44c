//! Loom models of the shmq algorithm. The models live in `tests/`; this crate holds
//! what they share: a [`Platform`](shmq::ring::Platform) built from loom's own
//! primitives, and small helpers to set up a heap ring and check what came out.
//!
//! Everything here exists only under `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release
//! ```
//!
//! The ring under test is `shmq::model::Ring` itself, over `shmq::model::HeapMemory`
//! (slots with loom atomics and loom `UnsafeCell` payloads): the code that ships, not
//! a copy. `weaken.sh` shows that the suite fails when an ordering in `src/ring/` or
//! `src/ready.rs` is weakened.

#![cfg(loom)]
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::time::{Duration, Instant};

use loom::sync::atomic::AtomicBool;
use loom::sync::{Arc, Condvar, Mutex};
use shmq::model::{
    AtomicU32, End, HeapMemory, Ordering, Platform, Redelivery, Ring, Scope, Unread,
};
use shmq::TryRecvError;

/// A ring handle as the models use it.
pub type ModelRing = Ring<std::sync::Arc<HeapMemory>, ModelPlatform>;

/// A message: `[producer, sequence number]`.
pub type Message = (u8, u8);

/// Bytes in a model message.
pub const MESSAGE_SIZE: u64 = 2;

struct PlatformState {
    /// `liveness[i]`: participant record `i`'s liveness lock is held (by a live
    /// handle). Taken by `try_own`, released when the handle drops its guard, or by
    /// [`ModelPlatform::kill`] (the kernel releasing a dead process's lock). A std
    /// `Arc` per lock, so a guard leaked by a dying handle (`claim_and_die` forgets
    /// it) leaks a few bytes, not a loom `Arc`, which loom would report as a leak.
    liveness: Vec<std::sync::Arc<AtomicBool>>,
    /// The recovery lock.
    recovery_locked: AtomicBool,
    /// The futex: its hash-bucket lock and its sleepers. One for every word; a waiter
    /// re-checks its own word after each wake-up, so sharing costs no precision.
    futex_lock: Mutex<()>,
    futex_sleepers: Condvar,
}

/// The operating system, as loom sees it: liveness locks, a try-lock for recovery,
/// and a futex made of a mutex and a condition variable.
///
/// Liveness works as the segment's record locks do: registering takes record `i`'s
/// lock (`try_own` fails while another handle holds it), a handle dropped cleanly
/// releases it, a dead one has it released by [`ModelPlatform::kill`], and
/// `is_alive(i)` asks whether anyone holds it, so a record freed and taken again by a
/// new registrant is alive again.
///
/// It gives the `Platform` ordering contract (`src/ring/mod.rs`): each lock is an
/// atomic whose release (a guard's drop, or `kill`) is a Release store, and whose
/// `try_own`, `try_lock_recovery` and `is_alive` read it with Acquire, so a
/// successful try-lock, or a death check that answers dead, synchronises with the
/// release it read. No model dies holding the recovery lock, so `kill` releases
/// liveness locks only.
///
/// The futex model never times out and never returns spuriously: a waiter returns
/// only once its word has changed. A lost wake-up therefore leaves the waiter asleep
/// forever, which loom reports as a deadlock.
#[derive(Clone)]
pub struct ModelPlatform(Arc<PlatformState>);

/// Holds one record's liveness lock; dropping it unlocks (a clean exit).
pub struct LivenessGuard(std::sync::Arc<AtomicBool>);

impl Drop for LivenessGuard {
    fn drop(&mut self) {
        // Release: pairs with the Acquire in `is_alive` and in the next `try_own`
        // (the `Platform` ordering contract), as the kernel's lock hand-over orders
        // what the owner did before unlocking.
        self.0.store(false, Ordering::Release);
    }
}

/// Holds the model's recovery lock; dropping it unlocks.
pub struct RecoveryGuard(Arc<PlatformState>);

impl Drop for RecoveryGuard {
    fn drop(&mut self) {
        // Release: the next sweeper's Acquire CAS sees every repair we made (the
        // `Platform` ordering contract).
        self.0.recovery_locked.store(false, Ordering::Release);
    }
}

impl ModelPlatform {
    /// A platform for `participants` records, every liveness lock free.
    pub fn new(participants: u64) -> Self {
        Self(Arc::new(PlatformState {
            liveness: (0..participants)
                .map(|_| std::sync::Arc::new(AtomicBool::new(false)))
                .collect(),
            recovery_locked: AtomicBool::new(false),
            futex_lock: Mutex::new(()),
            futex_sleepers: Condvar::new(),
        }))
    }

    /// Marks participant `index` dead: releases its liveness lock, whose guard the
    /// dying handle leaked. Call it from the dying participant's thread after its last
    /// action, as the kernel releases a dead process's lock only after the process has
    /// stopped.
    pub fn kill(&self, index: u64) {
        // Release: pairs with the Acquire in `is_alive` (and `try_own`), so a sweeper
        // that sees the death also sees everything the participant did before dying
        // (the kernel's lock hand-over gives the real platform the same edge).
        self.0.liveness[index as usize].store(false, Ordering::Release);
    }
}

impl Platform for ModelPlatform {
    type Liveness = LivenessGuard;
    type RecoveryGuard<'a> = RecoveryGuard;

    fn try_own(&self, index: u64) -> Option<LivenessGuard> {
        let lock = &self.0.liveness[index as usize];
        // Acquire: pairs with the Release of the previous holder's unlock (its guard's
        // drop, or `kill`). Failure: Relaxed, we learn nothing from a lock we did not
        // get.
        lock.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| LivenessGuard(lock.clone()))
    }

    fn is_alive(&self, index: u64) -> bool {
        // Acquire: pairs with the Release in `kill` (and a clean unlock), like the
        // real platform's lock query after the kernel released a dead owner's lock.
        self.0.liveness[index as usize].load(Ordering::Acquire)
    }

    fn try_lock_recovery(&self) -> Option<RecoveryGuard> {
        // Acquire: pairs with the Release in the previous guard's drop. Failure:
        // Relaxed, we learn nothing from a lock we did not get.
        self.0
            .recovery_locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| RecoveryGuard(self.0.clone()))
    }

    fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        // Timeouts are ignored on purpose: a wait that needs one to end is a lost
        // wake-up, and loom reports the stuck thread as a deadlock.
        let mut bucket = self.0.futex_lock.lock().unwrap();
        // SeqCst: the kernel reads the futex word after a full barrier, under the
        // bucket lock. The lock alone already orders this load after any waker that
        // locked before us; SeqCst keeps the model no weaker than the kernel.
        while word.load(Ordering::SeqCst) == expected {
            bucket = self.0.futex_sleepers.wait(bucket).unwrap();
        }
    }

    fn wake_all(&self, _word: &AtomicU32) {
        // Taking the bucket lock orders us after a waiter that checked the word and
        // is about to sleep (it sleeps before it unlocks), as in the kernel.
        let _bucket = self.0.futex_lock.lock().unwrap();
        self.0.futex_sleepers.notify_all();
    }
}

/// A heap ring with `participants` registered handles, in index order.
pub fn ring(
    capacity: u64,
    participants: u64,
    initial_position: u64,
) -> (std::sync::Arc<HeapMemory>, ModelPlatform, Vec<ModelRing>) {
    // A std `Arc`: the ring's `RingMemory` impl is for it, and its count is not part
    // of the algorithm.
    let memory = std::sync::Arc::new(HeapMemory::new(
        capacity,
        MESSAGE_SIZE,
        participants,
        initial_position,
    ));
    declare_initial_values_seq_cst(&memory);
    let platform = ModelPlatform::new(participants);
    let rings = (0..participants)
        .map(|n| {
            let ring = Ring::register(memory.clone(), platform.clone(), n + 1, 0)
                .expect("a fresh ring has a free record for every participant");
            assert_eq!(
                ring.participant_index(),
                n,
                "records are handed out in order"
            );
            ring
        })
        .collect();
    (memory, platform, rings)
}

/// Re-stores, with SeqCst, the initial value of every word the algorithm accesses
/// with SeqCst (the cursors and the wait words).
///
/// Loom treats SeqCst loads and stores as AcqRel (loom's README, "Unsupported
/// features"), except for one rule: a SeqCst load does not return a store older than
/// a newer SeqCst store. A word's initial value is not a SeqCst store in loom, so a
/// SeqCst load could return it after a SeqCst CAS had replaced it, which the C++
/// memory model forbids (initialisation happens before every SeqCst operation, so a
/// SeqCst load that follows a SeqCst write in the total order cannot read it). That
/// gap made loom report a lost wake-up the real orderings exclude. Re-storing the
/// values with SeqCst, before any model thread starts, closes it; it adds no
/// synchronisation the threads do not already get from `spawn`.
fn declare_initial_values_seq_cst(memory: &HeapMemory) {
    use shmq::model::RingMemory;
    let shared = memory.shared();
    for cursor in [&shared.enqueue_pos.value, &shared.dequeue_pos.value] {
        // SeqCst: see above.
        cursor.store(cursor.load(Ordering::Relaxed), Ordering::SeqCst);
    }
    for word in [&shared.not_empty, &shared.not_full] {
        // SeqCst: see above.
        word.waiters
            .store(word.waiters.load(Ordering::Relaxed), Ordering::SeqCst);
        // SeqCst: see above.
        word.epoch
            .store(word.epoch.load(Ordering::Relaxed), Ordering::SeqCst);
    }
}

/// Kills `ring` as a process killed *inside* the claim step would die: after the
/// store that records its claim at `end`'s cursor, before the CAS that would take
/// it. Its record then names a position it never took, which any live participant
/// may take, finish and move past. Returns the position recorded.
///
/// `Ring::claim_and_die` cannot stop there (it runs the whole shipped step, whose
/// record is left naming a claim it won, or none), so this writes the record as that
/// step's first store does (Release) and then dies through `claim_and_die` on the
/// *other* end, which must find nothing to claim (the ring full for a consumer's
/// death, empty for a producer's), so that only the death is taken from it.
pub fn die_after_recording_claim(ring: ModelRing, platform: &ModelPlatform, end: End) -> u64 {
    use shmq::model::RingMemory;
    let index = ring.participant_index();
    let memory = ring.memory().clone();
    let (cursor, claim_word, other_end) = match end {
        End::Enqueue => (
            &memory.shared().enqueue_pos.value,
            &memory.participant(index).enqueue_claim,
            End::Dequeue,
        ),
        End::Dequeue => (
            &memory.shared().dequeue_pos.value,
            &memory.participant(index).dequeue_claim,
            End::Enqueue,
        ),
    };
    // Relaxed: the model calls this before it spawns any thread.
    let pos = cursor.load(Ordering::Relaxed);
    // Release: as the claim step's record store (the spawn orders it anyway).
    claim_word.store(pos, Ordering::Release);
    assert!(
        ring.claim_and_die(other_end).is_none(),
        "the other end must have nothing to claim"
    );
    platform.kill(index);
    pos
}

/// Receives one message, if any.
pub fn try_recv(ring: &ModelRing) -> Result<Message, TryRecvError> {
    let read = |bytes: &[u8]| {
        assert_eq!(bytes.len(), MESSAGE_SIZE as usize, "torn message length");
        (bytes[0], bytes[1])
    };
    ring.try_recv_with(read).map_err(|unread| match unread {
        Unread::Empty(_) => TryRecvError::Empty,
        Unread::Failed(e) => e,
    })
}

/// Consecutive failed retries (Full, Empty, Pending) one thread may make in one
/// execution before loom stops branching for the rest of that execution.
///
/// Why a budget: loom does not count a switch away from a yielding thread as a
/// preemption, so two threads spinning on each other's yields (two producers on a
/// full ring while the consumer waits its turn) form an unbounded execution that
/// exhausts loom's branch limit. Past the budget, [`loom::skip_branch`] lets the
/// execution run to its end in loom's default schedule (which runs the thread that
/// yielded least, so the one the spinners wait for) and still checks every assertion
/// and every cell access on it; only the alternatives after that point are not
/// explored. This is a bound like the preemption bound, not a proof: executions in
/// which a thread retries three times in a row without progress, and something new
/// happens only after that, are explored along one schedule only. Each retry repeats
/// the same loads of the same slot, and loom never hands a yielding thread a stale
/// value it read before its yield, so two retries already see the slot move on.
/// `weaken.sh` confirms the budget leaves the models able to fail.
pub const SPIN_BUDGET: usize = 2;

/// Counts a thread's consecutive failed retries (see [`SPIN_BUDGET`]).
#[derive(Default)]
pub struct Spin {
    failures: usize,
}

impl Spin {
    /// A retry failed: yield, and stop branching once over budget.
    pub fn failed(&mut self) {
        self.failures += 1;
        if self.failures > SPIN_BUDGET {
            loom::skip_branch();
        }
        loom::thread::yield_now();
    }

    /// The thread made progress: its budget starts over.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }
}

/// Sends `message`, yielding to the other threads while the ring is full.
pub fn send_spinning(ring: &ModelRing, message: Message) {
    let mut spin = Spin::default();
    while ring.try_send(&[message.0, message.1]).is_err() {
        spin.failed();
    }
}

/// Asserts that `received` holds every message of `expected` exactly once.
pub fn assert_exactly_once(received: &[Message], expected: &[Message]) {
    let mut got = received.to_vec();
    got.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "delivery is not exactly-once");
}

/// Asserts that, in what one consumer `received`, each producer's messages come in
/// the order that producer sent them.
pub fn assert_per_producer_order(received: &[Message]) {
    for producer in received.iter().map(|m| m.0) {
        let sequence: Vec<u8> = received
            .iter()
            .filter(|m| m.0 == producer)
            .map(|m| m.1)
            .collect();
        assert!(
            sequence.windows(2).all(|w| w[0] < w[1]),
            "producer {producer}'s messages out of order: {received:?}"
        );
    }
}

/// Runs `model` under loom with at most `preemptions` preemptions per execution
/// (the `LOOM_MAX_PREEMPTIONS` environment variable overrides it), and prints the
/// bound, the number of executions explored and the time taken.
pub fn check<F>(name: &str, preemptions: usize, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        // Spinning threads (a producer retrying on Full, a consumer on Empty) make
        // long executions; loom's default of 1 000 branch points is too few for the
        // models that move four messages through two slots.
        builder.max_branches = 20_000;
    }
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    let started = Instant::now();
    builder.check(move || {
        // Relaxed: a statistic of the test harness, outside the model.
        counter.fetch_add(1, StdOrdering::Relaxed);
        model();
    });
    eprintln!(
        "loom model {name}: preemption bound {:?}, {} executions, {:.1?}",
        builder.preemption_bound,
        // Relaxed: read after the model finished, on the same thread.
        executions.load(StdOrdering::Relaxed),
        started.elapsed()
    );
}

/// Once every thread is gone: a final sweep leaves nothing outstanding, the ring is
/// empty, and it still answers exactly (full after `capacity` sends, FIFO after).
pub fn assert_repaired_and_usable(ring: &ModelRing) {
    let sweep = ring.sweep(Scope::Housekeeping, Redelivery::Leave);
    assert!(!sweep.busy && !sweep.dead_consumer_pending);
    assert!(matches!(try_recv(ring), Err(TryRecvError::Empty)));
    let capacity = ring.capacity() as u8;
    for n in 0..capacity {
        ring.try_send(&[9, n])
            .expect("a repaired, drained ring has room");
    }
    assert!(matches!(
        ring.try_send(&[9, 99]),
        Err(shmq::TrySendError::Full)
    ));
    for n in 0..capacity {
        assert_eq!(try_recv(ring).unwrap(), (9, n));
    }
}
