//! Request/response services: a client calls, exactly one server answers, within a timeout.
//!
//! A service segment holds one call ring per client: `max_in_flight` call slots, each with the
//! request area and `stream_depth` response items. A client writes a request in place and posts
//! it; servers take posted calls with a compare-and-swap on the slot's state word (so each call
//! goes to one server) and write the response in place into the same slot, which only the calling
//! client reads. See `ARCHITECTURE.md` for the layout and the protocol.

mod client;
#[doc(hidden)]
pub mod layout;
mod server;
mod shared;

use std::marker::PhantomData;
use std::time::Duration;

use client::ClientOptions;
pub use client::{Client, Pending, RequestLoan, Response};
pub use layout::{MAX_IN_FLIGHT, MAX_PARTICIPANTS, MAX_MESSAGE_SIZE, MAX_STREAM_DEPTH};
pub use server::{Request, ResponseLoan, ResponseStream, Server};

use crate::error::OpenError;
use crate::shm::{Backing, OpenMode};
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
#[derive(Debug, Clone)]
pub struct ServiceBuilder<Q: Payload + ?Sized, R: Payload + ?Sized> {
    backing: Backing,
    name: String,
    max_in_flight: usize,
    max_clients: usize,
    max_servers: usize,
    max_request: Option<usize>,
    max_response: Option<usize>,
    depth: usize,
    timeout: Duration,
    spin: Duration,
    wait_for_server: bool,
    wait_when_busy: bool,
    mode: OpenMode,
    _p: PhantomData<fn(&Q, &R)>,
}

impl<Q: Payload + ?Sized, R: Payload + ?Sized> ServiceBuilder<Q, R> {
    pub(crate) fn new(backing: Backing, name: &str) -> Self {
        ServiceBuilder {
            backing,
            name: name.to_string(),
            max_in_flight: 16,
            max_clients: 8,
            max_servers: 4,
            max_request: None,
            max_response: None,
            depth: 2,
            timeout: Duration::from_secs(1),
            spin: Duration::from_micros(20),
            wait_for_server: false,
            wait_when_busy: false,
            mode: OpenMode::OpenOrCreate,
            _p: PhantomData,
        }
    }

    /// Calls one client may have in flight: a power of two, 1 to 1024 (default 16). A client uses
    /// its call slots in turn, so a call's slot is needed again `max_in_flight` calls later; if it
    /// is still held then (by an unanswered or unread call), sending fails with
    /// [`crate::CallError::Busy`].
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Clients that may be registered at once (1 to 64, default 8).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// Servers that may be registered at once (1 to 64, default 4).
    pub fn max_servers(mut self, n: usize) -> Self {
        self.max_servers = n;
        self
    }

    /// Largest request in bytes, for byte and rkyv requests (default 4096; ignored for `Pod`).
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request = Some(bytes);
        self
    }

    /// Largest response in bytes, for byte and rkyv responses (default 4096; ignored for `Pod`).
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response = Some(bytes);
        self
    }

    /// Responses of a stream that may wait unread in a call slot: a power of two, 1 to 64
    /// (default 2). A streaming server waits for the caller beyond that.
    pub fn stream_depth(mut self, n: usize) -> Self {
        self.depth = n;
        self
    }

    /// How long a call waits for its response (default 1 s), and how long a streaming server
    /// waits for a caller that does not read.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long waiting clients and servers spin before sleeping in the kernel (default 20 µs;
    /// zero sleeps at once).
    pub fn spin_before_sleep(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// With `true`, a call made while no server is registered waits (up to the timeout) for one
    /// to appear instead of failing at once with [`crate::CallError::NoServer`] (default false).
    pub fn wait_for_server(mut self, wait: bool) -> Self {
        self.wait_for_server = wait;
        self
    }

    /// With `true`, a send whose call slot is still held by an abandoned call (one that timed out
    /// while a server works on it) waits, up to the timeout, for that call to end, instead of
    /// failing at once with [`crate::CallError::Busy`] (default false). A slot held by a call the
    /// caller itself still holds (a `Pending` or a `Response`) fails at once either way.
    pub fn wait_when_busy(mut self, wait: bool) -> Self {
        self.wait_when_busy = wait;
        self
    }

    /// Whether handles may create the service (default), must find a live one, or must create
    /// it (see [`OpenMode`]).
    pub fn open_mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }

    fn size<P: Payload + ?Sized>(explicit: Option<usize>) -> Result<usize, OpenError> {
        let size = match P::fixed_size() {
            Some(size) => size.max(1),
            None => explicit.unwrap_or(4096),
        };
        let align = P::identity(size).align as usize;
        if align > MAX_ALIGN {
            return Err(OpenError::InvalidConfig(format!(
                "payload alignment {align} exceeds the supported {MAX_ALIGN}"
            )));
        }
        Ok(size)
    }

    fn open(&self, role: Role) -> Result<(std::sync::Arc<ServiceShared>, usize), OpenError> {
        let request = Self::size::<Q>(self.max_request)?;
        let response = Self::size::<R>(self.max_response)?;
        let layout = ServiceLayout::new(
            self.max_clients,
            self.max_servers,
            self.max_in_flight,
            request,
            response,
            self.depth,
            (Q::kind(), R::kind()),
        )?;
        let types = Types {
            request: Q::identity(request),
            response: type_word(&R::identity(response)),
        };
        ServiceShared::open(&self.backing, &self.name, &layout, &types, role, self.mode)
    }

    /// Opens (or creates) the service and registers a server.
    pub fn server(&self) -> Result<Server<Q, R>, OpenError> {
        let (shared, index) = self.open(Role::Server)?;
        Ok(Server::new(shared, index, self.spin, self.timeout))
    }

    /// Opens (or creates) the service and registers a client. A client that takes the entry of
    /// one that died first discards what the dead one left in flight.
    pub fn client(&self) -> Result<Client<Q, R>, OpenError> {
        let (shared, index) = self.open(Role::Client)?;
        let options = ClientOptions {
            timeout: self.timeout,
            spin: self.spin,
            wait_for_server: self.wait_for_server,
            wait_when_busy: self.wait_when_busy,
        };
        Ok(Client::new(shared, index, options))
    }
}
