//! Waiting and liveness across processes: the doorbell (the one sleep/notify handshake), a shared
//! futex on a word in the mapping, and the identity
//! of a process (pid and start time) that tells a live peer from a dead one whose pid was reused.

#[cfg(not(loom))]
pub mod barrier;
pub(crate) mod doorbell;
#[cfg(not(loom))]
pub mod futex;
#[cfg(not(loom))]
pub mod liveness;
#[cfg(not(loom))]
pub mod lock;

pub(crate) use doorbell::Doorbell;
#[cfg(not(loom))]
pub use liveness::ProcessId;

/// Polls a waiting receiver (subscriber, client, server) makes before it first reads the clock,
/// about a microsecond of spinning: a round trip is a few hundred nanoseconds, and a clock read
/// would delay noticing a message that arrives meanwhile.
#[cfg(not(loom))]
pub(crate) const FIRST_POLLS: u32 = 256;
