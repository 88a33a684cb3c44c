//! Each creation/open error variant, and the message-level errors.

mod common;
use common::unique;
use shmq::{Error, GeometryError, Options, Queue, TryRecvError, TrySendError};

#[test]
fn open_of_missing_segment_is_not_found() {
    let err = Queue::open(&unique("missing")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("create it first"));
}

#[test]
fn create_of_existing_name_is_already_exists_and_open_or_create_opens_it() {
    let name = unique("exists");
    let first = Queue::create(&name, &Options::new(8, 16)).unwrap();
    let err = Queue::create(&name, &Options::new(8, 16)).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    // An existing segment keeps its own parameters.
    let second = Queue::open_or_create(&name, &Options::new(2, 4)).unwrap();
    assert_eq!((second.capacity(), second.max_message_size()), (8, 16));
    first.send(b"hello").unwrap();
    assert_eq!(second.recv().unwrap(), b"hello");
    Queue::unlink(&name).unwrap();
    assert!(matches!(Queue::unlink(&name), Err(Error::NotFound { .. })));
}

#[test]
fn bad_options_are_invalid_options_and_huge_ones_too_large() {
    for (options, expected) in [
        (Options::new(3, 16), GeometryError::Capacity(3)),
        (Options::new(1, 16), GeometryError::Capacity(1)),
        (Options::new(8, 0), GeometryError::MessageSize(0)),
        (
            Options::new(8, 16).max_participants(0),
            GeometryError::Participants(0),
        ),
    ] {
        let err = Queue::create(&unique("bad"), &options).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOptions { problem } if *problem == expected),
            "{options:?}: {err:?}"
        );
        let source = std::error::Error::source(&err).expect("typed cause");
        assert_eq!(source.downcast_ref::<GeometryError>(), Some(&expected));
    }
    let err = Queue::create(&unique("bad"), &Options::new(8, 16).mode(0o4777)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidMode { mode: 0o4777, .. }),
        "{err:?}"
    );
    let err = Queue::create(&unique("huge"), &Options::new(1 << 32, 1 << 20)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOptions {
                problem: GeometryError::TooLarge(_)
            }
        ),
        "{err:?}"
    );
}

#[test]
fn segment_larger_than_dev_shm_is_out_of_space_at_creation_not_sigbus_later() {
    // 2^27 slots of 4 KiB = 512 GiB: under the 1 TiB limit, above any /dev/shm here.
    // tmpfs checks the size limit before allocating anything.
    let name = unique("nospace");
    let err = Queue::create(&name, &Options::new(1 << 27, 4096 - 16)).unwrap_err();
    assert!(matches!(err, Error::OutOfSpace { .. }), "{err:?}");
    assert!(
        matches!(Queue::open(&name), Err(Error::NotFound { .. })),
        "the failed creation was cleaned up"
    );
}

#[test]
fn open_of_a_segment_whose_creator_never_finished_is_not_ready() {
    let name = unique("notready");
    let path = format!("/dev/shm/shmq.{name}");
    std::fs::write(&path, []).unwrap();
    // A mode shmq would create (a 0644 file is refused before its bytes are read).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Queue::open(&name).unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err:?}");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let err = Queue::open(&name).unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err:?}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_full_participant_table_refuses_and_a_dropped_handle_frees_its_record() {
    let name = unique("table");
    let first = Queue::create(&name, &Options::new(8, 16).max_participants(2)).unwrap();
    let second = Queue::open(&name).unwrap();
    let err = Queue::open(&name).unwrap_err();
    assert!(
        matches!(err, Error::ParticipantTableFull { max: 2, .. }),
        "{err:?}"
    );
    drop(second);
    let third = Queue::open(&name).unwrap();
    assert_eq!(first.info().participants.len(), 2);
    drop(third);
    Queue::unlink(&name).unwrap();
}

#[test]
fn too_large_messages_and_small_buffers_are_refused_without_consuming() {
    let name = unique("sizes");
    let queue = Queue::create(&name, &Options::new(4, 16)).unwrap();
    Queue::unlink(&name).unwrap();
    assert_eq!(
        queue.try_send(&[0; 17]),
        Err(TrySendError::TooLarge { len: 17, max: 16 })
    );
    queue.try_send(&[7; 16]).unwrap();
    let mut small = [0u8; 8];
    assert_eq!(
        queue.try_recv_into(&mut small),
        Err(TryRecvError::BufferTooSmall { len: 8, max: 16 })
    );
    let mut buffer = [0u8; 16];
    assert_eq!(
        queue.try_recv_into(&mut buffer),
        Ok(16),
        "the message was not consumed by the refusal"
    );
    assert_eq!(buffer, [7; 16]);
}

#[test]
fn capacity_is_exact_and_zero_copy_receive_releases_on_panic() {
    let name = unique("exact");
    let queue = Queue::create(&name, &Options::new(8, 4)).unwrap();
    Queue::unlink(&name).unwrap();
    for i in 0..8u8 {
        queue.try_send(&[i]).unwrap();
    }
    assert_eq!(queue.try_send(&[8]), Err(TrySendError::Full));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        queue.try_recv_with(|_| panic!("consumer bug")).ok();
    }));
    assert!(panicked.is_err());
    // The panicking closure's slot was released: there is room for exactly one more.
    queue.try_send(&[8]).unwrap();
    assert_eq!(queue.try_send(&[9]), Err(TrySendError::Full));
    let rest: Vec<u8> = std::iter::from_fn(|| queue.try_recv().ok())
        .map(|m| m[0])
        .collect();
    assert_eq!(rest, (1..=8).collect::<Vec<u8>>());
}

#[test]
fn handles_are_send_and_cloned_handles_work_after_unlink() {
    fn assert_send<T: Send>() {}
    assert_send::<Queue>();
    let name = unique("send");
    let queue = Queue::create(&name, &Options::new(4, 16)).unwrap();
    Queue::unlink(&name).unwrap();
    let clone = queue.try_clone().unwrap();
    std::thread::spawn(move || clone.send(b"from a thread").unwrap())
        .join()
        .unwrap();
    assert_eq!(queue.recv().unwrap(), b"from a thread");
}

#[test]
fn a_table_full_of_dead_participants_is_reclaimed_on_open() {
    let name = unique("dead-table");
    let creator = Queue::create(&name, &Options::new(8, 16).max_participants(2)).unwrap();
    // A child process takes the second record and dies without unregistering.
    // SAFETY: the child only opens the segment and exits; it touches no lock held by
    // another thread of this (multi-threaded) test process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let queue = Queue::open(&name);
        std::mem::forget(queue);
        // SAFETY: _exit skips destructors and atexit handlers, like a crash.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        creator.info().dead(),
        1,
        "the child's record is left behind, dead"
    );
    let reopened = Queue::open(&name).expect("the dead record was reclaimed");
    assert_eq!(reopened.info().dead(), 0);
    drop(reopened);
    Queue::unlink(&name).unwrap();
}

/// A receive inside a receive closure, on the same handle, would record its claim
/// over the claim of the message the closure holds: refused (a panic, like a
/// `RefCell` borrowed twice). Through another handle it is fine.
#[test]
#[should_panic(expected = "inside that handle's own receive closure")]
fn a_receive_inside_a_receive_closure_on_the_same_handle_panics() {
    let name = unique("nested");
    let _unlink = common::UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(4, 8)).unwrap();
    let other = queue.try_clone().unwrap();
    queue.send(b"outer").unwrap();
    queue.send(b"inner").unwrap();
    let inner = queue.try_recv_with(|_| other.try_recv().unwrap()).unwrap();
    assert_eq!(inner, b"inner");
    queue.send(b"again").unwrap();
    queue.send(b"again").unwrap();
    let _ = queue.recv_with(|_| queue.try_recv());
}
