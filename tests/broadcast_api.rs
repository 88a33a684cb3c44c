//! Broadcast API families beyond copy-in/copy-out: publishing in place (loans),
//! batches on both sides, with exact accounting, a panicking writer, and a
//! publisher killed inside its writer.

mod common;

use std::time::Duration;

use common::{say_and_wait_forever, spawn_role, unique, wait_for_line, UnlinkOnDrop};
use shmq::broadcast::{
    PublishError, Publisher, RecvError, SlowSubscriber, Subscriber, TryPublishError, TryRecvError,
};
use shmq::Options;

const ROLE: &str = "SHMQ_BROADCAST_API_ROLE";

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

#[test]
fn publish_with_builds_the_message_in_place_for_every_subscriber() {
    let name = unique("loan");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(4, 16), SlowSubscriber::Lossless).unwrap();
    let first = Subscriber::open(&name).unwrap();
    let second = Subscriber::open(&name).unwrap();
    for n in 0..40u32 {
        let written = publisher
            .publish_with_timeout(8, Duration::from_secs(5), |buf| {
                buf.copy_from_slice(&encode(7, n));
                n * 2
            })
            .unwrap();
        assert_eq!(written, n * 2, "the writer's result is returned");
        assert_eq!(decode(&first.try_recv().unwrap()), (7, n));
        assert_eq!(decode(&second.try_recv().unwrap()), (7, n));
    }
    assert_eq!(
        publisher.try_publish_with(17, |_| ()),
        Err(TryPublishError::TooLarge { len: 17, max: 16 })
    );
    assert_eq!(
        publisher.publish_with(17, |_| ()),
        Err(PublishError::TooLarge { len: 17, max: 16 })
    );
    // Lossless: a full ring refuses the loan and never runs the writer.
    for n in 0..4u8 {
        publisher.try_publish(&[n]).unwrap();
    }
    let mut ran = false;
    assert_eq!(
        publisher.try_publish_with(1, |_| ran = true),
        Err(TryPublishError::Full)
    );
    assert_eq!(
        publisher.publish_with_timeout(1, Duration::from_millis(5), |_| ran = true),
        Err(PublishError::Timeout)
    );
    assert!(!ran, "a writer runs only with a claimed position");
}

/// A writer that panics leaves its position published as a skip: subscribers never
/// see it (torn or stale), are never stuck behind it, and get everything after.
fn panicking_writer_is_stepped_over(slow: SlowSubscriber) {
    let name = unique(&format!("loan-panic-{slow:?}"));
    let _unlink = UnlinkOnDrop(&name);
    let publisher = Publisher::create(&name, &Options::new(4, 8), slow).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    // A subscriber already waiting when the writer panics wakes and goes on.
    let waiting = Subscriber::open(&name).unwrap();
    let waiter = std::thread::spawn(move || {
        let got = waiting.recv_timeout(Duration::from_secs(10));
        (got, waiting)
    });
    std::thread::sleep(Duration::from_millis(20));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        publisher.publish_with::<()>(8, |buf| {
            buf.copy_from_slice(b"HALFDONE");
            panic!("writer fails midway");
        })
    }));
    assert!(unwound.is_err(), "the panic continues to the caller");
    publisher.publish(b"after").unwrap();
    let (got, waiting) = waiter.join().unwrap();
    assert_eq!(
        got.unwrap(),
        b"after",
        "the waiting subscriber stepped over"
    );
    assert_eq!(subscriber.try_recv().unwrap(), b"after");
    assert_eq!(subscriber.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(waiting.try_recv(), Err(TryRecvError::Empty));
    // And the ring keeps working a lap further (the skip's slot is reusable).
    for n in 0..8u8 {
        publisher.publish(&[n]).unwrap();
        assert_eq!(subscriber.try_recv().unwrap(), [n]);
        assert_eq!(waiting.try_recv().unwrap(), [n]);
    }
}

#[test]
fn a_panicking_writer_leaves_a_skip_lossless() {
    panicking_writer_is_stepped_over(SlowSubscriber::Lossless);
}

#[test]
fn a_panicking_writer_leaves_a_skip_overwrite() {
    panicking_writer_is_stepped_over(SlowSubscriber::Overwrite);
}

/// Child side of `publisher_killed_inside_its_writer_is_skipped`: claims a
/// position with `publish_with` and, inside the writer, says so and waits to be
/// killed.
fn blocked_writer_child(name: &str) -> ! {
    let publisher = Publisher::open(name).expect("attach a publisher");
    let _ = publisher.publish_with::<()>(8, |buf| {
        buf.copy_from_slice(b"PARTIAL!");
        say_and_wait_forever("inside the writer")
    });
    unreachable!("the writer never returns")
}

#[test]
fn publisher_killed_inside_its_writer_is_skipped() {
    if let Ok(name) = std::env::var(ROLE) {
        blocked_writer_child(&name);
    }
    let name = unique("loan-kill");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(128, 8), SlowSubscriber::Lossless).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    publisher.publish(&encode(0, 0)).unwrap();
    let mut child = spawn_role(
        "publisher_killed_inside_its_writer_is_skipped",
        ROLE,
        name.clone(),
    );
    wait_for_line(&mut child, "inside the writer");
    // Published after the child's claim: held behind it while the child lives.
    publisher.publish(&encode(0, 1)).unwrap();
    assert_eq!(decode(&subscriber.try_recv().unwrap()), (0, 0));
    assert_eq!(
        subscriber.recv_timeout(Duration::from_millis(30)),
        Err(RecvError::Timeout),
        "the live child's claim holds the subscriber"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    const MORE: u32 = 100;
    for seq in 2..MORE {
        publisher
            .publish_timeout(&encode(0, seq), Duration::from_secs(10))
            .expect("the dead writer's slot is swept");
    }
    // Exactly the messages published, in order: the killed one is skipped, not
    // delivered torn ("PARTIAL!") and not counted.
    for seq in 1..MORE {
        let got = subscriber.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(decode(&got), (0, seq));
    }
    assert_eq!(subscriber.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn batches_are_received_in_order_by_every_subscriber_lossless() {
    let name = unique("batch-lossless");
    let _unlink = UnlinkOnDrop(&name);
    const PER_PUBLISHER: u32 = 30_000;
    let first = Publisher::create(&name, &Options::new(64, 8), SlowSubscriber::Lossless).unwrap();
    let second = Publisher::open(&name).unwrap();
    let subscribers: Vec<_> = (0..2).map(|_| Subscriber::open(&name).unwrap()).collect();
    let receivers: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .map(|(which, subscriber)| {
            std::thread::spawn(move || {
                let mut next = [0u32; 2];
                let mut received = 0u32;
                let mut calls = 0u32;
                while received < 2 * PER_PUBLISHER {
                    let mut check = |bytes: &[u8]| {
                        let (publisher, seq) = decode(bytes);
                        assert_eq!(seq, next[publisher as usize], "out of order");
                        next[publisher as usize] += 1;
                    };
                    let n = if which == 0 {
                        subscriber.recv_batch_with(50, Some(Duration::from_secs(10)), &mut check)
                    } else {
                        subscriber
                            .recv_batch(50, Some(Duration::from_secs(10)))
                            .map(|batch| {
                                batch.iter().for_each(|m| check(m));
                                batch.len()
                            })
                    }
                    .expect("lossless: every message arrives");
                    assert!(n > 0 && n <= 50);
                    received += n as u32;
                    calls += 1;
                }
                assert_eq!(subscriber.try_recv_batch(50), Err(TryRecvError::Empty));
                (received, calls)
            })
        })
        .collect();
    let publishing: Vec<_> = [first, second]
        .into_iter()
        .enumerate()
        .map(|(id, publisher)| {
            std::thread::spawn(move || {
                let mut seq = 0;
                while seq < PER_PUBLISHER {
                    let run = (seq % 17 + 1).min(PER_PUBLISHER - seq);
                    let batch: Vec<_> = (seq..seq + run).map(|s| encode(id as u32, s)).collect();
                    if id == 0 {
                        publisher.publish_batch(&batch).unwrap();
                    } else {
                        let sent = publisher
                            .publish_batch_timeout(&batch, Duration::from_secs(10))
                            .unwrap();
                        assert_eq!(sent, batch.len());
                    }
                    seq += run;
                }
            })
        })
        .collect();
    for thread in publishing {
        thread.join().unwrap();
    }
    for receiver in receivers {
        let (received, calls) = receiver.join().unwrap();
        assert_eq!(received, 2 * PER_PUBLISHER, "exactly every message");
        assert!(calls <= received);
    }
}

#[test]
fn batch_receive_in_overwrite_mode_accounts_exactly_for_lags() {
    let name = unique("batch-overwrite");
    let _unlink = UnlinkOnDrop(&name);
    const TOTAL: u32 = 300_000;
    let publisher =
        Publisher::create(&name, &Options::new(16, 8), SlowSubscriber::Overwrite).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    let flood = std::thread::spawn(move || {
        let mut seq = 0;
        while seq < TOTAL {
            let run = (seq % 5 + 1).min(TOTAL - seq);
            let batch: Vec<_> = (seq..seq + run).map(|s| encode(0, s)).collect();
            assert_eq!(
                publisher.try_publish_batch(&batch),
                Ok(run as usize),
                "overwrite mode never waits"
            );
            seq += run;
            if seq % 64 < run {
                // Now and then a pause, so the subscriber both keeps up (whole
                // batches) and falls behind (lags), many times over.
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    });
    // One publisher from position 0: a message's sequence number is its position.
    let (mut expected, mut received, mut missed, mut lags) = (0u32, 0u64, 0u64, 0u32);
    while expected < TOTAL {
        let got = subscriber.recv_batch_with(8, Some(Duration::from_secs(10)), |bytes| {
            let (_, seq) = decode(bytes);
            assert_eq!(seq, expected, "a message out of place (or torn)");
            expected += 1;
            received += 1;
        });
        match got {
            Ok(n) => assert!((1..=8).contains(&n)),
            Err(RecvError::Lagged { missed: n }) => {
                assert!(n > 0);
                expected += n as u32;
                missed += n;
                lags += 1;
            }
            Err(e) => panic!("unexpected {e:?} at {expected}"),
        }
    }
    flood.join().unwrap();
    assert_eq!(expected, TOTAL, "lag counts overshoot");
    assert_eq!(received + missed, u64::from(TOTAL));
    assert_eq!(subscriber.try_recv_batch(8), Err(TryRecvError::Empty));
    eprintln!("received {received}, missed {missed} in {lags} lags");
    assert!(
        received > 0,
        "the subscriber received nothing: the test proves little"
    );
}

#[test]
fn a_batch_stops_before_a_lag_and_the_next_call_reports_it() {
    let name = unique("batch-lag-next");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(4, 8), SlowSubscriber::Overwrite).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    publisher.publish_batch(&[[0u8], [1], [2], [3]]).unwrap();
    assert_eq!(subscriber.try_recv_batch(2).unwrap(), [[0], [1]]);
    publisher.publish_batch(&[[4u8], [5]]).unwrap();
    // 4 and 5 took the slots of 0 and 1: 2..=5 are held, a lap, in one batch.
    assert_eq!(subscriber.try_recv_batch(8).unwrap(), [[2], [3], [4], [5]]);
    publisher
        .publish_batch(&(6..20u8).map(|n| [n]).collect::<Vec<_>>())
        .unwrap();
    // 6..=15 overwritten (the ring holds 16..=19).
    assert_eq!(
        subscriber.try_recv_batch(8),
        Err(TryRecvError::Lagged { missed: 10 })
    );
    assert_eq!(
        subscriber.try_recv_batch(8).unwrap(),
        [[16], [17], [18], [19]]
    );
    assert_eq!(subscriber.try_recv_batch(0), Ok(Vec::new()));
    assert_eq!(subscriber.try_recv_batch(8), Err(TryRecvError::Empty));
}

#[test]
fn publish_batch_is_all_or_none_on_size_and_partial_on_room() {
    let name = unique("batch-publish");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(4, 4), SlowSubscriber::Lossless).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    assert_eq!(
        publisher.try_publish_batch(&[&b"ok"[..], b"toolong"]),
        Err(TryPublishError::TooLarge { len: 7, max: 4 })
    );
    assert_eq!(
        subscriber.try_recv(),
        Err(TryRecvError::Empty),
        "none published"
    );
    assert_eq!(
        publisher.try_publish_batch(&[b"a", b"b", b"c", b"d", b"e"]),
        Ok(4)
    );
    assert_eq!(
        publisher.try_publish_batch(&[b"e"]),
        Err(TryPublishError::Full)
    );
    assert_eq!(
        publisher.publish_batch_timeout(&[b"e"], Duration::from_millis(5)),
        Ok(0)
    );
    let mut lengths = Vec::new();
    assert_eq!(
        subscriber.try_recv_batch_with(3, |bytes| lengths.push(bytes.to_vec())),
        Ok(3)
    );
    assert_eq!(lengths, [b"a", b"b", b"c"]);
    assert_eq!(
        publisher.try_publish_batch(&[b"e", b"f", b"g", b"h"]),
        Ok(3)
    );
    assert_eq!(
        subscriber.try_recv_batch(16).unwrap(),
        [b"d", b"e", b"f", b"g"]
    );
    let empty: [&[u8]; 0] = [];
    assert_eq!(publisher.try_publish_batch(&empty), Ok(0));
}

/// A batch message whose bytes are read through `as_ref`: the `block_at`-th read
/// (counting every message's) says so and waits to be killed. The publisher reads
/// each message once to check its length, then once to copy it, in order, so this
/// stops a batch publish in the middle of its claimed run.
struct StopsAt<'a> {
    bytes: [u8; 8],
    reads: &'a std::cell::Cell<u32>,
    block_at: u32,
}

impl AsRef<[u8]> for StopsAt<'_> {
    fn as_ref(&self) -> &[u8] {
        self.reads.set(self.reads.get() + 1);
        if self.reads.get() == self.block_at {
            say_and_wait_forever("inside the run");
        }
        &self.bytes
    }
}

/// Child side of `publisher_killed_in_the_middle_of_a_batch_run_is_skipped`:
/// publishes a batch of 5 and stops inside it after copying 2.
fn run_child(name: &str) -> ! {
    let publisher = Publisher::open(name).expect("attach a publisher");
    let reads = std::cell::Cell::new(0);
    let batch: Vec<_> = (0..5)
        .map(|seq| StopsAt {
            bytes: encode(1, seq),
            reads: &reads,
            // 5 length checks, then copies of 0 and 1, then the third copy stops.
            block_at: 5 + 3,
        })
        .collect();
    let _ = publisher.try_publish_batch(&batch);
    unreachable!("the batch never returns")
}

#[test]
fn publisher_killed_in_the_middle_of_a_batch_run_is_skipped() {
    if let Ok(name) = std::env::var(ROLE) {
        run_child(&name);
    }
    let name = unique("run-kill");
    let _unlink = UnlinkOnDrop(&name);
    // Room for all 20 messages below while the subscriber (this thread) waits.
    let publisher =
        Publisher::create(&name, &Options::new(32, 8), SlowSubscriber::Lossless).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    let mut child = spawn_role(
        "publisher_killed_in_the_middle_of_a_batch_run_is_skipped",
        ROLE,
        name.clone(),
    );
    wait_for_line(&mut child, "inside the run");
    // The child claimed its run of 5 with one CAS: this lands after all of it.
    publisher.publish(&encode(0, 0)).unwrap();
    assert_eq!(decode(&subscriber.try_recv().unwrap()), (1, 0));
    assert_eq!(decode(&subscriber.try_recv().unwrap()), (1, 1));
    assert_eq!(
        subscriber.recv_timeout(Duration::from_millis(30)),
        Err(RecvError::Timeout),
        "held behind the live child's unpublished third position"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // The rest of the run (3 positions) is swept as skips; nothing of it arrives.
    for seq in 1..20 {
        publisher.publish(&encode(0, seq)).unwrap();
    }
    for seq in 0..20 {
        let got = subscriber.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(decode(&got), (0, seq), "exactly the published messages");
    }
    assert_eq!(subscriber.try_recv(), Err(TryRecvError::Empty));
    // The ring goes on laps past the skips, batches and all.
    for round in 0..4u32 {
        let batch: Vec<_> = (0..7).map(|k| encode(2, round * 7 + k)).collect();
        assert_eq!(publisher.try_publish_batch(&batch), Ok(7));
        let got = subscriber.try_recv_batch(32).unwrap();
        let seqs: Vec<_> = got.iter().map(|m| decode(m)).collect();
        let expected: Vec<_> = (0..7).map(|k| (2, round * 7 + k)).collect();
        assert_eq!(seqs, expected);
    }
}
