//! Services across hosts.
//!
//! **Export** (a local service matching an export pattern, while an ordinary, live server
//! serves it): the bridge declares a complete queryable on `P/service/<name>` and a thread runs
//! one client of the service (opened with its shape). Each query becomes a call: the request
//! bytes as they came, the caller's timeout from the [`CallHeader`]. Each response goes back
//! as a reply with a [`ReplyHeader`] (numbered; the last one flagged), a failure as an error
//! reply naming it ([`Fail`]); the query ends when the call does. All calls of the service
//! are in flight at once on that one thread (futures of one client, up to its in-flight limit).
//!
//! **Import** (a remote export matching an import pattern, found by its liveliness token): the
//! bridge registers a *fallback server* (`ServiceBuilder::fallback_server`) in the local
//! service, opened with the export's shape: it takes calls only while no local server is
//! registered, so a local server is preferred. Each call it takes becomes a zenoh query
//! (target: the best matching complete queryable, so exactly one exporting host answers;
//! no consolidation, so a stream's responses arrive as they are sent) and the replies are
//! handed to the caller: one reply flagged last is a plain response, more are a stream, an
//! error reply is the caller's `Timeout`, `NoServer` or `Disconnected` (`Request::fail`), and
//! a query that ends without its last reply (the other host, its bridge or the link died) is
//! `Disconnected`. The carried timeout is the caller's own (`Request::caller_timeout`). When
//! the last host exporting the service goes, the fallback server leaves: callers here get
//! `NoServer` again at once.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use ringbus::admin::Kind;
use ringbus::service::Failure;
use ringbus::{Bytes, CallError, Client, OpenMode, Request, Shape};
use zenoh::query::{ConsolidationMode, Query, QueryTarget, Reply};
use zenoh::sample::Locality;
use zenoh::Wait;

use crate::bridge::{Ctx, Route};
use crate::stats::add;
use crate::wire::{CallHeader, Fail, ReplyHeader};
use crate::BridgeError;

/// Added to the carried timeout for the zenoh query, so that the exporting side's own
/// `Timeout` (or answer) arrives before zenoh gives up on the query.
const GRACE: Duration = Duration::from_millis(200);
/// A relayed call's zenoh query lives at most this many caller timeouts (plus [`GRACE`]): the
/// exporting side waits one caller timeout per response, as a local caller does, so a stream
/// of many responses may outlive one timeout, but not this many.
const STREAM_SPAN: u32 = 64;

/// Runs `work` on a new thread with a single-threaded executor until `stop` fires.
fn spawn_local<F, W>(name: String, make: W) -> Result<Route, BridgeError>
where
    W: FnOnce(oneshot::Receiver<()>) -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || futures::executor::block_on(make(rx)))
        .map_err(|e| BridgeError::Io(e.to_string()))?;
    Ok(Route::with_signal(
        Arc::new(AtomicBool::new(false)),
        tx,
        thread,
    ))
}

/// Starts exporting local service `name` of `shape`.
pub(crate) fn export(ctx: &Arc<Ctx>, name: &str, shape: &Shape) -> Result<Route, BridgeError> {
    let builder = ctx
        .node
        .service_shaped(name, shape)?
        .open_mode(OpenMode::OpenExisting);
    let client = builder.client()?;
    let (tx, queries) = mpsc::unbounded::<Query>();
    let queryable = ctx
        .session
        .declare_queryable(ctx.keys.service(name))
        .complete(true)
        // Calls of other hosts only: this host's own relay must never reach its own export.
        .allowed_origin(Locality::Remote)
        .callback(move |q| {
            let _ = tx.unbounded_send(q);
        })
        .wait()
        .map_err(BridgeError::zenoh)?;
    let announce = ctx.announce(Kind::Service, name, shape)?;
    let (ctx, digest) = (ctx.clone(), shape.digest());
    let limits = Limits::of(shape);
    spawn_local(
        format!("ringbus-zenoh-serve-{name}"),
        move |stop| async move {
            let _keep = (queryable, announce);
            let mut queries = queries.fuse();
            let mut stop = stop.fuse();
            let mut calls = FuturesUnordered::new();
            loop {
                futures::select! {
                    q = queries.next() => match q {
                        Some(q) => calls.push(serve(&ctx, &client, q, digest, limits)),
                        None => break,
                    },
                    _ = calls.select_next_some() => {},
                    _ = stop => break,
                }
            }
        },
    )
}

/// Request and response size limits of a shape.
#[derive(Clone, Copy)]
struct Limits {
    request: usize,
    request_fixed: Option<usize>,
    response: usize,
}

impl Limits {
    fn of(shape: &Shape) -> Limits {
        Limits {
            request: shape.max_message_size(),
            request_fixed: shape.fixed_size(),
            response: shape.max_response_size().unwrap_or(0),
        }
    }
}

/// The failure a call error is relayed as.
fn fail_of(e: &CallError) -> Fail {
    match e {
        CallError::Timeout(_) => Fail::Timeout,
        CallError::NoServer => Fail::NoServer,
        CallError::Disconnected => Fail::Disconnected,
        _ => Fail::Aborted,
    }
}

/// Answers one query with a call to the local service.
async fn serve(ctx: &Ctx, client: &Client<Bytes, Bytes>, q: Query, digest: u64, limits: Limits) {
    let c = &ctx.counters;
    add(&c.calls_served, 1);
    let refuse = |why: Fail| {
        let _ = q.reply_err(vec![why.byte()]).wait();
    };
    let Some(header) = q
        .attachment()
        .and_then(|a| CallHeader::decode(&a.to_bytes()))
    else {
        add(&c.dropped_malformed, 1);
        return refuse(Fail::Aborted);
    };
    if header.digest != digest {
        add(&c.dropped_mismatch, 1);
        return refuse(Fail::Aborted);
    }
    let request = q.payload().map(|p| p.to_bytes()).unwrap_or_default();
    if request.len() > limits.request || limits.request_fixed.is_some_and(|f| f != request.len()) {
        add(&c.dropped_malformed, 1);
        return refuse(Fail::Aborted);
    }
    let timeout = match header.timeout_ns {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    };
    let mut pending = match client.send(&request) {
        Ok(p) => p,
        Err(e) => return refuse(fail_of(&e)),
    };
    let mut seq = 0;
    loop {
        let next = match timeout {
            // Per response, as a local caller waits.
            Some(t) => pending.next_response_timeout_async(t),
            None => pending.next_response_async(),
        };
        let (payload, header) = match next.await {
            Ok(Some(response)) => {
                let last = response.is_last();
                let bytes: &[u8] = &response;
                (
                    bytes.to_vec(),
                    ReplyHeader {
                        last,
                        nodata: false,
                        seq,
                    },
                )
            }
            Ok(None) => (
                Vec::new(),
                ReplyHeader {
                    last: true,
                    nodata: true,
                    seq,
                },
            ),
            Err(e) => return refuse(fail_of(&e)),
        };
        seq += 1;
        let sent = q
            .reply(q.key_expr().clone(), payload)
            .attachment(header.encode().to_vec())
            .wait();
        if header.last || sent.is_err() {
            // Dropping the query (and the call) ends both.
            return;
        }
    }
}

/// Starts relaying calls of local service `name` to the hosts that export it.
pub(crate) fn import(ctx: &Arc<Ctx>, name: &str, shape: &Shape) -> Result<Route, BridgeError> {
    let server = ctx.node.service_shaped(name, shape)?.fallback_server()?;
    let (ctx, name, digest) = (ctx.clone(), name.to_string(), shape.digest());
    let limits = Limits::of(shape);
    spawn_local(
        format!("ringbus-zenoh-relay-{name}"),
        move |stop| async move {
            let mut stop = stop.fuse();
            let mut relays = FuturesUnordered::new();
            // One receive at a time (its doorbell bit is the server's); the calls it hands out
            // are relayed concurrently.
            let mut receiving = Box::pin(server.receive_async_shared().fuse());
            loop {
                futures::select! {
                    got = receiving => {
                        if let Ok(req) = got {
                            relays.push(relay(&ctx, &name, req, digest, limits));
                        }
                        receiving = Box::pin(server.receive_async_shared().fuse());
                    },
                    _ = relays.select_next_some() => {},
                    _ = stop => break,
                }
            }
            drop(receiving);
            drop(relays);
            drop(server);
        },
    )
}

/// The caller's view of a relayed call while its replies come in.
enum Answer<'s> {
    /// Nothing sent yet.
    Unsent(Request<'s, Bytes, Bytes>),
    /// Streaming.
    Stream(ringbus::ResponseStream<'s, Bytes, Bytes>),
}

impl Answer<'_> {
    /// Ends the call with `fail` (a stream keeps the responses sent before).
    fn fail(self, fail: Fail) {
        let failure = match fail {
            Fail::Timeout => Failure::Timeout,
            Fail::NoServer => Failure::NoServer,
            Fail::Disconnected => Failure::Disconnected,
            Fail::Aborted => match self {
                // Dropped unanswered: the caller is told `Aborted`.
                Answer::Unsent(req) => return drop(req),
                // A stream dropped would end cleanly: say what happened instead.
                Answer::Stream(_) => Failure::Disconnected,
            },
        };
        let _ = match self {
            Answer::Unsent(req) => req.fail(failure),
            Answer::Stream(s) => s.fail(failure),
        };
    }
}

/// Relays one local call to the exporting host and hands back its replies.
async fn relay(ctx: &Ctx, name: &str, req: Request<'_, Bytes, Bytes>, digest: u64, limits: Limits) {
    let c = &ctx.counters;
    add(&c.calls_relayed, 1);
    let timeout = req.caller_timeout().unwrap_or(Duration::from_secs(1));
    let header = CallHeader {
        timeout_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
        digest,
    };
    let request: &[u8] = &req;
    let (tx, mut replies) = mpsc::unbounded::<Reply>();
    let asked = ctx
        .session
        .get(ctx.keys.service(name))
        .payload(request.to_vec())
        .attachment(header.encode().to_vec())
        .target(QueryTarget::BestMatching)
        // Never this host's own export (which would hand the call back to this relay).
        .allowed_destination(Locality::Remote)
        .consolidation(ConsolidationMode::None)
        .timeout(timeout.saturating_mul(STREAM_SPAN).saturating_add(GRACE))
        .callback(move |r| {
            let _ = tx.unbounded_send(r);
        })
        .wait();
    let mut answer = Relayed(Some(Answer::Unsent(req)));
    if asked.is_err() {
        add(&c.calls_failed, 1);
        return answer.fail(Fail::Disconnected);
    }
    let mut seq = 0;
    loop {
        let Some(reply) = replies.next().await else {
            // The query ended without its last reply: the other host, its bridge or the link
            // died (or no host answers the service any more).
            add(&c.calls_failed, 1);
            return answer.fail(Fail::Disconnected);
        };
        let sample = match reply.result() {
            Ok(s) => s,
            Err(e) => {
                add(&c.calls_failed, 1);
                return answer.fail(Fail::decode(&e.payload().to_bytes()));
            }
        };
        let header = sample
            .attachment()
            .and_then(|a| ReplyHeader::decode(&a.to_bytes()));
        let payload = sample.payload().to_bytes();
        let Some(h) = header.filter(|h| {
            h.seq == seq && payload.len() <= limits.response && (!h.nodata || payload.is_empty())
        }) else {
            add(&c.dropped_malformed, 1);
            add(&c.calls_failed, 1);
            return answer.fail(Fail::Disconnected);
        };
        seq += 1;
        let stream = match answer.0.take() {
            Some(Answer::Unsent(req)) if h.last && !h.nodata => {
                let _ = req.respond(&payload);
                return;
            }
            Some(Answer::Unsent(req)) => req.stream(),
            Some(Answer::Stream(stream)) => stream,
            None => return,
        };
        let stream = answer.0.insert(Answer::Stream(stream));
        let Answer::Stream(stream) = stream else {
            unreachable!("just inserted")
        };
        if !h.nodata {
            match stream.send(&payload) {
                Ok(()) => {}
                // The caller reads too slowly: it is told (the stream does not look
                // complete), and dropping the query stops the other side.
                Err(ringbus::SendError::Timeout(_)) => return answer.fail(Fail::Timeout),
                // The caller is gone.
                Err(_) => return answer.forget(),
            }
        }
        if h.last {
            if let Some(Answer::Stream(s)) = answer.0.take() {
                let _ = s.end();
            }
            return;
        }
    }
}

/// A relayed call not yet ended. Dropped unended (its import route stopped: the last host
/// exporting the service went, or the bridge stops), it ends `Disconnected`: the caller learns
/// that the serving side went away, rather than `Aborted`.
struct Relayed<'s>(Option<Answer<'s>>);

impl Relayed<'_> {
    fn fail(mut self, fail: Fail) {
        if let Some(a) = self.0.take() {
            a.fail(fail);
        }
    }

    /// Drops the call as it is (its caller is gone).
    fn forget(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Relayed<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.fail(Fail::Disconnected);
        }
    }
}

/// Whether the service has an ordinary (not fallback), live server here: only then is it
/// exported (a fallback server is another bridge's relay, never exported again).
pub(crate) fn served_locally(info: &ringbus::admin::SegmentInfo) -> bool {
    info.participants
        .iter()
        .any(|p| p.role == "server" && p.alive)
}
