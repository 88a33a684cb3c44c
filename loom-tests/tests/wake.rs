//! Loom models of the sleep/wake protocol: no lost wake-up in any interleaving.
//!
//! The futex is `ModelPlatform`'s mutex and condition variable; its waits have no
//! timeout and never return until the word changed, so a lost wake-up leaves a
//! thread asleep forever and loom fails the model with "deadlock".
//!
//! # Parking more than once
//! The protocol rests on the single total order of SeqCst operations (see the
//! `ring` module docs). Loom treats SeqCst accesses as AcqRel and only keeps a
//! SeqCst load from returning a store older than a newer *SeqCst* store, so the
//! decrement with which `park` leaves is SeqCst (C++20 would order it correctly even
//! as Relaxed; on x86 it is the same instruction). With that, the models in which a
//! waiter parks again after an earlier `park` returned (`consumer_parks_twice`,
//! `two_consumers_parked_on_empty_ring_are_woken`) run like the others.
#![cfg(loom)]

use loom::thread;
use loom_tests::{check, ring, try_recv, Message, ModelRing, Spin};
use shmq::model::layout::POS_MASK;
use shmq::model::{Direction, Pending, Readiness};
use shmq::{TryRecvError, TrySendError};

/// Two positions before the wrap.
const NEAR_WRAP: u64 = POS_MASK - 1;

/// Receives one message the blocking way: try, and on `Empty` park until woken;
/// `Pending` (a producer is mid-send) means spin instead of sleeping.
fn recv_blocking(ring: &ModelRing) -> Message {
    let mut spin = Spin::default();
    loop {
        match try_recv(ring) {
            Ok(message) => return message,
            Err(TryRecvError::Empty) => match ring.park(Direction::NotEmpty, Pending::Spin, None) {
                Readiness::Pending => spin.failed(),
                Readiness::Ready | Readiness::Idle => {}
            },
            Err(e) => panic!("unexpected receive error {e:?}"),
        }
    }
}

/// Sends one message the blocking way (the mirror of [`recv_blocking`]).
fn send_blocking(ring: &ModelRing, message: Message) {
    let mut spin = Spin::default();
    loop {
        match ring.try_send(&[message.0, message.1]) {
            Ok(()) => return,
            Err(TrySendError::Full) => match ring.park(Direction::NotFull, Pending::Spin, None) {
                Readiness::Pending => spin.failed(),
                Readiness::Ready | Readiness::Idle => {}
            },
            Err(e) => panic!("unexpected send error {e:?}"),
        }
    }
}

/// A consumer blocks for a message on an empty ring while a producer sends it.
/// Asserts it arrives; a lost wake-up is a deadlock.
///
/// Bound: 3 preemptions. A lost wake-up needs the waiter's registration, its
/// re-check and the waker's claim, publish and waiter check to interleave in a
/// store-buffering order; each of those is one switch between the two threads.
#[test]
fn consumer_parked_on_empty_ring_is_woken() {
    check("consumer_parked_on_empty_ring_is_woken", 3, || {
        let (_, _, mut rings) = ring(2, 2, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        let receiver = thread::spawn(move || recv_blocking(&consumer));
        producer.try_send(&[0, 0]).unwrap();
        assert_eq!(receiver.join().unwrap(), (0, 0));
    });
}

/// Two consumers block for one message each while a producer sends two.
/// Asserts both arrive, once each; a lost wake-up is a deadlock.
///
/// Bound: 2 preemptions (three threads).
#[test]
fn two_consumers_parked_on_empty_ring_are_woken() {
    check("two_consumers_parked_on_empty_ring_are_woken", 2, || {
        let (_, _, mut rings) = ring(2, 3, NEAR_WRAP);
        let producer = rings.remove(0);
        let receivers: Vec<_> = rings
            .into_iter()
            .map(|consumer| thread::spawn(move || recv_blocking(&consumer)))
            .collect();
        producer.try_send(&[0, 0]).unwrap();
        producer.try_send(&[0, 1]).unwrap();
        let mut got: Vec<Message> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [(0, 0), (0, 1)]);
    });
}

/// One consumer blocks for two messages in a row (so it parks, wakes, and parks
/// again) while a producer sends them.
///
/// Bound: 3 preemptions, as for one message.
#[test]
fn consumer_parks_twice() {
    check("consumer_parks_twice", 3, || {
        let (_, _, mut rings) = ring(2, 2, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        let receiver = thread::spawn(move || [recv_blocking(&consumer), recv_blocking(&consumer)]);
        producer.try_send(&[0, 0]).unwrap();
        producer.try_send(&[0, 1]).unwrap();
        assert_eq!(receiver.join().unwrap(), [(0, 0), (0, 1)]);
    });
}

/// The mirror: a producer blocks on a full ring (capacity 2) until a consumer takes
/// one message. Asserts the producer's message gets in and the ring then holds the
/// remaining messages in order; a lost wake-up is a deadlock.
///
/// Bound: 3 preemptions, as for the consumer side.
#[test]
fn producer_parked_on_full_ring_is_woken() {
    check("producer_parked_on_full_ring_is_woken", 3, || {
        let (_, _, mut rings) = ring(2, 2, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        producer.try_send(&[0, 0]).unwrap();
        producer.try_send(&[0, 1]).unwrap();
        let sender = thread::spawn(move || send_blocking(&producer, (0, 2)));
        assert_eq!(try_recv(&consumer).unwrap(), (0, 0));
        sender.join().unwrap();
        assert_eq!(try_recv(&consumer).unwrap(), (0, 1));
        assert_eq!(try_recv(&consumer).unwrap(), (0, 2));
        assert!(matches!(try_recv(&consumer), Err(TryRecvError::Empty)));
    });
}
