//! Blocking send/receive: timeouts, every wait strategy, wake-ups across processes,
//! idle CPU, and a waiter killed while asleep.

mod common;
use common::unique;

use std::process::Child;
use std::time::{Duration, Instant};

use shmq::{Options, Queue, RecvError, SendError, WaitStrategy};

const ROLE: &str = "SHMQ_BLOCKING_ROLE";

fn strategies() -> [WaitStrategy; 4] {
    [
        WaitStrategy::Spin,
        WaitStrategy::Yield,
        WaitStrategy::default(),
        WaitStrategy::Futex,
    ]
}

#[test]
fn recv_timeout_on_empty_queue_times_out_with_every_strategy() {
    let name = unique("recv-timeout");
    let mut queue = Queue::create(&name, &Options::new(4, 8)).unwrap();
    Queue::unlink(&name).unwrap();
    for strategy in strategies() {
        queue.set_wait_strategy(strategy);
        let started = Instant::now();
        assert_eq!(
            queue.recv_timeout(Duration::from_millis(30)),
            Err(RecvError::Timeout)
        );
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "{strategy:?} returned early"
        );
    }
}

#[test]
fn send_timeout_on_full_queue_times_out_and_sends_nothing() {
    let name = unique("send-timeout");
    let mut queue = Queue::create(&name, &Options::new(2, 8)).unwrap();
    Queue::unlink(&name).unwrap();
    queue.send(b"a").unwrap();
    queue.send(b"b").unwrap();
    for strategy in strategies() {
        queue.set_wait_strategy(strategy);
        let started = Instant::now();
        assert_eq!(
            queue.send_timeout(b"c", Duration::from_millis(30)),
            Err(SendError::Timeout)
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
    assert_eq!(queue.recv().unwrap(), b"a");
    assert_eq!(queue.recv().unwrap(), b"b");
    assert_eq!(queue.recv_timeout(Duration::ZERO), Err(RecvError::Timeout));
    assert!(matches!(
        queue.send(&[0; 9]),
        Err(SendError::TooLarge { len: 9, max: 8 })
    ));
}

/// A producer spinning on a full ring waits for a run of free slots before trying
/// again (so it stays off the slot a consumer is reading), but never for more than a
/// few µs at a time: one freed slot is taken promptly, and timeouts stay timely.
#[test]
fn a_producer_on_a_full_ring_takes_a_single_freed_slot_and_times_out_on_time() {
    let name = unique("room");
    let _unlink = common::UnlinkOnDrop(&name);
    let mut queue = Queue::create(&name, &Options::new(256, 8)).unwrap();
    for i in 0..256u32 {
        queue.send(&i.to_le_bytes()).unwrap();
    }
    for strategy in strategies() {
        queue.set_wait_strategy(strategy);
        let started = Instant::now();
        assert_eq!(
            queue.send_timeout(b"late", Duration::from_millis(30)),
            Err(SendError::Timeout)
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(30) && waited < Duration::from_secs(1),
            "{strategy:?}: timed out after {waited:?}"
        );
        let consumer = {
            let name = name.clone();
            std::thread::spawn(move || {
                let consumer = Queue::open(&name).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                consumer.recv().unwrap()
            })
        };
        let started = Instant::now();
        queue
            .send_timeout(b"next", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(2),
            "{strategy:?}: one freed slot took {waited:?}"
        );
        consumer.join().unwrap();
    }
    // Everything is still there, in order: the 256 minus the 4 taken, then the 4 sent.
    let mut left = Vec::new();
    while let Ok(message) = queue.try_recv() {
        left.push(message);
    }
    assert_eq!(left.len(), 256);
    assert_eq!(left[0], 4u32.to_le_bytes());
    assert!(left[252..].iter().all(|m| m == b"next"));
}

/// Ping-pong between two threads over two queues: every hand-off has a sleeper on
/// one side (with the futex strategy), so a lost wake-up would cost a 50 ms park
/// slice each time and blow the generous bound below.
#[test]
fn ping_pong_with_every_strategy_never_loses_a_wake_up() {
    const ROUND_TRIPS: u32 = 2_000;
    for strategy in strategies() {
        let ping_name =
            unique(&format!("ping-{strategy:?}").replace([' ', '{', '}', ':', ','], ""));
        let pong_name = format!("{ping_name}-pong");
        let mut ping = Queue::create(&ping_name, &Options::new(2, 8)).unwrap();
        let mut pong = Queue::create(&pong_name, &Options::new(2, 8)).unwrap();
        Queue::unlink(&ping_name).unwrap();
        Queue::unlink(&pong_name).unwrap();
        ping.set_wait_strategy(strategy);
        pong.set_wait_strategy(strategy);
        let mut ping_peer = ping.try_clone().unwrap();
        let mut pong_peer = pong.try_clone().unwrap();
        ping_peer.set_wait_strategy(strategy);
        pong_peer.set_wait_strategy(strategy);
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut buffer = [0u8; 8];
                for _ in 0..ROUND_TRIPS {
                    let n = ping_peer.recv_into(&mut buffer).unwrap();
                    pong_peer.send(&buffer[..n]).unwrap();
                }
            });
            for i in 0..ROUND_TRIPS {
                ping.send(&i.to_le_bytes()).unwrap();
                assert_eq!(pong.recv().unwrap(), i.to_le_bytes());
            }
        });
        let elapsed = started.elapsed();
        // 2,000 round trips at ~100 µs each is 0.2 s; 2,000 lost wake-ups would be
        // 100 s. The bound tolerates a loaded CI machine, not a protocol bug.
        assert!(
            elapsed < Duration::from_secs(30),
            "{strategy:?}: {ROUND_TRIPS} round trips took {elapsed:?}: wake-ups are being lost"
        );
        eprintln!("{strategy:?}: {ROUND_TRIPS} round trips in {elapsed:?}");
    }
}

fn run_child_role() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let (kind, name) = role.split_once(':').unwrap();
    let mut queue = Queue::open(name).unwrap();
    match kind {
        // Block in recv for about a second on an idle queue and report CPU used.
        "idle" => {
            let before = common::process_cpu_time();
            let started = Instant::now();
            let result = queue.recv_timeout(Duration::from_secs(1));
            let cpu = common::process_cpu_time() - before;
            assert_eq!(result, Err(RecvError::Timeout));
            println!(
                "IDLE cpu_us={} wall_us={}",
                cpu.as_micros(),
                started.elapsed().as_micros()
            );
        }
        // Sleep on the futex until a message comes; echo it back on `name-back`.
        "echo" => {
            queue.set_wait_strategy(WaitStrategy::Futex);
            let back = Queue::open(&format!("{name}-back")).unwrap();
            let message = queue.recv().unwrap();
            back.send(&message).unwrap();
        }
        // Sleep forever; the parent kills us.
        "sleep" => {
            queue.set_wait_strategy(WaitStrategy::Futex);
            println!("SLEEPING");
            let _ = queue.recv();
        }
        other => panic!("unknown role {other}"),
    }
    true
}

fn spawn_role(test: &str, role: String) -> Child {
    common::spawn_role(test, ROLE, role)
}

#[test]
fn consumer_blocked_on_idle_queue_uses_under_two_percent_of_a_core() {
    if run_child_role() {
        return;
    }
    let name = unique("idle");
    let _queue = Queue::create(&name, &Options::new(4, 8)).unwrap();
    let child = spawn_role(
        "consumer_blocked_on_idle_queue_uses_under_two_percent_of_a_core",
        format!("idle:{name}"),
    );
    let output = child.wait_with_output().unwrap();
    Queue::unlink(&name).unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("IDLE ").map(|(_, r)| r))
        .unwrap();
    let field = |key: &str| -> u64 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (cpu, wall) = (field("cpu_us="), field("wall_us="));
    eprintln!("blocked recv: {cpu} µs CPU over {wall} µs wall");
    assert!(wall >= 1_000_000);
    assert!(
        cpu * 50 < wall,
        "blocked consumer used {cpu} µs CPU in {wall} µs (>= 2%)"
    );
}

#[test]
fn sleeping_consumer_in_another_process_is_woken_by_a_send() {
    if run_child_role() {
        return;
    }
    let name = unique("wake");
    let queue = Queue::create(&name, &Options::new(4, 8)).unwrap();
    let back = Queue::create(&format!("{name}-back"), &Options::new(4, 8)).unwrap();
    let child = spawn_role(
        "sleeping_consumer_in_another_process_is_woken_by_a_send",
        format!("echo:{name}"),
    );
    // Let it fall asleep, then wake it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.info().waiters.consumers == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        queue.info().waiters.consumers,
        1,
        "the child never went to sleep"
    );
    queue.send(b"wake").unwrap();
    assert_eq!(back.recv_timeout(Duration::from_secs(10)).unwrap(), b"wake");
    let mut child = child;
    assert!(child.wait().unwrap().success());
    Queue::unlink(&name).unwrap();
    Queue::unlink(&format!("{name}-back")).unwrap();
}

#[test]
fn waiter_killed_while_asleep_leaves_a_working_queue() {
    if run_child_role() {
        return;
    }
    let name = unique("killed-waiter");
    let queue = Queue::create(&name, &Options::new(4, 8)).unwrap();
    let mut child = spawn_role(
        "waiter_killed_while_asleep_leaves_a_working_queue",
        format!("sleep:{name}"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.info().waiters.consumers == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        queue.info().waiters.consumers,
        1,
        "the child never went to sleep"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The dead waiter's count is leaked: at worst a spare wake-up, never a missed one.
    let mut consumer = queue.try_clone().unwrap(); // attaching sweeps: frees the record
    consumer.set_wait_strategy(WaitStrategy::Futex);
    let info = queue.info();
    assert_eq!(
        info.waiters.consumers, 0,
        "the sweep returned the dead waiter's count"
    );
    assert_eq!(info.dead(), 0, "the dead participant's record was freed");
    std::thread::scope(|scope| {
        scope.spawn(move || assert_eq!(consumer.recv().unwrap(), b"after"));
        std::thread::sleep(Duration::from_millis(20));
        queue.send(b"after").unwrap();
    });
    Queue::unlink(&name).unwrap();
}
