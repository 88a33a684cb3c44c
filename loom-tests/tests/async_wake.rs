//! Loom models of the async handle's wake-up protocol: a task that finds the ring
//! empty (or full) registers with the shipped `Ring::register_waiter`, and, only if
//! its re-check says nothing is in flight, hands the epoch it read to a separate
//! waker thread and stops (returns `Pending`); that thread sleeps on the epoch word
//! with the platform's futex and, once woken, wakes the task, which withdraws
//! (`Ring::withdraw_waiter`) and tries again. This is the split `AsyncQueue` makes
//! (`src/async_queue/`): the task never sleeps itself, another thread does it for
//! it. A lost wake-up leaves the task waiting for a wake that never comes, which
//! loom reports as a deadlock.
//!
//! What is modelled and what is not: the ring, the registration, the re-check and
//! the producer's `wake_if_waiting` are the shipped code; the futex is
//! `ModelPlatform`'s (the real waker thread uses `futex_waitv`, whose compare-and-
//! sleep is the kernel's, as `FUTEX_WAIT`'s is); the task's `Waker` is a loom
//! `Notify`, and the hand-over of the epoch a loom channel (the real one is a
//! mutex-protected map).
#![cfg(loom)]

use loom::sync::mpsc::channel;
use loom::sync::{Arc, Notify};
use loom::thread;
use loom_tests::{check, ring, try_recv, Message, ModelPlatform, ModelRing, Spin};
use shmq::model::layout::POS_MASK;
use shmq::model::{epoch_word, Direction, Ordering, Platform, Readiness, Registration};
use shmq::{TryRecvError, TrySendError};

/// Two positions before the wrap.
const NEAR_WRAP: u64 = POS_MASK - 1;

/// What a task hands the waker thread: the epoch to sleep on, or `None` when the
/// task is done and the thread may stop.
type Handover = Option<u32>;

/// One wait of a task, as `AsyncQueue::poll_op` makes it after an attempt failed:
/// register, re-check, and either retry at once or let the waker thread sleep for
/// us until woken; withdraw either way.
fn wait_async(
    ring: &ModelRing,
    direction: Direction,
    handover: &loom::sync::mpsc::Sender<Handover>,
    woken: &Notify,
    spin: &mut Spin,
) {
    let Registration { epoch, readiness } = ring.register_waiter(direction);
    match readiness {
        Readiness::Idle => {
            handover.send(Some(epoch)).unwrap();
            // `Pending` until the waker thread wakes the task. Loom's `Notify`, like
            // an executor, may also wake it spuriously (or with a wake meant for an
            // earlier registration): then the poll finds the epoch unmoved and stays
            // pending, as `poll_op` does.
            loop {
                woken.wait();
                // Relaxed: as `poll_op`'s look at the epoch; what the task reads
                // next is ordered by the ring's own loads.
                if ring.epoch_word(direction).load(Ordering::Relaxed) != epoch {
                    break;
                }
            }
            spin.progressed();
        }
        Readiness::Ready => {}
        // The other side is mid-operation: the task yields and is polled again.
        Readiness::Pending => spin.failed(),
    }
    ring.withdraw_waiter(direction);
}

/// The process's waker thread, for one task: sleeps on the word with each epoch it
/// is handed, and wakes the task when the word moves.
fn waker_thread(
    memory: std::sync::Arc<shmq::model::HeapMemory>,
    platform: ModelPlatform,
    direction: Direction,
    handover: loom::sync::mpsc::Receiver<Handover>,
    woken: Arc<Notify>,
) {
    while let Some(epoch) = handover.recv().unwrap() {
        platform.wait(epoch_word(&memory, direction), epoch, None);
        woken.notify();
    }
}

/// Starts the waker thread for one task waiting in `direction`: returns where the
/// task hands it epochs (`None`: done), the task's stand-in `Waker`, and the thread.
fn start_waker(
    memory: std::sync::Arc<shmq::model::HeapMemory>,
    platform: ModelPlatform,
    direction: Direction,
) -> (
    loom::sync::mpsc::Sender<Handover>,
    Arc<Notify>,
    thread::JoinHandle<()>,
) {
    let (handover, handed) = channel::<Handover>();
    let woken = Arc::new(Notify::new());
    let waker = {
        let woken = woken.clone();
        thread::spawn(move || waker_thread(memory, platform, direction, handed, woken))
    };
    (handover, woken, waker)
}

/// A task awaits one message on an empty ring while a producer sends it. Asserts it
/// arrives; a lost wake-up is a deadlock.
///
/// Bound: 3 preemptions, as for the blocking waiter (`wake.rs`): a lost wake-up
/// needs the registration, the re-check and the producer's claim, publish and
/// waiter check to interleave in a store-buffering order.
#[test]
fn task_awaiting_an_empty_ring_is_woken_through_the_waker_thread() {
    check(
        "task_awaiting_an_empty_ring_is_woken_through_the_waker_thread",
        3,
        || {
            let (memory, platform, mut rings) = ring(2, 2, NEAR_WRAP);
            let consumer = rings.pop().unwrap();
            let producer = rings.pop().unwrap();
            let (handover, woken, waker) = start_waker(memory, platform, Direction::NotEmpty);
            let task = thread::spawn(move || {
                let mut spin = Spin::default();
                let message: Message = loop {
                    match try_recv(&consumer) {
                        Ok(message) => break message,
                        Err(TryRecvError::Empty) => {
                            wait_async(&consumer, Direction::NotEmpty, &handover, &woken, &mut spin)
                        }
                        Err(e) => panic!("unexpected receive error {e:?}"),
                    }
                };
                handover.send(None).unwrap();
                message
            });
            producer.try_send(&[0, 0]).unwrap();
            assert_eq!(task.join().unwrap(), (0, 0));
            waker.join().unwrap();
        },
    );
}

/// A task awaits two messages in a row (so it registers, is woken, withdraws and
/// registers again) while a producer sends them. The decrement with which it
/// withdraws must be ordered before its next registration for the producer's
/// second waiter check (`park-exit-seqcst` in `weaken.sh`).
///
/// Bound: 3 preemptions, as for one message.
#[test]
fn task_awaiting_twice_is_woken_each_time() {
    check("task_awaiting_twice_is_woken_each_time", 3, || {
        let (memory, platform, mut rings) = ring(2, 2, NEAR_WRAP);
        let consumer = rings.pop().unwrap();
        let producer = rings.pop().unwrap();
        let (handover, woken, waker) = start_waker(memory, platform, Direction::NotEmpty);
        let task = thread::spawn(move || {
            let mut spin = Spin::default();
            let mut got = Vec::new();
            while got.len() < 2 {
                match try_recv(&consumer) {
                    Ok(message) => got.push(message),
                    Err(TryRecvError::Empty) => {
                        wait_async(&consumer, Direction::NotEmpty, &handover, &woken, &mut spin)
                    }
                    Err(e) => panic!("unexpected receive error {e:?}"),
                }
            }
            handover.send(None).unwrap();
            got
        });
        producer.try_send(&[0, 0]).unwrap();
        producer.try_send(&[0, 1]).unwrap();
        assert_eq!(task.join().unwrap(), [(0, 0), (0, 1)]);
        waker.join().unwrap();
    });
}

/// The mirror: a task awaits room on a full ring (capacity 2) while a consumer takes
/// one message. Asserts the task's message gets in, after the two before it.
///
/// Bound: 3 preemptions, as above.
#[test]
fn task_awaiting_a_full_ring_is_woken_through_the_waker_thread() {
    check(
        "task_awaiting_a_full_ring_is_woken_through_the_waker_thread",
        3,
        || {
            let (memory, platform, mut rings) = ring(2, 2, NEAR_WRAP);
            let consumer = rings.pop().unwrap();
            let producer = rings.pop().unwrap();
            producer.try_send(&[0, 0]).unwrap();
            producer.try_send(&[0, 1]).unwrap();
            let (handover, woken, waker) = start_waker(memory, platform, Direction::NotFull);
            let task = thread::spawn(move || {
                let mut spin = Spin::default();
                loop {
                    match producer.try_send(&[0, 2]) {
                        Ok(()) => break,
                        Err(TrySendError::Full) => {
                            wait_async(&producer, Direction::NotFull, &handover, &woken, &mut spin)
                        }
                        Err(e) => panic!("unexpected send error {e:?}"),
                    }
                }
                handover.send(None).unwrap();
            });
            assert_eq!(try_recv(&consumer).unwrap(), (0, 0));
            task.join().unwrap();
            waker.join().unwrap();
            assert_eq!(try_recv(&consumer).unwrap(), (0, 1));
            assert_eq!(try_recv(&consumer).unwrap(), (0, 2));
        },
    );
}
