//! Topic scenario: 2 publishers and 2 subscribers of a `Policy::Block` byte topic.
//!
//! A message: `[slot, incarnation, seq, len, checksum]` (five little-endian u64) and random
//! bytes up to `len`; the checksum covers everything but itself. Each subscriber checks every
//! message (length, checksum: torn) and each publisher incarnation's order: consecutive sequence
//! numbers (a jump is a gap: lost; a repeat or a step back: wrong), starting at 0 for a
//! publisher started after the subscriber joined (its incarnation number is higher); any
//! `Lagged` is a loss report, which `Block` must never give (lost).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::child::{ready, say, Args, Ctl};
use super::harness::{AfterTrial, Harness, Miss, Slot};
use super::{fnv, Ctx, Kind, Rng, Scenario, Tally, FNV_START, HANG_BOUND};
use crate::bench::util::Result;
use ringbus::{topic::Policy, Bytes, Node, ReceiveError, SendError, TopicBuilder};

/// Slots per publisher ring: small, so publishers wait on subscribers often.
const CAPACITY: usize = 256;
/// Recent messages of each publisher a joining subscriber receives.
const HISTORY: usize = CAPACITY / 4;
/// Largest message.
const MAX_MSG: usize = 512;
/// Header words: slot, incarnation, seq, len, checksum.
const HEADER: usize = 40;
/// Progress asked of every child after a restart (more than a ring: under `Block`, a publisher
/// that sent that many has been read by every live subscriber).
const PROGRESS: u64 = 2 * CAPACITY as u64;
/// Random run time before a kill (µs).
const MAX_DELAY_US: u64 = 20_000;
/// How long a `Block` publisher waits before `SendError::Timeout` (longer than any bound here).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

fn builder(node: &Node) -> TopicBuilder<Bytes> {
    node.topic_bytes("torture")
        .policy(Policy::Block)
        .capacity(CAPACITY)
        .max_message_size(MAX_MSG)
        .max_publishers(4)
        .max_subscribers(4)
        .max_held(1)
        .history(HISTORY)
        .send_timeout(SEND_TIMEOUT)
}

fn word(m: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(m[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

fn sum(m: &[u8]) -> u64 {
    fnv(fnv(FNV_START, &m[..32]), &m[HEADER..])
}

/// Fills a message in place; the body one byte at a time, so kills land mid-write.
fn fill(buf: &mut [u8], slot: u64, inc: u64, seq: u64, rng: &mut Rng) {
    let len = buf.len() as u64;
    for (i, v) in [slot, inc, seq, len].into_iter().enumerate() {
        buf[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    let mut bits = 0u64;
    for (i, b) in buf[HEADER..].iter_mut().enumerate() {
        if i % 8 == 0 {
            bits = rng.next_u64();
        }
        *b = (bits >> (8 * (i % 8))) as u8;
    }
    let s = sum(buf);
    buf[32..40].copy_from_slice(&s.to_le_bytes());
}

/// The `publisher` child: sends numbered messages as fast as the subscribers allow.
pub fn publisher(a: &Args, ctl: &Ctl) -> Result<()> {
    let node = Node::with_root(a.path("root")?)?;
    let mut p = builder(&node).publisher()?;
    let (slot, inc) = (a.u64("slot")?, a.u64("inc")?);
    let mut rng = Rng::new(a.u64("seed")?);
    ctl.not_counting();
    ready();
    let mut seq = 0u64;
    loop {
        let len = HEADER + rng.below((MAX_MSG - HEADER + 1) as u64) as usize;
        let full = match p.try_loan(len) {
            Ok(mut loan) => {
                fill(&mut loan, slot, inc, seq, &mut rng);
                loan.send();
                false
            }
            Err(SendError::Full) => true,
            Err(e) => {
                say(&format!("wrong try_loan failed: {e}"));
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if full {
            ctl.set_waiting(true);
            let t0 = Instant::now();
            let r = p.loan(len).map(|mut loan| {
                fill(&mut loan, slot, inc, seq, &mut rng);
                loan.send();
            });
            ctl.set_waiting(false);
            match r {
                Ok(()) => {}
                Err(SendError::Timeout(d)) => {
                    say(&format!(
                        "hang a Block loan timed out after {d:?} ({:?}): no live subscriber made room",
                        t0.elapsed()
                    ));
                    continue;
                }
                Err(e) => {
                    say(&format!("wrong loan failed: {e}"));
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        seq += 1;
        ctl.advance();
    }
}

/// What a subscriber knows of the publishers it reads.
struct Order {
    /// Publishers with an incarnation number at least this started after we joined.
    fresh: u64,
    /// Next expected sequence number per publisher incarnation.
    next: HashMap<u64, u64>,
    /// After a loss report, first messages are taken as they come.
    resynced: bool,
}

impl Order {
    fn check(&mut self, m: &[u8]) {
        if m.len() < HEADER {
            say(&format!(
                "torn message of {} bytes, shorter than the header",
                m.len()
            ));
            return;
        }
        if word(m, 3) != m.len() as u64 {
            say(&format!(
                "torn length field {} in a message of {} bytes",
                word(m, 3),
                m.len()
            ));
            return;
        }
        let (inc, seq) = (word(m, 1), word(m, 2));
        if sum(m) != word(m, 4) {
            say(&format!(
                "torn checksum mismatch in a message of {} bytes (as read: publisher #{inc}, seq {seq})",
                m.len()
            ));
            return;
        }
        match self.next.get(&inc) {
            None if inc >= self.fresh && !self.resynced && seq != 0 => say(&format!(
                "lost publisher #{inc}, started after this subscriber joined: first message seq \
                 {seq}, not 0"
            )),
            Some(&e) if seq > e => say(&format!(
                "lost publisher #{inc}: seq {seq} after {}: {} missing",
                e as i64 - 1,
                seq - e
            )),
            Some(&e) if seq < e => say(&format!(
                "wrong publisher #{inc}: seq {seq} after {}: a repeat or a step back",
                e - 1
            )),
            _ => {}
        }
        self.next.insert(inc, seq + 1);
    }
}

/// The `subscriber` child: receives and checks every message; stalls when told.
pub fn subscriber(a: &Args, ctl: &Ctl) -> Result<()> {
    let node = Node::with_root(a.path("root")?)?;
    let s = builder(&node).subscriber()?;
    let inc = a.u64("inc")?;
    ready();
    let mut order = Order {
        // The parent starts children one at a time, each once the previous one is ready.
        fresh: inc + 1,
        next: HashMap::new(),
        resynced: false,
    };
    let mut received = 0u64;
    loop {
        if ctl.stall.load(std::sync::atomic::Ordering::SeqCst) {
            say("stalled");
            loop {
                std::thread::park();
            }
        }
        match s.receive_timeout(Duration::from_millis(50)) {
            Ok(m) => {
                order.check(&m);
                drop(m);
                received += 1;
                ctl.advance();
            }
            Err(ReceiveError::Timeout(_)) => {}
            Err(ReceiveError::Lagged(n)) => {
                let when = if received == 0 {
                    "as its first result".to_string()
                } else {
                    format!("after {received} messages")
                };
                say(&format!("lost Lagged({n}) under Block, {when}"));
                order.next.clear();
                order.resynced = true;
            }
            Err(e) => {
                say(&format!("wrong receive failed: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Runs the topic scenario.
pub fn run(ctx: &Ctx, tally: &mut Tally) -> Result<()> {
    let base = vec![Harness::path_arg("root", &ctx.root)];
    let mut h = Harness::new(Scenario::Topic, base, tally, ctx.seed)?;
    let mut pubs = [Slot::new("publisher", 0), Slot::new("publisher", 1)];
    let mut subs = [Slot::new("subscriber", 0), Slot::new("subscriber", 1)];
    h.fill(&mut subs)?;
    h.fill(&mut pubs)?;
    let (mut stalled_kills, mut freed_max, mut freed_sum, mut freed_n) =
        (0u64, Duration::ZERO, Duration::ZERO, 0u32);
    for _ in 0..ctx.trials {
        h.begin_trial();
        // Slots emptied by an exit (already counted) are filled first.
        h.fill(&mut subs)?;
        h.fill(&mut pubs)?;
        let delay = Duration::from_micros(h.rng.below(MAX_DELAY_US));
        h.pump_until(Instant::now() + delay);
        let pick = h.rng.below(16);
        if pick < 2 {
            // Every child (pick 0), or a publisher and a subscriber (pick 1): subscribers then
            // join while a publisher's entry is dead, and publishers adopt rings behind them.
            let (p, s) = (h.rng.below(2) as usize, h.rng.below(2) as usize);
            for (i, slot) in pubs.iter_mut().enumerate() {
                if pick == 0 || i == p {
                    h.kill_slot(slot);
                }
            }
            for (i, slot) in subs.iter_mut().enumerate() {
                if pick == 0 || i == s {
                    h.kill_slot(slot);
                }
            }
            h.fill(&mut subs)?;
            h.fill(&mut pubs)?;
        } else if pick < 9 {
            let victim = h.rng.below(2) as usize;
            h.kill_slot(&mut pubs[victim]);
            h.start(&mut pubs[victim])?;
        } else {
            let sub = &mut subs[h.rng.below(2) as usize];
            if h.rng.one_in(2) {
                // Half the time the replacement joins while the publishers still wait on the
                // dead subscriber.
                let join_at_once = h.rng.one_in(2);
                let (stalled, freed) = stall_and_kill(&mut h, sub, &pubs, join_at_once)?;
                stalled_kills += u64::from(stalled);
                if let Some(d) = freed {
                    freed_max = freed_max.max(d);
                    freed_sum += d;
                    freed_n += 1;
                }
            }
            h.kill_slot(sub);
            if h.live(sub).is_none() {
                h.start(sub)?;
            }
        }
        h.verify(pubs.iter().chain(&subs), PROGRESS, &[], 0);
        match h.end_trial() {
            AfterTrial::Next => {}
            AfterTrial::Stop => break,
            AfterTrial::Restart => {
                // Start over with fresh processes (the topic stays).
                for s in pubs.iter_mut().chain(subs.iter_mut()) {
                    h.kill_slot(s);
                }
                h.fill(&mut subs)?;
                h.fill(&mut pubs)?;
            }
        }
    }
    h.shutdown();
    drop(h);
    tally.note("stalled_subscriber_kills", stalled_kills);
    if freed_n > 0 {
        tally.note(
            "freed_after_kill_ms_mean",
            format!("{:.1}", freed_sum.as_secs_f64() * 1e3 / f64::from(freed_n)),
        );
        tally.note(
            "freed_after_kill_ms_max",
            format!("{:.1}", freed_max.as_secs_f64() * 1e3),
        );
    }
    Ok(())
}

/// Stalls subscriber `sub` until every live publisher waits on a full ring, kills it at a random
/// moment within 5 ms, starts its replacement at once if `join_at_once`, and waits until every
/// publisher has sent [`PROGRESS`] more messages. Returns whether the stall and kill happened,
/// and the longest time from the kill to a publisher's progress if every publisher waited and
/// nobody joined meanwhile (then the publishers found the dead subscriber themselves).
fn stall_and_kill(
    h: &mut Harness<'_>,
    sub: &mut Slot,
    pubs: &[Slot],
    join_at_once: bool,
) -> Result<(bool, Option<Duration>)> {
    let Some(uid) = h.live(sub) else {
        return Ok((false, None));
    };
    h.send(uid, "stall");
    match h.await_line(uid, "stalled", |_| true, Instant::now() + HANG_BOUND) {
        Ok(_) => {}
        Err(Miss::Timeout) => {
            h.hang(uid, "did not stall within 10 s");
            return Ok((false, None));
        }
        Err(Miss::Died) => return Ok((false, None)),
    }
    let live: Vec<u64> = pubs.iter().filter_map(|p| h.live(p)).collect();
    for &p in &live {
        h.send(p, "arm");
    }
    let deadline = Instant::now() + HANG_BOUND;
    let mut all_waited = true;
    for &p in &live {
        match h.await_line(p, "blocked", |_| true, deadline) {
            Ok(_) => {}
            Err(Miss::Timeout) => {
                let text = format!(
                    "{}: did not wait for a stalled live subscriber within 10 s (Block)",
                    h.name(p)
                );
                h.tally.add(Kind::Wrong, 1, &text);
                all_waited = false;
            }
            Err(Miss::Died) => all_waited = false,
        }
    }
    let d = Duration::from_micros(h.rng.below(5000));
    h.pump_until(Instant::now() + d);
    let t_kill = Instant::now();
    h.kill_slot(sub);
    if join_at_once {
        h.start(sub)?;
    }
    let watches: Vec<(u64, u64)> = live.iter().map(|&p| (p, h.watch(p, PROGRESS))).collect();
    let mut longest = Duration::ZERO;
    for (p, token) in watches {
        match h.await_progress(p, token, t_kill + HANG_BOUND) {
            Ok(()) => longest = longest.max(t_kill.elapsed()),
            Err(Miss::Timeout) => {
                h.hang(
                    p,
                    "not freed within 10 s after the subscriber it waited on was killed",
                );
                all_waited = false;
            }
            Err(Miss::Died) => all_waited = false,
        }
    }
    let freed = all_waited && !live.is_empty() && !join_at_once;
    Ok((true, freed.then_some(longest)))
}
