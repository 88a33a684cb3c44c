//! What each benchmark child process does. The controller starts
//! `shmq __child ROLE SPEC` (SPEC is JSON); the child pins itself, joins the start
//! barrier in the control mapping, runs its loop, and prints one JSON line of results
//! (histograms as `[value, count]` pairs) on stdout.
//!
//! Messages carry a CLOCK_MONOTONIC timestamp in their first 8 bytes. Its low bit is
//! a flag (see [`ONE_WAY`]); [`STOP`] there ends the receiving loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shmq::{Queue, RecvError, TryRecvError, WaitStrategy};

use crate::baselines::{CrossbeamLink, FdKind, FdLink, Poll, STOP_CHECK};
use crate::floors;
use crate::report::{new_histogram, record, to_json};
use crate::util::{now_ns, CliError, Control, Rng, Word, EX_SOFTWARE, EX_USAGE};

/// Low bit of the timestamp word: the receiver should record one-way latency.
pub const ONE_WAY: u64 = 1;
/// Timestamp word that ends a receiving loop (also a valid eventfd value).
pub const STOP: u64 = u64::MAX - 1;
/// Throughput producers stamp one message in this many (the rest carry 0), so the
/// clock is not read per message; rate-limited producers stamp every message.
pub const SAMPLE_EVERY: u64 = 64;

fn bad_spec(what: &str) -> CliError {
    CliError::new(EX_USAGE, format!("internal child spec lacks `{what}`"))
}

pub struct Spec<'a>(pub &'a Value);

impl Spec<'_> {
    pub fn u64(&self, key: &str) -> Result<u64, CliError> {
        self.0
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_spec(key))
    }
    pub fn str(&self, key: &str) -> Result<&str, CliError> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| bad_spec(key))
    }
    pub fn opt_u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }
}

/// Parses `spin`, `yield`, `futex`, `hybrid:SPIN_NS:YIELD_NS`.
pub fn wait_from_spec(text: &str) -> Result<WaitStrategy, CliError> {
    let mut parts = text.split(':');
    Ok(match parts.next() {
        Some("spin") => WaitStrategy::Spin,
        Some("yield") => WaitStrategy::Yield,
        Some("futex") => WaitStrategy::Futex,
        Some("hybrid") => {
            let mut next = || {
                parts
                    .next()
                    .and_then(|p| p.parse().ok())
                    .map(Duration::from_nanos)
                    .ok_or_else(|| bad_spec("wait"))
            };
            WaitStrategy::Hybrid {
                spin: next()?,
                yield_for: next()?,
            }
        }
        _ => return Err(bad_spec("wait")),
    })
}

/// Entry point of `shmq __child`.
pub fn run(role: &str, spec_text: &str) -> Result<(), CliError> {
    let value: Value = serde_json::from_str(spec_text)
        .map_err(|e| CliError::new(EX_USAGE, format!("internal child spec: {e}")))?;
    let spec = Spec(&value);
    let control = Control::open(spec.str("control")?)?;
    let pin_error = match spec.opt_u64("cpu") {
        Some(cpu) => crate::os::pin_to_cpu(cpu as usize)
            .err()
            .map(|e| format!("cpu {cpu}: {e}")),
        None => None,
    };
    let result = match role {
        "floor-a" => floors::floor_measure(&spec, &control),
        "floor-b" => floors::floor_echo(&control),
        "two-line-a" => floors::two_line_measure(&spec, &control),
        "two-line-b" => floors::two_line_echo(&control),
        "bare-ring-a" => floors::bare_ring_ping(&spec, &control),
        "bare-ring-b" => floors::bare_ring_pong(&spec, &control),
        "ping" => {
            let mut link = open_link(&spec, "a")?;
            ping(&spec, &control, &mut link)
        }
        "pong" => {
            let mut link = open_link(&spec, "b")?;
            pong(&spec, &control, &mut link)
        }
        "producer" => {
            let mut link = open_link(&spec, "a")?;
            producer(&spec, &control, &mut link)
        }
        "consumer" => {
            let mut link = open_link(&spec, "b")?;
            consumer(&spec, &control, &mut link)
        }
        "wake-producer" => {
            let mut link = open_link(&spec, "a")?;
            wake_producer(&spec, &control, &mut link)
        }
        "crossbeam-pingpong" | "crossbeam-throughput" => crossbeam(role, &spec, &control),
        other => Err(CliError::new(
            EX_USAGE,
            format!("unknown child role `{other}`"),
        )),
    };
    let mut output = match result {
        Ok(output) => output,
        Err(e) => {
            // Tell the controller to give up, so the peer does not wait forever.
            control.word(Word::Stop).store(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    if let (Some(error), Value::Object(map)) = (pin_error, &mut output) {
        map.insert("pin_error".into(), json!(error));
    }
    println!("{output}");
    Ok(())
}

// ---- the links a child talks through ------------------------------------------------

/// One side of a transport: shmq queues, or inherited descriptors. (One per
/// process, never moved in the hot loop: the size difference does not matter.)
#[allow(clippy::large_enum_variant)]
enum Link {
    Shmq {
        tx: Option<Queue>,
        rx: Option<Queue>,
        /// Receive buffer of the segment's maximum message size.
        buffer: Vec<u8>,
    },
    Fd(FdLink),
}

fn open_link(spec: &Spec, side: &str) -> Result<Link, CliError> {
    let transport = spec.str("transport")?;
    if transport == "shmq" {
        let wait = wait_from_spec(spec.str("wait")?)?;
        let open = |key: &str| -> Result<Option<Queue>, CliError> {
            match spec.0.get(key).and_then(Value::as_str) {
                Some(name) => {
                    let mut queue = Queue::open(name)?;
                    queue.set_wait_strategy(wait);
                    Ok(Some(queue))
                }
                None => Ok(None),
            }
        };
        let tx = open(&format!("{side}_tx"))?;
        let rx = open(&format!("{side}_rx"))?;
        let size = rx.as_ref().map_or(0, |q| q.max_message_size() as usize);
        return Ok(Link::Shmq {
            tx,
            rx,
            buffer: vec![0; size],
        });
    }
    let kind = FdKind::parse(transport).ok_or_else(|| bad_spec("transport"))?;
    let poll = match spec.str("poll")? {
        "block" => Poll::Block,
        "spin" => Poll::Spin,
        "yield" => Poll::Yield,
        hybrid => match wait_from_spec(hybrid)? {
            WaitStrategy::Hybrid { spin, yield_for } => Poll::Hybrid { spin, yield_for },
            _ => return Err(bad_spec("poll")),
        },
    };
    let fd = |key: &str| -> i32 {
        spec.0
            .get(key)
            .and_then(Value::as_i64)
            .map_or(-1, |v| v as i32)
    };
    Ok(Link::Fd(FdLink::new(
        kind,
        fd(&format!("{side}_rx")),
        fd(&format!("{side}_tx")),
        poll,
    )?))
}

impl Link {
    fn send(&mut self, message: &[u8]) -> Result<(), CliError> {
        match self {
            Link::Shmq { tx: Some(tx), .. } => tx
                .send(message)
                .map_err(|e| CliError::new(EX_SOFTWARE, format!("send: {e}"))),
            Link::Shmq { tx: None, .. } => Err(bad_spec("tx")),
            Link::Fd(link) => link.send(message),
        }
    }

    /// Receives one message into `out`; `Ok(None)` if nothing came within a few ms
    /// (shmq) or the stream ended (fd).
    fn recv(&mut self, out: &mut [u8]) -> Result<Option<()>, CliError> {
        match self {
            Link::Shmq {
                rx: Some(rx),
                buffer,
                ..
            } => {
                let fail = |e: String| CliError::new(EX_SOFTWARE, format!("recv: {e}"));
                let len = match rx.try_recv_into(buffer) {
                    Ok(len) => len,
                    Err(TryRecvError::Empty) => match rx.recv_into_timeout(buffer, STOP_CHECK) {
                        Ok(len) => len,
                        Err(RecvError::Timeout) => return Ok(None),
                        Err(e) => return Err(fail(e.to_string())),
                    },
                    Err(e) => return Err(fail(e.to_string())),
                };
                let n = len.min(out.len());
                out[..n].copy_from_slice(&buffer[..n]);
                Ok(Some(()))
            }
            Link::Shmq { rx: None, .. } => Err(bad_spec("rx")),
            Link::Fd(link) => Ok(link.recv(out)?.then_some(())),
        }
    }
}

impl Link {
    /// Echo side: receives one message and sends it straight back. Over shmq the
    /// message is forwarded from its slot, zero copy, before the slot is released
    /// (`recv_with`), which is how a forwarding stage uses the queue. Returns the
    /// message's first word and, for one-way stamps, the receipt time (read before
    /// the echo is sent), or `None` if nothing came within a few ms.
    fn forward(&mut self, scratch: &mut [u8]) -> Result<Option<(u64, u64)>, CliError> {
        match self {
            Link::Shmq {
                tx: Some(tx),
                rx: Some(rx),
                ..
            } => {
                let fail = |e: String| CliError::new(EX_SOFTWARE, format!("forward: {e}"));
                let deadline = std::time::Instant::now() + STOP_CHECK;
                let echo = |bytes: &[u8]| {
                    let word = word_of(bytes);
                    let received = if word & ONE_WAY != 0 { now_ns() } else { 0 };
                    let sent = if word == STOP { Ok(()) } else { tx.send(bytes) };
                    sent.map(|()| (word, received))
                };
                let outcome = match rx.try_recv_with(echo) {
                    Err(TryRecvError::Empty) => rx.recv_with_deadline(echo, Some(deadline)),
                    other => other.map_err(|e| match e {
                        TryRecvError::Corrupt { position, len, max } => {
                            RecvError::Corrupt { position, len, max }
                        }
                        _ => RecvError::Timeout,
                    }),
                };
                match outcome {
                    Ok(sent) => sent.map(Some).map_err(|e| fail(e.to_string())),
                    Err(RecvError::Timeout) => Ok(None),
                    Err(e) => Err(fail(e.to_string())),
                }
            }
            _ => {
                if self.recv(scratch)?.is_none() {
                    return Ok(None);
                }
                let word = word_of(scratch);
                let received = if word & ONE_WAY != 0 { now_ns() } else { 0 };
                if word != STOP {
                    self.send(scratch)?;
                }
                Ok(Some((word, received)))
            }
        }
    }
}

pub fn stamp(buffer: &mut [u8], word: u64) {
    buffer[..8].copy_from_slice(&word.to_le_bytes());
}

pub fn word_of(buffer: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buffer[..8]);
    u64::from_le_bytes(bytes)
}

/// Start, warm-up end, measurement end, and one-way phase end of a timed run.
pub struct Schedule {
    pub start: u64,
    pub measure_from: u64,
    pub round_trip_until: u64,
    pub until: u64,
}

pub fn schedule(spec: &Spec, start: u64) -> Result<Schedule, CliError> {
    let measure_from = start + spec.u64("warmup_ns")?;
    let round_trip_until = measure_from + spec.u64("duration_ns")?;
    let until = round_trip_until + spec.opt_u64("oneway_ns").unwrap_or(0);
    Ok(Schedule {
        start,
        measure_from,
        round_trip_until,
        until,
    })
}

/// Publishes progress without touching the hot path more than once per 4096 loops.
pub fn progress(control: &Control, count: u64) {
    if count % 4096 == 0 {
        control.word(Word::Progress).store(count, Ordering::Relaxed);
    }
}

// ---- ping-pong ----------------------------------------------------------------------

fn ping(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    let mut reply = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut histogram = new_histogram();
    let mut count = 0u64;
    loop {
        let t0 = now_ns();
        if t0 >= plan.until || control.stopping() {
            break;
        }
        let one_way = t0 >= plan.round_trip_until;
        stamp(&mut buffer, (t0 & !ONE_WAY) | u64::from(one_way));
        link.send(&buffer)?;
        while link.recv(&mut reply)?.is_none() {
            if control.stopping() {
                return Err(CliError::new(EX_SOFTWARE, "ping: peer stopped"));
            }
        }
        let t1 = now_ns();
        if t0 >= plan.measure_from && !one_way {
            record(&mut histogram, t1 - t0);
        }
        count += 1;
        progress(control, count);
    }
    stamp(&mut buffer, STOP);
    link.send(&buffer)?;
    Ok(json!({ "rtt": to_json(&histogram), "count": count }))
}

fn pong(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    control.ready_and_wait();
    let mut histogram = new_histogram();
    loop {
        let (word, received) = match link.forward(&mut buffer)? {
            Some(echoed) => echoed,
            None if control.stopping() => break,
            None => continue,
        };
        if word == STOP {
            break;
        }
        if word & ONE_WAY != 0 {
            record(&mut histogram, received.saturating_sub(word & !ONE_WAY));
        }
    }
    Ok(json!({ "oneway": to_json(&histogram) }))
}

// ---- throughput -------------------------------------------------------------------

/// Sends as fast as it can (or at `rate_per_s`, stamping each message with its
/// *intended* send time so a stall shows up in every message it delayed).
fn producer(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let count_limit = spec.opt_u64("count");
    let interval_ns = spec.opt_u64("interval_ns");
    let mut buffer = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut sent = 0u64;
    loop {
        if let Some(limit) = count_limit {
            if sent >= limit {
                break;
            }
        }
        let word = match interval_ns {
            Some(interval) => {
                let intended = plan.start + sent * interval;
                let mut now = now_ns();
                if count_limit.is_none() && intended >= plan.round_trip_until {
                    break;
                }
                while now < intended {
                    if intended - now > 200_000 {
                        std::thread::sleep(Duration::from_nanos(intended - now - 100_000));
                    } else {
                        std::hint::spin_loop();
                    }
                    now = now_ns();
                }
                intended.max(2) & !ONE_WAY
            }
            None if sent % SAMPLE_EVERY == 0 => {
                let now = now_ns();
                if (count_limit.is_none() && now >= plan.round_trip_until) || control.stopping() {
                    break;
                }
                now & !ONE_WAY
            }
            None => 0,
        };
        stamp(&mut buffer, word);
        link.send(&buffer)?;
        sent += 1;
        progress(control, sent);
    }
    let end = now_ns();
    if spec.opt_u64("send_stop").unwrap_or(0) == 1 {
        stamp(&mut buffer, STOP);
        link.send(&buffer)?;
    }
    control
        .word(Word::ProducersDone)
        .fetch_add(1, Ordering::Release);
    Ok(json!({ "sent": sent, "start_ns": plan.start, "end_ns": end }))
}

/// Receives until a STOP message; records latency of stamped messages sent after the
/// warm-up, and counts messages between its first and last clock reading after it.
fn consumer(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut histogram = new_histogram();
    let mut received = 0u64;
    // (time, messages received by then) at the first and last clock reading after
    // the warm-up.
    let mut first: Option<(u64, u64)> = None;
    let mut last: Option<(u64, u64)> = None;
    loop {
        match link.recv(&mut buffer)? {
            Some(()) => {}
            None if control.stopping() => break,
            None => continue,
        }
        let word = word_of(&buffer);
        if word == STOP {
            break;
        }
        received += 1;
        if word != 0 {
            let now = now_ns();
            // A stamp from the future is two eventfd writes summed before one read
            // (the reader was late): not a sample.
            if word >= plan.measure_from && word <= now {
                record(&mut histogram, now.saturating_sub(word));
            }
            if now >= plan.measure_from {
                first.get_or_insert((now, received));
                last = Some((now, received));
            }
        }
        progress(control, received);
    }
    let (first, last) = (first.unwrap_or((0, 0)), last.unwrap_or((0, 0)));
    Ok(json!({
        "latency": to_json(&histogram),
        "received": received,
        "window_start_ns": first.0,
        "window_end_ns": last.0,
        "window_messages": last.1.saturating_sub(first.1),
    }))
}

// ---- wake-up ----------------------------------------------------------------------

/// Sleeps a random 1–5 ms, then stamps and sends one message: the consumer (asleep by
/// then) records the time from the stamp to its receipt.
fn wake_producer(spec: &Spec, control: &Control, link: &mut Link) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    let mut buffer = vec![0u8; size];
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut rng = Rng::new();
    let mut sent = 0u64;
    while now_ns() < plan.round_trip_until && !control.stopping() {
        std::thread::sleep(Duration::from_micros(1000 + rng.next() % 4000));
        stamp(&mut buffer, now_ns() & !ONE_WAY);
        link.send(&buffer)?;
        sent += 1;
        progress(control, sent);
    }
    stamp(&mut buffer, STOP);
    link.send(&buffer)?;
    Ok(json!({ "sent": sent }))
}

// ---- crossbeam, two threads in this one process -------------------------------------

fn crossbeam(role: &str, spec: &Spec, control: &Control) -> Result<Value, CliError> {
    let size = spec.u64("size")? as usize;
    macro_rules! sized {
        ($($n:literal)*) => {
            match size {
                $($n => crossbeam_sized::<$n>(role, spec, control),)*
                other => Err(CliError::new(
                    EX_USAGE,
                    format!("the crossbeam baseline supports message sizes 8, 16, 32, 64, 128, 256, 512, 1024, 4096, not {other}"),
                )),
            }
        };
    }
    sized!(8 16 32 64 128 256 512 1024 4096)
}

fn crossbeam_sized<const N: usize>(
    role: &str,
    spec: &Spec,
    control: &Control,
) -> Result<Value, CliError> {
    let capacity = spec.u64("capacity")? as usize;
    let forward = Arc::new(crossbeam_queue::ArrayQueue::<[u8; N]>::new(capacity));
    let backward = Arc::new(crossbeam_queue::ArrayQueue::<[u8; N]>::new(capacity));
    let cpu_b = spec.opt_u64("cpu_b");
    let duration_ns = spec.u64("duration_ns")?;
    let warmup_ns = spec.u64("warmup_ns")?;
    let pingpong = role == "crossbeam-pingpong";
    let mut b_side = CrossbeamLink::<N> {
        tx: Arc::clone(&backward),
        rx: Arc::clone(&forward),
    };
    let mut a_side = CrossbeamLink::<N> {
        tx: forward,
        rx: backward,
    };
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || -> Value {
            if let Some(cpu) = cpu_b {
                let _ = crate::os::pin_to_cpu(cpu as usize);
            }
            let start = control.ready_and_wait();
            let measure_from = start + warmup_ns;
            let mut buffer = [0u8; N];
            let mut histogram = new_histogram();
            let mut received = 0u64;
            let mut first: Option<(u64, u64)> = None;
            let mut last = (0, 0);
            loop {
                b_side.recv(&mut buffer);
                let word = word_of(&buffer);
                if word == STOP {
                    break;
                }
                if pingpong {
                    b_side.send(&buffer);
                    continue;
                }
                received += 1;
                if word != 0 {
                    let now = now_ns();
                    if word >= measure_from {
                        record(&mut histogram, now.saturating_sub(word));
                    }
                    if now >= measure_from {
                        first.get_or_insert((now, received));
                        last = (now, received);
                    }
                }
            }
            let first = first.unwrap_or((0, 0));
            json!({
                "latency": to_json(&histogram),
                "received": received,
                "window_start_ns": first.0,
                "window_end_ns": last.0,
                "window_messages": last.1.saturating_sub(first.1),
            })
        });
        let start = control.ready_and_wait();
        let measure_from = start + warmup_ns;
        let until = measure_from + duration_ns;
        let mut buffer = [0u8; N];
        let mut histogram = new_histogram();
        let mut sent = 0u64;
        let count_limit = spec.opt_u64("count");
        loop {
            if count_limit.is_some_and(|limit| sent >= limit) {
                break;
            }
            let word = if pingpong || sent % SAMPLE_EVERY == 0 {
                let now = now_ns();
                if (count_limit.is_none() && now >= until) || control.stopping() {
                    break;
                }
                now & !ONE_WAY
            } else {
                0
            };
            stamp(&mut buffer, word);
            a_side.send(&buffer);
            if pingpong {
                a_side.recv(&mut buffer);
                let t1 = now_ns();
                if word >= measure_from {
                    record(&mut histogram, t1 - word);
                }
            }
            sent += 1;
            progress(control, sent);
        }
        stamp(&mut buffer, STOP);
        a_side.send(&buffer);
        let mut result = consumer
            .join()
            .map_err(|_| CliError::new(EX_SOFTWARE, "crossbeam consumer thread panicked"))?;
        if let Value::Object(map) = &mut result {
            map.insert("rtt".into(), to_json(&histogram));
            map.insert("sent".into(), json!(sent));
        }
        Ok(result)
    })
}
