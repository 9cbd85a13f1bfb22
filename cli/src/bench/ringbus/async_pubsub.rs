//! `ringbus-async`: the `ringbus` byte topics (`pubsub` only) with the receivers awaiting
//! [`Subscriber::receive_async`] in a tokio current-thread runtime, what an async service
//! would do instead of spinning or blocking a thread.
//!
//! Topics, loans and message checks are those of `ringbus` (see the parent module). Each
//! end owns a runtime (the time driver, for the timeouts), built once when the end is
//! created, as for `tokio-uds`; a round runs in one `block_on`, and every receive is
//! awaited under `tokio::time::timeout` of [`MSG_TIMEOUT`]. Sends are the ordinary ones
//! (a `Block` publisher waits for room synchronously, bounded by the topic's send
//! timeout). `rpc` is not offered: the service futures do not exist yet.

use std::time::Instant;

use tokio::runtime::Runtime;

use super::super::transport::{
    no_queue, LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport,
};
use super::super::util::{
    check_seq, consume_payload, err, fill_payload, BoxError, Result, StreamTimer, MSG_TIMEOUT,
};
use super::{port, send, topic, Role};
use ringbus::{Bytes, Node, Publisher, Sample, Subscriber};

const NAME: &str = "ringbus-async";

/// The library's topic transport with async receivers.
pub struct RingbusAsync;

impl Transport for RingbusAsync {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports(&self, pattern: Pattern, _mode: Mode) -> bool {
        pattern == Pattern::PubSub
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        match setup.pattern {
            Pattern::PubSub => Ok(Box::new(AsyncEnd::new(setup, Role::Ping)?)),
            Pattern::Rpc => Err(no_rpc()),
            Pattern::Queue => Err(no_queue(NAME)),
        }
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        match setup.pattern {
            Pattern::PubSub => Ok(Box::new(AsyncEnd::new(setup, Role::Pong)?)),
            Pattern::Rpc => Err(no_rpc()),
            Pattern::Queue => Err(no_queue(NAME)),
        }
    }
}

fn no_rpc() -> BoxError {
    err(format!(
        "{NAME}: no `rpc` rounds (no async service futures yet)"
    ))
}

/// The runtime of one end: current-thread, with the time driver (for the timeouts; the
/// wake-ups come from the library's waiter, not from tokio's I/O driver).
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| err(format!("{NAME}: cannot build a tokio runtime: {e}")))
}

/// Awaits the next message for at most [`MSG_TIMEOUT`].
async fn receive<'s>(
    subscriber: &'s mut Subscriber<Bytes>,
    what: &str,
) -> Result<Sample<'s, Bytes>> {
    match tokio::time::timeout(MSG_TIMEOUT, subscriber.receive_async()).await {
        Ok(got) => got.map_err(|e| err(format!("{what}: {e}"))),
        Err(_) => Err(err(format!("{what}: timed out after {MSG_TIMEOUT:?}"))),
    }
}

struct AsyncEnd {
    mode: Mode,
    payload: usize,
    /// Absent for the receiving end of a stream.
    publisher: Option<Publisher<Bytes>>,
    /// Absent for the sending end of a stream.
    subscriber: Option<Subscriber<Bytes>>,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
    // Declared last: the handles go before the runtime.
    rt: Runtime,
}

impl AsyncEnd {
    fn new(setup: &Setup, role: Role) -> Result<Self> {
        let rt = runtime()?;
        let node = Node::new().map_err(|e| err(format!("{NAME} node: {e}")))?;
        let base = setup.resource_name(NAME);
        let open = |suffix: &str| topic(&node, &format!("{base}-{suffix}"), setup, false);
        let publisher = |suffix: &str| {
            open(suffix)
                .publisher()
                .map_err(|e| err(format!("{NAME} publisher {suffix}: {e}")))
        };
        let subscriber = |suffix: &str| {
            open(suffix)
                .subscriber()
                .map_err(|e| err(format!("{NAME} subscriber {suffix}: {e}")))
        };
        let (publisher, subscriber) = match (setup.mode, role) {
            (Mode::Latency, Role::Ping) => (Some(publisher("ping")?), Some(subscriber("pong")?)),
            (Mode::Latency, Role::Pong) => (Some(publisher("pong")?), Some(subscriber("ping")?)),
            (Mode::Stream, Role::Ping) => (Some(publisher("stream")?), None),
            (Mode::Stream, Role::Pong) => (None, Some(subscriber("stream")?)),
        };
        Ok(Self {
            mode: setup.mode,
            payload: setup.payload,
            publisher,
            subscriber,
            seq: 0,
            rt,
        })
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::super::transport::check_mode(NAME, self.mode, mode)
    }
}

impl PingEnd for AsyncEnd {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_mode(Mode::Latency)?;
        let payload = self.payload;
        let publisher = port(NAME, "publisher", self.publisher.as_mut())?;
        let subscriber = port(NAME, "subscriber", self.subscriber.as_mut())?;
        let LatencyRound {
            count,
            warmup,
            touch,
            hist,
        } = round;
        let first_seq = self.seq + 1;
        let mut checksum = 0;
        // As `LatencyRound::time`, each reply awaited.
        self.rt.block_on(async {
            for i in 0..count {
                let seq = first_seq + i;
                let t0 = Instant::now();
                send(publisher, NAME, payload, seq, touch)?;
                let reply = receive(subscriber, "ringbus-async pong").await?;
                check_seq(consume_payload(&reply, touch, &mut checksum), seq)?;
                drop(reply);
                let rtt = t0.elapsed();
                if i >= warmup {
                    hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Ok::<_, BoxError>(())
        })?;
        self.seq += count;
        std::hint::black_box(checksum);
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        self.check_mode(Mode::Stream)?;
        let payload = self.payload;
        let publisher = port(NAME, "publisher", self.publisher.as_mut())?;
        let first = self.seq + 1;
        for seq in first..first + count {
            send(publisher, NAME, payload, seq, touch)?;
        }
        self.seq += count;
        Ok(None)
    }
}

impl PongEnd for AsyncEnd {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.check_mode(Mode::Latency)?;
        let payload = self.payload;
        let publisher = port(NAME, "publisher", self.publisher.as_mut())?;
        let subscriber = port(NAME, "subscriber", self.subscriber.as_mut())?;
        let first = self.seq + 1;
        let checksum = self.rt.block_on(async {
            let mut checksum = 0;
            for expected in first..first + count {
                // Loaned before waiting, as for `ringbus`.
                let mut loan = publisher
                    .loan(payload)
                    .map_err(|e| err(format!("{NAME} loan: {e}")))?;
                let request = receive(subscriber, "ringbus-async ping").await?;
                let seq = consume_payload(&request, touch, &mut checksum);
                drop(request);
                check_seq(seq, expected)?;
                fill_payload(&mut loan, seq, touch);
                loan.send();
            }
            Ok::<_, BoxError>(checksum)
        })?;
        self.seq += count;
        Ok(checksum)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        self.check_mode(Mode::Stream)?;
        let subscriber = port(NAME, "subscriber", self.subscriber.as_mut())?;
        let first_seq = self.seq + 1;
        let mut checksum = 0;
        // As `timed_receives`: timed from the first to the last message, each awaited.
        let elapsed_ns = self.rt.block_on(async {
            let mut timer = StreamTimer::default();
            for i in 0..count {
                let sample = receive(subscriber, "ringbus-async stream").await?;
                check_seq(
                    consume_payload(&sample, touch, &mut checksum),
                    first_seq + i,
                )?;
                drop(sample);
                timer.received(i);
            }
            Ok::<_, BoxError>(timer.finish())
        })?;
        self.seq += count;
        Ok(StreamOutcome::received(count, elapsed_ns, checksum))
    }
}
