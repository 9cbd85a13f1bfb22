//! The parent's side: child processes, their lines, kills, bounded waits.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Kind, Rng, Scenario, Tally, HANG_BOUND};
use crate::bench::process::spawn_piped;
use crate::bench::util::{err, Result};

/// Bytes of a child's stderr kept for the report (its end).
const STDERR_KEEP: usize = 4096;

/// A line from a child (`None`: its stdout closed, i.e. it exited).
struct Event {
    uid: u64,
    line: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Killed,
    Exited,
}

struct Kid {
    role: &'static str,
    slot: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    state: State,
}

/// Why a wait for a child ended without what it waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Nothing within the bound.
    Timeout,
    /// The child is gone (killed or exited; an exit on its own is already counted).
    Died,
}

/// A `fail` line of a child: `fail <variant> <t_send_ns> <t_done_ns> <text>`.
#[derive(Clone, Debug)]
pub struct Fail {
    /// Who reported it.
    pub who: String,
    /// The error variant.
    pub variant: String,
    /// When the operation started (`CLOCK_MONOTONIC` ns).
    pub start: u64,
    /// When it failed.
    pub end: u64,
    /// The error text.
    pub text: String,
}

/// The children of one scenario.
pub struct Harness<'t> {
    exe: PathBuf,
    scenario: Scenario,
    base_args: Vec<String>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    kids: HashMap<u64, Kid>,
    eof: HashSet<u64>,
    next_uid: u64,
    next_token: u64,
    stash: Vec<(u64, String)>,
    verified: HashMap<u64, u64>,
    /// The scenario's figures.
    pub tally: &'t mut Tally,
    /// `fail` lines, for the scenario to judge.
    pub fails: Vec<Fail>,
    /// The scenario's PRNG.
    pub rng: Rng,
    /// Hangs counted when the current trial began.
    trial_hangs: u64,
    /// Trials in a row that ended with a hang.
    consecutive_hangs: u32,
}

/// What a scenario does after a trial (see [`Harness::end_trial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTrial {
    /// Nothing hung: go on.
    Next,
    /// The trial hung: kill and restart every child, then go on.
    Restart,
    /// Too many trials in a row hung: stop the scenario (recorded in the tally).
    Stop,
}

impl<'t> Harness<'t> {
    /// A harness whose children get `base_args` (`key=value` words) besides their own.
    pub fn new(
        scenario: Scenario,
        base_args: Vec<String>,
        tally: &'t mut Tally,
        seed: u64,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        Ok(Harness {
            exe: std::env::current_exe()
                .map_err(|e| err(format!("cannot find this executable: {e}")))?,
            scenario,
            base_args,
            tx,
            rx,
            kids: HashMap::new(),
            eof: HashSet::new(),
            next_uid: 1,
            next_token: 1,
            stash: Vec::new(),
            verified: HashMap::new(),
            tally,
            fails: Vec::new(),
            trial_hangs: 0,
            consecutive_hangs: 0,
            rng: Rng::new(seed),
        })
    }

    /// A child's name for reports: `role slot #incarnation (pid)`.
    pub fn name(&self, uid: u64) -> String {
        match self.kids.get(&uid) {
            Some(k) => format!("{} {} #{uid} (pid {})", k.role, k.slot, k.child.id()),
            None => format!("#{uid}"),
        }
    }

    /// Starts a child `role` for `slot` and returns its uid, which is also its incarnation
    /// number (increasing over the scenario). Does not wait for it.
    pub fn spawn(&mut self, role: &'static str, slot: usize, extra: &[String]) -> Result<u64> {
        let uid = self.next_uid;
        self.next_uid += 1;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("torture-child")
            .arg(self.scenario.name())
            .arg(role)
            .arg(format!("slot={slot}"))
            .arg(format!("inc={uid}"))
            .arg(format!("parent={}", std::process::id()))
            .arg(format!("seed={}", self.rng.next_u64()))
            .args(&self.base_args)
            .args(extra);
        let (mut child, stdin, stdout) =
            spawn_piped(&mut cmd, Stdio::piped(), &format!("a {role}"))?;
        let mut stderr_pipe = child
            .stderr
            .take()
            .ok_or_else(|| err("child without stderr"))?;
        let tx = self.tx.clone();
        thread::Builder::new()
            .name(format!("torture-out-{uid}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx
                        .send(Event {
                            uid,
                            line: Some(line),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send(Event { uid, line: None });
            })
            .map_err(|e| err(format!("cannot start a reader thread: {e}")))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let keep = stderr.clone();
        let stderr_thread = thread::Builder::new()
            .name(format!("torture-err-{uid}"))
            .spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stderr_pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    k.extend_from_slice(&buf[..n]);
                    if k.len() > 2 * STDERR_KEEP {
                        let cut = k.len() - STDERR_KEEP;
                        k.drain(..cut);
                    }
                }
            })
            .map_err(|e| err(format!("cannot start a reader thread: {e}")))?;
        self.kids.insert(
            uid,
            Kid {
                role,
                slot,
                child,
                stdin,
                stderr,
                stderr_thread: Some(stderr_thread),
                state: State::Running,
            },
        );
        Ok(uid)
    }

    /// Whether the child is running (not killed, not exited as far as we know).
    pub fn running(&self, uid: u64) -> bool {
        self.kids
            .get(&uid)
            .is_some_and(|k| k.state == State::Running)
    }

    /// Sends one line to a child; false if it cannot be written (the child is gone).
    pub fn send(&mut self, uid: u64, line: &str) -> bool {
        let Some(stdin) = self.kids.get_mut(&uid).and_then(|k| k.stdin.as_mut()) else {
            return false;
        };
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .is_ok()
    }

    /// SIGKILLs a running child and reaps it. A child found to have exited already counts as
    /// an unexpected exit.
    pub fn kill(&mut self, uid: u64) {
        let Some(kid) = self.kids.get_mut(&uid) else {
            return;
        };
        if kid.state != State::Running {
            return;
        }
        let _ = kid.child.kill();
        let status = kid.child.wait();
        kid.stdin = None;
        match status {
            Ok(s) if s.signal() == Some(libc_sigkill()) => {
                kid.state = State::Killed;
                self.tally.kills += 1;
            }
            other => {
                let what = match other {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                self.unexpected_exit(uid, &what);
            }
        }
        self.stash.retain(|(u, _)| *u != uid);
    }

    /// Records a child that exited on its own.
    fn unexpected_exit(&mut self, uid: u64, status: &str) {
        let name = self.name(uid);
        let Some(kid) = self.kids.get_mut(&uid) else {
            return;
        };
        kid.state = State::Exited;
        kid.stdin = None;
        if let Some(t) = kid.stderr_thread.take() {
            // The process is gone: its stderr closes (bounded anyway by the join of a
            // thread whose pipe has no other writer).
            let _ = t.join();
        }
        let stderr = {
            let k = kid.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let start = k.len().saturating_sub(STDERR_KEEP);
            String::from_utf8_lossy(&k[start..]).trim().to_string()
        };
        let stderr = if stderr.is_empty() {
            "(empty)".to_string()
        } else {
            stderr
        };
        self.tally.add(
            Kind::Unexpected,
            1,
            &format!("{name} exited on its own ({status}); stderr: {stderr}"),
        );
    }

    /// A child's stdout closed while we had not killed it: it exited (or closed stdout, which
    /// ours never do; then it is killed).
    fn on_eof(&mut self, uid: u64) {
        self.eof.insert(uid);
        let Some(kid) = self.kids.get_mut(&uid) else {
            return;
        };
        if kid.state != State::Running {
            return;
        }
        let t0 = Instant::now();
        let status = loop {
            match kid.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if t0.elapsed() < Duration::from_secs(2) => {
                    thread::sleep(Duration::from_millis(1));
                }
                Ok(None) => {
                    let _ = kid.child.kill();
                    let _ = kid.child.wait();
                    break "closed its stdout and kept running; killed".to_string();
                }
                Err(e) => break format!("wait failed: {e}"),
            }
        };
        self.unexpected_exit(uid, &status);
    }

    fn handle(&mut self, ev: Event) {
        let Some(line) = ev.line else {
            self.on_eof(ev.uid);
            return;
        };
        let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let kind = match word {
            "torn" => Some(Kind::Torn),
            "wrong" => Some(Kind::Wrong),
            "lost" => Some(Kind::Lost),
            "hang" => Some(Kind::Hang),
            _ => None,
        };
        if let Some(kind) = kind {
            let text = format!("{}: {rest}", self.name(ev.uid));
            self.tally.add(kind, 1, &text);
            return;
        }
        match word {
            "n" => {
                if let Ok(n) = rest.trim().parse::<u64>() {
                    let v = self.verified.entry(ev.uid).or_insert(0);
                    *v = (*v).max(n);
                }
            }
            "fail" => {
                let mut w = rest.splitn(4, ' ');
                let variant = w.next().unwrap_or("?").to_string();
                let start = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let end = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let text = w.next().unwrap_or("").to_string();
                let who = self.name(ev.uid);
                self.fails.push(Fail {
                    who,
                    variant,
                    start,
                    end,
                    text,
                });
            }
            _ => {
                if self.running(ev.uid) {
                    self.stash.push((ev.uid, line));
                }
            }
        }
    }

    /// Handles the next event, waiting for it until `deadline` at the latest: `Timeout` if
    /// none came, `Died` if no child can send any more.
    fn next_event(&mut self, deadline: Instant) -> std::result::Result<(), Miss> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Miss::Timeout);
        }
        match self.rx.recv_timeout(deadline - now) {
            Ok(ev) => {
                self.handle(ev);
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Err(Miss::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(Miss::Died),
        }
    }

    /// Handles events until `deadline` (the children run meanwhile).
    pub fn pump_until(&mut self, deadline: Instant) {
        while self.next_event(deadline).is_ok() {}
    }

    /// Waits for a line of child `uid` whose first word is `word` and whose words satisfy
    /// `pred`; returns the words after `word`.
    pub fn await_line(
        &mut self,
        uid: u64,
        word: &str,
        pred: impl Fn(&[&str]) -> bool,
        deadline: Instant,
    ) -> std::result::Result<Vec<String>, Miss> {
        loop {
            let found = self.stash.iter().position(|(u, l)| {
                let words: Vec<&str> = l.split_whitespace().collect();
                *u == uid && words.first() == Some(&word) && pred(&words[1..])
            });
            if let Some(i) = found {
                let (_, line) = self.stash.remove(i);
                return Ok(line.split_whitespace().skip(1).map(String::from).collect());
            }
            if !self.running(uid) {
                return Err(Miss::Died);
            }
            self.next_event(deadline)?;
        }
    }

    /// Waits for `ready` from a child (its handle is open).
    pub fn await_ready(&mut self, uid: u64) -> std::result::Result<(), Miss> {
        let deadline = Instant::now() + HANG_BOUND;
        self.await_line(uid, "ready", |_| true, deadline)
            .map(|_| ())
    }

    /// Asks a child to report once it has made `k` more units of progress; returns the token to
    /// wait for with [`Harness::await_progress`].
    pub fn watch(&mut self, uid: u64, k: u64) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.send(uid, &format!("watch {token} {k}"));
        token
    }

    /// Waits for the progress report `token` of child `uid`.
    pub fn await_progress(
        &mut self,
        uid: u64,
        token: u64,
        deadline: Instant,
    ) -> std::result::Result<(), Miss> {
        let t = token.to_string();
        self.await_line(
            uid,
            "progressed",
            |w| w.first() == Some(&t.as_str()),
            deadline,
        )
        .map(|_| ())
    }

    /// Waits until any of `(uid, token)` reports; Ok with the index of the first, else the
    /// reason of the last miss.
    pub fn await_any_progress(
        &mut self,
        watches: &[(u64, u64)],
        deadline: Instant,
    ) -> std::result::Result<usize, Miss> {
        loop {
            for (i, &(uid, token)) in watches.iter().enumerate() {
                let t = token.to_string();
                let hit = self.stash.iter().position(|(u, l)| {
                    let mut w = l.split_whitespace();
                    *u == uid && w.next() == Some("progressed") && w.next() == Some(t.as_str())
                });
                if let Some(at) = hit {
                    self.stash.remove(at);
                    return Ok(i);
                }
            }
            if !watches.iter().any(|&(u, _)| self.running(u)) {
                return Err(Miss::Died);
            }
            self.next_event(deadline)?;
        }
    }

    /// Counts a hang (`what` happened to child `uid` within the bound).
    pub fn hang(&mut self, uid: u64, what: &str) {
        let text = format!("{}: {what}", self.name(uid));
        self.tally.add(Kind::Hang, 1, &text);
    }

    /// Kills every running child, reaps it and handles every line they left.
    pub fn shutdown(&mut self) {
        let uids: Vec<u64> = self.kids.keys().copied().collect();
        for uid in &uids {
            self.kill(*uid);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while uids.iter().any(|u| !self.eof.contains(u)) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(ev) => self.handle(ev),
                Err(_) => break,
            }
        }
        self.tally.verified += self.verified.values().sum::<u64>();
        self.verified.clear();
        // Reader threads of killed children end with their pipes; forget the handles.
        for (_, mut kid) in self.kids.drain() {
            if let Some(t) = kid.stderr_thread.take() {
                let _ = t.join();
            }
        }
        self.stash.clear();
    }

    /// The directory argument `key=path`.
    pub fn path_arg(key: &str, p: &Path) -> String {
        format!("{key}={}", p.display())
    }
}

impl Drop for Harness<'_> {
    fn drop(&mut self) {
        for kid in self.kids.values_mut() {
            if kid.state == State::Running {
                let _ = kid.child.kill();
                let _ = kid.child.wait();
            }
        }
    }
}

fn libc_sigkill() -> i32 {
    rustix::process::Signal::KILL.as_raw()
}

/// A place for one child of a role: which child fills it now.
#[derive(Debug)]
pub struct Slot {
    /// The child's role (its `torture-child` verb).
    pub role: &'static str,
    /// Index among the slots of that role.
    pub index: usize,
    /// The child filling it, if any.
    pub uid: Option<u64>,
}

impl Slot {
    /// An empty slot.
    pub fn new(role: &'static str, index: usize) -> Slot {
        Slot {
            role,
            index,
            uid: None,
        }
    }
}

/// One replacement in this many is itself killed during start-up.
const STARTUP_KILL_ONE_IN: u64 = 8;

/// Longest time after spawning before a start-up kill.
const STARTUP_KILL_WITHIN_US: u64 = 3000;

impl Harness<'_> {
    /// Fills `slot` with a new child and waits until it has opened its handle. One time in
    /// [`STARTUP_KILL_ONE_IN`], a first child is killed within its first 3 ms (during start-up
    /// or join) and replaced. False if the child did not get ready (a hang or an exit, counted).
    pub fn start(&mut self, slot: &mut Slot) -> Result<bool> {
        if self.rng.one_in(STARTUP_KILL_ONE_IN) {
            let uid = self.spawn(slot.role, slot.index, &[])?;
            let d = Duration::from_micros(self.rng.below(STARTUP_KILL_WITHIN_US));
            self.pump_until(Instant::now() + d);
            self.kill(uid);
        }
        let uid = self.spawn(slot.role, slot.index, &[])?;
        slot.uid = Some(uid);
        match self.await_ready(uid) {
            Ok(()) => Ok(true),
            Err(Miss::Timeout) => {
                self.hang(uid, "did not open its handle within 10 s");
                self.kill(uid);
                slot.uid = None;
                Ok(false)
            }
            Err(Miss::Died) => {
                slot.uid = None;
                Ok(false)
            }
        }
    }

    /// Starts every slot that has no running child. False if one did not get ready.
    pub fn fill(&mut self, slots: &mut [Slot]) -> Result<bool> {
        let mut ok = true;
        for s in slots.iter_mut() {
            if !s.uid.is_some_and(|u| self.running(u)) {
                ok &= self.start(s)?;
            }
        }
        Ok(ok)
    }

    /// Kills the child of `slot` (if running) and empties the slot.
    pub fn kill_slot(&mut self, slot: &mut Slot) {
        if let Some(uid) = slot.uid.take() {
            self.kill(uid);
        }
    }

    /// The running child of a slot.
    pub fn live(&self, slot: &Slot) -> Option<u64> {
        slot.uid.filter(|&u| self.running(u))
    }

    /// Marks the start of a trial (for [`Harness::end_trial`]).
    pub fn begin_trial(&mut self) {
        self.trial_hangs = self.tally.hangs;
    }

    /// Counts the trial just verified and says what to do about a hang in it.
    pub fn end_trial(&mut self) -> AfterTrial {
        self.tally.trials += 1;
        crate::bench::progress::advance(1);
        if self.tally.hangs == self.trial_hangs {
            self.consecutive_hangs = 0;
            return AfterTrial::Next;
        }
        self.consecutive_hangs += 1;
        if self.consecutive_hangs >= super::MAX_CONSECUTIVE_HANGS {
            self.tally.aborted = Some(format!(
                "stopped after {} trials in a row with a hang",
                self.consecutive_hangs
            ));
            return AfterTrial::Stop;
        }
        AfterTrial::Restart
    }

    /// Verifies that the flow resumed: each live child of the slots `each` makes `k` units of
    /// progress, and at least one live child of the slots `any` (if any is live) makes `k_any`,
    /// all within [`HANG_BOUND`]. Counts a hang for each miss; returns whether all made it. A
    /// child that died meanwhile (counted as an unexpected exit) fails the check without a hang.
    pub fn verify<'s>(
        &mut self,
        each: impl IntoIterator<Item = &'s Slot>,
        k: u64,
        any: &[Slot],
        k_any: u64,
    ) -> bool {
        let deadline = Instant::now() + HANG_BOUND;
        let each: Vec<u64> = each.into_iter().filter_map(|s| self.live(s)).collect();
        let any: Vec<u64> = any.iter().filter_map(|s| self.live(s)).collect();
        let tokens: Vec<(u64, u64)> = each.iter().map(|&uid| (uid, self.watch(uid, k))).collect();
        let any_tokens: Vec<(u64, u64)> = any.iter().map(|&u| (u, self.watch(u, k_any))).collect();
        let mut ok = true;
        for (uid, token) in tokens {
            match self.await_progress(uid, token, deadline) {
                Ok(()) => {}
                Err(Miss::Timeout) => {
                    self.hang(
                        uid,
                        &format!("made no progress ({k} units) within 10 s after the restart"),
                    );
                    ok = false;
                }
                Err(Miss::Died) => ok = false,
            }
        }
        if !any_tokens.is_empty() {
            match self.await_any_progress(&any_tokens, deadline) {
                Ok(_) => {}
                Err(Miss::Timeout) => {
                    let names: Vec<String> = any.iter().map(|&u| self.name(u)).collect();
                    let text = format!(
                        "none of [{}] made progress ({k_any} units) within 10 s after the restart",
                        names.join(", ")
                    );
                    self.tally.add(Kind::Hang, 1, &text);
                    ok = false;
                }
                Err(Miss::Died) => ok = false,
            }
        }
        ok
    }
}

impl Harness<'_> {
    /// The trial loop of the scenarios whose children send and receive (the queues, the durable
    /// topic): `slots[..receivers]` receive, the rest send. Each trial lets them run for up to
    /// `max_delay`, then kills every child (one trial in four) or one at random, restarts the
    /// victims, and requires `sends` from every sender and `receipts` from some receiver.
    /// Returns how many trials killed every child.
    pub fn kill_trials(
        &mut self,
        slots: &mut [Slot],
        trials: u64,
        receivers: usize,
        max_delay: Duration,
        (sends, receipts): (u64, u64),
    ) -> Result<u64> {
        self.fill(slots)?;
        let mut all_killed = 0u64;
        for _ in 0..trials {
            self.begin_trial();
            self.fill(slots)?;
            let delay = Duration::from_micros(self.rng.below(max_delay.as_micros() as u64));
            self.pump_until(Instant::now() + delay);
            let victims: Vec<usize> = if self.rng.one_in(4) {
                all_killed += 1;
                (0..slots.len()).collect()
            } else {
                vec![self.rng.below(slots.len() as u64) as usize]
            };
            for &v in &victims {
                self.kill_slot(&mut slots[v]);
            }
            for &v in &victims {
                self.start(&mut slots[v])?;
            }
            let (receiving, sending) = slots.split_at(receivers);
            self.verify(sending, sends, receiving, receipts);
            match self.end_trial() {
                AfterTrial::Next => {}
                AfterTrial::Stop => break,
                AfterTrial::Restart => {
                    for s in slots.iter_mut() {
                        self.kill_slot(s);
                    }
                    self.fill(slots)?;
                }
            }
        }
        self.shutdown();
        Ok(all_killed)
    }
}
