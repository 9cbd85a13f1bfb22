//! Process identity: a pid plus the process start time, so a reused pid is not mistaken for a live
//! peer.

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
        let start = start_time(pid).ok().flatten().unwrap_or(0);
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
        match start_time(self.pid) {
            // A recorded start of 0 means its owner could not read its own start time: judge by
            // the pid alone rather than call a live process dead.
            Ok(Some(_)) if self.start == 0 => true,
            Ok(Some(s)) => s & 0xffff_ffff == self.start & 0xffff_ffff,
            Ok(None) => false,
            // Cannot tell (out of file descriptors, /proc unreadable…): alive. Judging a live
            // peer dead would let others reclaim its pins while it reads.
            Err(()) => true,
        }
    }
}

/// Start time of `pid` in clock ticks since boot: `Ok(None)` if there is no such process (or it
/// is a zombie: a killed child its parent has not reaped yet is dead for ringbus), `Err(())` if
/// it cannot be told. Allocates nothing (it runs on waiting paths of allocation-free callers).
fn start_time(pid: u32) -> Result<Option<u64>, ()> {
    use std::io::Write;
    let mut path = [0u8; 32];
    let mut w = &mut path[..];
    write!(w, "/proc/{pid}/stat\0").map_err(|_| ())?;
    let path = std::ffi::CStr::from_bytes_until_nul(&path).map_err(|_| ())?;
    let fd = match rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::SRCH => return Ok(None),
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
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            Err(_) => return Err(()),
        }
        if len == buf.len() {
            return Err(());
        }
    }
    let stat = std::str::from_utf8(&buf[..len]).map_err(|_| ())?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or(())? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // rest starts at field 3 (state).
    let state = fields.next().ok_or(())?;
    if state == "Z" || state == "X" {
        return Ok(None);
    }
    fields
        .nth(22 - 4)
        .and_then(|f| f.parse().ok())
        .map(Some)
        .ok_or(())
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
