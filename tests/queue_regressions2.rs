//! Regression tests from a second review of the queue module: an empty queue reporting full
//! (reader marks of deliveries never looked at), recovery after a producer died in the append
//! lock, handed-back messages reported empty, a send given up after sealing its record, a
//! dead-letter retry, and a garbage owner in a slot state.

mod common;

use std::time::Duration;

use common::ring::*;
use common::{data_dir, patch};
use ringbus::{FullPolicy, Node, SyncPolicy};

/// A producer dies inside the append lock after marking its slot WRITING and before moving
/// `tail` (as in the first review's test), but this time no producer sends again before every
/// handle exits. The consumer already judged the slot's producer dead (FREE(pos + N)) and moved
/// cursor and head past `tail`. The same-boot recovery (`check_records`) then refuses the queue:
/// "head 2, tail 1 exceed the capacity". The durable queue cannot be opened any more.
#[test]
fn recovery_after_a_producer_died_in_the_append_lock_and_nobody_sent_again() {
    let dir = data_dir("append-death-no-send");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("wedge2")
        .capacity(4)
        .durable(&dir)
        .sync_policy(SyncPolicy::Never)
        .full_policy(FullPolicy::Fail);
    let ring = dir.join("queue_wedge2");
    {
        let mut p = q.producer().unwrap(); // entry 0
        let c = q.consumer().unwrap();
        p.send(&0).unwrap();
        c.try_receive().unwrap().ack().unwrap();
        producer_died_in_append_lock(&ring);
        for _ in 0..5 {
            assert!(c.try_receive().is_err());
            std::thread::sleep(Duration::from_millis(15));
        }
    } // every handle leaves; the dead entry stays: the next open recovers
    let again = q.consumer();
    assert!(again.is_ok(), "reopen: {again:?}");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
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
        .full_policy(FullPolicy::Fail);
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

/// Messages handed back in bulk (here: a consumer dropped with 31 prefetched claims) are
/// claimed only by scans, and a scan claims at most the consumer's free prefetch and marks
/// `returned` seen. A consumer with prefetch 1 then finds the queue "empty" (the lock-free early
/// return: cursor slot FREE, `returned` unchanged, next scan 10 ms away) while 30 messages are
/// READY: the backlog drains at one message per scan interval.
#[test]
fn handed_back_messages_are_not_reported_empty() {
    let node = Node::in_process();
    let q = node
        .queue::<u64>("q-backlog")
        .capacity(64)
        .full_policy(FullPolicy::Fail);
    let mut p = q.producer().unwrap();
    {
        let a = q.clone().prefetch(32).consumer().unwrap();
        for i in 0..32u64 {
            p.send(&i).unwrap();
        }
        drop(a.try_receive().unwrap()); // handed back; 31 more handed back at drop
    }
    let b = q.clone().prefetch(1).consumer().unwrap();
    let mut got = 0;
    let mut empty_while_waiting = 0;
    let start = std::time::Instant::now();
    while got < 32 && start.elapsed() < Duration::from_secs(5) {
        match b.try_receive() {
            Ok(d) => {
                d.ack().unwrap();
                got += 1;
            }
            Err(_) => {
                empty_while_waiting += 1;
                std::thread::yield_now();
            }
        }
    }
    let took = start.elapsed();
    assert_eq!(got, 32);
    assert!(
        took < Duration::from_millis(100),
        "32 waiting messages took {took:?} ({empty_while_waiting} polls reported empty)"
    );
}

/// An `Always` send whose sync fails is abandoned (SKIP) and reported failed, but its record
/// stays valid in the log. After a machine restart the rebuild trusts the old ring's acks and
/// ignores its SKIP: the failed send is delivered. (The sync failure is simulated: a valid record
/// whose slot says SKIP, exactly what `publish` leaves.)
#[test]
fn a_send_abandoned_after_its_record_was_sealed_is_delivered_after_a_restart() {
    let dir = data_dir("skip-resurrected");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("skipped")
        .capacity(4)
        .durable(&dir)
        .sync_policy(SyncPolicy::Always);
    let ring = dir.join("queue_skipped");
    {
        let mut p = q.producer().unwrap();
        p.send(&7).unwrap();
        // What `publish` leaves when `sync_covering` fails: the record sealed, the slot SKIP.
        patch(&ring, SLOTS, &state(SKIP, 0, 0, 0).to_le_bytes());
    }
    patch(&ring, BOOT, &[0x5a; 8]); // a machine restart
    let c = q.consumer().unwrap();
    let got = c.try_receive().map(|d| *d);
    assert!(
        got.is_err(),
        "a send that returned Err was delivered: {got:?}"
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// A message past its maximum deliveries whose move to the dead-letter queue fails once (the
/// dead-letter queue is full: its producer uses `FullPolicy::Fail`) stays TAKEN by the consumer
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
        .full_policy(FullPolicy::Fail);
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
        .full_policy(FullPolicy::Fail);
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
