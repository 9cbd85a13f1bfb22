//! Service scenario: 2 echo servers and 2 clients of a byte service.
//!
//! A request: `[slot, incarnation, seq, len, checksum of the body]` (five u64) and random bytes
//! up to `len` (40 to 256). The server checks it (torn) and answers `[incarnation, seq, body
//! checksum, checksum of those three]`. A client keeps 1 to 4 calls in flight and checks each
//! `Ok` response against its own request (torn, wrong); every failure is reported with the
//! call's send and failure times, and the parent judges it at the end against the times when a
//! server was dead: `Disconnected`, `NoServer` and `Aborted` must overlap a server death,
//! `Timeout` and `Busy` are counted, any other variant is wrong. A call whose `wait` returns
//! more than [`CALL_SLACK`] after its timeout is a hang.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::child::{ready, say, Args, Ctl};
use super::harness::{AfterTrial, Harness, Slot};
use super::{fnv, mono_ns, Ctx, Kind, Rng, Scenario, Tally, CALL_SLACK, FNV_START};
use crate::bench::util::Result;
use ringbus::{Bytes, CallError, Node, ReceiveError, SendError, ServiceBuilder};

const MAX_REQUEST: usize = 256;
const HEADER: usize = 40;
const RESPONSE: usize = 32;
/// A call's timeout.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Ok responses asked of every client after a restart.
const PROGRESS: u64 = 8;
/// Random run time before a kill (µs).
const MAX_DELAY_US: u64 = 20_000;
/// Longest time a server holds a call before answering (µs).
const MAX_WORK_US: u64 = 50;

fn builder(node: &Node) -> ServiceBuilder<Bytes, Bytes> {
    node.service::<Bytes, Bytes>("torture")
        .max_request_size(MAX_REQUEST)
        .max_response_size(RESPONSE)
        .max_clients(4)
        .max_servers(4)
        .max_in_flight(4)
        .timeout(TIMEOUT)
}

fn word(m: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(m[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

fn request(slot: u64, inc: u64, seq: u64, rng: &mut Rng) -> Vec<u8> {
    let len = HEADER + rng.below((MAX_REQUEST - HEADER + 1) as u64) as usize;
    let mut v = vec![0u8; len];
    for b in &mut v[HEADER..] {
        *b = rng.next_u64() as u8;
    }
    let body = fnv(FNV_START, &v[HEADER..]);
    for (i, w) in [slot, inc, seq, len as u64, body].into_iter().enumerate() {
        v[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    v
}

fn response(inc: u64, seq: u64, body: u64) -> [u8; RESPONSE] {
    let mut r = [0u8; RESPONSE];
    for (i, w) in [inc, seq, body].into_iter().enumerate() {
        r[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    let ck = fnv(FNV_START, &r[..24]);
    r[24..].copy_from_slice(&ck.to_le_bytes());
    r
}

/// The `server` child: answers every request with its id and body checksum.
pub fn server(a: &Args, ctl: &Ctl) -> Result<()> {
    let node = Node::with_root(a.path("root")?)?;
    let server = builder(&node).server()?;
    let mut rng = Rng::new(a.u64("seed")?);
    ctl.not_counting();
    ready();
    loop {
        match server.receive_timeout(Duration::from_millis(50)) {
            Ok(req) => {
                let body = if req.len() >= HEADER {
                    let body = fnv(FNV_START, &req[HEADER..]);
                    if word(&req, 3) != req.len() as u64 || word(&req, 4) != body {
                        say(&format!(
                            "torn request of {} bytes (as read: client #{}, seq {})",
                            req.len(),
                            word(&req, 1),
                            word(&req, 2)
                        ));
                    }
                    body
                } else {
                    say(&format!("torn request of {} bytes", req.len()));
                    0
                };
                let (inc, seq) = if req.len() >= 24 {
                    (word(&req, 1), word(&req, 2))
                } else {
                    (0, 0)
                };
                // Some work while holding the call: kills land here often.
                let work = Duration::from_micros(rng.below(MAX_WORK_US));
                let t = Instant::now();
                while t.elapsed() < work {
                    std::hint::spin_loop();
                }
                match req.respond(&response(inc, seq, body)) {
                    Ok(()) => ctl.advance(),
                    // The caller died or gave up: nobody to answer.
                    Err(SendError::Disconnected) => {}
                    Err(e) => say(&format!("wrong respond failed: {e}")),
                }
            }
            Err(ReceiveError::Timeout(_)) => {}
            Err(e) => {
                say(&format!("wrong receive failed: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn variant(e: &CallError) -> &'static str {
    match e {
        CallError::Timeout(_) => "Timeout",
        CallError::NoServer => "NoServer",
        CallError::Disconnected => "Disconnected",
        CallError::Busy { .. } => "Busy",
        CallError::TooLarge { .. } => "TooLarge",
        CallError::Serialize(_) => "Serialize",
        CallError::Aborted => "Aborted",
        CallError::Invalid(_) => "Invalid",
        CallError::Finished => "Finished",
        CallError::LoanOutstanding => "LoanOutstanding",
        // `CallError` is non-exhaustive: a variant added later.
        _ => "Other",
    }
}

fn report(e: &CallError, start: u64, end: u64, what: &str) {
    say(&format!("fail {} {start} {end} {what}: {e}", variant(e)));
}

/// The `client` child: keeps 1 to 4 calls in flight and checks every answer.
pub fn client(a: &Args, ctl: &Ctl) -> Result<()> {
    let node = Node::with_root(a.path("root")?)?;
    let client = builder(&node).client()?;
    let (slot, inc) = (a.u64("slot")?, a.u64("inc")?);
    let mut rng = Rng::new(a.u64("seed")?);
    let depth = 1 + rng.below(4) as usize;
    ready();
    let bound = (TIMEOUT + CALL_SLACK).as_nanos() as u64;
    let mut pending = VecDeque::new();
    let mut seq = 0u64;
    loop {
        while pending.len() < depth {
            let req = request(slot, inc, seq, &mut rng);
            let body = word(&req, 4);
            let t_send = mono_ns();
            match client.send(&req) {
                Ok(p) => pending.push_back((p, seq, body, t_send)),
                Err(e) => {
                    report(&e, t_send, mono_ns(), &format!("send of call {seq}"));
                    if pending.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    seq += 1;
                    break;
                }
            }
            seq += 1;
        }
        let Some((p, s, body, t_send)) = pending.pop_front() else {
            continue;
        };
        let t_wait = mono_ns();
        let r = p.wait();
        let t_done = mono_ns();
        if t_done - t_wait > bound {
            say(&format!(
                "hang call {s} returned {} ms after its wait began (timeout {} ms): {}",
                (t_done - t_wait) / 1_000_000,
                TIMEOUT.as_millis(),
                match &r {
                    Ok(_) => "Ok".to_string(),
                    Err(e) => e.to_string(),
                }
            ));
        }
        match r {
            Ok(resp) => {
                if resp.len() != RESPONSE || word(&resp, 3) != fnv(FNV_START, &resp[..24]) {
                    say(&format!(
                        "torn response of {} bytes to call {s} (request {inc}/{s})",
                        resp.len()
                    ));
                } else if (word(&resp, 0), word(&resp, 1), word(&resp, 2)) != (inc, s, body) {
                    say(&format!(
                        "wrong response to call {s}: echoes client #{} call {} body {:#x}, \
                         expected client #{inc} call {s} body {body:#x}",
                        word(&resp, 0),
                        word(&resp, 1),
                        word(&resp, 2)
                    ));
                }
                drop(resp);
                ctl.advance();
            }
            Err(e) => report(&e, t_send, t_done, &format!("call {s}")),
        }
    }
}

/// Runs the service scenario.
pub fn run(ctx: &Ctx, tally: &mut Tally) -> Result<()> {
    let base = vec![Harness::path_arg("root", &ctx.root)];
    let mut h = Harness::new(Scenario::Service, base, tally, ctx.seed)?;
    let mut servers = [Slot::new("server", 0), Slot::new("server", 1)];
    let mut clients = [Slot::new("client", 0), Slot::new("client", 1)];
    // Times (CLOCK_MONOTONIC ns) from a server's death to its replacement being ready.
    let mut down: Vec<(u64, u64)> = Vec::new();
    h.fill(&mut servers)?;
    h.fill(&mut clients)?;
    let mut since = mono_ns();
    for _ in 0..ctx.trials {
        h.begin_trial();
        for s in &mut servers {
            if h.live(s).is_none() {
                // Died on its own (counted): down since the last check at most.
                h.start(s)?;
                down.push((since, mono_ns()));
            }
        }
        h.fill(&mut clients)?;
        since = mono_ns();
        let delay = Duration::from_micros(h.rng.below(MAX_DELAY_US));
        h.pump_until(Instant::now() + delay);
        let victims: Vec<usize> = if h.rng.one_in(8) {
            vec![0, 1]
        } else {
            vec![h.rng.below(4) as usize]
        };
        let t_kill = mono_ns();
        for &v in &victims {
            match v {
                0 | 1 => h.kill_slot(&mut servers[v]),
                _ => h.kill_slot(&mut clients[v - 2]),
            }
        }
        for &v in &victims {
            match v {
                0 | 1 => {
                    h.start(&mut servers[v])?;
                }
                _ => {
                    h.start(&mut clients[v - 2])?;
                }
            }
        }
        if victims.iter().any(|&v| v < 2) {
            down.push((t_kill, mono_ns()));
        }
        h.verify(&clients, PROGRESS, &[], 0);
        match h.end_trial() {
            AfterTrial::Next => {}
            AfterTrial::Stop => break,
            AfterTrial::Restart => {
                let t = mono_ns();
                for s in servers.iter_mut().chain(clients.iter_mut()) {
                    h.kill_slot(s);
                }
                h.fill(&mut servers)?;
                down.push((t, mono_ns()));
                h.fill(&mut clients)?;
            }
        }
    }
    // Clients first: a client still running when a server is killed here would fail its calls
    // (Disconnected, NoServer) with no server death on record, and be judged wrong.
    for c in &mut clients {
        h.kill_slot(c);
    }
    h.shutdown();
    let fails = std::mem::take(&mut h.fails);
    drop(h);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for f in &fails {
        *counts.entry(f.variant.clone()).or_insert(0) += 1;
        let overlaps = down.iter().any(|&(k, u)| k <= f.end && u >= f.start);
        match f.variant.as_str() {
            "Timeout" | "Busy" => {}
            "Disconnected" | "NoServer" | "Aborted" if overlaps => {}
            "Disconnected" | "NoServer" | "Aborted" => tally.add(
                Kind::Wrong,
                1,
                &format!(
                    "{}: {} ({}) while no server died between the call's send and its failure",
                    f.who, f.variant, f.text
                ),
            ),
            _ => tally.add(
                Kind::Wrong,
                1,
                &format!("{}: unexpected {} ({})", f.who, f.variant, f.text),
            ),
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    tally.note(
        "typed_failures",
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(" ")
        },
    );
    tally.note("server_deaths", down.len());
    Ok(())
}
