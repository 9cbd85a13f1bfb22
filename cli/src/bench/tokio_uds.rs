//! `tokio-uds`: the [`uds`](super::uds) exchange through tokio's async `UnixStream`, what
//! an async service would use between two processes instead of ringbus.
//!
//! Each end (ping in the parent, pong in the child) owns a tokio current-thread runtime
//! (I/O and time drivers), built once when the end is created. A round runs all its
//! socket I/O in one `block_on`: every message is `write_all` / `read_exact` awaited
//! under `tokio::time::timeout` of [`MSG_TIMEOUT`] (as `uds` bounds its blocking calls),
//! so a wait is an epoll wake-up of the runtime, not a blocked `read`.
//!
//! Messages and `rpc` rounds are those of `uds`: the whole payload per message; the
//! server answers a request with the 8-byte response (its sequence number); pipelined
//! rounds keep [`RPC_WINDOW`] requests outstanding on the socket. The round loops mirror
//! [`LatencyRound::time`], [`timed_receives`](super::util::timed_receives) and
//! [`pipelined_calls`](super::util::pipelined_calls), which take synchronous closures.

use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Runtime;

use super::transport::{
    LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport, RPC_WINDOW,
};
use super::util::{
    check_seq, consume_payload, err, fill_payload, BoxError, Result, StreamTimer, MSG_TIMEOUT,
};

const NAME: &str = "tokio-uds";

/// The `tokio-uds` transport.
pub struct TokioUds;

impl Transport for TokioUds {
    fn name(&self) -> &'static str {
        NAME
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        let rt = runtime()?;
        let path = setup.resource_path(NAME, ".sock");
        let _ = std::fs::remove_file(&path);
        let listener = StdUnixListener::bind(&path)
            .map_err(|e| err(format!("cannot bind {}: {e}", path.display())))?;
        listener.set_nonblocking(true)?;
        let listener = {
            // Registering with the reactor needs the runtime's context.
            let _in_rt = rt.enter();
            UnixListener::from_std(listener)?
        };
        Ok(Box::new(TokioUdsPing {
            conn: None,
            listener,
            path,
            end: Bufs::new(
                setup,
                setup.payload,
                setup.pattern.reply_bytes(setup.payload),
            ),
            rt,
        }))
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        let rt = runtime()?;
        let path = setup.resource_path(NAME, ".sock");
        let stream = rt
            .block_on(timed("connecting", UnixStream::connect(&path)))
            .map_err(|e| err(format!("cannot connect to {}: {e}", path.display())))?;
        Ok(Box::new(TokioUdsPong {
            stream,
            end: Bufs::new(
                setup,
                setup.pattern.reply_bytes(setup.payload),
                setup.payload,
            ),
            rt,
        }))
    }
}

/// The runtime of one end: current-thread, with the I/O and time drivers.
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| err(format!("{NAME}: cannot build a tokio runtime: {e}")))
}

/// Awaits one socket operation for at most [`MSG_TIMEOUT`].
async fn timed<T>(what: &str, op: impl Future<Output = std::io::Result<T>>) -> Result<T> {
    match tokio::time::timeout(MSG_TIMEOUT, op).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(err(format!(
            "{NAME}: timed out after {MSG_TIMEOUT:?} {what}"
        ))),
    }
}

/// Buffers and counters common to both ends.
struct Bufs {
    pattern: Pattern,
    mode: Mode,
    /// What this end writes: the payload, or (`rpc` server) the 8-byte response.
    send_buf: Vec<u8>,
    /// What this end reads: the payload, or (`rpc` client) the 8-byte response.
    recv_buf: Vec<u8>,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
}

impl Bufs {
    fn new(setup: &Setup, send_bytes: usize, recv_bytes: usize) -> Self {
        Self {
            pattern: setup.pattern,
            mode: setup.mode,
            send_buf: vec![0; send_bytes],
            recv_buf: vec![0; recv_bytes],
            seq: 0,
        }
    }

    fn check_mode(&self, mode: Mode) -> Result<()> {
        super::transport::check_mode(NAME, self.mode, mode)
    }

    /// Writes message `seq` (the payload, or the `rpc` response).
    async fn send(&mut self, stream: &mut UnixStream, seq: u64, touch: bool) -> Result<()> {
        fill_payload(&mut self.send_buf, seq, touch);
        timed("writing", stream.write_all(&self.send_buf)).await
    }

    /// Reads one message and checks that it is number `expected`.
    async fn receive(
        &mut self,
        stream: &mut UnixStream,
        expected: u64,
        touch: bool,
        checksum: &mut u64,
    ) -> Result<()> {
        timed("reading", stream.read_exact(&mut self.recv_buf)).await?;
        check_seq(consume_payload(&self.recv_buf, touch, checksum), expected)
    }
}

struct TokioUdsPing {
    // Sockets before the runtime: they deregister from its reactor when dropped.
    conn: Option<UnixStream>,
    listener: UnixListener,
    path: PathBuf,
    end: Bufs,
    rt: Runtime,
}

impl TokioUdsPing {
    /// The connection from the child; it connected before answering "ready", so the
    /// accept does not wait long, but it is bounded anyway.
    fn conn(&mut self) -> Result<()> {
        if self.conn.is_none() {
            let (stream, _) = self
                .rt
                .block_on(timed("accepting", self.listener.accept()))?;
            self.conn = Some(stream);
        }
        Ok(())
    }
}

impl Drop for TokioUdsPing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl PingEnd for TokioUdsPing {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.end.check_mode(Mode::Latency)?;
        self.conn()?;
        let Self { conn, end, rt, .. } = self;
        let stream = conn.as_mut().expect("connected above");
        let LatencyRound {
            count,
            warmup,
            touch,
            hist,
        } = round;
        let first_seq = end.seq + 1;
        let mut checksum = 0;
        // As `LatencyRound::time`, each round trip awaited.
        rt.block_on(async {
            for i in 0..count {
                let seq = first_seq + i;
                let t0 = Instant::now();
                end.send(stream, seq, touch).await?;
                end.receive(stream, seq, touch, &mut checksum).await?;
                let rtt = t0.elapsed();
                if i >= warmup {
                    hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Ok::<_, BoxError>(())
        })?;
        end.seq += count;
        std::hint::black_box(checksum);
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        self.end.check_mode(Mode::Stream)?;
        self.conn()?;
        let Self { conn, end, rt, .. } = self;
        let stream = conn.as_mut().expect("connected above");
        let first_seq = end.seq + 1;
        if end.pattern == Pattern::Rpc {
            let outcome = rt.block_on(pipelined_calls(stream, end, first_seq, count, touch))?;
            end.seq += count;
            return Ok(Some(outcome));
        }
        rt.block_on(async {
            for seq in first_seq..first_seq + count {
                end.send(stream, seq, touch).await?;
            }
            Ok::<_, BoxError>(())
        })?;
        end.seq += count;
        Ok(None)
    }
}

/// As [`super::util::pipelined_calls`], awaited: first a tenth of the calls (at most
/// 2,000) one after another, timed each (the round's round-trip p50), then the rest with
/// [`RPC_WINDOW`] requests in flight, timed from the first to the last response. Every
/// response is 8 bytes, so the server never blocks writing them while the client is still
/// writing requests.
async fn pipelined_calls(
    stream: &mut UnixStream,
    end: &mut Bufs,
    first_seq: u64,
    count: u64,
    touch: bool,
) -> Result<StreamOutcome> {
    let mut checksum = 0;
    let paired = (count / 10).min(2000);
    let mut rtts = Vec::with_capacity(paired as usize);
    for seq in first_seq..first_seq + paired {
        let t0 = Instant::now();
        end.send(stream, seq, touch).await?;
        end.receive(stream, seq, touch, &mut checksum).await?;
        rtts.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    rtts.sort_unstable();
    let rtt_p50_ns = rtts.get(rtts.len() / 2).copied();
    let (first_seq, count) = (first_seq + paired, count - paired);
    let last = first_seq + count;
    let mut in_flight: VecDeque<u64> = VecDeque::with_capacity(RPC_WINDOW);
    let mut next = first_seq;
    let mut timer = StreamTimer::default();
    while next < last && in_flight.len() < RPC_WINDOW {
        end.send(stream, next, touch).await?;
        in_flight.push_back(next);
        next += 1;
    }
    for i in 0..count {
        let seq = in_flight
            .pop_front()
            .ok_or_else(|| err("pipelined calls: no call in flight"))?;
        end.receive(stream, seq, touch, &mut checksum).await?;
        timer.received(i);
        if next < last {
            end.send(stream, next, touch).await?;
            in_flight.push_back(next);
            next += 1;
        }
    }
    std::hint::black_box(checksum);
    Ok(StreamOutcome {
        count,
        elapsed_ns: timer.finish(),
        checksum: 0,
        rtt_p50_ns,
    })
}

struct TokioUdsPong {
    // The socket before the runtime: it deregisters from its reactor when dropped.
    stream: UnixStream,
    end: Bufs,
    rt: Runtime,
}

impl TokioUdsPong {
    /// Answers `count` messages: echoes each one's sequence number in a message of the
    /// reply size (the payload for `pubsub`, 8 bytes for `rpc`).
    fn answer(&mut self, count: u64, touch: bool) -> Result<u64> {
        let Self { stream, end, rt } = self;
        let first_seq = end.seq + 1;
        let mut checksum = 0;
        rt.block_on(async {
            for seq in first_seq..first_seq + count {
                end.receive(stream, seq, touch, &mut checksum).await?;
                end.seq = seq;
                end.send(stream, seq, touch).await?;
            }
            Ok::<_, BoxError>(())
        })?;
        Ok(checksum)
    }
}

impl PongEnd for TokioUdsPong {
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64> {
        self.end.check_mode(Mode::Latency)?;
        self.answer(count, touch)
    }

    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome> {
        self.end.check_mode(Mode::Stream)?;
        if self.end.pattern == Pattern::Rpc {
            // Pipelined requests: answer each as it comes (the client measures).
            let checksum = self.answer(count, touch)?;
            return Ok(StreamOutcome::served(count, checksum));
        }
        let Self { stream, end, rt } = self;
        let first_seq = end.seq + 1;
        let mut checksum = 0;
        // As `timed_receives`: timed from the first to the last message.
        let elapsed_ns = rt.block_on(async {
            let mut timer = StreamTimer::default();
            for i in 0..count {
                end.receive(stream, first_seq + i, touch, &mut checksum)
                    .await?;
                timer.received(i);
            }
            Ok::<_, BoxError>(timer.finish())
        })?;
        end.seq += count;
        Ok(StreamOutcome::received(count, elapsed_ns, checksum))
    }
}
