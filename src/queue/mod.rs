//! Message queues: each message goes to one of several competing consumers, is acknowledged,
//! and is kept (in shared memory, or on disk) until then.
//!
//! A queue segment holds one ring of `capacity` slots shared by every producer and consumer.
//! Producers reserve positions in order under a short append lock and publish each slot with a
//! Release store; consumers claim batches under a short claim lock and acknowledge each delivery
//! with one compare-and-swap. A delivery not acknowledged in time (the visibility timeout), or
//! held by a consumer that died, goes back to the queue; after the maximum number of deliveries a
//! message moves to the dead-letter queue. See ARCHITECTURE.md ("Queue segment") for the layout,
//! the slot state machine and its memory-ordering argument.
//!
//! # Order
//!
//! Positions are reserved in one total order, and each producer's messages take increasing
//! positions, in the order it sent them. Consumers claim new messages in position order. So:
//! - one consumer receives each producer's messages in the order they were sent, and messages of
//!   different producers in the order they were reserved;
//! - with several consumers, claims are still in position order, but consumers run in parallel,
//!   so processing (and acknowledgements) can finish in any order;
//! - a message handed back (nack, dropped delivery, visibility timeout, dead consumer) is
//!   redelivered before newer messages, so it arrives after messages sent later than it that were
//!   already delivered: redeliveries are the exception to FIFO.
//!
//! # Durable queues
//!
//! With [`QueueBuilder::durable`], the ring lives in a file of the given directory and payloads
//! are records of an append-only log next to it; see [`SyncPolicy`] for what a
//! machine crash can lose, and ARCHITECTURE.md for recovery.
//!
//! # Async
//!
//! [`Consumer::receive_async`] waits for a message without blocking a thread, in any executor
//! (only `std::task` is used): the future tries at once, then registers the queue's news
//! doorbell with the process's waiter (a thread sleeping on every registered futex word at once
//! with `futex_waitv`), which wakes it when a producer rings, or after the scan interval while
//! anything is waiting or in flight, so that a waiting consumer still takes back the deliveries
//! of consumers that died (a settled queue, every message acknowledged, has none to take back:
//! its consumers nap 5 s). It first spins for the builder's `spin_before_sleep` without holding
//! its thread. Dropping the future at any point loses no message. See ARCHITECTURE.md ("Async").
//!
//! Discovery: [`QueueBuilder::consumer_when_found`] and [`QueueBuilder::producer_when_found`]
//! wait for another process to create the queue, [`Producer::wait_for_consumer`] for a first
//! live consumer ([`crate::discovery`]).
//!
//! [`Producer::send_async`] and `loan_async` wait for room the same way under
//! [`Policy::Block`]: on the queue's room doorbell, which a consumer rings when it frees a slot,
//! with the blocking send's deadline ([`crate::SendError::Timeout`]) and its reclaim of dead
//! participants every [`crate::CHECK_INTERVAL`]; under [`Policy::Fail`] a full queue is
//! [`crate::SendError::Full`] at once. The message is written (and, for a durable queue, logged
//! and synced as its [`SyncPolicy`] says, in the executor's thread) in the poll that reserves
//! its slot, so dropping the future before it completes sends nothing.
//!
//! ```
//! use ringbus::Node;
//!
//! let node = Node::in_process();
//! let queue = node.queue::<u64>("doc-queue-async");
//! let mut producer = queue.producer()?;
//! let mut consumer = queue.consumer()?;
//! let worker = std::thread::spawn(move || {
//!     futures::executor::block_on(async {
//!         let mut sum = 0;
//!         for _ in 0..3 {
//!             let job = consumer.receive_async().await?;
//!             sum += *job;
//!             job.ack().expect("acknowledged in time");
//!         }
//!         Ok::<u64, ringbus::ReceiveError>(sum)
//!     })
//! });
//! for n in [1, 2, 3] {
//!     producer.send(&n)?;
//! }
//! assert_eq!(worker.join().unwrap()?, 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod consumer;
#[doc(hidden)]
pub mod layout;
mod producer;
mod shared;

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use consumer::{Consumer, Delivery, Receive, Stats};
pub use layout::{MAX_DELIVERIES, MAX_CAPACITY, MAX_MESSAGE_SIZE, MAX_PARTICIPANTS};
pub use producer::{Producer, Loan};

use crate::discovery::Found;
use crate::error::OpenError;
use crate::log::{LogShape, SyncPolicy};
use crate::options::payload_size;
use crate::shm::{Backing, OpenMode, Root};
use crate::topic::{Payload, MAX_ALIGN};
use consumer::{ConsumerCore, DlqOpener};

/// Opens a producer of another queue when first needed (a forwarded queue's outbox).
pub(crate) type ProducerOpener =
    Box<dyn Fn() -> Result<ProducerCore, OpenError> + Send + Sync>;
use layout::QueueLayout;
use layout::Role;
use producer::ProducerCore;
use shared::{LogDir, QueueShared, Spec};

/// Target size of a durable queue's log segment files.
const DEFAULT_SEGMENT_BYTES: usize = 1 << 20;

/// What a producer does when the queue is full (`capacity` messages sent and not acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Wait for room up to this long, then [`crate::SendError::Timeout`].
    Block(Duration),
    /// Fail at once with [`crate::SendError::Full`].
    Fail,
}

/// Options for opening or creating a queue. Made by [`crate::Node::queue`],
/// [`crate::Node::queue_bytes`] or [`crate::Node::queue_rkyv`].
///
/// The options that shape the queue (capacity, sizes, participants, visibility timeout, maximum
/// deliveries, dead-letter queue, durability) apply when it is created; a handle that opens an
/// existing queue uses the queue's own. Prefetch, full policy, sync policy and spinning are each
/// handle's own.
///
/// ```
/// use ringbus::{queue::Policy, Node};
/// use std::time::Duration;
///
/// let node = Node::in_process();
/// let jobs = node
///     .queue::<[u64; 2]>("doc-jobs")
///     .capacity(256)
///     .prefetch(4)
///     .visibility_timeout(Duration::from_secs(10))
///     .max_deliveries(3)
///     .dead_letter("doc-jobs-dead")
///     .policy(Policy::Fail);
/// let mut producer = jobs.producer()?;
/// let worker = jobs.consumer()?;
/// producer.send(&[1, 2])?;
/// let job = worker.receive()?;
/// assert_eq!(*job, [1, 2]);
/// job.ack()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct QueueBuilder<P: Payload + ?Sized> {
    options: QueueOptions,
    _p: PhantomData<fn(&P)>,
}

impl<P: Payload + ?Sized> Clone for QueueBuilder<P> {
    fn clone(&self) -> Self {
        QueueBuilder {
            options: self.options.clone(),
            _p: PhantomData,
        }
    }
}

crate::options::options! { QueueOptions for [P: Payload + ?Sized] QueueBuilder<P> {
    /// Messages the queue holds, sent and not yet acknowledged: a power of two, 2 to 2^24
    /// (default 1024). Room is freed in position order: a message held unacknowledged for long
    /// keeps the slot of its position, so producers find the queue full once they are
    /// `capacity` positions past it.
    capacity(n: usize) -> capacity: usize = 1024;
    /// Largest message in bytes, for byte and rkyv queues (default 4096). Ignored for `Pod`
    /// types, whose size is fixed.
    max_message_size(bytes: usize) -> max_message_size: Option<usize> = None => Some(bytes);
    max_producers / max_consumers = participants("Producers", 8, "Consumers", 8);
    /// Unacknowledged deliveries one consumer may hold, counting messages it claimed ahead
    /// (default 16, at least 1; at most the capacity). A consumer claims up to this many messages at once, which makes
    /// claiming cheaper; claimed messages wait for it even if another consumer is idle, and
    /// their visibility timeout runs from the claim. [`Consumer::try_receive`] fails with
    /// [`crate::ReceiveError::TooManyHeld`] while it holds this many.
    prefetch(n: usize) -> prefetch: usize = 16;
    /// Most messages a consumer claims at once (default 0: as many as its prefetch has room
    /// for). Claims are cheaper in batches, but a batch waits for its consumer even if another
    /// is idle, with its visibility timeout running: a consumer that takes messages one at a
    /// time for others (a network bridge lending them to another host) claims 1.
    claim_batch(n: usize) -> claim_batch: usize = 0;
    /// How long a delivery may stay unacknowledged before the queue takes it back and delivers
    /// it again (default 30 s; resolution a few milliseconds). The late consumer's
    /// [`Delivery::ack`] then fails with [`crate::AckError::Expired`]; what it reads stays
    /// valid until it lets go of the delivery.
    visibility_timeout(timeout: Duration) -> visibility: Duration = Duration::from_secs(30);
    /// Deliveries after which a message that is handed back again goes to the dead-letter queue
    /// (or is dropped and counted, without one). 0, the default, is unlimited; at most
    /// [`MAX_DELIVERIES`].
    max_deliveries(n: u32) -> max_deliveries: u32 = 0;
    /// The queue that receives messages past their maximum deliveries: a queue like any other,
    /// of the same payload type, created (with this queue's capacity, size and durability) when
    /// the first message moves there.
    dead_letter(queue: &str) -> dead_letter: Option<String> = None
        => Some(queue.to_string());
    /// What a producer does when the queue is full (default [`Policy::Block`] for 1 s).
    policy(policy: Policy) -> full: Policy = Policy::Block(Duration::from_secs(1));
    /// Keeps the queue in files under `dir` (created 0700) instead of shared memory: messages
    /// survive the exit or SIGKILL of every process, and a machine crash as [`SyncPolicy`] says.
    /// `dir` must be on a real file system (not tmpfs) for the data to outlive a reboot.
    durable(dir: impl Into<PathBuf>) -> durable: Option<PathBuf> = None => Some(dir.into());
    /// When a durable queue's records reach the disk (default `Batch(10 ms)`); a producer's own
    /// choice.
    sync_policy(policy: SyncPolicy) -> sync: SyncPolicy
        = SyncPolicy::Batch(Duration::from_millis(10));
    /// Records per log segment file of a durable queue (default: as many as fill about 1 MiB,
    /// and at least the capacity). Acknowledged space is returned a whole segment file at a
    /// time: a file whose records are all acknowledged is reused as a segment ahead (two at
    /// most), or deleted. So the disk holds the unacknowledged backlog plus at most three
    /// segments.
    segment_records(n: u64) -> log_records: u64 = 0;
    /// How long a blocked `receive` or `send` spins before sleeping in the kernel (default
    /// 20 µs; zero sleeps at once).
    spin_before_sleep(spin: Duration) -> common.spin;
    /// Whether handles may create the queue (default), must find it, or must create it; see
    /// [`OpenMode`].
    open_mode(mode: OpenMode) -> common.mode;
    /// The local copy of a queue another host owns, kept by a network bridge: a producer
    /// opened with this marks the queue *forwarded* (layout word `forwarded`), so that every
    /// other producer of it sends through its outbox ([`layout::outbox_name`]) and waits for
    /// the owner's acceptance ([`Producer::send`]); this producer itself writes the queue (the
    /// owner's messages, for the consumers here).
    #[doc(hidden)]
    forwarded_copy(yes: bool) -> relay: bool = false;
} }

impl<P: Payload + ?Sized> QueueBuilder<P> {
    /// Fixes capacity, sizes, participants and the payload type to `shape`
    /// (`Node::queue_shaped`).
    pub(crate) fn with_shape(mut self, shape: &crate::Shape) -> Self {
        self.options.common.shape = Some(Arc::new(shape.clone()));
        self
    }

    fn layout(&self) -> Result<QueueLayout, OpenError> {
        let o = &self.options;
        if let Some(s) = &o.common.shape {
            let f = QueueLayout::from_header(&s.header, s.header.segment_len as usize)?;
            let records = if o.log_records == 0 {
                f.log_records.max(f.capacity as u64)
            } else {
                o.log_records
            };
            let ms = o.visibility.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
            return QueueLayout::new(
                f.capacity,
                f.max_message_size,
                f.producers,
                f.consumers,
                o.durable.is_some(),
                f.kind,
                o.max_deliveries,
                ms,
                records,
            );
        }
        let max_align = if o.durable.is_some() {
            crate::log::RECORD_ALIGN
        } else {
            MAX_ALIGN
        };
        let size = payload_size::<P>(o.max_message_size, max_align)?;
        if o.prefetch == 0 {
            return Err(OpenError::InvalidConfig("a prefetch of 0".into()));
        }
        if let Some(d) = &o.dead_letter {
            crate::shm::validate_name(d)?;
            if *d == o.common.name {
                return Err(OpenError::InvalidConfig(
                    "a queue cannot be its own dead-letter queue".into(),
                ));
            }
        }
        if let SyncPolicy::Batch(d) = o.sync {
            if d.is_zero() {
                return Err(OpenError::InvalidConfig(
                    "a zero batch interval: use SyncPolicy::Always".into(),
                ));
            }
        }
        let ms = o.visibility.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let records = if o.log_records == 0 {
            // About 1 MiB per segment file, and at least the capacity: small enough that the
            // few files in rotation stay in the CPU caches, large enough that moving to the
            // next segment (a rename and an open) is rare.
            let stride = LogShape {
                max_payload: size,
                records: 1,
            }
            .stride();
            ((DEFAULT_SEGMENT_BYTES / stride) as u64)
                .max(o.capacity as u64)
                .min(1 << 24)
        } else {
            o.log_records
        };
        QueueLayout::new(
            o.capacity,
            size,
            o.max_producers,
            o.max_consumers,
            o.durable.is_some(),
            P::kind(),
            o.max_deliveries,
            ms,
            records,
        )
    }

    fn open(&self, role: Role) -> Result<(Arc<QueueShared>, usize), OpenError> {
        let o = &self.options;
        let shown = |l: &QueueLayout| match role {
            Role::Producer => layout::sync_code(l.durable, o.sync),
            Role::Consumer => o.prefetch.min(l.capacity) as u64,
        };
        let layout = self.layout()?;
        let ty = match &o.common.shape {
            Some(s) => s.header.ty.clone(),
            None => P::identity(layout.max_message_size),
        };
        crate::shm::validate_name(&o.common.name)?;
        let (backing, log) = match &o.durable {
            None => (o.common.backing.clone(), None),
            Some(dir) => {
                let root = Root::open(dir.clone())?;
                // The log is opened once the ring's shape is known (the joined ring's own, not
                // this handle's options): see `LogDir`.
                let log = LogDir::new(dir.join(format!("queue_{}.log", o.common.name)));
                (Backing::Shm(root), Some(log))
            }
        };
        let spec = Spec {
            layout: &layout,
            ty: &ty,
            dlq: o.dead_letter.as_deref(),
            log: log.as_ref(),
            forwarded: o.relay && role == Role::Producer,
        };
        QueueShared::open(&backing, &o.common.name, &spec, role, shown, o.common.mode)
    }

    /// Opens (or creates, or recovers) the queue and registers a producer.
    ///
    /// A queue another host owns (its local copy, which a network bridge keeps) is sent to
    /// through the bridge's outbox: see [`Producer::send`].
    pub fn producer(&self) -> Result<Producer<P>, OpenError> {
        let (shared, index) = self.open(Role::Producer)?;
        let o = &self.options;
        let opener = if o.relay {
            // A segment this open created has the word already (set before it was published);
            // one that existed (made by a local handle first) gets it now: messages sent before
            // stay local. Release: the bridge made the outbox before; a producer that sees the
            // word (Acquire) finds it.
            shared
                .region()
                .u64_at(layout::CTRL_FORWARDED)
                .store(1, crate::loom::atomic::Ordering::Release);
            None
        } else {
            layout::outbox_name(&o.common.name).map(|name| {
                let mut b = self.clone();
                b.options.common.name = name;
                // Made here if the bridge's is gone (it died, and its outbox with it, or it
                // has not started yet): the message waits there for a bridge to forward it.
                b.options.common.mode = OpenMode::OpenOrCreate;
                // An outbox message leaves only when the owner accepted it: never dropped or
                // dead-lettered (a producer must not take that for an acceptance), and not
                // taken back while one forwarding attempt may still be answered.
                b.options.max_deliveries = 0;
                b.options.dead_letter = None;
                b.options.visibility = layout::OUTBOX_VISIBILITY;
                let opener: ProducerOpener = Box::new(move || {
                    // The outbox has the queue's shape: what opened the queue opens it.
                    let (s, i) = b.open(Role::Producer)?;
                    let o = &b.options;
                    Ok(ProducerCore::new(s, i, o.full, o.common.spin, o.sync))
                });
                opener
            })
        };
        Ok(Producer::new(
            ProducerCore::new(shared, index, o.full, o.common.spin, o.sync),
            opener,
        ))
    }

    /// Opens (or creates, or recovers) the queue and registers a consumer.
    pub fn consumer(&self) -> Result<Consumer<P>, OpenError> {
        let (shared, index) = self.open(Role::Consumer)?;
        let dlq = shared.dead_letter_name().map(|name| {
            let mut b = self.clone();
            let o = &mut b.options;
            o.common.name = name;
            o.dead_letter = None;
            o.max_deliveries = 0;
            o.common.mode = OpenMode::OpenOrCreate;
            o.capacity = shared.layout.capacity;
            o.max_message_size = Some(shared.layout.max_message_size);
            o.full = Policy::Fail;
            let opener: DlqOpener = Box::new(move || {
                let (s, i) = b.open(Role::Producer)?;
                let o = &b.options;
                Ok(ProducerCore::new(s, i, o.full, o.common.spin, o.sync))
            });
            opener
        });
        let o = &self.options;
        let prefetch = o.prefetch.min(shared.layout.capacity);
        let batch = match o.claim_batch {
            0 => prefetch,
            n => n.min(prefetch),
        };
        Ok(Consumer::new(ConsumerCore::new(
            shared,
            index,
            prefetch,
            batch,
            o.common.spin,
            dlq,
        )))
    }
}

/// Discovery: waiting without a thread for the queue to be created ([`crate::discovery`]).
impl<P: Payload + ?Sized> QueueBuilder<P> {
    /// Waits until the queue exists (as [`OpenMode::OpenExisting`] finds it), then registers a
    /// producer. Checked at once, then at least every [`crate::discovery::DISCOVERY_NAP`].
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<u64>("doc-producer-when-found");
    /// let waiting = queue.producer_when_found();
    /// let _creator = queue.consumer()?; // another process would create it
    /// let _producer = futures::executor::block_on(waiting)?;
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn producer_when_found(&self) -> Found<QueueBuilder<P>, Producer<P>> {
        Found::new(
            self.clone().open_mode(OpenMode::OpenExisting),
            QueueBuilder::producer,
        )
    }

    /// Waits until the queue exists (as [`OpenMode::OpenExisting`] finds it), then registers a
    /// consumer. Checked at once, then at least every [`crate::discovery::DISCOVERY_NAP`].
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<u64>("doc-consumer-when-found");
    /// let waiting = queue.consumer_when_found();
    /// let _creator = queue.producer()?; // another process would create it
    /// let _consumer = futures::executor::block_on(waiting)?;
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn consumer_when_found(&self) -> Found<QueueBuilder<P>, Consumer<P>> {
        Found::new(
            self.clone().open_mode(OpenMode::OpenExisting),
            QueueBuilder::consumer,
        )
    }
}

#[cfg(test)]
mod tests {
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_are_send() {
        assert_send::<super::Producer<u64>>();
        assert_send::<super::Consumer<u64>>();
    }

    fn is_send<T: Send>(_: &T) {}

    /// The room waits can be awaited in a task of a multi-threaded runtime, every payload kind.
    #[test]
    fn room_futures_are_send() {
        #[derive(rkyv::Archive, rkyv::Serialize)]
        struct Doc {
            text: String,
        }
        let node = crate::Node::in_process();
        let mut p = node.queue::<u64>("send-room").producer().unwrap();
        is_send(&p.send_async(&1));
        is_send(&p.loan_async());
        let mut p = node.queue_bytes("send-room-bytes").producer().unwrap();
        is_send(&p.send_async(b"x"));
        is_send(&p.loan_async(1));
        let topic = node.topic::<u64>("send-room");
        let mut p = topic.publisher().unwrap();
        is_send(&p.send_copy_async(&1));
        is_send(&p.loan_async());
        let mut p = node.topic_bytes("send-room-bytes").publisher().unwrap();
        is_send(&p.send_copy_async(b"x"));
        is_send(&p.loan_async(1));
        let mut p = node.topic_rkyv::<Doc>("send-room-rkyv").publisher().unwrap();
        is_send(&p.send_async(&Doc { text: "x".into() }));
    }

    /// `SyncPolicy::Always` when the disk fails a sync: the send fails, and the message is
    /// delivered neither now nor after a machine restart (the ring rebuilt from the log).
    #[test]
    fn a_send_whose_sync_failed_is_never_delivered_not_even_after_a_restart() {
        use crate::log::segment_fail_syncs_for_test as fail_syncs;
        use crate::{Node, SendError, SyncPolicy};
        use std::sync::atomic::Ordering;

        let dir = std::env::temp_dir().join(format!("ringbus-syncfail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let node = Node::with_root(dir.join("shm")).unwrap();
        let q = node
            .queue::<u64>("syncfail")
            .capacity(8)
            .durable(dir.join("data"))
            .sync_policy(SyncPolicy::Always);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(&1).unwrap();
        fail_syncs(1);
        assert!(matches!(p.send(&2), Err(SendError::Storage(_))));
        p.send(&3).unwrap();
        // Held (not acknowledged) until the restart below.
        let held: Vec<_> = std::iter::from_fn(|| c.try_receive().ok()).collect();
        assert_eq!(held.iter().map(|d| **d).collect::<Vec<_>>(), [1, 3]);
        drop(held);
        drop((p, c));

        // A restart: the boot word no longer matches, so the ring is rebuilt from the log.
        let ring = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("data").join("queue_syncfail"))
            .unwrap();
        let map = memmap2::MmapOptions::new().map_raw(&ring).unwrap();
        let region = crate::shm::Region::from_map(map);
        region
            .u64_at(super::layout::CTRL_BOOT)
            .fetch_xor(1, Ordering::Relaxed);
        drop(region);
        let c = q.consumer().unwrap();
        let got: Vec<u64> = std::iter::from_fn(|| {
            let d = c.try_receive().ok()?;
            let v = *d;
            d.ack().unwrap();
            Some(v)
        })
        .collect();
        assert_eq!(got, [1, 3]);
        assert_eq!(c.stats().recoveries, 1);
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
