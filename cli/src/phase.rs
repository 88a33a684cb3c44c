//! Running one phase of a benchmark: re-executing this binary as the phase's child
//! processes (pinned to distinct cores), starting them together through a fresh
//! control mapping, drawing progress on stderr while they run, and collecting each
//! one's JSON results. On any failure, and on Ctrl-C / SIGTERM, the children are
//! stopped and reaped.

use std::io::{IsTerminal, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::control::{Control, Word};
use crate::error::{CliError, EX_OSERR, EX_SOFTWARE};
use crate::os::now_ns;
use crate::protocol::Role;
use crate::settings::Settings;

/// Exit code after Ctrl-C / SIGTERM / SIGHUP (128 + SIGINT, as shells report it).
const EX_INTERRUPTED: u8 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes Ctrl-C, SIGTERM and SIGHUP end the current phase cleanly (children stopped,
/// segments and control files removed) instead of killing the controller.
pub fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
        // `signal` with a valid function pointer has no other preconditions. Children
        // get default dispositions back at exec.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

/// A hook run once the first `n` producers have finished (and `n` itself).
pub type AfterProducers<'a> = Option<(u64, &'a mut dyn FnMut() -> Result<(), CliError>)>;

/// One child to start: its role, its spec, and the core it should run on.
pub struct ChildPlan {
    pub role: Role,
    pub spec: Value,
    pub cpu: Option<usize>,
}

/// A phase to run: its children and how to supervise them.
pub struct Phase<'a> {
    label: &'a str,
    plans: Vec<ChildPlan>,
    expected_ready: u64,
    inherited: Vec<OwnedFd>,
    seconds: f64,
    after_producers: AfterProducers<'a>,
}

impl<'a> Phase<'a> {
    /// A phase named `label` (in progress and errors) that runs `plans` for about
    /// `seconds`; each child joins the start barrier once.
    pub fn new(label: &'a str, plans: Vec<ChildPlan>, seconds: f64) -> Self {
        Self {
            label,
            expected_ready: plans.len() as u64,
            plans,
            inherited: Vec::new(),
            seconds,
            after_producers: None,
        }
    }

    /// The barrier waits for `arrivals` instead (a two-thread child arrives twice).
    pub fn ready_count(self, arrivals: u64) -> Self {
        Self {
            expected_ready: arrivals,
            ..self
        }
    }

    /// Descriptors the children inherit; the controller drops its copies once they
    /// have started.
    pub fn inheriting(self, inherited: Vec<OwnedFd>) -> Self {
        Self { inherited, ..self }
    }

    /// Runs `hook` once `producers` children have said they are done.
    pub fn after_producers(self, hook: AfterProducers<'a>) -> Self {
        Self {
            after_producers: hook,
            ..self
        }
    }
}

/// A started child, and the thread reading its stdout.
struct Running {
    role: Role,
    child: Child,
    output: Option<JoinHandle<String>>,
}

/// How the controller shows progress while a phase runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Redraw one line on a terminal, or print a line a second elsewhere.
    Show,
    /// Nothing (JSON output to a pipe).
    Hide,
}

/// The settings and placement every phase of a run shares.
pub struct Context {
    /// What to measure.
    pub settings: Settings,
    /// Cores to pin the children to, in order (empty: unpinned).
    cpus: Vec<usize>,
    progress: Progress,
    /// Whether stderr is a terminal (redraw one progress line) or not (print lines).
    terminal: bool,
    /// Phases run so far (names the control files).
    phase: u32,
    /// Scratch bytes the next phase's control file carries (the bare rings).
    scratch: usize,
}

impl Context {
    /// A context for `settings`, pinning to `cpus` (none: unpinned).
    pub fn new(settings: Settings, cpus: Vec<usize>, progress: Progress) -> Self {
        Self {
            settings,
            cpus,
            progress,
            terminal: std::io::stderr().is_terminal(),
            phase: 0,
            scratch: 0,
        }
    }

    /// The same context with other settings (a round's).
    pub fn with_settings(&self, settings: Settings) -> Context {
        Context {
            settings,
            cpus: self.cpus.clone(),
            scratch: 0,
            ..*self
        }
    }

    /// The cores children are pinned to (empty: unpinned).
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The core for the `index`th child, if pinning.
    pub fn cpu(&self, index: usize) -> Option<usize> {
        if self.cpus.is_empty() {
            None
        } else {
            Some(self.cpus[index % self.cpus.len()])
        }
    }

    /// The next phase's control file carries `bytes` of zeroed scratch space.
    pub fn reserve_scratch(&mut self, bytes: usize) {
        self.scratch = bytes;
    }

    /// Starts the phase's children, waits until all are ready, says go, shows
    /// progress, and returns each child's JSON result in the order of its plans.
    pub fn run(&mut self, phase: Phase<'_>) -> Result<Vec<Value>, CliError> {
        self.phase += 1;
        let control = Control::create(&self.phase.to_string(), std::mem::take(&mut self.scratch))?;
        let mut running: Vec<Running> = Vec::new();
        let result = self.drive(phase, &control, &mut running);
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

    fn drive(
        &self,
        phase: Phase<'_>,
        control: &Control,
        running: &mut Vec<Running>,
    ) -> Result<Vec<Value>, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::new(EX_OSERR, format!("finding this executable: {e}")))?;
        for plan in phase.plans {
            running.push(spawn(&exe, plan, control)?);
        }
        // The children hold their copies now.
        drop(phase.inherited);
        start_together(phase.label, control, running, phase.expected_ready)?;
        self.supervise(
            phase.label,
            control,
            running,
            phase.seconds,
            phase.after_producers,
        )?;
        collect(phase.label, running)
    }

    /// Waits for every child to exit, running the producers' hook when due and
    /// drawing progress.
    fn supervise(
        &self,
        label: &str,
        control: &Control,
        running: &mut [Running],
        seconds: f64,
        mut after_producers: AfterProducers<'_>,
    ) -> Result<(), CliError> {
        let started = Instant::now();
        let hard_limit = Duration::from_secs_f64(seconds * 3.0 + 30.0);
        let show = self.progress == Progress::Show && seconds > 2.0;
        let every = Duration::from_millis(if self.terminal { 250 } else { 1000 });
        let mut last_draw = Instant::now();
        loop {
            if let Some((producers, hook)) = after_producers.as_mut() {
                if control.word(Word::ProducersDone).load(Ordering::Acquire) >= *producers {
                    hook()?;
                    after_producers = None;
                }
            }
            if reap(running, control)? {
                break;
            }
            if started.elapsed() > hard_limit {
                return Err(CliError::new(
                    EX_SOFTWARE,
                    format!("{label}: benchmark processes still running after {hard_limit:?}; stopped them"),
                ));
            }
            if show && last_draw.elapsed() >= every {
                last_draw = Instant::now();
                self.draw_progress(label, control, started, seconds);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if show && self.terminal {
            eprint!("\r{:80}\r", "");
        }
        Ok(())
    }

    fn draw_progress(&self, label: &str, control: &Control, started: Instant, seconds: f64) {
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
}

/// Starts one child: `shmq __child ROLE SPEC`, its spec naming the control file and
/// its core; a thread collects its stdout.
fn spawn(exe: &Path, plan: ChildPlan, control: &Control) -> Result<Running, CliError> {
    let mut spec = plan.spec;
    spec["control"] = json!(control.path());
    if let Some(cpu) = plan.cpu {
        spec["cpu"] = json!(cpu);
    }
    let role = plan.role;
    let mut child = Command::new(exe)
        .arg("__child")
        .arg(role.name())
        .arg(spec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::new(EX_OSERR, format!("starting a {} process: {e}", role.name())))?;
    let output = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    });
    Ok(Running {
        role,
        child,
        output,
    })
}

/// The start barrier: waits until `expected_ready` arrivals, then sets the go time
/// a few milliseconds ahead so every child starts at the same instant.
fn start_together(
    label: &str,
    control: &Control,
    running: &mut [Running],
    expected_ready: u64,
) -> Result<(), CliError> {
    let ready_deadline = Instant::now() + Duration::from_secs(20);
    while control.word(Word::Ready).load(Ordering::Acquire) < expected_ready {
        reap(running, control)?;
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
    Ok(())
}

/// Reaps finished children; `Ok(true)` when all have exited successfully.
fn reap(running: &mut [Running], control: &Control) -> Result<bool, CliError> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err(CliError::new(
            EX_INTERRUPTED,
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
                    format!("the {} process failed ({status})", r.role.name()),
                ));
            }
            Ok(None) => all = false,
            Err(e) => return Err(CliError::new(EX_OSERR, format!("waiting for a child: {e}"))),
        }
    }
    Ok(all)
}

/// Each child's JSON line, in start order; notes a child that could not pin itself.
fn collect(label: &str, running: &mut [Running]) -> Result<Vec<Value>, CliError> {
    let mut results = Vec::new();
    for r in running {
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
                    r.role.name()
                ),
            )
        })?;
        if let Some(error) = value.get("pin_error").and_then(Value::as_str) {
            eprintln!(
                "shmq: note: {label}: could not pin the {}: {error}",
                r.role.name()
            );
        }
        results.push(value);
    }
    Ok(results)
}
