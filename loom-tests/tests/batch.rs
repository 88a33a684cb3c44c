//! Loom models of batches (issue 11): one claim on a cursor covering a run of
//! consecutive positions. Two batch producers against a single consumer, a batch
//! consumer racing a single consumer, and a participant that dies holding a run
//! (each position of it is then skipped or redelivered on its own).
#![cfg(loom)]

use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_exactly_once, assert_per_producer_order, assert_repaired_and_usable, check, ring,
    try_recv, Message, ModelPlatform, ModelRing, Spin,
};
use shmq::model::layout::POS_MASK;
use shmq::model::{End, Ordering, Redelivery, RingMemory, Scope};
use shmq::TryRecvError;

/// One position before the 63-bit wrap, so runs straddle it.
const NEAR_WRAP: u64 = POS_MASK;

fn decode(bytes: &[u8]) -> Message {
    assert_eq!(bytes.len(), 2, "torn message length");
    (bytes[0], bytes[1])
}

/// Sends `messages` in order with batch claims, retrying while full.
fn send_batch_spinning(ring: &ModelRing, messages: &[[u8; 2]]) {
    let mut sent = 0;
    let mut spin = Spin::default();
    while sent < messages.len() {
        match ring.try_send_batch(&messages[sent..]) {
            Ok(0) => spin.failed(),
            Ok(n) => {
                sent += n;
                spin.progressed();
            }
            Err(e) => panic!("batch send failed: {e:?}"),
        }
    }
}

/// Two producers each send two messages as one batch (a run of two, or two runs
/// of one when the ring has room for only one) through two slots, while one consumer
/// receives singly. Asserts: every message exactly once, each producer's in order.
#[test]
fn two_batch_producers_and_a_single_consumer() {
    check("two_batch_producers_and_a_single_consumer", 2, || {
        let (_memory, _platform, mut rings) = ring(2, 3, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let second = rings.pop().unwrap();
        let first = rings.pop().unwrap();
        let producers: Vec<_> = [(first, 0u8), (second, 1u8)]
            .into_iter()
            .map(|(ring, id)| {
                thread::spawn(move || {
                    send_batch_spinning(&ring, &[[id, 0], [id, 1]]);
                    ring
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut spin = Spin::default();
        while got.len() < 4 {
            match try_recv(&consumer) {
                Ok(message) => {
                    got.push(message);
                    spin.progressed();
                }
                Err(TryRecvError::Empty) => spin.failed(),
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        }
        for producer in producers {
            drop(producer.join().unwrap());
        }
        assert_exactly_once(&got, &[(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert_per_producer_order(&got);
        assert_repaired_and_usable(&consumer);
    });
}

/// Three messages wait in four slots; a batch consumer (runs of up to three) races
/// a single consumer until all three are taken. Asserts: every message exactly once,
/// each consumer's in order.
#[test]
fn batch_consumer_races_a_single_consumer() {
    check("batch_consumer_races_a_single_consumer", 3, || {
        let (_memory, _platform, mut rings) = ring(4, 3, NEAR_WRAP);
        let single = rings.pop().unwrap();
        let batch = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        for n in 0..3 {
            producer.try_send(&[0, n]).unwrap();
        }
        let total = Arc::new(AtomicUsize::new(0));
        let batch_total = total.clone();
        let batcher = thread::spawn(move || {
            let mut got = Vec::new();
            let mut spin = Spin::default();
            // SeqCst: harness bookkeeping only.
            while batch_total.load(Ordering::SeqCst) < 3 {
                match batch.try_recv_batch_with(3, |bytes| got.push(decode(bytes))) {
                    Ok(0) => spin.failed(),
                    Ok(n) => {
                        // SeqCst: as above.
                        batch_total.fetch_add(n, Ordering::SeqCst);
                        spin.progressed();
                    }
                    Err(e) => panic!("batch receive failed: {e:?}"),
                }
            }
            (batch, got)
        });
        let mut mine = Vec::new();
        let mut spin = Spin::default();
        // SeqCst: as above.
        while total.load(Ordering::SeqCst) < 3 {
            match try_recv(&single) {
                Ok(message) => {
                    mine.push(message);
                    // SeqCst: as above.
                    total.fetch_add(1, Ordering::SeqCst);
                    spin.progressed();
                }
                Err(TryRecvError::Empty) => spin.failed(),
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        }
        let (batch, theirs) = batcher.join().unwrap();
        assert_per_producer_order(&mine);
        assert_per_producer_order(&theirs);
        let all: Vec<Message> = mine.into_iter().chain(theirs).collect();
        assert_exactly_once(&all, &[(0, 0), (0, 1), (0, 2)]);
        drop(batch);
        drop(producer);
        assert_repaired_and_usable(&single);
    });
}

/// A consumer dies holding a run of two messages; a live consumer sweeps while a
/// producer sends a third. Asserts: the dead run's messages are each delivered again
/// exactly once (two take-overs), the third once, and the ring is repaired.
#[test]
fn consumer_dying_mid_batch_has_each_message_redelivered() {
    check(
        "consumer_dying_mid_batch_has_each_message_redelivered",
        3,
        || {
            let (memory, platform, mut rings) = ring(4, 3, NEAR_WRAP);
            let sweeper = rings.pop().unwrap();
            let dying = rings.pop().unwrap();
            let producer = rings.pop().unwrap();
            producer.try_send(&[0, 0]).unwrap();
            producer.try_send(&[0, 1]).unwrap();
            let dies = thread::spawn(move || {
                let index = dying.participant_index();
                let claimed = dying.claim_run_and_die(End::Dequeue, 2);
                platform.kill(index);
                claimed
            });
            let sends = thread::spawn(move || {
                producer.try_send(&[0, 2]).expect("room for a third");
                producer
            });
            let mut got = Vec::new();
            let mut spin = Spin::default();
            while got.len() < 3 {
                match try_recv(&sweeper) {
                    Ok(message) => {
                        got.push(message);
                        spin.progressed();
                    }
                    Err(TryRecvError::Empty) => {
                        let sweep = sweeper.sweep(Scope::Housekeeping, Redelivery::TakeOne);
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
            drop(sends.join().unwrap());
            assert_exactly_once(&got, &[(0, 0), (0, 1), (0, 2)]);
            // Relaxed: every thread has been joined.
            let redelivered = memory.shared().stats.redelivered.load(Ordering::Relaxed);
            assert_eq!(
                redelivered,
                u64::from(claimed.map_or(0, |(_, count)| count))
            );
            assert_repaired_and_usable(&sweeper);
        },
    );
}

/// A producer dies holding a run of two free slots; a second producer sends one
/// message and a consumer receives, sweeping when the ring looks empty. Asserts:
/// both dead positions are skipped, the live message arrives once, and the ring is
/// repaired.
#[test]
fn producer_dying_mid_batch_has_each_slot_skipped() {
    check("producer_dying_mid_batch_has_each_slot_skipped", 3, || {
        let (memory, platform, mut rings) = ring(4, 3, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let live = rings.pop().unwrap();
        let dying = rings.pop().unwrap();
        let dies = thread::spawn(move || {
            let index = dying.participant_index();
            let claimed = dying.claim_run_and_die(End::Enqueue, 2);
            platform.kill(index);
            claimed
        });
        let sends = thread::spawn(move || {
            live.try_send(&[1, 0]).expect("room for one");
            live
        });
        let got = {
            let mut spin = Spin::default();
            loop {
                match try_recv(&consumer) {
                    Ok(message) => break message,
                    Err(TryRecvError::Empty) => {
                        consumer.sweep(Scope::Housekeeping, Redelivery::Leave);
                        spin.failed();
                    }
                    Err(e) => panic!("unexpected receive error {e:?}"),
                }
            }
        };
        let claimed = dies.join().unwrap();
        drop(sends.join().unwrap());
        assert_eq!(got, (1, 0));
        // Relaxed: every thread has been joined. The sweep that let the message
        // through may not have been the last: sweep once more.
        consumer.sweep(Scope::Housekeeping, Redelivery::Leave);
        let skipped = memory.shared().stats.skipped.load(Ordering::Relaxed);
        assert!(skipped <= u64::from(claimed.map_or(0, |(_, count)| count)));
        assert_repaired_and_usable(&consumer);
        assert_eq!(
            memory.shared().stats.skipped.load(Ordering::Relaxed),
            u64::from(claimed.map_or(0, |(_, count)| count)),
            "every position of the dead run is skipped"
        );
    });
}

/// A batch consumer died inside its claim step after recording a run of two from
/// the head `p` (run length, then position) and before its CAS, so its record names
/// `p` and `p + 1` without holding them. A live consumer then takes `p` and `p + 1`
/// as a batch, releases them, and receives `p + 2` singly (its run word goes back to
/// one), while a sweeper sweeps twice taking any dead consumer's message (the fourth
/// message is drained at the end). Asserts: each message delivered exactly once in
/// all; nothing redelivered.
///
/// The sweeper may read the live record's batch claim (`p`) together with its newer
/// run length (one): then `p + 1` looks held by nobody live, and only the Release of
/// that run store, read by an Acquire, makes the sweeper's second look at `p + 1`'s
/// slot see it released (`record_run`, `live_holder`).
///
/// Bound: 4 preemptions, as in the `live_*_claiming_twice` recovery models.
#[test]
fn live_batch_consumer_moving_on_is_not_redelivered() {
    check(
        "live_batch_consumer_moving_on_is_not_redelivered",
        4,
        || {
            let (memory, platform, mut rings) = ring(4, 3, NEAR_WRAP);
            let sweeper = rings.pop().unwrap();
            let live = rings.pop().unwrap();
            let dying = rings.pop().unwrap();
            // Full, so the dying consumer's death claims nothing at the other end.
            for n in 0..4 {
                sweeper.try_send(&[0, n]).unwrap();
            }
            die_after_recording_run(dying, &platform, 2);
            let receives = thread::spawn(move || {
                let mut got = Vec::new();
                live.try_recv_batch_with(2, |bytes| got.push(decode(bytes)))
                    .expect("a batch");
                got.extend(try_recv(&live).ok());
                (got, live)
            });
            let mut all = Vec::new();
            for scope in [Scope::Outstanding, Scope::Housekeeping] {
                let sweep = sweeper.sweep(scope, Redelivery::TakeOne);
                if let Some(message) = sweep.redelivered {
                    all.push(message.expect("a sound length").read(decode));
                }
            }
            let (got, live) = receives.join().unwrap();
            assert_per_producer_order(&got);
            all.extend(got);
            while let Ok(message) = try_recv(&sweeper) {
                all.push(message);
            }
            assert_exactly_once(&all, &[(0, 0), (0, 1), (0, 2), (0, 3)]);
            drop(live);
            assert_repaired_and_usable(&sweeper);
            // Relaxed: every thread has been joined.
            assert_eq!(memory.shared().stats.redelivered.load(Ordering::Relaxed), 0);
        },
    );
}

/// Kills `ring` as a batch consumer killed inside its claim step would die: after
/// storing a run of `run` and the head position in its record (Release, as the
/// claim step does), before the CAS.
fn die_after_recording_run(ring: ModelRing, platform: &ModelPlatform, run: u32) {
    let index = ring.participant_index();
    let memory = ring.memory().clone();
    let record = memory.participant(index);
    // Relaxed: the model calls this before it spawns any thread.
    let pos = memory.shared().dequeue_pos.value.load(Ordering::Relaxed);
    // Release (both): as the claim step's stores (the spawn orders them anyway).
    record.dequeue_run.store(run, Ordering::Release);
    record.dequeue_claim.store(pos, Ordering::Release);
    assert!(
        ring.claim_and_die(End::Enqueue).is_none(),
        "the ring must be full"
    );
    platform.kill(index);
}
