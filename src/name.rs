//! Segment names: what a user may call a segment, the object it lives in under
//! `/dev/shm`, and what an OS error on it means in the user's terms.

use std::io;

use crate::error::Error;

/// Prefix of every shmq object in /dev/shm (`orders` lives at `/dev/shm/shmq.orders`).
pub(crate) const OBJECT_PREFIX: &str = "shmq.";
/// Longest segment name accepted (bytes).
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Characters a name may hold besides ASCII letters and digits.
const PUNCTUATION: &[u8] = b"._-@+:";

/// Checks a user-supplied segment name.
///
/// A name is 1 to 200 bytes of ASCII letters, digits and `. _ - @ + :`, starting with
/// a letter, a digit or `_`. So every name is a file name in /dev/shm, looks like
/// what it is on a terminal (no control, invisible or look-alike characters), is
/// neither hidden (a leading `.`) nor mistaken for a command-line option (a leading
/// `-`), and needs no quoting in a shell. Opening, inspecting and removing check the
/// same rule: a file another program put in /dev/shm under a name outside it is
/// listed, but only `rm /dev/shm/shmq.NAME` removes it.
pub(crate) fn validate(name: &str) -> Result<(), Error> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || PUNCTUATION.contains(&b);
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 200 bytes")
    } else if !name.bytes().all(allowed) {
        Some(
            "it may hold only ASCII letters, digits and . _ - @ + : \
             (no spaces, '/', control, invisible or non-ASCII characters)",
        )
    } else if name.starts_with(['.', '-', '@', '+', ':']) {
        Some("it must start with an ASCII letter, a digit or '_'")
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

/// Suffix of a segment's dead-letter segment: `orders` sends its dead letters to
/// `orders.dead`.
pub(crate) const DEAD_LETTER_SUFFIX: &str = ".dead";

/// The dead-letter segment's name for segment `name`.
pub(crate) fn dead_letters(name: &str) -> String {
    format!("{name}{DEAD_LETTER_SUFFIX}")
}

/// Checks the name of a segment that will send dead letters: its dead-letter
/// segment's name must be valid too (so at most 195 bytes).
pub(crate) fn validate_with_dead_letters(name: &str) -> Result<(), Error> {
    validate(name)?;
    if name.len() + DEAD_LETTER_SUFFIX.len() > MAX_NAME_LEN {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "with max_deliveries set, it may be at most 195 bytes (its dead letters go to NAME.dead); or set max_deliveries to 0",
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Queue};

    fn refused(name: &str) -> bool {
        matches!(validate(name), Err(Error::InvalidName { .. }))
    }

    #[test]
    fn names_the_project_uses_are_accepted() {
        // Tests (`<crate>-<tag>-<pid>`), docs, benches, examples and the CLI's bench.
        for name in [
            "hostile-dead-table-4242",
            "torture-c8-4242",
            "stress-procs1024-4242",
            "doc-recv-with-timeout",
            "bench-spsc-4242",
            "bench.4242.0",
            "lemonade-4242",
            "demo",
            "cli-reader-leaves-4242",
            "_private",
            "orders@host+v2:east",
            &"n".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(validate(name).map_err(|e| e.to_string()), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_outside_the_safe_set_are_refused() {
        for name in [
            "",
            "a/b",
            "with space",
            "tab\there",
            "nul\0",
            "esc\x1b[31m",
            "del\x7f",
            "ord\u{200b}ers",
            "\u{202e}sredro",
            "café",
            "оrders", // a Cyrillic 'о'
            "a\\b",
            "a*b",
            ".hidden",
            "..",
            "-rf",
            "@host",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(refused(name), "{name:?} was accepted");
        }
    }

    #[test]
    fn create_refuses_a_name_with_an_invisible_character() {
        let err = Queue::create("ord\u{200b}ers", &Options::new(2, 8)).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
        assert!(err.to_string().contains("only ASCII letters"), "{err}");
    }
}
