//! The sending side of a topic: one single-writer ring per publisher.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::{Policy, Role};
use super::payload::{Bytes, Payload, Rkyv};
use super::shared::TopicShared;
use crate::sync::doorbell::Bells;
use crate::discovery::PeerJoined;
use crate::error::SendError;
use crate::shm::entry::Tables;
use crate::ring::broadcast::{Claim, Writer};
use crate::sync::doorbell::{Doorbell, ALL};

/// How long a blocked publisher spins before it sleeps in the kernel.
const SPIN: Duration = Duration::from_micros(20);
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
        let mut backoff = Duration::from_micros(100);
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
                let now = Instant::now();
                if self.last_check.map_or(true, |t| now >= t + CHECK_INTERVAL) {
                    self.last_check = Some(now);
                    if self.shared.reclaim_subscriber_if_dead(reader) {
                        continue;
                    }
                }
                return Err(SendError::Full);
            }
            let now = Instant::now();
            let (start, dl) = *deadline.get_or_insert((now, now.checked_add(self.timeout)));
            if dl.is_some_and(|dl| now >= dl) {
                // Even with a very short timeout, a dead subscriber must not block for good.
                if self.last_check.map_or(true, |t| now >= t + CHECK_INTERVAL) {
                    self.last_check = Some(now);
                    if self.shared.reclaim_subscriber_if_dead(reader) {
                        continue;
                    }
                }
                return Err(SendError::Timeout(self.timeout));
            }
            if now < start + SPIN {
                std::hint::spin_loop();
                continue;
            }
            if self.last_check.map_or(true, |t| now >= t + CHECK_INTERVAL) {
                self.last_check = Some(now);
                if self.shared.reclaim_subscriber_if_dead(reader) {
                    continue;
                }
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
        // The publisher half of the news handshake (sync::doorbell): commit, then ring, before
        // anything else.
        let bell = self.shared.layout.news_bell(region);
        let wakes = &mut self.wakes;
        self.writer.commit(&cells, pos, slot, || {
            if bell.ring(ALL) {
                *wakes += 1;
            }
        });
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
        let max = self.shared.layout.max_message_size;
        SendError::check_fits(len, max)?;
        let (pos, slot) = self.claim(wait)?;
        let off = self
            .shared
            .layout
            .cells(self.shared.region(), self.index)
            .payload(slot);
        let ptr = self.shared.region().ptr(off, max);
        Ok(Loan {
            publisher: self,
            pos,
            slot,
            ptr,
            len,
            sent: false,
        })
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
        let mut loan = self.loan_raw(max, true)?;
        let buf = rkyv::ser::writer::Buffer::from(loan.bytes_mut());
        let written = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(value, buf)
            .map_err(|e| SendError::Serialize(e.to_string()))?;
        let len = written.len();
        loan.len = len;
        loan.send();
        Ok(())
    }
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
