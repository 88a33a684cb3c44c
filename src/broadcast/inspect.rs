//! A read-only look at a broadcast segment, without attaching to it: what
//! `shmq inspect` and `shmq ls` show (the tail, each subscriber's cursor and how far
//! it is behind, the publishers and their claims, dead records, the counters).
//!
//! Everything here is read with Relaxed loads and taken as untrusted: fields may
//! move while they are read, and a value shmq never writes (a role, a cursor past
//! the tail) is shown as it is, never used to index anything.

use std::time::{Duration, SystemTime};

use super::ring::{compare_stamp, BroadcastMemory, Stamp};
use crate::access::Access;
use crate::error::Error;
use crate::layout::{participant, pos_diff, role, LayoutKind, SlowSubscriber, CLAIM_NONE};
use crate::segment::{ExpectedKind, Patience, Segment};
use crate::shm::ShmPlatform;
use crate::sync::Ordering;

/// A snapshot of a broadcast segment's state, for display and monitoring.
///
/// ```
/// use shmq::broadcast::{Publisher, RecordRole, SlowSubscriber, Snapshot, Subscriber};
/// # let name = "doc-broadcast-snapshot";
/// let publisher = Publisher::create(name, &shmq::Options::new(8, 64), SlowSubscriber::Lossless)?;
/// let subscriber = Subscriber::open(name)?;
/// publisher.publish(b"one")?;
/// publisher.publish(b"two")?;
/// let snapshot = Snapshot::read(name)?;
/// assert_eq!((snapshot.slow_subscriber, snapshot.tail), (SlowSubscriber::Lossless, 2));
/// let reader = snapshot.records.iter().find(|r| r.role == RecordRole::Subscriber).unwrap();
/// assert_eq!((reader.cursor, reader.behind), (Some(0), Some(2)));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Segment name.
    pub name: String,
    /// What the segment does about slow subscribers.
    pub slow_subscriber: SlowSubscriber,
    /// Layout version of the segment.
    pub layout_version: u32,
    /// Capacity in messages.
    pub capacity: u64,
    /// Largest message in bytes.
    pub max_message_size: u64,
    /// Bytes from one slot to the next (header, payload, padding).
    pub slot_stride: u64,
    /// Bytes in the segment.
    pub total_size: u64,
    /// Size of the record table (publishers and subscribers together).
    pub max_participants: u64,
    /// Permission bits the creator asked for.
    pub mode: u32,
    /// Pid of the creating process.
    pub creator_pid: u64,
    /// When the segment was created (the creator's clock).
    pub created: SystemTime,
    /// The next position a publisher takes (messages published so far, from the
    /// segment's first position).
    pub tail: u64,
    /// Subscribers asleep waiting for a message.
    pub sleeping_subscribers: u32,
    /// Lossless publishers asleep waiting for the slowest live subscriber.
    pub sleeping_publishers: u32,
    /// Dead publishers' slots published as skips.
    pub skipped: u64,
    /// Dead handles' records freed.
    pub freed: u64,
    /// Messages subscribers missed because they were overwritten (overwrite mode:
    /// the sum of every lag reported).
    pub lagged: u64,
    /// Registered records, alive or dead.
    pub records: Vec<RecordInfo>,
    /// The segment's name was removed; attached handles still work.
    pub removed: bool,
}

/// What a registered record belongs to (part of [`RecordInfo`]).
///
/// ```
/// assert_ne!(shmq::broadcast::RecordRole::Publisher, shmq::broadcast::RecordRole::Subscriber);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordRole {
    /// A publisher: its claim matters.
    Publisher,
    /// A subscriber: its cursor matters.
    Subscriber,
    /// Neither yet (being registered or freed), or a role value shmq never writes.
    Unassigned,
}

/// One registered record of a broadcast segment (part of [`Snapshot`]).
///
/// ```
/// use shmq::broadcast::{Publisher, RecordRole, SlowSubscriber, Snapshot};
/// # let name = "doc-broadcast-record";
/// let publisher = Publisher::create(name, &shmq::Options::new(8, 64), SlowSubscriber::Overwrite)?;
/// let me = &Snapshot::read(name)?.records[0];
/// assert_eq!((me.role, me.alive, me.cursor), (RecordRole::Publisher, true, None));
/// assert_eq!(me.pid, u64::from(std::process::id()));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// Record index.
    pub index: u64,
    /// Publisher or subscriber.
    pub role: RecordRole,
    /// Owner pid.
    pub pid: u64,
    /// Owner start time (clock ticks since boot): with the pid, one process.
    pub start_time: u64,
    /// Whether its liveness lock is held (a dead record is freed by the next
    /// publisher it gates, or a sweep).
    pub alive: bool,
    /// A publisher's last claimed position, if any.
    pub claim: Option<u64>,
    /// Whether that claim is still unpublished with the tail past it (a publisher
    /// writing right now, or a dead one a sweep will skip).
    pub claim_outstanding: bool,
    /// A subscriber's next position.
    pub cursor: Option<u64>,
    /// A subscriber's distance behind the tail: messages published it has not
    /// read. In overwrite mode it can exceed the capacity (the subscriber will be
    /// told it lagged); never negative (a cursor read after the tail shows 0).
    pub behind: Option<u64>,
    /// Messages published or received.
    pub operations: u64,
}

impl Snapshot {
    /// Reads a snapshot of broadcast segment `name` without attaching to it. A work
    /// queue is refused with [`Error::WrongKind`] (read it with
    /// [`Queue::inspect`](crate::Queue::inspect)).
    ///
    /// (Example: see [`Snapshot`].)
    pub fn read(name: &str) -> Result<Self, Error> {
        let (segment, fd) = Segment::open(name, &Access::default(), Patience::Now)?;
        let LayoutKind::Broadcast(slow_subscriber) = segment.kind() else {
            return Err(segment
                .expect_kind(ExpectedKind::Broadcast)
                .expect_err("not a broadcast segment"));
        };
        Ok(read(&segment, &ShmPlatform::new(fd), slow_subscriber))
    }

    /// Records whose process is alive.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Snapshot, Subscriber};
    /// # let name = "doc-broadcast-live";
    /// let publisher = Publisher::create(name, &shmq::Options::new(8, 64), SlowSubscriber::Lossless)?;
    /// let subscriber = Subscriber::open(name)?;
    /// assert_eq!((Snapshot::read(name)?.live(), Snapshot::read(name)?.dead()), (2, 0));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn live(&self) -> usize {
        self.records.iter().filter(|r| r.alive).count()
    }

    /// Records registered but dead (they await a sweep).
    ///
    /// (Example: see [`live`](Self::live).)
    pub fn dead(&self) -> usize {
        self.records.len() - self.live()
    }

    /// How far the slowest *live* subscriber is behind the tail (`None`: no live
    /// subscriber). In lossless mode this is what publishers wait on.
    ///
    /// ```
    /// # use shmq::broadcast::{Publisher, SlowSubscriber, Snapshot, Subscriber};
    /// # let name = "doc-broadcast-slowest";
    /// let publisher = Publisher::create(name, &shmq::Options::new(8, 64), SlowSubscriber::Lossless)?;
    /// assert_eq!(Snapshot::read(name)?.slowest_behind(), None);
    /// let subscriber = Subscriber::open(name)?;
    /// publisher.publish(b"x")?;
    /// assert_eq!(Snapshot::read(name)?.slowest_behind(), Some(1));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn slowest_behind(&self) -> Option<u64> {
        self.records
            .iter()
            .filter(|r| r.alive)
            .filter_map(|r| r.behind)
            .max()
    }
}

/// Reads the snapshot of `segment` (a broadcast segment), asking `platform` about
/// liveness.
fn read(segment: &Segment, platform: &ShmPlatform, slow_subscriber: SlowSubscriber) -> Snapshot {
    let shared = BroadcastMemory::shared(segment);
    let identity = segment.identity();
    // Relaxed throughout: a snapshot for display; fields may move while we read.
    let tail = shared.tail.value.load(Ordering::Relaxed);
    Snapshot {
        name: segment.name().to_owned(),
        slow_subscriber,
        layout_version: identity.version,
        capacity: identity.capacity,
        max_message_size: identity.max_message_size,
        slot_stride: identity.slot_stride,
        total_size: identity.total_size,
        max_participants: identity.max_participants,
        mode: identity.mode as u32,
        creator_pid: identity.creator_pid,
        created: SystemTime::UNIX_EPOCH + Duration::from_nanos(identity.creation_time_ns),
        tail,
        sleeping_subscribers: shared.not_empty.waiters.load(Ordering::Relaxed),
        sleeping_publishers: shared.not_full.waiters.load(Ordering::Relaxed),
        skipped: shared.stats.skipped.load(Ordering::Relaxed),
        freed: shared.stats.freed.load(Ordering::Relaxed),
        lagged: shared.stats.lagged.load(Ordering::Relaxed),
        records: records(segment, platform, tail),
        removed: segment.is_marked_removed(),
    }
}

/// Every record not free, with its liveness and (for subscribers) its distance
/// behind `tail`.
fn records(segment: &Segment, platform: &ShmPlatform, tail: u64) -> Vec<RecordInfo> {
    let mask = BroadcastMemory::geometry(segment).mask();
    let mut records = Vec::new();
    for index in 0..BroadcastMemory::geometry(segment).max_participants {
        let record = BroadcastMemory::record(segment, index);
        // Relaxed: a snapshot for display. Records in a state shmq never writes are
        // shown too (as dead, unless locked): a sweep reclaims them.
        if record.state.load(Ordering::Relaxed) == participant::FREE {
            continue;
        }
        // Relaxed: as above.
        let role = match record.role.load(Ordering::Relaxed) {
            role::PUBLISHER => RecordRole::Publisher,
            role::SUBSCRIBER => RecordRole::Subscriber,
            _ => RecordRole::Unassigned,
        };
        // Relaxed: as above.
        let claim = (role == RecordRole::Publisher)
            .then(|| record.claim.load(Ordering::Relaxed))
            .filter(|&claim| claim != CLAIM_NONE);
        let claim_outstanding = claim.is_some_and(|pos| {
            // Relaxed: as above; the index goes through the mask.
            let stamp = BroadcastMemory::slot(segment, pos & mask)
                .stamp
                .load(Ordering::Relaxed);
            pos_diff(tail, pos) > 0
                && matches!(compare_stamp(stamp, pos), Stamp::Before | Stamp::Writing)
        });
        // Relaxed: as above.
        let cursor =
            (role == RecordRole::Subscriber).then(|| record.cursor.load(Ordering::Relaxed));
        records.push(RecordInfo {
            index,
            role,
            // Relaxed: as above.
            pid: record.pid.load(Ordering::Relaxed),
            start_time: record.start_time.load(Ordering::Relaxed),
            alive: platform.is_locked_by_other(index),
            claim,
            claim_outstanding,
            cursor,
            behind: cursor.map(|cursor| pos_diff(tail, cursor).max(0) as u64),
            operations: record.operations.load(Ordering::Relaxed),
        });
    }
    records
}
