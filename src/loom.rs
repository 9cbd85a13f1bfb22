//! The one switch between std's primitives and loom's model-checked ones (as tokio does it).
//!
//! Lock-free algorithms (the rings in [`crate::ring`], the doorbell's handshake, the async waiter's
//! watch table) take their atomics
//! from here, so `RUSTFLAGS="--cfg loom"` model-checks the very code that runs over shared memory.
//! Only what those algorithms use is re-exported.

#[cfg(loom)]
pub(crate) use ::loom::sync::atomic;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic;

/// The lock of the async waiter's watch table ([`crate::sync::watch`]).
#[cfg(loom)]
pub(crate) use ::loom::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;

/// The model runner every loom test of this crate uses.
#[cfg(loom)]
pub(crate) mod model {
    /// A loom model builder that explores every interleaving with up to `bound` preemptions
    /// (the handshakes of this crate need at most two or three; more makes a model take hours).
    pub(crate) fn builder(bound: usize) -> ::loom::model::Builder {
        let mut b = ::loom::model::Builder::new();
        b.preemption_bound = Some(bound);
        b
    }
}
