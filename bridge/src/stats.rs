//! Counters of what a bridge did, and their report on stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// What a bridge did so far. Every counter only grows (Relaxed: statistics, read
/// for reports only).
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages carried: published and acknowledged by JetStream (out), or sent
    /// into the segment and acknowledged to JetStream (in).
    pub carried: AtomicU64,
    /// Out: publishes JetStream reported as duplicates of a stored message (a
    /// redelivered copy of a message an earlier bridge published). In: messages
    /// JetStream delivered more than once (the copy went to the segment again).
    pub duplicates: AtomicU64,
    /// Attempts that failed and were retried (publish errors, pull errors, ack
    /// errors).
    pub retries: AtomicU64,
    /// Messages handed back unfinished: out, abandoned to shmq (refused by the
    /// server, or held at shutdown while the server was away); in, negatively
    /// acknowledged to JetStream (too large for the segment, or held at shutdown).
    pub returned: AtomicU64,
    /// Messages held right now.
    pub in_flight: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One line: `carried=… duplicates=… retries=… returned=… in_flight=…`.
    pub fn line(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "carried={} duplicates={} retries={} returned={} in_flight={}",
            get(&self.carried),
            get(&self.duplicates),
            get(&self.retries),
            get(&self.returned),
            get(&self.in_flight),
        )
    }
}

/// Prints `stats` on stderr every `interval` (with the rate since the last line)
/// until `shutdown`; `interval` zero prints nothing.
pub async fn report(direction: &str, stats: &Stats, interval: Duration, mut shutdown: Shutdown) {
    if interval.is_zero() {
        return;
    }
    let mut last = (Instant::now(), stats.carried.load(Ordering::Relaxed));
    loop {
        tokio::select! {
            () = shutdown.stopping() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = (Instant::now(), stats.carried.load(Ordering::Relaxed));
        let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
        eprintln!("shmq-bridge {direction}: {} rate={rate:.0}/s", stats.line());
        last = now;
    }
}
