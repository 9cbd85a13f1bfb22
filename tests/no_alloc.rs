//! The hot path allocates nothing: a counting global allocator over 10,000 loan/send/receive
//! cycles after warm-up, in shared memory and in-process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: a plain event counter.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Relaxed: a plain event counter.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let root = std::env::temp_dir().join(format!("ringbus-test-{}-noalloc", std::process::id()));
    cycles(ringbus::Node::with_root(root).unwrap(), "noalloc");
    cycles(ringbus::Node::in_process(), "noalloc");
}
