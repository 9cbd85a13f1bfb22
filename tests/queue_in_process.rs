//! Queues within one process: semantics of delivery, acknowledgement, redelivery (including a
//! backlog of handed-back messages), dead letters, prefetch, full policies, loans, types, and
//! durable storage (including the unmapping of log segments another consumer deleted). Run for
//! shared memory and for the in-process backing where both apply.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{data_dir, patch};
use ringbus::{
    queue::Policy, AckError, Bytes, Node, OpenError, QueueBuilder, ReceiveError, SendError,
    SyncPolicy,
};

fn shm_node(test: &str) -> (Node, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ringbus-qt-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (Node::with_root(&dir).unwrap(), dir)
}

fn nodes(test: &str) -> Vec<Node> {
    vec![Node::in_process(), shm_node(test).0]
}

#[test]
fn each_message_goes_to_one_consumer_and_ack_removes_it() {
    for node in nodes("one") {
        let q = node.queue::<u64>("q-one").prefetch(1);
        let mut p = q.producer().unwrap();
        let a = q.consumer().unwrap();
        let b = q.consumer().unwrap();
        for i in 0..100u64 {
            p.send(&i).unwrap();
        }
        let mut seen = HashSet::new();
        loop {
            let mut progressed = false;
            for c in [&a, &b] {
                match c.try_receive() {
                    Ok(d) => {
                        assert_eq!(d.delivery_count(), 1);
                        assert!(seen.insert(*d), "delivered twice: {}", *d);
                        d.ack().unwrap();
                        progressed = true;
                    }
                    Err(ReceiveError::Empty) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if !progressed {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
        assert!(matches!(a.try_receive(), Err(ReceiveError::Empty)));
    }
}

#[test]
fn one_consumer_sees_each_producer_in_order() {
    for node in nodes("fifo") {
        let q = node.queue::<[u64; 2]>("q-fifo").capacity(64);
        let mut p1 = q.producer().unwrap();
        let mut p2 = q.producer().unwrap();
        let c = q.consumer().unwrap();
        let mut next = [0u64; 2];
        for i in 0..1000u64 {
            p1.send(&[0, i]).unwrap();
            p2.send(&[1, i]).unwrap();
            for _ in 0..2 {
                let d = c.receive_timeout(Duration::from_secs(5)).unwrap();
                let [who, n] = *d;
                assert_eq!(n, next[who as usize]);
                next[who as usize] += 1;
                d.ack().unwrap();
            }
        }
    }
}

#[test]
fn nack_and_drop_redeliver_with_a_growing_count() {
    for node in nodes("nack") {
        let q = node.queue_bytes("q-nack").max_message_size(32);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(b"job").unwrap();
        let d = c.try_receive().unwrap();
        assert_eq!(d.delivery_count(), 1);
        d.nack().unwrap();
        let d = c.try_receive().unwrap();
        assert_eq!((&*d, d.delivery_count()), (&b"job"[..], 2));
        drop(d); // dropping is a nack
        let d = c.try_receive().unwrap();
        assert_eq!(d.delivery_count(), 3);
        d.ack().unwrap();
        assert!(matches!(c.try_receive(), Err(ReceiveError::Empty)));
    }
}

#[test]
fn redeliveries_come_before_newer_messages() {
    for node in nodes("redeliver-first") {
        let q = node.queue::<u32>("q-redeliver-first").prefetch(1);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        for i in 0..3 {
            p.send(&i).unwrap();
        }
        let first = c.try_receive().unwrap();
        assert_eq!(*first, 0);
        first.nack().unwrap();
        let again = c.try_receive().unwrap();
        assert_eq!((*again, again.delivery_count()), (0, 2));
        again.ack().unwrap();
        assert_eq!(*c.try_receive().unwrap(), 1);
    }
}

#[test]
fn prefetch_limits_what_one_consumer_holds() {
    for node in nodes("prefetch") {
        let q = node.queue::<u32>("q-prefetch").prefetch(3);
        let mut p = q.producer().unwrap();
        let greedy = q.consumer().unwrap();
        let other = q.consumer().unwrap();
        for i in 0..10 {
            p.send(&i).unwrap();
        }
        let held: Vec<_> = (0..3).map(|_| greedy.try_receive().unwrap()).collect();
        assert_eq!(greedy.held(), 3);
        assert!(matches!(
            greedy.try_receive(),
            Err(ReceiveError::TooManyHeld(3))
        ));
        // The rest goes to the other consumer.
        let mut rest = Vec::new();
        while let Ok(d) = other.try_receive() {
            rest.push(*d);
            d.ack().unwrap();
        }
        assert_eq!(rest, (3..10).collect::<Vec<_>>());
        for d in held {
            d.ack().unwrap();
        }
        assert_eq!(greedy.held(), 0);
    }
}

#[test]
fn prefetched_messages_go_back_when_a_consumer_leaves() {
    for node in nodes("prefetch-leave") {
        let q = node.queue::<u32>("q-prefetch-leave").prefetch(8);
        let mut p = q.producer().unwrap();
        let keep = q.consumer().unwrap();
        for i in 0..8 {
            p.send(&i).unwrap();
        }
        {
            let leaving = q.consumer().unwrap();
            let d = leaving.try_receive().unwrap(); // claims all 8 ahead
            assert_eq!(*d, 0);
            d.ack().unwrap();
        }
        let mut got = Vec::new();
        while let Ok(d) = keep.try_receive() {
            // Never seen by the application: their first delivery is this one.
            assert_eq!(d.delivery_count(), 1);
            got.push(*d);
            d.ack().unwrap();
        }
        assert_eq!(got, (1..8).collect::<Vec<_>>());
    }
}

#[test]
fn visibility_timeout_redelivers_and_the_late_ack_fails() {
    for node in nodes("visibility") {
        let q = node
            .queue::<u64>("q-visibility")
            .visibility_timeout(Duration::from_millis(50))
            .capacity(2)
            .prefetch(1)
            .policy(Policy::Fail);
        let mut p = q.producer().unwrap();
        let slow = q.consumer().unwrap();
        let fast = q.consumer().unwrap();
        p.send(&7).unwrap();
        let late = slow.try_receive().unwrap();
        // Waits for the deadline to pass; the message comes back to the other consumer.
        let again = fast.receive_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((*again, again.delivery_count()), (7, 2));
        again.ack().unwrap();
        // The late reader still reads its message: the slot is not reused while it holds it.
        assert_eq!(*late, 7);
        p.send(&8).unwrap();
        // Capacity 2: position 2 would reuse slot 0, which the late reader still reads.
        assert_eq!(p.send(&9), Err(SendError::Full));
        assert_eq!(*late, 7);
        assert_eq!(late.ack(), Err(AckError::Expired));
        // Let go: the slot is freed and the queue moves on.
        let d = fast.receive_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(*d, 8);
        d.ack().unwrap();
        p.send(&10).unwrap();
        assert_eq!(*fast.receive_timeout(Duration::from_secs(10)).unwrap(), 10);
    }
}

#[test]
fn dead_letters_after_max_deliveries() {
    for node in nodes("dlq") {
        let q = node
            .queue::<u32>("q-dlq")
            .max_deliveries(2)
            .dead_letter("q-dlq-dead")
            .prefetch(1);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(&5).unwrap();
        p.send(&6).unwrap();
        for n in 1..=2 {
            let d = c.try_receive().unwrap();
            assert_eq!((*d, d.delivery_count()), (5, n));
            d.nack().unwrap();
        }
        // The third claim moves 5 to the dead-letter queue and delivers 6.
        let d = c.try_receive().unwrap();
        assert_eq!(*d, 6);
        d.ack().unwrap();
        assert_eq!(c.stats().dead_lettered, 1);
        let dead = node.queue::<u32>("q-dlq-dead").consumer().unwrap();
        let d = dead.try_receive().unwrap();
        assert_eq!((*d, d.delivery_count()), (5, 1));
        d.ack().unwrap();
    }
}

#[test]
fn without_a_dead_letter_queue_the_message_is_dropped_and_counted() {
    for node in nodes("drop") {
        let q = node.queue::<u32>("q-drop").max_deliveries(1);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(&1).unwrap();
        c.try_receive().unwrap().nack().unwrap();
        assert!(matches!(c.try_receive(), Err(ReceiveError::Empty)));
        assert_eq!(c.stats().dropped, 1);
    }
}

#[test]
fn full_policies() {
    for node in nodes("full") {
        let fail = node.queue::<u8>("q-full").capacity(2).policy(Policy::Fail);
        let mut p = fail.producer().unwrap();
        let c = fail.consumer().unwrap();
        p.send(&1).unwrap();
        p.send(&2).unwrap();
        assert_eq!(p.send(&3), Err(SendError::Full));
        let mut blocking = fail
            .clone()
            .policy(Policy::Block(Duration::from_millis(20)))
            .producer()
            .unwrap();
        assert!(matches!(blocking.send(&3), Err(SendError::Timeout(_))));
        c.try_receive().unwrap().ack().unwrap();
        p.send(&3).unwrap();
    }
}

#[test]
fn a_blocked_producer_is_woken_by_an_ack() {
    let (node, _dir) = shm_node("wake");
    let q = node
        .queue::<u64>("q-wake")
        .capacity(4)
        .policy(Policy::Block(Duration::from_secs(30)))
        .spin_before_sleep(Duration::ZERO);
    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0;
        for _ in 0..10_000 {
            let d = c.receive_timeout(Duration::from_secs(30)).unwrap();
            sum += *d;
            d.ack().unwrap();
        }
        sum
    });
    for i in 0..10_000u64 {
        p.send(&i).unwrap();
    }
    assert_eq!(consumer.join().unwrap(), (0..10_000u64).sum::<u64>());
}

#[test]
fn loans_write_in_place_and_a_dropped_loan_is_skipped() {
    for node in nodes("loan") {
        let q = node.queue_bytes("q-loan").max_message_size(64);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        let mut loan = p.loan(5).unwrap();
        loan.copy_from_slice(b"hello");
        loan.send().unwrap();
        drop(p.loan(3).unwrap()); // given up
        p.send(b"after").unwrap();
        assert!(matches!(
            p.loan(65),
            Err(SendError::TooLarge { len: 65, max: 64 })
        ));
        let d = c.try_receive().unwrap();
        assert_eq!(&*d, b"hello");
        d.ack().unwrap();
        let d = c.try_receive().unwrap();
        assert_eq!(&*d, b"after");
        d.ack().unwrap();

        let pods = node.queue::<[u32; 4]>("q-loan-pod");
        let mut p = pods.producer().unwrap();
        let c = pods.consumer().unwrap();
        let mut loan = p.loan().unwrap();
        loan[2] = 9;
        loan.send().unwrap();
        assert_eq!(*c.try_receive().unwrap(), [0, 0, 9, 0]);
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, Debug)]
struct Job {
    id: u64,
    name: String,
}

#[test]
fn rkyv_messages_are_validated() {
    for node in nodes("rkyv") {
        let q = node.queue_rkyv::<Job>("q-rkyv").max_message_size(256);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(&Job {
            id: 4,
            name: "resize".into(),
        })
        .unwrap();
        let d = c.try_receive().unwrap();
        assert_eq!((d.id.to_native(), d.name.as_str()), (4, "resize"));
        d.ack().unwrap();
    }
}

#[test]
fn bad_options_and_types_are_refused() {
    for node in nodes("bad") {
        assert!(matches!(
            node.queue::<u8>("q-bad").capacity(3).producer(),
            Err(OpenError::InvalidConfig(_))
        ));
        assert!(matches!(
            node.queue::<u8>("q-bad").prefetch(0).consumer(),
            Err(OpenError::InvalidConfig(_))
        ));
        assert!(matches!(
            node.queue::<u8>("q-bad").dead_letter("q-bad").consumer(),
            Err(OpenError::InvalidConfig(_))
        ));
        assert!(matches!(
            node.queue::<u8>("../escape").producer(),
            Err(OpenError::InvalidName(_))
        ));
        let _p = node.queue::<u64>("q-typed").producer().unwrap();
        assert!(matches!(
            node.queue::<u32>("q-typed").consumer(),
            Err(OpenError::TypeMismatch { .. })
        ));
        assert!(matches!(
            node.queue_bytes("q-typed").consumer(),
            Err(OpenError::TypeMismatch { .. })
        ));
    }
}

#[test]
fn durable_messages_outlive_every_handle() {
    let dir = data_dir("outlive");
    let node = Node::in_process();
    let q = node
        .queue_bytes("jobs")
        .max_message_size(100)
        .durable(&dir)
        .sync_policy(SyncPolicy::Always);
    {
        let mut p = q.producer().unwrap();
        for i in 0..50u32 {
            p.send(format!("job {i}").as_bytes()).unwrap();
        }
        let c = q.consumer().unwrap();
        for i in 0..10u32 {
            let d = c.try_receive().unwrap();
            assert_eq!(&*d, format!("job {i}").as_bytes());
            d.ack().unwrap();
        }
        // 10 more delivered, never acknowledged.
        let held: Vec<_> = (0..10).map(|_| c.try_receive().unwrap()).collect();
        std::mem::forget(held);
    }
    let c = q.consumer().unwrap();
    let mut got = Vec::new();
    while let Ok(d) = c.try_receive() {
        got.push(String::from_utf8(d.to_vec()).unwrap());
        d.ack().unwrap();
    }
    let want: Vec<_> = (10..50).map(|i| format!("job {i}")).collect();
    let mut sorted = got.clone();
    sorted.sort_by_key(|s| s[4..].parse::<u32>().unwrap());
    assert_eq!(sorted, want);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn durable_space_is_reclaimed_after_acknowledgement() {
    let dir = data_dir("reclaim");
    let node = Node::in_process();
    let q = node
        .queue::<[u8; 64]>("space")
        .capacity(256)
        .segment_records(64)
        .durable(&dir)
        .sync_policy(SyncPolicy::Never);
    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let log = dir.join("queue_space.log");
    let files = || std::fs::read_dir(&log).unwrap().count();
    for round in 0..20u8 {
        for _ in 0..200 {
            p.send(&[round; 64]).unwrap();
        }
        assert!(files() >= 3);
        for _ in 0..200 {
            let d = c.try_receive().unwrap();
            assert_eq!(d[0], round);
            d.ack().unwrap();
        }
        // The next claim moves the head, and whole acknowledged segments are reused ahead (two
        // at most) or removed (in the background): what stays is the segment being written
        // and two ahead of it.
        assert!(matches!(c.try_receive(), Err(ReceiveError::Empty)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while files() > 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {} segment files",
                files()
            );
            std::thread::yield_now();
        }
    }
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn durable_garbage_ring_file_is_refused_and_left_alone() {
    let dir = data_dir("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queue_g");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let node = Node::in_process();
    let r = node.queue::<u64>("g").durable(&dir).consumer();
    assert!(matches!(r, Err(OpenError::Corrupt(_))), "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn durable_and_in_memory_are_different_queues() {
    let dir = data_dir("kinds");
    let node = Node::in_process();
    let _d = node.queue::<u64>("k").durable(&dir).producer().unwrap();
    let _m = node.queue::<u64>("k").producer().unwrap();
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn payload_bytes_type() {
    // Bytes is the marker for byte queues.
    let node = Node::in_process();
    let q: ringbus::QueueBuilder<Bytes> = node.queue_bytes("q-marker");
    assert!(q.producer().is_ok());
}

/// Byte offset of record `o`'s payload in the first log segment of a durable queue of
/// `max` -byte messages (see the layout in `ringbus::layout::log`).
fn record_payload(o: u64, max: usize) -> u64 {
    let stride = (ringbus::layout::log::RECORD_HEADER + max)
        .next_multiple_of(ringbus::layout::log::RECORD_ALIGN);
    (ringbus::layout::log::SEGMENT_HEADER
        + o as usize * stride
        + ringbus::layout::log::RECORD_HEADER) as u64
}

#[test]
fn durable_torn_tail_is_dropped_reported_and_never_delivered() {
    let dir = data_dir("torn");
    let node = Node::in_process();
    let q = node.queue::<[u8; 64]>("torn").durable(&dir);
    {
        let mut p = q.producer().unwrap();
        for i in 0..10u8 {
            p.send(&[i; 64]).unwrap();
        }
    }
    // As if the machine died while the last record was being written: half of it is garbage.
    let seg = dir.join("queue_torn.log").join(format!("{:020}.seg", 0));
    patch(&seg, record_payload(9, 64) + 32, &[0xee; 32]);
    let c = q.consumer().unwrap();
    let stats = c.stats();
    assert_eq!((stats.torn, stats.recovered), (1, 9));
    for i in 0..9u8 {
        let d = c.try_receive().unwrap();
        assert_eq!(*d, [i; 64]);
        d.ack().unwrap();
    }
    assert!(matches!(c.try_receive(), Err(ReceiveError::Empty)));
    drop(c);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// Log files are reused once every record in them is acknowledged. A consumer whose delivery
/// expired may still read its record: the file holding it must not be reused meanwhile.
#[test]
fn a_late_reader_of_a_durable_message_keeps_its_record_while_files_are_reused() {
    let dir = data_dir("late");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("late")
        .durable(&dir)
        .sync_policy(SyncPolicy::Never)
        .capacity(4)
        .segment_records(4)
        .prefetch(1)
        .visibility_timeout(Duration::from_millis(50))
        .policy(Policy::Fail);
    let mut p = q.producer().unwrap();
    let slow = q.consumer().unwrap();
    let fast = q.consumer().unwrap();
    p.send(&7).unwrap();
    let late = slow.try_receive().unwrap();
    let again = fast.receive_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((*again, again.delivery_count()), (7, 2));
    again.ack().unwrap();
    // The other messages flow while the late reader holds position 0: 3 more fit, then the
    // slot of position 0 is still the late reader's.
    for i in 1..4u64 {
        p.send(&(100 + i)).unwrap();
        let d = fast.try_receive().unwrap();
        assert_eq!(*d, 100 + i);
        d.ack().unwrap();
    }
    assert_eq!(p.send(&999), Err(SendError::Full));
    // Segment 0 (positions 0..4) is all acknowledged but for the late read: not reused.
    assert_eq!(*late, 7);
    let log = dir.join("queue_late.log");
    assert!(log.join(format!("{:020}.seg", 0)).exists());
    assert_eq!(late.ack(), Err(AckError::Expired));
    // Let go: many segments' worth of messages pass, through reused files.
    for i in 0..200u64 {
        p.send(&i).unwrap();
        let d = fast.try_receive().unwrap();
        assert_eq!(*d, i);
        d.ack().unwrap();
    }
    let _ = fast.try_receive();
    assert!(!log.join(format!("{:020}.seg", 0)).exists());
    drop((p, slow, fast));
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// A durable queue `name` in `dir` whose log segments hold `segment` records, synced always.
fn reboot_queue(node: &Node, dir: &std::path::Path, name: &str, segment: u64) -> QueueBuilder<u64> {
    node.queue::<u64>(name)
        .durable(dir)
        .sync_policy(SyncPolicy::Always)
        .capacity(16)
        .segment_records(segment)
}

/// Opens queue `name` of `dir` as the first open after a machine restart would (another boot
/// id in the ring file, whose pages may then be older than the log's, so the log is the truth):
/// the messages recovered and torn, and those then received.
fn open_after_restart(
    q: &QueueBuilder<u64>,
    dir: &std::path::Path,
    name: &str,
) -> (u64, u64, Vec<u64>) {
    patch(
        &dir.join(format!("queue_{name}")),
        common::ring::BOOT,
        &[0x5a; 8],
    );
    let c = q.consumer().unwrap();
    let stats = c.stats();
    (stats.recovered, stats.torn, common::drain_acked(&c))
}

#[test]
fn durable_queue_is_rebuilt_from_its_log_after_a_machine_restart() {
    let dir = data_dir("reboot");
    let q = reboot_queue(&Node::in_process(), &dir, "reboot", 64);
    {
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        for i in 0..10u64 {
            p.send(&i).unwrap();
        }
        for _ in 0..5 {
            c.try_receive().unwrap().ack().unwrap();
        }
        let held = c.try_receive().unwrap(); // delivered, unacknowledged
        assert_eq!(*held, 5);
        std::mem::forget(held);
    }
    assert_eq!(
        open_after_restart(&q, &dir, "reboot"),
        (5, 0, (5..10).collect())
    );
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// After a restart the ring is rebuilt from the log, whose files were reused: records left
/// from a file's earlier use are not messages.
#[test]
fn a_rebuild_after_a_restart_ignores_what_reused_files_held_before() {
    let dir = data_dir("reboot-reuse");
    let q = reboot_queue(&Node::in_process(), &dir, "rr", 16);
    {
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        for i in 0..205u64 {
            p.send(&i).unwrap();
            if i <= 200 {
                c.try_receive().unwrap().ack().unwrap();
            }
        }
    }
    // Few files: reused, not one per 16 messages.
    assert!(std::fs::read_dir(dir.join("queue_rr.log")).unwrap().count() <= 3);
    assert_eq!(
        open_after_restart(&q, &dir, "rr"),
        (4, 0, (201..205).collect())
    );
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn durable_log_of_another_version_is_refused_and_left_alone() {
    let dir = data_dir("version");
    let node = Node::in_process();
    let q = node.queue::<u64>("v").durable(&dir);
    q.producer().unwrap().send(&1).unwrap();
    let seg = dir.join("queue_v.log").join(format!("{:020}.seg", 0));
    patch(&seg, 8, &99u32.to_le_bytes());
    let before = std::fs::read(&seg).unwrap();
    assert!(matches!(
        q.consumer(),
        Err(OpenError::VersionMismatch { found: 99, .. })
    ));
    assert_eq!(std::fs::read(&seg).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn a_message_handed_back_laps_after_a_slow_ack_is_still_redelivered() {
    // Regression: the head (where scans for handed-back messages start) must move on even when
    // a slot was reused by a later lap before the head reached it.
    for node in nodes("head-lap") {
        let q = node
            .queue::<u64>("q-head-lap")
            .capacity(4)
            .prefetch(1)
            .policy(Policy::Fail);
        let mut p = q.producer().unwrap();
        let a = q.consumer().unwrap();
        let b = q.consumer().unwrap();
        for i in 0..4 {
            p.send(&i).unwrap();
        }
        let slow = a.try_receive().unwrap();
        for i in 1..4 {
            let d = b.try_receive().unwrap();
            assert_eq!(*d, i);
            d.ack().unwrap();
        }
        slow.ack().unwrap(); // slot 0 is free: the next send reuses it before any claim
        for i in 4..10 {
            p.send(&i).unwrap();
            let d = b.try_receive().unwrap();
            assert_eq!(*d, i);
            d.ack().unwrap();
        }
        p.send(&10).unwrap();
        b.try_receive().unwrap().nack().unwrap();
        let d = b.try_receive().unwrap();
        assert_eq!((*d, d.delivery_count()), (10, 2));
        d.ack().unwrap();
    }
}

#[test]
fn durable_producers_of_one_process_share_segment_creation() {
    // Regression: two producers of one process creating the same log segment at once.
    let dir = data_dir("two-producers");
    let node = Node::in_process();
    let q = node
        .queue::<[u64; 2]>("two")
        .capacity(256)
        .segment_records(64)
        .durable(&dir)
        .sync_policy(SyncPolicy::Never)
        .policy(Policy::Block(Duration::from_secs(30)));
    let c = q.consumer().unwrap();
    let senders: Vec<_> = (0..2u64)
        .map(|id| {
            let mut p = q.producer().unwrap();
            std::thread::spawn(move || {
                for i in 0..5000u64 {
                    p.send(&[id, i]).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u64; 2];
    for _ in 0..10_000 {
        let d = c.receive_timeout(Duration::from_secs(30)).unwrap();
        let [id, i] = *d;
        assert_eq!(i, next[id as usize], "producer {id} out of order");
        next[id as usize] += 1;
        assert_eq!(d.delivery_count(), 1);
        d.ack().unwrap();
    }
    for s in senders {
        s.join().unwrap();
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

/// The `syncs done` word of the first log segment of durable queue `name` in `dir` (see the
/// segment header layout in `ringbus::layout::log`).
fn syncs_done(dir: &std::path::Path, name: &str) -> u64 {
    use std::os::unix::fs::FileExt;
    let seg = dir
        .join(format!("queue_{name}.log"))
        .join(format!("{:020}.seg", 0));
    let mut w = [0u8; 8];
    std::fs::File::open(seg)
        .unwrap()
        .read_exact_at(&mut w, 72)
        .unwrap();
    u64::from_le_bytes(w)
}

#[test]
fn sync_policies_sync_when_they_say() {
    let dir = data_dir("sync-policies");
    let node = Node::in_process();
    // Always: the record is synced before `send` returns.
    let always = node
        .queue::<u64>("always")
        .durable(&dir)
        .sync_policy(SyncPolicy::Always);
    let mut p = always.producer().unwrap();
    p.send(&1).unwrap();
    assert!(syncs_done(&dir, "always") >= 1);
    let before = syncs_done(&dir, "always");
    p.send(&2).unwrap();
    assert!(
        syncs_done(&dir, "always") > before,
        "every send syncs (or shares a sync)"
    );

    // Batch: a background sync within the interval, with no further send.
    let batch = node
        .queue::<u64>("batch")
        .durable(&dir)
        .sync_policy(SyncPolicy::Batch(Duration::from_millis(20)));
    let mut p = batch.producer().unwrap();
    p.send(&1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while syncs_done(&dir, "batch") == 0 {
        assert!(std::time::Instant::now() < deadline, "no batch sync");
        std::thread::yield_now();
    }

    // Never: no sync by ringbus, not even when the producer leaves.
    let never = node
        .queue::<u64>("never")
        .durable(&dir)
        .sync_policy(SyncPolicy::Never);
    let mut p = never.producer().unwrap();
    for i in 0..100 {
        p.send(&i).unwrap();
    }
    drop(p);
    assert_eq!(syncs_done(&dir, "never"), 0);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
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
        .policy(Policy::Fail);
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

/// Reproduces: a consumer process keeps every log segment it ever mapped (at `Log::open`, or to
/// read a delivery) in its `Log`'s map until *its own* `remove_below` drops it, and `remove_below`
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
        .policy(Policy::Fail);
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

/// A forwarded queue (the local copy of another host's queue, as a network bridge keeps it),
/// with this test as the bridge: a producer's send goes to the outbox and returns once the
/// bridge acknowledges it there (the owner accepted it); unacknowledged, it fails
/// `Unconfirmed` and the message stays in the outbox. Loans and async sends go the same way;
/// the bridge's own producer writes the copy, which local consumers read, and learns which of
/// its messages they acknowledged.
#[test]
fn a_forwarded_queue_sends_through_its_outbox_and_waits_for_the_owner() {
    let (node, dir) = shm_node("forwarded");
    let typed = || {
        node.queue::<u64>("fwd")
            .capacity(8)
            .policy(Policy::Block(Duration::from_millis(300)))
    };
    // An application's handles, opened before the bridge: an ordinary queue for now.
    let mut producer = typed().producer().unwrap();
    let consumer = typed().consumer().unwrap();
    assert!(!producer.forwarded());
    producer.send(&1).unwrap();
    let local = consumer.try_receive().unwrap();
    assert_eq!(*local, 1, "not forwarded yet: local");
    local.ack().unwrap();

    let shape = ringbus::Shape::read(&dir, ringbus::admin::Kind::Queue, "fwd").unwrap();
    let outbox = node
        .queue_shaped("fwd--outbox", &shape)
        .unwrap()
        .consumer()
        .unwrap();
    let mut relay = node
        .queue_shaped("fwd", &shape)
        .unwrap()
        .forwarded_copy(true)
        .producer()
        .unwrap();
    assert!(producer.forwarded() && relay.forwarded());

    // Nobody forwards: not confirmed, and the message waits in the outbox, not in the copy.
    assert_eq!(
        producer.send(&2),
        Err(SendError::Unconfirmed(Duration::from_millis(300)))
    );
    assert_eq!(consumer.try_receive().err(), Some(ReceiveError::Empty));
    let waiting = outbox.try_receive().unwrap();
    assert_eq!(&*waiting, 2u64.to_le_bytes().as_slice());
    waiting.ack().unwrap();

    // The "bridge" acknowledges what reaches the outbox: sends, loans and async sends return.
    let outbox = std::thread::scope(|s| {
        let forwarder = s.spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                let m = outbox.receive_timeout(Duration::from_secs(10)).unwrap();
                got.push(u64::from_le_bytes(m.as_ref().try_into().unwrap()));
                m.ack().unwrap();
            }
            (got, outbox)
        });
        producer.send(&3).unwrap();
        let mut loan = producer.loan().unwrap();
        *loan = 4;
        loan.send().unwrap();
        futures::executor::block_on(producer.send_async(&5)).unwrap();
        let (got, outbox) = forwarder.join().unwrap();
        assert_eq!(got, vec![3, 4, 5]);
        outbox
    });
    assert_eq!(consumer.try_receive().err(), Some(ReceiveError::Empty));

    // The owner's messages: written into the copy by the bridge's producer, read here; the
    // bridge sees which were acknowledged.
    let at = relay.send(&9u64.to_le_bytes()).unwrap();
    assert!(relay.has_consumer() && !relay.acknowledged(at));
    let m = consumer.try_receive().unwrap();
    assert_eq!(*m, 9);
    assert!(!relay.acknowledged(at));
    m.ack().unwrap();
    assert!(relay.acknowledged(at));
    drop((producer, consumer, outbox, relay));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A consumer with `claim_batch(1)` claims one message per receive: the next waits in the
/// queue for any consumer, instead of in the first one's buffer (the default claims as many as
/// its prefetch has room for).
#[test]
fn claim_batch_one_leaves_the_rest_to_other_consumers() {
    for node in nodes("claim-batch") {
        let queue = node.queue::<u64>("claim-batch").prefetch(8);
        let mut producer = queue.producer().unwrap();
        let one = queue.clone().claim_batch(1).consumer().unwrap();
        let other = queue.consumer().unwrap();
        for n in 0..4 {
            producer.send(&n).unwrap();
        }
        let first = one.try_receive().unwrap();
        assert_eq!(*first, 0);
        // The default consumer takes all the rest: none was left claimed by `one`.
        let rest: Vec<u64> = (0..3)
            .map(|_| {
                let d = other.try_receive().unwrap();
                let n = *d;
                d.ack().unwrap();
                n
            })
            .collect();
        assert_eq!(rest, vec![1, 2, 3]);
        assert_eq!(one.try_receive().err(), Some(ReceiveError::Empty));
    }
}
