//! Process identity and liveness across `fork` and without `/proc`.

mod common;

use ringbus::ProcessId;

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
