//! Hostile and corrupt input: everything read from a segment is untrusted.
//!
//! * Segments of random bytes, valid headers with one field corrupted, truncated
//!   files: `Queue::open` returns an error (thousands of proptest cases), never panics,
//!   never reads out of bounds; each header field has its own error.
//! * Slot lengths scribbled on while consumers read: `TryRecvError::Corrupt` or a
//!   message of at most the maximum size, never a read outside the slot.
//! * Invalid names are refused; a 0600 segment refuses another user.

mod common;
#[path = "common/format.rs"]
mod format;
use common::{unique, ExecutableCopy, Reach, UnlinkOnDrop};
use format::{identity, Geometry, LAYOUT_VERSION, MAGIC, POS_MASK, SLOT_HEADER_SIZE};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shmq::{Error, HeaderProblem, Options, Queue, TryRecvError, TrySendError};

/// Environment variable naming the role of a child process.
const ROLE: &str = "SHMQ_HOSTILE_ROLE";

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/shmq.{name}"))
}

/// Options of the reference segment: small, so proptest cases are cheap.
fn reference_options() -> Options {
    Options::new(8, 64).max_participants(4)
}

/// The bytes of a freshly created, valid segment that nobody is attached to.
fn valid_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let name = unique("image");
        let queue = Queue::create(&name, &reference_options()).expect("create");
        drop(queue);
        let bytes = fs::read(shm_path(&name)).expect("read segment file");
        Queue::unlink(&name).expect("unlink");
        bytes
    })
}

/// Writes `bytes` as segment `name`, opens it, removes the name again.
fn open_image(name: &str, bytes: &[u8]) -> Result<Queue, Error> {
    let path = shm_path(name);
    fs::write(&path, bytes).expect("write segment file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let opened = Queue::open(name);
    let _ = fs::remove_file(&path);
    opened
}

fn put_u64(image: &mut [u8], offset: usize, value: u64) {
    image[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(image: &mut [u8], offset: usize, value: u32) {
    image[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn get_u64(image: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(image[offset..offset + 8].try_into().unwrap())
}

/// A header field: where it is, and whether `open` must refuse any other value.
struct Field {
    name: &'static str,
    offset: usize,
    validated: bool,
}

/// Every 64-bit header field (`version` and `state` share a word: see below).
fn u64_fields() -> Vec<Field> {
    let field = |name, offset, validated| Field {
        name,
        offset,
        validated,
    };
    vec![
        field("magic", identity::MAGIC, true),
        field("capacity", identity::CAPACITY, true),
        field("max_message_size", identity::MAX_MESSAGE_SIZE, true),
        field("slot_stride", identity::SLOT_STRIDE, true),
        field("slots_offset", identity::SLOTS_OFFSET, true),
        field("participants_offset", identity::PARTICIPANTS_OFFSET, true),
        field("max_participants", identity::MAX_PARTICIPANTS, true),
        field("total_size", identity::TOTAL_SIZE, true),
        // Informational, or free within its range: other values may open.
        field("initial_position", identity::INITIAL_POSITION, false),
        field("creator_pid", identity::CREATOR_PID, false),
        field("creation_time_ns", identity::CREATION_TIME_NS, false),
        field("mode", identity::MODE, false),
        field("max_deliveries", identity::MAX_DELIVERIES, false),
        field("kind", identity::KIND, true),
        field("reserved", identity::RESERVED, false),
    ]
}

/// Uses a queue opened on a doubtful segment in every way that cannot spin forever.
fn exercise(queue: &Queue) {
    let info = queue.info();
    assert!(info.participants.len() <= info.max_participants as usize);
    queue.sweep();
    // Whatever the cursors and sequences say, the non-blocking calls return (an
    // error or a bounded message) instead of spinning, and blocking ones time out.
    let max = queue.max_message_size() as usize;
    for _ in 0..4 {
        let _ = queue.try_send(b"probe");
        if let Ok(message) = queue.try_recv() {
            assert!(message.len() <= max);
        }
    }
    let _ = queue.recv_timeout(std::time::Duration::ZERO);
    let _ = queue.send_timeout(b"probe", std::time::Duration::ZERO);
    // Leave no probe behind (bounded: a ring yields at most a lap plus our sends).
    for _ in 0..queue.capacity() + 8 {
        if queue.try_recv().is_err() {
            break;
        }
    }
}

// ---- each header field, one at a time --------------------------------------------

fn corrupt_message(result: Result<Queue, Error>) -> String {
    match result {
        Err(Error::Corrupt { problem, .. }) => problem.to_string(),
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn each_corrupted_header_field_is_refused_with_its_own_error() {
    let name = unique("fields");
    let image = valid_image();
    let original = |offset| get_u64(image, offset);
    let with_u64 = |offset: usize, value: u64| {
        let mut bytes = image.to_vec();
        put_u64(&mut bytes, offset, value);
        open_image(&name, &bytes)
    };
    let cases: &[(&str, usize, u64, &str)] = &[
        ("magic", identity::MAGIC, 0x0123_4567_89ab_cdef, "magic"),
        ("magic", identity::MAGIC, 0, "magic"),
        ("capacity", identity::CAPACITY, 3, "capacity 3"),
        ("capacity", identity::CAPACITY, 0, "capacity 0"),
        ("capacity", identity::CAPACITY, 1 << 40, "capacity"),
        ("capacity", identity::CAPACITY, 16, "total_size"),
        (
            "max_message_size",
            identity::MAX_MESSAGE_SIZE,
            0,
            "maximum message size 0",
        ),
        (
            "max_message_size",
            identity::MAX_MESSAGE_SIZE,
            1000,
            "slot_stride",
        ),
        (
            "max_message_size",
            identity::MAX_MESSAGE_SIZE,
            u64::MAX,
            "maximum message size",
        ),
        (
            "slot_stride",
            identity::SLOT_STRIDE,
            original(identity::SLOT_STRIDE) + 64,
            "slot_stride",
        ),
        ("slot_stride", identity::SLOT_STRIDE, 0, "slot_stride"),
        (
            "slots_offset",
            identity::SLOTS_OFFSET,
            original(identity::SLOTS_OFFSET) - 128,
            "slots_offset",
        ),
        (
            "participants_offset",
            identity::PARTICIPANTS_OFFSET,
            0,
            "participants_offset",
        ),
        (
            "max_participants",
            identity::MAX_PARTICIPANTS,
            0,
            "participant count 0",
        ),
        (
            "max_participants",
            identity::MAX_PARTICIPANTS,
            5,
            "slots_offset",
        ),
        (
            "max_participants",
            identity::MAX_PARTICIPANTS,
            u64::MAX,
            "participant count",
        ),
        (
            "total_size",
            identity::TOTAL_SIZE,
            original(identity::TOTAL_SIZE) + 1,
            "total_size",
        ),
        ("total_size", identity::TOTAL_SIZE, u64::MAX, "total_size"),
        (
            "initial_position",
            identity::INITIAL_POSITION,
            1 << 63,
            "initial position",
        ),
    ];
    for &(field, offset, value, expected) in cases {
        let problem = corrupt_message(with_u64(offset, value));
        assert!(
            problem.contains(expected),
            "{field} = {value:#x}: problem `{problem}` does not mention `{expected}`"
        );
    }
    // Another layout version has its own error, naming both versions.
    let mut bytes = image.to_vec();
    put_u32(&mut bytes, identity::VERSION, LAYOUT_VERSION + 1);
    match open_image(&name, &bytes) {
        Err(Error::IncompatibleVersion {
            found, expected, ..
        }) => assert_eq!((found, expected), (LAYOUT_VERSION + 1, LAYOUT_VERSION)),
        other => panic!("expected IncompatibleVersion, got {other:?}"),
    }
    // One byte short of what the header promises.
    let problem = corrupt_message(open_image(&name, &image[..image.len() - 1]));
    assert!(problem.contains("the header needs"), "{problem}");
    // Longer than needed is fine, and so are the informational fields.
    let mut longer = image.to_vec();
    longer.resize(image.len() + 4096, 0xA5);
    exercise(&open_image(&name, &longer).expect("a longer file opens"));
    let queue = with_u64(identity::CREATOR_PID, 1).expect("informational field");
    queue.try_send(b"fine").expect("send");
    assert_eq!(queue.try_recv().expect("recv"), b"fine");
}

#[test]
fn unfinished_and_short_segments_are_not_ready_or_corrupt() {
    // These wait READY_WAIT (1 s) for a creator that might still be writing, so
    // they run side by side.
    let image = valid_image();
    let state = identity::STATE;
    let mut state_zero = image.to_vec();
    put_u32(&mut state_zero, state, 0);
    let mut state_garbage = image.to_vec();
    put_u32(&mut state_garbage, state, 0xdead_beef);
    type Expected = fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
        ("state 0", state_zero, |e| {
            matches!(e, Error::NotReady { .. })
        }),
        ("state garbage", state_garbage, |e| {
            matches!(e, Error::NotReady { .. })
        }),
        ("zero-filled", vec![0; image.len()], |e| {
            matches!(e, Error::NotReady { .. })
        }),
        ("empty file", Vec::new(), |e| {
            matches!(e, Error::NotReady { .. })
        }),
        ("shorter than a header", image[..64].to_vec(), |e| {
            matches!(
                e,
                Error::Corrupt {
                    problem: HeaderProblem::FileTooShort { .. },
                    ..
                }
            )
        }),
    ];
    thread::scope(|scope| {
        for (index, (label, bytes, expected)) in cases.into_iter().enumerate() {
            scope.spawn(move || {
                let name = unique(&format!("unready{index}"));
                let started = Instant::now();
                match open_image(&name, &bytes) {
                    Err(e) if expected(&e) => {}
                    other => panic!("{label}: unexpected {other:?}"),
                }
                assert!(started.elapsed() < Duration::from_secs(5), "{label}: hung");
            });
        }
    });
}

// ---- randomized ------------------------------------------------------------------

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(2000))]

    /// Arbitrary bytes (at least a header long, so no case waits for a creator).
    #[test]
    fn random_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 128..4096)) {
        let magic = get_u64(&bytes, 0);
        prop_assume!(magic != 0 && magic != MAGIC);
        let name = unique("random");
        prop_assert!(open_image(&name, &bytes).is_err());
    }

    /// Arbitrary geometry words and body behind a valid magic, version and state.
    #[test]
    fn random_geometry_behind_a_valid_magic_never_opens(
        words in proptest::collection::vec(any::<u64>(), 7),
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = valid_image()[..128].to_vec();
        bytes.extend_from_slice(&body);
        // capacity, max_message_size, slot_stride, slots_offset, participants_offset,
        // max_participants, total_size: seven consecutive words.
        for (k, &word) in words.iter().enumerate() {
            put_u64(&mut bytes, identity::CAPACITY + 8 * k, word);
        }
        let name = unique("magic");
        let refused = matches!(open_image(&name, &bytes), Err(Error::Corrupt { .. }));
        prop_assert!(refused);
    }

    /// A valid segment with one header word replaced.
    #[test]
    fn one_corrupted_header_field_is_refused(
        field in 0..u64_fields().len(),
        choice in 0..6u8,
        random in any::<u64>(),
    ) {
        let fields = u64_fields();
        let field = &fields[field];
        let original = get_u64(valid_image(), field.offset);
        let value = match choice {
            0 => random,
            1 => original.wrapping_add(1 + random % 8),
            2 => original.wrapping_sub(1 + random % 8),
            3 => original ^ (1 << (random % 64)),
            4 => random % 4096,
            _ => random | (1 << 63),
        };
        let mut bytes = valid_image().to_vec();
        put_u64(&mut bytes, field.offset, value);
        let name = unique("field");
        match open_image(&name, &bytes) {
            Ok(queue) => {
                // A larger maximum that still fits the slot's padding implies the
                // very same layout, so it is accepted (and stays in bounds).
                let fits_the_slot = field.name == "max_message_size"
                    && (1..=reference_geometry().slot_stride - SLOT_HEADER_SIZE).contains(&value);
                prop_assert!(
                    !field.validated || value == original || fits_the_slot,
                    "{} = {:#x} was accepted", field.name, value
                );
                prop_assert_eq!(queue.max_message_size(), get_u64(&bytes, identity::MAX_MESSAGE_SIZE));
                // initial_position is free only within 63 bits.
                prop_assert!(field.name != "initial_position" || value <= POS_MASK);
                exercise(&queue);
                queue.try_send(b"still a queue").expect("send");
                prop_assert_eq!(queue.try_recv().expect("recv"), b"still a queue");
            }
            Err(Error::Corrupt { .. }) => prop_assert!(field.validated || field.name == "initial_position"),
            // A kind word naming a broadcast segment: refused by `Queue`, by name.
            Err(Error::WrongKind { .. }) => prop_assert!(field.name == "kind" && (1..=2).contains(&value)),
            Err(other) => prop_assert!(false, "{} = {:#x}: unexpected {:?}", field.name, value, other),
        }
    }

    /// The version word: any other value is an incompatible layout.
    #[test]
    fn any_other_version_is_incompatible(version in any::<u32>()) {
        prop_assume!(version != LAYOUT_VERSION);
        let mut bytes = valid_image().to_vec();
        put_u32(&mut bytes, identity::VERSION, version);
        let name = unique("version");
        let incompatible = matches!(
            open_image(&name, &bytes),
            Err(Error::IncompatibleVersion { found, .. }) if found == version
        );
        prop_assert!(incompatible);
    }

    /// Any truncation between a header and the full size.
    #[test]
    fn truncated_segments_are_corrupt(len in 128..valid_image().len()) {
        let name = unique("truncated");
        let truncated = matches!(
            open_image(&name, &valid_image()[..len]),
            Err(Error::Corrupt { .. })
        );
        prop_assert!(truncated);
    }

    /// A valid header over random cursors, participant records and slots: opening
    /// (which sweeps the participant table) and inspecting stay in bounds.
    #[test]
    fn random_body_behind_a_valid_header_is_handled_in_bounds(
        body in proptest::collection::vec(any::<u8>(), valid_image().len() - 128),
        active in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let mut bytes = valid_image()[..128].to_vec();
        bytes.extend_from_slice(&body);
        // Mark some participant records active, with random claims, as a dead
        // participant's would look.
        let geometry = reference_geometry();
        for (index, &on) in active.iter().enumerate() {
            if on {
                put_u64(&mut bytes, (geometry.participants_offset + index as u64 * 128) as usize, 1);
            }
        }
        let name = unique("body");
        match open_image(&name, &bytes) {
            Ok(queue) => exercise(&queue),
            Err(Error::ParticipantTableFull { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

fn reference_geometry() -> Geometry {
    let options = reference_options();
    format::geometry(
        options.capacity,
        options.max_message_size,
        options.max_participants,
    )
}

// ---- scribbling on slot lengths ----------------------------------------------------

/// A second, independent shared mapping of a segment file: what a foreign process
/// writing over the segment would have.
struct ForeignMapping {
    base: *mut u8,
    len: usize,
}

impl ForeignMapping {
    fn new(name: &str, len: usize) -> Self {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm_path(name))
            .expect("open segment file");
        // SAFETY: a fresh shared mapping chosen by the kernel of a file we opened;
        // checked for MAP_FAILED below. The file descriptor may close afterwards.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        Self {
            base: base.cast(),
            len,
        }
    }

    /// The 32-bit word at `offset`, accessed atomically (the queue accesses slot
    /// lengths atomically too, so this races without undefined behaviour).
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: in bounds and 4-aligned (checked above; the mapping is page
        // aligned); the mapping lives as long as `self`; all access is atomic.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned; no reference into it outlives
        // `self` (`word` borrows `self`).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[test]
fn scribbled_slot_lengths_give_corrupt_errors_never_out_of_bounds_reads() {
    const MAX: u64 = 256;
    let name = unique("scribble");
    let options = Options::new(16, MAX);
    let queue = Queue::create(&name, &options).expect("create");
    let geometry = format::geometry(16, MAX, options.max_participants);
    let foreign = ForeignMapping::new(&name, geometry.total_size as usize);
    let stop = AtomicBool::new(false);
    let corrupt_seen = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let handles: Vec<Queue> = (0..4).map(|_| queue.try_clone().expect("clone")).collect();
    thread::scope(|scope| {
        let mut handles = handles.into_iter();
        for producer in 0..2u8 {
            let handle = handles.next().unwrap();
            let stop = &stop;
            scope.spawn(move || {
                let mut len = 0;
                while !stop.load(Ordering::Relaxed) {
                    len = len % MAX as usize + 1;
                    match handle.try_send(&vec![producer; len]) {
                        Ok(()) | Err(TrySendError::Full) => {}
                        Err(e) => panic!("send: {e}"),
                    }
                }
            });
        }
        for _ in 0..2 {
            let handle = handles.next().unwrap();
            let (stop, corrupt_seen, received) = (&stop, &corrupt_seen, &received);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match handle.try_recv_with(|bytes| bytes.len()) {
                        Ok(len) => {
                            assert!(
                                len as u64 <= MAX,
                                "a {len}-byte message from a {MAX}-byte slot"
                            );
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TryRecvError::Corrupt { len, max, .. }) => {
                            assert!(u64::from(len) > max);
                            corrupt_seen.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TryRecvError::Empty) => thread::yield_now(),
                        Err(e) => panic!("recv: {e}"),
                    }
                }
            });
        }
        // The scribbler: random lengths into random slots' length fields.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let slot = state % geometry.capacity;
            let value = match (state >> 8) % 4 {
                0 => (state >> 32) as u32,
                1 => MAX as u32 + 1 + (state >> 40) as u32 % 1000,
                2 => (state >> 40) as u32 % (MAX as u32 + 1),
                _ => u32::MAX,
            };
            let offset = geometry.slots_offset + slot * geometry.slot_stride + 8;
            foreign
                .word(offset as usize)
                .store(value, Ordering::Relaxed);
            thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Drain what the scribbler left, then the queue must work as before.
    while !matches!(queue.try_recv_with(|_| ()), Err(TryRecvError::Empty)) {}
    queue
        .try_send(b"still serving")
        .expect("send after scribbling");
    assert_eq!(queue.try_recv().expect("recv"), b"still serving");
    let corrupt = corrupt_seen.load(Ordering::Relaxed);
    let stats = queue.info().recovery.corrupt;
    println!(
        "scribbler: {} messages received, {corrupt} rejected as corrupt (segment counted {stats})",
        received.load(Ordering::Relaxed)
    );
    assert!(corrupt > 0, "the scribbler never hit a message in flight");
    assert!(stats >= corrupt);
    drop(foreign);
    Queue::unlink(&name).expect("unlink");
}

// ---- names and permissions -----------------------------------------------------------

#[test]
fn invalid_names_are_refused_everywhere() {
    let long = "x".repeat(300);
    for name in [
        "",
        "a/b",
        "/",
        long.as_str(),
        "with space",
        "tab\there",
        "new\nline",
        "nul\0",
    ] {
        let refused = |result: Result<(), Error>| {
            assert!(
                matches!(result, Err(Error::InvalidName { .. })),
                "{name:?}: {result:?}"
            );
        };
        refused(Queue::create(name, &Options::new(2, 8)).map(drop));
        refused(Queue::open(name).map(drop));
        refused(Queue::open_or_create(name, &Options::new(2, 8)).map(drop));
        refused(Queue::inspect(name).map(drop));
        refused(Queue::unlink(name));
        refused(Queue::remove_if_unused(name).map(drop));
    }
    // The longest accepted name works end to end; one byte more does not. (A
    // segment with a delivery limit needs room for `.dead` after its name: see
    // tests/poison.rs.)
    let longest = format!("{}-{}", "n".repeat(190), std::process::id());
    let longest = format!("{}{}", longest, "n".repeat(200 - longest.len()));
    let no_dead_letters = Options::new(2, 8).max_deliveries(0);
    Queue::create(&longest, &no_dead_letters).expect("a 200-byte name");
    Queue::unlink(&longest).expect("unlink");
    assert!(matches!(
        Queue::create(&format!("{longest}n"), &no_dead_letters),
        Err(Error::InvalidName { .. })
    ));
}

/// Entry point of child processes; a no-op in a normal test run.
#[test]
#[ignore = "entry point of child processes: the tests that spawn them run it with --ignored"]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "open-as-nobody");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    println!("euid {euid}");
    let describe = |outcome: Result<Queue, Error>| match outcome {
        Ok(_) => "Ok".to_owned(),
        Err(Error::PermissionDenied { .. }) => "PermissionDenied".to_owned(),
        Err(Error::Untrusted { problem, .. }) => format!("Untrusted({problem:?})"),
        Err(other) => format!("{other:?}"),
    };
    // Trusting the creator (root) and its world-writable mode explicitly.
    let trusting = shmq::Access::new().trust_owner(0).allow_world_writable();
    for name in std::env::var("SHMQ_QUEUES").expect("names").split(',') {
        println!("open {name}: {}", describe(Queue::open(name)));
        println!(
            "open trusting root {name}: {}",
            describe(Queue::open_with(name, &trusting))
        );
    }
}

#[test]
fn another_user_is_refused_a_private_segment() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: dropping to uid 65534 needs root");
        return;
    }
    let private = unique("private");
    let shared = unique("shared");
    let _unlink = (UnlinkOnDrop(&private), UnlinkOnDrop(&shared));
    let _private = Queue::create(&private, &Options::new(2, 8)).expect("create");
    let _shared = Queue::create(&shared, &Options::new(2, 8).mode(0o666)).expect("create");
    let mode = |name: &str| {
        fs::metadata(shm_path(name))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&private), 0o600, "segments are private by default");
    assert_eq!(mode(&shared), 0o666);
    // The child drops to nobody (std calls setgroups, setgid, then setuid between
    // fork and exec) and reports what Queue::open said. It runs a copy of this binary
    // that nobody can reach: the checkout may sit in a directory only root can enter.
    let copy = ExecutableCopy::new(Reach::AnyUser).expect("copy the test binary for uid 65534");
    let output = common::output_when_not_busy(
        copy.child_command("child_process", true, ROLE, "open-as-nobody")
            .env("SHMQ_QUEUES", format!("{private},{shared}"))
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null()),
    )
    .expect("run the child as uid 65534");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("euid 65534"), "{stdout}");
    assert!(
        stdout.contains(&format!("open {private}: PermissionDenied")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("open trusting root {private}: PermissionDenied")),
        "{stdout}"
    );
    // Another user's segment is not trusted by default, even when its mode lets us
    // in: only when its owner (and mode) are trusted explicitly.
    assert!(
        stdout.contains(&format!(
            "open {shared}: Untrusted(Owner {{ uid: 0, gid: 0, mode: 438, euid: 65534 }})"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("open trusting root {shared}: Ok")),
        "{stdout}"
    );
}

#[test]
fn another_user_test_passes_when_this_binary_sits_where_only_root_can_enter() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: dropping to uid 65534 needs root");
        return;
    }
    // A checkout cloned by root into a 0700 directory: its test binaries are out of
    // uid 65534's reach. Run the other-user test from such a place.
    let private = ExecutableCopy::new(Reach::OwnerOnly).expect("copy the test binary");
    let output = common::output_when_not_busy(
        std::process::Command::new(private.path())
            .args(["--exact", "another_user_is_refused_a_private_segment"])
            .args(["--nocapture", "--test-threads=1"])
            .stdin(Stdio::null()),
    )
    .expect("run the copy in a 0700 directory");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Slot payloads start right after the header; keep the scribbler's offset honest.
#[test]
fn slot_length_field_is_where_the_scribbler_writes() {
    assert_eq!(SLOT_HEADER_SIZE, 16);
    assert_eq!(format::SLOT_LEN_OFFSET, 8);
    assert_eq!(get_u64(valid_image(), identity::MAGIC), MAGIC);
}

/// The format written down in `common/format.rs` is the one the library writes:
/// every stored geometry field of a real segment where the format says it is.
#[test]
fn format_matches_a_real_segment() {
    let image = valid_image();
    let options = reference_options();
    let geometry = reference_geometry();
    let u32_at = |offset: usize| u32::from_le_bytes(image[offset..offset + 4].try_into().unwrap());
    assert_eq!(u32_at(identity::VERSION), LAYOUT_VERSION);
    assert_eq!(get_u64(image, identity::CAPACITY), options.capacity);
    assert_eq!(
        get_u64(image, identity::MAX_MESSAGE_SIZE),
        options.max_message_size
    );
    assert_eq!(
        get_u64(image, identity::MAX_PARTICIPANTS),
        options.max_participants
    );
    assert_eq!(get_u64(image, identity::SLOT_STRIDE), geometry.slot_stride);
    assert_eq!(
        get_u64(image, identity::SLOTS_OFFSET),
        geometry.slots_offset
    );
    assert_eq!(
        get_u64(image, identity::PARTICIPANTS_OFFSET),
        geometry.participants_offset
    );
    assert_eq!(get_u64(image, identity::TOTAL_SIZE), geometry.total_size);
    assert_eq!(image.len() as u64, geometry.total_size);
    assert_eq!(get_u64(image, identity::MODE), 0o600);
}
