//! `shmq bench`: the controller. It reads the command line, decides the settings
//! and the cores, and runs the workload: for latency and throughput in rounds, each
//! round alternating the cache-line floor (latency) and every transport, so each
//! ratio compares measurements taken moments apart on the same vCPU placement.
//! Then it hands the measurements to the report. Segments and control files are
//! removed at the end, on error, and on Ctrl-C / SIGTERM.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::baselines::FdKind;
use crate::error::{CliError, EX_CANTCREAT, EX_UNAVAILABLE, EX_USAGE};
use crate::floors::{self, Reference};
use crate::os::available_cpus;
use crate::phase::{install_signal_handlers, Context, Progress};
use crate::report::{merge_rate, merge_series, Facts, Measurements, Report, Series};
use crate::settings::{Regime, Settings, Wait};
use crate::transport::{Segments, Transport};
use crate::units::{parse_duration, parse_rate};
use crate::{fanout, latency, plot, throughput, wakeup};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Ping-pong over two queues: round trip, then one-way (CLOCK_MONOTONIC stamps).
    Latency,
    /// P producer and C consumer processes sending as fast as they can (or --rate).
    Throughput,
    /// A consumer asleep on an empty queue; the producer sends after a random
    /// 1–5 ms pause; latency from the send stamp to receipt.
    Wakeup,
    /// One publisher process, N subscriber processes (--subscribers): latency from
    /// publish to each receipt of paced 64-byte messages, shmq broadcast segments
    /// against iceoryx2 publish/subscribe (cli feature `iceoryx2`) in alternating
    /// rounds.
    Fanout,
}

/// Fan-out: the publisher's default pause between messages.
const FANOUT_INTERVAL: Duration = Duration::from_micros(250);
/// Fan-out: the default subscriber counts.
const FANOUT_SUBSCRIBERS: [u64; 4] = [1, 2, 4, 8];
/// Fan-out: most subscribers in one phase.
const FANOUT_MAX_SUBSCRIBERS: u64 = 64;

/// `shmq bench` options.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = "\
With no options: latency ping-pong between two processes pinned to two cores, spin \
waiting, 64-byte messages, plus the cache-line floor (two processes bouncing one cache \
line) measured in the same run; every figure is also printed as a multiple of the \
floor's p50.

Coordinated omission (--rate): a producer that stalls (queue full, descheduled) \
would, if it stamped messages when it actually sent them, hide the stall from every \
message it delayed. With --rate each message is stamped with its *intended* send time \
(start + i / rate) and a late producer sends the backlog immediately, still stamped \
with the intended times, so latency = receipt - intended send and includes the wait \
the stall caused. Without --rate the producers run flat out and the latency column is \
queueing delay at saturation, sampled on one message in 64.")]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Workload::Latency)]
    pub workload: Workload,
    /// Producer processes (throughput).
    #[arg(short = 'p', long, default_value_t = 1)]
    pub producers: u64,
    /// Consumer processes (throughput).
    #[arg(short = 'c', long, default_value_t = 1)]
    pub consumers: u64,
    /// Message size in bytes (at least 8: the timestamp).
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: u64,
    /// Messages per producer (throughput), or measured messages per round of each
    /// transport (fanout); default: run for --duration.
    #[arg(short = 'n', long, visible_alias = "messages")]
    pub count: Option<u64>,
    /// Fanout: subscriber processes, one measurement per count (e.g. 1,2,4,8, the
    /// default).
    #[arg(long, value_delimiter = ',')]
    pub subscribers: Vec<u64>,
    /// Fanout: the publisher's pause between messages (default 250us), long enough
    /// for every subscriber to wake and read, so latency is measured, not queueing.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// How long each transport is measured, after the warm-up (500ms, 2s, 1m).
    #[arg(short = 'd', long, default_value = "2s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring, not recorded.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Queue capacity in messages (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub capacity: u64,
    /// Wait strategy (default: spin; futex for --workload wakeup; fanout: block
    /// (= futex) or yield, default block).
    #[arg(short = 'w', long, value_enum)]
    pub wait: Option<Wait>,
    /// Hybrid: busy-poll budget.
    #[arg(long, default_value = "20us", value_parser = parse_duration)]
    pub spin_for: Duration,
    /// Hybrid: yield budget after spinning.
    #[arg(long, default_value = "50us", value_parser = parse_duration)]
    pub yield_for: Duration,
    /// Pin each process to its own core (default).
    #[arg(long, overrides_with = "no_pin")]
    pub pin: bool,
    /// Do not pin processes.
    #[arg(long, overrides_with = "pin")]
    pub no_pin: bool,
    /// Also measure a Unix socket, a pipe, and (for sleeping strategies) an eventfd,
    /// plus crossbeam's ArrayQueue between two threads, and print ratios.
    #[arg(long)]
    pub compare: bool,
    /// Latency: alternate the cache-line floor and each transport in this many
    /// rounds (--duration is split among them), so each ratio compares measurements
    /// taken moments apart on the same vCPU placement. Fanout: shmq and iceoryx2
    /// alternate at each subscriber count in each round (who goes first alternates).
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Latency: in each round also measure a two-line floor (one line each way, as
    /// with two queues) and a bare slot ring (the queue's hand-off with nothing else),
    /// to show what part of the round trip the slot hand-off itself costs.
    #[arg(long)]
    pub anatomy: bool,
    /// Throughput: shmq producers send, and consumers receive, up to N messages per
    /// claim on the queue (1 to 256; the baselines still move one at a time).
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Throughput: which side to make the faster, so queues run near empty
    /// (consumer-faster: producers also write every byte of each message) or near
    /// full (producer-faster: consumers also read every byte); baselines do the same
    /// work. Default: both sides only send and receive, whatever regime that gives.
    /// The report shows each queue's measured fill.
    #[arg(long, value_enum)]
    pub regime: Option<Regime>,
    /// Throughput under a fixed offered load, e.g. 100k/s (total over producers);
    /// latency is measured from each message's intended send time.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the HdrHistogram percentile distribution (.hgrm text) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<String>,
    /// Draw latency by percentile of every transport to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<String>,
}

/// Entry point of `shmq bench`.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    validate(args)?;
    install_signal_handlers();
    let settings = settings_of(args);
    let available = available_cpus();
    let (cpus, notes) = placement(args, &settings, available);
    // JSON to a pipe wants a quiet stderr; anyone at a terminal wants progress.
    let progress = if !args.json || std::io::stderr().is_terminal() {
        Progress::Show
    } else {
        Progress::Hide
    };
    let mut ctx = Context::new(settings, cpus, progress);
    let header = header(args, &ctx);
    if !args.json {
        println!("{header}");
        for note in &notes {
            println!("note: {note}");
        }
        let _ = std::io::stdout().flush();
    }
    let report = Report::new(measure(args, &mut ctx)?);
    if let Some(path) = &args.hgrm {
        std::fs::write(path, report.hgrm())
            .map_err(|e| CliError::new(EX_CANTCREAT, format!("writing {path}: {e}")))?;
    }
    if let Some(path) = &args.plot {
        plot::latency_svg(path, &header, report.series())?;
    }
    let facts = facts(args, &ctx, &notes);
    if args.json {
        println!("{}", report.json(&facts));
        return Ok(());
    }
    print!("{}", report.tables(&facts));
    if available < 2 || ctx.cpus().is_empty() {
        return Ok(());
    }
    if report.floors_missing() {
        return Err(CliError::new(EX_UNAVAILABLE, "no floor samples were taken"));
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> Result<(), CliError> {
    let usage = |m: String| Err(CliError::new(EX_USAGE, m));
    if args.size < 8 {
        return usage(format!(
            "--size {} is too small: messages carry an 8-byte timestamp",
            args.size
        ));
    }
    if args.producers == 0 || args.consumers == 0 {
        return usage("--producers and --consumers must be at least 1".into());
    }
    if args.workload != Workload::Throughput
        && (args.producers != 1 || args.consumers != 1 || args.rate.is_some())
    {
        return usage("--producers, --consumers and --rate apply to --workload throughput".into());
    }
    if args.count.is_some() && !matches!(args.workload, Workload::Throughput | Workload::Fanout) {
        return usage(
            "--count applies to --workload throughput and fanout (others run for --duration)"
                .into(),
        );
    }
    validate_fanout(args)?;
    if args.duration.is_zero() {
        return usage("--duration must be positive".into());
    }
    if !(1..=256).contains(&args.batch) {
        return usage(format!("--batch {} is out of range: 1 to 256", args.batch));
    }
    if args.batch > 1 && (args.workload != Workload::Throughput || args.rate.is_some()) {
        return usage("--batch applies to --workload throughput without --rate".into());
    }
    if args.regime.is_some() && (args.workload != Workload::Throughput || args.rate.is_some()) {
        return usage(
            "--regime applies to --workload throughput without --rate (a fixed rate sets the pace itself)"
                .into(),
        );
    }
    Ok(())
}

fn validate_fanout(args: &BenchArgs) -> Result<(), CliError> {
    let usage = |m: String| Err(CliError::new(EX_USAGE, m));
    if args.workload != Workload::Fanout {
        if !args.subscribers.is_empty() || args.interval.is_some() {
            return usage("--subscribers and --interval apply to --workload fanout".into());
        }
        return Ok(());
    }
    if args.size != fanout::SIZE {
        return usage(format!(
            "--workload fanout sends {}-byte messages (iceoryx2's payload type is fixed); drop --size",
            fanout::SIZE
        ));
    }
    if let Some(&n) = args
        .subscribers
        .iter()
        .find(|&&n| n == 0 || n > FANOUT_MAX_SUBSCRIBERS)
    {
        return usage(format!(
            "--subscribers {n} is out of range: 1 to {FANOUT_MAX_SUBSCRIBERS}"
        ));
    }
    if !matches!(args.wait, None | Some(Wait::Futex) | Some(Wait::Yield)) {
        return usage(
            "--workload fanout waits with --wait block or --wait yield (spinning subscribers would outnumber the cores)"
                .into(),
        );
    }
    if args.interval.is_some_and(|i| i.is_zero()) || args.count == Some(0) {
        return usage("--interval and --messages must be positive".into());
    }
    if args.compare || args.anatomy || args.batch > 1 || args.regime.is_some() {
        return usage(
            "--compare, --anatomy, --batch and --regime do not apply to --workload fanout (it compares with iceoryx2 itself)"
                .into(),
        );
    }
    Ok(())
}

/// The settings the phases read (wait: spin, or futex for the wake-up and fan-out
/// workloads).
fn settings_of(args: &BenchArgs) -> Settings {
    Settings {
        size: args.size,
        capacity: args.capacity,
        duration: args.duration,
        warmup: args.warmup,
        count: args.count,
        rate: args.rate,
        producers: args.producers,
        consumers: args.consumers,
        wait: args.wait.unwrap_or(match args.workload {
            Workload::Wakeup | Workload::Fanout => Wait::Futex,
            _ => Wait::Spin,
        }),
        spin_for: args.spin_for,
        yield_for: args.yield_for,
        batch: args.batch,
        regime: args.regime,
    }
}

/// Processes the workload runs at once.
fn processes(args: &BenchArgs) -> u64 {
    match args.workload {
        Workload::Throughput => args.producers + args.consumers,
        Workload::Fanout => 1 + fanout_subscribers(args).into_iter().max().unwrap_or(1),
        _ => 2,
    }
}

/// The cores to pin to (none: unpinned), and notes on the placement for the header.
fn placement(args: &BenchArgs, settings: &Settings, available: usize) -> (Vec<usize>, Vec<String>) {
    let mut notes = Vec::new();
    let cpus: Vec<usize> = if args.no_pin {
        notes.push("processes not pinned (--no-pin)".to_owned());
        Vec::new()
    } else if available < 2 {
        notes.push(format!(
            "not pinned: only {available} CPU available, so both sides share one core"
        ));
        Vec::new()
    } else {
        (0..available).collect()
    };
    if args.workload == Workload::Fanout && !cfg!(feature = "iceoryx2") {
        notes.push(
            "shmq only: the iceoryx2 comparison is not built in (build with `--features iceoryx2`)"
                .to_owned(),
        );
    }
    let processes = processes(args);
    if processes as usize > available && settings.wait == Wait::Spin {
        notes.push(format!(
            "{processes} spinning processes on {available} CPUs: some share a core, expect scheduler-tick hand-offs"
        ));
    }
    (cpus, notes)
}

/// Fanout: the subscriber counts to measure.
fn fanout_subscribers(args: &BenchArgs) -> Vec<u64> {
    if args.subscribers.is_empty() {
        FANOUT_SUBSCRIBERS.to_vec()
    } else {
        args.subscribers.clone()
    }
}

/// The fan-out workload's first line: its own placement and waiting.
fn fanout_header(args: &BenchArgs, ctx: &Context) -> String {
    let settings = &ctx.settings;
    let counts: Vec<String> = fanout_subscribers(args)
        .iter()
        .map(u64::to_string)
        .collect();
    let per_round = settings.per_round(args.rounds.max(1));
    let measured = match settings.count {
        Some(n) => format!("{n} measured messages"),
        None => format!("{:.2} s", per_round.duration.as_secs_f64()),
    };
    format!(
        "shmq bench: fanout workload, 1 publisher → {} subscriber processes, {} B messages, one every {:?}, buffers of {} messages; wait {}; {}; per round, each transport and count: {measured} after {:.1} s warm-up",
        counts.join(","),
        fanout::SIZE,
        args.interval.unwrap_or(FANOUT_INTERVAL),
        settings.capacity,
        fanout::describe_wait(settings.wait),
        match ctx.cpu(0) {
            Some(cpu) => format!("publisher pinned to core {cpu}, subscribers unpinned"),
            None => "unpinned".to_owned(),
        },
        settings.warmup.as_secs_f64(),
    )
}

/// The run's first line (also the plot's title).
fn header(args: &BenchArgs, ctx: &Context) -> String {
    if args.workload == Workload::Fanout {
        return fanout_header(args, ctx);
    }
    let settings = &ctx.settings;
    let cpus = ctx.cpus();
    let mut shape = String::new();
    if settings.batch > 1 {
        shape.push_str(&format!(", shmq batches of up to {}", settings.batch));
    }
    if let Some(regime) = settings.regime {
        shape.push_str(&format!(", regime {}", regime.name()));
    }
    format!(
        "shmq bench: {} workload, {} B messages, capacity {}{shape}, wait {}{}, {}, {:.1} s per transport after {:.1} s warm-up",
        lower(args.workload),
        settings.size,
        settings.capacity,
        lower(settings.wait),
        if settings.wait == Wait::Hybrid {
            format!(" (spin {:?}, yield {:?})", settings.spin_for, settings.yield_for)
        } else {
            String::new()
        },
        if cpus.is_empty() {
            "unpinned".to_owned()
        } else {
            format!("pinned to cores {:?}", &cpus[..cpus.len().min(processes(args) as usize)])
        },
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
    )
}

/// A value's `Debug` name in lower case (`Latency` → `latency`).
fn lower(value: impl std::fmt::Debug) -> String {
    format!("{value:?}").to_lowercase()
}

fn facts<'a>(args: &BenchArgs, ctx: &Context, notes: &'a [String]) -> Facts<'a> {
    Facts {
        workload: lower(args.workload),
        size: args.size,
        capacity: args.capacity,
        wait: match (args.workload, ctx.settings.wait) {
            (Workload::Fanout, Wait::Futex) => "block".to_owned(),
            (_, wait) => lower(wait),
        },
        pinned: !ctx.cpus().is_empty(),
        notes,
        rounds: args.rounds.max(1),
        producers: args.producers,
        consumers: args.consumers,
        rate: args.rate,
        relative_p50: args.compare || args.workload == Workload::Wakeup,
    }
}

/// Runs the workload (with a cache-line floor before and after, except for latency,
/// which measures one in every round). The segments it created are removed on
/// return, whatever happened.
fn measure(args: &BenchArgs, ctx: &mut Context) -> Result<Measurements, CliError> {
    let mut segments = Segments::default();
    let mut measured = Measurements::default();
    let floor_time = ctx.settings.duration.min(Duration::from_millis(500));
    if args.workload != Workload::Latency {
        let before = floors::cache_line(ctx, "cache-line floor (before)", floor_time)?;
        measured.floors.push(before);
    }
    match args.workload {
        Workload::Latency => latency_rounds(args, ctx, &mut segments, &mut measured)?,
        Workload::Throughput => throughput_rounds(args, ctx, &mut segments, &mut measured)?,
        Workload::Fanout => fanout::measure_rounds(
            ctx,
            &fanout_subscribers(args),
            args.interval.unwrap_or(FANOUT_INTERVAL),
            args.rounds.max(1),
            &mut measured,
        )?,
        Workload::Wakeup => {
            let mut transports = vec![
                Transport::Shmq,
                Transport::Fd(FdKind::Pipe),
                Transport::Fd(FdKind::EventFd),
            ];
            if args.compare {
                transports.push(Transport::Fd(FdKind::Unix));
            }
            for t in transports {
                measured
                    .series
                    .push(wakeup::measure(ctx, &mut segments, t)?);
            }
        }
    }
    if args.workload != Workload::Latency {
        let after = floors::cache_line(ctx, "cache-line floor (after)", floor_time)?;
        measured.floors.push(after);
    }
    Ok(measured)
}

/// Latency in `--rounds` rounds, `--duration` split among them. Each round measures
/// the cache-line floor, the `--anatomy` references, then each transport.
fn latency_rounds(
    args: &BenchArgs,
    ctx: &Context,
    segments: &mut Segments,
    measured: &mut Measurements,
) -> Result<(), CliError> {
    let mut transports = vec![Transport::Shmq];
    if args.compare {
        transports.extend([Transport::Fd(FdKind::Unix), Transport::Fd(FdKind::Pipe)]);
        if ctx.settings.sleeps() {
            transports.push(Transport::Fd(FdKind::EventFd));
        } else {
            transports.push(Transport::Crossbeam);
        }
    }
    let references: &[(Reference, &str)] = if args.anatomy {
        &[
            (Reference::TwoLine, "two-line floor"),
            (Reference::BareRing, "bare slot ring"),
        ]
    } else {
        &[]
    };
    let rounds = args.rounds.max(1);
    let mut round_ctx = ctx.with_settings(ctx.settings.per_round(rounds));
    // References run as long as a transport's round-trip phase, so tails compare
    // over the same stretch of host behaviour.
    let duration = round_ctx.settings.duration;
    let floor_time = duration.min(Duration::from_millis(250));
    for _ in 0..rounds {
        let floor = floors::cache_line(&mut round_ctx, "cache-line floor", floor_time)?;
        let mut round = Vec::new();
        for &(which, label) in references {
            round.push(floors::measure(&mut round_ctx, which, label, duration)?);
        }
        for &t in &transports {
            round.extend(latency::measure(&mut round_ctx, segments, t)?);
        }
        add_latency_round(measured, floor, round, args.size);
    }
    Ok(())
}

/// Adds one latency round: each series' p50 over the round's floor p50, shmq's
/// round trip over the bare ring's (with `--anatomy`), every p99.9, and the
/// histograms merged into the run's.
fn add_latency_round(measured: &mut Measurements, floor: Series, round: Vec<Series>, size: u64) {
    let p50 = |s: &Series| s.histogram.value_at_quantile(0.5) as f64;
    let p50_of = |label: &str| {
        round
            .iter()
            .find(|s| s.label == label)
            .map(p50)
            .filter(|&p50| p50 > 0.0)
    };
    let floor_p50 = p50(&floor);
    if floor_p50 > 0.0 {
        for s in &round {
            measured
                .round_ratios
                .push(s.label.clone(), p50(s) / floor_p50);
        }
    }
    // With --anatomy, shmq's round trip against the bare ring's: what the queue adds
    // to the slot hand-off itself.
    let shmq_rtt = Transport::Shmq.label(size, "round trip");
    if let (Some(shmq), Some(bare)) = (p50_of(&shmq_rtt), p50_of("bare slot ring")) {
        let label = format!("{shmq_rtt} ÷ bare slot ring");
        measured.round_ratios.push(label, shmq / bare);
    }
    let tail = |s: &Series| s.histogram.value_at_quantile(0.999) as f64;
    measured.round_tails.push(floor.label.clone(), tail(&floor));
    for s in &round {
        measured.round_tails.push(s.label.clone(), tail(s));
    }
    merge_series(&mut measured.floors, floor);
    for s in round {
        merge_series(&mut measured.series, s);
    }
}

/// Throughput, alternating the transports in rounds (`--duration` split among them,
/// or `--count` per round) so each ratio compares runs moments apart.
fn throughput_rounds(
    args: &BenchArgs,
    ctx: &Context,
    segments: &mut Segments,
    measured: &mut Measurements,
) -> Result<(), CliError> {
    let mut transports = vec![Transport::Shmq];
    if args.rate.is_none() {
        transports.push(Transport::Crossbeam);
    }
    if args.compare {
        transports.extend([Transport::Fd(FdKind::Unix), Transport::Fd(FdKind::Pipe)]);
    }
    let rounds = if args.count.is_some() {
        1
    } else {
        args.rounds.max(1)
    };
    let mut round_ctx = ctx.with_settings(ctx.settings.per_round(rounds));
    for _ in 0..rounds {
        let mut shmq_rate = None;
        for &t in &transports {
            let rate = throughput::measure(&mut round_ctx, segments, t)?;
            let per_s = rate.messages_per_s;
            match shmq_rate {
                None => shmq_rate = Some(per_s),
                Some(shmq) if per_s > 0.0 => {
                    let label = format!("shmq ÷ {}", rate.label);
                    measured.round_ratios.push(label, shmq / per_s);
                }
                Some(_) => {}
            }
            merge_rate(&mut measured.rates, rate, rounds);
        }
    }
    Ok(())
}
