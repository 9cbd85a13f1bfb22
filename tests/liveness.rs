//! Process identity and liveness across `fork` and without `/proc`.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{child_args, parse_args, tell, test_root, wait_parent, ChildRole};
use ringbus::testing::{liveness_method, LivenessMethod};
use ringbus::{Node, OpenError, OpenMode, ProcessId};

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(common::CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    match role.as_str() {
        // Runs with a tmpfs over /proc: joins the parent's topic, which must not be taken for
        // stale, and receives what the parent sends.
        "procless-subscriber" => {
            let proc_entries = std::fs::read_dir("/proc").map_or(0, |d| d.count());
            tell(&format!("proc {proc_entries}"));
            tell(&format!("method {:?}", liveness_method()));
            let node = Node::new().unwrap();
            let r = node
                .topic::<u64>(&a["topic"])
                .open_mode(OpenMode::OpenExisting)
                .subscriber();
            let s = match r {
                Ok(s) => s,
                Err(OpenError::NotFound(_)) => {
                    tell("join NotFound");
                    return;
                }
                Err(e) => {
                    tell(&format!("join other {e}"));
                    return;
                }
            };
            tell("join ok");
            match s.receive_timeout(Duration::from_secs(20)) {
                Ok(v) => tell(&format!("got {}", *v)),
                Err(e) => tell(&format!("got error {e}")),
            }
            wait_parent();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn this_process_uses_proc() {
    assert_eq!(liveness_method(), LivenessMethod::ProcStat);
    assert!(ProcessId::current().start > 0);
}

#[test]
fn a_process_without_proc_joins_a_live_segment() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: a private mount namespace needs CAP_SYS_ADMIN; skipped");
        return;
    }
    let root = test_root("procless");
    let node = Node::with_root(&root).unwrap();
    let mut p = node.topic::<u64>("live").publisher().unwrap();
    let mut c = ChildRole::spawn_with("procless-subscriber", &root, "topic=live", |cmd| {
        // SAFETY: runs in the forked child before exec; it only makes system calls (unshare,
        // mount) with static C strings, allocating nothing and taking no lock.
        unsafe {
            cmd.pre_exec(|| {
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                // A private mount namespace, so the tmpfs over /proc stays in the child.
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"none".as_ptr(),
                    c"/proc".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ))
            });
        }
    });
    // The child sees an empty /proc and knows it.
    assert_eq!(c.expect("proc"), "0");
    assert_eq!(c.expect("method"), "Signal");
    // Our publisher lives: the child joins our segment instead of judging it stale.
    assert_eq!(c.expect("join"), "ok");
    // The same segment: what we send, it receives.
    p.send_copy(&42).unwrap();
    assert_eq!(c.expect("got"), "42");
    assert!(c.finish());
    drop(p);
    let _ = std::fs::remove_dir_all(&root);
}

/// Exit codes of the forked child.
const OK: i32 = 0;
const WRONG_PID: i32 = 10;
const OWN_ID_DEAD: i32 = 11;
const PARENT_DEAD: i32 = 12;

#[test]
fn a_forked_child_has_its_own_process_id() {
    let parent = ProcessId::current();
    assert_eq!(parent.pid, std::process::id());
    // SAFETY: the child only makes system calls (getpid, open/read of /proc, kill) on stack
    // buffers, with no allocation and no lock that another thread of this process could have
    // held at the fork, then leaves with `_exit` (no destructors, no atexit handlers).
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let code = {
            let me = ProcessId::current();
            // SAFETY: getpid has no preconditions.
            let real = unsafe { libc::getpid() } as u32;
            if me.pid != real {
                WRONG_PID
            } else if !ProcessId::unpack(me.pack()).is_alive() {
                OWN_ID_DEAD
            } else if !ProcessId::unpack(parent.pack()).is_alive() {
                PARENT_DEAD
            } else {
                OK
            }
        };
        // SAFETY: ends the child at once, as fork's child must (see above).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above, into a local.
    let got = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(got, child);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    match libc::WEXITSTATUS(status) {
        OK => {}
        WRONG_PID => panic!("the forked child's ProcessId::current() kept its parent's pid"),
        OWN_ID_DEAD => panic!("the forked child judged its own identity dead"),
        PARENT_DEAD => panic!("the forked child judged its live parent dead"),
        other => panic!("child exited with {other}"),
    }
    // The parent's identity is unchanged.
    assert_eq!(ProcessId::current(), parent);
}
