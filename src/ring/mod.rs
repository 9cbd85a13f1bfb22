//! Lock-free ring algorithms over raw cells. Each algorithm is one file, written against a small
//! trait of atomic cells so that the same code runs over shared memory and, under `cfg(loom)`, over
//! loom's model-checked atomics (taken from [`crate::loom`]).
//!
//! - [`broadcast`]: one writer, every reader reads every message in place (topics).
//! - [`call`]: calls posted by one client, each taken and answered by one of many servers
//!   (services).
//! - [`work`]: many producers, competing consumers, acknowledgements (queues).

pub mod broadcast;
pub mod call;
pub mod work;
