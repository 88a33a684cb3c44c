//! Loom model of the create/open handshake (`shmq::model::ready`, the code the
//! segment runs): a creator writes a fresh segment's header and the ring's initial
//! state, then publishes READY; an opener waits for READY and then reads the header
//! and uses the ring. An opener must never see READY with a half-written header or
//! ring.
//!
//! The segment is modelled by a state word (a loom atomic), a header in a loom
//! `UnsafeCell` (plain stores and loads: loom reports a read that the creator's
//! write does not happen before as a causality violation, whatever the value read),
//! and a heap ring zero-filled as a fresh segment is, into which the creator writes
//! the initial state with the ring's own `initialise` (Relaxed stores: a stale read
//! by the opener returns the zero).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::thread;
use loom_tests::{check, try_recv, ModelPlatform, Spin, MESSAGE_SIZE};
use shmq::model::layout::POS_MASK;
use shmq::model::ready;
use shmq::model::{AtomicU32, HeapMemory, Ordering, Ring, RingMemory};

/// One position before the wrap: a non-zero initial position, so a cursor or slot
/// sequence read as the zero-fill differs from the initialised one.
const INITIAL_POSITION: u64 = POS_MASK;
const CAPACITY: u64 = 2;
const PARTICIPANTS: u64 = 1;

/// What the header holds, for the model: a magic number and the geometry an opener
/// validates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Header {
    magic: u64,
    capacity: u64,
    initial_position: u64,
}

const HEADER: Header = Header {
    magic: u64::from_le_bytes(*b"SHMQring"),
    capacity: CAPACITY,
    initial_position: INITIAL_POSITION,
};

/// A segment as the creator finds it: state word zero (UNINITIALISED), header and
/// ring zero-filled.
struct Segment {
    state: AtomicU32,
    header: UnsafeCell<Header>,
    ring: std::sync::Arc<HeapMemory>,
}

// SAFETY: the header cell is written by the creator before the Release publish and
// read by openers only after the Acquire that sees it (what the model checks); the
// rest is atomics.
unsafe impl Sync for Segment {}

/// A heap ring with every word zero, as in a freshly allocated segment.
fn zero_filled_ring() -> std::sync::Arc<HeapMemory> {
    let memory = HeapMemory::new(CAPACITY, MESSAGE_SIZE, PARTICIPANTS, INITIAL_POSITION);
    let shared = memory.shared();
    // Relaxed (all): before any model thread exists; `spawn` orders them.
    shared.enqueue_pos.value.store(0, Ordering::Relaxed);
    shared.dequeue_pos.value.store(0, Ordering::Relaxed);
    for index in 0..CAPACITY {
        memory.slot(index).sequence.store(0, Ordering::Relaxed);
    }
    for index in 0..PARTICIPANTS {
        let record = memory.participant(index);
        record.state.store(0, Ordering::Relaxed);
        record.enqueue_claim.store(0, Ordering::Relaxed);
        record.dequeue_claim.store(0, Ordering::Relaxed);
    }
    std::sync::Arc::new(memory)
}

/// The creator publishes a zero-filled segment while an opener waits for READY.
/// Asserts, in the opener, once it has seen READY: the header reads as written (and
/// its read is ordered after the creator's write: no causality violation); both
/// cursors and every slot sequence hold their initial values, not the zero-fill; a
/// handle registers, sends a message and receives it back.
///
/// Bound: 3 preemptions. A half-written segment needs one switch to the opener
/// after any of the creator's stores (each store is one candidate point), and the
/// opener's loads may read any store not ordered before them regardless of the
/// schedule; the other preemptions move the opener's READY check against the
/// creator's publish.
#[test]
fn opener_never_sees_ready_before_the_segment_is_written() {
    check(
        "opener_never_sees_ready_before_the_segment_is_written",
        3,
        || {
            let segment = std::sync::Arc::new(Segment {
                state: AtomicU32::new(0),
                header: UnsafeCell::new(Header::default()),
                ring: zero_filled_ring(),
            });
            let creator = {
                let segment = segment.clone();
                thread::spawn(move || {
                    ready::publish(&segment.state, &segment.ring, || {
                        // SAFETY: nobody reads the header before READY is published.
                        segment
                            .header
                            .with_mut(|header| unsafe { *header = HEADER });
                    });
                })
            };
            let mut spin = Spin::default();
            while !ready::is_ready(&segment.state) {
                spin.failed();
            }
            // SAFETY: READY was seen with Acquire; the creator writes nothing after it.
            let header = segment.header.with(|header| unsafe { *header });
            assert_eq!(header, HEADER, "READY with a half-written header");
            let shared = segment.ring.shared();
            // Relaxed (all): what the opener sees after the Acquire that read READY.
            let cursors = [
                shared.enqueue_pos.value.load(Ordering::Relaxed),
                shared.dequeue_pos.value.load(Ordering::Relaxed),
            ];
            assert_eq!(
                cursors, [INITIAL_POSITION; 2],
                "READY with half-written cursors"
            );
            for index in 0..CAPACITY {
                let pos = (INITIAL_POSITION + index) & POS_MASK;
                let sequence = segment
                    .ring
                    .slot(pos & (CAPACITY - 1))
                    .sequence
                    .load(Ordering::Relaxed);
                assert_eq!(sequence, pos, "READY with a half-written slot");
            }
            let platform = ModelPlatform::new(PARTICIPANTS);
            let ring = Ring::register(segment.ring.clone(), platform, 1, 0)
                .expect("a published segment has a free record");
            ring.try_send(&[1, 2]).expect("a fresh ring has room");
            assert_eq!(try_recv(&ring).expect("the message just sent"), (1, 2));
            drop(ring);
            creator.join().unwrap();
        },
    );
}
