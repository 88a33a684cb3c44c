//! Broadcast segments across processes: exact accounting, back-pressure, lag, and
//! kill -9 of either role.

mod common;

use std::time::Duration;

use common::{say_and_wait_forever, spawn_role, unique, wait_for_line, UnlinkOnDrop};
use shmq::broadcast::{
    PublishError, Publisher, RecvError, SlowSubscriber, Subscriber, TryPublishError, TryRecvError,
};
use shmq::{Error, Options, Queue};

const ROLE: &str = "SHMQ_BROADCAST_ROLE";
const PUBLISHERS: u32 = 2;
const PER_PUBLISHER: u32 = 20_000;

fn encode(publisher: u32, seq: u32) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&publisher.to_le_bytes());
    bytes[4..].copy_from_slice(&seq.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(bytes.len(), 8, "torn or foreign message");
    let word = |r: std::ops::Range<usize>| u32::from_le_bytes(bytes[r].try_into().unwrap());
    (word(0..4), word(4..8))
}

/// Child side of `every_subscriber_gets_every_message_in_per_publisher_order`:
/// subscribes, says so, receives every message of every publisher in order.
fn subscriber_child(name: &str) {
    let subscriber = Subscriber::open(name).expect("subscribe");
    println!("\nsubscribed");
    let mut next = [0u32; PUBLISHERS as usize];
    let mut buffer = [0u8; 8];
    for _ in 0..PUBLISHERS * PER_PUBLISHER {
        let len = subscriber
            .recv_into_timeout(&mut buffer, Duration::from_secs(30))
            .expect("lossless: every message arrives");
        let (publisher, seq) = decode(&buffer[..len]);
        assert_eq!(
            seq, next[publisher as usize],
            "publisher {publisher} out of order"
        );
        next[publisher as usize] += 1;
    }
    assert_eq!(
        subscriber.try_recv(),
        Err(TryRecvError::Empty),
        "nothing beyond"
    );
    println!("\nreceived all");
}

/// Reads a child's stdout until the line `line`, then drains the rest on a thread
/// (so the child's test harness can still write its report), which answers
/// whether `last` came too.
fn read_until_then_drain(
    child: &mut std::process::Child,
    line: &str,
    last: &'static str,
) -> std::thread::JoinHandle<bool> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let found = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.trim() == line);
    assert!(found, "the child ended before saying {line}");
    // Read to the end (not `any`, which would stop early and close the pipe).
    std::thread::spawn(move || {
        let mut seen = false;
        for l in lines.map_while(Result::ok) {
            seen |= l.trim() == last;
        }
        seen
    })
}

#[test]
fn every_subscriber_gets_every_message_in_per_publisher_order() {
    if let Ok(name) = std::env::var(ROLE) {
        return subscriber_child(&name);
    }
    let name = unique("every-subscriber");
    let _unlink = UnlinkOnDrop(&name);
    let first = Publisher::create(&name, &Options::new(64, 8), SlowSubscriber::Lossless).unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            let mut child = spawn_role(
                "every_subscriber_gets_every_message_in_per_publisher_order",
                ROLE,
                name.clone(),
            );
            let report = read_until_then_drain(&mut child, "subscribed", "received all");
            (child, report)
        })
        .collect();
    let second = Publisher::open(&name).unwrap();
    let publishing = [first, second]
        .into_iter()
        .enumerate()
        .map(|(id, publisher)| {
            std::thread::spawn(move || {
                for seq in 0..PER_PUBLISHER {
                    publisher.publish(&encode(id as u32, seq)).unwrap();
                }
            })
        });
    for thread in publishing.collect::<Vec<_>>() {
        thread.join().unwrap();
    }
    for (child, _) in &mut children {
        assert!(child.wait().unwrap().success(), "a subscriber failed");
    }
    for (_, report) in children {
        assert!(
            report.join().unwrap(),
            "a subscriber did not receive everything"
        );
    }
}

#[test]
fn overwrite_lag_counts_exactly_what_was_missed() {
    let name = unique("overwrite-lag");
    let _unlink = UnlinkOnDrop(&name);
    const TOTAL: u32 = 200_000;
    let publisher =
        Publisher::create(&name, &Options::new(16, 8), SlowSubscriber::Overwrite).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    let flood = std::thread::spawn(move || {
        for seq in 0..TOTAL {
            publisher
                .try_publish(&encode(0, seq))
                .expect("overwrite mode never waits");
        }
    });
    // One publisher from position 0: a message's sequence number is its position.
    let (mut expected, mut received, mut missed) = (0u32, 0u32, 0u64);
    while expected < TOTAL {
        match subscriber.recv_timeout(Duration::from_secs(10)) {
            Ok(bytes) => {
                let (_, seq) = decode(&bytes);
                assert_eq!(seq, expected, "a message out of place");
                expected += 1;
                received += 1;
            }
            Err(RecvError::Lagged { missed: n }) => {
                assert!(n > 0);
                expected += n as u32;
                missed += n;
            }
            Err(e) => panic!("unexpected {e:?} at {expected}"),
        }
    }
    flood.join().unwrap();
    assert_eq!(expected, TOTAL, "lag counts overshoot");
    assert_eq!(u64::from(received) + missed, u64::from(TOTAL));
    assert_eq!(subscriber.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn lossless_publisher_is_held_back_by_the_slowest_subscriber_only() {
    let name = unique("back-pressure");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(4, 8), SlowSubscriber::Lossless).unwrap();
    let fast = Subscriber::open(&name).unwrap();
    let slow = Subscriber::open(&name).unwrap();
    for n in 0..4u8 {
        publisher.try_publish(&[n]).unwrap();
        assert_eq!(fast.try_recv().unwrap(), [n]);
    }
    assert_eq!(publisher.try_publish(b"x"), Err(TryPublishError::Full));
    assert_eq!(
        publisher.publish_timeout(b"x", Duration::from_millis(20)),
        Err(PublishError::Timeout)
    );
    assert_eq!(slow.try_recv().unwrap(), [0]);
    publisher.try_publish(&[4]).unwrap();
    assert_eq!(publisher.try_publish(b"y"), Err(TryPublishError::Full));
    drop(slow); // leaving stops gating at once
    publisher.try_publish(&[5]).unwrap();
    assert_eq!(fast.try_recv().unwrap(), [4]);
    assert_eq!(fast.try_recv().unwrap(), [5]);
}

#[test]
fn a_subscriber_receives_only_what_is_published_after_it_subscribed() {
    let name = unique("late-subscriber");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(8, 8), SlowSubscriber::Lossless).unwrap();
    publisher.publish(b"early").unwrap();
    let late = Subscriber::open(&name).unwrap();
    assert_eq!(late.try_recv(), Err(TryRecvError::Empty));
    publisher.publish(b"late").unwrap();
    assert_eq!(late.try_recv().unwrap(), b"late");
    let mut small = [0u8; 2];
    publisher.publish(b"longer").unwrap();
    assert_eq!(
        late.try_recv_into(&mut small),
        Err(TryRecvError::BufferTooSmall { len: 6 })
    );
    assert_eq!(
        late.try_recv().unwrap(),
        b"longer",
        "a message too long for the buffer stays"
    );
}

#[test]
fn work_queue_and_broadcast_handles_refuse_each_others_segments() {
    let broadcast = unique("kind-broadcast");
    let _unlink = UnlinkOnDrop(&broadcast);
    let _publisher =
        Publisher::create(&broadcast, &Options::new(2, 8), SlowSubscriber::Overwrite).unwrap();
    let refused = Queue::open(&broadcast).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::WrongKind {
                found: "broadcast (overwrite)",
                ..
            }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("shmq::broadcast::Subscriber"),
        "{refused}"
    );
    // The work queue's admin calls refuse it too, rather than read its lines as a
    // work queue's, and leave it in place.
    for refused in [
        Queue::inspect(&broadcast).map(|_| ()).unwrap_err(),
        Queue::remove_if_unused(&broadcast).map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(refused, Error::WrongKind { .. }), "{refused}");
        assert!(refused.to_string().contains("Snapshot::read"), "{refused}");
    }
    let listed = Queue::list().unwrap();
    let entry = listed.iter().find(|entry| entry.name == broadcast).unwrap();
    assert!(matches!(entry.info, Err(Error::WrongKind { .. })));
    assert!(Subscriber::open(&broadcast).is_ok(), "still there");
    let queue = unique("kind-queue");
    let _unlink_queue = UnlinkOnDrop(&queue);
    let _queue = Queue::create(&queue, &Options::new(2, 8)).unwrap();
    let refused = Subscriber::open(&queue).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::WrongKind {
                found: "work queue",
                ..
            }
        ),
        "{refused}"
    );
}

/// Child side of the kill tests: attaches in the role named after the `:` and waits
/// to be killed.
fn idle_child(spec: &str) -> ! {
    let (role, name) = spec.split_once(':').expect("role:name");
    let _handle: Box<dyn std::any::Any> = match role {
        "subscriber" => Box::new(Subscriber::open(name).expect("subscribe")),
        _ => Box::new(Publisher::open(name).expect("publisher")),
    };
    say_and_wait_forever("attached")
}

fn kill_9(child: &mut std::process::Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

#[test]
fn killed_subscriber_stops_holding_back_lossless_publishers() {
    if let Ok(spec) = std::env::var(ROLE) {
        idle_child(&spec);
    }
    let name = unique("dead-subscriber");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(4, 8), SlowSubscriber::Lossless).unwrap();
    let live = Subscriber::open(&name).unwrap();
    let mut child = spawn_role(
        "killed_subscriber_stops_holding_back_lossless_publishers",
        ROLE,
        format!("subscriber:{name}"),
    );
    wait_for_line(&mut child, "attached");
    for n in 0..4u8 {
        publisher.try_publish(&[n]).unwrap();
        assert_eq!(live.try_recv().unwrap(), [n]);
    }
    // The idle child gates the ring while it lives.
    assert_eq!(publisher.try_publish(b"x"), Err(TryPublishError::Full));
    kill_9(&mut child);
    for n in 4..40u8 {
        publisher
            .publish_timeout(&[n], Duration::from_secs(5))
            .expect("the dead hold nobody back");
        assert_eq!(live.try_recv().unwrap(), [n]);
    }
    // Its record was reclaimed: a table of 2 records... fits a new subscriber again.
    drop(Subscriber::open(&name).expect("the dead subscriber's record is free again"));
}

#[test]
fn killed_publisher_does_not_stop_subscribers_and_its_record_is_reclaimed() {
    if let Ok(spec) = std::env::var(ROLE) {
        idle_child(&spec);
    }
    let name = unique("dead-publisher");
    let _unlink = UnlinkOnDrop(&name);
    // Three records: the live publisher, the subscriber, and one for the child.
    let options = Options::new(4, 8).max_participants(3);
    let publisher = Publisher::create(&name, &options, SlowSubscriber::Lossless).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    let mut child = spawn_role(
        "killed_publisher_does_not_stop_subscribers_and_its_record_is_reclaimed",
        ROLE,
        format!("publisher:{name}"),
    );
    wait_for_line(&mut child, "attached");
    assert!(matches!(
        Publisher::open(&name),
        Err(Error::ParticipantTableFull { .. })
    ));
    kill_9(&mut child);
    for n in 0..20u8 {
        publisher
            .publish_timeout(&[n], Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            subscriber.recv_timeout(Duration::from_secs(5)).unwrap(),
            [n]
        );
    }
    // Attaching sweeps: the dead publisher's record is free for a new one.
    let replacement = Publisher::open(&name).expect("the dead publisher's record was reclaimed");
    replacement.publish(b"new").unwrap();
    assert_eq!(
        subscriber.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"new"
    );
}
