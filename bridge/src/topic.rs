//! Topics across hosts.
//!
//! **Export** (a local topic matching an export pattern): a thread holds a subscriber of the
//! topic (opened with its own shape, reading bytes in place) and puts every message that is not
//! relayed on key `P/topic/<name>`, with a [`MessageHeader`]. Under `Block` the bridge's
//! subscriber is one more reader the local publishers wait for, and zenoh's `Block` congestion
//! control makes it wait for the network in turn: backpressure from the other host reaches the
//! local publishers. Under `DropOldest` the bridge's subscriber may lag like any other; the
//! messages it lost are reported with the next message it sends (`lost`).
//!
//! **Import** (a remote export matching an import pattern, found by its liveliness token): the
//! bridge fetches the export's shape, opens (or creates) the local topic with that shape, and a
//! publisher marked relayed (`Publisher::set_relayed`) delivers each arriving message from the
//! zenoh callback itself: no thread hop. A relayed message is never exported again, so no
//! message goes round a loop of hosts. A message whose key, attachment, shape digest or length
//! is wrong is dropped and counted. Under `Block` the injection waits for room in the local
//! topic up to [`INJECT_WAIT`] (200 ms), holding zenoh's receive thread for that link, so the
//! exporting host is slowed in turn; past it the message is dropped and counted
//! (`dropped_backpressure`), and the topic is marked congested: later messages try once,
//! without waiting, until one fits. A stuck local subscriber thus costs the link one wait, not
//! one per message, and never the 5 s after which zenoh closes a stuck link. Under
//! `DropOldest`, the messages the exporting host lost before sending (its `lost`) are reported
//! to the local subscribers with the next message (`Publisher::report_lost`): each is told
//! `Lagged(n)` with them included, so lag counts stay exact across hosts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringbus::admin::Kind;
use ringbus::{Bytes, OpenMode, Publisher, ReceiveError, SendError, Shape};
use zenoh::qos::CongestionControl;
use zenoh::sample::{Locality, Sample, SampleKind};
use zenoh::Wait;

use crate::bridge::{Ctx, Route};
use crate::stats::add;
use crate::wire::MessageHeader;
use crate::BridgeError;

/// How often an exporting thread looks at its stop flag while no message comes.
const POLL: Duration = Duration::from_millis(100);

/// Starts exporting local topic `name` of `shape`.
pub(crate) fn export(ctx: &Arc<Ctx>, name: &str, shape: &Shape) -> Result<Route, BridgeError> {
    let subscriber = ctx
        .node
        .topic_shaped(name, shape)?
        .open_mode(OpenMode::OpenExisting)
        .subscriber()?;
    let publisher = ctx
        .session
        .declare_publisher(ctx.keys.topic(name))
        .congestion_control(CongestionControl::Block)
        .allowed_destination(Locality::Remote)
        .wait()
        .map_err(BridgeError::zenoh)?;
    let announce = ctx.announce(Kind::Topic, name, shape)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ctx2, stop2, digest) = (ctx.clone(), stop.clone(), shape.digest());
    let thread = std::thread::Builder::new()
        .name(format!("ringbus-zenoh-export-{name}"))
        .spawn(move || {
            let _announce = announce;
            let c = &ctx2.counters;
            let (mut seq, mut lost) = (0u64, 0u64);
            // Relaxed: a stop request, joined after.
            while !stop2.load(Ordering::Relaxed) {
                match subscriber.receive_timeout(POLL) {
                    Ok(sample) => {
                        if sample.is_relayed() {
                            add(&c.skipped_relayed, 1);
                            continue;
                        }
                        let header = MessageHeader {
                            digest,
                            publisher: sample.publisher_index() as u64,
                            seq,
                            lost: std::mem::take(&mut lost),
                        };
                        seq += 1;
                        let bytes: &[u8] = &sample;
                        match publisher
                            .put(bytes)
                            .attachment(header.encode().to_vec())
                            .wait()
                        {
                            Ok(()) => add(&c.exported, 1),
                            // The session is closing: the bridge stops.
                            Err(_) => break,
                        }
                    }
                    Err(ReceiveError::Lagged(n)) => lost += n,
                    Err(ReceiveError::Timeout(_) | ReceiveError::Empty) => {}
                    // A message that fails validation here is not sent (nor counted twice).
                    Err(ReceiveError::Invalid(_)) => add(&c.dropped_malformed, 1),
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })
        .map_err(|e| BridgeError::Io(e.to_string()))?;
    Ok(Route::new(stop, thread))
}

/// Longest an arriving message waits for room in a full `Block` topic here before it is
/// dropped: it holds zenoh's receive thread of its link meanwhile, which slows the sender in
/// turn (backpressure) but also every other message of that link.
const INJECT_WAIT: Duration = Duration::from_millis(200);

/// One imported topic: its shape and its relaying publisher.
struct Injector {
    digest: u64,
    max: usize,
    fixed: Option<usize>,
    publisher: Mutex<Relay>,
}

/// The relaying publisher, and whether its topic was found full for [`INJECT_WAIT`] (then
/// each message tries once, without waiting, until one fits: a stuck subscriber here costs
/// the link one wait, not one per message).
struct Relay {
    publisher: Publisher<Bytes>,
    congested: bool,
}

impl Relay {
    fn inject(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let start = Instant::now();
        let mut nap = Duration::from_micros(20);
        loop {
            match self.publisher.try_loan(payload.len()) {
                Ok(mut loan) => {
                    loan.bytes_mut().copy_from_slice(payload);
                    loan.send();
                    self.congested = false;
                    return Ok(());
                }
                Err(SendError::Full) if !self.congested && start.elapsed() < INJECT_WAIT => {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(2));
                }
                Err(e) => {
                    self.congested |= matches!(e, SendError::Full);
                    return Err(e);
                }
            }
        }
    }
}

/// The imported topics, fed by the zenoh subscribers of the import patterns.
#[derive(Default)]
pub(crate) struct Imports {
    routes: Mutex<HashMap<String, Arc<Injector>>>,
}

impl Imports {
    /// Sets up topic `name` of `shape` here (an export found on another host). A local topic of
    /// another shape is an error (the messages will be counted as mismatched).
    pub(crate) fn add(&self, ctx: &Ctx, name: &str, shape: &Shape) -> Result<(), BridgeError> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.get(name).is_some_and(|i| i.digest == shape.digest()) {
            return Ok(());
        }
        let mut publisher = ctx.node.topic_shaped(name, shape)?.publisher()?;
        publisher.set_relayed(true);
        routes.insert(
            name.to_string(),
            Arc::new(Injector {
                digest: shape.digest(),
                max: shape.max_message_size(),
                fixed: shape.fixed_size(),
                publisher: Mutex::new(Relay {
                    publisher,
                    congested: false,
                }),
            }),
        );
        Ok(())
    }

    /// Stops importing `name` (no host exports it any more).
    pub(crate) fn remove(&self, name: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Delivers a message that arrived from another host (a zenoh callback).
    pub(crate) fn deliver(&self, ctx: &Ctx, sample: &Sample) {
        let c = &ctx.counters;
        if sample.kind() != SampleKind::Put {
            return add(&c.dropped_malformed, 1);
        }
        let Some(name) = ctx.keys.parse_data(Kind::Topic, sample.key_expr().as_str()) else {
            return add(&c.dropped_malformed, 1);
        };
        let Some(header) = sample
            .attachment()
            .and_then(|a| MessageHeader::decode(&a.to_bytes()))
        else {
            return add(&c.dropped_malformed, 1);
        };
        let injector = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            match routes.get(name) {
                Some(i) => i.clone(),
                None => return add(&c.dropped_not_ready, 1),
            }
        };
        if header.digest != injector.digest {
            return add(&c.dropped_mismatch, 1);
        }
        let payload = sample.payload().to_bytes();
        if payload.len() > injector.max || injector.fixed.is_some_and(|f| f != payload.len()) {
            return add(&c.dropped_malformed, 1);
        }
        add(&c.lost_upstream, header.lost);
        let mut relay = injector.publisher.lock().unwrap_or_else(|e| e.into_inner());
        // The subscribers here are told, with the next message that reaches them.
        relay.publisher.report_lost(header.lost);
        let injected = relay.inject(&payload);
        if injected.is_err() {
            // Lost here: the subscribers are told with the next message that fits.
            relay.publisher.report_lost(1);
        }
        match injected {
            Ok(()) => add(&c.imported, 1),
            Err(SendError::TooLarge { .. }) => add(&c.dropped_malformed, 1),
            // Full, every slot pinned, or the topic's segment gone: no room here.
            Err(_) => add(&c.dropped_backpressure, 1),
        }
    }
}
