//! Loom models of crash recovery: a participant stops forever between claim and
//! publish (or claim and release), a recoverer sweeps concurrently, and nothing
//! committed is lost or delivered twice.
//!
//! A crash is modelled with the ring's hook `claim_and_die`, which runs the shipped
//! claim step (record store, cursor CAS: the very code `try_send` and `try_recv` use)
//! and stops without publishing, releasing or unregistering, followed by
//! `ModelPlatform::kill` from the same thread: the kernel drops a dead process's
//! liveness lock only after it has stopped.
#![cfg(loom)]

use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_exactly_once, assert_per_producer_order, assert_repaired_and_usable, check,
    die_after_recording_claim, ring, try_recv, Message, ModelRing, Spin,
};
use shmq::model::layout::POS_MASK;
use shmq::model::{End, Ordering, Redelivery, RingMemory, Scope};
use shmq::TryRecvError;

/// Start one position before the wrap, so claims, skips and redeliveries straddle it.
const NEAR_WRAP: u64 = POS_MASK;

fn decode(bytes: &[u8]) -> Message {
    assert_eq!(bytes.len(), 2, "torn message length");
    (bytes[0], bytes[1])
}

/// Sweeps, taking a dead consumer's message if there is one, and reads it.
fn sweep_taking(ring: &ModelRing) -> Option<Message> {
    let sweep = ring.sweep(Scope::Outstanding, Redelivery::TakeOne);
    match sweep.redelivered {
        Some(Ok(message)) => Some(message.read(decode)),
        None => None,
        Some(Err(e)) => panic!("redelivery failed: {e:?}"),
    }
}

/// A producer claims a slot and dies before publishing while a live producer sends
/// one message and a consumer receives, sweeping whenever it finds the ring empty.
/// Asserts: the committed message is delivered exactly once; the dead producer's
/// slot is published as a skip at most once (exactly once if its claim succeeded)
/// and stepped over; the ring is usable afterwards. The dying producer's claim may
/// also fail (the live one took the position), leaving a stale claim in its record
/// that names the live producer's slot: the sweep must not skip that slot.
///
/// Bound: 3 preemptions: the dying producer between record store and CAS, the live
/// producer between claim and publish, and the consumer between its liveness check
/// and its repair, in any combination.
#[test]
fn dead_producer_slot_is_skipped_not_lost() {
    check("dead_producer_slot_is_skipped_not_lost", 3, || {
        let (memory, platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let live = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        let dies = thread::spawn(move || {
            let index = dying.participant_index();
            let claimed = dying.claim_and_die(End::Enqueue);
            platform.kill(index);
            claimed
        });
        // The live handle comes back to be dropped after the join: a clean exit racing
        // the sweep is `clean_exit_racing_a_sweep_and_a_registrant`'s subject.
        let sends = thread::spawn(move || {
            live.try_send(&[1, 0])
                .expect("two slots, at most one held by the dead producer");
            live
        });
        let mut spin = Spin::default();
        let message = loop {
            match try_recv(&consumer) {
                Ok(message) => break message,
                Err(TryRecvError::Empty) => {
                    let sweep = consumer.sweep(Scope::Outstanding, Redelivery::Leave);
                    assert!(sweep.redelivered.is_none() && !sweep.dead_consumer_pending);
                    spin.failed();
                }
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        };
        assert_eq!(message, (1, 0));
        let claimed = dies.join().unwrap();
        sends.join().unwrap();
        assert_repaired_and_usable(&consumer);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        let skipped = stats.skipped.load(Ordering::Relaxed);
        assert_eq!(skipped, u64::from(claimed.is_some()), "skips: {skipped}");
    });
}

/// A consumer claims a message and dies before releasing it, while a producer sends
/// a second message and another consumer receives, sweeping with a delivery closure
/// whenever it finds the ring empty. Asserts: both messages are delivered exactly
/// once in all (the dead consumer never got its message, so it is redelivered once,
/// to the sweeper, and never twice); in order when nothing was redelivered; the ring
/// is usable afterwards.
///
/// Bound: 3 preemptions: the dying consumer between record store and CAS, the
/// producer between claim and publish, and the sweeper inside its sweep.
#[test]
fn dead_consumer_message_is_redelivered_once() {
    check("dead_consumer_message_is_redelivered_once", 3, || {
        let (memory, platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let sweeper = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        producer.try_send(&[0, 0]).unwrap();
        let dies = thread::spawn(move || {
            let index = dying.participant_index();
            let claimed = dying.claim_and_die(End::Dequeue);
            platform.kill(index);
            claimed
        });
        // Returned, to be dropped after the join (as in the model above).
        let sends = thread::spawn(move || {
            producer
                .try_send(&[0, 1])
                .expect("two slots, one message in the ring");
            producer
        });
        let mut got = Vec::new();
        let mut spin = Spin::default();
        while got.len() < 2 {
            match try_recv(&sweeper) {
                Ok(message) => {
                    got.push(message);
                    spin.progressed();
                }
                Err(TryRecvError::Empty) => {
                    let sweep = sweeper.sweep(Scope::Outstanding, Redelivery::TakeOne);
                    assert!(!sweep.busy, "the only sweeper");
                    match sweep.redelivered {
                        Some(Ok(message)) => {
                            got.push(message.read(decode));
                            spin.progressed();
                        }
                        None => spin.failed(),
                        Some(Err(e)) => panic!("redelivery failed: {e:?}"),
                    }
                }
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        }
        let claimed = dies.join().unwrap();
        sends.join().unwrap();
        assert_exactly_once(&got, &[(0, 0), (0, 1)]);
        // Relaxed: every thread has been joined.
        let redelivered = memory.shared().stats.redelivered.load(Ordering::Relaxed);
        assert_eq!(redelivered, u64::from(claimed.is_some()));
        if claimed.is_none() {
            assert_per_producer_order(&got);
        }
        assert_repaired_and_usable(&sweeper);
    });
}

/// Two consumers sweep concurrently after a consumer died holding message (0, 0)
/// and a producer died holding the next free slot. Both sweepers receive and sweep
/// (with delivery) until both messages are out. Asserts: each message delivered
/// exactly once in all, one redelivery and one skip in total (the recovery lock lets
/// one sweeper repair; the other gets `busy` or finds nothing), and the ring is
/// usable afterwards.
///
/// Bound: 2 preemptions: one sweeper inside its repair (between the liveness check
/// and the skip CAS, or between reading the redelivered message and releasing it)
/// while the other receives and sweeps, and one more anywhere. (3 preemptions take
/// two minutes here and found nothing more.)
#[test]
fn two_sweepers_repair_once() {
    check("two_sweepers_repair_once", 2, || {
        let (memory, platform, mut rings) = ring(4, 4, NEAR_WRAP);
        let second = rings.pop().unwrap();
        let first = rings.pop().unwrap();
        let dead_producer = rings.pop().unwrap();
        let dead_consumer = rings.pop().unwrap();
        first.try_send(&[0, 0]).unwrap();
        first.try_send(&[0, 1]).unwrap();
        let dead_consumer_index = dead_consumer.participant_index();
        assert!(dead_consumer.claim_and_die(End::Dequeue).is_some());
        platform.kill(dead_consumer_index);
        let dead_producer_index = dead_producer.participant_index();
        assert!(dead_producer.claim_and_die(End::Enqueue).is_some());
        platform.kill(dead_producer_index);

        let total = Arc::new(AtomicUsize::new(0));
        let sweepers: Vec<_> = [first, second]
            .into_iter()
            .map(|ring| {
                let total = total.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut spin = Spin::default();
                    // SeqCst: harness bookkeeping, outside the algorithm.
                    while total.load(Ordering::SeqCst) < 2 {
                        let message = match try_recv(&ring) {
                            Ok(message) => Some(message),
                            Err(TryRecvError::Empty) => sweep_taking(&ring),
                            Err(e) => panic!("unexpected receive error {e:?}"),
                        };
                        match message {
                            Some(message) => {
                                got.push(message);
                                spin.progressed();
                                // SeqCst: as above.
                                total.fetch_add(1, Ordering::SeqCst);
                            }
                            None => spin.failed(),
                        }
                    }
                    (got, ring)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut last = None;
        for sweeper in sweepers {
            let (got, ring) = sweeper.join().unwrap();
            all.extend(got);
            last = Some(ring);
        }
        assert_exactly_once(&all, &[(0, 0), (0, 1)]);
        let last = last.unwrap();
        assert_repaired_and_usable(&last);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        assert_eq!(stats.redelivered.load(Ordering::Relaxed), 1);
        // Relaxed: as above.
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 1);
    });
}

/// A consumer died inside its claim step, after recording the head position `p` and
/// before its CAS, so its record names a message it never took. A live consumer then
/// receives twice in a row: it takes `p` (the dead record's position), releases it,
/// and its record moves on, to `p + 1`, or, when its claim of `p + 1` loses to the
/// sweeper, to "no claim". The sweeper receives once and then sweeps once with
/// `Scope::Outstanding` and once with `Scope::Housekeeping`, both taking a dead
/// consumer's message if they judge one stuck. Asserts: each message is delivered
/// exactly once in all (received, redelivered or left for the final drain; the live
/// consumer's in order); the sweeps redeliver nothing and skip nothing; the dead
/// record is freed exactly once; the ring is usable.
///
/// The sweeper must not conclude from the live record's *later* value (`p + 1`, or
/// none after a lost claim) that nobody holds `p` unless its view of `p`'s slot is at
/// least as new as that record: the record moves on only after `p` was released
/// (module docs of the ring, "Claim records").
///
/// Bound: 4 preemptions. Taking the live consumer's message for the dead one's needs
/// the sweeper to judge `p` outstanding while the live consumer holds it (one
/// preemption of the consumer between claim and release, or a stale read of the
/// slot) and then to scan the records after the consumer moved on (one preemption of
/// the sweeper between its outstanding check and its record scan); a third puts the
/// consumer between its second record store and its CAS, where the sweeper's receive
/// takes `p + 1` from under it; the fourth is spare, anywhere (cheap here: 5
/// preemptions explore about 10 000 executions in a second and pass too).
#[test]
fn live_consumer_claiming_twice_is_not_redelivered() {
    check("live_consumer_claiming_twice_is_not_redelivered", 4, || {
        let (memory, platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let sweeper = rings.pop().unwrap();
        let live = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        sweeper.try_send(&[0, 0]).unwrap();
        sweeper.try_send(&[0, 1]).unwrap();
        // The ring is full, so the dying consumer's death claims nothing at the other end.
        die_after_recording_claim(dying, &platform, End::Dequeue);
        let receives = thread::spawn(move || {
            let got: Vec<Message> = (0..2).filter_map(|_| try_recv(&live).ok()).collect();
            (got, live)
        });
        let mut all: Vec<Message> = try_recv(&sweeper).ok().into_iter().collect();
        for scope in [Scope::Outstanding, Scope::Housekeeping] {
            let sweep = sweeper.sweep(scope, Redelivery::TakeOne);
            assert!(!sweep.busy, "the only sweeper");
            assert_eq!(sweep.skipped, 0, "no producer died");
            if let Some(message) = sweep.redelivered {
                all.push(message.expect("a sound length").read(decode));
            }
        }
        let (got, live) = receives.join().unwrap();
        assert_per_producer_order(&got);
        all.extend(got);
        all.extend(try_recv(&sweeper).ok());
        all.extend(try_recv(&sweeper).ok());
        assert_exactly_once(&all, &[(0, 0), (0, 1)]);
        drop(live);
        assert_repaired_and_usable(&sweeper);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        assert_eq!(stats.redelivered.load(Ordering::Relaxed), 0);
        // Relaxed: as above.
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 0);
        // Relaxed: as above.
        assert_eq!(
            stats.freed.load(Ordering::Relaxed),
            1,
            "the dead record, once"
        );
    });
}

/// The producer side: a producer died inside its claim step, after recording the
/// tail position `p` and before its CAS. A live producer then sends twice in a row:
/// it takes `p`, publishes it, and its record moves on to `p + 1`, while a consumer
/// sweeps once with `Scope::Outstanding` and once with `Scope::Housekeeping`.
/// Asserts: no skip is published or counted, and both messages are then received,
/// in order (a sweep that judged the live producer's slot a dead one's would mark it
/// skipped, and the consumer would step over the message); the dead record is freed
/// exactly once; the ring is usable.
///
/// Bound: 4 preemptions, as in the consumer model above.
#[test]
fn live_producer_claiming_twice_is_not_skipped() {
    check("live_producer_claiming_twice_is_not_skipped", 4, || {
        let (memory, platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let live = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        // The ring is empty, so the dying producer's death claims nothing at the other end.
        die_after_recording_claim(dying, &platform, End::Enqueue);
        let sends = thread::spawn(move || {
            live.try_send(&[1, 0]).expect("two free slots");
            live.try_send(&[1, 1]).expect("two free slots");
            live
        });
        for scope in [Scope::Outstanding, Scope::Housekeeping] {
            let sweep = consumer.sweep(scope, Redelivery::Leave);
            assert!(!sweep.busy && !sweep.dead_consumer_pending);
            assert_eq!(sweep.skipped, 0, "the live producer's slot was skipped");
        }
        drop(sends.join().unwrap());
        let got = [try_recv(&consumer), try_recv(&consumer)];
        assert_eq!(got.map(|r| r.ok()), [Some((1, 0)), Some((1, 1))]);
        assert_repaired_and_usable(&consumer);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 0);
        // Relaxed: as above.
        assert_eq!(
            stats.freed.load(Ordering::Relaxed),
            1,
            "the dead record, once"
        );
    });
}

/// A consumer died inside its claim step, after recording the head position `p` and
/// before its CAS. A live consumer then receives once (it takes `p`, the dead record's
/// position, and releases it) and leaves cleanly: it drops its handle, which resets
/// its claims, frees its record and releases its liveness lock. Meanwhile the
/// sweeper sweeps once with `Scope::Outstanding` and once with
/// `Scope::Housekeeping`, both taking a dead consumer's message if they judge one
/// stuck. Asserts: each message is delivered exactly once in all; nothing is
/// redelivered; the dead record is freed exactly once (the leaver's is given back,
/// not freed by a sweep); the ring is usable.
///
/// The sweeper scans the leaver's record while it goes: it may read `p` there (from
/// before the leaver finished `p`) and then FREE, or read the reset CLAIM_NONE. Either
/// way "no live holder" may be concluded only with the leaver's release of `p` in
/// view, which the Release resets and the Release of FREE in `unregister` give (with
/// `live_holder`'s Acquire loads); no liveness check follows there.
///
/// Bound: 4 preemptions, as in `live_consumer_claiming_twice_is_not_redelivered`:
/// the sweeper between its outstanding check and its record scan, the consumer
/// between claim and release and inside its exit, and one spare.
#[test]
fn live_consumer_leaving_is_not_redelivered() {
    check("live_consumer_leaving_is_not_redelivered", 4, || {
        let (memory, platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let sweeper = rings.pop().unwrap();
        let leaver = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        sweeper.try_send(&[0, 0]).unwrap();
        sweeper.try_send(&[0, 1]).unwrap();
        // The ring is full, so the dying consumer's death claims nothing at the other end.
        die_after_recording_claim(dying, &platform, End::Dequeue);
        let leaves = thread::spawn(move || {
            let got = try_recv(&leaver).expect("two messages, none taken yet");
            drop(leaver);
            got
        });
        let mut all = Vec::new();
        for scope in [Scope::Outstanding, Scope::Housekeeping] {
            let sweep = sweeper.sweep(scope, Redelivery::TakeOne);
            assert!(!sweep.busy, "the only sweeper");
            assert_eq!(sweep.skipped, 0, "no producer died");
            if let Some(message) = sweep.redelivered {
                all.push(message.expect("a sound length").read(decode));
            }
        }
        all.push(leaves.join().unwrap());
        all.extend(try_recv(&sweeper).ok());
        all.extend(try_recv(&sweeper).ok());
        assert_exactly_once(&all, &[(0, 0), (0, 1)]);
        assert_repaired_and_usable(&sweeper);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        assert_eq!(stats.redelivered.load(Ordering::Relaxed), 0);
        // Relaxed: as above.
        assert_eq!(
            stats.freed.load(Ordering::Relaxed),
            1,
            "the dead record, once"
        );
    });
}

/// The producer side: a producer died inside its claim step, after recording the
/// tail position `p` and before its CAS. A live producer then sends once (it takes
/// `p` and publishes it) and leaves cleanly, while a consumer sweeps once with
/// `Scope::Outstanding` and once with `Scope::Housekeeping`. Asserts: no skip is
/// published or counted, and the message is then received (a sweep that judged the
/// leaver's slot the dead producer's would store the skip length over the message,
/// and the consumer would step over it); the dead record is freed exactly once; the
/// ring is usable.
///
/// Bound: 4 preemptions, as in the consumer model above.
#[test]
fn live_producer_leaving_is_not_skipped() {
    check("live_producer_leaving_is_not_skipped", 4, || {
        let (memory, platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let leaver = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        // The ring is empty, so the dying producer's death claims nothing at the other end.
        die_after_recording_claim(dying, &platform, End::Enqueue);
        let leaves = thread::spawn(move || {
            leaver.try_send(&[1, 0]).expect("two free slots");
            drop(leaver);
        });
        for scope in [Scope::Outstanding, Scope::Housekeeping] {
            let sweep = consumer.sweep(scope, Redelivery::Leave);
            assert!(!sweep.busy && !sweep.dead_consumer_pending);
            assert_eq!(sweep.skipped, 0, "the live producer's slot was skipped");
        }
        leaves.join().unwrap();
        assert_eq!(
            try_recv(&consumer).ok(),
            Some((1, 0)),
            "the leaver's message was lost"
        );
        assert_repaired_and_usable(&consumer);
        let stats = &memory.shared().stats;
        // Relaxed: every thread has been joined.
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 0);
        // Relaxed: as above.
        assert_eq!(
            stats.freed.load(Ordering::Relaxed),
            1,
            "the dead record, once"
        );
    });
}
