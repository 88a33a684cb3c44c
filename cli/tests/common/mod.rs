//! What the CLI's test files share: running the real `shmq` binary, reading its
//! output, and segment names that clean up after themselves.

#![allow(dead_code)] // each test file uses its own part

use std::io::Write;
use std::process::{Command, Output, Stdio};

use shmq::Queue;

pub const EX_USAGE: i32 = 64;
pub const EX_NOINPUT: i32 = 66;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_CANTCREAT: i32 = 73;
pub const EX_TEMPFAIL: i32 = 75;

/// Runs `shmq args…` with `stdin` as its input, to the end.
pub fn shmq(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for shmq")
}

pub fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A unique segment name, unlinked when the test ends (whatever happened).
pub struct Name(pub String);

impl Name {
    pub fn new(test: &str) -> Self {
        Self(format!("cli-{test}-{}", std::process::id()))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = Queue::unlink(&self.0);
    }
}

/// Starts `shmq args…` with no stdin and its stdout and stderr piped; the caller
/// reaps it (`wait_with_output`).
pub fn spawn_shmq(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq")
}

/// Waits (up to 10 s) until `ready()` holds; panics with `what` if it never does.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
