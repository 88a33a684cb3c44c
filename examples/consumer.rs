//! Prints every message arriving on the queue `demo` (creating it if needed).
//!
//! Run it in one terminal, `cargo run --example producer` in another. Several
//! consumers may run at once: each message goes to exactly one of them.

use std::time::Duration;

use shmq::{Options, Queue, RecvError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned());
    let queue = Queue::open_or_create(&name, &Options::new(1024, 1024))?;
    eprintln!("waiting for messages on `{name}`; Ctrl-C to stop");
    let mut received = 0u64;
    loop {
        // Zero copy: the closure reads the bytes where they sit in shared memory.
        match queue.recv_with_timeout(Duration::from_secs(10), |bytes| {
            println!("{}", String::from_utf8_lossy(bytes))
        }) {
            Ok(()) => received += 1,
            Err(RecvError::Timeout) => eprintln!("(idle; {received} received so far)"),
            Err(e) => eprintln!("skipped a message: {e}"),
        }
    }
}
