//! Hardening against other users, half-built and removed segments, and forged
//! state: each test reproduces an attack or accident and checks the typed refusal
//! or the recovery.

mod common;
#[path = "common/format.rs"]
mod format;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::unique;
use format::{identity, LINE, SLOT_HEADER_SIZE};
use shmq::{
    Access, Error, HeaderProblem, Options, Queue, RecvError, Removal, TrustProblem, TryRecvError,
};

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/shmq.{name}"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(name: &str, mode: u32) {
    fs::set_permissions(shm_path(name), fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Removes a segment name when dropped, whatever the test's outcome.
struct Unlink(String);
impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = fs::remove_file(shm_path(&self.0));
    }
}

/// Item 1: another user creates the name first, mode 0666; we must not use it.
#[test]
fn a_segment_squatted_by_another_user_is_refused_with_its_owner_and_mode() {
    if !is_root() {
        println!("skipped: giving a file to another user needs root");
        return;
    }
    let name = unique("squatted");
    let _cleanup = Unlink(name.clone());
    drop(Queue::create(&name, &Options::new(4, 16)).expect("create"));
    std::os::unix::fs::chown(shm_path(&name), Some(65534), Some(65534)).expect("chown");
    chmod(&name, 0o666);
    for outcome in [
        Queue::open(&name).map(drop),
        Queue::open_or_create(&name, &Options::new(4, 16).mode(0o666)).map(drop),
    ] {
        match outcome {
            Err(Error::Untrusted {
                problem:
                    TrustProblem::Owner {
                        uid: 65534,
                        gid: 65534,
                        mode: 0o666,
                        euid: 0,
                    },
                ..
            }) => {}
            other => panic!("a squatter's segment must be refused: {other:?}"),
        }
    }
    let message = Queue::open(&name).unwrap_err().to_string();
    assert!(
        message.contains("uid 65534") && message.contains("0666"),
        "{message}"
    );
    // Trusting that owner explicitly (and the mode it chose) is the way in.
    let access = Access::new().trust_owner(65534).allow_world_writable();
    Queue::open_with(&name, &access).expect("an explicitly trusted owner");
}

/// Item 2: a mode granting read without write would let a reader stall recovery.
#[test]
fn modes_granting_read_without_write_are_refused_at_create_and_open() {
    let name = unique("readonly");
    let _cleanup = Unlink(name.clone());
    for mode in [0o644, 0o640, 0o604, 0o400] {
        assert!(
            matches!(
                Queue::create(&name, &Options::new(4, 16).mode(mode)),
                Err(Error::InvalidMode { .. })
            ),
            "{mode:o}"
        );
    }
    drop(Queue::create(&name, &Options::new(4, 16)).expect("create"));
    chmod(&name, 0o644);
    assert!(matches!(
        Queue::open(&name),
        Err(Error::Untrusted {
            problem: TrustProblem::ReadWithoutWrite { mode: 0o644 },
            ..
        })
    ));
    chmod(&name, 0o666);
    assert!(matches!(
        Queue::open(&name),
        Err(Error::Untrusted {
            problem: TrustProblem::WorldWritable { mode: 0o666, .. },
            ..
        })
    ));
    Queue::open_with(&name, &Access::new().allow_world_writable()).expect("asked for");
}

/// Item 3: a process holding a lease must not make `open`, `inspect` or `ls` wait
/// for the kernel's lease-break time (45 s by default).
#[test]
fn a_leased_segment_is_refused_at_once_not_after_the_lease_break_time() {
    let name = unique("leased");
    let _cleanup = Unlink(name.clone());
    drop(Queue::create(&name, &Options::new(4, 16)).expect("create"));
    let reader = fs::File::open(shm_path(&name)).expect("open read-only");
    use std::os::fd::AsRawFd;
    // A lease holder is sent SIGIO (by default fatal) when someone opens the file
    // for writing: this process holds the lease, so it ignores the signal.
    // SAFETY: SIG_IGN for SIGIO; no handler runs, no other test uses SIGIO.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    // SAFETY: a valid descriptor we own; F_SETLEASE takes an int argument.
    let leased = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if leased != 0 {
        println!(
            "skipped: F_SETLEASE refused ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    let started = Instant::now();
    let outcome = Queue::open(&name);
    let inspected = Queue::inspect(&name);
    let listed = Queue::list().expect("list");
    let took = started.elapsed();
    assert!(matches!(outcome, Err(Error::Leased { .. })), "{outcome:?}");
    assert!(
        matches!(inspected, Err(Error::Leased { .. })),
        "{inspected:?}"
    );
    let entry = listed
        .iter()
        .find(|entry| entry.name == name)
        .expect("listed");
    assert!(
        matches!(entry.info, Err(Error::Leased { .. })),
        "{:?}",
        entry.info
    );
    assert!(
        took < Duration::from_secs(2),
        "open/inspect/ls waited {took:?}"
    );
    // SAFETY: as above; F_UNLCK releases the lease.
    unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

/// Item 4: a file of the right size whose pages are not allocated would SIGBUS its
/// users once /dev/shm is full.
#[test]
fn a_sparse_segment_is_refused() {
    let name = unique("sparse");
    let _cleanup = Unlink(name.clone());
    drop(Queue::create(&name, &Options::new(1024, 1024)).expect("create"));
    let image = fs::read(shm_path(&name)).expect("read");
    fs::remove_file(shm_path(&name)).expect("remove");
    // The same bytes, but only the header and ring state pages written: the slots
    // are holes.
    let slots_offset = u64::from_le_bytes(image[identity::SLOTS_OFFSET..][..8].try_into().unwrap());
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(shm_path(&name))
        .expect("create sparse file");
    file.set_len(image.len() as u64).expect("size");
    file.write_all_at(&image[..slots_offset as usize], 0)
        .expect("header");
    chmod(&name, 0o600);
    match Queue::open(&name) {
        Err(Error::Corrupt {
            problem: HeaderProblem::Sparse { allocated, size },
            ..
        }) => assert!(allocated < size && size == image.len() as u64),
        other => panic!("a sparse segment must be refused: {other:?}"),
    }
}

/// Item 6: a creator killed at any instant leaves the name usable: never "not
/// ready" forever. A child creates and removes large segments in a loop and is
/// killed at random moments, 20 times.
#[test]
fn a_creator_killed_at_any_instant_leaves_the_name_usable() {
    if std::env::var("SHMQ_HARDENING_CREATOR").is_ok() {
        let name = std::env::var("SHMQ_HARDENING_CREATOR").unwrap();
        loop {
            // 64 MiB: posix_fallocate and initialisation take long enough to be hit.
            if let Ok(queue) = Queue::create(&name, &Options::new(1 << 16, 1000)) {
                drop(queue);
                let _ = Queue::unlink(&name);
            }
        }
    }
    let name = unique("killed-creator");
    let _cleanup = Unlink(name.clone());
    let mut seed = u64::from(std::process::id());
    for round in 0..20 {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "a_creator_killed_at_any_instant_leaves_the_name_usable",
            ])
            .env("SHMQ_HARDENING_CREATOR", &name)
            .stdout(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the child dies with this process, so a
        // failing test never leaves a creator looping.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("spawn creator");
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 60));
        child.kill().expect("kill");
        child.wait().expect("reap");
        match Queue::open(&name) {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(other) => panic!("round {round}: the name is unusable: {other}"),
        }
        let _ = Queue::unlink(&name);
        let queue = Queue::create(&name, &Options::new(4, 16))
            .unwrap_or_else(|e| panic!("round {round}: create after the kill: {e}"));
        drop(queue);
        Queue::unlink(&name).expect("unlink");
    }
    // The killed creators' private build objects are gone too (removed by the next
    // create once their process is dead).
    let left: Vec<_> = fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|file| file.starts_with("shmq..new-"))
        .collect();
    assert!(left.len() <= 1, "abandoned builds left behind: {left:?}");
}

/// Item 7: `rm` without force keeps a segment with undelivered messages; after a
/// forced removal and re-creation, a handle on the old segment notices.
#[test]
fn removal_keeps_undelivered_messages_and_old_handles_notice_a_replacement() {
    let name = unique("removed");
    let _cleanup = Unlink(name.clone());
    let producer = Queue::create(&name, &Options::new(4, 16)).expect("create");
    producer.send(b"undelivered").expect("send");
    drop(producer);
    assert!(matches!(
        Queue::remove_if_unused(&name),
        Ok(Removal::NotEmpty(info)) if info.occupancy == 1
    ));
    let old = Queue::open(&name).expect("still there");
    assert_eq!(old.recv().expect("the message was kept"), b"undelivered");
    assert!(!old.is_removed());
    Queue::unlink(&name).expect("forced removal");
    assert!(old.is_removed());
    assert!(old.info().removed);
    let _new = Queue::create(&name, &Options::new(4, 16)).expect("re-create");
    let started = Instant::now();
    let outcome = old.recv_timeout(Duration::from_secs(5));
    assert_eq!(outcome, Err(RecvError::Orphaned));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Non-blocking calls on the old segment still work: it is intact, just unnamed.
    old.try_send(b"x").expect("the old segment still works");
}

/// Item 10: a long run of slots left by dead producers is stepped over in a loop,
/// not by recursion (a debug build overflowed its stack after ~11,000).
#[test]
fn a_run_of_twelve_thousand_skipped_slots_is_stepped_over() {
    const CAPACITY: u64 = 16384;
    const RUN: u64 = 12_000;
    let name = unique("skips");
    let _cleanup = Unlink(name.clone());
    let options = Options::new(CAPACITY, 8).max_participants(4);
    drop(Queue::create(&name, &options).expect("create"));
    let geometry = format::geometry(CAPACITY, 8, 4);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    let put_u64 =
        |offset: u64, value: u64| file.write_all_at(&value.to_le_bytes(), offset).unwrap();
    let put_u32 =
        |offset: u64, value: u32| file.write_all_at(&value.to_le_bytes(), offset).unwrap();
    for pos in 0..=RUN {
        let slot = geometry.slots_offset + pos * geometry.slot_stride;
        put_u64(slot, pos + 1); // published
        let len = if pos == RUN { 3 } else { u32::MAX }; // skips, then a message
        put_u32(slot + format::SLOT_LEN_OFFSET, len);
    }
    let last = geometry.slots_offset + RUN * geometry.slot_stride;
    file.write_all_at(b"end", last + SLOT_HEADER_SIZE).unwrap();
    put_u64(LINE, RUN + 1); // enqueue cursor, past the message
    let queue = Queue::open(&name).expect("open");
    assert_eq!(queue.try_recv().expect("stepped over the skips"), b"end");
    assert_eq!(queue.try_recv(), Err(TryRecvError::Empty));
}

/// Item 11: participant records in a state shmq never writes are reclaimed once
/// their liveness lock is free, instead of refusing every attach.
#[test]
fn records_in_unknown_states_are_reclaimed() {
    let name = unique("scribbled-records");
    let _cleanup = Unlink(name.clone());
    drop(Queue::create(&name, &Options::new(4, 16).max_participants(4)).expect("create"));
    let geometry = format::geometry(4, 16, 4);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    for index in 0..4 {
        let record = geometry.participants_offset + index * LINE;
        file.write_all_at(&(7 + index).to_le_bytes(), record)
            .unwrap();
    }
    let info = Queue::inspect(&name).expect("inspect");
    assert_eq!((info.live(), info.dead()), (0, 4), "{info:?}");
    let queue = Queue::open(&name).expect("the scribbled records are reclaimed");
    let info = queue.info();
    assert_eq!((info.live(), info.dead()), (1, 0), "{info:?}");
    assert_eq!(info.recovery.freed, 4);
}
