//! Helpers shared by the integration tests that run child processes.

use std::process::{Child, Command, Stdio};

/// Re-runs this test binary as a child process that executes only `test`, with
/// `role` in the environment variable `role_var` (the test checks it first and acts
/// as that child). Stdout is piped so the parent can read the child's report.
pub fn spawn_role(test: &str, role_var: &str, role: String) -> Child {
    Command::new(std::env::current_exe().expect("path of the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(role_var, role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child process")
}
