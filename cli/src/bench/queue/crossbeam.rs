//! `crossbeam` for `bench queue`: crossbeam-queue's `ArrayQueue` (bounded, lock-free,
//! capacity [`QUEUE_CAPACITY`]) between threads of the parent process, driven by the
//! same producer and consumer loops as the ringbus worker processes and pinned to the
//! same CPUs. A pop is the consumer's "ack" (the message is gone from the queue).
//!
//! 64 B and 1 KiB messages travel by value as `[u8; N]` (copied in and out of the
//! queue's slot, as a Rust program would use it); other sizes as `Box<[u8]>` buffers that
//! consumers hand back through a second `ArrayQueue`, so no allocation happens per
//! message. Each round gets a fresh queue whose slots are touched once before the round
//! (ringbus queues stay alive from round to round, so their pages are faulted in too).

use std::thread;

use crossbeam_queue::ArrayQueue;

use super::super::util::{err, pin_current_thread, Result};
use super::worker::{
    consume, produce, wait_for, AckWords, Header, LocalAcks, Outcome, QueueRx, QueueTx, Round,
};
use super::{CpuPlan, QueueSetup, QueueTransport, Role, QUEUE_CAPACITY};

/// The `crossbeam` reference.
pub struct Crossbeam;

impl QueueTransport for Crossbeam {
    fn name(&self) -> &'static str {
        "crossbeam"
    }

    fn reference(&self) -> Option<&'static str> {
        None
    }

    fn in_process(&self) -> bool {
        true
    }

    fn local_round(
        &self,
        setup: &QueueSetup,
        round: &Round,
        cpus: &CpuPlan,
    ) -> Result<Vec<Outcome>> {
        match setup.payload {
            64 => array_round::<64>(round, cpus),
            1024 => array_round::<1024>(round, cpus),
            n => boxed_round(n, round, cpus),
        }
    }
}

struct ArrayTx<'q, const N: usize>(&'q ArrayQueue<[u8; N]>);

impl<const N: usize> QueueTx for ArrayTx<'_, N> {
    #[inline(always)]
    fn send(&mut self, header: &Header) -> Result<()> {
        let mut msg = [0u8; N];
        header.write(&mut msg);
        let mut slot = Some(msg);
        wait_for("room in the ArrayQueue", || {
            let m = slot.take()?;
            match self.0.push(m) {
                Ok(()) => Some(()),
                Err(back) => {
                    slot = Some(back);
                    None
                }
            }
        })
    }
}

struct ArrayRx<'q, const N: usize>(&'q ArrayQueue<[u8; N]>);

impl<const N: usize> QueueRx for ArrayRx<'_, N> {
    #[inline(always)]
    fn try_receive<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        Ok(self.0.pop().map(|msg| read(&msg)))
    }
}

fn array_round<const N: usize>(round: &Round, cpus: &CpuPlan) -> Result<Vec<Outcome>> {
    let queue = ArrayQueue::<[u8; N]>::new(QUEUE_CAPACITY);
    for _ in 0..QUEUE_CAPACITY {
        let _ = queue.push([0u8; N]);
    }
    while queue.pop().is_some() {}
    threads_round(round, cpus, || ArrayTx(&queue), || ArrayRx(&queue))
}

/// Sends `Box<[u8]>` buffers taken from `free`.
struct BoxTx<'q> {
    queue: &'q ArrayQueue<Box<[u8]>>,
    free: &'q ArrayQueue<Box<[u8]>>,
}

impl QueueTx for BoxTx<'_> {
    fn send(&mut self, header: &Header) -> Result<()> {
        let mut buf = wait_for("a free buffer", || self.free.pop())?;
        header.write(&mut buf);
        let mut slot = Some(buf);
        wait_for("room in the ArrayQueue", || {
            let b = slot.take()?;
            match self.queue.push(b) {
                Ok(()) => Some(()),
                Err(back) => {
                    slot = Some(back);
                    None
                }
            }
        })
    }
}

/// Receives `Box<[u8]>` buffers and hands them back to `free`.
struct BoxRx<'q> {
    queue: &'q ArrayQueue<Box<[u8]>>,
    free: &'q ArrayQueue<Box<[u8]>>,
}

impl QueueRx for BoxRx<'_> {
    fn try_receive<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        let Some(buf) = self.queue.pop() else {
            return Ok(None);
        };
        let out = read(&buf);
        // `free` holds every buffer, so there is always room.
        let _ = self.free.push(buf);
        Ok(Some(out))
    }
}

fn boxed_round(len: usize, round: &Round, cpus: &CpuPlan) -> Result<Vec<Outcome>> {
    // Every buffer is in the queue, in `free`, or held by one producer or consumer.
    let pool = QUEUE_CAPACITY + round.shape.producers + round.shape.consumers;
    let queue = ArrayQueue::<Box<[u8]>>::new(QUEUE_CAPACITY);
    let free = ArrayQueue::<Box<[u8]>>::new(pool);
    for _ in 0..pool {
        let mut buf = vec![0u8; len].into_boxed_slice();
        buf.fill(1); // fault the pages in before the round
        free.push(buf).map_err(|_| err("crossbeam buffer pool"))?;
    }
    threads_round(
        round,
        cpus,
        || BoxTx {
            queue: &queue,
            free: &free,
        },
        || BoxRx {
            queue: &queue,
            free: &free,
        },
    )
}

/// Runs one round with a thread per producer and consumer (consumers started first),
/// each pinned where the worker process of its role would be.
fn threads_round<Tx: QueueTx, Rx: QueueRx>(
    round: &Round,
    cpus: &CpuPlan,
    tx: impl Fn() -> Tx + Sync,
    rx: impl Fn() -> Rx + Sync,
) -> Result<Vec<Outcome>> {
    let local = LocalAcks::default();
    let acks = AckWords::of_local(&local);
    let shape = round.shape;
    thread::scope(|s| {
        let (tx, rx, acks) = (&tx, &rx, &acks);
        let pin = |role: Role, i: usize| -> Result<()> {
            match cpus.cpu(shape, role, i) {
                Some(cpu) => pin_current_thread(cpu),
                None => Ok(()),
            }
        };
        let consumers: Vec<_> = (0..shape.consumers)
            .map(|j| {
                s.spawn(move || {
                    pin(Role::Consumer, j)?;
                    consume(&mut rx(), round, acks)
                })
            })
            .collect();
        let producers: Vec<_> = (0..shape.producers)
            .map(|p| {
                s.spawn(move || {
                    pin(Role::Producer, p)?;
                    produce(&mut tx(), round, p, acks)
                })
            })
            .collect();
        producers
            .into_iter()
            .chain(consumers)
            .map(|h| h.join().map_err(|_| err("crossbeam thread panicked"))?)
            .collect()
    })
}
