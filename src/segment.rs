//! A named segment: creation, opening and validation, and the [`RingMemory`] /
//! [`Platform`] the algorithm runs on in shared memory.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::layout::{
    participant, pos_add, state, Geometry, GeometryError, HeaderProblem, Identity,
    ParticipantRecord, RingShared, SlotHeader, CLAIM_NONE, LAYOUT_VERSION, LINE, MAGIC,
    MAX_SEGMENT_SIZE, RING_OFFSET, SLOT_HEADER_SIZE,
};
use crate::platform::{self, Mapping};
use crate::ring::{Platform, RingMemory};
use crate::sync::{AtomicU32, Ordering};

/// Prefix of every shmq object in /dev/shm (`orders` lives at `/dev/shm/shmq.orders`).
pub const OBJECT_PREFIX: &str = "shmq.";
/// Longest segment name accepted (bytes).
pub const MAX_NAME_LEN: usize = 200;
/// How long an opener waits for a creator that is still initialising.
pub const READY_WAIT: Duration = Duration::from_secs(1);

/// Parameters of a new segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Messages the queue holds: a power of two, at least 2.
    pub capacity: u64,
    /// Largest message in bytes.
    pub max_message_size: u64,
    /// Permission bits (default 0600: only the creating user).
    pub mode: u32,
    /// Handles that may be attached at once (default 64).
    pub max_participants: u64,
    /// Position of the first message. Only for tests that exercise wraparound.
    #[doc(hidden)]
    pub initial_position: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_message_size: 240,
            mode: 0o600,
            max_participants: 64,
            initial_position: 0,
        }
    }
}

impl Options {
    /// Default options with this capacity and maximum message size.
    pub fn new(capacity: u64, max_message_size: u64) -> Self {
        Self {
            capacity,
            max_message_size,
            ..Self::default()
        }
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the participant table size.
    pub fn max_participants(mut self, max: u64) -> Self {
        self.max_participants = max;
        self
    }
}

/// Checks a user-supplied segment name.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 200 bytes")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn object_name(name: &str) -> String {
    format!("{OBJECT_PREFIX}{name}")
}

fn io_error(operation: &'static str, name: &str, source: io::Error) -> Error {
    match source.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            name: name.to_owned(),
        },
        Some(libc::EEXIST) => Error::AlreadyExists {
            name: name.to_owned(),
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            name: name.to_owned(),
        },
        _ => Error::Io {
            operation,
            name: name.to_owned(),
            source,
        },
    }
}

/// A mapped, validated segment.
#[derive(Debug)]
pub struct Segment {
    mapping: Mapping,
    geometry: Geometry,
    identity: Identity,
    name: String,
}

impl Segment {
    /// Creates the segment `name` exclusively and returns it with the descriptor.
    pub fn create(name: &str, options: &Options) -> Result<(Arc<Self>, OwnedFd), Error> {
        validate_name(name)?;
        if options.mode & !0o777 != 0 {
            return Err(Error::InvalidOptions(format!(
                "mode {:o} has bits outside 0777",
                options.mode
            )));
        }
        let geometry = Geometry::new(
            options.capacity,
            options.max_message_size,
            options.max_participants,
            options.initial_position,
        )
        .map_err(|e| match e {
            GeometryError::TooLarge(bytes) => Error::TooLarge { bytes },
            GeometryError::Capacity(c) => Error::InvalidOptions(format!(
                "capacity {c} must be a power of two between 2 and 2^32"
            )),
            GeometryError::MessageSize(m) => Error::InvalidOptions(format!(
                "maximum message size {m} must be between 1 and 2^30 bytes"
            )),
            GeometryError::Participants(p) => Error::InvalidOptions(format!(
                "participant count {p} must be between 1 and {}",
                crate::layout::MAX_PARTICIPANTS
            )),
            GeometryError::InitialPosition(p) => {
                Error::InvalidOptions(format!("initial position {p:#x} exceeds 63 bits"))
            }
        })?;
        let object = object_name(name);
        let fd = platform::shm_open(&object, true, options.mode)
            .map_err(|e| io_error("shm_open", name, e))?;
        let cleanup = |error: Error| {
            let _ = platform::shm_unlink(&object);
            error
        };
        platform::fchmod(&fd, options.mode).map_err(|e| cleanup(io_error("fchmod", name, e)))?;
        platform::fallocate(&fd, geometry.total_size).map_err(|e| {
            cleanup(match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EFBIG) => Error::OutOfSpace {
                    name: name.to_owned(),
                    bytes: geometry.total_size,
                },
                _ => io_error("posix_fallocate", name, e),
            })
        })?;
        let mapping = Mapping::new(&fd, geometry.total_size)
            .map_err(|e| cleanup(io_error("mmap", name, e)))?;
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
        let segment = Self {
            mapping,
            geometry,
            identity,
            name: name.to_owned(),
        };
        segment.initialise();
        Ok((Arc::new(segment), fd))
    }

    /// Writes the header, cursors, slot sequences and participant records of a fresh
    /// (zero-filled) segment, then publishes it as ready.
    fn initialise(&self) {
        let mut identity = self.identity;
        identity.state = state::UNINITIALISED;
        // SAFETY: the mapping is at least one line long and page aligned; nobody reads
        // the identity before `state` says READY, which we publish last.
        unsafe { std::ptr::write_volatile(self.mapping.base().cast::<Identity>(), identity) };
        let shared = self.shared();
        let start = self.geometry.initial_position;
        // Relaxed: all of these are published by the Release store of `state` below.
        shared.enqueue_pos.value.store(start, Ordering::Relaxed);
        shared.dequeue_pos.value.store(start, Ordering::Relaxed);
        let mask = self.geometry.mask();
        for k in 0..self.geometry.capacity {
            let pos = pos_add(start, k);
            self.slot(pos & mask).sequence.store(pos, Ordering::Relaxed);
        }
        for index in 0..self.geometry.max_participants {
            let record = self.participant(index);
            record.enqueue_claim.store(CLAIM_NONE, Ordering::Relaxed);
            record.dequeue_claim.store(CLAIM_NONE, Ordering::Relaxed);
        }
        // Release: pairs with the opener's Acquire load in `wait_ready`; everything
        // written above is visible to an opener that sees READY.
        self.state_word().store(state::READY, Ordering::Release);
    }

    fn state_word(&self) -> &StdAtomicU32 {
        // SAFETY: `state` is an aligned u32 inside the mapped identity line, accessed
        // only atomically after creation; the mapping outlives `self`.
        unsafe {
            StdAtomicU32::from_ptr(
                self.mapping
                    .base()
                    .add(std::mem::offset_of!(Identity, state))
                    .cast::<u32>(),
            )
        }
    }

    /// Opens the existing segment `name` and validates it completely.
    pub fn open(name: &str) -> Result<(Arc<Self>, OwnedFd), Error> {
        validate_name(name)?;
        let fd = platform::shm_open(&object_name(name), false, 0)
            .map_err(|e| io_error("shm_open", name, e))?;
        let segment = Self::map_existing(name, &fd)?;
        Ok((Arc::new(segment), fd))
    }

    fn map_existing(name: &str, fd: &OwnedFd) -> Result<Self, Error> {
        let corrupt = |problem: HeaderProblem| match problem {
            HeaderProblem::Version(found) => Error::IncompatibleVersion {
                name: name.to_owned(),
                found,
                expected: LAYOUT_VERSION,
            },
            problem => Error::Corrupt {
                name: name.to_owned(),
                problem: problem.to_string(),
            },
        };
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let info = platform::fstat(fd).map_err(|e| io_error("fstat", name, e))?;
            if info.size > MAX_SEGMENT_SIZE {
                return Err(Error::Corrupt {
                    name: name.to_owned(),
                    problem: format!("the file has {} bytes, above the 1 TiB limit", info.size),
                });
            }
            if info.size >= LINE {
                let mapping = Mapping::new(fd, info.size).map_err(|e| io_error("mmap", name, e))?;
                // SAFETY: the mapping holds at least one line; `state` is an aligned
                // u32 in it, only accessed atomically.
                let state_word = unsafe {
                    StdAtomicU32::from_ptr(
                        mapping
                            .base()
                            .add(std::mem::offset_of!(Identity, state))
                            .cast::<u32>(),
                    )
                };
                // Acquire: pairs with the creator's Release of READY.
                let ready = state_word.load(Ordering::Acquire) == state::READY;
                // SAFETY: at least one line is mapped; Identity is plain integers, so
                // any bytes are a valid value; volatile because another process may
                // write it (we validate the copy, never the live bytes).
                let identity =
                    unsafe { std::ptr::read_volatile(mapping.base().cast::<Identity>()) };
                let fresh = identity.magic == 0 || (identity.magic == MAGIC && !ready);
                if ready || !fresh || Instant::now() >= deadline {
                    if fresh && !ready {
                        return Err(Error::NotReady {
                            name: name.to_owned(),
                        });
                    }
                    let geometry = Geometry::validate(&identity, info.size).map_err(corrupt)?;
                    return Ok(Self {
                        mapping,
                        geometry,
                        identity,
                        name: name.to_owned(),
                    });
                }
            } else if Instant::now() >= deadline {
                return Err(if info.size == 0 {
                    Error::NotReady {
                        name: name.to_owned(),
                    }
                } else {
                    Error::Corrupt {
                        name: name.to_owned(),
                        problem: format!(
                            "the file has only {} bytes, shorter than a header",
                            info.size
                        ),
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the name. Attached handles keep working; the memory is freed when the
    /// last one closes.
    pub fn unlink(name: &str) -> Result<(), Error> {
        validate_name(name)?;
        platform::shm_unlink(&object_name(name)).map_err(|e| io_error("shm_unlink", name, e))
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The header as read (and validated) at open.
    pub fn identity(&self) -> &Identity {
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

/// Liveness, the recovery lock and futexes for one handle, through its own open file
/// description of the segment (each handle has its own, so its locks are its own).
#[derive(Debug)]
pub struct ShmPlatform {
    fd: OwnedFd,
}

impl ShmPlatform {
    /// Wraps a descriptor that this handle alone uses.
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

/// Holds the segment's recovery lock; releases it on drop.
pub struct RecoveryLock {
    fd: std::os::fd::RawFd,
}

impl Drop for RecoveryLock {
    fn drop(&mut self) {
        // SAFETY: the guard never outlives the sweep that holds the platform (and so
        // the descriptor) borrowed. The fd is only wrapped for the call; forget keeps
        // it open.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(self.fd) };
        platform::ofd_unlock(&fd, platform::RECOVERY_LOCK_OFFSET);
        std::mem::forget(fd);
    }
}

impl Platform for ShmPlatform {
    type RecoveryGuard = RecoveryLock;

    fn is_alive(&self, index: u64) -> bool {
        // An error answering the question must never make a live peer look dead.
        platform::ofd_is_locked(&self.fd, platform::participant_lock_offset(index)).unwrap_or(true)
    }

    fn try_lock_recovery(&self) -> Option<RecoveryLock> {
        match platform::ofd_try_lock(&self.fd, platform::RECOVERY_LOCK_OFFSET) {
            Ok(true) => Some(RecoveryLock {
                fd: self.fd.as_raw_fd(),
            }),
            _ => None,
        }
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        platform::futex_wait(word, expected, timeout);
    }

    fn wake_all(&self, word: &AtomicU32) {
        platform::futex_wake_all(word);
    }
}

/// A participant record as `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Record index.
    pub index: u64,
    /// Owner pid.
    pub pid: u64,
    /// Owner start time (clock ticks since boot).
    pub start_time: u64,
    /// Whether its liveness lock is held.
    pub alive: bool,
    /// Position of its producer claim, if any.
    pub enqueue_claim: Option<u64>,
    /// Position of its consumer claim, if any.
    pub dequeue_claim: Option<u64>,
    /// Whether that producer claim is still unpublished.
    pub enqueue_stuck: bool,
    /// Whether that consumer claim is still unreleased.
    pub dequeue_stuck: bool,
    /// Operations completed.
    pub operations: u64,
}

/// A snapshot of a segment's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment name.
    pub name: String,
    /// Header as validated.
    pub identity: Identity,
    /// Producer cursor.
    pub enqueue_pos: u64,
    /// Consumer cursor.
    pub dequeue_pos: u64,
    /// Messages claimed by producers and not yet claimed by consumers.
    pub occupancy: u64,
    /// Sleeping consumers / producers.
    pub waiters: (u32, u32),
    /// Registered participants.
    pub participants: Vec<ParticipantInfo>,
    /// Recovery counters: skipped, redelivered, freed, corrupt.
    pub recovery: [u64; 4],
}

impl SegmentInfo {
    /// Participants whose process is alive.
    pub fn live(&self) -> usize {
        self.participants.iter().filter(|p| p.alive).count()
    }
    /// Participants registered but dead.
    pub fn dead(&self) -> usize {
        self.participants.len() - self.live()
    }
}

/// Reads a snapshot of `segment` (through `fd`, for liveness checks). `own` is the
/// caller's own record, if any: its lock is held through `fd`, which cannot see it.
pub fn snapshot(segment: &Segment, fd: &OwnedFd, own: Option<u64>) -> SegmentInfo {
    let shared = segment.shared();
    // Relaxed throughout: a snapshot for display; fields may move while we read.
    let enqueue_pos = shared.enqueue_pos.value.load(Ordering::Relaxed);
    let dequeue_pos = shared.dequeue_pos.value.load(Ordering::Relaxed);
    let occupancy = crate::layout::pos_diff(enqueue_pos, dequeue_pos).max(0) as u64;
    let claim = |c: u64| (c != CLAIM_NONE).then_some(c);
    let mask = segment.geometry.mask();
    let mut participants = Vec::new();
    for index in 0..segment.geometry.max_participants {
        let record = segment.participant(index);
        if record.state.load(Ordering::Relaxed) != participant::ACTIVE {
            continue;
        }
        let enqueue_claim = claim(record.enqueue_claim.load(Ordering::Relaxed));
        let dequeue_claim = claim(record.dequeue_claim.load(Ordering::Relaxed));
        let enqueue_stuck = enqueue_claim.is_some_and(|p| {
            crate::layout::pos_diff(enqueue_pos, p) > 0
                && segment.slot(p & mask).sequence.load(Ordering::Relaxed) == p
        });
        let dequeue_stuck = dequeue_claim.is_some_and(|p| {
            crate::layout::pos_diff(dequeue_pos, p) > 0
                && segment.slot(p & mask).sequence.load(Ordering::Relaxed) == pos_add(p, 1)
        });
        participants.push(ParticipantInfo {
            index,
            pid: record.pid.load(Ordering::Relaxed),
            start_time: record.start_time.load(Ordering::Relaxed),
            alive: own == Some(index)
                || platform::ofd_is_locked(fd, platform::participant_lock_offset(index))
                    .unwrap_or(true),
            enqueue_claim,
            dequeue_claim,
            enqueue_stuck,
            dequeue_stuck,
            operations: record.operations.load(Ordering::Relaxed),
        });
    }
    let stats = &shared.stats;
    SegmentInfo {
        name: segment.name.clone(),
        identity: segment.identity,
        enqueue_pos,
        dequeue_pos,
        occupancy,
        waiters: (
            shared.not_empty.waiters.load(Ordering::Relaxed),
            shared.not_full.waiters.load(Ordering::Relaxed),
        ),
        participants,
        recovery: [
            stats.skipped.load(Ordering::Relaxed),
            stats.redelivered.load(Ordering::Relaxed),
            stats.freed.load(Ordering::Relaxed),
            stats.corrupt.load(Ordering::Relaxed),
        ],
    }
}
