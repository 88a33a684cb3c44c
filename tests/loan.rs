//! Sending in place (`send_with` and its forms, issue 11): the message is built in
//! its slot. A writer that panics, or a producer killed inside it, leaves a skip that
//! consumers step over; processes sending in place deliver every message exactly
//! once and in per-producer order.

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::Duration;

use common::{unique, UnlinkOnDrop};
use shmq::{Options, Queue, SendError, TrySendError};

const ROLE: &str = "SHMQ_LOAN_ROLE";

#[test]
fn a_writer_that_panics_leaves_a_skip_and_the_queue_goes_on() {
    let name = unique("panic");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(2, 16)).unwrap();
    for _ in 0..3 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            queue.send_with(4, |_| panic!("writer failed")).unwrap();
        }));
        assert!(outcome.is_err());
        queue
            .send_with(2, |buf| buf.copy_from_slice(b"ok"))
            .unwrap();
        assert_eq!(queue.recv().unwrap(), b"ok");
    }
    assert_eq!(queue.info().occupancy, 0);
}

#[test]
fn in_place_sends_refuse_what_cannot_fit_without_running_the_writer() {
    let name = unique("refuse");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(2, 8)).unwrap();
    let mut ran = 0;
    assert_eq!(
        queue.try_send_with(9, |_| ran += 1),
        Err(TrySendError::TooLarge { len: 9, max: 8 })
    );
    assert_eq!(
        queue.send_with(9, |_| ran += 1),
        Err(SendError::TooLarge { len: 9, max: 8 })
    );
    queue.send(b"1").unwrap();
    queue.send(b"2").unwrap();
    assert_eq!(
        queue.try_send_with(1, |_| ran += 1),
        Err(TrySendError::Full)
    );
    assert_eq!(
        queue.send_with_timeout(1, Duration::from_millis(5), |_| ran += 1),
        Err(SendError::Timeout)
    );
    assert_eq!(ran, 0, "the writer ran for a message that was not sent");
    // Zero-length messages are messages too.
    assert_eq!(queue.recv().unwrap(), b"1");
    queue.send_with(0, |buf| assert!(buf.is_empty())).unwrap();
    assert_eq!(queue.recv().unwrap(), b"2");
    assert_eq!(queue.recv().unwrap(), b"");
}

/// Child roles: `produce:NAME:ID:COUNT` sends `COUNT` messages `(ID, seq)` in place;
/// `stall:NAME` claims a slot in place, says so, and never returns from the writer.
fn child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let parts: Vec<&str> = role.split(':').collect();
    let queue = Queue::open(parts[1]).unwrap();
    match parts[0] {
        "produce" => {
            let id: u64 = parts[2].parse().unwrap();
            for seq in 0..parts[3].parse::<u64>().unwrap() {
                queue
                    .send_with(16, |buf| {
                        buf[..8].copy_from_slice(&id.to_le_bytes());
                        buf[8..].copy_from_slice(&seq.to_le_bytes());
                    })
                    .unwrap();
            }
        }
        "stall" => {
            queue
                .send_with(16, |buf| {
                    buf.fill(0xEE);
                    common::say_and_wait_forever("INSIDE")
                })
                .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
    true
}

fn spawn(test: &str, role: &str) -> Child {
    common::spawn_role(test, ROLE, role.to_owned())
}

#[test]
fn a_producer_killed_inside_its_writer_leaves_a_skip() {
    const TEST: &str = "a_producer_killed_inside_its_writer_leaves_a_skip";
    if child_role() {
        return;
    }
    let name = unique("killed-writer");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(4, 16)).unwrap();
    let mut child = spawn(TEST, &format!("stall:{name}"));
    common::wait_for_line(&mut child, "INSIDE");
    queue.send(b"after").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        queue.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"after",
        "the dead writer's slot was not skipped"
    );
    assert_eq!(queue.info().recovery.skipped, 1);
}

#[test]
fn processes_sending_in_place_deliver_each_message_once_in_order() {
    const TEST: &str = "processes_sending_in_place_deliver_each_message_once_in_order";
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 50_000;
    if child_role() {
        return;
    }
    let name = unique("in-place");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(64, 16)).unwrap();
    let children: Vec<Child> = (0..PRODUCERS)
        .map(|id| spawn(TEST, &format!("produce:{name}:{id}:{EACH}")))
        .collect();
    let mut next: HashMap<u64, u64> = HashMap::new();
    for _ in 0..PRODUCERS * EACH {
        let message = queue
            .recv_timeout(Duration::from_secs(10))
            .expect("stalled");
        let id = u64::from_le_bytes(message[..8].try_into().unwrap());
        let seq = u64::from_le_bytes(message[8..].try_into().unwrap());
        let expected = next.entry(id).or_default();
        assert_eq!(
            seq, *expected,
            "producer {id}: lost, duplicated or out of order"
        );
        *expected += 1;
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(queue.try_recv(), Err(shmq::TryRecvError::Empty));
    assert_eq!(next.values().sum::<u64>(), PRODUCERS * EACH);
}
