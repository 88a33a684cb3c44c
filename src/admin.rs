//! Looking after segments: listing them, inspecting one without attaching, removing
//! names, and the snapshot types those return.

use std::time::{Duration, SystemTime};

use crate::access::Access;
use crate::error::Error;
use crate::handle::Queue;
use crate::layout::{participant, pos_diff, Identity, CLAIM_NONE};
use crate::name::OBJECT_PREFIX;
use crate::platform::{self, SHM_DIR};
use crate::ring::{run_outstanding, End, Redelivery, RingMemory, Scope};
use crate::segment::{NameStatus, Patience, Segment};
use crate::shm::ShmPlatform;
use crate::sync::Ordering;

/// A snapshot of a segment's state, as [`Queue::inspect`] and [`Queue::info`] read
/// it. Fields may move while they are read: it is for display and monitoring.
///
/// ```
/// use shmq::{Options, Queue};
/// # let name = "doc-segment-info";
/// let queue = Queue::create(name, &Options::new(8, 64))?;
/// queue.send(b"x")?;
/// let info = Queue::inspect(name)?;
/// assert_eq!((info.capacity, info.max_message_size, info.occupancy), (8, 64, 1));
/// assert_eq!(info.live(), 1);
/// # Queue::unlink(name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Segment name.
    pub name: String,
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
    /// Size of the participant table.
    pub max_participants: u64,
    /// Permission bits the creator asked for.
    pub mode: u32,
    /// The message type a typed queue created it for (`None`: untyped).
    pub message_type: Option<crate::MessageType>,
    /// Deliveries a message gets before it goes to the dead-letter segment
    /// ([`SegmentInfo::dead_letter_name`]); `0`: no limit.
    pub max_deliveries: u64,
    /// Pid of the creating process.
    pub creator_pid: u64,
    /// When the segment was created (the creator's clock).
    pub created: SystemTime,
    /// Producer cursor: the next position a producer claims.
    pub enqueue_pos: u64,
    /// Consumer cursor: the next position a consumer claims.
    pub dequeue_pos: u64,
    /// Messages claimed by producers and not yet claimed by consumers.
    pub occupancy: u64,
    /// Handles asleep on the segment's futexes.
    pub waiters: Waiters,
    /// Registered participants, alive or dead.
    pub participants: Vec<ParticipantInfo>,
    /// What crash recovery has done so far.
    pub recovery: RecoveryCounts,
    /// The segment's name was removed ([`Queue::unlink`], `shmq rm`); attached
    /// handles still work.
    pub removed: bool,
}

/// Handles asleep on a segment's futexes (part of [`SegmentInfo`]).
///
/// ```
/// # let name = "doc-waiters";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// let waiters = queue.info().waiters;
/// assert_eq!((waiters.consumers, waiters.producers), (0, 0));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waiters {
    /// Consumers waiting for a message.
    pub consumers: u32,
    /// Producers waiting for room.
    pub producers: u32,
}

/// Counters kept by crash recovery (part of [`SegmentInfo`]).
///
/// ```
/// # let name = "doc-recovery-counts";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// assert_eq!(queue.info().recovery, shmq::RecoveryCounts::default());
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryCounts {
    /// Slots of producers that died before publishing, skipped.
    pub skipped: u64,
    /// Messages that consumers died holding, delivered again.
    pub redelivered: u64,
    /// Records of dead participants returned to the free list.
    pub freed: u64,
    /// Messages dropped because their length field was out of bounds.
    pub corrupt: u64,
    /// Messages consumers gave back on purpose ([`Delivery::abandon`](crate::Delivery::abandon)).
    pub abandoned: u64,
    /// Messages moved to the dead-letter segment after their last allowed delivery.
    pub dead_lettered: u64,
    /// Moves to the dead-letter segment that failed (it was full or could not be
    /// opened); each such message stayed in this segment and is tried again.
    pub dead_letter_failures: u64,
}

/// A participant record as a snapshot shows it (part of [`SegmentInfo`]).
///
/// ```
/// # let name = "doc-participant-info";
/// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
/// let me = &queue.info().participants[0];
/// assert!(me.alive);
/// assert_eq!(me.pid, u64::from(std::process::id()));
/// # shmq::Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParticipantInfo {
    /// Record index.
    pub index: u64,
    /// Owner pid; `0` for a record that carries an abandoned message until a
    /// consumer takes it over (it shows as dead).
    pub pid: u64,
    /// Owner start time (clock ticks since boot): with the pid, one process.
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

impl SegmentInfo {
    /// Participants whose process is alive.
    ///
    /// ```
    /// # let name = "doc-live";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let other = queue.try_clone()?;
    /// assert_eq!(queue.info().live(), 2);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn live(&self) -> usize {
        self.participants.iter().filter(|p| p.alive).count()
    }

    /// Participants registered but dead (their records await a sweep).
    ///
    /// ```
    /// # let name = "doc-dead";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.info().dead(), 0);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn dead(&self) -> usize {
        self.participants.len() - self.live()
    }

    /// The segment this one's dead letters go to (`NAME.dead`), if it has a
    /// delivery limit.
    ///
    /// ```
    /// # let name = "doc-dead-letter-name";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// assert_eq!(queue.info().dead_letter_name().as_deref(), Some("doc-dead-letter-name.dead"));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn dead_letter_name(&self) -> Option<String> {
        (self.max_deliveries != 0).then(|| crate::name::dead_letters(&self.name))
    }
}

/// One entry of [`Queue::list`]: a segment's name and its snapshot, or the error
/// opening it gave (another layout version, a corrupt file, no permission, ...).
///
/// ```
/// use shmq::{Options, Queue};
/// # let name = "doc-listed";
/// let queue = Queue::create(name, &Options::new(2, 8))?;
/// let listed = Queue::list()?;
/// let mine = listed.iter().find(|entry| entry.name == name).unwrap();
/// assert_eq!(mine.info.as_ref().unwrap().capacity, 2);
/// # Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Listed {
    /// Segment name.
    pub name: String,
    /// Its snapshot, or why it could not be read.
    pub info: Result<SegmentInfo, Error>,
}

/// What [`Queue::remove_if_unused`] decided.
///
/// ```
/// use shmq::{Options, Queue, Removal};
/// # let name = "doc-removal";
/// let queue = Queue::create(name, &Options::new(2, 8))?;
/// assert!(matches!(Queue::remove_if_unused(name)?, Removal::InUse(_)));
/// drop(queue);
/// assert!(matches!(Queue::remove_if_unused(name)?, Removal::Removed(_)));
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Removal {
    /// No live process was attached: the name is gone. The snapshot it decided on.
    Removed(SegmentInfo),
    /// A live process is attached: nothing was removed. The snapshot showing it.
    InUse(SegmentInfo),
    /// Nobody is attached, but messages are waiting: nothing was removed (remove it
    /// with [`Queue::unlink`], `shmq rm --force`, to drop them). The snapshot.
    NotEmpty(SegmentInfo),
}

impl Queue {
    /// Removes the name `name`. Handles already attached keep working; the memory is
    /// freed when the last one is dropped.
    ///
    /// ```
    /// use shmq::{Error, Options, Queue};
    /// # let name = "doc-unlink";
    /// let queue = Queue::create(name, &Options::new(2, 8))?;
    /// Queue::unlink(name)?;
    /// queue.send(b"works")?; // still
    /// assert!(matches!(Queue::open(name), Err(Error::NotFound { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlink(name: &str) -> Result<(), Error> {
        Segment::unlink(name)
    }

    /// A snapshot of segment `name` without attaching to it.
    ///
    /// ```
    /// # let name = "doc-inspect";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(4, 8))?;
    /// assert_eq!(shmq::Queue::inspect(name)?.capacity, 4);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    ///
    /// A broadcast segment is [`Error::WrongKind`]: its lines mean other things;
    /// read it with [`broadcast::Snapshot::read`](crate::broadcast::Snapshot::read).
    /// (So is it in [`list`](Self::list)'s entries, and [`remove_if_unused`](Self::remove_if_unused)
    /// leaves it in place.)
    pub fn inspect(name: &str) -> Result<SegmentInfo, Error> {
        let (segment, fd) = Segment::open(name, &Access::default(), Patience::Now)?;
        segment
            .expect_kind(crate::segment::ExpectedKind::WorkQueue)
            .map_err(|error| match error {
                Error::WrongKind {
                    name,
                    found,
                    expected,
                    ..
                } => Error::WrongKind {
                    name,
                    found,
                    expected,
                    hint: "shmq::broadcast::Snapshot::read (to inspect it), or `shmq inspect`",
                },
                other => other,
            })?;
        Ok(snapshot(&segment, &ShmPlatform::new(fd), None))
    }

    /// Every shmq segment on this host, by name, with its snapshot or the error
    /// opening it gave. See [`Listed`].
    ///
    /// ```
    /// # let name = "doc-list";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(2, 8))?;
    /// let names: Vec<String> = shmq::Queue::list()?.into_iter().map(|entry| entry.name).collect();
    /// assert!(names.iter().any(|listed| listed == name));
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn list() -> Result<Vec<Listed>, Error> {
        let names = platform::list_shm(OBJECT_PREFIX).map_err(|source| Error::ListFailed {
            directory: SHM_DIR,
            source,
        })?;
        Ok(names
            .into_iter()
            .filter(|name| is_listable(name))
            .map(|name| {
                let info = Self::inspect(&name);
                Listed { name, info }
            })
            .collect())
    }

    /// Removes segment `name` only if no live process is attached to it (dead
    /// participants do not count) and no message is waiting in it. See [`Removal`].
    ///
    /// ```
    /// use shmq::{Options, Queue, Removal};
    /// # let name = "doc-remove-if-unused";
    /// drop(Queue::create(name, &Options::new(2, 8))?);
    /// match Queue::remove_if_unused(name)? {
    ///     Removal::Removed(info) => assert_eq!(info.live(), 0),
    ///     other => panic!("nobody is attached, yet {other:?}"),
    /// }
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn remove_if_unused(name: &str) -> Result<Removal, Error> {
        let info = Self::inspect(name)?;
        if info.live() > 0 {
            return Ok(Removal::InUse(info));
        }
        if info.occupancy > 0 {
            return Ok(Removal::NotEmpty(info));
        }
        Self::unlink(name)?;
        Ok(Removal::Removed(info))
    }

    /// A snapshot of this handle's segment.
    ///
    /// ```
    /// # let name = "doc-info";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(4, 8))?;
    /// queue.send(b"x")?;
    /// assert_eq!(queue.info().occupancy, 1);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn info(&self) -> SegmentInfo {
        snapshot(
            self.ring.memory(),
            self.ring.platform(),
            Some(self.ring.participant_index()),
        )
    }

    /// Whether this handle's segment was removed by name ([`Queue::unlink`],
    /// `shmq rm`) or its name now points at another segment. The handle keeps
    /// working either way; only processes that already hold handles can reach it.
    ///
    /// ```
    /// use shmq::{Options, Queue};
    /// # let name = "doc-is-removed";
    /// let queue = Queue::create(name, &Options::new(2, 8))?;
    /// assert!(!queue.is_removed());
    /// Queue::unlink(name)?;
    /// assert!(queue.is_removed());
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn is_removed(&self) -> bool {
        let segment = self.ring.memory();
        segment.is_marked_removed() || segment.name_status() != NameStatus::Here
    }

    /// Runs a full recovery sweep now (normally automatic): repairs slots of dead
    /// producers and frees dead participants' records. A message a dead consumer
    /// held is left for the next receive, which delivers it.
    ///
    /// ```
    /// # let name = "doc-sweep";
    /// let queue = shmq::Queue::create(name, &shmq::Options::new(4, 8))?;
    /// queue.sweep(); // nothing died: nothing to do
    /// assert_eq!(queue.info().recovery.freed, 0);
    /// # shmq::Queue::unlink(name)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn sweep(&self) {
        self.schedule.swept(std::time::Instant::now());
        self.ring.sweep(Scope::Housekeeping, Redelivery::Leave);
    }
}

/// Whether `/dev/shm/shmq.NAME` may be a segment worth listing: not a segment still
/// being built (a `.`-name), and a regular file (`lstat`, so no FIFO or directory is
/// ever opened and nothing waits).
fn is_listable(name: &str) -> bool {
    !name.starts_with('.')
        && platform::shm_lstat(&crate::name::object(name))
            .is_ok_and(|file| file.irregular_kind().is_none())
}

/// Reads a snapshot of `segment`, asking `platform` about liveness. `own` is the
/// caller's own record, if any: its lock is held through the caller's own open file
/// description, which cannot see it.
fn snapshot(segment: &Segment, platform: &ShmPlatform, own: Option<u64>) -> SegmentInfo {
    let shared = segment.shared();
    // Relaxed throughout: a snapshot for display; fields may move while we read.
    let enqueue_pos = shared.enqueue_pos.value.load(Ordering::Relaxed);
    let dequeue_pos = shared.dequeue_pos.value.load(Ordering::Relaxed);
    let stats = &shared.stats;
    let identity: &Identity = segment.identity();
    SegmentInfo {
        name: segment.name().to_owned(),
        layout_version: identity.version,
        capacity: identity.capacity,
        max_message_size: identity.max_message_size,
        slot_stride: identity.slot_stride,
        total_size: identity.total_size,
        max_participants: identity.max_participants,
        mode: identity.mode as u32,
        max_deliveries: identity.max_deliveries,
        message_type: segment.message_type(),
        creator_pid: identity.creator_pid,
        created: SystemTime::UNIX_EPOCH + Duration::from_nanos(identity.creation_time_ns),
        enqueue_pos,
        dequeue_pos,
        occupancy: pos_diff(enqueue_pos, dequeue_pos).max(0) as u64,
        waiters: Waiters {
            consumers: shared.not_empty.waiters.load(Ordering::Relaxed),
            producers: shared.not_full.waiters.load(Ordering::Relaxed),
        },
        participants: participants(segment, platform, own),
        removed: segment.is_marked_removed(),
        recovery: RecoveryCounts {
            skipped: stats.skipped.load(Ordering::Relaxed),
            redelivered: stats.redelivered.load(Ordering::Relaxed),
            freed: stats.freed.load(Ordering::Relaxed),
            corrupt: stats.corrupt.load(Ordering::Relaxed),
            abandoned: stats.abandoned.load(Ordering::Relaxed),
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            dead_letter_failures: stats.dead_letter_failures.load(Ordering::Relaxed),
        },
    }
}

fn participants(
    segment: &Segment,
    platform: &ShmPlatform,
    own: Option<u64>,
) -> Vec<ParticipantInfo> {
    let claim = |c: u64| (c != CLAIM_NONE).then_some(c);
    let mut participants = Vec::new();
    for index in 0..segment.geometry().max_participants {
        let record = segment.participant(index);
        // Relaxed: a snapshot for display. Records in a state shmq never writes are
        // shown too (as dead, unless locked): a sweep reclaims them.
        if record.state.load(Ordering::Relaxed) == participant::FREE {
            continue;
        }
        // Relaxed: as above.
        let enqueue_claim = claim(record.enqueue_claim.load(Ordering::Relaxed));
        let dequeue_claim = claim(record.dequeue_claim.load(Ordering::Relaxed));
        participants.push(ParticipantInfo {
            index,
            pid: record.pid.load(Ordering::Relaxed),
            start_time: record.start_time.load(Ordering::Relaxed),
            alive: own == Some(index) || platform.is_locked_by_other(index),
            enqueue_claim,
            dequeue_claim,
            enqueue_stuck: enqueue_claim.is_some_and(|pos| {
                // Relaxed: as above.
                let run = record.enqueue_run.load(Ordering::Relaxed);
                run_outstanding(segment, End::Enqueue, pos, run)
            }),
            dequeue_stuck: dequeue_claim.is_some_and(|pos| {
                // Relaxed: as above.
                let run = record.dequeue_run.load(Ordering::Relaxed);
                run_outstanding(segment, End::Dequeue, pos, run)
            }),
            operations: record.operations.load(Ordering::Relaxed),
        });
    }
    participants
}
