//! Waiting and liveness across processes: a shared futex on a word in the mapping, and the identity
//! of a process (pid and start time) that tells a live peer from a dead one whose pid was reused.

pub mod barrier;
pub mod futex;
pub mod liveness;

pub use liveness::ProcessId;
