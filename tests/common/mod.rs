//! Helpers for tests that run roles in child processes: the test binary re-runs itself with
//! `RINGBUS_TEST_CHILD=<role>` and runs only the `child_entry` test, which dispatches on the role.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Environment variable naming the role a child runs.
pub const CHILD_ENV: &str = "RINGBUS_TEST_CHILD";

/// A fresh, private root directory for one test.
pub fn test_root(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbus-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running child role, with line-based stdin/stdout to the parent.
pub struct ChildRole {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChildRole {
    /// Spawns this test binary as `role` with `args` (passed as env `RINGBUS_TEST_ARGS`).
    pub fn spawn(role: &str, root: &PathBuf, args: &str) -> ChildRole {
        Self::spawn_with(role, root, args, |_| {})
    }

    /// As `spawn`, letting the caller adjust the command (e.g. drop privileges).
    pub fn spawn_with(
        role: &str,
        root: &PathBuf,
        args: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> ChildRole {
        Self::spawn_exe(&std::env::current_exe().unwrap(), role, root, args, adjust)
    }

    /// As `spawn_with`, running the test binary found at `exe`.
    pub fn spawn_exe(
        exe: &std::path::Path,
        role: &str,
        root: &PathBuf,
        args: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> ChildRole {
        let mut cmd = Command::new(exe);
        cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .env("RINGBUS_TEST_ARGS", args)
            .env("RINGBUS_ROOT", root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        adjust(&mut cmd);
        // ETXTBSY: an executable just copied (`exe_for_other_users`) may still be open for
        // writing in a child another test thread forked meanwhile, until that child execs. A
        // race of the test harness, not of the code under test: retry a moment later.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.expect("spawn child"),
            }
        };
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        ChildRole {
            child,
            stdin,
            stdout,
        }
    }

    /// Reads lines until one starts with `prefix`; returns its remainder. Panics on EOF (the child
    /// died), so a test fails instead of hanging.
    pub fn expect(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "child exited before printing {prefix:?}");
            // libtest may print "test child_entry ... " before our line: look for the marker.
            let tagged = format!("@@{prefix}");
            if let Some(at) = line.find(&tagged) {
                return line[at + tagged.len()..].trim().to_string();
            }
        }
    }

    /// Sends one line to the child.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (the child's cue to finish) without waiting.
    pub fn close(&mut self) {
        drop(self.stdin.take());
    }

    /// Closes stdin (the child's cue to finish) and waits; returns whether it succeeded.
    pub fn finish(mut self) -> bool {
        drop(self.stdin.take());
        self.child.wait().unwrap().success()
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Parses `key=value` words.
pub fn parse_args(args: &str) -> std::collections::HashMap<String, String> {
    args.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// In a child: the role's argument string.
pub fn child_args() -> String {
    std::env::var("RINGBUS_TEST_ARGS").unwrap_or_default()
}

/// In a child: prints a line for the parent.
pub fn tell(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

/// In a child: blocks until the parent closes stdin (or sends a line).
pub fn wait_parent() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}

/// A checksum for test payloads (FNV-1a, 64 bit).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A copy of this test binary that any user can run (the build directory may sit in a private
/// home directory), for children that drop privileges.
pub fn exe_for_other_users(test: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("ringbus-exe-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// A fresh directory for a durable queue: on disk (not tmpfs), under the target directory.
pub fn data_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("queue-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Patches bytes of a file in place (never truncating: the file may be mapped, and a shrink
/// would SIGBUS its mappers).
pub fn patch(path: &std::path::Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// Byte offsets of a queue ring file with the default 8 producers and 8 consumers, for tests
/// that write a crash state into it, taken from the library's own layout
/// (`ringbus::layout::queue`, ARCHITECTURE.md "Queue segment").
#[allow(dead_code)]
pub mod ring {
    use ringbus::layout::queue as q;
    #[allow(unused_imports)]
    pub use ringbus::layout::queue::{OPEN, SKIP, STALE, TAKEN, WRITING};

    /// Control block.
    pub const CTRL: u64 = q::CTRL as u64;
    /// The append lock word.
    pub const APPEND: u64 = q::CTRL_APPEND as u64;
    /// The boot word.
    pub const BOOT: u64 = q::CTRL_BOOT as u64;
    /// The producer sleepers' bitmap.
    pub const ROOM_WAITERS: u64 = q::CTRL_ROOM_WAITERS as u64;
    /// The producer table.
    pub const PRODUCERS: u64 = q::PRODUCER_TABLE as u64;
    /// A producer or consumer entry's length.
    pub const ENTRY: u64 = q::ENTRY_LEN as u64;
    /// An entry's owner word.
    pub const OWNER: u64 = q::ENTRY_OWNER as u64;
    /// A producer entry's `writing` word.
    pub const PRODUCER_WRITING: u64 = q::PRODUCER_WRITING as u64;
    /// The slots (of a queue with the default 8 producers and 8 consumers).
    pub const SLOTS: u64 = q::slots_offset(8, 8) as u64;
    /// A `u64` queue's slot stride (in memory and durable alike).
    pub const STRIDE: u64 = q::stride(8, false) as u64;
    /// A slot's stale-reader bitmap.
    pub const SLOT_STALE: u64 = q::SLOT_STALE as u64;

    /// A slot state word.
    pub fn state(kind: u64, pos: u64, owner: u64, count: u64) -> u64 {
        q::State::new(kind, pos, owner as usize, count as u32).0
    }

    /// Makes the ring file `ring` (of a `u64` queue) look as if producer entry 1, owned by a
    /// dead process, died in the append lock after marking position 1 WRITING and before
    /// moving the tail.
    pub fn producer_died_in_append_lock(ring: &std::path::Path) {
        let dead_owner: u64 = 1; // pid 0, start 1: dead to everyone
        let entry = PRODUCERS + ENTRY;
        super::patch(ring, entry + OWNER, &dead_owner.to_le_bytes());
        super::patch(ring, entry + PRODUCER_WRITING, &2u64.to_le_bytes()); // position 1 + 1
        super::patch(ring, entry, &q::ENTRY_ACTIVE.to_le_bytes());
        super::patch(ring, SLOTS + STRIDE, &state(WRITING, 1, 1, 0).to_le_bytes());
        super::patch(ring, APPEND, &dead_owner.to_le_bytes());
    }
}

/// Receives and acknowledges every message waiting in `c` (until one `try_receive` finds none):
/// their values, in the order received.
pub fn drain_acked(c: &ringbus::Consumer<u64>) -> Vec<u64> {
    std::iter::from_fn(|| {
        let d = c.try_receive().ok()?;
        let v = *d;
        d.ack().unwrap();
        Some(v)
    })
    .collect()
}

/// Async tests count the process's live registrations: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the caller alone among the tests of its binary that take it.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Long enough that only a hang reaches it.
pub const HANG: std::time::Duration = std::time::Duration::from_secs(60);

/// A multi-threaded tokio runtime of two workers (a spawned task may move between threads).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A current-thread tokio runtime: a client's futures are not `Send` (a client is not `Sync`),
/// so they run in one thread, many tasks at once.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
