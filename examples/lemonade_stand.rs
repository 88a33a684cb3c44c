//! The lemonade stand: why queues exist, and why this one survives `kill -9`.
//!
//! Three front-counter processes take orders faster than the one worker process
//! can make lemonade; the orders wait in a shared-memory queue. Mid-rush the worker
//! collapses (SIGKILL, twice) and a new one is hired. Every order is still served:
//! an order the dead worker was holding is handed to the next one.
//!
//! ```text
//! cargo run --example lemonade_stand
//! ```
//!
//! The example runs itself again for each role: `lemonade_stand counter QUEUE ID N`
//! and `lemonade_stand worker QUEUE LOG`.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shmq::{Options, Queue, RecvError};

const COUNTERS: u32 = 3;
const ORDERS_PER_COUNTER: u32 = 40;
/// The worker collapses when this many orders have been served.
const COLLAPSES_AT: [usize; 2] = [25, 70];
const DRINKS: [&str; 4] = ["lemonade", "pink lemonade", "iced tea", "lemon soda"];
const CLOSING: &[u8] = b"closing time";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("counter") => counter(&args[2], args[3].parse()?, args[4].parse()?),
        Some("worker") => worker(&args[2], Path::new(&args[3])),
        _ => owner(),
    }
}

/// A front counter: takes `orders` orders as fast as customers arrive (1 ms apart)
/// and prints how many it put in the queue.
fn counter(queue: &str, id: u32, orders: u32) -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open(queue)?;
    for k in 0..orders {
        let drink = DRINKS[(id + k) as usize % DRINKS.len()];
        queue.send(format!("counter {id} order {k:2}: {drink}").as_bytes())?;
        thread::sleep(Duration::from_millis(1));
    }
    println!("{orders}");
    Ok(())
}

/// The worker: makes each drink (5 ms: slower than the counters), then writes it on
/// the served list, all while holding the order; at closing time, once the queue has
/// stayed empty for a moment, goes home.
fn worker(queue: &str, served: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open(queue)?;
    let mut served = OpenOptions::new().create(true).append(true).open(served)?;
    let mut closing = false;
    loop {
        let deadline = Instant::now() + Duration::from_millis(300);
        let order = queue.recv_with_deadline(deadline, |order| {
            if order != CLOSING {
                thread::sleep(Duration::from_millis(5));
                // Written before the order is let go of: a worker killed after
                // this line serves that order twice, never zero times.
                served.write_all(&[order, b"\n"].concat())?;
            }
            Ok::<bool, std::io::Error>(order == CLOSING)
        });
        match order {
            Ok(is_closing) => closing |= is_closing?,
            Err(RecvError::Timeout) if closing => return Ok(()),
            Err(RecvError::Timeout) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn run_self(args: &[&str]) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
}

fn served_so_far(log: &Path) -> usize {
    fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

/// The owner: opens the stand, hires a worker, opens the counters, and replaces the
/// worker each time it collapses.
fn owner() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("lemonade-{}", std::process::id());
    let log: PathBuf = std::env::temp_dir().join(format!("{name}.served"));
    let _ = fs::remove_file(&log);
    let queue = Queue::create(&name, &Options::new(16, 64))?;
    let log_arg = log.display().to_string();

    let mut hired = 1;
    let mut worker = run_self(&["worker", &name, &log_arg])?;
    println!("The stand opens; worker #1 is at the press.");
    let mut counters = (0..COUNTERS)
        .map(|id| {
            run_self(&[
                "counter",
                &name,
                &id.to_string(),
                &ORDERS_PER_COUNTER.to_string(),
            ])
        })
        .collect::<Result<Vec<_>, _>>()?;

    for &at in &COLLAPSES_AT {
        while served_so_far(&log) < at {
            thread::sleep(Duration::from_millis(2));
        }
        let pid = u64::from(worker.id());
        worker.kill()?; // SIGKILL: no goodbye, maybe mid-drink
        worker.wait()?;
        let info = queue.info();
        let holding = info
            .participants
            .iter()
            .any(|p| p.pid == pid && p.dequeue_stuck);
        hired += 1;
        println!(
            "Worker #{} collapsed after {at} drinks, {}; {} orders waiting. Worker #{hired} takes over.",
            hired - 1,
            if holding { "holding an order" } else { "between orders" },
            info.occupancy,
        );
        worker = run_self(&["worker", &name, &log_arg])?;
    }

    let mut taken = 0;
    for counter in counters.drain(..) {
        let output = counter.wait_with_output()?;
        taken += String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<usize>()?;
    }
    queue.send(CLOSING)?;
    worker.wait()?;

    let served_log = fs::read_to_string(&log)?;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for order in served_log.lines() {
        *copies.entry(order).or_default() += 1;
    }
    let served = copies.len();
    let twice = copies.values().filter(|&&n| n > 1).count();
    let lost = taken.saturating_sub(served);
    println!();
    println!("orders taken:  {taken:4}");
    println!("orders served: {served:4}");
    println!("served twice:  {twice:4}   (a worker died after making it, before letting go)");
    println!("lost:          {lost:4}");
    println!("workers hired: {hired:4}");
    let _ = fs::remove_file(&log);
    Queue::unlink(&name)?;
    if lost > 0 {
        return Err(format!("{lost} orders were never served").into());
    }
    Ok(())
}
