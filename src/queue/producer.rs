//! The sending side of a queue.
//!
//! Sending a message: reserve the next position under the append lock (a few stores: check the
//! slot is free for this lap, mark it WRITING by us, move the tail), fill the payload in place
//! (the slot, or the log record of a durable queue), then publish it with one Release store of
//! READY. Reservations are in tail order, so each producer's messages are in the queue in the
//! order it sent them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::layout::Role;
use super::layout::*;
use super::shared::QueueShared;
use super::Policy;
use crate::sync::doorbell::Bells;
use crate::discovery::PeerJoined;
use crate::error::{OpenError, SendError};
use crate::shm::entry::Tables;
use crate::log::{Flusher, LogSegment, SyncPolicy};
use crate::ring::work;
use crate::sync::waiter::Parking;
use crate::sync::{lock, ProcessId};
use crate::topic::{Bytes, Payload};

/// Sends messages to a queue. Made by [`crate::QueueBuilder::producer`].
///
/// ```
/// use ringbus::Node;
///
/// let node = Node::in_process();
/// let queue = node.queue::<u64>("doc-producer");
/// let mut producer = queue.producer()?;
/// let consumer = queue.consumer()?;
/// producer.send(&42)?;
/// let mut loan = producer.loan()?; // a slot in shared memory, written in place
/// *loan = 43;
/// loan.send()?;
/// assert_eq!(*consumer.try_receive()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Producer<P: Payload + ?Sized> {
    core: ProducerCore,
    /// A queue owned by another host: the outbox's producer, once opened.
    outbox: Option<ProducerCore>,
    /// Opens the outbox (None: this producer is the bridge's own, which writes the queue).
    opener: Option<super::ProducerOpener>,
    /// How long a forwarded send waits for the owner's acceptance.
    confirm: Duration,
    _p: PhantomData<fn(&P)>,
}

/// Durable queues: the log segment being written, and the sync policy's state.
struct Durable {
    seg: Option<Arc<LogSegment>>,
    policy: SyncPolicy,
    flusher: Option<Flusher>,
}

/// The payload-independent producer.
pub(crate) struct ProducerCore {
    pub(crate) shared: Arc<QueueShared>,
    index: usize,
    me: u64,
    full: Policy,
    spin: Duration,
    durable: Option<Durable>,
    /// How far past the tail a full queue's producer looks for room (see `wait_for_room`).
    batch_room: u64,
    /// Bytes of a position's payload area: the ring's message size, bounded by the log's
    /// record size for durable queues (the two agree by construction; every pointer handed out
    /// is bounded by both all the same).
    max_payload: usize,
    /// Remembers an append lock found stuck (see [`lock::Waiter`]).
    append_waiter: lock::Waiter,
    sent: u64,
    last_written: Option<u64>,
}

impl ProducerCore {
    pub(crate) fn new(
        shared: Arc<QueueShared>,
        index: usize,
        full: Policy,
        spin: Duration,
        sync: SyncPolicy,
    ) -> ProducerCore {
        let durable = shared.layout.durable.then(|| Durable {
            seg: None,
            policy: sync,
            flusher: match sync {
                SyncPolicy::Batch(d) => Some(Flusher::start(d)),
                _ => None,
            },
        });
        let max_payload = shared
            .log
            .as_ref()
            .map_or(shared.layout.max_message_size, |log| {
                shared.layout.max_message_size.min(log.shape().max_payload)
            });
        ProducerCore {
            batch_room: (shared.layout.capacity as u64 / 8).min(32),
            max_payload,
            append_waiter: lock::Waiter::default(),
            shared,
            index,
            me: ProcessId::current().pack(),
            full,
            spin,
            durable,
            sent: 0,
            last_written: None,
        }
    }

    /// Reserves the next position, waiting for room as the full policy says.
    pub(crate) fn reserve(&mut self) -> Result<u64, SendError> {
        if let Some(pos) = self.try_reserve()? {
            return self.prepare(pos);
        }
        let timeout = match self.full {
            Policy::Fail => return Err(SendError::Full),
            Policy::Block(t) => t,
        };
        let pos = self.wait_for_room(timeout)?;
        self.prepare(pos)
    }

    /// Reserves the next position if there is room (`None`: full). [`SendError::Busy`] if the
    /// append lock stays held by a live process (stopped inside it, or a corrupt word).
    #[inline]
    fn try_reserve(&self) -> Result<Option<u64>, SendError> {
        let r = self.shared.region();
        let append = r.u64_at(CTRL_APPEND);
        if !self.append_waiter.lock(append, self.me) {
            return Err(SendError::Busy);
        }
        let reserved = work::reserve(&self.shared.cells(), self.index);
        lock::unlock(append);
        Ok(reserved)
    }

    /// Durable queues: maps (creating if needed) the log segment of `pos`.
    #[inline]
    fn prepare(&mut self, pos: u64) -> Result<u64, SendError> {
        let Some(d) = self.durable.as_mut() else {
            return Ok(pos);
        };
        if d.seg.as_ref().is_some_and(|s| s.contains(pos)) {
            return Ok(pos);
        }
        let log = self.shared.log.as_ref().expect("durable queues have a log");
        match log.segment(pos, true) {
            Ok(seg) => {
                if let Some(f) = &d.flusher {
                    f.moved_to(&seg);
                }
                // Older segments are done with here: drop the log's cached mappings of them.
                log.forget_below(seg.base());
                d.seg = Some(seg);
                Ok(pos)
            }
            Err(e) => {
                self.abandon(pos);
                Err(SendError::Storage(e.to_string()))
            }
        }
    }

    #[cold]
    fn wait_for_room(&mut self, timeout: Duration) -> Result<u64, SendError> {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut next_reclaim = start + lock::CHECK_INTERVAL;
        let (mut polls, mut backoff) = (0u32, 1u32);
        let oversubscribed = self.shared.oversubscribed();
        loop {
            // Look at the slot of the tail without the lock, and back off between looks: while
            // the queue is full, that slot holds the oldest message, whose line the consumer
            // acknowledging it needs.
            // Wait for a batch of room rather than one slot: the consumers acknowledge the
            // next few slots undisturbed, then this producer fills them in a row. Every few
            // polls the tail itself is tried, in case a batch never comes (messages held).
            if self.room_at_tail(self.batch_room) || polls % 8 == 7 {
                if let Some(pos) = self.try_reserve()? {
                    return Ok(pos);
                }
            }
            for _ in 0..backoff {
                std::hint::spin_loop();
            }
            backoff = (backoff * 2).min(64);
            polls += 1;
            if polls % 16 != 0 {
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(SendError::Timeout(timeout));
            }
            if now - start < self.spin {
                if oversubscribed {
                    // With more participants than CPUs, the consumer we wait for may need our
                    // CPU: let it run.
                    std::thread::yield_now();
                }
                continue;
            }
            let nap = deadline.map_or(lock::CHECK_INTERVAL, |d| {
                (d - now).min(lock::CHECK_INTERVAL)
            });
            // Sleep until a slot is freed (the room doorbell: an acknowledger frees, then rings),
            // rechecking the tail once announced.
            let shared = &self.shared;
            let reserved = shared.layout.room_bell(shared.region()).sleep_unless(
                self.index,
                nap,
                || match self.try_reserve() {
                    Ok(None) => None,
                    got => Some(got),
                },
            );
            if let Some(got) = reserved {
                return got.map(|pos| pos.expect("not None"));
            }
            let now = Instant::now();
            if now >= next_reclaim {
                // A consumer that died holding the oldest message frees it only once reclaimed.
                next_reclaim = now + lock::CHECK_INTERVAL;
                self.shared.reclaim_dead();
            }
        }
    }

    /// Whether the consumers' head says there is room for `ahead` + 1 messages past the tail (a
    /// hint: Relaxed loads, no lock). The head is moved by claims, once per batch, so polling it
    /// leaves the slots' lines alone: the acknowledging consumer needs them.
    #[inline]
    fn room_at_tail(&self, ahead: u64) -> bool {
        let r = self.shared.region();
        // Relaxed: a hint; `try_reserve` decides under the lock.
        let tail = r.u64_at(CTRL_TAIL).load(Ordering::Relaxed);
        let head = r.u64_at(CTRL_HEAD).load(Ordering::Relaxed);
        head.wrapping_add(self.shared.layout.capacity as u64) > tail.wrapping_add(ahead)
    }

    /// The payload area of reserved position `pos` ([`ProducerCore::max_payload`] bytes;
    /// 32-aligned in memory, 16-aligned in a log).
    #[inline]
    pub(crate) fn payload(&self, pos: u64) -> *mut u8 {
        let l = &self.shared.layout;
        match &self.durable {
            Some(d) => d
                .seg
                .as_ref()
                .expect("prepare mapped the segment")
                .payload_ptr(pos, self.max_payload),
            None => self
                .shared
                .region()
                .ptr(l.slot(pos) + SLOT_HEADER, self.max_payload),
        }
    }

    /// Bytes of a reserved position's payload area: the most a message may hold.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Publishes the `len` bytes written at reserved position `pos`.
    #[inline]
    pub(crate) fn publish(&mut self, pos: u64, len: usize) -> Result<u64, SendError> {
        let l = &self.shared.layout;
        let r = self.shared.region();
        if let Some(d) = &self.durable {
            let seg = d.seg.as_ref().expect("prepared");
            seg.commit(pos, len);
            if pos == seg.base() + (seg.last() - seg.base()) / 2 {
                self.next_segment(seg.last() + 1);
            }
            if d.policy == SyncPolicy::Always {
                // On disk before anyone can see it: a send that fails delivers nothing, and
                // nothing delivered can be lost by a machine crash.
                if let Err(e) = seg.sync_covering(pos) {
                    // Unsealed, so that a later restart's rebuild does not resurrect it either,
                    // and the unseal synced: the failed sync may have written the sealed record.
                    // If the disk refuses that sync too, a machine crash may bring the message
                    // back (see `SyncPolicy::Always`).
                    seg.unseal(pos);
                    let _ = seg.sync_covering(pos);
                    self.abandon(pos);
                    return Err(SendError::Storage(e.to_string()));
                }
            }
        }
        // Relaxed: published by the ring's Release CAS to READY below.
        r.u64_at(l.slot(pos) + SLOT_LEN)
            .store(len as u64, Ordering::Relaxed);
        if work::publish(&self.shared.cells(), pos, self.index).is_err() {
            return Err(self.reclaimed(pos));
        }
        self.sent += 1;
        // The news doorbell: published, then ring.
        self.shared.ring_news();
        self.last_written = Some(pos);
        if let Some(Durable {
            flusher: Some(f), ..
        }) = &self.durable
        {
            f.written(pos);
        }
        Ok(pos)
    }

    /// Half way through a segment: maps the next one now (a consumer usually made it from a
    /// file it reused), or has it created in the background (milliseconds), so that no send
    /// waits for that.
    #[cold]
    fn next_segment(&self, next: u64) {
        let log = self.shared.log.as_ref().expect("durable queues have a log");
        if !matches!(log.segment(next, false), Err(OpenError::NotFound(_))) {
            return;
        }
        let shared = self.shared.clone();
        let _ = std::thread::Builder::new()
            .name("ringbus-segment".into())
            .spawn(move || {
                let log = shared.log.as_ref().expect("durable queues have a log");
                // Relaxed: a hint. A thread that ran late must not bring back a segment the
                // consumers are already past (the next removal would take it again).
                let head = || shared.region().u64_at(CTRL_HEAD).load(Ordering::Relaxed);
                let end = next + log.shape().records;
                if end > head() {
                    let _ = log.segment(next, true);
                    // The head may have passed it while we created it, and the consumer that
                    // moved the head may have returned the space below already: do it for
                    // this file (its records are all acknowledged).
                    let now = head();
                    if end <= now {
                        log.remove_below(now);
                    }
                }
            });
    }

    /// The position we were writing was passed over by others (see [`SendError::Reclaimed`]):
    /// a durable record already sealed is unsealed, so no rebuild delivers it.
    #[cold]
    fn reclaimed(&mut self, pos: u64) -> SendError {
        if let Some(seg) = self.durable.as_ref().and_then(|d| d.seg.as_ref()) {
            // The record of `pos` is still ours alone: log offsets are never reused, and no
            // reader reads a position that was never published.
            seg.unseal(pos);
        }
        SendError::Reclaimed
    }

    /// A forwarded queue's send (this core is the outbox's): waits until the message published
    /// at `pos` is acknowledged, which the bridge does once the owning host accepted it, or
    /// `wait` passes ([`SendError::Unconfirmed`]). Sleeps on the room doorbell, which every
    /// acknowledgement that frees a slot rings; rechecks at least every
    /// [`lock::CHECK_INTERVAL`] (an acknowledgement that leaves stale readers does not ring).
    #[cold]
    pub(crate) fn confirm(&mut self, pos: u64, wait: Duration) -> Result<(), SendError> {
        let shared = &self.shared;
        let acked = || work::acknowledged(&shared.cells(), pos).then_some(());
        let deadline = Instant::now().checked_add(wait);
        loop {
            if acked().is_some() {
                return Ok(());
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(SendError::Unconfirmed(wait));
            }
            let nap = deadline.map_or(lock::CHECK_INTERVAL, |d| {
                (d - now).min(lock::CHECK_INTERVAL)
            });
            let bell = shared.layout.room_bell(shared.region());
            if bell.sleep_unless(self.index, nap, acked).is_some() {
                return Ok(());
            }
        }
    }

    /// An async wait's park on the room doorbell (bit: this producer's index), `recheck`ing
    /// once armed ([`Parking::park`]).
    fn park_on_room<T>(
        &self,
        parking: &mut Parking,
        nap: Duration,
        waker: &Waker,
        recheck: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        let shared = &self.shared;
        let keep = || shared.clone() as Arc<dyn Send + Sync>;
        parking.park(
            shared.layout.room_bell(shared.region()),
            self.index,
            nap,
            keep,
            waker,
            recheck,
        )
    }

    /// Gives up reserved position `pos` without a message: consumers skip it.
    pub(crate) fn abandon(&mut self, pos: u64) {
        work::abandon(&self.shared.cells(), pos, self.index);
        // A consumer waiting at this position passes it now.
        self.shared.ring_news();
    }

    /// Reserves, encodes with `encode` into the payload area, and publishes.
    #[inline]
    pub(crate) fn send_with(
        &mut self,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, SendError>,
    ) -> Result<u64, SendError> {
        let pos = self.reserve()?;
        self.fill(pos, encode)
    }

    /// Encodes with `encode` into the payload area of reserved position `pos`, and publishes
    /// (or gives the position up if encoding fails).
    #[inline]
    fn fill(
        &mut self,
        pos: u64,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, SendError>,
    ) -> Result<u64, SendError> {
        let max = self.max_payload;
        // SAFETY: `payload` is valid for `max` bytes; position `pos` is ours (WRITING) until we
        // publish it, so nobody else reads or writes these bytes meanwhile; the slice does not
        // outlive this call.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.payload(pos), max) };
        match encode(buf) {
            Ok(len) if len <= max => self.publish(pos, len),
            Ok(len) => {
                self.abandon(pos);
                Err(SendError::TooLarge { len, max })
            }
            Err(e) => {
                self.abandon(pos);
                Err(e)
            }
        }
    }
}

/// The room wait of every async send of a producer ([`Producer::send_async`],
/// `loan_async`): [`ProducerCore::reserve`] as a future. It reserves at once when it can; a
/// full queue under [`Policy::Fail`] is [`SendError::Full`] at once; under [`Policy::Block`]
/// it arms the room doorbell (bit: the producer's index), rechecks by trying to reserve, and
/// registers with the process's waiter until a consumer frees a slot and rings, or its nap ends.
///
/// As `wait_for_room`: its own deadline, from its first wait, ends it with
/// [`SendError::Timeout`]; it naps at most [`lock::CHECK_INTERVAL`] (and never past the
/// deadline), and reclaims dead participants once per interval (a consumer that died holding
/// the oldest message frees it only then). It first spins for the producer's `spin` without holding
/// its thread (`Parking`). A durable queue's segment is mapped (made, if new) in the poll that
/// reserves, as `reserve` does. Cancel-safe: the position is reserved by the poll that returns
/// it; dropped before, it holds no position and no registration.
struct Room<'a> {
    core: &'a mut ProducerCore,
    /// Set at the first wait: the deadline (None: beyond what `Instant` holds) and the next
    /// reclaim.
    waiting: Option<(Option<Instant>, Instant)>,
    parking: Parking,
    /// Polls made while spinning: as in `wait_for_room`, the tail itself is tried only when a
    /// batch of room shows or on every eighth poll, so a spinning future does not take the
    /// append lock (and the line of the slot its consumers acknowledge) on every poll.
    polls: u32,
    /// Returned: the bit is disarmed already.
    done: bool,
}

impl<'a> Room<'a> {
    fn new(core: &'a mut ProducerCore) -> Self {
        Room {
            parking: Parking::new(core.spin),
            core,
            waiting: None,
            polls: 0,
            done: false,
        }
    }

    /// Reserves, or parks (`None`: pending).
    fn step(&mut self, waker: &Waker) -> Option<Result<u64, SendError>> {
        let core = &mut *self.core;
        // The first poll, a poll after a wake (parked) and the gated spin polls try the tail.
        let try_tail = self.polls == 0
            || self.parking.is_armed()
            || core.room_at_tail(core.batch_room)
            || self.polls % 8 == 7;
        self.polls = self.polls.wrapping_add(1);
        let first = if try_tail {
            core.try_reserve()
        } else {
            Ok(None)
        };
        let reserved = match first {
            Ok(None) => {
                let timeout = match core.full {
                    Policy::Fail => return Some(Err(SendError::Full)),
                    Policy::Block(t) => t,
                };
                let now = Instant::now();
                let (deadline, next_reclaim) = self
                    .waiting
                    .get_or_insert_with(|| (now.checked_add(timeout), now + lock::CHECK_INTERVAL));
                if deadline.is_some_and(|d| now >= d) {
                    return Some(Err(SendError::Timeout(timeout)));
                }
                if now >= *next_reclaim {
                    // A consumer that died holding the oldest message frees it only once
                    // reclaimed (the recheck below tries the tail again).
                    *next_reclaim = now + lock::CHECK_INTERVAL;
                    core.shared.reclaim_dead();
                }
                let nap = deadline.map_or(lock::CHECK_INTERVAL, |d| {
                    (d - now).min(lock::CHECK_INTERVAL)
                });
                let core = &*core;
                // The producer half of the room handshake, as `wait_for_room`'s
                // `sleep_unless`, with the waiter watching the word instead of a blocked
                // thread: a consumer frees a slot, then rings.
                core.park_on_room(
                    &mut self.parking,
                    nap,
                    waker,
                    || match core.try_reserve() {
                        Ok(None) => None,
                        got => Some(got),
                    },
                )?
            }
            got => got,
        };
        Some(reserved.and_then(|pos| core.prepare(pos.expect("not None"))))
    }
}

/// The `Future` and `Drop` of a future that waits on the room doorbell (a `step` returning
/// `None` while pending; fields `core`, `parking`, `done`): it disarms its bit once it returns
/// or is dropped.
macro_rules! room_bell_future {
    ($name:ident, $out:ty) => {
        impl Future for $name<'_> {
            type Output = $out;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let this = self.get_mut();
                assert!(!this.done, concat!(stringify!($name), " polled after it returned"));
                match this.step(cx.waker()) {
                    None => Poll::Pending,
                    Some(got) => {
                        this.done = true;
                        let shared = &this.core.shared;
                        this.parking
                            .finish(shared.layout.room_bell(shared.region()), this.core.index);
                        Poll::Ready(got)
                    }
                }
            }
        }

        impl Drop for $name<'_> {
            fn drop(&mut self) {
                if !self.done {
                    let shared = &self.core.shared;
                    self.parking
                        .finish(shared.layout.room_bell(shared.region()), self.core.index);
                }
            }
        }
    };
}

room_bell_future!(Room, Result<u64, SendError>);

/// [`ProducerCore::confirm`] as a future ([`Producer::send_async`] of a forwarded queue):
/// parks on the room doorbell in the process's waiter until the message is acknowledged, or
/// its wait (from the first poll) passes. Dropped, it unregisters; the message stays sent.
struct Confirm<'a> {
    core: &'a ProducerCore,
    pos: u64,
    wait: Duration,
    /// Set at the first poll (None inside: beyond what `Instant` holds).
    deadline: Option<Option<Instant>>,
    parking: Parking,
    done: bool,
}

impl<'a> Confirm<'a> {
    fn new(core: &'a ProducerCore, pos: u64, wait: Duration) -> Self {
        Confirm {
            core,
            pos,
            wait,
            deadline: None,
            // No spin: the owner is another host, a network round trip away.
            parking: Parking::new(Duration::ZERO),
            done: false,
        }
    }

    fn step(&mut self, waker: &Waker) -> Option<Result<(), SendError>> {
        let (core, pos) = (self.core, self.pos);
        let acked = || work::acknowledged(&core.shared.cells(), pos).then_some(Ok(()));
        if let Some(done) = acked() {
            return Some(done);
        }
        let now = Instant::now();
        let wait = self.wait;
        let deadline = *self.deadline.get_or_insert_with(|| now.checked_add(wait));
        if deadline.is_some_and(|d| now >= d) {
            return Some(Err(SendError::Unconfirmed(wait)));
        }
        let nap = deadline.map_or(lock::CHECK_INTERVAL, |d| {
            (d - now).min(lock::CHECK_INTERVAL)
        });
        core.park_on_room(&mut self.parking, nap, waker, acked)
    }
}

room_bell_future!(Confirm, Result<(), SendError>);

impl Drop for ProducerCore {
    fn drop(&mut self) {
        if let Some(d) = self.durable.as_mut() {
            d.flusher.take();
            if d.policy != SyncPolicy::Never {
                if let (Some(seg), Some(pos)) = (&d.seg, self.last_written) {
                    if seg.contains(pos) {
                        let _ = seg.sync_covering(pos);
                    }
                }
            }
        }
        self.shared.leave(Role::Producer, self.index);
    }
}

impl<P: Payload + ?Sized> std::fmt::Debug for Producer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.core.shared.name)
            .field("index", &self.core.index)
            .field("sent", &self.core.sent)
            .finish()
    }
}

impl<P: Payload + ?Sized> Producer<P> {
    pub(crate) fn new(core: ProducerCore, opener: Option<super::ProducerOpener>) -> Self {
        let confirm = match core.full {
            Policy::Block(t) => t,
            Policy::Fail => Duration::from_secs(1),
        };
        Producer {
            core,
            outbox: None,
            opener,
            confirm,
            _p: PhantomData,
        }
    }

    /// Whether this producer's sends go through the outbox of a queue another host owns
    /// (opening the outbox the first time the queue says so). One Acquire load per send on a
    /// line written once.
    #[inline]
    fn forwarding(&mut self) -> Result<bool, SendError> {
        if self.outbox.is_some() {
            return Ok(true);
        }
        if self.opener.is_none() {
            return Ok(false);
        }
        // Acquire: pairs with the bridge's Release store, made after it created the outbox.
        let word = self.core.shared.region().u64_at(CTRL_FORWARDED);
        if word.load(Ordering::Acquire) == 0 {
            return Ok(false);
        }
        self.open_outbox()
    }

    #[cold]
    fn open_outbox(&mut self) -> Result<bool, SendError> {
        let open = self.opener.as_ref().expect("checked by the caller");
        let outbox = open().map_err(|e| SendError::NoBridge(e.to_string()))?;
        self.outbox = Some(outbox);
        Ok(true)
    }

    /// The producer core a send goes to (the outbox's when forwarding).
    #[inline]
    fn target(&mut self, forwarding: bool) -> &mut ProducerCore {
        match (forwarding, self.outbox.as_mut()) {
            (true, Some(outbox)) => outbox,
            _ => &mut self.core,
        }
    }

    /// Whether the message this producer sent at `position` has left the queue:
    /// acknowledged by a consumer (or dropped, or moved to the dead-letter queue, after its
    /// maximum deliveries). For a position this producer did not send, the answer means
    /// nothing. What a network bridge asks to tell the owning host that a message it relayed
    /// was acknowledged here.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<u64>("doc-producer-acknowledged");
    /// let mut producer = queue.producer()?;
    /// let consumer = queue.consumer()?;
    /// let at = producer.send(&5)?;
    /// assert!(!producer.acknowledged(at));
    /// consumer.try_receive()?.ack()?;
    /// assert!(producer.acknowledged(at));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acknowledged(&self, position: u64) -> bool {
        work::acknowledged(&self.core.shared.cells(), position)
    }

    /// Whether the queue is the local copy of a queue another host owns, kept by a network
    /// bridge (`ringbus-zenoh`): then every send goes to the owner through the bridge, and
    /// returns once the owner accepted it ([`Producer::send`]).
    pub fn forwarded(&self) -> bool {
        // Relaxed: a report; sends load it with Acquire.
        self.core
            .shared
            .region()
            .u64_at(CTRL_FORWARDED)
            .load(Ordering::Relaxed)
            != 0
    }

    /// Messages sent to the queue that no consumer has claimed yet (a snapshot; messages
    /// handed back for redelivery are not counted).
    pub fn unclaimed(&self) -> u64 {
        let r = self.core.shared.region();
        // Relaxed: a snapshot, each word read once; the cursor never passes the tail.
        let cursor = r.u64_at(CTRL_CURSOR).load(Ordering::Relaxed);
        let tail = r.u64_at(CTRL_TAIL).load(Ordering::Relaxed);
        tail.saturating_sub(cursor)
    }

    /// Whether a live consumer is registered now.
    pub fn has_consumer(&self) -> bool {
        let shared = &*self.core.shared;
        shared.layout.table(Role::Consumer).any_live(shared.region())
    }

    /// Copies (or serialises) `input` into the queue. Returns the message's position: positions
    /// count every message sent to the queue, from 0.
    ///
    /// Errors: [`SendError::Full`] ([`Policy::Fail`]), [`SendError::Timeout`]
    /// ([`Policy::Block`]), [`SendError::TooLarge`], [`SendError::Serialize`], and for
    /// durable queues [`SendError::Storage`] (the log could not be written or synced: the
    /// message is not delivered).
    ///
    /// A queue another host owns ([`Producer::forwarded`]): the message goes to the outbox of
    /// the local bridge, which sends it to the owner; `send` returns once the owner accepted it
    /// (under its own durability), with the message's position in the outbox. If no
    /// acceptance comes within the `Block` timeout (1 s under `Fail`), it fails with
    /// [`SendError::Unconfirmed`]: the message may still arrive later. One message per
    /// producer is in flight at a time, so each producer's messages reach the owner in order.
    /// A loan's [`Loan::send`] waits the same way, blocking its thread (also for a loan made
    /// by `loan_async`).
    #[inline]
    pub fn send(&mut self, input: &P::Input) -> Result<u64, SendError> {
        let forwarding = self.forwarding()?;
        let pos = self.target(forwarding).send_with(|buf| P::encode(input, buf))?;
        if forwarding {
            let wait = self.confirm;
            self.target(true).confirm(pos, wait)?;
        }
        Ok(pos)
    }

    /// [`Producer::send`] without blocking a thread: under [`Policy::Block`], a future that
    /// waits for room in the process's waiter ([`crate::queue`] module doc, "Async") until a
    /// consumer frees a slot; under [`Policy::Fail`], ready at once. The message is encoded
    /// and published in the poll that reserves its position. The same errors as `send`:
    /// [`SendError::Timeout`] after the policy's timeout (counted from the future's first
    /// wait), [`SendError::Full`], [`SendError::TooLarge`], [`SendError::Serialize`],
    /// [`SendError::Busy`], and for durable queues [`SendError::Storage`]. A durable queue
    /// under [`SyncPolicy::Always`] syncs in that last poll, blocking the executor's thread for
    /// the `fsync`, as `send` blocks its caller. It first spins for the
    /// builder's `spin_before_sleep` without holding its thread (module doc, "Async").
    /// A poll takes the queue's append lock, held by any producer for a few stores: only if
    /// another process is stopped inside it (SIGSTOP, a debugger) does a poll block its thread,
    /// for up to 1 s, and then end with [`SendError::Busy`] (the next poll waits only a
    /// `CHECK_INTERVAL` on the same stuck holder), as `send` does.
    ///
    /// Cancel-safe: dropped before it completes, it sent nothing and holds no position and no
    /// registration; once it returns `Ok`, the message is in the queue.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<u64>("doc-producer-send-async").capacity(2);
    /// let mut producer = queue.producer()?;
    /// let consumer = queue.consumer()?;
    /// // The consumer takes its time: the producer's future waits for room.
    /// let worker = std::thread::spawn(move || {
    ///     let mut sum = 0;
    ///     for _ in 0..5 {
    ///         let job = consumer.receive().unwrap();
    ///         sum += *job;
    ///         job.ack().unwrap();
    ///     }
    ///     sum
    /// });
    /// futures::executor::block_on(async {
    ///     for n in 1..=5 {
    ///         producer.send_async(&n).await?;
    ///     }
    ///     Ok::<(), ringbus::SendError>(())
    /// })?;
    /// assert_eq!(worker.join().unwrap(), 15);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn send_async(&mut self, input: &P::Input) -> Result<u64, SendError> {
        let forwarding = self.forwarding()?;
        let wait = self.confirm;
        let core = self.target(forwarding);
        let pos = Room::new(core).await?;
        // In the poll that reserved `pos`: no await between the reservation and the send.
        let pos = core.fill(pos, |buf| P::encode(input, buf))?;
        if forwarding {
            Confirm::new(core, pos, wait).await?;
        }
        Ok(pos)
    }

    /// Waits without a thread until a live consumer is registered (at once if one is):
    /// discovery, for a producer that should not fill a queue nobody works on yet. Checked at
    /// least every [`crate::discovery::DISCOVERY_NAP`]; no deadline (compose it with the
    /// runtime's timeout).
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<u64>("doc-wait-for-consumer");
    /// let mut producer = queue.producer()?;
    /// let _consumer = queue.consumer()?; // another process would join
    /// futures::executor::block_on(producer.wait_for_consumer());
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn wait_for_consumer(&mut self) -> PeerJoined<'_> {
        let shared = &*self.core.shared;
        PeerJoined::new(move || {
            shared
                .layout
                .table(Role::Consumer)
                .any_live(shared.region())
        })
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.core.shared.name
    }

    /// Messages this producer has sent.
    pub fn sent(&self) -> u64 {
        self.core.sent
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.core.shared.layout.max_message_size
    }
}

/// A slot of the queue loaned to a producer: written in place, then [`Loan::send`].
/// Dropped unsent, it is given up (consumers skip it).
pub struct Loan<'a, P: Payload + ?Sized> {
    producer: &'a mut ProducerCore,
    /// A forwarded queue's loan: how long `send` waits for the owner's acceptance.
    confirm: Option<Duration>,
    pos: u64,
    len: usize,
    ptr: *mut u8,
    _p: PhantomData<fn(&P)>,
}

crate::debug_fields!(Loan<'_, P>: pos, len);

impl<P: Payload + ?Sized> Loan<'_, P> {
    /// Publishes the message; returns its position.
    pub fn send(self) -> Result<u64, SendError> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; the producer borrow moves out once.
        let producer = unsafe { std::ptr::read(&me.producer) };
        let pos = producer.publish(me.pos, me.len)?;
        if let Some(wait) = me.confirm {
            producer.confirm(pos, wait)?;
        }
        Ok(pos)
    }

    /// The loaned bytes (the payload area of the slot, `len` bytes), as every loan has them.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the reserved payload area is ours alone until published or given up, and ptr is
        // valid for len bytes (bounds-checked when the loan was made).
        unsafe { <crate::topic::Bytes as crate::topic::InPlace>::in_place_mut(self.ptr, self.len) }
    }
}

impl<P: Payload + ?Sized> Drop for Loan<'_, P> {
    fn drop(&mut self) {
        self.producer.abandon(self.pos);
    }
}

impl<P: Payload + ?Sized> Producer<P> {
    /// Reserves the next position and zeroes `len` bytes of its payload area for a loan;
    /// [`SendError::TooLarge`] if `len` exceeds the area (whatever the segment's header says
    /// of the payload type).
    fn zeroed_loan(&mut self, len: usize) -> Result<Loan<'_, P>, SendError> {
        let forwarding = self.forwarding()?;
        SendError::check_fits(len, self.target(forwarding).max_payload())?;
        let pos = self.target(forwarding).reserve()?;
        Ok(self.loan_at(forwarding, pos, len))
    }

    /// [`Producer::zeroed_loan`] waiting for room as [`Producer::send_async`] does.
    async fn zeroed_loan_async(&mut self, len: usize) -> Result<Loan<'_, P>, SendError> {
        let forwarding = self.forwarding()?;
        SendError::check_fits(len, self.target(forwarding).max_payload())?;
        let pos = Room::new(self.target(forwarding)).await?;
        // In the poll that reserved `pos`: a future dropped before holds no position.
        Ok(self.loan_at(forwarding, pos, len))
    }

    /// The loan of reserved position `pos` for `len` ≤ `max_payload` bytes, zeroed.
    fn loan_at(&mut self, forwarding: bool, pos: u64, len: usize) -> Loan<'_, P> {
        let confirm = forwarding.then_some(self.confirm);
        let producer = self.target(forwarding);
        let ptr = producer.payload(pos);
        // SAFETY: the payload area of our reserved position holds `max_payload` bytes, at
        // least `len` (the callers check it), and is ours alone until published or given up.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Loan {
            producer,
            confirm,
            pos,
            len,
            ptr,
            _p: PhantomData,
        }
    }
}

impl<T: bytemuck::Pod> Producer<T> {
    /// Loans the next slot, zeroed, to be written in place.
    pub fn loan(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.zeroed_loan(std::mem::size_of::<T>())
    }

    /// [`Producer::loan`] without blocking a thread: waits for room as
    /// [`Producer::send_async`] does, with the same errors (but `Serialize`) and cancel
    /// safety; the loan is made in the poll that reserves its slot (a loan dropped unsent gives
    /// the slot up: consumers skip it).
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<[u32; 4]>("doc-producer-loan-async");
    /// let mut producer = queue.producer()?;
    /// let consumer = queue.consumer()?;
    /// futures::executor::block_on(async {
    ///     let mut loan = producer.loan_async().await?;
    ///     loan[3] = 9;
    ///     loan.send()
    /// })?;
    /// assert_eq!(*consumer.try_receive()?, [0, 0, 0, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan_async(&mut self) -> impl Future<Output = Result<Loan<'_, T>, SendError>> + '_ {
        self.zeroed_loan_async(std::mem::size_of::<T>())
    }
}

impl Producer<Bytes> {
    /// Loans the next slot for a message of `len` bytes (zeroed), to be written in place.
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_, Bytes>, SendError> {
        self.zeroed_loan(len)
    }

    /// [`Producer::loan`] without blocking a thread: waits for room as
    /// [`Producer::send_async`] does, with the same errors (a `len` above the largest message
    /// is [`SendError::TooLarge`] at the first poll) and cancel safety.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue_bytes("doc-producer-bytes-loan-async");
    /// let mut producer = queue.producer()?;
    /// let consumer = queue.consumer()?;
    /// futures::executor::block_on(async {
    ///     let mut loan = producer.loan_async(3).await?;
    ///     loan.copy_from_slice(b"job");
    ///     loan.send()
    /// })?;
    /// assert_eq!(&*consumer.try_receive()?, b"job");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan_async(
        &mut self,
        len: usize,
    ) -> impl Future<Output = Result<Loan<'_, Bytes>, SendError>> + '_ {
        self.zeroed_loan_async(len)
    }
}

crate::topic::loan_views!(Loan<'_, P> writes P);

