//! Figures for the async handle, each against its blocking baseline measured in the
//! same run (so the ratios hold on a noisy machine better than the absolutes):
//!
//! 1. **wake-up**: a consumer asleep on an empty queue (blocking: `WaitStrategy::Futex`
//!    in the futex; async: a task parked with the `shmq-waker` thread, spin 0) is
//!    sent a message; latency from just before `send` to the consumer holding it.
//! 2. **spin-phase round trip**: ping-pong between two threads over two queues, both
//!    sides blocking with `WaitStrategy::Spin`, or both sides async tasks (one
//!    current-thread runtime per thread, default `Hybrid` strategy) catching the
//!    reply in their poll's spin and yield phases.
//! 3. **idle CPU**: 1,000 tasks awaiting 100 empty queues for a while; CPU time of
//!    the whole process (user + system) as a share of one core.
//!
//! ```sh
//! cargo run --release --features tokio --example async_bench
//! cargo run --release --features tokio --example async_bench -- 5000 20   # samples, idle seconds
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmq::{AsyncQueue, Options, Queue, WaitStrategy};
use tokio::runtime::Builder;

fn name(tag: &str) -> String {
    format!("bench-async-{tag}-{}", std::process::id())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

/// Nanoseconds since `base`, as message bytes.
fn stamp(base: Instant) -> [u8; 8] {
    (base.elapsed().as_nanos() as u64).to_le_bytes()
}

fn since_stamp(base: Instant, bytes: &[u8]) -> Duration {
    let sent = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    base.elapsed().saturating_sub(Duration::from_nanos(sent))
}

/// Sends `samples` stamped messages, each once the consumer is asleep (counted as a
/// waiter, then given 200 µs to get into the kernel).
fn send_when_asleep(producer: &Queue, samples: usize, base: Instant) {
    for _ in 0..samples {
        while producer.info().waiters.consumers == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
        std::thread::sleep(Duration::from_micros(200));
        producer.send(&stamp(base)).unwrap();
    }
}

fn wakeup_blocking(samples: usize) -> Vec<Duration> {
    let name = name("wake-blocking");
    let producer = Queue::create(&name, &Options::new(64, 8)).unwrap();
    let mut consumer = producer.try_clone().unwrap();
    consumer.set_wait_strategy(WaitStrategy::Futex);
    let base = Instant::now();
    let receiver = std::thread::spawn(move || {
        (0..samples)
            .map(|_| since_stamp(base, &consumer.recv().unwrap()))
            .collect::<Vec<_>>()
    });
    send_when_asleep(&producer, samples, base);
    let latencies = receiver.join().unwrap();
    Queue::unlink(&name).unwrap();
    latencies
}

fn wakeup_async(samples: usize) -> Vec<Duration> {
    let name = name("wake-async");
    let producer = Queue::create(&name, &Options::new(64, 8)).unwrap();
    let mut consumer = AsyncQueue::new(producer.try_clone().unwrap()).unwrap();
    consumer.set_wait_strategy(WaitStrategy::Futex);
    let base = Instant::now();
    let receiver = std::thread::spawn(move || {
        let runtime = Builder::new_current_thread().build().unwrap();
        runtime.block_on(async move {
            let mut latencies = Vec::with_capacity(samples);
            for _ in 0..samples {
                latencies.push(since_stamp(base, &consumer.recv().await.unwrap()));
            }
            latencies
        })
    });
    send_when_asleep(&producer, samples, base);
    let latencies = receiver.join().unwrap();
    Queue::unlink(&name).unwrap();
    latencies
}

/// Round trips of one 8-byte message; `rounds` of them after 1,000 of warm-up.
fn round_trip_blocking(rounds: usize) -> Vec<Duration> {
    let (ping_name, pong_name) = (name("rt-ping-b"), name("rt-pong-b"));
    let mut ping = Queue::create(&ping_name, &Options::new(64, 8)).unwrap();
    let mut pong = Queue::create(&pong_name, &Options::new(64, 8)).unwrap();
    ping.set_wait_strategy(WaitStrategy::Spin);
    pong.set_wait_strategy(WaitStrategy::Spin);
    let (mut echo_in, mut echo_out) = (ping.try_clone().unwrap(), pong.try_clone().unwrap());
    echo_in.set_wait_strategy(WaitStrategy::Spin);
    echo_out.set_wait_strategy(WaitStrategy::Spin);
    let total = rounds + 1_000;
    let echo = std::thread::spawn(move || {
        let mut buffer = [0u8; 8];
        for _ in 0..total {
            let len = echo_in.recv_into(&mut buffer).unwrap();
            echo_out.send(&buffer[..len]).unwrap();
        }
    });
    let mut buffer = [0u8; 8];
    let mut times = Vec::with_capacity(rounds);
    for round in 0..total {
        let started = Instant::now();
        ping.send(b"pingpong").unwrap();
        pong.recv_into(&mut buffer).unwrap();
        if round >= 1_000 {
            times.push(started.elapsed());
        }
    }
    echo.join().unwrap();
    Queue::unlink(&ping_name).unwrap();
    Queue::unlink(&pong_name).unwrap();
    times
}

fn round_trip_async(rounds: usize) -> Vec<Duration> {
    let (ping_name, pong_name) = (name("rt-ping-a"), name("rt-pong-a"));
    let mut ping = AsyncQueue::create(&ping_name, &Options::new(64, 8)).unwrap();
    let mut pong = AsyncQueue::create(&pong_name, &Options::new(64, 8)).unwrap();
    let (mut echo_in, mut echo_out) = (ping.try_clone().unwrap(), pong.try_clone().unwrap());
    let total = rounds + 1_000;
    let echo = std::thread::spawn(move || {
        let runtime = Builder::new_current_thread().build().unwrap();
        runtime.block_on(async move {
            let mut buffer = [0u8; 8];
            for _ in 0..total {
                let len = echo_in.recv_into(&mut buffer).await.unwrap();
                echo_out.send(&buffer[..len]).await.unwrap();
            }
        })
    });
    let runtime = Builder::new_current_thread().build().unwrap();
    let times = runtime.block_on(async move {
        let mut buffer = [0u8; 8];
        let mut times = Vec::with_capacity(rounds);
        for round in 0..total {
            let started = Instant::now();
            ping.send(b"pingpong").await.unwrap();
            pong.recv_into(&mut buffer).await.unwrap();
            if round >= 1_000 {
                times.push(started.elapsed());
            }
        }
        times
    });
    echo.join().unwrap();
    Queue::unlink(&ping_name).unwrap();
    Queue::unlink(&pong_name).unwrap();
    times
}

/// CPU time (user + system) of this process so far.
fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is writable memory of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded and filled the struct.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// 1,000 tasks awaiting 100 empty queues for `idle`: the process's CPU time over
/// that stretch, as a share of one core. Returns (share, tasks that were woken).
fn idle_cpu(idle: Duration) -> (f64, usize) {
    const QUEUES: usize = 100;
    const TASKS_PER_QUEUE: usize = 10;
    let names: Vec<String> = (0..QUEUES).map(|q| name(&format!("idle-{q}"))).collect();
    let queues: Vec<Queue> = names
        .iter()
        .map(|n| Queue::create(n, &Options::new(64, 8).max_participants(16)).unwrap())
        .collect();
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let woken = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = queues
        .iter()
        .flat_map(|queue| {
            (0..TASKS_PER_QUEUE).map(|_| {
                let mut consumer = AsyncQueue::new(queue.try_clone().unwrap()).unwrap();
                let woken = Arc::clone(&woken);
                runtime.spawn(async move {
                    let message = consumer.recv().await.unwrap();
                    woken.store(true, Ordering::Relaxed);
                    message
                })
            })
        })
        .collect();
    for queue in &queues {
        while (queue.info().waiters.consumers as usize) < TASKS_PER_QUEUE {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (cpu_before, wall_before) = (process_cpu_time(), Instant::now());
    std::thread::sleep(idle);
    let share =
        (process_cpu_time() - cpu_before).as_secs_f64() / wall_before.elapsed().as_secs_f64();
    let early = woken.load(Ordering::Relaxed);
    // Wake them all to finish (and to check they still can be).
    for queue in &queues {
        for _ in 0..TASKS_PER_QUEUE {
            queue.send(b"done").unwrap();
        }
    }
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    for n in &names {
        Queue::unlink(n).unwrap();
    }
    (share, usize::from(early))
}

fn report(what: &str, baseline: &mut [Duration], asynchronous: &mut [Duration]) {
    let (b, a) = (median(baseline), median(asynchronous));
    println!(
        "{what}: blocking p50 {b:.2?} (p90 {:.2?}), async p50 {a:.2?} (p90 {:.2?}), async/blocking {:.2}x",
        percentile(baseline, 0.9),
        percentile(asynchronous, 0.9),
        a.as_secs_f64() / b.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let samples: usize = args.get(1).map_or(2_000, |a| a.parse().expect("samples"));
    let idle_secs: u64 = args.get(2).map_or(10, |a| a.parse().expect("idle seconds"));
    println!(
        "shmq async_bench: {samples} samples per figure, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Interleaved (blocking, async, blocking, async) halves, so drift in the
    // machine's load hits both alike.
    let half = samples / 2;
    let mut wake_b = wakeup_blocking(half);
    let mut wake_a = wakeup_async(half);
    wake_b.extend(wakeup_blocking(half));
    wake_a.extend(wakeup_async(half));
    report("wake-up of a sleeping consumer", &mut wake_b, &mut wake_a);
    let rounds = samples * 50;
    let mut rt_b = round_trip_blocking(rounds / 2);
    let mut rt_a = round_trip_async(rounds / 2);
    rt_b.extend(round_trip_blocking(rounds / 2));
    rt_a.extend(round_trip_async(rounds / 2));
    report("spin-phase round trip", &mut rt_b, &mut rt_a);
    let (share, early) = idle_cpu(Duration::from_secs(idle_secs));
    println!(
        "idle: 1000 tasks awaiting 100 empty queues for {idle_secs} s: process CPU {:.3}% of one core{}",
        share * 100.0,
        if early > 0 { " (a task was woken early!)" } else { "" }
    );
}
