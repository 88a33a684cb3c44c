//! Helpers shared by the integration tests that run child processes.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A segment name unique to this test binary's process: `<test crate>-<tag>-<pid>`
/// (`.ci/run` checks no such name is left in /dev/shm).
pub fn unique(tag: &str) -> String {
    format!("{}-{tag}-{}", env!("CARGO_CRATE_NAME"), std::process::id())
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
    let mut command = Command::new(std::env::current_exe().expect("path of the test binary"));
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
