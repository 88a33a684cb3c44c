//! A pool of async consumers in this process, blocking producers in another.
//!
//! ```sh
//! cargo run --release --features tokio --example async_worker            # 4 tasks, 2 producers
//! cargo run --release --features tokio --example async_worker -- 16 4    # 16 tasks, 4 producers
//! ```
//!
//! The parent creates a segment, starts a copy of itself as the producer process
//! (one blocking `Queue` per producer thread), and runs a tokio runtime with a pool
//! of tasks, each with its own `AsyncQueue` handle, that take jobs until each gets
//! a stop message. All tasks of the process share one waker thread (`shmq-waker`).

use std::time::{Duration, Instant};

use shmq::{AsyncQueue, Options, Queue};

const JOBS_PER_PRODUCER: u64 = 100_000;
const STOP: u64 = u64::MAX;

fn job(producer: u64, seq: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&producer.to_le_bytes());
    bytes[8..].copy_from_slice(&seq.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let producer = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((producer, seq))
}

/// The producer process: `producers` threads, each a blocking handle, then one stop
/// message per consumer task.
fn produce(name: &str, producers: u64, tasks: u64) -> Result<(), shmq::Error> {
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let queue = Queue::open(name)?;
            Ok(std::thread::spawn(move || {
                for seq in 0..JOBS_PER_PRODUCER {
                    queue.send(&job(p, seq)).expect("send a job");
                    if seq % 10_000 == 0 {
                        // A pause now and then, so the pool goes idle and is woken.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }))
        })
        .collect::<Result<_, shmq::Error>>()?;
    for thread in threads {
        thread.join().expect("a producer thread panicked");
    }
    let queue = Queue::open(name)?;
    for _ in 0..tasks {
        queue.send(&job(STOP, 0)).expect("send a stop");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--produce") {
        let [_, _, name, producers, tasks] = &args[..] else {
            return Err("usage: async_worker --produce NAME PRODUCERS TASKS".into());
        };
        produce(name, producers.parse()?, tasks.parse()?)?;
        return Ok(());
    }
    let tasks: u64 = args.get(1).map_or(Ok(4), |a| a.parse())?;
    let producers: u64 = args.get(2).map_or(Ok(2), |a| a.parse())?;
    let name = format!("example-async-worker-{}", std::process::id());
    let queue = Queue::create(&name, &Options::new(1024, 16))?;

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--produce",
            &name,
            &producers.to_string(),
            &tasks.to_string(),
        ])
        .spawn()?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().build()?;
    let per_task: Vec<u64> = runtime.block_on(async {
        let pool: Vec<_> = (0..tasks)
            .map(|_| {
                let mut worker = AsyncQueue::new(queue.try_clone()?)?;
                Ok(tokio::spawn(async move {
                    let mut done = 0u64;
                    loop {
                        let message = worker.recv().await.expect("receive a job");
                        match decode(&message) {
                            Some((STOP, _)) => return done,
                            Some(_) => done += 1,
                            None => panic!("a job of {} bytes", message.len()),
                        }
                    }
                }))
            })
            .collect::<Result<Vec<_>, shmq::Error>>()?;
        let mut per_task = Vec::new();
        for task in pool {
            per_task.push(task.await?);
        }
        Ok::<_, Box<dyn std::error::Error>>(per_task)
    })?;
    let status = child.wait()?;
    Queue::unlink(&name)?;
    if !status.success() {
        return Err(format!("the producer process failed: {status}").into());
    }
    let total: u64 = per_task.iter().sum();
    println!(
        "{tasks} async tasks took {total} jobs from {producers} blocking producers in {:.2?} \
         (per task: {per_task:?})",
        started.elapsed()
    );
    if total != producers * JOBS_PER_PRODUCER {
        return Err(format!("expected {} jobs", producers * JOBS_PER_PRODUCER).into());
    }
    Ok(())
}
