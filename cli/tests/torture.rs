//! A short seeded run of `ringbus torture all` (the built binary): processes SIGKILLed at random
//! moments and restarted, in every scenario; nothing torn, wrong, lost or hung, and no child
//! that exited on its own.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Trials per scenario (at least 20 are asserted).
const TRIALS: &str = "50";

/// Longest the run may take before the test fails (it takes well under a minute in a debug
/// build on 2 cores).
const BOUND: Duration = Duration::from_secs(300);

/// The text of the JSON object of `scenario` (up to the next scenario's).
fn section<'a>(json: &'a str, scenario: &str) -> &'a str {
    let key = format!("{{\"scenario\":\"{scenario}\"");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {scenario} in {json}"));
    let rest = &json[at + key.len()..];
    let end = rest.find("{\"scenario\":").unwrap_or(rest.len());
    &rest[..end]
}

/// An integer field of a section.
fn field(section: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let at = section
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {section}"));
    section[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {section}"))
}

#[test]
fn a_short_seeded_torture_run_finds_nothing() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringbus"))
        .args([
            "torture", "all", "--trials", TRIALS, "--seed", "1", "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringbus torture");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let errs = std::thread::spawn(move || {
            let _ = stderr.read_to_string(&mut err);
            err
        });
        let _ = stdout.read_to_string(&mut out);
        let err = errs.join().unwrap_or_default();
        let status = child.wait().expect("wait for ringbus torture");
        let _ = tx.send((status, out, err));
    });
    let (status, json, stderr) = match rx.recv_timeout(BOUND) {
        Ok(r) => r,
        Err(_) => {
            // Its children die with it (they are tied to their parent).
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            panic!("ringbus torture did not finish within {BOUND:?}");
        }
    };
    let json = json.trim();
    assert!(
        json.starts_with('{') && json.ends_with('}'),
        "not one JSON object: {json}\nstderr: {stderr}"
    );
    assert!(json.contains("\"seed\":1,"), "{json}");
    for scenario in [
        "topic",
        "service",
        "queue",
        "durable-queue",
        "durable-topic",
    ] {
        let s = section(json, scenario);
        assert!(field(s, "trials") >= 20, "{scenario}: too few trials: {s}");
        assert!(field(s, "kills") >= 20, "{scenario}: too few kills: {s}");
        assert!(
            field(s, "verified") > 0,
            "{scenario}: nothing verified: {s}"
        );
        for name in ["torn", "wrong", "lost", "hangs", "unexpected_exits"] {
            assert_eq!(field(s, name), 0, "{scenario}: {name}: {s}");
        }
        assert!(s.contains("\"aborted\":null"), "{scenario} aborted: {s}");
    }
    assert!(json.contains("\"ok\":true"), "{json}");
    assert!(
        status.success(),
        "exit status {status}: {json}\nstderr: {stderr}"
    );
}
