//! Durable topics within one process: start positions, retention, damaged files, groups.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::patch;
use ringbus::durable::{self, Retention, StartAt};
use ringbus::{Bytes, Node, OpenError, ReceiveError, SyncPolicy};

fn dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dtopic-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Bytes per record of a `u64` topic: header 16, prefix 16, message 8, rounded up to a cache
/// line (ARCHITECTURE.md, "Durable topics").
const STRIDE: u64 = 64;

fn topic(dir: &Path, name: &str) -> durable::DurableTopicBuilder<u64> {
    Node::in_process()
        .topic::<u64>(name)
        .durable(dir)
        .segment_records(16)
        .sync_policy(SyncPolicy::Never)
}

/// Receives everything there is now.
fn drain(s: &mut durable::Subscriber<u64>) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    loop {
        match s.try_receive() {
            Ok(m) => got.push((m.offset(), *m)),
            Err(ReceiveError::Empty) => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn replay_from_earliest_latest_an_offset_and_a_time() {
    let d = dir("starts");
    let t = topic(&d, "starts");
    let mut p = t.publisher().unwrap();
    let latest = t.subscriber().unwrap();
    for v in 0..40u64 {
        assert_eq!(p.send(&(v * 10)).unwrap(), (0, v));
    }
    let mid = SystemTime::now();
    for v in 40..50u64 {
        p.send(&(v * 10)).unwrap();
    }
    let all: Vec<(u64, u64)> = (0..50).map(|v| (v, v * 10)).collect();
    assert_eq!(drain(&mut t.subscriber_at(StartAt::Earliest).unwrap()), all);
    // Latest: only what came after it joined (everything here), and nothing for a new one.
    let mut latest = latest;
    assert_eq!(drain(&mut latest), all);
    assert!(drain(&mut t.subscriber().unwrap()).is_empty());
    assert_eq!(
        drain(&mut t.subscriber_at(StartAt::Offset(33)).unwrap()),
        all[33..]
    );
    // Every message's timestamp is at or after the previous one's, and never before its send
    // (stamps are rounded up to the clock's tick).
    let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
    let mut stamps = Vec::new();
    while let Ok(m) = s.try_receive() {
        stamps.push(m.timestamp_ns());
    }
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    let mid_ns = mid.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert!(stamps[40..].iter().all(|&ts| ts >= mid_ns));
    // A time lookup starts at the first message stamped at or after the time: never after a
    // message sent after it.
    let from_time = drain(&mut t.subscriber_at(StartAt::Time(mid)).unwrap());
    let first = from_time[0].0 as usize;
    assert_eq!(from_time, all[first..]);
    assert!(first <= 40 && stamps[first] >= mid_ns);
    assert!(first == 0 || stamps[first - 1] < mid_ns);
    let past = UNIX_EPOCH + Duration::from_secs(1);
    assert_eq!(
        drain(&mut t.subscriber_at(StartAt::Time(past)).unwrap()),
        all
    );
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert!(drain(&mut t.subscriber_at(StartAt::Time(future)).unwrap()).is_empty());
    // A publisher and subscriber opened later see the same log.
    drop(p);
    let mut again = t.subscriber_at(StartAt::Earliest).unwrap();
    assert_eq!(drain(&mut again), all);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn retention_deletes_whole_old_files_and_an_old_offset_is_a_typed_error() {
    let d = dir("retention");
    let file_len = 4096 + 16 * STRIDE; // header + records × stride
    let t = topic(&d, "ret").retention(Retention {
        bytes: Some(3 * file_len),
        ..Retention::default()
    });
    let mut p = t.publisher().unwrap();
    for v in 0..100u64 {
        p.send(&v).unwrap();
    }
    let info = durable::inspect(&d, "ret").unwrap();
    let part = &info.partitions[0];
    assert_eq!(part.end, 100);
    // Files of 16 records: 96..100 is being written; at most 3 files are kept.
    assert!(part.files <= 3, "{part:?}");
    assert_eq!(part.earliest % 16, 0);
    assert!(part.earliest >= 64, "{part:?}");
    match t.subscriber_at(StartAt::Offset(5)) {
        Err(OpenError::NotRetained {
            partition: 0,
            requested: 5,
            earliest,
        }) => assert_eq!(earliest, part.earliest),
        other => panic!("{other:?}"),
    }
    let got = drain(&mut t.subscriber_at(StartAt::Earliest).unwrap());
    assert_eq!(got.first().unwrap().0, part.earliest);
    assert_eq!(got.len() as u64, 100 - part.earliest);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_group_protects_what_it_has_not_committed_until_max_bytes_forces_it() {
    let d = dir("protect");
    let file_len = 4096 + 16 * STRIDE;
    let t = topic(&d, "protect").retention(Retention {
        bytes: Some(2 * file_len),
        max_bytes: Some(6 * file_len),
        ..Retention::default()
    });
    let mut p = t.publisher().unwrap();
    p.send(&0).unwrap();
    let mut g = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("slow")
        .unwrap();
    g.set_auto_commit(None);
    assert_eq!(g.try_receive().unwrap().offset(), 0);
    g.commit().unwrap();
    for v in 1..64u64 {
        p.send(&v).unwrap();
    }
    // The group committed 1: the file holding offsets 0..16 stays although the goal is 2 files.
    let info = durable::inspect(&d, "protect").unwrap();
    assert_eq!(info.partitions[0].earliest, 0);
    assert_eq!(info.groups[0].committed, vec![Some(1)]);
    assert_eq!(info.groups[0].lag, 63);
    // Past max_bytes (6 files), the oldest go anyway and the group is told.
    for v in 64..128u64 {
        p.send(&v).unwrap();
    }
    let earliest = durable::inspect(&d, "protect").unwrap().partitions[0].earliest;
    assert!(earliest > 1);
    // This handle still maps the file of offset 1 (it read offset 0 there), so it reads on
    // there; a member that starts afresh from the commit finds it gone.
    drop(g);
    let mut g = t.subscriber().unwrap().group("slow").unwrap();
    match g.try_receive() {
        Err(ReceiveError::Lost {
            partition: 0,
            from,
            to,
        }) => assert_eq!((from, to), (1, earliest)),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.try_receive().unwrap().offset(), earliest);
    assert_eq!(g.group_lost(), earliest - 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_corrupt_record_is_reported_and_passed_over_and_so_is_a_truncated_file() {
    let d = dir("corrupt");
    let t = topic(&d, "corrupt");
    let mut p = t.publisher().unwrap();
    for v in 0..20u64 {
        p.send(&v).unwrap();
    }
    drop(p);
    let seg = d.join("topic_corrupt/p000/00000000000000000000.seg");
    // Offset 3's message bytes: header page, 3 records, record header, prefix.
    patch(&seg, 4096 + 3 * STRIDE + 16 + 16, &[0xff]);
    let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
    let mut got = Vec::new();
    let mut bad = Vec::new();
    loop {
        match s.try_receive() {
            Ok(m) => got.push(*m),
            Err(ReceiveError::Invalid(why)) => bad.push(why),
            Err(ReceiveError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("offset 3"), "{bad:?}");
    assert_eq!(got, (0..20).filter(|&v| v != 3).collect::<Vec<_>>());
    drop(s);
    // A file cut short (not by ringbus, which never truncates) is reported once, naming it and
    // the offsets it held, and passed over whole: the next file is read.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(4096 + 100).unwrap();
    let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
    match s.try_receive() {
        Err(ReceiveError::Invalid(why)) => {
            assert!(why.contains("00000000000000000000.seg"), "{why}");
            assert!(why.contains("offsets 0..16"), "{why}");
        }
        Ok(m) => panic!("delivered {} from a truncated file", *m),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(drain(&mut s), (16..20).map(|v| (v, v)).collect::<Vec<_>>());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn members_of_a_group_share_partitions_and_groups_each_see_everything() {
    let d = dir("groups");
    let t = topic(&d, "groups").partitions(4);
    let mut p = t.publisher().unwrap();
    let mut a = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("g")
        .unwrap();
    let mut b = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("g")
        .unwrap();
    let mut other = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("h")
        .unwrap();
    // Both members see the generation, and the partitions settle two and two.
    for _ in 0..3 {
        let _ = a.try_receive();
        let _ = b.try_receive();
    }
    let (pa, pb) = (a.assigned(), b.assigned());
    assert_eq!(pa.len() + pb.len(), 4, "{pa:?} {pb:?}");
    assert!(pa.iter().all(|k| !pb.contains(k)));
    for v in 0..40u64 {
        p.send_keyed(&(v % 8).to_le_bytes(), &v).unwrap();
    }
    let ga: Vec<_> = drain(&mut a).into_iter().map(|x| x.1).collect();
    let gb: Vec<_> = drain(&mut b).into_iter().map(|x| x.1).collect();
    let mut both: Vec<_> = ga.iter().chain(&gb).copied().collect();
    both.sort();
    assert_eq!(both, (0..40).collect::<Vec<_>>());
    // A key's messages all went to one member, in order.
    for key in 0..8 {
        let in_a: Vec<_> = ga.iter().filter(|v| *v % 8 == key).collect();
        let in_b: Vec<_> = gb.iter().filter(|v| *v % 8 == key).collect();
        assert!(in_a.is_empty() || in_b.is_empty(), "key {key}");
        assert!(in_a.windows(2).all(|w| w[0] < w[1]));
        assert!(in_b.windows(2).all(|w| w[0] < w[1]));
    }
    let mut h: Vec<_> = drain(&mut other).into_iter().map(|x| x.1).collect();
    h.sort();
    assert_eq!(h, (0..40).collect::<Vec<_>>());
    // b leaves: a takes its partitions over, from b's commits (nothing left to read).
    drop(b);
    let _ = a.try_receive();
    assert_eq!(a.assigned(), vec![0, 1, 2, 3]);
    assert!(drain(&mut a).is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_group_reset_moves_its_commits_and_is_refused_while_a_member_lives() {
    let d = dir("reset");
    let t = topic(&d, "reset");
    let mut p = t.publisher().unwrap();
    for v in 0..10u64 {
        p.send(&v).unwrap();
    }
    let mut g = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("billing")
        .unwrap();
    assert_eq!(drain(&mut g).len(), 10);
    assert!(matches!(
        durable::reset_group(&d, "reset", "billing", StartAt::Earliest),
        Err(OpenError::Busy(_))
    ));
    drop(g);
    assert_eq!(
        durable::inspect(&d, "reset").unwrap().groups[0].committed,
        vec![Some(10)]
    );
    assert_eq!(
        durable::reset_group(&d, "reset", "billing", StartAt::Offset(4)).unwrap(),
        vec![4]
    );
    let mut g = t.subscriber().unwrap().group("billing").unwrap();
    assert_eq!(drain(&mut g).first().unwrap().0, 4);
    drop(g);
    assert!(matches!(
        durable::reset_group(&d, "reset", "nobody", StartAt::Earliest),
        Err(OpenError::NotFound(_))
    ));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn byte_messages_keys_and_mismatched_types() {
    let d = dir("bytes");
    let t = Node::in_process()
        .topic_bytes("bytes")
        .max_message_size(100)
        .durable(&d);
    let mut p = t.publisher().unwrap();
    let mut s = t.subscriber().unwrap();
    p.send_keyed(b"k", b"hello").unwrap();
    assert!(matches!(
        p.send(&[0u8; 101]),
        Err(ringbus::SendError::TooLarge { len: 101, max: 100 })
    ));
    {
        let m = s.try_receive().unwrap();
        assert_eq!(&*m, b"hello");
        assert_eq!(m.key_digest(), Some(durable::key_digest(b"k")));
    }
    // The failed send left nothing behind.
    assert!(matches!(s.try_receive(), Err(ReceiveError::Empty)));
    let wrong = Node::in_process()
        .topic::<u32>("bytes")
        .durable(&d)
        .publisher();
    assert!(matches!(wrong, Err(OpenError::TypeMismatch { .. })));
    let _: durable::Subscriber<Bytes> = t.subscriber().unwrap();
    let waited = s.receive_timeout(Duration::from_millis(1));
    assert!(matches!(waited, Err(ReceiveError::Timeout(_))));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A record sealed by a publisher that died before publishing it (crafted here in the file, as
/// a kill between the two stores leaves it) is seen by every reader alike, and the next
/// publisher publishes it as it is and writes its own message after it.
#[test]
fn a_sealed_record_a_dead_publisher_left_is_read_and_published_as_it_is() {
    let d = dir("sealed");
    let t = topic(&d, "sealed");
    let mut p = t.publisher().unwrap();
    for v in 0..3u64 {
        p.send(&v).unwrap();
    }
    drop(p);
    // Record 3: crc | len | offset | timestamp | key | message (u64).
    let mut rec = Vec::new();
    let len = 16u32 + 8;
    rec.extend_from_slice(&len.to_le_bytes());
    rec.extend_from_slice(&3u64.to_le_bytes());
    rec.extend_from_slice(&u64::MAX.to_le_bytes()); // a timestamp
    rec.extend_from_slice(&0u64.to_le_bytes()); // no key
    rec.extend_from_slice(&77u64.to_le_bytes());
    let crc = crc32c::crc32c(&rec);
    let seg = d.join("topic_sealed/p000/00000000000000000000.seg");
    patch(&seg, 4096 + 3 * STRIDE + 4, &rec);
    patch(&seg, 4096 + 3 * STRIDE, &crc.to_le_bytes());
    // Readers starting anywhere see it, though the published end is still 3.
    assert_eq!(durable::inspect(&d, "sealed").unwrap().partitions[0].end, 3);
    let mut from_start = t.subscriber_at(StartAt::Earliest).unwrap();
    assert_eq!(drain(&mut from_start), [(0, 0), (1, 1), (2, 2), (3, 77)]);
    let mut at_end = t.subscriber_at(StartAt::Offset(3)).unwrap();
    {
        let m = at_end.receive_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((m.offset(), *m), (3, 77));
    }
    // The next send publishes it and goes after it.
    let mut p = t.publisher().unwrap();
    assert_eq!(p.send(&5).unwrap(), (0, 4));
    assert_eq!(durable::inspect(&d, "sealed").unwrap().partitions[0].end, 5);
    {
        // Timestamps never go backwards in a partition, past an adopted record too.
        let m = at_end.try_receive().unwrap();
        assert_eq!((m.offset(), *m), (4, 5));
        assert_eq!(m.timestamp_ns(), u64::MAX);
    }
    assert_eq!(drain(&mut at_end), []);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A hole below the published end (a record that never reached the disk before a machine
/// crash, written here as zeros) in partitions a subscriber is already reading in place is
/// reported and passed over by a blocking receive: it never waits on it, nor returns `Empty`.
#[test]
fn a_hole_below_the_end_is_reported_by_a_blocking_receive_in_every_partition() {
    let d = dir("hole");
    let t = topic(&d, "hole").partitions(2);
    let mut p = t.publisher().unwrap();
    let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
    // Offset 0 of each partition, read: the subscriber maps both segments.
    p.send(&0).unwrap();
    p.send(&1).unwrap();
    for _ in 0..2 {
        s.receive_timeout(Duration::from_secs(10)).unwrap();
    }
    // Offset 1 of each partition, then unwritten again (crc, length, offset: 16 bytes).
    p.send(&10).unwrap();
    p.send(&11).unwrap();
    for k in 0..2 {
        let seg = d.join(format!("topic_hole/p00{k}/00000000000000000000.seg"));
        patch(&seg, 4096 + STRIDE, &[0; 16]);
    }
    p.send(&20).unwrap();
    p.send(&21).unwrap();
    let (mut got, mut holes) = (Vec::new(), Vec::new());
    while got.len() < 2 {
        match s.receive_timeout(Duration::from_secs(10)) {
            Ok(m) => got.push((m.partition(), m.offset(), *m)),
            Err(ReceiveError::Invalid(why)) => holes.push(why),
            Err(e) => panic!("{e}"),
        }
    }
    got.sort();
    holes.sort();
    assert_eq!(got, [(0, 2, 20), (1, 2, 21)]);
    assert_eq!(holes.len(), 2, "{holes:?}");
    assert!(holes[0].contains("partition 0 offset 1"), "{holes:?}");
    assert!(holes[1].contains("partition 1 offset 1"), "{holes:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A handle that joins a second group leaves the first: the first has no member left, and a
/// new member of it reads every partition.
#[test]
fn joining_another_group_leaves_the_first() {
    let d = dir("regroup");
    let t = topic(&d, "regroup").partitions(2);
    let mut p = t.publisher().unwrap();
    for v in 0..4u64 {
        p.send(&v).unwrap();
    }
    let s = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("a")
        .unwrap();
    assert_eq!(s.assigned(), [0, 1]);
    let mut s = s.group("b").unwrap();
    assert_eq!(s.assigned(), [0, 1]);
    let info = durable::inspect(&d, "regroup").unwrap();
    let members = |g: &str| info.groups.iter().find(|x| x.name == g).unwrap().members;
    assert_eq!((members("a"), members("b")), (0, 1));
    assert_eq!(drain(&mut s).len(), 4);
    let a = t
        .subscriber_at(StartAt::Earliest)
        .unwrap()
        .group("a")
        .unwrap();
    assert_eq!(a.assigned(), [0, 1]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Records have room to the end of a cache line; a record whose message is longer than the
/// topic's limit (written here into the file, as a foreign writer could) is reported and passed
/// over, never delivered.
#[test]
fn a_record_longer_than_the_topic_allows_is_refused() {
    let d = dir("toolong");
    let t = Node::in_process()
        .topic_bytes("toolong")
        .max_message_size(100)
        .durable(&d)
        .sync_policy(SyncPolicy::Never);
    let mut p = t.publisher().unwrap();
    p.send(b"first").unwrap();
    drop(p);
    // Record 1 (stride: 16 + 16 + 100 rounded up to 64 = 192): a 120-byte message.
    let mut rec = Vec::new();
    rec.extend_from_slice(&(16u32 + 120).to_le_bytes());
    rec.extend_from_slice(&1u64.to_le_bytes());
    rec.extend_from_slice(&[0; 16]); // prefix: timestamp 0, no key
    rec.extend_from_slice(&[7; 120]);
    let crc = crc32c::crc32c(&rec);
    let seg = d.join("topic_toolong/p000/00000000000000000000.seg");
    patch(&seg, 4096 + 192 + 4, &rec);
    patch(&seg, 4096 + 192, &crc.to_le_bytes());
    let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
    assert_eq!(&*s.try_receive().unwrap(), b"first");
    match s.try_receive() {
        Err(ReceiveError::Invalid(why)) => assert!(why.contains("limit is 100"), "{why}"),
        Ok(m) => panic!("delivered {} bytes", m.len()),
        Err(e) => panic!("{e}"),
    }
    assert!(matches!(s.try_receive(), Err(ReceiveError::Empty)));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A publisher's helper thread populates the chunks ahead and makes the next file half way
/// through each (ARCHITECTURE.md, "The log"); with it on or off, every message arrives whole
/// and in order, and once the publisher drops, the directory holds exactly the segment files
/// the offsets need (no file made after the drop, no temporary file left).
#[test]
fn the_helper_thread_changes_no_message_and_leaves_only_the_files_needed() {
    for helper in [true, false] {
        let d = dir(&format!("helper-{helper}"));
        let t = Node::in_process()
            .topic::<[u64; 8]>("helper")
            .durable(&d)
            .sync_policy(SyncPolicy::Never)
            .segment_records(4096)
            .helper_thread(helper);
        let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
        let mut p = t.publisher().unwrap();
        // 10,000 records of 128 bytes: five 256 KiB chunks, three files (the second one's
        // half way point makes the third ahead).
        for i in 0..10_000u64 {
            assert_eq!(p.send(&[i; 8]).unwrap(), (0, i));
        }
        drop(p);
        for i in 0..10_000u64 {
            let m = s.try_receive().unwrap();
            assert_eq!((m.offset(), *m), (i, [i; 8]), "helper {helper}");
        }
        assert!(matches!(s.try_receive(), Err(ReceiveError::Empty)));
        let mut names: Vec<String> = std::fs::read_dir(d.join("topic_helper").join("p000"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let want: Vec<String> = [0u64, 4096, 8192]
            .iter()
            .map(|b| format!("{b:020}.seg"))
            .collect();
        assert_eq!(names, want, "helper {helper}");
        drop(s);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
