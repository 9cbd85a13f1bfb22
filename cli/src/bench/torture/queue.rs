//! Queue scenarios: 2 producers and 2 competing consumers of a `[u64; 8]` queue, in shared
//! memory or durable (`SyncPolicy::Always`, 64-record log segments so the log rotates often).
//!
//! A message: `id = incarnation << 40 | seq`, six random words, and a checksum of the first
//! seven words. A producer appends `id` to its record file `p<incarnation>` only after `send`
//! returned `Ok` (`id | FAILED` after an error); a consumer checks the checksum (torn), appends
//! `id` to `c<incarnation>` and then acknowledges. One trial in four kills every child at
//! once: for the durable queue that is every process of the queue; the in-memory queue's
//! segment would vanish with its last participant, so the parent keeps one producer handle open
//! (it never sends). At the end the parent kills every child, opens a consumer (for the durable
//! queue: recovery) and drains the queue, then checks: every id recorded as sent was delivered
//! at least once (else lost), extra deliveries are duplicates, and a delivered id whose send
//! failed, or that its producer never reached (beyond the one send a kill can interrupt
//! between `send` and its record), is wrong.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::child::{read_records, ready, say, Args, Ctl, Records};
use super::harness::{Harness, Slot};
use super::{fnv, Ctx, Kind, Rng, Scenario, Tally, FNV_START, HANG_BOUND};
use crate::bench::util::{err, Result};
use ringbus::{queue::Policy, Node, QueueBuilder, ReceiveError, SendError, SyncPolicy};

pub(super) type Msg = [u64; 8];

const CAPACITY: usize = 256;
const SEGMENT_RECORDS: u64 = 64;
/// Flag of a producer record whose send failed.
pub(super) const FAILED: u64 = 1 << 63;
const SEQ_BITS: u32 = 40;
/// Sends asked of every producer after a restart.
const PROGRESS_SENDS: u64 = 8;
/// Acks asked of at least one consumer after a restart.
const PROGRESS_ACKS: u64 = 4;
/// Random run time before a kill (µs).
const MAX_DELAY_US: u64 = 20_000;
/// Longest time a consumer holds a delivery before acknowledging it (µs), one of these per
/// consumer at random: kills land there, and slow consumers leave a backlog (the durable
/// producers sync every send, so only slow consumers fall behind them).
const MAX_WORK_US: [u64; 3] = [20, 2000, 5000];

fn builder(node: &Node, durable: Option<&Path>) -> QueueBuilder<Msg> {
    let b = node
        .queue::<Msg>("torture")
        .capacity(CAPACITY)
        .max_producers(8)
        .max_consumers(8)
        .prefetch(8)
        .visibility_timeout(Duration::from_secs(60))
        .policy(Policy::Block(Duration::from_secs(30)));
    match durable {
        Some(dir) => b
            .durable(dir)
            .sync_policy(SyncPolicy::Always)
            .segment_records(SEGMENT_RECORDS),
        None => b,
    }
}

/// The checksum of a message's first seven words (shared with the durable-topic scenario).
pub(super) fn checksum(m: &Msg) -> u64 {
    let mut h = FNV_START;
    for w in &m[..7] {
        h = fnv(h, &w.to_le_bytes());
    }
    h
}

/// Message `seq` of producer incarnation `inc` (shared with the durable-topic scenario).
pub(super) fn message(inc: u64, seq: u64, rng: &mut Rng) -> Msg {
    let mut m = [0u64; 8];
    m[0] = inc << SEQ_BITS | seq;
    for w in &mut m[1..7] {
        *w = rng.next_u64();
    }
    m[7] = checksum(&m);
    m
}

/// The incarnation and seq of an id (shared with the durable-topic scenario).
pub(super) fn split(id: u64) -> (u64, u64) {
    ((id & !FAILED) >> SEQ_BITS, id & ((1 << SEQ_BITS) - 1))
}

fn open_args(a: &Args, durable: bool) -> Result<(Node, Option<std::path::PathBuf>)> {
    let node = Node::with_root(a.path("root")?)?;
    let data = if durable { Some(a.path("data")?) } else { None };
    Ok((node, data))
}

/// The `producer` child: sends numbered messages, recording each after `send` returned.
pub fn producer(a: &Args, ctl: &Ctl, durable: bool) -> Result<()> {
    let (node, data) = open_args(a, durable)?;
    let inc = a.u64("inc")?;
    let mut rec = Records::create(&a.path("records")?, &format!("p{inc}"))?;
    let mut p = builder(&node, data.as_deref())
        .producer()
        .map_err(|e| err(format!("opening the producer: {e}")))?;
    let mut rng = Rng::new(a.u64("seed")?);
    ctl.not_counting();
    ready();
    for seq in 0.. {
        let m = message(inc, seq, &mut rng);
        match p.send(&m) {
            Ok(_) => {
                rec.put(m[0])?;
                ctl.advance();
            }
            Err(e) => {
                rec.put(m[0] | FAILED)?;
                match e {
                    SendError::Timeout(d) => {
                        say(&format!("hang send of {seq} found no room for {d:?}"));
                    }
                    e => say(&format!("wrong send of {seq} failed: {e}")),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(())
}

/// The `consumer` child: checks, records, works a little, acknowledges.
pub fn consumer(a: &Args, ctl: &Ctl, durable: bool) -> Result<()> {
    let (node, data) = open_args(a, durable)?;
    let inc = a.u64("inc")?;
    let mut rec = Records::create(&a.path("records")?, &format!("c{inc}"))?;
    let c = builder(&node, data.as_deref())
        .consumer()
        .map_err(|e| err(format!("opening the consumer: {e}")))?;
    let mut rng = Rng::new(a.u64("seed")?);
    let max_work = MAX_WORK_US[rng.below(MAX_WORK_US.len() as u64) as usize];
    // Deliveries are counted exactly from the records.
    ctl.not_counting();
    ready();
    loop {
        match c.receive_timeout(Duration::from_millis(50)) {
            Ok(d) => {
                let m: Msg = *d;
                if m[7] != checksum(&m) {
                    let (i, s) = split(m[0]);
                    say(&format!(
                        "torn message at position {} fails its checksum (as read: #{i} seq {s})",
                        d.position()
                    ));
                } else {
                    // Recorded before the ack: a kill after the ack loses no record.
                    rec.put(m[0])?;
                }
                let work = Duration::from_micros(rng.below(max_work));
                let t = Instant::now();
                while t.elapsed() < work {
                    std::hint::spin_loop();
                }
                match d.ack() {
                    Ok(()) => ctl.advance(),
                    Err(e) => say(&format!("wrong ack failed: {e}")),
                }
            }
            Err(ReceiveError::Timeout(_)) => {}
            Err(ReceiveError::Invalid(why)) => say(&format!("torn receive: {why}")),
            Err(e) => {
                say(&format!("wrong receive failed: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// What one producer incarnation recorded.
#[derive(Default)]
struct Sent {
    /// Records (record i is seq i).
    records: u64,
    /// Seqs whose send failed.
    failed: Vec<u64>,
    /// Deliveries per seq (index up to `records`).
    delivered: Vec<u16>,
}

/// Runs a queue scenario (`durable`: on disk).
pub fn run(ctx: &Ctx, tally: &mut Tally, durable: bool) -> Result<()> {
    let scenario = if durable {
        Scenario::DurableQueue
    } else {
        Scenario::Queue
    };
    let mut base = vec![
        Harness::path_arg("root", &ctx.root),
        Harness::path_arg("records", &ctx.records),
    ];
    if durable {
        base.push(Harness::path_arg("data", &ctx.data));
    }
    let data = durable.then_some(ctx.data.as_path());
    let node = Node::with_root(&ctx.root)?;
    // The in-memory queue lives while it has a participant: this one never sends.
    let keeper = if durable {
        None
    } else {
        Some(builder(&node, None).producer()?)
    };
    let mut h = Harness::new(scenario, base, tally, ctx.seed)?;
    let mut slots = [
        Slot::new("consumer", 0),
        Slot::new("consumer", 1),
        Slot::new("producer", 0),
        Slot::new("producer", 1),
    ];
    // Every producer sends, and at least one consumer acks.
    let all_killed = h.kill_trials(
        &mut slots,
        ctx.trials,
        2,
        Duration::from_micros(MAX_DELAY_US),
        (PROGRESS_SENDS, PROGRESS_ACKS),
    )?;
    drop(h);
    tally.note("every_child_killed", all_killed);
    verify_delivery(ctx, tally, &node, data)?;
    drop(keeper);
    if durable {
        let _ = std::fs::remove_dir_all(&ctx.data);
    }
    Ok(())
}

/// After every child is dead: drains the queue and checks the records (see the module doc).
fn verify_delivery(ctx: &Ctx, tally: &mut Tally, node: &Node, data: Option<&Path>) -> Result<()> {
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    for (name, words) in read_records(&ctx.records, "p")? {
        let inc: u64 = name
            .parse()
            .map_err(|_| err(format!("bad record file p{name}")))?;
        let e = sent.entry(inc).or_default();
        for (i, &w) in words.iter().enumerate() {
            let (winc, seq) = split(w);
            if winc != inc || seq != i as u64 {
                tally.add(
                    Kind::Wrong,
                    1,
                    &format!("producer record file p{inc}: record {i} names #{winc} seq {seq}"),
                );
                continue;
            }
            if w & FAILED != 0 {
                e.failed.push(seq);
            }
        }
        e.records = words.len() as u64;
        e.delivered = vec![0; words.len() + 1];
    }
    let mut deliveries = 0u64;
    for (name, words) in read_records(&ctx.records, "c")? {
        for w in words {
            deliver(&mut sent, tally, w, &format!("consumer #{name}"));
            deliveries += 1;
        }
    }
    // The rest is still in the queue: drain it (for the durable queue this open recovers it).
    let mut attempts = 0;
    let consumer = loop {
        match builder(node, data).consumer() {
            Ok(c) => break c,
            Err(e) => {
                tally.add(
                    Kind::Wrong,
                    1,
                    &format!("the final consumer could not open: {e}"),
                );
                attempts += 1;
                if attempts >= 3 {
                    return Err(err(format!("the final consumer could not open: {e}")));
                }
            }
        }
    };
    let missing = |sent: &HashMap<u64, Sent>| {
        sent.values()
            .map(|e| {
                (0..e.records)
                    .filter(|&s| e.delivered[s as usize] == 0 && !e.failed.contains(&s))
                    .count() as u64
            })
            .sum::<u64>()
    };
    let mut drained = 0u64;
    let mut last = Instant::now();
    let mut left;
    // Until every recorded send is accounted for and the queue is empty, or nothing came for
    // the hang bound.
    loop {
        match consumer.receive_timeout(Duration::from_millis(100)) {
            Ok(d) => {
                let m: Msg = *d;
                if m[7] != checksum(&m) {
                    tally.add(
                        Kind::Torn,
                        1,
                        &format!(
                            "final drain: message at position {} fails its checksum",
                            d.position()
                        ),
                    );
                } else {
                    deliver(&mut sent, tally, m[0], "the final drain");
                    deliveries += 1;
                }
                drained += 1;
                let _ = d.ack();
                last = Instant::now();
            }
            Err(ReceiveError::Timeout(_)) => {
                left = missing(&sent);
                if left == 0 || last.elapsed() > HANG_BOUND {
                    break;
                }
            }
            Err(e) => {
                tally.add(Kind::Wrong, 1, &format!("final drain: receive failed: {e}"));
                if last.elapsed() > HANG_BOUND {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    left = missing(&sent);
    let stats = consumer.stats();
    drop(consumer);
    let (mut promised, mut duplicates) = (0u64, 0u64);
    let mut lost_samples = Vec::new();
    for (inc, e) in &sent {
        for s in 0..=e.records {
            let n = u64::from(e.delivered[s as usize]);
            duplicates += n.saturating_sub(1);
            if s < e.records && !e.failed.contains(&s) {
                promised += 1;
                if n == 0 && lost_samples.len() < 5 {
                    lost_samples.push(format!("#{inc} seq {s}"));
                }
            }
        }
    }
    if left > 0 {
        tally.add(
            Kind::Lost,
            left,
            &format!(
                "{left} of {promised} messages whose send returned Ok were never delivered \
                 (first: {})",
                lost_samples.join(", ")
            ),
        );
    }
    if stats.torn > 0 {
        tally.add(
            Kind::Torn,
            stats.torn,
            &format!("the queue counted {} torn or invalid records", stats.torn),
        );
    }
    tally.duplicates += duplicates;
    tally.verified += deliveries;
    tally.note("sends_ok", promised);
    tally.note("drained_at_end", drained);
    tally.note("redelivered", stats.redelivered);
    if data.is_some() {
        tally.note("recoveries", stats.recoveries);
    }
    Ok(())
}

/// Counts one delivery of `id` (by `whom`) and checks that it was sent.
fn deliver(sent: &mut HashMap<u64, Sent>, tally: &mut Tally, id: u64, whom: &str) {
    let (inc, seq) = split(id);
    let Some(e) = sent.get_mut(&inc) else {
        tally.add(
            Kind::Wrong,
            1,
            &format!("{whom} got #{inc} seq {seq}, from no producer that ever opened"),
        );
        return;
    };
    if seq > e.records {
        tally.add(
            Kind::Wrong,
            1,
            &format!(
                "{whom} got #{inc} seq {seq}, a message never sent (its producer recorded {})",
                e.records
            ),
        );
        return;
    }
    if e.failed.contains(&seq) {
        tally.add(
            Kind::Wrong,
            1,
            &format!("{whom} got #{inc} seq {seq}, whose send returned an error"),
        );
    }
    let c = &mut e.delivered[seq as usize];
    *c = c.saturating_add(1);
}
