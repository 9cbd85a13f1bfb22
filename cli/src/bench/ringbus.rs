//! `ringbus` and `ringbus-blocking`: the library under test, as byte topics (`pubsub`)
//! or as a request/response service (`rpc`, see the `rpc` submodule).
//!
//! Latency uses two topics (`...-ping`, `...-pong`), streaming one (`...-stream`), each
//! with one publisher, one subscriber, policy `Block`, capacity
//! [`super::STREAM_CAPACITY`] and `max_message_size` = payload size. The sender loans a
//! slot of the payload size and writes only the header word unless `--touch`.
//!
//! * `ringbus`: receivers busy-poll `try_receive`.
//! * `ringbus-blocking`: receivers call `receive_timeout` with zero spin before sleeping,
//!   so every wait goes through the kernel (futex).
//! * `ringbus-async` (the `async_pubsub` and `async_rpc` submodules): each end awaits in a
//!   tokio current-thread runtime of its own (`Subscriber::receive_async`; for `rpc`
//!   `Server::receive_async` and the client's awaited calls), with the default
//!   `spin_before_sleep`.
//! * `ringbus-async-parked`: the same with `spin_before_sleep(Duration::ZERO)` on every
//!   handle, so both sides are truly parked (no spin before a future registers).
//!
//! The pong loans its reply slot before waiting for the request, as for `iceoryx2`. The
//! ping loans inside the timed round trip (a `Loan` borrows its publisher, so it cannot
//! be loaned ahead across iterations, unlike iceoryx2's owned samples).

use std::time::Duration;

use super::transport::{
    no_queue, LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport,
};
use super::util::{
    check_seq, consume_payload, err, fill_payload, spin_until, timed_receives, Result, MSG_TIMEOUT,
};
use super::STREAM_CAPACITY;
use ringbus::{
    topic::Policy, Bytes, Node, Publisher, ReceiveError, Sample, Subscriber, TopicBuilder,
};

mod async_pubsub;
mod async_rpc;
mod rpc;

/// The library's topic transport: spinning `try_receive` loop, or blocking `receive`
/// with zero spin time.
pub struct Ringbus {
    /// `ringbus-blocking` when true.
    pub blocking: bool,
}

impl Ringbus {
    fn name_of(&self) -> &'static str {
        if self.blocking {
            "ringbus-blocking"
        } else {
            "ringbus"
        }
    }
}

impl Transport for Ringbus {
    fn name(&self) -> &'static str {
        self.name_of()
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        Ok(match setup.pattern {
            Pattern::PubSub => Box::new(RbEnd::new(self, setup, Role::Ping)?),
            Pattern::Rpc => Box::new(rpc::RpcPing::new(self, setup)?),
            Pattern::Queue => return Err(no_queue(self.name())),
        })
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        Ok(match setup.pattern {
            Pattern::PubSub => Box::new(RbEnd::new(self, setup, Role::Pong)?),
            Pattern::Rpc => Box::new(rpc::RpcPong::new(self, setup)?),
            Pattern::Queue => return Err(no_queue(self.name())),
        })
    }
}

/// The library with async ends: each end awaits in a tokio current-thread runtime of its
/// own (`async_pubsub`, `async_rpc`).
pub struct RingbusAsync {
    /// `ringbus-async-parked` when true: every handle built with `spin_before_sleep(ZERO)`.
    pub parked: bool,
}

impl RingbusAsync {
    fn name_of(&self) -> &'static str {
        if self.parked {
            "ringbus-async-parked"
        } else {
            "ringbus-async"
        }
    }
}

impl Transport for RingbusAsync {
    fn name(&self) -> &'static str {
        self.name_of()
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        Ok(match setup.pattern {
            Pattern::PubSub => Box::new(async_pubsub::AsyncEnd::new(self, setup, Role::Ping)?),
            Pattern::Rpc => Box::new(async_rpc::AsyncRpcPing::new(self, setup)?),
            Pattern::Queue => return Err(no_queue(self.name())),
        })
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        Ok(match setup.pattern {
            Pattern::PubSub => Box::new(async_pubsub::AsyncEnd::new(self, setup, Role::Pong)?),
            Pattern::Rpc => Box::new(async_rpc::AsyncRpcPong::new(self, setup)?),
            Pattern::Queue => return Err(no_queue(self.name())),
        })
    }
}

/// The runtime of one async end: current-thread, with the time driver (for the timeouts; the
/// wake-ups come from the library's waiter, not from tokio's I/O driver).
fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| err(format!("{name}: cannot build a tokio runtime: {e}")))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ping,
    Pong,
}

struct RbEnd {
    name: &'static str,
    mode: Mode,
    payload: usize,
    blocking: bool,
    /// Absent for the receiving end of a stream.
    publisher: Option<Publisher<Bytes>>,
    /// Absent for the sending end of a stream.
    subscriber: Option<Subscriber<Bytes>>,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
}

fn topic(node: &Node, name: &str, setup: &Setup, blocking: bool) -> TopicBuilder<Bytes> {
    let builder = node
        .topic_bytes(name)
        .max_message_size(setup.payload)
        .capacity(STREAM_CAPACITY)
        .max_publishers(1)
        .max_subscribers(1)
        .policy(Policy::Block)
        .send_timeout(MSG_TIMEOUT);
    if blocking {
        builder.spin_before_sleep(Duration::ZERO)
    } else {
        builder
    }
}

impl RbEnd {
    fn new(t: &Ringbus, setup: &Setup, role: Role) -> Result<Self> {
        let name = t.name();
        let node = Node::new().map_err(|e| err(format!("{name} node: {e}")))?;
        let base = setup.resource_name(name);
        let open = |suffix: &str| topic(&node, &format!("{base}-{suffix}"), setup, t.blocking);
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
            blocking: t.blocking,
            publisher,
            subscriber,
            seq: 0,
        })
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::transport::check_mode(self.name, self.mode, mode)
    }
}

/// Waits for the next message: busy-polling `try_receive`, or blocking `receive_timeout`.
#[inline(always)]
fn receive<'s>(
    subscriber: &'s Subscriber<Bytes>,
    blocking: bool,
    what: &str,
) -> Result<Sample<'s, Bytes>> {
    if blocking {
        subscriber
            .receive_timeout(MSG_TIMEOUT)
            .map_err(|e| err(format!("{what}: {e}")))
    } else {
        spin_until(what, || match subscriber.try_receive() {
            Ok(sample) => Ok(Some(sample)),
            Err(ReceiveError::Empty) => Ok(None),
            Err(e) => Err(err(format!("{what}: {e}"))),
        })
    }
}

/// Loans a slot of `payload` bytes, writes the header word (every byte with `touch`), sends.
#[inline(always)]
fn send(
    publisher: &mut Publisher<Bytes>,
    name: &str,
    payload: usize,
    seq: u64,
    touch: bool,
) -> Result<()> {
    let mut loan = publisher
        .loan(payload)
        .map_err(|e| err(format!("{name} loan: {e}")))?;
    fill_payload(&mut loan, seq, touch);
    loan.send();
    Ok(())
}

/// `port` (an end's publisher or subscriber, `what`), which the rounds that use it have.
fn port<T>(name: &str, what: &str, port: Option<T>) -> Result<T> {
    port.ok_or_else(|| err(format!("{name}: this end has no {what}")))
}

impl PingEnd for RbEnd {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_mode(Mode::Latency)?;
        let (name, payload, blocking) = (self.name, self.payload, self.blocking);
        let publisher = port(name, "publisher", self.publisher.as_mut())?;
        let subscriber = port(name, "subscriber", self.subscriber.as_ref())?;
        let mut checksum = 0;
        let touch = round.touch;
        self.seq += round.time(self.seq + 1, |seq| {
            send(publisher, name, payload, seq, touch)?;
            let reply = receive(subscriber, blocking, "ringbus pong")?;
            check_seq(consume_payload(&reply, touch, &mut checksum), seq)
        })?;
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

impl PongEnd for RbEnd {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.check_mode(Mode::Latency)?;
        let (name, payload, blocking) = (self.name, self.payload, self.blocking);
        let publisher = port(name, "publisher", self.publisher.as_mut())?;
        let subscriber = port(name, "subscriber", self.subscriber.as_ref())?;
        let mut checksum = 0;
        let first = self.seq + 1;
        for expected in first..first + count {
            // Loaned before waiting, as for iceoryx2.
            let mut loan = publisher
                .loan(payload)
                .map_err(|e| err(format!("{name} loan: {e}")))?;
            let request = receive(subscriber, blocking, "ringbus ping")?;
            let seq = consume_payload(&request, touch, &mut checksum);
            drop(request);
            check_seq(seq, expected)?;
            fill_payload(&mut loan, seq, touch);
            loan.send();
        }
        self.seq += count;
        Ok(checksum)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        self.check_mode(Mode::Stream)?;
        let (name, blocking) = (self.name, self.blocking);
        let subscriber = port(name, "subscriber", self.subscriber.as_ref())?;
        let mut checksum = 0;
        let elapsed_ns = timed_receives(self.seq + 1, count, |seq| {
            let sample = receive(subscriber, blocking, "ringbus stream")?;
            check_seq(consume_payload(&sample, touch, &mut checksum), seq)
        })?;
        self.seq += count;
        Ok(StreamOutcome::received(count, elapsed_ns, checksum))
    }
}
