//! Loom models of registration racing recovery: a new handle takes a participant
//! record while a sweep frees a dead participant's record (or while the record's
//! previous owner leaves cleanly), and the record it gets is clean, its claims are
//! repaired if it dies in turn, and no record is freed twice or from under a live
//! owner.
//!
//! The platform model's liveness is a lock per record (`ModelPlatform`): registering
//! takes it, a clean drop or a death releases it, so a record freed and taken again
//! is alive again, as on the segment's record locks.
#![cfg(loom)]

use loom::thread;
use loom_tests::{assert_repaired_and_usable, check, ring, ModelPlatform, ModelRing, Spin};
use shmq::model::layout::POS_MASK;
use shmq::model::{End, HeapMemory, Ordering, Redelivery, Ring, RingMemory, Scope};

/// Start one position before the wrap, so the claims straddle it.
const NEAR_WRAP: u64 = POS_MASK;

/// A claim word holding no claim (`layout::CLAIM_NONE`: bit 63 set, which no
/// 63-bit position has).
const CLAIM_NONE: u64 = 1 << 63;

/// The participant record state of a registered handle (`layout::participant::ACTIVE`).
const ACTIVE: u64 = 1;

/// Registers a new handle, yielding until a record is free (a sweep or a clean exit
/// frees one), and checks that the record it got names no claim, as the registrant
/// sees it.
fn register_spinning(memory: &std::sync::Arc<HeapMemory>, platform: &ModelPlatform) -> ModelRing {
    let mut spin = Spin::default();
    let ring = loop {
        match Ring::register(memory.clone(), platform.clone(), 99, 0) {
            Some(ring) => break ring,
            None => spin.failed(),
        }
    };
    let record = memory.participant(ring.participant_index());
    // Relaxed: what the registrant sees of its record is what registration's
    // Acquire gave it; the loads add nothing.
    let claims = [
        record.enqueue_claim.load(Ordering::Relaxed),
        record.dequeue_claim.load(Ordering::Relaxed),
    ];
    assert_eq!(
        claims, [CLAIM_NONE; 2],
        "a registrant starts with no claims"
    );
    ring
}

/// A producer died holding a claim; a sweeper sweeps twice with
/// `Scope::Housekeeping`, which skips the dead producer's slot and frees its record,
/// while a new handle registers (waiting for a free record), gets that record, and
/// itself dies holding a claim. Asserts: the registrant sees no claim in its record
/// (the dead producer's claim was reset before the record was freed); both dead
/// claims are skipped, once each (the registrant's claim, stored after the reset, is
/// the one a later sweep reads); the record is freed once per death; the ring is
/// usable.
///
/// Bound: 4 preemptions: the sweeper between its reset of the claims and the
/// release of the record, the registrant between its registration and its claim,
/// the sweeper's second sweep inside its judgment of the registrant's record, and
/// one spare (5 preemptions: about 450 executions, passing too).
#[test]
fn registrant_reuses_a_dead_record_freed_by_a_sweep() {
    check(
        "registrant_reuses_a_dead_record_freed_by_a_sweep",
        4,
        || {
            let (memory, platform, mut rings) = ring(2, 2, NEAR_WRAP);
            let sweeper = rings.pop().unwrap();
            let dying = rings.pop().unwrap();
            let dead_index = dying.participant_index();
            assert!(dying.claim_and_die(End::Enqueue).is_some());
            platform.kill(dead_index);
            let registers = {
                let (memory, platform) = (memory.clone(), platform.clone());
                thread::spawn(move || {
                    let registrant = register_spinning(&memory, &platform);
                    let index = registrant.participant_index();
                    assert_eq!(index, dead_index, "the only record a sweep can free");
                    assert!(registrant.claim_and_die(End::Enqueue).is_some());
                    platform.kill(index);
                })
            };
            for _ in 0..2 {
                let sweep = sweeper.sweep(Scope::Housekeeping, Redelivery::Leave);
                assert!(!sweep.busy && !sweep.dead_consumer_pending);
            }
            registers.join().unwrap();
            assert_repaired_and_usable(&sweeper);
            let stats = &memory.shared().stats;
            // Relaxed: every thread has been joined.
            assert_eq!(stats.skipped.load(Ordering::Relaxed), 2, "both dead claims");
            // Relaxed: as above.
            assert_eq!(stats.freed.load(Ordering::Relaxed), 2, "once per death");
        },
    );
}

/// A participant leaves cleanly (drops its handle: its record is freed, then its
/// liveness lock released) while a sweeper sweeps with `Scope::Housekeeping` and a
/// new handle registers, waiting for a free record, and then dies holding a claim.
/// Asserts: the registrant gets the record the leaver freed, with no claim in it;
/// while it is registered its record stays ACTIVE (a sweep that judged the leaver
/// dead must not free the record from under the registrant that took it since);
/// its claim is skipped once after its death; exactly one record is freed by a
/// sweep (the registrant's, once it is dead: a clean exit is not a repair); the ring
/// is usable.
///
/// Bound: 4 preemptions: the sweeper after reading the leaver's record ACTIVE (the
/// leaver then frees it and unlocks), the sweeper again after its death check (the
/// registrant then takes the record), one for the registrant between its
/// registration and its claim, and one spare (5 preemptions: about 33 000
/// executions in 4 s, passing too).
#[test]
fn clean_exit_racing_a_sweep_and_a_registrant() {
    check("clean_exit_racing_a_sweep_and_a_registrant", 4, || {
        let (memory, platform, mut rings) = ring(2, 2, NEAR_WRAP);
        let sweeper = rings.pop().unwrap();
        let leaver = rings.pop().unwrap();
        let leaver_index = leaver.participant_index();
        let leaves = thread::spawn(move || drop(leaver));
        let registers = {
            let (memory, platform) = (memory.clone(), platform.clone());
            thread::spawn(move || {
                let registrant = register_spinning(&memory, &platform);
                let index = registrant.participant_index();
                assert_eq!(index, leaver_index, "the only record that can be free");
                assert!(registrant.claim_and_die(End::Enqueue).is_some());
                // Relaxed: our own record; a sweep could only have freed it from
                // under us (the death is below).
                let state = memory.participant(index).state.load(Ordering::Relaxed);
                assert_eq!(
                    state, ACTIVE,
                    "the record was freed under a live registrant"
                );
                platform.kill(index);
            })
        };
        let sweep = sweeper.sweep(Scope::Housekeeping, Redelivery::Leave);
        assert!(!sweep.busy && !sweep.dead_consumer_pending);
        leaves.join().unwrap();
        registers.join().unwrap();
        assert_repaired_and_usable(&sweeper);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        assert_eq!(
            stats.skipped.load(Ordering::Relaxed),
            1,
            "the registrant's claim"
        );
        // Relaxed: as above.
        assert_eq!(
            stats.freed.load(Ordering::Relaxed),
            1,
            "the registrant's record"
        );
    });
}
