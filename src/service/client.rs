//! The calling side of a service: one call ring per client, one call slot per call in flight.

use std::cell::Cell;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::layout::{CallRing, Role, ASYNC_BITS, CLIENT_BIT};
use super::shared::{ClientEnv, ServiceShared};
use crate::discovery::PeerJoined;
use crate::error::{CallError, SendError};
use crate::ring::call::{
    self, Caller, Check, Holder, Phase, ABORTED, DATA, END, FAIL_DISCONNECTED, FAIL_NO_SERVER,
    FAIL_SHIFT, FAIL_TIMEOUT, MAX_POSITION,
};
use crate::sync::waiter::Parking;
use crate::sync::CHECK_INTERVAL;
use crate::topic::{Bytes, Payload};

pub(crate) use crate::sync::FIRST_POLLS;

/// Longest single sleep of a waiting client: it rechecks the call's server at least this often.
const MAX_NAP: Duration = CHECK_INTERVAL;

/// Calls a service: sends requests of kind `Q`, receives responses of kind `R`. Created by
/// [`crate::ServiceBuilder::client`].
///
/// A client owns `max_in_flight` call slots in shared memory and uses them in turn: call `n`
/// goes to slot `n % max_in_flight`. [`Client::send`] returns a [`Pending`] call, so one client
/// can keep many calls in flight; [`Client::call`] sends and waits. Responses are read in place
/// ([`Response`]) and reach only this client. A client is `Send` but not `Sync`: one thread
/// calls through it at a time.
///
/// ```
/// use ringbus::Node;
///
/// let node = Node::in_process();
/// let svc = node.service::<u64, u64>("doc-client");
/// let server = svc.server()?;
/// let client = svc.client()?;
/// let pending = client.send(&20)?;          // the request is in shared memory now
/// let request = server.try_receive()?;      // (normally in another process or thread)
/// let doubled = *request * 2;
/// request.respond(&doubled)?;
/// assert_eq!(*pending.wait()?, 40);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client<Q: Payload + ?Sized, R: Payload + ?Sized> {
    core: ClientCore,
    _p: PhantomData<fn(&Q, &R)>,
}

/// A client's own options (see `ServiceBuilder`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientOptions {
    pub(crate) timeout: Duration,
    pub(crate) spin: Duration,
    pub(crate) wait_for_server: bool,
    pub(crate) wait_when_busy: bool,
}

/// What a client needs whatever its types. Aligned to 128 bytes (and so padded to a multiple
/// of it): the fields it writes on every call share no cache line with a neighbour's data,
/// which would cost a cache miss per call when client and server are threads of one process.
#[repr(align(128))]
pub(crate) struct ClientCore {
    /// This client's call ring (points into `shared`'s mapping, which it never outlives).
    ring: CallRing,
    /// The ring's client-side protocol state (`ring::call`).
    caller: Caller,
    shared: Arc<ServiceShared>,
    index: usize,
    timeout: Duration,
    spin: Duration,
    wait_for_server: bool,
    /// Whether `send` waits for a call slot held by an abandoned call.
    wait_when_busy: bool,
    /// Last liveness check made from a non-waiting path (Busy).
    last_check: Cell<Option<Instant>>,
    /// Responses that arrived for abandoned calls and were dropped unread.
    discarded: Cell<u64>,
    /// Per async doorbell bit (`ASYNC_BITS`), the awaited calls of this client that count on it:
    /// the last one to finish clears it.
    bit_users: [Cell<u32>; ASYNC_BITS],
}

/// A response item found in a slot.
#[derive(Clone, Copy)]
struct Item {
    /// The payload (in bounds for the service's maximum response size).
    ptr: *mut u8,
    /// Its length, `usize::MAX` if out of range.
    len: usize,
    flags: u64,
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> std::fmt::Debug for Client<Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.core.shared.name)
            .field("index", &self.core.index)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Client<Q, R> {
    pub(crate) fn new(shared: Arc<ServiceShared>, index: usize, options: ClientOptions) -> Self {
        let core = ClientCore::adopt(shared, index, options);
        Client {
            core,
            _p: PhantomData,
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.core.shared.name
    }

    /// The largest request the service accepts, in bytes.
    pub fn max_request_size(&self) -> usize {
        self.core.shared.layout.max_request
    }

    /// How many calls this client may have in flight (its call slots).
    pub fn max_in_flight(&self) -> usize {
        self.core.shared.layout.in_flight
    }

    /// Waits without a thread until a live server is registered (at once if one is):
    /// discovery, for a client started before its service's servers. Checked at least every
    /// [`crate::discovery::DISCOVERY_NAP`]; no deadline (compose it with the runtime's timeout).
    /// (The blocking alternative is the builder's `wait_for_server(true)`, per call.)
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u64, u64>("doc-wait-for-server");
    /// let mut client = svc.client()?;
    /// let _server = svc.server()?; // another process would join
    /// futures::executor::block_on(client.wait_for_server());
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn wait_for_server(&mut self) -> PeerJoined<'_> {
        let shared = &*self.core.shared;
        PeerJoined::new(move || shared.any_live_server())
    }

    /// Call slots in use now: calls held by the caller (loans, pending calls, responses) and
    /// abandoned calls a server still holds.
    pub fn in_flight(&self) -> usize {
        self.core.caller.in_flight()
    }

    /// Responses that arrived after their call was abandoned (timed out or dropped) and were
    /// discarded.
    pub fn discarded(&self) -> u64 {
        self.core.discarded.get()
    }

    /// Reclaims the slots of abandoned calls whose responses have arrived (or whose server died)
    /// without sending anything. Returns the number of slots still in use.
    pub fn collect(&self) -> usize {
        for slot in 0..self.core.shared.layout.in_flight {
            self.core.collect_slot(slot, true);
        }
        self.in_flight()
    }

    fn loan_raw(&self, len: usize) -> Result<RequestLoan<'_, Q, R>, CallError> {
        let (slot, pos) = self.core.reserve(len)?;
        let ptr = self.core.ring.request(slot);
        Ok(RequestLoan {
            core: &self.core,
            slot,
            pos,
            ptr,
            len,
            sent: false,
            _p: PhantomData,
        })
    }

    /// Copies (or serialises) `request` into the next call slot and sends it; returns the pending
    /// call. Fails at once with [`CallError::NoServer`] if no server is registered (unless the
    /// service was built with `wait_for_server`), [`CallError::Busy`] if the slot is still in
    /// use, [`CallError::TooLarge`] or [`CallError::Serialize`] if the request does not fit.
    /// (A server that died but was not yet noticed still counts as registered: the call then
    /// fails when its waiter next checks, within [`crate::CHECK_INTERVAL`].)
    pub fn send(&self, request: &Q::Input) -> Result<Pending<'_, R>, CallError> {
        let max = self.core.shared.layout.max_request;
        let mut loan = self.loan_raw(Q::fixed_size().unwrap_or(0))?;
        // SAFETY: the slot is reserved by this client and not posted: no server reads it (a
        // server reads a slot only after its POSTED state, stored later by `post`); ptr is valid
        // for max_request bytes (Region::ptr bounds-checks).
        let buf = unsafe { std::slice::from_raw_parts_mut(loan.ptr, max) };
        loan.len = Q::encode(request, buf)?;
        Ok(loan.send())
    }

    /// Sends `request` and waits for its response, up to the service's timeout.
    pub fn call(&self, request: &Q::Input) -> Result<Response<'_, R>, CallError> {
        self.send(request)?.wait()
    }

    /// Sends `request` and awaits its response without blocking a thread, up to the service's
    /// timeout: [`Client::send`] (at once, when called), then [`Pending::wait_async`]. The same
    /// results as [`Client::call`].
    ///
    /// The future borrows the client, which is not `Sync`: it is not `Send`. Many calls of one
    /// client may be awaited at once in one thread (`join`, a `LocalSet`, a current-thread
    /// runtime); a task of a multi-threaded runtime should own its own client.
    ///
    /// The send itself never waits, except on a client built with `wait_when_busy(true)` or
    /// `wait_for_server(true)`: its send waits, blocking the executor's thread, for a call slot
    /// still held by an abandoned call, or for a first server. Async callers leave those options
    /// off (the send then fails at once with [`CallError::Busy`] or [`CallError::NoServer`]) and
    /// await [`Client::wait_for_server`] instead.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-call-async");
    /// let server = svc.server()?;
    /// let client = svc.client()?;
    /// let answering = std::thread::spawn(move || {
    ///     let request = server.receive().unwrap();
    ///     let squared = *request * *request;
    ///     request.respond(&squared)
    /// });
    /// let got = futures::executor::block_on(async {
    ///     let response = client.call_async(&7).await?;
    ///     Ok::<u32, ringbus::CallError>(*response)
    /// })?;
    /// assert_eq!(got, 49);
    /// answering.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_async(&self, request: &Q::Input) -> WaitResponse<'_, R> {
        match self.send(request) {
            Ok(pending) => pending.wait_async(),
            Err(e) => WaitResponse::failed(e),
        }
    }

    /// Like [`Client::call`] with an explicit timeout.
    pub fn call_timeout(
        &self,
        request: &Q::Input,
        timeout: Duration,
    ) -> Result<Response<'_, R>, CallError> {
        self.send(request)?.wait_timeout(timeout)
    }
}

impl<T: bytemuck::Pod, R: Payload + ?Sized> Client<T, R> {
    /// Loans the next call slot for one `T`, written in place; [`RequestLoan::send`] posts it.
    ///
    /// ```
    /// let node = ringbus::Node::in_process();
    /// let svc = node.service::<[u64; 2], u64>("doc-client-loan");
    /// let server = svc.server()?;
    /// let client = svc.client()?;
    /// let mut loan = client.loan()?;
    /// *loan = [3, 4];
    /// let pending = loan.send();
    /// let req = server.try_receive()?;
    /// let sum = req[0] + req[1];
    /// req.respond(&sum)?;
    /// assert_eq!(*pending.wait()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn loan(&self) -> Result<RequestLoan<'_, T, R>, CallError> {
        self.loan_raw(std::mem::size_of::<T>())
    }
}

impl<R: Payload + ?Sized> Client<Bytes, R> {
    /// Loans the next call slot for a request of `len` bytes, written in place.
    pub fn loan(&self, len: usize) -> Result<RequestLoan<'_, Bytes, R>, CallError> {
        self.loan_raw(len)
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Drop for Client<Q, R> {
    fn drop(&mut self) {
        // Loans, pending calls and responses borrow the client: none is alive here. Calls a
        // server still holds are left to it; the next client of this entry adopts the slots.
        self.core.shared.leave(Role::Client, self.core.index);
    }
}

impl ClientCore {
    /// Takes over client entry `index`'s ring as the previous owner (if any) left it: posted calls
    /// are cancelled, published responses drained, calls a live server still holds abandoned.
    fn adopt(shared: Arc<ServiceShared>, index: usize, options: ClientOptions) -> ClientCore {
        let ring = shared.ring(index);
        let caller = Caller::adopt(&ring);
        let core = ClientCore {
            ring,
            caller,
            shared,
            index,
            timeout: options.timeout,
            spin: options.spin,
            wait_for_server: options.wait_for_server,
            wait_when_busy: options.wait_when_busy,
            last_check: Cell::new(None),
            discarded: Cell::new(0),
            bit_users: std::array::from_fn(|_| Cell::new(0)),
        };
        for slot in 0..core.shared.layout.in_flight {
            core.collect_slot(slot, true);
        }
        core
    }

    /// What the call ring asks of this service (lock waits, liveness).
    fn env(&self) -> ClientEnv<'_> {
        ClientEnv::new(&self.shared)
    }

    /// Reserves the next call slot for a request of `len` bytes.
    fn reserve(&self, len: usize) -> Result<(usize, u64), CallError> {
        let layout = &self.shared.layout;
        SendError::check_fits(len, layout.max_request)?;
        if self.caller.loaned() {
            // Servers take calls in position order: a later call must not pass the loan's.
            return Err(CallError::LoanOutstanding);
        }
        let (slot, pos) = self.caller.next();
        if pos > MAX_POSITION {
            return Err(CallError::Busy {
                max_in_flight: layout.in_flight,
            });
        }
        if self.caller.phase(slot) != Phase::Free {
            let now = Instant::now();
            let check = self
                .last_check
                .get()
                .map_or(true, |t| now >= t + CHECK_INTERVAL);
            if check {
                self.last_check.set(Some(now));
            }
            self.collect_slot(slot, check);
            if self.caller.phase(slot) == Phase::Abandoned && self.wait_when_busy {
                self.wait_for_slot(slot);
            }
            if self.caller.phase(slot) != Phase::Free {
                return Err(CallError::Busy {
                    max_in_flight: layout.in_flight,
                });
            }
        }
        // Relaxed: a hint; a server that dies unnoticed is caught by the waiting call's checks.
        if self.ring.servers().load(Ordering::Relaxed) == 0 {
            self.wait_for_a_server()?;
        }
        self.caller.reserve(slot, pos);
        Ok((slot, pos))
    }

    /// Waits, up to the timeout, for the abandoned call in `slot` to end (its late answer, or
    /// its server's death). A call the caller still holds cannot end while it waits: not here.
    #[cold]
    fn wait_for_slot(&self, slot: usize) {
        let deadline = Instant::now().checked_add(self.timeout);
        let mut last_check = Instant::now();
        while self.caller.phase(slot) == Phase::Abandoned {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return;
            }
            let check = now >= last_check + CHECK_INTERVAL;
            if check {
                last_check = now;
            }
            self.collect_slot(slot, check);
            if self.caller.phase(slot) != Phase::Abandoned {
                return;
            }
            // Sleep until a server publishes to this client.
            let nap = deadline.map_or(MAX_NAP, |d| (d - now).min(MAX_NAP));
            self.sleep_unless(nap, || {
                self.collect_slot(slot, false);
                (self.caller.phase(slot) != Phase::Abandoned).then_some(())
            });
        }
    }

    /// The client half of the response handshake (sync::doorbell): sleeps up to `nap` on this
    /// client's doorbell unless `ready` finds something; a server publishes an item, then rings.
    #[cold]
    fn sleep_unless<T>(&self, nap: Duration, ready: impl FnOnce() -> Option<T>) -> Option<T> {
        self.ring.bell().sleep_unless(CLIENT_BIT, nap, ready)
    }

    #[cold]
    fn wait_for_a_server(&self) -> Result<(), CallError> {
        if !self.wait_for_server {
            return Err(CallError::NoServer);
        }
        let deadline = Instant::now().checked_add(self.timeout);
        let servers = self.ring.servers();
        let mut nap = Duration::from_micros(50);
        // Relaxed: polled; a server's join is published with SeqCst under the lock.
        while servers.load(Ordering::Relaxed) == 0 {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(CallError::NoServer);
            }
            std::thread::sleep(deadline.map_or(nap, |d| nap.min(d - now)));
            nap = (nap * 2).min(MAX_NAP);
        }
        Ok(())
    }

    /// Publishes the request in `slot` (written through a loan) to the servers.
    #[inline]
    fn post(&self, slot: usize, pos: u64, len: usize) {
        self.caller.post(&self.ring, slot, pos, len as u64);
        // The ringer's half of the servers' doorbell (sync::doorbell): post, then ring one.
        self.ring.request_bell().ring(1);
    }

    /// A loan dropped unsent: its position must still pass, so servers see it cancelled.
    fn unpost(&self, slot: usize, pos: u64) {
        self.caller.unpost(&self.ring, slot, pos);
    }

    /// The next published response item of `slot`'s call, if any (see `Caller::poll`); an item
    /// whose length is out of range has length `usize::MAX`.
    #[inline]
    fn poll_item(&self, slot: usize) -> Option<Item> {
        let item = self.caller.poll(&self.ring, slot)?;
        let len = usize::try_from(item.len)
            .ok()
            .filter(|l| *l <= self.shared.layout.max_response)
            .unwrap_or(usize::MAX);
        Some(Item {
            ptr: self.ring.item_payload(slot, item.n),
            len,
            flags: item.flags,
        })
    }

    /// Marks the item at the head of `slot` read.
    #[inline]
    fn consume(&self, slot: usize, last: bool) {
        self.caller.consume(&self.ring, slot, last);
    }

    /// The caller is done with `slot`'s call: free the slot if the call ended or can be
    /// cancelled, else abandon it to its server.
    fn finish(&self, slot: usize) {
        let d = self.caller.finish(&self.ring, slot, &mut self.env());
        self.discarded.set(self.discarded.get() + d);
    }

    /// Whether `slot` still holds the caller's call at `pos` (not failed, freed or reused).
    fn is_current(&self, slot: usize, pos: u64) -> bool {
        self.caller.is_current(slot, pos)
    }

    /// For an abandoned slot: discards the responses that arrived; frees the slot once the call
    /// is over, or (with `check`) its server is gone (reads `/proc`).
    fn collect_slot(&self, slot: usize, check: bool) {
        let d = self
            .caller
            .collect(&self.ring, slot, check, &mut self.env());
        self.discarded.set(self.discarded.get() + d);
    }

    /// Counts a call abandoned at its timeout, for observers (`ringbus inspect`).
    #[cold]
    fn count_timeout(&self) {
        // Relaxed: a statistic; only this client writes the word.
        let t = self.ring.timeouts();
        t.store(t.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Checks, for a waiting call, that someone can still answer it.
    #[cold]
    fn check_call(&self, slot: usize) -> Result<(), CallError> {
        let mut env = self.env();
        match self.caller.check(&self.ring, slot, &mut env) {
            Check::Posted => {
                if self.wait_for_server || self.shared.any_live_server() {
                    // A dead server may still hold the ring's claim lock: free it.
                    if let Some(Holder::Server(s)) = call::lock_holder(&self.ring) {
                        self.shared.reclaim_server_if_dead(s);
                    }
                    return Ok(());
                }
                self.shared.reclaim_dead();
                if self.caller.cancel(&self.ring, slot, &mut env) {
                    return Err(CallError::NoServer);
                }
                Ok(())
            }
            Check::Taken => Ok(()),
            Check::TakerGone => Err(CallError::Disconnected),
            Check::Over => Err(CallError::Aborted),
        }
    }

    /// Waits up to `timeout` for the next response item of `slot`'s call. Reads the clock only if
    /// the item is not there yet.
    #[inline]
    fn wait_item(&self, slot: usize, timeout: Duration) -> Result<Item, CallError> {
        match self.poll_item(slot) {
            Some(item) => Ok(item),
            None => self.wait_item_slow(slot, timeout),
        }
    }

    #[inline(never)]
    fn wait_item_slow(&self, slot: usize, timeout: Duration) -> Result<Item, CallError> {
        // A round trip is a few hundred nanoseconds: poll a while before the first clock read,
        // which would delay noticing an answer that arrives meanwhile.
        // (Not when told to sleep at once: spin_before_sleep(ZERO).)
        let polls = if self.spin.is_zero() { 0 } else { FIRST_POLLS };
        // No pause instruction between these polls: it costs about 20 ns here, a tenth of a
        // round trip (measured: `ringbus bench rpc`).
        // The loop watches only the stamp the next item will carry (as tight as a raw atomic
        // ping-pong); `poll_item` then reads the item.
        let watch = self.caller.watch(&self.ring, slot);
        for _ in 0..polls {
            if watch.ready() {
                break;
            }
        }
        if let Some(item) = self.poll_item(slot) {
            return Ok(item);
        }
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let spin_until = start + self.spin;
        let mut last_check = start;
        let mut spins = 0u32;
        loop {
            if let Some(item) = self.poll_item(slot) {
                return Ok(item);
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 {
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(CallError::Timeout(timeout));
            }
            if now >= last_check + CHECK_INTERVAL {
                last_check = now;
                self.check_call(slot)?;
            }
            if now < spin_until {
                continue;
            }
            let nap = deadline.map_or(MAX_NAP, |d| (d - now).min(MAX_NAP));
            if let Some(item) = self.sleep_unless(nap, || self.poll_item(slot)) {
                return Ok(item);
            }
        }
    }

    /// Turns the head item of `slot` into a response (or the end of the call).
    fn deliver<'a, R: Payload + ?Sized>(
        &'a self,
        slot: usize,
        item: Item,
        owns_call: bool,
    ) -> Result<Option<Response<'a, R>>, CallError> {
        let last = item.flags & END != 0;
        if item.flags & ABORTED != 0 {
            self.consume(slot, last);
            // A failure relayed from further on (a bridge's fallback server), else aborted.
            return Err(match (item.flags >> FAIL_SHIFT) & 0xff {
                FAIL_TIMEOUT => CallError::Timeout(self.timeout),
                FAIL_NO_SERVER => CallError::NoServer,
                FAIL_DISCONNECTED => CallError::Disconnected,
                _ => CallError::Aborted,
            });
        }
        if item.flags & DATA == 0 {
            self.consume(slot, last);
            return Ok(None);
        }
        if item.len == usize::MAX || R::fixed_size().is_some_and(|f| f != item.len) {
            self.consume(slot, last);
            return Err(CallError::Invalid(format!(
                "response length out of range (maximum {})",
                self.shared.layout.max_response
            )));
        }
        let ptr = item.ptr;
        // SAFETY: the item is published (stamp acquired) and stays unwritten until this client
        // consumes it (ring::call invariant 3); ptr is in bounds for len ≤ max_response bytes
        // (CallRing::item_payload) and 32-aligned (item payload in a 64-aligned item of a
        // page-aligned region).
        match unsafe { R::view(ptr, item.len) } {
            Ok(view) => Ok(Some(Response {
                core: self,
                slot,
                view,
                last,
                owns_call,
            })),
            Err(why) => {
                self.consume(slot, last);
                Err(CallError::Invalid(why))
            }
        }
    }

    fn ended(&self, slot: usize) -> bool {
        self.caller.ended(slot)
    }

    /// The doorbell bit the awaited call in `slot` arms (`ASYNC_BITS`).
    fn async_bit(slot: usize) -> usize {
        1 + slot % ASYNC_BITS
    }
}

/// A call slot loaned for writing a request in place. [`RequestLoan::send`] posts it; dropping it
/// unsent gives the slot back.
pub struct RequestLoan<'c, Q: Payload + ?Sized, R: Payload + ?Sized> {
    core: &'c ClientCore,
    slot: usize,
    pos: u64,
    ptr: *mut u8,
    len: usize,
    sent: bool,
    _p: PhantomData<fn(&Q, &R)>,
}

crate::debug_fields!(RequestLoan<'_, Q, R>: pos, len);

impl<'c, Q: Payload + ?Sized, R: Payload + ?Sized> RequestLoan<'c, Q, R> {
    /// Posts the request; returns the pending call.
    #[inline]
    pub fn send(mut self) -> Pending<'c, R> {
        self.sent = true;
        self.core.post(self.slot, self.pos, self.len);
        Pending {
            core: self.core,
            slot: self.slot,
            pos: self.pos,
            done: false,
            _r: PhantomData,
        }
    }

    /// Posts the request and waits for the response (the service's timeout).
    pub fn call(self) -> Result<Response<'c, R>, CallError> {
        self.send().wait()
    }

    /// The loaned bytes (`len` bytes of the slot's request area).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the slot is reserved by this client and not posted, so no server reads it;
        // ptr is valid for max_request ≥ len bytes (Region::ptr bounds-checks).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> Drop for RequestLoan<'_, Q, R> {
    fn drop(&mut self) {
        if !self.sent {
            self.core.unpost(self.slot, self.pos);
        }
    }
}

crate::topic::loan_views!(RequestLoan<'_, Q, R> writes Q);

/// A call in flight. [`Pending::wait`] returns its response; [`Pending::next_response`] reads a stream of
/// responses one by one. Dropping it abandons the call: its slot is reused once the server is done
/// (late responses are discarded).
pub struct Pending<'c, R: Payload + ?Sized> {
    core: &'c ClientCore,
    slot: usize,
    pos: u64,
    done: bool,
    _r: PhantomData<fn() -> Box<R>>,
}

crate::debug_fields!(Pending<'_, R>: slot, done);

impl<'c, R: Payload + ?Sized> Pending<'c, R> {
    /// Waits for the response, up to the service's timeout (counted from this call). On
    /// [`CallError::Timeout`] the call is abandoned. For a streamed answer, returns the first
    /// item and discards the rest.
    pub fn wait(self) -> Result<Response<'c, R>, CallError> {
        let timeout = self.core.timeout;
        self.wait_timeout(timeout)
    }

    /// Like [`Pending::wait`] with an explicit timeout.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Response<'c, R>, CallError> {
        if self.done || !self.core.is_current(self.slot, self.pos) {
            return Err(CallError::Finished);
        }
        let item = match self.core.wait_item(self.slot, timeout) {
            Err(e @ CallError::Timeout(_)) => {
                // The call is abandoned (dropped with `self`): count it for observers. A
                // `next_response_timeout` that expires leaves the call going, and is not counted.
                self.core.count_timeout();
                return Err(e);
            }
            r => r?,
        };
        self.take(item)
    }

    /// Awaits the response without blocking a thread, up to the service's timeout (counted from
    /// this call): the same results as [`Pending::wait`]. The future tries at once, then sleeps
    /// in the process's waiter (ARCHITECTURE.md, "Async") until the server answers, waking at
    /// least every [`crate::CHECK_INTERVAL`] to check that the server still lives (a dead one
    /// ends it with the error `wait` gives) and at the deadline ([`CallError::Timeout`]).
    /// `pending.await` does the same ([`IntoFuture`]).
    ///
    /// Cancel-safe: dropping the future abandons the call as dropping the `Pending` does, and
    /// unregisters it. Not `Send` (see [`Client::call_async`]).
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-wait-async");
    /// let server = svc.server()?;
    /// let client = svc.client()?;
    /// let pending = client.send(&1)?;
    /// server.try_receive()?.respond(&2)?;
    /// let got = futures::executor::block_on(async { pending.await.map(|r| *r) })?;
    /// assert_eq!(got, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_async(self) -> WaitResponse<'c, R> {
        let timeout = self.core.timeout;
        self.wait_timeout_async(timeout)
    }

    /// Like [`Pending::wait_async`] with an explicit timeout.
    pub fn wait_timeout_async(self, timeout: Duration) -> WaitResponse<'c, R> {
        WaitResponse {
            failed: None,
            wait: ItemWait::new(timeout, self.core.spin),
            pending: Some(self),
        }
    }

    /// Returns the response if it has arrived, `None` if not yet. Never blocks.
    pub fn try_wait(&mut self) -> Result<Option<Response<'c, R>>, CallError> {
        if self.done || !self.core.is_current(self.slot, self.pos) {
            return Err(CallError::Finished);
        }
        match self.core.poll_item(self.slot) {
            Some(item) => self.take(item).map(Some),
            None => Ok(None),
        }
    }

    fn take(&mut self, item: Item) -> Result<Response<'c, R>, CallError> {
        let slot = self.slot;
        match self.core.deliver(slot, item, true) {
            Ok(Some(r)) => {
                // The response now owns the call (freed when it drops).
                self.done = true;
                Ok(r)
            }
            Ok(None) => Err(CallError::Finished),
            Err(e) => Err(e),
        }
    }

    /// The next response of a streamed answer, waiting up to the service's timeout; `None` once
    /// the server has ended the stream. A plain (unary) answer is a stream of one.
    pub fn next_response(&mut self) -> Result<Option<Response<'_, R>>, CallError> {
        let timeout = self.core.timeout;
        self.next_response_timeout(timeout)
    }

    /// Like [`Pending::next_response`] with an explicit timeout. A timeout here does not abandon the call.
    pub fn next_response_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Response<'_, R>>, CallError> {
        if self.done || !self.core.is_current(self.slot, self.pos) {
            return Err(CallError::Finished);
        }
        if self.core.ended(self.slot) {
            return Ok(None);
        }
        let item = self.core.wait_item(self.slot, timeout)?;
        self.core.deliver(self.slot, item, false)
    }

    /// Awaits the next response of a streamed answer without blocking a thread, up to the
    /// service's timeout (counted from this call): the same results as
    /// [`Pending::next_response`]. `None` once the server has ended the stream;
    /// [`CallError::Timeout`] at the deadline (the call goes on: await again to keep reading);
    /// [`CallError::Disconnected`] if the server dies, noticed within [`crate::CHECK_INTERVAL`]
    /// as by the blocking call. Waits as [`Pending::wait_async`] does.
    ///
    /// Cancel-safe: dropping the future loses no response (the next call returns the one it
    /// was waiting for) and unregisters it; the call stays in flight.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-next-async");
    /// let server = svc.server()?;
    /// let client = svc.client()?;
    /// let mut pending = client.send(&3)?;
    /// let streaming = std::thread::spawn(move || {
    ///     let request = server.receive().unwrap();
    ///     let n = *request;
    ///     let mut stream = request.stream();
    ///     for i in 1..=n {
    ///         stream.send(&(i * 10)).unwrap();
    ///     }
    ///     stream.end()
    /// });
    /// let got = futures::executor::block_on(async {
    ///     let mut got = Vec::new();
    ///     while let Some(item) = pending.next_response_async().await? {
    ///         got.push(*item);
    ///     }
    ///     Ok::<_, ringbus::CallError>(got)
    /// })?;
    /// assert_eq!(got, [10, 20, 30]);
    /// streaming.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_response_async(&mut self) -> NextResponse<'_, R> {
        let timeout = self.core.timeout;
        self.next_response_timeout_async(timeout)
    }

    /// Like [`Pending::next_response_async`] with an explicit timeout.
    pub fn next_response_timeout_async(&mut self, timeout: Duration) -> NextResponse<'_, R> {
        NextResponse {
            core: self.core,
            slot: self.slot,
            pos: (!self.done).then_some(self.pos),
            wait: Some(ItemWait::new(timeout, self.core.spin)),
            _borrow: PhantomData,
            _r: PhantomData,
        }
    }
}

impl<'c, R: Payload + ?Sized> IntoFuture for Pending<'c, R> {
    type Output = Result<Response<'c, R>, CallError>;
    type IntoFuture = WaitResponse<'c, R>;

    /// [`Pending::wait_async`].
    fn into_future(self) -> WaitResponse<'c, R> {
        self.wait_async()
    }
}

/// The wait of an awaited call for the next response item of its slot, shared by
/// [`WaitResponse`] and [`NextResponse`]: the deadline, the server's liveness check and the
/// registration with the waiter. One poll function ([`ItemWait::poll`]) for both futures.
#[derive(Debug)]
struct ItemWait {
    /// None: no deadline (a timeout beyond what `Instant` holds).
    deadline: Option<Instant>,
    timeout: Duration,
    /// When the call's server was last checked (or the wait began).
    last_check: Instant,
    parking: Parking,
    /// Whether this wait counts among its bit's users (`ClientCore::bit_users`).
    bit_held: bool,
}

impl ItemWait {
    /// A wait of up to `timeout` from now.
    fn new(timeout: Duration, spin: Duration) -> ItemWait {
        let now = Instant::now();
        ItemWait {
            deadline: now.checked_add(timeout),
            timeout,
            last_check: now,
            parking: Parking::new(spin),
            bit_held: false,
        }
    }

    /// The next item of `slot`'s call: Ready with it, or with `Timeout` at the deadline or the
    /// error of a failed liveness check (as `wait_item_slow`); otherwise armed and registered to
    /// wake `cx`'s waker, Pending. After Ready the caller calls [`ItemWait::finish`]. Never
    /// takes the item: it stays at the head of the slot until the caller delivers it (cancel
    /// safety).
    fn poll(
        &mut self,
        core: &ClientCore,
        slot: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Item, CallError>> {
        if let Some(item) = core.poll_item(slot) {
            return Poll::Ready(Ok(item));
        }
        // As `wait_item_slow`: the deadline, then now and then the server's liveness.
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Poll::Ready(Err(CallError::Timeout(self.timeout)));
        }
        if now >= self.last_check + CHECK_INTERVAL {
            self.last_check = now;
            core.check_call(slot)?;
        }
        let next_check = self.last_check + CHECK_INTERVAL;
        let until = self.deadline.map_or(next_check, |d| d.min(next_check));
        let nap = until.saturating_duration_since(now);
        let bit = ClientCore::async_bit(slot);
        let users = &core.bit_users[bit - 1];
        if !self.bit_held {
            self.bit_held = true;
            users.set(users.get() + 1);
        }
        let keep = || core.shared.clone() as Arc<dyn Send + Sync>;
        // The client half of the response handshake, as `sleep_unless`'s, on this call's bit,
        // with the waiter watching the word instead of a blocked thread.
        let bell = core.ring.bell();
        // A recheck that finds the item leaves the bit armed: `finish` clears it unless another
        // awaited call of this client shares it.
        match self
            .parking
            .park_sharing(bell, bit, nap, keep, cx.waker(), || core.poll_item(slot))
        {
            None => Poll::Pending,
            Some(item) => Poll::Ready(Ok(item)),
        }
    }

    /// Disarms and unregisters: the wait is over or dropped. Idempotent.
    fn finish(&mut self, core: &ClientCore, slot: usize) {
        let bit = ClientCore::async_bit(slot);
        let bell = core.ring.bell();
        // Only a wait that counted among the bit's users may clear it, and the last of them
        // must, armed or not: a future that ended within its spin never armed the bit, but a
        // user that armed it and finished before it left the clearing to the last one.
        let last = std::mem::replace(&mut self.bit_held, false) && {
            let users = &core.bit_users[bit - 1];
            users.set(users.get() - 1);
            users.get() == 0
        };
        self.parking.finish_sharing(bell, bit, last);
    }
}

/// The future of [`Pending::wait_async`] and [`Client::call_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitResponse<'c, R: Payload + ?Sized> {
    /// The call; None once the future returned (or if it failed to send).
    pending: Option<Pending<'c, R>>,
    /// The send's error, returned at the first poll.
    failed: Option<CallError>,
    wait: ItemWait,
}

crate::debug_fields!(WaitResponse<'_, R>: pending, wait);

impl<'c, R: Payload + ?Sized> WaitResponse<'c, R> {
    fn failed(e: CallError) -> Self {
        WaitResponse {
            pending: None,
            failed: Some(e),
            wait: ItemWait::new(Duration::ZERO, Duration::ZERO),
        }
    }

    /// Ends the future with `result`: unregisters, then hands the call to the response (or
    /// drops it: abandoned).
    fn end(
        &mut self,
        result: impl FnOnce(Pending<'c, R>) -> Result<Response<'c, R>, CallError>,
    ) -> Poll<Result<Response<'c, R>, CallError>> {
        let p = self.pending.take().expect("checked by poll");
        self.wait.finish(p.core, p.slot);
        Poll::Ready(result(p))
    }
}

impl<'c, R: Payload + ?Sized> Future for WaitResponse<'c, R> {
    type Output = Result<Response<'c, R>, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        let p = this
            .pending
            .as_ref()
            .expect("WaitResponse polled after it returned");
        let (core, slot) = (p.core, p.slot);
        if p.done || !core.is_current(slot, p.pos) {
            return this.end(|_| Err(CallError::Finished));
        }
        match this.wait.poll(core, slot, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(item)) => this.end(|mut p| p.take(item)),
            Poll::Ready(Err(e)) => {
                if let CallError::Timeout(_) = e {
                    // Abandoned (the `Pending` drops) and counted, as by `wait_timeout`.
                    core.count_timeout();
                }
                this.end(|_| Err(e))
            }
        }
    }
}

impl<R: Payload + ?Sized> Drop for WaitResponse<'_, R> {
    fn drop(&mut self) {
        // Unregisters; the `Pending` drops after, abandoning the call.
        if let Some(p) = &self.pending {
            self.wait.finish(p.core, p.slot);
        }
    }
}

/// The future of [`Pending::next_response_async`]: the next response of a streamed answer,
/// `None` after the last. It borrows the `Pending` mutably, so one item is awaited at a time.
#[must_use = "futures do nothing unless awaited"]
pub struct NextResponse<'p, R: Payload + ?Sized> {
    core: &'p ClientCore,
    slot: usize,
    /// The call's position; None if the `Pending` was already done (`Finished`).
    pos: Option<u64>,
    /// None once the future returned.
    wait: Option<ItemWait>,
    /// The `Pending`'s mutable borrow: one item awaited at a time.
    _borrow: PhantomData<&'p mut ()>,
    _r: PhantomData<fn() -> Box<R>>,
}

crate::debug_fields!(NextResponse<'_, R>: slot, pos, wait);

impl<'p, R: Payload + ?Sized> Future for NextResponse<'p, R> {
    type Output = Result<Option<Response<'p, R>>, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (core, slot) = (this.core, this.slot);
        let wait = this
            .wait
            .as_mut()
            .expect("NextResponse polled after it returned");
        // As `next_response_timeout`: a finished call, then the end of the stream, then the wait.
        let result = match this.pos {
            Some(pos) if core.is_current(slot, pos) => {
                if core.ended(slot) {
                    Ok(None)
                } else {
                    match wait.poll(core, slot, cx) {
                        Poll::Pending => return Poll::Pending,
                        // A timeout here leaves the call going, uncounted.
                        Poll::Ready(item) => item.and_then(|item| core.deliver(slot, item, false)),
                    }
                }
            }
            _ => Err(CallError::Finished),
        };
        if let Some(mut wait) = this.wait.take() {
            wait.finish(core, slot);
        }
        Poll::Ready(result)
    }
}

impl<R: Payload + ?Sized> Drop for NextResponse<'_, R> {
    fn drop(&mut self) {
        // Unregisters; the item awaited (if it came meanwhile) stays for the next call.
        if let Some(wait) = &mut self.wait {
            wait.finish(self.core, self.slot);
        }
    }
}

impl<R: Payload + ?Sized> Drop for Pending<'_, R> {
    fn drop(&mut self) {
        if !self.done && self.core.is_current(self.slot, self.pos) {
            self.core.finish(self.slot);
        }
    }
}

/// A response, read in place in shared memory. Dereferences to the response (`T`, `[u8]`, or
/// the archived type of an rkyv service).
pub struct Response<'a, R: Payload + ?Sized> {
    core: &'a ClientCore,
    slot: usize,
    view: &'a R::View,
    last: bool,
    owns_call: bool,
}

impl<R: Payload + ?Sized> Response<'_, R> {
    /// Whether this is the last response of its call.
    pub fn is_last(&self) -> bool {
        self.last
    }
}

crate::topic::received_view!(Response<'_, R> reads R);

impl<R: Payload + ?Sized> std::fmt::Debug for Response<'_, R>
where
    R::View: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.view, f)
    }
}

impl<R: Payload + ?Sized> Drop for Response<'_, R> {
    fn drop(&mut self) {
        self.core.consume(self.slot, self.last);
        if self.owns_call {
            self.core.finish(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Node;
    use std::future::Future;
    use std::task::{Context, Poll};

    /// Two awaited calls whose slots share a doorbell bit (1 and 64): the first to finish leaves
    /// the bit set for the other, the last clears it.
    #[test]
    fn awaited_calls_sharing_a_bit_keep_it_until_the_last_finishes() {
        let node = Node::in_process();
        // Parked at their first poll (no spin): the bits are the point.
        let svc = node
            .service::<u64, u64>("shared-bit")
            .max_in_flight(128)
            .spin_before_sleep(std::time::Duration::ZERO);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let mut calls: Vec<_> = (0..65).map(|x| Some(client.send(&x).unwrap())).collect();
        let mut a = Box::pin(calls[1].take().unwrap().wait_async());
        let mut b = Box::pin(calls[64].take().unwrap().wait_async());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let bell = || client.core.ring.bell();
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert!(bell().has_sleepers());
        for _ in 0..2 {
            let req = server.try_receive().unwrap();
            let x = *req;
            req.respond(&(x + 100)).unwrap();
        }
        match a.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(r)) => assert_eq!(*r, 101),
            other => panic!("{other:?}"),
        }
        assert!(bell().has_sleepers(), "the other call still waits on the bit");
        drop(b);
        assert!(!bell().has_sleepers(), "the last one cleared it");
        drop(a);
        drop(calls);
    }

    /// A call counted on a shared bit but still within its spin (so it never armed the bit)
    /// finishes last, after the call that armed it: it must clear the bit, or the client's bell
    /// stays armed for nobody and every later response rings the waiter in vain.
    #[test]
    fn the_last_call_on_a_shared_bit_clears_it_even_if_it_ended_within_its_spin() {
        use super::ItemWait;
        use std::time::Duration;
        let hour = Duration::from_secs(3600);
        let node = Node::in_process();
        let svc = node.service::<u64, u64>("spin-bit").max_in_flight(128);
        let server = svc.server().unwrap();
        let client = svc.client().unwrap();
        let calls: Vec<_> = (0..65).map(|x| client.send(&x).unwrap()).collect();
        let core = &client.core;
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Slots 1 and 64 share bit 2: one parks at once, the other spins for an hour.
        let (mut parked, mut spinning) = (ItemWait::new(hour, Duration::ZERO), ItemWait::new(hour, hour));
        assert!(parked.poll(core, 1, &mut cx).is_pending());
        assert!(spinning.poll(core, 64, &mut cx).is_pending());
        assert!(core.ring.bell().has_sleepers(), "the parked call armed the bit");
        while let Ok(req) = server.try_receive() {
            let x = *req;
            req.respond(&(x + 100)).unwrap();
        }
        assert!(matches!(parked.poll(core, 1, &mut cx), Poll::Ready(Ok(_))));
        parked.finish(core, 1);
        assert!(core.ring.bell().has_sleepers(), "the spinning call still counts on the bit");
        assert!(matches!(spinning.poll(core, 64, &mut cx), Poll::Ready(Ok(_))));
        spinning.finish(core, 64);
        assert!(!core.ring.bell().has_sleepers(), "the last call cleared the bit it never armed");
        drop(calls);
    }
}
