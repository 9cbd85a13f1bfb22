//! `ringbus-async` and `ringbus-async-parked` ends for `bench rpc`: the service of `ringbus`
//! (see `rpc`: the same options, loans and checks) with both ends awaiting in a tokio
//! current-thread runtime of their own, what an async service and its async callers would do.
//!
//! * The server (pong) awaits [`Server::receive_async`] under `tokio::time::timeout` of
//!   [`MSG_TIMEOUT`] and responds (a response never waits: one call per slot).
//! * The client (ping) loans a call slot, writes it as `ringbus` does and sends it, then awaits
//!   the [`Pending`] call ([`Pending::wait_async`]): [`ringbus::Client::call_async`] without
//!   the copy of the request (its deadline is the service's timeout, [`MSG_TIMEOUT`]).
//!   Pipelined rounds keep [`RPC_WINDOW`] such calls in flight, awaiting the oldest.
//!
//! `ringbus-async-parked` builds both handles with `spin_before_sleep(Duration::ZERO)`. Each
//! end owns its runtime (time driver only: the wake-ups come from the library's waiter),
//! built once when the end is created; a round runs in one `block_on`.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::runtime::Runtime;

use super::super::transport::{
    check_mode, LatencyRound, Mode, PingEnd, PongEnd, Setup, StreamOutcome, RPC_WINDOW,
};
use super::super::util::{
    check_seq, consume_payload, err, BoxError, Result, StreamTimer, MSG_TIMEOUT,
};
use super::rpc::{send, service};
use super::{runtime, RingbusAsync};
use ringbus::{Bytes, Client, Node, OpenError, Pending, Server, ServiceBuilder};

/// Either end: the client (ping, [`AsyncRpcPing`]) or the server (pong, [`AsyncRpcPong`]).
pub(super) struct AsyncRpcEnd<P> {
    name: &'static str,
    mode: Mode,
    payload: usize,
    /// The client or the server.
    port: P,
    /// Last sequence number sent (client) or answered (server), over all rounds.
    seq: u64,
    // Declared last: the handle goes before the runtime.
    rt: Runtime,
}

/// The client end (ping).
pub(super) type AsyncRpcPing = AsyncRpcEnd<Client<Bytes, u64>>;
/// The server end (pong).
pub(super) type AsyncRpcPong = AsyncRpcEnd<Server<Bytes, u64>>;

impl<P> AsyncRpcEnd<P> {
    /// Opens the service with the options of `t` and `setup` and makes this end's port
    /// (`what`) with `make`.
    fn open(
        t: &RingbusAsync,
        setup: &Setup,
        what: &str,
        make: impl FnOnce(&ServiceBuilder<Bytes, u64>) -> std::result::Result<P, OpenError>,
    ) -> Result<Self> {
        let name = t.name_of();
        let rt = runtime(name)?;
        let node = Node::new().map_err(|e| err(format!("{name} node: {e}")))?;
        let port = make(&service(&node, name, t.parked, setup))
            .map_err(|e| err(format!("{name} {what}: {e}")))?;
        Ok(Self {
            name,
            mode: setup.mode,
            payload: setup.payload,
            port,
            seq: 0,
            rt,
        })
    }
}

impl AsyncRpcPing {
    pub(super) fn new(t: &RingbusAsync, setup: &Setup) -> Result<Self> {
        Self::open(t, setup, "client", ServiceBuilder::client)
    }
}

/// Awaits the response to `pending` and checks that it echoes `seq`.
#[inline(always)]
async fn await_response(pending: Pending<'_, u64>, name: &str, seq: u64) -> Result<()> {
    let response = pending
        .await
        .map_err(|e| err(format!("{name} response: {e}")))?;
    check_seq(*response, seq)
}

impl PingEnd for AsyncRpcPing {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        check_mode(self.name, self.mode, Mode::Latency)?;
        let (client, name, payload) = (&self.port, self.name, self.payload);
        let LatencyRound {
            count,
            warmup,
            touch,
            hist,
        } = round;
        let first_seq = self.seq + 1;
        // As `LatencyRound::time`, each response awaited.
        self.rt.block_on(async {
            for i in 0..count {
                let seq = first_seq + i;
                let t0 = Instant::now();
                await_response(send(client, name, payload, seq, touch)?, name, seq).await?;
                let rtt = t0.elapsed();
                if i >= warmup {
                    hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Ok::<_, BoxError>(())
        })?;
        self.seq += count;
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        check_mode(self.name, self.mode, Mode::Stream)?;
        let (client, name, payload) = (&self.port, self.name, self.payload);
        let first_seq = self.seq + 1;
        let outcome = self.rt.block_on(pipelined_calls(
            first_seq,
            count,
            |seq| send(client, name, payload, seq, touch),
            |pending, seq| await_response(pending, name, seq),
        ))?;
        self.seq += count;
        Ok(Some(outcome))
    }
}

/// As [`super::super::util::pipelined_calls`], each response awaited: first a tenth of the
/// calls (at most 2,000) one after another, timed each (the round's round-trip p50), then the
/// rest with [`RPC_WINDOW`] calls in flight, timed from the first to the last response.
async fn pipelined_calls<'c, F>(
    first_seq: u64,
    count: u64,
    mut send: impl FnMut(u64) -> Result<Pending<'c, u64>>,
    mut wait: impl FnMut(Pending<'c, u64>, u64) -> F,
) -> Result<StreamOutcome>
where
    F: std::future::Future<Output = Result<()>>,
{
    let paired = (count / 10).min(2000);
    let mut rtts = Vec::with_capacity(paired as usize);
    for seq in first_seq..first_seq + paired {
        let t0 = Instant::now();
        wait(send(seq)?, seq).await?;
        rtts.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    rtts.sort_unstable();
    let rtt_p50_ns = rtts.get(rtts.len() / 2).copied();
    let (first_seq, count) = (first_seq + paired, count - paired);
    let end = first_seq + count;
    let mut in_flight = VecDeque::with_capacity(RPC_WINDOW);
    let mut next = first_seq;
    let mut timer = StreamTimer::default();
    while next < end && in_flight.len() < RPC_WINDOW {
        in_flight.push_back((send(next)?, next));
        next += 1;
    }
    for i in 0..count {
        let (pending, seq) = in_flight
            .pop_front()
            .ok_or_else(|| err("pipelined calls: no call in flight"))?;
        wait(pending, seq).await?;
        timer.received(i);
        if next < end {
            in_flight.push_back((send(next)?, next));
            next += 1;
        }
    }
    Ok(StreamOutcome {
        count,
        elapsed_ns: timer.finish(),
        checksum: 0,
        rtt_p50_ns,
    })
}

impl AsyncRpcPong {
    pub(super) fn new(t: &RingbusAsync, setup: &Setup) -> Result<Self> {
        Self::open(t, setup, "server", ServiceBuilder::server)
    }

    /// Answers `count` requests, each awaited, with its sequence number.
    fn answer(&mut self, mode: Mode, count: u64, touch: bool) -> Result<u64> {
        check_mode(self.name, self.mode, mode)?;
        let (server, name) = (&mut self.port, self.name);
        let first = self.seq + 1;
        let checksum = self.rt.block_on(async {
            let mut checksum = 0;
            for expected in first..first + count {
                let request = match tokio::time::timeout(MSG_TIMEOUT, server.receive_async()).await
                {
                    Ok(got) => got.map_err(|e| err(format!("{name} request: {e}")))?,
                    Err(_) => {
                        return Err(err(format!(
                            "{name} request: timed out after {MSG_TIMEOUT:?}"
                        )))
                    }
                };
                let seq = consume_payload(&request, touch, &mut checksum);
                check_seq(seq, expected)?;
                request
                    .respond(&seq)
                    .map_err(|e| err(format!("{name} respond: {e}")))?;
            }
            Ok::<_, BoxError>(checksum)
        })?;
        self.seq += count;
        Ok(checksum)
    }
}

impl PongEnd for AsyncRpcPong {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.answer(Mode::Latency, count, touch)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        let checksum = self.answer(Mode::Stream, count, touch)?;
        Ok(StreamOutcome::served(count, checksum))
    }
}
