//! `shmq`: latency and throughput benchmarks between real processes, and the
//! everyday tools for shmq segments (create, send, recv, publish, subscribe,
//! inspect, ls, rm).
//!
//! Modules, each with one job; imports point down this list, never up:
//!
//! - [`tools`]: the segment tools.
//! - [`bench`](mod@bench): the benchmark controller (arguments, rounds, alternating transports).
//! - [`child`]: one re-executed benchmark process (`shmq __child`), running a role.
//! - [`latency`], [`throughput`], [`wakeup`], [`fanout`]: one workload each, both its
//!   controller side (which processes, over which channels) and its child side
//!   (their loops). `iceoryx` (cli feature `iceoryx2`): fanout's comparison.
//! - [`floors`]: the reference measurements (cache-line floor, two-line floor, bare
//!   slot ring).
//! - [`plot`], [`report`]: the SVG, and the tables / JSON / `.hgrm`.
//! - [`transport`], [`phase`], [`settings`]: setting up a transport's channels,
//!   running one phase's processes, and what every phase measures.
//! - [`link`], [`baselines`]: a child's end of a transport; the pipe / Unix socket /
//!   eventfd / crossbeam baselines.
//! - [`protocol`], [`control`], [`histogram`]: what controller and children agree
//!   on, the shared control mapping, and latency histograms.
//! - [`error`], [`units`], [`os`]: exit codes, durations and rates, and the few
//!   operating-system calls (clock, CPUs, pinning).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod baselines;
mod bench;
mod child;
mod control;
mod error;
mod fanout;
mod floors;
mod histogram;
#[cfg(feature = "iceoryx2")]
mod iceoryx;
mod latency;
mod link;
mod os;
mod phase;
mod plot;
mod protocol;
mod report;
mod settings;
mod throughput;
mod tools;
mod transport;
mod units;
mod wakeup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Lock-free MPMC queue in POSIX shared memory: benchmarks and segment tools.
#[derive(Parser, Debug)]
#[command(name = "shmq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure latency / throughput / wake-up between processes (default: latency, 1P1C).
    Bench(bench::BenchArgs),
    /// Create a segment.
    Create(tools::CreateArgs),
    /// Send each line of stdin (or each length-prefixed frame) as one message.
    Send(tools::SendArgs),
    /// Receive messages to stdout, one per line (or framed).
    Recv(tools::RecvArgs),
    /// Publish each argument (or each line / frame of stdin) to every subscriber of a broadcast segment.
    Publish(tools::PublishArgs),
    /// Print every message published on a broadcast segment from now on, one per line (or framed).
    Subscribe(tools::SubscribeArgs),
    /// Show a segment's header, cursors, waiters, participants and recovery counters.
    Inspect(tools::InspectArgs),
    /// List every shmq segment on this host with its state.
    Ls(tools::LsArgs),
    /// Remove a segment (refuses while live processes are attached, unless --force).
    Rm(tools::RmArgs),
    /// Show a segment's dead letters; --drain them to stdout or --requeue them.
    DeadLetters(tools::DeadLettersArgs),
    /// Internal: one process of a benchmark (started by `shmq bench`).
    #[command(name = "__child", hide = true)]
    Child {
        /// Role name.
        role: String,
        /// Role parameters as JSON.
        spec: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { error::EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Create(args) => tools::create(&args),
        Command::Send(args) => tools::send(&args),
        Command::Recv(args) => tools::recv(&args),
        Command::Publish(args) => tools::publish(&args),
        Command::Subscribe(args) => tools::subscribe(&args),
        Command::Inspect(args) => tools::inspect(&args),
        Command::Ls(args) => tools::ls(&args),
        Command::Rm(args) => tools::rm(&args),
        Command::DeadLetters(args) => tools::dead_letters(&args),
        Command::Child { role, spec } => child::run(&role, &spec),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("shmq: {}", e.message);
            }
            ExitCode::from(e.code)
        }
    }
}
