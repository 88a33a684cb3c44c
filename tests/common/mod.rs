//! Helpers shared by the integration tests that run child processes.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

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
