//! Batches (issue 11) between processes: batch and single sends and receives mixed
//! deliver every message exactly once in per-producer order, and a consumer killed
//! in the middle of a batch has each of its messages delivered again.

mod common;

use std::process::Child;
use std::time::Duration;

use common::{unique, UnlinkOnDrop};
use shmq::{Options, Queue, TrySendError};

const ROLE: &str = "SHMQ_BATCH_ROLE";
/// Ends a consumer.
const STOP: u64 = u64::MAX;

fn encode(producer: u64, seq: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&producer.to_le_bytes());
    bytes[8..].copy_from_slice(&seq.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
    )
}

/// A small deterministic generator for batch sizes.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// Producer role: sends `count` messages, in batches of 1 to 64 (some as single
/// sends), in order.
fn produce(queue: &Queue, id: u64, count: u64) {
    let mut state = id + 1;
    let mut seq = 0;
    while seq < count {
        let size = (next(&mut state) % 64 + 1).min(count - seq);
        if size == 1 {
            queue.send(&encode(id, seq)).unwrap();
        } else {
            let batch: Vec<[u8; 16]> = (seq..seq + size).map(|s| encode(id, s)).collect();
            queue.send_batch(&batch).unwrap();
        }
        seq += size;
    }
}

/// Consumer role: receives in batches of up to 1 to 64 (some singly) until its own
/// STOP (another consumer's STOP, taken in the middle of a batch, is sent on);
/// checks per-producer order; prints, per producer, the count, the sum of the
/// sequence numbers and the sum of their squares.
fn consume(queue: &Queue, producers: usize, id: u64) {
    let mut state = id + 100;
    let mut totals = vec![(0u64, 0u64, 0u64); producers];
    let mut last: Vec<Option<u64>> = vec![None; producers];
    let stopped = std::cell::Cell::new(false);
    let mut take = |bytes: &[u8]| {
        let (producer, seq) = decode(bytes);
        if producer == STOP {
            if seq == id {
                stopped.set(true);
            } else {
                queue.send(bytes).unwrap();
            }
            return;
        }
        let p = producer as usize;
        assert!(
            last[p].is_none_or(|l| seq > l),
            "producer {p}: {seq} after {:?}",
            last[p]
        );
        last[p] = Some(seq);
        let t = &mut totals[p];
        *t = (t.0 + 1, t.1 + seq, t.2 + seq * seq);
    };
    while !stopped.get() {
        let max = (next(&mut state) % 64 + 1) as usize;
        if max == 1 {
            queue.recv_with(&mut take).unwrap();
        } else {
            queue
                .recv_batch_with(max, Some(Duration::from_secs(30)), &mut take)
                .unwrap();
        }
    }
    let line: Vec<String> = totals
        .iter()
        .map(|(n, s, q)| format!("{n},{s},{q}"))
        .collect();
    println!("\nTOTALS {}", line.join(" "));
}

/// Child role `holder`: takes a batch and, inside the first message of it, says so
/// and waits to be killed.
fn hold_a_batch(queue: &Queue) {
    queue
        .try_recv_batch_with(8, |_| common::say_and_wait_forever("INSIDE"))
        .unwrap();
}

fn child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let parts: Vec<&str> = role.split(':').collect();
    let queue = Queue::open(parts[1]).unwrap();
    match parts[0] {
        "produce" => produce(&queue, parts[2].parse().unwrap(), parts[3].parse().unwrap()),
        "consume" => consume(&queue, parts[2].parse().unwrap(), parts[3].parse().unwrap()),
        "hold" => hold_a_batch(&queue),
        other => panic!("unknown role {other}"),
    }
    true
}

fn spawn(test: &str, role: &str) -> Child {
    common::spawn_role(test, ROLE, role.to_owned())
}

#[test]
fn processes_mixing_batches_and_singles_deliver_each_message_once_in_order() {
    const TEST: &str = "processes_mixing_batches_and_singles_deliver_each_message_once_in_order";
    const PRODUCERS: u64 = 3;
    const CONSUMERS: u64 = 2;
    const EACH: u64 = 100_000;
    if child_role() {
        return;
    }
    let name = unique("mixed");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(256, 16)).unwrap();
    let consumers: Vec<Child> = (0..CONSUMERS)
        .map(|id| spawn(TEST, &format!("consume:{name}:{PRODUCERS}:{id}")))
        .collect();
    let producers: Vec<Child> = (0..PRODUCERS)
        .map(|id| spawn(TEST, &format!("produce:{name}:{id}:{EACH}")))
        .collect();
    for mut producer in producers {
        assert!(producer.wait().unwrap().success(), "a producer failed");
    }
    for id in 0..CONSUMERS {
        queue.send(&encode(STOP, id)).unwrap();
    }
    let mut totals = vec![(0u64, 0u64, 0u64); PRODUCERS as usize];
    for consumer in consumers {
        let output = consumer.wait_with_output().unwrap();
        assert!(output.status.success(), "a consumer failed (order broken?)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("TOTALS "))
            .expect("consumer printed no totals");
        for (t, field) in totals.iter_mut().zip(line.split(' ')) {
            let v: Vec<u64> = field.split(',').map(|x| x.parse().unwrap()).collect();
            *t = (t.0 + v[0], t.1 + v[1], t.2 + v[2]);
        }
    }
    let sum: u64 = (0..EACH).sum();
    let squares: u64 = (0..EACH).map(|s| s * s).sum();
    for (producer, t) in totals.iter().enumerate() {
        assert_eq!(
            *t,
            (EACH, sum, squares),
            "producer {producer}: lost or duplicated"
        );
    }
}

#[test]
fn a_consumer_killed_mid_batch_has_each_message_delivered_again() {
    const TEST: &str = "a_consumer_killed_mid_batch_has_each_message_delivered_again";
    if child_role() {
        return;
    }
    let name = unique("killed-batch");
    let _unlink = UnlinkOnDrop(&name);
    let mut queue = Queue::create(&name, &Options::new(16, 16)).unwrap();
    let batch: Vec<[u8; 16]> = (0..8).map(|s| encode(0, s)).collect();
    assert_eq!(queue.try_send_batch(&batch), Ok(8));
    let mut holder = spawn(TEST, &format!("hold:{name}"));
    common::wait_for_line(&mut holder, "INSIDE");
    // The holder took all eight with one claim: nothing is left for a normal receive.
    assert_eq!(queue.info().occupancy, 0);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut got = Vec::new();
    while got.len() < 8 {
        let delivery = queue
            .receive_timeout(Duration::from_secs(5))
            .expect("a message of the dead consumer's batch was not delivered again");
        assert_eq!(delivery.deliveries(), 2, "each was delivered once before");
        got.push(decode(&delivery).1);
    }
    got.sort_unstable();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert!(queue.receive_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(queue.info().recovery.redelivered, 8);
    // The ring is whole again: a full lap of batches goes through.
    let lap: Vec<[u8; 16]> = (0..16).map(|s| encode(1, s)).collect();
    assert_eq!(queue.try_send_batch(&lap), Ok(16));
    assert_eq!(queue.try_send_batch(&lap[..1]), Err(TrySendError::Full));
    assert_eq!(queue.try_recv_batch(100).unwrap().len(), 16);
}

#[test]
fn batch_limits_are_exact_and_a_panicking_reader_gives_back_the_rest() {
    let name = unique("limits");
    let _unlink = UnlinkOnDrop(&name);
    let mut queue = Queue::create(&name, &Options::new(8, 16)).unwrap();
    let batch: Vec<[u8; 16]> = (0..5).map(|s| encode(0, s)).collect();
    // Nothing sent if one message is too large.
    let too_large = [vec![0u8; 17]];
    assert!(matches!(
        queue.try_send_batch(&too_large),
        Err(TrySendError::TooLarge { len: 17, max: 16 })
    ));
    assert_eq!(queue.try_send_batch(&batch), Ok(5));
    assert_eq!(
        queue.try_recv_batch_with(0, |_| panic!("asked for none")),
        Ok(0)
    );
    assert_eq!(queue.try_recv_batch(2).unwrap().len(), 2);
    // The reader panics on the first of the remaining three: that one is released
    // (as a panicking single receive releases its message), the other two go back.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = queue.try_recv_batch_with(8, |_| panic!("reader failed"));
    }));
    assert!(outcome.is_err());
    let mut back = Vec::new();
    while back.len() < 2 {
        let delivery = queue
            .receive_timeout(Duration::from_secs(5))
            .expect("the rest of the batch was not given back");
        back.push(decode(&delivery).1);
    }
    back.sort_unstable();
    assert_eq!(back, [3, 4]);
    assert!(queue.receive_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(queue.info().occupancy, 0);
}
