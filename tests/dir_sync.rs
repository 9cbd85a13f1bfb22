//! A directory ringbus creates for durable data (a durable queue's directory, its parents, its
//! `queue_N.log/`) is made durable: its parent is fsynced after the `mkdir`, so a machine crash
//! cannot lose the directory that synced records live in. Checked by tracing the system calls of a
//! child process with strace (skipped where strace is missing or cannot trace, except under CI,
//! whose script installs it); the crash itself is not tested.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{data_dir, CHILD_ENV};
use ringbus::{Node, SyncPolicy};

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    match role.as_str() {
        "open-durable" => {
            let dir = PathBuf::from(common::child_args());
            let node = Node::in_process();
            let mut p = node
                .queue::<u64>("sync")
                .durable(&dir)
                .sync_policy(SyncPolicy::Always)
                .producer()
                .unwrap();
            p.send(&1).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-qq", "-e", "trace=none", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn new_durable_directories_are_synced_into_their_parents() {
    if !strace_works() {
        // CI installs strace (.ci/run): there, a missing tracer is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing or cannot trace under CI"
        );
        eprintln!("strace is missing or cannot trace here: skipped");
        return;
    }
    let top = data_dir("dirsync");
    // Two levels missing: the test's directory and the durable directory in it.
    let dir = top.join("durable");
    std::fs::create_dir_all(top.parent().unwrap()).unwrap();
    let trace = PathBuf::from(format!("{}.strace", top.display()));
    let status = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=mkdir,mkdirat,fsync", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "open-durable")
        .env("RINGBUS_TEST_ARGS", &dir)
        .status()
        .unwrap();
    assert!(status.success());
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let _ = std::fs::remove_file(&trace);
    let made = |d: &Path| {
        let quoted = format!("\"{}\"", d.display());
        lines
            .iter()
            .position(|l| l.contains("mkdir") && l.contains(&quoted) && l.ends_with("= 0"))
    };
    for d in [top.clone(), dir.clone(), dir.join("queue_sync.log")] {
        let at = made(&d).unwrap_or_else(|| panic!("no mkdir of {}:\n{lines:#?}", d.display()));
        let parent = format!("<{}>)", d.parent().unwrap().display());
        assert!(
            lines[at..]
                .iter()
                .any(|l| l.contains("fsync(") && l.contains(&parent) && l.ends_with("= 0")),
            "the parent of {} is not synced after its mkdir:\n{lines:#?}",
            d.display()
        );
    }
    let _ = std::fs::remove_dir_all(&top);
}
