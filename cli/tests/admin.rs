//! `ringbus list`, `inspect` and `clean` across real processes: children of this test binary
//! hold a topic, a service and a queue in a private root; one is SIGKILLed; the built `ringbus`
//! binary reads them without joining and removes only what the dead one left.

use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use ringbus::Node;
use serde_json::Value;

/// Set in a child: the root and the suffix of its segments' names.
const HOLDER_ENV: &str = "RINGBUS_ADMIN_TEST_HOLDER";
/// Messages the holder publishes on its topic, and sends on its queue.
const TOPIC_SENT: u64 = 5;
/// The holder's consumer's prefetch: its first receive claims this many messages at once.
const PREFETCH: usize = 2;
/// What the holder prints once it holds everything (libtest may print on the same line first).
const READY: &str = "holder-ready";
const QUEUE_SENT: u64 = 4;

/// The child's part: opens `t-<sfx>`, `s-<sfx>`, `q-<sfx>` with both roles each, publishes
/// `TOPIC_SENT` messages its subscriber never reads, makes one call its server never takes and
/// one that times out, sends `QUEUE_SENT` messages and receives one without acknowledging it (claiming a prefetch of them);
/// then says "ready" and holds everything until its stdin closes.
#[test]
fn holder_child() {
    let Ok(spec) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let (root, sfx) = spec.split_once('|').unwrap();
    let node = Node::with_root(root).unwrap();
    let topic = node.topic::<u64>(&format!("t-{sfx}")).capacity(64);
    let mut publisher = topic.publisher().unwrap();
    let subscriber = topic.subscriber().unwrap();
    for i in 0..TOPIC_SENT {
        publisher.send_copy(&i).unwrap();
    }
    let service = node.service::<u64, u64>(&format!("s-{sfx}"));
    let server = service.server().unwrap();
    let client = service.client().unwrap();
    let pending = client.send(&1).unwrap();
    let timed_out = client.call_timeout(&2, Duration::from_millis(1));
    assert!(timed_out.is_err(), "no server receives: the call times out");
    let queue = node.queue_bytes(&format!("q-{sfx}")).prefetch(PREFETCH);
    let mut producer = queue.producer().unwrap();
    let consumer = queue.consumer().unwrap();
    for i in 0..QUEUE_SENT {
        producer.send(format!("job {i}").as_bytes()).unwrap();
    }
    let held = consumer.receive().unwrap();
    println!("{READY}");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop((held, pending));
    drop((subscriber, publisher, server, producer, consumer));
}

/// A holder child: its process and the pipe that keeps it holding.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout, kept open (libtest writes its summary there at the end).
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(root: &Path, sfx: &str) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "holder_child", "--nocapture", "--test-threads=1"])
            .env(HOLDER_ENV, format!("{}|{sfx}", root.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The child says so once everything is open (after libtest's own words).
        let mut line = String::new();
        while !line.contains(READY) {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "holder {sfx} ended before it was ready");
        }
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it drop its handles and exit; checks it succeeded.
    fn finish(mut self) {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        assert!(self.child.wait().unwrap().success(), "{rest}");
    }
}

/// A fresh private root.
fn root(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbus-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Runs `ringbus <args> --root <root>`; its stdout as JSON (exit code 0 asserted).
fn ringbus_json(root: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args(args)
        .arg("--root")
        .arg(root)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ringbus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ringbus {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The segment `kind` `name` of a list or inspect answer.
fn segment<'a>(answer: &'a Value, kind: &str, name: &str) -> &'a Value {
    answer["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind && s["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {answer}"))
}

/// Every (role, pid, alive) of a segment.
fn members(seg: &Value) -> Vec<(String, u64, bool)> {
    let mut m: Vec<_> = seg["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["role"].as_str().unwrap().to_string(),
                p["pid"].as_u64().unwrap(),
                p["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    m.sort();
    m
}

/// Names and contents of the files in `dir` (nothing writes them while the test reads: the
/// live holder waits on its stdin, the other is dead).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut f: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    f.sort();
    f
}

#[test]
fn list_inspect_and_clean_see_live_and_dead_participants_across_processes() {
    let root = root("admin");
    let live = Holder::start(&root, "live");
    let mut dead = Holder::start(&root, "dead");
    let (live_pid, dead_pid) = (u64::from(live.pid()), u64::from(dead.pid()));
    dead.child.kill().unwrap(); // SIGKILL: it leaves its entries behind
    dead.child.wait().unwrap();

    // list: every segment, with the right participants, alive or dead.
    let list = ringbus_json(&root, &["list"]);
    assert_eq!(list["segments"].as_array().unwrap().len(), 6, "{list}");
    for (sfx, pid, alive) in [("live", live_pid, true), ("dead", dead_pid, false)] {
        let status = if alive { "live" } else { "dead" };
        for (kind, roles) in [
            ("topic", ["publisher", "subscriber"]),
            ("service", ["client", "server"]),
            ("queue", ["consumer", "producer"]),
        ] {
            let seg = segment(&list, kind, &format!("{}-{sfx}", &kind[..1]));
            assert_eq!(seg["status"], status, "{seg}");
            let want: Vec<_> = roles.iter().map(|r| (r.to_string(), pid, alive)).collect();
            assert_eq!(members(seg), want, "{seg}");
        }
    }
    let topic = segment(&list, "topic", "t-live");
    assert_eq!(topic["payload"]["size"], 8);
    assert_eq!(topic["details"]["capacity"], 64);

    // inspect: the subscriber's lag, the service's calls, the queue's depth and in-flight.
    let t = ringbus_json(&root, &["inspect", "t-live", "--interval", "0"]);
    let t = &segment(&t, "topic", "t-live")["details"];
    assert_eq!(t["subscribers"][0]["lag"], TOPIC_SENT, "{t}");
    assert_eq!(t["publishers"][0]["sent"], TOPIC_SENT, "{t}");
    let s = ringbus_json(&root, &["inspect", "s-live", "--interval", "0"]);
    let s = &segment(&s, "service", "s-live")["details"];
    assert_eq!(s["in_flight"], 1, "one call waits for the server: {s}");
    assert_eq!(s["timeouts"], 1, "{s}");
    let q = ringbus_json(&root, &["inspect", "q-live", "--interval", "0"]);
    let q = &segment(&q, "queue", "q-live")["details"];
    assert_eq!(q["sent"], QUEUE_SENT, "{q}");
    // One receive claimed a prefetch of messages: in flight (unacknowledged) until acked.
    assert_eq!(q["in_flight"], PREFETCH, "{q}");
    assert_eq!(q["depth"], QUEUE_SENT - PREFETCH as u64, "{q}");
    assert_eq!(q["consumers"][0]["prefetch"], PREFETCH, "{q}");
    assert_eq!(q["consumers"][0]["in_flight"], PREFETCH, "{q}");

    // Observing changes nothing and registers nobody: the dead ones are still dead, and every
    // byte of every file is as it was.
    let before = files(&root);
    let again = ringbus_json(&root, &["list"]);
    assert_eq!(segment(&again, "topic", "t-dead")["status"], "dead");
    for name in ["t-dead", "s-dead", "q-dead", "t-live", "q-live"] {
        ringbus_json(&root, &["inspect", name, "--interval", "0"]);
    }
    assert_eq!(files(&root), before, "list and inspect change nothing");

    // clean --dry-run names the dead one's segments and changes nothing.
    let dry = ringbus_json(&root, &["clean", "--dry-run"]);
    let mut named: Vec<String> = dry["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["outcome"] == "would remove")
        .map(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        ["queue_q-dead", "service_s-dead", "topic_t-dead"],
        "{dry}"
    );
    assert_eq!(files(&root), before, "a dry run changes nothing");

    // clean removes them (and their lock files) and leaves the live ones.
    let done = ringbus_json(&root, &["clean"]);
    let removed = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["outcome"] == "removed")
        .count();
    assert_eq!(removed, 3, "{done}");
    let left: Vec<String> = files(&root).into_iter().map(|(n, _)| n).collect();
    for kind in ["topic_t", "service_s", "queue_q"] {
        assert!(left.contains(&format!("{kind}-live")), "{left:?}");
        assert!(
            !left.iter().any(|n| n.starts_with(&format!("{kind}-dead"))),
            "{left:?}"
        );
    }
    let after = ringbus_json(&root, &["list"]);
    assert_eq!(after["segments"].as_array().unwrap().len(), 3, "{after}");
    assert_eq!(segment(&after, "queue", "q-live")["status"], "live");

    live.finish();
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn inspecting_a_name_that_does_not_exist_is_an_error_naming_the_fix() {
    let root = root("missing");
    let out = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args(["inspect", "nothing-here", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing-here") && err.contains("ringbus list"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let bad = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args(["inspect", "../etc", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "an invalid name is refused");
    let _ = std::fs::remove_dir_all(&root);
}

/// Starts `ringbus inspect NAME --watch --interval 0.05 EXTRA`; returns it, its stdout and
/// the first line read from it.
fn watch(root: &Path, name: &str, extra: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args(["inspect", name, "--watch", "--interval", "0.05", "--root"])
        .arg(root)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    (child, stdout, first)
}

/// `inspect --watch | head -1`: once the reader of stdout is gone, the watch ends quietly with
/// status 0 (no panic on the broken pipe).
#[test]
fn a_watch_whose_reader_goes_away_ends_quietly() {
    let root = root("watch-pipe");
    let node = Node::with_root(&root).unwrap();
    let publisher = node.topic::<u64>("watched").publisher().unwrap();
    let (child, stdout, first) = watch(&root, "watched", &[]);
    assert!(first.starts_with("topic watched"), "{first}");
    // The reader of the pipe goes away: the next redraw finds it closed.
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    drop(publisher);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_watch_ends_quietly_when_what_it_watches_is_gone() {
    let root = root("watch-gone");
    let node = Node::with_root(&root).unwrap();
    let publisher = node.topic::<u64>("leaving").publisher().unwrap();
    let (child, mut stdout, first) = watch(&root, "leaving", &["--json"]);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(segment(&first, "topic", "leaving")["status"], "live");
    // The last participant leaves: the segment is removed, and the next redraw finds it gone.
    drop(publisher);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("leaving is gone"), "{err}");
    for line in rest.lines() {
        serde_json::from_str::<Value>(line).expect("every line a JSON object");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn clean_leaves_no_lock_file_beside_a_file_it_keeps() {
    let root = root("clean-keeps");
    let node = Node::with_root(&root).unwrap();
    let publisher = node.topic::<u64>("kept").publisher().unwrap();
    std::fs::write(root.join("queue_junk"), [7u8; 300]).unwrap();
    std::fs::set_permissions(
        root.join("queue_junk"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let before: Vec<String> = files(&root).into_iter().map(|(n, _)| n).collect();
    let done = ringbus_json(&root, &["clean"]);
    let outcome = |file: &str| {
        done["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(file))
            .map(|f| f["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(
        outcome("queue_junk").as_deref(),
        Some("unreadable"),
        "{done}"
    );
    assert_eq!(outcome("topic_kept").as_deref(), Some("live"), "{done}");
    let after: Vec<String> = files(&root).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        after, before,
        "clean created or removed a file beside ones it keeps"
    );
    drop(publisher);
    let _ = std::fs::remove_dir_all(&root);
}

/// `inspect NAME --dir DIR` shows a durable topic's offsets and groups; `group reset` moves a
/// stopped group's commits, and is refused while a member lives.
#[test]
fn durable_topics_are_inspected_and_their_groups_reset() {
    let dir = root("durable");
    let topic = Node::in_process().topic::<u64>("events").durable(&dir);
    let mut p = topic.publisher().unwrap();
    for i in 0..10u64 {
        p.send(&i).unwrap();
    }
    let mut member = topic
        .subscriber_at(ringbus::durable::StartAt::Earliest)
        .unwrap()
        .group("billing")
        .unwrap();
    for _ in 0..4 {
        member.try_receive().unwrap();
    }
    member.commit().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ringbus"))
            .args(args)
            .output()
            .unwrap()
    };
    let d = dir.to_str().unwrap();
    let out = run(&["inspect", "events", "--dir", d, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "durable-topic");
    assert_eq!(v["partitions"][0]["end"], 10);
    assert_eq!(v["partitions"][0]["earliest"], 0);
    assert_eq!(v["groups"][0]["name"], "billing");
    assert_eq!(v["groups"][0]["committed"][0], 4);
    assert_eq!(v["groups"][0]["lag"], 6);
    assert_eq!(v["groups"][0]["members"], 1);
    let reset = ["group", "reset", "billing", "--topic", "events", "--dir", d];
    // A live member: refused, nothing changed.
    let out = run(&[&reset[..], &["--to", "earliest"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("live member"));
    drop(member);
    let out = run(&[&reset[..], &["--to", "2", "--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["committed"][0], 2);
    let out = run(&[&reset[..], &["--to", "-1h", "--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["committed"][0], 0);
    // A bad --to is a usage error; an unknown topic an error naming it.
    assert_eq!(
        run(&[&reset[..], &["--to", "soon"]].concat()).status.code(),
        Some(2)
    );
    let out = run(&[
        "group", "reset", "billing", "--topic", "nope", "--dir", d, "--to", "latest",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    std::fs::remove_dir_all(&dir).unwrap();
}
