//! Broadcast memory on the heap, for the loom models (`--cfg loom` only). The
//! layout structs and the algorithm are the ones the shared-memory segment uses;
//! payload bytes are atomics (see `crate::sync::AtomicU8`) so that loom can
//! interleave a subscriber's copy with a publisher's overwrite.

use super::ring::BroadcastMemory;
use crate::layout::{
    BroadcastRecord, BroadcastShared, BroadcastSlot, BroadcastStats, Geometry, PaddedU64, WaitWord,
};
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Slots, records and shared words of a broadcast segment in heap memory.
pub struct BroadcastHeap {
    geometry: Geometry,
    shared: BroadcastShared,
    slots: Box<[BroadcastSlot]>,
    payloads: Box<[Box<[AtomicU8]>]>,
    records: Box<[BroadcastRecord]>,
}

impl BroadcastHeap {
    /// `capacity` slots of `max_message_size` bytes, `participants` records,
    /// starting at `initial_position`, initialised as a creator would
    /// ([`super::initialise`]).
    pub fn new(
        capacity: u64,
        max_message_size: u64,
        participants: u64,
        initial_position: u64,
    ) -> Self {
        let geometry = Geometry::new(capacity, max_message_size, participants, initial_position)
            .expect("invalid heap broadcast geometry");
        let u64s = |v| AtomicU64::new(v);
        let wait_word = || WaitWord {
            waiters: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
        };
        let memory = Self {
            geometry,
            shared: BroadcastShared {
                tail: PaddedU64 { value: u64s(0) },
                not_empty: wait_word(),
                not_full: wait_word(),
                stats: BroadcastStats {
                    skipped: u64s(0),
                    freed: u64s(0),
                    lagged: u64s(0),
                },
                spare: PaddedU64 { value: u64s(0) },
            },
            slots: (0..capacity)
                .map(|_| BroadcastSlot {
                    stamp: u64s(0),
                    len: AtomicU32::new(0),
                    spare: AtomicU32::new(0),
                })
                .collect(),
            payloads: (0..capacity)
                .map(|_| (0..max_message_size).map(|_| AtomicU8::new(0)).collect())
                .collect(),
            records: (0..participants)
                .map(|_| BroadcastRecord {
                    state: u64s(0),
                    role: u64s(0),
                    pid: u64s(0),
                    start_time: u64s(0),
                    claim: u64s(0),
                    cursor: u64s(0),
                    waiting: AtomicU32::new(0),
                    run: AtomicU32::new(0),
                    operations: u64s(0),
                })
                .collect(),
        };
        super::ring::initialise(&memory);
        memory
    }
}

// SAFETY: every object is owned by `self` and indexed by bounds-checked slices; the
// payload methods touch only slot `index`'s bytes.
unsafe impl BroadcastMemory for BroadcastHeap {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    fn shared(&self) -> &BroadcastShared {
        &self.shared
    }
    fn slot(&self, index: u64) -> &BroadcastSlot {
        &self.slots[index as usize]
    }
    fn record(&self, index: u64) -> &BroadcastRecord {
        &self.records[index as usize]
    }
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        for (cell, &byte) in self.payloads[index as usize].iter().zip(bytes) {
            // Relaxed: the sequence lock's fences order these (mod.rs).
            cell.store(byte, Ordering::Relaxed);
        }
    }
    unsafe fn write_payload_with<R>(
        &self,
        index: u64,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        let cells = &self.payloads[index as usize][..len];
        // Relaxed: as above; the writer's buffer starts from what the slot held.
        let mut bytes: Vec<u8> = cells
            .iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .collect();
        let result = write(&mut bytes);
        for (cell, byte) in cells.iter().zip(bytes) {
            // Relaxed: as in `write_payload`.
            cell.store(byte, Ordering::Relaxed);
        }
        result
    }
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // Relaxed: as above; the copy is checked by the stamp afterwards.
        let copy: Vec<u8> = self.payloads[index as usize][..len]
            .iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .collect();
        f(&copy)
    }
}
