//! Exactly-once and per-producer order, under contention: threads in one process,
//! then real processes (this test binary re-executed with a role in the environment).

mod common;
use common::unique;

use std::process::Child;
use std::time::Instant;

use shmq::{Options, Queue, TrySendError};

const ROLE: &str = "SHMQ_STRESS_ROLE";

/// A message is `producer: u32, sequence: u64` little-endian, padded to 16 bytes.
fn encode(producer: u32, sequence: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&producer.to_le_bytes());
    m[4..12].copy_from_slice(&sequence.to_le_bytes());
    m
}

fn decode(bytes: &[u8]) -> (u32, u64) {
    assert_eq!(bytes.len(), 16, "message length changed in flight");
    (
        u32::from_le_bytes(bytes[..4].try_into().unwrap()),
        u64::from_le_bytes(bytes[4..12].try_into().unwrap()),
    )
}

fn produce(queue: &Queue, producer: u32, count: u64) {
    for sequence in 0..count {
        let message = encode(producer, sequence);
        loop {
            match queue.try_send(&message) {
                Ok(()) => break,
                Err(TrySendError::Full) => std::thread::yield_now(),
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }
}

/// Receives until the queue is empty and `stop()` holds (or a sentinel arrives).
/// Checks per-producer order as it goes and returns how many messages of each
/// producer it got. `on_message` is called once per message.
fn consume(
    queue: &Queue,
    producers: u32,
    mut on_message: impl FnMut(),
    mut stop: impl FnMut() -> bool,
) -> Vec<u64> {
    let mut last_seen: Vec<Option<u64>> = vec![None; producers as usize];
    let mut counts = vec![0u64; producers as usize];
    loop {
        match queue.try_recv_with(decode) {
            Ok((SENTINEL, _)) => return counts,
            Ok((producer, sequence)) => {
                let last = &mut last_seen[producer as usize];
                assert!(
                    last.is_none_or(|l| sequence > l),
                    "producer {producer}: sequence {sequence} after {last:?}: order broken"
                );
                *last = Some(sequence);
                counts[producer as usize] += 1;
                on_message();
            }
            Err(shmq::TryRecvError::Empty) => {
                if stop() {
                    return counts;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("receive failed: {e}"),
        }
    }
}

const SENTINEL: u32 = u32::MAX;

#[test]
fn four_producers_four_consumers_threads_deliver_each_message_once_in_order() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    const PRODUCERS: u32 = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: u64 = 250_000;
    let name = unique("threads");
    let queue = Queue::create(&name, &Options::new(64, 16)).unwrap();
    Queue::unlink(&name).unwrap(); // handles keep it alive; nothing to clean up later
    let total = u64::from(PRODUCERS) * PER_PRODUCER;
    let received = AtomicU64::new(0);
    let started = Instant::now();
    let totals = std::thread::scope(|scope| {
        for producer in 0..PRODUCERS {
            let handle = queue.try_clone().unwrap();
            scope.spawn(move || produce(&handle, producer, PER_PRODUCER));
        }
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let handle = queue.try_clone().unwrap();
                let received = &received;
                scope.spawn(move || {
                    consume(
                        &handle,
                        PRODUCERS,
                        || {
                            received.fetch_add(1, Relaxed);
                        },
                        || received.load(Relaxed) >= total,
                    )
                })
            })
            .collect();
        let mut totals = vec![0u64; PRODUCERS as usize];
        for consumer in consumers {
            for (t, n) in totals.iter_mut().zip(consumer.join().unwrap()) {
                *t += n;
            }
        }
        totals
    });
    let elapsed = started.elapsed();
    assert_eq!(
        totals,
        vec![PER_PRODUCER; PRODUCERS as usize],
        "a message was lost or duplicated"
    );
    assert_eq!(received.load(Relaxed), total, "a message was duplicated");
    eprintln!(
        "in-process 4P4C: {total} messages in {elapsed:?} ({:.2} M msgs/s, {} build)",
        total as f64 / elapsed.as_secs_f64() / 1e6,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

/// Runs one child role if this process was started as one. Roles:
/// `produce:NAME:ID:COUNT` and `consume:NAME:PRODUCERS`.
fn run_child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let parts: Vec<&str> = role.split(':').collect();
    let queue = Queue::open(parts[1]).expect("child could not open the segment");
    match parts[0] {
        "produce" => produce(&queue, parts[2].parse().unwrap(), parts[3].parse().unwrap()),
        "consume" => {
            let counts = consume(&queue, parts[2].parse().unwrap(), || {}, || false);
            let line: Vec<String> = counts.iter().map(u64::to_string).collect();
            println!("COUNTS {}", line.join(" "));
        }
        other => panic!("unknown role {other}"),
    }
    true
}

fn spawn_role(test: &str, role: String) -> Child {
    common::spawn_role(test, ROLE, role)
}

/// P producer and C consumer processes on one segment; each consumer checks order,
/// the parent checks every message arrived exactly once.
fn cross_process(test: &str, capacity: u64, producers: u32, consumers: u32, per_producer: u64) {
    let name = unique(&format!("procs{capacity}"));
    let queue = Queue::create(&name, &Options::new(capacity, 16)).unwrap();
    let started = Instant::now();
    let consumer_children: Vec<Child> = (0..consumers)
        .map(|_| spawn_role(test, format!("consume:{name}:{producers}")))
        .collect();
    let producer_children: Vec<Child> = (0..producers)
        .map(|id| spawn_role(test, format!("produce:{name}:{id}:{per_producer}")))
        .collect();
    for mut child in producer_children {
        assert!(child.wait().unwrap().success(), "a producer failed");
    }
    // Everything is sent; one sentinel per consumer ends the stream.
    for _ in 0..consumers {
        queue.send(&encode(SENTINEL, 0)).unwrap();
    }
    let mut totals = vec![0u64; producers as usize];
    for child in consumer_children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a consumer failed (order broken?)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("COUNTS ").map(|(_, counts)| counts))
            .expect("consumer printed no counts");
        for (t, n) in totals.iter_mut().zip(line.split(' ')) {
            *t += n.parse::<u64>().unwrap();
        }
    }
    let elapsed = started.elapsed();
    Queue::unlink(&name).unwrap();
    assert_eq!(
        totals,
        vec![per_producer; producers as usize],
        "a message was lost or duplicated"
    );
    let total = per_producer * u64::from(producers);
    eprintln!(
        "cross-process {producers}P{consumers}C capacity {capacity}: {total} messages in {elapsed:?} ({:.2} M msgs/s)",
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
}

#[test]
fn processes_capacity_2_deliver_each_message_once_in_order() {
    if run_child_role() {
        return;
    }
    cross_process(
        "processes_capacity_2_deliver_each_message_once_in_order",
        2,
        2,
        2,
        250_000,
    );
}

#[test]
fn processes_capacity_4_deliver_each_message_once_in_order() {
    if run_child_role() {
        return;
    }
    cross_process(
        "processes_capacity_4_deliver_each_message_once_in_order",
        4,
        3,
        3,
        200_000,
    );
}

#[test]
fn processes_capacity_4096_deliver_each_message_once_in_order() {
    if run_child_role() {
        return;
    }
    cross_process(
        "processes_capacity_4096_deliver_each_message_once_in_order",
        4096,
        4,
        4,
        1_000_000,
    );
}

#[test]
fn wraparound_of_63_bit_positions_loses_nothing() {
    let name = unique("wrap");
    let options = Options::new(4, 16).initial_position(((1u64 << 63) - 1) - 100);
    let queue = Queue::create(&name, &options).unwrap();
    Queue::unlink(&name).unwrap();
    let consumer = queue.try_clone().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || produce(&queue, 0, 10_000));
        let mut next = 0;
        while next < 10_000 {
            if let Ok((0, sequence)) = consumer.try_recv_with(decode) {
                assert_eq!(sequence, next, "lost or reordered across the wrap");
                next += 1;
            }
        }
    });
    assert!(consumer.info().enqueue_pos < 10_000, "the cursor did wrap");
}
