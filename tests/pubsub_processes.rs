//! Publish/subscribe across real processes: ordering, loss, lag, history, crashes, bad segments,
//! permissions. Child roles run in this same test binary (see `common`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;
use ringbus::{
    topic::Policy, Bytes, Node, OpenError, OpenMode, ReceiveError, SendError, TopicBuilder,
};

const MAX: usize = 4096;
const HDR: usize = 32;

fn topic(
    node: &Node,
    name: &str,
    policy: Policy,
    cap: usize,
    history: usize,
) -> TopicBuilder<Bytes> {
    node.topic_bytes(name)
        .max_message_size(MAX)
        .capacity(cap)
        .policy(policy)
        .history(history)
        .max_subscribers(2)
        .max_held(1)
        .send_timeout(Duration::from_secs(30))
}

/// Writes a test message: id, seq, payload length, checksum of the payload, then the payload.
fn fill(buf: &mut [u8], id: u64, seq: u64, rng: &mut Rng, slow: bool) {
    let body = buf.len() - HDR;
    buf[0..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..24].copy_from_slice(&(body as u64).to_le_bytes());
    for b in &mut buf[HDR..] {
        // Slow: one volatile byte at a time, so a SIGKILL most likely lands mid-write.
        let v = rng.next() as u8;
        if slow {
            // SAFETY: b is a valid &mut u8.
            unsafe { std::ptr::write_volatile(b, v) };
        } else {
            *b = v;
        }
    }
    let sum = checksum(&buf[HDR..]);
    buf[24..32].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received message; returns (id, seq).
fn check(msg: &[u8]) -> (u64, u64) {
    assert!(msg.len() >= HDR, "message of {} bytes", msg.len());
    let word = |i: usize| u64::from_le_bytes(msg[i..i + 8].try_into().unwrap());
    assert_eq!(word(16) as usize, msg.len() - HDR, "length field");
    assert_eq!(word(24), checksum(&msg[HDR..]), "torn or corrupt message");
    (word(0), word(8))
}

fn policy_of(a: &std::collections::HashMap<String, String>) -> Policy {
    match a.get("policy").map(String::as_str) {
        Some("drop") => Policy::DropOldest,
        _ => Policy::Block,
    }
}

/// Entry point of every child role; does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    let get = |k: &str| a.get(k).map(|v| v.parse::<u64>().unwrap()).unwrap_or(0);
    let name = a.get("topic").cloned().unwrap_or_default();
    match role.as_str() {
        "publisher" => {
            let node = Node::new().unwrap();
            let t = topic(
                &node,
                &name,
                policy_of(&a),
                get("cap") as usize,
                get("history") as usize,
            );
            let mut p = t.publisher().unwrap();
            let mut rng = Rng(get("id") + 1);
            tell("ready");
            let count = if get("count") == 0 {
                u64::MAX
            } else {
                get("count")
            };
            let slow = get("slow") == 1;
            for seq in 0..count {
                let len = HDR + (rng.next() as usize % (MAX - HDR));
                let mut loan = p.loan(len).unwrap();
                fill(&mut loan, get("id"), seq, &mut rng, slow);
                loan.send();
            }
            tell("done");
            wait_parent();
        }
        "flood" => {
            // A `Block` publisher that sends as fast as its subscribers let it, until told.
            let node = Node::new().unwrap();
            // One pin per subscriber: the ring (2) stays above subscribers × pins, so a send
            // never finds every slot held (TopicBuilder::capacity).
            let mut p = node
                .topic::<u64>(&name)
                .capacity(2)
                .max_held(1)
                .send_timeout(Duration::from_secs(60))
                .publisher()
                .unwrap();
            tell("ready");
            let stop = std::thread::spawn(wait_parent);
            let mut seq = 0u64;
            while !stop.is_finished() {
                let mut loan = p.loan().unwrap();
                *loan = seq;
                loan.send();
                seq += 1;
            }
        }
        "idle-subscriber" => {
            let node = Node::new().unwrap();
            let _s = topic(&node, &name, policy_of(&a), get("cap") as usize, 0)
                .subscriber()
                .unwrap();
            tell("ready");
            wait_parent();
        }
        "pod-owner" => {
            let node = Node::new().unwrap();
            let _p = node.topic::<u64>(&name).publisher().unwrap();
            tell("ready");
            wait_parent();
        }
        "intruder" => {
            let node = Node::new();
            let result = node.and_then(|n| n.topic::<u64>(&name).subscriber().map(|_| ()));
            let kind = match result {
                Ok(()) => "opened".to_string(),
                Err(OpenError::PermissionDenied(_)) => "PermissionDenied".to_string(),
                Err(e) => format!("other {e}"),
            };
            tell(&format!("result {kind}"));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn block_loses_nothing_and_keeps_each_publishers_order() {
    let root = test_root("order");
    let node = Node::with_root(&root).unwrap();
    let sub = topic(&node, "order", Policy::Block, 16, 0)
        .subscriber()
        .unwrap();
    let per = 20_000u64;
    let pubs: Vec<_> = (0..2)
        .map(|id| {
            let mut c = ChildRole::spawn(
                "publisher",
                &root,
                &format!("topic=order id={id} count={per} cap=16"),
            );
            c.expect("ready");
            c
        })
        .collect();
    let mut next = [0u64; 2];
    for _ in 0..2 * per {
        let msg = sub
            .receive_timeout(Duration::from_secs(20))
            .expect("no loss under Block");
        let (id, seq) = check(&msg);
        assert_eq!(seq, next[id as usize], "publisher {id} out of order");
        next[id as usize] += 1;
    }
    assert_eq!(next, [per, per]);
    assert_eq!(sub.try_receive().err(), Some(ReceiveError::Empty));
    for c in pubs {
        assert!(c.finish());
    }
}

#[test]
fn drop_oldest_reports_exactly_what_was_missed() {
    let root = test_root("lag");
    let node = Node::with_root(&root).unwrap();
    let sub = topic(&node, "lag", Policy::DropOldest, 16, 0)
        .subscriber()
        .unwrap();
    let total = 1000u64;
    let mut c = ChildRole::spawn(
        "publisher",
        &root,
        &format!("topic=lag id=0 count={total} cap=16 policy=drop"),
    );
    c.expect("done");
    let (mut received, mut missed, mut expect) = (0u64, 0u64, 0u64);
    loop {
        match sub.try_receive() {
            Ok(msg) => {
                let (_, seq) = check(&msg);
                assert_eq!(seq, expect, "a gap must be reported as Lagged first");
                expect += 1;
                received += 1;
            }
            Err(ReceiveError::Lagged(n)) => {
                missed += n;
                expect += n;
            }
            Err(ReceiveError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(received + missed, total);
    assert!(missed > 0 && received <= 16);
    assert_eq!(sub.missed(), missed);
    assert!(c.finish());
}

/// A subscriber that joins a `Block` topic while its publisher (another process) writes as fast
/// as it can is never told of a loss: it starts where the publisher waits for it. (The join
/// races a write of a few hundred nanoseconds, so it joins thousands of times.)
#[test]
fn a_subscriber_joining_a_busy_block_topic_is_told_of_no_loss() {
    let root = test_root("join-race");
    let node = Node::with_root(&root).unwrap();
    let mut c = ChildRole::spawn("flood", &root, "topic=joinrace");
    c.expect("ready");
    let topic = node.topic::<u64>("joinrace").capacity(2).max_held(1);
    let mut lagged = Vec::new();
    for _ in 0..3000 {
        let sub = topic.subscriber().unwrap();
        let mut last = None;
        for _ in 0..4 {
            match sub.receive_timeout(Duration::from_secs(30)) {
                Ok(m) => {
                    assert!(last.is_none_or(|l| *m == l + 1), "a gap after {last:?}");
                    last = Some(*m);
                }
                Err(ReceiveError::Lagged(n)) => lagged.push(n),
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(lagged.is_empty(), "told of losses: {lagged:?}");
    assert!(c.finish());
}

#[test]
fn late_joiner_receives_history() {
    let root = test_root("history");
    let node = Node::with_root(&root).unwrap();
    let mut c = ChildRole::spawn(
        "publisher",
        &root,
        "topic=history id=0 count=100 cap=32 history=10 policy=drop",
    );
    c.expect("done");
    let sub = topic(&node, "history", Policy::DropOldest, 32, 10)
        .subscriber()
        .unwrap();
    let mut seqs = vec![];
    while let Ok(msg) = sub.try_receive() {
        seqs.push(check(&msg).1);
    }
    assert_eq!(seqs, (90..100).collect::<Vec<_>>());
    assert!(c.finish());
}

#[test]
fn killed_subscriber_does_not_hold_a_blocked_publisher() {
    let root = test_root("killsub");
    let node = Node::with_root(&root).unwrap();
    let mut p = topic(&node, "killsub", Policy::Block, 8, 0)
        .publisher()
        .unwrap();
    let mut c = ChildRole::spawn("idle-subscriber", &root, "topic=killsub cap=8");
    c.expect("ready");
    let mut sent = 0;
    while p.try_loan(64).map(|l| l.send()).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 8, "the idle subscriber fills the ring");
    assert_eq!(p.try_loan(64).err(), Some(SendError::Full));
    // The publisher blocks on the subscriber in another thread while the child is killed.
    let waiter = std::thread::spawn(move || {
        let r = p.loan(64).map(|l| l.send());
        (p, r)
    });
    c.kill();
    let (mut p, r) = waiter.join().unwrap();
    assert_eq!(r, Ok(()), "the dead subscriber was detected and reclaimed");
    for _ in 0..100 {
        p.try_loan(64).expect("no dead subscriber left").send();
    }
    // Its entry is free again: two subscribers fit (max_subscribers = 2).
    let t = topic(&node, "killsub", Policy::Block, 8, 0);
    let _a = t.subscriber().unwrap();
    let _b = t.subscriber().unwrap();
}

#[test]
fn killed_publisher_never_shows_a_torn_message() {
    let root = test_root("killpub");
    let node = Node::with_root(&root).unwrap();
    let sub = topic(&node, "killpub", Policy::Block, 8, 0)
        .subscriber()
        .unwrap();
    let mut c = ChildRole::spawn(
        "publisher",
        &root,
        "topic=killpub id=7 count=0 cap=8 slow=1",
    );
    c.expect("ready");
    let mut next = 0;
    for _ in 0..2000 {
        let msg = sub.receive_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(check(&msg), (7, next));
        next += 1;
    }
    // The child spends nearly all its time writing payload bytes: the kill lands mid-write.
    c.kill();
    while let Ok(msg) = sub.try_receive() {
        assert_eq!(check(&msg), (7, next));
        next += 1;
    }
    assert_eq!(sub.try_receive().err(), Some(ReceiveError::Empty));
    // A new publisher takes over; its messages arrive whole.
    let mut c2 = ChildRole::spawn("publisher", &root, "topic=killpub id=8 count=100 cap=8");
    c2.expect("ready");
    for seq in 0..100 {
        let msg = sub.receive_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(check(&msg), (8, seq));
    }
    assert!(c2.finish());
}

#[test]
fn type_mismatch_is_an_error() {
    let root = test_root("types");
    let node = Node::with_root(&root).unwrap();
    let mut c = ChildRole::spawn("pod-owner", &root, "topic=types");
    c.expect("ready");
    assert!(matches!(
        node.topic::<u32>("types").subscriber(),
        Err(OpenError::TypeMismatch { .. })
    ));
    assert!(matches!(
        node.topic_bytes("types").publisher(),
        Err(OpenError::TypeMismatch { .. })
    ));
    assert!(matches!(
        node.topic::<u64>("types")
            .open_mode(OpenMode::CreateNew)
            .publisher(),
        Err(OpenError::AlreadyExists(_))
    ));
    let s = node
        .topic::<u64>("types")
        .open_mode(OpenMode::OpenExisting)
        .subscriber();
    assert!(s.is_ok(), "the right type opens");
    drop(s);
    assert!(c.finish());
    assert!(matches!(
        node.topic::<u64>("types")
            .open_mode(OpenMode::OpenExisting)
            .subscriber(),
        Err(OpenError::NotFound(_))
    ));
    assert!(!root.join("topic_types").exists());
    assert!(
        !root.join("topic_types.lock").exists(),
        "a probe leaves no lock file"
    );
}

#[test]
fn corrupt_garbage_and_truncated_segments_are_errors() {
    let root = test_root("corrupt");
    let node = Node::with_root(&root).unwrap();
    let mut c = ChildRole::spawn("pod-owner", &root, "topic=corrupt");
    c.expect("ready");
    let file = root.join("topic_corrupt");
    let mut bytes = std::fs::read(&file).unwrap();
    // Header corrupted by the test: the configuration's capacity becomes 3 (not a power of two).
    bytes[184 + 8..184 + 16].copy_from_slice(&3u64.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(
        node.topic::<u64>("corrupt").subscriber(),
        Err(OpenError::Corrupt(_))
    ));
    // Another layout version.
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(
        node.topic::<u64>("corrupt").subscriber(),
        Err(OpenError::VersionMismatch { found: 99, .. })
    ));
    assert!(c.finish());

    let mut rng = Rng(5);
    let garbage: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    std::fs::write(root.join("topic_garbage"), &garbage).unwrap();
    assert!(matches!(
        node.topic::<u64>("garbage").publisher(),
        Err(OpenError::Corrupt(_))
    ));
    assert_eq!(
        std::fs::read(root.join("topic_garbage")).unwrap(),
        garbage,
        "left untouched"
    );
    // A creator that died after writing the magic but before publishing: stale, reclaimed.
    let mut half = vec![0u8; 4096];
    half[..8].copy_from_slice(b"RINGBUS\0");
    std::fs::write(root.join("topic_half"), &half).unwrap();
    assert!(node.topic::<u64>("half").publisher().is_ok());
    std::fs::write(root.join("topic_short"), [7u8; 100]).unwrap();
    assert!(matches!(
        node.topic::<u64>("short").publisher(),
        Err(OpenError::Corrupt(_))
    ));
}

#[test]
fn invalid_names_are_rejected() {
    let root = test_root("names");
    let node = Node::with_root(&root).unwrap();
    for bad in ["", "..", "../escape", "a/b", "/etc/passwd", "x.y", "sp ace"] {
        assert!(
            matches!(
                node.topic::<u64>(bad).publisher(),
                Err(OpenError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(!root.parent().unwrap().join("escape").exists());
    assert!(!root.parent().unwrap().join("topic_escape").exists());
}

#[test]
fn segments_are_owner_only_and_other_users_are_refused() {
    let root = test_root("perms");
    // The intruder is this binary run as `nobody`, which only root can arrange; as any other user
    // the modes are still checked below, and the kernel keeps other uids out by itself.
    let as_root = rustix::process::geteuid().is_root();
    let node = Node::with_root(&root).unwrap();
    let _p = node.topic::<u64>("perms").publisher().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("topic_perms")), 0o600);
    assert_eq!(mode(&root.join("topic_perms.lock")), 0o600);
    if !as_root {
        eprintln!("not root: the other-uid intruder part needs root to drop privileges");
        return;
    }
    // Let other users traverse the directory, so only the files' own modes keep them out.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let exe = exe_for_other_users("perms");
    let mut c = ChildRole::spawn_exe(&exe, "intruder", &root, "topic=perms", |cmd| {
        cmd.uid(65534).gid(65534);
    });
    assert_eq!(c.expect("result"), "PermissionDenied");
    assert!(c.finish());
    let _ = std::fs::remove_dir_all(exe.parent().unwrap());
}

#[test]
fn stale_segment_of_a_killed_process_is_reclaimed() {
    let root = test_root("stale");
    let node = Node::with_root(&root).unwrap();
    let mut c = ChildRole::spawn("pod-owner", &root, "topic=stale");
    c.expect("ready");
    c.kill();
    assert!(
        root.join("topic_stale").exists(),
        "the dead owner left its segment"
    );
    // A different type opens: the stale segment is removed and created anew.
    let t = node.topic::<[u8; 3]>("stale");
    let mut p = t.publisher().unwrap();
    let s = t.subscriber().unwrap();
    p.send_copy(&[1, 2, 3]).unwrap();
    assert_eq!(*s.try_receive().unwrap(), [1, 2, 3]);
    drop((p, s));
    assert!(!root.join("topic_stale.lock").exists(), "its lock file too");
    assert!(
        !root.join("topic_stale").exists(),
        "removed when the last participant left"
    );
}
