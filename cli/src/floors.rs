//! Reference measurements that are not transports: what the hardware itself charges
//! for a hand-off, so every figure the bench prints can be read against it.
//!
//! - The **cache-line floor** bounces one line between the two processes: the least
//!   any shared-memory round trip between these cores can take. Always measured.
//! - The **two-line floor** (`--anatomy`) sends on one line and answers on another,
//!   the way a ping-pong over two queues must.
//! - The **bare slot ring** (`--anatomy`) is the smallest possible version of the
//!   queue's algorithm: two single-producer single-consumer rings of Vyukov slots
//!   (a sequence word then the payload, the same slot geometry as a shmq segment),
//!   with no claim CAS, no claim records, no statistics and no wake-up check. It
//!   shows how much of shmq's round trip the slot hand-off itself costs, and so how
//!   much any slot-ring design could gain by trimming the rest.
//!
//! Each runs as two processes over the control mapping, pinned like the transports.
//! The controller side is [`measure`]; the rest is what the two processes do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::control::{Control, Word};
use crate::error::{CliError, EX_SOFTWARE, EX_USAGE};
use crate::histogram::{from_results, new_histogram, record, to_json};
use crate::os::now_ns;
use crate::phase::{ChildPlan, Context, Phase};
use crate::protocol::{nanos, progress, schedule, stamp, word_of, Role, Spec, STOP};
use crate::report::Series;

/// Spins between checks of the controller's stop flag.
const POLLS_PER_STOP_CHECK: u32 = 1 << 20;

/// A reference measurement.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// One cache line bounced between the two processes.
    CacheLine,
    /// One line each way.
    TwoLine,
    /// Two bare single-producer single-consumer slot rings.
    BareRing,
}

impl Reference {
    fn roles(self) -> [Role; 2] {
        match self {
            Reference::CacheLine => [Role::FloorA, Role::FloorB],
            Reference::TwoLine => [Role::TwoLineA, Role::TwoLineB],
            Reference::BareRing => [Role::BareRingA, Role::BareRingB],
        }
    }
}

/// Runs a reference measurement for `duration` and returns its round trips as a
/// series named `label`.
pub fn measure(
    ctx: &mut Context,
    which: Reference,
    label: &str,
    duration: Duration,
) -> Result<Series, CliError> {
    let settings = ctx.settings;
    let spec = json!({
        "duration_ns": nanos(duration),
        "warmup_ns": nanos(settings.warmup.min(Duration::from_millis(200))),
        "size": settings.size,
        "capacity": settings.capacity,
    });
    if which == Reference::BareRing {
        let usage =
            "--anatomy: the bare ring needs --capacity of at least 2 and --size of at least 8";
        let geometry = BareGeometry::new(settings.capacity as usize, settings.size as usize)
            .ok_or_else(|| CliError::new(EX_USAGE, usage))?;
        ctx.reserve_scratch(geometry.bytes());
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
    let results = ctx.run(Phase::new(label, plans, duration.as_secs_f64()))?;
    Ok(Series {
        label: label.to_owned(),
        histogram: from_results(&results[0], "rtt")?,
    })
}

/// The cache-line floor for `duration`.
pub fn cache_line(ctx: &mut Context, label: &str, duration: Duration) -> Result<Series, CliError> {
    measure(ctx, Reference::CacheLine, label, duration)
}

/// Runs `round_trip(n)` for n = 1, 2, ... until the plan's measuring window ends,
/// timing each one and recording those after the warm-up. `round_trip` returns
/// `false` if the peer gave up. Returns the histogram and the number completed.
fn timed_round_trips(
    spec: &Spec,
    control: &Control,
    mut round_trip: impl FnMut(u64) -> bool,
) -> Result<(Histogram<u64>, u64), CliError> {
    let plan = schedule(spec, control.ready_and_wait())?;
    let mut histogram = new_histogram();
    let mut count = 0u64;
    loop {
        let t0 = now_ns();
        if t0 >= plan.round_trip_until {
            break;
        }
        if !round_trip(count + 1) {
            return Err(CliError::new(EX_SOFTWARE, "reference: peer stopped"));
        }
        let t1 = now_ns();
        if t0 >= plan.measure_from {
            record(&mut histogram, t1 - t0);
        }
        count += 1;
        progress(control, count);
    }
    Ok((histogram, count))
}

// ---- cache-line and two-line floors ------------------------------------------------

/// The measuring side of a floor: writes odd values to `out` and waits for the
/// peer's next even value on `back`. With `out` and `back` the same word this
/// bounces one line (the cache-line floor: two transfers per round trip, the least
/// any shared-memory hand-off across these two cores can take); with two words on
/// their own 128-byte strides it sends on one line and answers on the other (the
/// two-line floor, as a ping-pong over two queues must).
fn bounce_measure(
    spec: &Spec,
    control: &Control,
    out: Word,
    back: Word,
) -> Result<Value, CliError> {
    let (out, back) = (control.word(out), control.word(back));
    let (histogram, _) = timed_round_trips(spec, control, |n| {
        // Release/Acquire pair with bounce_echo's Acquire load / Release store.
        out.store(2 * n - 1, Ordering::Release);
        while back.load(Ordering::Acquire) != 2 * n {
            std::hint::spin_loop();
        }
        true
    })?;
    out.store(u64::MAX, Ordering::Release);
    Ok(json!({ "rtt": to_json(&histogram) }))
}

/// The echo side of a floor: answers each new odd value on `out` with the next
/// even value on `back`, once.
fn bounce_echo(control: &Control, out: Word, back: Word) -> Result<Value, CliError> {
    let (out, back) = (control.word(out), control.word(back));
    control.ready_and_wait();
    let mut answered = 0u64;
    let mut polls = 0u32;
    loop {
        // Acquire/Release pair with bounce_measure.
        let value = out.load(Ordering::Acquire);
        if value == u64::MAX {
            break;
        }
        if value % 2 == 1 && value != answered {
            answered = value;
            back.store(value + 1, Ordering::Release);
        } else {
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            if polls % POLLS_PER_STOP_CHECK == 0 && control.stopping() {
                break;
            }
        }
    }
    Ok(json!({}))
}

pub fn floor_measure(spec: &Spec, control: &Control) -> Result<Value, CliError> {
    bounce_measure(spec, control, Word::Bounce, Word::Bounce)
}

pub fn floor_echo(control: &Control) -> Result<Value, CliError> {
    bounce_echo(control, Word::Bounce, Word::Bounce)
}

pub fn two_line_measure(spec: &Spec, control: &Control) -> Result<Value, CliError> {
    bounce_measure(spec, control, Word::Bounce, Word::Bounce2)
}

pub fn two_line_echo(control: &Control) -> Result<Value, CliError> {
    bounce_echo(control, Word::Bounce, Word::Bounce2)
}

// ---- bare slot ring ---------------------------------------------------------------

// The bare ring's slot geometry mirrors shmq's slot layout, so both move the same
// cache lines per hand-off: a 16-byte slot header (shmq's holds the sequence word,
// the length and a delivery count; the bare ring uses only the sequence) before the
// payload, and slots aligned to 64 bytes, so a 64-byte payload takes a 128-byte
// stride as in a shmq segment. Copied by hand because the library's layout is
// private: if shmq's slot layout changes, change these with it.

/// Bytes before the payload in a slot.
const SLOT_HEADER: usize = 16;
/// Slot alignment; the stride is the header plus payload rounded up to it.
const SLOT_ALIGN: usize = 64;

/// Geometry of the two bare rings in the control mapping's scratch region.
#[derive(Clone, Copy)]
pub struct BareGeometry {
    capacity: usize,
    size: usize,
    stride: usize,
    /// Offset of the second ring (page aligned).
    second: usize,
}

impl BareGeometry {
    /// Slots of `SLOT_HEADER + size` bytes rounded up to `SLOT_ALIGN`; `capacity` a
    /// power of two of at least 2 (with one slot, a release and the next publish would
    /// write the same value). `None` otherwise, or if the sizes overflow.
    pub fn new(capacity: usize, size: usize) -> Option<Self> {
        let stride = SLOT_HEADER
            .checked_add(size)?
            .checked_next_multiple_of(SLOT_ALIGN)?;
        let ring = capacity
            .checked_mul(stride)?
            .checked_next_multiple_of(4096)?;
        (capacity.is_power_of_two() && capacity >= 2 && size >= 8).then_some(Self {
            capacity,
            size,
            stride,
            second: ring,
        })
    }

    /// Scratch bytes both rings need.
    pub fn bytes(&self) -> usize {
        self.second * 2
    }

    fn of(spec: &Spec) -> Result<Self, CliError> {
        let bad = || CliError::new(EX_USAGE, "internal child spec: bad bare ring geometry");
        let capacity = usize::try_from(spec.u64("capacity")?).map_err(|_| bad())?;
        let size = usize::try_from(spec.u64("size")?).map_err(|_| bad())?;
        Self::new(capacity, size).ok_or_else(bad)
    }
}

/// One single-producer single-consumer ring of Vyukov slots in the scratch region.
/// The slot at position `p` holds sequence `p` when free for the producer of `p`,
/// `p + 1` when it holds that message, and `p + capacity` once consumed.
struct BareRing<'a> {
    base: *mut u8,
    geometry: BareGeometry,
    control: &'a Control,
}

impl<'a> BareRing<'a> {
    /// Ring `which` (0 or 1) of the control mapping's scratch region, after checking
    /// that the region holds both rings.
    fn new(control: &'a Control, geometry: BareGeometry, which: usize) -> Result<Self, CliError> {
        let (scratch, len) = control.scratch();
        if len < geometry.bytes() {
            return Err(CliError::new(
                EX_SOFTWARE,
                format!(
                    "control file holds {len} scratch bytes, the bare rings need {}",
                    geometry.bytes()
                ),
            ));
        }
        // SAFETY: which * second + second <= bytes() <= len (checked above), so the
        // ring lies inside the live scratch region.
        let base = unsafe { scratch.add(which.min(1) * geometry.second) };
        Ok(Self {
            base,
            geometry,
            control,
        })
    }

    fn slot(&self, pos: u64) -> *mut u8 {
        let index = pos as usize & (self.geometry.capacity - 1);
        // SAFETY: index < capacity, so the slot lies inside this ring (see `new`).
        unsafe { self.base.add(index * self.geometry.stride) }
    }

    fn sequence(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: each slot starts on a 64-byte boundary of a page-aligned region, so
        // the word is aligned; it lives as long as the mapping `self.control` owns;
        // every process touches it only atomically.
        unsafe { AtomicU64::from_ptr(self.slot(pos).cast::<u64>()) }
    }

    /// Sets every slot free for the first lap. Done by one process before the start
    /// barrier, which orders it before the peer's first access.
    fn initialise(&self) {
        for pos in 0..self.geometry.capacity as u64 {
            // Relaxed: published by the start barrier (Release/Acquire chain).
            self.sequence(pos).store(pos, Ordering::Relaxed);
        }
    }

    /// Spins until the slot at `pos` holds `want`; `false` if the controller stopped
    /// the run meanwhile.
    fn wait_for(&self, pos: u64, want: u64) -> bool {
        let sequence = self.sequence(pos);
        let mut polls = 0u32;
        // Acquire: pairs with the Release store that set `want` (the peer's publish
        // or release), so its payload accesses happen before ours.
        while sequence.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            if polls % POLLS_PER_STOP_CHECK == 0 && self.control.stopping() {
                return false;
            }
        }
        true
    }

    /// Writes `message` (exactly the ring's message size) into the slot at `pos`.
    fn send(&self, pos: u64, message: &[u8]) -> bool {
        if !self.wait_for(pos, pos) {
            return false;
        }
        let len = message.len().min(self.geometry.size);
        // SAFETY: the sequence said the slot is ours (its consumer released it and
        // nobody else produces this ring) until the publish below; the payload lies
        // inside the slot (len <= size <= stride - SLOT_HEADER).
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr(), self.slot(pos).add(SLOT_HEADER), len);
        }
        // Release: publishes the payload to the consumer's Acquire in wait_for.
        self.sequence(pos).store(pos + 1, Ordering::Release);
        true
    }

    /// Lends the message at `pos` to `f`, then frees the slot for the next lap.
    fn recv<R>(&self, pos: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if !self.wait_for(pos, pos + 1) {
            return None;
        }
        // SAFETY: the sequence said the slot holds a published message that only this
        // consumer reads, and the producer will not write it again until the release
        // below; the payload lies inside the slot.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.slot(pos).add(SLOT_HEADER), self.geometry.size)
        };
        let result = f(bytes);
        // Release: our reads of the payload happen before the next lap's write.
        self.sequence(pos)
            .store(pos + self.geometry.capacity as u64, Ordering::Release);
        Some(result)
    }
}

fn peer_stopped(role: &str) -> CliError {
    CliError::new(EX_SOFTWARE, format!("{role}: peer stopped"))
}

/// Ping side of the bare ring: stamps, sends on ring 0, copies the reply out of
/// ring 1, as the shmq ping does with `send` and `recv_into`.
pub fn bare_ring_ping(spec: &Spec, control: &Control) -> Result<Value, CliError> {
    let geometry = BareGeometry::of(spec)?;
    let (out, back) = (
        BareRing::new(control, geometry, 0)?,
        BareRing::new(control, geometry, 1)?,
    );
    out.initialise();
    back.initialise();
    let mut message = vec![0u8; geometry.size];
    let mut reply = vec![0u8; geometry.size];
    let (histogram, count) = timed_round_trips(spec, control, |n| {
        let pos = n - 1;
        stamp(&mut message, n << 1);
        out.send(pos, &message)
            && back
                .recv(pos, |bytes| reply.copy_from_slice(bytes))
                .is_some()
    })?;
    stamp(&mut message, STOP);
    out.send(count, &message);
    Ok(json!({ "rtt": to_json(&histogram), "count": count }))
}

/// Echo side of the bare ring: forwards each message from its ring 0 slot straight
/// into ring 1 before releasing it, as the shmq echo does with `recv_with`.
pub fn bare_ring_pong(spec: &Spec, control: &Control) -> Result<Value, CliError> {
    let geometry = BareGeometry::of(spec)?;
    let (input, output) = (
        BareRing::new(control, geometry, 0)?,
        BareRing::new(control, geometry, 1)?,
    );
    control.ready_and_wait();
    let mut pos = 0u64;
    loop {
        let forwarded = input.recv(pos, |bytes| {
            let stop = word_of(bytes) == STOP;
            (stop, stop || output.send(pos, bytes))
        });
        match forwarded {
            Some((true, _)) => break,
            Some((false, true)) => pos += 1,
            _ if control.stopping() => break,
            _ => return Err(peer_stopped("bare ring echo")),
        }
    }
    Ok(json!({}))
}
