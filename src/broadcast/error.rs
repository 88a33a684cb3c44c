//! The broadcast handles' errors: what went wrong, and what to do about it.

/// Why [`Publisher::try_publish`](crate::broadcast::Publisher::try_publish) did not
/// publish.
///
/// ```
/// let full = shmq::broadcast::TryPublishError::Full;
/// assert!(full.to_string().contains("publish"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryPublishError {
    /// No position can be taken now: in lossless mode a live subscriber has not
    /// read the message the next one would overwrite; in either mode, a publisher
    /// one lap back is still writing.
    #[error("broadcast ring is full: a live subscriber has not read the oldest message (lossless), or a publisher a lap back is still writing; retry, or use publish/publish_timeout to wait")]
    Full,
    /// The message is larger than the segment's slots.
    #[error("message of {len} bytes exceeds this segment's maximum of {max} bytes: split it, or recreate the segment with a larger maximum")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The segment's maximum.
        max: u64,
    },
}

/// Why a blocking publish did not publish.
///
/// ```
/// let timeout = shmq::broadcast::PublishError::Timeout;
/// assert!(timeout.to_string().contains("timed out"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The time ran out while the ring stayed full.
    #[error("publish timed out: the slowest live subscriber did not move on in time (lossless mode); wait longer, add capacity, or create the segment in overwrite mode")]
    Timeout,
    /// The message is larger than the segment's slots.
    #[error("message of {len} bytes exceeds this segment's maximum of {max} bytes: split it, or recreate the segment with a larger maximum")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The segment's maximum.
        max: u64,
    },
}

/// Why a non-blocking receive returned no message.
///
/// ```
/// let lagged = shmq::broadcast::TryRecvError::Lagged { missed: 3 };
/// assert!(lagged.to_string().contains("missed 3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing new since the last message this subscriber received.
    #[error("no new message")]
    Empty,
    /// Overwrite mode: this subscriber fell behind and `missed` positions were
    /// overwritten before it read them (or while it was reading one). It now stands
    /// at the oldest message still held: receive again.
    #[error("this subscriber fell behind and missed {missed} messages (overwritten); it continues from the oldest still held: receive again, and read faster or use a larger capacity")]
    Lagged {
        /// Positions stepped over (a dead publisher's skipped slot among them counts).
        missed: u64,
    },
    /// The next message is longer than the buffer given; it stays unread.
    #[error("the next message has {len} bytes, more than the buffer holds: receive it into a larger buffer")]
    BufferTooSmall {
        /// The message's length.
        len: usize,
    },
    /// The slot's length field was out of bounds (the segment was written over); the
    /// position was stepped over.
    #[error("message at position {position} has length {len}, above the maximum {max}: the segment was written over by something other than shmq; it was skipped")]
    Corrupt {
        /// Its position.
        position: u64,
        /// The length found.
        len: u32,
        /// The segment's maximum.
        max: u64,
    },
}

/// Why a blocking receive returned no message.
///
/// ```
/// let timeout = shmq::broadcast::RecvError::Timeout;
/// assert!(timeout.to_string().contains("timed out"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No message came in time.
    #[error("receive timed out: no message was published in time")]
    Timeout,
    /// As [`TryRecvError::Lagged`].
    #[error("this subscriber fell behind and missed {missed} messages (overwritten); it continues from the oldest still held: receive again, and read faster or use a larger capacity")]
    Lagged {
        /// Positions stepped over.
        missed: u64,
    },
    /// As [`TryRecvError::BufferTooSmall`].
    #[error("the next message has {len} bytes, more than the buffer holds: receive it into a larger buffer")]
    BufferTooSmall {
        /// The message's length.
        len: usize,
    },
    /// As [`TryRecvError::Corrupt`].
    #[error("message at position {position} has length {len}, above the maximum {max}: the segment was written over by something other than shmq; it was skipped")]
    Corrupt {
        /// Its position.
        position: u64,
        /// The length found.
        len: u32,
        /// The segment's maximum.
        max: u64,
    },
}

impl From<TryRecvError> for Option<RecvError> {
    /// `None` for `Empty` (a blocking call waits on), the matching error otherwise.
    fn from(e: TryRecvError) -> Self {
        match e {
            TryRecvError::Empty => None,
            TryRecvError::Lagged { missed } => Some(RecvError::Lagged { missed }),
            TryRecvError::BufferTooSmall { len } => Some(RecvError::BufferTooSmall { len }),
            TryRecvError::Corrupt { position, len, max } => {
                Some(RecvError::Corrupt { position, len, max })
            }
        }
    }
}
