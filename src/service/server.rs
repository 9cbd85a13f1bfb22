//! The answering side of a service: servers take calls from every client's call ring.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::FIRST_POLLS;
use super::layout::CallRing;
use super::layout::*;
use super::shared::ServiceShared;
use crate::error::{ReceiveError, SendError};
use crate::sync::{barrier, futex, ProcessId};
use crate::topic::{Bytes, Payload, CHECK_INTERVAL};

/// Longest single sleep of an idle server.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Serves a service: receives requests of kind `Q`, answers each with one response of kind `R`
/// or a stream of them. Created by [`crate::ServiceBuilder::server`].
///
/// Several servers (in one or many processes) may serve one service: each call is taken by
/// exactly one of them. A server may hold many requests at once and answer them in any order.
/// It is `Send` but not `Sync`.
///
/// ```
/// use ringbus::Node;
///
/// let node = Node::in_process();
/// let svc = node.service::<u32, u32>("doc-server");
/// let server = svc.server()?;
/// let client = svc.client()?;
/// let a = client.send(&1)?;
/// let b = client.send(&2)?;
/// let first = server.try_receive()?;
/// let second = server.try_receive()?;
/// second.respond(&20)?; // answers may go in any order
/// first.respond(&10)?;
/// assert_eq!(*a.wait()?, 10);
/// assert_eq!(*b.wait()?, 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<Q: Payload + ?Sized, R: Payload + ?Sized> {
    core: ServerCore,
    _p: PhantomData<fn(&Q, &R)>,
}

/// Aligned to 128 bytes (and padded to a multiple of it): the fields it writes on every call
/// share no cache line with a neighbour's data (see `ClientCore`).
#[repr(align(128))]
pub(crate) struct ServerCore {
    /// Every client entry's call ring (pointing into `shared`'s mapping, never outliving it).
    rings: Box<[CallRing]>,
    shared: Arc<ServiceShared>,
    index: usize,
    owner: u64,
    spin: Duration,
    timeout: Duration,
    next_client: Cell<usize>,
    wakes: Cell<u64>,
    /// Calls taken in the last batch and not handed out yet (a ring buffer of BATCH).
    queue: [Cell<Option<Claim>>; BATCH],
    queue_head: Cell<usize>,
    queue_len: Cell<usize>,
    /// Times a client's claim lock was found held (to look for a dead holder now and then).
    lock_busy: Cell<u32>,
    /// A poll found a posted call behind a busy claim lock: retry rather than sleep.
    busy: Cell<bool>,
    /// `sync::barrier::asymmetric()`, read once.
    asym: bool,
}

/// The lowest call position at or after `from` still held by a slot of `ring` (every position
/// from `from` up to it has passed: its slot holds a later call). `from` if there is none.
fn lowest_position_from(ring: &CallRing, from: u64) -> u64 {
    let slots = ring.mask() as usize + 1;
    (0..slots)
        .filter_map(|slot| {
            // Acquire: as in `take_from`.
            let (pos, _, kind) = split_state(ring.state(slot).load(Ordering::Acquire));
            (kind != UNUSED && pos >= from).then_some(pos)
        })
        .min()
        .unwrap_or(from)
}

/// Rounds a waiting server retries (yielding) instead of sleeping while a claim lock is held.
const BUSY_ROUNDS: u32 = 1000;

/// Most calls a server takes from one client's ring at once. Taking several posted calls under
/// one lock costs one atomic read-modify-write for all of them.
const BATCH: usize = 8;

/// A call this server took.
#[derive(Clone, Copy, Debug)]
struct Claim {
    client: usize,
    slot: usize,
    pos: u64,
    len: usize,
    /// Next response item number.
    n: u64,
    /// The first item number of this call (`consumed` when it was taken): always has room.
    first: u64,
    /// Owner word of the client entry when the call was taken.
    client_owner: u64,
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for Server<Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("service", &self.core.shared.name)
            .field("index", &self.core.index)
            .finish()
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Server<Q, R> {
    pub(crate) fn new(
        shared: Arc<ServiceShared>,
        index: usize,
        spin: Duration,
        timeout: Duration,
    ) -> Self {
        Server {
            core: ServerCore {
                rings: (0..shared.layout.max_clients)
                    .map(|c| shared.ring(c))
                    .collect(),
                shared,
                index,
                owner: ProcessId::current().pack(),
                spin,
                timeout,
                next_client: Cell::new(0),
                wakes: Cell::new(0),
                queue: Default::default(),
                queue_head: Cell::new(0),
                queue_len: Cell::new(0),
                lock_busy: Cell::new(0),
                busy: Cell::new(false),
                asym: barrier::asymmetric(),
            },
            _p: PhantomData,
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.core.shared.name
    }

    /// The largest response the service carries, in bytes.
    pub fn max_response_size(&self) -> usize {
        self.core.shared.layout.max_response
    }

    /// Wake-up system calls this server made for sleeping clients.
    pub fn wake_calls(&self) -> u64 {
        self.core.wakes.get()
    }

    /// Takes the next request if one is waiting, else [`ReceiveError::Empty`]. Never blocks.
    #[inline]
    pub fn try_receive(&self) -> Result<Request<'_, Q, R>, ReceiveError> {
        match self.core.poll() {
            Some(claim) => self.request(claim),
            None => Err(ReceiveError::Empty),
        }
    }

    /// Waits for the next request: spins briefly, then sleeps in the kernel until a client posts
    /// one. An idle server uses no CPU.
    pub fn receive(&self) -> Result<Request<'_, Q, R>, ReceiveError> {
        let claim = self.core.wait(None)?;
        self.request(claim)
    }

    /// Like [`Server::receive`], but gives up with [`ReceiveError::Timeout`] after `timeout`.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Request<'_, Q, R>, ReceiveError> {
        let claim = match self.core.poll_a_while() {
            Some(claim) => claim,
            None => {
                let deadline = Instant::now().checked_add(timeout).map(|d| (d, timeout));
                self.core.wait(deadline)?
            }
        };
        self.request(claim)
    }

    #[inline]
    fn request(&self, claim: Claim) -> Result<Request<'_, Q, R>, ReceiveError> {
        let core = &self.core;
        let layout = &core.shared.layout;
        let view =
            if claim.len > layout.max_request || Q::fixed_size().is_some_and(|f| f != claim.len) {
                Err(format!(
                    "request length {} (maximum {})",
                    claim.len, layout.max_request
                ))
            } else {
                let ring = &core.rings[claim.client];
                let ptr = ring.request(claim.slot);
                // SAFETY: the call is TAKEN by this server: its client writes the slot's request
                // area only after the call ends (this server's END item) or this server dies; ptr
                // is valid for len ≤ max_request bytes (CallRing::request) and 32-aligned (request
                // area in a 64-aligned call slot of a page-aligned region).
                unsafe { Q::view(ptr, claim.len) }
            };
        match view {
            Ok(view) => Ok(Request {
                core,
                claim,
                view: view as *const Q::View,
                answered: false,
                streaming: false,
                _p: PhantomData,
            }),
            Err(why) => {
                // Tell the caller at once rather than let it time out.
                let mut claim = claim;
                let _ = core.publish(&mut claim, ABORTED | END, false, |_| Ok(0));
                Err(ReceiveError::Invalid(why))
            }
        }
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Drop for Server<Q, R> {
    fn drop(&mut self) {
        // Requests borrow the server: none is alive here. Calls taken but not handed out go
        // back to the other servers.
        self.core.give_back();
        self.core.shared.leave_server(self.core.index);
    }
}

impl ServerCore {
    /// One pass over the call rings of the registered clients, from the one after the last that
    /// delivered.
    #[inline]
    fn poll(&self) -> Option<Claim> {
        if let Some(claim) = self.dequeue() {
            return Some(claim);
        }
        // Acquire: pairs with the SeqCst bit set when a client joins.
        let clients = self.rings[0].clients().load(Ordering::Acquire);
        if clients == 0 {
            return None;
        }
        let n = self.shared.layout.max_clients;
        let mut c = self.next_client.get();
        for _ in 0..n {
            if c >= n {
                c = 0;
            }
            if clients & (1u64 << c) != 0 && self.take_from(c) {
                self.next_client.set(c + 1);
                return self.dequeue();
            }
            c += 1;
        }
        None
    }

    #[inline]
    fn dequeue(&self) -> Option<Claim> {
        let len = self.queue_len.get();
        if len == 0 {
            return None;
        }
        let head = self.queue_head.get();
        self.queue_head.set((head + 1) % BATCH);
        self.queue_len.set(len - 1);
        self.queue[head].take()
    }

    /// Takes the posted calls at the head of client `c`'s ring (up to BATCH) into the queue;
    /// returns whether it took any.
    #[inline]
    fn take_from(&self, c: usize) -> bool {
        let ring = &self.rings[c];
        // A look without the lock first, so idle polling writes nothing.
        // Acquire: the head is moved under the lock; a stale value only means a spare look.
        let h = ring.head().load(Ordering::Acquire);
        // Acquire: pairs with the client's Release store of POSTED.
        let (p, _, kind) = split_state(ring.state(h as usize).load(Ordering::Acquire));
        if p < h || (p == h && kind == UNUSED) {
            return false;
        }
        let lock = ring.lock();
        let me = self.index as u64 + 1;
        // Relaxed look, then Acquire CAS: pairs with the last holder's Release, so its head and
        // claim stores are visible.
        if lock.load(Ordering::Relaxed) != 0
            || lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            self.lock_busy(ring, c);
            return false;
        }
        // Under the claim lock: only we move the head or claim posted calls.
        let mut h = ring.head().load(Ordering::Relaxed);
        // With other servers registered, take one call at a time: calls queued here could not
        // be served by an idle peer meanwhile.
        // Relaxed: a hint for the batch size only.
        let servers = ring.servers().load(Ordering::Relaxed);
        let room = if servers & servers.wrapping_sub(1) != 0 {
            1
        } else {
            BATCH - self.queue_len.get()
        };
        let mut taken = 0;
        // Bounded: each step moves the head on or stops; garbage words cost at most this many.
        for _ in 0..self.shared.layout.in_flight {
            if taken == room {
                break;
            }
            let slot = (h & ring.mask()) as usize;
            match ring.status(slot) {
                Status::Posted { pos } if pos == h => {
                    // Relaxed: `taker` before `claim`, whose Release store publishes it: a
                    // client that sees our claim sees our owner word.
                    ring.taker(slot).store(self.owner, Ordering::Relaxed);
                    ring.claim(slot)
                        .store(call_state(h, self.index, TAKEN), Ordering::Release);
                    // Relaxed: ordered by the Acquire load of POSTED in `status`.
                    let at = ring.at(slot);
                    let len = at.len().load(Ordering::Relaxed);
                    let n = at.consumed().load(Ordering::Relaxed) & CONSUMED_COUNT;
                    let client_owner = ring.owner().load(Ordering::Relaxed);
                    let at = (self.queue_head.get() + self.queue_len.get()) % BATCH;
                    self.queue[at].set(Some(Claim {
                        client: c,
                        slot,
                        pos: h,
                        len: usize::try_from(len).unwrap_or(usize::MAX),
                        n,
                        first: n,
                        client_owner,
                    }));
                    self.queue_len.set(self.queue_len.get() + 1);
                    taken += 1;
                    h += 1;
                }
                Status::Unused => break, // not posted yet
                Status::Posted { pos }
                | Status::Cancelled { pos }
                | Status::Taken { pos, .. }
                | Status::Released { pos } => {
                    if pos < h {
                        break; // not posted yet
                    }
                    if pos == h {
                        h += 1; // cancelled, or taken by a holder that died before moving on
                    } else {
                        // The slot was reused: every position from the head up to the lowest
                        // one still in the ring has passed. Jump there.
                        h = lowest_position_from(ring, h);
                    }
                }
            }
        }
        // Relaxed: published by the Release of the lock.
        ring.head().store(h, Ordering::Relaxed);
        // Release: our head and claims are visible to the next holder. A plain store: while we
        // live, nobody else changes a lock we hold (others only release the locks of dead
        // servers, under the segment lock).
        lock.store(0, Ordering::Release);
        taken > 0
    }

    /// Gives back the calls taken but not handed out (a dropped server): they become posted
    /// again for the other servers. Falls back to aborting them if the claim lock stays busy.
    fn give_back(&self) {
        let Some(first) = self.queue[self.queue_head.get()].get() else {
            return;
        };
        let ring = &self.rings[first.client];
        let lock = ring.lock();
        let me = self.index as u64 + 1;
        let mut got = false;
        for _ in 0..1000 {
            // Acquire: as in `take_from`.
            if lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                got = true;
                break;
            }
            std::thread::yield_now();
        }
        while let Some(mut claim) = self.dequeue() {
            if got && claim.client == first.client {
                // Relaxed: under the lock; published by its Release.
                let head = ring.head().load(Ordering::Relaxed);
                ring.head().store(head.min(claim.pos), Ordering::Relaxed);
                // Release: the claim word no longer says TAKEN: the call is posted again.
                let _ = ring.claim(claim.slot).compare_exchange(
                    call_state(claim.pos, self.index, TAKEN),
                    call_state(claim.pos, self.index, UNUSED),
                    Ordering::Release,
                    Ordering::Relaxed,
                );
            } else if self
                .publish(&mut claim, ABORTED | END, false, |_| Ok(0))
                .is_err()
            {
                self.release(&claim);
            }
        }
        if got {
            // Release: as in `take_from`.
            let _ = lock.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
            // A sleeping server takes them now rather than at its next timeout.
            // Relaxed: a hint.
            if self
                .shared
                .region()
                .u64_at(CTRL_SERVERS_WAITING)
                .load(Ordering::Relaxed)
                & !(1u64 << self.index)
                != 0
            {
                self.shared.wake_server();
            }
        }
    }

    /// A client's claim lock was busy: now and then, look whether its holder died.
    #[cold]
    fn lock_busy(&self, ring: &CallRing, c: usize) {
        // Relaxed: a hint; reclaiming works under the segment lock.
        let holder = ring.lock().load(Ordering::Relaxed);
        let server = (1..=MAX_PARTICIPANTS as u64).contains(&holder);
        if !server && holder != CLIENT_LOCK {
            return; // garbage: nothing to wait for (the call fails or times out)
        }
        // A plausible holder: retry soon rather than sleep (see `wait`).
        self.busy.set(true);
        let n = self.lock_busy.get().wrapping_add(1);
        self.lock_busy.set(n);
        if n % 256 != 1 {
            return;
        }
        // Now and then (the first time, then every 256th), look whether the holder died.
        let dead = if server {
            !self.shared.server_live(holder as usize - 1)
        } else {
            !self.shared.client_live(c)
        };
        if dead {
            self.shared.reclaim_dead();
        }
    }

    /// Polls up to FIRST_POLLS times (once if told to sleep at once), without reading the clock.
    #[inline]
    fn poll_a_while(&self) -> Option<Claim> {
        if let Some(claim) = self.poll() {
            return Some(claim);
        }
        if self.spin.is_zero() {
            return None;
        }
        // Between full polls, watch only the state word where the client served last posts its
        // next call (as tight as a raw atomic ping-pong); every 16th turn polls every client.
        // No pause between these polls (see the client's first polls).
        let n = self.shared.layout.max_clients;
        let last = self
            .next_client
            .get()
            .checked_sub(1)
            .unwrap_or(n - 1)
            .min(n - 1);
        let ring = &self.rings[last];
        // Acquire/Relaxed: a hint of where to look; `poll` decides.
        let h = ring.head().load(Ordering::Relaxed);
        let state = ring.at((h & ring.mask()) as usize).state();
        // Built by hand: `h` comes from shared memory and may exceed what `call_state` accepts.
        let posted = h << 8 | POSTED;
        for i in 1..FIRST_POLLS {
            // Acquire: as in `take_from`, which loads it again.
            if state.load(Ordering::Acquire) == posted || i % 16 == 0 {
                if let Some(claim) = self.poll() {
                    return Some(claim);
                }
            }
        }
        None
    }

    fn wait(&self, deadline: Option<(Instant, Duration)>) -> Result<Claim, ReceiveError> {
        if let Some(claim) = self.poll_a_while() {
            return Ok(claim);
        }
        let spin_until = Instant::now() + self.spin;
        let region = self.shared.region();
        let seq = region.u32_at(CTRL_REQUEST_SEQ);
        let waiting = region.u64_at(CTRL_SERVERS_WAITING);
        let bit = 1u64 << self.index;
        let mut spins = 0u32;
        let mut busy_rounds = 0u32;
        loop {
            if let Some(claim) = self.poll() {
                return Ok(claim);
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 {
                continue;
            }
            let now = Instant::now();
            if now < spin_until {
                continue;
            }
            let mut nap = match deadline {
                Some((d, t)) if now >= d => return Err(ReceiveError::Timeout(t)),
                Some((d, _)) => (d - now).min(MAX_SLEEP),
                None => MAX_SLEEP,
            };
            if self.busy.replace(false) {
                busy_rounds += 1;
                if busy_rounds <= BUSY_ROUNDS {
                    // A posted call sits behind a claim lock held for a moment: no wake will
                    // come for it, so do not sleep; let the holder run.
                    std::thread::yield_now();
                    continue;
                }
                // Held for long (a holder that is slow to die, or stuck): short naps from now.
                nap = nap.min(barrier::FALLBACK_NAP);
            }
            // The server half of the sleep handshake: read the futex word, announce, barrier,
            // poll; a client posts, barriers, then loads `servers_waiting`.
            // Acquire: a later value means a wake we must not sleep through.
            let seen = seq.load(Ordering::Acquire);
            // Relaxed: ordered before the poll by the heavy barrier.
            waiting.fetch_or(bit, Ordering::Relaxed);
            let nap = barrier::heavy(nap);
            let got = self.poll();
            if got.is_none() && !self.busy.get() {
                futex::wait(seq, seen, nap);
            }
            // Relaxed: a hint for clients; a stale bit costs one spare wake.
            waiting.fetch_and(!bit, Ordering::Relaxed);
            if let Some(claim) = got {
                return Ok(claim);
            }
        }
    }

    /// Waits until item `claim.n` may be written (the client has consumed item n − depth). For
    /// a stream (`stream`), a caller that gave up stops it at once.
    #[inline]
    fn wait_room(&self, claim: &Claim, stream: bool) -> Result<(), SendError> {
        if claim.n == claim.first && !stream {
            // The call's first item: every earlier one was read before the call was posted.
            return Ok(());
        }
        // Acquire: pairs with the client's Release store of `consumed`: it has finished reading
        // the item we are about to overwrite.
        let w = self.rings[claim.client]
            .at(claim.slot)
            .consumed()
            .load(Ordering::Acquire);
        if stream && w & CONSUMED_ABANDONED != 0 {
            return Err(SendError::Disconnected);
        }
        if claim.n.wrapping_sub(w & CONSUMED_COUNT) < self.shared.layout.depth as u64 {
            return Ok(());
        }
        self.wait_room_slow(claim)
    }

    #[cold]
    fn wait_room_slow(&self, claim: &Claim) -> Result<(), SendError> {
        let ring = &self.rings[claim.client];
        let depth = self.shared.layout.depth as u64;
        let room = || {
            // Acquire: pairs with the client's Release store of `consumed`: it has finished
            // reading the item we are about to overwrite.
            let w = ring.consumed(claim.slot).load(Ordering::Acquire);
            if claim.n.wrapping_sub(w & CONSUMED_COUNT) < depth {
                Ok(true)
            } else if w & CONSUMED_ABANDONED != 0 {
                // The caller gave up on this stream: stop instead of waiting for room.
                Err(SendError::Disconnected)
            } else {
                Ok(false)
            }
        };
        if room()? {
            return Ok(());
        }
        let start = Instant::now();
        let deadline = start.checked_add(self.timeout);
        let mut last_check = start;
        let mut nap = Duration::from_micros(20);
        loop {
            if room()? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= last_check + CHECK_INTERVAL {
                last_check = now;
                if !self
                    .shared
                    .client_still_there(claim.client, claim.client_owner)
                {
                    return Err(SendError::Disconnected);
                }
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(SendError::Timeout(self.timeout));
            }
            if now < start + self.spin {
                std::hint::spin_loop();
                continue;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Publishes response item `claim.n` with `flags`, its payload written by `write` into the
    /// item's payload area (returning the length).
    #[inline]
    fn publish(
        &self,
        claim: &mut Claim,
        flags: u64,
        stream: bool,
        write: impl FnOnce(&mut [u8]) -> Result<usize, SendError>,
    ) -> Result<(), SendError> {
        self.wait_room(claim, stream)?;
        let ring = &self.rings[claim.client];
        let max = self.shared.layout.max_response;
        let ptr = ring.item_ref(claim.slot, claim.n).payload();
        // SAFETY: item n is ours to write: the client has consumed item n − depth (wait_room) and
        // reads item n only after its stamp says n + 1, stored below; ptr is valid for max bytes
        // (CallRing::item_payload).
        let len = write(unsafe { std::slice::from_raw_parts_mut(ptr, max) })?;
        self.commit(claim, flags, len);
        Ok(())
    }

    /// Gives up a call without END: marks it CANCELLED (no server writes to it any more), which
    /// the client treats like a gone server.
    #[cold]
    fn release(&self, claim: &Claim) {
        let claim_word = self.rings[claim.client].claim(claim.slot);
        let _ = claim_word.compare_exchange(
            call_state(claim.pos, self.index, TAKEN),
            call_state(claim.pos, self.index, CANCELLED),
            // Release: our last item writes come before; Relaxed on failure: not ours any more.
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Stamps item `claim.n` (its payload written) and wakes the client if it sleeps.
    #[inline]
    fn commit(&self, claim: &mut Claim, flags: u64, len: usize) {
        let ring = &self.rings[claim.client];
        let (slot, n) = (claim.slot, claim.n);
        // Relaxed: published by the Release stamp store.
        let item = ring.item_ref(slot, n);
        item.call().store(claim.pos, Ordering::Relaxed);
        item.len().store(len as u64, Ordering::Relaxed);
        item.flags().store(flags, Ordering::Relaxed);
        item.stamp().store(n.wrapping_add(1), Ordering::Release);
        claim.n = n.wrapping_add(1);
        // The server half of the response sleep handshake: publish, barrier, load `waiting`
        // (the client announces, then runs the heavy barrier: sync::barrier).
        barrier::light_as(self.asym);
        // Relaxed: ordered by the barrier pair.
        if ring.waiting().load(Ordering::Relaxed) != 0 {
            self.shared.wake_client(claim.client);
            self.wakes.set(self.wakes.get() + 1);
        }
    }
}

/// A request taken by a server, read in place. Dereferences to the request. Answer it with
/// [`Request::respond`], a loan ([`Request::loan`]) or a stream ([`Request::stream`]); dropping
/// it unanswered tells the caller [`crate::CallError::Aborted`].
pub struct Request<'s, Q: Payload + ?Sized, R: Payload + ?Sized> {
    core: &'s ServerCore,
    claim: Claim,
    /// The request in place (valid for 's: see `Deref`).
    view: *const Q::View,
    answered: bool,
    streaming: bool,
    _p: PhantomData<fn(&R)>,
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for Request<'_, Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("answered", &self.answered)
            .field("streaming", &self.streaming)
            .finish_non_exhaustive()
    }
}

impl<'s, Q: Payload + ?Sized, R: Payload + ?Sized> Request<'s, Q, R> {
    /// Index of the calling client's entry in the service (stable while the client lives).
    pub fn client(&self) -> usize {
        self.claim.client
    }

    /// Answers with one response, copied (or serialised) into the caller's response slot.
    #[inline]
    pub fn respond(mut self, response: &R::Input) -> Result<(), SendError> {
        // On error nothing was published: dropping `self` then aborts the call.
        self.core
            .publish(&mut self.claim, DATA | END, false, |buf| {
                R::encode(response, buf)
            })?;
        self.answered = true;
        Ok(())
    }

    /// Answers with a stream of responses: [`ResponseStream::send`] each, then
    /// [`ResponseStream::end`] (dropping the stream ends it too).
    pub fn stream(mut self) -> ResponseStream<'s, Q, R> {
        self.streaming = true;
        ResponseStream { request: self }
    }

    fn loan_raw(self, len: usize) -> Result<ResponseLoan<'s, Q, R>, SendError> {
        let max = self.core.shared.layout.max_response;
        SendError::check_fits(len, max)?;
        self.core.wait_room(&self.claim, false)?;
        let ring = &self.core.rings[self.claim.client];
        let ptr = ring.item_ref(self.claim.slot, self.claim.n).payload();
        Ok(ResponseLoan {
            request: self,
            ptr,
            len,
        })
    }
}

impl<'s, Q: Payload + ?Sized, T: bytemuck::Pod> Request<'s, Q, T> {
    /// Loans the caller's response slot for one `T`, written in place; [`ResponseLoan::send`]
    /// answers.
    pub fn loan(self) -> Result<ResponseLoan<'s, Q, T>, SendError> {
        self.loan_raw(std::mem::size_of::<T>())
    }
}

impl<'s, Q: Payload + ?Sized> Request<'s, Q, Bytes> {
    /// Loans the caller's response slot for `len` bytes, written in place.
    pub fn loan(self, len: usize) -> Result<ResponseLoan<'s, Q, Bytes>, SendError> {
        self.loan_raw(len)
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Deref for Request<'_, Q, R> {
    type Target = Q::View;
    fn deref(&self) -> &Q::View {
        // SAFETY: `view` was made in `Server::request` from the request area of a call this
        // server holds TAKEN; the client does not write that area before the call ends, which
        // takes `self` by value (so no reference from here outlives it).
        unsafe { &*self.view }
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Drop for Request<'_, Q, R> {
    fn drop(&mut self) {
        if !self.answered {
            let flags = if self.streaming { END } else { ABORTED | END };
            if self
                .core
                .publish(&mut self.claim, flags, self.streaming, |_| Ok(0))
                .is_err()
            {
                // The caller is gone or stuck: give the call up so its slot is not held for
                // this server's lifetime.
                self.core.release(&self.claim);
            }
        }
    }
}

/// A response slot loaned for writing in place. [`ResponseLoan::send`] answers the request;
/// dropping it unsent aborts the call.
pub struct ResponseLoan<'s, Q: Payload + ?Sized, R: Payload + ?Sized> {
    request: Request<'s, Q, R>,
    ptr: *mut u8,
    len: usize,
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for ResponseLoan<'_, Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseLoan")
            .field("request", &self.request)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> ResponseLoan<'_, Q, R> {
    /// Publishes the response to the caller.
    #[inline]
    pub fn send(mut self) {
        let req = &mut self.request;
        req.core.commit(&mut req.claim, DATA | END, self.len);
        req.answered = true;
    }

    /// The loaned bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the item is ours to write (room was waited for in `loan_raw`; the client reads
        // it only after our stamp); ptr is valid for max_response ≥ len bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<Q: Payload + ?Sized, T: bytemuck::Pod> Deref for ResponseLoan<'_, Q, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: as in `bytes_mut`; ptr is 32-aligned, T's alignment at most 32 (checked by the
        // builder), len == size_of::<T>() and any bytes are a valid Pod.
        unsafe { &*(self.ptr as *const T) }
    }
}

impl<Q: Payload + ?Sized, T: bytemuck::Pod> DerefMut for ResponseLoan<'_, Q, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the item is exclusively ours.
        unsafe { &mut *(self.ptr as *mut T) }
    }
}

impl<Q: Payload + ?Sized> Deref for ResponseLoan<'_, Q, Bytes> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<Q: Payload + ?Sized> DerefMut for ResponseLoan<'_, Q, Bytes> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes_mut()
    }
}

/// A stream of responses to one request (like gRPC server streaming). The caller reads them in
/// order with [`crate::Pending::next_response`]; a full stream waits for the caller (up to the
/// service's timeout) before sending more.
///
/// ```
/// let node = ringbus::Node::in_process();
/// let svc = node.service::<u32, u32>("doc-stream").stream_depth(4);
/// let server = svc.server()?;
/// let client = svc.client()?;
/// let mut pending = client.send(&3)?; // "count to 3"
/// let request = server.try_receive()?;
/// let n = *request;
/// let mut stream = request.stream();
/// for i in 1..=n {
///     stream.send(&i)?; // fits: the stream depth is 4
/// }
/// stream.end()?;
/// let mut got = Vec::new();
/// while let Some(item) = pending.next_response()? {
///     got.push(*item);
/// }
/// assert_eq!(got, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ResponseStream<'s, Q: Payload + ?Sized, R: Payload + ?Sized> {
    request: Request<'s, Q, R>,
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for ResponseStream<'_, Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("request", &self.request)
            .finish()
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> ResponseStream<'_, Q, R> {
    /// The request being answered.
    pub fn request(&self) -> &Q::View {
        &self.request
    }

    /// Sends one response of the stream. [`SendError::Disconnected`] if the caller has gone,
    /// [`SendError::Timeout`] if it does not read for the service's timeout.
    pub fn send(&mut self, response: &R::Input) -> Result<(), SendError> {
        let req = &mut self.request;
        req.core
            .publish(&mut req.claim, DATA, true, |buf| R::encode(response, buf))
    }

    /// Ends the stream: the caller's [`crate::Pending::next_response`] returns `None` after the responses
    /// sent so far.
    pub fn end(mut self) -> Result<(), SendError> {
        let req = &mut self.request;
        req.core.publish(&mut req.claim, END, true, |_| Ok(0))?;
        req.answered = true;
        Ok(())
    }
}
