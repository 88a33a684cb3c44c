//! The async handle (cargo feature `tokio`): wake-ups on the current-thread and
//! multi-thread runtimes, cancellation that loses and duplicates nothing (every
//! message counted), blocking and async handles mixed on one segment, many tasks on
//! more queues than one `futex_waitv` call watches, and a process with async
//! handles killed with `kill -9`.
#![cfg(feature = "tokio")]

mod common;

use std::collections::HashSet;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{unique, UnlinkOnDrop};
use futures::{FutureExt, SinkExt, StreamExt};
use shmq::{AsyncQueue, Options, Queue, WaitStrategy};
use tokio::runtime::{Builder, Runtime};
use tokio::time::timeout;

const ROLE: &str = "SHMQ_ASYNC_ROLE";
/// Generous bound for anything that should happen at once (CI machines are busy).
const PATIENCE: Duration = Duration::from_secs(20);

/// Both runtimes a user may run the handles on.
fn runtimes() -> [(&'static str, Runtime); 2] {
    let current = Builder::new_current_thread().enable_time().build().unwrap();
    let multi = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    [("current-thread", current), ("multi-thread", multi)]
}

/// xorshift64: a cheap, seedable source of "random points".
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn number(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

#[test]
fn a_task_awaiting_an_empty_queue_is_woken_by_a_blocking_producer() {
    for (kind, runtime) in runtimes() {
        let name = unique(&format!("woken-{kind}"));
        let _unlink = UnlinkOnDrop(&name);
        let producer = Queue::create(&name, &Options::new(8, 16)).unwrap();
        let mut consumer = AsyncQueue::open(&name).unwrap();
        consumer.set_wait_strategy(WaitStrategy::Futex);
        let received = runtime.block_on(async {
            let task = tokio::spawn(async move {
                let message = consumer.recv().await;
                (message, consumer)
            });
            // Wait until the task is parked (counted as a waiter), then send.
            while producer.info().waiters.consumers == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            producer.send(b"wake up").unwrap();
            timeout(PATIENCE, task)
                .await
                .expect("lost wake-up")
                .unwrap()
        });
        assert_eq!(received.0.unwrap(), b"wake up", "{kind}");
        drop(received.1);
        assert_eq!(
            producer.info().waiters.consumers,
            0,
            "{kind}: count withdrawn"
        );
    }
}

#[test]
fn futures_dropped_while_parked_withdraw_and_take_nothing() {
    let name = unique("dropped-parked");
    let _unlink = UnlinkOnDrop(&name);
    let other = Queue::create(&name, &Options::new(2, 8)).unwrap();
    let mut queue = AsyncQueue::open(&name).unwrap();
    queue.set_wait_strategy(WaitStrategy::Futex);
    let (_, runtime) = runtimes().into_iter().next().unwrap();
    runtime.block_on(async {
        // A receive parked on the empty queue, then dropped.
        {
            let mut receive = std::pin::pin!(queue.recv());
            assert!(futures::poll!(&mut receive).is_pending());
            assert_eq!(other.info().waiters.consumers, 1, "registered");
            other.send(b"one").unwrap();
        }
        assert_eq!(other.info().waiters.consumers, 0, "withdrawn on drop");
        assert_eq!(
            other.info().occupancy,
            1,
            "the dropped receive took nothing"
        );
        assert_eq!(queue.recv().await.unwrap(), b"one");
        // A send parked on the full queue, then dropped.
        other.send(b"a").unwrap();
        other.send(b"b").unwrap();
        {
            let mut send = std::pin::pin!(queue.send(b"c"));
            assert!(futures::poll!(&mut send).is_pending());
            assert_eq!(other.info().waiters.producers, 1, "registered");
            assert_eq!(other.recv().unwrap(), b"a");
        }
        assert_eq!(other.info().waiters.producers, 0, "withdrawn on drop");
        assert_eq!(other.recv().unwrap(), b"b");
        assert_eq!(
            other.try_recv(),
            Err(shmq::TryRecvError::Empty),
            "the dropped send published nothing"
        );
    });
}

/// How a consumer gives up on one receive, picked at random each time.
async fn receive_or_give_up(queue: &mut AsyncQueue, rng: &mut u64) -> Option<u64> {
    match next(rng) % 4 {
        // Polled once, then dropped (registered with the waker thread, if empty).
        0 => queue.recv().now_or_never().map(|r| number(&r.unwrap())),
        // Dropped by a timer at a random point.
        1 => timeout(Duration::from_micros(next(rng) % 300), queue.recv())
            .await
            .ok()
            .map(|r| number(&r.unwrap())),
        // Dropped by select! when another branch wins.
        2 => {
            tokio::select! {
                r = queue.recv() => Some(number(&r.unwrap())),
                () = tokio::task::yield_now() => None,
            }
        }
        // Awaited (bounded, so the test ends when the last message is taken).
        _ => timeout(Duration::from_millis(20), queue.recv())
            .await
            .ok()
            .map(|r| number(&r.unwrap())),
    }
}

#[test]
fn recv_futures_dropped_at_random_points_lose_and_duplicate_nothing() {
    const MESSAGES: u64 = 10_000;
    const CONSUMERS: usize = 3;
    for (kind, runtime) in runtimes() {
        let name = unique(&format!("cancel-recv-{kind}"));
        let _unlink = UnlinkOnDrop(&name);
        let queue = Queue::create(&name, &Options::new(8, 16)).unwrap();
        let producer_queue = queue.try_clone().unwrap();
        // A blocking producer: bursts with pauses, so consumers both spin and park.
        let producer = std::thread::spawn(move || {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64;
            for n in 0..MESSAGES {
                producer_queue.send(&n.to_le_bytes()).unwrap();
                if next(&mut rng) % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(next(&mut rng) % 500));
                }
            }
        });
        let taken = Arc::new(AtomicUsize::new(0));
        let received: Vec<Vec<u64>> = runtime.block_on(async {
            let tasks: Vec<_> = (0..CONSUMERS)
                .map(|c| {
                    let mut consumer = AsyncQueue::new(queue.try_clone().unwrap()).unwrap();
                    // One consumer parks at once, so that even its futures polled
                    // only once are dropped while registered with the waker thread.
                    if c == 0 {
                        consumer.set_wait_strategy(WaitStrategy::Futex);
                    }
                    let taken = Arc::clone(&taken);
                    tokio::spawn(async move {
                        let mut rng = 0x2545_F491_4F6C_DD1Du64 + c as u64;
                        let mut mine = Vec::new();
                        while taken.load(Ordering::Relaxed) < MESSAGES as usize {
                            // The `recv_into` branch throws its message away: count
                            // those through the buffer form instead.
                            if next(&mut rng) % 4 == 3 {
                                let mut buffer = [0u8; 16];
                                let got = timeout(
                                    Duration::from_millis(20),
                                    consumer.recv_into(&mut buffer),
                                )
                                .await;
                                if let Ok(len) = got {
                                    assert_eq!(len.unwrap(), 8);
                                    mine.push(number(&buffer));
                                    taken.fetch_add(1, Ordering::Relaxed);
                                }
                            } else if let Some(n) =
                                receive_or_give_up(&mut consumer, &mut rng).await
                            {
                                mine.push(n);
                                taken.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        mine
                    })
                })
                .collect();
            join_all(tasks).await
        });
        producer.join().unwrap();
        let mut seen = HashSet::new();
        for n in received.iter().flatten() {
            assert!(seen.insert(*n), "{kind}: message {n} received twice");
        }
        assert_eq!(seen.len() as u64, MESSAGES, "{kind}: messages lost");
        for mine in &received {
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "{kind}: one consumer saw the producer's messages out of order"
            );
        }
        assert_eq!(queue.try_recv(), Err(shmq::TryRecvError::Empty));
        assert_eq!(
            queue.info().waiters.consumers,
            0,
            "{kind}: counts withdrawn"
        );
    }
}

#[test]
fn send_futures_dropped_while_full_publish_nothing() {
    const MESSAGES: u64 = 10_000;
    for (kind, runtime) in runtimes() {
        let name = unique(&format!("cancel-send-{kind}"));
        let _unlink = UnlinkOnDrop(&name);
        let queue = Queue::create(&name, &Options::new(4, 16)).unwrap();
        let consumer_queue = queue.try_clone().unwrap();
        // A blocking consumer that now and then falls behind, so the queue fills.
        let consumer = std::thread::spawn(move || {
            let mut rng = 0x1234_5678_9ABC_DEF1u64;
            let mut got = Vec::with_capacity(MESSAGES as usize);
            while (got.len() as u64) < MESSAGES {
                let message = consumer_queue.recv_timeout(PATIENCE).expect("stuck");
                got.push(number(&message));
                if next(&mut rng) % 32 == 0 {
                    std::thread::sleep(Duration::from_micros(next(&mut rng) % 400));
                }
            }
            got
        });
        let mut producer = AsyncQueue::new(queue.try_clone().unwrap()).unwrap();
        let gave_up = runtime.block_on(async move {
            let mut rng = 0x0F0F_F0F0_1357_2468u64;
            let mut gave_up = 0u64;
            let mut n = 0u64;
            while n < MESSAGES {
                let message = n.to_le_bytes();
                // Half the sends park at once (dropped while registered, if full).
                producer.set_wait_strategy(if next(&mut rng) % 2 == 0 {
                    WaitStrategy::Futex
                } else {
                    WaitStrategy::default()
                });
                let sent = match next(&mut rng) % 3 {
                    0 => producer.send(&message).now_or_never().map(Result::unwrap),
                    1 => timeout(
                        Duration::from_micros(next(&mut rng) % 300),
                        producer.send(&message),
                    )
                    .await
                    .ok()
                    .map(Result::unwrap),
                    _ => timeout(PATIENCE, producer.send(&message))
                        .await
                        .ok()
                        .map(Result::unwrap),
                };
                match sent {
                    Some(()) => n += 1,
                    None => gave_up += 1,
                }
            }
            gave_up
        });
        let got = consumer.join().unwrap();
        // One producer, one consumer: exactly 0..MESSAGES in order; a dropped send
        // that had published would show up as a repeated number.
        assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>(), "{kind}");
        assert!(
            gave_up > 0,
            "{kind}: no send was ever dropped while pending"
        );
        assert_eq!(
            queue.info().waiters.producers,
            0,
            "{kind}: counts withdrawn"
        );
    }
}

#[test]
fn guards_batches_stream_and_sink_move_every_message_once() {
    for (kind, runtime) in runtimes() {
        let name = unique(&format!("forms-{kind}"));
        let _unlink = UnlinkOnDrop(&name);
        let mut producer = AsyncQueue::create(&name, &Options::new(4, 16)).unwrap();
        let mut consumer = AsyncQueue::open(&name).unwrap();
        runtime.block_on(async {
            let sink = tokio::spawn(async move {
                let numbers = (0..300u64).map(|n| Ok(n.to_le_bytes()));
                producer
                    .send_all(&mut futures::stream::iter(numbers))
                    .await
                    .unwrap();
                let batch: Vec<[u8; 8]> = (300..310u64).map(u64::to_le_bytes).collect();
                let mut sent = 0;
                while sent < batch.len() {
                    sent += producer.send_batch(&batch[sent..]).await.unwrap();
                }
                producer
                    .send_with(8, |slot| slot.copy_from_slice(&310u64.to_le_bytes()))
                    .await
                    .unwrap();
                producer
            });
            let mut got: Vec<u64> = (&mut consumer)
                .take(100)
                .map(|r| number(&r.unwrap()))
                .collect()
                .await;
            while got.len() < 200 {
                let delivery = consumer.receive().await.unwrap();
                assert_eq!(delivery.deliveries(), 1);
                got.push(number(&delivery));
            }
            while got.len() < 311 {
                for message in consumer.recv_batch(64).await.unwrap() {
                    got.push(number(&message));
                }
            }
            assert_eq!(got, (0..311).collect::<Vec<_>>(), "{kind}");
            timeout(PATIENCE, sink).await.unwrap().unwrap();
        });
    }
}

#[test]
fn a_thousand_tasks_on_two_hundred_queues_are_each_woken() {
    // 200 queues: more words than one futex_waitv call takes (127 besides the
    // thread's own), so the overflow path is exercised too.
    const QUEUES: usize = 200;
    const TASKS_PER_QUEUE: usize = 5;
    let (_, runtime) = runtimes().into_iter().nth(1).unwrap();
    let names: Vec<String> = (0..QUEUES).map(|q| unique(&format!("many-{q}"))).collect();
    let _unlink: Vec<_> = names.iter().map(|n| UnlinkOnDrop(n)).collect();
    let producers: Vec<Queue> = names
        .iter()
        .map(|n| Queue::create(n, &Options::new(8, 8)).unwrap())
        .collect();
    let woken = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for name in &names {
            for _ in 0..TASKS_PER_QUEUE {
                let mut consumer = AsyncQueue::open(name).unwrap();
                consumer.set_wait_strategy(WaitStrategy::Futex);
                let woken = Arc::clone(&woken);
                tasks.push(tokio::spawn(async move {
                    consumer.recv().await.unwrap();
                    woken.fetch_add(1, Ordering::Relaxed);
                }));
            }
        }
        // Everyone parked, then one message per task.
        for producer in &producers {
            while producer.info().waiters.consumers < TASKS_PER_QUEUE as u32 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(woken.load(Ordering::Relaxed), 0);
        for producer in &producers {
            for _ in 0..TASKS_PER_QUEUE {
                producer.send(b"go").unwrap();
            }
        }
        for task in tasks {
            timeout(PATIENCE, task)
                .await
                .expect("a task was never woken")
                .unwrap();
        }
    });
    assert_eq!(woken.load(Ordering::Relaxed), QUEUES * TASKS_PER_QUEUE);
}

// ---- processes -------------------------------------------------------------------

/// Child roles: `hold:<name>` takes a message as a guard and waits to be killed;
/// `park:<name>` parks three tasks on the empty queue and waits to be killed.
fn child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let (role, name) = role.split_once(':').unwrap();
    let runtime = Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        match role {
            "hold" => {
                let mut queue = AsyncQueue::open(name).unwrap();
                let delivery = queue.receive().await.unwrap();
                assert_eq!(&*delivery, b"held");
                common::say_and_wait_forever("HOLDING");
            }
            "park" => {
                for _ in 0..3 {
                    let mut queue = AsyncQueue::open(name).unwrap();
                    tokio::spawn(async move { queue.recv().await });
                }
                let observer = Queue::open(name).unwrap();
                while observer.info().waiters.consumers < 3 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                common::say_and_wait_forever("PARKED");
            }
            "idle" => idle_tasks(name).await,
            "produce" => produce_blocking(name),
            other => panic!("unknown role {other}"),
        }
    });
    true
}

/// Messages each blocking producer of `produce_blocking` sends.
const PER_PRODUCER: u64 = 5_000;
/// Producers (threads, each its own blocking handle) in the `produce` child.
const PRODUCERS: u64 = 2;

/// Child role `produce:<name>`: blocking producers, each sending `PER_PRODUCER`
/// messages `[producer, seq]`, pausing now and then so the consumers go idle.
fn produce_blocking(name: &str) {
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = Queue::open(name).unwrap();
            std::thread::spawn(move || {
                let mut rng = 0xDEAD_BEEF_0000_0001u64 + p;
                for seq in 0..PER_PRODUCER {
                    let mut message = [0u8; 16];
                    message[..8].copy_from_slice(&p.to_le_bytes());
                    message[8..].copy_from_slice(&seq.to_le_bytes());
                    queue.send(&message).unwrap();
                    if next(&mut rng) % 128 == 0 {
                        std::thread::sleep(Duration::from_micros(next(&mut rng) % 2_000));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn async_consumers_take_every_message_of_blocking_producers_in_another_process() {
    const TEST: &str =
        "async_consumers_take_every_message_of_blocking_producers_in_another_process";
    const CONSUMERS: usize = 4;
    if child_role() {
        return;
    }
    let name = unique("processes");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(16, 16)).unwrap();
    let mut producers = spawn(TEST, "produce", &name);
    let total = (PRODUCERS * PER_PRODUCER) as usize;
    let (_, runtime) = runtimes().into_iter().nth(1).unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let received: Vec<Vec<(u64, u64)>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let mut consumer = AsyncQueue::new(queue.try_clone().unwrap()).unwrap();
                let taken = Arc::clone(&taken);
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while taken.load(Ordering::Relaxed) < total {
                        let got = timeout(Duration::from_millis(50), consumer.recv()).await;
                        if let Ok(message) = got {
                            let message = message.unwrap();
                            mine.push((number(&message[..8]), number(&message[8..])));
                            taken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    mine
                })
            })
            .collect();
        join_all(tasks).await
    });
    assert!(
        producers.wait().unwrap().success(),
        "the producer process failed"
    );
    let mut seen = HashSet::new();
    for mine in &received {
        for producer in 0..PRODUCERS {
            let sequence: Vec<u64> = mine
                .iter()
                .filter(|(p, _)| *p == producer)
                .map(|(_, seq)| *seq)
                .collect();
            assert!(
                sequence.windows(2).all(|w| w[0] < w[1]),
                "a consumer saw producer {producer}'s messages out of order"
            );
        }
        for message in mine {
            assert!(seen.insert(*message), "{message:?} received twice");
        }
    }
    assert_eq!(seen.len(), total, "messages lost");
}

/// Child role `idle:<prefix>`: 1,000 tasks await 100 empty queues of its own; says
/// how much CPU the whole process used over 1.5 s of that, then wakes them all.
async fn idle_tasks(prefix: &str) {
    const QUEUES: usize = 100;
    const TASKS_PER_QUEUE: usize = 10;
    let names: Vec<String> = (0..QUEUES).map(|q| format!("{prefix}-{q}")).collect();
    let _unlink: Vec<_> = names.iter().map(|n| UnlinkOnDrop(n)).collect();
    let queues: Vec<Queue> = names
        .iter()
        .map(|n| Queue::create(n, &Options::new(16, 8).max_participants(16)).unwrap())
        .collect();
    let mut tasks = Vec::new();
    for queue in &queues {
        for _ in 0..TASKS_PER_QUEUE {
            let mut consumer = AsyncQueue::new(queue.try_clone().unwrap()).unwrap();
            tasks.push(tokio::spawn(async move { consumer.recv().await }));
        }
    }
    for queue in &queues {
        while (queue.info().waiters.consumers as usize) < TASKS_PER_QUEUE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (cpu, wall) = (common::process_cpu_time(), std::time::Instant::now());
    // A blocking sleep: this task's runtime thread is idle too.
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu, wall) = (common::process_cpu_time() - cpu, wall.elapsed());
    println!(
        "\nIDLE cpu_us={} wall_us={}",
        cpu.as_micros(),
        wall.as_micros()
    );
    for queue in &queues {
        for _ in 0..TASKS_PER_QUEUE {
            queue.send(b"done").unwrap();
        }
    }
    for task in tasks {
        timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    }
}

#[test]
fn a_thousand_idle_tasks_use_under_two_percent_of_a_core() {
    const TEST: &str = "a_thousand_idle_tasks_use_under_two_percent_of_a_core";
    if child_role() {
        return;
    }
    let child = spawn(TEST, "idle", &unique("idle"));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the idle child failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("IDLE ").map(|(_, rest)| rest.to_owned()))
        .expect("the child's IDLE line");
    let field = |key: &str| -> u128 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (cpu, wall) = (field("cpu_us="), field("wall_us="));
    eprintln!("1000 idle tasks on 100 queues: {cpu} µs CPU over {wall} µs wall");
    assert!(wall >= 1_500_000);
    assert!(
        cpu * 50 < wall,
        "idle tasks used {cpu} µs CPU in {wall} µs (>= 2%)"
    );
}

fn spawn(test: &str, role: &str, name: &str) -> Child {
    common::spawn_role(test, ROLE, format!("{role}:{name}"))
}

#[test]
fn a_message_held_by_a_killed_async_consumer_wakes_an_awaiting_task() {
    const TEST: &str = "a_message_held_by_a_killed_async_consumer_wakes_an_awaiting_task";
    if child_role() {
        return;
    }
    let name = unique("killed-holder");
    let _unlink = UnlinkOnDrop(&name);
    let producer = Queue::create(&name, &Options::new(8, 16)).unwrap();
    producer.send(b"held").unwrap();
    let mut holder = spawn(TEST, "hold", &name);
    common::wait_for_line(&mut holder, "HOLDING");
    let (_, runtime) = runtimes().into_iter().next().unwrap();
    runtime.block_on(async {
        let mut consumer = AsyncQueue::open(&name).unwrap();
        consumer.set_wait_strategy(WaitStrategy::Futex);
        let waiting = tokio::spawn(async move {
            let delivery = consumer.receive().await.unwrap();
            (delivery.deliveries(), delivery.to_vec())
        });
        // The task is parked on an empty queue when the holder dies: nothing but
        // the waker thread's look for outstanding claims can wake it.
        while producer.info().waiters.consumers == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        let (deliveries, bytes) = timeout(PATIENCE, waiting)
            .await
            .expect("the dead consumer's message never reached the awaiting task")
            .unwrap();
        assert_eq!((deliveries, bytes.as_slice()), (2, &b"held"[..]));
    });
    assert_eq!(producer.info().recovery.redelivered, 1);
}

#[test]
fn a_killed_process_with_parked_tasks_leaves_no_waiter_behind() {
    const TEST: &str = "a_killed_process_with_parked_tasks_leaves_no_waiter_behind";
    if child_role() {
        return;
    }
    let name = unique("killed-parked");
    let _unlink = UnlinkOnDrop(&name);
    let queue = Queue::create(&name, &Options::new(8, 16)).unwrap();
    let mut parked = spawn(TEST, "park", &name);
    common::wait_for_line(&mut parked, "PARKED");
    assert_eq!(queue.info().waiters.consumers, 3);
    parked.kill().unwrap();
    parked.wait().unwrap();
    // Attaching sweeps: the dead process's records are freed and their counts
    // returned.
    let (_, runtime) = runtimes().into_iter().nth(1).unwrap();
    let mut consumer = AsyncQueue::open(&name).unwrap();
    assert_eq!(queue.info().waiters.consumers, 0);
    queue.send(b"after").unwrap();
    let got = runtime.block_on(async { timeout(PATIENCE, consumer.recv()).await });
    assert_eq!(got.unwrap().unwrap(), b"after");
}

/// Each task's result, in order; a task still running after three patiences is stuck.
async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut all = Vec::new();
    for task in tasks {
        all.push(timeout(PATIENCE * 3, task).await.expect("stuck").unwrap());
    }
    all
}
