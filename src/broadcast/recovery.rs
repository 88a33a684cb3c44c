//! Crash survival for broadcast handles: registering in a record, leaving it,
//! reclaiming dead subscribers' records (so they stop gating lossless publishers),
//! and the sweep that publishes a dead publisher's claimed slot as a skip.
//!
//! The skip's proof is the work queue's (`src/ring/mod.rs`, "Claim records"): the
//! claimer stored `p` in its record (Release) before its CAS on the tail (SeqCst);
//! a sweeper that reads the tail past `p` (SeqCst) finds `p` in that record or a
//! later value; a later value is stored only after `p` was published. So "slot
//! still unpublished, tail past it, no live record claims `p`" (loads in that
//! order, then the slot again) proves the claimer dead.
//!
//! A batch claims a run of positions with one CAS; its record's run word (stored,
//! Release, before the claim word when it changes) says how many. The proof holds
//! per position: a later claim value is stored only after the whole run was
//! published, and a live holder is a live record whose claim *run* contains the
//! position. A sweep skips each outstanding position of a dead publisher's run.

use std::cell::Cell;

use super::ring::{compare_stamp, pos_sub, published, Broadcast, BroadcastMemory, Role, Stamp};
use crate::layout::{
    participant, pos_add, pos_diff, role, waiting, BroadcastRecord, SlowSubscriber, CLAIM_NONE,
    SKIP_LEN,
};
use crate::ring::{run_length, Platform};
use crate::sync::Ordering;

/// Frees the records of dead handles that hold no outstanding claim, without a
/// record of one's own (a full table at attach). A dead publisher whose claim is
/// outstanding is left for a sweep, which repairs its slot first. Returns how many
/// it freed.
///
/// `me` is the caller's own record, if it has one: never judged (its own liveness
/// lock can be taken again through its own descriptor, so it would look dead).
pub fn free_dead_records<M: BroadcastMemory, P: Platform>(
    memory: &M,
    platform: &P,
    me: Option<u64>,
) -> u32 {
    let mut freed = 0;
    for index in 0..memory.geometry().max_participants {
        let record = memory.record(index);
        // Relaxed: a first look; decided holding the record's lock.
        if Some(index) == me || record.state.load(Ordering::Relaxed) != participant::ACTIVE {
            continue;
        }
        let Some(_owner) = platform.try_own(index) else {
            continue;
        };
        // Relaxed: ordered by the lock (the death check orders the dead owner's
        // last stores before these loads).
        let claim = record.claim.load(Ordering::Relaxed);
        // Relaxed: as above.
        let run = record.run.load(Ordering::Relaxed);
        let publisher = record.role.load(Ordering::Relaxed) == role::PUBLISHER;
        if record.state.load(Ordering::Relaxed) != participant::ACTIVE
            || (publisher && run_outstanding(memory, claim, run))
        {
            continue;
        }
        free_record(memory, record);
        freed += 1;
    }
    freed
}

/// Whether any publisher's claim is outstanding (loads only, no record of one's
/// own: the async waker thread asks this to nudge a waiting task to sweep).
#[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
pub fn any_claim_outstanding<M: BroadcastMemory>(memory: &M) -> bool {
    (0..memory.geometry().max_participants).any(|index| {
        let record = memory.record(index);
        // Relaxed, all: a first look; stale, it costs a spare wake-up or a later one.
        record.role.load(Ordering::Relaxed) == role::PUBLISHER
            && run_outstanding(
                memory,
                record.claim.load(Ordering::Relaxed),
                record.run.load(Ordering::Relaxed),
            )
    })
}

/// Whether a claim at `pos` is outstanding: the tail has moved past it and its slot
/// is not yet published with it.
fn claim_outstanding<M: BroadcastMemory>(memory: &M, pos: u64) -> bool {
    if pos == CLAIM_NONE {
        return false;
    }
    // SeqCst (an acquire): pairs with the claimer's CAS, so its record store is
    // visible (the proof above).
    let tail = memory.shared().tail.value.load(Ordering::SeqCst);
    let slot = memory.slot(pos & memory.geometry().mask());
    // Relaxed: what orders it is what the caller did before (the death check, or
    // the Acquire loads of the live records for the second look).
    let stamp = slot.stamp.load(Ordering::Relaxed);
    pos_diff(tail, pos) > 0 && matches!(compare_stamp(stamp, pos), Stamp::Before | Stamp::Writing)
}

/// The positions a claim at `claim` covering `run` positions names (none for
/// [`CLAIM_NONE`]); `run` comes from shared memory and is clamped.
fn claimed_positions(claim: u64, run: u32) -> impl Iterator<Item = u64> {
    let count = if claim == CLAIM_NONE {
        0
    } else {
        run_length(run)
    };
    (0..u64::from(count)).map(move |k| pos_add(claim, k))
}

/// Whether any position of a claim at `claim` covering `run` positions is
/// outstanding ([`claim_outstanding`]).
fn run_outstanding<M: BroadcastMemory>(memory: &M, claim: u64, run: u32) -> bool {
    claimed_positions(claim, run).any(|pos| claim_outstanding(memory, pos))
}

/// Returns a dead participant's record to the free list (its liveness lock is held
/// by the caller, which releases it after).
fn free_record<M: BroadcastMemory>(memory: &M, record: &BroadcastRecord) {
    let shared = memory.shared();
    // Relaxed: the owner is dead; registrants wait for our release of its lock.
    let counted = record.waiting.swap(0, Ordering::Relaxed);
    if counted & waiting::NOT_EMPTY != 0 {
        // Relaxed: returning a leaked count can only remove a spare wake-up.
        shared.not_empty.waiters.fetch_sub(1, Ordering::Relaxed);
    }
    if counted & waiting::NOT_FULL != 0 {
        // Relaxed: as above.
        shared.not_full.waiters.fetch_sub(1, Ordering::Relaxed);
    }
    // Relaxed: ordered for registrants by the liveness lock; other sweepers read it
    // under the recovery lock.
    record.claim.store(CLAIM_NONE, Ordering::Relaxed);
    // Relaxed: as above.
    record.run.store(0, Ordering::Relaxed);
    // SeqCst: as in `unregister`, gate scans stop counting it. No model fails
    // without it (loom-tests/README.md): a scan that still reads SUBSCRIBER counts a
    // dead cursor, which holds a publisher back (never lets one through) until its
    // own reclaim or its bounded sleep's repair; in the models the freeing publisher
    // is the gated one, which reads its own store.
    record.role.store(role::NONE, Ordering::SeqCst);
    // Relaxed: ordered by the liveness lock, as above.
    record.state.store(participant::FREE, Ordering::Relaxed);
    // Relaxed: a statistic.
    shared.stats.freed.fetch_add(1, Ordering::Relaxed);
}

/// Finds a free record and takes it: its liveness lock, then FREE → ACTIVE.
fn claim_record<M: BroadcastMemory, P: Platform>(
    memory: &M,
    platform: &P,
) -> Option<(u64, P::Liveness)> {
    (0..memory.geometry().max_participants).find_map(|index| {
        let record = memory.record(index);
        // Relaxed: a hint only; the CAS below decides.
        if record.state.load(Ordering::Relaxed) != participant::FREE {
            return None;
        }
        let liveness = platform.try_own(index)?;
        // Relaxed: ordered by `try_own` (an acquire of the lock whoever freed the
        // record released after freeing it: `Platform` docs). Failing: ACTIVE yet its
        // lock was free, a dead owner's record, which a sweep frees.
        record
            .state
            .compare_exchange(
                participant::FREE,
                participant::ACTIVE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| (index, liveness))
    })
}

impl<M: BroadcastMemory, P: Platform> Broadcast<M, P> {
    /// Claims a free record for a new handle in `role`, owning its liveness through
    /// the platform. A subscriber's first position is the tail it reads after its
    /// record says it is a subscriber (it receives what is published after that).
    /// `None` if every record is taken.
    pub fn register(
        memory: M,
        platform: P,
        role: Role,
        policy: SlowSubscriber,
        pid: u64,
        start_time: u64,
    ) -> Option<Self> {
        let geometry = *memory.geometry();
        let (index, liveness) = claim_record(&memory, &platform)?;
        let record = memory.record(index);
        // Relaxed: informational fields.
        record.pid.store(pid, Ordering::Relaxed);
        record.start_time.store(start_time, Ordering::Relaxed);
        record.operations.store(0, Ordering::Relaxed);
        {
            let handle = Self {
                memory,
                platform,
                me: index,
                role,
                policy,
                capacity: geometry.capacity,
                mask: geometry.mask(),
                max_message_size: geometry.max_message_size,
                liveness: Some(liveness),
                cursor: Cell::new(0),
                gate_floor: Cell::new(0),
            };
            handle.join(handle.record(), role);
            Some(handle)
        }
    }

    /// Announces the role in the freshly claimed record (`register`).
    fn join(&self, record: &BroadcastRecord, role: Role) {
        let tail = &self.memory.shared().tail.value;
        match role {
            Role::Publisher => {
                // Relaxed: the record was reset by whoever freed it (ordered by the
                // liveness lock); stated again for a record never used.
                record.claim.store(CLAIM_NONE, Ordering::Relaxed);
                // Relaxed: publishers' roles are read only by sweepers after a death
                // check (which orders them) and by `live_holder`, which also needs
                // the claim word, stored above.
                record.role.store(role::PUBLISHER, Ordering::Relaxed);
                // Relaxed: a starting guess for the gate floor (never above a tail).
                self.gate_floor
                    .set(pos_sub(tail.load(Ordering::Relaxed), self.capacity));
            }
            Role::Subscriber => {
                // Relaxed: a first guess at our position, no later than the tail we
                // read below (coherence), so a publisher gating on it only waits a
                // little longer.
                let guess = tail.load(Ordering::Relaxed);
                record.cursor.store(guess, Ordering::Relaxed);
                // SeqCst: pairs with a publisher's SeqCst role load in its gate scan:
                // it sees us, or its tail load came before our tail load below.
                record.role.store(role::SUBSCRIBER, Ordering::SeqCst);
                // SeqCst: the other half of that argument (docs/broadcast.md).
                let start = tail.load(Ordering::SeqCst);
                self.cursor.set(start);
                // SeqCst: as `advance`'s store (a gating publisher reads it). No loom
                // model fails without it (loom-tests/README.md): a gate scan that
                // reads the guess above instead only waits longer (the guess is no
                // later than `start`), and no wake-up follows this store: a publisher
                // asleep on the guess is woken by our first `advance` or its bounded
                // sleep.
                record.cursor.store(start, Ordering::SeqCst);
            }
        }
    }

    /// Gives this handle's record back (the handle is going away); `Drop` then
    /// releases the liveness.
    pub(super) fn unregister(&self) {
        let record = self.record();
        // Release: pairs with a sweeper's Acquire claim load in `live_holder`: one that
        // reads CLAIM_NONE (later than our last claim) must also see it published.
        record.claim.store(CLAIM_NONE, Ordering::Release);
        // SeqCst: a lossless publisher's gate scan (SeqCst) stops counting us; the
        // waiter-count load below is the not-full wake-up protocol's other half.
        record.role.store(role::NONE, Ordering::SeqCst);
        // Relaxed: the next owner gets the record after our liveness lock is released.
        record.waiting.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire state load in `live_holder`.
        record.state.store(participant::FREE, Ordering::Release);
        if self.role == Role::Subscriber && self.policy == SlowSubscriber::Lossless {
            self.wake_if_waiting(&self.memory.shared().not_full);
        }
    }

    /// Lossless publishers: frees the records of dead subscribers whose cursor holds
    /// the gate for the position at the tail, so they hold nobody back. Asks the
    /// platform about each such subscriber (a lock query: a system call). Returns how
    /// many it freed.
    pub fn reclaim_gating_subscribers(&self) -> u32 {
        // Relaxed: which cursors gate is a first look; the gate re-scans after.
        let tail = self.memory.shared().tail.value.load(Ordering::Relaxed);
        let needed = pos_add(pos_sub(tail, self.capacity), 1);
        let mut freed = 0;
        for index in 0..self.memory.geometry().max_participants {
            let record = self.memory.record(index);
            // Relaxed, both: a first look; the decision is made holding the record's
            // liveness lock.
            if index == self.me
                || record.role.load(Ordering::Relaxed) != role::SUBSCRIBER
                || pos_diff(record.cursor.load(Ordering::Relaxed), needed) >= 0
            {
                continue;
            }
            // Taking its lock succeeds only if its owner is gone (an acquire: we see
            // everything it did). Holding it keeps registrants out while we free.
            let Some(_owner) = self.platform.try_own(index) else {
                continue;
            };
            // Relaxed: ordered by the lock.
            if record.state.load(Ordering::Relaxed) == participant::ACTIVE {
                self.free_record(record);
                freed += 1;
            }
        }
        if freed > 0 {
            // The floor counted the dead: forget it.
            self.gate_floor.set(pos_sub(tail, self.capacity));
        }
        freed
    }

    /// Finds dead publishers whose claimed slot is still unpublished with the tail
    /// past it, and publishes each as a skip; frees the dead records it looks at.
    /// Loads only when nothing is outstanding; otherwise under the recovery lock
    /// (one sweeper at a time: another returns 0 at once). Returns the skips made.
    pub fn sweep(&self) -> u32 {
        if !self.outstanding_claims() {
            return 0;
        }
        let Some(_guard) = self.platform.try_lock_recovery() else {
            return 0;
        };
        let mut skipped = 0;
        for index in 0..self.memory.geometry().max_participants {
            if index == self.me {
                continue;
            }
            let record = self.memory.record(index);
            // Relaxed, both: a first look, to take locks only where something is
            // stuck.
            let claim = record.claim.load(Ordering::Relaxed);
            let run = record.run.load(Ordering::Relaxed);
            if record.role.load(Ordering::Relaxed) != role::PUBLISHER
                || !run_outstanding(&self.memory, claim, run)
            {
                continue;
            }
            // Its lock is free only if its owner is dead (an acquire of the kernel's
            // release: its last claim and writes are visible).
            let Some(_owner) = self.platform.try_own(index) else {
                continue;
            };
            // Relaxed: ordered by the lock; the owner may have left cleanly since.
            if record.state.load(Ordering::Relaxed) != participant::ACTIVE {
                continue;
            }
            // Relaxed, both: ordered by the death check; other writers of a dead
            // record are sweepers, ordered by the recovery lock.
            let claim = record.claim.load(Ordering::Relaxed);
            let run = record.run.load(Ordering::Relaxed);
            // A run is published in order, so its outstanding positions are a
            // suffix of it: each is skipped on its own proof.
            for pos in claimed_positions(claim, run) {
                if self.orphaned(pos, index) {
                    skipped += self.publish_skip(pos);
                }
            }
            self.free_record(record);
        }
        skipped
    }

    /// Whether some other publisher's claim is outstanding (loads only).
    pub fn outstanding_claims(&self) -> bool {
        (0..self.memory.geometry().max_participants).any(|index| {
            let record = self.memory.record(index);
            // Relaxed: a first look; stale, it skips a sweep (they repeat) or takes
            // the lock for nothing.
            index != self.me
                && record.role.load(Ordering::Relaxed) == role::PUBLISHER
                && run_outstanding(
                    &self.memory,
                    record.claim.load(Ordering::Relaxed),
                    record.run.load(Ordering::Relaxed),
                )
        })
    }

    fn outstanding(&self, pos: u64) -> bool {
        claim_outstanding(&self.memory, pos)
    }

    /// The proof, in its order: outstanding, no live publisher claims it, still
    /// outstanding.
    fn orphaned(&self, pos: u64, dead: u64) -> bool {
        self.outstanding(pos) && !self.live_holder(pos, dead) && self.outstanding(pos)
    }

    /// Whether a live publisher other than us and `dead` has `pos` in its claim (its
    /// claim word, or the run it starts).
    fn live_holder(&self, pos: u64, dead: u64) -> bool {
        (0..self.memory.geometry().max_participants).any(|index| {
            if index == self.me || index == dead {
                return false;
            }
            let record = self.memory.record(index);
            // Acquire: pairs with the Release claim stores (and `unregister`'s reset):
            // a value later than `pos` shows `pos` published.
            let claim = record.claim.load(Ordering::Acquire);
            // Acquire: pairs with the Release run store in `record_run`: a run stored
            // for a claim later than `claim` shows `claim` finished.
            let run = record.run.load(Ordering::Acquire);
            // Acquire: pairs with the Release of FREE in `unregister`: a record that
            // left after publishing `pos` shows it published.
            claim != CLAIM_NONE
                && (0..i64::from(run_length(run))).contains(&pos_diff(pos, claim))
                && record.state.load(Ordering::Acquire) == participant::ACTIVE
                && self.platform.is_alive(index)
        })
    }

    /// Publishes a dead publisher's slot at `pos` as a skip; 1 if this call did.
    fn publish_skip(&self, pos: u64) -> u32 {
        let shared = self.memory.shared();
        let (_, slot) = self.slot_at(pos);
        // Relaxed: ordered by the death check; the dead publisher writes no more.
        let stamp = slot.stamp.load(Ordering::Relaxed);
        // Relaxed: published by the Release CAS below.
        slot.len.store(SKIP_LEN, Ordering::Relaxed);
        // Release: pairs with the subscribers' Acquire stamp load, so they read
        // SKIP_LEN. A CAS from the stamp we judged: if it moved we publish no
        // skip, but the length above is already written, so this guards the stamp
        // only; the slot is ours by the orphan proof, not by this CAS.
        if slot
            .stamp
            .compare_exchange(stamp, published(pos), Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return 0;
        }
        // Relaxed: a statistic.
        shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
        self.wake_if_waiting(&shared.not_empty);
        1
    }

    fn free_record(&self, record: &BroadcastRecord) {
        free_record(&self.memory, record);
    }

    /// Frees every dead participant's record that holds nothing outstanding, and
    /// repairs dead publishers' slots (at attach, so a restarted process starts from
    /// a clean table). Asks the platform about every active record.
    pub fn housekeeping(&self) {
        self.sweep();
        free_dead_records(&self.memory, &self.platform, Some(self.me));
    }

    /// Crash hook for the loom models: a publisher runs the shipped claim step and
    /// dies right after it (nothing written or published, record left registered,
    /// liveness leaked: the model's platform marks it dead). Returns the position
    /// claimed, if any.
    #[cfg(loom)]
    pub fn claim_and_die(self) -> Option<u64> {
        self.claim_run_and_die(1, &[]).map(|(pos, _)| pos)
    }

    /// Crash hook for the loom models: a publisher runs the shipped claim step for
    /// a run of up to `max` positions, publishes the first of them with `published`
    /// (the shipped publishing step, one message each, in order) and dies before the
    /// rest (record left registered with the run, liveness leaked). Returns the
    /// first position and the run's length, if it claimed.
    #[cfg(loom)]
    pub fn claim_run_and_die(mut self, max: u32, published: &[&[u8]]) -> Option<(u64, u32)> {
        let claimed = self.claim_run(max).ok();
        if let Some((first, count)) = claimed {
            for (k, message) in published.iter().take(count as usize).enumerate() {
                assert!(message.len() as u64 <= self.max_message_size);
                self.write_with(pos_add(first, k as u64), message.len(), |bytes| {
                    bytes.copy_from_slice(message)
                });
            }
        }
        std::mem::forget(self.liveness.take());
        claimed
    }

    /// Crash hook for the loom models: the handle dies where it stands (record left
    /// registered, liveness leaked).
    #[cfg(loom)]
    pub fn die(mut self) {
        std::mem::forget(self.liveness.take());
    }
}
