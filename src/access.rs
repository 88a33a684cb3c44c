//! Who may own a segment this process attaches to, and which permission bits it
//! accepts: the checks that keep another user's file from posing as our segment.
//!
//! Anyone who can open a segment read-write is trusted: they can read and inject
//! messages, and a peer that shrinks the file makes the others fault. So a segment
//! must be a regular file owned by this process's effective user (or by a user or
//! group the caller trusts explicitly), must not be writable by every user unless
//! the caller asked for that, and must not grant read without write to anyone: the
//! library always maps read-write, and a reader that can only take read locks on the
//! liveness bytes would make live participants look alive forever and block repair.

use crate::error::TrustProblem;
use crate::platform::FileInfo;

/// Which owners and modes [`Queue::open_with`](crate::Queue::open_with) and
/// [`Queue::open_or_create`](crate::Queue::open_or_create) accept for an existing
/// segment. The default accepts segments owned by this process's effective user,
/// not writable by all users.
///
/// ```
/// use shmq::{Access, Options, Queue};
/// # let name = "doc-access";
/// let mine = Queue::create(name, &Options::new(2, 8))?;
/// // A segment of ours is accepted by default; trusting more owners is opt-in.
/// let opened = Queue::open_with(name, &Access::new().trust_owner(0).trust_group(0))?;
/// # Queue::unlink(name)?;
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Access {
    /// Users besides this process's effective user whose segments are accepted.
    pub owners: Vec<u32>,
    /// Groups whose segments are accepted, whoever owns them.
    pub groups: Vec<u32>,
    /// Accept segments that every user may write (mode `o+w`).
    pub world_writable: bool,
}

impl Access {
    /// The default: this process's effective user only, not world-writable.
    ///
    /// ```
    /// assert_eq!(shmq::Access::new(), shmq::Access::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accepts segments owned by user `uid`.
    ///
    /// ```
    /// assert_eq!(shmq::Access::new().trust_owner(1000).owners, vec![1000]);
    /// ```
    pub fn trust_owner(mut self, uid: u32) -> Self {
        self.owners.push(uid);
        self
    }

    /// Also accepts segments whose group is `gid`.
    ///
    /// ```
    /// assert_eq!(shmq::Access::new().trust_group(100).groups, vec![100]);
    /// ```
    pub fn trust_group(mut self, gid: u32) -> Self {
        self.groups.push(gid);
        self
    }

    /// Accepts segments every user may write (only for a segment you created with
    /// such a mode on purpose).
    ///
    /// ```
    /// assert!(shmq::Access::new().allow_world_writable().world_writable);
    /// ```
    pub fn allow_world_writable(mut self) -> Self {
        self.world_writable = true;
        self
    }
}

/// The permission classes (user, group, other) that may read but not write.
pub(crate) fn read_without_write(mode: u32) -> bool {
    [0o400, 0o040, 0o004]
        .into_iter()
        .any(|read| mode & read != 0 && mode & (read >> 1) == 0)
}

/// Checks an opened segment file against `access`, for a process whose effective
/// user is `euid`.
pub(crate) fn check(file: &FileInfo, access: &Access, euid: u32) -> Result<(), TrustProblem> {
    if let Some(kind) = file.irregular_kind() {
        return Err(TrustProblem::NotAFile { kind });
    }
    let mode = file.mode & 0o7777;
    let owner_trusted =
        file.uid == euid || access.owners.contains(&file.uid) || access.groups.contains(&file.gid);
    if !owner_trusted {
        return Err(TrustProblem::Owner {
            uid: file.uid,
            gid: file.gid,
            mode,
            euid,
        });
    }
    if mode & 0o002 != 0 && !access.world_writable {
        return Err(TrustProblem::WorldWritable {
            uid: file.uid,
            mode,
        });
    }
    if read_without_write(mode) {
        return Err(TrustProblem::ReadWithoutWrite { mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(uid: u32, gid: u32, mode: u32) -> FileInfo {
        FileInfo {
            size: 4096,
            allocated: 4096,
            mode: libc::S_IFREG | mode,
            uid,
            gid,
            identity: (1, 2),
        }
    }

    #[test]
    fn own_private_segment_is_accepted_and_a_squatters_is_not() {
        assert_eq!(
            check(&file(1000, 1000, 0o600), &Access::new(), 1000),
            Ok(())
        );
        assert_eq!(
            check(&file(1000, 1000, 0o660), &Access::new(), 1000),
            Ok(())
        );
        assert_eq!(
            check(&file(1001, 1001, 0o666), &Access::new(), 1000),
            Err(TrustProblem::Owner {
                uid: 1001,
                gid: 1001,
                mode: 0o666,
                euid: 1000
            })
        );
        let trusted = Access::new().trust_owner(1001);
        assert_eq!(check(&file(1001, 1001, 0o660), &trusted, 1000), Ok(()));
        let by_group = Access::new().trust_group(50);
        assert_eq!(check(&file(1001, 50, 0o660), &by_group, 1000), Ok(()));
    }

    #[test]
    fn world_writable_needs_consent_and_read_only_classes_are_refused() {
        assert!(matches!(
            check(&file(7, 7, 0o666), &Access::new(), 7),
            Err(TrustProblem::WorldWritable { mode: 0o666, .. })
        ));
        let lax = Access::new().allow_world_writable();
        assert_eq!(check(&file(7, 7, 0o666), &lax, 7), Ok(()));
        for mode in [0o644, 0o640, 0o604, 0o400, 0o664] {
            assert_eq!(
                check(&file(7, 7, mode), &lax, 7),
                Err(TrustProblem::ReadWithoutWrite { mode }),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn directories_and_fifos_are_not_segments() {
        let mut dir = file(7, 7, 0o700);
        dir.mode = libc::S_IFDIR | 0o700;
        assert_eq!(
            check(&dir, &Access::new(), 7),
            Err(TrustProblem::NotAFile {
                kind: "a directory"
            })
        );
        let mut fifo = file(7, 7, 0o600);
        fifo.mode = libc::S_IFIFO | 0o600;
        assert_eq!(
            check(&fifo, &Access::new(), 7),
            Err(TrustProblem::NotAFile { kind: "a FIFO" })
        );
    }
}
