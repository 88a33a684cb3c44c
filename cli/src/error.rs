//! How a subcommand fails: sysexits-style exit codes, and the error that carries one
//! with the message for stderr.

/// sysexits.h: command line usage error.
pub const EX_USAGE: u8 = 64;
/// sysexits.h: data format error.
pub const EX_DATAERR: u8 = 65;
/// sysexits.h: cannot open input (here: no such segment).
pub const EX_NOINPUT: u8 = 66;
/// sysexits.h: service unavailable (here: segment in use, not ready, table full).
pub const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h: internal software error.
pub const EX_SOFTWARE: u8 = 70;
/// sysexits.h: system error.
pub const EX_OSERR: u8 = 71;
/// sysexits.h: cannot create output (here: segment exists, /dev/shm full).
pub const EX_CANTCREAT: u8 = 73;
/// sysexits.h: temporary failure (here: a timeout).
pub const EX_TEMPFAIL: u8 = 75;
/// sysexits.h: permission denied.
pub const EX_NOPERM: u8 = 77;

/// An error a subcommand ends with: the exit code and the message for stderr.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code (sysexits style).
    pub code: u8,
    /// One-line message (without the `shmq:` prefix); empty for none.
    pub message: String,
}

impl CliError {
    /// An error with this exit code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<shmq::Error> for CliError {
    fn from(e: shmq::Error) -> Self {
        use shmq::Error as E;
        let code = match &e {
            E::NotFound { .. } => EX_NOINPUT,
            E::AlreadyExists { .. } | E::OutOfSpace { .. } => EX_CANTCREAT,
            E::PermissionDenied { .. } => EX_NOPERM,
            E::IncompatibleVersion { .. } | E::Corrupt { .. } => EX_DATAERR,
            E::NotReady { .. } | E::ParticipantTableFull { .. } => EX_UNAVAILABLE,
            E::InvalidName { .. } | E::InvalidOptions { .. } | E::InvalidMode { .. } => EX_USAGE,
            E::Io { .. } => EX_OSERR,
            _ => EX_SOFTWARE,
        };
        CliError::new(code, e.to_string())
    }
}

/// An I/O error as an `EX_OSERR` failure of `what`.
pub fn os_error(what: &str, e: std::io::Error) -> CliError {
    CliError::new(EX_OSERR, format!("{what}: {e}"))
}

/// The error for a failed write to stdout.
pub fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // The reader went away (e.g. `| head`): a quiet, successful end.
        CliError::new(0, "")
    } else {
        CliError::new(EX_OSERR, format!("writing to stdout: {e}"))
    }
}
