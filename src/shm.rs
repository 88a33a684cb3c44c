//! The [`Platform`] the algorithm runs on in shared memory: liveness and the
//! recovery lock as open-file-description locks on the segment file, sleeping and
//! waking as futexes on the segment's wait words.
//!
//! Each handle has its own open file description of the segment (its own `open`),
//! so the locks it takes are its own: the kernel drops them when the handle's
//! descriptor closes, and when its process dies however it dies. Lock offsets are
//! part of the layout ([`crate::layout::participant_lock_offset`]). The locks are
//! also the memory edges the ring's sweep and registration rely on: the
//! [`Platform`] docs ("Ordering contract") say how these calls give them.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::layout::{participant_lock_offset, RECOVERY_LOCK_OFFSET};
use crate::platform;
use crate::ring::Platform;
use crate::sync::AtomicU32;

/// Liveness, the recovery lock and futexes for one handle, through that handle's own
/// open file description of the segment.
#[derive(Clone, Debug)]
pub(crate) struct ShmPlatform {
    fd: Arc<OwnedFd>,
}

impl ShmPlatform {
    /// Wraps a descriptor that this handle alone uses (no other handle may take
    /// locks through the same open file description).
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self { fd: Arc::new(fd) }
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Whether another open file description holds record `index`'s liveness lock.
    /// An error answering the question must never make a live peer look dead.
    pub(crate) fn is_locked_by_other(&self, index: u64) -> bool {
        platform::ofd_is_locked(&self.fd, participant_lock_offset(index)).unwrap_or(true)
    }
}

/// Holds one participant record's liveness lock; releases it when dropped.
#[derive(Debug)]
pub(crate) struct LivenessLock {
    fd: Arc<OwnedFd>,
    offset: u64,
}

impl Drop for LivenessLock {
    fn drop(&mut self) {
        platform::ofd_unlock(&self.fd, self.offset);
    }
}

/// Holds the segment's recovery lock; releases it when dropped.
#[derive(Debug)]
pub(crate) struct RecoveryLock<'a> {
    fd: &'a OwnedFd,
}

impl Drop for RecoveryLock<'_> {
    fn drop(&mut self) {
        platform::ofd_unlock(self.fd, RECOVERY_LOCK_OFFSET);
    }
}

impl Platform for ShmPlatform {
    type Liveness = LivenessLock;
    type RecoveryGuard<'a> = RecoveryLock<'a>;

    fn try_own(&self, index: u64) -> Option<LivenessLock> {
        let offset = participant_lock_offset(index);
        match platform::ofd_try_lock(&self.fd, offset) {
            Ok(true) => Some(LivenessLock {
                fd: Arc::clone(&self.fd),
                offset,
            }),
            _ => None,
        }
    }

    fn is_alive(&self, index: u64) -> bool {
        self.is_locked_by_other(index)
    }

    fn try_lock_recovery(&self) -> Option<RecoveryLock<'_>> {
        match platform::ofd_try_lock(&self.fd, RECOVERY_LOCK_OFFSET) {
            Ok(true) => Some(RecoveryLock { fd: &self.fd }),
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
