//! Crash survival: registering participants, and the sweep that repairs what dead
//! ones left (module docs of [`crate::ring`], "Claim records").

use super::{run_length, Claimed, End, Platform, Received, Ring, RingMemory};
use crate::error::TryRecvError;
use crate::layout::{
    participant, pos_add, pos_diff, waiting, ParticipantRecord, CLAIM_NONE, SKIP_LEN,
};
use crate::sync::Ordering;

/// Whether a dead consumer's message may be taken by this sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// Leave it (the sweep reports it as `dead_consumer_pending`).
    Leave,
    /// Take one, and return it for delivery to this sweeper's caller.
    TakeOne,
}

/// Which records a sweep looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only if some claim is outstanding: cheap (loads only) when nothing is wrong.
    Outstanding,
    /// Every active record, freeing dead ones with nothing outstanding too. Asks the
    /// platform about each, so it is for occasional use (attach, `Queue::sweep`).
    Housekeeping,
}

/// What a sweep found and did.
#[derive(Debug)]
pub struct Sweep<'a, M: RingMemory, P: Platform> {
    /// Another participant holds the recovery lock; nothing was checked.
    pub busy: bool,
    /// Slots of dead producers published as skips.
    pub skipped: u32,
    /// Dead participants' records freed.
    pub freed: u32,
    /// A dead consumer's message, taken over by this sweeper (with
    /// [`Redelivery::TakeOne`]); `Err` if its length was corrupt (then released).
    pub redelivered: Option<Result<Received<'a, M, P>, TryRecvError>>,
    /// A dead consumer holds a message this sweep did not take.
    pub dead_consumer_pending: bool,
}

impl<M: RingMemory, P: Platform> std::fmt::Debug for Received<'_, M, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("position", &self.claimed.pos)
            .field("len", &self.len)
            .finish()
    }
}

/// Claims a free participant record for a new handle, owning its liveness through
/// the platform. Returns the record index and the liveness, or `None` if every
/// record is taken.
pub(super) fn register<M: RingMemory, P: Platform>(
    memory: &M,
    platform: &P,
    pid: u64,
    start_time: u64,
) -> Option<(u64, P::Liveness)> {
    for index in 0..memory.geometry().max_participants {
        let record = memory.participant(index);
        // Relaxed: a hint only; the CAS below decides.
        if record.state.load(Ordering::Relaxed) != participant::FREE {
            continue;
        }
        let Some(liveness) = platform.try_own(index) else {
            continue;
        };
        // Relaxed: ordered by `try_own` above (an acquire: `Platform` docs). Whoever
        // freed the record (its leaving owner in `unregister`, or a sweeper in
        // `free_record`) held its liveness lock while freeing it and released the lock
        // after, so we see its claims reset to CLAIM_NONE.
        if record
            .state
            .compare_exchange(
                participant::FREE,
                participant::ACTIVE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            // Relaxed: informational fields, read only by inspectors.
            record.pid.store(pid, Ordering::Relaxed);
            record.start_time.store(start_time, Ordering::Relaxed);
            record.operations.store(0, Ordering::Relaxed);
            return Some((index, liveness));
        }
        // The record is ACTIVE yet we got its lock: its owner is dead. A sweep frees
        // it once its claims are settled; `liveness` is dropped (unlocked) here, and
        // we look further.
    }
    None
}

/// Whether a claim at `pos` on `end` is outstanding: the cursor has moved past it
/// and the slot's sequence still says claimed-not-done (`pos` for a producer,
/// `pos + 1` for a consumer). Loads only.
pub fn claim_outstanding<M: RingMemory>(memory: &M, end: End, pos: u64) -> bool {
    if pos == CLAIM_NONE {
        return false;
    }
    // SeqCst (an acquire): pairs with the claimer's CAS, so its record is visible.
    let cursor = end.cursor(memory.shared()).load(Ordering::SeqCst);
    let slot = memory.slot(pos & memory.geometry().mask());
    // Relaxed: an ordering here would not make the load fresh; what the caller did
    // before does. A sweep judges a claim after the death check of the dead
    // participant that took it (`repair`'s `try_own`, or `is_alive` in `live_holder`
    // if another dead record names it too: `Platform` docs), which orders that
    // claim step, its Acquire read of this sequence and so the payload of a message
    // the sweep takes over, before us; `orphaned`'s second look follows the Acquire
    // loads of the live records. First looks and `inspect` may be stale.
    pos_diff(cursor, pos) > 0
        && slot.sequence.load(Ordering::Relaxed) == pos_add(pos, end.ready_offset())
}

/// The positions a claim at `claim` covering `run` positions names (none for
/// [`CLAIM_NONE`]); `run` comes from shared memory and is clamped.
pub fn claimed_positions(claim: u64, run: u32) -> impl Iterator<Item = u64> {
    let count = if claim == CLAIM_NONE {
        0
    } else {
        run_length(run)
    };
    (0..u64::from(count)).map(move |k| pos_add(claim, k))
}

/// Whether any position of a claim at `claim` covering `run` positions is
/// outstanding ([`claim_outstanding`]).
pub fn run_outstanding<M: RingMemory>(memory: &M, end: End, claim: u64, run: u32) -> bool {
    claimed_positions(claim, run).any(|pos| claim_outstanding(memory, end, pos))
}

impl<M: RingMemory, P: Platform> Ring<M, P> {
    fn outstanding(&self, end: End, pos: u64) -> bool {
        claim_outstanding(&self.memory, end, pos)
    }

    /// Whether the claim at `pos` on `end`, read from a dead participant's record, is
    /// outstanding with no live participant holding it: the dead participant's to
    /// repair. The proof's loads in its order (module docs, "Claim records"): the
    /// cursor (past `pos`, so every claimer of `pos` has recorded `pos` or later),
    /// every live record, then the slot's sequence *again*: a live record past `pos`
    /// shows `pos` finished only to a sequence load made after reading that record (a
    /// sequence read before the scan may predate the live holder's finish).
    fn orphaned(&self, end: End, pos: u64, dead: u64) -> bool {
        self.outstanding(end, pos)
            && !self.live_holder(end, pos, dead)
            && self.outstanding(end, pos)
    }

    /// Whether a live participant other than us and the `dead` one being repaired
    /// has `pos` in its claim for `end` (its claim word, or the run it starts).
    fn live_holder(&self, end: End, pos: u64, dead: u64) -> bool {
        (0..self.memory.geometry().max_participants).any(|index| {
            if index == self.me || index == dead {
                return false;
            }
            let record = self.memory.participant(index);
            // Acquire: pairs with the Release claim stores (module docs) and with
            // `unregister`'s Release resets: a later value than `pos` shows `pos` done.
            let claim = end.claim_word(record).load(Ordering::Acquire);
            // Acquire: pairs with the Release run store in `record_run`: a run stored
            // for a claim later than `claim` shows `claim` finished.
            let run = end.run_word(record).load(Ordering::Acquire);
            // Acquire: pairs with the Release of FREE in `unregister`. The claim load
            // may return `pos` from before its owner finished `pos` and left; FREE
            // then says "no holder", and only this edge makes the second sequence load
            // in `orphaned` see the finish (no liveness check follows a FREE). Not
            // Relaxed: live_consumer_leaving_is_not_redelivered catches it.
            claim != CLAIM_NONE
                && (0..i64::from(run_length(run))).contains(&pos_diff(pos, claim))
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
            // Relaxed: a first look (waiters size their sleep by it; a sweep decides
            // whether to take the recovery lock). Stale, it skips a sweep or takes
            // the lock for nothing, and sweeps repeat; `repair` reads again.
            index != self.me
                && record.state.load(Ordering::Relaxed) == participant::ACTIVE
                && self.record_outstanding(record)
        })
    }

    /// Whether either claim in `record` is outstanding.
    fn record_outstanding(&self, record: &ParticipantRecord) -> bool {
        // Relaxed: first looks (`outstanding_claims`, and `repair` before its death
        // check): stale, they skip a sweep or a record, or look closer for nothing.
        // `repair` reads a dead owner's claims again after its death check.
        let enqueue = record.enqueue_claim.load(Ordering::Relaxed);
        // Relaxed: as above.
        let enqueue_run = record.enqueue_run.load(Ordering::Relaxed);
        // Relaxed: as above.
        let dequeue = record.dequeue_claim.load(Ordering::Relaxed);
        // Relaxed: as above.
        let dequeue_run = record.dequeue_run.load(Ordering::Relaxed);
        run_outstanding(&self.memory, End::Enqueue, enqueue, enqueue_run)
            || run_outstanding(&self.memory, End::Dequeue, dequeue, dequeue_run)
    }

    /// Finds dead participants and repairs what they left: a dead producer's claimed
    /// slot is published as a skip; a dead consumer's unreleased message is taken
    /// over and returned (with [`Redelivery::TakeOne`]); dead records with nothing
    /// outstanding are freed. Safe to run from any number of participants at once:
    /// one holds the recovery lock, the others return `busy`.
    pub fn sweep(&self, scope: Scope, redelivery: Redelivery) -> Sweep<'_, M, P> {
        let mut outcome = Sweep {
            busy: false,
            skipped: 0,
            freed: 0,
            redelivered: None,
            dead_consumer_pending: false,
        };
        if scope == Scope::Outstanding && !self.outstanding_claims() {
            // Nothing to repair: skip the lock and its system calls.
            return outcome;
        }
        let Some(guard) = self.platform.try_lock_recovery() else {
            outcome.busy = true;
            return outcome;
        };
        let mut taken_over = None;
        for index in 0..self.memory.geometry().max_participants {
            if index != self.me {
                self.repair(index, scope, redelivery, &mut taken_over, &mut outcome);
            }
        }
        drop(guard);
        if let Some(pos) = taken_over {
            let (index, slot) = self.slot_at(pos);
            let claimed = Claimed { pos, index, slot };
            outcome.redelivered = self.open_claimed(claimed).transpose();
            // Relaxed: a statistic.
            self.memory
                .shared()
                .stats
                .redelivered
                .fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// The sweep's work on record `index`, under the recovery lock.
    fn repair(
        &self,
        index: u64,
        scope: Scope,
        redelivery: Redelivery,
        taken_over: &mut Option<u64>,
        outcome: &mut Sweep<'_, M, P>,
    ) {
        let record = self.memory.participant(index);
        // Relaxed: a first look before the death check: stale, it skips the record
        // this time (sweeps repeat) or takes its lock for nothing. The state is read
        // again under the lock, and the claims after the death check.
        let state = record.state.load(Ordering::Relaxed);
        if state == participant::FREE {
            return;
        }
        // A state that is neither FREE nor ACTIVE was written by something other
        // than shmq: no registrant can take the record, so it is reclaimed like a
        // dead participant's once nobody holds its liveness lock (housekeeping only).
        if state != participant::ACTIVE && scope == Scope::Outstanding {
            return;
        }
        // A cheap first look, to ask the platform about liveness only when something
        // is stuck: these values may already be stale (the owner may claim again).
        if scope == Scope::Outstanding && !self.record_outstanding(record) {
            return;
        }
        // Own the record's liveness lock while judging and freeing it: a death check
        // alone goes stale when the owner leaves cleanly and a registrant takes the
        // record before we free it (we would free it from under the registrant).
        // Holding the lock keeps registrants out until we are done.
        let Some(_owner) = self.platform.try_own(index) else {
            return;
        };
        // Relaxed: ordered by the lock. The owner may have left cleanly since we
        // first looked.
        if record.state.load(Ordering::Relaxed) == participant::FREE {
            return;
        }
        // The owner is dead. Only claims read *now* are its last ones: a value read
        // before the check may be a claim it finished (or failed) before claiming
        // again.
        // Relaxed: ordered by the death check: `try_own` succeeding is an acquire
        // that synchronises with the kernel's release of the dead owner's lock
        // (`Platform` docs), so everything the owner did is visible, its last claims
        // and what its claim step read. The only other writers of a dead record are
        // sweepers, ordered by the recovery lock we hold.
        let enqueue_claim = record.enqueue_claim.load(Ordering::Relaxed);
        // Relaxed: as above.
        let enqueue_run = record.enqueue_run.load(Ordering::Relaxed);
        // Relaxed: as above.
        let dequeue_claim = record.dequeue_claim.load(Ordering::Relaxed);
        // Relaxed: as above.
        let dequeue_run = record.dequeue_run.load(Ordering::Relaxed);
        // Each position of a claim (a batch claims several) is repaired on its own.
        for pos in claimed_positions(enqueue_claim, enqueue_run) {
            if self.orphaned(End::Enqueue, pos, index) {
                self.publish_skip(pos, outcome);
            }
        }
        for pos in claimed_positions(dequeue_claim, dequeue_run) {
            if self.orphaned(End::Dequeue, pos, index) {
                if redelivery == Redelivery::Leave || taken_over.is_some() {
                    outcome.dead_consumer_pending = true;
                    return;
                }
                self.take_over(record, pos, dequeue_run);
                *taken_over = Some(pos);
            }
        }
        // Relaxed: only the sweeper holding the recovery lock writes a dead record,
        // and that is us: this reads our own take-over store, or the value above.
        let dequeue_claim = record.dequeue_claim.load(Ordering::Relaxed);
        if !run_outstanding(&self.memory, End::Enqueue, enqueue_claim, enqueue_run)
            && !run_outstanding(&self.memory, End::Dequeue, dequeue_claim, dequeue_run)
        {
            self.free_record(record);
            outcome.freed += 1;
        }
    }

    /// Takes a dead consumer's claim at `pos` over: once our record names it, we are
    /// its live holder, so the dead record can go and the locks can be dropped before
    /// the (user's, possibly slow) read. If we die before releasing, our dead record
    /// leads the next sweeper to it. A dead record whose claim covers a run of
    /// positions (`dead_run`) keeps naming it: the rest of the run is still its to
    /// repair, and for `pos` we are now a live holder.
    fn take_over(&self, dead: &ParticipantRecord, pos: u64, dead_run: u32) {
        let (_, slot) = self.slot_at(pos);
        // Relaxed: the slot is ours alone (its holder is dead or handed it back, and
        // other sweepers are locked out); whoever reads the count next holds the
        // claim after us: we ourselves, or a sweeper ordered by our death check.
        let returns = slot.returns.load(Ordering::Relaxed);
        slot.returns
            .store(returns.saturating_add(1), Ordering::Relaxed);
        // Relaxed: ordered by the recovery lock. The next sweep judges these records
        // after taking it, so after our guard's release (or the kernel's, if we die:
        // `Platform` docs), and `publish_skip` relies on that edge already.
        self.record().dequeue_run.store(1, Ordering::Relaxed);
        // Relaxed: as above.
        self.record().dequeue_claim.store(pos, Ordering::Relaxed);
        if run_length(dead_run) == 1 {
            // Relaxed: as above; the dead record no longer names the claim.
            dead.dequeue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        }
    }

    /// Gives back the consumer claim at `pos`, which this participant holds, for
    /// another delivery: the claim moves to a free record that this participant
    /// owns for a moment and then lets go of, so the record looks exactly like a
    /// dead consumer's: the next consumer sweep (this participant's own included)
    /// takes the message over, counts the return and delivers it again. `false`,
    /// with the claim still ours, if no record is free.
    pub(super) fn hand_back(&self, pos: u64) -> bool {
        self.hand_back_run(pos, 1, true)
    }

    /// [`Ring::hand_back`] for `count` consecutive positions from `pos` (the part
    /// of a batch its reader did not get to), counted as abandoned if `counted`.
    pub(super) fn hand_back_run(&self, pos: u64, count: u32, counted: bool) -> bool {
        // pid 0: a record that carries a given-back message, not a process.
        let Some((index, liveness)) = register(&self.memory, &self.platform, 0, 0) else {
            return false;
        };
        let carrier = self.memory.participant(index);
        // Relaxed, like the store below: a sweeper judges the carrier only once it
        // owns the carrier's liveness lock, so after our `drop(liveness)`, whose
        // release (the platform's lock hand-over) orders both stores before it.
        // Until then our own record names `pos`, so a sweeper finds a live holder
        // and leaves the claim; the order of the two stores and the drop is what
        // matters (a carrier let go of before it names the claim could be freed by
        // a housekeeping sweep with the claim named by no record: the
        // `abandoned_message_is_delivered_once_more` model fails then).
        // Relaxed: as above. The carrier carries `count` positions, whatever run its
        // last owner left in the word.
        carrier.dequeue_run.store(count, Ordering::Relaxed);
        carrier.dequeue_claim.store(pos, Ordering::Relaxed);
        // Relaxed: as above.
        self.record()
            .dequeue_claim
            .store(CLAIM_NONE, Ordering::Relaxed);
        drop(liveness);
        if counted {
            // Relaxed: a statistic.
            self.memory
                .shared()
                .stats
                .abandoned
                .fetch_add(u64::from(count), Ordering::Relaxed);
        }
        true
    }

    /// Publishes a dead producer's claimed slot at `pos` as a skip.
    fn publish_skip(&self, pos: u64, outcome: &mut Sweep<'_, M, P>) {
        let shared = self.memory.shared();
        let (_, slot) = self.slot_at(pos);
        // Relaxed: published by the Release CAS below. Nobody else writes this slot:
        // its claimer is dead and other sweepers are locked out.
        slot.len.store(SKIP_LEN, Ordering::Relaxed);
        // Release: pairs with the consumer's Acquire load of the sequence, so
        // it reads SKIP_LEN. A CAS, not a store, as a second line of defence.
        if slot
            .sequence
            .compare_exchange(pos, pos_add(pos, 1), Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            outcome.skipped += 1;
            // Relaxed: a statistic.
            shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
            self.wake_if_waiting(&shared.not_empty);
        }
    }

    /// Returns a dead participant's record to the free list.
    fn free_record(&self, record: &ParticipantRecord) {
        let shared = self.memory.shared();
        // Relaxed: the owner is dead; nothing races on its record but registrants,
        // which wait for our release of its liveness lock (below).
        let counted = record.waiting.swap(0, Ordering::Relaxed);
        if counted & waiting::NOT_EMPTY != 0 {
            // Relaxed: returning a leaked count can only remove a spare wake-up.
            shared.not_empty.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        if counted & waiting::NOT_FULL != 0 {
            // Relaxed: as above.
            shared.not_full.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        // Relaxed: ordered for a registrant by our release of the liveness lock, as
        // the state below; other sweepers read them under the recovery lock.
        record.enqueue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        record.dequeue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        // Relaxed: ordered by the record's liveness lock, which `repair` holds while
        // we free the record and releases after: a registrant's `try_own` acquires
        // it (`Platform` docs) before its CAS reads FREE, and so sees the resets.
        record.state.store(participant::FREE, Ordering::Relaxed);
        // Relaxed: a statistic.
        shared.stats.freed.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives this participant's record back (the handle is going away); `Drop`
    /// then releases the liveness.
    pub(super) fn unregister(&self) {
        let record = self.record();
        // Release: pairs with a sweeper's Acquire claim load in `live_holder`: one that
        // reads CLAIM_NONE here (a value later than our last claim) must also see the
        // slot we finished as done, or it takes a message we received for a dead
        // participant's (live_consumer_leaving_is_not_redelivered) or skips one we
        // published (live_producer_leaving_is_not_skipped).
        record.enqueue_claim.store(CLAIM_NONE, Ordering::Release);
        // Release: as above.
        record.dequeue_claim.store(CLAIM_NONE, Ordering::Release);
        // Relaxed: the next owner of the record gets it after `Drop` releases our
        // liveness lock (`Platform` docs); a sweeper reads it only once we are dead.
        record.waiting.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire state load in `live_holder`, which may read
        // FREE after our last claim (before its reset): the slot we finished must
        // then be done for it. The next registrant needs no Release: it owns our
        // liveness lock only after `Drop` releases it.
        record.state.store(participant::FREE, Ordering::Release);
    }

    /// Crash hook for the loom models: runs the shipped claim step on `end` and then
    /// dies, as a process killed right after its claim would: the slot is neither
    /// published nor released, the record stays registered, and the liveness is
    /// leaked (the model's platform marks the participant dead). Returns the position
    /// claimed, if the claim succeeded.
    #[cfg(loom)]
    pub fn claim_and_die(self, end: End) -> Option<u64> {
        self.claim_run_and_die(end, 1).map(|(pos, _)| pos)
    }

    /// Crash hook for the loom models: as [`Ring::claim_and_die`], for a batch
    /// claim of up to `max` positions. Returns the run claimed, if any.
    #[cfg(loom)]
    pub fn claim_run_and_die(mut self, end: End, max: u32) -> Option<(u64, u32)> {
        let claimed = self.claim_run(end, max);
        std::mem::forget(self.liveness.take());
        claimed
    }
}
