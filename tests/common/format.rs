// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

//! shmq's shared-memory format, layout v1, written down here independently of the
//! library (whose `layout` module is private): the hostile tests forge headers and
//! scribble on slots byte by byte, so a change to the format must be made here too,
//! on purpose. `format_matches_a_real_segment` checks it against a real segment.

/// First eight bytes of every segment: `b"SHMQring"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQring");
/// The layout version these offsets describe.
pub const LAYOUT_VERSION: u32 = 1;
/// Positions wrap modulo 2^63.
pub const POS_MASK: u64 = (1 << 63) - 1;
/// Bytes in front of each slot's payload: sequence (u64), length (u32), returns (u32).
pub const SLOT_HEADER_SIZE: u64 = 16;
/// Offset of the length field inside a slot header.
pub const SLOT_LEN_OFFSET: u64 = 8;
/// Bytes per participant record, and per shared line.
pub const LINE: u64 = 128;

/// Byte offsets of the header fields (the first 128-byte line).
pub mod identity {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const STATE: usize = 12;
    pub const CAPACITY: usize = 16;
    pub const MAX_MESSAGE_SIZE: usize = 24;
    pub const SLOT_STRIDE: usize = 32;
    pub const SLOTS_OFFSET: usize = 40;
    pub const PARTICIPANTS_OFFSET: usize = 48;
    pub const MAX_PARTICIPANTS: usize = 56;
    pub const TOTAL_SIZE: usize = 64;
    pub const CREATOR_PID: usize = 72;
    pub const CREATION_TIME_NS: usize = 80;
    pub const INITIAL_POSITION: usize = 88;
    pub const MODE: usize = 96;
    pub const MAX_DELIVERIES: usize = 104;
    pub const KIND: usize = 112;
    pub const RESERVED: usize = 120;
}

/// Where things are in a segment with the given parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u64,
    pub slot_stride: u64,
    pub participants_offset: u64,
    pub slots_offset: u64,
    pub total_size: u64,
}

/// Header line, five shared lines (cursors, wait words, counters), the participant
/// table, then the slots, each padded to 64 bytes.
pub fn geometry(capacity: u64, max_message_size: u64, max_participants: u64) -> Geometry {
    let slot_stride = (SLOT_HEADER_SIZE + max_message_size).div_ceil(64) * 64;
    let participants_offset = LINE + 5 * LINE;
    let slots_offset = participants_offset + max_participants * LINE;
    Geometry {
        capacity,
        slot_stride,
        participants_offset,
        slots_offset,
        total_size: slots_offset + capacity * slot_stride,
    }
}
