//! Durable queues reopened after trouble: a record corrupted on disk, a restart whose new
//! processes share pids with the old ones, a log rotated by another process while we open, a
//! participant killed while asleep, and a producer whose position was passed over while it
//! wrote. Roles that must be other processes run in children of this test binary (see
//! `common`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ringbus::{FullPolicy, Node, ProcessId, SendError, SyncPolicy};

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
                .full_policy(FullPolicy::Block(Duration::from_secs(600)));
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
        .full_policy(FullPolicy::Fail);
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
        .full_policy(FullPolicy::Fail);
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
    let q = node
        .queue::<u64>("late")
        .capacity(2)
        .full_policy(FullPolicy::Fail);
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
