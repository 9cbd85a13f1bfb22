//! `ringbus-async` and `ringbus-async-parked` for `bench pubsub`: the `ringbus` byte topics
//! with the receivers awaiting [`Subscriber::receive_async`] in a tokio current-thread
//! runtime, what an async service would do instead of spinning or blocking a thread.
//!
//! Topics, loans and message checks are those of `ringbus` (see the parent module);
//! `ringbus-async-parked` builds every handle with `spin_before_sleep(Duration::ZERO)`. Each
//! end owns a runtime (the time driver, for the timeouts), built once when the end is
//! created, as for `tokio-uds`; a round runs in one `block_on`, and every receive is
//! awaited under `tokio::time::timeout` of [`MSG_TIMEOUT`]. Sends are the ordinary ones
//! (a `Block` publisher waits for room synchronously, bounded by the topic's send
//! timeout).

use std::time::Instant;

use tokio::runtime::Runtime;

use super::super::transport::{LatencyRound, Mode, PingEnd, PongEnd, Setup, StreamOutcome};
use super::super::util::{
    check_seq, consume_payload, err, fill_payload, BoxError, Result, StreamTimer, MSG_TIMEOUT,
};
use super::{port, runtime, send, topic, RingbusAsync, Role};
use ringbus::{Bytes, Node, Publisher, Sample, Subscriber};

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

pub(super) struct AsyncEnd {
    name: &'static str,
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
    pub(super) fn new(t: &RingbusAsync, setup: &Setup, role: Role) -> Result<Self> {
        let name = t.name_of();
        let rt = runtime(name)?;
        let node = Node::new().map_err(|e| err(format!("{name} node: {e}")))?;
        let base = setup.resource_name(name);
        let open = |suffix: &str| topic(&node, &format!("{base}-{suffix}"), setup, t.parked);
        let publisher = |suffix: &str| {
            open(suffix)
                .publisher()
                .map_err(|e| err(format!("{name} publisher {suffix}: {e}")))
        };
        let subscriber = |suffix: &str| {
            open(suffix)
                .subscriber()
                .map_err(|e| err(format!("{name} subscriber {suffix}: {e}")))
        };
        let (publisher, subscriber) = match (setup.mode, role) {
            (Mode::Latency, Role::Ping) => (Some(publisher("ping")?), Some(subscriber("pong")?)),
            (Mode::Latency, Role::Pong) => (Some(publisher("pong")?), Some(subscriber("ping")?)),
            (Mode::Stream, Role::Ping) => (Some(publisher("stream")?), None),
            (Mode::Stream, Role::Pong) => (None, Some(subscriber("stream")?)),
        };
        Ok(Self {
            name,
            mode: setup.mode,
            payload: setup.payload,
            publisher,
            subscriber,
            seq: 0,
            rt,
        })
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::super::transport::check_mode(self.name, self.mode, mode)
    }
}

impl PingEnd for AsyncEnd {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_mode(Mode::Latency)?;
        let (name, payload) = (self.name, self.payload);
        let publisher = port(name, "publisher", self.publisher.as_mut())?;
        let subscriber = port(name, "subscriber", self.subscriber.as_mut())?;
        let what = format!("{name} pong");
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
                send(publisher, name, payload, seq, touch)?;
                let reply = receive(subscriber, &what).await?;
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
        let (name, payload) = (self.name, self.payload);
        let publisher = port(name, "publisher", self.publisher.as_mut())?;
        let first = self.seq + 1;
        for seq in first..first + count {
            send(publisher, name, payload, seq, touch)?;
        }
        self.seq += count;
        Ok(None)
    }
}

impl PongEnd for AsyncEnd {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.check_mode(Mode::Latency)?;
        let (name, payload) = (self.name, self.payload);
        let publisher = port(name, "publisher", self.publisher.as_mut())?;
        let subscriber = port(name, "subscriber", self.subscriber.as_mut())?;
        let what = format!("{name} ping");
        let first = self.seq + 1;
        let checksum = self.rt.block_on(async {
            let mut checksum = 0;
            for expected in first..first + count {
                // Loaned before waiting, as for `ringbus`.
                let mut loan = publisher
                    .loan(payload)
                    .map_err(|e| err(format!("{name} loan: {e}")))?;
                let request = receive(subscriber, &what).await?;
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
        let name = self.name;
        let subscriber = port(name, "subscriber", self.subscriber.as_mut())?;
        let what = format!("{name} stream");
        let first_seq = self.seq + 1;
        let mut checksum = 0;
        // As `timed_receives`: timed from the first to the last message, each awaited.
        let elapsed_ns = self.rt.block_on(async {
            let mut timer = StreamTimer::default();
            for i in 0..count {
                let sample = receive(subscriber, &what).await?;
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
