//! The algorithm: Dmitry Vyukov's bounded MPMC queue, extended so that a participant
//! killed at any instant neither wedges the ring nor loses a committed message, and
//! with a sleep/wake protocol that costs the fast path no system call.
//!
//! This file knows nothing of shared memory, futexes or processes: slots and shared
//! words come from a [`RingMemory`], liveness, the recovery lock and sleeping from a
//! [`Platform`]. The shared-memory queue and the loom models (`loom-tests/`) run this
//! same code; its atomics come from [`crate::sync`].
//!
//! # The ring (Vyukov, "Bounded MPMC queue", 1024cores.net)
//! Each slot has a sequence number. For the slot at position `p` (index
//! `p & (capacity-1)`): sequence `p` means empty and ready for the producer of `p`;
//! `p + 1` means published and ready for the consumer of `p`; `p + capacity` means
//! released and ready for the producer one lap later. A producer claims position `p`
//! by CAS on `enqueue_pos` after seeing sequence `p`, writes the payload, then
//! publishes sequence `p + 1`. A consumer claims `p` by CAS on `dequeue_pos` after
//! seeing `p + 1`, reads, then releases with `p + capacity`. Positions are 63-bit and
//! wrap (see [`pos_diff`]).
//!
//! # Claim records (crash survival)
//! Before its claiming CAS, a participant stores the position it is about to claim
//! in its own [`ParticipantRecord`] (`enqueue_claim` / `dequeue_claim`). The CAS is a
//! release, so anyone who later reads the cursor past `p` also sees that record. A
//! claim at `p` is *outstanding* while the cursor is past `p` and the slot's sequence
//! still says claimed-not-done (`p` for a producer, `p + 1` for a consumer). If an
//! outstanding claim's position appears only in records of dead participants, its
//! claimer is dead: no live participant can touch that slot again, so the sweeper
//! (holding the recovery lock, which excludes other sweepers) owns it. A dead
//! producer's slot is published as a skip; a dead consumer's message is delivered
//! again, to the sweeping consumer (at-least-once for that message only).
//!
//! Why "no live record holds `p`" proves the claimer dead: the claimer's record
//! store of `p` happens before its CAS (Release) which the sweeper's cursor load
//! (SeqCst, so Acquire) observes; so the sweeper sees `p` in the claimer's record or
//! a later value. A later value is written only after the claimer finished `p`
//! (published or released it, with Release), and the record store is a Release that
//! the sweeper's Acquire record load pairs with, so the sweeper's subsequent load of
//! the slot sequence shows `p` done. So: sequence still outstanding + no live holder
//! ⇒ the holder is dead.
//!
//! # Sleeping without lost wake-ups
//! A waiter (say a consumer on an empty ring) increments `not_empty.waiters`
//! (SeqCst), reads the futex epoch, then re-checks: it sleeps only if the slot at
//! `dequeue_pos` is unpublished *and* `enqueue_pos == dequeue_pos` (no producer has
//! even claimed it). A producer claims with a SeqCst CAS and, after publishing,
//! loads `waiters` (SeqCst). In the single total order of SeqCst operations either
//! the producer's load follows the waiter's increment (it sees the waiter, bumps the
//! epoch and wakes), or it precedes it, and then so does the producer's claim, which
//! the waiter's SeqCst load of `enqueue_pos` therefore sees (it does not sleep). A
//! waiter that read the bumped epoch also sees the publish (the bump is a release).
//! Producers waiting for space mirror this with `not_full` and `dequeue_pos`.
//! On x86 none of this adds an instruction to the fast path: the CAS is a locked
//! instruction either way and a SeqCst load is a plain load.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use crate::error::{TryRecvError, TrySendError};
use crate::layout::{
    participant, pos_add, pos_diff, waiting, Geometry, ParticipantRecord, RingShared, SlotHeader,
    WaitWord, CLAIM_NONE, POS_MASK, SKIP_LEN,
};
use crate::sync::{AtomicU32, Ordering};

/// Where the ring's shared state and slots live.
///
/// # Safety
/// Implementors guarantee that `slot(i)` and `participant(i)` return references to
/// distinct, properly initialised objects for every `i` below capacity / participant
/// count, valid for the lifetime of `self`, and that the payload methods touch only
/// slot `index`'s payload bytes (at most `max_message_size` of them).
pub unsafe trait RingMemory {
    /// The validated geometry (read once; never re-read from shared memory).
    fn geometry(&self) -> &Geometry;
    /// Cursors, wait words and counters.
    fn shared(&self) -> &RingShared;
    /// Slot header at `index` (`index < capacity`).
    fn slot(&self, index: u64) -> &SlotHeader;
    /// Participant record at `index` (`index < max_participants`).
    fn participant(&self, index: u64) -> &ParticipantRecord;
    /// Copies `bytes` into the payload of slot `index`.
    ///
    /// # Safety
    /// The caller holds the producer claim on the slot and `bytes.len()` is at most
    /// the maximum message size.
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]);
    /// Lends the first `len` payload bytes of slot `index` to `f`.
    ///
    /// # Safety
    /// The caller holds the consumer claim on the slot (or owns it as the recovery
    /// sweeper) and `len` is at most the maximum message size.
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

// SAFETY: forwards to `T`, which upholds the contract; `Arc` keeps it alive.
unsafe impl<T: RingMemory> RingMemory for std::sync::Arc<T> {
    fn geometry(&self) -> &Geometry {
        (**self).geometry()
    }
    fn shared(&self) -> &RingShared {
        (**self).shared()
    }
    fn slot(&self, index: u64) -> &SlotHeader {
        (**self).slot(index)
    }
    fn participant(&self, index: u64) -> &ParticipantRecord {
        (**self).participant(index)
    }
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        // SAFETY: same contract, passed through.
        unsafe { (**self).write_payload(index, bytes) }
    }
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: same contract, passed through.
        unsafe { (**self).read_payload(index, len, f) }
    }
}

/// What the algorithm needs from the operating system (or from a model of it).
pub trait Platform {
    /// Held while a sweep repairs; dropping it releases the recovery lock.
    type RecoveryGuard;
    /// Whether the participant registered at `index` is alive. Must never report a
    /// live participant dead; may report a free record as dead.
    fn is_alive(&self, index: u64) -> bool;
    /// Tries, without blocking, to become the one sweeper allowed to repair.
    fn try_lock_recovery(&self) -> Option<Self::RecoveryGuard>;
    /// Sleeps while `word` holds `expected`, until woken or `timeout` passes
    /// (spurious returns allowed).
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes every sleeper on `word`.
    fn wake_all(&self, word: &AtomicU32);
}

/// Answer to "would a wait on this side sleep?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The next operation may succeed: try it.
    Ready,
    /// The slot is claimed by the other side and will be done soon (or its owner is
    /// dead and a sweep will repair it): don't sleep long.
    Pending,
    /// Nothing is in flight: sleeping is safe, a waker will come.
    Idle,
}

/// Which way a participant waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A consumer waiting for a message.
    NotEmpty,
    /// A producer waiting for a free slot.
    NotFull,
}

/// What a sweep found and did.
#[derive(Debug)]
pub struct Sweep<R> {
    /// Another participant holds the recovery lock; nothing was checked.
    pub busy: bool,
    /// Slots of dead producers published as skips.
    pub skipped: u32,
    /// Dead participants' records freed.
    pub freed: u32,
    /// A dead consumer's message, delivered to this sweeper's closure.
    pub redelivered: Option<Result<R, TryRecvError>>,
    /// A dead consumer holds a message and this sweep could not take it (no
    /// delivery closure was given, or it was already used).
    pub dead_consumer_pending: bool,
}

impl<R> Default for Sweep<R> {
    fn default() -> Self {
        Self {
            busy: false,
            skipped: 0,
            freed: 0,
            redelivered: None,
            dead_consumer_pending: false,
        }
    }
}

/// A registered participant's view of the ring: send, receive, wait and repair.
///
/// `Send` (it can move to another thread) but not `Sync`: its participant record is
/// written without synchronisation by whichever thread uses it. Give each thread its
/// own handle.
pub struct Ring<M: RingMemory, P: Platform> {
    memory: M,
    platform: P,
    /// This participant's record index.
    me: u64,
    mask: u64,
    capacity: u64,
    max_message_size: u64,
    _not_sync: PhantomData<Cell<()>>,
}

/// Claims a free participant record for a new handle. `try_own(i)` must make the
/// caller the only live owner of record `i` (a lock the platform drops on death);
/// `disown(i)` undoes it. Returns the record index, or `None` if every record is
/// taken.
pub fn register<M: RingMemory>(
    memory: &M,
    pid: u64,
    start_time: u64,
    mut try_own: impl FnMut(u64) -> bool,
    mut disown: impl FnMut(u64),
) -> Option<u64> {
    for index in 0..memory.geometry().max_participants {
        let record = memory.participant(index);
        // Relaxed: a hint only; the CAS below decides.
        if record.state.load(Ordering::Relaxed) != participant::FREE {
            continue;
        }
        if !try_own(index) {
            continue;
        }
        // Acquire: pairs with the Release that freed the record (by its previous owner
        // or a sweeper), so we see its claims reset to CLAIM_NONE.
        if record
            .state
            .compare_exchange(
                participant::FREE,
                participant::ACTIVE,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            // Relaxed: informational fields, read only by inspectors.
            record.pid.store(pid, Ordering::Relaxed);
            record.start_time.store(start_time, Ordering::Relaxed);
            record.operations.store(0, Ordering::Relaxed);
            return Some(index);
        }
        // The record is ACTIVE yet we got its lock: its owner is dead. A sweep frees
        // it once its claims are settled; look further.
        disown(index);
    }
    None
}

impl<M: RingMemory, P: Platform> Ring<M, P> {
    /// Wraps a registered participant `me` (see [`register`]).
    pub fn new(memory: M, platform: P, me: u64) -> Self {
        let geometry = *memory.geometry();
        assert!(
            me < geometry.max_participants,
            "participant index out of range"
        );
        Self {
            memory,
            platform,
            me,
            mask: geometry.mask(),
            capacity: geometry.capacity,
            max_message_size: geometry.max_message_size,
            _not_sync: PhantomData,
        }
    }

    /// A ring view with no participant record, for sweeping only (used when the
    /// participant table is full of dead records and a new handle must free one
    /// before it can register). Sending or receiving through it panics.
    pub fn observer(memory: M, platform: P) -> Self {
        let geometry = *memory.geometry();
        Self {
            memory,
            platform,
            me: u64::MAX,
            mask: geometry.mask(),
            capacity: geometry.capacity,
            max_message_size: geometry.max_message_size,
            _not_sync: PhantomData,
        }
    }

    /// The memory this ring lives in.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The platform this ring waits and checks liveness with.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// This participant's record index.
    pub fn participant_index(&self) -> u64 {
        self.me
    }

    /// Capacity in messages.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    fn record(&self) -> &ParticipantRecord {
        self.memory.participant(self.me)
    }

    fn slot_at(&self, pos: u64) -> (u64, &SlotHeader) {
        let index = pos & self.mask;
        debug_assert!(index < self.capacity);
        (index, self.memory.slot(index))
    }

    /// Enqueues `message` if a slot is free. Never blocks, never makes a system call
    /// unless a consumer is asleep.
    pub fn try_send(&self, message: &[u8]) -> Result<(), TrySendError> {
        if message.len() as u64 > self.max_message_size {
            return Err(TrySendError::TooLarge {
                len: message.len(),
                max: self.max_message_size,
            });
        }
        let shared = self.memory.shared();
        let record = self.record();
        let mut recorded = false;
        // Relaxed: only a starting guess; the slot's sequence decides.
        let mut pos = shared.enqueue_pos.value.load(Ordering::Relaxed);
        loop {
            let (index, slot) = self.slot_at(pos);
            // Acquire: pairs with the consumer's Release in `release_slot` one lap
            // earlier, so its reads of the old payload happen before our overwrite.
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = pos_diff(sequence, pos);
            if lag == 0 {
                // Release: a sweeper that reads a *later* value of this record must
                // also see our previous claim completed (module docs). The claim CAS
                // below publishes this store to anyone who sees the cursor move.
                record.enqueue_claim.store(pos, Ordering::Release);
                recorded = true;
                // SeqCst: the claim is the anchor of the wake-up protocol (a waiting
                // consumer's SeqCst load of enqueue_pos sees it, or we see the waiter)
                // and a release for the record store above. Failure: Relaxed, we only
                // take the fresher position.
                match shared.enqueue_pos.value.compare_exchange(
                    pos,
                    pos_add(pos, 1),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the CAS made us the only producer of `pos`, and the
                        // Acquire above saw the slot released by its last consumer, so
                        // nobody else touches this payload until we publish; the
                        // length was checked against the maximum at the top.
                        unsafe { self.memory.write_payload(index, message) };
                        // Relaxed: made visible by the Release publish just below.
                        slot.len.store(message.len() as u32, Ordering::Relaxed);
                        // Release: publishes payload and length; pairs with the
                        // consumer's Acquire load of the sequence.
                        slot.sequence.store(pos_add(pos, 1), Ordering::Release);
                        self.count_operation();
                        self.wake_if_waiting(&shared.not_empty);
                        return Ok(());
                    }
                    Err(current) => pos = current,
                }
            } else if lag < 0 {
                // The slot still holds the message from one lap ago: full.
                if recorded {
                    // Release: as above. We hold no claim; say so, so a sweeper never
                    // takes a stale attempt of ours for a live holder.
                    record.enqueue_claim.store(CLAIM_NONE, Ordering::Release);
                }
                return Err(TrySendError::Full);
            } else {
                // Another producer took `pos` already; catch up.
                // Relaxed: as above.
                let current = shared.enqueue_pos.value.load(Ordering::Relaxed);
                if current == pos {
                    // Impossible in a well-formed ring: the Acquire above saw a store
                    // made after the cursor moved past `pos`, so coherence forbids
                    // reading `pos` again. The segment was written over; report
                    // rather than spin forever in a non-blocking call.
                    if recorded {
                        // Release: see above.
                        record.enqueue_claim.store(CLAIM_NONE, Ordering::Release);
                    }
                    return Err(TrySendError::Full);
                }
                pos = current;
            }
        }
    }

    /// Dequeues the next message and lends its bytes to `f` while they sit in the
    /// slot (zero copy). The slot is released when `f` returns or unwinds.
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, TryRecvError> {
        let shared = self.memory.shared();
        let record = self.record();
        let mut recorded = false;
        // Relaxed: a starting guess; the slot's sequence decides.
        let mut pos = shared.dequeue_pos.value.load(Ordering::Relaxed);
        loop {
            let (index, slot) = self.slot_at(pos);
            // Acquire: pairs with the producer's Release publish (or the sweeper's
            // skip CAS), making payload and length visible.
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = pos_diff(sequence, pos_add(pos, 1));
            if lag == 0 {
                // Release: see try_send.
                record.dequeue_claim.store(pos, Ordering::Release);
                recorded = true;
                // SeqCst: the anchor of the not-full wake-up protocol, and a release
                // for the record store. Failure: Relaxed, we take the fresher value.
                match shared.dequeue_pos.value.compare_exchange(
                    pos,
                    pos_add(pos, 1),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.count_operation();
                        match self.take_claimed(index, pos, slot, f) {
                            Taken::Message(r) => return Ok(r),
                            Taken::Corrupt(e) => return Err(e),
                            Taken::Skipped(returned) => {
                                // A dead producer's hole: released; look further.
                                return self.try_recv_with(returned);
                            }
                        }
                    }
                    Err(current) => pos = current,
                }
            } else if lag < 0 {
                if recorded {
                    // Release: see try_send.
                    record.dequeue_claim.store(CLAIM_NONE, Ordering::Release);
                }
                return Err(TryRecvError::Empty);
            } else {
                // Another consumer took `pos` already; catch up.
                // Relaxed: as above.
                let current = shared.dequeue_pos.value.load(Ordering::Relaxed);
                if current == pos {
                    // Impossible in a well-formed ring (see try_send): the segment was
                    // written over. Report rather than spin forever.
                    if recorded {
                        // Release: see try_send.
                        record.dequeue_claim.store(CLAIM_NONE, Ordering::Release);
                    }
                    return Err(TryRecvError::Empty);
                }
                pos = current;
            }
        }
    }

    /// Dequeues the next message into `buffer` and returns its length. `buffer`
    /// must hold the maximum message size, so nothing is consumed that cannot fit.
    pub fn try_recv_into(&self, buffer: &mut [u8]) -> Result<usize, TryRecvError> {
        if (buffer.len() as u64) < self.max_message_size {
            return Err(TryRecvError::BufferTooSmall {
                len: buffer.len(),
                max: self.max_message_size,
            });
        }
        self.try_recv_with(|bytes| {
            crate::copy::copy_prefix(buffer, bytes);
            bytes.len()
        })
    }

    /// Reads the slot this participant (or a sweeper) owns at `pos`, then releases it.
    #[inline(always)]
    fn take_claimed<R, F: FnOnce(&[u8]) -> R>(
        &self,
        index: u64,
        pos: u64,
        slot: &SlotHeader,
        f: F,
    ) -> Taken<R, F> {
        // Relaxed: ordered by the Acquire load of the sequence that let us claim.
        let len = slot.len.load(Ordering::Relaxed);
        let guard = ReleaseOnDrop {
            ring: self,
            slot,
            pos,
        };
        if len == SKIP_LEN {
            drop(guard);
            return Taken::Skipped(f);
        }
        if u64::from(len) > self.max_message_size {
            drop(guard);
            return Taken::Corrupt(self.corrupt_length(pos, len));
        }
        // SAFETY: we own the slot at `pos` (claimed by CAS, or as the only sweeper
        // with its owner dead) and `len` was bounds-checked against the maximum.
        let result = unsafe { self.memory.read_payload(index, len as usize, f) };
        drop(guard);
        Taken::Message(result)
    }

    /// Counts and describes a slot whose length exceeds the maximum (out of line: a
    /// hostile or damaged segment, never the hot path).
    #[cold]
    #[inline(never)]
    fn corrupt_length(&self, pos: u64, len: u32) -> TryRecvError {
        // Relaxed: a statistic.
        self.memory
            .shared()
            .stats
            .corrupt
            .fetch_add(1, Ordering::Relaxed);
        TryRecvError::Corrupt {
            position: pos,
            len,
            max: self.max_message_size,
        }
    }

    /// Gives the slot at `pos` back to producers (one lap later).
    fn release_slot(&self, slot: &SlotHeader, pos: u64) {
        // Release: pairs with the next lap's producer's Acquire load of the sequence,
        // so our payload reads happen before its writes.
        slot.sequence
            .store(pos_add(pos, self.capacity), Ordering::Release);
        self.wake_if_waiting(&self.memory.shared().not_full);
    }

    fn wake_if_waiting(&self, word: &WaitWord) {
        // SeqCst: totally ordered with the waiter's SeqCst increment and its SeqCst
        // cursor load (module docs): we see it, or it sees our claim.
        if word.waiters.load(Ordering::SeqCst) != 0 {
            // SeqCst (a release): a waiter that reads this epoch sees our publish.
            word.epoch.fetch_add(1, Ordering::SeqCst);
            self.platform.wake_all(&word.epoch);
        }
    }

    fn count_operation(&self) {
        let ops = &self.record().operations;
        // Relaxed: informational; only this participant writes it.
        ops.store(
            ops.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Whether a wait in `direction` would sleep now (see [`Readiness`]).
    pub fn readiness(&self, direction: Direction) -> Readiness {
        let shared = self.memory.shared();
        match direction {
            Direction::NotEmpty => {
                // SeqCst: see the module docs; this load must see a producer's claim
                // that precedes our waiter registration in the total order.
                let head = shared.dequeue_pos.value.load(Ordering::SeqCst);
                let (_, slot) = self.slot_at(head);
                // Acquire: pairs with the publish, as in try_recv.
                let sequence = slot.sequence.load(Ordering::Acquire);
                if pos_diff(sequence, pos_add(head, 1)) >= 0 {
                    return Readiness::Ready;
                }
                // SeqCst: the load the wake-up argument rests on.
                let tail = shared.enqueue_pos.value.load(Ordering::SeqCst);
                if tail == head {
                    Readiness::Idle
                } else {
                    Readiness::Pending
                }
            }
            Direction::NotFull => {
                // SeqCst: mirror of the above.
                let tail = shared.enqueue_pos.value.load(Ordering::SeqCst);
                let (_, slot) = self.slot_at(tail);
                // Acquire: pairs with the release, as in try_send.
                let sequence = slot.sequence.load(Ordering::Acquire);
                if pos_diff(sequence, tail) >= 0 {
                    return Readiness::Ready;
                }
                // SeqCst: the load the wake-up argument rests on.
                let head = shared.dequeue_pos.value.load(Ordering::SeqCst);
                let needed = tail.wrapping_sub(self.capacity) & POS_MASK;
                if pos_diff(head, needed) > 0 {
                    Readiness::Pending
                } else {
                    Readiness::Idle
                }
            }
        }
    }

    /// Registers as a waiter in `direction`, re-checks, and sleeps on the futex word
    /// if (and only if) nothing is in flight, for at most `timeout` (`None`: until
    /// woken). Returns the readiness seen just before deciding.
    pub fn park(&self, direction: Direction, timeout: Option<Duration>) -> Readiness {
        self.park_inner(direction, timeout, false)
    }

    /// Like [`park`](Self::park), but also sleeps when the other side's claim is
    /// pending: for a producer whose slot is held by a dead consumer, which only a
    /// consumer's sweep can release (and that sweep wakes us).
    pub fn park_forced(&self, direction: Direction, timeout: Option<Duration>) -> Readiness {
        self.park_inner(direction, timeout, true)
    }

    fn park_inner(
        &self,
        direction: Direction,
        timeout: Option<Duration>,
        force: bool,
    ) -> Readiness {
        let shared = self.memory.shared();
        let (word, bit) = match direction {
            Direction::NotEmpty => (&shared.not_empty, waiting::NOT_EMPTY),
            Direction::NotFull => (&shared.not_full, waiting::NOT_FULL),
        };
        let record = self.record();
        // SeqCst: the registration a waker's SeqCst load of `waiters` must see or be
        // seen by (module docs).
        word.waiters.fetch_add(1, Ordering::SeqCst);
        // Relaxed: read only by a sweeper after we are dead. Set after the increment,
        // so a death in between leaks a count (a spare wake-up), never the reverse.
        record.waiting.fetch_or(bit, Ordering::Relaxed);
        // SeqCst (an acquire): if we read a waker's bump, its publish is visible to
        // the readiness check below.
        let epoch = word.epoch.load(Ordering::SeqCst);
        let readiness = self.readiness(direction);
        if readiness == Readiness::Idle || (force && readiness == Readiness::Pending) {
            self.platform.wait(&word.epoch, epoch, timeout);
        }
        // Relaxed: as above; cleared before the decrement for the same reason.
        record.waiting.fetch_and(!bit, Ordering::Relaxed);
        // SeqCst: a waker's SeqCst load that reads this decrement is thereby ordered
        // before our next SeqCst increment (C++20 coherence-ordered-before), which
        // the wake-up argument needs when we park again. Loom does not derive that
        // from a Relaxed write, and on x86 this is the same locked instruction.
        word.waiters.fetch_sub(1, Ordering::SeqCst);
        readiness
    }

    fn enqueue_outstanding(&self, pos: u64) -> bool {
        if pos == CLAIM_NONE {
            return false;
        }
        let shared = self.memory.shared();
        // SeqCst (an acquire): pairs with the claimer's CAS, so its record is visible.
        let tail = shared.enqueue_pos.value.load(Ordering::SeqCst);
        // Acquire: pairs with the publish, as in try_recv.
        pos_diff(tail, pos) > 0 && self.slot_at(pos).1.sequence.load(Ordering::Acquire) == pos
    }

    fn dequeue_outstanding(&self, pos: u64) -> bool {
        if pos == CLAIM_NONE {
            return false;
        }
        let shared = self.memory.shared();
        // SeqCst (an acquire): pairs with the claimer's CAS.
        let head = shared.dequeue_pos.value.load(Ordering::SeqCst);
        // Acquire: pairs with the publish; we may read the payload after this.
        pos_diff(head, pos) > 0
            && self.slot_at(pos).1.sequence.load(Ordering::Acquire) == pos_add(pos, 1)
    }

    /// Whether a live participant other than us has `pos` in its claim word of the
    /// given kind.
    fn live_holder(&self, enqueue: bool, pos: u64) -> bool {
        (0..self.memory.geometry().max_participants).any(|index| {
            if index == self.me {
                return false;
            }
            let record = self.memory.participant(index);
            // Acquire: pairs with the Release claim stores (module docs).
            let claim = if enqueue {
                record.enqueue_claim.load(Ordering::Acquire)
            } else {
                record.dequeue_claim.load(Ordering::Acquire)
            };
            // Acquire: pairs with registration's state CAS.
            claim == pos
                && record.state.load(Ordering::Acquire) == participant::ACTIVE
                && self.platform.is_alive(index)
        })
    }

    /// Whether any other participant's claim is outstanding (claimed and not yet
    /// finished): a mid-operation peer, or a dead one a sweep must repair. Loads
    /// only, no system call; waiters use it to decide how long to sleep.
    pub fn outstanding_claims(&self) -> bool {
        (0..self.memory.geometry().max_participants).any(|index| {
            let record = self.memory.participant(index);
            // Acquire: pairs with registration and the Release claim stores.
            index != self.me
                && record.state.load(Ordering::Acquire) == participant::ACTIVE
                && (self.enqueue_outstanding(record.enqueue_claim.load(Ordering::Acquire))
                    || self.dequeue_outstanding(record.dequeue_claim.load(Ordering::Acquire)))
        })
    }

    /// Finds dead participants and repairs what they left: a dead producer's claimed
    /// slot is published as a skip; a dead consumer's unreleased message is passed to
    /// `deliver` (if given) and released; dead records with nothing outstanding are
    /// freed when `housekeeping` is set (that asks the platform about every active
    /// record, so it is for occasional use). Safe to run from any number of
    /// participants at once: one holds the recovery lock, the others return `busy`.
    pub fn sweep<R>(
        &self,
        housekeeping: bool,
        deliver: Option<impl FnOnce(&[u8]) -> R>,
    ) -> Sweep<R> {
        let mut outcome = Sweep::default();
        if !housekeeping && !self.outstanding_claims() {
            // Nothing to repair: skip the lock and its system calls.
            return outcome;
        }
        let Some(guard) = self.platform.try_lock_recovery() else {
            outcome.busy = true;
            return outcome;
        };
        let shared = self.memory.shared();
        let mut taken_over = None;
        for index in 0..self.memory.geometry().max_participants {
            if index == self.me {
                continue;
            }
            let record = self.memory.participant(index);
            // Acquire: pairs with registration, so the claims are the owner's.
            if record.state.load(Ordering::Acquire) != participant::ACTIVE {
                continue;
            }
            // Acquire: pairs with the Release claim stores.
            let enqueue_claim = record.enqueue_claim.load(Ordering::Acquire);
            let dequeue_claim = record.dequeue_claim.load(Ordering::Acquire);
            let enqueue_stuck = self.enqueue_outstanding(enqueue_claim);
            let dequeue_stuck = self.dequeue_outstanding(dequeue_claim);
            if !(enqueue_stuck || dequeue_stuck || housekeeping) {
                continue;
            }
            if self.platform.is_alive(index) {
                continue;
            }
            if enqueue_stuck && !self.live_holder(true, enqueue_claim) {
                let (_, slot) = self.slot_at(enqueue_claim);
                // Relaxed: published by the Release CAS below. Nobody else writes
                // this slot: its claimer is dead and other sweepers are locked out.
                slot.len.store(SKIP_LEN, Ordering::Relaxed);
                // Release: pairs with the consumer's Acquire load of the sequence, so
                // it reads SKIP_LEN. A CAS, not a store, as a second line of defence.
                if slot
                    .sequence
                    .compare_exchange(
                        enqueue_claim,
                        pos_add(enqueue_claim, 1),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    outcome.skipped += 1;
                    // Relaxed: a statistic.
                    shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    self.wake_if_waiting(&shared.not_empty);
                }
            }
            if dequeue_stuck && !self.live_holder(false, dequeue_claim) {
                if deliver.is_none() || taken_over.is_some() {
                    outcome.dead_consumer_pending = true;
                    continue;
                }
                // Take the claim over: once our record names it, we are its live
                // holder, so the dead record can go and the lock can be dropped
                // before the (user's, possibly slow) delivery closure runs. If we
                // die before releasing, our dead record leads the next sweeper to
                // it. Release: pairs with other sweepers' Acquire record scans.
                self.record()
                    .dequeue_claim
                    .store(dequeue_claim, Ordering::Release);
                // Release: as above; the dead record no longer names the claim.
                record.dequeue_claim.store(CLAIM_NONE, Ordering::Release);
                taken_over = Some(dequeue_claim);
            }
            // Acquire: pairs with the Release just above if we took the claim over.
            let dequeue_claim = record.dequeue_claim.load(Ordering::Acquire);
            if !self.enqueue_outstanding(enqueue_claim) && !self.dequeue_outstanding(dequeue_claim)
            {
                self.free_record(record);
                outcome.freed += 1;
            }
        }
        drop(guard);
        if let (Some(pos), Some(f)) = (taken_over, deliver) {
            let (index, slot) = self.slot_at(pos);
            outcome.redelivered = Some(match self.take_claimed(index, pos, slot, f) {
                Taken::Message(r) => Ok(r),
                Taken::Corrupt(e) => Err(e),
                Taken::Skipped(_) => Err(TryRecvError::Empty),
            });
            // Relaxed: a statistic.
            shared.stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Returns a dead participant's record to the free list.
    fn free_record(&self, record: &ParticipantRecord) {
        let shared = self.memory.shared();
        // Relaxed: the owner is dead; nothing races on its record but registrants,
        // which wait for the Release below.
        let counted = record.waiting.swap(0, Ordering::Relaxed);
        if counted & waiting::NOT_EMPTY != 0 {
            // Relaxed: returning a leaked count can only remove a spare wake-up.
            shared.not_empty.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        if counted & waiting::NOT_FULL != 0 {
            // Relaxed: as above.
            shared.not_full.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        // Relaxed: published by the Release below.
        record.enqueue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        record.dequeue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        // Release: pairs with a registrant's Acquire CAS, which then sees the resets.
        record.state.store(participant::FREE, Ordering::Release);
        // Relaxed: a statistic.
        shared.stats.freed.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives this participant's record back (the handle is going away). The caller
    /// then drops the platform's liveness lock.
    pub fn unregister(&self) {
        let record = self.record();
        // Relaxed: published by the Release below.
        record.enqueue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        record.dequeue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        record.waiting.store(0, Ordering::Relaxed);
        // Release: pairs with the next registrant's Acquire CAS.
        record.state.store(participant::FREE, Ordering::Release);
    }

    /// Test hook for the crash models: claims the next position as a producer and
    /// returns without publishing, exactly as a process killed right after its claim
    /// would leave it. Returns the position claimed.
    #[doc(hidden)]
    pub fn claim_send_and_abandon(&self) -> Option<u64> {
        let shared = self.memory.shared();
        // Relaxed / Acquire / Release / SeqCst: exactly as in try_send.
        let pos = shared.enqueue_pos.value.load(Ordering::Relaxed);
        let sequence = self.slot_at(pos).1.sequence.load(Ordering::Acquire);
        if sequence != pos {
            return None;
        }
        self.record().enqueue_claim.store(pos, Ordering::Release);
        shared
            .enqueue_pos
            .value
            .compare_exchange(pos, pos_add(pos, 1), Ordering::SeqCst, Ordering::Relaxed)
            .ok()
    }

    /// Test hook for the crash models: claims the next message as a consumer and
    /// returns without releasing it, as a consumer killed mid-read would.
    #[doc(hidden)]
    pub fn claim_recv_and_abandon(&self) -> Option<u64> {
        let shared = self.memory.shared();
        // Orderings exactly as in try_recv_with.
        let pos = shared.dequeue_pos.value.load(Ordering::Relaxed);
        let sequence = self.slot_at(pos).1.sequence.load(Ordering::Acquire);
        if sequence != pos_add(pos, 1) {
            return None;
        }
        self.record().dequeue_claim.store(pos, Ordering::Release);
        shared
            .dequeue_pos
            .value
            .compare_exchange(pos, pos_add(pos, 1), Ordering::SeqCst, Ordering::Relaxed)
            .ok()
    }
}

enum Taken<R, F> {
    Message(R),
    Corrupt(TryRecvError),
    /// The slot was a skip; the closure comes back unused.
    Skipped(F),
}

/// Releases a claimed slot when dropped, so a panicking zero-copy closure cannot
/// wedge the ring.
struct ReleaseOnDrop<'a, M: RingMemory, P: Platform> {
    ring: &'a Ring<M, P>,
    slot: &'a SlotHeader,
    pos: u64,
}

impl<M: RingMemory, P: Platform> Drop for ReleaseOnDrop<'_, M, P> {
    fn drop(&mut self) {
        self.ring.release_slot(self.slot, self.pos);
    }
}
