//! [`Options`]: the parameters of a new segment.

use crate::access::Access;

/// Parameters of a new segment, built with [`Options::new`] and the setters.
///
/// ```
/// use shmq::Options;
/// let options = Options::new(4096, 512).mode(0o660).max_participants(16);
/// assert_eq!(options.capacity, 4096);
/// assert_eq!(options.max_message_size, 512);
/// assert_eq!(options.mode, 0o660);
/// assert_eq!(options.max_participants, 16);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Messages the queue holds: a power of two, at least 2 (default 1024).
    pub capacity: u64,
    /// Largest message in bytes (default 240: a slot of 256 bytes).
    pub max_message_size: u64,
    /// Permission bits (default 0600: only the creating user).
    pub mode: u32,
    /// Handles that may be attached at once (default 64).
    pub max_participants: u64,
    /// Deliveries a message gets before it is moved to the dead-letter segment
    /// `NAME.dead` instead of going to yet another consumer (default 5; `0`: no
    /// limit, a message that kills every consumer is redelivered forever). A
    /// delivery counts when its consumer dies holding the message or abandons it
    /// ([`Delivery::abandon`](crate::Delivery::abandon)).
    pub max_deliveries: u32,
    /// Which existing segments [`Queue::open_or_create`](crate::Queue::open_or_create)
    /// accepts when the name is taken (default: owned by this process's user; a
    /// `mode` that lets every user write also accepts such a segment).
    pub access: Access,
    /// Position of the first message. Only for tests that exercise wraparound.
    #[doc(hidden)]
    pub initial_position: u64,
    /// The message type a typed queue records (set by `TypedQueue`).
    pub(crate) message_type: Option<crate::MessageType>,
    /// Which layout a new segment gets (set by the broadcast handles).
    pub(crate) kind: crate::layout::LayoutKind,
}

/// Deliveries a message gets by default before it is dead-lettered.
pub(crate) const DEFAULT_MAX_DELIVERIES: u32 = 5;

impl Default for Options {
    /// 1024 messages of up to 240 bytes, mode 0600, 64 participants, 5 deliveries.
    ///
    /// ```
    /// assert_eq!(shmq::Options::default(), shmq::Options::new(1024, 240));
    /// ```
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_message_size: 240,
            mode: 0o600,
            max_participants: 64,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            access: Access::default(),
            initial_position: 0,
            message_type: None,
            kind: crate::layout::LayoutKind::WorkQueue,
        }
    }
}

impl Options {
    /// Default options with this capacity and maximum message size.
    ///
    /// ```
    /// let options = shmq::Options::new(256, 64);
    /// assert_eq!((options.capacity, options.max_message_size), (256, 64));
    /// assert_eq!(options.mode, 0o600);
    /// ```
    pub fn new(capacity: u64, max_message_size: u64) -> Self {
        Self {
            capacity,
            max_message_size,
            ..Self::default()
        }
    }

    /// Sets the permission bits (`0o600` by default; `0o660` to share with the
    /// group). Applied exactly, whatever the process umask.
    ///
    /// ```
    /// assert_eq!(shmq::Options::new(2, 8).mode(0o660).mode, 0o660);
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the participant table size: how many handles may be attached at once.
    ///
    /// ```
    /// assert_eq!(shmq::Options::new(2, 8).max_participants(4).max_participants, 4);
    /// ```
    pub fn max_participants(mut self, max: u64) -> Self {
        self.max_participants = max;
        self
    }

    /// Sets how many deliveries a message gets before it goes to the dead-letter
    /// segment `NAME.dead` (`0`: no limit).
    ///
    /// ```
    /// assert_eq!(shmq::Options::new(2, 8).max_deliveries(3).max_deliveries, 3);
    /// assert_eq!(shmq::Options::new(2, 8).max_deliveries, 5);
    /// ```
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = max;
        self
    }

    /// Sets which existing segments `open_or_create` accepts (see [`Access`]).
    ///
    /// ```
    /// let options = shmq::Options::new(2, 8).access(shmq::Access::new().trust_group(100));
    /// assert_eq!(options.access.groups, vec![100]);
    /// ```
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The access `open_or_create` applies: [`Options::access`], plus world-writable
    /// segments if this mode asks for one.
    pub(crate) fn effective_access(&self) -> Access {
        let mut access = self.access.clone();
        access.world_writable |= self.mode & 0o002 != 0;
        access
    }

    /// Checks the mode: permission bits only, and no class of users that may read
    /// without writing (a read-only peer would stall crash recovery).
    pub(crate) fn check_mode(&self) -> Result<(), crate::Error> {
        let reason = if self.mode & !0o777 != 0 {
            "has bits outside 0777"
        } else if self.mode & 0o600 != 0o600 {
            "must let the owner read and write"
        } else if crate::access::read_without_write(self.mode) {
            "lets some users read without writing, which would stall crash recovery (use 0600, 0660 or 0666)"
        } else {
            return Ok(());
        };
        Err(crate::Error::InvalidMode {
            mode: self.mode,
            reason,
        })
    }

    /// Starts the ring at `position` instead of 0 (tests of 63-bit wraparound).
    #[doc(hidden)]
    pub fn initial_position(mut self, position: u64) -> Self {
        self.initial_position = position;
        self
    }
}
