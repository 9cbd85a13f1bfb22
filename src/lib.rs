//! # ringbus
//!
//! Zero-copy messaging between threads and processes of one machine over lock-free rings in
//! shared memory.
//!
//! - [`Node`]: a participant; [`Node::new`] for shared memory, [`Node::in_process`] for threads.
//! - Publish/subscribe: [`TopicBuilder`] → [`Publisher`] / [`Subscriber`]. A publisher loans a
//!   slot in shared memory and writes in place; a subscriber reads the [`Sample`] in place.
//! - Request/response: [`ServiceBuilder`] → [`Server`] / [`Client`]. A client sends a request
//!   (in place) and waits for its [`Response`] within a timeout, or keeps many [`Pending`] calls
//!   in flight; each call is answered by exactly one server, with one response or a stream.
//! - Payloads: any `bytemuck::Pod` type, variable-length bytes ([`Bytes`]), or rkyv archives
//!   ([`Rkyv`]) validated before use.
//!
//! ```
//! use ringbus::Node;
//!
//! let node = Node::in_process();
//! let topic = node.topic::<[u32; 2]>("quickstart");
//! let mut publisher = topic.publisher()?;
//! let subscriber = topic.subscriber()?;
//!
//! let mut loan = publisher.loan()?; // a slot in shared memory
//! *loan = [7, 8];                   // written in place
//! loan.send();
//!
//! let sample = subscriber.receive()?; // read in place
//! assert_eq!(*sample, [7, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `ARCHITECTURE.md` for the layers, the byte layout of every segment, the memory-ordering
//! argument of each ring and crash recovery.

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// A loom build compiles only the lock-free cores (rings, doorbell), not the code that uses them.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
pub mod error;
#[cfg(not(loom))]
mod log;
mod loom;
#[cfg(not(loom))]
mod node;
#[cfg(not(loom))]
mod queue;
mod ring;
#[cfg(not(loom))]
mod service;
#[cfg(not(loom))]
mod shm;
mod sync;
#[cfg(not(loom))]
mod topic;

#[cfg(not(loom))]
pub use error::{AckError, CallError, OpenError, ReceiveError, SendError};
#[cfg(not(loom))]
pub use log::SyncPolicy;
#[cfg(not(loom))]
pub use node::Node;
#[cfg(not(loom))]
pub use queue::{
    Consumer, Delivery, FullPolicy, Producer, QueueBuilder, QueueLoan, QueueStats, MAX_DELIVERIES,
    MAX_QUEUE_CAPACITY, MAX_QUEUE_MESSAGE, MAX_QUEUE_PARTICIPANTS,
};
#[cfg(not(loom))]
pub use service::{
    Client, Pending, Request, RequestLoan, Response, ResponseLoan, ResponseStream, Server,
    ServiceBuilder, MAX_IN_FLIGHT, MAX_PARTICIPANTS, MAX_SERVICE_MESSAGE, MAX_STREAM_DEPTH,
};
#[cfg(not(loom))]
pub use shm::{validate_name, OpenMode, LOCK_WAIT};
#[cfg(not(loom))]
pub use sync::ProcessId;
#[cfg(not(loom))]
pub use topic::{
    Bytes, Loan, Payload, Policy, Publisher, Rkyv, Sample, Subscriber, TopicBuilder,
    CHECK_INTERVAL, MAX_ALIGN, MAX_CAPACITY, MAX_MESSAGE_SIZE,
};

/// The byte layout of each segment kind (offsets, sizes, state encodings), for tests and tools
/// that craft or inspect segment files. Not a stable API: it changes with each layout version.
#[cfg(not(loom))]
#[doc(hidden)]
pub mod layout {
    pub use crate::log::layout as log;
    pub use crate::queue::layout as queue;
    pub use crate::service::layout as service;
    pub use crate::topic::layout as topic;
}

/// Hooks for ringbus's own tests (which liveness check this machine gives). Not a stable API.
#[cfg(not(loom))]
#[doc(hidden)]
pub mod testing {
    pub use crate::sync::liveness::{liveness_method, LivenessMethod};
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
