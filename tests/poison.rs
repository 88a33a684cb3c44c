//! Poison messages (issue 16, item 8): delivery counts, abandoning a message on
//! purpose, and the dead-letter segment a message goes to after `max_deliveries`.
//! The main test runs consumer processes (this binary re-executed with a role) that
//! abort on one message among thousands.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{unique, UnlinkOnDrop};
use shmq::{Error, Options, Queue, TryRecvError};

const ROLE: &str = "SHMQ_POISON_ROLE";
/// Ends a consumer.
const STOP: u64 = u64::MAX;

fn id_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8-byte message"))
}

/// Receives until `deadline`, waiting for the sweep that redelivers or moves a
/// given-back message (at most about 50 ms apart when idle).
fn receive_within(queue: &mut Queue, timeout: Duration) -> Option<(Vec<u8>, u32)> {
    let delivery = queue.receive_timeout(timeout).ok()?;
    Some((delivery.to_vec(), delivery.deliveries()))
}

fn drain(name: &str) -> Vec<Vec<u8>> {
    let Ok(queue) = Queue::open(name) else {
        return Vec::new();
    };
    std::iter::from_fn(|| queue.try_recv().ok()).collect()
}

#[test]
fn first_delivery_counts_one_and_is_not_a_redelivery() {
    let name = unique("first");
    let _unlink = UnlinkOnDrop(&name);
    let mut queue = Queue::create(&name, &Options::new(4, 16)).unwrap();
    queue.send(b"a").unwrap();
    let delivery = queue.try_receive().unwrap();
    assert_eq!((&*delivery, delivery.deliveries()), (&b"a"[..], 1));
    assert!(!delivery.is_redelivery());
    drop(delivery);
    assert_eq!(queue.try_receive().unwrap_err(), TryRecvError::Empty);
    assert_eq!(queue.info().occupancy, 0);
}

#[test]
fn abandoned_message_goes_to_another_consumer_with_its_count() {
    let name = unique("abandon");
    let _unlink = UnlinkOnDrop(&name);
    let mut first = Queue::create(&name, &Options::new(4, 16)).unwrap();
    let mut second = first.try_clone().unwrap();
    first.send(b"job").unwrap();
    first.send(b"next").unwrap();
    first.try_receive().unwrap().abandon().unwrap();
    // The next message is not held up behind the abandoned one.
    assert_eq!(&*second.try_receive().unwrap(), b"next");
    let (bytes, deliveries) = receive_within(&mut second, Duration::from_secs(5))
        .expect("the abandoned message was not delivered again");
    assert_eq!((bytes.as_slice(), deliveries), (&b"job"[..], 2));
    let info = first.info();
    assert_eq!((info.recovery.abandoned, info.occupancy), (1, 0));
    assert_eq!(info.dead(), 0, "the carrier record was not freed");
    assert!(receive_within(&mut first, Duration::from_millis(200)).is_none());
}

#[test]
fn abandoning_counts_toward_max_deliveries_then_dead_letters() {
    let name = unique("abandon-limit");
    let dead = format!("{name}.dead");
    let (_unlink, _unlink_dead) = (UnlinkOnDrop(&name), UnlinkOnDrop(&dead));
    let mut queue = Queue::create(&name, &Options::new(8, 16).max_deliveries(3)).unwrap();
    queue.send(b"poison").unwrap();
    let mut deliveries_seen = Vec::new();
    loop {
        let Ok(delivery) = queue.receive_timeout(Duration::from_millis(500)) else {
            break;
        };
        deliveries_seen.push(delivery.deliveries());
        delivery.abandon().unwrap();
    }
    assert_eq!(deliveries_seen, vec![1, 2, 3]);
    assert_eq!(drain(&dead), vec![b"poison".to_vec()]);
    let info = queue.info();
    assert_eq!(info.recovery.abandoned, 3);
    assert_eq!(info.recovery.dead_lettered, 1);
    assert_eq!(info.occupancy, 0);
    assert_eq!(info.dead_letter_name(), Some(dead.clone()));
}

#[test]
fn full_dead_letter_segment_keeps_the_message_until_there_is_room() {
    let name = unique("dead-full");
    let dead = format!("{name}.dead");
    let (_unlink, _unlink_dead) = (UnlinkOnDrop(&name), UnlinkOnDrop(&dead));
    let dead_letters = Queue::create(&dead, &Options::new(2, 16).max_deliveries(0)).unwrap();
    dead_letters.send(b"old 1").unwrap();
    dead_letters.send(b"old 2").unwrap();
    let mut queue = Queue::create(&name, &Options::new(8, 16).max_deliveries(1)).unwrap();
    queue.send(b"poison").unwrap();
    queue.try_receive().unwrap().abandon().unwrap();
    // Its last delivery was used: it is never delivered again, but not lost.
    assert!(receive_within(&mut queue, Duration::from_millis(300)).is_none());
    let info = queue.info();
    assert!(info.recovery.dead_letter_failures >= 1, "{info:?}");
    assert_eq!(info.recovery.dead_lettered, 0);
    assert_eq!(dead_letters.recv().unwrap(), b"old 1");
    assert!(receive_within(&mut queue, Duration::from_millis(300)).is_none());
    assert_eq!(queue.info().recovery.dead_lettered, 1);
    assert_eq!(drain(&dead), vec![b"old 2".to_vec(), b"poison".to_vec()]);
}

#[test]
fn name_with_no_room_for_its_dead_letter_segment_is_refused() {
    let long = "n".repeat(196);
    assert!(matches!(
        Queue::create(&long, &Options::new(2, 8)),
        Err(Error::InvalidName { .. })
    ));
    let name = format!("{}{}", unique("n"), "n".repeat(196 - unique("n").len()));
    let _unlink = UnlinkOnDrop(&name);
    Queue::create(&name, &Options::new(2, 8).max_deliveries(0)).unwrap();
}

/// A consumer process: receives ids, reports each on the results segment before
/// acknowledging it, and aborts (after saying which delivery it was) on `poison`.
fn consume(name: &str, results: &str, poison: u64) {
    let mut queue = Queue::open(name).unwrap();
    let results = Queue::open(results).unwrap();
    loop {
        let delivery = queue.receive().unwrap();
        let id = id_of(&delivery);
        if id == STOP {
            return;
        }
        if id == poison {
            let mut out = std::io::stdout().lock();
            writeln!(out, "POISON {}", delivery.deliveries()).unwrap();
            out.flush().unwrap();
            // (The line follows the harness's "test NAME ... ", hence no newline
            // before it.) No core file for an expected abort.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit value for the calling process.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            std::process::abort();
        }
        results.send(&id.to_le_bytes()).unwrap();
    }
}

fn spawn_consumer(test: &str, role: &str) -> Child {
    common::child_command(test, false, ROLE, role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn consumer")
}

#[test]
fn consumer_that_aborts_on_one_message_sends_it_to_dead_letters_after_max_deliveries() {
    const TEST: &str =
        "consumer_that_aborts_on_one_message_sends_it_to_dead_letters_after_max_deliveries";
    const MESSAGES: u64 = 5_000;
    const POISON: u64 = 1_234;
    const MAX_DELIVERIES: u32 = 3;
    const CONSUMERS: usize = 2;
    if let Ok(role) = std::env::var(ROLE) {
        let parts: Vec<&str> = role.split(':').collect();
        consume(parts[0], parts[1], parts[2].parse().unwrap());
        return;
    }
    let name = unique("abort");
    let results_name = unique("abort-results");
    let dead = format!("{name}.dead");
    let _unlink = (
        UnlinkOnDrop(&name),
        UnlinkOnDrop(&results_name),
        UnlinkOnDrop(&dead),
    );
    let options = Options::new(64, 8).max_deliveries(MAX_DELIVERIES);
    let queue = Queue::create(&name, &options).unwrap();
    let results = Queue::create(&results_name, &Options::new(8192, 8)).unwrap();
    let role = format!("{name}:{results_name}:{POISON}");
    let mut consumers: Vec<Child> = (0..CONSUMERS)
        .map(|_| spawn_consumer(TEST, &role))
        .collect();
    let producer = {
        let name = name.clone();
        std::thread::spawn(move || {
            let queue = Queue::open(&name).unwrap();
            for id in 0..MESSAGES {
                queue.send(&id.to_le_bytes()).unwrap();
            }
        })
    };
    let mut received: BTreeMap<u64, u32> = BTreeMap::new();
    let mut poison_deliveries = Vec::new();
    let started = Instant::now();
    let mut dead_letters = Vec::new();
    while (received.len() as u64) < MESSAGES - 1 || dead_letters.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stalled: {} received, poison deliveries {poison_deliveries:?}, {:?}",
            received.len(),
            queue.info().recovery
        );
        while let Ok(bytes) = results.try_recv() {
            *received.entry(id_of(&bytes)).or_default() += 1;
        }
        for child in &mut consumers {
            let Some(status) = child.try_wait().unwrap() else {
                continue;
            };
            assert_eq!(
                status.signal(),
                Some(libc::SIGABRT),
                "consumer failed: {status}"
            );
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            poison_deliveries.extend(
                out.lines()
                    .filter_map(|l| l.split_once("POISON "))
                    .map(|(_, n)| n.trim().parse::<u32>().unwrap()),
            );
            *child = spawn_consumer(TEST, &role);
        }
        if dead_letters.is_empty() {
            dead_letters = drain(&dead);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    producer.join().unwrap();
    for _ in 0..CONSUMERS {
        queue.send(&STOP.to_le_bytes()).unwrap();
    }
    for child in consumers {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "consumer failed: {}",
            output.status
        );
    }
    while let Ok(bytes) = results.try_recv() {
        *received.entry(id_of(&bytes)).or_default() += 1;
    }
    poison_deliveries.sort_unstable();
    assert_eq!(
        poison_deliveries,
        vec![1, 2, 3],
        "one abort per allowed delivery"
    );
    assert_eq!(dead_letters, vec![POISON.to_le_bytes().to_vec()]);
    assert!(!received.contains_key(&POISON));
    let lost: Vec<u64> = (0..MESSAGES)
        .filter(|id| *id != POISON && !received.contains_key(id))
        .collect();
    let duplicated: Vec<(&u64, &u32)> = received.iter().filter(|(_, n)| **n != 1).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    let info = queue.info();
    assert_eq!(info.recovery.dead_lettered, 1);
    assert_eq!(info.occupancy, 0);
    assert_eq!(info.max_deliveries, u64::from(MAX_DELIVERIES));
}
