//! Discovery: futures that wait for a topic, service or queue to be created, or for the first
//! peer a sender needs (a subscriber, a server, a consumer) to join.
//!
//! Neither has a doorbell to wait on: a segment that does not exist has no futex word yet, and a
//! join rings nobody (joins are rare, and a ring per join would wake every waiter of the
//! segment for nothing). So both futures poll, from the process's waiter thread (no thread of
//! their own, any executor): they check at once, then after naps that double from 1 ms to
//! [`DISCOVERY_NAP`]. A creation or a join is therefore seen within [`DISCOVERY_NAP`], and a
//! waiting future wakes its process at most 1 / [`DISCOVERY_NAP`] times a second. Dropping
//! either future at any point is safe: it holds nothing but its nap.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::OpenError;
use crate::sync::waiter::Nap;

/// The longest nap between two checks of a discovery future: the bound on how late it sees the
/// segment or the peer it waits for.
pub const DISCOVERY_NAP: Duration = Duration::from_millis(50);

/// The first nap.
const FIRST_NAP: Duration = Duration::from_millis(1);

/// The naps between checks: doubling from [`FIRST_NAP`] to [`DISCOVERY_NAP`].
#[derive(Debug, Default)]
struct Backoff {
    nap: Nap,
    next: Duration,
}

impl Backoff {
    /// Sleeps the next nap, then wakes `cx`'s task.
    fn sleep(&mut self, cx: &Context<'_>) {
        let nap = self.next.max(FIRST_NAP);
        self.nap.sleep(nap, cx.waker());
        self.next = (nap * 2).min(DISCOVERY_NAP);
    }
}

/// The future of the builders' `*_when_found` methods (e.g.
/// [`crate::TopicBuilder::subscriber_when_found`]): opens the handle as soon as the segment
/// exists, as [`crate::OpenMode::OpenExisting`] would, and until then waits (module doc:
/// checked at least every [`DISCOVERY_NAP`]). Ends with the handle, or with the first error other
/// than [`OpenError::NotFound`] and [`OpenError::Busy`] (a type mismatch, a full table, ...). No
/// deadline: compose it with the runtime's timeout.
///
/// Each try is an ordinary open, which takes the segment's file lock for the few system calls
/// of a create or a join. Only if another process is stopped while holding that lock (SIGSTOP,
/// a debugger) does a poll block its thread, for up to [`crate::LOCK_WAIT`]; it then naps and
/// tries again rather than ending the wait.
#[must_use = "futures do nothing unless awaited"]
pub struct Found<B, H> {
    builder: B,
    open: fn(&B) -> Result<H, OpenError>,
    backoff: Backoff,
}

impl<B, H> Found<B, H> {
    /// Retries `open(&builder)` while it fails with `NotFound` or `Busy`.
    pub(crate) fn new(builder: B, open: fn(&B) -> Result<H, OpenError>) -> Found<B, H> {
        Found {
            builder,
            open,
            backoff: Backoff::default(),
        }
    }
}

impl<B, H> std::fmt::Debug for Found<B, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found").finish_non_exhaustive()
    }
}

impl<B: Unpin, H> Future for Found<B, H> {
    type Output = Result<H, OpenError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match (this.open)(&this.builder) {
            // Not there yet, or its lock held by a stopped process: try again after a nap.
            Err(OpenError::NotFound(_) | OpenError::Busy(_)) => {
                this.backoff.sleep(cx);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

/// The future of the senders' `wait_for_*` methods (e.g.
/// [`crate::Publisher::wait_for_subscriber`]): ready once a live peer of the role the sender
/// needs is registered in the segment (module doc: checked at least every [`DISCOVERY_NAP`]).
/// No deadline: compose it with the runtime's timeout.
#[must_use = "futures do nothing unless awaited"]
pub struct PeerJoined<'a> {
    present: Box<dyn Fn() -> bool + Send + 'a>,
    backoff: Backoff,
}

impl<'a> PeerJoined<'a> {
    /// Ready once `present()` returns true.
    pub(crate) fn new(present: impl Fn() -> bool + Send + 'a) -> PeerJoined<'a> {
        PeerJoined {
            present: Box::new(present),
            backoff: Backoff::default(),
        }
    }
}

impl std::fmt::Debug for PeerJoined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerJoined").finish_non_exhaustive()
    }
}

impl Future for PeerJoined<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if (this.present)() {
            return Poll::Ready(());
        }
        this.backoff.sleep(cx);
        Poll::Pending
    }
}
