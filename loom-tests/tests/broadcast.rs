//! Loom models of broadcast segments, on the shipped algorithm
//! (`shmq::broadcast::model::Broadcast` over `BroadcastHeap`).
//!
//! A dead publisher is set up before the model's threads start, as a pre-state:
//! its handle runs the shipped claim step (or only stores its claim word, as a
//! process killed between that store and the tail CAS leaves it) and dies, and the
//! platform model reports its liveness lock released. Only the repair then races
//! the live handles, which keeps the models within loom's branch limit (a dying
//! thread racing them as well did not fit).
//!
//! The threads whose stale reads of initial values matter run in spawned threads,
//! not the model's main thread: the thread that builds the memory has seen every
//! initial value, and loom never hands a thread, after its first yield, a value it
//! had seen before that yield. A subscriber spinning on the main thread could
//! therefore never read the slot's initial length after the skip's stamp, and a
//! Relaxed skip CAS went uncaught.
#![cfg(loom)]

use loom::thread;
use loom_tests::{check, ModelPlatform, Spin};
use shmq::broadcast::model::{Broadcast, BroadcastHeap, BroadcastMemory, Readiness, Role};
use shmq::broadcast::{SlowSubscriber, TryRecvError};
use shmq::model::layout::POS_MASK;
use shmq::model::Ordering;
use shmq::model::Platform;

type Handle = Broadcast<std::sync::Arc<BroadcastHeap>, ModelPlatform>;

/// Start at the last position before the wrap, so a dead publisher's skip sits at
/// `POS_MASK` and the next position wraps to 0.
const NEAR_WRAP: u64 = POS_MASK;

fn handles(policy: SlowSubscriber, roles: &[Role]) -> (ModelPlatform, Vec<Handle>) {
    handles_at(policy, roles, 0, 0)
}

/// Capacity 2, 2-byte messages, one record per role, registered in `roles`' order,
/// and `spare` free records; the tail starts at `initial_position`.
fn handles_at(
    policy: SlowSubscriber,
    roles: &[Role],
    spare: u64,
    initial_position: u64,
) -> (ModelPlatform, Vec<Handle>) {
    handles_sized(2, policy, roles, spare, initial_position)
}

/// As [`handles_at`], with a ring of `capacity` slots.
fn handles_sized(
    capacity: u64,
    policy: SlowSubscriber,
    roles: &[Role],
    spare: u64,
    initial_position: u64,
) -> (ModelPlatform, Vec<Handle>) {
    let records = roles.len() as u64 + spare;
    let memory = std::sync::Arc::new(BroadcastHeap::new(capacity, 2, records, initial_position));
    let platform = ModelPlatform::new(records);
    let handles = roles
        .iter()
        .map(|&role| {
            Broadcast::register(memory.clone(), platform.clone(), role, policy, 1, 0)
                .expect("a free record")
        })
        .collect();
    declare_initial_values_seq_cst(&memory);
    (platform, handles)
}

/// Re-stores, with SeqCst, every word the algorithm loads with SeqCst (the tail, the
/// wait words, the records' roles and cursors), before any model thread starts: a
/// value written by initialisation is not a SeqCst store in loom, so a SeqCst load
/// could return it after a newer SeqCst store, which C++ forbids
/// (`loom_tests::ring`'s helper of the same name explains the gap).
fn declare_initial_values_seq_cst(memory: &BroadcastHeap) {
    let shared = memory.shared();
    // SeqCst: see above.
    let tail = &shared.tail.value;
    tail.store(tail.load(Ordering::Relaxed), Ordering::SeqCst);
    for word in [&shared.not_empty, &shared.not_full] {
        // SeqCst: see above.
        word.waiters
            .store(word.waiters.load(Ordering::Relaxed), Ordering::SeqCst);
        // SeqCst: see above.
        word.epoch
            .store(word.epoch.load(Ordering::Relaxed), Ordering::SeqCst);
    }
    for index in 0..memory.geometry().max_participants {
        let record = memory.record(index);
        // SeqCst: see above.
        record
            .role
            .store(record.role.load(Ordering::Relaxed), Ordering::SeqCst);
        // SeqCst: see above.
        record
            .cursor
            .store(record.cursor.load(Ordering::Relaxed), Ordering::SeqCst);
    }
}

/// Receives until `count` messages or lags have been accounted for; returns the
/// messages and the positions reported missed.
fn receive(subscriber: &Handle, count: u64) -> (Vec<[u8; 2]>, u64) {
    let (mut messages, mut missed) = (Vec::new(), 0);
    let mut spin = Spin::default();
    while (messages.len() as u64) + missed < count {
        match subscriber.try_recv_with(|bytes| Some([bytes[0], bytes[1]])) {
            Ok(message) => messages.push(message),
            Err(TryRecvError::Lagged { missed: n }) => missed += n,
            Err(TryRecvError::Empty) => spin.failed(),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    (messages, missed)
}

/// Two publishers publish one message each while a subscriber (joined before)
/// receives: lossless, it gets both, whole, each exactly once.
#[test]
fn two_publishers_and_a_subscriber_lossless() {
    check("two_publishers_and_a_subscriber_lossless", 2, || {
        let (_platform, mut all) = handles(
            SlowSubscriber::Lossless,
            &[Role::Subscriber, Role::Publisher, Role::Publisher],
        );
        let second = all.pop().unwrap();
        let first = all.pop().unwrap();
        let subscriber = all.pop().unwrap();
        let threads: Vec<_> = [(first, 1u8), (second, 2u8)]
            .into_iter()
            .map(|(publisher, id)| {
                thread::spawn(move || {
                    let mut spin = Spin::default();
                    while publisher.try_publish(&[id, id]).is_err() {
                        spin.failed();
                    }
                })
            })
            .collect();
        let (mut messages, missed) = receive(&subscriber, 2);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(missed, 0, "lossless never lags");
        messages.sort();
        assert_eq!(messages, [[1, 1], [2, 2]]);
    });
}

/// Overwrite mode, capacity 2: a publisher publishes three messages while a
/// subscriber reads. Every message returned is whole (both bytes from one
/// publish) and in order, and received + missed counts exactly the three.
#[test]
fn overwrite_never_returns_a_torn_message_and_lag_counts_exactly() {
    check(
        "overwrite_never_returns_a_torn_message_and_lag_counts_exactly",
        2,
        || {
            let (_platform, mut all) = handles(
                SlowSubscriber::Overwrite,
                &[Role::Subscriber, Role::Publisher],
            );
            let publisher = all.pop().unwrap();
            let subscriber = all.pop().unwrap();
            let publishing = thread::spawn(move || {
                for n in 1..=3u8 {
                    publisher
                        .try_publish(&[n, n])
                        .expect("overwrite never waits");
                }
            });
            let (messages, missed) = receive(&subscriber, 3);
            publishing.join().unwrap();
            for pair in messages.windows(2) {
                assert!(pair[0][0] < pair[1][0], "out of order: {messages:?}");
            }
            for m in &messages {
                assert_eq!(m[0], m[1], "torn message returned: {m:?}");
            }
            assert_eq!(messages.len() as u64 + missed, 3);
        },
    );
}

/// Lossless: a subscriber dies without reading; the publisher, after reclaiming
/// it, publishes past a full ring.
#[test]
fn dead_subscriber_does_not_hold_a_lossless_publisher_back() {
    check(
        "dead_subscriber_does_not_hold_a_lossless_publisher_back",
        2,
        || {
            let (platform, mut all) = handles(
                SlowSubscriber::Lossless,
                &[Role::Subscriber, Role::Publisher],
            );
            let publisher = all.pop().unwrap();
            let subscriber = all.pop().unwrap();
            let dies = thread::spawn(move || {
                let index = subscriber.participant_index();
                subscriber.die();
                platform.kill(index);
            });
            let mut spin = Spin::default();
            for n in 0..3u8 {
                while publisher.try_publish(&[n, n]).is_err() {
                    spin.failed();
                }
            }
            dies.join().unwrap();
        },
    );
}

/// A message's two bytes, asserting the length is a message's (a skip's length or a
/// stale one read as a message shows here).
fn whole(bytes: &[u8]) -> Option<[u8; 2]> {
    assert_eq!(bytes.len(), 2, "not a message's length: {bytes:?}");
    Some([bytes[0], bytes[1]])
}

/// Receives `count` messages, sweeping for dead publishers whenever nothing is
/// ready (as a waiting `Subscriber` does); lossless, so a lag is an error.
fn receive_sweeping(subscriber: &Handle, count: usize) -> Vec<[u8; 2]> {
    let mut messages = Vec::new();
    let mut spin = Spin::default();
    while messages.len() < count {
        match subscriber.try_recv_with(whole) {
            Ok(message) => {
                messages.push(message);
                spin.progressed();
            }
            Err(TryRecvError::Empty) => {
                subscriber.sweep();
                spin.failed();
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    messages
}

/// Publishes `[n, n]` for each `n` in `ids`, retrying while blocked (`try_publish`
/// sweeps for a dead publisher one lap back before it answers `Full`).
fn publish_all(publisher: &Handle, ids: &[u8]) {
    let mut spin = Spin::default();
    for &n in ids {
        while publisher.try_publish(&[n, n]).is_err() {
            spin.failed();
        }
        spin.progressed();
    }
}

/// Everything was received: nothing more is ready, and the segment counted
/// `skips` skips.
fn assert_drained(subscriber: &Handle, skips: u64) {
    assert!(matches!(
        subscriber.try_recv_with(whole),
        Err(TryRecvError::Empty)
    ));
    // Relaxed: every other thread has been joined.
    let skipped = subscriber
        .memory()
        .shared()
        .stats
        .skipped
        .load(Ordering::Relaxed);
    assert_eq!(skipped, skips, "skips made");
}

/// Lossless, capacity 2. Pre-state: a publisher claimed the position at the tail
/// (the shipped claim step: claim word, tail CAS) and died before writing it. Then
/// a live publisher publishes two messages (the second needs the dead one's slot,
/// so it sweeps while blocked on it) while the subscriber receives, sweeping while
/// it waits behind the unpublished slot. Asserts: the subscriber gets both
/// messages, whole and in order, and nothing else (the skip stepped over silently);
/// exactly one skip was made, by whichever sweeper won.
///
/// Bound: 2 preemptions: a sweeper inside its sweep, and the live publisher between
/// claim and publish (3 explores 351 656 executions, a minute and a half).
#[test]
fn dead_publisher_slot_is_skipped_and_stepped_over() {
    check("dead_publisher_slot_is_skipped_and_stepped_over", 2, || {
        let (platform, mut all) = handles_at(
            SlowSubscriber::Lossless,
            &[Role::Subscriber, Role::Publisher, Role::Publisher],
            0,
            NEAR_WRAP,
        );
        let live = all.pop().unwrap();
        let dying = all.pop().unwrap();
        let subscriber = all.pop().unwrap();
        let dead = dying.participant_index();
        assert_eq!(
            dying.claim_and_die(),
            Some(NEAR_WRAP),
            "the claim at the tail"
        );
        platform.kill(dead);
        // The live handle comes back to be dropped after the join: a clean exit
        // racing the sweep is not this model's subject.
        let publishing = thread::spawn(move || {
            publish_all(&live, &[1, 2]);
            live
        });
        let receiving = thread::spawn(move || (receive_sweeping(&subscriber, 2), subscriber));
        let (messages, subscriber) = receiving.join().unwrap();
        let live = publishing.join().unwrap();
        assert_eq!(messages, [[1, 1], [2, 2]]);
        assert_drained(&subscriber, 1);
        drop(live);
    });
}

/// Lossless, capacity 2. Pre-state: a publisher stored the position at the tail in
/// its claim word and died before its tail CAS (a kill between the two), so its
/// record names a position it never took. Then a live publisher takes that position
/// and the next, publishing one message in each, while the subscriber receives,
/// sweeping while it waits. The sweep sees the dead record's claim outstanding (the
/// tail past it, the slot not yet published) and must find the live publisher
/// holding it, or the slot published on its second look. Asserts: both messages
/// received, in order; no skip made (a skip over the live publisher's slot would
/// lose its message, or store the skip length under it).
///
/// Bound: 3 preemptions: the live publisher between claim and publish, and the
/// sweeper between its loads (4 explores 192 470 executions, a minute).
#[test]
fn live_publisher_taking_a_dead_publishers_recorded_position_is_not_skipped() {
    check(
        "live_publisher_taking_a_dead_publishers_recorded_position_is_not_skipped",
        3,
        || {
            let (platform, mut all) = handles_at(
                SlowSubscriber::Lossless,
                &[Role::Subscriber, Role::Publisher, Role::Publisher],
                0,
                NEAR_WRAP,
            );
            let live = all.pop().unwrap();
            let dying = all.pop().unwrap();
            let subscriber = all.pop().unwrap();
            let dead = dying.participant_index();
            let memory = dying.memory().clone();
            // Relaxed: before any model thread starts.
            let tail = memory.shared().tail.value.load(Ordering::Relaxed);
            // Release: as the claim step's store (the spawn orders it anyway).
            memory.record(dead).claim.store(tail, Ordering::Release);
            dying.die();
            platform.kill(dead);
            let publishing = thread::spawn(move || {
                publish_all(&live, &[1, 2]);
                live
            });
            let receiving = thread::spawn(move || (receive_sweeping(&subscriber, 2), subscriber));
            let (messages, subscriber) = receiving.join().unwrap();
            let live = publishing.join().unwrap();
            assert_eq!(messages, [[1, 1], [2, 2]]);
            assert_drained(&subscriber, 0);
            drop(live);
        },
    );
}

/// Lossless, capacity 2. Pre-state as above: a dead publisher's record names the
/// position at the tail, which it never took. A live publisher takes it, publishes
/// one message there and leaves cleanly (its record reset to no claim, then FREE)
/// while the subscriber receives, sweeping while it waits. The sweep may read the
/// live record before or after the reset: either way it must find the slot
/// published on its second look. Asserts: the message received; no skip made.
///
/// Bound: 3 preemptions: the live publisher between claim and publish and inside its
/// exit, and the sweeper between its loads.
#[test]
fn live_publisher_leaving_is_not_skipped() {
    check("live_publisher_leaving_is_not_skipped", 3, || {
        let (platform, mut all) = handles_at(
            SlowSubscriber::Lossless,
            &[Role::Subscriber, Role::Publisher, Role::Publisher],
            0,
            NEAR_WRAP,
        );
        let live = all.pop().unwrap();
        let dying = all.pop().unwrap();
        let subscriber = all.pop().unwrap();
        let dead = dying.participant_index();
        let memory = dying.memory().clone();
        // Relaxed: before any model thread starts.
        let tail = memory.shared().tail.value.load(Ordering::Relaxed);
        // Release: as the claim step's store (the spawn orders it anyway).
        memory.record(dead).claim.store(tail, Ordering::Release);
        dying.die();
        platform.kill(dead);
        let publishing = thread::spawn(move || {
            live.try_publish(&[1, 1]).expect("an empty ring has room");
            drop(live);
        });
        let receiving = thread::spawn(move || (receive_sweeping(&subscriber, 1), subscriber));
        let (messages, subscriber) = receiving.join().unwrap();
        publishing.join().unwrap();
        assert_eq!(messages, [[1, 1]]);
        assert_drained(&subscriber, 0);
    });
}

/// Lossless, capacity 4. Pre-state: a publisher claimed a run of two positions at
/// the tail (the shipped claim step: run word, claim word, one tail CAS by two),
/// published the first `published` of them (the shipped publishing step) and died;
/// the run starts at the last position before the wrap, so it spans it. Then a live
/// publisher publishes one message (at the position after the run: it races the
/// sweep's tail and record loads, never blocked) while the subscriber receives,
/// sweeping while it waits behind the run's unpublished positions. Asserts: the
/// subscriber gets the dead run's published messages, then the live one, in order,
/// whole, nothing twice; the sweep skipped exactly the run's unpublished positions.
fn dead_publisher_mid_run(published: &[&[u8]]) {
    let (platform, mut all) = handles_sized(
        4,
        SlowSubscriber::Lossless,
        &[Role::Subscriber, Role::Publisher, Role::Publisher],
        0,
        NEAR_WRAP,
    );
    let live = all.pop().unwrap();
    let dying = all.pop().unwrap();
    let subscriber = all.pop().unwrap();
    let dead = dying.participant_index();
    assert_eq!(
        dying.claim_run_and_die(2, published),
        Some((NEAR_WRAP, 2)),
        "a run of two at the tail"
    );
    platform.kill(dead);
    let publishing = thread::spawn(move || {
        publish_all(&live, &[9]);
        live
    });
    let expected = published.len() + 1;
    let receiving = thread::spawn(move || (receive_sweeping(&subscriber, expected), subscriber));
    let (messages, subscriber) = receiving.join().unwrap();
    let live = publishing.join().unwrap();
    let mut wanted: Vec<[u8; 2]> = published.iter().map(|m| [m[0], m[1]]).collect();
    wanted.push([9, 9]);
    assert_eq!(messages, wanted);
    assert_drained(&subscriber, 2 - published.len() as u64);
    drop(live);
}

/// [`dead_publisher_mid_run`] with the run's first position published: one skip.
///
/// Bound: 3 preemptions: a sweeper inside its sweep (between its first look at a
/// position, its record loads and its second look), and the live publisher between
/// claim and publish (4 explores 13 526 executions, 1 s).
#[test]
fn dead_publishers_run_half_published_is_skipped_once() {
    check(
        "dead_publishers_run_half_published_is_skipped_once",
        3,
        || dead_publisher_mid_run(&[&[1, 1]]),
    );
}

/// [`dead_publisher_mid_run`] with nothing of the run published: two skips, one per
/// position, both judged from the one claim word and run word.
///
/// Bound: 3 preemptions, as above.
#[test]
fn dead_publishers_unpublished_run_is_skipped_whole() {
    check(
        "dead_publishers_unpublished_run_is_skipped_whole",
        3,
        || dead_publisher_mid_run(&[]),
    );
}

/// Lossless, capacity 4. Pre-state: a publisher stored a run of two at the tail in
/// its record (run word, then claim word) and died before its tail CAS (a kill
/// between the two), so its record names two positions it never took. Then a live
/// publisher takes both with one run claim, publishes them, then claims and
/// publishes one more position alone (its run word goes back to 1), while the
/// subscriber receives, sweeping while it waits. The sweep judges both of the dead
/// record's positions and must find the live run holding them, or them published
/// on its second look: a sweeper that reads the live record's old claim word (the
/// run's) with its new run word (1) must also see the run's second position
/// published (the run word's Release/Acquire pair). Asserts: all three messages
/// received, in order; no skip made (a skip judged on a live position stores the
/// skip length under its message, which the subscriber then steps over).
///
/// Bound: 2 preemptions: the live publisher between its run claim and publish, and
/// the sweeper between its first look at a position and its record loads.
#[test]
fn live_publishers_run_is_never_skipped() {
    check("live_publishers_run_is_never_skipped", 2, || {
        let (platform, mut all) = handles_sized(
            4,
            SlowSubscriber::Lossless,
            &[Role::Subscriber, Role::Publisher, Role::Publisher],
            0,
            NEAR_WRAP,
        );
        let live = all.pop().unwrap();
        let dying = all.pop().unwrap();
        let subscriber = all.pop().unwrap();
        let dead = dying.participant_index();
        let memory = dying.memory().clone();
        // Relaxed: before any model thread starts.
        let tail = memory.shared().tail.value.load(Ordering::Relaxed);
        // Release, both: as the claim step's stores (the spawn orders them anyway).
        memory.record(dead).run.store(2, Ordering::Release);
        memory.record(dead).claim.store(tail, Ordering::Release);
        dying.die();
        platform.kill(dead);
        let publishing = thread::spawn(move || {
            assert!(
                matches!(live.try_publish_run(&[[1u8, 1], [2, 2]]), Ok(2)),
                "an empty ring takes the run whole"
            );
            publish_all(&live, &[3]);
            live
        });
        let receiving = thread::spawn(move || (receive_sweeping(&subscriber, 3), subscriber));
        let (messages, subscriber) = receiving.join().unwrap();
        let live = publishing.join().unwrap();
        assert_eq!(messages, [[1, 1], [2, 2], [3, 3]]);
        assert_drained(&subscriber, 0);
        drop(live);
    });
}

/// Waits the way a blocking handle does, with the shipped halves of the protocol:
/// `register_waiter` (count, epoch, re-check) and `withdraw_waiter`. `Idle` sleeps on
/// the model futex, which never times out, so a lost wake-up is a loom deadlock;
/// `Pending` (a claim in flight) spins instead of the handles' bounded sleep.
fn wait_for_progress(handle: &Handle, platform: &ModelPlatform, spin: &mut Spin) {
    let (epoch, readiness) = handle.register_waiter();
    match readiness {
        Readiness::Idle => platform.wait(handle.epoch_word(), epoch, None),
        Readiness::Pending => spin.failed(),
        Readiness::Ready => {}
    }
    handle.withdraw_waiter();
}

/// A subscriber waits on an empty segment while a publisher publishes. Asserts the
/// message arrives; a lost wake-up is a deadlock.
///
/// Bound: 3 preemptions: the waiter's registration and re-check against the
/// publisher's claim, publish and waiter check.
#[test]
fn subscriber_waiting_on_an_empty_segment_is_woken() {
    check("subscriber_waiting_on_an_empty_segment_is_woken", 3, || {
        let (platform, mut all) = handles_at(
            SlowSubscriber::Lossless,
            &[Role::Subscriber, Role::Publisher],
            0,
            NEAR_WRAP,
        );
        let publisher = all.pop().unwrap();
        let subscriber = all.pop().unwrap();
        let receiving = thread::spawn(move || {
            let mut spin = Spin::default();
            loop {
                match subscriber.try_recv_with(whole) {
                    Ok(message) => return message,
                    Err(TryRecvError::Empty) => {
                        wait_for_progress(&subscriber, &platform, &mut spin)
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        });
        publisher
            .try_publish(&[1, 1])
            .expect("an empty ring has room");
        assert_eq!(receiving.join().unwrap(), [1, 1]);
    });
}

/// A subscriber waits twice on an empty segment while a publisher publishes two
/// messages: the second wait follows a withdrawal whose decrement a publisher may
/// already have read. Asserts both arrive, in order; a lost wake-up is a deadlock.
///
/// Bound: 3 preemptions, as above.
#[test]
fn subscriber_waiting_twice_is_woken_each_time() {
    check("subscriber_waiting_twice_is_woken_each_time", 3, || {
        let (platform, mut all) = handles_at(
            SlowSubscriber::Lossless,
            &[Role::Subscriber, Role::Publisher],
            0,
            NEAR_WRAP,
        );
        let publisher = all.pop().unwrap();
        let subscriber = all.pop().unwrap();
        let receiving = thread::spawn(move || {
            let mut messages = Vec::new();
            let mut spin = Spin::default();
            while messages.len() < 2 {
                match subscriber.try_recv_with(whole) {
                    Ok(message) => messages.push(message),
                    Err(TryRecvError::Empty) => {
                        wait_for_progress(&subscriber, &platform, &mut spin)
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            messages
        });
        publisher
            .try_publish(&[1, 1])
            .expect("an empty ring has room");
        publisher.try_publish(&[2, 2]).expect("two slots");
        assert_eq!(receiving.join().unwrap(), [[1, 1], [2, 2]]);
    });
}

/// Lossless, capacity 2, full: a publisher waits for room while the subscriber
/// receives one message. Asserts the publish completes; a lost wake-up (the
/// publisher's gate re-check missing the subscriber's new cursor while the
/// subscriber misses the waiter) is a deadlock.
///
/// Bound: 3 preemptions, as above.
#[test]
fn lossless_publisher_waiting_on_a_full_segment_is_woken() {
    check(
        "lossless_publisher_waiting_on_a_full_segment_is_woken",
        3,
        || {
            let (platform, mut all) = handles_at(
                SlowSubscriber::Lossless,
                &[Role::Subscriber, Role::Publisher],
                0,
                NEAR_WRAP,
            );
            let publisher = all.pop().unwrap();
            let subscriber = all.pop().unwrap();
            publish_all(&publisher, &[1, 2]);
            let receiving = thread::spawn(move || {
                assert_eq!(subscriber.try_recv_with(whole).unwrap(), [1, 1]);
                subscriber
            });
            let mut spin = Spin::default();
            while publisher.try_publish(&[3, 3]).is_err() {
                wait_for_progress(&publisher, &platform, &mut spin);
            }
            let subscriber = receiving.join().unwrap();
            let messages = receive_sweeping(&subscriber, 2);
            assert_eq!(messages, [[2, 2], [3, 3]]);
        },
    );
}

/// Lossless, capacity 2, full: a publisher waits for room while the only
/// subscriber leaves cleanly without reading. Asserts the publish completes: the
/// publisher's gate re-check sees the record no longer a subscriber's, or the
/// leaver sees the publisher waiting and wakes it; a lost wake-up is a deadlock.
///
/// Bound: 3 preemptions, as above.
#[test]
fn lossless_publisher_waiting_on_a_leaving_subscriber_is_woken() {
    check(
        "lossless_publisher_waiting_on_a_leaving_subscriber_is_woken",
        3,
        || {
            let (platform, mut all) = handles_at(
                SlowSubscriber::Lossless,
                &[Role::Subscriber, Role::Publisher],
                0,
                NEAR_WRAP,
            );
            let publisher = all.pop().unwrap();
            let subscriber = all.pop().unwrap();
            publish_all(&publisher, &[1, 2]);
            let leaving = thread::spawn(move || drop(subscriber));
            let mut spin = Spin::default();
            while publisher.try_publish(&[3, 3]).is_err() {
                wait_for_progress(&publisher, &platform, &mut spin);
            }
            leaving.join().unwrap();
        },
    );
}

/// Lossless, capacity 2: a subscriber joins while a publisher publishes three
/// messages (the third overwrites the first's slot). Asserts the subscriber
/// receives every message from the position it joined at, in order, and never
/// lags: the publisher's gate scan saw it, or it joined at a tail past the slot
/// being overwritten.
///
/// Bound: 2 preemptions: the joiner between its role store and its tail load, and
/// the publisher between its tail load and its gate scan (3 explores 729 130
/// executions, two minutes).
#[test]
fn subscriber_joining_while_publishing_misses_nothing_after_it_joined() {
    check(
        "subscriber_joining_while_publishing_misses_nothing_after_it_joined",
        2,
        || {
            let (platform, mut all) =
                handles_at(SlowSubscriber::Lossless, &[Role::Publisher], 1, 0);
            let publisher = all.pop().unwrap();
            let memory = publisher.memory().clone();
            let joining = thread::spawn(move || {
                let subscriber = Broadcast::register(
                    memory,
                    platform,
                    Role::Subscriber,
                    SlowSubscriber::Lossless,
                    1,
                    0,
                )
                .expect("a free record");
                // Positions 0, 1, 2 hold messages 1, 2, 3.
                let first = subscriber.cursor() as u8 + 1;
                let expected: Vec<[u8; 2]> = (first..=3).map(|n| [n, n]).collect();
                let messages = receive_sweeping(&subscriber, expected.len());
                assert_eq!(messages, expected);
                subscriber
            });
            publish_all(&publisher, &[1, 2, 3]);
            drop(joining.join().unwrap());
        },
    );
}
