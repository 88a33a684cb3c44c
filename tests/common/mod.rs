//! Helpers shared by the integration tests that run child processes.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A segment name unique to this test binary's process: `<test crate>-<tag>-<pid>`
/// (`.ci/run` checks no such name is left in /dev/shm). Characters of `tag` a name
/// may not hold are replaced: `µ` (from a `Duration`'s debug form) by `u`, the rest
/// by `_`.
pub fn unique(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| match c {
            'µ' => 'u',
            c if c.is_ascii_alphanumeric() || "._-@+:".contains(c) => c,
            _ => '_',
        })
        .collect();
    format!("{}-{tag}-{}", env!("CARGO_CRATE_NAME"), std::process::id())
}

/// Unlinks the segment it names when dropped, however the test ends.
pub struct UnlinkOnDrop<'a>(pub &'a str);

impl Drop for UnlinkOnDrop<'_> {
    fn drop(&mut self) {
        let _ = shmq::Queue::unlink(self.0);
    }
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is writable memory of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded and filled the struct.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A command that re-runs this test binary executing only the test `test` (an
/// `#[ignore]`d entry point when `ignored`), with `role` in the environment variable
/// `role_var`: the test reads it first and acts as that child.
pub fn child_command(test: &str, ignored: bool, role_var: &str, role: &str) -> Command {
    let this_binary = std::env::current_exe().expect("path of the test binary");
    child_command_of(&this_binary, test, ignored, role_var, role)
}

/// [`child_command`] running the test binary at `binary` (a copy of this one).
fn child_command_of(
    binary: &Path,
    test: &str,
    ignored: bool,
    role_var: &str,
    role: &str,
) -> Command {
    let mut command = Command::new(binary);
    command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    if ignored {
        command.arg("--ignored");
    }
    command.env(role_var, role);
    command
}

/// Starts [`child_command`] with stdout piped, so the parent can read the child's
/// report.
pub fn spawn_role(test: &str, role_var: &str, role: String) -> Child {
    child_command(test, false, role_var, &role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child process")
}

/// Runs `command` to completion, retrying while `exec` fails with `ETXTBSY`: a
/// binary just copied (an [`ExecutableCopy`]) is "busy" while another test thread's
/// child, forked before the copy's descriptor was closed, has not reached its own
/// `exec` yet.
pub fn output_when_not_busy(command: &mut Command) -> io::Result<std::process::Output> {
    let mut attempts = 0;
    loop {
        match command.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Reads `child`'s piped stdout until a line that is `line` (after trimming; the
/// harness may have printed `test NAME ... ` before it on the same line, so a child
/// prints a newline first: see [`say_and_wait_forever`]). Panics if stdout ends.
pub fn wait_for_line(child: &mut Child, line: &str) {
    use std::io::BufRead;
    let mut reader = io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut read = String::new();
    while read.trim() != line {
        read.clear();
        assert_ne!(
            reader
                .read_line(&mut read)
                .expect("read the child's stdout"),
            0,
            "the child ended before saying {line}"
        );
    }
}

/// In a child: says `line` on a line of its own (flushed) and waits to be killed.
pub fn say_and_wait_forever(line: &str) -> ! {
    use std::io::Write;
    let mut out = io::stdout().lock();
    writeln!(out, "\n{line}").expect("write stdout");
    out.flush().expect("flush stdout");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Who may enter the directory an [`ExecutableCopy`] sits in.
#[derive(Clone, Copy, Debug)]
pub enum Reach {
    /// Every user (directory and binary 0755): for a child that drops to another uid.
    AnyUser,
    /// The owner only (directory 0700), like a checkout cloned into a private home or
    /// `mktemp -d` directory.
    OwnerOnly,
}

/// A copy of this test binary in a fresh directory of its own under a temporary
/// directory every user can traverse; the directory is removed when this is dropped.
///
/// A test that re-runs itself as another user starts a [`Reach::AnyUser`] copy: the
/// binary cargo built sits under the checkout, which may be a directory that user
/// cannot enter (then `exec` fails with EACCES).
pub struct ExecutableCopy {
    directory: PathBuf,
    binary: PathBuf,
}

impl ExecutableCopy {
    /// Copies this test binary into a new directory that `reach` may enter.
    pub fn new(reach: Reach) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let directory = traversable_temp_dir().join(format!(
            "{}-binary-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mode = match reach {
            Reach::AnyUser => 0o755,
            Reach::OwnerOnly => 0o700,
        };
        // `create`, not `create_all`: a name someone else made first (a symlink in
        // /tmp) is an error, never followed.
        fs::DirBuilder::new().mode(mode).create(&directory)?;
        let copy = Self {
            binary: directory.join("test-binary"),
            directory,
        };
        // Exact modes whatever the umask (and whatever mode the original has).
        fs::set_permissions(&copy.directory, fs::Permissions::from_mode(mode))?;
        fs::copy(std::env::current_exe()?, &copy.binary)?;
        fs::set_permissions(&copy.binary, fs::Permissions::from_mode(0o755))?;
        Ok(copy)
    }

    /// The copy's path.
    pub fn path(&self) -> &Path {
        &self.binary
    }

    /// [`child_command`] running the copy, from the copy's directory (the current
    /// directory, a checkout, may be closed to the child too).
    pub fn child_command(&self, test: &str, ignored: bool, role_var: &str, role: &str) -> Command {
        let mut command = child_command_of(&self.binary, test, ignored, role_var, role);
        command.current_dir(&self.directory);
        command
    }
}

impl Drop for ExecutableCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.directory);
    }
}

/// `$TMPDIR` (or /tmp) if every user may traverse it and each directory above it,
/// else /tmp.
fn traversable_temp_dir() -> PathBuf {
    let searchable_by_others = |dir: &Path| {
        fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    };
    let temp = std::env::temp_dir();
    if temp.ancestors().all(searchable_by_others) {
        temp
    } else {
        PathBuf::from("/tmp")
    }
}
