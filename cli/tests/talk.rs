//! The talking verbs through the built `ringbus` binary, across real processes: `pub` → `sub`,
//! `send` → `recv --ack` / `--nack`, `call` against a server in this test process, shell
//! completions, `-v` showing the library's log, usage errors (exit 2), and SIGINT, SIGTERM or
//! SIGHUP ending a verb cleanly (exit 0, its handle gone from the segment). Each test has its own
//! root directory. Processes synchronise on what they print (`sub` and `recv` say on stderr when
//! they are attached), never on sleeps; every waiting verb is given a `--timeout` so that a bug
//! fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ringbus::{Bytes, Node, ReceiveError};
use rustix::process::{kill_process, Pid, Signal};

/// A fresh root directory (mode 0700) for one test.
fn root(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbus-talk-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("create the test root");
    dir
}

/// A fresh directory for a durable queue, on disk under the target directory.
fn data_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("talk-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `ringbus ARGS` on root `root`.
fn ringbus(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringbus"));
    cmd.args(args).env("RINGBUS_ROOT", root);
    cmd
}

/// Runs `ringbus ARGS` with `input` on stdin, to completion.
fn run(root: &Path, args: &[&str], input: &str) -> Output {
    let mut child = ringbus(root, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringbus");
    // A child that stops reading early (a refused input) closes the pipe: not an error here.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a run exited with `code`, showing its output if not.
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?}, stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn pub_to_sub_round_trip() {
    let root = root("pubsub");
    let mut sub = ringbus(&root, &["sub", "temps", "--count", "3", "--timeout", "10s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The subscriber says on stderr when it is subscribed: only then may the publisher send
    // (a topic keeps nothing for a subscriber that is not there yet).
    let mut stderr = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "ringbus: subscribed to topic temps");

    let out = run(&root, &["pub", "temps"], "21.5\n21.7\n\n");
    assert_exit(&out, 0, "pub");

    let mut stdout = String::new();
    sub.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = sub.wait().unwrap();
    assert_eq!(status.code(), Some(0), "sub: stderr {rest:?}");
    // The empty line is an empty message.
    assert_eq!(stdout, "21.5\n21.7\n\n");
    assert!(rest.is_empty(), "{rest}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn sub_json_and_hex_carry_the_bytes() {
    let root = root("subjson");
    let mut sub = ringbus(
        &root,
        &[
            "sub",
            "raw",
            "--json",
            "--hex",
            "-n",
            "1",
            "--timeout",
            "10s",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("subscribed"), "{line}");
    // A binary message, written in hex.
    let out = run(&root, &["pub", "raw", "--hex", "-m", "00 ff 0a"], "");
    assert_exit(&out, 0, "pub --hex");
    let out = sub.wait_with_output().unwrap();
    assert_exit(&out, 0, "sub --json --hex");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 0);
    assert_eq!(v["len"], 3);
    assert_eq!(v["hex"], "00ff0a");
    assert_eq!(v["publisher"], 0);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn send_to_recv_ack_round_trip() {
    let root = root("ack");
    // An in-memory queue lives while a process holds it: this test process does (a producer
    // that sends nothing), as an application's consumer or producer would.
    let node = Node::with_root(&root).unwrap();
    let holder = node.queue_bytes("jobs").producer().unwrap();

    let out = run(&root, &["send", "jobs"], "job 1\njob 2\n");
    assert_exit(&out, 0, "send");
    let out = run(
        &root,
        &["recv", "jobs", "--ack", "--count", "2", "--timeout", "10s"],
        "",
    );
    assert_exit(&out, 0, "recv --ack");
    assert_eq!(text(&out.stdout), "job 1\njob 2\n");
    assert_eq!(
        text(&out.stderr).trim_end(),
        "ringbus: consuming from queue jobs"
    );
    // Acknowledged: a second consumer finds nothing (exit 1, nothing printed).
    let out = run(&root, &["recv", "jobs", "--timeout", "200ms"], "");
    assert_exit(&out, 1, "recv after the ack");
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no message from queue jobs"));
    drop(holder);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn send_without_a_holder_fails_and_names_the_fix() {
    let root = root("noholder");
    let out = run(&root, &["send", "nobody", "-m", "x"], "");
    assert_exit(&out, 1, "send to a queue nobody holds");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--durable"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn recv_nack_hands_the_message_back() {
    let root = root("nack");
    let dir = data_dir("nack");
    let d = dir.to_str().unwrap();
    // A durable queue outlives every process: send alone may create it.
    let out = run(&root, &["send", "jobs", "--durable", d], "only\n");
    assert_exit(&out, 0, "send --durable");
    let recv = |extra: &[&str]| {
        let mut args = vec!["recv", "jobs", "--durable", d, "--json", "--timeout", "10s"];
        args.extend_from_slice(extra);
        run(&root, &args, "")
    };
    let out = recv(&["--nack", "--count", "1"]);
    assert_exit(&out, 0, "recv --nack");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["text"], "only");
    assert_eq!(first["deliveries"], 1);
    let out = recv(&["--ack", "--count", "1"]);
    assert_exit(&out, 0, "recv --ack");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["text"], "only");
    assert_eq!(again["position"], first["position"]);
    assert_eq!(again["deliveries"], 2, "the same message, delivered again");
    // Acknowledged now. With -v, the library's log shows the recovery each open of a durable
    // queue whose participants are all gone runs: the CLI has the `tracing` feature on.
    let out = run(
        &root,
        &["-v", "recv", "jobs", "--durable", d, "--timeout", "200ms"],
        "",
    );
    assert_exit(&out, 1, "recv after the ack");
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("recovered a durable queue"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A byte service in this test process that answers each request in upper case, until
/// stopped.
struct Upper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upper {
    fn start(root: &Path, name: &str) -> Upper {
        let node = Node::with_root(root).unwrap();
        let name = name.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let server = node.service::<Bytes, Bytes>(&name).server().unwrap();
            ready_tx.send(()).unwrap();
            // Relaxed: a flag; nothing else is published with it.
            while !stopped.load(Ordering::Relaxed) {
                match server.receive_timeout(Duration::from_millis(20)) {
                    Ok(req) => {
                        let upper = req.to_ascii_uppercase();
                        req.respond(&upper).unwrap();
                    }
                    Err(ReceiveError::Timeout(_)) => {}
                    Err(e) => panic!("server: {e}"),
                }
            }
        });
        ready.recv().expect("the server started");
        Upper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upper {
    fn drop(&mut self) {
        // Relaxed: as above.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn call_prints_each_response() {
    let root = root("call");
    let server = Upper::start(&root, "upper");
    let out = run(
        &root,
        &["call", "upper", "--timeout", "10s"],
        "hello\nworld\n",
    );
    assert_exit(&out, 0, "call");
    assert_eq!(text(&out.stdout), "HELLO\nWORLD\n");
    let out = run(&root, &["call", "upper", "--json", "-m", "hi"], "");
    assert_exit(&out, 0, "call --json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["call"].clone(), v["last"].clone()),
        (0.into(), true.into())
    );
    assert_eq!(v["text"], "HI");
    drop(server);
    // No service: one line naming the fix, exit 1.
    let out = run(&root, &["call", "nosuch", "-m", "x"], "");
    assert_exit(&out, 1, "call without a service");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("start its server"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn completions_are_printed_for_each_shell() {
    let root = root("completions");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&root, &["completions", shell], "");
        assert_exit(&out, 0, shell);
        let script = text(&out.stdout);
        assert!(
            script.contains("recv") && script.contains("nack"),
            "{shell}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_bad_command_line_exits_2() {
    let root = root("usage");
    for args in [
        &["recv", "q", "--ack", "--nack"][..],
        &["sub"],
        &["sub", "t", "--timeout", "soon"],
        &["pub", "t", "--bogus"],
        &["pub", "t", "-m", "x", "--file", "f"],
        &["call"],
        &["completions", "tcsh"],
    ] {
        let out = run(&root, args, "");
        assert_exit(&out, 2, &args.join(" "));
    }
    // A bad input line is an error of the run (1), not of the command line.
    let out = run(&root, &["pub", "t", "--hex", "-m", "zz"], "");
    assert_exit(&out, 1, "pub --hex zz");
    let _ = std::fs::remove_dir_all(&root);
}

// --- Stopping: Ctrl-C (SIGINT), SIGTERM or SIGHUP end a talking verb cleanly (exit 0), and it
// leaves the segment (a segment in memory whose last participant leaves is removed).

/// Sends `sig` to `child`.
fn signal(child: &Child, sig: Signal) {
    kill_process(Pid::from_child(child), sig).expect("signal the child");
}

/// Spawns `ringbus ARGS` with piped stdio and returns it once its first stderr line (the one
/// saying it is attached) is `expect`.
fn spawn_attached(root: &Path, args: &[&str], expect: &str) -> (Child, BufReader<ChildStderr>) {
    let mut child = ringbus(root, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringbus");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), expect, "{}", args.join(" "));
    (child, stderr)
}

/// Waits for `child`, asserting it exited 0 with nothing more on stderr.
fn assert_clean_exit(mut child: Child, mut stderr: impl Read, what: &str) {
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{what}: {status}, stderr {rest:?}");
    assert!(rest.is_empty(), "{what}: stderr {rest:?}");
}

/// The names of the files under `root`.
fn files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `ringbus list --json` of `root`: the participants (role, pid) of segment `name`.
fn participants(root: &Path, name: &str) -> Vec<(String, u64)> {
    let out = run(root, &["list", "--json"], "");
    assert_exit(&out, 0, "list");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .flat_map(|s| s["participants"].as_array().unwrap().clone())
        .map(|p| {
            (
                p["role"].as_str().unwrap().to_string(),
                p["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Returns once `call` is a client of service `name` (as `ringbus list` shows; it says nothing
/// itself), failing after 10 s.
fn wait_for_client(root: &Path, name: &str, call: &Child) {
    let me = ("client".to_string(), u64::from(call.id()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !participants(root, name).contains(&me) {
        assert!(
            std::time::Instant::now() < deadline,
            "call never joined service {name}"
        );
    }
}

#[test]
fn sigint_ends_sub_cleanly_and_it_leaves_the_topic() {
    let root = root("sigsub");
    let (sub, stderr) = spawn_attached(
        &root,
        &["sub", "temps"],
        "ringbus: subscribed to topic temps",
    );
    assert!(files(&root).contains(&"topic_temps".to_string()));
    signal(&sub, Signal::INT);
    assert_clean_exit(sub, stderr, "sub after SIGINT");
    // It was the topic's only participant: leaving removed the segment (and its lock file).
    assert_eq!(files(&root), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn sighup_ends_recv_cleanly_and_it_leaves_the_queue() {
    let root = root("sigrecv");
    // No --timeout: only the signal ends it. The queue is created by `recv` and held by nothing
    // else.
    let (recv, stderr) = spawn_attached(
        &root,
        &["recv", "jobs"],
        "ringbus: consuming from queue jobs",
    );
    assert!(!files(&root).is_empty());
    signal(&recv, Signal::HUP);
    assert_clean_exit(recv, stderr, "recv after SIGHUP");
    assert_eq!(files(&root), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn sigterm_ends_pub_blocked_on_stdin_and_it_leaves_the_topic() {
    let root = root("sigpub");
    let node = Node::with_root(&root).unwrap();
    let sub = node.topic_bytes("temps").subscriber().unwrap();
    let mut publisher = ringbus(&root, &["pub", "temps"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One line through proves `pub` is attached (its signal handlers are installed before it
    // opens the topic); the pipe then stays open, so `pub` waits on stdin.
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let got = sub.receive_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(&*got, b"first");
    drop(got);
    let pid = u64::from(publisher.id());
    assert!(participants(&root, "temps").contains(&("publisher".to_string(), pid)));
    signal(&publisher, Signal::TERM);
    let stderr = publisher.stderr.take().unwrap();
    assert_clean_exit(publisher, stderr, "pub after SIGTERM");
    // Only this test's subscriber is left: no publisher, dead or alive.
    assert_eq!(
        participants(&root, "temps"),
        vec![("subscriber".to_string(), u64::from(std::process::id()))]
    );
    drop(stdin);
    drop(sub);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn sigint_ends_call_waiting_for_a_server_and_it_leaves_the_service() {
    let root = root("sigcall");
    let mut call = ringbus(
        &root,
        &[
            "call",
            "later",
            "--wait-for-server",
            "--timeout",
            "60s",
            "-m",
            "x",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // `call` says nothing when attached: watch for its client in the service's participants
    // (it installs its signal handlers before it opens the service).
    wait_for_client(&root, "later", &call);
    signal(&call, Signal::INT);
    let stderr = call.stderr.take().unwrap();
    assert_clean_exit(call, stderr, "call after SIGINT");
    assert_eq!(files(&root), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn call_waits_for_a_server_that_comes_later() {
    let root = root("callwait");
    let call = ringbus(
        &root,
        &[
            "call",
            "late",
            "--wait-for-server",
            "--timeout",
            "10s",
            "-m",
            "hi",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_client(&root, "late", &call);
    let server = Upper::start(&root, "late");
    let out = call.wait_with_output().unwrap();
    assert_exit(&out, 0, "call --wait-for-server");
    assert_eq!(text(&out.stdout), "HI\n");
    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_input_longer_than_the_largest_message_fails_without_reading_it_all() {
    let root = root("too-long");
    // 1 MiB of one line against 64-byte messages: refused once 66 bytes are read.
    let long = "x".repeat(1 << 20);
    let out = run(&root, &["pub", "long", "--max-size", "64"], &long);
    assert_exit(&out, 1, "pub of a too long line");
    let err = text(&out.stderr);
    assert!(err.contains("longer than 64 bytes"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = run(
        &root,
        &["pub", "long", "--max-size", "64", "--whole"],
        &"y".repeat(65),
    );
    assert_exit(&out, 1, "pub --whole of a too long input");
    // A line of exactly the largest size goes through.
    let out = run(&root, &["pub", "long", "--max-size", "64"], &"z".repeat(64));
    assert_exit(&out, 0, "pub of a line of the largest size");
    assert!(
        files(&root).is_empty(),
        "every pub left: {:?}",
        files(&root)
    );
    let _ = std::fs::remove_dir_all(&root);
}
