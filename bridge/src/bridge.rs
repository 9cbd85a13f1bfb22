//! The running bridge: its zenoh session, the local scan that finds what to export, the
//! discovery that finds what other hosts export, and the routes between them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use ringbus::admin::{Kind, Status};
use ringbus::{Node, Shape};
use zenoh::liveliness::LivelinessToken;
use zenoh::query::{Query, Queryable};
use zenoh::sample::{Locality, SampleKind};
use zenoh::{Session, Wait};

use crate::config::BridgeConfig;
use crate::keys::Keys;
use crate::stats::{Counters, Stats};
use crate::{queue, service, topic, BridgeError};

/// How often the local root is scanned for segments to export (and for exports to withdraw).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(50);
/// How often discovery retries a route it could not set up (a shape not fetched yet, a local
/// segment of another shape).
const RETRY: Duration = Duration::from_millis(200);
/// How long a shape fetch waits for the exporting bridge.
const SHAPE_WAIT: Duration = Duration::from_secs(1);

/// What every part of a bridge shares.
pub(crate) struct Ctx {
    pub(crate) node: Node,
    pub(crate) root: PathBuf,
    pub(crate) config: BridgeConfig,
    pub(crate) keys: Keys,
    pub(crate) session: Session,
    pub(crate) zid: String,
    pub(crate) counters: Counters,
    pub(crate) topics: topic::Imports,
}

/// An export's presence on the network: its liveliness token (which other bridges discover)
/// and the queryable answering its shape. Dropping it withdraws both.
pub(crate) struct Announcement {
    _shape: Queryable<()>,
    _token: LivelinessToken,
}

impl Ctx {
    /// Announces the export of `name` of `kind` with `shape`: the shape first, so that a
    /// bridge that sees the token can fetch it.
    pub(crate) fn announce(
        &self,
        kind: Kind,
        name: &str,
        shape: &Shape,
    ) -> Result<Announcement, BridgeError> {
        let bytes = shape.to_bytes();
        let shape = self
            .session
            .declare_queryable(self.keys.shape(kind, name, &self.zid))
            .callback(move |q: Query| {
                let _ = q.reply(q.key_expr().clone(), bytes.clone()).wait();
            })
            .wait()
            .map_err(BridgeError::zenoh)?;
        let token = self
            .session
            .liveliness()
            .declare_token(self.keys.live(kind, name, &self.zid))
            .wait()
            .map_err(BridgeError::zenoh)?;
        Ok(Announcement {
            _shape: shape,
            _token: token,
        })
    }

    /// The shape bridge `zid` exports `name` of `kind` with (None: no answer, or a malformed
    /// one, counted).
    fn fetch_shape(&self, kind: Kind, name: &str, zid: &str) -> Option<Shape> {
        let key = self.keys.shape(kind, name, zid);
        let replies = self.session.get(&key).timeout(SHAPE_WAIT).wait().ok()?;
        while let Ok(reply) = replies.recv() {
            if let Ok(sample) = reply.result() {
                if sample.key_expr().as_str() != key {
                    crate::stats::add(&self.counters.dropped_malformed, 1);
                    continue;
                }
                match Shape::from_bytes(&sample.payload().to_bytes()) {
                    Ok(shape) if shape.kind() == kind => return Some(shape),
                    _ => crate::stats::add(&self.counters.dropped_malformed, 1),
                }
            }
        }
        None
    }
}

/// A running route (an export, or an imported service's relay): a thread, stopped and joined
/// when the route drops.
pub(crate) struct Route {
    stop: Arc<AtomicBool>,
    signal: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Route {
    /// A thread that watches `stop`.
    pub(crate) fn new(stop: Arc<AtomicBool>, thread: JoinHandle<()>) -> Route {
        Route {
            stop,
            signal: None,
            thread: Some(thread),
        }
    }

    /// A thread that also awaits `signal`.
    pub(crate) fn with_signal(
        stop: Arc<AtomicBool>,
        signal: oneshot::Sender<()>,
        thread: JoinHandle<()>,
    ) -> Route {
        Route {
            stop,
            signal: Some(signal),
            thread: Some(thread),
        }
    }

    /// Whether its thread has ended by itself (a session closing, a segment gone).
    fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, |t| t.is_finished())
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        // Relaxed: the join below orders everything after.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.signal.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A network bridge: makes the configured local topics and services reachable from other
/// hosts, and those of other hosts reachable here ([`crate`] doc). Stops when dropped.
pub struct Bridge {
    ctx: Arc<Ctx>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
    _liveliness: Option<zenoh::pubsub::Subscriber<()>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("zid", &self.ctx.zid)
            .field("root", &self.ctx.root)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Starts a bridge for the segments of `node` (which must have a root directory: a bridge
    /// finds local topics and services by listing it) with `config`. Returns once the zenoh
    /// session is open and the import subscriptions are declared; the exports and the routes
    /// to other hosts follow within a scan ([`SCAN_INTERVAL`]) or as other bridges are
    /// discovered.
    ///
    /// Safe to call from any thread, including inside an async runtime (the session is opened
    /// on a thread of its own).
    pub fn start(node: &Node, config: BridgeConfig) -> Result<Bridge, BridgeError> {
        let root = node.root().ok_or(BridgeError::NoRoot)?.to_path_buf();
        let zconfig = config.zenoh_config()?;
        let session = std::thread::spawn(move || zenoh::open(zconfig).wait())
            .join()
            .map_err(|_| BridgeError::Zenoh("opening the session panicked".into()))?
            .map_err(BridgeError::zenoh)?;
        let zid = session.zid().to_string();
        let ctx = Arc::new(Ctx {
            node: node.clone(),
            root,
            keys: Keys::new(config.key_prefix()),
            config,
            session,
            zid,
            counters: Counters::default(),
            topics: topic::Imports::default(),
        });
        let mut subscribers = Vec::new();
        for pattern in &ctx.config.topics.import {
            let weak: Weak<Ctx> = Arc::downgrade(&ctx);
            let sub = ctx
                .session
                .declare_subscriber(ctx.keys.data_pattern(Kind::Topic, pattern))
                .allowed_origin(Locality::Remote)
                .callback(move |sample| {
                    if let Some(ctx) = weak.upgrade() {
                        ctx.topics.deliver(&ctx, &sample);
                    }
                })
                .wait()
                .map_err(BridgeError::zenoh)?;
            subscribers.push(sub);
        }
        let stop = Arc::new(AtomicBool::new(false));
        // From here an error drops `bridge`, which stops and joins what already runs.
        let mut bridge = Bridge {
            ctx: ctx.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
            _subscribers: subscribers,
            _liveliness: None,
        };
        let (c, s) = (ctx.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ringbus-zenoh-scan".into())
            .spawn(move || scan(&c, &s))
            .map_err(|e| BridgeError::Io(e.to_string()));
        bridge.threads.push(thread?);
        let has_imports = !ctx.config.topics.import.is_empty()
            || !ctx.config.services.import.is_empty()
            || !ctx.config.queues.import.is_empty();
        if has_imports {
            // Tokens go to a channel of our own, unbounded: zenoh's callback never waits for
            // the discovery thread (which may be fetching a shape).
            let (tx, tokens) = std::sync::mpsc::channel();
            let liveliness = ctx
                .session
                .liveliness()
                .declare_subscriber(ctx.keys.live_all(None))
                .history(true)
                .callback(move |sample| {
                    let _ = tx.send(sample);
                })
                .wait()
                .map_err(BridgeError::zenoh)?;
            let (c, s) = (ctx.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("ringbus-zenoh-discover".into())
                .spawn(move || discover(&c, &s, &tokens))
                .map_err(|e| BridgeError::Io(e.to_string()));
            bridge.threads.push(thread?);
            bridge._liveliness = Some(liveliness);
        }
        Ok(bridge)
    }

    /// The bridge's zenoh id (hex), as other hosts see it in `ringbus list --remote`.
    pub fn zid(&self) -> &str {
        &self.ctx.zid
    }

    /// What it has done so far.
    pub fn stats(&self) -> Stats {
        self.ctx.counters.snapshot()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Relaxed: the joins below order everything after.
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self._subscribers.clear();
        self._liveliness = None;
        let session = self.ctx.session.clone();
        // Closing blocks on zenoh's runtime: on a thread of its own, as opening.
        let _ = std::thread::spawn(move || session.close().wait()).join();
    }
}

/// The scan loop: exports what the root holds and the configuration names; withdraws exports
/// whose segment went (or, for a service, whose last ordinary server left).
fn scan(ctx: &Arc<Ctx>, stop: &AtomicBool) {
    let mut exports: HashMap<(Kind, String), Route> = HashMap::new();
    // Relaxed: a stop request; the bridge joins this thread.
    while !stop.load(Ordering::Relaxed) {
        let mut listed: Vec<_> = ringbus::admin::list(&ctx.root)
            .unwrap_or_default()
            .into_iter()
            .map(|info| (info, &ctx.root))
            .collect();
        if let Some(dir) = &ctx.config.queues.dir {
            // Durable queues: their ring files are in their directory.
            let durable = ringbus::admin::list(dir).unwrap_or_default();
            listed.extend(
                durable
                    .into_iter()
                    .filter(|i| i.kind == Kind::Queue)
                    .map(|info| (info, dir)),
            );
        }
        let mut wanted = HashSet::new();
        for (info, dir) in &listed {
            let key = (info.kind, info.name.clone());
            let export = match info.kind {
                Kind::Topic => ctx.config.topics.exports(&info.name),
                Kind::Service => {
                    ctx.config.services.exports(&info.name) && service::served_locally(info)
                }
                Kind::Queue => queue::exportable(ctx, &info.name),
            };
            // A durable queue nobody has open is recovered by the bridge's own open.
            let durable = *dir != &ctx.root;
            let usable = info.status == Status::Live || (durable && info.status == Status::Dead);
            if !export || !usable {
                continue;
            }
            wanted.insert(key.clone());
            if exports.get(&key).is_some_and(|r| !r.is_finished()) {
                continue;
            }
            exports.remove(&key);
            let Ok(shape) = Shape::read(dir, info.kind, &info.name) else {
                continue;
            };
            let route = match info.kind {
                Kind::Topic => topic::export(ctx, &info.name, &shape),
                Kind::Queue => queue::export(ctx, &info.name, &shape),
                _ => service::export(ctx, &info.name, &shape),
            };
            if let Ok(route) = route {
                exports.insert(key, route);
            }
        }
        exports.retain(|k, _| wanted.contains(k));
        std::thread::sleep(SCAN_INTERVAL);
    }
}

/// The discovery loop: follows other bridges' liveliness tokens and keeps one route per
/// imported name while at least one host exports it.
fn discover(
    ctx: &Arc<Ctx>,
    stop: &AtomicBool,
    tokens: &std::sync::mpsc::Receiver<zenoh::sample::Sample>,
) {
    // Per imported name, the bridges exporting it.
    let mut exporters: HashMap<(Kind, String), HashSet<String>> = HashMap::new();
    // Imported services and queues: one route each.
    let mut routes: HashMap<(Kind, String), Route> = HashMap::new();
    let mut topics: HashSet<String> = HashSet::new();
    // Imports that could not be set up (another shape here), counted once each.
    let mut refused: HashSet<(Kind, String)> = HashSet::new();
    let mut next_retry = Instant::now();
    // Relaxed: a stop request; the bridge joins this thread.
    while !stop.load(Ordering::Relaxed) {
        let mut changed = false;
        if let Ok(sample) = tokens.recv_timeout(RETRY) {
            if let Some((kind, name, zid)) = ctx.keys.parse_live(sample.key_expr().as_str()) {
                let imported = match kind {
                    Kind::Topic => ctx.config.topics.imports(name),
                    Kind::Queue => ctx.config.queues.imports(name),
                    _ => ctx.config.services.imports(name),
                };
                if imported && zid != ctx.zid {
                    let set = exporters.entry((kind, name.to_string())).or_default();
                    match sample.kind() {
                        SampleKind::Put => set.insert(zid.to_string()),
                        SampleKind::Delete => set.remove(zid),
                    };
                    changed = true;
                }
            }
        }
        if !changed && Instant::now() < next_retry {
            continue;
        }
        next_retry = Instant::now() + RETRY;
        exporters.retain(|_, zids| !zids.is_empty());
        for ((kind, name), zids) in &exporters {
            let ready = match kind {
                Kind::Topic => topics.contains(name),
                _ => routes
                    .get(&(*kind, name.clone()))
                    .is_some_and(|r| !r.is_finished()),
            };
            // Relaxed: a stop request. Checked before each fetch (which may wait SHAPE_WAIT).
            if ready || stop.load(Ordering::Relaxed) {
                continue;
            }
            let Some(shape) = zids.iter().find_map(|z| ctx.fetch_shape(*kind, name, z)) else {
                continue;
            };
            match kind {
                Kind::Topic => {
                    if ctx.topics.add(ctx, name, &shape).is_ok() {
                        topics.insert(name.clone());
                    } else if refused.insert((*kind, name.clone())) {
                        crate::stats::add(&ctx.counters.dropped_mismatch, 1);
                    }
                }
                _ => match if *kind == Kind::Queue {
                    queue::import(ctx, name, &shape)
                } else {
                    service::import(ctx, name, &shape)
                } {
                    Ok(route) => {
                        routes.insert((*kind, name.clone()), route);
                    }
                    Err(_) => {
                        if refused.insert((*kind, name.clone())) {
                            crate::stats::add(&ctx.counters.dropped_mismatch, 1);
                        }
                    }
                },
            }
        }
        topics.retain(|name| {
            let keep = exporters.contains_key(&(Kind::Topic, name.clone()));
            if !keep {
                ctx.topics.remove(name);
            }
            keep
        });
        routes.retain(|key, _| exporters.contains_key(key));
    }
}
