//! `ringbus` and `ringbus-blocking` ends for `bench rpc`: the library's request/response
//! service (`Node::service::<Bytes, u64>`).
//!
//! One service per payload size and mode ([`Setup::resource_name`]), one client (ping)
//! and one server (pong), both built with the same options: `max_clients(1)`,
//! `max_servers(1)`, `max_request_size` = payload size, `max_in_flight` =
//! [`RPC_WINDOW`] for pipelined rounds and [`LATENCY_IN_FLIGHT`] for latency rounds,
//! call timeout [`MSG_TIMEOUT`].
//!
//! * `ringbus`: the default `spin_before_sleep` (client and server spin that long
//!   before sleeping in the kernel; a round trip is far shorter, so they only spin).
//! * `ringbus-blocking`: `spin_before_sleep(Duration::ZERO)` on both sides, so every
//!   wait goes through the kernel (futex).
//!
//! The client loans a call slot of the payload size and writes only the header word
//! unless `--touch` (zero copy, as the pub/sub ends), sends it and waits on the
//! `Pending` call; the server reads the request in place and responds with its sequence
//! number, which the client checks.

use std::time::Duration;

use super::super::transport::{
    LatencyRound, Mode, PingEnd, PongEnd, Setup, StreamOutcome, RPC_WINDOW,
};
use super::super::util::{
    check_seq, consume_payload, err, fill_payload, pipelined_calls, Result, MSG_TIMEOUT,
};
use super::Ringbus;
use ringbus::{Bytes, Client, Node, OpenError, Pending, Server, ServiceBuilder};

/// Call slots of the client in latency rounds: one call at a time, so one slot.
const LATENCY_IN_FLIGHT: usize = 1;

/// The service options of transport `name`, the same on both sides (also those of
/// `ringbus-async`, see `async_rpc`); `parked`: `spin_before_sleep(ZERO)`.
pub(super) fn service(
    node: &Node,
    name: &str,
    parked: bool,
    setup: &Setup,
) -> ServiceBuilder<Bytes, u64> {
    let in_flight = match setup.mode {
        Mode::Latency => LATENCY_IN_FLIGHT,
        Mode::Stream => RPC_WINDOW,
    };
    let builder = node
        .service::<Bytes, u64>(&setup.resource_name(name))
        .max_clients(1)
        .max_servers(1)
        .max_in_flight(in_flight)
        .max_request_size(setup.payload)
        .timeout(MSG_TIMEOUT);
    if parked {
        builder.spin_before_sleep(Duration::ZERO)
    } else {
        builder
    }
}

/// Either end: the client (ping, [`RpcPing`]) or the server (pong, [`RpcPong`]).
pub(super) struct RpcEnd<P> {
    name: &'static str,
    mode: Mode,
    payload: usize,
    /// The client or the server.
    port: P,
    /// Last sequence number sent (client) or answered (server), over all rounds.
    seq: u64,
}

/// The client end (ping).
pub(super) type RpcPing = RpcEnd<Client<Bytes, u64>>;
/// The server end (pong).
pub(super) type RpcPong = RpcEnd<Server<Bytes, u64>>;

impl<P> RpcEnd<P> {
    /// Opens the service with the options of `t` and `setup` and makes this end's port
    /// (`what`) with `make`.
    fn open(
        t: &Ringbus,
        setup: &Setup,
        what: &str,
        make: impl FnOnce(&ServiceBuilder<Bytes, u64>) -> std::result::Result<P, OpenError>,
    ) -> Result<Self> {
        let name = t.name_of();
        let node = Node::new().map_err(|e| err(format!("{name} node: {e}")))?;
        let port = make(&service(&node, name, t.blocking, setup))
            .map_err(|e| err(format!("{name} {what}: {e}")))?;
        Ok(Self {
            name,
            mode: setup.mode,
            payload: setup.payload,
            port,
            seq: 0,
        })
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::super::transport::check_mode(self.name, self.mode, mode)
    }
}

impl RpcPing {
    pub(super) fn new(t: &Ringbus, setup: &Setup) -> Result<Self> {
        Self::open(t, setup, "client", ServiceBuilder::client)
    }
}

/// Loans a call slot of `payload` bytes, writes the header word (every byte with
/// `touch`) and sends the request.
#[inline(always)]
pub(super) fn send<'c>(
    client: &'c Client<Bytes, u64>,
    name: &str,
    payload: usize,
    seq: u64,
    touch: bool,
) -> Result<Pending<'c, u64>> {
    let mut loan = client
        .loan(payload)
        .map_err(|e| err(format!("{name} loan: {e}")))?;
    fill_payload(&mut loan, seq, touch);
    Ok(loan.send())
}

/// Waits for the response to `pending` and checks that it echoes `seq`.
#[inline(always)]
fn await_response(pending: Pending<'_, u64>, name: &str, seq: u64) -> Result<()> {
    let response = pending
        .wait()
        .map_err(|e| err(format!("{name} response: {e}")))?;
    check_seq(*response, seq)
}

impl PingEnd for RpcPing {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_mode(Mode::Latency)?;
        let (client, name, payload) = (&self.port, self.name, self.payload);
        let touch = round.touch;
        self.seq += round.time(self.seq + 1, |seq| {
            await_response(send(client, name, payload, seq, touch)?, name, seq)
        })?;
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        self.check_mode(Mode::Stream)?;
        let (client, name, payload) = (&self.port, self.name, self.payload);
        let outcome = pipelined_calls(
            self.seq + 1,
            count,
            RPC_WINDOW,
            |seq| send(client, name, payload, seq, touch),
            |pending, seq| await_response(pending, name, seq),
        )?;
        self.seq += count;
        Ok(Some(outcome))
    }
}

impl RpcPong {
    pub(super) fn new(t: &Ringbus, setup: &Setup) -> Result<Self> {
        Self::open(t, setup, "server", ServiceBuilder::server)
    }

    /// Answers `count` requests, each with its sequence number.
    fn answer(&mut self, mode: Mode, count: u64, touch: bool) -> Result<u64> {
        self.check_mode(mode)?;
        let (server, name) = (&self.port, self.name);
        let mut checksum = 0;
        let first = self.seq + 1;
        for expected in first..first + count {
            let request = server
                .receive_timeout(MSG_TIMEOUT)
                .map_err(|e| err(format!("{name} request: {e}")))?;
            let seq = consume_payload(&request, touch, &mut checksum);
            check_seq(seq, expected)?;
            request
                .respond(&seq)
                .map_err(|e| err(format!("{name} respond: {e}")))?;
        }
        self.seq += count;
        Ok(checksum)
    }
}

impl PongEnd for RpcPong {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.answer(Mode::Latency, count, touch)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        let checksum = self.answer(Mode::Stream, count, touch)?;
        Ok(StreamOutcome::served(count, checksum))
    }
}
