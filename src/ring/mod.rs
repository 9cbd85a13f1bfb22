//! Lock-free ring algorithms over raw cells. Each algorithm is one file, written against a small
//! trait of atomic cells so that the same code runs over shared memory and, under `cfg(loom)`, over
//! loom's model-checked atomics.

pub mod broadcast;

#[cfg(loom)]
pub(crate) use loom::sync::atomic;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic;
