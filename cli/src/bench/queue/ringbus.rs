//! `ringbus` and `ringbus-durable-{never,batch,always}` for `bench queue`: the library's
//! byte queue (`Node::queue_bytes`), one producer or consumer per worker process.
//!
//! Every end builds the queue with the same options: capacity [`QUEUE_CAPACITY`],
//! `max_message_size` = the payload size, `max_producers` / `max_consumers` = the shape's,
//! `Policy::Block(QUEUE_WAIT)`, default prefetch, spin time and visibility timeout;
//! the durable ones add `durable(dir)` (a fresh directory on disk per queue) and their
//! sync policy (`Batch` every [`BATCH_INTERVAL`]). A producer loans a slot of the payload
//! size and writes only the header in place, then sends (waiting in the library while the
//! queue is full); a consumer polls `try_receive` (as the `crossbeam` threads poll their
//! queue, see [`super::worker::consume`]), reads the header in place and acks.

use std::time::Duration;

use super::super::util::{err, Result};
use super::worker::{
    consume, produce, AckWords, Backoff, Header, Outcome, QueueRx, QueueTx, Round, WorkerEnd,
    QUEUE_WAIT,
};
use super::{EndSpec, QueueSetup, QueueTransport, Role, QUEUE_CAPACITY};
use ringbus::{
    queue::Policy, Bytes, Consumer, Delivery, Node, Producer, QueueBuilder, ReceiveError,
    SyncPolicy,
};

/// Longest a consumer sleeps in `receive_timeout` before it looks at the stop counter.
const IDLE_SLICE: Duration = Duration::from_millis(1);

/// Interval of the `ringbus-durable-batch` row's `SyncPolicy::Batch`.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Where a ringbus queue keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Shared memory (`ringbus`).
    Memory,
    /// Files on disk, `SyncPolicy::Never`.
    DurableNever,
    /// Files on disk, `SyncPolicy::Batch(BATCH_INTERVAL)`.
    DurableBatch,
    /// Files on disk, `SyncPolicy::Always`.
    DurableAlways,
}

/// The library's queue as a `bench queue` transport.
pub struct RingbusQueue {
    /// In memory, or durable with a sync policy.
    pub storage: Storage,
}

impl RingbusQueue {
    fn sync_policy(&self) -> Option<SyncPolicy> {
        match self.storage {
            Storage::Memory => None,
            Storage::DurableNever => Some(SyncPolicy::Never),
            Storage::DurableBatch => Some(SyncPolicy::Batch(BATCH_INTERVAL)),
            Storage::DurableAlways => Some(SyncPolicy::Always),
        }
    }

    fn builder(&self, node: &Node, setup: &QueueSetup) -> Result<QueueBuilder<Bytes>> {
        let builder = node
            .queue_bytes(&setup.name)
            .capacity(QUEUE_CAPACITY)
            .max_message_size(setup.payload)
            .max_producers(setup.shape.producers)
            .max_consumers(setup.shape.consumers)
            .policy(Policy::Block(QUEUE_WAIT));
        Ok(match self.sync_policy() {
            None => builder,
            Some(policy) => {
                let dir = setup
                    .dir
                    .clone()
                    .ok_or_else(|| err(format!("{}: no directory on disk", self.name())))?;
                builder.durable(dir).sync_policy(policy)
            }
        })
    }
}

impl QueueTransport for RingbusQueue {
    fn name(&self) -> &'static str {
        match self.storage {
            Storage::Memory => "ringbus",
            Storage::DurableNever => "ringbus-durable-never",
            Storage::DurableBatch => "ringbus-durable-batch",
            Storage::DurableAlways => "ringbus-durable-always",
        }
    }

    fn reference(&self) -> Option<&'static str> {
        Some(match self.storage {
            Storage::Memory => "crossbeam",
            _ => "ringbus",
        })
    }

    fn durable(&self) -> bool {
        self.storage != Storage::Memory
    }

    fn open_end(&self, spec: &EndSpec, setup: &QueueSetup) -> Result<Box<dyn WorkerEnd>> {
        let name = self.name();
        let node = Node::new().map_err(|e| err(format!("{name} node: {e}")))?;
        let builder = self.builder(&node, setup)?;
        Ok(match spec.role {
            Role::Producer => Box::new(RbProducer {
                producer: builder
                    .producer()
                    .map_err(|e| err(format!("{name} producer: {e}")))?,
                payload: setup.payload,
            }),
            Role::Consumer => Box::new(RbConsumer {
                consumer: builder
                    .consumer()
                    .map_err(|e| err(format!("{name} consumer: {e}")))?,
                last_position: None,
            }),
        })
    }
}

struct RbProducer {
    producer: Producer<Bytes>,
    payload: usize,
}

impl QueueTx for RbProducer {
    #[inline(always)]
    fn send(&mut self, header: &Header) -> Result<()> {
        let mut loan = self
            .producer
            .loan(self.payload)
            .map_err(|e| err(format!("loan: {e}")))?;
        header.write(&mut loan);
        loan.send().map_err(|e| err(format!("send: {e}")))?;
        Ok(())
    }
}

impl WorkerEnd for RbProducer {
    fn run(&mut self, round: &Round, index: usize, acks: &AckWords<'_>) -> Result<Outcome> {
        produce(self, round, index, acks)
    }
}

struct RbConsumer {
    consumer: Consumer<Bytes>,
    /// Position of the last delivery taken (over all rounds).
    last_position: Option<u64>,
}

/// Checks, reads and acks one delivery; `last_position` is the consumer's last one.
#[inline(always)]
fn take<T>(
    last_position: &mut Option<u64>,
    delivery: Delivery<'_, Bytes>,
    read: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    // Nothing nacks, drops a delivery or holds one near its visibility timeout, and no
    // consumer dies: every delivery is a first one, and a consumer claims in position order.
    let (position, deliveries) = (delivery.position(), delivery.delivery_count());
    if deliveries != 1 || last_position.is_some_and(|last| position <= last) {
        return Err(err(format!(
            "delivery of position {position} (delivery count {deliveries}) after position \
             {last_position:?}"
        )));
    }
    *last_position = Some(position);
    let out = read(&delivery);
    delivery.ack().map_err(|e| err(format!("ack: {e}")))?;
    Ok(out)
}

impl QueueRx for RbConsumer {
    #[inline(always)]
    fn try_receive<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        let consumer = &self.consumer;
        let delivery = match consumer.try_receive() {
            Ok(delivery) => delivery,
            Err(ReceiveError::Empty) => return Ok(None),
            Err(e) => return Err(err(format!("receive: {e}"))),
        };
        take(&mut self.last_position, delivery, read).map(Some)
    }

    /// The library's own wait: `receive_timeout` spins, then sleeps on a futex until a
    /// producer publishes (or [`IDLE_SLICE`] passes, to look at the stop counter).
    fn wait_receive<T>(
        &mut self,
        idle: &mut Backoff,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>> {
        let consumer = &self.consumer;
        let delivery = match consumer.receive_timeout(IDLE_SLICE) {
            Ok(delivery) => delivery,
            Err(ReceiveError::Timeout(_)) => {
                idle.waited("a message").map_err(|e| {
                    err(format!(
                        "{e}; last position taken {:?}; {:?}",
                        self.last_position,
                        consumer.stats()
                    ))
                })?;
                return Ok(None);
            }
            Err(e) => return Err(err(format!("receive: {e}"))),
        };
        take(&mut self.last_position, delivery, read).map(Some)
    }
}

impl WorkerEnd for RbConsumer {
    fn run(&mut self, round: &Round, _index: usize, acks: &AckWords<'_>) -> Result<Outcome> {
        consume(self, round, acks)
    }
}
