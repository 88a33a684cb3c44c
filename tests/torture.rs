//! Crash torture and recovery timing, with real processes and real `kill -9`.
//!
//! Every child process is this test binary run again with `SHMQ_TORTURE_ROLE` set
//! (see [`child_process`]); every test reaps its children, even when it fails.
//!
//! * [`torture_random_sigkills_lose_no_acknowledged_message`]: producer and consumer
//!   processes stream tagged messages while a killer SIGKILLs a random one at random
//!   instants and restarts it; every other kill is aimed at a participant seen
//!   holding a claim (a producer copying one of the occasional 1 MiB messages, a
//!   consumer inside its receive closure). Rings of 8 and 64 slots, so full and empty
//!   races are constant. Producers record which sends returned `Ok`, consumers
//!   record (inside the receive closure, before the slot is released) what they got.
//!   Checked at the end: every acknowledged message received; duplicates no more than
//!   consumer kills (and no more than the segment's redelivery count); each
//!   consumer got each producer's messages in order, except at most one per
//!   redelivery; nothing received that was never sent; the stream never stalled
//!   beyond [`STALL_BOUND`].
//!   Short by default (CI); `SHMQ_TORTURE_SECS=600` runs the 10-minute version:
//!
//!   ```text
//!   SHMQ_TORTURE_SECS=600 cargo test --release --test torture -- --nocapture torture_random
//!   ```
//! * Recovery timing: a consumer killed holding a message, a producer killed between
//!   claim and publish; the time until a live consumer gets past the hole. The same
//!   participants merely SIGSTOPped must *not* be recovered.
//! * Stale segments: `Queue::list` shows dead participants, `remove_if_unused`
//!   removes a segment only once nobody alive uses it.

mod common;
use common::unique;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shmq::{
    Error, Options, ParticipantInfo, Queue, RecvError, Removal, TryRecvError, TrySendError,
};

/// Environment variable naming the role of a child process.
const ROLE: &str = "SHMQ_TORTURE_ROLE";
/// Longest tolerated gap between two receipts while producers stream (a death must
/// be repaired well within it; generous because CI machines are shared and slow).
const STALL_BOUND: Duration = Duration::from_millis(1500);
/// Longest tolerated time from a SIGKILL to a live consumer getting past the hole.
const RECOVERY_BOUND: Duration = Duration::from_secs(1);
/// Largest small torture message: 8-byte tag + up to 56 filler bytes.
const SMALL_MESSAGE: usize = 64;
/// Largest torture message (one in 32 is about this large).
const MAX_MESSAGE: usize = 1 << 20;
/// What a consumer logs for a message whose bytes do not decode.
const BAD_TAG: u64 = u64::MAX;
/// One consumer log record: tag (u64 LE) + receipt time in µs (u64 LE).
const RECORD: usize = 16;
/// About one message in this many is poison: every consumer that receives it
/// aborts (after logging it).
const POISON_ONE_IN: u64 = 2_000;
/// The torture segment's delivery limit: a poison message goes to the dead-letter
/// segment after this many deliveries.
const MAX_DELIVERIES: u32 = 3;

// ---- small helpers -----------------------------------------------------------------

/// SplitMix64: a tiny deterministic generator, enough for choosing victims and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// CLOCK_MONOTONIC in microseconds: one clock for every process on the host.
fn monotonic_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child process needs {key}"))
}

fn env_u64(key: &str) -> u64 {
    env(key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number"))
}

/// Starts this test binary again in `role`, with `vars` in its environment.
fn spawn_role(role: &str, vars: &[(&str, String)]) -> Child {
    let mut command = common::child_command("child_process", true, ROLE, role);
    command.stdin(Stdio::null()).stdout(Stdio::null());
    for (key, value) in vars {
        command.env(key, value);
    }
    command.spawn().expect("starting a child process")
}

/// Has `consumer` wait in `recv` (up to 10 s), SIGKILLs `child` 100 ms later, and
/// returns the handle, what it received, and the time from the kill to receipt.
fn receive_after_killing(
    consumer: Queue,
    child: &mut Child,
) -> (Queue, Result<Vec<u8>, shmq::RecvError>, Duration) {
    let waiter = thread::spawn(move || {
        let message = consumer.recv_timeout(Duration::from_secs(10));
        (consumer, message, Instant::now())
    });
    thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    kill_and_reap(child);
    let (consumer, message, received) = waiter.join().expect("waiter thread");
    (consumer, message, received - killed)
}

/// Sends `signal` to a child we have not reaped (so its pid cannot have been reused).
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped
    // child, so it names that process and no other.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
}

/// Waits until /proc says `child` is stopped (state `T`).
fn wait_stopped(child: &Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim().chars().next());
        if state == Some('T') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "child {} never stopped",
            child.id()
        );
        thread::sleep(Duration::from_micros(200));
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills and reaps every child still held when dropped (also when a test panics).
#[derive(Default)]
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            kill_and_reap(child);
        }
    }
}

/// Removes the named segment when dropped.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = Queue::unlink(&self.0);
    }
}

fn participant(queue: &Queue, pid: u32) -> Option<ParticipantInfo> {
    queue
        .info()
        .participants
        .into_iter()
        .find(|p| p.pid == u64::from(pid))
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

// ---- messages ----------------------------------------------------------------------

/// Tag of message `seq` of incarnation `incarnation` of producer `producer`.
fn tag(producer: u64, incarnation: u64, seq: u64) -> u64 {
    debug_assert!(producer < 256 && incarnation < 1 << 24 && seq < 1 << 32);
    (producer << 56) | (incarnation << 32) | seq
}

fn untag(tag: u64) -> (u64, u64, u64) {
    (tag >> 56, (tag >> 32) & 0xFF_FFFF, tag & 0xFFFF_FFFF)
}

/// Length of the message for `tag`: mostly 8..=64 bytes; one in 32 is about 1 MiB,
/// so a producer spends a noticeable time between claim and publish (the window a
/// kill must hit to leave a hole).
fn message_len(tag: u64) -> usize {
    let hash = mix(tag);
    if hash % 32 == 0 {
        MAX_MESSAGE - (hash >> 8) as usize % 4096
    } else {
        8 + (hash >> 8) as usize % (SMALL_MESSAGE - 7)
    }
}

/// Whether every consumer that receives `tag` aborts.
fn is_poison(tag: u64) -> bool {
    mix(tag.rotate_left(17)) % POISON_ONE_IN == 0
}

/// Filler byte `i` of a large message (fixed, so producers need not rewrite 1 MiB).
fn large_filler(i: usize) -> u8 {
    (i % 251) as u8
}

/// Filler byte `i` of a small message (derived from its tag).
fn small_filler(tag: u64, i: usize) -> u8 {
    (mix(tag) >> (i % 8 * 8)) as u8 ^ i as u8
}

/// A producer's message buffer.
struct Encoder {
    small: Vec<u8>,
    large: Vec<u8>,
}

impl Encoder {
    fn new() -> Self {
        Self {
            small: Vec::with_capacity(SMALL_MESSAGE),
            large: (0..MAX_MESSAGE).map(large_filler).collect(),
        }
    }

    /// The message for `tag`: the tag, then filler up to `message_len(tag)`.
    fn encode(&mut self, tag: u64) -> &[u8] {
        let len = message_len(tag);
        if len > SMALL_MESSAGE {
            self.large[..8].copy_from_slice(&tag.to_le_bytes());
            &self.large[..len]
        } else {
            self.small.clear();
            self.small.extend_from_slice(&tag.to_le_bytes());
            self.small.extend((8..len).map(|i| small_filler(tag, i)));
            &self.small
        }
    }
}

/// The tag of a well-formed message (large ones are checked at sampled bytes).
fn decode(bytes: &[u8]) -> Option<u64> {
    let tag = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    if bytes.len() != message_len(tag) {
        return None;
    }
    let intact = if bytes.len() > SMALL_MESSAGE {
        (8..bytes.len())
            .step_by(4093)
            .chain([bytes.len() - 1])
            .all(|i| bytes[i] == large_filler(i))
    } else {
        (8..bytes.len()).all(|i| bytes[i] == small_filler(tag, i))
    };
    intact.then_some(tag)
}

// ---- child roles ---------------------------------------------------------------------

/// Entry point of every child process; a no-op in a normal test run.
#[test]
#[ignore = "entry point of child processes: the tests that spawn them run it with --ignored"]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "producer" => torture_producer(),
        "consumer" => torture_consumer(),
        "hold" => hold_a_message_forever(),
        "slow-sender" => send_large_messages_forever(),
        "attach" => attach_and_wait(),
        other => panic!("unknown role {other}"),
    }
}

fn open_queue() -> Queue {
    let name = env("SHMQ_QUEUE");
    Queue::open(&name).unwrap_or_else(|e| panic!("opening {name}: {e}"))
}

/// Sends tagged messages in bursts until the stop file appears; after each `Ok`,
/// records the number acknowledged so far at offset 0 of its own ack file.
fn torture_producer() {
    let queue = open_queue();
    let dir = PathBuf::from(env("SHMQ_DIR"));
    let (id, incarnation) = (env_u64("SHMQ_ID"), env_u64("SHMQ_INCARNATION"));
    let mut rng = Rng(env_u64("SHMQ_SEED"));
    let acks = File::create(dir.join(format!("ack-{id}-{incarnation}"))).expect("ack file");
    let stop = dir.join("stop");
    let mut encoder = Encoder::new();
    let mut seq = 0;
    while !stop.exists() {
        let burst = 1 + rng.below(200);
        for _ in 0..burst {
            let message = encoder.encode(tag(id, incarnation, seq));
            if rng.below(2) == 0 {
                queue.send(message).expect("blocking send");
            } else {
                // Non-blocking, polling: exercises the Full path.
                loop {
                    match queue.try_send(message) {
                        Ok(()) => break,
                        Err(TrySendError::Full) => thread::yield_now(),
                        Err(e) => panic!("try_send: {e}"),
                    }
                }
            }
            seq += 1;
            // Written only after `Ok`: a kill in between leaves the message received
            // but not acknowledged, which the checker allows.
            acks.write_at(&seq.to_le_bytes(), 0).expect("ack write");
        }
        // About 10k messages/s per producer at most, in bursts (full/empty races).
        thread::sleep(Duration::from_micros(100 * burst));
    }
}

/// Receives until the drain file exists and the queue stayed empty for a while;
/// logs every message inside the receive closure, before its slot is released, and
/// aborts on a poison message (after logging it).
fn torture_consumer() {
    // No core files for the expected aborts.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit value for the calling process.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let queue = open_queue();
    let dir = PathBuf::from(env("SHMQ_DIR"));
    let (id, incarnation) = (env_u64("SHMQ_ID"), env_u64("SHMQ_INCARNATION"));
    let mut rng = Rng(env_u64("SHMQ_SEED"));
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("recv-{id}-{incarnation}")))
        .expect("receive log");
    let drain = dir.join("drain");
    let mut idle_since = Instant::now();
    loop {
        let hold = rng.below(50) == 0;
        let mut receive = |bytes: &[u8]| {
            let tag = decode(bytes).unwrap_or(BAD_TAG);
            let mut record = [0u8; RECORD];
            record[..8].copy_from_slice(&tag.to_le_bytes());
            record[8..].copy_from_slice(&monotonic_micros().to_le_bytes());
            // One write(2) of 16 bytes to an O_APPEND file: on disk before release.
            log.write_all(&record).expect("receive log write");
            if is_poison(tag) {
                std::process::abort();
            }
            if hold {
                // Slow processing: widens the window for a kill holding a message.
                thread::sleep(Duration::from_millis(1));
            }
            tag
        };
        let outcome = if rng.below(8) == 0 {
            queue.try_recv_with(&mut receive).map_err(|e| match e {
                TryRecvError::Empty => RecvError::Timeout,
                e => panic!("try_recv: {e}"),
            })
        } else {
            queue.recv_with_deadline(Instant::now() + Duration::from_millis(100), &mut receive)
        };
        match outcome {
            Ok(tag) => {
                assert_ne!(tag, BAD_TAG, "consumer {id} received a malformed message");
                idle_since = Instant::now();
                if rng.below(1000) == 0 {
                    // A slow consumer lets the ring fill up.
                    thread::sleep(Duration::from_millis(2));
                }
            }
            Err(RecvError::Timeout) => {
                if drain.exists() && idle_since.elapsed() > Duration::from_millis(600) {
                    return;
                }
                thread::yield_now();
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Claims one message and never releases it (until killed).
fn hold_a_message_forever() {
    let queue = open_queue();
    loop {
        // Sleeps (holding the claim) far longer than any test runs.
        match queue.try_recv_with(|_| thread::sleep(Duration::from_secs(1 << 30))) {
            Err(TryRecvError::Empty) => thread::sleep(Duration::from_micros(100)),
            Ok(()) => unreachable!("the hold never ends"),
            Err(e) => panic!("hold: {e}"),
        }
    }
}

/// Sends maximum-size messages forever: a long payload copy between claim and
/// publish, so a parent can catch it mid-claim.
fn send_large_messages_forever() {
    let queue = open_queue();
    let message = large_message(queue.max_message_size() as usize);
    loop {
        queue.send(&message).expect("send");
    }
}

fn large_message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn attach_and_wait() {
    let _queue = open_queue();
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

// ---- the torture run -----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Producer,
    Consumer,
}

struct Worker {
    kind: Kind,
    id: u64,
    incarnation: u64,
    child: Option<Child>,
}

/// A torture round's processes; kills and reaps them all when dropped.
struct Crew {
    queue: String,
    dir: PathBuf,
    seed: u64,
    workers: Vec<Worker>,
    /// Incarnations started, per producer id.
    producer_incarnations: Vec<u64>,
    /// Consumers that aborted on a poison message (and were restarted).
    poison_aborts: u64,
    /// Tags taken out of the dead-letter segment so far (as an operator would:
    /// it holds only as many as the queue).
    dead_letters: Vec<u64>,
}

impl Crew {
    fn start(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.incarnation += 1;
        let role = match worker.kind {
            Kind::Producer => {
                self.producer_incarnations[worker.id as usize] = worker.incarnation;
                "producer"
            }
            Kind::Consumer => "consumer",
        };
        let seed = mix(self.seed ^ ((index as u64) << 40) ^ worker.incarnation);
        worker.child = Some(spawn_role(
            role,
            &[
                ("SHMQ_QUEUE", self.queue.clone()),
                ("SHMQ_DIR", self.dir.display().to_string()),
                ("SHMQ_ID", worker.id.to_string()),
                ("SHMQ_INCARNATION", worker.incarnation.to_string()),
                ("SHMQ_SEED", seed.to_string()),
            ],
        ));
    }

    /// Watches the segment for up to `within` for a worker of `kind` holding a claim
    /// (a producer between claim and publish, a consumer between claim and release).
    fn find_mid_claim(&self, queue: &Queue, kind: Kind, within: Duration) -> Option<usize> {
        let pids: HashMap<u64, usize> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.kind == kind)
            .filter_map(|(i, w)| Some((u64::from(w.child.as_ref()?.id()), i)))
            .collect();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let found = queue.info().participants.into_iter().find(|p| {
                p.alive
                    && pids.contains_key(&p.pid)
                    && match kind {
                        Kind::Producer => p.enqueue_stuck,
                        Kind::Consumer => p.dequeue_stuck,
                    }
            });
            if let Some(p) = found {
                return Some(pids[&p.pid]);
            }
        }
        None
    }

    /// Restarts every consumer that aborted on a poison message; fails the test if
    /// a worker exited by itself in any other way (a panic in a child), or, unless
    /// `draining`, exited at all.
    fn check_none_exited(&mut self, draining: bool) {
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            let Some(child) = &mut worker.child else {
                continue;
            };
            let Some(status) = child.try_wait().expect("try_wait") else {
                continue;
            };
            if worker.kind == Kind::Consumer && status.signal() == Some(libc::SIGABRT) {
                self.poison_aborts += 1;
                self.start(index);
                continue;
            }
            assert!(
                draining && status.success(),
                "{:?} {} (incarnation {}) exited by itself: {status}",
                worker.kind,
                worker.id,
                worker.incarnation
            );
        }
    }

    /// Sleeps for `duration`, restarting consumers that abort on poison and
    /// draining dead letters meanwhile (every 5 ms: a pool left without consumers,
    /// or a full dead-letter segment, would stall the stream).
    fn sleep(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            thread::sleep(left.min(Duration::from_millis(5)));
            self.check_none_exited(false);
            self.drain_dead_letters();
        }
    }

    /// Takes every message out of the dead-letter segment, if it exists yet.
    fn drain_dead_letters(&mut self) {
        let Ok(dead) = Queue::open(&format!("{}.dead", self.queue)) else {
            return;
        };
        while let Ok(bytes) = dead.try_recv() {
            self.dead_letters.push(decode(&bytes).unwrap_or(BAD_TAG));
        }
    }

    /// Waits for every worker of `kind` to exit cleanly (restarting consumers that
    /// abort on poison meanwhile).
    fn wait_exit(&mut self, kind: Kind, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.check_none_exited(true);
            self.drain_dead_letters();
            let running: Vec<u64> = self
                .workers
                .iter_mut()
                .filter(|w| w.kind == kind)
                .filter_map(|w| {
                    let exited = w.child.as_mut()?.try_wait().expect("try_wait");
                    match exited {
                        Some(status) if status.success() => {
                            w.child = None;
                            None
                        }
                        _ => Some(w.id),
                    }
                })
                .collect();
            if running.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} {running:?} did not finish within {within:?}: the queue is wedged"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(child) = &mut worker.child {
                kill_and_reap(child);
            }
        }
    }
}

/// What one torture round observed.
#[derive(Debug, Default)]
struct Report {
    seconds: f64,
    kills_producer: u64,
    kills_consumer: u64,
    /// Kills aimed at a producer seen between claim and publish.
    sniped_producer: u64,
    /// Kills aimed at a consumer seen between claim and release.
    sniped_consumer: u64,
    acknowledged: u64,
    received: u64,
    in_flight_received: u64,
    duplicates: u64,
    /// Receipts below the highest seq that consumer had seen from that producer
    /// incarnation: allowed only for redelivered messages.
    out_of_order: u64,
    redelivered: u64,
    skipped: u64,
    /// Consumers that aborted on a poison message.
    poison_aborts: u64,
    /// Poison messages received (first deliveries).
    poison: u64,
    /// Messages in the dead-letter segment at the end.
    dead_lettered: u64,
    worst_stall: Duration,
    /// Seconds from the first receipt to the start of the worst stall.
    worst_stall_at: f64,
    /// Milliseconds from the last kill before the worst stall to its start.
    worst_stall_after_kill: Option<f64>,
}

fn torture_round(capacity: u64, seconds: f64, seed: u64) -> Report {
    const PRODUCERS: u64 = 3;
    const CONSUMERS: u64 = 3;
    let name = unique(&format!("c{capacity}"));
    let dir = std::env::temp_dir().join(format!("shmq-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("work directory");
    let queue = Queue::create(
        &name,
        &Options::new(capacity, MAX_MESSAGE as u64)
            .max_participants(16)
            .max_deliveries(MAX_DELIVERIES),
    )
    .expect("create");
    let _unlink = Unlink(name.clone());
    let dead_letter_name = format!("{name}.dead");
    let _unlink_dead = Unlink(dead_letter_name.clone());

    let mut crew = Crew {
        queue: name.clone(),
        dir: dir.clone(),
        seed,
        workers: (0..PRODUCERS)
            .map(|id| (Kind::Producer, id))
            .chain((0..CONSUMERS).map(|id| (Kind::Consumer, id)))
            .map(|(kind, id)| Worker {
                kind,
                id,
                incarnation: 0,
                child: None,
            })
            .collect(),
        producer_incarnations: vec![0; PRODUCERS as usize],
        poison_aborts: 0,
        dead_letters: Vec::new(),
    };
    for index in 0..crew.workers.len() {
        crew.start(index);
    }

    // The killer: a random worker at a random instant (mean 0.8 s apart), restarted
    // at once.
    let mut rng = Rng(seed);
    let mut report = Report::default();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let mut kill_times = Vec::new();
    while Instant::now() < end {
        crew.sleep(Duration::from_micros(rng.below(1_600_000)));
        // Every other kill aims at a participant seen holding a claim.
        let sniped = if (report.kills_producer + report.kills_consumer) % 2 == 1 {
            // Producers twice as often: their claim window is the narrower one.
            let kind = if rng.below(3) < 2 {
                Kind::Producer
            } else {
                Kind::Consumer
            };
            crew.find_mid_claim(&queue, kind, Duration::from_millis(300))
        } else {
            None
        };
        let victim = sniped.unwrap_or_else(|| rng.below(crew.workers.len() as u64) as usize);
        if sniped.is_some() {
            match crew.workers[victim].kind {
                Kind::Producer => report.sniped_producer += 1,
                Kind::Consumer => report.sniped_consumer += 1,
            }
        }
        let child = crew.workers[victim].child.as_mut().expect("running worker");
        kill_times.push(monotonic_micros());
        kill_and_reap(child);
        match crew.workers[victim].kind {
            Kind::Producer => report.kills_producer += 1,
            Kind::Consumer => report.kills_consumer += 1,
        }
        crew.start(victim);
    }
    crew.check_none_exited(false);

    // Stop producers (cleanly), then let consumers drain and leave.
    let stop_time = monotonic_micros();
    File::create(dir.join("stop")).expect("stop file");
    crew.wait_exit(Kind::Producer, Duration::from_secs(60));
    File::create(dir.join("drain")).expect("drain file");
    crew.wait_exit(Kind::Consumer, Duration::from_secs(60));
    report.seconds = started.elapsed().as_secs_f64();

    // Whatever is left is still counted (it was not lost), but reported.
    let mut leftovers = Vec::new();
    queue.sweep();
    while let Ok(bytes) = queue.recv_timeout(Duration::from_millis(300)) {
        leftovers.push(decode(&bytes).unwrap_or(BAD_TAG));
    }
    crew.drain_dead_letters();
    let dead_letters = std::mem::take(&mut crew.dead_letters);
    let info = queue.info();
    report.skipped = info.recovery.skipped;
    report.redelivered = info.recovery.redelivered;
    report.poison_aborts = crew.poison_aborts;
    report.dead_lettered = dead_letters.len() as u64;
    assert_eq!(
        info.recovery.dead_lettered, report.dead_lettered,
        "the dead-letter segment holds every message moved there"
    );
    assert_eq!(
        info.recovery.corrupt, 0,
        "no message may be reported corrupt"
    );
    assert_eq!(
        info.live(),
        1,
        "only this handle is still attached: {info:?}"
    );

    leftovers.extend(&dead_letters);
    check_logs(
        &dir,
        &crew.producer_incarnations,
        &leftovers,
        stop_time,
        &kill_times,
        &mut report,
    );
    let _ = fs::remove_dir_all(&dir);
    report
}

fn since_kill(ms: Option<f64>) -> String {
    ms.map_or("before any kill".to_owned(), |ms| {
        format!("starting {ms:.1} ms after a kill")
    })
}

/// Reads the ack files and receive logs and checks the delivery guarantees.
fn check_logs(
    dir: &Path,
    producer_incarnations: &[u64],
    leftovers: &[u64],
    stop_time: u64,
    kill_times: &[u64],
    report: &mut Report,
) {
    // acknowledged[(producer, incarnation)] = number of sends that returned Ok.
    let mut acknowledged = HashMap::new();
    for (producer, &incarnations) in producer_incarnations.iter().enumerate() {
        for incarnation in 1..=incarnations {
            let path = dir.join(format!("ack-{producer}-{incarnation}"));
            let count = match fs::read(&path) {
                Ok(bytes) if bytes.len() >= 8 => u64::from_le_bytes(bytes[..8].try_into().unwrap()),
                // Killed before its first Ok (or before creating the file).
                _ => 0,
            };
            acknowledged.insert((producer as u64, incarnation), count);
            report.acknowledged += count;
        }
    }
    // received[(producer, incarnation)][seq] = copies received.
    let mut received: HashMap<(u64, u64), Vec<u32>> = acknowledged
        .iter()
        .map(|(&key, &count)| (key, vec![0; count as usize + 1]))
        .collect();
    let mut times = Vec::new();
    let mut count = |tag: u64, problems: &mut Vec<String>| {
        let (producer, incarnation, seq) = untag(tag);
        match received.get_mut(&(producer, incarnation)) {
            // seq == acknowledged: the one send in flight when its producer died.
            Some(copies) if (seq as usize) < copies.len() => copies[seq as usize] += 1,
            _ => problems.push(format!(
                "received {tag:#x} (producer {producer}, incarnation {incarnation}, seq {seq}), never sent"
            )),
        }
    };
    let mut problems = Vec::new();
    for entry in fs::read_dir(dir).expect("work directory") {
        let path = entry.expect("dir entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !file.starts_with("recv-") {
            continue;
        }
        let bytes = fs::read(&path).expect("receive log");
        if bytes.len() % RECORD != 0 {
            problems.push(format!("{file}: torn record at the end"));
        }
        // Per-producer order at this consumer: the highest seq seen so far from each
        // producer incarnation. Only a redelivered message may come in below it.
        let mut highest: HashMap<(u64, u64), u64> = HashMap::new();
        for record in bytes.chunks_exact(RECORD) {
            let tag = u64::from_le_bytes(record[..8].try_into().unwrap());
            let at = u64::from_le_bytes(record[8..].try_into().unwrap());
            times.push(at);
            if tag == BAD_TAG {
                problems.push(format!("{file}: a malformed message"));
                continue;
            }
            let (producer, incarnation, seq) = untag(tag);
            match highest.get_mut(&(producer, incarnation)) {
                Some(top) if seq < *top => report.out_of_order += 1,
                Some(top) => *top = seq,
                None => {
                    highest.insert((producer, incarnation), seq);
                }
            }
            count(tag, &mut problems);
        }
    }
    for &tag in leftovers {
        count(tag, &mut problems);
    }
    report.received = times.len() as u64 + leftovers.len() as u64;

    let mut lost = 0u64;
    for (&(producer, incarnation), copies) in &received {
        let acked = acknowledged[&(producer, incarnation)] as usize;
        for (seq, &n) in copies.iter().enumerate() {
            if seq < acked && n == 0 {
                lost += 1;
                if lost <= 10 {
                    problems.push(format!(
                        "lost: producer {producer} incarnation {incarnation} seq {seq} was acknowledged, never received"
                    ));
                }
            }
            if seq == acked && n > 0 {
                report.in_flight_received += 1;
            }
            if is_poison(tag(producer, incarnation, seq as u64)) && n > 0 {
                report.poison += 1;
                // Logged once per delivery, plus its copy in the dead letters.
                if n > MAX_DELIVERIES + 1 {
                    problems.push(format!(
                        "poison message {:#x} seen {n} times: more than {MAX_DELIVERIES} deliveries",
                        tag(producer, incarnation, seq as u64)
                    ));
                }
            }
            report.duplicates += u64::from(n.saturating_sub(1));
        }
    }
    if lost > 0 {
        problems.push(format!("{lost} acknowledged messages lost in all"));
    }
    let consumer_deaths = report.kills_consumer + report.poison_aborts;
    if report.duplicates > consumer_deaths {
        problems.push(format!(
            "{} duplicates but only {} consumer kills and {} poison aborts",
            report.duplicates, report.kills_consumer, report.poison_aborts
        ));
    }
    if report.duplicates > report.redelivered {
        problems.push(format!(
            "{} duplicates but the segment redelivered only {}",
            report.duplicates, report.redelivered
        ));
    }
    if report.out_of_order > report.redelivered {
        problems.push(format!(
            "{} messages came to a consumer after a later one from the same producer, \
             but the segment redelivered only {}",
            report.out_of_order, report.redelivered
        ));
    }
    if report.redelivered > consumer_deaths {
        problems.push(format!(
            "{} redeliveries but only {} consumer kills and {} poison aborts",
            report.redelivered, report.kills_consumer, report.poison_aborts
        ));
    }

    // The worst gap between consecutive receipts while producers were streaming.
    times.sort_unstable();
    let start = times.first().copied().unwrap_or(stop_time);
    let mut previous = start;
    for &at in times.iter().filter(|&&t| t <= stop_time) {
        let gap = Duration::from_micros(at - previous);
        if gap > report.worst_stall {
            report.worst_stall = gap;
            report.worst_stall_at = (previous - start) as f64 / 1e6;
            report.worst_stall_after_kill = kill_times
                .iter()
                .rev()
                .find(|&&k| k <= at)
                .map(|&k| previous.saturating_sub(k) as f64 / 1e3);
        }
        previous = at;
    }
    if report.worst_stall > STALL_BOUND {
        problems.push(format!(
            "the stream stalled for {:?} ({:.1} s into the round, {}), bound {STALL_BOUND:?}",
            report.worst_stall,
            report.worst_stall_at,
            since_kill(report.worst_stall_after_kill)
        ));
    }
    assert!(
        problems.is_empty(),
        "torture check failed:\n{}",
        problems.join("\n")
    );
}

#[test]
fn torture_random_sigkills_lose_no_acknowledged_message() {
    let total: f64 = std::env::var("SHMQ_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24.0);
    let seed = std::env::var("SHMQ_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| mix(monotonic_micros() ^ u64::from(std::process::id())));
    println!(
        "torture: {total} s in two rounds (capacity 8, then 64), seed {seed} (SHMQ_TORTURE_SEED)"
    );
    for (round, capacity) in [8, 64].into_iter().enumerate() {
        let report = torture_round(capacity, total / 2.0, mix(seed ^ round as u64));
        println!(
            "torture capacity {capacity}: {:.1} s, kills survived {} ({} producers, {} consumers; \
             {} producers and {} consumers seen mid-claim), \
             acknowledged {}, messages checked {} (+{} sent but unacknowledged), duplicates {}, \
             out of producer order {} (segment redelivered {}, skipped {} dead producers' \
             slots), poison messages {} (consumers aborted {}, dead-lettered {}), \
             worst stall {:.1} ms ({:.1} s into the round, {})",
            report.seconds,
            report.kills_producer + report.kills_consumer,
            report.kills_producer,
            report.kills_consumer,
            report.sniped_producer,
            report.sniped_consumer,
            report.acknowledged,
            report.received,
            report.in_flight_received,
            report.duplicates,
            report.out_of_order,
            report.redelivered,
            report.skipped,
            report.poison,
            report.poison_aborts,
            report.dead_lettered,
            report.worst_stall.as_secs_f64() * 1e3,
            report.worst_stall_at,
            since_kill(report.worst_stall_after_kill),
        );
    }
}

// ---- recovery timing -----------------------------------------------------------------

fn summarize(label: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: n={} min {:.1} ms, median {:.1} ms, max {:.1} ms",
        sorted.len(),
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1]),
    );
    assert!(
        sorted[sorted.len() - 1] < RECOVERY_BOUND,
        "{label}: recovery took {:?}, bound {RECOVERY_BOUND:?}",
        sorted[sorted.len() - 1]
    );
}

#[test]
fn stopped_consumer_keeps_its_message_killed_one_has_it_redelivered() {
    let name = unique("dead-consumer");
    let queue = Queue::create(&name, &Options::new(8, 64)).expect("create");
    let _unlink = Unlink(name.clone());
    let mut consumer = queue.try_clone().expect("consumer handle");
    let mut reaper = Reaper::default();
    let mut times = Vec::new();
    for round in 0..5 {
        let expected = format!("lemonade {round}").into_bytes();
        queue.send(&expected).expect("send");
        reaper
            .0
            .push(spawn_role("hold", &[("SHMQ_QUEUE", name.clone())]));
        let child = reaper.0.last_mut().unwrap();
        let pid = child.id();
        wait_for("the child to claim the message", || {
            participant(&queue, pid).is_some_and(|p| p.dequeue_stuck)
        });
        if round == 0 {
            // Stopped is not dead: for 12 sweep intervals nobody may take its message.
            signal(child, libc::SIGSTOP);
            wait_stopped(child);
            let redelivered = queue.info().recovery.redelivered;
            assert_eq!(
                consumer.recv_timeout(Duration::from_millis(600)),
                Err(RecvError::Timeout),
                "a stopped consumer's message was taken from it"
            );
            queue.sweep();
            let holder = participant(&queue, pid).expect("stopped consumer still registered");
            assert!(holder.alive && holder.dequeue_stuck, "{holder:?}");
            assert_eq!(queue.info().recovery.redelivered, redelivered);
        }
        // A live consumer waits in recv; the holder dies; time until it gets the message.
        let (handle, message, took) = receive_after_killing(consumer, child);
        consumer = handle;
        assert_eq!(message.expect("redelivery"), expected);
        times.push(took);
        reaper.0.pop();
    }
    summarize("dead consumer -> message redelivered", &times);
}

/// Catches the producer `child` between claim and publish, and stops it there.
/// Returns the position it holds.
fn stop_producer_mid_claim(queue: &Queue, child: &Child) -> u64 {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "never caught the producer mid-claim"
        );
        // Make room (without copying), then watch its claim.
        let _ = queue.try_recv_with(|_| ());
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            if !participant(queue, pid).is_some_and(|p| p.enqueue_stuck) {
                continue;
            }
            signal(child, libc::SIGSTOP);
            wait_stopped(child);
            match participant(queue, pid) {
                Some(p) if p.enqueue_stuck => return p.enqueue_claim.expect("claim"),
                // It published in between: let it go on and try again.
                _ => signal(child, libc::SIGCONT),
            }
        }
    }
}

/// Consumes every published message in front of a stuck position.
fn drain_published(queue: &Queue) {
    while queue.try_recv_with(|_| ()).is_ok() {}
}

#[test]
fn stopped_producer_keeps_its_slot_killed_one_is_skipped() {
    let name = unique("dead-producer");
    // 16 MiB messages: the payload copy between claim and publish takes milliseconds.
    let queue =
        Queue::create(&name, &Options::new(2, 16 << 20).max_participants(8)).expect("create");
    let _unlink = Unlink(name.clone());
    let mut consumer = queue.try_clone().expect("consumer handle");
    let mut reaper = Reaper::default();
    let mut times = Vec::new();
    for round in 0..5 {
        reaper
            .0
            .push(spawn_role("slow-sender", &[("SHMQ_QUEUE", name.clone())]));
        let child = reaper.0.last_mut().unwrap();
        let mut held = stop_producer_mid_claim(&queue, child);
        drain_published(&queue);
        if round == 0 {
            // Stopped is not dead: its slot is not skipped, and once continued, its
            // message arrives whole.
            let skipped = queue.info().recovery.skipped;
            let empty = consumer.recv_timeout(Duration::from_millis(600));
            assert_eq!(empty, Err(RecvError::Timeout), "stopped producer skipped");
            queue.sweep();
            assert_eq!(queue.info().recovery.skipped, skipped);
            let holder = participant(&queue, child.id()).expect("registered");
            assert!(holder.alive && holder.enqueue_stuck, "{holder:?}");
            signal(child, libc::SIGCONT);
            let message = consumer
                .recv_timeout(Duration::from_secs(10))
                .expect("message");
            assert!(
                message == large_message(16 << 20),
                "continued producer's message damaged"
            );
            held = stop_producer_mid_claim(&queue, child);
            drain_published(&queue);
        }
        // A message behind the hole, a consumer waiting for it, then the kill.
        queue
            .try_send(b"after the hole")
            .expect("room behind the hole");
        let (handle, message, took) = receive_after_killing(consumer, child);
        consumer = handle;
        assert_eq!(message.expect("message behind the hole"), b"after the hole");
        times.push(took);
        assert!(
            queue.info().recovery.skipped > round,
            "the hole at {held} was not counted as skipped"
        );
        reaper.0.pop();
    }
    summarize("dead producer mid-claim -> hole skipped", &times);
}

// ---- stale segments ------------------------------------------------------------------

#[test]
fn list_shows_dead_participants_and_remove_if_unused_removes_only_dead_segments() {
    let name = unique("stale");
    let queue = Queue::create(&name, &Options::new(8, 64)).expect("create");
    let _unlink = Unlink(name.clone());
    let mut reaper = Reaper::default();
    reaper
        .0
        .push(spawn_role("attach", &[("SHMQ_QUEUE", name.clone())]));
    let pid = reaper.0[0].id();
    wait_for("the child to attach", || participant(&queue, pid).is_some());
    drop(queue);

    // Alive, and also merely stopped: in use, not removed.
    let kept = Queue::remove_if_unused(&name).expect("inspect");
    assert!(
        matches!(&kept, Removal::InUse(info) if info.live() == 1),
        "{kept:?}"
    );
    signal(&reaper.0[0], libc::SIGSTOP);
    wait_stopped(&reaper.0[0]);
    let kept = Queue::remove_if_unused(&name).expect("inspect");
    assert!(
        matches!(&kept, Removal::InUse(info) if info.live() == 1),
        "{kept:?}"
    );

    kill_and_reap(&mut reaper.0[0]);
    let listed = Queue::list().expect("list");
    let entry = listed
        .iter()
        .find(|entry| entry.name == name)
        .expect("segment listed");
    let info = entry.info.as_ref().expect("segment readable");
    assert_eq!((info.live(), info.dead()), (0, 1), "{info:?}");
    let dead = &info.participants[0];
    assert_eq!(dead.pid, u64::from(pid));
    assert!(!dead.alive);

    let removed = Queue::remove_if_unused(&name).expect("inspect");
    assert!(
        matches!(&removed, Removal::Removed(info) if info.dead() == 1),
        "{removed:?}"
    );
    assert!(matches!(Queue::open(&name), Err(Error::NotFound { .. })));
}
