//! `crossbeam`: streaming throughput of a bounded `crossbeam-channel` between two threads
//! of the parent process (an in-process reference; no latency rows; `pubsub` only).
//!
//! Payloads up to 1 KiB travel by value as `[u8; N]`; larger ones as `Box<[u8]>` that
//! the receiver hands back through a second channel, so no allocation happens per
//! message.

use std::thread;

use crossbeam_channel::{bounded, Receiver};

use super::transport::{
    Mode, Pattern, PingEnd, Placement, PongEnd, Setup, StreamOutcome, Transport,
};
use super::util::{
    check_seq, consume_payload, err, fill_payload, pin_current_thread, timed_receives, Result,
    MSG_TIMEOUT,
};
use super::STREAM_CAPACITY;

/// The `crossbeam` transport.
pub struct Crossbeam;

impl Transport for Crossbeam {
    fn name(&self) -> &'static str {
        "crossbeam"
    }

    fn supports(&self, pattern: Pattern, mode: Mode) -> bool {
        pattern == Pattern::PubSub && mode == Mode::Stream
    }

    fn placement(&self) -> Placement {
        Placement::InProcess
    }

    fn ping(&self, _setup: &Setup) -> Result<Box<dyn PingEnd>> {
        Err(err("crossbeam runs inside the parent only"))
    }

    fn pong(&self, _setup: &Setup) -> Result<Box<dyn PongEnd>> {
        Err(err("crossbeam runs inside the parent only"))
    }

    fn local_stream(
        &self,
        setup: &Setup,
        count: u64,
        touch: bool,
        receiver_cpu: Option<usize>,
    ) -> Result<StreamOutcome> {
        match setup.payload {
            8 => stream_array::<8>(count, touch, receiver_cpu),
            64 => stream_array::<64>(count, touch, receiver_cpu),
            1024 => stream_array::<1024>(count, touch, receiver_cpu),
            n => stream_boxed(n, count, touch, receiver_cpu),
        }
    }
}

/// Receives `count` messages from `rx`, handing each back through `recycle`.
fn receive_all<T: AsRef<[u8]>>(
    rx: &Receiver<T>,
    count: u64,
    touch: bool,
    receiver_cpu: Option<usize>,
    mut recycle: impl FnMut(T),
) -> Result<StreamOutcome> {
    if let Some(cpu) = receiver_cpu {
        pin_current_thread(cpu)?;
    }
    let mut checksum = 0;
    let elapsed_ns = timed_receives(1, count, |seq| {
        let msg = rx
            .recv_timeout(MSG_TIMEOUT)
            .map_err(|e| err(format!("crossbeam receive: {e}")))?;
        check_seq(consume_payload(msg.as_ref(), touch, &mut checksum), seq)?;
        recycle(msg);
        Ok(())
    })?;
    Ok(StreamOutcome::received(count, elapsed_ns, checksum))
}

fn stream_array<const N: usize>(
    count: u64,
    touch: bool,
    receiver_cpu: Option<usize>,
) -> Result<StreamOutcome> {
    let (tx, rx) = bounded::<[u8; N]>(STREAM_CAPACITY);
    let receiver = thread::spawn(move || receive_all(&rx, count, touch, receiver_cpu, |_msg| {}));
    for seq in 1..=count {
        let mut msg = [0u8; N];
        fill_payload(&mut msg, seq, touch);
        if tx.send_timeout(msg, MSG_TIMEOUT).is_err() {
            break; // the receiver failed; join() reports why
        }
    }
    drop(tx);
    receiver
        .join()
        .map_err(|_| err("crossbeam receiver panicked"))?
}

fn stream_boxed(
    len: usize,
    count: u64,
    touch: bool,
    receiver_cpu: Option<usize>,
) -> Result<StreamOutcome> {
    let pool_size = STREAM_CAPACITY + 2;
    let (tx, rx) = bounded::<Box<[u8]>>(STREAM_CAPACITY);
    let (back_tx, back_rx) = bounded::<Box<[u8]>>(pool_size);
    for _ in 0..pool_size {
        let mut buf = vec![0u8; len].into_boxed_slice();
        buf.fill(1); // fault the pages in before timing starts
        back_tx.send(buf).map_err(|_| err("crossbeam pool"))?;
    }
    let receiver = thread::spawn(move || {
        receive_all(&rx, count, touch, receiver_cpu, |msg| {
            let _ = back_tx.try_send(msg);
        })
    });
    for seq in 1..=count {
        let Ok(mut buf) = back_rx.recv_timeout(MSG_TIMEOUT) else {
            break; // the receiver failed; join() reports why
        };
        fill_payload(&mut buf, seq, touch);
        if tx.send_timeout(buf, MSG_TIMEOUT).is_err() {
            break;
        }
    }
    drop(tx);
    receiver
        .join()
        .map_err(|_| err("crossbeam receiver panicked"))?
}
