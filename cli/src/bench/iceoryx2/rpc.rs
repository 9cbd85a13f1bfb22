//! `iceoryx2` request-response ends for `bench rpc`.
//!
//! One service per payload size and mode, `request_response::<[u8], u64>()`, one client
//! (ping) and one server (pong), configured for minimal latency: busy-polling
//! `Server::receive` and `PendingResponse::receive`, client `initial_max_slice_len` =
//! payload size (static allocation), [`RPC_WINDOW`] active requests per client for
//! pipelined rounds (1 for latency rounds), one response per request, no safe overflow
//! and no fire-and-forget (a call is never dropped; back-pressure retries, bounded by
//! a handler). Requests are `[u8]` slices from `loan_slice_uninit`; the client writes
//! only the header word unless `--touch`, and loans the next request while the server
//! works, as the publish-subscribe ping does. The server answers with `send_copy` of the
//! request's sequence number, which the client checks.

use iceoryx2::pending_response::PendingResponse;
use iceoryx2::port::client::Client;
use iceoryx2::port::server::Server;
use iceoryx2::prelude::*;
use iceoryx2::request_mut::RequestMut;
use iceoryx2::service::port_factory::request_response::PortFactory;

use super::super::transport::{
    LatencyRound, Mode, PingEnd, PongEnd, Setup, StreamOutcome, RPC_WINDOW,
};
use super::super::util::{
    check_seq, consume_payload, err, fill_payload, pipelined_calls, spin_until, Result,
};
use super::{bounded_retry, ice, node, Svc};

type Factory = PortFactory<Svc, [u8], (), u64, ()>;
type RpcClient = Client<Svc, [u8], (), u64, ()>;
type RpcServer = Server<Svc, [u8], (), u64, ()>;
type Request = RequestMut<Svc, [u8], (), u64, ()>;
type Pending = PendingResponse<Svc, [u8], (), u64, ()>;

/// Calls in flight per client in rounds of `mode`.
fn in_flight(mode: Mode) -> usize {
    match mode {
        Mode::Latency => 1,
        Mode::Stream => RPC_WINDOW,
    }
}

/// Opens (or creates) the service; both ends ask for the same settings.
fn open_service(node: &Node<Svc>, name: &str, mode: Mode) -> Result<Factory> {
    let name = ServiceName::new(name).map_err(ice("service name"))?;
    node.service_builder(&name)
        .request_response::<[u8], u64>()
        .max_clients(1)
        .max_servers(1)
        .max_active_requests_per_client(in_flight(mode))
        // The request being sent and the one loaned ahead.
        .max_loaned_requests(2)
        .max_response_buffer_size(1)
        .max_borrowed_responses_per_pending_response(1)
        .enable_safe_overflow_for_requests(false)
        .enable_safe_overflow_for_responses(false)
        .enable_fire_and_forget_requests(false)
        .open_or_create()
        .map_err(ice("open_or_create request_response"))
}

/// Either end: the client (ping, [`RpcPing`]) or the server (pong, [`RpcPong`]).
pub(super) struct RpcEnd<P> {
    mode: Mode,
    payload: usize,
    /// The client or the server.
    port: P,
    /// Loaned ahead (client, latency rounds): the next request, already in the client's
    /// segment.
    next: Option<Request>,
    /// Last sequence number sent (client) or answered (server), over all rounds.
    seq: u64,
    // Declared last: ports drop before their service and the node.
    _service: Factory,
    _node: Node<Svc>,
}

/// The client end (ping).
pub(super) type RpcPing = RpcEnd<RpcClient>;
/// The server end (pong).
pub(super) type RpcPong = RpcEnd<RpcServer>;

fn service_name(setup: &Setup) -> String {
    format!("{}-rr", setup.resource_name("iceoryx2"))
}

impl<P> RpcEnd<P> {
    /// Opens (or creates) the service for `setup` and makes this end's port with `make`.
    fn open(setup: &Setup, make: impl FnOnce(&Factory) -> Result<P>) -> Result<Self> {
        let node = node()?;
        let service = open_service(&node, &service_name(setup), setup.mode)?;
        Ok(Self {
            mode: setup.mode,
            payload: setup.payload,
            port: make(&service)?,
            next: None,
            seq: 0,
            _service: service,
            _node: node,
        })
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::super::transport::check_mode("iceoryx2", self.mode, mode)
    }
}

impl RpcPing {
    pub(super) fn new(setup: &Setup) -> Result<Self> {
        Self::open(setup, |service| {
            service
                .client_builder()
                .initial_max_slice_len(setup.payload)
                .max_active_requests(in_flight(setup.mode))
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .set_backpressure_handler(bounded_retry)
                .create()
                .map_err(ice("client"))
        })
    }
}

impl RpcPong {
    pub(super) fn new(setup: &Setup) -> Result<Self> {
        Self::open(setup, |service| {
            service
                .server_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .set_backpressure_handler(bounded_retry)
                .create()
                .map_err(ice("server"))
        })
    }

    /// Answers `count` requests, busy-polling for each.
    fn answer(&mut self, count: u64, touch: bool) -> Result<u64> {
        let server = &self.port;
        let mut checksum = 0;
        let first = self.seq + 1;
        for expected in first..first + count {
            let request = spin_until("iceoryx2 request", || {
                server.receive().map_err(ice("receive request"))
            })?;
            let seq = consume_payload(request.payload(), touch, &mut checksum);
            check_seq(seq, expected)?;
            request.send_copy(seq).map_err(ice("send response"))?;
        }
        self.seq += count;
        Ok(checksum)
    }
}

/// Loans a request of `len` bytes.
#[inline(always)]
fn loan(client: &RpcClient, len: usize) -> Result<Request> {
    let request = client.loan_slice_uninit(len).map_err(ice("loan request"))?;
    // SAFETY: the request is a chunk of the client's data segment, a shared-memory mapping
    // that the OS zero-fills when it is created and that only ever holds bytes written by
    // earlier requests, so every byte is an initialised `u8` (which has no invalid
    // values). Initialising the whole slice would defeat the point of the benchmark (only
    // the header word is written), as for the publish-subscribe samples.
    Ok(unsafe { request.assume_init() })
}

/// Fills a loaned request as the client and sends it.
#[inline(always)]
fn fill_and_send(mut request: Request, seq: u64, touch: bool) -> Result<Pending> {
    fill_payload(request.payload_mut(), seq, touch);
    request.send().map_err(ice("send request"))
}

/// Busy-polls for the response to `pending` and checks that it echoes `seq`.
#[inline(always)]
fn await_response(pending: &Pending, seq: u64) -> Result<()> {
    let response = spin_until("iceoryx2 response", || {
        pending.receive().map_err(ice("receive response"))
    })?;
    check_seq(*response.payload(), seq)
}

impl PingEnd for RpcPing {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_mode(Mode::Latency)?;
        let (client, payload) = (&self.port, self.payload);
        let next = &mut self.next;
        if next.is_none() {
            *next = Some(loan(client, payload)?);
        }
        let touch = round.touch;
        self.seq += round.time(self.seq + 1, |seq| {
            let request = next
                .take()
                .ok_or_else(|| err("iceoryx2: no loaned request"))?;
            let pending = fill_and_send(request, seq, touch)?;
            // Loaned while the server works, like the publish-subscribe ping.
            *next = Some(loan(client, payload)?);
            await_response(&pending, seq)
        })?;
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        self.check_mode(Mode::Stream)?;
        let (client, payload) = (&self.port, self.payload);
        let outcome = pipelined_calls(
            self.seq + 1,
            count,
            RPC_WINDOW,
            |seq| fill_and_send(loan(client, payload)?, seq, touch),
            |pending, seq| await_response(&pending, seq),
        )?;
        self.seq += count;
        Ok(Some(outcome))
    }
}

impl PongEnd for RpcPong {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.check_mode(Mode::Latency)?;
        self.answer(count, touch)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        self.check_mode(Mode::Stream)?;
        let checksum = self.answer(count, touch)?;
        Ok(StreamOutcome::served(count, checksum))
    }
}
