//! The shared-memory layout: every byte that two processes agree on is defined here.
//!
//! ```text
//! offset 0                     Identity          128 B   written once by the creator
//! 128                          RingShared        5 × 128 B (cursors, wait words, stats)
//! participants_offset          ParticipantRecord × max_participants, 128 B each
//! slots_offset                 Slot × capacity, slot_stride B each:
//!                                  SlotHeader (16 B) + payload (max_message_size B),
//!                                  stride rounded up to 64 B so slots never share a line
//! ```
//!
//! Rules: only fixed-width integers (`u64`/`u32`, never `usize`), no pointers (only
//! offsets), every independently written field on its own 128-byte line (two lines,
//! because x86's adjacent-line prefetcher pulls pairs). The geometry is recomputed by
//! every opener from the three parameters (capacity, maximum message size, participant
//! count) and must match the stored offsets exactly, so a forged offset is caught
//! before it is used.

use crate::error::{GeometryError, HeaderProblem};
use crate::sync::{AtomicU32, AtomicU64};

/// `b"SHMQring"` read as a little-endian `u64`: the first eight bytes of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQring");
/// Bumped on any change to the bytes below. An opener refuses any other value.
pub const LAYOUT_VERSION: u32 = 1;

/// Positions (cursor values and slot sequences) live in 63 bits and wrap modulo 2^63;
/// compare them with [`pos_diff`], never with `<`.
pub const POS_MASK: u64 = (1 << 63) - 1;
/// A participant's claim word holds a position, or this (bit 63 set) when it holds none.
pub const CLAIM_NONE: u64 = 1 << 63;
/// A slot whose length field holds this was given up by a producer that died between
/// claiming and publishing it: consumers release it and move on.
pub const SKIP_LEN: u32 = u32::MAX;

/// Bytes in front of each slot's payload.
pub const SLOT_HEADER_SIZE: u64 = 16;
/// Slots start on, and are padded to, this boundary (one cache line).
pub const SLOT_ALIGN: u64 = 64;
/// Alignment of every independently written shared field.
pub const LINE: u64 = 128;

/// Largest capacity accepted (messages).
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Largest message accepted (bytes). Far below `SKIP_LEN`, so the sentinel never collides.
pub const MAX_MESSAGE_SIZE: u64 = 1 << 30;
/// Most positions one claim may cover (a batch send or receive): sweeps check
/// every position of a dead participant's claim, so this bounds their work.
pub const MAX_RUN: u32 = 256;
/// Largest participant table accepted.
pub const MAX_PARTICIPANTS: u64 = 4096;
/// Largest segment accepted (bytes): 1 TiB.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

/// Values of [`Identity::state`].
pub mod state {
    /// Fresh, zero-filled memory: the creator has not finished.
    #[cfg_attr(loom, allow(dead_code))]
    pub const UNINITIALISED: u32 = 0;
    /// Every field is written and the ring is usable.
    pub const READY: u32 = 0x5245_4459; // "READ" + "Y"-ish tag, unlikely in garbage
    /// The name was removed (`Queue::unlink`, `shmq rm`): handles still attached
    /// keep working, and can tell; nobody opens it again.
    #[cfg_attr(loom, allow(dead_code))]
    pub const REMOVED: u32 = 0x5245_4d44; // "REMD"
}

/// Values of [`ParticipantRecord::state`].
pub mod participant {
    /// The record is unused.
    pub const FREE: u64 = 0;
    /// A handle is registered here (alive or dead: liveness is the platform's lock).
    pub const ACTIVE: u64 = 1;
}

/// Bits of [`ParticipantRecord::waiting`]: which waiter counters this participant is
/// counted in, so a sweeper can return a dead waiter's count.
pub mod waiting {
    /// Counted in `RingShared::not_empty.waiters`.
    pub const NOT_EMPTY: u32 = 1;
    /// Counted in `RingShared::not_full.waiters`.
    pub const NOT_FULL: u32 = 2;
}

/// Signed distance `a - b` between two 63-bit wrapping positions.
#[inline]
pub fn pos_diff(a: u64, b: u64) -> i64 {
    // Shift the 63-bit difference into the top of an i64 and back to sign-extend it.
    ((a.wrapping_sub(b) << 1) as i64) >> 1
}

/// `a + n` modulo 2^63.
#[inline]
pub fn pos_add(a: u64, n: u64) -> u64 {
    a.wrapping_add(n) & POS_MASK
}

/// The first line of a segment. Plain integers: the creator writes them before it
/// publishes [`Identity::state`] with Release; an opener copies the line out with a
/// volatile read after an Acquire load of `state`, and validates the copy.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`] of the creator.
    pub version: u32,
    /// [`state::UNINITIALISED`], [`state::READY`] or [`state::REMOVED`]; accessed
    /// atomically.
    pub state: u32,
    /// Capacity in messages (power of two, 2..=2^32).
    pub capacity: u64,
    /// Largest message in bytes.
    pub max_message_size: u64,
    /// Bytes from one slot to the next.
    pub slot_stride: u64,
    /// Offset of slot 0 from the segment start.
    pub slots_offset: u64,
    /// Offset of participant record 0 from the segment start.
    pub participants_offset: u64,
    /// Number of participant records.
    pub max_participants: u64,
    /// Bytes the segment must have.
    pub total_size: u64,
    /// Pid of the creating process (informational).
    pub creator_pid: u64,
    /// Creation time, nanoseconds since the Unix epoch (informational).
    pub creation_time_ns: u64,
    /// Position of the first message (0 except in wraparound tests).
    pub initial_position: u64,
    /// Permission bits the creator asked for (informational).
    pub mode: u64,
    /// Deliveries a message gets before it goes to the dead-letter segment instead
    /// (`0`: no limit, redelivered forever). Any value is valid.
    pub max_deliveries: u64,
    /// What the segment is: [`kind::WORK_QUEUE`] (zero, as in every segment made
    /// before broadcast segments existed), [`kind::BROADCAST_LOSSLESS`] or
    /// [`kind::BROADCAST_OVERWRITE`]. Validated: any other value is refused.
    pub kind: u64,
    /// Reserved, zero.
    pub reserved: [u64; 1],
}

/// Values of [`Identity::kind`]: which algorithm's layout follows the header.
pub mod kind {
    /// A work queue (each message to one consumer): [`super::RingShared`],
    /// [`super::ParticipantRecord`]s, [`super::SlotHeader`]s.
    pub const WORK_QUEUE: u64 = 0;
    /// A broadcast segment whose publishers wait for the slowest live subscriber:
    /// [`super::BroadcastShared`], [`super::BroadcastRecord`]s, [`super::BroadcastSlot`]s.
    pub const BROADCAST_LOSSLESS: u64 = 1;
    /// A broadcast segment whose publishers overwrite what slow subscribers have
    /// not read (they are told how much they missed).
    pub const BROADCAST_OVERWRITE: u64 = 2;
}

/// What a broadcast segment does about a subscriber that falls a whole ring behind,
/// chosen when the segment is created.
///
/// ```
/// use shmq::broadcast::SlowSubscriber;
/// assert_ne!(SlowSubscriber::Lossless, SlowSubscriber::Overwrite);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlowSubscriber {
    /// Publishers wait (spin, then sleep) until every *live* subscriber has read the
    /// message a new one would overwrite. A dead subscriber holds nobody back.
    Lossless,
    /// Publishers never wait for subscribers: a subscriber that fell behind is told
    /// how many messages it missed (`Lagged`) and continues from the oldest held.
    Overwrite,
}

/// The layout a segment's header announces ([`Identity::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// A work queue.
    WorkQueue,
    /// A broadcast segment with its slow-subscriber policy.
    Broadcast(SlowSubscriber),
}

impl LayoutKind {
    /// The header word for this kind.
    #[cfg_attr(loom, allow(dead_code))] // segments only
    pub fn code(self) -> u64 {
        match self {
            LayoutKind::WorkQueue => kind::WORK_QUEUE,
            LayoutKind::Broadcast(SlowSubscriber::Lossless) => kind::BROADCAST_LOSSLESS,
            LayoutKind::Broadcast(SlowSubscriber::Overwrite) => kind::BROADCAST_OVERWRITE,
        }
    }

    /// The kind a header word names, if any.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            kind::WORK_QUEUE => Some(LayoutKind::WorkQueue),
            kind::BROADCAST_LOSSLESS => Some(LayoutKind::Broadcast(SlowSubscriber::Lossless)),
            kind::BROADCAST_OVERWRITE => Some(LayoutKind::Broadcast(SlowSubscriber::Overwrite)),
            _ => None,
        }
    }

    /// How error messages name it.
    #[cfg_attr(loom, allow(dead_code))] // segments only
    pub fn describe(self) -> &'static str {
        match self {
            LayoutKind::WorkQueue => "work queue",
            LayoutKind::Broadcast(SlowSubscriber::Lossless) => "broadcast (lossless)",
            LayoutKind::Broadcast(SlowSubscriber::Overwrite) => "broadcast (overwrite)",
        }
    }
}

/// A `u64` on a line of its own.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct PaddedU64 {
    /// The value.
    pub value: AtomicU64,
}

/// The futex side of one direction (not-empty or not-full): a count of sleepers and an
/// epoch word that a waker bumps before `futex_wake`, on one line.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct WaitWord {
    /// Handles currently registered as (about to be) asleep on [`WaitWord::epoch`].
    pub waiters: AtomicU32,
    /// The futex word: bumped by every waker.
    pub epoch: AtomicU32,
}

/// Counters kept by the recovery sweep (for `inspect`). Shares the ring's last line
/// with the [`Schema`]: both are cold.
#[repr(C)]
#[derive(Debug)]
pub struct RecoveryStats {
    /// Slots given up by dead producers and marked skipped.
    pub skipped: AtomicU64,
    /// Messages a dead consumer held that were delivered again.
    pub redelivered: AtomicU64,
    /// Participant records of dead processes returned to the free list.
    pub freed: AtomicU64,
    /// Messages that consumers rejected because their length field was out of bounds.
    pub corrupt: AtomicU64,
    /// Messages a consumer gave back on purpose (abandoned) for another delivery.
    pub abandoned: AtomicU64,
    /// Messages moved to the dead-letter segment after their last allowed delivery.
    pub dead_lettered: AtomicU64,
    /// Attempts to move a message to the dead-letter segment that failed (it was
    /// full, or could not be opened); the message stayed here and is tried again.
    pub dead_letter_failures: AtomicU64,
}

/// The algorithm's shared state, right after [`Identity`].
#[repr(C)]
#[derive(Debug)]
pub struct RingShared {
    /// Next position a producer will claim ("tail").
    pub enqueue_pos: PaddedU64,
    /// Next position a consumer will claim ("head").
    pub dequeue_pos: PaddedU64,
    /// Consumers sleeping until a message is published.
    pub not_empty: WaitWord,
    /// Producers sleeping until a slot is released.
    pub not_full: WaitWord,
    /// Recovery counters.
    pub stats: RecoveryStats,
    /// The message type of a typed queue (zero: untyped).
    pub schema: Schema,
}

/// Bytes of a [`Schema`]'s type name kept in the segment (longer names are cut;
/// the comparison uses the full name's hash).
pub const SCHEMA_NAME_BYTES: usize = 48;

/// The message type a typed queue's segment was created for; all zero when the
/// segment is untyped. Plain integers: the creator writes them before it publishes
/// READY, openers copy them out after (like [`Identity`]). Untrusted: the name is
/// only shown, never parsed, and its length is clamped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schema {
    /// FNV-1a (64-bit) hash of the full type name; `0`: untyped.
    pub name_hash: u64,
    /// `size_of` the message type.
    pub size: u32,
    /// `align_of` the message type.
    pub align: u32,
    /// The user's schema version.
    pub version: u32,
    /// Bytes of `name` in use.
    pub name_len: u32,
    /// The type name, cut to [`SCHEMA_NAME_BYTES`].
    pub name: [u8; SCHEMA_NAME_BYTES],
}

impl Default for Schema {
    fn default() -> Self {
        Self {
            name_hash: 0,
            size: 0,
            align: 0,
            version: 0,
            name_len: 0,
            name: [0; SCHEMA_NAME_BYTES],
        }
    }
}

/// FNV-1a, 64 bits: a stable hash of a type name (the same in every build).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The fixed part of a slot, in front of its payload.
#[repr(C)]
#[derive(Debug)]
pub struct SlotHeader {
    /// Vyukov's per-slot sequence. For the slot at position `p`:
    /// `p` = empty and ready for the producer of `p`;
    /// `p + 1` = published, ready for the consumer of `p`;
    /// `p + capacity` = released, ready for the producer one lap later.
    pub sequence: AtomicU64,
    /// Payload length in bytes, or [`SKIP_LEN`]. Untrusted: checked against the
    /// maximum before use.
    pub len: AtomicU32,
    /// How many times the message was given back unfinished (its consumer died
    /// holding it, or abandoned it) before the delivery now under way: `0` when
    /// published. Written by its producer before publishing and by the one sweeper
    /// that takes it over; saturates. Untrusted: any value is only a count.
    pub returns: AtomicU32,
}

/// One registered handle. Written by its owner on every operation (only the claim
/// words), read by sweepers. One per 128-byte line, so owners never share lines.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ParticipantRecord {
    /// [`participant::FREE`] or [`participant::ACTIVE`].
    pub state: AtomicU64,
    /// Owner's pid (informational: liveness comes from the platform's lock).
    pub pid: AtomicU64,
    /// Owner's process start time in clock ticks since boot (informational).
    pub start_time: AtomicU64,
    /// Position of the enqueue claim this participant is attempting or holds, or
    /// [`CLAIM_NONE`]. Stored before the claiming CAS on the cursor.
    pub enqueue_claim: AtomicU64,
    /// Same for dequeue claims.
    pub dequeue_claim: AtomicU64,
    /// [`waiting`] bits.
    pub waiting: AtomicU32,
    /// How many consecutive positions, from `enqueue_claim`, the claim covers (a
    /// batch); `0` and `1` both mean one. Stored before the claim word. Untrusted:
    /// clamped to [`MAX_RUN`] before use.
    pub enqueue_run: AtomicU32,
    /// Operations completed (informational, written by the owner only).
    pub operations: AtomicU64,
    /// Same as `enqueue_run`, for `dequeue_claim`.
    pub dequeue_run: AtomicU32,
}

/// A broadcast segment's shared state, where a work queue has its [`RingShared`]
/// (same size, so both kinds share one [`Geometry`]).
#[repr(C)]
#[derive(Debug)]
pub struct BroadcastShared {
    /// Next position a publisher will claim.
    pub tail: PaddedU64,
    /// Subscribers sleeping until a message is published.
    pub not_empty: WaitWord,
    /// Lossless publishers sleeping until the slowest live subscriber moves on.
    pub not_full: WaitWord,
    /// Counters (for tests and inspection).
    pub stats: BroadcastStats,
    /// Unused, zero.
    pub spare: PaddedU64,
}

/// Counters of a broadcast segment: statistics only, never used to decide anything.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct BroadcastStats {
    /// Slots of dead publishers published as skips.
    pub skipped: AtomicU64,
    /// Records of dead participants freed.
    pub freed: AtomicU64,
    /// Positions subscribers stepped over because they were overwritten (sum of
    /// every `Lagged { missed }` reported).
    pub lagged: AtomicU64,
}

/// The fixed part of a broadcast slot, in front of its payload (16 B, like
/// [`SlotHeader`]).
#[repr(C)]
#[derive(Debug)]
pub struct BroadcastSlot {
    /// A sequence lock naming the position the slot holds: `2p + 1` while the
    /// publisher of position `p` writes it, `2p` once published (see
    /// `src/broadcast/mod.rs`). Positions are 63-bit, so `2p + 1` fits exactly.
    pub stamp: AtomicU64,
    /// Payload length, or [`SKIP_LEN`] for a dead publisher's slot. Untrusted.
    pub len: AtomicU32,
    /// Unused, zero.
    pub spare: AtomicU32,
}

/// Values of [`BroadcastRecord::role`].
pub mod role {
    /// Nobody (the record is free, or being registered or freed).
    pub const NONE: u64 = 0;
    /// A publisher: its `claim` word matters.
    pub const PUBLISHER: u64 = 1;
    /// A subscriber: its `cursor` matters (and, in lossless mode, gates publishers).
    pub const SUBSCRIBER: u64 = 2;
}

/// One registered broadcast handle, one per 128-byte line (like
/// [`ParticipantRecord`], whose size it has).
#[repr(C, align(128))]
#[derive(Debug)]
pub struct BroadcastRecord {
    /// [`participant::FREE`] or [`participant::ACTIVE`].
    pub state: AtomicU64,
    /// A [`role`] value.
    pub role: AtomicU64,
    /// Owner's pid (informational).
    pub pid: AtomicU64,
    /// Owner's process start time (informational).
    pub start_time: AtomicU64,
    /// A publisher's claim: the position it is claiming or last claimed, or
    /// [`CLAIM_NONE`]. Stored before the claiming CAS on the tail.
    pub claim: AtomicU64,
    /// A subscriber's next position. Untrusted: only compared, never used to index
    /// anything but through the mask.
    pub cursor: AtomicU64,
    /// [`waiting`] bits: which waiter counts this handle is in.
    pub waiting: AtomicU32,
    /// How many positions from `claim` a publisher's claim covers (a batch claims
    /// a run with one CAS). Zero (never written) and one both mean a single
    /// position. Untrusted: clamped to 1..=[`MAX_RUN`] before use.
    pub run: AtomicU32,
    /// Messages published or received (informational, owner-written).
    pub operations: AtomicU64,
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<BroadcastShared>() == std::mem::size_of::<RingShared>());
    assert!(std::mem::size_of::<BroadcastSlot>() == SLOT_HEADER_SIZE as usize);
    assert!(std::mem::size_of::<BroadcastRecord>() == LINE as usize);
};

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Identity>() == LINE as usize);
    assert!(std::mem::size_of::<RingShared>() == 5 * LINE as usize);
    assert!(std::mem::size_of::<RecoveryStats>() + std::mem::size_of::<Schema>() == LINE as usize);
    assert!(std::mem::size_of::<SlotHeader>() == SLOT_HEADER_SIZE as usize);
    assert!(std::mem::size_of::<ParticipantRecord>() == LINE as usize);
};

/// Offset of [`RingShared`] from the segment start.
pub const RING_OFFSET: u64 = LINE;
/// Offset of the participant table.
pub const PARTICIPANTS_OFFSET: u64 = RING_OFFSET + 5 * LINE;

/// Byte offset of the recovery lock, a one-byte file lock that one sweeper at a time
/// holds. Every process must agree on it, so it is part of the layout. Locks sit far
/// beyond any segment's data (a lock may cover bytes past the end of the file).
pub const RECOVERY_LOCK_OFFSET: u64 = 1 << 41;

/// Byte offset of participant `index`'s liveness lock: held, through its own open
/// file description, by the live owner of record `index`; the kernel drops it when
/// the owner dies.
#[cfg_attr(loom, allow(dead_code))]
pub const fn participant_lock_offset(index: u64) -> u64 {
    RECOVERY_LOCK_OFFSET + 1 + index
}

const _: () = assert!(MAX_SEGMENT_SIZE < RECOVERY_LOCK_OFFSET);

/// Where everything lives, derived from the three creation parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Messages the ring holds (power of two).
    pub capacity: u64,
    /// Largest payload.
    pub max_message_size: u64,
    /// Bytes between consecutive slots.
    pub slot_stride: u64,
    /// Participant table length.
    pub max_participants: u64,
    /// Offset of the participant table.
    pub participants_offset: u64,
    /// Offset of slot 0.
    pub slots_offset: u64,
    /// Bytes in the segment.
    pub total_size: u64,
    /// Position of the first message.
    pub initial_position: u64,
}

fn round_up(value: u64, to: u64) -> Option<u64> {
    value.checked_add(to - 1).map(|v| v / to * to)
}

impl Geometry {
    /// Computes the layout for the given parameters, with overflow checks throughout.
    pub fn new(
        capacity: u64,
        max_message_size: u64,
        max_participants: u64,
        initial_position: u64,
    ) -> Result<Self, GeometryError> {
        if !(2..=MAX_CAPACITY).contains(&capacity) || !capacity.is_power_of_two() {
            return Err(GeometryError::Capacity(capacity));
        }
        if !(1..=MAX_MESSAGE_SIZE).contains(&max_message_size) {
            return Err(GeometryError::MessageSize(max_message_size));
        }
        if !(1..=MAX_PARTICIPANTS).contains(&max_participants) {
            return Err(GeometryError::Participants(max_participants));
        }
        if initial_position > POS_MASK {
            return Err(GeometryError::InitialPosition(initial_position));
        }
        let slot_stride = round_up(SLOT_HEADER_SIZE + max_message_size, SLOT_ALIGN)
            .ok_or(GeometryError::TooLarge(u64::MAX))?;
        let participants_offset = PARTICIPANTS_OFFSET;
        let slots_offset = max_participants
            .checked_mul(LINE)
            .and_then(|t| t.checked_add(participants_offset))
            .ok_or(GeometryError::TooLarge(u64::MAX))?;
        let total_size = slot_stride
            .checked_mul(capacity)
            .and_then(|s| s.checked_add(slots_offset))
            .ok_or(GeometryError::TooLarge(u64::MAX))?;
        if total_size > MAX_SEGMENT_SIZE {
            return Err(GeometryError::TooLarge(total_size));
        }
        Ok(Self {
            capacity,
            max_message_size,
            slot_stride,
            max_participants,
            participants_offset,
            slots_offset,
            total_size,
            initial_position,
        })
    }

    /// `capacity - 1`: position to slot index.
    #[inline]
    pub fn mask(&self) -> u64 {
        self.capacity - 1
    }

    /// Checks an [`Identity`] copied out of a segment of `file_size` bytes. Returns the
    /// geometry to use, or the first thing that is wrong, in words a user can act on.
    pub fn validate(identity: &Identity, file_size: u64) -> Result<Self, HeaderProblem> {
        if identity.magic != MAGIC {
            return Err(HeaderProblem::Magic(identity.magic));
        }
        if identity.version != LAYOUT_VERSION {
            return Err(HeaderProblem::Version(identity.version));
        }
        if identity.state != state::READY {
            return Err(HeaderProblem::State(identity.state));
        }
        if LayoutKind::from_code(identity.kind).is_none() {
            return Err(HeaderProblem::Kind(identity.kind));
        }
        let geometry = Self::new(
            identity.capacity,
            identity.max_message_size,
            identity.max_participants,
            identity.initial_position,
        )
        .map_err(HeaderProblem::Geometry)?;
        let stored = [
            ("slot_stride", identity.slot_stride, geometry.slot_stride),
            (
                "participants_offset",
                identity.participants_offset,
                geometry.participants_offset,
            ),
            ("slots_offset", identity.slots_offset, geometry.slots_offset),
            ("total_size", identity.total_size, geometry.total_size),
        ];
        for (field, found, expected) in stored {
            if found != expected {
                return Err(HeaderProblem::Field {
                    field,
                    found,
                    expected,
                });
            }
        }
        if file_size < geometry.total_size {
            return Err(HeaderProblem::Truncated {
                file_size,
                expected: geometry.total_size,
            });
        }
        Ok(geometry)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pos_diff_wraps_at_63_bits() {
        assert_eq!(pos_diff(5, 3), 2);
        assert_eq!(pos_diff(3, 5), -2);
        assert_eq!(pos_diff(1, POS_MASK), 2);
        assert_eq!(pos_diff(POS_MASK, 1), -2);
        assert_eq!(pos_add(POS_MASK, 1), 0);
    }

    #[test]
    fn geometry_rejects_bad_parameters() {
        assert_eq!(Geometry::new(3, 8, 1, 0), Err(GeometryError::Capacity(3)));
        assert_eq!(Geometry::new(1, 8, 1, 0), Err(GeometryError::Capacity(1)));
        assert_eq!(
            Geometry::new(2, 0, 1, 0),
            Err(GeometryError::MessageSize(0))
        );
        assert_eq!(
            Geometry::new(2, 8, 0, 0),
            Err(GeometryError::Participants(0))
        );
        assert!(matches!(
            Geometry::new(1 << 32, 1 << 30, 1, 0),
            Err(GeometryError::TooLarge(_))
        ));
        assert_eq!(
            Geometry::new(2, 8, 1, 1 << 63),
            Err(GeometryError::InitialPosition(1 << 63))
        );
    }

    fn valid_identity() -> (Identity, Geometry) {
        let g = Geometry::new(16, 100, 8, 0).unwrap();
        let identity = Identity {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            state: state::READY,
            capacity: g.capacity,
            max_message_size: g.max_message_size,
            slot_stride: g.slot_stride,
            slots_offset: g.slots_offset,
            participants_offset: g.participants_offset,
            max_participants: g.max_participants,
            total_size: g.total_size,
            ..Identity::default()
        };
        (identity, g)
    }

    #[test]
    fn a_valid_header_validates_to_its_geometry() {
        let (identity, g) = valid_identity();
        assert_eq!(Geometry::validate(&identity, g.total_size), Ok(g));
        assert_eq!(Geometry::validate(&identity, g.total_size + 4096), Ok(g));
    }

    #[test]
    fn each_corrupted_header_field_is_named_in_the_error() {
        let (good, g) = valid_identity();
        let check = |mutate: &dyn Fn(&mut Identity), expected: HeaderProblem| {
            let mut identity = good;
            mutate(&mut identity);
            assert_eq!(Geometry::validate(&identity, g.total_size), Err(expected));
        };
        check(&|i| i.magic ^= 1, HeaderProblem::Magic(MAGIC ^ 1));
        check(&|i| i.version = 2, HeaderProblem::Version(2));
        check(&|i| i.state = 7, HeaderProblem::State(7));
        check(&|i| i.kind = 3, HeaderProblem::Kind(3));
        check(
            &|i| i.capacity = 17,
            HeaderProblem::Geometry(GeometryError::Capacity(17)),
        );
        check(
            &|i| i.capacity = 0,
            HeaderProblem::Geometry(GeometryError::Capacity(0)),
        );
        check(
            &|i| i.max_message_size = 0,
            HeaderProblem::Geometry(GeometryError::MessageSize(0)),
        );
        check(
            &|i| i.max_participants = 0,
            HeaderProblem::Geometry(GeometryError::Participants(0)),
        );
        check(
            &|i| i.initial_position = u64::MAX,
            HeaderProblem::Geometry(GeometryError::InitialPosition(u64::MAX)),
        );
        check(
            &|i| {
                i.capacity = 1 << 32;
                i.max_message_size = 1 << 20;
            },
            HeaderProblem::Geometry(GeometryError::TooLarge(
                g.slots_offset + (1u64 << 32) * ((1 << 20) + 64),
            )),
        );
        for (field, offset) in [
            ("slot_stride", std::mem::offset_of!(Identity, slot_stride)),
            (
                "participants_offset",
                std::mem::offset_of!(Identity, participants_offset),
            ),
            ("slots_offset", std::mem::offset_of!(Identity, slots_offset)),
            ("total_size", std::mem::offset_of!(Identity, total_size)),
        ] {
            let mut identity = good;
            // Bump the stored u64 at `offset` by one.
            let expected = {
                let bytes: &mut [u8; 128] =
                    // SAFETY: Identity is 128 bytes of plain integers (asserted at
                    // compile time), so viewing it as bytes is sound.
                    unsafe { &mut *(&mut identity as *mut Identity).cast::<[u8; 128]>() };
                let old = u64::from_ne_bytes(bytes[offset..offset + 8].try_into().unwrap());
                bytes[offset..offset + 8].copy_from_slice(&(old + 1).to_ne_bytes());
                old
            };
            assert_eq!(
                Geometry::validate(&identity, g.total_size),
                Err(HeaderProblem::Field {
                    field,
                    found: expected + 1,
                    expected
                }),
            );
        }
    }

    #[test]
    fn a_file_shorter_than_the_header_implies_is_truncated() {
        let (identity, g) = valid_identity();
        assert_eq!(
            Geometry::validate(&identity, g.total_size - 1),
            Err(HeaderProblem::Truncated {
                file_size: g.total_size - 1,
                expected: g.total_size
            })
        );
    }

    #[test]
    fn slots_are_line_aligned_and_do_not_overlap() {
        let g = Geometry::new(8, 100, 4, 0).unwrap();
        assert_eq!(g.slot_stride, 128);
        assert_eq!(g.slots_offset % LINE, 0);
        assert_eq!(g.slots_offset, PARTICIPANTS_OFFSET + 4 * LINE);
        assert_eq!(g.total_size, g.slots_offset + 8 * 128);
        let g = Geometry::new(2, 48, 1, 0).unwrap();
        assert_eq!(g.slot_stride, 64);
    }
}
