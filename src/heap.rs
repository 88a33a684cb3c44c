//! A ring whose slots live on the heap: what the loom models run on (loom's atomics
//! cannot sit in mmapped memory; this module exists only in `--cfg loom` builds). The layout
//! structs and the algorithm are the ones the shared-memory queue uses.

use crate::layout::{
    Geometry, PaddedU64, ParticipantRecord, RecoveryStats, RingShared, Schema, SlotHeader, WaitWord,
};
use crate::ring::RingMemory;
use crate::sync::{AtomicU32, AtomicU64, UnsafeCell};

/// Slots, cursors and participant records in ordinary heap memory.
pub struct HeapMemory {
    geometry: Geometry,
    shared: RingShared,
    slots: Box<[SlotHeader]>,
    payloads: Box<[UnsafeCell<Box<[u8]>>]>,
    participants: Box<[ParticipantRecord]>,
}

// SAFETY: all shared state is atomics; payload cells are accessed only by the holder
// of the slot's claim, which the ring's sequence protocol makes exclusive.
unsafe impl Sync for HeapMemory {}
// SAFETY: owns its data; nothing is tied to a thread.
unsafe impl Send for HeapMemory {}

impl HeapMemory {
    /// A ring of `capacity` slots of `max_message_size` bytes, `participants` records,
    /// starting at `initial_position` (non-zero to exercise wraparound).
    pub fn new(
        capacity: u64,
        max_message_size: u64,
        participants: u64,
        initial_position: u64,
    ) -> Self {
        let geometry = Geometry::new(capacity, max_message_size, participants, initial_position)
            .expect("invalid heap ring geometry");
        let slots = (0..capacity)
            .map(|_| SlotHeader {
                sequence: AtomicU64::new(0),
                len: AtomicU32::new(0),
                returns: AtomicU32::new(0),
            })
            .collect();
        let payloads = (0..capacity)
            .map(|_| UnsafeCell::new(vec![0u8; max_message_size as usize].into_boxed_slice()))
            .collect();
        let participants = (0..participants)
            .map(|_| ParticipantRecord {
                state: AtomicU64::new(0),
                pid: AtomicU64::new(0),
                start_time: AtomicU64::new(0),
                enqueue_claim: AtomicU64::new(0),
                dequeue_claim: AtomicU64::new(0),
                waiting: AtomicU32::new(0),
                enqueue_run: AtomicU32::new(0),
                operations: AtomicU64::new(0),
                dequeue_run: AtomicU32::new(0),
            })
            .collect();
        let padded = |v| PaddedU64 {
            value: AtomicU64::new(v),
        };
        let wait_word = || WaitWord {
            waiters: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
        };
        let memory = Self {
            geometry,
            shared: RingShared {
                enqueue_pos: padded(0),
                dequeue_pos: padded(0),
                not_empty: wait_word(),
                not_full: wait_word(),
                stats: RecoveryStats {
                    skipped: AtomicU64::new(0),
                    redelivered: AtomicU64::new(0),
                    freed: AtomicU64::new(0),
                    corrupt: AtomicU64::new(0),
                    abandoned: AtomicU64::new(0),
                    dead_lettered: AtomicU64::new(0),
                    dead_letter_failures: AtomicU64::new(0),
                },
                schema: Schema::default(),
            },
            slots,
            payloads,
            participants,
        };
        // Zero-filled, like a fresh segment; the ring writes its initial state.
        crate::ring::initialise(&memory);
        memory
    }
}

// SAFETY: indices are bounds-checked by the slice accesses below (a panic, never an
// out-of-bounds access); payload access goes through the per-slot cell.
unsafe impl RingMemory for HeapMemory {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    fn shared(&self) -> &RingShared {
        &self.shared
    }
    fn slot(&self, index: u64) -> &SlotHeader {
        &self.slots[index as usize]
    }
    fn participant(&self, index: u64) -> &ParticipantRecord {
        &self.participants[index as usize]
    }
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        self.payloads[index as usize].with_mut(|payload| {
            // SAFETY: the caller holds the producer claim, so this is the only access
            // to the cell (loom verifies that under --cfg loom).
            let payload = unsafe { &mut *payload };
            payload[..bytes.len()].copy_from_slice(bytes);
        })
    }
    unsafe fn fill_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.payloads[index as usize].with_mut(|payload| {
            // SAFETY: the caller holds the producer claim, so this is the only access
            // to the cell (loom verifies that under --cfg loom).
            let payload = unsafe { &mut *payload };
            f(&mut payload[..len])
        })
    }
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // `with_mut`, not `with`: loom then also flags a producer write racing this
        // read in either direction, and the claim gives us exclusive access anyway.
        self.payloads[index as usize].with_mut(|payload| {
            // SAFETY: the caller holds the consumer claim: exclusive access.
            let payload = unsafe { &*payload };
            f(&payload[..len])
        })
    }
}
