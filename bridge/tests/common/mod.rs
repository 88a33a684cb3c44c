//! Test harness: a real `nats-server -js` on a free loopback port with a temporary
//! store, bridge processes (the built `shmq-bridge` binary) that are always reaped,
//! and helpers to fill and drain segments.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js`, killed and its store removed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
}

/// `Some(())` if `nats-server` can be run; `None` (with a message) when it is absent
/// and the environment variable `CI` is unset; a panic when `CI` is set.
pub fn nats_server_available(test: &str) -> Option<()> {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Some(());
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: nats-server is not installed and CI is set: install it (apt-get install -y nats-server); .ci/run does");
    }
    eprintln!("SKIPPED {test}: nats-server is not installed (apt-get install -y nats-server); set CI=1 to make this a failure");
    None
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start(test: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let store = std::env::temp_dir().join(format!(
            "shmq-bridge-test-{test}-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&store).expect("a temporary store directory");
        let mut server = Self {
            child: None,
            port,
            store,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.store.join("server.log")).expect("a server log");
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on port {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server with SIGTERM (it shuts down cleanly), waits for it, and
    /// starts it again on the same port and store after `pause`.
    pub fn restart(&mut self, pause: Duration) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        std::thread::sleep(pause);
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Sends SIGTERM and waits for the exit (at most 30 s, then SIGKILL).
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) with a pid of a child we have not reaped yet (so the pid
    // is not reused) and a valid signal number; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("waitpid");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `shmq-bridge`, killed (SIGKILL) and reaped if still running when
/// dropped.
pub struct Bridge {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Bridge {
    /// Starts `shmq-bridge` with `args`; its stderr goes to `log` (appended).
    pub fn start(args: &[&str], log: PathBuf) -> Self {
        let mut bridge = Self {
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            log,
        };
        bridge.spawn();
        bridge
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("a bridge log");
        let child = Command::new(env!("CARGO_BIN_EXE_shmq-bridge"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("shmq-bridge starts");
        self.child = Some(child);
    }

    /// `kill -9`, reaped, then started again with the same arguments.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `kill -9`, reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL to the bridge");
            child.wait().expect("waitpid");
        }
    }

    /// SIGTERM: the bridge finishes its messages in flight and exits; its status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running bridge");
        terminate(&mut child)
    }

    /// The bridge's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A message numbered `n`: its number, then filler, `size` bytes in all.
pub fn numbered(n: u64, size: usize) -> Vec<u8> {
    let mut message = vec![0xA5; size.max(8)];
    message[..8].copy_from_slice(&n.to_le_bytes());
    message
}

/// The number of a message made by [`numbered`].
pub fn number_of(message: &[u8]) -> u64 {
    u64::from_le_bytes(message[..8].try_into().expect("a numbered message"))
}

/// Segment names for a test: `bridge-<test>-<role>-<pid>` (objects
/// `/dev/shm/shmq.bridge…`), removed when dropped.
pub struct Segments(Vec<String>);

impl Segments {
    pub fn new(test: &str, roles: &[&str]) -> Self {
        let names: Vec<String> = roles
            .iter()
            .map(|role| format!("bridge-{test}-{role}-{}", std::process::id()))
            .collect();
        for name in &names {
            let _ = shmq::Queue::unlink(name);
        }
        Self(names)
    }

    pub fn name(&self, index: usize) -> &str {
        &self.0[index]
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = shmq::Queue::unlink(name);
            let _ = shmq::Queue::unlink(&format!("{name}.dead"));
        }
    }
}

/// Receives from `queue` until `done` says so or `timeout` passes; counts how many
/// times each number arrived (`counts[n]`).
pub fn drain_until(
    queue: &shmq::Queue,
    counts: &mut [u32],
    timeout: Duration,
    mut done: impl FnMut(&[u32]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(counts) {
        assert!(
            Instant::now() < deadline,
            "timed out draining: {} distinct of {} received",
            counts.iter().filter(|&&c| c > 0).count(),
            counts.len()
        );
        match queue.recv_timeout(Duration::from_millis(100)) {
            Ok(message) => {
                let n = usize::try_from(number_of(&message)).expect("a small number");
                counts[n] += 1;
            }
            Err(shmq::RecvError::Timeout) => {}
            Err(e) => panic!("receiving from {}: {e}", queue.name()),
        }
    }
}

/// A current-thread runtime for the test's own JetStream client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// How many messages the stream holds right now.
pub fn stream_messages(runtime: &tokio::runtime::Runtime, url: &str, stream: &str) -> u64 {
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("the test connects");
        let context = async_nats::jetstream::new(client);
        let mut stream = context.get_stream(stream).await.expect("the stream exists");
        stream.info().await.expect("stream info").state.messages
    })
}

/// Every message in the stream, read (and acknowledged, so removed) through a
/// fresh pull consumer: their numbers, with repeats.
pub fn read_stream(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    stream: &str,
    subject: &str,
) -> Vec<u64> {
    use futures::StreamExt;
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("the test connects");
        let context = async_nats::jetstream::new(client);
        let stream = context.get_stream(stream).await.expect("the stream exists");
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("test-reader".into()),
                filter_subject: subject.into(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("a reading consumer");
        let mut numbers = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .messages()
                .await
                .expect("a fetch");
            let before = numbers.len();
            while let Some(message) = batch.next().await {
                let message = message.expect("a message");
                numbers.push(number_of(&message.payload));
                message.ack().await.expect("an ack");
            }
            if numbers.len() == before {
                return numbers;
            }
        }
    })
}
