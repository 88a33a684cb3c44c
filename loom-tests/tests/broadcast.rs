//! Loom models of broadcast segments, on the shipped algorithm
//! (`shmq::broadcast::model::Broadcast` over `BroadcastHeap`).
#![cfg(loom)]

use loom::thread;
use loom_tests::{check, ModelPlatform, Spin};
use shmq::broadcast::model::{Broadcast, BroadcastHeap, Role};
use shmq::broadcast::{SlowSubscriber, TryRecvError};

type Handle = Broadcast<std::sync::Arc<BroadcastHeap>, ModelPlatform>;

fn handles(policy: SlowSubscriber, roles: &[Role]) -> (ModelPlatform, Vec<Handle>) {
    let memory = std::sync::Arc::new(BroadcastHeap::new(2, 2, roles.len() as u64, 0));
    let platform = ModelPlatform::new(roles.len() as u64);
    let handles = roles
        .iter()
        .map(|&role| {
            Broadcast::register(memory.clone(), platform.clone(), role, policy, 1, 0)
                .expect("a free record")
        })
        .collect();
    (platform, handles)
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
