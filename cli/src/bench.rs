//! `shmq bench`: the controller. It creates private segments and a control mapping,
//! re-executes this binary as the producer / consumer processes (pinned to distinct
//! cores), starts them together, draws progress on stderr while they run, collects
//! their histograms and prints the tables. Segments and control files are removed at
//! the end, on error, and on Ctrl-C / SIGTERM.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use shmq::{Options, Queue};

use crate::baselines::{FdChannel, FdKind};
use crate::floors;
use crate::report::{self, Series};
use crate::roles::STOP;
use crate::util::{
    fmt_ns, fmt_rate, now_ns, parse_duration, parse_rate, CliError, Control, Word, EX_CANTCREAT,
    EX_OSERR, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE,
};

/// A hook run once the first `n` producers have finished (and `n` itself).
type AfterProducers<'a> = Option<(u64, &'a mut dyn FnMut() -> Result<(), CliError>)>;

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
}

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
    /// Sleep on the futex at once (baselines: blocking reads).
    Futex,
}

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
    /// Messages per producer (throughput); default: run for --duration.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// How long each transport is measured, after the warm-up (500ms, 2s, 1m).
    #[arg(short = 'd', long, default_value = "2s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring, not recorded.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Queue capacity in messages (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub capacity: u64,
    /// Wait strategy (default: spin; futex for --workload wakeup).
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
    /// taken moments apart on the same vCPU placement.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Latency: in each round also measure a two-line floor (one line each way, as
    /// with two queues) and a bare slot ring (the queue's hand-off with nothing else),
    /// to show what part of the round trip the slot hand-off itself costs.
    #[arg(long)]
    pub anatomy: bool,
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

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
        // `signal` with a valid function pointer has no other preconditions. Children
        // get default dispositions back at exec.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Segments this run created: removed when dropped, whatever happened.
struct Segments {
    names: Vec<String>,
    next: u32,
}

impl Segments {
    fn create(&mut self, args: &BenchArgs) -> Result<String, CliError> {
        let name = format!("bench.{}.{}", std::process::id(), self.next);
        self.next += 1;
        let participants = (args.producers + args.consumers + 8).min(1024);
        let options = Options::new(args.capacity, args.size.max(8)).max_participants(participants);
        // The controller's handle is dropped at once: the children attach themselves.
        drop(Queue::create(&name, &options)?);
        self.names.push(name.clone());
        Ok(name)
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Queue::unlink(name);
        }
    }
}

/// One child to start: its role, its spec, and the core it should run on.
struct ChildPlan {
    role: &'static str,
    spec: Value,
    cpu: Option<usize>,
}

struct Running {
    role: &'static str,
    child: Child,
    output: Option<JoinHandle<String>>,
}

/// The settings every phase shares.
struct Context<'a> {
    args: &'a BenchArgs,
    wait: Wait,
    cpus: Vec<usize>,
    progress: bool,
    /// Whether stderr is a terminal (redraw one progress line) or not (print lines).
    terminal: bool,
    phase: u32,
    /// Scratch bytes the next phase's control file carries (the bare rings).
    scratch: usize,
}

/// The arguments of one of `rounds` rounds: `--duration` split evenly.
fn per_round(args: &BenchArgs, rounds: u32) -> BenchArgs {
    BenchArgs {
        duration: args.duration / rounds,
        ..args.clone()
    }
}

impl Context<'_> {
    /// The same context with other arguments (a round's).
    fn with_args<'b>(&self, args: &'b BenchArgs) -> Context<'b> {
        Context {
            args,
            wait: self.wait,
            cpus: self.cpus.clone(),
            progress: self.progress,
            terminal: self.terminal,
            phase: self.phase,
            scratch: 0,
        }
    }

    fn cpu(&self, index: usize) -> Option<usize> {
        if self.cpus.is_empty() {
            None
        } else {
            Some(self.cpus[index % self.cpus.len()])
        }
    }

    fn wait_spec(&self) -> String {
        match self.wait {
            Wait::Spin => "spin".into(),
            Wait::Yield => "yield".into(),
            Wait::Futex => "futex".into(),
            Wait::Hybrid => format!(
                "hybrid:{}:{}",
                self.args.spin_for.as_nanos(),
                self.args.yield_for.as_nanos()
            ),
        }
    }

    fn poll_spec(&self) -> String {
        match self.wait {
            Wait::Spin => "spin".into(),
            Wait::Yield => "yield".into(),
            // The same budgets as the queue's Hybrid strategy, then a blocking poll(2).
            Wait::Hybrid => format!(
                "hybrid:{}:{}",
                self.args.spin_for.as_nanos(),
                self.args.yield_for.as_nanos()
            ),
            Wait::Futex => "block".into(),
        }
    }

    fn sleeps(&self) -> bool {
        matches!(self.wait, Wait::Hybrid | Wait::Futex)
    }

    /// Starts the children, waits until all are ready, says go, shows progress, and
    /// returns each child's JSON result. `expected_ready` counts barrier arrivals
    /// (a two-thread child arrives twice). `after_producers` runs once when
    /// `producers` children have said they are done.
    fn run_phase(
        &mut self,
        label: &str,
        plans: Vec<ChildPlan>,
        expected_ready: u64,
        inherited: Vec<OwnedFd>,
        seconds: f64,
        mut after_producers: AfterProducers<'_>,
    ) -> Result<Vec<Value>, CliError> {
        self.phase += 1;
        let control = Control::create(&self.phase.to_string(), std::mem::take(&mut self.scratch))?;
        let exe = std::env::current_exe()
            .map_err(|e| CliError::new(EX_OSERR, format!("finding this executable: {e}")))?;
        let mut running: Vec<Running> = Vec::new();
        let result = (|| -> Result<Vec<Value>, CliError> {
            for plan in plans {
                let mut spec = plan.spec;
                spec["control"] = json!(control.path());
                if let Some(cpu) = plan.cpu {
                    spec["cpu"] = json!(cpu);
                }
                let mut child = Command::new(&exe)
                    .arg("__child")
                    .arg(plan.role)
                    .arg(spec.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| {
                        CliError::new(EX_OSERR, format!("starting a {} process: {e}", plan.role))
                    })?;
                let output = child.stdout.take().map(|mut out| {
                    std::thread::spawn(move || {
                        let mut text = String::new();
                        let _ = out.read_to_string(&mut text);
                        text
                    })
                });
                running.push(Running {
                    role: plan.role,
                    child,
                    output,
                });
            }
            // The children hold their copies now.
            drop(inherited);

            // Start barrier.
            let ready_deadline = Instant::now() + Duration::from_secs(20);
            while control.word(Word::Ready).load(Ordering::Acquire) < expected_ready {
                self.check(&mut running, &control)?;
                if Instant::now() > ready_deadline {
                    return Err(CliError::new(
                        EX_SOFTWARE,
                        format!("{label}: benchmark processes did not start within 20 s"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let go = now_ns() + 5_000_000;
            // Release: pairs with the children's Acquire load in ready_and_wait.
            control.word(Word::Go).store(go, Ordering::Release);

            let started = Instant::now();
            let hard_limit = Duration::from_secs_f64(seconds * 3.0 + 30.0);
            let show = self.progress && seconds > 2.0;
            let mut last_draw = Instant::now();
            loop {
                if let Some((producers, hook)) = after_producers.as_mut() {
                    if control.word(Word::ProducersDone).load(Ordering::Acquire) >= *producers {
                        hook()?;
                        after_producers = None;
                    }
                }
                if self.check(&mut running, &control)? {
                    break;
                }
                if started.elapsed() > hard_limit {
                    return Err(CliError::new(
                        EX_SOFTWARE,
                        format!("{label}: benchmark processes still running after {hard_limit:?}; stopped them"),
                    ));
                }
                let every = if self.terminal { 250 } else { 1000 };
                if show && last_draw.elapsed() >= Duration::from_millis(every) {
                    last_draw = Instant::now();
                    let count = control.word(Word::Progress).load(Ordering::Relaxed);
                    let text = format!(
                        "  {label}: {:.1} / {:.1} s, {count} messages",
                        started.elapsed().as_secs_f64(),
                        seconds
                    );
                    if self.terminal {
                        eprint!("\r{text}   ");
                    } else {
                        eprintln!("{text}");
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if show && self.terminal {
                eprint!("\r{:80}\r", "");
            }
            let mut results = Vec::new();
            for r in &mut running {
                let text = r
                    .output
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
                    CliError::new(
                        EX_SOFTWARE,
                        format!(
                            "{label}: the {} process sent unreadable results: {e}",
                            r.role
                        ),
                    )
                })?;
                if let Some(error) = value.get("pin_error").and_then(Value::as_str) {
                    eprintln!("shmq: note: {label}: could not pin the {}: {error}", r.role);
                }
                results.push(value);
            }
            Ok(results)
        })();
        if result.is_err() {
            control.word(Word::Stop).store(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            for r in &mut running {
                // Only our own children, by their handles.
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
        result
    }

    /// Reaps finished children; `Ok(true)` when all have exited successfully.
    fn check(&self, running: &mut [Running], control: &Control) -> Result<bool, CliError> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(CliError::new(
                130,
                "interrupted; benchmark segments removed",
            ));
        }
        let mut all = true;
        for r in running.iter_mut() {
            match r.child.try_wait() {
                Ok(Some(status)) if status.success() => {}
                Ok(Some(status)) => {
                    control.word(Word::Stop).store(1, Ordering::Relaxed);
                    return Err(CliError::new(
                        EX_SOFTWARE,
                        format!("the {} process failed ({status})", r.role),
                    ));
                }
                Ok(None) => all = false,
                Err(e) => return Err(CliError::new(EX_OSERR, format!("waiting for a child: {e}"))),
            }
        }
        Ok(all)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn histogram_of(value: &Value, key: &str) -> Result<hdrhistogram::Histogram<u64>, CliError> {
    match value.get(key) {
        Some(v) => report::from_json(v),
        None => Ok(report::new_histogram()),
    }
}

/// Runs the cache-line floor for `duration`; returns its round-trip histogram.
fn floor(ctx: &mut Context, label: &str, duration: Duration) -> Result<Series, CliError> {
    reference(ctx, Reference::CacheLine, label, duration)
}

/// A reference measurement (see `floors`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reference {
    CacheLine,
    TwoLine,
    BareRing,
}

impl Reference {
    fn roles(self) -> [&'static str; 2] {
        match self {
            Reference::CacheLine => ["floor-a", "floor-b"],
            Reference::TwoLine => ["two-line-a", "two-line-b"],
            Reference::BareRing => ["bare-ring-a", "bare-ring-b"],
        }
    }
}

/// Runs a reference measurement for `duration`; returns its round-trip histogram.
fn reference(
    ctx: &mut Context,
    which: Reference,
    label: &str,
    duration: Duration,
) -> Result<Series, CliError> {
    let spec = json!({
        "duration_ns": nanos(duration),
        "warmup_ns": nanos(ctx.args.warmup.min(Duration::from_millis(200))),
        "size": ctx.args.size,
        "capacity": ctx.args.capacity,
    });
    if which == Reference::BareRing {
        let usage =
            "--anatomy: the bare ring needs --capacity of at least 2 and --size of at least 8";
        let geometry =
            floors::BareGeometry::new(ctx.args.capacity as usize, ctx.args.size as usize)
                .ok_or_else(|| CliError::new(EX_USAGE, usage))?;
        ctx.scratch = geometry.bytes();
    }
    let [a, b] = which.roles();
    let plans = vec![
        ChildPlan {
            role: a,
            spec: spec.clone(),
            cpu: ctx.cpu(0),
        },
        ChildPlan {
            role: b,
            spec,
            cpu: ctx.cpu(1),
        },
    ];
    let results = ctx.run_phase(label, plans, 2, Vec::new(), duration.as_secs_f64(), None)?;
    Ok(Series {
        label: label.to_owned(),
        histogram: histogram_of(&results[0], "rtt")?,
    })
}

/// A transport for the comparisons.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Shmq,
    Fd(FdKind),
    Crossbeam,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Shmq => "shmq",
            Transport::Fd(kind) => kind.name(),
            Transport::Crossbeam => "crossbeam (2 threads)",
        }
    }
}

/// Builds the two sides' spec fields for a one-way channel a→b (and b→a when
/// `both_ways`), creating segments or descriptors.
fn wire(
    ctx: &Context,
    segments: &mut Segments,
    transport: Transport,
    both_ways: bool,
    spec: &mut Value,
    inherited: &mut Vec<OwnedFd>,
) -> Result<(), CliError> {
    match transport {
        Transport::Shmq => {
            spec["transport"] = json!("shmq");
            spec["wait"] = json!(ctx.wait_spec());
            let forward = segments.create(ctx.args)?;
            spec["a_tx"] = json!(forward);
            spec["b_rx"] = json!(forward);
            if both_ways {
                let backward = segments.create(ctx.args)?;
                spec["b_tx"] = json!(backward);
                spec["a_rx"] = json!(backward);
            }
        }
        Transport::Fd(kind) => {
            spec["transport"] = json!(kind.name());
            spec["poll"] = json!(ctx.poll_spec());
            let forward = FdChannel::new(kind)?;
            spec["a_tx"] = json!(forward.tx.as_raw_fd());
            spec["b_rx"] = json!(forward.rx.as_raw_fd());
            inherited.extend([forward.tx, forward.rx]);
            if both_ways {
                let backward = FdChannel::new(kind)?;
                spec["b_tx"] = json!(backward.tx.as_raw_fd());
                spec["a_rx"] = json!(backward.rx.as_raw_fd());
                inherited.extend([backward.tx, backward.rx]);
            }
        }
        Transport::Crossbeam => {}
    }
    Ok(())
}

fn label_of(transport: Transport, size: u64, what: &str) -> String {
    match transport {
        Transport::Fd(FdKind::EventFd) if size != 8 => format!("eventfd (8 B) {what}"),
        t => format!("{} {what}", t.name()),
    }
}

/// Latency ping-pong over `transport`: round trip, then (except crossbeam) one-way.
fn latency_phase(
    ctx: &mut Context,
    segments: &mut Segments,
    transport: Transport,
) -> Result<Vec<Series>, CliError> {
    let args = ctx.args;
    let oneway = args.duration / 2;
    let mut spec = json!({
        "size": args.size,
        "capacity": args.capacity,
        "duration_ns": nanos(args.duration),
        "warmup_ns": nanos(args.warmup),
        "oneway_ns": nanos(oneway),
    });
    let seconds = (args.warmup + args.duration + oneway).as_secs_f64();
    if transport == Transport::Crossbeam {
        spec["cpu_b"] = json!(ctx.cpu(1));
        let plans = vec![ChildPlan {
            role: "crossbeam-pingpong",
            spec,
            cpu: ctx.cpu(0),
        }];
        let results = ctx.run_phase(transport.name(), plans, 2, Vec::new(), seconds, None)?;
        return Ok(vec![Series {
            label: label_of(transport, args.size, "round trip"),
            histogram: histogram_of(&results[0], "rtt")?,
        }]);
    }
    let mut inherited = Vec::new();
    wire(ctx, segments, transport, true, &mut spec, &mut inherited)?;
    let plans = vec![
        ChildPlan {
            role: "ping",
            spec: spec.clone(),
            cpu: ctx.cpu(0),
        },
        ChildPlan {
            role: "pong",
            spec,
            cpu: ctx.cpu(1),
        },
    ];
    let results = ctx.run_phase(transport.name(), plans, 2, inherited, seconds, None)?;
    Ok(vec![
        Series {
            label: label_of(transport, args.size, "round trip"),
            histogram: histogram_of(&results[0], "rtt")?,
        },
        Series {
            label: label_of(transport, args.size, "one-way"),
            histogram: histogram_of(&results[1], "oneway")?,
        },
    ])
}

/// Throughput result of one transport.
struct Rate {
    label: String,
    messages_per_s: f64,
    messages: u64,
    latency: Series,
}

fn rate_from(label: &str, consumers: &[Value], latency_label: String) -> Result<Rate, CliError> {
    let mut messages = 0u64;
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut histogram = report::new_histogram();
    for c in consumers {
        messages += c
            .get("window_messages")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let s = c
            .get("window_start_ns")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let e = c.get("window_end_ns").and_then(Value::as_u64).unwrap_or(0);
        if s > 0 {
            start = start.min(s);
        }
        end = end.max(e);
        histogram
            .add(histogram_of(c, "latency")?)
            .map_err(|_| CliError::new(EX_SOFTWARE, "merging histograms"))?;
    }
    let seconds = if end > start {
        (end - start) as f64 / 1e9
    } else {
        0.0
    };
    Ok(Rate {
        label: label.to_owned(),
        messages_per_s: if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        },
        messages,
        latency: Series {
            label: latency_label,
            histogram,
        },
    })
}

fn throughput_phase(
    ctx: &mut Context,
    segments: &mut Segments,
    transport: Transport,
) -> Result<Rate, CliError> {
    let args = ctx.args;
    let (producers, consumers) = if transport == Transport::Shmq {
        (args.producers, args.consumers)
    } else {
        (1, 1)
    };
    let latency_label = if args.rate.is_some() {
        format!(
            "{} send→receive (from intended send time)",
            transport.name()
        )
    } else {
        format!("{} send→receive (saturated, 1 in 64)", transport.name())
    };
    let mut spec = json!({
        "size": args.size,
        "capacity": args.capacity,
        "duration_ns": nanos(args.duration),
        "warmup_ns": nanos(args.warmup),
    });
    if let Some(count) = args.count {
        // A counted run is measured whole: no warm-up to discard.
        spec["count"] = json!(count);
        spec["warmup_ns"] = json!(0);
    }
    if let Some(rate) = args.rate {
        spec["interval_ns"] = json!(((1e9 * producers as f64) / rate).max(1.0) as u64);
    }
    let seconds = match (args.count, args.rate) {
        (Some(count), Some(rate)) => count as f64 * producers as f64 / rate,
        (Some(_), None) => args.duration.as_secs_f64(),
        _ => (args.warmup + args.duration).as_secs_f64(),
    };
    if transport == Transport::Crossbeam {
        spec["cpu_b"] = json!(ctx.cpu(1));
        let plans = vec![ChildPlan {
            role: "crossbeam-throughput",
            spec,
            cpu: ctx.cpu(0),
        }];
        let results = ctx.run_phase(transport.name(), plans, 2, Vec::new(), seconds, None)?;
        return rate_from(transport.name(), &results, latency_label);
    }
    let mut inherited = Vec::new();
    wire(ctx, segments, transport, false, &mut spec, &mut inherited)?;
    let mut plans = Vec::new();
    for i in 0..producers {
        let mut spec = spec.clone();
        if transport != Transport::Shmq {
            spec["send_stop"] = json!(1);
        }
        plans.push(ChildPlan {
            role: "producer",
            spec,
            cpu: ctx.cpu(i as usize),
        });
    }
    for i in 0..consumers {
        plans.push(ChildPlan {
            role: "consumer",
            spec: spec.clone(),
            cpu: ctx.cpu((producers + i) as usize),
        });
    }
    let queue_name = spec.get("a_tx").and_then(Value::as_str).map(str::to_owned);
    // shmq: once every producer is done, the controller itself sends one STOP per
    // consumer (each consumer takes exactly one and exits).
    let mut send_stops = || -> Result<(), CliError> {
        if let Some(name) = &queue_name {
            let queue = Queue::open(name)?;
            let mut message = vec![0u8; args.size as usize];
            message[..8].copy_from_slice(&STOP.to_le_bytes());
            for _ in 0..consumers {
                queue
                    .send(&message)
                    .map_err(|e| CliError::new(EX_SOFTWARE, format!("sending stop: {e}")))?;
            }
        }
        Ok(())
    };
    let hook: AfterProducers<'_> = if transport == Transport::Shmq {
        Some((producers, &mut send_stops))
    } else {
        None
    };
    let ready = producers + consumers;
    let results = ctx.run_phase(transport.name(), plans, ready, inherited, seconds, hook)?;
    rate_from(
        transport.name(),
        &results[producers as usize..],
        latency_label,
    )
}

fn wakeup_phase(
    ctx: &mut Context,
    segments: &mut Segments,
    transport: Transport,
) -> Result<Series, CliError> {
    let args = ctx.args;
    let mut spec = json!({
        "size": args.size,
        "capacity": args.capacity,
        "duration_ns": nanos(args.duration),
        "warmup_ns": nanos(args.warmup),
    });
    let mut inherited = Vec::new();
    wire(ctx, segments, transport, false, &mut spec, &mut inherited)?;
    let plans = vec![
        ChildPlan {
            role: "wake-producer",
            spec: spec.clone(),
            cpu: ctx.cpu(0),
        },
        ChildPlan {
            role: "consumer",
            spec,
            cpu: ctx.cpu(1),
        },
    ];
    let seconds = (args.warmup + args.duration).as_secs_f64();
    let results = ctx.run_phase(transport.name(), plans, 2, inherited, seconds, None)?;
    Ok(Series {
        label: label_of(transport, args.size, "wake-up"),
        histogram: histogram_of(&results[1], "latency")?,
    })
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
    if args.count.is_some() && args.workload != Workload::Throughput {
        return usage(
            "--count applies to --workload throughput (others run for --duration)".into(),
        );
    }
    if args.duration.is_zero() {
        return usage("--duration must be positive".into());
    }
    Ok(())
}

/// Entry point of `shmq bench`.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    validate(args)?;
    install_signal_handlers();
    let wait = args.wait.unwrap_or(match args.workload {
        Workload::Wakeup => Wait::Futex,
        _ => Wait::Spin,
    });
    let available = crate::os::available_cpus();
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
    let processes = match args.workload {
        Workload::Throughput => args.producers + args.consumers,
        _ => 2,
    };
    if processes as usize > available && wait == Wait::Spin {
        notes.push(format!(
            "{processes} spinning processes on {available} CPUs: some share a core, expect scheduler-tick hand-offs"
        ));
    }
    let mut ctx = Context {
        args,
        wait,
        cpus,
        progress: !args.json || std::io::stderr().is_terminal(),
        terminal: std::io::stderr().is_terminal(),
        phase: 0,
        scratch: 0,
    };
    let mut segments = Segments {
        names: Vec::new(),
        next: 0,
    };
    let floor_time = args.duration.min(Duration::from_millis(500));

    let header = format!(
        "shmq bench: {} workload, {} B messages, capacity {}, wait {}{}, {}, {:.1} s per transport after {:.1} s warm-up",
        format!("{:?}", args.workload).to_lowercase(),
        args.size,
        args.capacity,
        format!("{wait:?}").to_lowercase(),
        if wait == Wait::Hybrid {
            format!(" (spin {:?}, yield {:?})", args.spin_for, args.yield_for)
        } else {
            String::new()
        },
        if ctx.cpus.is_empty() {
            "unpinned".to_owned()
        } else {
            format!("pinned to cores {:?}", &ctx.cpus[..ctx.cpus.len().min(processes as usize)])
        },
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
    );
    if !args.json {
        println!("{header}");
        for note in &notes {
            println!("note: {note}");
        }
        let _ = std::io::stdout().flush();
    }

    let mut floors = Vec::new();
    if args.workload != Workload::Latency {
        floors.push(floor(&mut ctx, "cache-line floor (before)", floor_time)?);
    }
    let mut series: Vec<Series> = Vec::new();
    let mut rates: Vec<Rate> = Vec::new();
    // Latency only: per label, the p50 / same-round floor p50 of every round.
    let mut round_ratios: Vec<(String, Vec<f64>)> = Vec::new();
    // Latency only: per label, the p99.9 (ns) of every round. A round runs on one
    // vCPU placement; the merged table mixes the placements a run went through.
    let mut round_tails: Vec<(String, Vec<f64>)> = Vec::new();
    let push_round = |all: &mut Vec<(String, Vec<f64>)>, label: String, value: f64| match all
        .iter_mut()
        .find(|(l, _)| *l == label)
    {
        Some((_, values)) => values.push(value),
        None => all.push((label, vec![value])),
    };
    match args.workload {
        Workload::Latency => {
            let mut transports = vec![Transport::Shmq];
            if args.compare {
                transports.extend([Transport::Fd(FdKind::Unix), Transport::Fd(FdKind::Pipe)]);
                if ctx.sleeps() {
                    transports.push(Transport::Fd(FdKind::EventFd));
                } else {
                    transports.push(Transport::Crossbeam);
                }
            }
            let rounds = args.rounds.max(1);
            let round_args = per_round(args, rounds);
            let mut round_ctx = ctx.with_args(&round_args);
            let floor_round = round_args.duration.min(Duration::from_millis(250));
            let references: &[(Reference, &str)] = if args.anatomy {
                &[
                    (Reference::TwoLine, "two-line floor"),
                    (Reference::BareRing, "bare slot ring"),
                ]
            } else {
                &[]
            };
            for _ in 0..rounds {
                let floor_series = floor(&mut round_ctx, "cache-line floor", floor_round)?;
                let floor_p50 = floor_series.histogram.value_at_quantile(0.5) as f64;
                let mut measured = Vec::new();
                for &(which, label) in references {
                    // As long as a transport's round-trip phase, so tails compare
                    // over the same stretch of host behaviour.
                    let duration = round_args.duration;
                    measured.push(reference(&mut round_ctx, which, label, duration)?);
                }
                for &t in &transports {
                    measured.extend(latency_phase(&mut round_ctx, &mut segments, t)?);
                }
                let p50_of = |label: &str| {
                    measured
                        .iter()
                        .find(|s| s.label == label)
                        .map(|s| s.histogram.value_at_quantile(0.5) as f64)
                        .filter(|&p50| p50 > 0.0)
                };
                let mut ratios = Vec::new();
                for s in &measured {
                    let p50 = s.histogram.value_at_quantile(0.5) as f64;
                    if floor_p50 > 0.0 {
                        ratios.push((s.label.clone(), p50 / floor_p50));
                    }
                }
                // With --anatomy, shmq's round trip against the bare ring's: what the
                // queue adds to the slot hand-off itself.
                let shmq_rtt = label_of(Transport::Shmq, args.size, "round trip");
                if let (Some(shmq), Some(bare)) = (p50_of(&shmq_rtt), p50_of("bare slot ring")) {
                    ratios.push((format!("{shmq_rtt} ÷ bare slot ring"), shmq / bare));
                }
                for (label, ratio) in ratios {
                    push_round(&mut round_ratios, label, ratio);
                }
                let tail = |s: &Series| s.histogram.value_at_quantile(0.999) as f64;
                push_round(
                    &mut round_tails,
                    floor_series.label.clone(),
                    tail(&floor_series),
                );
                for s in &measured {
                    push_round(&mut round_tails, s.label.clone(), tail(s));
                }
                merge_series(&mut floors, floor_series);
                for s in measured {
                    merge_series(&mut series, s);
                }
            }
        }
        Workload::Throughput => {
            let mut transports = vec![Transport::Shmq];
            if args.rate.is_none() {
                transports.push(Transport::Crossbeam);
            }
            if args.compare {
                transports.extend([Transport::Fd(FdKind::Unix), Transport::Fd(FdKind::Pipe)]);
            }
            // Alternate the transports in rounds (--duration split among them, or
            // --count per round) so each ratio compares runs moments apart.
            let rounds = if args.count.is_some() {
                1
            } else {
                args.rounds.max(1)
            };
            let round_args = per_round(args, rounds);
            let mut round_ctx = ctx.with_args(&round_args);
            for _ in 0..rounds {
                let mut shmq_rate = None;
                for &t in &transports {
                    let rate = throughput_phase(&mut round_ctx, &mut segments, t)?;
                    let per_s = rate.messages_per_s;
                    match shmq_rate {
                        None => shmq_rate = Some(per_s),
                        Some(shmq) if per_s > 0.0 => {
                            let label = format!("shmq ÷ {}", rate.label);
                            push_round(&mut round_ratios, label, shmq / per_s);
                        }
                        Some(_) => {}
                    }
                    merge_rate(&mut rates, rate, rounds);
                }
            }
        }
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
                series.push(wakeup_phase(&mut ctx, &mut segments, t)?);
            }
        }
    }
    if args.workload != Workload::Latency {
        floors.push(floor(&mut ctx, "cache-line floor (after)", floor_time)?);
    }
    drop(segments);

    // The floor for ratios in the table: the lowest floor p50 measured (host
    // placement of the vCPUs can change it for seconds; the lowest is the physical
    // limit). For latency, the per-round ratios below are the fairer comparison.
    let floor_p50 = floors
        .iter()
        .map(|f| f.histogram.value_at_quantile(0.5) as f64)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let floor_p50 = (floor_p50 < f64::MAX).then_some(floor_p50);

    let mut all: Vec<Series> = floors;
    all.extend(series);
    for r in &mut rates {
        let histogram = std::mem::replace(&mut r.latency.histogram, report::new_histogram());
        all.push(Series {
            label: r.latency.label.clone(),
            histogram,
        });
    }

    if let Some(path) = &args.hgrm {
        std::fs::write(path, report::hgrm(&all))
            .map_err(|e| CliError::new(EX_CANTCREAT, format!("writing {path}: {e}")))?;
    }
    if let Some(path) = &args.plot {
        crate::plot::latency_svg(path, &header, &all)?;
    }

    let shmq_p50 = all
        .iter()
        .find(|s| s.label.starts_with("shmq"))
        .map(|s| s.histogram.value_at_quantile(0.5) as f64);
    if args.json {
        let value = json!({
            "workload": format!("{:?}", args.workload).to_lowercase(),
            "size": args.size,
            "capacity": args.capacity,
            "wait": format!("{wait:?}").to_lowercase(),
            "pinned": !ctx.cpus.is_empty(),
            "notes": notes,
            "floor_p50_ns": floor_p50,
            "round_ratios": round_ratios.iter().map(|(label, ratios)| json!({
                "label": label,
                "per_round": ratios,
                "median": median(ratios),
            })).collect::<Vec<_>>(),
            "round_p999_ns": round_tails.iter().map(|(label, tails)| json!({
                "label": label,
                "per_round": tails,
                "median": median(tails),
            })).collect::<Vec<_>>(),
            "latency": all.iter().map(report::series_json).collect::<Vec<_>>(),
            "throughput": rates.iter().map(|r| json!({
                "transport": r.label,
                "messages_per_s": r.messages_per_s,
                "bytes_per_s": r.messages_per_s * args.size as f64,
                "messages": r.messages,
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
        return Ok(());
    }

    println!();
    println!(
        "latency (× floor p50 = value / the lower cache-line floor p50, {}):",
        floor_p50.map_or("n/a".to_owned(), fmt_ns)
    );
    print!("{}", report::latency_table(&all, floor_p50));
    if !round_ratios.is_empty() {
        println!();
        println!(
            "{} of the same round ({} rounds; transports alternate):",
            if rates.is_empty() {
                "p50 / cache-line floor p50"
            } else {
                "messages/s ratio"
            },
            args.rounds.max(1)
        );
        for (label, ratios) in &round_ratios {
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}×")).collect();
            println!(
                "  {:<36} median {:>6.2}×   rounds: {}",
                label,
                median(ratios),
                each.join(" ")
            );
        }
    }
    if !round_tails.is_empty() {
        println!();
        println!(
            "p99.9 within each round (a round runs on one vCPU placement; the table merges them):"
        );
        for (label, tails) in &round_tails {
            let each: Vec<String> = tails.iter().map(|&t| fmt_ns(t)).collect();
            println!(
                "  {:<36} median {:>9}   rounds: {}",
                label,
                fmt_ns(median(tails)),
                each.join(" ")
            );
        }
    }
    if !rates.is_empty() {
        let shmq_rate = rates.first().map_or(0.0, |r| r.messages_per_s);
        println!();
        println!(
            "throughput ({} producer(s), {} consumer(s) for shmq; baselines 1P1C):",
            args.producers, args.consumers
        );
        println!(
            "{:<24} {:>14} {:>14} {:>12} {:>10}",
            "transport", "messages", "bytes", "measured", "shmq ×"
        );
        for r in &rates {
            println!(
                "{:<24} {:>14} {:>14} {:>12} {:>10}",
                r.label,
                fmt_rate(r.messages_per_s, "msg"),
                fmt_rate(r.messages_per_s * args.size as f64, "B"),
                r.messages,
                if r.messages_per_s > 0.0 {
                    format!("{:.2}", shmq_rate / r.messages_per_s)
                } else {
                    "-".to_owned()
                }
            );
        }
        if let Some(rate) = args.rate {
            println!(
                "offered load {} (latency measured from intended send times: coordinated omission accounted for)",
                fmt_rate(rate, "msg")
            );
        }
    }
    if args.compare || args.workload == Workload::Wakeup {
        if let Some(base) = shmq_p50.filter(|b| *b > 0.0) {
            println!();
            println!("p50 relative to shmq's first row:");
            for s in all.iter().filter(|s| !s.label.starts_with("cache-line")) {
                let p50 = s.histogram.value_at_quantile(0.5) as f64;
                println!("  {:<44} {:>8.2}×", s.label, p50 / base);
            }
        }
    }
    if available < 2 || ctx.cpus.is_empty() {
        return Ok(());
    }
    if floors_unavailable(&all) {
        return Err(CliError::new(EX_UNAVAILABLE, "no floor samples were taken"));
    }
    Ok(())
}

/// Adds `new` to the series with the same label (histograms merged), or appends it.
fn merge_series(all: &mut Vec<Series>, new: Series) {
    match all.iter_mut().find(|s| s.label == new.label) {
        Some(existing) => {
            // Same bounds and precision (report::new_histogram), so adding cannot fail
            // short of a value above the histogram's range, which recording refused.
            let _ = existing.histogram.add(&new.histogram);
        }
        None => all.push(new),
    }
}

/// Adds one round's `rate` to the transport's running total (rounds have equal
/// durations, so the mean of their rates is the overall rate).
fn merge_rate(all: &mut Vec<Rate>, rate: Rate, rounds: u32) {
    match all.iter_mut().find(|r| r.label == rate.label) {
        Some(existing) => {
            existing.messages_per_s += rate.messages_per_s / f64::from(rounds);
            existing.messages += rate.messages;
            let _ = existing.latency.histogram.add(&rate.latency.histogram);
        }
        None => all.push(Rate {
            messages_per_s: rate.messages_per_s / f64::from(rounds),
            ..rate
        }),
    }
}

/// Median of a non-empty list (0 for an empty one).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn floors_unavailable(all: &[Series]) -> bool {
    all.iter()
        .filter(|s| s.label.starts_with("cache-line"))
        .all(|s| s.histogram.is_empty())
}
