//! Stdout as `shmq recv` delivers through it. A message written to a pipe is not yet
//! delivered: it waits in the pipe until the reader reads it, and is lost if the
//! reader exits first (`| head -n1` reads one line and exits). So when stdout is a
//! pipe, `recv` takes the next message from the queue only once the reader has read
//! everything written so far, and stops when the reader has gone.
//!
//! Linux has no event for "pipe empty": [`wait_until_read`] asks how many bytes are
//! unread (`FIONREAD`) and sleeps in `ppoll`, which returns early when the reader
//! goes (the write end of a pipe without readers polls as `POLLERR`).

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

const STDOUT: libc::c_int = libc::STDOUT_FILENO;

/// First pause while the reader has bytes left to read; each pause doubles up to
/// [`LONGEST_PAUSE`]. A reader that is keeping up takes a few microseconds.
const FIRST_PAUSE: Duration = Duration::from_micros(5);
/// Longest pause between two looks at a pipe the reader is slow to empty.
const LONGEST_PAUSE: Duration = Duration::from_millis(1);

/// Whether stdout is a pipe (or a FIFO).
pub fn stdout_is_pipe() -> bool {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `stat` is writable memory for one `struct stat`, which is all fstat
    // writes.
    if unsafe { libc::fstat(STDOUT, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Whether every reader of stdout has closed it (for a pipe: nobody will read what
/// is written, and writing fails with EPIPE).
pub fn reader_gone() -> io::Result<bool> {
    reader_gone_within(Duration::ZERO)
}

/// What became of the bytes written to a pipe.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// The reader read them all.
    Read,
    /// The reader went away and left some unread.
    ReaderGone,
}

/// Waits until stdout's reader has read every byte written to it, or has gone away
/// leaving some unread.
pub fn wait_until_read() -> io::Result<Drained> {
    let mut pause = FIRST_PAUSE;
    loop {
        if unread_bytes()? == 0 {
            return Ok(Drained::Read);
        }
        if reader_gone_within(pause)? {
            return Ok(if unread_bytes()? == 0 {
                Drained::Read
            } else {
                Drained::ReaderGone
            });
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Bytes written to stdout (a pipe) that its reader has not read yet.
fn unread_bytes() -> io::Result<usize> {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD stores one int, the pipe's unread byte count, through the
    // pointer, which points at `unread`, a writable c_int.
    if unsafe { libc::ioctl(STDOUT, libc::FIONREAD, &mut unread) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(unread).unwrap_or(0))
}

/// Waits up to `timeout` for stdout to report that its readers are gone.
fn reader_gone_within(timeout: Duration) -> io::Result<bool> {
    // No events asked for: POLLERR and POLLHUP are reported regardless.
    let mut stdout = libc::pollfd {
        fd: STDOUT,
        events: 0,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, and the count says one; `timeout` is a valid
    // timespec; a null signal mask keeps the thread's mask. ppoll writes only
    // `stdout.revents`.
    let ready = unsafe { libc::ppoll(&mut stdout, 1, &timeout, std::ptr::null()) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        };
    }
    Ok(stdout.revents & (libc::POLLERR | libc::POLLHUP) != 0)
}
