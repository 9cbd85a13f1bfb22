//! Queues across hosts. A queue is owned by one host: the host whose bridge exports it. Other
//! hosts import it, and their applications use it with the ordinary API, through a local copy.
//!
//! **Owner** (a local queue matching an export pattern): the bridge joins the queue as one
//! producer and one consumer, and declares three queryables. Each runs on one of two threads.
//! - `P/queue/<name>/send` (the *accept* thread): each query is one message. The producer sends
//!   it (policy `Fail`; a durable queue syncs it first, `SyncPolicy::Always`), and the reply
//!   carries the message's position. An error reply names why not (`F` full, `S` storage,
//!   `A` malformed or refused). So an `Ok` reply means the owner has the message, durably if
//!   the queue is durable.
//! - `P/queue/<name>/pull` (the *lend* thread): a pull asks for up to `n` messages, waiting up
//!   to the time its header says for the first. The consumer claims them, and each goes back as
//!   a reply with a token (`DeliveryHeader`). The deliveries stay held here, unacknowledged.
//! - `P/queue/<name>/ack` (also the lend thread): names tokens, and acknowledges their
//!   deliveries.
//!
//! A delivery that no `ack` names within the queue's visibility timeout is taken back by the
//! queue, as any consumer's would be, and delivered again. That covers a remote consumer,
//! its bridge, or the link dying. The lend thread then lets go of its copy.
//!
//! **Importer** (a remote export matching an import pattern): the bridge creates the local copy
//! `<name>` (the owner's capacity, message size, participants and visibility timeout; in
//! memory; no delivery limit). It also creates the outbox `<name>--outbox`, of the same shape,
//! and marks the copy *forwarded*. Two threads run:
//! - The *forward* thread consumes the outbox. It sends each message to the owner (up to
//!   [`FORWARDS`] at once), and acknowledges it in the outbox once the owner replied `Ok`;
//!   otherwise it hands it back and retries after a pause. A local producer's `send` to a forwarded queue writes the outbox and
//!   returns once its message is acknowledged there ([`ringbus::Producer::send`]). So it
//!   returns `Ok` only once the owner accepted the message.
//! - The *fetch* thread pulls messages while the copy has a live consumer and every message in
//!   it is claimed by one (`Producer::unclaimed` is 0), at most [`WINDOW`] unacknowledged here
//!   at once. It puts them into the copy, and names each back in an `ack` once its local
//!   delivery is acknowledged ([`ringbus::Producer::acknowledged`]). The owner lends each
//!   message with a claim of its own (`claim_batch(1)`), so nothing waits at the owner with its
//!   visibility timeout running.
//!
//! At least once: a message the owner lent is acknowledged there only after a consumer here
//! acknowledged it. Everything else comes back to the owner's queue after its visibility
//! timeout: a consumer here that died (the copy delivers it again here meanwhile), this bridge,
//! or the link. A message may therefore be delivered twice, here and elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringbus::admin::Kind;
use ringbus::queue::Policy;
use ringbus::{Bytes, Consumer, OpenMode, Producer, ReceiveError, SendError, Shape, SyncPolicy};
use zenoh::query::{ConsolidationMode, Query, QueryTarget, Reply};
use zenoh::sample::Locality;
use zenoh::Wait;

use crate::bridge::{Ctx, Route};
use crate::stats::add;
use crate::wire::{CallHeader, DeliveryHeader};
use crate::BridgeError;

/// Messages an importing host holds unacknowledged at once: pulled from the owner, not yet
/// acknowledged by a consumer here.
pub const WINDOW: usize = 16;
/// Deliveries an owner lends to other hosts at once (its consumer's prefetch; at most the
/// queue's capacity).
const LEND: usize = 64;
/// How long an owner holds a pull that finds no message, waiting for one.
const PULL_WAIT: Duration = Duration::from_millis(500);
/// How long a forwarded send waits for the owner's reply before it is retried.
const SEND_WAIT: Duration = Duration::from_secs(2);
/// Most forwarded sends in flight at once (the outbox consumer's prefetch).
const FORWARDS: usize = 16;
/// How often the forward thread, with sends in flight, looks for new outbox messages.
const FORWARD_POLL: Duration = Duration::from_millis(1);
/// The pause before retrying after a failed send or an empty pull.
const RETRY: Duration = Duration::from_millis(20);
/// How often a thread with something in hand (a pull to serve, deliveries to settle) looks
/// again.
const POLL: Duration = Duration::from_millis(2);
/// How long an idle thread waits before checking its stop flag.
const IDLE: Duration = Duration::from_millis(50);
/// Most tokens one `ack` names.
const MAX_ACKS: usize = 4096;

/// Why an owner refused a send: the first byte of its error reply.
const REFUSED_FULL: u8 = b'F';
const REFUSED_STORAGE: u8 = b'S';
const REFUSED_BAD: u8 = b'A';

/// Size limits of a queue's messages.
#[derive(Clone, Copy)]
struct Limits {
    max: usize,
    fixed: Option<usize>,
}

impl Limits {
    fn of(shape: &Shape) -> Limits {
        Limits {
            max: shape.max_message_size(),
            fixed: shape.fixed_size(),
        }
    }

    fn fits(&self, len: usize) -> bool {
        len <= self.max && self.fixed.map_or(true, |f| f == len)
    }
}

/// Whether a local queue may be exported: not a forwarded copy or outbox this bridge (or
/// another) keeps.
pub(crate) fn exportable(ctx: &Ctx, name: &str) -> bool {
    let q = &ctx.config.queues;
    q.exports(name) && !q.imports(name) && !name.ends_with(ringbus::layout::queue::OUTBOX_SUFFIX)
}

/// A thread that runs `a` and `b` side by side until `stop`.
fn spawn_pair(
    thread: String,
    stop: Arc<AtomicBool>,
    a: impl FnOnce(&AtomicBool) + Send + 'static,
    b: impl FnOnce(&AtomicBool) + Send + 'static,
) -> Result<Route, BridgeError> {
    let s = stop.clone();
    let handle = std::thread::Builder::new()
        .name(thread)
        .spawn(move || {
            std::thread::scope(|scope| {
                scope.spawn(|| a(&s));
                b(&s);
                // One ending ends both (a closed session, a segment gone).
                // Relaxed: a stop request; the scope joins the other.
                s.store(true, Ordering::Relaxed);
            })
        })
        .map_err(|e| BridgeError::Io(e.to_string()))?;
    Ok(Route::new(stop, handle))
}

/// What a query to an owner asks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Pull,
    Ack,
}

/// Declares a complete queryable on `key` for other hosts' queries, handing them to `tx`.
fn queryable<T: Send + 'static>(
    ctx: &Ctx,
    key: String,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(Query) -> T + Send + Sync + 'static,
) -> Result<zenoh::query::Queryable<()>, BridgeError> {
    ctx.session
        .declare_queryable(key)
        .complete(true)
        .allowed_origin(Locality::Remote)
        .callback(move |q| {
            let _ = tx.send(wrap(q));
        })
        .wait()
        .map_err(BridgeError::zenoh)
}

/// The call header of a query, if it is well formed and of `digest` (counted otherwise).
fn checked(ctx: &Ctx, q: &Query, digest: u64) -> Option<CallHeader> {
    let c = &ctx.counters;
    let Some(h) = q
        .attachment()
        .and_then(|a| CallHeader::decode(&a.to_bytes()))
    else {
        add(&c.dropped_malformed, 1);
        return None;
    };
    if h.digest != digest {
        add(&c.dropped_mismatch, 1);
        return None;
    }
    Some(h)
}

/// Starts exporting local queue `name` of `shape` (this host owns it).
pub(crate) fn export(ctx: &Arc<Ctx>, name: &str, shape: &Shape) -> Result<Route, BridgeError> {
    let mut builder = ctx
        .node
        .queue_shaped(name, shape)?
        .open_mode(OpenMode::OpenExisting)
        .policy(Policy::Fail)
        .sync_policy(SyncPolicy::Always)
        .prefetch(LEND)
        // One claim per message lent: nothing waits in the bridge with its deadline running.
        .claim_batch(1);
    if shape.is_durable() {
        let dir = ctx.config.queues.dir.clone().ok_or_else(|| {
            BridgeError::Config(format!("queue {name} is durable: set queues.dir"))
        })?;
        builder = builder.durable(dir);
    }
    let producer = builder.producer()?;
    let consumer = builder.consumer()?;
    let (tx, send_rx) = mpsc::channel();
    let sends = queryable(ctx, ctx.keys.queue(name, "send"), tx, |q| q)?;
    // Pulls and acks share one channel: the lend thread wakes for either.
    let (tx, lend_rx) = mpsc::channel();
    let pulls = queryable(ctx, ctx.keys.queue(name, "pull"), tx.clone(), |q| {
        (Op::Pull, q)
    })?;
    let acks = queryable(ctx, ctx.keys.queue(name, "ack"), tx, |q| (Op::Ack, q))?;
    let announce = ctx.announce(Kind::Queue, name, shape)?;
    let digest = shape.digest();
    let limits = Limits::of(shape);
    let visibility = shape
        .visibility_timeout()
        .unwrap_or(Duration::from_secs(30));
    let (c1, c2) = (ctx.clone(), ctx.clone());
    spawn_pair(
        format!("ringbus-zenoh-own-{name}"),
        Arc::new(AtomicBool::new(false)),
        move |stop| {
            let _keep = sends;
            accept(&c1, producer, &send_rx, stop, digest, limits);
        },
        move |stop| {
            let _keep = (pulls, acks, announce);
            lend(&c2, &consumer, &lend_rx, stop, digest, visibility);
        },
    )
}

/// The accept thread: one local send per remote send.
fn accept(
    ctx: &Ctx,
    mut producer: Producer<Bytes>,
    queries: &mpsc::Receiver<Query>,
    stop: &AtomicBool,
    digest: u64,
    limits: Limits,
) {
    // Relaxed: a stop request; the route joins this thread.
    while !stop.load(Ordering::Relaxed) {
        let q = match queries.recv_timeout(IDLE) {
            Ok(q) => q,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let refuse = |why: u8| {
            let _ = q.reply_err(vec![why]).wait();
        };
        if checked(ctx, &q, digest).is_none() {
            refuse(REFUSED_BAD);
            continue;
        }
        let message = q.payload().map(|p| p.to_bytes()).unwrap_or_default();
        if !limits.fits(message.len()) {
            add(&ctx.counters.dropped_malformed, 1);
            refuse(REFUSED_BAD);
            continue;
        }
        match producer.send(&message) {
            Ok(pos) => {
                add(&ctx.counters.queue_accepted, 1);
                let _ = q
                    .reply(q.key_expr().clone(), pos.to_le_bytes().to_vec())
                    .wait();
            }
            Err(SendError::Storage(_)) => refuse(REFUSED_STORAGE),
            Err(_) => refuse(REFUSED_FULL),
        }
    }
}

/// The lend thread: deliveries for other hosts' pulls, and their acknowledgements.
fn lend(
    ctx: &Ctx,
    consumer: &Consumer<Bytes>,
    queries: &mpsc::Receiver<(Op, Query)>,
    stop: &AtomicBool,
    digest: u64,
    visibility: Duration,
) {
    let c = &ctx.counters;
    // Tokens need only be unique among this bridge's held deliveries; starting from the clock
    // keeps a restarted bridge from reusing a token a late ack still names.
    let mut next_token = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut held: HashMap<u64, (ringbus::Delivery<'_, Bytes>, Instant)> = HashMap::new();
    let mut pulls: VecDeque<(Query, usize, Instant)> = VecDeque::new();
    // Relaxed: a stop request; the route joins this thread.
    while !stop.load(Ordering::Relaxed) {
        let wait = if pulls.is_empty() {
            IDLE
        } else {
            Duration::ZERO
        };
        let first = match queries.recv_timeout(wait) {
            Ok(q) => Some(q),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        for (op, q) in first.into_iter().chain(queries.try_iter()) {
            let Some(h) = checked(ctx, &q, digest) else {
                let _ = q.reply_err(vec![REFUSED_BAD]).wait();
                continue;
            };
            if op == Op::Pull {
                let want = q
                    .payload()
                    .map(|p| p.to_bytes())
                    .and_then(|b| Some(u32::from_le_bytes(b.as_ref().try_into().ok()?)));
                let Some(want) = want.filter(|&n| n > 0) else {
                    add(&c.dropped_malformed, 1);
                    let _ = q.reply_err(vec![REFUSED_BAD]).wait();
                    continue;
                };
                let wait = Duration::from_nanos(h.timeout_ns).min(PULL_WAIT);
                pulls.push_back((q, (want as usize).min(LEND), Instant::now() + wait));
                continue;
            }
            let tokens = q.payload().map(|p| p.to_bytes()).unwrap_or_default();
            if tokens.len() % 8 != 0 || tokens.len() / 8 > MAX_ACKS {
                add(&c.dropped_malformed, 1);
                let _ = q.reply_err(vec![REFUSED_BAD]).wait();
                continue;
            }
            for t in tokens.chunks_exact(8) {
                let t = u64::from_le_bytes(t.try_into().expect("8 bytes"));
                // An unknown token (taken back already, or never lent) is ignored.
                if let Some((d, _)) = held.remove(&t) {
                    if d.ack().is_ok() {
                        add(&c.queue_acked, 1);
                    }
                }
            }
            let _ = q.reply(q.key_expr().clone(), Vec::<u8>::new()).wait();
        }
        // Deliveries the queue took back at their deadline: let go of them.
        held.retain(|_, (_, at)| at.elapsed() < visibility);
        // The oldest pull.
        let Some((_, want, deadline)) = pulls.front() else {
            continue;
        };
        let (want, deadline) = (*want, *deadline);
        let mut got = Vec::new();
        while got.len() < want {
            match consumer.try_receive() {
                Ok(d) => got.push(d),
                Err(ReceiveError::Invalid(_)) => continue,
                Err(_) => break,
            }
        }
        if got.is_empty() && Instant::now() < deadline {
            match consumer.receive_timeout(POLL) {
                Ok(d) => got.push(d),
                // Lending our prefetch already: wait for acknowledgements.
                Err(ReceiveError::TooManyHeld(_)) => std::thread::sleep(POLL),
                Err(_) => {}
            }
        }
        if got.is_empty() && Instant::now() < deadline {
            continue;
        }
        let (q, _, _) = pulls.pop_front().expect("looked at above");
        if got.is_empty() {
            let end = DeliveryHeader {
                last: true,
                nodata: true,
                seq: 0,
                token: 0,
            };
            let _ = q
                .reply(q.key_expr().clone(), Vec::<u8>::new())
                .attachment(end.encode().to_vec())
                .wait();
            continue;
        }
        let n = got.len();
        for (i, d) in got.into_iter().enumerate() {
            next_token = next_token.wrapping_add(1);
            let header = DeliveryHeader {
                last: i + 1 == n,
                nodata: false,
                seq: i as u64,
                token: next_token,
            };
            let bytes: &[u8] = &d;
            let sent = q
                .reply(q.key_expr().clone(), bytes.to_vec())
                .attachment(header.encode().to_vec())
                .wait();
            if sent.is_err() {
                // The pull is gone (its querier, or the session): this delivery and the rest
                // are handed back at once, dropped with `got`.
                break;
            }
            add(&c.queue_lent, 1);
            held.insert(next_token, (d, Instant::now()));
        }
    }
}

/// Starts using queue `name` of `shape`, owned by another host, here.
pub(crate) fn import(ctx: &Arc<Ctx>, name: &str, shape: &Shape) -> Result<Route, BridgeError> {
    let outbox_name = ringbus::layout::queue::outbox_name(name)
        .ok_or_else(|| BridgeError::Config(format!("queue name {name} is too long to import")))?;
    let visibility = shape
        .visibility_timeout()
        .unwrap_or(Duration::from_secs(30));
    // The outbox first: a producer that sees the copy forwarded must find it.
    let outbox = ctx
        .node
        .queue_shaped(&outbox_name, shape)?
        .visibility_timeout(ringbus::layout::queue::OUTBOX_VISIBILITY)
        .prefetch(FORWARDS)
        .claim_batch(1)
        .consumer()?;
    let copy = ctx
        .node
        .queue_shaped(name, shape)?
        .visibility_timeout(visibility)
        .policy(Policy::Fail)
        .forwarded_copy(true)
        .producer()?;
    let digest = shape.digest();
    let limits = Limits::of(shape);
    let (c1, c2, n1, n2) = (ctx.clone(), ctx.clone(), name.to_string(), name.to_string());
    spawn_pair(
        format!("ringbus-zenoh-use-{name}"),
        Arc::new(AtomicBool::new(false)),
        move |stop| forward(&c1, &n1, &outbox, stop, digest),
        move |stop| {
            let mut copy = copy;
            fetch(&c2, &n2, &mut copy, stop, digest, limits)
        },
    )
}

/// The forward thread: the outbox's messages to the owner, up to [`FORWARDS`] at once (each
/// waiting producer has one message in flight, so each producer's order is kept).
fn forward(ctx: &Ctx, name: &str, outbox: &Consumer<Bytes>, stop: &AtomicBool, digest: u64) {
    let key = ctx.keys.queue(name, "send");
    let header = CallHeader {
        timeout_ns: 0,
        digest,
    };
    let (tx, answers) = mpsc::channel::<(u64, bool)>();
    let mut flying: HashMap<u64, (ringbus::Delivery<'_, Bytes>, Instant)> = HashMap::new();
    let mut next_id = 0u64;
    let mut paused_until = Instant::now();
    // Relaxed: a stop request; the route joins this thread.
    while !stop.load(Ordering::Relaxed) {
        if flying.len() < FORWARDS && Instant::now() >= paused_until {
            let got = if flying.is_empty() {
                outbox.receive_timeout(IDLE)
            } else {
                outbox.try_receive()
            };
            if let Ok(d) = got {
                next_id += 1;
                let answer = std::sync::Mutex::new(Answer {
                    id: next_id,
                    tx: tx.clone(),
                    given: false,
                });
                let bytes: &[u8] = &d;
                // The answer is given by the first reply, or (false) when the query ends
                // without one: zenoh drops the callback then.
                let _ = ctx
                    .session
                    .get(&key)
                    .payload(bytes.to_vec())
                    .attachment(header.encode().to_vec())
                    .target(QueryTarget::BestMatching)
                    .allowed_destination(Locality::Remote)
                    .consolidation(ConsolidationMode::None)
                    .timeout(SEND_WAIT)
                    .callback(move |r: Reply| {
                        let mut a = answer.lock().unwrap_or_else(|e| e.into_inner());
                        a.give(r.result().is_ok());
                    })
                    .wait();
                flying.insert(next_id, (d, Instant::now()));
                continue;
            }
            if flying.is_empty() {
                continue;
            }
        }
        // A query zenoh never finalized (it does, at its timeout): handed back.
        let before = flying.len();
        flying.retain(|_, (_, at)| at.elapsed() < SEND_WAIT * 2);
        if flying.len() < before {
            paused_until = Instant::now() + RETRY;
        }
        let wait = if flying.is_empty() {
            RETRY
        } else {
            FORWARD_POLL
        };
        let Ok((id, accepted)) = answers.recv_timeout(wait) else {
            continue;
        };
        let Some((d, _)) = flying.remove(&id) else {
            // Given up already (above).
            continue;
        };
        if accepted {
            add(&ctx.counters.queue_forwarded, 1);
            // The producer waiting for this acknowledgement returns Ok.
            let _ = d.ack();
        } else {
            // Back to the outbox, retried after a pause (the owner full, or unreachable).
            drop(d);
            paused_until = Instant::now() + RETRY;
        }
    }
}

/// The outcome of one forwarded send, given once: by its first reply, or as a failure when its
/// query ends without one (the callback holding it is dropped).
struct Answer {
    id: u64,
    tx: mpsc::Sender<(u64, bool)>,
    given: bool,
}

impl Answer {
    fn give(&mut self, accepted: bool) {
        if !self.given {
            self.given = true;
            let _ = self.tx.send((self.id, accepted));
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.give(false);
    }
}

/// The fetch thread: the owner's messages into the local copy while it has consumers, and
/// their acknowledgements back.
fn fetch(
    ctx: &Ctx,
    name: &str,
    copy: &mut Producer<Bytes>,
    stop: &AtomicBool,
    digest: u64,
    limits: Limits,
) {
    let c = &ctx.counters;
    let (pull_key, ack_key) = (ctx.keys.queue(name, "pull"), ctx.keys.queue(name, "ack"));
    // Positions in the copy of messages pulled and not yet acknowledged here, with their
    // tokens.
    let mut inflight: Vec<(u64, u64)> = Vec::new();
    // The pull in progress: its replies, and the number of the next one.
    let mut pulling: Option<(mpsc::Receiver<Reply>, u64)> = None;
    let mut next_pull = Instant::now();
    // Relaxed: a stop request; the route joins this thread.
    while !stop.load(Ordering::Relaxed) {
        let mut done = Vec::new();
        // Kept until acknowledged here, also past the owner's visibility timeout (its ack is
        // then ignored there): a message still in the copy takes room in the window, so a slow
        // consumer here is not sent more than it takes.
        inflight.retain(|&(pos, token)| {
            let acked = copy.acknowledged(pos);
            if acked {
                done.push(token);
            }
            !acked
        });
        for tokens in done.chunks(MAX_ACKS) {
            let payload: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
            // Not waited for: an ack that is lost leaves the delivery to the owner's
            // visibility timeout (delivered again: at least once).
            let _ = ctx
                .session
                .get(&ack_key)
                .payload(payload)
                .attachment(
                    CallHeader {
                        timeout_ns: 0,
                        digest,
                    }
                    .encode()
                    .to_vec(),
                )
                .target(QueryTarget::BestMatching)
                .allowed_destination(Locality::Remote)
                .timeout(SEND_WAIT)
                .callback(|_| {})
                .wait();
        }
        let nap = if inflight.is_empty() { IDLE } else { POLL };
        let Some((replies, seq)) = pulling.as_mut() else {
            let room = WINDOW.saturating_sub(inflight.len());
            // Only while every message in the copy is in a consumer's hands: the owner's
            // visibility timeout runs from the pull, so nothing should wait here unclaimed.
            let wanted = room > 0 && copy.unclaimed() == 0 && copy.has_consumer();
            if !wanted || Instant::now() < next_pull {
                std::thread::sleep(nap.min(RETRY));
                continue;
            }
            let (tx, rx) = mpsc::channel();
            let asked = ctx
                .session
                .get(&pull_key)
                .payload((room as u32).to_le_bytes().to_vec())
                .attachment(
                    CallHeader {
                        timeout_ns: PULL_WAIT.as_nanos() as u64,
                        digest,
                    }
                    .encode()
                    .to_vec(),
                )
                .target(QueryTarget::BestMatching)
                .allowed_destination(Locality::Remote)
                .consolidation(ConsolidationMode::None)
                .timeout(PULL_WAIT + SEND_WAIT)
                .callback(move |r| {
                    let _ = tx.send(r);
                })
                .wait();
            if asked.is_ok() {
                pulling = Some((rx, 0));
            } else {
                next_pull = Instant::now() + RETRY;
            }
            continue;
        };
        let reply = match replies.recv_timeout(nap) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The pull ended without its last reply (no owner reachable, or it went).
                pulling = None;
                next_pull = Instant::now() + RETRY;
                continue;
            }
        };
        let Ok(sample) = reply.result() else {
            pulling = None;
            next_pull = Instant::now() + RETRY;
            continue;
        };
        let header = sample
            .attachment()
            .and_then(|a| DeliveryHeader::decode(&a.to_bytes()));
        let payload = sample.payload().to_bytes();
        let Some(h) = header.filter(|h| h.seq == *seq && (!h.nodata || payload.is_empty())) else {
            add(&c.dropped_malformed, 1);
            pulling = None;
            next_pull = Instant::now() + RETRY;
            continue;
        };
        *seq += 1;
        if h.last {
            pulling = None;
            if h.nodata {
                next_pull = Instant::now() + RETRY;
            }
        }
        if h.nodata {
            continue;
        }
        if !limits.fits(payload.len()) {
            // Left to the owner's visibility timeout; a well-formed owner never sends it.
            add(&c.dropped_malformed, 1);
            continue;
        }
        match copy.send(&payload) {
            Ok(pos) => {
                add(&c.queue_received, 1);
                inflight.push((pos, h.token));
            }
            Err(_) => add(&c.queue_refused, 1),
        }
    }
}
