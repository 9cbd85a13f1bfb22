//! Durable topics across processes: group members killed and restarted, groups sharing
//! partitions, every process killed under `SyncPolicy::Always`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ringbus::durable::{self, key_digest, AutoCommit, StartAt};
use ringbus::{Node, ReceiveError, SyncPolicy};

/// A message: its key number and its sequence number within the key.
type Msg = [u64; 2];

fn dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dtopic-proc-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn topic(dir: &Path, partitions: usize, sync: SyncPolicy) -> durable::DurableTopicBuilder<Msg> {
    Node::in_process()
        .topic::<Msg>("events")
        .durable(dir)
        .partitions(partitions)
        .segment_records(64)
        .sync_policy(sync)
}

fn sync_of(a: &std::collections::HashMap<String, String>) -> SyncPolicy {
    match a.get("sync").map(String::as_str) {
        Some("always") => SyncPolicy::Always,
        _ => SyncPolicy::Never,
    }
}

/// Lines of a child's record file, split in words.
fn lines(path: &Path) -> Vec<Vec<u64>> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map(|l| {
            l.unwrap()
                .split_whitespace()
                .map(|w| w.parse().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    let get = |k: &str| a.get(k).map(|v| v.parse::<u64>().unwrap()).unwrap_or(0);
    let d = PathBuf::from(a.get("dir").unwrap());
    let t = topic(&d, get("partitions") as usize, sync_of(&a));
    let mut out = File::options()
        .create(true)
        .append(true)
        .open(a.get("out").unwrap())
        .unwrap();
    match role.as_str() {
        "publisher" => {
            let mut p = t.publisher().unwrap();
            tell("ready");
            let keys = get("keys");
            for i in get("from")..get("from") + get("count") {
                let m = [i % keys, i / keys];
                p.send_keyed(&m[0].to_le_bytes(), &m).unwrap();
                // Recorded after the send returned: the message is promised.
                out.write_all(format!("{i}\n").as_bytes()).unwrap();
                if i % 100 == 99 {
                    tell(&format!("sent {}", i + 1));
                }
            }
            tell("done");
            wait_parent();
        }
        "member" => {
            let mut s = t
                .subscriber_at(StartAt::Earliest)
                .unwrap()
                .group(a.get("group").unwrap())
                .unwrap();
            s.set_detect_interval(Duration::from_millis(get("detect_ms").max(1)));
            let every = get("commit_every");
            if every > 0 {
                s.set_auto_commit(None);
            } else {
                s.set_auto_commit(Some(AutoCommit {
                    every: 100,
                    interval: Duration::from_millis(20),
                }));
            }
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            std::thread::spawn(move || {
                while wait_parent().is_some() {}
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            tell("ready");
            let (mut n, mut assigned) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let got = match s.receive_timeout(Duration::from_millis(50)) {
                    Ok(m) => Some((m.partition(), m.offset(), *m)),
                    Err(ReceiveError::Timeout(_)) => None,
                    Err(e) => panic!("{e}"),
                };
                if s.assigned() != assigned {
                    assigned = s.assigned();
                    tell(&format!("assigned {assigned:?}"));
                }
                match got {
                    Some((k, o, m)) => {
                        // One write: a kill never leaves half a line.
                        out.write_all(format!("{k} {o} {} {}\n", m[0], m[1]).as_bytes())
                            .unwrap();
                        n += 1;
                        if every > 0 && n % every == 0 {
                            s.commit().unwrap();
                            tell(&format!("committed {}", o + 1));
                        }
                    }
                    None => tell(&format!("idle {n}")),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn member(d: &Path, group: &str, partitions: usize, out: &Path, extra: &str) -> ChildRole {
    let mut c = ChildRole::spawn(
        "member",
        &d.join("unused-root"),
        &format!(
            "dir={} partitions={partitions} group={group} out={} {extra}",
            d.display(),
            out.display()
        ),
    );
    c.expect("ready");
    c
}

/// Reads a member's lines until it reports itself idle with at least `n` messages received
/// (it reports every 50 ms while idle); fails after 30 s of reports.
fn await_idle_at(c: &mut ChildRole, n: u64) {
    for _ in 0..600 {
        if c.expect("idle").parse::<u64>().unwrap() >= n {
            return;
        }
    }
    panic!("the member never received {n} messages");
}

/// Reads a member's lines until it reports `n` partitions assigned.
fn await_assigned(c: &mut ChildRole, n: usize) -> Vec<usize> {
    loop {
        let line = c.expect("assigned");
        let parts: Vec<usize> = line
            .trim_matches(|ch| ch == '[' || ch == ']')
            .split(", ")
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect();
        if parts.len() == n {
            return parts;
        }
    }
}

#[test]
fn another_process_log_is_replayed_from_earliest_an_offset_a_time_and_latest() {
    let d = dir("replay");
    let t = topic(&d, 2, SyncPolicy::Never);
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let out = d.join("sent.txt");
    let _ = t.publisher().unwrap();
    let mut p = ChildRole::spawn(
        "publisher",
        &d.join("unused-root"),
        &format!(
            "dir={} partitions=2 keys=4 from=0 count=400 out={}",
            d.display(),
            out.display()
        ),
    );
    p.expect("done");
    let all = |s: &mut durable::Subscriber<Msg>| {
        let mut got = Vec::new();
        while let Ok(m) = s.try_receive() {
            got.push((m.partition(), m.offset(), m[0], m[1]));
        }
        got.sort();
        got
    };
    let everything = all(&mut t.subscriber_at(StartAt::Earliest).unwrap());
    assert_eq!(everything.len(), 400);
    // Each key's messages in one partition, in order.
    for key in 0..4u64 {
        let of_key: Vec<_> = everything.iter().filter(|m| m.2 == key).collect();
        assert!(of_key.iter().all(|m| m.0 == of_key[0].0));
        assert!(of_key
            .windows(2)
            .all(|w| w[1].3 == w[0].3 + 1 && w[1].1 > w[0].1));
    }
    let from_10 = all(&mut t.subscriber_at(StartAt::Offset(10)).unwrap());
    let want: Vec<_> = everything.iter().filter(|m| m.1 >= 10).copied().collect();
    assert_eq!(from_10, want);
    assert_eq!(
        all(&mut t.subscriber_at(StartAt::Time(before)).unwrap()),
        everything
    );
    let mut latest = t.subscriber().unwrap();
    assert!(all(&mut latest).is_empty());
    assert!(p.finish());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_killed_member_resumes_from_its_last_commit_and_skips_nothing() {
    let d = dir("resume");
    let t = topic(&d, 1, SyncPolicy::Never);
    let mut p = t.publisher().unwrap();
    for i in 0..2000u64 {
        p.send(&[0, i]).unwrap();
    }
    let (first, second) = (d.join("first.txt"), d.join("second.txt"));
    let mut c = member(&d, "g", 1, &first, "commit_every=10");
    // Killed mid-stream, once it has committed past 1000.
    loop {
        let at: u64 = c.expect("committed").parse().unwrap();
        if at >= 1000 {
            break;
        }
    }
    c.kill();
    let committed = durable::inspect(&d, "events").unwrap().groups[0].committed[0].unwrap();
    assert!(committed >= 1000 && committed % 10 == 0, "{committed}");
    let before: Vec<u64> = lines(&first).iter().map(|l| l[1]).collect();
    // Everything up to the kill, in order, with nothing missing.
    assert_eq!(before, (0..before.len() as u64).collect::<Vec<_>>());
    assert!(before.len() as u64 >= committed);

    let mut c = member(&d, "g", 1, &second, "commit_every=10");
    await_idle_at(&mut c, 2000 - committed);
    assert!(c.finish());
    let after: Vec<u64> = lines(&second).iter().map(|l| l[1]).collect();
    // Exactly from the commit: the messages received after it are delivered again, and
    // nothing is skipped.
    assert_eq!(after, (committed..2000).collect::<Vec<_>>());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn two_groups_each_see_every_message() {
    let d = dir("twogroups");
    let t = topic(&d, 2, SyncPolicy::Never);
    let (fa, fb) = (d.join("a.txt"), d.join("b.txt"));
    let _ = t.publisher().unwrap();
    let mut a = member(&d, "a", 2, &fa, "");
    let mut b = member(&d, "b", 2, &fb, "");
    let mut p = t.publisher().unwrap();
    for i in 0..1000u64 {
        p.send_keyed(&(i % 10).to_le_bytes(), &[i % 10, i / 10])
            .unwrap();
    }
    for c in [&mut a, &mut b] {
        await_idle_at(c, 1000);
    }
    assert!(a.finish() && b.finish());
    for f in [fa, fb] {
        let mut got: Vec<(u64, u64)> = lines(&f).iter().map(|l| (l[2], l[3])).collect();
        got.sort();
        let want: Vec<(u64, u64)> = (0..1000)
            .map(|i| (i % 10, i / 10))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(got, want);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn three_members_share_partitions_in_key_order_and_a_killed_ones_move() {
    const P: usize = 6;
    const KEYS: u64 = 12;
    let d = dir("share");
    let t = topic(&d, P, SyncPolicy::Never);
    let _ = t.publisher().unwrap();
    let files: Vec<PathBuf> = (0..3).map(|i| d.join(format!("m{i}.txt"))).collect();
    let mut ms: Vec<ChildRole> = files
        .iter()
        .map(|f| member(&d, "g", P, f, "detect_ms=20"))
        .collect();
    let mut owned: Vec<Vec<usize>> = ms.iter_mut().map(|c| await_assigned(c, 2)).collect();
    let mut all: Vec<usize> = owned.concat();
    all.sort();
    assert_eq!(all, (0..P).collect::<Vec<_>>());

    let partition = |key: u64| (key_digest(&key.to_le_bytes()) % P as u64) as usize;
    let mut p = t.publisher().unwrap();
    let send = |p: &mut durable::Publisher<Msg>, range: std::ops::Range<u64>| {
        for i in range {
            p.send_keyed(&(i % KEYS).to_le_bytes(), &[i % KEYS, i / KEYS])
                .unwrap();
        }
    };
    send(&mut p, 0..600);
    // Each member gets every message of its partitions.
    for (c, parts) in ms.iter_mut().zip(&owned) {
        let want = (0..600)
            .filter(|i| parts.contains(&partition(i % KEYS)))
            .count() as u64;
        while c.expect("idle").parse::<u64>().unwrap() < want {}
    }
    // The third member dies: its partitions move to the other two.
    ms.pop().unwrap().kill();
    owned.pop();
    for (c, parts) in ms.iter_mut().zip(owned.iter_mut()) {
        *parts = await_assigned(c, 3);
    }
    let mut all: Vec<usize> = owned.concat();
    all.sort();
    assert_eq!(all, (0..P).collect::<Vec<_>>());
    send(&mut p, 600..1200);
    // Until the group committed everything.
    let mut rounds = 0;
    loop {
        for c in ms.iter_mut() {
            c.expect("idle");
        }
        let info = durable::inspect(&d, "events").unwrap();
        if info.groups[0].lag == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 1000, "the group never caught up: {info:?}");
    }
    for c in ms {
        assert!(c.finish());
    }
    // Every message was received; within each member, each key's messages came in order; a
    // key was read by one member at a time (the dead one's keys moved whole).
    let mut seen = BTreeSet::new();
    let mut readers: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for (m, f) in files.iter().enumerate() {
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for l in lines(f) {
            let (k, key, seq) = (l[0] as usize, l[2], l[3]);
            assert_eq!(k, partition(key));
            if let Some(prev) = last.insert(key, seq) {
                assert!(seq > prev, "member {m} key {key}: {seq} after {prev}");
            }
            seen.insert(key + KEYS * seq);
            readers.entry(key).or_default().insert(m);
        }
    }
    assert_eq!(seen, (0..1200).collect::<BTreeSet<u64>>());
    for (key, r) in readers {
        // The original reader, and after the kill at most the one that took it over.
        assert!(r.len() <= 2, "key {key}: {r:?}");
        if r.len() == 2 {
            assert!(
                r.contains(&2),
                "key {key} moved between live members: {r:?}"
            );
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn every_process_killed_under_always_loses_nothing_committed() {
    let d = dir("always");
    let (acked, got) = (d.join("acked.txt"), d.join("got.txt"));
    let t = topic(&d, 1, SyncPolicy::Always);
    drop(t.publisher().unwrap());
    let mut sent = 0;
    let mut last_commit = 0;
    for round in 0..3 {
        let mut p = ChildRole::spawn(
            "publisher",
            &d.join("unused-root"),
            &format!(
                "dir={} partitions=1 keys=1 sync=always from={sent} count=100000 out={}",
                d.display(),
                acked.display()
            ),
        );
        p.expect("ready");
        let mut m = member(&d, "g", 1, &got, "sync=always commit_every=1");
        // Both are killed mid-stream: the publisher mid-send, the member mid-commit.
        p.expect("sent");
        for _ in 0..(round + 1) * 5 {
            last_commit = m.expect("committed").parse().unwrap();
        }
        p.kill();
        m.kill();
        sent = lines(&acked).len() as u64;
        // Every send that returned is in the log, in order.
        let mut s = t.subscriber_at(StartAt::Earliest).unwrap();
        let mut logged = Vec::new();
        while let Ok(msg) = s.try_receive() {
            logged.push(msg[1]);
        }
        assert!(
            logged.len() as u64 >= sent,
            "round {round}: {} < {sent}",
            logged.len()
        );
        assert_eq!(logged[..sent as usize], (0..sent).collect::<Vec<_>>()[..]);
        // A send killed before it returned may be in the log too (at least once); the next
        // round's publisher numbers on from the last acknowledged one.
        sent = logged.len() as u64;
        let committed = durable::inspect(&d, "events").unwrap().groups[0].committed[0].unwrap();
        assert!(committed >= last_commit, "{committed} < {last_commit}");
        // Rewrite the acknowledged record to what the log holds (sends numbered on from it).
        let mut f = File::create(&acked).unwrap();
        for i in 0..sent {
            writeln!(f, "{i}").unwrap();
        }
    }
    // A last member resumes exactly at the group's commit.
    let committed = durable::inspect(&d, "events").unwrap().groups[0].committed[0].unwrap();
    let rest = d.join("rest.txt");
    let mut m = member(&d, "g", 1, &rest, "sync=always commit_every=1");
    await_idle_at(&mut m, sent - committed);
    assert!(m.finish());
    let offsets: Vec<u64> = lines(&rest).iter().map(|l| l[1]).collect();
    assert_eq!(offsets, (committed..sent).collect::<Vec<_>>());
    std::fs::remove_dir_all(&d).unwrap();
}
