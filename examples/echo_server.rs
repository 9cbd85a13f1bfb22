//! A byte service for `ringbus call` to talk to: answers every request with the same bytes,
//! until stdin closes (Ctrl-D) or the process is killed.
//!
//! `cargo run --example echo_server [NAME]` (default name `echo`), under `$RINGBUS_ROOT` or
//! `/dev/shm/ringbus-<uid>`; then `ringbus call echo -m hello` prints `hello`.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringbus::{Bytes, Node, ReceiveError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "echo".to_string());
    let node = Node::new()?;
    let server = node.service::<Bytes, Bytes>(&name).server()?;
    println!("serving {name}; close stdin to stop");
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        // Relaxed: a flag polled by the loop below; nothing else is published with it.
        stopper.store(true, Ordering::Relaxed);
    });
    // Relaxed: as above.
    while !stop.load(Ordering::Relaxed) {
        match server.receive_timeout(Duration::from_millis(100)) {
            Ok(request) => {
                let echo = request.to_vec();
                request.respond(&echo)?;
            }
            Err(ReceiveError::Timeout(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
