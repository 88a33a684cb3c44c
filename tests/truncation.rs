//! Issue 16, item 5: a peer with write access shrinks a segment's file under a
//! process using it. Without the opt-in `SIGBUS` guard the process dies of `SIGBUS`
//! (shown here, in a child); with it, every call on the segment fails with
//! `Truncated` and the process lives on. A separate test binary: the guard is a
//! process-wide signal handler, which the other test binaries must not get.

mod common;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use common::{unique, UnlinkOnDrop};
use shmq::{Options, Queue, RecvError, SendError, TryRecvError, TrySendError};

const ROLE: &str = "SHMQ_TRUNCATION_ROLE";
const PAYLOAD: usize = 4000;

fn truncate(name: &str) {
    OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmq.{name}"))
        .expect("open the segment's file")
        .set_len(0)
        .expect("ftruncate");
}

/// Child role: attach (with the guard if asked), say so, then use the queue until
/// something happens; reports the first error, if it lives to.
fn use_until_truncated(name: &str, guarded: bool) {
    if guarded {
        shmq::install_sigbus_guard().expect("install the guard");
    }
    let queue = Queue::open(name).expect("open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ATTACHED").unwrap();
    out.flush().unwrap();
    let message = [7u8; PAYLOAD];
    loop {
        if let Err(e) = queue.send(&message) {
            writeln!(out, "SEND {e:?}").unwrap();
            return;
        }
        if let Err(e) = queue.recv() {
            writeln!(out, "RECV {e:?}").unwrap();
            return;
        }
    }
}

/// Starts a child using `name`, waits until it is attached, truncates the file,
/// and returns the child's exit status and what it printed.
fn truncate_under_a_child(
    test: &str,
    name: &str,
    guarded: bool,
) -> (std::process::ExitStatus, String) {
    let role = format!("{name}:{guarded}");
    let mut child = common::child_command(test, false, ROLE, &role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("ATTACHED") {
        assert_ne!(
            reader.read_line(&mut printed).unwrap(),
            0,
            "child ended: {printed}"
        );
    }
    std::thread::sleep(Duration::from_millis(20));
    truncate(name);
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    (status, printed + &rest)
}

fn child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let (name, guarded) = role.rsplit_once(':').unwrap();
    use_until_truncated(name, guarded == "true");
    true
}

#[test]
fn an_unguarded_process_dies_of_sigbus_when_a_peer_truncates_the_segment() {
    if child_role() {
        return;
    }
    let name = unique("unguarded");
    let _unlink = UnlinkOnDrop(&name);
    // Created and let go of: this process must not hold a mapping of the file it
    // truncates (dropping a handle writes to it).
    drop(Queue::create(&name, &Options::new(64, PAYLOAD as u64)).unwrap());
    let (status, printed) = truncate_under_a_child(
        "an_unguarded_process_dies_of_sigbus_when_a_peer_truncates_the_segment",
        &name,
        false,
    );
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}: {printed}");
}

#[test]
fn a_guarded_process_survives_a_peer_truncating_the_segment() {
    if child_role() {
        return;
    }
    let name = unique("guarded");
    let _unlink = UnlinkOnDrop(&name);
    drop(Queue::create(&name, &Options::new(64, PAYLOAD as u64)).unwrap());
    let (status, printed) = truncate_under_a_child(
        "a_guarded_process_survives_a_peer_truncating_the_segment",
        &name,
        true,
    );
    assert!(status.success(), "{status}: {printed}");
    assert!(
        printed.contains("SEND Truncated") || printed.contains("RECV Truncated"),
        "{printed}"
    );
}

#[test]
fn every_call_on_a_truncated_segment_says_so_and_other_segments_work_on() {
    if child_role() {
        return;
    }
    shmq::install_sigbus_guard().unwrap();
    let name = unique("every-call");
    let other_name = unique("other");
    let (_unlink, _unlink_other) = (UnlinkOnDrop(&name), UnlinkOnDrop(&other_name));
    let mut queue = Queue::create(&name, &Options::new(64, PAYLOAD as u64)).unwrap();
    let clone = queue.try_clone().unwrap();
    let other = Queue::create(&other_name, &Options::new(4, 8)).unwrap();
    queue.send(b"before").unwrap();
    truncate(&name);
    let mut buffer = vec![0u8; PAYLOAD];
    assert_eq!(queue.try_send(&[1; PAYLOAD]), Err(TrySendError::Truncated));
    assert_eq!(queue.send(b"x"), Err(SendError::Truncated));
    assert_eq!(queue.try_recv(), Err(TryRecvError::Truncated));
    assert_eq!(
        queue.recv_into_timeout(&mut buffer, Duration::from_millis(10)),
        Err(RecvError::Truncated)
    );
    assert_eq!(clone.try_recv(), Err(TryRecvError::Truncated));
    assert_eq!(queue.try_receive().unwrap_err(), TryRecvError::Truncated);
    // The empty file is not a segment any more: opening it again is refused.
    let reopened = Queue::open(&name);
    assert!(reopened.is_err(), "{reopened:?}");
    // Another segment in the same process is untouched.
    other.send(b"fine").unwrap();
    assert_eq!(other.recv().unwrap(), b"fine");
}

#[test]
fn a_sigbus_outside_shmq_mappings_still_kills_a_guarded_process() {
    const TEST: &str = "a_sigbus_outside_shmq_mappings_still_kills_a_guarded_process";
    if std::env::var(ROLE).as_deref() == Ok("foreign") {
        shmq::install_sigbus_guard().unwrap();
        let path = std::env::temp_dir().join(format!("shmq-foreign-{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(8192).unwrap();
        // SAFETY: a fresh shared mapping of a file we own, read below only.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        file.set_len(0).unwrap();
        let _ = std::fs::remove_file(&path);
        // SAFETY: inside the mapping, but past the (now empty) file: SIGBUS, which
        // is what this child is for.
        let byte = unsafe { std::ptr::read_volatile(map.cast::<u8>().add(4096)) };
        println!("read {byte} without a fault");
        return;
    }
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let status = common::child_command(TEST, false, ROLE, "foreign")
        .stdout(Stdio::null())
        .status()
        .expect("run child");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
}
