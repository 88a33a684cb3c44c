//! The transports shmq is compared against: a pipe, a Unix domain socket pair and an
//! eventfd (each one direction of a channel, created by the controller and inherited
//! by the children as plain descriptors), plus the in-process `crossbeam` ArrayQueue
//! between two threads of one child process.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::control::Control;
use crate::error::{os_error, CliError, EX_SOFTWARE, EX_USAGE};
use crate::histogram::{new_histogram, record, to_json};
use crate::os::{now_ns, pin_to_cpu};
use crate::protocol::{
    build, consumer_results, inspect, progress, stamp, word_of, Fill, Role, Spec, ONE_WAY,
    SAMPLE_EVERY, STOP,
};

/// A kernel transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// `pipe2`.
    Pipe,
    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    Unix,
    /// `eventfd`: carries one nonzero 8-byte value per wake-up.
    EventFd,
}

impl FdKind {
    /// Name used in specs and output.
    pub fn name(self) -> &'static str {
        match self {
            FdKind::Pipe => "pipe",
            FdKind::Unix => "unix socket",
            FdKind::EventFd => "eventfd",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(text: &str) -> Option<Self> {
        [FdKind::Pipe, FdKind::Unix, FdKind::EventFd]
            .into_iter()
            .find(|k| k.name() == text)
    }
}

/// One direction of a channel: the descriptor the receiver reads and the one the
/// sender writes. Both are inheritable (no `O_CLOEXEC`) so children started after
/// this can use them by number; the controller drops its copies once they started.
pub struct FdChannel {
    /// Read end.
    pub rx: OwnedFd,
    /// Write end (for an eventfd, the same descriptor duplicated).
    pub tx: OwnedFd,
}

fn owned(fd: RawFd, what: &str) -> Result<OwnedFd, CliError> {
    if fd < 0 {
        return Err(os_error(what, std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by the kernel to us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl FdChannel {
    /// Creates a channel of this kind.
    pub fn new(kind: FdKind) -> Result<Self, CliError> {
        match kind {
            FdKind::Pipe => {
                let mut fds = [-1; 2];
                // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
                if unsafe { libc::pipe2(fds.as_mut_ptr(), 0) } != 0 {
                    return Err(os_error("pipe2", std::io::Error::last_os_error()));
                }
                Ok(Self {
                    rx: owned(fds[0], "pipe2")?,
                    tx: owned(fds[1], "pipe2")?,
                })
            }
            FdKind::Unix => {
                let mut fds = [-1; 2];
                // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
                let rc = unsafe {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
                };
                if rc != 0 {
                    return Err(os_error("socketpair", std::io::Error::last_os_error()));
                }
                Ok(Self {
                    rx: owned(fds[0], "socketpair")?,
                    tx: owned(fds[1], "socketpair")?,
                })
            }
            FdKind::EventFd => {
                // SAFETY: eventfd takes plain integers and returns a new descriptor.
                let fd = owned(unsafe { libc::eventfd(0, 0) }, "eventfd")?;
                let tx = fd.try_clone().map_err(|e| os_error("dup", e))?;
                // try_clone uses F_DUPFD_CLOEXEC: make the copy inheritable again.
                clear_cloexec(&tx)?;
                Ok(Self { rx: fd, tx })
            }
        }
    }
}

fn clear_cloexec(fd: &OwnedFd) -> Result<(), CliError> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETFD with 0 on a descriptor we own only clears FD_CLOEXEC.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(os_error("fcntl", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// How a child waits on a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Blocking `read` (the kernel puts the reader to sleep).
    Block,
    /// `O_NONBLOCK` reads in a busy loop.
    Spin,
    /// `O_NONBLOCK` reads with `sched_yield` between them.
    Yield,
    /// As the queue's Hybrid strategy: `O_NONBLOCK` reads in a busy loop for `spin`,
    /// with `sched_yield` between them for `yield_for` more, then `poll(2)` until
    /// readable. The clock is read every 16 failed reads while spinning.
    Hybrid { spin: Duration, yield_for: Duration },
}

/// Where a hybrid reader is in its wait for one read.
struct HybridWait {
    started: Option<Instant>,
    misses: u32,
    past_spin: bool,
}

impl HybridWait {
    fn new() -> Self {
        Self {
            started: None,
            misses: 0,
            past_spin: false,
        }
    }

    /// After a read found nothing: spin, yield, or sleep in poll(2) until `fd` is
    /// readable (or hung up: the next read reports it).
    fn wait(&mut self, fd: RawFd, spin: Duration, yield_for: Duration) -> Result<(), CliError> {
        self.misses = self.misses.wrapping_add(1);
        let started = *self.started.get_or_insert_with(Instant::now);
        if !self.past_spin && self.misses % 16 != 1 {
            std::hint::spin_loop();
            return Ok(());
        }
        let waited = started.elapsed();
        if waited < spin {
            std::hint::spin_loop();
            return Ok(());
        }
        self.past_spin = true;
        if waited < spin + yield_for {
            std::thread::yield_now();
            return Ok(());
        }
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; poll only writes its revents.
        let n = unsafe { libc::poll(&mut pollfd, 1, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(os_error("poll", e));
            }
        }
        Ok(())
    }
}

/// A child's end of an fd transport: where it reads and where it writes.
pub struct FdLink {
    kind: FdKind,
    rx: RawFd,
    tx: RawFd,
    poll: Poll,
}

impl FdLink {
    /// Adopts inherited descriptor numbers (`-1`: this side does not read / write).
    pub fn new(kind: FdKind, rx: RawFd, tx: RawFd, poll: Poll) -> Result<Self, CliError> {
        if rx >= 0 && poll != Poll::Block {
            // SAFETY: F_GETFL/F_SETFL on an inherited descriptor number; an invalid
            // number only makes fcntl fail, which we report.
            let ok = unsafe {
                let flags = libc::fcntl(rx, libc::F_GETFL);
                flags >= 0 && libc::fcntl(rx, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
            };
            if !ok {
                return Err(os_error(
                    "setting O_NONBLOCK",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(Self { kind, rx, tx, poll })
    }

    /// Writes the whole message (an eventfd takes its first 8 bytes as the value).
    pub fn send(&mut self, message: &[u8]) -> Result<(), CliError> {
        let message = if self.kind == FdKind::EventFd {
            &message[..8]
        } else {
            message
        };
        let mut done = 0;
        while done < message.len() {
            let rest = &message[done..];
            // SAFETY: `rest` is valid readable memory of `rest.len()` bytes.
            let n = unsafe { libc::write(self.tx, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        std::hint::spin_loop();
                        continue;
                    }
                    _ => return Err(os_error("write", e)),
                }
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Reads one message of `buffer.len()` bytes (8 for an eventfd). `Ok(false)` at
    /// end of stream.
    pub fn recv(&mut self, buffer: &mut [u8]) -> Result<bool, CliError> {
        let want = if self.kind == FdKind::EventFd {
            8
        } else {
            buffer.len()
        };
        let mut done = 0;
        let mut hybrid = HybridWait::new();
        while done < want {
            let rest = &mut buffer[done..want];
            // SAFETY: `rest` is valid writable memory of `rest.len()` bytes.
            let n = unsafe { libc::read(self.rx, rest.as_mut_ptr().cast(), rest.len()) };
            if n == 0 {
                return Ok(false);
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        match self.poll {
                            Poll::Yield => std::thread::yield_now(),
                            Poll::Hybrid { spin, yield_for } => {
                                hybrid.wait(self.rx, spin, yield_for)?
                            }
                            Poll::Spin | Poll::Block => std::hint::spin_loop(),
                        }
                        continue;
                    }
                    _ => return Err(os_error("read", e)),
                }
            }
            done += n as usize;
        }
        Ok(true)
    }
}

/// A fixed-size message for the crossbeam baseline (crossbeam holds values, not
/// byte slices, so the size is a type parameter).
type Msg<const N: usize> = [u8; N];

/// One thread's end of a crossbeam ping-pong: push on `tx`, pop from `rx`, spinning.
struct CrossbeamLink<const N: usize> {
    /// Outgoing queue.
    tx: Arc<ArrayQueue<Msg<N>>>,
    /// Incoming queue.
    rx: Arc<ArrayQueue<Msg<N>>>,
}

impl<const N: usize> CrossbeamLink<N> {
    /// Pushes, spinning while full.
    fn send(&mut self, message: &[u8]) {
        let mut value = [0u8; N];
        value[..message.len().min(N)].copy_from_slice(&message[..message.len().min(N)]);
        while let Err(back) = self.tx.push(value) {
            value = back;
            std::hint::spin_loop();
        }
    }

    /// Pops, spinning while empty.
    fn recv(&mut self, buffer: &mut [u8]) {
        loop {
            if let Some(value) = self.rx.pop() {
                let n = buffer.len().min(N);
                buffer[..n].copy_from_slice(&value[..n]);
                return;
            }
            std::hint::spin_loop();
        }
    }
}

// ---- crossbeam, two threads in one child process ------------------------------------

/// Message sizes the crossbeam baseline supports (its message type is an array).
const CROSSBEAM_SIZES: &str = "8, 16, 32, 64, 128, 256, 512, 1024, 4096";

/// The crossbeam child ([`Role::CrossbeamPingPong`] or
/// [`Role::CrossbeamThroughput`]): this thread sends, a second thread on core
/// `cpu_b` echoes or receives. Its results carry the sender's round trips (`rtt`)
/// and the receiver's throughput window, as a consumer's do.
pub fn crossbeam(role: Role, spec: &Spec, control: &Control) -> Result<Value, CliError> {
    let plan = CrossbeamPlan::of(role, spec)?;
    macro_rules! sized {
        ($($n:literal)*) => {
            match spec.u64("size")? {
                $($n => crossbeam_sized::<$n>(&plan, control),)*
                other => Err(CliError::new(
                    EX_USAGE,
                    format!("the crossbeam baseline supports message sizes {CROSSBEAM_SIZES}, not {other}"),
                )),
            }
        };
    }
    sized!(8 16 32 64 128 256 512 1024 4096)
}

/// Everything the crossbeam child reads from its spec, read before either thread
/// joins the start barrier.
struct CrossbeamPlan {
    role: Role,
    capacity: usize,
    cpu_b: Option<u64>,
    duration_ns: u64,
    warmup_ns: u64,
    count_limit: Option<u64>,
    /// The consumer-faster regime: the sender writes every byte of each message.
    build: bool,
    /// The producer-faster regime: the receiver reads every byte of each message.
    inspect: bool,
}

impl CrossbeamPlan {
    fn of(role: Role, spec: &Spec) -> Result<Self, CliError> {
        Ok(Self {
            role,
            capacity: spec.u64("capacity")? as usize,
            cpu_b: spec.opt_u64("cpu_b"),
            duration_ns: spec.u64("duration_ns")?,
            warmup_ns: spec.u64("warmup_ns")?,
            count_limit: spec.opt_u64("count"),
            build: spec.opt_u64("build") == Some(1),
            inspect: spec.opt_u64("inspect") == Some(1),
        })
    }

    fn pingpong(&self) -> bool {
        self.role == Role::CrossbeamPingPong
    }
}

fn crossbeam_sized<const N: usize>(
    plan: &CrossbeamPlan,
    control: &Control,
) -> Result<Value, CliError> {
    let forward = Arc::new(ArrayQueue::<Msg<N>>::new(plan.capacity));
    let backward = Arc::new(ArrayQueue::<Msg<N>>::new(plan.capacity));
    let receiver_side = CrossbeamLink::<N> {
        tx: Arc::clone(&backward),
        rx: Arc::clone(&forward),
    };
    let sender_side = CrossbeamLink::<N> {
        tx: forward,
        rx: backward,
    };
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| crossbeam_receiver(receiver_side, plan, control));
        let (histogram, sent) = crossbeam_sender(sender_side, plan, control);
        let mut result = receiver
            .join()
            .map_err(|_| CliError::new(EX_SOFTWARE, "crossbeam consumer thread panicked"))?;
        if let Value::Object(map) = &mut result {
            map.insert("rtt".into(), to_json(&histogram));
            map.insert("sent".into(), json!(sent));
        }
        Ok(result)
    })
}

/// The second thread: pins itself, joins the barrier, then echoes (ping-pong) or
/// receives and counts (throughput) until STOP.
fn crossbeam_receiver<const N: usize>(
    mut link: CrossbeamLink<N>,
    plan: &CrossbeamPlan,
    control: &Control,
) -> Value {
    if let Some(cpu) = plan.cpu_b {
        let _ = pin_to_cpu(cpu as usize);
    }
    let measure_from = control.ready_and_wait() + plan.warmup_ns;
    let mut buffer = [0u8; N];
    let mut histogram = new_histogram();
    let mut received = 0u64;
    let mut first: Option<(u64, u64)> = None;
    let mut last: Option<(u64, u64)> = None;
    let mut fill = Fill::default();
    loop {
        link.recv(&mut buffer);
        if plan.inspect {
            inspect(&buffer);
        }
        let word = word_of(&buffer);
        if word == STOP {
            break;
        }
        if plan.pingpong() {
            link.send(&buffer);
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
                last = Some((now, received));
                fill.sample(link.rx.len() as u64, plan.capacity as u64);
            }
        }
    }
    consumer_results(&histogram, received, first, last, fill)
}

/// The child's own thread: sends stamped messages (every one for ping-pong, timing
/// each echo; one in [`SAMPLE_EVERY`] for throughput) until the run ends, then STOP.
/// Returns the round trips and the messages sent.
fn crossbeam_sender<const N: usize>(
    mut link: CrossbeamLink<N>,
    plan: &CrossbeamPlan,
    control: &Control,
) -> (Histogram<u64>, u64) {
    let measure_from = control.ready_and_wait() + plan.warmup_ns;
    let until = measure_from + plan.duration_ns;
    let mut buffer = [0u8; N];
    let mut histogram = new_histogram();
    let mut sent = 0u64;
    loop {
        if plan.count_limit.is_some_and(|limit| sent >= limit) {
            break;
        }
        let word = if plan.pingpong() || sent % SAMPLE_EVERY == 0 {
            let now = now_ns();
            if (plan.count_limit.is_none() && now >= until) || control.stopping() {
                break;
            }
            now & !ONE_WAY
        } else {
            0
        };
        if plan.build {
            build(&mut buffer, sent);
        }
        stamp(&mut buffer, word);
        link.send(&buffer);
        if plan.pingpong() {
            link.recv(&mut buffer);
            let t1 = now_ns();
            if word >= measure_from {
                record(&mut histogram, t1 - word);
            }
        }
        sent += 1;
        progress(control, sent);
    }
    stamp(&mut buffer, STOP);
    link.send(&buffer);
    (histogram, sent)
}
