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
    assert_exactly_once, assert_per_producer_order, check, ring, try_recv, Message, ModelRing, Spin,
};
use shmq::model::layout::POS_MASK;
use shmq::model::{End, Ordering, Redelivery, RingMemory, Scope};
use shmq::{TryRecvError, TrySendError};

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

/// Once every thread is gone: a final sweep leaves nothing outstanding, the ring is
/// empty, and it still answers exactly (full after `capacity` sends, FIFO after).
fn assert_repaired_and_usable(ring: &ModelRing) {
    let sweep = ring.sweep(Scope::Housekeeping, Redelivery::Leave);
    assert!(!sweep.busy && !sweep.dead_consumer_pending);
    assert!(matches!(try_recv(ring), Err(TryRecvError::Empty)));
    let capacity = ring.capacity() as u8;
    for n in 0..capacity {
        ring.try_send(&[9, n])
            .expect("a repaired, drained ring has room");
    }
    assert!(matches!(ring.try_send(&[9, 99]), Err(TrySendError::Full)));
    for n in 0..capacity {
        assert_eq!(try_recv(ring).unwrap(), (9, n));
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
        let sends = thread::spawn(move || {
            live.try_send(&[1, 0])
                .expect("two slots, at most one held by the dead producer");
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
        let sends = thread::spawn(move || {
            producer
                .try_send(&[0, 1])
                .expect("two slots, one message in the ring");
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
