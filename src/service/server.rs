//! The answering side of a service: servers take calls from every client's call ring.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::client::FIRST_POLLS;
use super::layout::{CallRing, Role, CTRL_FALLBACKS, CTRL_SERVERS};
use super::shared::ServiceShared;
use crate::error::{ReceiveError, SendError};
use crate::ring::call::{
    self, Holder, Room, ServerLock, ABORTED, DATA, END, FAIL_DISCONNECTED, FAIL_NO_SERVER,
    FAIL_SHIFT, FAIL_TIMEOUT,
};
use crate::sync::doorbell::ALL;
use crate::sync::{barrier, ProcessId};
use crate::sync::waiter::Parking;
use crate::sync::{CHECK_INTERVAL, QUIET_NAP};
use crate::topic::{Bytes, Payload};

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
    /// A fallback server (`ServiceBuilder::fallback_server`): takes calls only while no other
    /// server is registered.
    fallback: bool,
    /// A fallback server's last look for dead servers it deferred to.
    last_reclaim: Cell<Option<Instant>>,
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
    call: call::Call,
    /// Owner word of the client entry when the call was taken.
    client_owner: u64,
}

impl Claim {
    /// The request's length (`usize::MAX` if it does not fit).
    fn len(&self) -> usize {
        usize::try_from(self.call.len).unwrap_or(usize::MAX)
    }
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
        fallback: bool,
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
                fallback,
                last_reclaim: Cell::new(None),
                next_client: Cell::new(0),
                wakes: Cell::new(0),
                queue: Default::default(),
                queue_head: Cell::new(0),
                queue_len: Cell::new(0),
                lock_busy: Cell::new(0),
                busy: Cell::new(false),
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

    /// Waits for the next request without blocking a thread: a future that tries at once, then
    /// sleeps in the process's waiter (ARCHITECTURE.md, "Async") until a client posts a call.
    /// The same results as [`Server::receive`]; compose it with the runtime's timeout for a
    /// deadline. It first spins for the handle's
    /// `spin_before_sleep` without holding its thread (module doc, "Async").
    ///
    /// It borrows the server mutably so that the future is `Send` (it can be awaited in a task
    /// of a multi-threaded runtime); the request it returns keeps that borrow until it is
    /// answered or dropped, so an async server holds one request at a time. Cancel-safe:
    /// dropping the future loses no call (a call is taken only by the poll that returns it) and
    /// unregisters it.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-server-receive-async");
    /// let mut server = svc.server()?;
    /// let client = svc.client()?;
    /// let pending = client.send(&21)?;
    /// futures::executor::block_on(async {
    ///     let request = server.receive_async().await?;
    ///     let doubled = *request * 2;
    ///     request.respond(&doubled)?;
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// assert_eq!(*pending.wait()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_async(&mut self) -> ReceiveRequest<'_, Q, R> {
        ReceiveRequest {
            inner: Receiving::new(self),
            _exclusive: PhantomData,
        }
    }

    /// As [`Server::receive_async`], but borrowing the server shared: the requests it returns
    /// borrow it shared too, so one thread may hold many at once (answer one while awaiting the
    /// next: a relay that has many calls in flight). The future is not `Send`: await it in a
    /// single-threaded executor (a local task set), with the other tasks of that thread.
    ///
    /// Keep **one** receive future of a server pending at a time (await them one after the
    /// other, as below): they all wait on the server's one doorbell bit, and a second pending
    /// future may not be woken when the first one ends.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-receive-async-shared");
    /// let server = svc.server()?;
    /// let client = svc.client()?;
    /// let (a, b) = (client.send(&1)?, client.send(&2)?);
    /// futures::executor::block_on(async {
    ///     let first = server.receive_async_shared().await?;
    ///     let second = server.receive_async_shared().await?; // the first is still held
    ///     let (x, y) = (*first, *second);
    ///     second.respond(&(y * 10))?;
    ///     first.respond(&(x * 10))?;
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// assert_eq!((*a.wait()?, *b.wait()?), (10, 20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_async_shared(&self) -> ReceiveShared<'_, Q, R> {
        ReceiveShared {
            inner: Receiving::new(self),
        }
    }

    #[inline]
    fn request(&self, claim: Claim) -> Result<Request<'_, Q, R>, ReceiveError> {
        let core = &self.core;
        let layout = &core.shared.layout;
        let len = claim.len();
        let view = if len > layout.max_request || Q::fixed_size().is_some_and(|f| f != len) {
            Err(format!(
                "request length {} (maximum {})",
                claim.call.len, layout.max_request
            ))
        } else {
            let ring = &core.rings[claim.client];
            let ptr = ring.request(claim.call.slot);
            // SAFETY: the call is TAKEN by this server: its client writes the slot's request
            // area only after the call ends (this server's END item) or this server dies; ptr
            // is valid for len ≤ max_request bytes (CallRing::request) and 32-aligned (request
            // area in a 64-aligned call slot of a page-aligned region).
            unsafe { Q::view(ptr, len) }
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

/// The future of [`Server::receive_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct ReceiveRequest<'a, Q: Payload + ?Sized, R: Payload + ?Sized> {
    inner: Receiving<'a, Q, R>,
    /// The borrow it was made from: exclusive (see the `Send` impl).
    _exclusive: PhantomData<&'a mut Server<Q, R>>,
}

// SAFETY: a `ReceiveRequest` is made only by `Server::receive_async` from `&'a mut Server`, so
// for 'a no other reference to the server exists: the future (and the request it returns) is
// the only way to the server's `Cell`s, and moving it to another thread moves that exclusive
// access with it, as moving the `&mut` would (`Server` is `Send`).
unsafe impl<Q: Payload + ?Sized, R: Payload + ?Sized> Send for ReceiveRequest<'_, Q, R> where
    Server<Q, R>: Send
{
}

/// The future of [`Server::receive_async_shared`]: as [`ReceiveRequest`], but made from a
/// shared borrow, so it is not `Send`.
#[must_use = "futures do nothing unless awaited"]
pub struct ReceiveShared<'a, Q: Payload + ?Sized, R: Payload + ?Sized> {
    inner: Receiving<'a, Q, R>,
}

/// The wait of both receive futures.
struct Receiving<'a, Q: Payload + ?Sized, R: Payload + ?Sized> {
    /// None once the future returned.
    server: Option<&'a Server<Q, R>>,
    parking: Parking,
    /// Polls in a row that found a posted call behind a busy claim lock.
    busy_rounds: u32,
}

impl<'a, Q: Payload + ?Sized, R: Payload + ?Sized> Receiving<'a, Q, R> {
    fn new(server: &'a Server<Q, R>) -> Self {
        Receiving {
            parking: Parking::new(server.core.spin),
            server: Some(server),
            busy_rounds: 0,
        }
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for ReceiveRequest<'_, Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveRequest")
            .field("server", &self.inner.server)
            .field("parking", &self.inner.parking)
            .finish()
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for ReceiveShared<'_, Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveShared")
            .field("server", &self.inner.server)
            .field("parking", &self.inner.parking)
            .finish()
    }
}

impl<'a, Q: Payload + ?Sized, R: Payload + ?Sized> Future for ReceiveRequest<'a, Q, R> {
    type Output = Result<Request<'a, Q, R>, ReceiveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().inner.poll(cx)
    }
}

impl<'a, Q: Payload + ?Sized, R: Payload + ?Sized> Future for ReceiveShared<'a, Q, R> {
    type Output = Result<Request<'a, Q, R>, ReceiveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().inner.poll(cx)
    }
}

impl<'a, Q: Payload + ?Sized, R: Payload + ?Sized> Receiving<'a, Q, R> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Request<'a, Q, R>, ReceiveError>> {
        let this = self;
        let server = this
            .server
            .expect("ReceiveRequest polled after it returned");
        let core = &server.core;
        let bell = core.rings[0].request_bell();
        let got = match core.poll() {
            None => {
                // As `wait`: a posted call behind a claim lock held for a moment gets no wake;
                // yield to the executor a while, then retry at short naps.
                let nap = if core.busy.replace(false) {
                    this.busy_rounds += 1;
                    if this.busy_rounds <= BUSY_ROUNDS {
                        this.parking.finish(bell, core.index);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    barrier::FALLBACK_NAP
                } else {
                    this.busy_rounds = 0;
                    // A fallback server naps short: calls posted while it deferred ring nobody
                    // when the other servers leave.
                    if core.fallback {
                        CHECK_INTERVAL
                    } else {
                        QUIET_NAP
                    }
                };
                let keep = || core.shared.clone() as Arc<dyn Send + Sync>;
                // The sleeper's half of the servers' doorbell, as `wait`'s, with the waiter
                // watching the word instead of a blocked thread. A call found behind a busy lock
                // by the recheck ends the wait too (polled again at once).
                let got = this
                    .parking
                    .park(bell, core.index, nap, keep, cx.waker(), || {
                        let got = core.poll();
                        (got.is_some() || core.busy.get()).then_some(got)
                    });
                match got {
                    None => return Poll::Pending,
                    Some(None) => {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Some(Some(claim)) => claim,
                }
            }
            Some(claim) => {
                this.parking.finish(bell, core.index);
                claim
            }
        };
        this.server = None;
        Poll::Ready(server.request(got))
    }
}


impl<Q: Payload + ?Sized, R: Payload + ?Sized> Drop for Receiving<'_, Q, R> {
    fn drop(&mut self) {
        if let Some(server) = self.server {
            let bell = server.core.rings[0].request_bell();
            self.parking.finish(bell, server.core.index);
        }
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Drop for Server<Q, R> {
    fn drop(&mut self) {
        // Requests borrow the server: none is alive here. Calls taken but not handed out go
        // back to the other servers.
        self.core.give_back();
        self.core.shared.leave(Role::Server, self.core.index);
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
        if self.fallback && self.defers() {
            return None;
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

    /// A fallback server's test: whether an ordinary server is registered, so that this one
    /// leaves the calls to it. A registered server that died would keep it deferring: once per
    /// `CHECK_INTERVAL` it reclaims dead servers.
    #[cold]
    fn defers(&self) -> bool {
        let r = self.shared.region();
        let primaries = || {
            // Relaxed: hints, rechecked at every poll; the calls themselves are taken under
            // the ring's claim lock.
            r.u64_at(CTRL_SERVERS).load(Ordering::Relaxed)
                & !r.u64_at(CTRL_FALLBACKS).load(Ordering::Relaxed)
                != 0
        };
        if !primaries() {
            return false;
        }
        let now = Instant::now();
        if self
            .last_reclaim
            .get()
            .map_or(true, |t| now >= t + CHECK_INTERVAL)
        {
            self.last_reclaim.set(Some(now));
            self.shared.reclaim_dead();
            return primaries();
        }
        true
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
        if !call::worth_taking(ring) {
            return false;
        }
        let mut lock = match ServerLock::acquire(ring, self.index) {
            Ok(lock) => lock,
            Err(holder) => {
                self.lock_busy(holder, c);
                return false;
            }
        };
        // With other servers registered, take one call at a time: calls queued here could not
        // be served by an idle peer meanwhile.
        // Relaxed: a hint for the batch size only.
        let servers = ring.servers().load(Ordering::Relaxed);
        let room = if servers & servers.wrapping_sub(1) != 0 {
            1
        } else {
            BATCH - self.queue_len.get()
        };
        // Relaxed: the owner word is stable while the entry is registered; it only tells a
        // streaming server later whether the same client is still there.
        let client_owner = ring.owner().load(Ordering::Relaxed);
        let taken = lock.take(self.owner, room, |call| {
            let at = (self.queue_head.get() + self.queue_len.get()) % BATCH;
            self.queue[at].set(Some(Claim {
                client: c,
                call,
                client_owner,
            }));
            self.queue_len.set(self.queue_len.get() + 1);
        });
        taken > 0
    }

    /// Gives back the calls taken but not handed out (a dropped server): they become posted
    /// again for the other servers. Falls back to aborting them if the claim lock stays busy.
    fn give_back(&self) {
        let Some(first) = self.queue[self.queue_head.get()].get() else {
            return;
        };
        let ring = &self.rings[first.client];
        let mut lock = None;
        for _ in 0..1000 {
            if let Ok(l) = ServerLock::acquire(ring, self.index) {
                lock = Some(l);
                break;
            }
            std::thread::yield_now();
        }
        let got = lock.is_some();
        while let Some(mut claim) = self.dequeue() {
            match &mut lock {
                Some(lock) if claim.client == first.client => lock.give_back(&claim.call),
                _ => {
                    if self
                        .publish(&mut claim, ABORTED | END, false, |_| Ok(0))
                        .is_err()
                    {
                        self.release(&claim);
                    }
                }
            }
        }
        drop(lock);
        if got {
            // A sleeping server takes them now rather than at its next timeout.
            ring.request_bell().ring(1);
        }
    }

    /// A client's claim lock was busy: now and then, look whether its holder died.
    #[cold]
    fn lock_busy(&self, holder: Holder, c: usize) {
        if let Holder::Garbage(_) = holder {
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
        match holder {
            Holder::Server(s) => self.shared.reclaim_server_if_dead(s),
            _ => {
                if !self.shared.is_live(Role::Client, c) {
                    self.shared.reclaim_dead();
                }
            }
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
        let watch = call::watch_head(&self.rings[last]);
        for i in 1..FIRST_POLLS {
            if watch.ready() || i % 16 == 0 {
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
        let bell = self.rings[0].request_bell();
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
            if self.fallback {
                // Calls posted while it deferred ring nobody when the other servers leave.
                nap = nap.min(CHECK_INTERVAL);
            }
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
            // The sleeper's half of the servers' doorbell (sync::doorbell): a client posts, then
            // rings. No sleep either when the recheck found a call behind a busy lock.
            let got = bell.sleep_unless(self.index, nap, || {
                let got = self.poll();
                (got.is_some() || self.busy.get()).then_some(got)
            });
            if let Some(Some(claim)) = got {
                return Ok(claim);
            }
        }
    }

    /// Waits until the call's next item may be written (the client has consumed the item it
    /// overwrites). For a stream (`stream`), a caller that gave up stops it at once.
    #[inline]
    fn wait_room(&self, claim: &Claim, stream: bool) -> Result<(), SendError> {
        match claim.call.room(&self.rings[claim.client], stream) {
            Room::Ready => Ok(()),
            Room::Abandoned => Err(SendError::Disconnected),
            Room::Full => self.wait_room_slow(claim, stream),
        }
    }

    #[cold]
    fn wait_room_slow(&self, claim: &Claim, stream: bool) -> Result<(), SendError> {
        let ring = &self.rings[claim.client];
        let start = Instant::now();
        let deadline = start.checked_add(self.timeout);
        let mut last_check = start;
        let mut nap = Duration::from_micros(20);
        loop {
            match claim.call.room(ring, stream) {
                Room::Ready => return Ok(()),
                // The caller gave up on this call: stop instead of waiting for room.
                Room::Abandoned => return Err(SendError::Disconnected),
                Room::Full => {}
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

    /// Publishes the call's next response item with `flags`, its payload written by `write` into
    /// the item's payload area (returning the length).
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
        let ptr = ring.item_payload(claim.call.slot, claim.call.item());
        // SAFETY: the item is ours to write: the client has consumed the item it overwrites
        // (wait_room) and reads it only after its stamp, stored by `commit` (ring::call
        // invariant 3); ptr is valid for max bytes (CallRing::item_payload).
        let len = write(unsafe { std::slice::from_raw_parts_mut(ptr, max) })?;
        self.commit(claim, flags, len);
        Ok(())
    }

    /// Gives up a call without END (no server writes to it any more), which the client treats
    /// like a gone server.
    #[cold]
    fn release(&self, claim: &Claim) {
        claim.call.release(&self.rings[claim.client], self.index);
    }

    /// Publishes the call's next item (its payload written) and wakes the client if it sleeps.
    #[inline]
    fn commit(&self, claim: &mut Claim, flags: u64, len: usize) {
        let ring = &self.rings[claim.client];
        claim.call.commit(ring, flags, len as u64);
        // The ringer's half of the client's doorbell (sync::doorbell): publish, then ring.
        if ring.bell().ring(ALL) {
            self.wakes.set(self.wakes.get() + 1);
        }
    }
}

/// How a relayed call failed further on: what [`Request::fail`] hands to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The call timed out further on: the caller gets [`crate::CallError::Timeout`].
    Timeout,
    /// No server serves the service further on: [`crate::CallError::NoServer`].
    NoServer,
    /// The server further on, or the link to it, died: [`crate::CallError::Disconnected`].
    Disconnected,
}

impl Failure {
    fn code(self) -> u64 {
        match self {
            Failure::Timeout => FAIL_TIMEOUT,
            Failure::NoServer => FAIL_NO_SERVER,
            Failure::Disconnected => FAIL_DISCONNECTED,
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

crate::debug_fields!(Request<'_, Q, R>: answered, streaming);

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

    /// The calling client's call timeout (`ServiceBuilder::timeout` of the client's handle):
    /// how long the caller waits at most. A server that relays calls elsewhere (a network
    /// bridge) gives the call there no longer than that. `None` if the client recorded none.
    /// (A value another process wrote: a hint, never trusted for memory safety.)
    pub fn caller_timeout(&self) -> Option<Duration> {
        let shared = &self.core.shared;
        let off = shared.layout.client_entry(self.claim.client) + super::layout::CLIENT_CALL_TIMEOUT;
        // Relaxed: see the store in `ServiceBuilder::client`.
        let nanos = shared.region().u64_at(off).load(Ordering::Relaxed);
        (nanos != 0).then(|| Duration::from_nanos(nanos))
    }

    /// Ends the call with `failure`: the caller's wait returns the matching [`crate::CallError`]
    /// (`Timeout`, `NoServer` or `Disconnected`) instead of `Aborted`. For a server that relays
    /// calls elsewhere (a network bridge) to hand on what happened there; an ordinary server
    /// answers or drops the request.
    ///
    /// ```
    /// use ringbus::service::Failure;
    /// use ringbus::{CallError, Node};
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-fail");
    /// let server = svc.server()?;
    /// let client = svc.client()?;
    /// let pending = client.send(&1)?;
    /// server.try_receive()?.fail(Failure::NoServer)?;
    /// assert!(matches!(pending.wait(), Err(CallError::NoServer)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fail(mut self, failure: Failure) -> Result<(), SendError> {
        let flags = ABORTED | END | failure.code() << FAIL_SHIFT;
        self.core
            .publish(&mut self.claim, flags, self.streaming, |_| Ok(0))?;
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
        let ptr = ring.item_payload(self.claim.call.slot, self.claim.call.item());
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

crate::debug_fields!(ResponseLoan<'_, Q, R>: request, len);

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

crate::topic::loan_views!(ResponseLoan<'_, Q, R> writes R);

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

crate::debug_fields!(ResponseStream<'_, Q, R>: request);

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

    /// Ends the stream with `failure` after the responses sent so far: the caller's
    /// [`crate::Pending::next_response`] returns them, then the matching error
    /// ([`Request::fail`]).
    pub fn fail(self, failure: Failure) -> Result<(), SendError> {
        self.request.fail(failure)
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
