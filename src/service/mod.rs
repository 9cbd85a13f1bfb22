//! Request/response services: a client calls, exactly one server answers, within a timeout.
//!
//! A service segment holds one call ring per client: `max_in_flight` call slots, each with the
//! request area and `stream_depth` response items. A client writes a request in place and posts
//! it; servers take posted calls with a compare-and-swap on the slot's state word (so each call
//! goes to one server) and write the response in place into the same slot, which only the calling
//! client reads. See `ARCHITECTURE.md` for the layout and the protocol.
//!
//! # Async
//!
//! [`Server::receive_async`] waits for a call, [`Client::call_async`] or an awaited
//! [`Pending`] ([`Pending::wait_async`]) for its response, and [`Pending::next_response_async`]
//! for the next response of a stream, without blocking a thread, in any executor (see
//! [`crate::topic`]'s "Async" and ARCHITECTURE.md). The results, the timeout and the errors
//! after a peer's death are those of the blocking calls; dropping a future at any point loses
//! no call and no response (a dropped call future abandons its call, as dropping the `Pending`
//! does; a dropped `next_response_async` leaves the call going, and the next one returns the
//! response it was waiting for). A server's future is `Send`; a client's calls borrow the client, which is not `Sync`,
//! so they are awaited in the thread that owns it (several at once if need be).
//!
//! Discovery: [`ServiceBuilder::server_when_found`] and [`ServiceBuilder::client_when_found`]
//! wait for another process to create the service, [`Client::wait_for_server`] for a first live
//! server ([`crate::discovery`]).

mod client;
#[doc(hidden)]
pub mod layout;
mod server;
mod shared;

use std::marker::PhantomData;
use std::time::Duration;

use client::ClientOptions;
pub use client::{Client, NextResponse, Pending, RequestLoan, Response, WaitResponse};
pub use layout::{MAX_IN_FLIGHT, MAX_PARTICIPANTS, MAX_MESSAGE_SIZE, MAX_STREAM_DEPTH};
pub use server::{
    Failure, ReceiveRequest, ReceiveShared, Request, ResponseLoan, ResponseStream, Server,
};

use crate::discovery::Found;
use crate::error::OpenError;
use crate::options::payload_size;
use crate::shm::OpenMode;
use crate::topic::{Payload, MAX_ALIGN};
use layout::{type_word, Role, ServiceLayout};
use shared::{ServiceShared, Types};

/// Options for opening or creating a service. Made by [`crate::Node::service`].
///
/// The options shape a service when it is created; a handle that opens an existing live service
/// uses the service's own shape (its request and response types must match, or opening fails
/// with [`OpenError::TypeMismatch`]). `timeout`, `spin_before_sleep`, `wait_for_server` and
/// `wait_when_busy` are per handle.
///
/// ```
/// use ringbus::Node;
/// use std::time::Duration;
///
/// let node = Node::in_process();
/// let svc = node
///     .service::<ringbus::Bytes, u64>("doc-service")
///     .max_request_size(256)
///     .max_in_flight(8)
///     .timeout(Duration::from_millis(200));
/// let server = svc.server()?;
/// let client = svc.client()?;
/// let pending = client.send(b"hello")?;
/// let req = server.receive()?;
/// let len = req.len() as u64;
/// req.respond(&len)?;
/// assert_eq!(*pending.wait()?, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ServiceBuilder<Q: Payload + ?Sized, R: Payload + ?Sized> {
    options: ServiceOptions,
    _p: PhantomData<fn(&Q, &R)>,
}

// Not derived: a derived `Clone` would require `Q: Clone, R: Clone`.
impl<Q: Payload + ?Sized, R: Payload + ?Sized> Clone for ServiceBuilder<Q, R> {
    fn clone(&self) -> Self {
        ServiceBuilder {
            options: self.options.clone(),
            _p: PhantomData,
        }
    }
}

crate::options::options! { ServiceOptions for [Q: Payload + ?Sized, R: Payload + ?Sized] ServiceBuilder<Q, R> {
    /// Calls one client may have in flight: a power of two, 1 to 1024 (default 16). A client uses
    /// its call slots in turn, so a call's slot is needed again `max_in_flight` calls later; if it
    /// is still held then (by an unanswered or unread call), sending fails with
    /// [`crate::CallError::Busy`].
    max_in_flight(n: usize) -> max_in_flight: usize = 16;
    max_clients / max_servers = participants("Clients", 8, "Servers", 4);
    /// Largest request in bytes, for byte and rkyv requests (default 4096; ignored for `Pod`).
    max_request_size(bytes: usize) -> max_request: Option<usize> = None => Some(bytes);
    /// Largest response in bytes, for byte and rkyv responses (default 4096; ignored for `Pod`).
    max_response_size(bytes: usize) -> max_response: Option<usize> = None => Some(bytes);
    /// Responses of a stream that may wait unread in a call slot: a power of two, 1 to 64
    /// (default 2). A streaming server waits for the caller beyond that.
    stream_depth(n: usize) -> depth: usize = 2;
    /// How long a call waits for its response (default 1 s), and how long a streaming server
    /// waits for a caller that does not read.
    timeout(timeout: Duration) -> timeout: Duration = Duration::from_secs(1);
    /// How long waiting clients and servers spin before sleeping in the kernel (default 20 µs;
    /// zero sleeps at once).
    spin_before_sleep(spin: Duration) -> common.spin;
    /// With `true`, a call made while no server is registered waits (up to the timeout) for one
    /// to appear instead of failing at once with [`crate::CallError::NoServer`] (default false).
    wait_for_server(wait: bool) -> wait_for_server: bool = false;
    /// With `true`, a send whose call slot is still held by an abandoned call (one that timed out
    /// while a server works on it) waits, up to the timeout, for that call to end, instead of
    /// failing at once with [`crate::CallError::Busy`] (default false). A slot held by a call the
    /// caller itself still holds (a `Pending` or a `Response`) fails at once either way.
    wait_when_busy(wait: bool) -> wait_when_busy: bool = false;
    /// Whether handles may create the service (default), must find a live one, or must create
    /// it (see [`OpenMode`]).
    open_mode(mode: OpenMode) -> common.mode;
} }

impl<Q: Payload + ?Sized, R: Payload + ?Sized> ServiceBuilder<Q, R> {
    /// Fixes the layout and payload types to `shape` (`Node::service_shaped`).
    pub(crate) fn with_shape(mut self, shape: &crate::Shape) -> Self {
        self.options.common.shape = Some(std::sync::Arc::new(shape.clone()));
        self
    }

    fn open(&self, role: Role) -> Result<(std::sync::Arc<ServiceShared>, usize), OpenError> {
        let o = &self.options;
        if let Some(s) = &o.common.shape {
            let h = &s.header;
            let layout = ServiceLayout::from_header(h, h.segment_len as usize)?;
            let types = Types {
                request: h.ty.clone(),
                response: h.config[crate::service::layout::CONFIG_RESPONSE_TYPE],
            };
            let c = &o.common;
            return ServiceShared::open(&c.backing, &c.name, &layout, &types, role, c.mode);
        }
        let request = payload_size::<Q>(o.max_request, MAX_ALIGN)?;
        let response = payload_size::<R>(o.max_response, MAX_ALIGN)?;
        let layout = ServiceLayout::new(
            o.max_clients,
            o.max_servers,
            o.max_in_flight,
            request,
            response,
            o.depth,
            (Q::kind(), R::kind()),
        )?;
        let types = Types {
            request: Q::identity(request),
            response: type_word(&R::identity(response)),
        };
        let c = &o.common;
        ServiceShared::open(&c.backing, &c.name, &layout, &types, role, c.mode)
    }

    /// Opens (or creates) the service and registers a server.
    pub fn server(&self) -> Result<Server<Q, R>, OpenError> {
        let (shared, index) = self.open(Role::Server)?;
        let o = &self.options;
        Ok(Server::new(shared, index, o.common.spin, o.timeout, false))
    }

    /// Opens (or creates) the service and registers a fallback server: one that takes calls
    /// only while no other (ordinary) server is registered. What a network bridge registers
    /// for servers on other hosts, so that a local server is preferred: while one is there,
    /// every call goes to it (and waits for it when it is busy); once it leaves or is found
    /// dead, the fallback takes the calls, within its nap ([`crate::CHECK_INTERVAL`]) for calls
    /// already posted. Clients count a fallback server as a server (no `NoServer` while one is
    /// registered). Several fallback servers share the calls as ordinary servers do.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u32, u32>("doc-fallback");
    /// let fallback = svc.fallback_server()?;
    /// let local = svc.server()?;
    /// let client = svc.client()?;
    /// let pending = client.send(&1)?;
    /// assert!(fallback.try_receive().is_err(), "the local server is preferred");
    /// local.try_receive()?.respond(&2)?;
    /// assert_eq!(*pending.wait()?, 2);
    /// drop(local);
    /// let pending = client.send(&3)?;
    /// fallback.try_receive()?.respond(&4)?;
    /// assert_eq!(*pending.wait()?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fallback_server(&self) -> Result<Server<Q, R>, OpenError> {
        let (shared, index) = self.open(Role::Server)?;
        // SeqCst: as the server bitmap; set before this server takes any call. Until it is
        // set, another fallback server may defer to this one for a moment: a hint, not a lock.
        shared
            .region()
            .u64_at(layout::CTRL_FALLBACKS)
            .fetch_or(1u64 << index, std::sync::atomic::Ordering::SeqCst);
        let o = &self.options;
        Ok(Server::new(shared, index, o.common.spin, o.timeout, true))
    }

    /// Opens (or creates) the service and registers a client. A client that takes the entry of
    /// one that died first discards what the dead one left in flight.
    pub fn client(&self) -> Result<Client<Q, R>, OpenError> {
        let (shared, index) = self.open(Role::Client)?;
        let o = &self.options;
        let nanos = u64::try_from(o.timeout.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: read by a server only after it took a call this client posted (Release
        // post, Acquire take), so after this store.
        shared
            .region()
            .u64_at(shared.layout.client_entry(index) + layout::CLIENT_CALL_TIMEOUT)
            .store(nanos, std::sync::atomic::Ordering::Relaxed);
        let options = ClientOptions {
            timeout: o.timeout,
            spin: o.common.spin,
            wait_for_server: o.wait_for_server,
            wait_when_busy: o.wait_when_busy,
        };
        Ok(Client::new(shared, index, options))
    }
}

/// Discovery: waiting without a thread for the service to be created ([`crate::discovery`]).
impl<Q: Payload + ?Sized, R: Payload + ?Sized> ServiceBuilder<Q, R> {
    /// Waits until the service exists (as [`OpenMode::OpenExisting`] finds it), then registers a
    /// server. Checked at once, then at least every [`crate::discovery::DISCOVERY_NAP`].
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u64, u64>("doc-server-when-found");
    /// let waiting = svc.server_when_found();
    /// let _creator = svc.client()?; // another process would create it
    /// let _server = futures::executor::block_on(waiting)?;
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn server_when_found(&self) -> Found<ServiceBuilder<Q, R>, Server<Q, R>> {
        Found::new(
            self.clone().open_mode(OpenMode::OpenExisting),
            ServiceBuilder::server,
        )
    }

    /// Waits until the service exists (as [`OpenMode::OpenExisting`] finds it), then registers a
    /// client; [`Client::wait_for_server`] then waits for a live server. Checked at once, then
    /// at least every [`crate::discovery::DISCOVERY_NAP`].
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let svc = node.service::<u64, u64>("doc-client-when-found");
    /// let waiting = svc.client_when_found();
    /// let _creator = svc.server()?; // another process would create it
    /// let _client = futures::executor::block_on(waiting)?;
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn client_when_found(&self) -> Found<ServiceBuilder<Q, R>, Client<Q, R>> {
        Found::new(
            self.clone().open_mode(OpenMode::OpenExisting),
            ServiceBuilder::client,
        )
    }
}
