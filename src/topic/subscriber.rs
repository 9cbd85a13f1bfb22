//! The receiving side of a topic: reads every publisher's ring, in place.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::layout::{Role, CTRL_RINGS_USED, FLAG_RELAYED, LOST_SHIFT};
use super::payload::Payload;
use super::shared::TopicShared;
use crate::sync::doorbell::Bells;
use crate::error::ReceiveError;
use crate::ring::broadcast::{Read, Reader};
use crate::sync::doorbell::ALL;
use crate::sync::waiter::Parking;
use crate::sync::QUIET_NAP;

/// Reads after which a subscriber rings the room doorbell (it also rings when it finds nothing
/// to read): a sixteenth of the ring. A publisher blocked on a full ring (`Block`) is thus woken
/// once room for a batch is free instead of once per slot, which would make it and a slower
/// subscriber take turns sleeping and waking at every message. The message it waits to write is
/// the newest, a whole ring behind what the subscriber reads, so the batch delays no delivery;
/// a publisher whose subscriber stops reading within a batch rechecks at its own nap (bounded
/// by its deadline, so room that appeared never ends in a spurious `Timeout`).
fn room_batch(capacity: usize) -> u64 {
    (capacity as u64 / 16).max(1)
}

/// Longest single sleep; the subscriber rechecks (and honours its deadline) at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(100);

struct State {
    readers: Vec<Reader>,
    /// Per ring, a bitmask of pin indices in use.
    pins: Vec<u8>,
    held: usize,
    next_ring: usize,
    /// A message already pinned whose loss report was returned first.
    pending: Option<Hit>,
    missed: u64,
    /// Per ring, the upstream loss total of the last message read (`LOST_SHIFT`; None: none
    /// read yet).
    upstream: Vec<Option<u64>>,
    /// A cursor moved since this subscriber last fenced and checked for waiting publishers.
    unfenced: bool,
    /// Messages read since this subscriber last rang the room doorbell ([`room_batch`]).
    unrung: u64,
    /// Wakes sent to waiting publishers (housekeeping counter: a dead publisher's bit stays set).
    wakes: u32,
}

#[derive(Clone, Copy)]
struct Hit {
    ring: usize,
    pin: usize,
    off: usize,
    len: usize,
    /// The message's flags word has [`FLAG_RELAYED`].
    relayed: bool,
}

/// Receives messages of kind `P` from a topic. Created by [`crate::TopicBuilder::subscriber`].
///
/// Samples borrow the subscriber and read shared memory in place; up to the topic's `max_held`
/// samples may be held at once. A subscriber is `Send`, not `Sync`.
pub struct Subscriber<P: Payload + ?Sized> {
    shared: Arc<TopicShared>,
    index: usize,
    state: RefCell<State>,
    spin: Duration,
    _p: PhantomData<fn() -> P>,
}

impl<P: Payload + ?Sized> std::fmt::Debug for Subscriber<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.shared.name)
            .field("index", &self.index)
            .finish()
    }
}

/// A received message, read in place from shared memory. Dereferences to the message; dropping it
/// lets the slot be reused.
pub struct Sample<'a, P: Payload + ?Sized> {
    sub: &'a Subscriber<P>,
    hit: Hit,
    view: &'a P::View,
}

impl<P: Payload + ?Sized> std::fmt::Debug for Sample<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("ring", &self.hit.ring)
            .field("len", &self.hit.len)
            .finish_non_exhaustive()
    }
}

crate::topic::received_view!(Sample<'_, P> reads P);

impl<P: Payload + ?Sized> Sample<'_, P> {
    /// Length of the message in bytes.
    pub fn len(&self) -> usize {
        self.hit.len
    }

    /// Whether the message has no bytes.
    pub fn is_empty(&self) -> bool {
        self.hit.len == 0
    }

    /// Index of the publisher ring the message came from (messages of one ring arrive in order).
    pub fn publisher_index(&self) -> usize {
        self.hit.ring
    }

    /// Whether a network bridge relayed the message from another host
    /// ([`crate::Publisher::set_relayed`]); false for messages sent on this host. A bridge
    /// forwards only messages that are not relayed. (A flag another process writes: a hint for
    /// routing, not an authentication.)
    pub fn is_relayed(&self) -> bool {
        self.hit.relayed
    }
}

impl<P: Payload + ?Sized> Drop for Sample<'_, P> {
    fn drop(&mut self) {
        self.sub.release(self.hit);
    }
}

impl<P: Payload + ?Sized> Subscriber<P> {
    pub(crate) fn new(
        shared: Arc<TopicShared>,
        index: usize,
        readers: Vec<Reader>,
        spin: Duration,
    ) -> Self {
        let rings = readers.len();
        Subscriber {
            shared,
            index,
            state: RefCell::new(State {
                readers,
                pins: vec![0; rings],
                upstream: vec![None; rings],
                held: 0,
                next_ring: 0,
                pending: None,
                missed: 0,
                unfenced: false,
                unrung: 0,
                wakes: 0,
            }),
            spin,
            _p: PhantomData,
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.shared.name
    }

    /// Total messages this subscriber lost to `DropOldest` overwrites.
    pub fn missed(&self) -> u64 {
        self.state.borrow().missed
    }

    /// Sets how long `receive` spins before sleeping in the kernel (zero: sleep at once).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    fn release(&self, hit: Hit) {
        let mut st = self.state.borrow_mut();
        let cells = self.shared.layout.cells(self.shared.region(), hit.ring);
        Reader::release(&cells, self.index, hit.pin);
        st.pins[hit.ring] &= !(1 << hit.pin);
        st.held -= 1;
    }

    /// The subscriber half of the room handshake, after its cursor moved: wakes publishers
    /// blocked for room, if any announced itself.
    #[inline]
    fn ring_room(&self, st: &mut State) {
        st.unrung = 0;
        if self.shared.layout.room_bell(self.shared.region()).ring(ALL) {
            self.woke_publishers(st);
        }
    }

    #[cold]
    fn woke_publishers(&self, st: &mut State) {
        st.wakes = st.wakes.wrapping_add(1);
        if st.wakes % 1024 == 0 {
            // A publisher that died asleep leaves its bit set: every read would pay a wake.
            self.shared.reclaim_dead();
        }
    }

    /// One non-blocking attempt over every ring, starting after the last ring that delivered.
    fn poll(&self) -> Result<Hit, ReceiveError> {
        let layout = &self.shared.layout;
        let region = self.shared.region();
        let mut st = self.state.borrow_mut();
        if let Some(hit) = st.pending.take() {
            return Ok(hit);
        }
        if st.held >= layout.max_held {
            return Err(ReceiveError::TooManyHeld(layout.max_held));
        }
        let rings = st.readers.len();
        // Acquire: pairs with the Release bit set when a publisher joins; unused rings are skipped.
        let used = region.u64_at(CTRL_RINGS_USED).load(Ordering::Acquire);
        let mut ring = st.next_ring;
        for _ in 0..rings {
            let this = ring;
            // Round-robin without a division on the hot path.
            ring = if ring + 1 == rings { 0 } else { ring + 1 };
            if used & (1u64 << this) == 0 {
                continue;
            }
            let ring = this;
            let pin = (!st.pins[ring]).trailing_zeros() as usize;
            let cells = layout.cells(region, ring);
            let before = st.readers[ring].position();
            let read = st.readers[ring].read(&cells, self.index, pin);
            st.unfenced |= st.readers[ring].position() != before;
            let Read::Message { slot, missed, .. } = read else {
                continue;
            };
            // Our cursor moved: the room handshake (publisher.rs), once per batch of reads (or
            // when we find nothing): a publisher blocked on a full ring is woken when a batch
            // of room is free, not for every slot.
            st.unrung += 1;
            if st.unrung >= room_batch(layout.capacity) {
                self.ring_room(&mut st);
            }
            // Relaxed: written before the COMMITTED stamp the reader acquired; stable while pinned.
            let len = cells.len_word(slot).load(Ordering::Relaxed);
            let fixed = P::fixed_size();
            if len > layout.max_message_size as u64 || fixed.is_some_and(|f| f as u64 != len) {
                Reader::release(&cells, self.index, pin);
                st.missed = st.missed.saturating_add(missed);
                return Err(ReceiveError::Invalid(format!(
                    "message length {len} (maximum {})",
                    layout.max_message_size
                )));
            }
            // Relaxed: as the length. The loss total is another process's report: any value is
            // only a count. It is a running total, so the losses reported by messages this
            // subscriber missed are counted too; the first message read of a ring sets the
            // baseline; a total that went down is a new publisher's.
            let flags = cells.flags_word(slot).load(Ordering::Relaxed);
            let total = flags >> LOST_SHIFT;
            let upstream = match st.upstream[ring] {
                Some(seen) if total >= seen => total - seen,
                Some(_) => total,
                None => 0,
            };
            st.upstream[ring] = Some(total);
            let missed = missed.saturating_add(upstream);
            st.pins[ring] |= 1 << pin;
            st.held += 1;
            st.next_ring = if ring + 1 == rings { 0 } else { ring + 1 };
            let hit = Hit {
                ring,
                pin,
                off: cells.payload(slot),
                len: len as usize,
                relayed: flags & FLAG_RELAYED != 0,
            };
            if missed > 0 {
                st.missed = st.missed.saturating_add(missed);
                st.pending = Some(hit);
                return Err(ReceiveError::Lagged(missed));
            }
            return Ok(hit);
        }
        if st.unfenced {
            // Nothing to read, but our cursor moved since the last ring: the room handshake.
            st.unfenced = false;
            self.ring_room(&mut st);
        }
        Err(ReceiveError::Empty)
    }

    fn sample(&self, hit: Hit) -> Result<Sample<'_, P>, ReceiveError> {
        let ptr = self.shared.region().ptr(hit.off, hit.len);
        // SAFETY: the slot is pinned (ring invariant 2: the writer does not write it until we
        // release it), ptr is in bounds for len bytes (Region::ptr) and 32-aligned (payload offset
        // in a 64-aligned slot of a page-aligned region).
        match unsafe { P::view(ptr, hit.len) } {
            Ok(view) => Ok(Sample {
                sub: self,
                hit,
                view,
            }),
            Err(why) => {
                self.release(hit);
                Err(ReceiveError::Invalid(why))
            }
        }
    }

    /// Returns the next message if one is ready, else [`ReceiveError::Empty`]. Never blocks.
    ///
    /// Under `DropOldest`, returns [`ReceiveError::Lagged`] once before the first message after a
    /// loss.
    #[inline]
    pub fn try_receive(&self) -> Result<Sample<'_, P>, ReceiveError> {
        let hit = self.poll()?;
        self.sample(hit)
    }

    /// Waits for the next message: spins briefly, then sleeps in the kernel until a publisher
    /// wakes it. An idle subscriber uses no CPU.
    pub fn receive(&self) -> Result<Sample<'_, P>, ReceiveError> {
        let hit = self.wait(None)?;
        self.sample(hit)
    }

    /// Like [`Subscriber::receive`], but gives up with [`ReceiveError::Timeout`] after `timeout`.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Sample<'_, P>, ReceiveError> {
        // A deadline beyond what Instant can hold is no deadline.
        let deadline = Instant::now().checked_add(timeout).map(|d| (d, timeout));
        let hit = self.wait(deadline)?;
        self.sample(hit)
    }

    /// Waits for the next message without blocking a thread: a future that tries at once, then
    /// sleeps in the process's waiter ([`crate::topic`] module doc, "Async") until a publisher
    /// rings. The same results as [`Subscriber::receive`]; compose it with the runtime's timeout
    /// for a deadline. It first spins for [`Subscriber::set_spin`] (the builder's
    /// `spin_before_sleep`) without holding its thread (module doc, "Async").
    ///
    /// It borrows the subscriber mutably so that the future is `Send` (it can be awaited in a
    /// task of a multi-threaded runtime); the sample it returns keeps that borrow until it is
    /// dropped, so async receives hold one sample at a time (the blocking calls may hold up to
    /// `max_held`). Cancel-safe: dropping the future loses no message (a message
    /// is taken only by the poll that returns it) and unregisters it.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let topic = node.topic::<u64>("doc-receive-async");
    /// let mut publisher = topic.publisher()?;
    /// let mut subscriber = topic.subscriber()?;
    /// let sender = std::thread::spawn(move || publisher.send_copy(&42));
    /// let got = futures::executor::block_on(async {
    ///     let sample = subscriber.receive_async().await?;
    ///     Ok::<u64, ringbus::ReceiveError>(*sample)
    /// })?;
    /// assert_eq!(got, 42);
    /// sender.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_async(&mut self) -> Receive<'_, P> {
        Receive {
            parking: Parking::new(self.spin),
            sub: Some(self),
        }
    }

    fn wait(&self, deadline: Option<(Instant, Duration)>) -> Result<Hit, ReceiveError> {
        match self.poll() {
            Err(ReceiveError::Empty) => {}
            other => return other,
        }
        if !self.spin.is_zero() {
            // Poll a while before the first clock read, without pause instructions (a pause
            // costs about a fifth of a one-way latency here).
            for _ in 0..crate::sync::FIRST_POLLS {
                match self.poll() {
                    Err(ReceiveError::Empty) => {}
                    other => return other,
                }
            }
        }
        let spin_until = Instant::now() + self.spin;
        let region = self.shared.region();
        let bell = self.shared.layout.news_bell(region);
        loop {
            let now = Instant::now();
            if now < spin_until {
                // One pause per poll; the clock is read every 64 polls.
                for _ in 0..64 {
                    std::hint::spin_loop();
                    match self.poll() {
                        Err(ReceiveError::Empty) => {}
                        other => return other,
                    }
                }
                continue;
            }
            let nap = match deadline {
                Some((d, t)) if now >= d => return Err(ReceiveError::Timeout(t)),
                Some((d, _)) => (d - now).min(MAX_SLEEP),
                None => MAX_SLEEP,
            };
            // The subscriber half of the news handshake (sync::doorbell): a publisher commits,
            // then rings.
            let got = bell.sleep_unless(self.index, nap, || match self.poll() {
                Err(ReceiveError::Empty) => None,
                other => Some(other),
            });
            match got {
                Some(other) => return other,
                None => match self.poll() {
                    Err(ReceiveError::Empty) => continue,
                    other => return other,
                },
            }
        }
    }
}

/// The future of [`Subscriber::receive_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct Receive<'a, P: Payload + ?Sized> {
    /// None once the future returned.
    sub: Option<&'a mut Subscriber<P>>,
    parking: Parking,
}

impl<P: Payload + ?Sized> std::fmt::Debug for Receive<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receive")
            .field("subscriber", &self.sub)
            .field("parking", &self.parking)
            .finish()
    }
}

impl<'a, P: Payload + ?Sized> Future for Receive<'a, P> {
    type Output = Result<Sample<'a, P>, ReceiveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let sub = this.sub.as_deref().expect("Receive polled after it returned");
        let bell = sub.shared.layout.news_bell(sub.shared.region());
        let got = match sub.poll() {
            Err(ReceiveError::Empty) => {
                let keep = || sub.shared.clone() as Arc<dyn Send + Sync>;
                // The subscriber half of the news handshake, as `wait`'s, with the waiter
                // watching the word instead of a blocked thread.
                this.parking
                    .park(bell, sub.index, QUIET_NAP, keep, cx.waker(), || {
                        match sub.poll() {
                            Err(ReceiveError::Empty) => None,
                            other => Some(other),
                        }
                    })
            }
            other => {
                this.parking.finish(bell, sub.index);
                Some(other)
            }
        };
        match got {
            None => Poll::Pending,
            Some(got) => {
                let sub: &'a Subscriber<P> = this.sub.take().expect("checked above");
                Poll::Ready(got.and_then(|hit| sub.sample(hit)))
            }
        }
    }
}

impl<P: Payload + ?Sized> Drop for Receive<'_, P> {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.as_deref() {
            let bell = sub.shared.layout.news_bell(sub.shared.region());
            self.parking.finish(bell, sub.index);
        }
    }
}

impl<P: Payload + ?Sized> Drop for Subscriber<P> {
    fn drop(&mut self) {
        // Samples borrow the subscriber, so none is alive here; a pending one is released.
        let pending = self.state.get_mut().pending.take();
        if let Some(hit) = pending {
            self.release(hit);
        }
        self.shared.leave(Role::Subscriber, self.index);
    }
}
