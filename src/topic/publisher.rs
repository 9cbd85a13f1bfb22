//! The sending side of a topic: one single-writer ring per publisher.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::layout::{Policy, Role, FLAG_RELAYED, LOST_SHIFT, MAX_LOST};
use super::payload::{Bytes, Payload, Rkyv};
use super::shared::TopicShared;
use crate::sync::doorbell::Bells;
use crate::discovery::PeerJoined;
use crate::error::SendError;
use crate::shm::entry::Tables;
use crate::ring::broadcast::{Claim, Writer};
use crate::sync::doorbell::{Doorbell, ALL};
use crate::sync::waiter::Parking;

/// The first nap of a publisher waiting for room; it doubles up to [`CHECK_INTERVAL`].
const FIRST_NAP: Duration = Duration::from_micros(100);
/// A publisher whose pre-claim keeps failing looks for dead participants once per this many
/// commits.
const HOUSEKEEPING_EVERY: u32 = 4096;
use crate::sync::CHECK_INTERVAL;

/// Publishes messages of kind `P` on a topic. Created by [`crate::TopicBuilder::publisher`].
///
/// Each publisher owns one ring of the topic: its messages reach every subscriber in the order it
/// sent them. A publisher is `Send` but used by one thread at a time (`&mut self`).
pub struct Publisher<P: Payload + ?Sized> {
    shared: Arc<TopicShared>,
    index: usize,
    writer: Writer,
    timeout: Duration,
    /// Commits after which a lagging reader prevented the pre-claim (housekeeping counter).
    lagged_commits: u32,
    /// Last liveness check made from the non-blocking path.
    last_check: Option<Instant>,
    /// Wake-up system calls made for sleeping subscribers.
    wakes: u64,
    /// The position at which the writer last announced its skips (`announce_skips`).
    announced: u64,
    /// How long a send waiting for room spins before it sleeps (the builder's
    /// `spin_before_sleep`).
    spin: Duration,
    /// The flags word of every message it sends ([`crate::layout::topic::FLAG_RELAYED`]).
    flags: u64,
    /// The running total of messages reported lost upstream ([`Publisher::report_lost`]),
    /// modulo 2^56, carried by every message it sends.
    lost: u64,
    _p: PhantomData<fn(&P)>,
}

impl<P: Payload + ?Sized> std::fmt::Debug for Publisher<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.shared.name)
            .field("index", &self.index)
            .field("sent", &self.writer.messages())
            .finish()
    }
}

impl<P: Payload + ?Sized> Publisher<P> {
    pub(crate) fn new(
        shared: Arc<TopicShared>,
        index: usize,
        writer: Writer,
        timeout: Duration,
        spin: Duration,
    ) -> Self {
        Publisher {
            shared,
            index,
            writer,
            timeout,
            lagged_commits: 0,
            last_check: None,
            wakes: 0,
            announced: u64::MAX,
            spin,
            flags: 0,
            lost: 0,
            _p: PhantomData,
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.shared.name
    }

    /// The largest message this topic carries, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.shared.layout.max_message_size
    }

    /// Messages this publisher's ring has carried (including those of earlier owners of the ring).
    pub fn sent(&self) -> u64 {
        self.writer.messages()
    }

    /// Marks the messages this publisher sends from now on as relayed from another host
    /// ([`Sample::is_relayed`](crate::Sample::is_relayed)), or not (the default). A network
    /// bridge that injects messages received from another host marks them, and never forwards
    /// a relayed message, so no message goes round a loop of hosts. Applications leave it off.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let topic = node.topic::<u32>("doc-relayed");
    /// let mut relay = topic.publisher()?;
    /// let subscriber = topic.subscriber()?;
    /// relay.set_relayed(true);
    /// relay.send_copy(&7)?;
    /// assert!(subscriber.try_receive()?.is_relayed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_relayed(&mut self, relayed: bool) {
        self.flags = if relayed { FLAG_RELAYED } else { 0 };
    }

    /// Reports that `n` messages were lost before the next one this publisher sends: each
    /// subscriber that reads that message is first told [`crate::ReceiveError::Lagged`] with them added
    /// to its own losses. What a network bridge reports when the exporting host's topic
    /// (`DropOldest`) lost messages before they crossed, so that lag counts stay exact across
    /// hosts. Every message carries the running total of the reports, so a subscriber that
    /// misses messages still counts the losses they reported; the first message a subscriber
    /// reads of this publisher sets its baseline (what was lost before is not counted).
    ///
    /// ```
    /// use ringbus::{Node, ReceiveError};
    ///
    /// let node = Node::in_process();
    /// let topic = node.topic::<u32>("doc-report-lost");
    /// let mut relay = topic.publisher()?;
    /// let subscriber = topic.subscriber()?;
    /// relay.send_copy(&3)?;
    /// assert_eq!(*subscriber.try_receive()?, 3);
    /// relay.report_lost(3); // 4, 5 and 6 were lost upstream
    /// relay.send_copy(&7)?;
    /// assert_eq!(subscriber.try_receive().err(), Some(ReceiveError::Lagged(3)));
    /// assert_eq!(*subscriber.try_receive()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report_lost(&mut self, n: u64) {
        self.lost = self.lost.wrapping_add(n) & MAX_LOST;
    }

    /// Wake-up system calls this publisher made: one per send that found a subscriber asleep,
    /// none while every subscriber is awake (spinning or busy).
    pub fn wake_calls(&self) -> u64 {
        self.wakes
    }

    /// Waits without a thread until a live subscriber is registered (at once if one is):
    /// discovery, for a publisher that should not send into a topic nobody reads yet. Checked
    /// at least every [`crate::discovery::DISCOVERY_NAP`]; no deadline (compose it with the
    /// runtime's timeout).
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let topic = node.topic::<u64>("doc-wait-for-subscriber");
    /// let mut publisher = topic.publisher()?;
    /// let _subscriber = topic.subscriber()?; // another process would join
    /// futures::executor::block_on(publisher.wait_for_subscriber());
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn wait_for_subscriber(&mut self) -> PeerJoined<'_> {
        let shared = &*self.shared;
        PeerJoined::new(move || {
            shared
                .layout
                .table(Role::Subscriber)
                .any_live(shared.region())
        })
    }

    /// Whether some subscriber of the topic has announced that it sleeps in the kernel waiting
    /// for a message (a hint: it may be about to wake or to sleep).
    pub fn has_sleeping_subscriber(&self) -> bool {
        self.shared
            .layout
            .news_bell(self.shared.region())
            .has_sleepers()
    }

    /// Claims the next slot. `wait`: under `Block`, wait up to the timeout for room; otherwise
    /// return `Full` at once.
    fn claim(&mut self, wait: bool) -> Result<(u64, usize), SendError> {
        let layout = &self.shared.layout;
        let region = self.shared.region();
        let cells = layout.cells(region, self.index);
        let block = layout.policy == Policy::Block;
        // (start of waiting, deadline if representable)
        let mut deadline: Option<(Instant, Option<Instant>)> = None;
        let mut backoff = FIRST_NAP;
        loop {
            let reader = match self.writer.claim(&cells, block) {
                Claim::Ready { pos, slot } => return Ok((pos, slot)),
                Claim::AllPinned => return Err(SendError::AllSlotsHeld),
                Claim::Blocked { reader } => {
                    let bell = layout.news_bell(region);
                    announce_skips(bell, self.writer.next(), &mut self.announced, &mut self.wakes);
                    reader
                }
            };
            if !wait {
                // A subscriber that died keeps the ring full: check it now and then.
                if reclaim_if_due(&mut self.last_check, &self.shared, reader, Instant::now()) {
                    continue;
                }
                return Err(SendError::Full);
            }
            let now = Instant::now();
            let (start, dl) = *deadline.get_or_insert((now, now.checked_add(self.timeout)));
            if dl.is_some_and(|dl| now >= dl) {
                // Even with a very short timeout, a dead subscriber must not block for good.
                if reclaim_if_due(&mut self.last_check, &self.shared, reader, now) {
                    continue;
                }
                return Err(SendError::Timeout(self.timeout));
            }
            if now.saturating_duration_since(start) < self.spin {
                std::hint::spin_loop();
                continue;
            }
            if reclaim_if_due(&mut self.last_check, &self.shared, reader, now) {
                continue;
            }
            // Sleep until a subscriber advances (the room handshake: it moves its cursor, then
            // rings), or a backoff that grows to the check interval.
            let n = layout.capacity as u64;
            let left = dl.map_or(backoff, |dl| dl - now);
            let writer = &mut self.writer;
            let room = layout
                .room_bell(region)
                .sleep_unless(self.index, left.min(backoff), || {
                    writer
                        .lagging_reader(&cells, writer.next() - n)
                        .is_none()
                        .then_some(())
                });
            if room.is_none() {
                backoff = (backoff * 2).min(CHECK_INTERVAL);
            }
        }
    }

    /// Publishes the claimed slot with `len` payload bytes.
    #[inline]
    fn commit(&mut self, pos: u64, slot: usize, len: usize) {
        let region = self.shared.region();
        let cells = self.shared.layout.cells(region, self.index);
        // Relaxed: published by the commit's Release stamp store.
        cells.len_word(slot).store(len as u64, Ordering::Relaxed);
        // Relaxed: as the length (the slot may hold an earlier owner's flags: always written).
        cells
            .flags_word(slot)
            .store(self.flags | self.lost << LOST_SHIFT, Ordering::Relaxed);
        // The publisher half of the news handshake (sync::doorbell): commit, then ring, before
        // anything else.
        let bell = self.shared.layout.news_bell(region);
        let wakes = &mut self.wakes;
        self.writer.commit(&cells, pos, slot, || {
            if bell.ring(ALL) {
                *wakes += 1;
            }
        });
        // The commit rang for the positions up to here: a later `Blocked` at the next position
        // has no skip to announce (`announce_skips`), so backpressure costs no extra ring.
        self.announced = pos + 1;
        if !self.writer.has_claim() {
            // A reader lags a whole ring behind (or pins the next slot). Under DropOldest nothing
            // else would notice if it died: look for dead participants now and then.
            self.lagged_commits = self.lagged_commits.wrapping_add(1);
            if self.lagged_commits % HOUSEKEEPING_EVERY == 0 {
                self.shared.reclaim_dead();
            }
        }
    }

    fn abandon(&mut self, pos: u64, slot: usize) {
        let cells = self.shared.layout.cells(self.shared.region(), self.index);
        self.writer.abandon(&cells, pos, slot);
    }

    fn loan_raw(&mut self, len: usize, wait: bool) -> Result<Loan<'_, P>, SendError> {
        SendError::check_fits(len, self.shared.layout.max_message_size)?;
        let (pos, slot) = self.claim(wait)?;
        Ok(self.loan_at(pos, slot, len))
    }

    /// The async [`Publisher::loan_raw`] (waiting): every async send goes through it.
    async fn loan_raw_async(&mut self, len: usize) -> Result<Loan<'_, P>, SendError> {
        SendError::check_fits(len, self.shared.layout.max_message_size)?;
        // The slot is claimed by the poll that completes `Room`, and the loan made in that
        // same poll: a future dropped before holds no claim.
        let (pos, slot) = Room::new(self).await?;
        Ok(self.loan_at(pos, slot, len))
    }

    /// The loan of claimed slot `slot` (position `pos`) for `len` ≤ max message size bytes.
    fn loan_at(&mut self, pos: u64, slot: usize, len: usize) -> Loan<'_, P> {
        let max = self.shared.layout.max_message_size;
        let off = self
            .shared
            .layout
            .cells(self.shared.region(), self.index)
            .payload(slot);
        let ptr = self.shared.region().ptr(off, max);
        Loan {
            publisher: self,
            pos,
            slot,
            ptr,
            len,
            sent: false,
        }
    }
}

/// The room wait of every async send of a publisher ([`Publisher::loan_async`],
/// `send_copy_async`, `send_async`): `claim(wait = true)` as a future. It claims at once when it
/// can (always under `DropOldest`); under `Block`, finding a subscriber a whole ring behind, it
/// arms the room doorbell (bit: the publisher's index), rechecks, and registers with the
/// process's waiter until a subscriber moves its cursor and rings, or its nap ends.
///
/// As the blocking wait: its own deadline, from its first wait for room, ends it with
/// [`SendError::Timeout`]; its nap doubles from 100 µs to [`CHECK_INTERVAL`] (and never passes
/// the deadline), and once per `CHECK_INTERVAL` it reclaims the lagging subscriber if that one
/// died. It first spins for the builder's `spin_before_sleep`, as the blocking call does, but
/// without holding its thread (`Parking`); the nap doubles only once it is parked. Cancel-safe: its output is
/// claimed by the poll that returns it; dropped before, it holds no claim and no registration.
struct Room<'a, P: Payload + ?Sized> {
    publisher: &'a mut Publisher<P>,
    /// Set at the first wait: the deadline (None: beyond what `Instant` holds).
    deadline: Option<Option<Instant>>,
    /// The next nap, while nothing but a check or the deadline rings.
    backoff: Duration,
    parking: Parking,
    /// Returned: the bit is disarmed already.
    done: bool,
}

impl<'a, P: Payload + ?Sized> Room<'a, P> {
    fn new(publisher: &'a mut Publisher<P>) -> Self {
        Room {
            // The blocking claim's spin, here cooperative (`Parking`).
            parking: Parking::new(publisher.spin),
            publisher,
            deadline: None,
            backoff: FIRST_NAP,
            done: false,
        }
    }

    /// Claims, or parks (`None`: pending).
    fn step(&mut self, waker: &Waker) -> Option<Result<(u64, usize), SendError>> {
        let p = &mut *self.publisher;
        let layout = &p.shared.layout;
        let region = p.shared.region();
        let cells = layout.cells(region, p.index);
        let block = layout.policy == Policy::Block;
        loop {
            let reader = match p.writer.claim(&cells, block) {
                Claim::Ready { pos, slot } => return Some(Ok((pos, slot))),
                Claim::AllPinned => return Some(Err(SendError::AllSlotsHeld)),
                Claim::Blocked { reader } => {
                    let bell = layout.news_bell(region);
                    announce_skips(bell, p.writer.next(), &mut p.announced, &mut p.wakes);
                    reader
                }
            };
            let now = Instant::now();
            let deadline = *self
                .deadline
                .get_or_insert_with(|| now.checked_add(p.timeout));
            // As `claim`: a dead subscriber is reclaimed even past a very short deadline.
            if reclaim_if_due(&mut p.last_check, &p.shared, reader, now) {
                continue;
            }
            if deadline.is_some_and(|d| now >= d) {
                return Some(Err(SendError::Timeout(p.timeout)));
            }
            let nap = deadline.map_or(self.backoff, |d| (d - now).min(self.backoff));
            let n = layout.capacity as u64;
            let writer = &mut p.writer;
            let keep = || p.shared.clone() as Arc<dyn Send + Sync>;
            // The publisher half of the room handshake, as `claim`'s `sleep_unless`, with the
            // waiter watching the word instead of a blocked thread: a subscriber moves its
            // cursor, then rings.
            let room = self.parking.park(
                layout.room_bell(region),
                p.index,
                nap,
                keep,
                waker,
                || {
                    writer
                        .lagging_reader(&cells, writer.next() - n)
                        .is_none()
                        .then_some(())
                },
            );
            if room.is_none() {
                // Only a registered wait's nap grows: a spin poll is not a nap.
                if self.parking.is_armed() {
                    self.backoff = (self.backoff * 2).min(CHECK_INTERVAL);
                }
                return None;
            }
        }
    }
}

/// Once per [`CHECK_INTERVAL`] (`last_check`: the publisher's last check): whether lagging
/// subscriber `reader` was dead and is reclaimed now (then the ring may have room).
fn reclaim_if_due(
    last_check: &mut Option<Instant>,
    shared: &TopicShared,
    reader: usize,
    now: Instant,
) -> bool {
    if last_check.is_some_and(|t| now < t + CHECK_INTERVAL) {
        return false;
    }
    *last_check = Some(now);
    shared.reclaim_subscriber_if_dead(reader)
}

impl<P: Payload + ?Sized> Future for Room<'_, P> {
    type Output = Result<(u64, usize), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "Room polled after it returned");
        match this.step(cx.waker()) {
            None => Poll::Pending,
            Some(got) => {
                this.done = true;
                let p = &*this.publisher;
                this.parking
                    .finish(p.shared.layout.room_bell(p.shared.region()), p.index);
                Poll::Ready(got)
            }
        }
    }
}

impl<P: Payload + ?Sized> Drop for Room<'_, P> {
    fn drop(&mut self) {
        if !self.done {
            let p = &*self.publisher;
            self.parking
                .finish(p.shared.layout.room_bell(p.shared.region()), p.index);
        }
    }
}

/// A slot of shared memory loaned for writing in place. [`Loan::send`] publishes it; dropping it
/// unsent gives the slot back (subscribers never see it).
pub struct Loan<'a, P: Payload + ?Sized> {
    publisher: &'a mut Publisher<P>,
    pos: u64,
    slot: usize,
    ptr: *mut u8,
    len: usize,
    sent: bool,
}

crate::debug_fields!(Loan<'_, P>: pos, len);

impl<P: Payload + ?Sized> Loan<'_, P> {
    /// Publishes the message to every subscriber.
    #[inline]
    pub fn send(mut self) {
        self.sent = true;
        let (pos, slot, len) = (self.pos, self.slot, self.len);
        self.publisher.commit(pos, slot, len);
    }

    /// The loaned bytes (the payload area of the slot, `len` bytes).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the slot is ours between claim and commit (the ring's invariant 1: no reader
        // reads it, and the publisher is its only writer); ptr is valid for max_message_size ≥ len
        // bytes (bounds-checked by Region::ptr).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<P: Payload + ?Sized> Drop for Loan<'_, P> {
    fn drop(&mut self) {
        if !self.sent {
            let (pos, slot) = (self.pos, self.slot);
            self.publisher.abandon(pos, slot);
        }
    }
}

crate::topic::loan_views!(Loan<'_, P> writes P);

impl<T: bytemuck::Pod> Publisher<T> {
    /// Loans a slot for one `T`, waiting for room under `Block` (up to the send timeout). Write
    /// through the loan, then [`Loan::send`].
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic::<u64>("doc-pod-loan");
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// let mut loan = p.loan()?;
    /// *loan = 42;
    /// loan.send();
    /// assert_eq!(*s.try_receive()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.loan_raw(std::mem::size_of::<T>(), true)
    }

    /// Like [`Publisher::loan`] but returns [`SendError::Full`] instead of waiting.
    pub fn try_loan(&mut self) -> Result<Loan<'_, T>, SendError> {
        self.loan_raw(std::mem::size_of::<T>(), false)
    }

    /// Copies `value` into a slot and sends it.
    pub fn send_copy(&mut self, value: &T) -> Result<(), SendError> {
        let mut loan = self.loan()?;
        *loan = *value;
        loan.send();
        Ok(())
    }

    /// [`Publisher::loan`] without blocking a thread: under [`Policy::Block`], a future that
    /// waits for room in the process's waiter ([`crate::topic`] module doc, "Async") until a
    /// subscriber reads; under `DropOldest`, ready at once. The same errors as `loan`:
    /// [`SendError::Timeout`] after the topic's send timeout (counted from the future's first
    /// wait; a subscriber found dead meanwhile is reclaimed, as the blocking call does) and
    /// [`SendError::AllSlotsHeld`]. It first spins (`spin_before_sleep`), as the blocking call does, without
    /// holding its thread.
    ///
    /// Cancel-safe: the slot is claimed by the poll that returns the loan, so a future dropped
    /// before holds no slot and no registration (and a loan dropped unsent gives its slot back).
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic::<u64>("doc-pod-loan-async").capacity(2);
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// // The subscriber reads slowly: the third loan waits for room.
    /// let reader = std::thread::spawn(move || -> Result<u64, ringbus::ReceiveError> {
    ///     let mut sum = 0;
    ///     for _ in 0..3 {
    ///         sum += *s.receive()?;
    ///     }
    ///     Ok(sum)
    /// });
    /// futures::executor::block_on(async {
    ///     for n in 1..=3 {
    ///         let mut loan = p.loan_async().await?;
    ///         *loan = n;
    ///         loan.send();
    ///     }
    ///     Ok::<(), ringbus::SendError>(())
    /// })?;
    /// assert_eq!(reader.join().unwrap()?, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan_async(&mut self) -> impl Future<Output = Result<Loan<'_, T>, SendError>> + '_ {
        self.loan_raw_async(std::mem::size_of::<T>())
    }

    /// [`Publisher::send_copy`] without blocking a thread: [`Publisher::loan_async`], then the
    /// copy and the send in the poll that claims the slot. The same errors and cancel safety
    /// as `loan_async`: dropped before it completes, it sent nothing; once it returns `Ok`, the
    /// message is sent.
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic::<[u32; 2]>("doc-pod-send-copy-async");
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// futures::executor::block_on(p.send_copy_async(&[1, 2]))?;
    /// assert_eq!(*s.try_receive()?, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn send_copy_async(&mut self, value: &T) -> Result<(), SendError> {
        let mut loan = self.loan_async().await?;
        *loan = *value;
        loan.send();
        Ok(())
    }
}

impl Publisher<Bytes> {
    /// Loans a slot for `len` bytes (at most the topic's maximum message size).
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic_bytes("doc-bytes-loan").max_message_size(1024);
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// let mut loan = p.loan(5)?;
    /// loan.copy_from_slice(b"hello");
    /// loan.send();
    /// assert_eq!(&*s.try_receive()?, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_, Bytes>, SendError> {
        self.loan_raw(len, true)
    }

    /// Like [`Publisher::loan`] but returns [`SendError::Full`] instead of waiting.
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_, Bytes>, SendError> {
        self.loan_raw(len, false)
    }

    /// Copies `bytes` into a slot and sends it.
    pub fn send_copy(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let mut loan = self.loan(bytes.len())?;
        loan.copy_from_slice(bytes);
        loan.send();
        Ok(())
    }

    /// [`Publisher::loan`] without blocking a thread, as [`Publisher::loan_async`]
    /// (Pod topics) does, with the same errors and cancel safety; a `len` above the maximum
    /// message size is [`SendError::TooLarge`] at the first poll.
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic_bytes("doc-bytes-loan-async").max_message_size(64);
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// futures::executor::block_on(async {
    ///     let mut loan = p.loan_async(2).await?;
    ///     loan.copy_from_slice(b"hi");
    ///     loan.send();
    ///     assert!(matches!(
    ///         p.loan_async(65).await,
    ///         Err(ringbus::SendError::TooLarge { len: 65, max: 64 })
    ///     ));
    ///     Ok::<(), ringbus::SendError>(())
    /// })?;
    /// assert_eq!(&*s.try_receive()?, b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan_async(
        &mut self,
        len: usize,
    ) -> impl Future<Output = Result<Loan<'_, Bytes>, SendError>> + '_ {
        self.loan_raw_async(len)
    }

    /// [`Publisher::send_copy`] without blocking a thread: [`Publisher::loan_async`], then the
    /// copy and the send in the poll that claims the slot. The same errors and cancel safety
    /// as `loan_async`: dropped before it completes, it sent nothing.
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic_bytes("doc-bytes-send-copy-async").max_message_size(64);
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// futures::executor::block_on(p.send_copy_async(b"hello"))?;
    /// assert_eq!(&*s.try_receive()?, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn send_copy_async(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let mut loan = self.loan_async(bytes.len()).await?;
        loan.copy_from_slice(bytes);
        loan.send();
        Ok(())
    }
}

impl<T> Publisher<Rkyv<T>>
where
    Rkyv<T>: Payload,
    T: for<'b, 'c> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::ser::writer::Buffer<'b>,
            rkyv::ser::allocator::ArenaHandle<'c>,
            rkyv::rancor::Error,
        >,
    >,
{
    /// Serialises `value` with rkyv directly into a slot and sends it. A value whose archive does
    /// not fit the maximum message size is [`SendError::Serialize`].
    ///
    /// ```
    /// #[derive(rkyv::Archive, rkyv::Serialize)]
    /// struct Quote { symbol: String, price: u64 }
    ///
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic_rkyv::<Quote>("doc-rkyv");
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// p.send(&Quote { symbol: "ACME".into(), price: 7 })?;
    /// let q = s.try_receive()?;
    /// assert_eq!(q.symbol.as_str(), "ACME");
    /// assert_eq!(q.price, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, value: &T) -> Result<(), SendError> {
        let max = self.max_message_size();
        let loan = self.loan_raw(max, true)?;
        serialize_into(loan, value)
    }

    /// [`Publisher::send`] without blocking a thread: waits for room as
    /// [`Publisher::loan_async`] does (Pod topics), then serialises and sends in the poll
    /// that claims the slot. Errors: those of `send` ([`SendError::Serialize`], and
    /// [`SendError::Timeout`] or [`SendError::AllSlotsHeld`] waiting for room). Cancel-safe:
    /// dropped before it completes, it sent nothing and holds no slot or registration.
    ///
    /// ```
    /// #[derive(rkyv::Archive, rkyv::Serialize)]
    /// struct Tick { n: u32 }
    ///
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic_rkyv::<Tick>("doc-rkyv-async");
    /// let mut p = topic.publisher()?;
    /// let s = topic.subscriber()?;
    /// futures::executor::block_on(p.send_async(&Tick { n: 3 }))?;
    /// assert_eq!(s.try_receive()?.n, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn send_async(&mut self, value: &T) -> Result<(), SendError> {
        let max = self.max_message_size();
        let loan = self.loan_raw_async(max).await?;
        serialize_into(loan, value)
    }
}

/// Serialises `value` into `loan` (a whole slot) and sends it; dropped unsent on an error.
fn serialize_into<T, P: Payload + ?Sized>(mut loan: Loan<'_, P>, value: &T) -> Result<(), SendError>
where
    T: for<'b, 'c> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::ser::writer::Buffer<'b>,
            rkyv::ser::allocator::ArenaHandle<'c>,
            rkyv::rancor::Error,
        >,
    >,
{
    let buf = rkyv::ser::writer::Buffer::from(loan.bytes_mut());
    let written = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(value, buf)
        .map_err(|e| SendError::Serialize(e.to_string()))?;
    loan.len = written.len();
    loan.send();
    Ok(())
}

impl<P: Payload + ?Sized> Drop for Publisher<P> {
    fn drop(&mut self) {
        let cells = self.shared.layout.cells(self.shared.region(), self.index);
        self.writer.release_claim(&cells);
        self.shared.leave(Role::Publisher, self.index);
    }
}

/// A writer found no room, possibly after skipping positions whose slots readers pinned
/// (`ring::broadcast`, the skip). A skip rings nobody, so a subscriber asleep at a skipped
/// position would not wake to pass it, and under `Block` that subscriber is the one the writer
/// now waits for: both would sleep until a nap. Rings `bell` (the news bell) once per position
/// `next` the writer is stopped at, remembered in `announced` (a compare while nothing changed);
/// counts a wake-up call in `wakes`.
#[inline]
fn announce_skips(bell: Doorbell<'_>, next: u64, announced: &mut u64, wakes: &mut u64) {
    if *announced != next {
        *announced = next;
        // The ringer's half of the news handshake: the skips were stored (Release) before.
        if bell.ring(ALL) {
            *wakes += 1;
        }
    }
}
