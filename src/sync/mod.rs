//! Waiting and liveness across processes: the doorbell (the one sleep/notify handshake), a shared
//! futex on a word in the mapping, and the identity
//! of a process (pid and start time) that tells a live peer from a dead one whose pid was reused.

pub(crate) mod doorbell;
pub(crate) use doorbell::Doorbell;
pub(crate) mod watch;

crate::outside_loom! {
    pub mod barrier;
    pub mod futex;
    pub mod liveness;
    pub mod lock;
    pub(crate) mod waiter;

    pub use liveness::ProcessId;
}

/// How often a waiting handle checks that the peer it waits for is alive: the detection interval
/// for a subscriber killed while a `Block` publisher waits on it, for a service's server killed
/// while a client waits on its call (the call then fails with [`crate::CallError::Disconnected`],
/// or [`crate::CallError::NoServer`] if no server had taken it and none is left), and for the
/// holder of a queue's append or claim lock.
#[cfg(not(loom))]
pub const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// The nap of an awaiting future whose nap is only a safety net (a subscriber's, a server's): it
/// has no peer to check on, and a ring wakes it. It bounds how late such a future sees a message
/// whose sender died after publishing it but before ringing, and keeps an idle process from
/// waking more than once per nap (the blocking calls nap 100 ms, as they also honour deadlines).
#[cfg(not(loom))]
pub(crate) const QUIET_NAP: std::time::Duration = std::time::Duration::from_secs(5);

/// Polls a waiting receiver (subscriber, client, server) makes before it first reads the clock,
/// about a microsecond of spinning: a round trip is a few hundred nanoseconds, and a clock read
/// would delay noticing a message that arrives meanwhile.
#[cfg(not(loom))]
pub(crate) const FIRST_POLLS: u32 = 256;
