//! A named segment's lifecycle: creating it (sizing, mode, initial state, the READY
//! publish), opening and validating it, removing its name; and the [`RingMemory`]
//! the algorithm runs on: slots and records inside the mapping.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::Access;
use crate::error::{Error, HeaderProblem};
use crate::layout::{
    state, BroadcastRecord, BroadcastShared, BroadcastSlot, Geometry, Identity, LayoutKind,
    ParticipantRecord, RingShared, Schema, SlotHeader, LAYOUT_VERSION, LINE, MAGIC,
    MAX_SEGMENT_SIZE, RING_OFFSET, SLOT_HEADER_SIZE,
};
use crate::name::{self, io_error};
use crate::options::Options;
use crate::platform::{self, Mapping};
use crate::ring::RingMemory;
use crate::sync::Ordering;

/// How long an opener waits for a creator that is still initialising. Segments are
/// published complete (see [`Segment::create`]), so only a segment made by an
/// earlier build, or a file that is not a segment at all, is ever seen unready.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Where a segment's name points (see [`Segment::name_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameStatus {
    /// At this segment's file.
    Here,
    /// At another file: the segment was removed and the name reused.
    Elsewhere,
    /// Nowhere (removed, or unreadable).
    Gone,
}

/// Which kind of segment a handle opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExpectedKind {
    /// `Queue` and friends.
    WorkQueue,
    /// `Publisher` and `Subscriber`, either policy.
    Broadcast,
}

/// Whether opening waits for a creator that is still initialising.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Wait up to [`READY_WAIT`]: attaching.
    WaitForCreator,
    /// Decide at once: inspecting and listing never wait.
    Now,
}

/// A mapped, validated segment.
#[derive(Debug)]
pub(crate) struct Segment {
    mapping: Mapping,
    geometry: Geometry,
    identity: Identity,
    /// The message type recorded at creation (copied out after READY).
    schema: Schema,
    name: String,
    /// Device and inode of the file mapped: whether the name still points at it.
    file: (u64, u64),
}

impl Segment {
    /// Creates the segment `name` exclusively and returns it with the descriptor.
    ///
    /// The segment is built under a private name (`shmq..new-PID-N`) and published
    /// under `name` only once complete, by a rename that refuses to replace: a
    /// creator killed at any point leaves the name free (and at most a private
    /// object that the next `create` of any process removes once PID is gone).
    pub(crate) fn create(name: &str, options: &Options) -> Result<(Arc<Self>, OwnedFd), Error> {
        if options.max_deliveries == 0 {
            name::validate(name)?;
        } else {
            name::validate_with_dead_letters(name)?;
        }
        options.check_mode()?;
        let geometry = Geometry::new(
            options.capacity,
            options.max_message_size,
            options.max_participants,
            options.initial_position,
        )
        .map_err(|problem| Error::InvalidOptions { problem })?;
        remove_abandoned_builds();
        let (building, fd) = Self::open_building(name, options.mode)?;
        let built = Self::size_and_map(name, &fd, options, geometry).and_then(|segment| {
            segment.initialise();
            platform::shm_rename_noreplace(&building, &name::object(name))
                .map_err(|e| io_error("publishing (renameat2)", name, e))?;
            Ok(segment)
        });
        match built {
            Ok(segment) => Ok((Arc::new(segment), fd)),
            Err(e) => {
                let _ = platform::shm_unlink(&building);
                Err(e)
            }
        }
    }

    /// Creates a fresh private object to build a segment in.
    fn open_building(name: &str, mode: u32) -> Result<(String, OwnedFd), Error> {
        static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            // Relaxed: a counter only this process uses to make names unique.
            let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
            let building = name::building_object(platform::pid(), attempt);
            match platform::shm_open(&building, true, mode) {
                Ok(fd) => return Ok((building, fd)),
                // Left by an earlier process with our pid: take the next number.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(io_error("shm_open", name, e)),
            }
        }
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
            max_deliveries: u64::from(options.max_deliveries),
            kind: options.kind.code(),
            reserved: [0; 1],
        };
        let file = platform::fstat(fd)
            .map_err(|e| io_error("fstat", name, e))?
            .identity;
        Ok(Self {
            mapping,
            geometry,
            identity,
            schema: options
                .message_type
                .as_ref()
                .map(crate::MessageType::schema)
                .unwrap_or_default(),
            name: name.to_owned(),
            file,
        })
    }

    /// Writes the header and the ring's initial state into a fresh (zero-filled)
    /// segment, then publishes it as ready.
    fn initialise(&self) {
        let mut identity = self.identity;
        identity.state = state::UNINITIALISED;
        let write_header = || {
            // SAFETY: the mapping is at least one line long and page aligned; nobody
            // reads the identity before `state` says READY, which `publish` stores
            // last.
            unsafe { std::ptr::write_volatile(self.mapping.base().cast::<Identity>(), identity) };
        };
        match self.kind() {
            // The handshake the loom model `ready` checks: header, ring state, then READY.
            LayoutKind::WorkQueue => crate::ready::publish(state_word(&self.mapping), self, || {
                write_header();
                // SAFETY: the schema lies inside the ring's lines (validated
                // geometry), aligned for its integers; written before READY, like the
                // identity.
                unsafe { std::ptr::write_volatile(self.schema_ptr(), self.schema) };
            }),
            // The same handshake with the broadcast layout's initial state (a
            // broadcast segment has no schema).
            LayoutKind::Broadcast(_) => {
                crate::ready::publish_with(state_word(&self.mapping), || {
                    write_header();
                    crate::broadcast::initialise(self);
                })
            }
        }
    }

    /// What the header says the segment is (validated at open; set at create).
    pub(crate) fn kind(&self) -> LayoutKind {
        LayoutKind::from_code(self.identity.kind).unwrap_or(LayoutKind::WorkQueue)
    }

    /// `Ok` if the segment is of `expected` kind (any broadcast policy matches a
    /// broadcast expectation), else the error naming both.
    pub(crate) fn expect_kind(&self, expected: ExpectedKind) -> Result<(), Error> {
        let found = self.kind();
        let matches = matches!(
            (expected, found),
            (ExpectedKind::WorkQueue, LayoutKind::WorkQueue)
                | (ExpectedKind::Broadcast, LayoutKind::Broadcast(_))
        );
        if matches {
            return Ok(());
        }
        let (expected, hint) = match expected {
            ExpectedKind::WorkQueue => (
                "work queue",
                "shmq::broadcast::Publisher or shmq::broadcast::Subscriber",
            ),
            ExpectedKind::Broadcast => ("broadcast", "shmq::Queue"),
        };
        Err(Error::WrongKind {
            name: self.name.clone(),
            found: found.describe(),
            expected,
            hint,
        })
    }

    /// Where the segment's [`Schema`] lives.
    fn schema_ptr(&self) -> *mut Schema {
        let offset = RING_OFFSET as usize + std::mem::offset_of!(RingShared, schema);
        // SAFETY: the geometry (validated, or computed by the creator) puts the
        // ring's lines, which hold the schema, inside the mapping.
        unsafe { self.mapping.base().add(offset).cast::<Schema>() }
    }

    /// The message type recorded in the segment (`None`: untyped).
    pub(crate) fn message_type(&self) -> Option<crate::MessageType> {
        crate::MessageType::from_schema(&self.schema)
    }

    /// Opens the existing segment `name`, checks its file against `access`, and
    /// validates it completely.
    pub(crate) fn open(
        name: &str,
        access: &Access,
        patience: Patience,
    ) -> Result<(Arc<Self>, OwnedFd), Error> {
        name::validate(name)?;
        let fd = platform::shm_open(&name::object(name), false, 0)
            .map_err(|e| io_error("shm_open", name, e))?;
        let file = platform::fstat(&fd).map_err(|e| io_error("fstat", name, e))?;
        crate::access::check(&file, access, platform::effective_uid()).map_err(|problem| {
            Error::Untrusted {
                name: name.to_owned(),
                problem,
            }
        })?;
        let segment = Self::map_existing(name, &fd, patience)?;
        Ok((Arc::new(segment), fd))
    }

    /// Maps and validates a segment, waiting up to [`READY_WAIT`] for a creator that
    /// is still initialising it.
    fn map_existing(name: &str, fd: &OwnedFd, patience: Patience) -> Result<Self, Error> {
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
        let deadline = match patience {
            Patience::WaitForCreator => Instant::now() + READY_WAIT,
            Patience::Now => Instant::now(),
        };
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
                // The Acquire inside pairs with the creator's Release of READY.
                let ready = crate::ready::is_ready(state_word(&mapping));
                // SAFETY: at least one line is mapped; Identity is plain integers, so
                // any bytes are a valid value; volatile because another process may
                // write it (we validate the copy, never the live bytes).
                let identity =
                    unsafe { std::ptr::read_volatile(mapping.base().cast::<Identity>()) };
                if identity.magic == MAGIC && identity.state == state::REMOVED {
                    // Marked by `unlink` just before the name goes: it is gone.
                    return Err(Error::NotFound {
                        name: name.to_owned(),
                    });
                }
                let fresh = identity.magic == 0 || (identity.magic == MAGIC && !ready);
                if fresh && !ready && timed_out {
                    return Err(not_ready());
                }
                if ready || !fresh {
                    let geometry = Geometry::validate(&identity, size).map_err(corrupt)?;
                    let file = allocated_file(name, fd, &geometry, corrupt)?;
                    let name = name.to_owned();
                    let mut segment = Self {
                        mapping,
                        geometry,
                        identity,
                        schema: Schema::default(),
                        name,
                        file,
                    };
                    // SAFETY: inside the validated mapping; plain integers, so any
                    // bytes are a value; volatile and copied because another
                    // process could write them (only shown, never trusted).
                    segment.schema = unsafe { std::ptr::read_volatile(segment.schema_ptr()) };
                    return Ok(segment);
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

    /// Removes the name. The segment under it is first marked removed (if it can be
    /// opened as ours), so attached handles can tell; they keep working, and the
    /// memory is freed when the last one closes.
    pub(crate) fn unlink(name: &str) -> Result<(), Error> {
        name::validate(name)?;
        if let Ok((segment, _fd)) = Self::open(name, &Access::default(), Patience::Now) {
            // Release: pairs with the Acquire in `is_marked_removed`; an opener racing
            // us refuses the state (it is not READY).
            state_word(&segment.mapping).store(state::REMOVED, Ordering::Release);
        }
        platform::shm_unlink(&name::object(name)).map_err(|e| io_error("shm_unlink", name, e))
    }

    /// Whether the segment was marked removed by `unlink`.
    pub(crate) fn is_marked_removed(&self) -> bool {
        // Acquire: pairs with the Release in `unlink`.
        state_word(&self.mapping).load(Ordering::Acquire) == state::REMOVED
    }

    /// Where the name points now: at the file mapped here, at another file (the
    /// segment was removed and the name reused), or nowhere. A system call: for slow
    /// paths.
    pub(crate) fn name_status(&self) -> NameStatus {
        match platform::shm_lstat(&name::object(&self.name)) {
            Ok(file) if file.identity == self.file => NameStatus::Here,
            Ok(_) => NameStatus::Elsewhere,
            Err(_) => NameStatus::Gone,
        }
    }

    /// The segment's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The header as read (and validated) at open.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The flag the `SIGBUS` guard sets once it replaced this segment's memory (its
    /// file was shrunk under us): nothing read or written through it reaches the
    /// segment any more.
    pub(crate) fn lost_flag(&self) -> &'static std::sync::atomic::AtomicBool {
        self.mapping.lost_flag()
    }

    #[inline]
    fn slot_ptr(&self, index: u64) -> *mut u8 {
        assert!(index < self.geometry.capacity, "slot index out of range");
        let offset = self.geometry.slots_offset + index * self.geometry.slot_stride;
        // SAFETY: validated geometry: slots_offset + capacity * stride == total_size
        // <= mapping length, and index < capacity.
        unsafe { self.mapping.base().add(offset as usize) }
    }

    /// The start of slot `index`'s payload area (`max_message_size` bytes after
    /// the slot header; the stride holds both).
    #[inline]
    fn payload_ptr(&self, index: u64) -> *mut u8 {
        // SAFETY: slot_ptr bounds-checks the index; SLOT_HEADER_SIZE <
        // slot_stride, so the result stays inside the slot.
        unsafe { self.slot_ptr(index).add(SLOT_HEADER_SIZE as usize) }
    }

    /// Participant record `index` (one 128 B line either layout puts there).
    #[inline]
    fn record_ptr(&self, index: u64) -> *mut u8 {
        assert!(
            index < self.geometry.max_participants,
            "participant index out of range"
        );
        let offset = self.geometry.participants_offset + index * LINE;
        // SAFETY: index < max_participants, so the record lies before
        // slots_offset, on a 128 B boundary.
        unsafe { self.mapping.base().add(offset as usize) }
    }

    /// The ring's shared lines, at `RING_OFFSET` in either layout.
    #[inline]
    fn ring_ptr(&self) -> *mut u8 {
        // SAFETY: RING_OFFSET lies inside the validated mapping (before
        // participants_offset <= total_size).
        unsafe { self.mapping.base().add(RING_OFFSET as usize) }
    }

    /// Copies `bytes` into slot `index`'s payload area.
    ///
    /// # Safety
    /// The caller holds the slot's claim and `bytes.len() <= max_message_size`.
    #[inline]
    unsafe fn copy_to_payload(&self, index: u64, bytes: &[u8]) {
        debug_assert!(bytes.len() as u64 <= self.geometry.max_message_size);
        // SAFETY: bytes fit in the payload area (len <= max_message_size <= stride
        // - SLOT_HEADER_SIZE); `bytes` is local memory, so the ranges do not
        // overlap; the caller's claim keeps well-behaved writers away.
        unsafe { crate::copy::copy_bytes(bytes.as_ptr(), self.payload_ptr(index), bytes.len()) }
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
        unsafe { &*self.ring_ptr().cast::<RingShared>() }
    }

    #[inline]
    fn slot(&self, index: u64) -> &SlotHeader {
        // SAFETY: slot_ptr bounds-checks the index; a SlotHeader is 16 B at the start
        // of a 64 B-aligned slot.
        unsafe { &*self.slot_ptr(index).cast::<SlotHeader>() }
    }

    #[inline]
    fn participant(&self, index: u64) -> &ParticipantRecord {
        // SAFETY: record_ptr bounds-checks the index; a record is one aligned line of
        // atomics, valid for any bit pattern.
        unsafe { &*self.record_ptr(index).cast::<ParticipantRecord>() }
    }

    #[inline]
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        // SAFETY: the caller holds the slot's claim and bytes fit (the trait's
        // contract), as copy_to_payload requires.
        unsafe { self.copy_to_payload(index, bytes) }
    }

    #[inline]
    unsafe fn fill_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        debug_assert!(len as u64 <= self.geometry.max_message_size);
        // SAFETY: the caller holds the slot's producer claim and len <=
        // max_message_size, so the slice lies inside this slot's payload area and no
        // well-behaved participant touches it until we publish.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(index), len) };
        f(bytes)
    }

    #[inline]
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(len as u64 <= self.geometry.max_message_size);
        // SAFETY: the caller owns the slot and len <= max_message_size, so the slice
        // lies inside this slot's payload area. Another *process* could still scribble
        // on these bytes; they are plain u8, so that gives garbage, never unsoundness
        // in our reading of lengths or offsets (all already bounded).
        let bytes = unsafe { std::slice::from_raw_parts(self.payload_ptr(index), len) };
        f(bytes)
    }
}

// SAFETY: as for `RingMemory` above: the broadcast structs have the sizes and
// alignments of the work queue's (asserted in `layout.rs`), so the validated geometry
// places them inside the mapping exactly where the work queue's would be.
unsafe impl crate::broadcast::BroadcastMemory for Segment {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    #[inline]
    fn shared(&self) -> &BroadcastShared {
        // SAFETY: RING_OFFSET + size_of::<BroadcastShared>() <= participants_offset
        // <= total_size; atomics are valid for any bit pattern.
        unsafe { &*self.ring_ptr().cast::<BroadcastShared>() }
    }

    #[inline]
    fn slot(&self, index: u64) -> &BroadcastSlot {
        // SAFETY: slot_ptr bounds-checks the index; a BroadcastSlot is 16 B at the
        // start of a 64 B-aligned slot.
        unsafe { &*self.slot_ptr(index).cast::<BroadcastSlot>() }
    }

    #[inline]
    fn record(&self, index: u64) -> &BroadcastRecord {
        // SAFETY: record_ptr bounds-checks the index; a record is one aligned line of
        // atomics (the size of a work queue's, asserted), valid for any bit pattern.
        unsafe { &*self.record_ptr(index).cast::<BroadcastRecord>() }
    }

    #[inline]
    unsafe fn write_payload(&self, index: u64, bytes: &[u8]) {
        // SAFETY: the caller holds the slot's publisher claim and bytes fit, as
        // copy_to_payload requires. Subscribers may read these bytes while we write
        // them (overwrite mode): plain bytes, any value valid; they detect it by the
        // slot's stamp.
        unsafe { self.copy_to_payload(index, bytes) }
    }

    #[inline]
    unsafe fn write_payload_with<R>(
        &self,
        index: u64,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        debug_assert!(len as u64 <= self.geometry.max_message_size);
        // SAFETY: the caller holds the slot's publisher claim (no other publisher
        // writes it) and len <= max_message_size, so the slice lies inside this
        // slot's payload area. Subscribers in other processes may read these bytes
        // while `write` fills them (overwrite mode): plain bytes, any value valid,
        // and the odd stamp stored before tells them the copy is torn.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(index), len) };
        write(bytes)
    }

    #[inline]
    unsafe fn read_payload<R>(&self, index: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(len as u64 <= self.geometry.max_message_size);
        // SAFETY: len <= max_message_size, so the slice lies inside this slot's
        // payload area. A publisher (or another process) may write these bytes while
        // `f` reads them (overwrite mode); they are plain u8, so that gives torn
        // bytes, never an invalid value, and the caller re-checks the stamp after `f`
        // and reports a lag instead of the bytes (the sequence-lock protocol).
        let bytes = unsafe { std::slice::from_raw_parts(self.payload_ptr(index), len) };
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

/// Removes the private objects of segment builds whose process is gone (a creator
/// killed before it published its segment). Best effort: errors are ignored.
fn remove_abandoned_builds() {
    let Ok(names) = platform::list_shm(name::OBJECT_PREFIX) else {
        return;
    };
    for rest in names {
        let Some(build) = rest.strip_prefix(name::BUILDING_PREFIX) else {
            continue;
        };
        let pid = build.split('-').next().and_then(|pid| pid.parse().ok());
        if pid.is_some_and(|pid| !platform::process_exists(pid)) {
            let _ = platform::shm_unlink(&format!("{}{rest}", name::OBJECT_PREFIX));
        }
    }
}

/// The file's device and inode, once its pages are all allocated: a sparse file
/// would fault (`SIGBUS`) on the missing pages once /dev/shm is full. `corrupt`
/// names the problem as the caller reports header problems.
fn allocated_file(
    name: &str,
    fd: &OwnedFd,
    geometry: &Geometry,
    corrupt: impl Fn(HeaderProblem) -> Error,
) -> Result<(u64, u64), Error> {
    let file = platform::fstat(fd).map_err(|e| io_error("fstat", name, e))?;
    if file.allocated < geometry.total_size {
        return Err(corrupt(HeaderProblem::Sparse {
            allocated: file.allocated,
            size: geometry.total_size,
        }));
    }
    Ok(file.identity)
}
