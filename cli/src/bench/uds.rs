//! `uds`: a Unix domain stream socket between the two processes.
//!
//! The parent listens on a path in the run directory, the child connects. Every message
//! is the whole payload (`write_all` / `read_exact`, blocking reads with a timeout).
//!
//! `rpc`: the client (ping) writes a request of the payload size, the server (pong) reads
//! exactly that many bytes and writes the 8-byte response (the request's sequence
//! number). Pipelined rounds keep [`RPC_WINDOW`] requests outstanding on the socket
//! (responses are 8 bytes, so the server never blocks writing them while the client is
//! still writing requests).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::transport::{
    LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport, RPC_WINDOW,
};
use super::util::{
    check_seq, consume_payload, err, fill_payload, pipelined_calls, timed_receives, Result,
    MSG_TIMEOUT,
};

/// The `uds` transport.
pub struct Uds;

impl Transport for Uds {
    fn name(&self) -> &'static str {
        "uds"
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        let path = setup.resource_path("uds", ".sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| err(format!("cannot bind {}: {e}", path.display())))?;
        Ok(Box::new(UdsPing {
            listener,
            path,
            conn: None,
            end: UdsEnd::new(
                setup,
                setup.payload,
                setup.pattern.reply_bytes(setup.payload),
            ),
        }))
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        let path = setup.resource_path("uds", ".sock");
        let stream = UnixStream::connect(&path)
            .map_err(|e| err(format!("cannot connect to {}: {e}", path.display())))?;
        configure(&stream)?;
        Ok(Box::new(UdsPong {
            stream,
            end: UdsEnd::new(
                setup,
                setup.pattern.reply_bytes(setup.payload),
                setup.payload,
            ),
        }))
    }
}

fn configure(stream: &UnixStream) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(MSG_TIMEOUT))?;
    stream.set_write_timeout(Some(MSG_TIMEOUT))?;
    Ok(())
}

/// Buffers and counters common to both ends.
struct UdsEnd {
    pattern: Pattern,
    mode: Mode,
    /// What this end writes: the payload, or (`rpc` server) the 8-byte response.
    send_buf: Vec<u8>,
    /// What this end reads: the payload, or (`rpc` client) the 8-byte response.
    recv_buf: Vec<u8>,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
}

impl UdsEnd {
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
        super::transport::check_mode("uds", self.mode, mode)
    }
}

struct UdsPing {
    listener: UnixListener,
    path: PathBuf,
    conn: Option<UnixStream>,
    end: UdsEnd,
}

impl UdsPing {
    /// The connection from the child; it connected before answering "ready", so the
    /// accept does not wait long, but it is bounded anyway.
    fn conn(&mut self) -> Result<&mut UnixStream> {
        if self.conn.is_none() {
            self.listener.set_nonblocking(true)?;
            let t0 = Instant::now();
            let stream = loop {
                match self.listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && t0.elapsed() < MSG_TIMEOUT => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(err(format!("uds accept: {e}"))),
                }
            };
            configure(&stream)?;
            self.conn = Some(stream);
        }
        Ok(self.conn.as_mut().expect("connection was just set"))
    }
}

impl Drop for UdsPing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl PingEnd for UdsPing {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.end.check_mode(Mode::Latency)?;
        self.conn()?;
        let Self { conn, end, .. } = self;
        let stream = conn.as_mut().expect("connected above");
        let mut checksum = 0;
        let touch = round.touch;
        end.seq += round.time(end.seq + 1, |seq| {
            fill_payload(&mut end.send_buf, seq, touch);
            stream.write_all(&end.send_buf)?;
            stream.read_exact(&mut end.recv_buf)?;
            check_seq(consume_payload(&end.recv_buf, touch, &mut checksum), seq)
        })?;
        std::hint::black_box(checksum);
        Ok(())
    }

    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>> {
        self.end.check_mode(Mode::Stream)?;
        self.conn()?;
        let Self { conn, end, .. } = self;
        let stream = conn.as_mut().expect("connected above");
        if end.pattern == Pattern::Rpc {
            // Both closures use the socket: `&UnixStream` reads and writes.
            let stream = &*stream;
            let (send_buf, recv_buf) = (&mut end.send_buf, &mut end.recv_buf);
            let mut checksum = 0;
            let outcome = pipelined_calls(
                end.seq + 1,
                count,
                RPC_WINDOW,
                |seq| {
                    fill_payload(send_buf, seq, touch);
                    let mut sock = stream;
                    sock.write_all(send_buf)?;
                    Ok(())
                },
                |(), seq| {
                    let mut sock = stream;
                    sock.read_exact(recv_buf)?;
                    check_seq(consume_payload(recv_buf, touch, &mut checksum), seq)
                },
            )?;
            end.seq += count;
            std::hint::black_box(checksum);
            return Ok(Some(outcome));
        }
        for _ in 0..count {
            end.seq += 1;
            fill_payload(&mut end.send_buf, end.seq, touch);
            stream.write_all(&end.send_buf)?;
        }
        Ok(None)
    }
}

struct UdsPong {
    stream: UnixStream,
    end: UdsEnd,
}

impl UdsPong {
    /// Answers `count` messages: echoes each one's sequence number in a message of the
    /// reply size (the payload for `pubsub`, 8 bytes for `rpc`).
    fn answer(&mut self, count: u64, touch: bool) -> Result<u64> {
        let end = &mut self.end;
        let mut checksum = 0;
        for _ in 0..count {
            self.stream.read_exact(&mut end.recv_buf)?;
            let seq = consume_payload(&end.recv_buf, touch, &mut checksum);
            check_seq(seq, end.seq + 1)?;
            end.seq = seq;
            fill_payload(&mut end.send_buf, seq, touch);
            self.stream.write_all(&end.send_buf)?;
        }
        Ok(checksum)
    }
}

impl PongEnd for UdsPong {
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
        let (stream, end) = (&mut self.stream, &mut self.end);
        let mut checksum = 0;
        let elapsed_ns = timed_receives(end.seq + 1, count, |expected| {
            stream.read_exact(&mut end.recv_buf)?;
            check_seq(
                consume_payload(&end.recv_buf, touch, &mut checksum),
                expected,
            )
        })?;
        end.seq += count;
        Ok(StreamOutcome::received(count, elapsed_ns, checksum))
    }
}
