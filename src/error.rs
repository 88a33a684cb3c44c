//! Typed errors. Every message says what happened and what the user can do about it;
//! causes that have a type of their own ([`GeometryError`], [`HeaderProblem`],
//! [`std::io::Error`]) travel as [`source`](std::error::Error::source).
//!
//! The send and receive errors come in two families: the non-blocking one
//! ([`TrySendError`], [`TryRecvError`]: `Full` / `Empty`) and the blocking one
//! ([`SendError`], [`RecvError`]: `Timeout`). Every other variant exists in both, and
//! `TryFrom` converts between the families without losing anything: the conversion
//! fails, handing the error back unchanged, exactly for `Full`/`Empty` and `Timeout`.

use std::io;

use crate::layout::{LAYOUT_VERSION, MAGIC, MAX_PARTICIPANTS};

/// Errors from creating, opening, inspecting or removing a segment.
///
/// ```
/// let err = shmq::Queue::open("doc-error-no-such-segment").unwrap_err();
/// assert!(matches!(err, shmq::Error::NotFound { .. }));
/// assert!(err.to_string().contains("create it first"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment is of another kind than the handle opens (a broadcast segment
    /// opened as a work queue, or the reverse).
    #[error("segment `{name}` is a {found} segment; this handle opens {expected} segments: open it with {hint}, or use another name")]
    WrongKind {
        /// The segment's name.
        name: String,
        /// What the segment is.
        found: &'static str,
        /// What the handle expected.
        expected: &'static str,
        /// The handle types that open it.
        hint: &'static str,
    },
    /// No segment has this name.
    #[error(
        "no shmq segment named `{name}`: create it first (Queue::create or `shmq create {name}`)"
    )]
    NotFound {
        /// Segment name.
        name: String,
    },
    /// `create` found the name taken.
    #[error("a segment named `{name}` already exists: open it, or remove it with `shmq rm {name}` if nobody uses it")]
    AlreadyExists {
        /// Segment name.
        name: String,
    },
    /// The kernel refused access.
    #[error("permission denied on segment `{name}`: it belongs to another user or its mode excludes you (see `shmq inspect {name}`; create with --mode to share)")]
    PermissionDenied {
        /// Segment name.
        name: String,
    },
    /// The segment records another message type than the one this handle expects
    /// (or none: it is untyped).
    #[error("segment `{name}` holds {}; this handle expects {expected}: open it with the type (and schema version) it was created for", found.as_ref().map_or("untyped messages".to_owned(), |t| format!("messages of type {t}")))]
    TypeMismatch {
        /// Segment name.
        name: String,
        /// The type this handle expects.
        expected: crate::MessageType,
        /// The type the segment records (`None`: untyped).
        found: Option<crate::MessageType>,
    },
    /// The segment was made by another layout version.
    #[error("segment `{name}` was created by shmq layout v{found}; this build reads v{expected}: use a matching shmq version, or remove and recreate the segment")]
    IncompatibleVersion {
        /// Segment name.
        name: String,
        /// Version in the segment.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The segment's header or file is not a valid shmq segment.
    #[error("segment `{name}` is corrupt or not an shmq segment: {problem}; remove it with `shmq rm {name}` and recreate it")]
    Corrupt {
        /// Segment name.
        name: String,
        /// What is wrong.
        #[source]
        problem: HeaderProblem,
    },
    /// The creator is still initialising (or died while doing so).
    #[error("segment `{name}` is not initialised yet (its creator is still writing it, or died doing so); retry, or remove it with `shmq rm {name}`")]
    NotReady {
        /// Segment name.
        name: String,
    },
    /// Name fails validation.
    #[error("invalid segment name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Capacity, message size or participant count out of range, or a segment that
    /// would be too large.
    #[error("invalid options: {problem}")]
    InvalidOptions {
        /// Which parameter, and its range.
        #[source]
        problem: GeometryError,
    },
    /// Permission bits shmq does not create segments with.
    #[error("invalid options: mode {mode:o} {reason}")]
    InvalidMode {
        /// The rejected mode.
        mode: u32,
        /// Why.
        reason: &'static str,
    },
    /// The segment's file is not one this process should trust (another user's, a
    /// mode that lets others write or only read, not a regular file).
    #[error("refusing segment `{name}`: {problem}")]
    Untrusted {
        /// Segment name.
        name: String,
        /// What about the file is untrusted.
        #[source]
        problem: TrustProblem,
    },
    /// Another process holds a file lease on the segment: opening it would wait for
    /// the kernel's lease-break time.
    #[error("segment `{name}` is leased by another process (fcntl F_SETLEASE): opening it would block; find the holder with `lsof /dev/shm/shmq.{name}`")]
    Leased {
        /// Segment name.
        name: String,
    },
    /// `posix_fallocate` failed: /dev/shm is full.
    #[error("not enough space in /dev/shm for segment `{name}` ({bytes} bytes): free space there (`df -h /dev/shm`, `shmq ls`) or choose a smaller capacity")]
    OutOfSpace {
        /// Segment name.
        name: String,
        /// Bytes asked for.
        bytes: u64,
    },
    /// Every participant record is taken by a live handle.
    #[error("segment `{name}` already has {max} live participants: close handles, or recreate it with more participants")]
    ParticipantTableFull {
        /// Segment name.
        name: String,
        /// Table size.
        max: u64,
    },
    /// The shared-memory directory could not be listed.
    #[error("listing {directory} failed: {source}")]
    ListFailed {
        /// The directory (`/dev/shm`).
        directory: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other system call failure on a segment.
    #[error("{operation} failed for segment `{name}`: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// Segment name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why a set of creation parameters does not describe a valid segment. Also the
/// cause of [`HeaderProblem::Geometry`] when a stored header holds such parameters.
///
/// ```
/// let err = shmq::Queue::create("doc-geometry", &shmq::Options::new(3, 64)).unwrap_err();
/// assert!(matches!(
///     err,
///     shmq::Error::InvalidOptions { problem: shmq::GeometryError::Capacity(3) }
/// ));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// Capacity is not a power of two in range.
    #[error("capacity {0} must be a power of two between 2 and 2^32")]
    Capacity(u64),
    /// Message size is zero or too large.
    #[error("maximum message size {0} must be between 1 and 2^30 bytes")]
    MessageSize(u64),
    /// Participant count is zero or too large.
    #[error("participant count {0} must be between 1 and {MAX_PARTICIPANTS}")]
    Participants(u64),
    /// The segment would exceed 1 TiB (value: bytes needed, saturated).
    #[error("a segment with these parameters needs {0} bytes, above the 1 TiB limit: lower the capacity or the maximum message size")]
    TooLarge(u64),
    /// The initial position is not a valid 63-bit position.
    #[error("initial position {0:#x} does not fit in 63 bits")]
    InitialPosition(u64),
}

/// Why a segment's file is not trusted (the cause of [`Error::Untrusted`]).
///
/// ```
/// let problem = shmq::TrustProblem::ReadWithoutWrite { mode: 0o644 };
/// assert!(problem.to_string().contains("0644"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustProblem {
    /// The name is not a regular file.
    #[error("it is {kind}, not a segment file")]
    NotAFile {
        /// What it is.
        kind: &'static str,
    },
    /// Owned by a user (and group) this process does not trust.
    #[error("it is owned by uid {uid} (gid {gid}, mode {mode:04o}), not by this process's user (uid {euid}): another user may have created it first to read or inject messages. Remove it (as its owner or root) and create it again, or trust that owner or group explicitly (shmq::Access)")]
    Owner {
        /// Owner of the file.
        uid: u32,
        /// Group of the file.
        gid: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's effective user.
        euid: u32,
    },
    /// Every user may write it, and the caller did not ask for that.
    #[error("every user may write it (owner uid {uid}, mode {mode:04o}): anyone could read or inject messages. Recreate it with a narrower mode, or accept it explicitly (shmq::Access::allow_world_writable)")]
    WorldWritable {
        /// Owner of the file.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Some class of users may read but not write it.
    #[error("mode {mode:04o} lets some users read it without writing: shmq maps segments read-write, and a read-only reader's locks would stall crash recovery. Recreate it with a mode like 0600 or 0660")]
    ReadWithoutWrite {
        /// Its permission bits.
        mode: u32,
    },
}

/// What is wrong with a segment's header or file (the cause of [`Error::Corrupt`]).
///
/// ```
/// use std::error::Error as _;
/// // A file of the wrong size in /dev/shm under shmq's prefix:
/// use std::os::unix::fs::PermissionsExt;
/// std::fs::write("/dev/shm/shmq.doc-corrupt", b"not a segment").unwrap();
/// let private = std::fs::Permissions::from_mode(0o600);
/// std::fs::set_permissions("/dev/shm/shmq.doc-corrupt", private).unwrap();
/// let err = shmq::Queue::open("doc-corrupt").unwrap_err();
/// let cause = err.source().unwrap().downcast_ref::<shmq::HeaderProblem>().unwrap();
/// assert!(matches!(cause, shmq::HeaderProblem::FileTooShort { size: 13 }));
/// shmq::Queue::unlink("doc-corrupt").unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The first eight bytes are not shmq's magic number.
    #[error("magic is {0:#018x}, not shmq's {MAGIC:#018x}: not an shmq segment")]
    Magic(u64),
    /// Another layout version.
    #[error("layout version {0}, this build reads version {LAYOUT_VERSION}")]
    Version(u32),
    /// The state word is neither ready nor (after waiting) going to be.
    #[error("state word is {0:#x}: the creator never finished initialising it")]
    State(u32),
    /// The kind word names no layout this build knows.
    #[error("kind word is {0}, not a kind this build knows (0 work queue, 1 and 2 broadcast)")]
    Kind(u64),
    /// The stored parameters do not form a valid geometry.
    #[error("its stored parameters are invalid: {0}")]
    Geometry(#[source] GeometryError),
    /// A stored offset or size disagrees with the one the parameters imply.
    #[error("{field} is {found}, but the parameters imply {expected}")]
    Field {
        /// Field name.
        field: &'static str,
        /// Stored value.
        found: u64,
        /// Value implied by the parameters.
        expected: u64,
    },
    /// The file is shorter than the header says.
    #[error("the file has {file_size} bytes, the header needs {expected}")]
    Truncated {
        /// `fstat` size.
        file_size: u64,
        /// Size the header implies.
        expected: u64,
    },
    /// The file is too short to hold even a header.
    #[error("the file has only {size} bytes, shorter than a header")]
    FileTooShort {
        /// `fstat` size.
        size: u64,
    },
    /// The file's pages are not all allocated: touching the missing ones could fault
    /// (`SIGBUS`) once /dev/shm is full.
    #[error("only {allocated} of its {size} bytes are allocated (a sparse file, not made by shmq's create)")]
    Sparse {
        /// Bytes allocated.
        allocated: u64,
        /// Bytes the segment needs.
        size: u64,
    },
    /// The file is larger than any segment can be.
    #[error("the file has {size} bytes, above the 1 TiB limit")]
    FileTooLarge {
        /// `fstat` size.
        size: u64,
    },
}

/// Why a non-blocking send did not enqueue the message. The message was not sent.
///
/// ```
/// # let name = "doc-try-send-error";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// assert_eq!(
///     queue.try_send(b"nine bytes"),
///     Err(shmq::TrySendError::TooLarge { len: 10, max: 8 })
/// );
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The segment's file was shrunk under this handle (by a process with write
    /// access) and the `SIGBUS` guard ([`install_sigbus_guard`](crate::install_sigbus_guard))
    /// replaced its memory: this handle can no longer reach the queue. The operation
    /// did not happen.
    #[error("the segment's file was shrunk under this handle by a process with write access; its memory was replaced and this call did not happen: find who truncates it, then open the name again")]
    Truncated,
    /// Every slot holds an unconsumed message (or one a consumer is still reading).
    #[error("queue is full")]
    Full,
    /// The message exceeds the segment's maximum message size.
    #[error("message of {len} bytes exceeds this segment's maximum of {max} bytes")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Segment maximum.
        max: u64,
    },
}

/// Why a blocking send failed. The message was not sent.
///
/// ```
/// use std::time::Duration;
/// # let name = "doc-send-error";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// queue.send(b"1")?;
/// queue.send(b"2")?;
/// let full = queue.send_timeout(b"3", Duration::from_millis(1));
/// assert_eq!(full, Err(shmq::SendError::Timeout));
/// // The same cause in the non-blocking family:
/// assert_eq!(shmq::TrySendError::try_from(full.unwrap_err()), Err(shmq::SendError::Timeout));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The segment's file was shrunk under this handle (by a process with write
    /// access) and the `SIGBUS` guard ([`install_sigbus_guard`](crate::install_sigbus_guard))
    /// replaced its memory: this handle can no longer reach the queue. The operation
    /// did not happen.
    #[error("the segment's file was shrunk under this handle by a process with write access; its memory was replaced and this call did not happen: find who truncates it, then open the name again")]
    Truncated,
    /// The deadline passed with the queue still full.
    #[error("timed out: the queue stayed full")]
    Timeout,
    /// While waiting, the segment was removed and its name now points at another
    /// segment: this handle can no longer reach the processes using the name.
    #[error(
        "the segment was removed and its name now points at another segment: open the name again"
    )]
    Orphaned,
    /// The message exceeds the segment's maximum message size.
    #[error("message of {len} bytes exceeds this segment's maximum of {max} bytes")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Segment maximum.
        max: u64,
    },
}

/// Why a non-blocking receive returned no message.
///
/// ```
/// # let name = "doc-try-recv-error";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// assert_eq!(queue.try_recv(), Err(shmq::TryRecvError::Empty));
/// let mut small = [0u8; 4];
/// assert_eq!(
///     queue.try_recv_into(&mut small),
///     Err(shmq::TryRecvError::BufferTooSmall { len: 4, max: 8 })
/// );
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// The message's length is not the typed queue's value size: an untyped handle
    /// sent it. It was consumed.
    #[error("message of {len} bytes in a queue of {expected}-byte values (sent by an untyped handle?); it was dropped")]
    WrongSize {
        /// Message length.
        len: usize,
        /// Size of the queue's value type.
        expected: usize,
    },
    /// The segment's file was shrunk under this handle (by a process with write
    /// access) and the `SIGBUS` guard ([`install_sigbus_guard`](crate::install_sigbus_guard))
    /// replaced its memory: this handle can no longer reach the queue. The operation
    /// did not happen.
    #[error("the segment's file was shrunk under this handle by a process with write access; its memory was replaced and this call did not happen: find who truncates it, then open the name again")]
    Truncated,
    /// No published message is waiting.
    #[error("queue is empty")]
    Empty,
    /// The buffer passed to a `*_into` receive is shorter than the maximum message
    /// size; nothing was consumed.
    #[error(
        "receive buffer of {len} bytes is shorter than the segment's maximum message size {max}"
    )]
    BufferTooSmall {
        /// Buffer length.
        len: usize,
        /// Segment maximum.
        max: u64,
    },
    /// The slot's length field was out of bounds (someone wrote over the segment).
    /// That message is dropped; the queue remains usable.
    #[error("message at position {position} has length {len}, above the maximum {max}: the segment was written by something other than shmq; the message was dropped")]
    Corrupt {
        /// Position of the message.
        position: u64,
        /// Length found.
        len: u32,
        /// Segment maximum.
        max: u64,
    },
}

/// Why a blocking receive failed.
///
/// ```
/// use std::time::Duration;
/// # let name = "doc-recv-error";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// let empty = queue.recv_timeout(Duration::from_millis(1));
/// assert_eq!(empty, Err(shmq::RecvError::Timeout));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The message's length is not the typed queue's value size: an untyped handle
    /// sent it. It was consumed.
    #[error("message of {len} bytes in a queue of {expected}-byte values (sent by an untyped handle?); it was dropped")]
    WrongSize {
        /// Message length.
        len: usize,
        /// Size of the queue's value type.
        expected: usize,
    },
    /// The segment's file was shrunk under this handle (by a process with write
    /// access) and the `SIGBUS` guard ([`install_sigbus_guard`](crate::install_sigbus_guard))
    /// replaced its memory: this handle can no longer reach the queue. The operation
    /// did not happen.
    #[error("the segment's file was shrunk under this handle by a process with write access; its memory was replaced and this call did not happen: find who truncates it, then open the name again")]
    Truncated,
    /// The deadline passed with the queue still empty.
    #[error("timed out: no message arrived")]
    Timeout,
    /// While waiting, the segment was removed and its name now points at another
    /// segment: no producer using the name will reach this handle again.
    #[error(
        "the segment was removed and its name now points at another segment: open the name again"
    )]
    Orphaned,
    /// See [`TryRecvError::BufferTooSmall`].
    #[error(
        "receive buffer of {len} bytes is shorter than the segment's maximum message size {max}"
    )]
    BufferTooSmall {
        /// Buffer length.
        len: usize,
        /// Segment maximum.
        max: u64,
    },
    /// See [`TryRecvError::Corrupt`].
    #[error("message at position {position} has length {len}, above the maximum {max}: the segment was written by something other than shmq; the message was dropped")]
    Corrupt {
        /// Position of the message.
        position: u64,
        /// Length found.
        len: u32,
        /// Segment maximum.
        max: u64,
    },
}

/// `Full` has no blocking counterpart (a blocking send waits instead) and is handed
/// back unchanged.
impl TryFrom<TrySendError> for SendError {
    type Error = TrySendError;
    fn try_from(e: TrySendError) -> Result<Self, TrySendError> {
        match e {
            TrySendError::TooLarge { len, max } => Ok(SendError::TooLarge { len, max }),
            TrySendError::Truncated => Ok(SendError::Truncated),
            TrySendError::Full => Err(e),
        }
    }
}

/// `Timeout` has no non-blocking counterpart and is handed back unchanged.
impl TryFrom<SendError> for TrySendError {
    type Error = SendError;
    fn try_from(e: SendError) -> Result<Self, SendError> {
        match e {
            SendError::TooLarge { len, max } => Ok(TrySendError::TooLarge { len, max }),
            SendError::Truncated => Ok(TrySendError::Truncated),
            SendError::Timeout | SendError::Orphaned => Err(e),
        }
    }
}

/// `Empty` has no blocking counterpart (a blocking receive waits instead) and is
/// handed back unchanged.
impl TryFrom<TryRecvError> for RecvError {
    type Error = TryRecvError;
    fn try_from(e: TryRecvError) -> Result<Self, TryRecvError> {
        match e {
            TryRecvError::BufferTooSmall { len, max } => Ok(RecvError::BufferTooSmall { len, max }),
            TryRecvError::Corrupt { position, len, max } => {
                Ok(RecvError::Corrupt { position, len, max })
            }
            TryRecvError::Truncated => Ok(RecvError::Truncated),
            TryRecvError::WrongSize { len, expected } => Ok(RecvError::WrongSize { len, expected }),
            TryRecvError::Empty => Err(e),
        }
    }
}

/// `Timeout` has no non-blocking counterpart and is handed back unchanged.
impl TryFrom<RecvError> for TryRecvError {
    type Error = RecvError;
    fn try_from(e: RecvError) -> Result<Self, RecvError> {
        match e {
            RecvError::BufferTooSmall { len, max } => Ok(TryRecvError::BufferTooSmall { len, max }),
            RecvError::Corrupt { position, len, max } => {
                Ok(TryRecvError::Corrupt { position, len, max })
            }
            RecvError::Truncated => Ok(TryRecvError::Truncated),
            RecvError::WrongSize { len, expected } => Ok(TryRecvError::WrongSize { len, expected }),
            RecvError::Timeout | RecvError::Orphaned => Err(e),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn conversions_between_families_round_trip_and_refuse_only_full_empty_timeout() {
        let too_large = TrySendError::TooLarge { len: 9, max: 8 };
        let blocking = SendError::try_from(too_large).unwrap();
        assert_eq!(TrySendError::try_from(blocking), Ok(too_large));
        assert_eq!(
            SendError::try_from(TrySendError::Full),
            Err(TrySendError::Full)
        );
        assert_eq!(
            TrySendError::try_from(SendError::Timeout),
            Err(SendError::Timeout)
        );

        assert_eq!(
            TrySendError::try_from(SendError::try_from(TrySendError::Truncated).unwrap()),
            Ok(TrySendError::Truncated)
        );
        for e in [
            TryRecvError::Truncated,
            TryRecvError::BufferTooSmall { len: 1, max: 2 },
            TryRecvError::Corrupt {
                position: 3,
                len: 4,
                max: 5,
            },
        ] {
            let blocking = RecvError::try_from(e).unwrap();
            assert_eq!(TryRecvError::try_from(blocking), Ok(e));
            assert_eq!(e.to_string(), blocking.to_string());
        }
        assert_eq!(
            RecvError::try_from(TryRecvError::Empty),
            Err(TryRecvError::Empty)
        );
        assert_eq!(
            TryRecvError::try_from(RecvError::Timeout),
            Err(RecvError::Timeout)
        );
    }

    #[test]
    fn header_problems_are_the_typed_source_of_corrupt() {
        use std::error::Error as _;
        let err = Error::Corrupt {
            name: "x".into(),
            problem: HeaderProblem::Geometry(GeometryError::Capacity(3)),
        };
        let source = err.source().unwrap().downcast_ref::<HeaderProblem>();
        assert_eq!(
            source,
            Some(&HeaderProblem::Geometry(GeometryError::Capacity(3)))
        );
        assert!(err.to_string().contains("power of two"), "{err}");
    }
}
