//! `iceoryx2` (cargo feature `peers`): publish-subscribe over iceoryx2's IPC service,
//! and (`bench rpc`) its request-response pattern, see [`rpc`].
//!
//! Latency uses two services (`...-ping`, `...-pong`) configured as iceoryx2's own
//! publish-subscribe benchmark does for minimal latency: history 0, subscriber buffer 1,
//! safe overflow on, publisher `initial_max_slice_len` = payload size, busy-polling
//! `receive()`. Each message is a `[u8]` slice of the payload size from
//! `loan_slice_uninit`; the sender writes only the header word unless `--touch`.
//!
//! Streaming uses one service with a subscriber buffer of [`super::STREAM_CAPACITY`],
//! no overflow, and `RetryUntilDelivered` back-pressure (bounded by a handler).

use std::fmt::Debug;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::{BackpressureAction, BackpressureInfo};
use iceoryx2::prelude::*;
use iceoryx2::sample_mut::SampleMut;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use super::transport::{
    no_queue, LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport,
};
use super::util::{
    check_seq, consume_payload, err, fill_payload, spin_until, timed_receives, BoxError, Result,
    MSG_TIMEOUT,
};
use super::STREAM_CAPACITY;

mod rpc;

type Svc = ipc::Service;
type Factory = PortFactory<Svc, [u8], ()>;

/// The `iceoryx2` transport.
pub struct Iceoryx2;

impl Transport for Iceoryx2 {
    fn name(&self) -> &'static str {
        "iceoryx2"
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        Ok(match setup.pattern {
            Pattern::PubSub => Box::new(IceEnd::new(setup, Role::Ping)?),
            Pattern::Rpc => Box::new(rpc::RpcPing::new(setup)?),
            Pattern::Queue => return Err(no_queue("iceoryx2")),
        })
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        Ok(match setup.pattern {
            Pattern::PubSub => Box::new(IceEnd::new(setup, Role::Pong)?),
            Pattern::Rpc => Box::new(rpc::RpcPong::new(setup)?),
            Pattern::Queue => return Err(no_queue("iceoryx2")),
        })
    }
}

fn ice<E: Debug>(what: &'static str) -> impl FnOnce(E) -> BoxError {
    move |e| err(format!("iceoryx2 {what}: {e:?}"))
}

/// Fails a send that has waited for buffer space longer than [`MSG_TIMEOUT`].
fn bounded_retry(info: &BackpressureInfo) -> BackpressureAction {
    if info.elapsed_time > MSG_TIMEOUT {
        BackpressureAction::DiscardDataAndFail
    } else {
        BackpressureAction::Retry
    }
}

/// A node for one end: errors-only logging, no signal handlers of its own.
fn node() -> Result<Node<Svc>> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(ice("node"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ping,
    Pong,
}

struct IceEnd {
    mode: Mode,
    payload: usize,
    /// Absent for the receiving end of a stream.
    publisher: Option<Publisher<Svc, [u8], ()>>,
    /// Absent for the sending end of a stream.
    subscriber: Option<Subscriber<Svc, [u8], ()>>,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
    // Declared last: ports drop before their services and the node.
    _services: Vec<Factory>,
    _node: Node<Svc>,
}

fn open_service(node: &Node<Svc>, name: &str, mode: Mode) -> Result<Factory> {
    let name = ServiceName::new(name).map_err(ice("service name"))?;
    let builder = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0);
    let builder = match mode {
        Mode::Latency => builder
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true),
        Mode::Stream => builder
            .subscriber_max_buffer_size(STREAM_CAPACITY)
            .enable_safe_overflow(false),
    };
    builder.open_or_create().map_err(ice("open_or_create"))
}

impl IceEnd {
    fn new(setup: &Setup, role: Role) -> Result<Self> {
        let node = node()?;
        let base = setup.resource_name("iceoryx2");
        let mut services = Vec::new();
        let (publisher, subscriber) = match setup.mode {
            Mode::Latency => {
                let ping = open_service(&node, &format!("{base}-ping"), Mode::Latency)?;
                let pong = open_service(&node, &format!("{base}-pong"), Mode::Latency)?;
                let (tx, rx) = match role {
                    Role::Ping => (&ping, &pong),
                    Role::Pong => (&pong, &ping),
                };
                let publisher = tx
                    .publisher_builder()
                    .initial_max_slice_len(setup.payload)
                    .create()
                    .map_err(ice("publisher"))?;
                let subscriber = rx
                    .subscriber_builder()
                    .create()
                    .map_err(ice("subscriber"))?;
                services.push(ping);
                services.push(pong);
                (Some(publisher), Some(subscriber))
            }
            Mode::Stream => {
                let svc = open_service(&node, &format!("{base}-stream"), Mode::Stream)?;
                let ends = match role {
                    Role::Ping => {
                        let publisher = svc
                            .publisher_builder()
                            .initial_max_slice_len(setup.payload)
                            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                            .set_backpressure_handler(bounded_retry)
                            .create()
                            .map_err(ice("publisher"))?;
                        (Some(publisher), None)
                    }
                    Role::Pong => {
                        let subscriber = svc
                            .subscriber_builder()
                            .buffer_size(STREAM_CAPACITY)
                            .create()
                            .map_err(ice("subscriber"))?;
                        (None, Some(subscriber))
                    }
                };
                services.push(svc);
                ends
            }
        };
        Ok(Self {
            mode: setup.mode,
            payload: setup.payload,
            publisher,
            subscriber,
            seq: 0,
            _services: services,
            _node: node,
        })
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::transport::check_mode("iceoryx2", self.mode, mode)
    }

    fn publisher(&self) -> Result<&Publisher<Svc, [u8], ()>> {
        self.publisher
            .as_ref()
            .ok_or_else(|| err("iceoryx2: this end has no publisher"))
    }

    fn subscriber(&self) -> Result<&Subscriber<Svc, [u8], ()>> {
        self.subscriber
            .as_ref()
            .ok_or_else(|| err("iceoryx2: this end has no subscriber"))
    }
}

/// Loans a sample of `len` bytes.
#[inline(always)]
fn loan(publisher: &Publisher<Svc, [u8], ()>, len: usize) -> Result<SampleMut<Svc, [u8], ()>> {
    let sample = publisher.loan_slice_uninit(len).map_err(ice("loan"))?;
    // SAFETY: the sample is a chunk of iceoryx2's data segment, a shared-memory mapping
    // that the OS zero-fills when it is created and that only ever holds bytes written by
    // earlier senders, so every byte is an initialised `u8` (which has no invalid values).
    // Initialising the whole slice would defeat the point of the benchmark (only the
    // header word is written); iceoryx2's own benchmark does the same.
    Ok(unsafe { sample.assume_init() })
}

/// Fills a loaned sample as a sender and sends it.
#[inline(always)]
fn fill_and_send(mut sample: SampleMut<Svc, [u8], ()>, seq: u64, touch: bool) -> Result<()> {
    fill_payload(sample.payload_mut(), seq, touch);
    sample.send().map_err(ice("send"))?;
    Ok(())
}

impl PingEnd for IceEnd {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_mode(Mode::Latency)?;
        let publisher = self.publisher()?;
        let subscriber = self.subscriber()?;
        let mut checksum = 0;
        // Like iceoryx2's own benchmark, the next sample is loaned while the pong works.
        let mut next = Some(loan(publisher, self.payload)?);
        let touch = round.touch;
        self.seq += round.time(self.seq + 1, |seq| {
            let sample = next
                .take()
                .ok_or_else(|| err("iceoryx2: no loaned sample"))?;
            fill_and_send(sample, seq, touch)?;
            next = Some(loan(publisher, self.payload)?);
            let reply = spin_until("iceoryx2 pong", || {
                subscriber.receive().map_err(ice("receive"))
            })?;
            check_seq(consume_payload(reply.payload(), touch, &mut checksum), seq)
        })?;
        std::hint::black_box(checksum);
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        self.check_mode(Mode::Stream)?;
        let publisher = self.publisher()?;
        let first = self.seq + 1;
        for seq in first..first + count {
            fill_and_send(loan(publisher, self.payload)?, seq, touch)?;
        }
        self.seq += count;
        Ok(None)
    }
}

impl PongEnd for IceEnd {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.check_mode(Mode::Latency)?;
        let publisher = self.publisher()?;
        let subscriber = self.subscriber()?;
        let mut checksum = 0;
        let first = self.seq + 1;
        for expected in first..first + count {
            // Loaned before waiting, as iceoryx2's own benchmark does.
            let sample = loan(publisher, self.payload)?;
            let request = spin_until("iceoryx2 ping", || {
                subscriber.receive().map_err(ice("receive"))
            })?;
            let seq = consume_payload(request.payload(), touch, &mut checksum);
            drop(request);
            check_seq(seq, expected)?;
            fill_and_send(sample, seq, touch)?;
        }
        self.seq += count;
        Ok(checksum)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        self.check_mode(Mode::Stream)?;
        let subscriber = self.subscriber()?;
        let mut checksum = 0;
        let elapsed_ns = timed_receives(self.seq + 1, count, |seq| {
            let sample = spin_until("iceoryx2 stream", || {
                subscriber.receive().map_err(ice("receive"))
            })?;
            check_seq(consume_payload(sample.payload(), touch, &mut checksum), seq)
        })?;
        self.seq += count;
        Ok(StreamOutcome::received(count, elapsed_ns, checksum))
    }
}
