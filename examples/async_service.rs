//! A tokio service that serves calls and publishes events from one set of tasks, with no thread
//! blocked in ringbus: every wait is an `.await`.
//!
//! `cargo run --example async_service`
//!
//! In one process, on an in-process node (nothing in /dev/shm; the same code works across
//! processes with `Node::new()`):
//! - the server task answers `double` calls (`Server::receive_async`) and records each answer on
//!   the `doubled` queue;
//! - the event task publishes a `Tick` on the `ticks` topic at each beat of a tokio interval;
//! - the client task makes the calls (`Client::call_async`), the subscriber task reads the ticks
//!   (`Subscriber::receive_async`) and the audit task takes the records (`Consumer::receive_async`).
//!
//! The server, event, subscriber and audit tasks are `tokio::spawn`ed: their handles and futures
//! are `Send`. A client's call futures borrow the client, which is not `Sync`, so they are not
//! `Send`: the client task runs in a `LocalSet`. Everything runs on one current-thread runtime;
//! a multi-threaded runtime works the same way, with the client task kept on a `LocalSet`.
//!
//! It prints a summary and exits 0; `cargo test --example async_service` runs it as a test.

use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use ringbus::{topic::Policy, Node};

/// How many calls, ticks and records each task handles.
const ROUNDS: u64 = 100;

/// An event: plain-old-data, written in place into the topic's slot.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Tick {
    seq: u64,
    /// Microseconds since the service started.
    micros: u64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    // Only a hang reaches this deadline.
    local.block_on(&runtime, async {
        tokio::time::timeout(Duration::from_secs(20), run()).await?
    })
}

async fn run() -> Result<(), Error> {
    let node = Node::in_process();
    let service = node
        .service::<u64, u64>("double")
        .timeout(Duration::from_secs(5));
    // Capacities above ROUNDS: the (synchronous) sends below never wait for room, so they never
    // block the runtime's thread.
    let topic = node
        .topic::<Tick>("ticks")
        .capacity(256)
        .policy(Policy::Block);
    let queue = node.queue::<u64>("doubled").capacity(256);

    // Open every handle before any task runs: a topic keeps nothing for a subscriber that is not
    // there yet, and a call finds a server.
    let mut server = service.server()?;
    let client = service.client()?;
    let mut publisher = topic.publisher()?;
    let mut subscriber = topic.subscriber()?;
    let mut producer = queue.producer()?;
    let mut consumer = queue.consumer()?;

    // The service: answers calls, records each answer.
    let serving = tokio::spawn(async move {
        for _ in 0..ROUNDS {
            let request = server.receive_async().await?;
            let x = *request;
            request.respond(&(2 * x))?;
            producer.send(&(2 * x))?;
        }
        Ok::<_, Error>(())
    });

    // The service's events: a tick at each beat.
    let events = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut beat = tokio::time::interval(Duration::from_millis(1));
        for seq in 0..ROUNDS {
            beat.tick().await;
            let micros = start.elapsed().as_micros() as u64;
            publisher.send_copy(&Tick { seq, micros })?;
        }
        Ok::<_, Error>(())
    });

    // The peers: a subscriber of the events, an auditor of the records, a client.
    let watching = tokio::spawn(async move {
        let mut last = None;
        for seq in 0..ROUNDS {
            let tick = subscriber.receive_async().await?;
            assert_eq!(tick.seq, seq, "ticks arrive in order");
            last = Some(*tick);
        }
        Ok::<_, Error>(last)
    });
    let auditing = tokio::spawn(async move {
        let mut sum = 0;
        for _ in 0..ROUNDS {
            let record = consumer.receive_async().await?;
            sum += *record;
            record.ack()?;
        }
        Ok::<_, Error>(sum)
    });
    let calling = tokio::task::spawn_local(async move {
        let mut sum = 0;
        for x in 0..ROUNDS {
            let response = client.call_async(&x).await?;
            assert_eq!(*response, 2 * x);
            sum += *response;
        }
        Ok::<_, Error>(sum)
    });

    let called = calling.await??;
    serving.await??;
    events.await??;
    let last = watching.await??.expect("at least one tick");
    let audited = auditing.await??;
    assert_eq!(audited, called, "every answer recorded once");
    println!(
        "{ROUNDS} calls answered (sum of answers {called}), {ROUNDS} answers audited, \
         {ROUNDS} ticks received (last: #{} at {} µs)",
        last.seq, last.micros
    );
    Ok(())
}

#[test]
fn runs_to_the_end() {
    main().expect("the service and its peers ran to the end");
}
