//! Sends each line you type (or pipe in) to the queue `demo`, creating it if needed.
//!
//! Terminal 1: `cargo run --example consumer`
//! Terminal 2: `cargo run --example producer` and type lines.
//! A segment name can be given as the first argument. Remove it afterwards with
//! `cargo run -- rm demo`.

use std::io::BufRead;

use shmq::{Options, Queue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned());
    let queue = Queue::open_or_create(&name, &Options::new(1024, 1024))?;
    eprintln!(
        "sending lines to `{name}` (capacity {}, up to {} bytes each); Ctrl-D to stop",
        queue.capacity(),
        queue.max_message_size()
    );
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        // Blocks while the queue is full (spins briefly, then sleeps on a futex).
        queue.send(line.as_bytes())?;
    }
    Ok(())
}
