//! Waiting and liveness across processes: a shared futex on a word in the mapping, and the identity
//! of a process (pid and start time) that tells a live peer from a dead one whose pid was reused.

pub mod barrier;
pub mod futex;
pub mod liveness;
pub mod lock;

pub use liveness::ProcessId;

/// Polls a waiting receiver (subscriber, client, server) makes before it first reads the clock,
/// about a microsecond of spinning: a round trip is a few hundred nanoseconds, and a clock read
/// would delay noticing a message that arrives meanwhile.
pub(crate) const FIRST_POLLS: u32 = 256;
