//! The sending side of a durable topic: appends to a partition's log in place and publishes.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::clock::Stamper;
use super::layout::*;
use super::shared::Shared;
use super::Retention;
use crate::error::SendError;
use crate::log::{Ahead, Flusher, LogSegment, Pretouch, SyncPolicy};
use crate::sync::doorbell::ALL;
use crate::sync::{lock, ProcessId};
use crate::topic::Payload;

/// Sends to a durable topic: each message is appended to one partition's log, where
/// subscribers read it in place. Made by [`super::DurableTopicBuilder::publisher`].
///
/// Messages without a key go to the partitions in turn; [`Publisher::send_keyed`] sends every
/// message of one key to the same partition, so they keep their order for every reader.
/// Publishers of one partition take turns through its append lock, held while one message is
/// written in place and published (no system call: syncs, new segment files and retention
/// happen after it is let go, except a file the writer reaches before it was made ahead); one
/// that dies holding it is detected and the lock taken over within [`crate::CHECK_INTERVAL`],
/// and whatever it half wrote is written over.
///
/// A publisher never waits for subscribers: the log keeps every message until retention
/// deletes it.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("doc-dpub-{}", std::process::id()));
/// let node = ringbus::Node::in_process();
/// let topic = node.topic::<u64>("orders").durable(&dir);
/// let mut publisher = topic.publisher()?;
/// let (partition, offset) = publisher.send(&7)?;
/// assert_eq!((partition, offset), (0, 0));
/// assert_eq!(publisher.send_keyed(b"customer-1", &8)?, (0, 1));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Publisher<P: Payload + ?Sized> {
    shared: Shared,
    me: u64,
    waiter: lock::Waiter,
    /// Per partition, the segment last written.
    segs: Vec<Option<Arc<LogSegment>>>,
    /// Per partition, the `Batch` syncer (started at the first write).
    flushers: Vec<Option<Flusher>>,
    /// Per partition, the last offset this publisher wrote.
    last: Vec<Option<u64>>,
    policy: SyncPolicy,
    retention: Retention,
    next_partition: usize,
    sent: u64,
    stamper: Stamper,
    /// Work an append found to do once its lock is let go: a chunk to populate, the base of a
    /// segment file to make ahead (both handed to `ahead`), and whether retention is due.
    pretouch: Option<Pretouch>,
    make_ahead: Option<u64>,
    retain_due: bool,
    /// The helper thread that populates and makes files ahead of this publisher.
    helper: Helper,
    _p: PhantomData<fn(&P)>,
}

crate::debug_fields!(Publisher<P>: policy, retention, sent);

/// A publisher's helper thread (see [`DurableTopicBuilder::helper_thread`]).
///
/// [`DurableTopicBuilder::helper_thread`]: super::DurableTopicBuilder::helper_thread
enum Helper {
    /// Not wanted, or it could not be started.
    Off,
    /// Wanted, started at the first job.
    NotStarted,
    Running(Ahead),
}

/// The key digest a message sent with `key` carries (never [`KEY_NONE`]).
pub fn key_digest(key: &[u8]) -> u64 {
    crate::shm::fnv1a(key.iter().copied()).max(1)
}

impl<P: Payload + ?Sized> Publisher<P> {
    pub(crate) fn new(
        shared: Shared,
        policy: SyncPolicy,
        retention: Retention,
        helper_thread: bool,
    ) -> Publisher<P> {
        let n = shared.partitions();
        Publisher {
            shared,
            me: ProcessId::current().pack(),
            waiter: lock::Waiter::default(),
            segs: vec![None; n],
            flushers: (0..n).map(|_| None).collect(),
            last: vec![None; n],
            policy,
            retention,
            next_partition: 0,
            sent: 0,
            stamper: Stamper::new(),
            pretouch: None,
            make_ahead: None,
            retain_due: false,
            helper: if helper_thread {
                Helper::NotStarted
            } else {
                Helper::Off
            },
            _p: PhantomData,
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.shared.name
    }

    /// Partitions of the topic.
    pub fn partitions(&self) -> usize {
        self.shared.partitions()
    }

    /// Messages this handle sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Largest message in bytes.
    pub fn max_message_size(&self) -> usize {
        self.shared.spec().max_message
    }

    /// Sends `msg` without a key (partitions in turn). Returns its partition and offset.
    pub fn send(&mut self, msg: &P::Input) -> Result<(usize, u64), SendError> {
        let k = self.next_partition;
        // Wrapped by a comparison, not a division.
        self.next_partition = if k + 1 == self.shared.partitions() { 0 } else { k + 1 };
        self.append(k, KEY_NONE, |buf| P::encode(msg, buf))
    }

    /// Sends `msg` with `key`: every message of a key goes to the partition the key's digest
    /// picks ([`key_digest`] modulo the partition count), so one group member reads them, in
    /// order. Returns its partition and offset.
    pub fn send_keyed(&mut self, key: &[u8], msg: &P::Input) -> Result<(usize, u64), SendError> {
        let digest = key_digest(key);
        let k = (digest % self.shared.partitions() as u64) as usize;
        self.append(k, digest, |buf| P::encode(msg, buf))
    }

    /// Applies the retention policy to every partition now (publishers also apply it each time
    /// a partition moves to a new segment file). Returns the files deleted.
    pub fn apply_retention(&self) -> usize {
        let now = super::clock::realtime_ns();
        (0..self.shared.partitions())
            .map(|k| self.shared.retain(k, &self.retention, now))
            .sum()
    }

    fn append(
        &mut self,
        k: usize,
        key: u64,
        write: impl FnOnce(&mut [u8]) -> Result<usize, SendError>,
    ) -> Result<(usize, u64), SendError> {
        let lock_word = self.shared.ctl.word(k, P_LOCK);
        if !self.waiter.lock(lock_word, self.me) {
            return Err(SendError::Busy);
        }
        let res = self.append_locked(k, key, write);
        lock::unlock(self.shared.ctl.word(k, P_LOCK));
        // Also after a failure: a dead publisher's record may have been published.
        self.shared.ctl.news_bell().ring(ALL);
        let o = res?;
        self.sent += 1;
        // Published, and readable already: under `Always`, written to disk before we return
        // (a failed sync is reported, but the message stays published).
        let synced = match self.policy {
            SyncPolicy::Always => {
                let seg = self.segs[k].as_ref().expect("mapped by the append");
                seg.sync_covering(o)
            }
            _ => Ok(()),
        };
        if let Some(f) = &self.flushers[k] {
            f.written(o);
        }
        if let Some(p) = self.pretouch.take() {
            match self.ahead() {
                Some(a) => a.populate(p),
                None => p.run(),
            }
        }
        if let Some(base) = self.make_ahead.take() {
            let log = self.shared.logs[k].clone();
            match self.ahead() {
                Some(a) => a.make(log, base),
                // Best effort: a failure here is met again, and reported, at the boundary.
                None => {
                    let _ = log.segment(base, true);
                }
            }
        }
        if std::mem::take(&mut self.retain_due) {
            self.shared
                .retain(k, &self.retention, super::clock::realtime_ns());
        }
        synced.map_err(|e| SendError::Storage(format!("partition {k} offset {o}: {e}")))?;
        Ok((k, o))
    }

    /// Writes the next offset of partition `k` and publishes it, holding its append lock.
    fn append_locked(
        &mut self,
        k: usize,
        key: u64,
        write: impl FnOnce(&mut [u8]) -> Result<usize, SendError>,
    ) -> Result<u64, SendError> {
        // Relaxed: under the append lock, whose Acquire ordered the last holder's stores
        // before ours; only lock holders store it.
        let mut o = self.shared.ctl.word(k, P_PUBLISHED).load(Ordering::Relaxed);
        self.segment(k, o)?;
        if self.segs[k].as_ref().expect("mapped above").sealed(o) {
            // A holder died between sealing this record and publishing it: its message is
            // whole (the seal is written last), and a reader may have taken the seal for
            // publication already. Published as it is; ours goes next.
            crate::log_rare!(info, partition = k, offset = o, "published a dead publisher's sealed record");
            // Its timestamp bounds ours: timestamps never go backwards in a partition.
            if let crate::log::Record::Valid(b) = self.segs[k].as_ref().expect("mapped").read(o) {
                if b.len() >= PREFIX {
                    let ts = super::timestamp_of(b);
                    // Relaxed: under the lock, as `published`.
                    let last = self.shared.ctl.word(k, P_LAST_TS);
                    last.store(last.load(Ordering::Relaxed).max(ts), Ordering::Relaxed);
                }
            }
            self.shared
                .ctl
                .word(k, P_PUBLISHED)
                .store(o + 1, Ordering::Release);
            o += 1;
            self.segment(k, o)?;
        }
        let seg = self.segs[k].as_ref().expect("mapped above");
        let ctl = &self.shared.ctl;
        let max = self.shared.spec().max_message;
        let area = seg.payload_ptr(o, PREFIX + max);
        // SAFETY: `area` is valid for PREFIX + max bytes (`payload_ptr` checked them against
        // the mapping); offset `o` is unpublished and we hold the partition's append lock, so
        // no reader reads it and no writer writes it while the slice lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(area.add(PREFIX), max) };
        let len = write(buf)?;
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        // Relaxed: under the lock, as `published`.
        let ts = self
            .stamper
            .now()
            .max(ctl.word(k, P_LAST_TS).load(Ordering::Relaxed));
        let mut prefix = [0u8; PREFIX];
        prefix[R_TIMESTAMP..][..8].copy_from_slice(&ts.to_le_bytes());
        prefix[R_KEY..][..8].copy_from_slice(&key.to_le_bytes());
        // SAFETY: as above; the prefix is the first PREFIX bytes of the area.
        unsafe { std::ptr::copy_nonoverlapping(prefix.as_ptr(), area, PREFIX) };
        self.pretouch = seg.seal(o, PREFIX + len);
        // Sealed, the record may be read already (readers take a seal for publication): it
        // is published at once, and synced (under `Always`) after the lock is let go.
        self.last[k] = Some(o);
        ctl.word(k, P_LAST_TS).store(ts, Ordering::Relaxed);
        // Release: the record (sealed above) is visible to a reader that Acquires the end.
        ctl.word(k, P_PUBLISHED).store(o + 1, Ordering::Release);
        Ok(o)
    }

    /// The helper thread, started at the first call (`None`: off, or it could not be started;
    /// this publisher then does the work itself).
    fn ahead(&mut self) -> Option<&Ahead> {
        if let Helper::NotStarted = self.helper {
            self.helper = Ahead::start().map_or(Helper::Off, Helper::Running);
        }
        match &self.helper {
            Helper::Running(a) => Some(a),
            _ => None,
        }
    }

    /// Maps (as `segs[k]`) the segment of partition `k` holding offset `o`, created if
    /// missing. Moving into a new segment makes retention due; half way through one, the next
    /// is due to be made ahead, so that a send rarely waits for a file to be made (both done
    /// by `append` after it lets the lock go).
    #[inline]
    fn segment(&mut self, k: usize, o: u64) -> Result<(), SendError> {
        let log = &self.shared.logs[k];
        let records = self.shared.spec().records;
        if let Some(s) = &self.segs[k] {
            if s.contains(o) {
                if o - s.base() == records / 2 {
                    self.make_ahead = Some(s.base() + records);
                }
                return Ok(());
            }
        }
        let seg = log
            .segment(o, true)
            .map_err(|e| SendError::Storage(e.to_string()))?;
        log.forget_below(seg.base());
        if let SyncPolicy::Batch(every) = self.policy {
            self.flushers[k]
                .get_or_insert_with(|| Flusher::start(every))
                .moved_to(&seg);
        }
        self.segs[k] = Some(seg);
        self.retain_due = true;
        Ok(())
    }
}

impl<P: Payload + ?Sized> Drop for Publisher<P> {
    fn drop(&mut self) {
        // The flushers' last syncs run as they stop.
        for f in &mut self.flushers {
            f.take();
        }
        if self.policy != SyncPolicy::Never {
            for (seg, last) in self.segs.iter().zip(&self.last) {
                if let (Some(seg), Some(o)) = (seg, last) {
                    if seg.contains(*o) {
                        let _ = seg.sync_covering(*o);
                    }
                }
            }
        }
    }
}
