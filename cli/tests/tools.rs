//! Runs the real `shmq` binary: segment tools and exit codes.

mod common;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;
use shmq::{Options, Queue};
#[test]
fn lines_sent_on_stdin_come_back_one_per_line() {
    let name = Name::new("lines");
    let created = shmq(
        &["create", &name.0, "--capacity", "8", "--max-size", "32"],
        b"",
    );
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    let sent = shmq(&["send", &name.0], b"one\ntwo\nthree\n");
    assert_eq!(code(&sent), 0, "{}", stderr(&sent));
    let received = shmq(&["recv", &name.0, "--count", "3"], b"");
    assert_eq!(code(&received), 0, "{}", stderr(&received));
    assert_eq!(stdout(&received), "one\ntwo\nthree\n");
}

#[test]
fn framed_messages_keep_newlines_and_binary_bytes() {
    let name = Name::new("framed");
    assert_eq!(code(&shmq(&["create", &name.0], b"")), 0);
    let payloads: [&[u8]; 3] = [b"a\nb", b"", &[0, 255, 10, 13]];
    let mut input = Vec::new();
    for p in payloads {
        input.extend_from_slice(&(p.len() as u32).to_le_bytes());
        input.extend_from_slice(p);
    }
    let sent = shmq(&["send", &name.0, "--framed"], &input);
    assert_eq!(code(&sent), 0, "{}", stderr(&sent));
    let received = shmq(&["recv", &name.0, "--framed", "--count", "3"], b"");
    assert_eq!(code(&received), 0, "{}", stderr(&received));
    assert_eq!(received.stdout, input);
}

#[test]
fn a_truncated_frame_is_a_data_error() {
    let name = Name::new("truncated");
    assert_eq!(code(&shmq(&["create", &name.0], b"")), 0);
    let sent = shmq(&["send", &name.0, "--framed"], &[5, 0, 0, 0, b'a']);
    assert_eq!(code(&sent), 65, "{}", stderr(&sent));
}

#[test]
fn recv_times_out_with_tempfail_and_a_message() {
    let name = Name::new("timeout");
    assert_eq!(code(&shmq(&["create", &name.0], b"")), 0);
    let received = shmq(&["recv", &name.0, "--timeout", "200ms"], b"");
    assert_eq!(code(&received), EX_TEMPFAIL);
    assert!(
        stderr(&received).contains("timed out"),
        "{}",
        stderr(&received)
    );
}

#[test]
fn missing_segment_is_noinput_and_existing_one_is_cantcreat() {
    let name = Name::new("codes");
    let missing = shmq(&["inspect", &name.0], b"");
    assert_eq!(code(&missing), EX_NOINPUT);
    assert!(stderr(&missing).contains(&name.0));
    assert_eq!(
        code(&shmq(&["recv", &name.0, "--count", "1"], b"")),
        EX_NOINPUT
    );
    assert_eq!(code(&shmq(&["create", &name.0], b"")), 0);
    assert_eq!(code(&shmq(&["create", &name.0], b"")), EX_CANTCREAT);
}

#[test]
fn bad_arguments_are_usage_errors() {
    assert_eq!(
        code(&shmq(&["recv", "x", "--timeout", "soon"], b"")),
        EX_USAGE
    );
    assert_eq!(code(&shmq(&["frobnicate"], b"")), EX_USAGE);
    let name = Name::new("usage");
    let odd = shmq(&["create", &name.0, "--capacity", "3"], b"");
    assert_eq!(code(&odd), EX_USAGE, "{}", stderr(&odd));
    assert_eq!(code(&shmq(&["bench", "--size", "4"], b"")), EX_USAGE);
}

#[test]
fn inspect_shows_occupancy_and_live_participants() {
    let name = Name::new("inspect");
    let queue = Queue::create(&name.0, &Options::new(16, 64)).expect("create");
    queue.try_send(b"x").expect("send");
    let text = shmq(&["inspect", &name.0], b"");
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    let out = stdout(&text);
    assert!(out.contains("occupancy      1 / 16"), "{out}");
    assert!(out.contains("1 live, 0 dead"), "{out}");
    assert!(out.contains(&std::process::id().to_string()), "{out}");
    let json = shmq(&["inspect", &name.0, "--json"], b"");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["capacity"], 16);
    assert_eq!(value["occupancy"], 1);
    assert_eq!(value["live"], 1);
    drop(queue);
}

#[test]
fn ls_lists_the_segment() {
    let name = Name::new("ls");
    assert_eq!(code(&shmq(&["create", &name.0], b"")), 0);
    let listed = shmq(&["ls"], b"");
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let line = stdout(&listed)
        .lines()
        .find(|l| l.starts_with(&name.0))
        .map(str::to_owned);
    assert!(line.is_some_and(|l| l.contains("unused")));
    let json = shmq(&["ls", "--json"], b"");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(value
        .as_array()
        .expect("array")
        .iter()
        .any(|s| s["name"] == name.0.as_str()));
}

#[test]
fn rm_refuses_a_segment_in_use_unless_forced() {
    let name = Name::new("rm");
    let queue = Queue::create(&name.0, &Options::default()).expect("create");
    let refused = shmq(&["rm", &name.0], b"");
    assert_eq!(code(&refused), EX_UNAVAILABLE);
    assert!(stderr(&refused).contains("live participant"));
    assert!(Queue::inspect(&name.0).is_ok(), "still there");
    let forced = shmq(&["rm", "--force", &name.0], b"");
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    assert!(matches!(
        Queue::inspect(&name.0),
        Err(shmq::Error::NotFound { .. })
    ));
    drop(queue);
    let again = shmq(&["rm", &name.0], b"");
    assert_eq!(code(&again), EX_NOINPUT);
}

#[test]
fn rm_keeps_undelivered_messages_unless_forced() {
    let name = Name::new("rm-full");
    drop(Queue::create(&name.0, &Options::default()).expect("create"));
    assert_eq!(code(&shmq(&["send", &name.0], b"pending\n")), 0);
    let refused = shmq(&["rm", &name.0], b"");
    assert_eq!(code(&refused), EX_UNAVAILABLE);
    assert!(
        stderr(&refused).contains("1 undelivered message"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(Queue::inspect(&name.0).expect("still there").occupancy, 1);
    assert_eq!(code(&shmq(&["rm", "--force", &name.0], b"")), 0);
    assert!(Queue::inspect(&name.0).is_err());
}

#[test]
fn rm_removes_an_unused_segment() {
    let name = Name::new("rm-unused");
    assert_eq!(code(&shmq(&["create", &name.0], b"")), 0);
    assert_eq!(code(&shmq(&["rm", &name.0], b"")), 0);
    assert!(Queue::inspect(&name.0).is_err());
}

// ---- delivery through stdout, bounded input, names shown escaped --------------------

const EX_DATAERR: i32 = 65;
const EX_OSERR: i32 = 71;

/// A segment of capacity 32 holding `count` messages `message-0`, `message-1`, ….
fn queue_holding(name: &Name, count: u64) -> Queue {
    let queue = Queue::create(&name.0, &Options::new(32, 64)).expect("create");
    for i in 0..count {
        queue
            .try_send(format!("message-{i}").as_bytes())
            .expect("send");
    }
    queue
}

#[test]
fn recv_into_a_pipe_whose_reader_leaves_gives_back_what_it_did_not_read() {
    const QUEUED: u64 = 20;
    let name = Name::new("reader-leaves");
    let queue = queue_holding(&name, QUEUED);
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(["recv", &name.0, "--timeout", "5s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq recv");
    // The reader takes exactly one line, a byte at a time (as a shell's `read` does),
    // and goes away, as `| head -n1` does.
    let mut reader = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while reader.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    drop(reader);
    let output = child.wait_with_output().expect("wait for shmq recv");
    assert_eq!(line, b"message-0");
    let err = stderr(&output);
    assert_eq!(code(&output), EX_OSERR, "{err}");
    // What `recv` guarantees: the reader got exactly the messages `recv`
    // acknowledged; the one it took but could not deliver went back to the queue.
    assert!(
        err.contains("1 taken from the queue, every one written and read")
            || err.contains("2 taken from the queue, 1 delivered: message 2 was given back"),
        "{err}"
    );
    assert_eq!(remaining(&queue), (1..QUEUED).collect::<Vec<_>>(), "{err}");
}

/// Every message left in `queue` (the given-back one comes at the next sweep), as
/// the numbers of `message-N`, sorted.
fn remaining(queue: &Queue) -> Vec<u64> {
    let mut left: Vec<u64> = std::iter::from_fn(|| {
        queue
            .recv_timeout(std::time::Duration::from_millis(300))
            .ok()
    })
    .map(|m| {
        String::from_utf8(m).unwrap()["message-".len()..]
            .parse()
            .unwrap()
    })
    .collect();
    left.sort_unstable();
    left
}

#[test]
fn recv_stops_at_the_first_message_it_cannot_write_and_says_so() {
    let name = Name::new("full-stdout");
    let queue = queue_holding(&name, 3);
    let output = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(["recv", &name.0, "--timeout", "5s"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create("/dev/full").expect("open /dev/full"))
        .output()
        .expect("run shmq recv");
    let err = stderr(&output);
    assert_eq!(code(&output), EX_OSERR, "{err}");
    assert!(
        err.contains("writing message 1 to stdout failed")
            && err.contains("1 taken from the queue, 0 delivered: message 1 was given back"),
        "{err}"
    );
    assert_eq!(remaining(&queue), vec![0, 1, 2], "{err}");
}

#[test]
fn an_overlong_line_is_refused_without_being_held_in_memory() {
    const LINE: usize = 64 << 20;
    /// Address space for `shmq send`: a few MiB suffice; the line does not fit.
    const ADDRESS_SPACE: libc::rlim_t = 32 << 20;
    let name = Name::new("long-line");
    let queue = Queue::create(&name.0, &Options::new(8, 64)).expect("create");
    let mut command = Command::new(env!("CARGO_BIN_EXE_shmq"));
    command
        .args(["send", &name.0])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // setrlimit, which is async-signal-safe, on a limit struct of its own.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = command.spawn().expect("start shmq send");
    let mut stdin = child.stdin.take().expect("stdin");
    // `shmq send` stops reading at the long line: the writer then sees EPIPE.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let _ = stdin.write_all(b"first\n");
        for _ in 0..LINE / chunk.len() {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = stdin.write_all(b"\nlast\n");
    });
    let output = child.wait_with_output().expect("wait for shmq send");
    writer.join().expect("writer");
    let err = stderr(&output);
    assert_eq!(code(&output), EX_DATAERR, "{err}");
    assert!(
        err.contains("message 2: line longer than this segment's maximum of 64 bytes"),
        "{err}"
    );
    assert_eq!(queue.try_recv().expect("the first line"), b"first");
    assert_eq!(queue.info().occupancy, 0);
}

#[test]
fn ls_shows_a_name_with_terminal_escapes_escaped() {
    // A file some other program made: shmq itself no longer accepts such names.
    let name = format!("cli-esc-\x1b[31mred\u{9b}2J\u{202e}-{}", std::process::id());
    let path = format!("/dev/shm/shmq.{name}");
    std::fs::write(&path, b"").expect("create the file");
    struct Remove<'a>(&'a str);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&path);
    let escaped = format!(
        "cli-esc-\\x1b[31mred\\u{{9b}}2J\\u{{202e}}-{}",
        std::process::id()
    );
    let listed = shmq(&["ls"], b"");
    let out = stdout(&listed);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let row = out.lines().find(|l| l.starts_with(&escaped));
    assert!(row.is_some(), "no escaped row in:\n{}", out.escape_debug());
    assert!(
        !out.contains(['\x1b', '\u{9b}', '\u{202e}']),
        "{}",
        out.escape_debug()
    );
    let json = shmq(&["ls", "--json"], b"");
    assert!(json.stdout.is_ascii(), "{}", stdout(&json).escape_debug());
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(value
        .as_array()
        .expect("array")
        .iter()
        .any(|s| s["name"] == name.as_str()));
    // Errors quoting the name escape it too.
    let removed = shmq(&["rm", &name], b"");
    assert!(stderr(&removed).contains(&escaped), "{}", stderr(&removed));
    assert!(!stderr(&removed).contains('\x1b'));
}

/// Sends each message and abandons it once (a limit of one delivery), then lets
/// a receive on the empty queue sweep them into the dead letters.
fn bury(queue: &mut Queue, messages: &[&[u8]]) {
    for message in messages {
        queue.send(message).expect("send");
        queue
            .try_receive()
            .expect("receive")
            .abandon()
            .expect("abandon");
    }
    assert!(queue
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
}

#[test]
fn dead_letters_are_shown_drained_and_requeued() {
    let name = Name::new("dead-letters");
    let dead = Name(format!("{}.dead", name.0));
    let out = shmq(&["create", &name.0, "--max-deliveries", "1"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut queue = Queue::open(&name.0).expect("open");
    bury(&mut queue, &[b"bad 1", b"bad 2"]);
    let shown = shmq(&["dead-letters", &name.0], b"");
    assert_eq!(code(&shown), 0);
    assert!(
        stderr(&shown).contains(&format!("`{}` holds 2", dead.0)),
        "{}",
        stderr(&shown)
    );
    let inspect = stdout(&shmq(&["inspect", &name.0], b""));
    assert!(
        inspect.contains("2 abandoned, 2 dead-lettered"),
        "{inspect}"
    );
    // Requeue one (after a "fix"), drain the other.
    let drained = shmq(&["dead-letters", &name.0, "--drain"], b"");
    assert_eq!(
        (code(&drained), stdout(&drained)),
        (0, "bad 1\nbad 2\n".to_owned())
    );
    bury(&mut queue, &[b"bad 3"]);
    let requeued = shmq(&["dead-letters", &name.0, "--requeue"], b"");
    assert!(
        stderr(&requeued).contains("requeued 1 dead letters"),
        "{}",
        stderr(&requeued)
    );
    let again = queue.try_receive().expect("requeued message");
    assert_eq!((&*again, again.deliveries()), (&b"bad 3"[..], 1));
    let none = shmq(&["dead-letters", &name.0], b"");
    assert!(stderr(&none).contains("holds 0"), "{}", stderr(&none));
    let unlimited = Name::new("no-limit");
    shmq(&["create", &unlimited.0, "--max-deliveries", "0"], b"");
    assert_eq!(code(&shmq(&["dead-letters", &unlimited.0], b"")), EX_USAGE);
}
