//! The durable-topic scenario: 2 publishers and a consumer group of 2 members on a durable
//! topic of 2 partitions (`SyncPolicy::Always`, 64-record segment files), every process
//! killed at random moments.
//!
//! A message is a `[u64; 8]` as in the queue scenarios: `id = incarnation << 40 | seq`, six
//! random words and a checksum of the first seven. A publisher sends with its incarnation as
//! the key (so one publisher's messages share a partition and an order) and appends `id` to its
//! record file `p<incarnation>` only after the send returned `Ok` (`id | FAILED` after an
//! error). A member checks the checksum (torn), appends `id` to `c<incarnation>`, then
//! commits. One trial in four kills every child at once.
//!
//! At the end the parent kills every child and checks:
//! - every message recorded as sent is in the log, whole (a fresh subscriber reads it from the
//!   earliest offset), each publisher's in send order with no gap, and nothing in the log is
//!   torn or was never sent;
//! - a member that joins the group afterwards reads exactly from the committed offsets, and
//!   every recorded send was received by some member at least once (else lost): nothing below
//!   a commit was skipped.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::child::{read_records, ready, say, Args, Ctl, Records};
use super::harness::{Harness, Slot};
use super::queue::{checksum, message, split, Msg, FAILED};
use super::{Ctx, Kind, Rng, Tally, HANG_BOUND};
use crate::bench::util::{err, Result};
use ringbus::durable::{self, StartAt};
use ringbus::{Node, ReceiveError, SyncPolicy};

const TOPIC: &str = "torture";
const GROUP: &str = "torture";
const PARTITIONS: usize = 2;
const SEGMENT_RECORDS: u64 = 64;
/// Sends asked of every publisher after a restart.
const PROGRESS_SENDS: u64 = 8;
/// Commits asked of at least one member after a restart.
const PROGRESS_COMMITS: u64 = 2;
/// Random run time before a kill (µs).
const MAX_DELAY_US: u64 = 20_000;

fn topic(data: &Path) -> durable::DurableTopicBuilder<Msg> {
    Node::in_process()
        .topic::<Msg>(TOPIC)
        .durable(data)
        .partitions(PARTITIONS)
        .segment_records(SEGMENT_RECORDS)
        .sync_policy(SyncPolicy::Always)
}

/// The `publisher` child: sends keyed, numbered messages, recording each after `send`
/// returned.
pub fn publisher(a: &Args, ctl: &Ctl) -> Result<()> {
    let inc = a.u64("inc")?;
    let mut rec = Records::create(&a.path("records")?, &format!("p{inc}"))?;
    let mut p = topic(&a.path("data")?)
        .publisher()
        .map_err(|e| err(format!("opening the publisher: {e}")))?;
    let mut rng = Rng::new(a.u64("seed")?);
    ctl.not_counting();
    ready();
    for seq in 0.. {
        let m = message(inc, seq, &mut rng);
        match p.send_keyed(&inc.to_le_bytes(), &m) {
            Ok(_) => {
                rec.put(m[0])?;
                ctl.advance();
            }
            Err(e) => {
                rec.put(m[0] | FAILED)?;
                say(&format!("wrong send of {seq} failed: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(())
}

/// The `member` child: reads its share of the group's partitions, checks, records, commits.
pub fn member(a: &Args, ctl: &Ctl) -> Result<()> {
    let inc = a.u64("inc")?;
    let mut rec = Records::create(&a.path("records")?, &format!("c{inc}"))?;
    let mut s = topic(&a.path("data")?)
        .subscriber_at(StartAt::Earliest)
        .and_then(|s| s.group(GROUP))
        .map_err(|e| err(format!("joining the group: {e}")))?;
    s.set_auto_commit(None);
    s.set_detect_interval(Duration::from_millis(20));
    ctl.not_counting();
    ready();
    loop {
        let got = match s.receive_timeout(Duration::from_millis(50)) {
            Ok(m) => {
                let msg: Msg = *m;
                Some((msg, m.partition(), m.offset()))
            }
            Err(ReceiveError::Timeout(_)) => None,
            Err(ReceiveError::Invalid(why)) => {
                say(&format!("torn receive: {why}"));
                None
            }
            Err(e) => {
                say(&format!("wrong receive failed: {e}"));
                std::thread::sleep(Duration::from_millis(1));
                None
            }
        };
        let Some((m, k, o)) = got else { continue };
        if m[7] != checksum(&m) {
            let (i, q) = split(m[0]);
            say(&format!(
                "torn message at partition {k} offset {o} fails its checksum (as read: #{i} seq {q})"
            ));
            continue;
        }
        // Recorded before the commit: a kill after the commit loses no record.
        rec.put(m[0])?;
        match s.commit() {
            Ok(()) => ctl.advance(),
            Err(e) => say(&format!("wrong commit failed: {e}")),
        }
    }
}

/// Runs the durable-topic scenario.
pub fn run(ctx: &Ctx, tally: &mut Tally) -> Result<()> {
    let base = vec![
        Harness::path_arg("data", &ctx.data),
        Harness::path_arg("records", &ctx.records),
    ];
    let mut h = Harness::new(super::Scenario::DurableTopic, base, tally, ctx.seed)?;
    let mut slots = [
        Slot::new("member", 0),
        Slot::new("member", 1),
        Slot::new("publisher", 0),
        Slot::new("publisher", 1),
    ];
    // Every publisher sends, and at least one member commits.
    let all_killed = h.kill_trials(
        &mut slots,
        ctx.trials,
        2,
        Duration::from_micros(MAX_DELAY_US),
        (PROGRESS_SENDS, PROGRESS_COMMITS),
    )?;
    drop(h);
    tally.note("every_child_killed", all_killed);
    verify(ctx, tally)?;
    let _ = std::fs::remove_dir_all(&ctx.data);
    Ok(())
}

/// What one publisher incarnation recorded.
#[derive(Default)]
struct Sent {
    records: u64,
    failed: Vec<u64>,
    /// Receipts by members per seq (up to `records`).
    received: Vec<u16>,
    /// Whether each seq is in the log (up to `records`).
    logged: Vec<bool>,
}

/// After every child is dead: reads the log and the group (see the module doc).
fn verify(ctx: &Ctx, tally: &mut Tally) -> Result<()> {
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
                    &format!("publisher record file p{inc}: record {i} names #{winc} seq {seq}"),
                );
            } else if w & FAILED != 0 {
                e.failed.push(seq);
            }
        }
        e.records = words.len() as u64;
        e.received = vec![0; words.len() + 1];
        e.logged = vec![false; words.len() + 1];
    }
    let t = topic(&ctx.data);
    // The log: every record whole, and every message sent.
    let mut reader = t
        .subscriber_at(StartAt::Earliest)
        .map_err(|e| err(format!("opening the log after the run: {e}")))?;
    let mut in_log = 0u64;
    let mut order: HashMap<u64, u64> = HashMap::new();
    loop {
        match reader.try_receive() {
            Ok(m) => {
                let msg: Msg = *m;
                in_log += 1;
                if msg[7] != checksum(&msg) {
                    tally.add(
                        Kind::Torn,
                        1,
                        &format!("log offset {} fails its checksum", m.offset()),
                    );
                    continue;
                }
                let (inc, seq) = split(msg[0]);
                // One publisher's messages share a partition: in the log, in send order.
                let next = order.entry(inc).or_insert(0);
                if seq != *next {
                    tally.add(
                        Kind::Wrong,
                        1,
                        &format!("the log holds #{inc} seq {seq} where seq {next} belongs"),
                    );
                }
                *next = seq + 1;
                match sent.get_mut(&inc) {
                    // The one send a kill interrupts between `send` and its record is logged
                    // but not recorded.
                    Some(e) if seq <= e.records => e.logged[seq as usize] = true,
                    _ => tally.add(
                        Kind::Wrong,
                        1,
                        &format!("the log holds #{inc} seq {seq}, which was never sent"),
                    ),
                }
            }
            Err(ReceiveError::Empty) => break,
            Err(e) => {
                tally.add(Kind::Torn, 1, &format!("reading the log: {e}"));
            }
        }
    }
    drop(reader);
    for (name, words) in read_records(&ctx.records, "c")? {
        for w in words {
            receive(&mut sent, tally, w, &format!("member #{name}"));
        }
    }
    // A member joining now resumes exactly at the commits, and drains the rest.
    let info = durable::inspect(&ctx.data, TOPIC).map_err(|e| err(e.to_string()))?;
    let committed: Vec<u64> = info.groups.first().map_or(vec![0; PARTITIONS], |g| {
        g.committed.iter().map(|c| c.unwrap_or(0)).collect()
    });
    let mut m = t
        .subscriber_at(StartAt::Earliest)
        .and_then(|s| s.group(GROUP))
        .map_err(|e| err(format!("joining the group after the run: {e}")))?;
    let mut first: Vec<Option<u64>> = vec![None; PARTITIONS];
    let mut drained = 0u64;
    let start = Instant::now();
    loop {
        match m.receive_timeout(Duration::from_millis(100)) {
            Ok(msg) => {
                let (k, o, w) = (msg.partition(), msg.offset(), msg[0]);
                first[k].get_or_insert(o);
                drained += 1;
                receive(&mut sent, tally, w, "the final member");
            }
            Err(ReceiveError::Timeout(_)) => break,
            Err(e) => {
                tally.add(
                    Kind::Wrong,
                    1,
                    &format!("final member: receive failed: {e}"),
                );
                if start.elapsed() > HANG_BOUND {
                    break;
                }
            }
        }
    }
    drop(m);
    for (k, f) in first.iter().enumerate() {
        if let Some(f) = f {
            if *f != committed[k] {
                tally.add(
                    Kind::Wrong,
                    1,
                    &format!(
                        "the final member started partition {k} at offset {f}, the group committed {}",
                        committed[k]
                    ),
                );
            }
        }
    }
    let (mut promised, mut duplicates, mut lost, mut unlogged) = (0u64, 0u64, 0u64, 0u64);
    let mut samples = Vec::new();
    for (inc, e) in &sent {
        for s in 0..=e.records {
            duplicates += u64::from(e.received[s as usize]).saturating_sub(1);
            if s < e.records && !e.failed.contains(&s) {
                promised += 1;
                if !e.logged[s as usize] {
                    unlogged += 1;
                }
                if e.received[s as usize] == 0 {
                    lost += 1;
                    if samples.len() < 5 {
                        samples.push(format!("#{inc} seq {s}"));
                    }
                }
            }
        }
    }
    if unlogged > 0 {
        tally.add(
            Kind::Lost,
            unlogged,
            &format!("{unlogged} of {promised} messages whose send returned Ok are not in the log"),
        );
    }
    if lost > 0 {
        tally.add(
            Kind::Lost,
            lost,
            &format!(
                "{lost} of {promised} sent messages were received by no member (first: {})",
                samples.join(", ")
            ),
        );
    }
    tally.duplicates += duplicates;
    tally.verified += in_log;
    tally.note("sends_ok", promised);
    tally.note("in_log", in_log);
    tally.note("drained_at_end", drained);
    Ok(())
}

/// Counts one receipt of `id` (by `whom`) and checks that it was sent.
fn receive(sent: &mut HashMap<u64, Sent>, tally: &mut Tally, id: u64, whom: &str) {
    let (inc, seq) = split(id);
    match sent.get_mut(&inc) {
        Some(e) if seq <= e.records => {
            if e.failed.contains(&seq) {
                tally.add(
                    Kind::Wrong,
                    1,
                    &format!("{whom} got #{inc} seq {seq}, whose send returned an error"),
                );
            }
            let c = &mut e.received[seq as usize];
            *c = c.saturating_add(1);
        }
        _ => tally.add(
            Kind::Wrong,
            1,
            &format!("{whom} got #{inc} seq {seq}, a message never sent"),
        ),
    }
}
