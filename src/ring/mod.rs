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
    participant, pos_add, pos_diff, ParticipantRecord, RingShared, SlotHeader, CLAIM_NONE, MAX_RUN,
    SKIP_LEN,
};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

mod batch;
mod recovery;
mod wake;

// Each of these is used by one build only (normal: the handle and admin; loom: the
// models).
#[allow(unused_imports)]
pub use recovery::{claim_outstanding, run_outstanding, Redelivery, Scope, Sweep};
#[allow(unused_imports)]
pub use wake::{epoch_word, Registration};
pub use wake::{Direction, Pending, Readiness};

/// Where the ring's shared state and slots live.
///
/// # Safety
/// Implementors guarantee that `slot(i)` and `participant(i)` return references to
/// distinct, properly initialised objects for every `i` below capacity / participant
/// count, valid for the lifetime of `self`, and that the payload methods touch only
/// slot `index`'s payload bytes (at most `max_message_size` of them).
pub unsafe trait RingMemory {
    /// The validated geometry (read once; never re-read from shared memory).
    fn geometry(&self) -> &crate::layout::Geometry;
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
    /// Lends the first `len` payload bytes of slot `index` to `f` for writing in
    /// place (their prior contents are whatever the slot held).
    ///
    /// # Safety
    /// As for [`RingMemory::write_payload`], with `len` for the length.
    unsafe fn fill_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;
    /// Lends the first `len` payload bytes of slot `index` to `f`.
    ///
    /// # Safety
    /// The caller holds the consumer claim on the slot (or owns it as the recovery
    /// sweeper) and `len` is at most the maximum message size.
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

// SAFETY: forwards to `T`, which upholds the contract; `Arc` keeps it alive.
unsafe impl<T: RingMemory> RingMemory for std::sync::Arc<T> {
    fn geometry(&self) -> &crate::layout::Geometry {
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
    unsafe fn fill_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: same contract, passed through.
        unsafe { (**self).fill_payload(index, len, f) }
    }
}

/// What the algorithm needs from the operating system (or from a model of it).
///
/// # Ordering contract
/// The locks are memory edges too, and the ring relies on them instead of fences or
/// stronger orderings of its own: `try_own` returning `Some`, `is_alive` returning
/// `false` and `try_lock_recovery` returning `Some` are *acquire* operations that
/// synchronise with the last release of the same lock, whether its holder released
/// it by dropping its [`Liveness`](Platform::Liveness) or
/// [`RecoveryGuard`](Platform::RecoveryGuard), or the kernel did when the holder
/// died. Everything the holder did before that release happens before everything
/// the caller does after the call. The ring takes from this (`recovery.rs` names
/// each use): a sweeper sees everything a participant it finds dead did, its last
/// claims and the payload of a message it held; a registrant sees a record reset by
/// whoever freed it, who held the record's lock while freeing it; a sweeper sees
/// every repair the sweepers before it made.
///
/// The shared-memory platform (`src/shm.rs`) meets it with Linux open file
/// description locks (`fcntl` `F_OFD_SETLK` / `F_OFD_GETLK`, `src/platform.rs`). The
/// kernel keeps a file's record locks in a list under a spinlock (`flc_lock`), which
/// taking, dropping and querying a lock all hold, as does removing a file
/// description's locks at its last close (when a process dies, after its threads
/// have stopped). A release is thus a spin_unlock after everything its process did,
/// and a lock taken, or a query finding the byte free, holds the spinlock after it:
/// a release/acquire pair in the kernel's memory model, and program order carries
/// the acquire across the system call to the caller's loads. One exception:
/// `F_OFD_GETLK` answers "free" without the spinlock when the file has no record
/// lock at all; the ring calls `is_alive` only in a sweep, holding the recovery lock
/// on the same file, so never then. The loom platform (`loom-tests/src/lib.rs`)
/// gives the same edges with Acquire and Release atomics.
pub trait Platform {
    /// Proof that this process is the live owner of one participant record; the
    /// record's liveness lock is released when it is dropped (and by the kernel when
    /// the process dies): a release (see the ordering contract).
    type Liveness;
    /// Held while a sweep repairs; dropping it releases the recovery lock (a
    /// release, as is the kernel's release of it when the holder dies).
    type RecoveryGuard<'a>
    where
        Self: 'a;
    /// Tries, without blocking, to become the only live owner of record `index`.
    /// Success is an acquire of the record's liveness lock.
    fn try_own(&self, index: u64) -> Option<Self::Liveness>;
    /// Whether the participant registered at `index` is alive. Must never report a
    /// live participant dead; may report a free record as dead. `false` is an
    /// acquire of the record's liveness lock.
    fn is_alive(&self, index: u64) -> bool;
    /// Tries, without blocking, to become the one sweeper allowed to repair.
    /// Success is an acquire of the recovery lock.
    fn try_lock_recovery(&self) -> Option<Self::RecoveryGuard<'_>>;
    /// Sleeps while `word` holds `expected`, until woken or `timeout` passes
    /// (spurious returns allowed).
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes every sleeper on `word`.
    fn wake_all(&self, word: &AtomicU32);
}

/// Writes the algorithm's initial state into fresh, zero-filled memory: both cursors
/// at the initial position, the slot for position `p` with sequence `p` (Vyukov's
/// initialisation), every participant record free with no claim. Relaxed stores:
/// the caller publishes them (the segment's READY store, or handing the heap memory
/// to other threads).
pub fn initialise<M: RingMemory>(memory: &M) {
    let geometry = *memory.geometry();
    let shared = memory.shared();
    let start = geometry.initial_position;
    // Relaxed: published by the caller (above).
    shared.enqueue_pos.value.store(start, Ordering::Relaxed);
    shared.dequeue_pos.value.store(start, Ordering::Relaxed);
    for k in 0..geometry.capacity {
        let pos = pos_add(start, k);
        // Relaxed: as above.
        memory
            .slot(pos & geometry.mask())
            .sequence
            .store(pos, Ordering::Relaxed);
    }
    for index in 0..geometry.max_participants {
        let record = memory.participant(index);
        // Relaxed: as above.
        record.state.store(participant::FREE, Ordering::Relaxed);
        record.enqueue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        record.dequeue_claim.store(CLAIM_NONE, Ordering::Relaxed);
    }
}

/// Which end of the ring a claim is on: producers claim at the enqueue cursor,
/// consumers at the dequeue cursor. The claim step is one piece of code for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// A producer's claim of a free slot.
    Enqueue,
    /// A consumer's claim of a published message.
    Dequeue,
}

impl End {
    /// How far ahead of a position its slot's sequence is when the slot is ready for
    /// this end: `p` is free for the producer of `p`, `p + 1` published for its
    /// consumer.
    #[inline(always)]
    fn ready_offset(self) -> u64 {
        match self {
            End::Enqueue => 0,
            End::Dequeue => 1,
        }
    }

    #[inline(always)]
    fn cursor(self, shared: &RingShared) -> &AtomicU64 {
        match self {
            End::Enqueue => &shared.enqueue_pos.value,
            End::Dequeue => &shared.dequeue_pos.value,
        }
    }

    #[inline(always)]
    fn claim_word(self, record: &ParticipantRecord) -> &AtomicU64 {
        match self {
            End::Enqueue => &record.enqueue_claim,
            End::Dequeue => &record.dequeue_claim,
        }
    }

    #[inline(always)]
    fn run_word(self, record: &ParticipantRecord) -> &AtomicU32 {
        match self {
            End::Enqueue => &record.enqueue_run,
            End::Dequeue => &record.dequeue_run,
        }
    }
}

/// How many positions from `claim` a record's claim covers: its run word, read from
/// shared memory, so clamped to 1..=[`MAX_RUN`].
#[inline(always)]
pub(crate) fn run_length(run: u32) -> u32 {
    run.clamp(1, MAX_RUN)
}

/// Why a receive lent no message to its reader.
#[derive(Debug)]
pub enum Unread<F> {
    /// Nothing to receive: the reader comes back unused.
    Empty(F),
    /// The message at the head was dropped (a corrupt length); the error says why.
    Failed(TryRecvError),
}

/// Why a send did not run its writer.
#[derive(Debug)]
pub enum Unsent<F> {
    /// No free slot: the writer comes back unused.
    Full(F),
    /// The message cannot be sent at all; the error says why.
    Failed(TrySendError),
}

/// Publishes a slot claimed for a send in place when dropped: as a message of `len`
/// bytes once the writer returned, or as a skip if it unwound (consumers step over
/// it, as over a dead producer's slot).
struct Publishing<'a, M: RingMemory, P: Platform> {
    ring: &'a Ring<M, P>,
    slot: &'a SlotHeader,
    pos: u64,
    len: u32,
}

impl<M: RingMemory, P: Platform> Drop for Publishing<'_, M, P> {
    #[inline(always)]
    fn drop(&mut self) {
        self.ring.publish(self.slot, self.pos, self.len);
    }
}

/// Stores a slot's length, resets its return count and publishes it (the
/// Release store of its sequence).
#[inline(always)]
fn publish_slot(slot: &SlotHeader, pos: u64, len: u32) {
    // Relaxed: made visible by the Release publish just below.
    slot.len.store(len, Ordering::Relaxed);
    // Relaxed: as above. A new message has not been given back yet.
    slot.returns.store(0, Ordering::Relaxed);
    // Release: publishes payload and length; pairs with the consumer's Acquire load
    // of the sequence in `claim`.
    slot.sequence.store(pos_add(pos, 1), Ordering::Release);
}

/// A position this participant claimed with the cursor CAS and has not finished.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Claimed<'a> {
    pos: u64,
    index: u64,
    slot: &'a SlotHeader,
}

/// A registered participant's view of the ring: send, receive, wait and repair.
///
/// `Send` (it can move to another thread) but not `Sync`: its participant record is
/// written without synchronisation by whichever thread uses it. Give each thread its
/// own handle. Dropping a registered ring gives its record back, then releases its
/// liveness (in that order, so a sweeper never frees a record a live owner uses).
pub struct Ring<M: RingMemory, P: Platform> {
    memory: M,
    platform: P,
    /// This participant's record index (`u64::MAX` for an observer).
    me: u64,
    /// The liveness lock on record `me` (`None` for an observer, or once dead).
    liveness: Option<P::Liveness>,
    mask: u64,
    capacity: u64,
    max_message_size: u64,
    _not_sync: PhantomData<Cell<()>>,
}

impl<M: RingMemory, P: Platform> Ring<M, P> {
    /// Registers a new participant: claims a free record whose liveness this process
    /// can own. `None` if every record is taken (or held by a dead owner that a sweep
    /// has not freed yet: see [`Ring::observer`]).
    pub fn register(memory: M, platform: P, pid: u64, start_time: u64) -> Option<Self> {
        let (me, liveness) = recovery::register(&memory, &platform, pid, start_time)?;
        let mut ring = Self::observer(memory, platform);
        ring.me = me;
        ring.liveness = Some(liveness);
        Some(ring)
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
            liveness: None,
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

    /// Positions producers have claimed and consumers have not, clamped to
    /// `0..=capacity`: messages waiting plus sends under way. A snapshot, stale as
    /// soon as it is read.
    pub fn occupancy(&self) -> u64 {
        let shared = self.memory.shared();
        // Relaxed, both: a snapshot that nothing is read on the strength of. The head
        // is read first: both cursors only move forward, so a stale head can only
        // make the answer larger, and the clamp bounds it.
        let head = shared.dequeue_pos.value.load(Ordering::Relaxed);
        let tail = shared.enqueue_pos.value.load(Ordering::Relaxed);
        pos_diff(tail, head).clamp(0, self.capacity as i64) as u64
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    fn record(&self) -> &ParticipantRecord {
        self.memory.participant(self.me)
    }

    #[inline(always)]
    fn slot_at(&self, pos: u64) -> (u64, &SlotHeader) {
        let index = pos & self.mask;
        debug_assert!(index < self.capacity);
        (index, self.memory.slot(index))
    }

    /// The claim step, for producers and consumers alike: finds the slot at the
    /// `end`'s cursor ready for it, records the position in this participant's claim
    /// word, and takes it with a CAS on the cursor. `None` when the ring is full
    /// (`Enqueue`) or empty (`Dequeue`). Never blocks.
    #[inline(always)]
    pub(crate) fn claim(&self, end: End) -> Option<Claimed<'_>> {
        let (pos, _) = self.claim_run(end, 1)?;
        let (index, slot) = self.slot_at(pos);
        Some(Claimed { pos, index, slot })
    }

    /// The claim step for a run: like [`Ring::claim`], but takes up to `max`
    /// consecutive ready positions (slots free for a producer, published for a
    /// consumer) with one CAS, recording the run's length before its first position.
    /// Returns the first position and the count (at least 1).
    #[inline(always)]
    pub(crate) fn claim_run(&self, end: End, max: u32) -> Option<(u64, u32)> {
        let cursor = end.cursor(self.memory.shared());
        let record = self.record();
        let claim_word = end.claim_word(record);
        let max = max.clamp(
            1,
            MAX_RUN.min(self.capacity.min(u64::from(u32::MAX)) as u32),
        );
        let mut recorded = false;
        // Relaxed: only a starting guess; the slot's sequence decides.
        let mut pos = cursor.load(Ordering::Relaxed);
        loop {
            let (_, slot) = self.slot_at(pos);
            // Acquire: pairs with the Release that made the slot ready for us: for a
            // producer, the consumer's release one lap earlier (its reads of the old
            // payload happen before our overwrite); for a consumer, the producer's
            // publish or the sweeper's skip CAS (payload and length become visible).
            let sequence = slot.sequence.load(Ordering::Acquire);
            let lag = pos_diff(sequence, pos_add(pos, end.ready_offset()));
            if lag == 0 {
                let count = self.ready_run(end, pos, max);
                self.record_run(end, record, count);
                // Release: a sweeper that reads a *later* value of this record must
                // also see our previous claim completed (module docs). The claim CAS
                // below publishes this store to anyone who sees the cursor move.
                claim_word.store(pos, Ordering::Release);
                recorded = true;
                // SeqCst: the claim is the anchor of the wake-up protocol (a waiter's
                // SeqCst load of this cursor sees it, or we see the waiter) and a
                // release for the record store above. Failure: Relaxed, we only take
                // the fresher position.
                match cursor.compare_exchange(
                    pos,
                    pos_add(pos, u64::from(count)),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((pos, count)),
                    Err(current) => pos = current,
                }
            } else if lag < 0 {
                // Not ready: a producer finds last lap's message (full), a consumer
                // an unpublished slot (empty).
                break;
            } else {
                // Another participant took `pos` already; catch up.
                // Relaxed: as above.
                let current = cursor.load(Ordering::Relaxed);
                if current == pos {
                    // Impossible in a well-formed ring: the Acquire above saw a store
                    // made after the cursor moved past `pos`, so coherence forbids
                    // reading `pos` again. The segment was written over; report
                    // rather than spin forever in a non-blocking call.
                    break;
                }
                pos = current;
            }
        }
        if recorded {
            // Release: as above. We hold no claim; say so, so a sweeper never takes
            // a stale attempt of ours for a live holder.
            claim_word.store(CLAIM_NONE, Ordering::Release);
        }
        None
    }

    /// How many positions from `pos` (ready itself) are ready for `end`, up to `max`.
    #[inline(always)]
    fn ready_run(&self, end: End, pos: u64, max: u32) -> u32 {
        let mut count = 1;
        while count < max {
            let next = pos_add(pos, u64::from(count));
            let (_, slot) = self.slot_at(next);
            // Acquire: as the claim step's load of the first slot, for each further
            // slot of the run (its payload, or its last reader's release).
            if slot.sequence.load(Ordering::Acquire) != pos_add(next, end.ready_offset()) {
                break;
            }
            count += 1;
        }
        count
    }

    /// Records the length of the run about to be claimed, if it differs from the
    /// last one (single claims store nothing).
    #[inline(always)]
    fn record_run(&self, end: End, record: &ParticipantRecord, count: u32) {
        let run_word = end.run_word(record);
        // Relaxed: only this participant writes its run word.
        if run_length(run_word.load(Ordering::Relaxed)) != count {
            // Release: pairs with a sweeper's Acquire load of the run in
            // `live_holder`: one that reads this value while reading our *previous*
            // claim word must also see that claim finished (its `orphaned` re-check
            // then shows the positions done). The claim store after it publishes it
            // to readers of the new claim.
            run_word.store(count, Ordering::Release);
        }
    }

    /// Enqueues `message` if a slot is free. Never blocks, never makes a system call
    /// unless a consumer is asleep.
    #[inline]
    pub fn try_send(&self, message: &[u8]) -> Result<(), TrySendError> {
        if message.len() as u64 > self.max_message_size {
            return Err(TrySendError::TooLarge {
                len: message.len(),
                max: self.max_message_size,
            });
        }
        let Some(Claimed { pos, index, slot }) = self.claim(End::Enqueue) else {
            return Err(TrySendError::Full);
        };
        // SAFETY: the claim made us the only producer of `pos`, and its Acquire saw
        // the slot released by its last consumer, so nobody else touches this payload
        // until we publish; the length was checked against the maximum at the top.
        unsafe { self.memory.write_payload(index, message) };
        self.publish(slot, pos, message.len() as u32);
        Ok(())
    }

    /// Claims a free slot and lends `f` its first `len` payload bytes to write the
    /// message in place (no copy); publishes when `f` returns. If `f` unwinds, the
    /// slot is published as a skip, which consumers step over. `f` runs only if a
    /// slot was claimed; otherwise it comes back ([`Unsent`]).
    #[inline]
    pub fn try_send_with<R, F: FnOnce(&mut [u8]) -> R>(
        &self,
        len: usize,
        f: F,
    ) -> Result<R, Unsent<F>> {
        if len as u64 > self.max_message_size {
            return Err(Unsent::Failed(TrySendError::TooLarge {
                len,
                max: self.max_message_size,
            }));
        }
        let Some(Claimed { pos, index, slot }) = self.claim(End::Enqueue) else {
            return Err(Unsent::Full(f));
        };
        let mut publishing = Publishing {
            ring: self,
            slot,
            pos,
            len: SKIP_LEN,
        };
        // SAFETY: as in `try_send`: the claim made us the only producer of `pos`,
        // and `len` was checked against the maximum at the top.
        let written = unsafe { self.memory.fill_payload(index, len, f) };
        publishing.len = len as u32;
        drop(publishing);
        Ok(written)
    }

    /// Publishes the slot at `pos`, claimed by this producer, holding `len` bytes
    /// (or [`SKIP_LEN`]), and wakes a sleeping consumer.
    #[inline(always)]
    fn publish(&self, slot: &SlotHeader, pos: u64, len: u32) {
        publish_slot(slot, pos, len);
        self.count_operation();
        self.wake_if_waiting(&self.memory.shared().not_empty);
    }

    /// Dequeues the next message and returns it still in its slot, which is
    /// released when the [`Received`] is dropped (or handed back by
    /// [`Received::abandon`]). `Ok(None)` when empty; skips are stepped over as in
    /// [`Ring::try_recv_with`].
    pub fn try_recv_message(&self) -> Result<Option<Received<'_, M, P>>, TryRecvError> {
        for _ in 0..=self.capacity {
            let Some(claimed) = self.claim(End::Dequeue) else {
                return Ok(None);
            };
            self.count_operation();
            if let Some(message) = self.open_claimed(claimed)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Dequeues the next message and lends its bytes to `f` while they sit in the
    /// slot (zero copy); the slot is released when `f` returns or unwinds. When no
    /// message was taken, `f` comes back unused ([`Unread`]). Slots that dead
    /// producers left as skips are released and stepped over, at most one lap of
    /// them per call (then `Empty`: the caller retries).
    ///
    /// A closure rather than a returned guard, and always inlined: a guard handed
    /// back through memory cost the caller a store-forwarding stall on reading it
    /// (+30% on a one-thread send+receive in `cargo bench --bench queue`).
    #[inline(always)]
    pub fn try_recv_with<R, F: FnOnce(&[u8]) -> R>(&self, f: F) -> Result<R, Unread<F>> {
        for _ in 0..=self.capacity {
            let Some(claimed) = self.claim(End::Dequeue) else {
                return Err(Unread::Empty(f));
            };
            self.count_operation();
            match self.open_claimed(claimed) {
                Ok(Some(message)) => return Ok(message.read(f)),
                Ok(None) => continue,
                Err(e) => return Err(Unread::Failed(e)),
            }
        }
        Err(Unread::Empty(f))
    }

    /// Looks at a slot this participant (or a sweeper) holds a consumer claim on:
    /// a message is returned for reading; a skip or a corrupt length is released here.
    #[inline(always)]
    pub(crate) fn open_claimed<'a>(
        &'a self,
        claimed: Claimed<'a>,
    ) -> Result<Option<Received<'a, M, P>>, TryRecvError> {
        // Relaxed: ordered by the Acquire load of the sequence that let us claim.
        let len = claimed.slot.len.load(Ordering::Relaxed);
        let message = Received {
            ring: self,
            claimed,
            len: len as usize,
        };
        if len == SKIP_LEN {
            // A dead producer's hole: released by the drop.
            return Ok(None);
        }
        if u64::from(len) > self.max_message_size {
            drop(message);
            return Err(self.corrupt_length(claimed.pos, len));
        }
        Ok(Some(message))
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
    #[inline(always)]
    fn release_slot(&self, slot: &SlotHeader, pos: u64) {
        // Release: pairs with the next lap's producer's Acquire load of the sequence,
        // so our payload reads happen before its writes.
        slot.sequence
            .store(pos_add(pos, self.capacity), Ordering::Release);
        self.wake_if_waiting(&self.memory.shared().not_full);
    }

    #[inline(always)]
    fn count_operation(&self) {
        let ops = &self.record().operations;
        // Relaxed: informational; only this participant writes it.
        ops.store(
            ops.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

impl<M: RingMemory, P: Platform> Drop for Ring<M, P> {
    fn drop(&mut self) {
        if let Some(liveness) = self.liveness.take() {
            self.unregister();
            drop(liveness);
        }
    }
}

/// A message this participant holds the consumer claim on, still in its slot. The
/// slot goes back to producers when this is dropped, read or not (a panicking
/// reader cannot wedge the ring).
pub struct Received<'a, M: RingMemory, P: Platform> {
    ring: &'a Ring<M, P>,
    claimed: Claimed<'a>,
    /// Bounds-checked against the maximum message size.
    len: usize,
}

impl<M: RingMemory, P: Platform> Received<'_, M, P> {
    /// Lends the message bytes to `f`, then releases the slot.
    #[inline(always)]
    pub fn read<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        self.peek(f)
    }

    /// Lends the message bytes to `f`; the slot stays claimed.
    #[inline(always)]
    pub fn peek<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: we hold the consumer claim on the slot (claimed by CAS, or taken
        // over by the only sweeper from a dead holder) and `len` was bounds-checked
        // against the maximum in `open_claimed`.
        unsafe {
            self.ring
                .memory
                .read_payload(self.claimed.index, self.len, f)
        }
    }

    /// The message's position in the ring (modulo 2^63): the same for every
    /// delivery of the message, never reused by another message for the next 2^63
    /// sends.
    pub fn position(&self) -> u64 {
        self.claimed.pos
    }

    /// How many times this message was given back unfinished (a consumer died
    /// holding it, or abandoned it) before this delivery.
    pub fn returns(&self) -> u32 {
        // Relaxed: written before the publish our claim's Acquire saw, or by the
        // sweeper that took the message over (ourselves, or a dead one whose death
        // check ordered it).
        self.claimed.slot.returns.load(Ordering::Relaxed)
    }

    /// Gives the message back unfinished, for another delivery (see
    /// [`Ring::hand_back`]): the slot stays claimed, now by a record that a consumer
    /// sweep will find and take over. `Err(self)` (still held) if no participant
    /// record is free to carry it.
    pub fn abandon(self) -> Result<(), Self> {
        if self.ring.hand_back(self.claimed.pos) {
            std::mem::forget(self);
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl<M: RingMemory, P: Platform> Drop for Received<'_, M, P> {
    #[inline(always)]
    fn drop(&mut self) {
        self.ring.release_slot(self.claimed.slot, self.claimed.pos);
    }
}
