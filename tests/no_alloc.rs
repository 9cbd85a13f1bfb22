//! The hot path allocates nothing: a counting global allocator over 10,000 loan/send/receive
//! cycles after warm-up, in shared memory and in-process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations count (the test harness's own threads allocate too).
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

fn counted() -> bool {
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            // Relaxed: a plain event counter.
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            // Relaxed: a plain event counter.
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is shared by the counted threads: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the file's lock and counts this thread's allocations until dropped.
struct Serial(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl Drop for Serial {
    fn drop(&mut self) {
        // Stop counting before the lock is released: the harness allocates when the test ends.
        COUNTED.with(|c| c.set(false));
    }
}

fn serial() -> Serial {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    count_this_thread();
    Serial(guard)
}

fn cycles(node: ringbus::Node, name: &str) {
    let topic = node.topic::<[u64; 8]>(name).capacity(32);
    let mut p = topic.publisher().unwrap();
    let s = topic.subscriber().unwrap();
    let bytes = node
        .topic_bytes(&format!("{name}-bytes"))
        .max_message_size(256);
    let mut pb = bytes.publisher().unwrap();
    let sb = bytes.subscriber().unwrap();
    let mut run = |n: u64| {
        for i in 0..n {
            let mut loan = p.loan().unwrap();
            loan[0] = i;
            loan.send();
            assert_eq!(s.try_receive().unwrap()[0], i);
            let mut loan = pb.loan(64).unwrap();
            loan[0] = i as u8;
            loan.send();
            assert_eq!(sb.receive().unwrap()[0], i as u8);
        }
    };
    run(1000);
    // Relaxed: single-threaded test reads of a counter.
    let before = ALLOCS.load(Ordering::Relaxed);
    run(10_000);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed) - before,
        0,
        "allocations on the hot path"
    );
}

#[test]
fn no_allocation_per_message() {
    let _serial = serial();
    let root = std::env::temp_dir().join(format!("ringbus-test-{}-noalloc", std::process::id()));
    cycles(ringbus::Node::with_root(root).unwrap(), "noalloc");
    cycles(ringbus::Node::in_process(), "noalloc");
}

fn calls(node: ringbus::Node, name: &str) {
    let svc = node.service::<[u64; 8], u64>(name).max_in_flight(4);
    let server = svc.server().unwrap();
    let client = svc.client().unwrap();
    let bytes = node
        .service::<ringbus::Bytes, ringbus::Bytes>(&format!("{name}-bytes"))
        .max_request_size(256)
        .max_response_size(64);
    let server_b = bytes.server().unwrap();
    let client_b = bytes.client().unwrap();
    let run = |n: u64| {
        for i in 0..n {
            let mut loan = client.loan().unwrap();
            loan[0] = i;
            let pending = loan.send();
            let req = server.try_receive().unwrap();
            let mut out = req.loan().unwrap();
            *out = i + 1;
            out.send();
            assert_eq!(*pending.wait().unwrap(), i + 1);
            let pending = client_b.send(&[i as u8; 64]).unwrap();
            let req = server_b.try_receive().unwrap();
            let first = req[0];
            req.respond(&[first; 8]).unwrap();
            assert_eq!(pending.wait().unwrap()[0], i as u8);
        }
    };
    run(1000);
    // Relaxed: single-threaded test reads of a counter.
    let before = ALLOCS.load(Ordering::Relaxed);
    run(10_000);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed) - before,
        0,
        "allocations on the call path"
    );
}

#[test]
fn no_allocation_per_call() {
    let _serial = serial();
    let root =
        std::env::temp_dir().join(format!("ringbus-test-{}-noalloc-rpc", std::process::id()));
    calls(ringbus::Node::with_root(root).unwrap(), "noalloc-rpc");
    calls(ringbus::Node::in_process(), "noalloc-rpc");
}

/// A million calls that time out (a server thread answers whatever it takes, mostly too late):
/// no allocation, and afterwards every call slot is back.
#[test]
fn a_million_timed_out_calls_leak_nothing() {
    use ringbus::CallError;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    let _serial = serial();
    let root = std::env::temp_dir().join(format!("ringbus-test-{}-timeouts", std::process::id()));
    let node = ringbus::Node::with_root(root).unwrap();
    let svc = node.service::<u64, u64>("timeouts").max_in_flight(16);
    let server = svc.server().unwrap();
    let client = svc.client().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let answered = std::thread::spawn(move || {
        count_this_thread();
        let mut n = 0u64;
        while !flag.load(Ordering::SeqCst) {
            if let Ok(req) = server.receive_timeout(Duration::from_millis(10)) {
                let v = *req;
                req.respond(&v).unwrap();
                n += 1;
            }
        }
        n
    });
    let (mut ok, mut timeouts, mut busy) = (0u64, 0u64, 0u64);
    // Relaxed: a counter read.
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..1_000_000u64 {
        match client.call_timeout(&i, Duration::ZERO) {
            Ok(r) => {
                assert_eq!(*r, i);
                ok += 1;
            }
            Err(CallError::Timeout(_)) => timeouts += 1,
            Err(CallError::Busy { .. }) => busy += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(ok + timeouts + busy, 1_000_000);
    assert!(timeouts > 0);
    // The server answers every call it took; the client discards those answers and frees the
    // slots (bounded wait: the server thread is running).
    let mut rounds = 0;
    while client.collect() != 0 {
        std::thread::sleep(Duration::from_millis(1));
        rounds += 1;
        assert!(rounds < 10_000, "call slots never came back");
    }
    stop.store(true, Ordering::SeqCst);
    let served = answered.join().unwrap();
    assert_eq!(allocs, 0, "allocations while calling");
    assert_eq!(client.in_flight(), 0);
    assert_eq!(
        served,
        ok + client.discarded(),
        "every answer was read or discarded"
    );
}

fn queue_cycles(b: ringbus::QueueBuilder<[u64; 8]>) {
    let mut p = b.producer().unwrap();
    let c = b.consumer().unwrap();
    let mut run = |n: u64| {
        for i in 0..n {
            let mut loan = p.loan().unwrap();
            loan[0] = i;
            loan.send().unwrap();
            p.send(&[i; 8]).unwrap();
            let d = c.try_receive().unwrap();
            assert_eq!(d[0], i);
            d.ack().unwrap();
            let d = c.receive().unwrap();
            assert_eq!(d[1], i);
            d.nack().unwrap(); // handed back, redelivered at once
            c.try_receive().unwrap().ack().unwrap();
        }
    };
    run(1000);
    // Relaxed: single-threaded test reads of a counter.
    let before = ALLOCS.load(Ordering::Relaxed);
    run(10_000);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed) - before,
        0,
        "allocations on the queue's hot path"
    );
}

#[test]
fn no_allocation_per_queue_message() {
    let _serial = serial();
    let root = std::env::temp_dir().join(format!("ringbus-test-{}-noalloc-q", std::process::id()));
    queue_cycles(ringbus::Node::with_root(root).unwrap().queue("noalloc-q"));
    queue_cycles(ringbus::Node::in_process().queue("noalloc-q"));
    // Durable: within one log segment (creating the next one allocates its path).
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("noalloc-q-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    queue_cycles(
        ringbus::Node::in_process()
            .queue("noalloc-d")
            .segment_records(1 << 16)
            .durable(&dir)
            .sync_policy(ringbus::SyncPolicy::Never),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (polls that returned `Pending`) of the futures run by [`wait`].
static WAITS: AtomicU64 = AtomicU64::new(0);

/// The waker of [`wait`]: a flag and the thread to unpark.
struct Woken {
    flag: std::sync::atomic::AtomicBool,
    thread: std::thread::Thread,
}

impl std::task::Wake for Woken {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.flag.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

thread_local! {
    /// Made at the first `wait` (in the uncounted warm-up), reused after.
    static WAKER: (std::sync::Arc<Woken>, std::task::Waker) = {
        let woken = std::sync::Arc::new(Woken {
            flag: std::sync::atomic::AtomicBool::new(false),
            thread: std::thread::current(),
        });
        (woken.clone(), std::task::Waker::from(woken))
    };
}

/// Runs `f` to completion on this thread, parking between polls, and counts in [`WAITS`] the
/// polls that returned `Pending`. The handles below spin 0, so a `Pending` of a ringbus future
/// means it armed its doorbell and registered with the process's waiter, and only the waiter
/// thread's wake (or its 5 s safety nap) resumes it.
fn wait<F: std::future::Future>(f: F) -> F::Output {
    WAKER.with(|(woken, waker)| {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            woken.flag.store(false, Ordering::SeqCst);
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            // Relaxed: a counter read by this thread.
            WAITS.fetch_add(1, Ordering::Relaxed);
            while !woken.flag.swap(false, Ordering::SeqCst) {
                std::thread::park();
            }
        }
    })
}

/// Asserts that `run(n)` allocates nothing after a warm-up and that each of its `per_cycle`
/// futures per cycle registered (waited) at least once.
fn assert_registered_without_allocating(what: &str, per_cycle: u64, mut run: impl FnMut(u64)) {
    run(100);
    // Relaxed: single-threaded test reads of counters.
    let (before, waits) = (
        ALLOCS.load(Ordering::Relaxed),
        WAITS.load(Ordering::Relaxed),
    );
    run(2_000);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed) - before,
        0,
        "allocations on {what}"
    );
    assert!(
        WAITS.load(Ordering::Relaxed) - waits >= 2_000 * per_cycle,
        "every future of {what} registered with the waiter"
    );
}

const NO_SPIN: std::time::Duration = std::time::Duration::ZERO;

/// Async receives that wait each time: the future registers with the waiter (its first wait
/// takes a slot in the waiter's table), the send rings, the waiter wakes it. Counts this thread
/// (the future's side: registering, re-arming, unregistering); the waiter thread's loop reuses
/// its buffers.
fn async_cycles(node: ringbus::Node, name: &str) {
    let topic = node
        .topic::<[u64; 8]>(name)
        .capacity(32)
        .spin_before_sleep(NO_SPIN);
    let mut p = topic.publisher().unwrap();
    let mut s = topic.subscriber().unwrap();
    let queue = node
        .queue::<[u64; 8]>(&format!("{name}-q"))
        .capacity(32)
        .spin_before_sleep(NO_SPIN);
    let mut producer = queue.producer().unwrap();
    let mut c = queue.consumer().unwrap();
    assert_registered_without_allocating("the async hot path", 2, |n| {
        for i in 0..n {
            // `join!` polls in order: the receive waits (registered with this task's waker)
            // before the send rings, and the waiter thread wakes the task.
            let (got, ()) = wait(async {
                futures::join!(s.receive_async(), async {
                    p.send_copy(&[i; 8]).unwrap();
                })
            });
            assert_eq!(got.unwrap()[0], i);
            let (got, ()) = wait(async {
                futures::join!(c.receive_async(), async {
                    producer.send(&[i; 8]).unwrap();
                })
            });
            let d = got.unwrap();
            assert_eq!(d[0], i);
            d.ack().unwrap();
        }
    });
}

/// Async calls that wait each time, on both sides: the server's receive registers before the
/// client posts, the awaited response registers before the server answers.
fn async_rpc_cycles(node: ringbus::Node, name: &str) {
    let svc = node
        .service::<[u64; 8], [u64; 8]>(name)
        .spin_before_sleep(NO_SPIN);
    let mut server = svc.server().unwrap();
    let client = svc.client().unwrap();
    assert_registered_without_allocating("the async rpc hot path", 2, |n| {
        for i in 0..n {
            let (req, pending) = wait(async {
                futures::join!(server.receive_async(), async {
                    client.send(&[i; 8]).unwrap()
                })
            });
            let req = req.unwrap();
            let x = req[0];
            let (got, ()) = wait(async {
                futures::join!(pending.wait_async(), async {
                    req.respond(&[x + 1; 8]).unwrap();
                })
            });
            assert_eq!(got.unwrap()[0], i + 1);
        }
    });
}

/// Runs `f` without counting its allocations on this thread.
fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    COUNTED.with(|c| c.set(false));
    let r = f();
    COUNTED.with(|c| c.set(true));
    r
}

/// Async room waits that wait each time: the ring or queue is full, the send's future waits
/// (registered with this task's waker) before the read frees a slot and rings the room
/// doorbell, and the waiter thread wakes the task. The topic reads are not counted: a
/// subscriber that wakes waiting publishers looks for dead ones once per 1,024 wakes (opening
/// the segment's lock file allocates its path), for blocked publishers as for futures.
fn async_room_cycles(node: ringbus::Node, name: &str) {
    let topic = node
        .topic::<[u64; 8]>(name)
        .capacity(2)
        .spin_before_sleep(NO_SPIN);
    let mut p = topic.publisher().unwrap();
    let s = topic.subscriber().unwrap();
    let bytes = node
        .topic_bytes(&format!("{name}-bytes"))
        .capacity(2)
        .max_message_size(256)
        .spin_before_sleep(NO_SPIN);
    let mut pb = bytes.publisher().unwrap();
    let sb = bytes.subscriber().unwrap();
    let queue = node
        .queue::<[u64; 8]>(&format!("{name}-q"))
        .capacity(2)
        .prefetch(1)
        .spin_before_sleep(NO_SPIN);
    let mut producer = queue.producer().unwrap();
    let c = queue.consumer().unwrap();
    // Full to start with: every send below waits for the read beside it.
    for _ in 0..2 {
        p.send_copy(&[u64::MAX; 8]).unwrap();
        pb.send_copy(&[0xff; 64]).unwrap();
        producer.send(&[u64::MAX; 8]).unwrap();
    }
    assert_registered_without_allocating("the async room wait", 4, |n| {
        for i in 0..n {
            let v = [i; 8];
            let (sent, ()) = wait(async {
                futures::join!(p.send_copy_async(&v), async {
                    uncounted(|| drop(s.try_receive().unwrap()));
                })
            });
            sent.unwrap();
            let (loan, ()) = wait(async {
                futures::join!(pb.loan_async(64), async {
                    uncounted(|| drop(sb.try_receive().unwrap()));
                })
            });
            let mut loan = loan.unwrap();
            loan[0] = i as u8;
            loan.send();
            let (sent, ()) = wait(async {
                futures::join!(producer.send_async(&v), async {
                    let d = c.try_receive().unwrap();
                    d.ack().unwrap();
                })
            });
            sent.unwrap();
            let (loan, ()) = wait(async {
                futures::join!(producer.loan_async(), async {
                    let d = c.try_receive().unwrap();
                    d.ack().unwrap();
                })
            });
            let mut loan = loan.unwrap();
            loan[0] = i;
            loan.send().unwrap();
        }
    });
}

#[test]
fn no_allocation_per_async_wait() {
    let _serial = serial();
    let root = std::env::temp_dir().join(format!("ringbus-test-{}-noalloc-a", std::process::id()));
    async_cycles(ringbus::Node::with_root(&root).unwrap(), "noalloc-a");
    async_cycles(ringbus::Node::in_process(), "noalloc-a");
    async_rpc_cycles(ringbus::Node::with_root(&root).unwrap(), "noalloc-rpc");
    async_rpc_cycles(ringbus::Node::in_process(), "noalloc-rpc");
    async_room_cycles(ringbus::Node::with_root(&root).unwrap(), "noalloc-room");
    async_room_cycles(ringbus::Node::in_process(), "noalloc-room");
}
