//! The queue's stale-reader protocol: a consumer that still reads a delivery the queue took back
//! (its deadline passed, it was handed back or moved to the dead-letter queue) keeps a reader bit
//! on the slot, so the slot is not reused under its `&T`; and those bits are cleared once nobody
//! reads, so they never pin a slot of an empty queue. Covers several deliveries of one message
//! held by one consumer, prefetched claims taken back while their consumer is idle, dead-letter
//! moves that fail and are retried, and a slot state whose owner names no consumer.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ring::*;
use common::{data_dir, patch};
use ringbus::{queue::Policy, Node, ProcessId};

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

/// Reproduces: stale-reader bits are per consumer and slot, not per delivery. A consumer that holds
/// two deliveries of one message (its first expired, it claimed the message again, that one
/// expired too) clears its bit when it lets go of the first; the third delivery's ack then frees
/// the slot while the second delivery is still borrowed, and a producer rewrites the payload
/// under the reader's `&T`.
#[test]
fn a_stale_reader_holding_two_deliveries_of_one_message_loses_its_protection() {
    let node = Node::in_process();
    let q = node
        .queue::<u64>("q-stale-twice")
        .capacity(2)
        .visibility_timeout(Duration::from_millis(30))
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap();
    let o = q.consumer().unwrap();
    let x = q.consumer().unwrap();
    p.send(&111).unwrap();
    let d1 = o.try_receive().unwrap();
    assert_eq!(d1.delivery_count(), 1);
    std::thread::sleep(Duration::from_millis(60));
    let d2 = o.try_receive().unwrap(); // the same message again: d1 expired
    assert_eq!((*d2, d2.delivery_count()), (111, 2));
    std::thread::sleep(Duration::from_millis(60));
    let d3 = x.try_receive().unwrap(); // d2 expired too
    assert_eq!((*d3, d3.delivery_count()), (111, 3));
    drop(d1); // o lets go of its first delivery (its nack fails: expired) ...
    d3.ack().unwrap(); // ... and x acknowledges
                       // o still reads d2. The slot must not be reused while it does.
    let second = p.send(&222);
    let third = p.send(&333);
    assert_eq!(
        *d2, 111,
        "payload rewritten under a live delivery (sends: {second:?}, {third:?})"
    );
    drop(d2);
}

/// Consumer A prefetches 4 messages, takes one and acknowledges it, then stays idle (alive).
/// The 3 prefetched messages it never looked at pass their deadline; B's scan takes them back,
/// setting A's *stale reader* bit on each, and B acknowledges them: ACKED|STALE, not freed until
/// A lets go, which happens only when A calls receive again (or drops). The queue is empty, yet
/// after one lap the producer finds it full; with `Block` it waits as long as A stays idle.
#[test]
fn prefetched_claims_lost_to_their_deadline_pin_slots_while_their_consumer_is_idle() {
    let node = Node::in_process();
    let q = node
        .queue::<u64>("q-prefetch-pin")
        .capacity(8)
        .visibility_timeout(Duration::from_millis(30))
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap();
    let a = q.clone().prefetch(4).consumer().unwrap();
    let b = q.consumer().unwrap();
    for i in 0..4u64 {
        p.send(&i).unwrap();
    }
    a.try_receive().unwrap().ack().unwrap(); // A claimed 0..=3, saw only 0
    std::thread::sleep(Duration::from_millis(60));
    for _ in 0..3 {
        b.try_receive().unwrap().ack().unwrap();
    }
    // Nothing is waiting or held by anyone: a whole capacity of sends must fit.
    let sent: Vec<_> = (10..18u64).map(|i| p.send(&i)).collect();
    assert!(
        sent.iter().all(|r| r.is_ok()),
        "sends into an empty queue while an idle consumer pins slots: {sent:?}"
    );
    drop(a);
}

/// A message past its maximum deliveries whose move to the dead-letter queue fails once (the
/// dead-letter queue is full: its producer uses `Policy::Fail`) stays TAKEN by the consumer
/// until its deadline. The scan that takes it back sets that consumer's stale-reader bit (it
/// never viewed it); the next move succeeds and acknowledges it: ACKED|STALE. Nothing ever clears
/// the bit while the consumer lives (it is in no buffer and no view of the consumer): the slot
/// is never freed, and the queue is full for ever one lap later.
#[test]
fn a_dead_letter_move_that_failed_once_pins_its_slot_for_ever() {
    let node = Node::in_process();
    // The dead-letter queue exists already, small and full.
    let dlq = node.queue::<u64>("q-dlq-pin-dlq").capacity(2);
    let mut dp = dlq.producer().unwrap();
    let dc = dlq.consumer().unwrap();
    dp.send(&100).unwrap();
    dp.send(&101).unwrap();
    let q = node
        .queue::<u64>("q-dlq-pin")
        .capacity(4)
        .max_deliveries(1)
        .visibility_timeout(Duration::from_millis(30))
        .dead_letter("q-dlq-pin-dlq")
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap();
    let a = q.consumer().unwrap();
    p.send(&1).unwrap();
    a.try_receive().unwrap().nack().unwrap(); // 1 delivery: the next claim dead-letters it
    assert!(a.try_receive().is_err()); // the move fails: the dead-letter queue is full
    for _ in 0..2 {
        dc.try_receive().unwrap().ack().unwrap(); // room in the dead-letter queue
    }
    std::thread::sleep(Duration::from_millis(60));
    assert!(a.try_receive().is_err()); // taken back at its deadline, moved this time
    assert_eq!(*dc.try_receive().unwrap(), 1);
    std::thread::sleep(Duration::from_millis(30));
    assert!(a.try_receive().is_err()); // more scans: nothing changes
                                       // The queue holds nothing: a whole capacity of sends must fit.
    let sent: Vec<_> = (10..14u64).map(|i| p.send(&i)).collect();
    assert!(
        sent.iter().all(|r| r.is_ok()),
        "sends into an empty queue after a dead-letter move was retried: {sent:?}"
    );
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
    let dlq = node.queue::<u64>("held-bit-dl").capacity(2);
    let mut dp = dlq.producer().unwrap();
    let dc = dlq.consumer().unwrap();
    dp.send(&100).unwrap();
    dp.send(&101).unwrap(); // the dead-letter queue is full
    let q = node
        .queue::<u64>("held-bit-q")
        .capacity(2)
        .max_deliveries(1)
        .visibility_timeout(Duration::from_millis(20))
        .dead_letter("held-bit-dl")
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap();
    let q_ring = ring(&dir, "held-bit-q");
    let dl_ring = ring(&dir, "held-bit-dl");
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

/// A slot state whose owner field names no consumer (≥ 64: a stray or corrupt word) makes the
/// scan evaluate `1 << owner` when the delivery's deadline passed between alive checks: a shift
/// overflow (a panic in debug builds; in release the bit of consumer `owner % 64` is set, and
/// nothing ever clears it). ARCHITECTURE.md ("Untrusted shared memory") says garbage stalls a
/// position at worst, never panics.
#[test]
fn a_taken_state_with_an_owner_past_64_does_not_panic_a_scan() {
    let dir = data_dir("owner-past-64");
    let node = Node::with_root(&dir).unwrap();
    let q = node
        .queue::<u64>("q-owner")
        .capacity(4)
        .visibility_timeout(Duration::from_millis(1))
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    p.send(&1).unwrap();
    p.send(&2).unwrap();
    // One claim (with the alive check: the next is 10 ms away) takes both.
    let d = c.try_receive().unwrap(); // slot 0 TAKEN by consumer 0, deadline in 1 ms
    std::mem::forget(d);
    let ring = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("q-owner"))
        .expect("the ring file");
    // TAKEN (3) by owner 200, count 1, position 0.
    patch(&ring, SLOTS, &state(TAKEN, 0, 200, 1).to_le_bytes());
    std::thread::sleep(Duration::from_millis(5)); // past the deadline, before the next check
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(c.try_receive()); // the buffered message, handed back: `returned` moves
        let _ = c.try_receive(); // a scan without alive check finds slot 0 expired
    }));
    assert!(r.is_ok(), "a consumer panicked on a shared state word");
}
