//! A bridge's counters: what crossed, and what was dropped and why.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a bridge has done so far ([`crate::Bridge::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Local topic messages sent to other hosts.
    pub exported: u64,
    /// Relayed messages seen on an exported topic and not sent back out (loop prevention).
    pub skipped_relayed: u64,
    /// Messages of other hosts delivered into local topics.
    pub imported: u64,
    /// Messages whose local topic stayed full for its send timeout (a `Block` topic with a
    /// stuck subscriber here): dropped.
    pub dropped_backpressure: u64,
    /// Messages a `DropOldest` topic lost at an exporting host before they were sent (its lag
    /// there, reported with the next message).
    pub lost_upstream: u64,
    /// Network messages refused: a bad key, attachment or length (never delivered).
    pub dropped_malformed: u64,
    /// Network messages of a shape other than the local segment's (another type or layout).
    pub dropped_mismatch: u64,
    /// Messages for a topic whose route was not set up yet (its exporter not discovered).
    pub dropped_not_ready: u64,
    /// Calls from other hosts answered by local servers (any outcome).
    pub calls_served: u64,
    /// Local calls relayed to servers on other hosts (any outcome).
    pub calls_relayed: u64,
    /// Relayed calls that ended in an error (timeout, no server, disconnected, aborted).
    pub calls_failed: u64,
    /// Owned queues: messages other hosts sent, accepted here.
    pub queue_accepted: u64,
    /// Owned queues: deliveries handed to other hosts.
    pub queue_lent: u64,
    /// Owned queues: deliveries other hosts acknowledged.
    pub queue_acked: u64,
    /// Queues of other hosts: local sends forwarded to the owner and accepted there.
    pub queue_forwarded: u64,
    /// Queues of other hosts: the owner's messages put into the local copy.
    pub queue_received: u64,
    /// Queues of other hosts: messages the local copy had no room for (left to the owner's
    /// visibility timeout, then delivered again).
    pub queue_refused: u64,
}

/// The live counters behind [`Stats`]. Relaxed everywhere: independent event counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) exported: AtomicU64,
    pub(crate) skipped_relayed: AtomicU64,
    pub(crate) imported: AtomicU64,
    pub(crate) dropped_backpressure: AtomicU64,
    pub(crate) lost_upstream: AtomicU64,
    pub(crate) dropped_malformed: AtomicU64,
    pub(crate) dropped_mismatch: AtomicU64,
    pub(crate) dropped_not_ready: AtomicU64,
    pub(crate) calls_served: AtomicU64,
    pub(crate) calls_relayed: AtomicU64,
    pub(crate) calls_failed: AtomicU64,
    pub(crate) queue_accepted: AtomicU64,
    pub(crate) queue_lent: AtomicU64,
    pub(crate) queue_acked: AtomicU64,
    pub(crate) queue_forwarded: AtomicU64,
    pub(crate) queue_received: AtomicU64,
    pub(crate) queue_refused: AtomicU64,
}

/// Adds `n` to counter `c`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    // Relaxed: an event count, read only as a snapshot.
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        // Relaxed: see the type.
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            exported: g(&self.exported),
            skipped_relayed: g(&self.skipped_relayed),
            imported: g(&self.imported),
            dropped_backpressure: g(&self.dropped_backpressure),
            lost_upstream: g(&self.lost_upstream),
            dropped_malformed: g(&self.dropped_malformed),
            dropped_mismatch: g(&self.dropped_mismatch),
            dropped_not_ready: g(&self.dropped_not_ready),
            calls_served: g(&self.calls_served),
            calls_relayed: g(&self.calls_relayed),
            calls_failed: g(&self.calls_failed),
            queue_accepted: g(&self.queue_accepted),
            queue_lent: g(&self.queue_lent),
            queue_acked: g(&self.queue_acked),
            queue_forwarded: g(&self.queue_forwarded),
            queue_received: g(&self.queue_received),
            queue_refused: g(&self.queue_refused),
        }
    }
}
