//! Typed queues (issue 11; cargo feature `zerocopy`): values of one plain-old-data
//! type, checked on attach against the type the segment records; by copy, in place
//! and in batches; between processes, and across a consumer's `kill -9`.
#![cfg(feature = "zerocopy")]

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::Duration;

use common::{unique, UnlinkOnDrop};
use shmq::{Error, MessageType, Options, Queue, RecvError, TryRecvError, TypedQueue};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const ROLE: &str = "SHMQ_TYPED_ROLE";

#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Tick {
    producer: u32,
    flags: u32,
    seq: u64,
    price: f64,
}

fn tick(producer: u32, seq: u64) -> Tick {
    Tick {
        producer,
        flags: 0,
        seq,
        price: seq as f64 * 0.5,
    }
}

#[test]
fn values_go_through_by_copy_in_place_and_in_batches() {
    let name = unique("values");
    let _unlink = UnlinkOnDrop(&name);
    let queue = TypedQueue::<Tick>::create(&name, &Options::new(64, 0), 3).unwrap();
    assert_eq!(
        queue.as_queue().max_message_size(),
        std::mem::size_of::<Tick>() as u64
    );
    queue.send(&tick(0, 0)).unwrap();
    queue.send_with(|slot| *slot = tick(0, 1)).unwrap();
    let batch: Vec<Tick> = (2..10).map(|s| tick(0, s)).collect();
    queue.send_batch(&batch).unwrap();
    assert_eq!(queue.recv().unwrap(), tick(0, 0));
    assert_eq!(queue.try_recv_with(|t| t.seq).unwrap(), 1);
    let mut seen = Vec::new();
    assert_eq!(queue.try_recv_batch_with(100, |t| seen.push(t.seq)), Ok(8));
    assert_eq!(seen, (2..10).collect::<Vec<_>>());
    assert_eq!(queue.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        queue.as_queue().message_type(),
        Some(MessageType::of::<Tick>(3))
    );
}

#[test]
fn attaching_with_another_type_or_version_is_refused_naming_both() {
    let name = unique("mismatch");
    let untyped = unique("untyped");
    let (_unlink, _unlink_untyped) = (UnlinkOnDrop(&name), UnlinkOnDrop(&untyped));
    let _typed = TypedQueue::<Tick>::create(&name, &Options::new(8, 0), 1).unwrap();
    for outcome in [
        TypedQueue::<[u64; 3]>::open(&name, 1).map(drop),
        TypedQueue::<Tick>::open(&name, 2).map(drop),
    ] {
        let err = outcome.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
        assert!(text.contains("Tick") && text.contains("24 bytes"), "{text}");
    }
    TypedQueue::<Tick>::open(&name, 1).unwrap();
    // A byte handle may still use a typed segment.
    assert!(Queue::open(&name).is_ok());
    drop(Queue::create(&untyped, &Options::new(8, 24)).unwrap());
    let err = TypedQueue::<Tick>::open(&untyped, 1).unwrap_err();
    assert!(err.to_string().contains("untyped messages"), "{err}");
}

#[test]
fn a_message_of_the_wrong_size_is_reported_and_consumed() {
    let name = unique("wrong-size");
    let _unlink = UnlinkOnDrop(&name);
    let typed = TypedQueue::<Tick>::create(&name, &Options::new(8, 0), 1).unwrap();
    let bytes = Queue::open(&name).unwrap();
    bytes.send(b"not a tick").unwrap();
    typed.send(&tick(1, 1)).unwrap();
    assert_eq!(
        typed.try_recv(),
        Err(TryRecvError::WrongSize {
            len: 10,
            expected: 24
        })
    );
    assert_eq!(typed.try_recv().unwrap(), tick(1, 1));
}

/// Child roles: `produce:NAME:ID:COUNT` sends ticks in order, by copy, in place and
/// in batches; `hold:NAME` lends itself a value and waits inside to be killed.
fn child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let parts: Vec<&str> = role.split(':').collect();
    let queue = TypedQueue::<Tick>::open(parts[1], 1).unwrap();
    match parts[0] {
        "produce" => {
            let id: u32 = parts[2].parse().unwrap();
            let count: u64 = parts[3].parse().unwrap();
            let mut seq = 0;
            while seq < count {
                match seq % 3 {
                    0 => queue.send(&tick(id, seq)).unwrap(),
                    1 => queue.send_with(|slot| *slot = tick(id, seq)).unwrap(),
                    _ => {
                        let end = (seq + 10).min(count);
                        let batch: Vec<Tick> = (seq..end).map(|s| tick(id, s)).collect();
                        queue.send_batch(&batch).unwrap();
                        seq = end;
                        continue;
                    }
                }
                seq += 1;
            }
        }
        "hold" => {
            queue
                .try_recv_with(|_| common::say_and_wait_forever("INSIDE"))
                .unwrap();
        }
        "hold-guard" => {
            let mut queue = queue;
            let held = queue.try_receive().unwrap();
            assert_eq!(held.deliveries(), 1);
            common::say_and_wait_forever("HOLDING");
        }
        other => panic!("unknown role {other}"),
    }
    true
}

fn spawn(test: &str, role: &str) -> Child {
    common::spawn_role(test, ROLE, role.to_owned())
}

#[test]
fn processes_send_typed_values_exactly_once_in_order() {
    const TEST: &str = "processes_send_typed_values_exactly_once_in_order";
    const PRODUCERS: u32 = 3;
    const EACH: u64 = 30_000;
    if child_role() {
        return;
    }
    let name = unique("typed-procs");
    let _unlink = UnlinkOnDrop(&name);
    let queue = TypedQueue::<Tick>::create(&name, &Options::new(128, 0), 1).unwrap();
    let children: Vec<Child> = (0..PRODUCERS)
        .map(|id| spawn(TEST, &format!("produce:{name}:{id}:{EACH}")))
        .collect();
    let mut next: HashMap<u32, u64> = HashMap::new();
    let mut received = 0;
    while received < u64::from(PRODUCERS) * EACH {
        let taken = queue
            .try_recv_batch_with(64, |t| {
                let expected = next.entry(t.producer).or_default();
                assert_eq!(
                    t.seq, *expected,
                    "producer {}: lost, duplicated or out of order",
                    t.producer
                );
                assert_eq!(t.price, t.seq as f64 * 0.5, "torn value");
                *expected += 1;
            })
            .unwrap_or(0);
        received += taken as u64;
        if taken == 0 {
            std::thread::yield_now();
        }
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(next.values().sum::<u64>(), u64::from(PRODUCERS) * EACH);
}

#[test]
fn a_typed_consumer_killed_holding_a_value_has_it_delivered_again() {
    const TEST: &str = "a_typed_consumer_killed_holding_a_value_has_it_delivered_again";
    if child_role() {
        return;
    }
    let name = unique("typed-kill");
    let _unlink = UnlinkOnDrop(&name);
    let queue = TypedQueue::<Tick>::create(&name, &Options::new(8, 0), 1).unwrap();
    queue.send(&tick(7, 42)).unwrap();
    let mut holder = spawn(TEST, &format!("hold:{name}"));
    common::wait_for_line(&mut holder, "INSIDE");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(
        queue.recv_timeout(Duration::from_secs(5)).unwrap(),
        tick(7, 42)
    );
}

#[test]
fn a_typed_delivery_derefs_to_the_value_counts_deliveries_and_can_be_abandoned() {
    let name = unique("typed-guard");
    let _unlink = UnlinkOnDrop(&name);
    let mut queue = TypedQueue::<Tick>::create(&name, &Options::new(8, 0), 1).unwrap();
    assert_eq!(queue.try_receive().unwrap_err(), TryRecvError::Empty);
    queue.send(&tick(1, 10)).unwrap();
    queue.send(&tick(1, 11)).unwrap();
    let first = queue.receive().unwrap();
    assert_eq!((*first, first.deliveries()), (tick(1, 10), 1));
    assert!(!first.is_redelivery());
    first.abandon().unwrap();
    // The next receive takes the second value, then (once a sweep took the
    // abandoned one over) the first again, counted.
    assert_eq!(*queue.receive().unwrap(), tick(1, 11));
    let again = queue.receive_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((*again, again.deliveries()), (tick(1, 10), 2));
    assert!(again.is_redelivery());
    drop(again);
    assert_eq!(
        queue
            .receive_deadline(std::time::Instant::now() + Duration::from_millis(20))
            .unwrap_err(),
        RecvError::Timeout
    );
    // A message of another size is consumed and reported.
    queue.as_queue().send(b"short").unwrap();
    assert_eq!(
        queue.try_receive().unwrap_err(),
        TryRecvError::WrongSize {
            len: 5,
            expected: std::mem::size_of::<Tick>()
        }
    );
    assert_eq!(queue.try_receive().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn a_typed_consumer_killed_holding_a_delivery_has_it_delivered_again_counted() {
    const TEST: &str = "a_typed_consumer_killed_holding_a_delivery_has_it_delivered_again_counted";
    if child_role() {
        return;
    }
    let name = unique("typed-kill-guard");
    let _unlink = UnlinkOnDrop(&name);
    let mut queue = TypedQueue::<Tick>::create(&name, &Options::new(8, 0), 1).unwrap();
    queue.send(&tick(3, 99)).unwrap();
    let mut holder = spawn(TEST, &format!("hold-guard:{name}"));
    common::wait_for_line(&mut holder, "HOLDING");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let again = queue.receive_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((*again, again.deliveries()), (tick(3, 99), 2));
}
