//! Process identity: a pid plus the process start time, so a reused pid is not mistaken for a live
//! peer.
//!
//! # Telling whether a process lives
//!
//! Chosen once per process, reported by [`liveness_method`]:
//!
//! - [`LivenessMethod::ProcStat`], when `/proc/self/stat` can be read and names this process: the
//!   start time in `/proc/<pid>/stat` must match the recorded one (a reused pid is dead), and a
//!   zombie is dead. A missing `/proc/<pid>` is trusted only once `kill(pid, 0)` confirms there is
//!   no such process (`ESRCH`): with `hidepid` a live process of another user has no entry.
//! - [`LivenessMethod::Signal`], when `/proc` is not mounted, is another file system (a tmpfs over
//!   it), or belongs to another PID namespace: `kill(pid, 0)`, where `ESRCH` is dead and success or
//!   `EPERM` alive. This process then records a start time of 0, which peers read as "judge by the
//!   pid alone". A pid reused by another process, or a zombie not yet reaped, reads as alive: this
//!   fails closed (a dead peer's entry is reclaimed only once its pid is free), never open (a live
//!   peer is never judged dead, so its segment is never replaced under it).
//!
//! Whatever the method, an answer that cannot be had (out of file descriptors, an unreadable
//! entry) is "alive".

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A process as recorded in shared memory: pid and start time (clock ticks since boot, field 22 of
/// `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

impl ProcessId {
    /// The calling process. Its start time is read once and cached; a forked child (whose
    /// cache holds its parent's identity) notices that its pid differs and reads its own. The
    /// check costs one `getpid` system call.
    ///
    /// Handles (publishers, subscribers, producers…) record the identity of the process that
    /// opened them and must not be used across a `fork`: open new ones in the child.
    pub fn current() -> ProcessId {
        // The pid the cache is for (0: none yet) and the start time that goes with it.
        static PID: AtomicU32 = AtomicU32::new(0);
        static START: AtomicU64 = AtomicU64::new(0);
        let pid = rustix::process::getpid().as_raw_pid().unsigned_abs();
        // Acquire: pairs with the Release store of PID below, so the START read next is the one
        // stored for this pid (a parent's value, copied by fork, was stored before it).
        if PID.load(Ordering::Acquire) == pid {
            // Relaxed: ordered by the Acquire load above.
            let start = START.load(Ordering::Relaxed);
            return ProcessId { pid, start };
        }
        // First call in this process (or in this forked child). Two threads that both get here
        // compute and store the same values.
        // Without a /proc of our own, a start time read there could belong to another process:
        // record 0 (judge by the pid alone).
        let start = match liveness_method() {
            LivenessMethod::ProcStat => start_time(pid).ok().flatten().unwrap_or(0),
            LivenessMethod::Signal => 0,
        };
        // Relaxed: published by the Release store of PID.
        START.store(start, Ordering::Relaxed);
        PID.store(pid, Ordering::Release);
        ProcessId { pid, start }
    }

    /// Packs into one word for shared memory: pid in the high 32 bits, low 32 bits of the start time.
    pub fn pack(self) -> u64 {
        (u64::from(self.pid) << 32) | (self.start & 0xffff_ffff)
    }

    /// Inverse of [`ProcessId::pack`] (the start time keeps its low 32 bits).
    pub fn unpack(w: u64) -> ProcessId {
        ProcessId {
            pid: (w >> 32) as u32,
            start: w & 0xffff_ffff,
        }
    }

    /// Whether this process is still running. The calling process is always alive; a pid of 0
    /// (never a user process) is dead.
    pub fn is_alive(self) -> bool {
        if self.pid == 0 {
            return false;
        }
        let me = ProcessId::current();
        if self.pid == me.pid {
            return self.start & 0xffff_ffff == me.start & 0xffff_ffff;
        }
        if liveness_method() == LivenessMethod::Signal {
            return signal_alive(self.pid);
        }
        match proc_stat(self.pid) {
            // A recorded start of 0 means its owner could not read its own start time: judge by
            // the pid alone rather than call a live process dead.
            Ok(Stat::Running { .. }) if self.start == 0 => true,
            Ok(Stat::Running { start, .. }) => start & 0xffff_ffff == self.start & 0xffff_ffff,
            Ok(Stat::Zombie) => false,
            // No entry: gone, unless /proc hides it (`hidepid`) and the signal check finds it.
            Ok(Stat::Missing) => signal_alive(self.pid),
            // Cannot tell (out of file descriptors…): alive. Judging a live peer dead would let
            // others reclaim its pins while it reads.
            Err(()) => true,
        }
    }
}

/// How this process tells whether another one lives (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LivenessMethod {
    /// `/proc/<pid>/stat`: the pid and its start time.
    ProcStat,
    /// `kill(pid, 0)`: the pid alone (`/proc` is unusable in this process).
    Signal,
}

/// The liveness method of this process: [`LivenessMethod::ProcStat`] if `/proc/self/stat` can be
/// read and names this process, else [`LivenessMethod::Signal`]. Decided at the first call and
/// kept (a forked child keeps its parent's: it shares its mounts).
pub fn liveness_method() -> LivenessMethod {
    // 0: not decided yet, 1: ProcStat, 2: Signal.
    static METHOD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    // Relaxed: the value stands alone (no other data is published with it), and threads that
    // decide at the same time decide the same.
    match METHOD.load(Ordering::Relaxed) {
        1 => LivenessMethod::ProcStat,
        2 => LivenessMethod::Signal,
        _ => {
            let pid = rustix::process::getpid().as_raw_pid().unsigned_abs();
            let own = matches!(read_stat(c"/proc/self/stat"), Ok(Stat::Running { pid: p, .. }) if p == pid);
            let (m, v) = if own {
                (LivenessMethod::ProcStat, 1)
            } else {
                (LivenessMethod::Signal, 2)
            };
            // Relaxed: as the load above.
            METHOD.store(v, Ordering::Relaxed);
            m
        }
    }
}

/// Whether process `pid` exists, by `kill(pid, 0)`: `ESRCH` is no; success, `EPERM` (another
/// user's process) or any other answer is yes.
fn signal_alive(pid: u32) -> bool {
    // No process has a pid above i32::MAX (and 0 or a negative value would name a group).
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    /// No such entry (no such process, or one /proc does not show).
    Missing,
    /// A zombie (a killed child its parent has not reaped yet: dead for ringbus).
    Zombie,
    /// A process: its pid (field 1) and start time (field 22, clock ticks since boot).
    Running { pid: u32, start: u64 },
}

/// Start time of `pid` in clock ticks since boot: `Ok(None)` if there is no such process (or it
/// is a zombie), `Err(())` if it cannot be told.
fn start_time(pid: u32) -> Result<Option<u64>, ()> {
    match proc_stat(pid)? {
        Stat::Running { start, .. } => Ok(Some(start)),
        Stat::Missing | Stat::Zombie => Ok(None),
    }
}

/// Reads `/proc/<pid>/stat`. Allocates nothing (it runs on waiting paths of allocation-free
/// callers).
fn proc_stat(pid: u32) -> Result<Stat, ()> {
    use std::io::Write;
    let mut path = [0u8; 32];
    let mut w = &mut path[..];
    write!(w, "/proc/{pid}/stat\0").map_err(|_| ())?;
    read_stat(std::ffi::CStr::from_bytes_until_nul(&path).map_err(|_| ())?)
}

/// Reads and parses the stat file at `path`, `Err(())` if it cannot be told. Allocates nothing.
fn read_stat(path: &std::ffi::CStr) -> Result<Stat, ()> {
    let fd = match rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::SRCH => {
            return Ok(Stat::Missing)
        }
        Err(_) => return Err(()),
    };
    // A stat line is well under 1 KiB (the command name is at most 16 bytes).
    let mut buf = [0u8; 1024];
    let mut len = 0;
    loop {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::SRCH) => return Ok(Stat::Missing),
            Err(_) => return Err(()),
        }
        if len == buf.len() {
            return Err(());
        }
    }
    let stat = std::str::from_utf8(&buf[..len]).map_err(|_| ())?;
    // Field 1, the pid, ends at the first space.
    let pid = stat
        .split_ascii_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or(())?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or(())? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // rest starts at field 3 (state).
    let state = fields.next().ok_or(())?;
    if state == "Z" || state == "X" {
        return Ok(Stat::Zombie);
    }
    let start = fields.nth(22 - 4).and_then(|f| f.parse().ok()).ok_or(())?;
    Ok(Stat::Running { pid, start })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_round_trips() {
        let me = ProcessId::current();
        assert!(me.start > 0);
        assert!(ProcessId::unpack(me.pack()).is_alive());
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId {
            pid: child.id(),
            start: 0,
        };
        child.wait().unwrap();
        assert!(!id.is_alive());
        assert!(!ProcessId::unpack(0).is_alive());
    }

    #[test]
    fn the_signal_check_tells_live_from_gone() {
        assert!(signal_alive(std::process::id()));
        // pid 1 exists in every PID namespace (and may belong to another user: EPERM is alive).
        assert!(signal_alive(1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!signal_alive(pid));
        assert!(!signal_alive(0));
        assert!(!signal_alive(u32::MAX));
        assert!(!signal_alive(i32::MAX as u32 + 1));
    }

    #[test]
    fn this_process_reads_its_own_stat() {
        assert_eq!(liveness_method(), LivenessMethod::ProcStat);
        assert!(matches!(
            read_stat(c"/proc/self/stat"),
            Ok(Stat::Running { pid, .. }) if pid == std::process::id()
        ));
        assert_eq!(read_stat(c"/nonexistent/stat"), Ok(Stat::Missing));
    }

    #[test]
    fn live_child_with_wrong_start_time_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let real = start_time(child.id()).unwrap().unwrap();
        assert!(ProcessId {
            pid: child.id(),
            start: real
        }
        .is_alive());
        assert!(!ProcessId {
            pid: child.id(),
            start: real + 1
        }
        .is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
