//! Regression tests from a third review of the queue's stale-reader protocol.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ring::*;
use common::{data_dir, patch};
use ringbus::{FullPolicy, Node, ProcessId};

fn read_u64(path: &Path, at: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).unwrap();
    u64::from_le_bytes(b)
}

fn ring(dir: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(&format!("queue_{name}"))
        })
        .expect("the ring file")
}

fn wait_for(path: &Path, at: u64, want: u64) {
    let start = Instant::now();
    while read_u64(path, at) != want {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "slot state never became {want:#x}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Consumer X (index 0, prefetch 2) holds delivery `d` of position 0 (the message's last allowed
/// delivery) past its deadline. X's next claim takes it back (X's reader bit set, READY|STALE)
/// and, the count being at the maximum, claims it for the dead-letter queue and opens it
/// (`mark_reader`) to copy it. While X copies/sends (here: held up on the dead-letter queue's
/// append lock), the dead-letter claim's own deadline passes and consumer Y takes it back. The
/// dead-letter queue is full: X's move fails, its un-open CAS (OPEN -> TAKEN) fails, and
/// `dead_letter` calls `release_stale(X)` without looking at X's views: X's reader bit goes
/// although X still holds `d`. The next successful move acknowledges the message with no bit
/// left: the slot is freed and a producer rewrites the payload under `d`.
#[test]
fn a_failed_dead_letter_move_clears_the_reader_bit_of_a_delivery_still_held() {
    let dir = data_dir("dlq-unopen-clears-held-bit");
    let node = Node::with_root(&dir).unwrap();
    let dlq = node.queue::<u64>("r3-dl").capacity(2);
    let mut dp = dlq.producer().unwrap();
    let dc = dlq.consumer().unwrap();
    dp.send(&100).unwrap();
    dp.send(&101).unwrap(); // the dead-letter queue is full
    let q = node
        .queue::<u64>("r3-q")
        .capacity(2)
        .max_deliveries(1)
        .visibility_timeout(Duration::from_millis(20))
        .dead_letter("r3-dl")
        .full_policy(FullPolicy::Fail);
    let mut p = q.producer().unwrap();
    let q_ring = ring(&dir, "r3-q");
    let dl_ring = ring(&dir, "r3-dl");
    let x = q.clone().prefetch(2).consumer().unwrap(); // index 0
    let y = q.consumer().unwrap(); // index 1
    p.send(&1).unwrap();
    let d = x.try_receive().unwrap(); // OPEN(x, 1): the last delivery allowed
    assert_eq!(*d, 1);
    std::thread::sleep(Duration::from_millis(40)); // d expires

    // Hold the dead-letter queue's append lock (a live owner: this process), so both dead-letter
    // moves below wait inside `send_with`, with the slot OPEN by the mover.
    patch(&dl_ring, APPEND, &ProcessId::current().pack().to_le_bytes());

    let helper = {
        let q_ring = q_ring.clone();
        let dl_ring = dl_ring.clone();
        std::thread::spawn(move || {
            // X opened its dead-letter claim and waits on the lock.
            wait_for(&q_ring, SLOTS, state(OPEN, 0, 0, 1) | STALE);
            std::thread::sleep(Duration::from_millis(40)); // its deadline passes
            let y_thread = std::thread::spawn(move || {
                let _ = y.try_receive(); // takes it back from X, dead-letter claims it
                y
            });
            wait_for(&q_ring, SLOTS, state(OPEN, 0, 1, 1) | STALE);
            patch(&dl_ring, APPEND, &0u64.to_le_bytes()); // both moves fail: full
            y_thread.join().unwrap()
        })
    };
    let _ = x.try_receive(); // take-back, dead-letter claim, failed move
    let y = helper.join().unwrap();

    let bits = read_u64(&q_ring, SLOTS + SLOT_STALE);
    // Room in the dead-letter queue; Y's claim expires and the next move succeeds.
    for _ in 0..2 {
        dc.try_receive().unwrap().ack().unwrap();
    }
    std::thread::sleep(Duration::from_millis(40));
    let _ = y.try_receive();
    let _ = p.send(&2);
    let _ = p.send(&3); // position 2: slot 0 again, if it was freed
    assert!(
        bits & 1 != 0 && *d == 1,
        "x still holds delivery d of position 0, yet its reader bit was cleared (stale word \
         {bits:#b}) and the payload under d now reads {}",
        *d
    );
    drop(d);
    drop((x, y, p, dc, dp));
    let _ = std::fs::remove_dir_all(&dir);
}
