//! What a benchmark measures, decided once from the command line: the figures every
//! phase reads (message size, capacity, durations, the wait strategy), without the
//! command line's own concerns.

use std::time::Duration;

use clap::ValueEnum;

use crate::protocol::hybrid_spec;

/// How waiting processes wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// Busy-poll (baselines: O_NONBLOCK reads in a loop).
    Spin,
    /// Poll with sched_yield (baselines likewise).
    Yield,
    /// Spin --spin-for, yield --yield-for, then sleep on the futex (baselines: O_NONBLOCK
    /// reads for the same budgets, then poll(2)).
    Hybrid,
    /// Sleep on the futex at once (baselines: blocking reads). `block` is the same
    /// (the fan-out workload's name for it).
    #[value(alias = "block")]
    Futex,
}

/// Which side of a throughput run is the faster one, so the queue runs near empty
/// or near full. The other side does a little more per message (it touches every
/// byte of the message: the producer writes it, the consumer reads it), as real
/// programs do; every transport's run does the same work, and the report shows
/// how full each queue really was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Regime {
    /// The queue runs near empty: each producer writes every byte of every message
    /// it sends, consumers do nothing but receive.
    ConsumerFaster,
    /// The queue runs near full: each consumer reads every byte of every message it
    /// receives, producers do nothing but send.
    ProducerFaster,
}

impl Regime {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Regime::ConsumerFaster => "consumer-faster",
            Regime::ProducerFaster => "producer-faster",
        }
    }
}

/// The settings every phase of a run shares.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Message size in bytes (at least 8).
    pub size: u64,
    /// Queue capacity in messages.
    pub capacity: u64,
    /// How long each transport is measured, after the warm-up.
    pub duration: Duration,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Throughput: messages per producer, instead of running for `duration`.
    pub count: Option<u64>,
    /// Throughput: offered load in messages per second, over all producers.
    pub rate: Option<f64>,
    /// Throughput: shmq producer processes.
    pub producers: u64,
    /// Throughput: shmq consumer processes.
    pub consumers: u64,
    /// How waiting processes wait.
    pub wait: Wait,
    /// Hybrid: busy-poll budget.
    pub spin_for: Duration,
    /// Hybrid: yield budget after spinning.
    pub yield_for: Duration,
    /// Throughput: messages per shmq claim (1: single sends and receives).
    pub batch: u64,
    /// Throughput: which side is made the faster (`None`: neither side does more
    /// than send or receive).
    pub regime: Option<Regime>,
}

impl Settings {
    /// The settings of one of `rounds` rounds: `duration` split evenly.
    pub fn per_round(&self, rounds: u32) -> Settings {
        Settings {
            duration: self.duration / rounds,
            ..*self
        }
    }

    /// The wait strategy as a child's spec gives it to its shmq queues.
    pub fn wait_spec(&self) -> String {
        match self.wait {
            Wait::Spin => "spin".into(),
            Wait::Yield => "yield".into(),
            Wait::Futex => "futex".into(),
            Wait::Hybrid => hybrid_spec(self.spin_for, self.yield_for),
        }
    }

    /// The matching way for a baseline's reader to wait on its descriptor.
    pub fn poll_spec(&self) -> String {
        match self.wait {
            Wait::Spin => "spin".into(),
            Wait::Yield => "yield".into(),
            // The same budgets as the queue's Hybrid strategy, then a blocking poll(2).
            Wait::Hybrid => hybrid_spec(self.spin_for, self.yield_for),
            Wait::Futex => "block".into(),
        }
    }

    /// Whether waiting processes may go to sleep (then eventfd is a fair baseline;
    /// crossbeam, which only spins, is not).
    pub fn sleeps(&self) -> bool {
        matches!(self.wait, Wait::Hybrid | Wait::Futex)
    }
}
