//! # ringbus
//!
//! Zero-copy messaging between threads and processes of one machine over lock-free rings in
//! shared memory.
//!
//! - [`Node`]: a participant; [`Node::new`] for shared memory, [`Node::in_process`] for threads.
//! - Publish/subscribe ([`topic`]): [`TopicBuilder`] → [`Publisher`] / [`Subscriber`]. A
//!   publisher loans a slot in shared memory and writes in place; every subscriber reads the
//!   [`Sample`] in place.
//! - Request/response ([`service`]): [`ServiceBuilder`] → [`Server`] / [`Client`]. A client sends
//!   a request (in place) and waits for its [`Response`] within a timeout, or keeps many
//!   [`Pending`] calls in flight; each call is answered by exactly one server, with one response
//!   or a stream.
//! - Work queues ([`queue`]): [`QueueBuilder`] → [`Producer`] / [`Consumer`]. Each message goes
//!   to one of the competing consumers as a [`Delivery`], read in place and acknowledged; one
//!   not acknowledged in time, or held by a consumer that died, is delivered again. In shared
//!   memory, or durable in files.
//! - Payloads: any `bytemuck::Pod` type, variable-length bytes ([`Bytes`]), or rkyv archives
//!   ([`Rkyv`]) validated before use.
//!
//! The three patterns have parallel names: each module has its builder, its two handles, a
//! `Loan` (a slot written in place, then sent), its limits (`MAX_CAPACITY` or `MAX_IN_FLIGHT`,
//! `MAX_MESSAGE_SIZE`, `MAX_PARTICIPANTS`) and, where a sender can find no room, a `Policy`.
//!
//! ```
//! use ringbus::Node;
//!
//! let node = Node::in_process();
//!
//! // Publish/subscribe: every subscriber sees every message.
//! let topic = node.topic::<[u32; 2]>("quickstart");
//! let mut publisher = topic.publisher()?;
//! let subscriber = topic.subscriber()?;
//! let mut loan = publisher.loan()?; // a slot in shared memory
//! *loan = [7, 8];                   // written in place
//! loan.send();
//! let sample = subscriber.receive()?; // read in place
//! assert_eq!(*sample, [7, 8]);
//!
//! // Request/response: one server answers each call.
//! let service = node.service::<u64, u64>("double");
//! let server = service.server()?;
//! let client = service.client()?;
//! let pending = client.send(&21)?;
//! let request = server.receive()?;
//! let doubled = *request * 2;
//! request.respond(&doubled)?;
//! assert_eq!(*pending.wait()?, 42);
//!
//! // A work queue: each job goes to one consumer, which acknowledges it.
//! let queue = node.queue::<u64>("jobs");
//! let mut producer = queue.producer()?;
//! let consumer = queue.consumer()?;
//! producer.send(&7)?;
//! let job = consumer.receive()?;
//! assert_eq!(*job, 7);
//! job.ack()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `ARCHITECTURE.md` for the layers, the byte layout of every segment, the memory-ordering
//! argument of each ring and crash recovery.

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// A loom build compiles only the lock-free cores (rings, doorbell), not the code that uses them.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

/// Items outside the lock-free cores: a loom build (`--cfg loom`) compiles only `ring`, `loom`
/// and the doorbell, whose atomics loom replaces.
macro_rules! outside_loom {
    ($($item:item)*) => { $(#[cfg(not(loom))] $item)* };
}
pub(crate) use outside_loom;

/// `Debug` for a handle generic over payload kinds: its name and the fields named; the rest is
/// elided (a formatter has no business reading shared memory).
#[cfg(not(loom))]
macro_rules! debug_fields {
    ($name:ident<$($lt:lifetime,)? $($g:ident),*>: $($field:ident),+) => {
        impl<$($g: $crate::topic::Payload + ?Sized),*> std::fmt::Debug for $name<$($lt,)? $($g),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($field), &self.$field))+
                    .finish_non_exhaustive()
            }
        }
    };
}
#[cfg(not(loom))]
pub(crate) use debug_fields;

/// Constants numbered `0, 1, 2, …` of type `$ty` in the order listed (the kinds of a state word,
/// the indices of configuration words), so that no number is typed by hand twice.
macro_rules! numbered {
    ($ty:ty: $($list:tt)*) => {
        $crate::numbered!(@next $ty, 0; $($list)*);
    };
    (@next $ty:ty, $n:expr; $(#[$m:meta])* $vis:vis $name:ident, $($rest:tt)*) => {
        $(#[$m])*
        $vis const $name: $ty = $n;
        $crate::numbered!(@next $ty, $name + 1; $($rest)*);
    };
    (@next $ty:ty, $n:expr;) => {};
}
pub(crate) use numbered;

/// Logs a rare event (a dead participant reclaimed, a recovery, a torn record, a dead-letter
/// move, a lock taken over) through `tracing` at `$level` (`info`, `warn`, `debug`...), with
/// `tracing`'s syntax of fields and message. Without the `tracing` feature it expands to nothing:
/// the arguments are not even evaluated, so the call costs nothing. Cold paths only.
#[cfg(feature = "tracing")]
#[cfg_attr(loom, allow(unused_macros))] // its callers are outside the loom build
macro_rules! log_rare {
    ($level:ident, $($arg:tt)+) => {
        ::tracing::$level!(target: "ringbus", $($arg)+)
    };
}
#[cfg(not(feature = "tracing"))]
#[cfg_attr(loom, allow(unused_macros))] // its callers are outside the loom build
macro_rules! log_rare {
    ($level:ident, $($arg:tt)+) => {};
}
pub(crate) use log_rare;

#[cfg(all(test, not(loom)))]
mod log_rare_tests {
    /// Without the `tracing` feature a log call is nothing; with it, and nobody listening (no
    /// subscriber installed), `tracing` does not evaluate the fields either.
    #[test]
    fn a_log_nobody_listens_to_evaluates_nothing() {
        let evaluated = std::cell::Cell::new(false);
        crate::log_rare!(
            warn,
            field = {
                evaluated.set(true);
                1
            },
            "not shown"
        );
        assert!(!evaluated.get());
    }
}

mod loom;
mod ring;
mod sync;

outside_loom! {
    pub mod admin;
    pub mod discovery;
    pub mod durable;
    pub mod error;
    mod log;
    mod node;
    mod options;
    pub mod queue;
    pub mod service;
    mod shape;
    mod shm;
    pub mod topic;

    pub use discovery::{Found, PeerJoined};
    pub use error::{AckError, CallError, OpenError, ReceiveError, SendError};
    pub use log::SyncPolicy;
    pub use node::Node;
    pub use queue::{Consumer, Delivery, Producer, QueueBuilder};
    pub use service::{
        Client, Pending, Request, RequestLoan, Response, ResponseLoan, ResponseStream, Server,
        ServiceBuilder,
    };
    pub use shape::Shape;
    pub use shm::{validate_name, OpenMode, LOCK_WAIT};
    pub use sync::{ProcessId, CHECK_INTERVAL};
    pub use topic::{Bytes, InPlace, Payload, Publisher, Rkyv, Sample, Subscriber, TopicBuilder};

}

/// The byte layout of each segment kind (offsets, sizes, state encodings), for tests and tools
/// that craft or inspect segment files. Not a stable API: it changes with each layout version.
#[cfg(not(loom))]
#[doc(hidden)]
pub mod layout {
    pub use crate::durable::layout as durable;
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
    pub use crate::sync::waiter::live_registrations;
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
