//! The async broadcast handles (feature `tokio`): wake-ups through the waker thread,
//! lags, cancellation at arbitrary points without loss or duplication, and a
//! publisher in another process.
#![cfg(feature = "tokio")]

mod common;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use common::{say_and_wait_forever, spawn_role, unique, wait_for_line, UnlinkOnDrop};
use futures::StreamExt;
use shmq::broadcast::{
    AsyncPublisher, AsyncSubscriber, PublishError, Publisher, RecvError, SlowSubscriber, Subscriber,
};
use shmq::Options;

const ROLE: &str = "SHMQ_BROADCAST_ASYNC_ROLE";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// A small deterministic generator for "random" cancellation points.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Polls `future` at most `polls` times, yielding to the runtime in between, and
/// drops it if it is not done by then: a cancellation at a chosen point.
async fn poll_at_most<F: Future>(future: F, polls: u64) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    for _ in 0..polls {
        if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
            return Some(output);
        }
        tokio::task::yield_now().await;
    }
    None
}

#[test]
fn an_awaiting_subscriber_is_woken_by_a_publish() {
    let name = unique("async-wake");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(8, 16), SlowSubscriber::Lossless).unwrap();
    let mut subscriber = AsyncSubscriber::open(&name).unwrap();
    runtime().block_on(async move {
        let receiver = tokio::spawn(async move {
            let first = subscriber.recv().await;
            let second = subscriber.recv_with(|bytes| bytes.len()).await;
            (first, second)
        });
        // Long enough for the task to find nothing and park with the waker thread.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!receiver.is_finished(), "nothing was published yet");
        std::thread::spawn(move || {
            publisher.publish(b"wake up").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            publisher.publish(b"again").unwrap();
        });
        let (first, second) = tokio::time::timeout(Duration::from_secs(10), receiver)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(first.unwrap(), b"wake up");
        assert_eq!(second.unwrap(), 5);
    });
}

#[test]
fn an_awaiting_lossless_publisher_is_woken_when_the_subscriber_reads() {
    let name = unique("async-publisher-wake");
    let _unlink = UnlinkOnDrop(&name);
    let mut publisher =
        AsyncPublisher::create(&name, &Options::new(2, 8), SlowSubscriber::Lossless).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    runtime().block_on(async move {
        publisher.publish(b"1").await.unwrap();
        publisher
            .publish_with(1, |buf| buf[0] = b'2')
            .await
            .unwrap();
        // Full: the third waits for the subscriber.
        assert!(
            tokio::time::timeout(Duration::from_millis(30), publisher.publish(b"3"))
                .await
                .is_err(),
            "lossless: it waits"
        );
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let got: Vec<_> = (0..3).map(|_| subscriber.recv().unwrap()).collect();
            (got, subscriber)
        });
        tokio::time::timeout(Duration::from_secs(10), publisher.publish(b"3"))
            .await
            .expect("woken when the subscriber read")
            .unwrap();
        let (got, subscriber) = reader.join().unwrap();
        assert_eq!(
            got,
            [b"1", b"2", b"3"],
            "the cancelled publish published nothing"
        );
        assert_eq!(
            subscriber.try_recv(),
            Err(shmq::broadcast::TryRecvError::Empty)
        );
        assert_eq!(
            publisher.publish(&[0; 9]).await,
            Err(PublishError::TooLarge { len: 9, max: 8 })
        );
    });
}

#[test]
fn an_async_subscriber_is_told_exactly_what_it_missed() {
    let name = unique("async-lag");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(4, 8), SlowSubscriber::Overwrite).unwrap();
    let mut subscriber = AsyncSubscriber::open(&name).unwrap();
    runtime().block_on(async move {
        for n in 0..10u8 {
            publisher.publish(&[n]).unwrap();
        }
        assert_eq!(
            subscriber.recv().await,
            Err(RecvError::Lagged { missed: 6 })
        );
        assert_eq!(subscriber.recv_batch(2).await.unwrap(), [[6], [7]]);
        let rest: Vec<_> = (&mut subscriber).take(2).collect().await;
        assert_eq!(rest, [Ok(vec![8]), Ok(vec![9])]);
        for n in 10..20u8 {
            publisher.publish(&[n]).unwrap();
        }
        let lagged = subscriber.next().await.unwrap();
        assert_eq!(
            lagged,
            Err(RecvError::Lagged { missed: 6 }),
            "a stream item"
        );
        assert_eq!(subscriber.recv().await.unwrap(), [16]);
    });
}

#[test]
fn receive_futures_dropped_at_random_points_lose_nothing() {
    let name = unique("async-cancel-recv");
    let _unlink = UnlinkOnDrop(&name);
    const TOTAL: u32 = 3_000;
    let publisher =
        Publisher::create(&name, &Options::new(16, 8), SlowSubscriber::Lossless).unwrap();
    let mut subscriber = AsyncSubscriber::open(&name).unwrap();
    let (received, cancelled) = runtime().block_on(async move {
        let feeder = std::thread::spawn(move || {
            let mut rng = Lcg(7);
            for seq in 0..TOTAL {
                if rng.next() % 8 == 0 {
                    std::thread::sleep(Duration::from_micros(rng.next() % 2_000));
                }
                publisher
                    .publish_timeout(&seq.to_le_bytes(), Duration::from_secs(10))
                    .unwrap();
            }
        });
        let mut rng = Lcg(11);
        let (mut next, mut cancelled) = (0u32, 0u32);
        while next < TOTAL {
            // Dropped after 1 to 6 polls, or by a timer.
            let polls = 1 + rng.next() % 6;
            let got = match rng.next() % 4 {
                0 => poll_at_most(subscriber.recv(), polls).await,
                1 => poll_at_most(subscriber.recv_batch(5), polls)
                    .await
                    .map(|batch| batch.map(|b| b.concat())),
                2 => poll_at_most(subscriber.next(), polls)
                    .await
                    .map(|item| item.expect("the stream never ends")),
                _ => tokio::time::timeout(Duration::from_millis(1), subscriber.recv())
                    .await
                    .ok(),
            };
            let Some(got) = got else {
                cancelled += 1;
                continue;
            };
            for chunk in got.expect("lossless").chunks(4) {
                let seq = u32::from_le_bytes(chunk.try_into().unwrap());
                assert_eq!(seq, next, "lost or duplicated by a cancellation");
                next += 1;
            }
        }
        feeder.join().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), subscriber.recv())
                .await
                .is_err(),
            "nothing beyond"
        );
        (next, cancelled)
    });
    assert_eq!(received, TOTAL);
    eprintln!("{cancelled} receive futures dropped while pending");
    assert!(
        cancelled > 0,
        "no future was cancelled: the test proves little"
    );
}

#[test]
fn publish_futures_dropped_at_random_points_publish_exactly_once() {
    let name = unique("async-cancel-publish");
    let _unlink = UnlinkOnDrop(&name);
    const TOTAL: u32 = 2_000;
    let mut publisher =
        AsyncPublisher::create(&name, &Options::new(4, 8), SlowSubscriber::Lossless).unwrap();
    let subscriber = Subscriber::open(&name).unwrap();
    let reader = std::thread::spawn(move || {
        let mut rng = Lcg(3);
        for seq in 0..TOTAL {
            if rng.next() % 4 == 0 {
                std::thread::sleep(Duration::from_micros(rng.next() % 1_000));
            }
            let got = subscriber.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, seq.to_le_bytes(), "lost or duplicated");
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            subscriber.try_recv(),
            Err(shmq::broadcast::TryRecvError::Empty),
            "a cancelled publish published after all"
        );
    });
    let cancelled = runtime().block_on(async move {
        let mut rng = Lcg(5);
        let (mut seq, mut cancelled) = (0u32, 0u32);
        while seq < TOTAL {
            let polls = 1 + rng.next() % 6;
            let message = seq.to_le_bytes();
            let done = match rng.next() % 3 {
                0 => poll_at_most(publisher.publish(&message), polls).await,
                1 => {
                    let write = |buf: &mut [u8]| buf.copy_from_slice(&message);
                    poll_at_most(publisher.publish_with(4, write), polls).await
                }
                _ => tokio::time::timeout(Duration::from_millis(1), publisher.publish(&message))
                    .await
                    .ok(),
            };
            match done {
                Some(published) => {
                    published.unwrap();
                    seq += 1;
                }
                None => cancelled += 1,
            }
        }
        cancelled
    });
    reader.join().unwrap();
    eprintln!("{cancelled} publish futures dropped while pending");
    assert!(
        cancelled > 0,
        "no future was cancelled: the test proves little"
    );
}

/// Child side of `an_async_subscriber_receives_from_a_publisher_in_another_process`.
fn publisher_child(name: &str) {
    let publisher = Publisher::open(name).expect("attach a publisher");
    for seq in 0..PER_CHILD {
        publisher
            .publish_timeout(&seq.to_le_bytes(), Duration::from_secs(30))
            .expect("lossless: the subscriber keeps up");
    }
}

const PER_CHILD: u32 = 20_000;

#[test]
fn an_async_subscriber_receives_from_a_publisher_in_another_process() {
    if let Ok(name) = std::env::var(ROLE) {
        return publisher_child(&name);
    }
    let name = unique("async-cross-process");
    let _unlink = UnlinkOnDrop(&name);
    let mut subscriber =
        AsyncSubscriber::create(&name, &Options::new(32, 8), SlowSubscriber::Lossless).unwrap();
    let mut child = spawn_role(
        "an_async_subscriber_receives_from_a_publisher_in_another_process",
        ROLE,
        name.clone(),
    );
    let received = runtime().block_on(async move {
        let mut next = 0u32;
        while next < PER_CHILD {
            let got = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
                .await
                .expect("the other process's publishes wake us")
                .expect("the stream never ends")
                .expect("lossless");
            assert_eq!(got, next.to_le_bytes(), "out of order");
            next += 1;
        }
        next
    });
    assert!(
        child.wait().unwrap().success(),
        "the publisher child failed"
    );
    assert_eq!(received, PER_CHILD);
}

/// Child side of `an_awaiting_subscriber_steps_over_a_publisher_killed_mid_publish`:
/// claims a position and, inside the writer, says so and waits to be killed.
fn blocked_writer_child(name: &str) -> ! {
    let publisher = Publisher::open(name).expect("attach a publisher");
    let _ = publisher.publish_with::<()>(4, |buf| {
        buf.copy_from_slice(b"torn");
        say_and_wait_forever("inside the writer")
    });
    unreachable!("the writer never returns")
}

#[test]
fn an_awaiting_subscriber_steps_over_a_publisher_killed_mid_publish() {
    if let Ok(name) = std::env::var(ROLE) {
        blocked_writer_child(&name);
    }
    let name = unique("async-dead-publisher");
    let _unlink = UnlinkOnDrop(&name);
    let publisher =
        Publisher::create(&name, &Options::new(64, 8), SlowSubscriber::Lossless).unwrap();
    let mut subscriber = AsyncSubscriber::open(&name).unwrap();
    let mut child = spawn_role(
        "an_awaiting_subscriber_steps_over_a_publisher_killed_mid_publish",
        ROLE,
        name.clone(),
    );
    wait_for_line(&mut child, "inside the writer");
    // Behind the child's claim: not deliverable while the child lives.
    publisher.publish(b"after").unwrap();
    runtime().block_on(async move {
        assert!(
            tokio::time::timeout(Duration::from_millis(50), subscriber.recv())
                .await
                .is_err(),
            "held behind the live child's claim"
        );
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // The awaiting task (parked in short slices behind the claim) sweeps the
        // dead claim and steps over it: exactly the published messages follow.
        let got = tokio::time::timeout(Duration::from_secs(10), subscriber.recv())
            .await
            .expect("the dead publisher's slot was swept")
            .unwrap();
        assert_eq!(got, b"after");
        publisher.publish(b"next").unwrap();
        assert_eq!(subscriber.recv().await.unwrap(), b"next");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), subscriber.recv())
                .await
                .is_err(),
            "nothing else: the killed message is not delivered"
        );
    });
}
