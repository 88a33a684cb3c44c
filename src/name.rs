//! Segment names: what a user may call a segment, the object it lives in under
//! `/dev/shm`, and what an OS error on it means in the user's terms.

use std::io;

use crate::error::Error;

/// Prefix of every shmq object in /dev/shm (`orders` lives at `/dev/shm/shmq.orders`).
pub(crate) const OBJECT_PREFIX: &str = "shmq.";
/// Longest segment name accepted (bytes).
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Checks a user-supplied segment name.
pub(crate) fn validate(name: &str) -> Result<(), Error> {
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

/// Prefix of the object a segment is built in before it is published under its
/// name (`shmq..new-PID-N`): user names cannot start with `.`, so it never collides
/// with one, and listing skips it.
pub(crate) const BUILDING_PREFIX: &str = ".new-";

/// The object a segment is built in by process `pid`, before it is renamed to its
/// name; `attempt` makes it unique within the process.
pub(crate) fn building_object(pid: u64, attempt: u64) -> String {
    format!("{OBJECT_PREFIX}{BUILDING_PREFIX}{pid}-{attempt}")
}

/// The shared-memory object name for segment `name`.
pub(crate) fn object(name: &str) -> String {
    format!("{OBJECT_PREFIX}{name}")
}

/// Maps an OS error from `operation` on segment `name` to the error a user acts on.
pub(crate) fn io_error(operation: &'static str, name: &str, source: io::Error) -> Error {
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
        Some(libc::EWOULDBLOCK) => Error::Leased {
            name: name.to_owned(),
        },
        _ => Error::Io {
            operation,
            name: name.to_owned(),
            source,
        },
    }
}
