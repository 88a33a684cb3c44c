//! The broadcast algorithm (issue #14; design in `docs/broadcast.md`).
//!
//! This file is the algorithm, and knows nothing of processes: slots, records and
//! shared words come from a [`BroadcastMemory`], liveness, the recovery lock and
//! sleeping from the work queue's [`Platform`]. The shared-memory handles
//! (`handle.rs`) and the loom models (`loom-tests/tests/broadcast.rs`) run this same
//! code; its atomics come from [`crate::sync`].
//!
//! # Slots are sequence locks
//! A slot's stamp names the position it holds: `2p + 1` while the publisher of `p`
//! writes it, `2p` once published. A publisher stores the odd stamp, then a Release
//! fence, then the payload and the length, then the even stamp (Release). A
//! subscriber loads the stamp (Acquire), copies, issues an Acquire fence and loads
//! the stamp again: if any byte it copied came from a later writer, that writer's
//! fence makes its odd stamp visible to the second load, so the copy is known torn
//! (Boehm, "Can seqlocks get along with programming language memory models?").
//!
//! # Publishing
//! Positions are claimed with a CAS on `tail`, after seeing the slot's stamp say
//! the previous lap is published (so two publishers never write one slot at once)
//! and, in lossless mode, after the gate: every live subscriber's cursor past the
//! position the new message overwrites. Before the CAS, a publisher stores the
//! position in its record's claim word, so a sweep can prove a killed publisher's
//! slot orphaned and publish it as a skip (as the work queue does; `recovery.rs`).
//!
//! # Receiving
//! Each subscriber keeps its next position (its cursor) in its handle and in its
//! record. Published: read and advance. Older: empty. Newer: the slot was
//! overwritten, the subscriber lagged; it resumes at the oldest position that may
//! still be held and reports exactly how many positions it stepped over.

use std::cell::Cell;

use crate::layout::{
    participant, pos_add, pos_diff, role, BroadcastRecord, BroadcastShared, BroadcastSlot,
    Geometry, SlowSubscriber, WaitWord, CLAIM_NONE, MAX_RUN, POS_MASK, SKIP_LEN,
};
use crate::ring::{run_length, Platform};
use crate::sync::{fence, AtomicU64, Ordering};

use super::error::{TryPublishError, TryRecvError};

/// Where a broadcast segment's shared state, records and slots live.
///
/// # Safety
/// Implementors guarantee that `slot(i)` and `record(i)` return references to
/// distinct, initialised objects for every `i` below capacity / participant count,
/// valid for the lifetime of `self`, and that the payload methods touch only slot
/// `index`'s payload bytes (at most `max_message_size` of them).
pub unsafe trait BroadcastMemory {
    /// The validated geometry (read once; never re-read from shared memory).
    fn geometry(&self) -> &Geometry;
    /// Tail, wait words and counters.
    fn shared(&self) -> &BroadcastShared;
    /// Slot header at `index` (`index < capacity`).
    fn slot(&self, index: u64) -> &BroadcastSlot;
    /// Record at `index` (`index < max_participants`).
    fn record(&self, index: u64) -> &BroadcastRecord;
    /// Copies `bytes` into the payload of slot `index`.
    ///
    /// # Safety
    /// The caller holds the publisher claim on the slot and `bytes.len()` is at most
    /// the maximum message size.
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]);
    /// Lends the first `len` payload bytes of slot `index` to `write` to build a
    /// message in place, and returns what it returns. The bytes hold whatever the
    /// slot held before (an earlier message).
    ///
    /// # Safety
    /// As [`write_payload`](Self::write_payload): the caller holds the publisher
    /// claim on the slot and `len` is at most the maximum message size.
    unsafe fn write_payload_with<R>(
        &self,
        index: u64,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> R;
    /// Lends the first `len` payload bytes of slot `index` to `f`. They may change
    /// while `f` runs (a publisher overwriting the slot): the caller re-checks the
    /// stamp afterwards.
    ///
    /// # Safety
    /// `len` is at most the maximum message size.
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

// SAFETY: forwards to `T`, which upholds the contract; `Arc` keeps it alive.
unsafe impl<T: BroadcastMemory> BroadcastMemory for std::sync::Arc<T> {
    fn geometry(&self) -> &Geometry {
        (**self).geometry()
    }
    fn shared(&self) -> &BroadcastShared {
        (**self).shared()
    }
    fn slot(&self, index: u64) -> &BroadcastSlot {
        (**self).slot(index)
    }
    fn record(&self, index: u64) -> &BroadcastRecord {
        (**self).record(index)
    }
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        // SAFETY: same contract, passed through.
        unsafe { (**self).write_payload(index, bytes) }
    }
    unsafe fn write_payload_with<R>(
        &self,
        index: u64,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        // SAFETY: same contract, passed through.
        unsafe { (**self).write_payload_with(index, len, write) }
    }
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: same contract, passed through.
        unsafe { (**self).read_payload(index, len, f) }
    }
}

/// The stamp of a slot being written with position `pos` (odd).
#[inline(always)]
pub fn writing(pos: u64) -> u64 {
    (pos << 1) | 1
}

/// The stamp of a slot holding the published position `pos` (even).
#[inline(always)]
pub fn published(pos: u64) -> u64 {
    pos << 1
}

/// Where a slot's stamp stands relative to position `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stamp {
    /// It holds an earlier position (published or being written).
    Before,
    /// Its publisher is writing `pos`.
    Writing,
    /// `pos` is published.
    Published,
    /// It holds a later position: `pos` was overwritten.
    After,
}

#[inline(always)]
pub(super) fn compare_stamp(stamp: u64, pos: u64) -> Stamp {
    // The stamp's position is its top 63 bits: compare as wrapping positions.
    match pos_diff(stamp >> 1, pos) {
        d if d < 0 => Stamp::Before,
        0 if stamp & 1 == 1 => Stamp::Writing,
        0 => Stamp::Published,
        _ => Stamp::After,
    }
}

/// `pos - n` modulo 2^63.
#[inline(always)]
pub(super) fn pos_sub(pos: u64, n: u64) -> u64 {
    pos.wrapping_sub(n) & POS_MASK
}

/// Writes a broadcast segment's initial state into fresh, zero-filled memory: the
/// tail at the initial position, each slot stamped "published one lap before its
/// first position" (free for its first publisher, older than any cursor), every
/// record free. Relaxed stores: the caller publishes them (the segment's READY
/// store, or handing the heap memory to other threads).
pub fn initialise<M: BroadcastMemory>(memory: &M) {
    let geometry = *memory.geometry();
    let start = geometry.initial_position;
    // Relaxed: published by the caller (above).
    memory.shared().tail.value.store(start, Ordering::Relaxed);
    for k in 0..geometry.capacity {
        let pos = pos_add(start, k);
        // Relaxed: as above.
        memory.slot(pos & geometry.mask()).stamp.store(
            published(pos_sub(pos, geometry.capacity)),
            Ordering::Relaxed,
        );
    }
    for index in 0..geometry.max_participants {
        let record = memory.record(index);
        // Relaxed: as above.
        record.state.store(participant::FREE, Ordering::Relaxed);
        record.role.store(role::NONE, Ordering::Relaxed);
        record.claim.store(CLAIM_NONE, Ordering::Relaxed);
    }
}

/// Which side a handle is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Claims positions and writes messages.
    Publisher,
    /// Reads every message from the position it joined at.
    Subscriber,
}

/// Why a publisher could not claim a position now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Lossless mode: a live subscriber (or one not yet found dead) has not read the
    /// message the next one would overwrite.
    Subscriber,
    /// The publisher one lap back has not published the slot yet (it is slow, or
    /// dead: a sweep repairs that).
    Publisher,
}

/// One registered broadcast handle's view of the algorithm: a publisher or a
/// subscriber, owning one record (and its liveness) in the segment.
pub struct Broadcast<M: BroadcastMemory, P: Platform> {
    pub(super) memory: M,
    pub(super) platform: P,
    /// This handle's record index.
    pub(super) me: u64,
    pub(super) role: Role,
    pub(super) policy: SlowSubscriber,
    pub(super) capacity: u64,
    pub(super) mask: u64,
    pub(super) max_message_size: u64,
    /// Dropped (released) when the handle goes away; `None` once it has.
    pub(super) liveness: Option<P::Liveness>,
    /// A subscriber's next position (its record holds a copy for publishers).
    pub(super) cursor: Cell<u64>,
    /// A lossless publisher's lower bound on every live subscriber's cursor, from
    /// its last gate scan; never above the tail it read before that scan (see
    /// `docs/broadcast.md`, "Publishing").
    pub(super) gate_floor: Cell<u64>,
}

impl<M: BroadcastMemory, P: Platform> std::fmt::Debug for Broadcast<M, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast")
            .field("record", &self.me)
            .field("role", &self.role)
            .field("policy", &self.policy)
            .field("cursor", &self.cursor.get())
            .finish()
    }
}

impl<M: BroadcastMemory, P: Platform> Broadcast<M, P> {
    /// The record index this handle owns.
    #[cfg_attr(not(loom), allow(dead_code))] // for the loom models
    pub fn participant_index(&self) -> u64 {
        self.me
    }

    /// Publisher or subscriber.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What publishers do about slow subscribers.
    pub fn policy(&self) -> SlowSubscriber {
        self.policy
    }

    /// Messages the ring holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Largest message.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// The memory this handle runs on.
    #[cfg_attr(not(loom), allow(dead_code))] // for the loom models
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// A subscriber's next position.
    #[cfg_attr(not(loom), allow(dead_code))] // for the loom models
    pub fn cursor(&self) -> u64 {
        self.cursor.get()
    }

    #[inline(always)]
    pub(super) fn record(&self) -> &BroadcastRecord {
        self.memory.record(self.me)
    }

    #[inline(always)]
    pub(super) fn slot_at(&self, pos: u64) -> (u64, &BroadcastSlot) {
        let index = pos & self.mask;
        debug_assert!(index < self.capacity);
        (index, self.memory.slot(index))
    }

    #[inline(always)]
    fn tail(&self) -> &AtomicU64 {
        &self.memory.shared().tail.value
    }

    /// The claim step: finds the slot at the tail free of its previous lap's
    /// publisher (and, in lossless mode, passes the gate), records the position in
    /// this publisher's claim word and takes it with a CAS on the tail. Never
    /// blocks. With `max` above 1 it takes up to `max`
    /// consecutive positions from the tail (each slot's previous lap published
    /// and, lossless, each past the gate) with one CAS, recording the run's length
    /// before its first position, as the work queue's run claims do
    /// (`src/ring/mod.rs`). Returns the first position and the count (at least 1).
    /// A single claim (`max` 1) stores no run length unless the last run was longer.
    pub(crate) fn claim_run(&self, max: u32) -> Result<(u64, u32), Blocked> {
        let record = self.record();
        let max = max.clamp(
            1,
            MAX_RUN.min(self.capacity.min(u64::from(u32::MAX)) as u32),
        );
        let mut recorded = false;
        let blocked = loop {
            // SeqCst: the gate's argument (docs/broadcast.md): a subscriber joining
            // after our scan reads this tail or a later one as its first position.
            // No loom model fails without it (loom-tests/README.md): what breaks is
            // a joiner's SeqCst tail load returning a value older than the CAS whose
            // value we read here, and loom never lets a SeqCst load return a store
            // older than a SeqCst store that has already run.
            let pos = self.tail().load(Ordering::SeqCst);
            let (_, slot) = self.slot_at(pos);
            let previous = pos_sub(pos, self.capacity);
            // Acquire: pairs with the previous lap's publish (or skip) Release: its
            // payload writes happen before ours. No loom model fails without it
            // (loom-tests/README.md): what breaks is a previous-lap payload store
            // landing after ours (ours hoisted above this load), and loom runs each
            // thread's accesses in program order and orders the stores to one byte
            // by when they run.
            let stamp = slot.stamp.load(Ordering::Acquire);
            match compare_stamp(stamp, previous) {
                Stamp::Published => {}
                Stamp::Before | Stamp::Writing => break Blocked::Publisher,
                Stamp::After => {
                    // Another publisher took `pos` already; the tail has moved on
                    // (or the segment was written over: report rather than spin).
                    // Relaxed: only whether to look again; the loop reloads it.
                    if self.tail().load(Ordering::Relaxed) == pos {
                        break Blocked::Publisher;
                    }
                    continue;
                }
            }
            let mut count = self.free_run(pos, max);
            if self.policy == SlowSubscriber::Lossless {
                if !self.gate_open(pos, Freshness::Cached) {
                    break Blocked::Subscriber;
                }
                // Every live cursor is at least the floor, and a subscriber joining
                // later starts at a tail no lower than it (docs/broadcast.md): every
                // position below `floor + capacity` is past the gate.
                let room = pos_diff(pos_add(self.gate_floor.get(), self.capacity), pos);
                count = count.min(room.clamp(1, i64::from(max)) as u32);
            }
            self.record_run(record, count);
            // Release: a sweeper that reads a *later* value of this word must also
            // see this claim finished; the CAS below publishes the store to anyone
            // who sees the tail move (recovery.rs).
            record.claim.store(pos, Ordering::Release);
            recorded = true;
            // SeqCst: the anchor of the wake-up protocol (a subscriber's SeqCst tail
            // load sees it, or we see it waiting) and a release for the claim store.
            // Failure: Relaxed, we reload.
            if self
                .tail()
                .compare_exchange(
                    pos,
                    pos_add(pos, u64::from(count)),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok((pos, count));
            }
        };
        if recorded {
            // Release: as above. We hold no claim; say so, so a sweeper never takes
            // a stale attempt of ours for a live holder of a dead publisher's slot.
            // A sweeper that reads this value instead of our last taken claim must
            // see that claim published, and a Relaxed store after the Release one
            // would not carry it. No loom model fails without it
            // (loom-tests/README.md): reaching this store takes a lost CAS and then a
            // blocked claim, two live publishers besides the sweeping subscriber and
            // a dead record, beyond the branch limit.
            record.claim.store(CLAIM_NONE, Ordering::Release);
        }
        Err(blocked)
    }

    /// How many positions from `pos` (free itself) have their slot's previous lap
    /// published, up to `max`.
    fn free_run(&self, pos: u64, max: u32) -> u32 {
        let mut count = 1;
        while count < max {
            let next = pos_add(pos, u64::from(count));
            let (_, slot) = self.slot_at(next);
            // Acquire: as the claim step's load of the first slot, for each further
            // slot of the run (its previous lap's payload writes before ours).
            let stamp = slot.stamp.load(Ordering::Acquire);
            if compare_stamp(stamp, pos_sub(next, self.capacity)) != Stamp::Published {
                break;
            }
            count += 1;
        }
        count
    }

    /// Records the length of the run about to be claimed, if it differs from the
    /// last one (single claims after single claims store nothing).
    fn record_run(&self, record: &BroadcastRecord, count: u32) {
        // Relaxed: only this publisher writes its run word.
        if run_length(record.run.load(Ordering::Relaxed)) != count {
            // Release: pairs with a sweeper's Acquire load of the run in
            // `live_holder`: one that reads this value with our *previous* claim
            // word must also see that claim finished (its `orphaned` re-check then
            // shows the positions published). The claim store after it publishes it
            // to readers of the new claim.
            record.run.store(count, Ordering::Release);
        }
    }

    /// Lets `write` fill `len` bytes of the slot at `pos` (claimed by this publisher)
    /// in place, publishes it, then wakes sleeping subscribers. If `write` unwinds,
    /// the slot is published as a skip (subscribers step over it) and the unwinding
    /// goes on.
    pub(crate) fn write_with<R>(
        &self,
        pos: u64,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        self.fill_and_publish(pos, len, |memory, index| {
            // SAFETY: `fill_and_publish`'s caller holds the claim on `pos` and
            // checked `len` against the maximum.
            unsafe { memory.write_payload_with(index, len, write) }
        })
    }

    /// The publishing step every publish shares: the writing stamp, `fill` (which
    /// writes `len` payload bytes into slot `index` of the memory), the length, the
    /// published stamp, the wake-up. The caller holds the claim on `pos` and
    /// checked `len` against the maximum. If `fill` unwinds, the slot is published
    /// as a skip and the unwinding goes on.
    fn fill_and_publish<R>(&self, pos: u64, len: usize, fill: impl FnOnce(&M, u64) -> R) -> R {
        debug_assert!(len as u64 <= self.max_message_size);
        let (index, slot) = self.slot_at(pos);
        // Relaxed, then a Release fence: a subscriber that copies any byte written
        // below sees this odd stamp on its re-check (its Acquire fence pairs with
        // this fence): a torn copy is always detected.
        slot.stamp.store(writing(pos), Ordering::Relaxed);
        fence(Ordering::Release);
        let unwinding = SkipOnUnwind { core: self, pos };
        let result = fill(&self.memory, index);
        std::mem::forget(unwinding);
        // Relaxed: made visible by the Release publish below.
        slot.len.store(len as u32, Ordering::Relaxed);
        // Release: pairs with the subscriber's Acquire stamp load (payload, length).
        slot.stamp.store(published(pos), Ordering::Release);
        self.count_operation();
        self.wake_if_waiting(&self.memory.shared().not_empty);
        result
    }

    /// Claims a position for a message of `len` bytes if one can be claimed now.
    /// Never blocks. A lossless publisher held back by subscribers first reclaims
    /// gating subscribers that are dead (a lock query each) and tries once more;
    /// one behind an unpublished slot of the previous lap sweeps for a dead
    /// publisher and tries once more. The caller must then [`write_with`]
    /// (Self::write_with) the position at once.
    pub(crate) fn claim_for(&self, len: usize) -> Result<u64, TryPublishError> {
        debug_assert_eq!(self.role, Role::Publisher);
        if len as u64 > self.max_message_size {
            return Err(TryPublishError::TooLarge {
                len,
                max: self.max_message_size,
            });
        }
        self.claim_repairing(1).map(|(pos, _)| pos)
    }

    /// [`claim_run`](Self::claim_run), and if it is blocked, one repair (dead
    /// gating subscribers reclaimed, or a dead publisher's slots swept) and one more
    /// try. `Full` if still blocked.
    fn claim_repairing(&self, max: u32) -> Result<(u64, u32), TryPublishError> {
        match self.claim_run(max) {
            Ok(claimed) => Ok(claimed),
            Err(blocked) => {
                let repaired = match blocked {
                    Blocked::Subscriber => self.reclaim_gating_subscribers() > 0,
                    Blocked::Publisher => self.sweep() > 0,
                };
                if !repaired {
                    return Err(TryPublishError::Full);
                }
                self.claim_run(max).map_err(|_| TryPublishError::Full)
            }
        }
    }

    /// Publishes the first messages of `messages` (each length already checked
    /// against the maximum by the caller), as many as one run claim takes (at most
    /// [`MAX_RUN`]), in order; returns how many. `Full` if not even one position
    /// can be claimed. Never blocks.
    pub fn try_publish_run<B: AsRef<[u8]>>(
        &self,
        messages: &[B],
    ) -> Result<usize, TryPublishError> {
        debug_assert_eq!(self.role, Role::Publisher);
        if messages.is_empty() {
            return Ok(0);
        }
        let max = messages.len().min(MAX_RUN as usize) as u32;
        let (first, count) = self.claim_repairing(max)?;
        for (k, message) in messages[..count as usize].iter().enumerate() {
            let message = message.as_ref();
            debug_assert!(message.len() as u64 <= self.max_message_size);
            self.fill_and_publish(pos_add(first, k as u64), message.len(), |memory, index| {
                // SAFETY: the run claim made us the only publisher of each of its
                // positions, each slot's previous lap had published (the claim's
                // Acquire loads), and the caller checked every length.
                unsafe { memory.write_payload(index, message) }
            });
        }
        Ok(count as usize)
    }

    /// Publishes `message` if a position can be claimed now (see
    /// [`claim_for`](Self::claim_for)). Never blocks.
    pub fn try_publish(&self, message: &[u8]) -> Result<(), TryPublishError> {
        let pos = self.claim_for(message.len())?;
        self.fill_and_publish(pos, message.len(), |memory, index| {
            // SAFETY: the claim above made us the only publisher of `pos`, the
            // previous lap's publisher had finished (the claim's Acquire), and
            // `claim_for` checked the length against the maximum.
            unsafe { memory.write_payload(index, message) }
        });
        Ok(())
    }

    /// Receives the next message, lending its bytes to `f` while they sit in the
    /// slot. `f` returns `None` to leave the message unread (its buffer is too
    /// small): the cursor stays, and the error carries the length. In overwrite mode
    /// `f` may see torn bytes: its result is then dropped and the call is `Lagged`.
    #[inline]
    pub fn try_recv_with<R>(&self, f: impl FnOnce(&[u8]) -> Option<R>) -> Result<R, TryRecvError> {
        debug_assert_eq!(self.role, Role::Subscriber);
        let mut f = Some(f);
        // Skips (dead publishers' slots) are stepped over, at most a lap per call.
        for _ in 0..=self.capacity {
            let pos = self.cursor.get();
            let (index, slot) = self.slot_at(pos);
            // Acquire: pairs with the publisher's Release of the even stamp (or the
            // sweeper's skip): the payload and length are visible.
            let stamp = slot.stamp.load(Ordering::Acquire);
            match compare_stamp(stamp, pos) {
                Stamp::Before | Stamp::Writing => return Err(TryRecvError::Empty),
                Stamp::After => return Err(self.lagged(pos)),
                Stamp::Published => {}
            }
            // Relaxed: ordered by the Acquire above; a later writer's value is caught
            // by the re-check.
            let len = slot.len.load(Ordering::Relaxed);
            let bounded = u64::from(len) <= self.max_message_size;
            let read = if bounded {
                let f = f.take().expect("the reader runs at most once");
                // SAFETY: len was checked against the maximum just above.
                Some(unsafe { self.memory.read_payload(index, len as usize, f) })
            } else {
                None
            };
            // Acquire: pairs with a later writer's Release fence after its odd stamp:
            // if anything we read came from it, the load below sees that stamp.
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence above.
            if slot.stamp.load(Ordering::Relaxed) != stamp {
                return Err(self.lagged(pos));
            }
            match read {
                Some(Some(value)) => {
                    self.advance(pos_add(pos, 1));
                    self.count_operation();
                    return Ok(value);
                }
                Some(None) => {
                    return Err(TryRecvError::BufferTooSmall { len: len as usize });
                }
                None if len == SKIP_LEN => self.advance(pos_add(pos, 1)),
                None => {
                    self.advance(pos_add(pos, 1));
                    return Err(TryRecvError::Corrupt {
                        position: pos,
                        len,
                        max: self.max_message_size,
                    });
                }
            }
        }
        Err(TryRecvError::Empty)
    }

    /// Receives a run of up to `max` published messages (at most a lap) with one
    /// cursor advance. For each, `step` gets `Read` with the bytes in the slot, and,
    /// once the stamp re-check says they were whole, `Whole`; a message whose
    /// re-check fails (overwritten while read) gets no `Whole` and ends the run.
    ///
    /// A run ends before anything that is not a published message: nothing yet, a
    /// lag, a corrupt length. If the run delivered messages, the call returns their
    /// count and leaves the cursor at that position, so the next call reports it
    /// (`Lagged` with the exact count, `Corrupt`); if it delivered none, this call
    /// reports it. So received + missed always equals the positions passed. Skips
    /// (dead or panicked publishers' slots) are stepped over silently.
    #[cfg_attr(loom, allow(dead_code))] // the handles' (loom models use single receives)
    pub(crate) fn try_recv_batch(
        &self,
        max: usize,
        mut step: impl FnMut(BatchStep<'_>),
    ) -> Result<usize, TryRecvError> {
        debug_assert_eq!(self.role, Role::Subscriber);
        if max == 0 {
            return Ok(0);
        }
        let start = self.cursor.get();
        let mut pos = start;
        let mut received = 0usize;
        // Lossless mode: our record's cursor stays at `start` until the advance at
        // the end, so no publisher overwrites a slot of the run (at most a lap).
        for _ in 0..self.capacity {
            if received == max {
                break;
            }
            let (index, slot) = self.slot_at(pos);
            // Acquire: pairs with the publisher's Release of the even stamp (or a
            // skip's): the payload and length are visible.
            let stamp = slot.stamp.load(Ordering::Acquire);
            match compare_stamp(stamp, pos) {
                Stamp::Before | Stamp::Writing => break,
                Stamp::After if received == 0 => return Err(self.lagged(pos)),
                Stamp::After => break,
                Stamp::Published => {}
            }
            // Relaxed: ordered by the Acquire above; a later writer's value is caught
            // by the re-check.
            let len = slot.len.load(Ordering::Relaxed);
            let bounded = u64::from(len) <= self.max_message_size;
            if bounded {
                // SAFETY: len was checked against the maximum just above.
                unsafe {
                    self.memory
                        .read_payload(index, len as usize, |bytes| step(BatchStep::Read(bytes)))
                };
            }
            // Acquire: as in `try_recv_with` (a later writer's Release fence after its
            // odd stamp); no loom model runs batch receives, that one is weakened.
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence above.
            if slot.stamp.load(Ordering::Relaxed) != stamp {
                if received == 0 {
                    return Err(self.lagged(pos));
                }
                break;
            }
            if bounded {
                step(BatchStep::Whole);
                received += 1;
            } else if len != SKIP_LEN {
                if received > 0 {
                    break;
                }
                self.advance(pos_add(pos, 1));
                return Err(TryRecvError::Corrupt {
                    position: pos,
                    len,
                    max: self.max_message_size,
                });
            }
            pos = pos_add(pos, 1);
        }
        if pos != start {
            self.advance(pos);
        }
        if received == 0 {
            return Err(TryRecvError::Empty);
        }
        let ops = &self.record().operations;
        // Relaxed: informational; only this handle writes it.
        ops.store(
            ops.load(Ordering::Relaxed).wrapping_add(received as u64),
            Ordering::Relaxed,
        );
        Ok(received)
    }

    /// The subscriber found `pos` overwritten: it moves to the oldest position that
    /// may still be held (`tail - capacity`, or `pos + 1` if that is not later) and
    /// reports how many positions it stepped over.
    #[cold]
    fn lagged(&self, pos: u64) -> TryRecvError {
        // Relaxed: only where to resume; whatever value we read, `missed` is exactly
        // the count of positions we step over, and each of them was (or is being)
        // overwritten or is no later than a position that was.
        let tail = self.tail().load(Ordering::Relaxed);
        let oldest = pos_sub(tail, self.capacity);
        let next = if pos_diff(oldest, pos) > 0 {
            oldest
        } else {
            pos_add(pos, 1)
        };
        let missed = pos_diff(next, pos) as u64;
        self.advance(next);
        // Relaxed: a statistic.
        self.memory
            .shared()
            .stats
            .lagged
            .fetch_add(missed, Ordering::Relaxed);
        TryRecvError::Lagged { missed }
    }

    /// Moves this subscriber's cursor to `next` (after reading what came before).
    #[inline(always)]
    fn advance(&self, next: u64) {
        self.cursor.set(next);
        let cursor = &self.record().cursor;
        match self.policy {
            SlowSubscriber::Lossless => {
                // SeqCst: pairs with a gating publisher's SeqCst cursor load: our
                // reads of the slot happen before its overwrite (an acquire
                // reading this release), and with its waiter count (the not-full
                // wake-up protocol: we see it waiting, or it sees this cursor).
                cursor.store(next, Ordering::SeqCst);
                self.wake_if_waiting(&self.memory.shared().not_full);
            }
            SlowSubscriber::Overwrite => {
                // Relaxed: informational in overwrite mode (no publisher gates on it).
                cursor.store(next, Ordering::Relaxed);
            }
        }
    }

    /// Whether every live subscriber's cursor is past the position that `pos`
    /// overwrites (`pos - capacity`). `Cached` trusts the floor of the last scan
    /// when it suffices; `Fresh` always scans (a waiter's re-check).
    pub(super) fn gate_open(&self, pos: u64, freshness: Freshness) -> bool {
        let needed = pos_add(pos_sub(pos, self.capacity), 1);
        if freshness == Freshness::Cached && pos_diff(self.gate_floor.get(), needed) >= 0 {
            return true;
        }
        // The floor never exceeds the tail read before the scan (`pos`): a
        // subscriber the scan misses joins at that tail or later.
        let mut floor = pos;
        for index in 0..self.memory.geometry().max_participants {
            let record = self.memory.record(index);
            // SeqCst: pairs with a joining subscriber's SeqCst role store (we see it,
            // or it reads a tail at least `pos`: docs/broadcast.md).
            if index == self.me || record.role.load(Ordering::SeqCst) != role::SUBSCRIBER {
                continue;
            }
            // SeqCst: pairs with the subscriber's SeqCst cursor store in `advance`:
            // its reads of older slots happen before our overwrite, and the
            // not-full wake-up protocol.
            let cursor = record.cursor.load(Ordering::SeqCst);
            if pos_diff(cursor, floor) < 0 {
                floor = cursor;
            }
        }
        self.gate_floor.set(floor);
        pos_diff(floor, needed) >= 0
    }

    #[inline(always)]
    fn count_operation(&self) {
        let ops = &self.record().operations;
        // Relaxed: informational; only this handle writes it.
        ops.store(
            ops.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub(super) fn wake_if_waiting(&self, word: &WaitWord) {
        // SeqCst: totally ordered with the waiter's SeqCst increment and its SeqCst
        // re-check (docs/broadcast.md, "Waking"): we see it, or it sees our progress.
        if word.waiters.load(Ordering::SeqCst) != 0 {
            // SeqCst (a release): a waiter that reads this epoch sees our progress.
            // Beyond loom, as the work queue's epoch pair (loom-tests/README.md).
            word.epoch.fetch_add(1, Ordering::SeqCst);
            self.platform.wake_all(&word.epoch);
        }
    }
}

/// Armed while a publisher's writer closure runs: if it unwinds, the claimed slot
/// is published as a skip, so subscribers step over it instead of waiting for a
/// sweep that would never come (the publisher is alive) or reading stale bytes.
struct SkipOnUnwind<'a, M: BroadcastMemory, P: Platform> {
    core: &'a Broadcast<M, P>,
    pos: u64,
}

impl<M: BroadcastMemory, P: Platform> Drop for SkipOnUnwind<'_, M, P> {
    fn drop(&mut self) {
        let (_, slot) = self.core.slot_at(self.pos);
        // Relaxed: made visible by the Release publish below.
        slot.len.store(SKIP_LEN, Ordering::Relaxed);
        // Release: pairs with the subscriber's Acquire stamp load: it reads SKIP_LEN
        // and steps over the slot. We still hold the claim, so a plain store.
        slot.stamp.store(published(self.pos), Ordering::Release);
        self.core
            .wake_if_waiting(&self.core.memory.shared().not_empty);
    }
}

/// What a batch receive hands its reader for each message (see
/// [`Broadcast::try_recv_batch`]).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) enum BatchStep<'a> {
    /// The message's bytes, where they lie; in overwrite mode possibly torn.
    Read(&'a [u8]),
    /// The bytes just read were whole: the message counts as received.
    Whole,
}

/// Whether a gate check may trust the floor of the last scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Freshness {
    /// Use the floor when it suffices.
    Cached,
    /// Scan the records.
    Fresh,
}

impl<M: BroadcastMemory, P: Platform> Drop for Broadcast<M, P> {
    fn drop(&mut self) {
        if let Some(liveness) = self.liveness.take() {
            self.unregister();
            drop(liveness);
        }
    }
}
