//! `SyncPolicy::Batch`: the background thread that syncs what one writer (a queue producer, a
//! durable topic publisher) wrote, every interval.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::LogSegment;

/// `SyncPolicy::Batch`: a thread that syncs what one writer wrote, every interval.
pub(crate) struct Flusher {
    state: Arc<FlushState>,
    thread: Option<JoinHandle<()>>,
}

struct FlushState {
    /// Position + 1 of the last record the producer wrote (0: none). Written by the producer
    /// only.
    last: AtomicU64,
    /// Segments written since the last sync (the producer pushes one when it moves on).
    dirty: Mutex<Vec<Arc<LogSegment>>>,
    stop: AtomicBool,
}

impl FlushState {
    fn flush(&self, synced: &mut u64) {
        // Acquire: pairs with the producer's Release store, so the records up to `last` are
        // written before our sync starts.
        let last = self.last.load(Ordering::Acquire);
        if last == *synced {
            return;
        }
        let segs: Vec<_> = {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let current = d.last().cloned();
            // Keep the current segment listed: it is written on.
            std::mem::replace(&mut *d, current.into_iter().collect())
        };
        let upto = last - 1;
        let ok = segs
            .iter()
            .filter(|s| s.base() <= upto)
            .all(|s| s.sync_covering(upto.min(s.last())).is_ok());
        if ok {
            *synced = last;
        } else {
            // Try again next time, older segments included.
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let current = std::mem::take(&mut *d);
            *d = segs;
            for s in current {
                if !d.iter().any(|x| Arc::ptr_eq(x, &s)) {
                    d.push(s);
                }
            }
        }
    }
}

impl Flusher {
    /// Starts the thread, syncing every `interval`.
    pub(crate) fn start(interval: Duration) -> Flusher {
        let state = Arc::new(FlushState {
            last: AtomicU64::new(0),
            dirty: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("ringbus-flush".into())
            .spawn(move || {
                let mut synced = 0;
                // Relaxed: a stop request; the final flush below runs whatever we read.
                while !st.stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    st.flush(&mut synced);
                }
                st.flush(&mut synced);
            })
            .ok();
        Flusher { state, thread }
    }
}

impl Flusher {
    /// The writer moved on to segment `seg`: it is synced from now on (with the ones before it
    /// until they are synced).
    pub(crate) fn moved_to(&self, seg: &Arc<LogSegment>) {
        self.state
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seg.clone());
    }

    /// The writer wrote (and sealed) record `o`: the next sync covers it.
    #[inline]
    pub(crate) fn written(&self, o: u64) {
        // Release: the flusher that reads this offset sees the records written.
        self.state.last.store(o + 1, Ordering::Release);
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Relaxed: the thread is unparked next, and joined.
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

