//! Durable queues reopened after trouble: a clean shutdown with the head lagging behind a
//! lapped ring, a rebuild after a machine restart from a log holding more records than the
//! capacity, a producer killed inside the append lock (with or without a send after it), a send
//! abandoned after its record was sealed, a record corrupted on disk, a restart whose new
//! processes share pids with the old ones, a log rotated by another process while we open, a
//! participant killed while asleep, and a producer whose position was passed over while it
//! wrote. Roles that must be other processes run in children of this test binary (see
//! `common`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ring::{producer_died_in_append_lock, state, BOOT, SKIP, SLOTS};
use common::*;
use ringbus::{queue::Policy, Node, ProcessId, SendError, SyncPolicy};

/// Offsets of a durable `u64` queue's log files (ARCHITECTURE.md, "The log"); the ring file's
/// are `common::ring`'s.
const SEGMENT_HEADER: u64 = 4096;
/// A record's payload, after its 16-byte header; `u64` records have a stride of 32.
fn payload_at(pos: u64) -> u64 {
    SEGMENT_HEADER + pos * 32 + 16
}
const LOG_SYNC_LOCK: u64 = 80;

fn first_log_file(dir: &Path, queue: &str) -> PathBuf {
    dir.join(format!("queue_{queue}.log"))
        .join("00000000000000000000.seg")
}

fn read_u64(path: &Path, at: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    let node = Node::new().unwrap();
    match role.as_str() {
        "rotate" => {
            // Sends and acknowledges through 16-record files until told to stop: the log is
            // rotated (files renamed ahead, or deleted) every 16 messages.
            let q = node
                .queue::<u64>("rotating")
                .capacity(16)
                .segment_records(16)
                .durable(&a["dir"])
                .sync_policy(SyncPolicy::Never);
            let mut p = q.producer().unwrap();
            let c = q.consumer().unwrap();
            tell("rotating");
            let stop = std::thread::spawn(wait_parent);
            let mut i = 0u64;
            while !stop.is_finished() {
                p.send(&i).unwrap();
                c.try_receive().unwrap().ack().unwrap();
                i += 1;
            }
        }
        "fill_then_block" => {
            let q = node
                .queue::<u64>("sleepers")
                .capacity(2)
                .policy(Policy::Block(Duration::from_secs(600)));
            let mut p = q.producer().unwrap();
            p.send(&1).unwrap();
            p.send(&2).unwrap();
            tell("full");
            // Asleep waiting for room until killed.
            let _ = p.send(&3);
        }
        "join" => {
            // Joins as a producer (reclaiming what dead ones held) and stays until told.
            let _p = node.queue::<u64>(&a["queue"]).producer().unwrap();
            tell("joined");
            wait_parent();
        }
        other => panic!("unknown role {other}"),
    }
}

/// One record corrupted on disk (behind the cursor: it had been handed back) is counted,
/// reported and passed over; it never stalls the queue.
#[test]
fn a_corrupt_record_is_passed_over_and_never_stalls_the_queue() {
    let root = test_root("corrupt");
    let dir = data_dir("corrupt");
    let node = Node::with_root(&root).unwrap();
    let q = node
        .queue::<u64>("corrupt")
        .capacity(4)
        .durable(&dir)
        .policy(Policy::Fail);
    {
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(&100).unwrap();
        // Received and handed back: READY behind the cursor.
        drop(c.try_receive().unwrap());
    }
    // Every handle is gone; one payload byte of position 0 flips on disk.
    let log = first_log_file(&dir, "corrupt");
    let byte = read_u64(&log, payload_at(0)) ^ 1;
    patch(&log, payload_at(0), &byte.to_le_bytes());

    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let mut got = Vec::new();
    for i in 1..=20u64 {
        p.send(&i).unwrap_or_else(|e| panic!("send {i}: {e}"));
        let d = c
            .try_receive()
            .unwrap_or_else(|e| panic!("receive {i}: {e}"));
        got.push(*d);
        d.ack().unwrap();
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    let stats = c.stats();
    assert_eq!((stats.torn, stats.recoveries), (1, 1), "{stats:?}");
    drop((p, c));
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a restart, the processes a durable queue recorded (participants, lock holders) are all
/// dead, even when a process of the new boot has the same pid and start time: here the test
/// process itself plays that process.
#[test]
fn after_a_restart_every_recorded_process_is_dead_whatever_its_pid() {
    let root = test_root("reboot");
    let dir = data_dir("reboot");
    let node = Node::with_root(&root).unwrap();
    let q = node
        .queue::<u64>("reboot")
        .capacity(16)
        .durable(&dir)
        .sync_policy(SyncPolicy::Always)
        .policy(Policy::Fail);
    {
        let mut p = q.producer().unwrap();
        for i in 0..3 {
            p.send(&i).unwrap();
        }
    }
    // The files as a crash before a reboot leaves them: producer entry 0 was writing position
    // 3 and held the log's sync lock, and its owner word matches a live process of the next
    // boot (ours).
    let me = ProcessId::current().pack();
    let ring = dir.join("queue_reboot");
    let entry = ring::PRODUCERS;
    patch(&ring, entry + ring::OWNER, &me.to_le_bytes());
    patch(&ring, entry + ring::PRODUCER_WRITING, &4u64.to_le_bytes());
    patch(&ring, entry, &1u64.to_le_bytes());
    patch(
        &ring,
        ring::SLOTS + 3 * ring::STRIDE,
        &ring::state(ring::WRITING, 3, 0, 0).to_le_bytes(),
    );
    patch(
        &ring,
        ring::BOOT,
        &(read_u64(&ring, ring::BOOT) ^ 1).to_le_bytes(),
    );
    patch(
        &first_log_file(&dir, "reboot"),
        LOG_SYNC_LOCK,
        &me.to_le_bytes(),
    );

    let c = q.consumer().unwrap();
    assert_eq!(c.stats().recoveries, 1, "the queue was recovered");
    // An `Always` send syncs under the log's lock: it must not wait for the old boot's holder.
    // (Run in a thread so that a regression fails the test instead of hanging it.)
    let (tx, rx) = std::sync::mpsc::channel();
    let q2 = q.clone();
    std::thread::spawn(move || {
        let mut p = q2.producer().unwrap();
        let _ = tx.send(p.send(&3).map_err(|e| e.to_string()));
    });
    let sent = rx.recv_timeout(Duration::from_secs(60));
    assert!(matches!(sent, Ok(Ok(3))), "{sent:?}");
    let got = drain_acked(&c);
    assert_eq!(got, [0, 1, 2, 3]);
    drop(c);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opening a healthy durable queue never fails because another process renamed or deleted a
/// log file it was looking at (rotation).
#[test]
fn opening_a_durable_queue_tolerates_a_log_rotated_meanwhile() {
    let root = test_root("rotate");
    let dir = data_dir("rotate");
    let mut child = ChildRole::spawn("rotate", &root, &format!("dir={}", dir.display()));
    child.expect("rotating");
    let node = Node::with_root(&root).unwrap();
    let q = node
        .queue::<u64>("rotating")
        .capacity(16)
        .segment_records(16)
        .durable(&dir);
    let mut failures = Vec::new();
    for _ in 0..400 {
        match q.producer() {
            Ok(p) => drop(p),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(child.finish(), "the rotating child failed");
    assert!(
        failures.is_empty(),
        "{} opens failed: {failures:?}",
        failures.len()
    );
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A producer SIGKILLed while asleep waiting for room leaves no sleeper registered once it is
/// reclaimed (otherwise every acknowledgement after it would pay a futex wake).
#[test]
fn a_participant_killed_asleep_leaves_no_sleeper_behind() {
    let root = test_root("sleeper");
    let node = Node::with_root(&root).unwrap();
    // Keeps the queue (an in-memory one) alive while its producer dies.
    let c = node
        .queue::<u64>("sleepers")
        .capacity(2)
        .consumer()
        .unwrap();
    let mut child = ChildRole::spawn("fill_then_block", &root, "");
    child.expect("full");
    let ring = root.join("queue_sleepers");
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_u64(&ring, ring::ROOM_WAITERS) == 0 {
        assert!(Instant::now() < deadline, "the child never went to sleep");
        std::thread::yield_now();
    }
    child.kill();
    // The next participant to join reclaims the dead producer.
    let mut joiner = ChildRole::spawn("join", &root, "queue=sleepers");
    joiner.expect("joined");
    assert_eq!(
        read_u64(&ring, ring::ROOM_WAITERS),
        0,
        "a dead sleeper stayed registered"
    );
    assert!(joiner.finish());
    drop(c);
    let _ = std::fs::remove_dir_all(&root);
}

/// A producer whose position was passed over while it wrote (it was judged gone: here its
/// entry is marked abandoned and reclaimed by a process that joins) gets a typed error, and its
/// late publish overwrites nothing of the slot's next lap.
#[test]
fn a_late_publish_of_a_passed_over_position_overwrites_nothing() {
    let root = test_root("late");
    let node = Node::with_root(&root).unwrap();
    let q = node.queue::<u64>("late").capacity(2).policy(Policy::Fail);
    let c = q.consumer().unwrap();
    let mut late = q.producer().unwrap();
    let mut loan = late.loan().unwrap();
    *loan = 666;
    // Producer entry 0 (ours) as a process judged dead leaves it: owner 0.
    patch(
        &root.join("queue_late"),
        ring::PRODUCERS + ring::OWNER,
        &0u64.to_le_bytes(),
    );
    // Another process joins: it reclaims the entry and passes over position 0.
    let mut joiner = ChildRole::spawn("join", &root, "queue=late");
    joiner.expect("joined");
    let mut other = q.producer().unwrap();
    assert!(matches!(
        c.try_receive().map(drop),
        Err(ringbus::ReceiveError::Empty)
    ));
    other.send(&1).unwrap();
    other.send(&2).unwrap(); // position 2: slot 0's next lap
    assert!(matches!(loan.send(), Err(SendError::Reclaimed)));
    let got = drain_acked(&c);
    assert_eq!(got, [1, 2]);
    assert!(joiner.finish());
    drop((c, late, other));
    let _ = std::fs::remove_dir_all(&root);
}

/// Reproduces: a durable queue whose head lags (every message acknowledged, but no claim ran since
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
        .policy(Policy::Fail);
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

/// Reproduces: the rebuild after a machine restart starts at the first segment file and refuses a
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

/// A durable `u64` queue of 4 slots (`Fail` when full) in which producer entry 0 sent and had
/// acknowledged one message, then producer entry 1, owned by a dead process, died inside the
/// append lock after marking position 1 WRITING and before moving `tail` (the crash state is
/// written into the ring file), and whose consumer has since waited a check interval on that
/// slot and judged its producer dead. Returns the builder, the live producer and the consumer.
fn after_a_death_in_the_append_lock(
    dir: &Path,
    name: &str,
) -> (
    ringbus::QueueBuilder<u64>,
    ringbus::Producer<u64>,
    ringbus::Consumer<u64>,
) {
    let q = Node::in_process()
        .queue::<u64>(name)
        .capacity(4)
        .durable(dir)
        .sync_policy(SyncPolicy::Never)
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap(); // entry 0
    let c = q.consumer().unwrap();
    p.send(&0).unwrap();
    c.try_receive().unwrap().ack().unwrap();
    // The crash: tail stays 1.
    producer_died_in_append_lock(&dir.join(format!("queue_{name}")));
    // The consumer waits a check interval on the WRITING slot, then judges its producer dead.
    for _ in 0..5 {
        assert!(c.try_receive().is_err());
        std::thread::sleep(Duration::from_millis(15));
    }
    (q, p, c)
}

/// Reproduces: a producer SIGKILLed inside the append lock after marking its slot WRITING and
/// before moving `tail`. A consumer frees the slot (WRITING of a dead producer -> FREE(pos + N))
/// and moves the cursor past `tail`; the producer that then takes the lock over finds the slot of
/// `tail` "for a later lap", reads it as full, and every send fails for ever. The durable queue is
/// then also refused at the next open (head > tail).
///
/// The crash state is written into the ring file: the append lock held by a dead process (pid 0),
/// producer entry 1 active for that process with `writing` = 2, slot of position 1 WRITING by 1.
#[test]
fn a_producer_killed_inside_the_append_lock_wedges_the_queue() {
    let dir = data_dir("append-death");
    let (q, mut p, c) = after_a_death_in_the_append_lock(&dir, "wedge");
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

/// A producer dies inside the append lock after marking its slot WRITING and before moving `tail`
/// (as in `a_producer_killed_inside_the_append_lock_wedges_the_queue`), but this time no producer
/// sends again before every handle exits. The consumer already judged the slot's producer dead
/// (FREE(pos + N)) and moved cursor and head past `tail`. The same-boot recovery (`check_records`)
/// then refuses the queue: "head 2, tail 1 exceed the capacity". The durable queue cannot be opened
/// any more.
#[test]
fn recovery_after_a_producer_died_in_the_append_lock_and_nobody_sent_again() {
    let dir = data_dir("append-death-no-send");
    let (q, p, c) = after_a_death_in_the_append_lock(&dir, "wedge2");
    // Every handle leaves; the dead entry stays: the next open recovers.
    drop((p, c));
    let again = q.consumer();
    assert!(again.is_ok(), "reopen: {again:?}");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
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
