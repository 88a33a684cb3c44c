//! In-process costs of shmq next to crossbeam's `ArrayQueue` (the same algorithm
//! family, but in private memory): one thread's send+receive, and two-thread 1P1C
//! throughput. Each group holds both, so the report reads as a ratio.
//!
//! `cargo bench --bench queue`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use shmq::{Options, Queue};

const MESSAGE: [u8; 64] = [0x5a; 64];

fn shmq_queue(tag: &str, capacity: u64) -> Queue {
    let name = format!("bench-{tag}-{}", std::process::id());
    let queue = Queue::create(&name, &Options::new(capacity, 64)).expect("create segment");
    Queue::unlink(&name).expect("unlink segment");
    queue
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("send+recv, one thread, 64 B");
    group.throughput(Throughput::Elements(1));
    let queue = shmq_queue("single", 1024);
    let mut buffer = [0u8; 64];
    group.bench_function("shmq", |b| {
        b.iter(|| {
            queue.try_send(black_box(&MESSAGE)).unwrap();
            black_box(queue.try_recv_into(&mut buffer).unwrap());
        })
    });
    let array = ArrayQueue::<[u8; 64]>::new(1024);
    group.bench_function("crossbeam ArrayQueue", |b| {
        b.iter(|| {
            array.push(black_box(MESSAGE)).unwrap();
            black_box(array.pop().unwrap());
        })
    });
    group.finish();
}

/// Moves `iters` messages from a producer thread to this thread; `recv` returns
/// how many it took (0: none waiting). Returns the time.
fn transfer(iters: u64, send: impl FnOnce(u64) + Send, mut recv: impl FnMut() -> u64) -> Duration {
    std::thread::scope(|scope| {
        let started = Instant::now();
        scope.spawn(move || send(iters));
        let mut received = 0;
        while received < iters {
            match recv() {
                0 => std::hint::spin_loop(),
                n => received += n,
            }
        }
        started.elapsed()
    })
}

/// Messages per batch in the batched benchmark.
const BATCH: usize = 64;

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("1P1C throughput, two threads, 64 B");
    group.throughput(Throughput::Elements(1));
    let queue = shmq_queue("pair", 1024);
    group.bench_function("shmq", |b| {
        b.iter_custom(|iters| {
            let producer = queue.try_clone().unwrap();
            let mut buffer = [0u8; 64];
            transfer(
                iters,
                move |n| {
                    for _ in 0..n {
                        while producer.try_send(&MESSAGE).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                },
                || u64::from(queue.try_recv_into(&mut buffer).is_ok()),
            )
        })
    });
    group.bench_function("shmq, batches of 64", |b| {
        b.iter_custom(|iters| {
            let producer = queue.try_clone().unwrap();
            let batch = [MESSAGE; BATCH];
            transfer(
                iters,
                move |n| {
                    let mut sent = 0;
                    while sent < n {
                        let want = (n - sent).min(BATCH as u64) as usize;
                        match producer.try_send_batch(&batch[..want]) {
                            Ok(k) => sent += k as u64,
                            Err(_) => std::hint::spin_loop(),
                        }
                    }
                },
                || {
                    queue
                        .try_recv_batch_with(BATCH, |bytes| {
                            black_box(bytes[0]);
                        })
                        .map_or(0, |n| n as u64)
                },
            )
        })
    });
    let array = ArrayQueue::<[u8; 64]>::new(1024);
    group.bench_function("crossbeam ArrayQueue", |b| {
        b.iter_custom(|iters| {
            let array = &array;
            transfer(
                iters,
                move |n| {
                    for _ in 0..n {
                        while array.push(MESSAGE).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                },
                || u64::from(array.pop().is_some()),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
