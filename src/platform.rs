//! Every operating-system call shmq makes: POSIX shared memory, mmap, futexes, open
//! file description locks and /proc. Linux only. Nothing above this module calls
//! `libc` directly.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Directory where Linux exposes POSIX shared memory objects.
pub const SHM_DIR: &str = "/dev/shm";

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn c_name(object: &str) -> io::Result<CString> {
    CString::new(format!("/{object}")).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `shm_open` with `O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK`: never follows a symbolic
/// link, and never waits for another process's file lease to be broken (it fails
/// with `EWOULDBLOCK` instead). `create` adds `O_CREAT | O_EXCL`.
pub fn shm_open(object: &str, create: bool, mode: u32) -> io::Result<OwnedFd> {
    let name = c_name(object)?;
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    if create {
        flags |= libc::O_CREAT | libc::O_EXCL;
    }
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let fd = cvt(unsafe { libc::shm_open(name.as_ptr(), flags, mode as libc::mode_t) })?;
    // SAFETY: shm_open just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Renames object `from` to `to` in the shared-memory directory, failing with
/// `EEXIST` if `to` exists (`renameat2` with `RENAME_NOREPLACE`): publishes a fully
/// built segment under its name in one step.
pub fn shm_rename_noreplace(from: &str, to: &str) -> io::Result<()> {
    let path = |object: &str| {
        CString::new(format!("{SHM_DIR}/{object}"))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (path(from)?, path(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call;
    // renameat2 takes no other pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`; a process we may not signal exists).
pub fn process_exists(pid: u64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `shm_unlink`.
pub fn shm_unlink(object: &str) -> io::Result<()> {
    let name = c_name(object)?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// Sets the permission bits exactly (the umask applied at `shm_open` is undone).
pub fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor we own.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Reserves `len` bytes of real memory for the object, so a full /dev/shm is an
/// error now rather than a SIGBUS at first touch.
pub fn fallocate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: `fd` is an open descriptor we own; posix_fallocate returns the error
    // number instead of setting errno.
    match unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// What `fstat` says about a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// Bytes actually allocated (`st_blocks` × 512): less than `size` if sparse.
    pub allocated: u64,
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device and inode: which file this is, whatever its name.
    pub identity: (u64, u64),
}

impl FileInfo {
    /// The file's type, in words, unless it is a regular file.
    pub fn irregular_kind(&self) -> Option<&'static str> {
        match self.mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFDIR => Some("a directory"),
            libc::S_IFIFO => Some("a FIFO"),
            libc::S_IFLNK => Some("a symbolic link"),
            libc::S_IFSOCK => Some("a socket"),
            libc::S_IFCHR | libc::S_IFBLK => Some("a device"),
            _ => Some("not a regular file"),
        }
    }
}

/// `fstat`.
pub fn fstat(fd: &OwnedFd) -> io::Result<FileInfo> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open; `stat` points to writable memory of the right type.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled the struct.
    Ok(file_info(&unsafe { stat.assume_init() }))
}

/// `lstat` of an object in the shared-memory directory (never follows a link).
pub fn shm_lstat(object: &str) -> io::Result<FileInfo> {
    let path = CString::new(format!("{SHM_DIR}/{object}"))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string; `stat` is writable memory of
    // the right type; both outlive the call.
    cvt(unsafe { libc::lstat(path.as_ptr(), stat.as_mut_ptr()) })?;
    // SAFETY: lstat succeeded, so it filled the struct.
    Ok(file_info(&unsafe { stat.assume_init() }))
}

fn file_info(stat: &libc::stat) -> FileInfo {
    FileInfo {
        size: stat.st_size as u64,
        allocated: (stat.st_blocks as u64).saturating_mul(512),
        mode: stat.st_mode,
        uid: stat.st_uid,
        gid: stat.st_gid,
        identity: (stat.st_dev, stat.st_ino),
    }
}

/// A fresh open file description for the same object (so it can hold its own locks):
/// reopens `/proc/self/fd/N`, which works even after the name was unlinked
/// (`O_NONBLOCK`: never waits for a lease holder).
pub fn reopen(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let new = cvt(unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: open just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A shared, read-write mapping of a whole segment, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// Its entry in the `SIGBUS` guard's registry (dropped after the unmap).
    guard: crate::guard::Registration,
}

// SAFETY: the mapping is plain memory shared with other processes anyway; all
// concurrent access to it goes through atomics or claimed slots.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write.
    pub fn new(fd: &OwnedFd, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL), of an fd we own;
        // the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        let guard = crate::guard::Registration::new(base.as_ptr(), len);
        Ok(Self { base, len, guard })
    }

    /// First byte of the mapping (page aligned).
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The flag the `SIGBUS` guard sets once it replaced this mapping (its file was
    /// shrunk under it): its memory is then no longer the segment's.
    pub fn lost_flag(&self) -> &'static std::sync::atomic::AtomicBool {
        self.guard.lost_flag()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned; nothing borrows it any more
        // (the owner drops the mapping last).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `FUTEX_WAIT` on a word in shared memory (no `FUTEX_PRIVATE_FLAG`: waker and
/// sleeper may be different processes). Returns when woken, when the word no longer
/// holds `expected`, on a signal, or after `timeout`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the duration of the call; the
    // timespec (if any) outlives it. Errors (EAGAIN, EINTR, ETIMEDOUT) all mean
    // "re-check", which every caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `FUTEX_WAKE` for every sleeper on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(feature = "tokio")]
/// Most words one [`futex_waitv`] call may watch (the kernel's `FUTEX_WAITV_MAX`).
pub const FUTEX_WAITV_MAX: usize = 128;

#[cfg(feature = "tokio")]
/// How a [`futex_waitv`] call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waitv {
    /// Woken through the word at this index (others may have changed too).
    Woken(usize),
    /// Returned without sleeping or was cut short: a word no longer held its
    /// expected value, a signal arrived, or the timeout passed. Re-check.
    Again,
    /// The kernel has no `futex_waitv` (Linux before 5.16).
    Unsupported,
}

#[cfg(feature = "tokio")]
/// The kernel's `struct futex_waitv`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

#[cfg(feature = "tokio")]
/// `FUTEX2_SIZE_U32`: the word is 32 bits. No `FUTEX2_PRIVATE`: the words live in
/// shared memory and their wakers (`futex_wake_all`, `FUTEX_WAKE`) use shared keys.
const FUTEX2_SIZE_U32: u32 = 0x02;

#[cfg(feature = "tokio")]
/// Sleeps until one of `words` (each with the value it is expected to hold; at most
/// [`FUTEX_WAITV_MAX`]) is woken, or no longer holds its value, or `timeout` passes:
/// `futex_waitv(2)` (Linux 5.16), the many-word form of [`futex_wait`].
pub fn futex_waitv(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> Waitv {
    assert!(
        !words.is_empty() && words.len() <= FUTEX_WAITV_MAX,
        "futex_waitv takes 1 to {FUTEX_WAITV_MAX} words"
    );
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|(word, expected)| FutexWaitv {
            val: u64::from(*expected),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let deadline = timeout.map(|t| {
        let now = monotonic_now();
        let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(t);
        libc::timespec {
            tv_sec: total.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: total.subsec_nanos() as libc::c_long,
        }
    });
    let deadline_ptr = deadline
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `waiters` is a live array of `len` kernel-layout entries whose
    // addresses are live, aligned u32s for the duration of the call (the caller's
    // borrows); the deadline (if any) outlives the call. The kernel only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            deadline_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if ret >= 0 {
        return Waitv::Woken(ret as usize);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => Waitv::Unsupported,
        // EAGAIN (a word changed), ETIMEDOUT, EINTR: all mean "re-check".
        _ => Waitv::Again,
    }
}

#[cfg(feature = "tokio")]
fn monotonic_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now
}

fn flock_at(kind: libc::c_short, offset: u64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    lock.l_pid = 0; // required for OFD locks
    lock
}

/// Takes an exclusive open-file-description lock on one byte, without blocking.
/// `Ok(false)` if another description holds it. The kernel drops it when the last
/// descriptor of this description closes, including when the process dies.
pub fn ofd_try_lock(fd: &OwnedFd, offset: u64) -> io::Result<bool> {
    let lock = flock_at(libc::F_WRLCK as libc::c_short, offset);
    // SAFETY: `fd` is open; `lock` is a valid flock for the call's duration.
    match cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) }) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Drops an OFD lock taken with [`ofd_try_lock`].
pub fn ofd_unlock(fd: &OwnedFd, offset: u64) {
    let lock = flock_at(libc::F_UNLCK as libc::c_short, offset);
    // SAFETY: `fd` is open; `lock` is valid for the call. Unlocking cannot fail in a
    // way we could act on.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
}

/// Whether some other open file description holds a lock on the byte at `offset`.
pub fn ofd_is_locked(fd: &OwnedFd, offset: u64) -> io::Result<bool> {
    let mut lock = flock_at(libc::F_WRLCK as libc::c_short, offset);
    // SAFETY: `fd` is open; `lock` is valid and writable for the call.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) })?;
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// This process's id.
pub fn pid() -> u64 {
    u64::from(std::process::id())
}

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or 0 if unreadable. With the pid it names one process
/// incarnation (shown by `inspect`).
pub fn process_start_time(pid: u64) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may contain spaces and ')'; fields resume after the
    // last ')'. Field 3 is the first after it, so field 22 is the 20th.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|field| field.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Names of the objects in /dev/shm that start with `prefix`.
pub fn list_shm(prefix: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        let name = entry.file_name();
        let bytes = OsStr::as_bytes(&name);
        if let Ok(name) = std::str::from_utf8(bytes) {
            if let Some(rest) = name.strip_prefix(prefix) {
                names.push(rest.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}
