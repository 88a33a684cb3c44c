//! A named segment's lifecycle: creating it (sizing, mode, initial state, the READY
//! publish), opening and validating it, removing its name; and the [`RingMemory`]
//! the algorithm runs on: slots and records inside the mapping.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, HeaderProblem};
use crate::layout::{
    state, Geometry, Identity, ParticipantRecord, RingShared, SlotHeader, LAYOUT_VERSION, LINE,
    MAGIC, MAX_SEGMENT_SIZE, RING_OFFSET, SLOT_HEADER_SIZE,
};
use crate::name::{self, io_error};
use crate::options::Options;
use crate::platform::{self, Mapping};
use crate::ring::RingMemory;
use crate::sync::Ordering;

/// How long an opener waits for a creator that is still initialising.
const READY_WAIT: Duration = Duration::from_secs(1);

/// A mapped, validated segment.
#[derive(Debug)]
pub(crate) struct Segment {
    mapping: Mapping,
    geometry: Geometry,
    identity: Identity,
    name: String,
}

impl Segment {
    /// Creates the segment `name` exclusively and returns it with the descriptor.
    pub(crate) fn create(name: &str, options: &Options) -> Result<(Arc<Self>, OwnedFd), Error> {
        name::validate(name)?;
        if options.mode & !0o777 != 0 {
            return Err(Error::InvalidMode { mode: options.mode });
        }
        let geometry = Geometry::new(
            options.capacity,
            options.max_message_size,
            options.max_participants,
            options.initial_position,
        )
        .map_err(|problem| Error::InvalidOptions { problem })?;
        let object = name::object(name);
        let fd = platform::shm_open(&object, true, options.mode)
            .map_err(|e| io_error("shm_open", name, e))?;
        let segment = Self::size_and_map(name, &fd, options, geometry).inspect_err(|_| {
            let _ = platform::shm_unlink(&object);
        })?;
        segment.initialise();
        Ok((Arc::new(segment), fd))
    }

    /// Sets the mode exactly, reserves the memory and maps a fresh segment file.
    fn size_and_map(
        name: &str,
        fd: &OwnedFd,
        options: &Options,
        geometry: Geometry,
    ) -> Result<Self, Error> {
        platform::fchmod(fd, options.mode).map_err(|e| io_error("fchmod", name, e))?;
        platform::fallocate(fd, geometry.total_size).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) => Error::OutOfSpace {
                name: name.to_owned(),
                bytes: geometry.total_size,
            },
            _ => io_error("posix_fallocate", name, e),
        })?;
        let mapping =
            Mapping::new(fd, geometry.total_size).map_err(|e| io_error("mmap", name, e))?;
        let identity = Identity {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            state: state::UNINITIALISED,
            capacity: geometry.capacity,
            max_message_size: geometry.max_message_size,
            slot_stride: geometry.slot_stride,
            slots_offset: geometry.slots_offset,
            participants_offset: geometry.participants_offset,
            max_participants: geometry.max_participants,
            total_size: geometry.total_size,
            creator_pid: platform::pid(),
            creation_time_ns: platform::realtime_ns(),
            initial_position: geometry.initial_position,
            mode: u64::from(options.mode),
            reserved: [0; 3],
        };
        Ok(Self {
            mapping,
            geometry,
            identity,
            name: name.to_owned(),
        })
    }

    /// Writes the header and the ring's initial state into a fresh (zero-filled)
    /// segment, then publishes it as ready.
    fn initialise(&self) {
        let mut identity = self.identity;
        identity.state = state::UNINITIALISED;
        // SAFETY: the mapping is at least one line long and page aligned; nobody reads
        // the identity before `state` says READY, which we publish last.
        unsafe { std::ptr::write_volatile(self.mapping.base().cast::<Identity>(), identity) };
        crate::ring::initialise(self);
        // Release: pairs with the opener's Acquire load in `map_existing`; everything
        // written above is visible to an opener that sees READY.
        state_word(&self.mapping).store(state::READY, Ordering::Release);
    }

    /// Opens the existing segment `name` and validates it completely.
    pub(crate) fn open(name: &str) -> Result<(Arc<Self>, OwnedFd), Error> {
        name::validate(name)?;
        let fd = platform::shm_open(&name::object(name), false, 0)
            .map_err(|e| io_error("shm_open", name, e))?;
        let segment = Self::map_existing(name, &fd)?;
        Ok((Arc::new(segment), fd))
    }

    /// Maps and validates a segment, waiting up to [`READY_WAIT`] for a creator that
    /// is still initialising it.
    fn map_existing(name: &str, fd: &OwnedFd) -> Result<Self, Error> {
        let corrupt = |problem: HeaderProblem| match problem {
            HeaderProblem::Version(found) => Error::IncompatibleVersion {
                name: name.to_owned(),
                found,
                expected: LAYOUT_VERSION,
            },
            problem => Error::Corrupt {
                name: name.to_owned(),
                problem,
            },
        };
        let not_ready = || Error::NotReady {
            name: name.to_owned(),
        };
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let size = platform::fstat(fd)
                .map_err(|e| io_error("fstat", name, e))?
                .size;
            if size > MAX_SEGMENT_SIZE {
                return Err(corrupt(HeaderProblem::FileTooLarge { size }));
            }
            let timed_out = Instant::now() >= deadline;
            if size >= LINE {
                let mapping = Mapping::new(fd, size).map_err(|e| io_error("mmap", name, e))?;
                // Acquire: pairs with the creator's Release of READY.
                let ready = state_word(&mapping).load(Ordering::Acquire) == state::READY;
                // SAFETY: at least one line is mapped; Identity is plain integers, so
                // any bytes are a valid value; volatile because another process may
                // write it (we validate the copy, never the live bytes).
                let identity =
                    unsafe { std::ptr::read_volatile(mapping.base().cast::<Identity>()) };
                let fresh = identity.magic == 0 || (identity.magic == MAGIC && !ready);
                if fresh && !ready && timed_out {
                    return Err(not_ready());
                }
                if ready || !fresh {
                    let geometry = Geometry::validate(&identity, size).map_err(corrupt)?;
                    return Ok(Self {
                        mapping,
                        geometry,
                        identity,
                        name: name.to_owned(),
                    });
                }
            } else if timed_out {
                return Err(match size {
                    0 => not_ready(),
                    size => corrupt(HeaderProblem::FileTooShort { size }),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the name. Attached handles keep working; the memory is freed when the
    /// last one closes.
    pub(crate) fn unlink(name: &str) -> Result<(), Error> {
        name::validate(name)?;
        platform::shm_unlink(&name::object(name)).map_err(|e| io_error("shm_unlink", name, e))
    }

    /// The segment's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The header as read (and validated) at open.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    #[inline]
    fn slot_ptr(&self, index: u64) -> *mut u8 {
        assert!(index < self.geometry.capacity, "slot index out of range");
        let offset = self.geometry.slots_offset + index * self.geometry.slot_stride;
        // SAFETY: validated geometry: slots_offset + capacity * stride == total_size
        // <= mapping length, and index < capacity.
        unsafe { self.mapping.base().add(offset as usize) }
    }
}

// SAFETY: every reference points inside the mapping at an offset derived from the
// validated geometry (which guarantees total_size <= mapping length), with the struct
// alignment the layout guarantees (slots on 64 B, records and the ring on 128 B, the
// mapping page aligned); indices are checked against the geometry with `assert!`.
unsafe impl RingMemory for Segment {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    #[inline]
    fn shared(&self) -> &RingShared {
        // SAFETY: RING_OFFSET + size_of::<RingShared>() <= participants_offset <=
        // total_size; atomics are valid for any bit pattern.
        unsafe {
            &*self
                .mapping
                .base()
                .add(RING_OFFSET as usize)
                .cast::<RingShared>()
        }
    }

    #[inline]
    fn slot(&self, index: u64) -> &SlotHeader {
        // SAFETY: slot_ptr bounds-checks the index; a SlotHeader is 16 B at the start
        // of a 64 B-aligned slot.
        unsafe { &*self.slot_ptr(index).cast::<SlotHeader>() }
    }

    #[inline]
    fn participant(&self, index: u64) -> &ParticipantRecord {
        assert!(
            index < self.geometry.max_participants,
            "participant index out of range"
        );
        let offset = self.geometry.participants_offset + index * LINE;
        // SAFETY: index < max_participants, so the record lies before slots_offset.
        unsafe {
            &*self
                .mapping
                .base()
                .add(offset as usize)
                .cast::<ParticipantRecord>()
        }
    }

    #[inline]
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        debug_assert!(bytes.len() as u64 <= self.geometry.max_message_size);
        // SAFETY: the caller holds the slot's claim and bytes fit in the payload area
        // (len <= max_message_size <= stride - SLOT_HEADER_SIZE); `bytes` is local
        // memory, so the ranges do not overlap.
        unsafe {
            crate::copy::copy_bytes(
                bytes.as_ptr(),
                self.slot_ptr(index).add(SLOT_HEADER_SIZE as usize),
                bytes.len(),
            )
        }
    }

    #[inline]
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(len as u64 <= self.geometry.max_message_size);
        // SAFETY: the caller owns the slot and len <= max_message_size, so the slice
        // lies inside this slot's payload area. Another *process* could still scribble
        // on these bytes; they are plain u8, so that gives garbage, never unsoundness
        // in our reading of lengths or offsets (all already bounded).
        let bytes = unsafe {
            std::slice::from_raw_parts(self.slot_ptr(index).add(SLOT_HEADER_SIZE as usize), len)
        };
        f(bytes)
    }
}

/// The header's state word, accessed atomically.
fn state_word(mapping: &Mapping) -> &StdAtomicU32 {
    // SAFETY: every mapping we make of a segment holds at least one line (checked
    // before mapping), and `state` is an aligned u32 inside the identity line, only
    // accessed atomically after creation; the reference lives no longer than the
    // mapping it borrows.
    unsafe {
        StdAtomicU32::from_ptr(
            mapping
                .base()
                .add(std::mem::offset_of!(Identity, state))
                .cast::<u32>(),
        )
    }
}
