//! Regression tests from a review of the queue module: each test reproduces one problem the
//! review found (a stall, a lost or reordered message, a refused reopen, a slot rewritten under a
//! reader) and checks it stays fixed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ring::*;
use common::{data_dir, patch};
use ringbus::{FullPolicy, Node, SyncPolicy};

/// Finding: a durable queue whose head lags (every message acknowledged, but no claim ran since
/// to walk the head) while producers lapped the ring is refused as corrupt at the next open
/// ("queue positions head 0, tail 8 exceed the capacity"), after a clean shutdown.
#[test]
fn durable_reopen_after_clean_shutdown_with_a_lagging_head() {
    let dir = data_dir("lagging-head");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("lag")
        .capacity(4)
        .durable(&dir)
        .sync_policy(SyncPolicy::Never)
        .full_policy(FullPolicy::Fail);
    {
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        for i in 0..4 {
            p.send(&i).unwrap();
        }
        // One claim takes all four (prefetch 16); the head stays at 0 (they are TAKEN).
        let ds: Vec<_> = (0..4).map(|_| c.try_receive().unwrap()).collect();
        for d in ds {
            d.ack().unwrap();
        }
        // The ring is free again: four more, never received.
        for i in 4..8 {
            p.send(&i).unwrap();
        }
    } // clean shutdown of every handle
    let c = q.consumer();
    assert!(c.is_ok(), "reopen after a clean shutdown: {c:?}");
    let c = c.unwrap();
    let got = common::drain_acked(&c);
    assert_eq!(got, vec![4, 5, 6, 7]);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// Finding: the rebuild after a machine restart starts at the first segment file and refuses a
/// log holding valid records more than `capacity` positions past it, which every queue that has
/// carried more than `capacity` messages in its oldest segment does: the queue cannot be opened.
#[test]
fn durable_rebuild_after_restart_with_more_records_than_the_capacity() {
    let dir = data_dir("rebuild-capacity");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("big")
        .capacity(4)
        .durable(&dir)
        .sync_policy(SyncPolicy::Always);
    {
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        for i in 0..10u64 {
            p.send(&i).unwrap();
            c.try_receive().unwrap().ack().unwrap();
        }
        p.send(&10).unwrap();
        p.send(&11).unwrap();
    }
    // Another boot id in the ring file: what a machine restart looks like.
    patch(&dir.join("queue_big"), BOOT, &[0x5a; 8]);
    let c = q.consumer();
    assert!(c.is_ok(), "reopen after a restart: {c:?}");
    let c = c.unwrap();
    let got = common::drain_acked(&c);
    // At least once after a machine crash: 10 and 11 must be there (acknowledged ones may
    // come back, but no more than the last `capacity` positions can be unacknowledged).
    assert!(got.ends_with(&[10, 11]), "{got:?}");
    assert!(got.len() <= 4, "acknowledged messages resurrected: {got:?}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// Finding: a producer SIGKILLed inside the append lock after marking its slot WRITING and before
/// moving `tail`. A consumer frees the slot (WRITING of a dead producer -> FREE(pos + N)) and
/// moves the cursor past `tail`; the producer that then takes the lock over finds the slot of
/// `tail` "for a later lap", reads it as full, and every send fails for ever. The durable queue
/// is then also refused at the next open (head > tail).
///
/// The crash state is written into the ring file: the append lock held by a dead process (pid 0),
/// producer entry 1 active for that process with `writing` = 2, slot of position 1 WRITING by 1.
#[test]
fn a_producer_killed_inside_the_append_lock_wedges_the_queue() {
    let dir = data_dir("append-death");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("wedge")
        .capacity(4)
        .durable(&dir)
        .sync_policy(SyncPolicy::Never)
        .full_policy(FullPolicy::Fail);
    let ring = dir.join("queue_wedge");
    let mut p = q.producer().unwrap(); // entry 0
    let c = q.consumer().unwrap();
    p.send(&0).unwrap();
    c.try_receive().unwrap().ack().unwrap();

    // The crash: tail stays 1.
    producer_died_in_append_lock(&ring);

    // The consumer waits a check interval on the WRITING slot, then judges its producer dead.
    for _ in 0..5 {
        assert!(c.try_receive().is_err());
        std::thread::sleep(Duration::from_millis(15));
    }
    // The queue holds nothing: three slots are free. The producer takes the dead holder's lock
    // over (after a check interval) and must be able to send.
    let mut sent = Vec::new();
    for i in 1..4u64 {
        sent.push(p.send(&i));
    }
    assert!(
        sent.iter().all(|r| r.is_ok()),
        "sends into an empty queue after a producer died in the append lock: {sent:?}"
    );
    let got = common::drain_acked(&c);
    assert_eq!(got, vec![1, 2, 3]);
    drop((p, c));
    let again = q.consumer();
    assert!(again.is_ok(), "reopen: {again:?}");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// Finding: stale-reader bits are per consumer and slot, not per delivery. A consumer that holds
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
        .full_policy(FullPolicy::Fail);
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

/// Mappings in this process of log segment files that were deleted (their disk space is held).
fn deleted_segment_mappings(log_dir: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = log_dir.display().to_string();
    let mut v: Vec<String> = maps
        .lines()
        .filter(|l| l.contains(&dir) && l.ends_with("(deleted)"))
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect();
    v.dedup();
    v
}

/// Finding: a consumer process keeps every log segment it ever mapped (at `Log::open`, or to read
/// a delivery) in its `Log`'s map until *its own* `remove_below` drops it, and `remove_below`
/// only visits files still on disk. Segments deleted by another consumer (another process, or
/// another handle: each handle opens its own `Log`) stay mapped for the life of the consumer, so
/// their disk space is never returned: with two consumer processes, the disk fills up.
#[test]
fn segments_deleted_by_another_consumer_stay_mapped_for_ever() {
    let dir = data_dir("leak");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("leak")
        .capacity(16)
        .segment_records(16)
        .durable(&dir)
        .sync_policy(SyncPolicy::Never)
        .full_policy(FullPolicy::Fail);
    let mut p = q.producer().unwrap();
    let a = q.consumer().unwrap();
    let b = q.consumer().unwrap();
    let mut next = 0u64;
    // b reads from segments 0 and 1, a does the rest (and moves the head over them).
    for round in 0..8 {
        for _ in 0..16 {
            p.send(&next).unwrap();
            next += 1;
        }
        let who = if round < 2 { &b } else { &a };
        for _ in 0..16 {
            who.try_receive().unwrap().ack().unwrap();
        }
        let _ = a.try_receive(); // a claim: walks the head, removes acknowledged segments
    }
    // Now b works for a while too (and moves the head over segment boundaries itself).
    for _ in 0..4 {
        for _ in 0..16 {
            p.send(&next).unwrap();
            next += 1;
        }
        for _ in 0..16 {
            b.try_receive().unwrap().ack().unwrap();
        }
        let _ = b.try_receive();
    }
    let log = dir.join("queue_leak.log");
    // (A handle's current segment may stay mapped until it moves on: one per handle. Segments 0
    // and 16 are b's, deleted by a long ago, and b has moved the head over later boundaries.
    // Removal runs in the background: wait for it, boundedly.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let on_disk = std::fs::read_dir(&log).unwrap().count();
        let leaked: Vec<_> = deleted_segment_mappings(&log)
            .into_iter()
            .filter(|m| {
                m.starts_with("00000000000000000000.") || m.starts_with("00000000000000000016.")
            })
            .collect();
        if leaked.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{on_disk} segment files on disk, deleted ones still mapped: {leaked:?}"
        );
        std::thread::yield_now();
    }
    drop((p, a, b));
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}
