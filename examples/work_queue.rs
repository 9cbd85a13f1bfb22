//! A work queue between processes: one producer, two competing worker processes, each job
//! acknowledged once done. A job a worker took but never acknowledged (it died) goes back to the
//! queue and another worker does it.
//!
//! `cargo run --example work_queue` starts two workers as child processes (`cargo run --example
//! work_queue -- work` runs that role alone), sends them jobs in place, and waits until every job
//! is acknowledged. Add `-- durable DIR` to keep the queue in files under DIR: jobs then survive
//! a restart of every process.

use std::process::{Child, Command};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use ringbus::{Node, QueueBuilder, ReceiveError};

const QUEUE: &str = "example-jobs";
const JOBS: u64 = 1000;

/// One job: a number to square. Plain-old-data, written in place into the queue's slot.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Job {
    id: u64,
    n: u64,
}

fn queue(node: &Node, durable: Option<&str>) -> QueueBuilder<Job> {
    let q = node
        .queue::<Job>(QUEUE)
        .capacity(256)
        // A job not acknowledged within this goes back to the queue.
        .visibility_timeout(Duration::from_secs(5));
    match durable {
        Some(dir) => q.durable(dir),
        None => q,
    }
}

/// A worker: takes jobs until none comes for a second, acknowledging each after doing it.
fn work(durable: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::new()?;
    let consumer = queue(&node, durable).consumer()?;
    let mut done = 0u64;
    loop {
        match consumer.receive_timeout(Duration::from_secs(1)) {
            Ok(job) => {
                // Read in place from shared memory.
                let _square = job.n * job.n;
                done += 1;
                job.ack()?;
            }
            Err(ReceiveError::Timeout(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("worker {}: {done} jobs", std::process::id());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let durable = match args.iter().position(|a| a == "durable") {
        Some(i) => Some(args.get(i + 1).ok_or("durable needs a directory")?.as_str()),
        None => None,
    };
    if args.first().map(String::as_str) == Some("work") {
        return work(durable);
    }

    let node = Node::new()?;
    // Open the queue first, so the workers find it (and the messages sent before they start).
    let mut producer = queue(&node, durable).producer()?;
    let exe = std::env::current_exe()?;
    let mut workers: Vec<Child> = (0..2)
        .map(|_| {
            let mut cmd = Command::new(&exe);
            cmd.arg("work");
            if let Some(dir) = durable {
                cmd.args(["durable", dir]);
            }
            cmd.spawn()
        })
        .collect::<Result<_, _>>()?;

    for id in 0..JOBS {
        // A loan is a slot of the queue: write the job in place, then send it.
        let mut loan = producer.loan()?;
        *loan = Job { id, n: id % 100 };
        loan.send()?;
    }
    println!("sent {JOBS} jobs");
    for w in &mut workers {
        w.wait()?;
    }
    Ok(())
}
