//! Typed errors. Every message says what happened and what the user can do about it.

use std::io;

/// Errors from creating, opening or removing a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// The header is not a valid shmq header.
    #[error("segment `{name}` is corrupt or not an shmq segment: {problem}; remove it with `shmq rm {name}` and recreate it")]
    Corrupt {
        /// Segment name.
        name: String,
        /// What is wrong.
        problem: String,
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
    /// Creation options are out of range.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The segment would be larger than allowed.
    #[error("a segment with these options needs {bytes} bytes, above the 1 TiB limit: lower the capacity or the maximum message size")]
    TooLarge {
        /// Bytes needed.
        bytes: u64,
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
    /// Any other system call failure.
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

/// Why a non-blocking send did not enqueue the message. The message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
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

/// Why a non-blocking receive returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No published message is waiting.
    #[error("queue is empty")]
    Empty,
    /// The buffer passed to `try_recv_into`/`recv_into` is shorter than the maximum
    /// message size; nothing was consumed.
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

/// Why a blocking send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The deadline passed with the queue still full. The message was not sent.
    #[error("timed out: the queue stayed full")]
    Timeout,
    /// The message exceeds the segment's maximum message size.
    #[error("message of {len} bytes exceeds this segment's maximum of {max} bytes")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Segment maximum.
        max: u64,
    },
}

/// Why a blocking receive failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The deadline passed with the queue still empty.
    #[error("timed out: no message arrived")]
    Timeout,
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

impl From<TrySendError> for SendError {
    fn from(e: TrySendError) -> Self {
        match e {
            TrySendError::TooLarge { len, max } => SendError::TooLarge { len, max },
            TrySendError::Full => SendError::Timeout,
        }
    }
}

impl TryRecvError {
    /// Converts a non-`Empty` error to its blocking form.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn into_recv_error(self) -> RecvError {
        match self {
            TryRecvError::Empty => RecvError::Timeout,
            TryRecvError::BufferTooSmall { len, max } => RecvError::BufferTooSmall { len, max },
            TryRecvError::Corrupt { position, len, max } => {
                RecvError::Corrupt { position, len, max }
            }
        }
    }
}
