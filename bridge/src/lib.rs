//! The ringbus network adapter: topics and services of one host reach peers on other hosts
//! through [zenoh](https://zenoh.io), with the same ringbus API on both sides.
//!
//! A [`Bridge`] runs beside the local shared-memory segments of a [`ringbus::Node`] (embedded in
//! an application, or as a sidecar: `ringbus bridge --config FILE`). It exports the local
//! topics, services and queues its [`BridgeConfig`] names, and imports those other hosts' bridges
//! export. Nothing crosses the network unless a pattern names it.
//!
//! - **Topics**: a subscriber on host B of topic `T` receives the messages of publishers on host
//!   A (and of local ones), each publisher's messages in order. A message a bridge delivers is
//!   marked relayed and never sent out again, so no message goes round a loop of hosts
//!   ([`topic`](crate#topics) module doc in the source: backpressure and drops).
//! - **Services**: a client on host B calls a service whose servers run on host A: same API,
//!   the caller's timeout carried across, streamed responses in order, and the same typed errors
//!   (`Timeout`, `NoServer`, `Disconnected`). A local server is preferred; each call is answered
//!   by exactly one server.
//! - **Queues**: a queue is owned by the host whose bridge exports it; on other hosts the
//!   bridge keeps a local copy that producers and consumers use with the ordinary API. A
//!   `send` there returns `Ok` only once the owner accepted the message; a delivery is
//!   acknowledged at the owner only once acknowledged there, and comes back at the owner after
//!   its visibility timeout if that host's consumer, bridge or link dies (at least once;
//!   [`queue`](crate#queues) module doc in the source).
//! - Payloads cross as their bytes; a receiving bridge checks each message against the shape
//!   of the local segment (type, sizes) and drops (and counts, [`Stats`]) what does not fit.
//!
//! ```no_run
//! use ringbus::Node;
//! use ringbus_zenoh::{Bridge, BridgeConfig};
//!
//! let node = Node::new()?;
//! let config = BridgeConfig::new()
//!     .listen("tcp/0.0.0.0:7447")
//!     .connect("tcp/10.0.0.2:7447")
//!     .export_topics("prices")
//!     .import_services("quote");
//! let bridge = Bridge::start(&node, config)?;
//! // ... the application uses `node` as usual; remote peers come and go ...
//! println!("{:?}", bridge.stats());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bridge;
mod config;
mod keys;
mod queue;
mod remote;
mod service;
mod stats;
mod topic;
mod wire;

pub use bridge::{Bridge, SCAN_INTERVAL};
pub use config::{BridgeConfig, QueueRoutes, Routes, Tls, ZenohSettings};
pub use remote::{list_remote, RemoteExport};
pub use stats::Stats;

/// Why a bridge could not start (or a remote listing failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The configuration is invalid (the message says where).
    #[error("bridge configuration: {0}")]
    Config(String),
    /// The node has no root directory (`Node::in_process`): a bridge lists the root to find
    /// the local segments.
    #[error("a bridge needs a node with a root directory (Node::new or Node::with_root)")]
    NoRoot,
    /// A local segment could not be opened.
    #[error(transparent)]
    Open(#[from] ringbus::OpenError),
    /// zenoh refused (an endpoint in use, a TLS file missing, ...).
    #[error("zenoh: {0}")]
    Zenoh(String),
    /// A thread could not be started.
    #[error("{0}")]
    Io(String),
}

impl BridgeError {
    pub(crate) fn zenoh(e: zenoh::Error) -> BridgeError {
        BridgeError::Zenoh(e.to_string())
    }
}
