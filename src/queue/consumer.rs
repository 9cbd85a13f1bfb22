//! The receiving side of a queue: claiming messages, reading them in place, acknowledging.
//!
//! Claims run under the queue's claim lock: one compare-and-swap takes the lock, and under it a
//! consumer takes a batch of up to its free prefetch (the messages at the delivery cursor, and
//! messages handed back behind it), marking each TAKEN by itself with a visibility deadline.
//! Acknowledging is one compare-and-swap on the slot's state from "TAKEN by me, this delivery" to
//! FREE for the next lap; it fails if the delivery was taken back meanwhile.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::layout::Role;
use super::layout::*;
use super::producer::ProducerCore;
use super::shared::QueueShared;
use crate::sync::doorbell::Bells;
use crate::error::{AckError, OpenError, ReceiveError};
use crate::log::{LogSegment, Record};
use crate::ring::work::{self, Acked, AtCursor, Behind, Claim};
use crate::sync::waiter::Parking;
use crate::sync::{lock, ProcessId, FIRST_POLLS, QUIET_NAP};
use crate::topic::Payload;

/// How often claims look for expired deliveries and dead consumers even when nothing was handed
/// back.
const SCAN_INTERVAL: Duration = Duration::from_millis(10);
/// Most positions one claim walks the head over.
const HEAD_STEPS: u64 = 4096;

/// Opens the dead-letter queue's producer when first needed.
pub(crate) type DlqOpener = Box<dyn Fn() -> Result<ProducerCore, OpenError> + Send>;

/// Milliseconds of CLOCK_MONOTONIC_COARSE (shared by every process; a few ms resolution, which
/// is what visibility timeouts need).
fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

struct Claims {
    /// Claimed, not yet handed out: (position, the TAKEN state we stored).
    buffer: VecDeque<(u64, State)>,
    returned_seen: u64,
    next_scan: u64,
    /// A WRITING slot at the cursor and when we first saw it (to judge its producer).
    stuck: Option<(u64, Instant)>,
    dead_letters: Vec<(u64, State)>,
    dlq: Option<ProducerCore>,
    seg: Option<Arc<LogSegment>>,
    /// Segments left while deliveries were held: kept mapped until none is.
    retired: Vec<Arc<LogSegment>>,
    alive: [u8; MAX_PARTICIPANTS],
}

/// The payload-independent consumer.
pub(crate) struct ConsumerCore {
    shared: Arc<QueueShared>,
    index: usize,
    me: u64,
    /// Remembers a claim lock found stuck (see [`lock::Waiter`]).
    claim_waiter: lock::Waiter,
    prefetch: usize,
    /// Most messages claimed at once (at most `prefetch`).
    batch: usize,
    spin: Duration,
    held: Cell<usize>,
    /// More participants than CPUs (refreshed every scan interval): spinning waits yield.
    oversubscribed: Cell<bool>,
    /// Positions this consumer holds deliveries of, and how many of each.
    views: RefCell<Vec<(u64, u32)>>,
    claims: RefCell<Claims>,
    dlq_opener: Option<DlqOpener>,
}

/// What one attempt found.
enum Got {
    Message(u64, State, *const u8, usize),
    Nothing,
}

impl ConsumerCore {
    pub(crate) fn new(
        shared: Arc<QueueShared>,
        index: usize,
        prefetch: usize,
        batch: usize,
        spin: Duration,
        dlq_opener: Option<DlqOpener>,
    ) -> ConsumerCore {
        let returned_seen = shared.stat(CTRL_RETURNED);
        ConsumerCore {
            shared,
            index,
            me: ProcessId::current().pack(),
            claim_waiter: lock::Waiter::default(),
            prefetch,
            batch,
            spin,
            held: Cell::new(0),
            oversubscribed: Cell::new(false),
            views: RefCell::new(Vec::with_capacity(prefetch + 1)),
            claims: RefCell::new(Claims {
                buffer: VecDeque::with_capacity(prefetch),
                // Scan at the first claim: deliveries of dead consumers may be waiting.
                returned_seen: returned_seen.wrapping_sub(1),
                next_scan: 0,
                stuck: None,
                dead_letters: Vec::with_capacity(prefetch),
                dlq: None,
                seg: None,
                retired: Vec::new(),
                alive: [0; MAX_PARTICIPANTS],
            }),
            dlq_opener,
        }
    }

    /// Whether every message ever sent is acknowledged (head = tail): nothing waits, nothing is
    /// in flight, so no scan can find anything to take back. The head moves only when a scan
    /// passes acknowledged positions, so after the last acknowledgement the queue counts as
    /// settled once the next scan has caught the head up with the tail. Relaxed loads: a hint
    /// for the async nap, rechecked at every poll.
    fn settled(&self) -> bool {
        let r = self.shared.region();
        r.u64_at(CTRL_HEAD).load(Ordering::Relaxed) == r.u64_at(CTRL_TAIL).load(Ordering::Relaxed)
    }

    /// One attempt: a buffered claim, or a new batch.
    fn try_once(&self) -> Result<Got, ReceiveError> {
        loop {
            let next = self.claims.borrow_mut().buffer.pop_front();
            if let Some((pos, s)) = next {
                let Some(s) = self.mark_reader(pos, s) else {
                    // Taken back while it waited here (its deadline passed): not ours to read.
                    continue;
                };
                return self.open_delivery(pos, s);
            }
            let held = self.held.get();
            if held >= self.prefetch {
                return Err(ReceiveError::TooManyHeld(self.prefetch));
            }
            if self.fill((self.prefetch - held).min(self.batch))? == 0 {
                return Ok(Got::Nothing);
            }
        }
    }

    /// Before the application reads claimed position `pos` (claim state `s`): marks the
    /// delivery OPEN, so that a scanner taking it back registers this consumer as a reader of the
    /// slot (its bit in the slot's `stale` word) and the slot is not reused while we read. None
    /// if the delivery was taken back first (nothing to read, nothing registered). Returns the
    /// state to acknowledge.
    #[inline]
    fn mark_reader(&self, pos: u64, s: State) -> Option<State> {
        work::open(&self.shared.cells(), pos, s)
    }

    /// Views claimed position `pos` (delivery state `s`), or drops it if it is invalid.
    fn open_delivery(&self, pos: u64, s: State) -> Result<Got, ReceiveError> {
        let l = &self.shared.layout;
        let r = self.shared.region();
        let (ptr, len) = if l.durable {
            let mut c = self.claims.borrow_mut();
            if !c.seg.as_ref().is_some_and(|g| g.contains(pos)) {
                let log = self.shared.log.as_ref().expect("durable queues have a log");
                let next = match log.segment(pos, false) {
                    Ok(seg) => Some(seg),
                    Err(OpenError::NotFound(_)) => None,
                    Err(e) => {
                        // Maybe transient (out of file descriptors or memory): hand the message
                        // back rather than lose it.
                        drop(c);
                        let _ = self.nack(pos, s, true);
                        return Err(ReceiveError::Storage(e.to_string()));
                    }
                };
                // Deliveries still held may read the segment we leave: keep it mapped until
                // none is held (see `unhold`).
                if let Some(old) = std::mem::replace(&mut c.seg, next) {
                    if self.held.get() > 0 {
                        c.retired.push(old);
                    }
                }
            }
            // No checksum here: the record was published by a live producer after it was
            // complete, or checked when the queue was recovered (see ARCHITECTURE.md).
            let found = c
                .seg
                .as_ref()
                .map(|g| g.read_unchecked(pos).map(|b| (b.as_ptr(), b.len())));
            drop(c);
            match found {
                Some(Some(found)) => found,
                Some(None) => {
                    return Err(self.drop_invalid(pos, s, "bad record length or offset".into()))
                }
                None => return Err(self.drop_invalid(pos, s, "its log segment is missing".into())),
            }
        } else {
            // Relaxed: ordered after our Acquire load of READY when we claimed it.
            let len = r.u64_at(l.slot(pos) + SLOT_LEN).load(Ordering::Relaxed);
            if len > l.max_message_size as u64 {
                return Err(self.drop_invalid(pos, s, format!("length {len} exceeds the maximum")));
            }
            let len = len as usize;
            (r.ptr(l.slot(pos) + SLOT_HEADER, len) as *const u8, len)
        };
        self.hold(pos);
        Ok(Got::Message(pos, s, ptr, len))
    }

    #[cold]
    fn drop_invalid(&self, pos: u64, s: State, why: String) -> ReceiveError {
        self.hold(pos);
        let _ = self.ack(pos, s);
        self.shared.count(CTRL_TORN, 1);
        crate::log_rare!(warn, queue = %self.shared.name, position = pos, why = %why,
            "dropped a torn or invalid message");
        ReceiveError::Invalid(format!("message at position {pos} dropped: {why}"))
    }

    /// Claims up to `want` messages under the claim lock. Returns how many were claimed;
    /// [`ReceiveError::Busy`] if the claim lock stays held by a live process (stopped inside it,
    /// or a corrupt word).
    fn fill(&self, want: usize) -> Result<usize, ReceiveError> {
        let sh = &self.shared;
        let l = &sh.layout;
        let r = sh.region();
        let mut c = self.claims.borrow_mut();
        let c = &mut *c;
        let want = want.min(self.prefetch);
        // Nothing new, nothing handed back and no scan due: done without the lock. Relaxed
        // loads: a hint; the claim below rereads everything under the lock.
        let cursor = r.u64_at(CTRL_CURSOR).load(Ordering::Relaxed);
        let cells = sh.cells();
        if work::is_free_for(&cells, cursor)
            && r.u64_at(CTRL_RETURNED).load(Ordering::Relaxed) == c.returned_seen
            && now_ms() < c.next_scan
        {
            return Ok(0);
        }
        let claim = r.u64_at(CTRL_CLAIM);
        if !self.claim_waiter.lock(claim, self.me) {
            return Err(ReceiveError::Busy);
        }

        // Relaxed: under the claim lock; a hint for when to scan.
        let returned = r.u64_at(CTRL_RETURNED).load(Ordering::Relaxed);
        let now = now_ms();
        let deadline = now + l.visibility_ms;
        // Relaxed, cursor and head: only moved under the claim lock, which we hold.
        let head = r.u64_at(CTRL_HEAD).load(Ordering::Relaxed);
        let mut cursor = r.u64_at(CTRL_CURSOR).load(Ordering::Relaxed);
        let before = c.buffer.len();

        if returned != c.returned_seen || now >= c.next_scan {
            c.returned_seen = returned;
            let check_alive = now >= c.next_scan;
            if check_alive {
                c.next_scan = now + SCAN_INTERVAL.as_millis() as u64;
                c.alive = [0; MAX_PARTICIPANTS];
                self.oversubscribed.set(sh.oversubscribed());
            }
            self.scan(c, head, cursor, want, deadline, now, check_alive);
        }

        let mut skipped = false;
        // Bounded by the capacity whatever the shared words say: in a sane ring the cursor
        // passes at most a lap of slots freed ahead of it before it reaches the tail.
        let mut steps = 0;
        while c.buffer.len() - before < want && steps < l.capacity {
            steps += 1;
            match work::at_cursor(&cells, cursor) {
                AtCursor::Ready(s) => self.claim_one(c, cursor, s, deadline),
                // Reserved: its producer is judged (liveness, `writing` word) only once the slot
                // has been stuck for a check interval.
                AtCursor::Writing(s)
                    if !self.judge_writer_now(c, cursor)
                        || !work::writer_gone(&cells, cursor, s, |p| sh.producer_live(p)) =>
                {
                    break
                }
                // Given up (SKIP), or reserved by a producer that is gone (WRITING): the slot
                // goes to the producer of the next lap. If the producer published or gave up
                // meanwhile, the pass fails and the slot is looked at again.
                AtCursor::Writing(s) | AtCursor::Skipped(s) => {
                    if !work::pass(&cells, cursor, s) {
                        continue;
                    }
                    skipped = true;
                }
                AtCursor::Empty => break,
                // Delivered already (a claimer died after marking it and before moving the
                // cursor), or freed for a later lap.
                AtCursor::Done => {}
                // Neither this lap nor freed for the next: a corrupt state. Stop here rather
                // than guess; the queue stalls at this position (see ARCHITECTURE.md).
                AtCursor::Corrupt => break,
            }
            // Wrapping: a corrupt cursor must not overflow.
            cursor = cursor.wrapping_add(1);
        }
        r.u64_at(CTRL_CURSOR).store(cursor, Ordering::Relaxed);
        if skipped {
            // Slots given up were freed: producers may be waiting for them.
            self.shared.ring_room();
        }

        // Move the head over acknowledged positions.
        let mut h = head;
        // Done with: freed for the next lap, or already reused by a later lap (a producer may
        // reuse the slot as soon as it is freed, before the head gets there).
        while h < cursor && h - head < HEAD_STEPS && work::done_with(&cells, h) {
            h += 1;
        }
        if h != head {
            r.u64_at(CTRL_HEAD).store(h, Ordering::Relaxed);
        }
        lock::unlock(claim);

        if h != head {
            if let Some(log) = &sh.log {
                if l.log_records != 0 && head / l.log_records != h / l.log_records {
                    // Whole segments below the head are acknowledged: their files are reused
                    // ahead (a few system calls), or deleted in the background if enough are
                    // ahead already (unlinking a file drops its cached pages: milliseconds).
                    let (_, left) = log.reuse_below(h);
                    if left > 0 {
                        let shared = sh.clone();
                        let spawned = std::thread::Builder::new()
                            .name("ringbus-reclaim".into())
                            .spawn(move || {
                                // The head as it is now: a thread that ran late must not reuse
                                // a file under a name the head has passed meanwhile.
                                // Relaxed: a hint, never behind `h` (the head only moves up).
                                let now = shared.region().u64_at(CTRL_HEAD).load(Ordering::Relaxed);
                                shared
                                    .log
                                    .as_ref()
                                    .expect("durable")
                                    .remove_below(h.max(now));
                            });
                        if spawned.is_err() {
                            sh.log.as_ref().expect("durable").remove_below(h);
                        }
                    }
                }
            }
        }
        if !c.dead_letters.is_empty() {
            self.dead_letter(c);
        }
        Ok(c.buffer.len() - before)
    }

    /// Claims READY position `pos` (state `s`), or sets it aside for the dead-letter queue.
    #[inline]
    fn claim_one(&self, c: &mut Claims, pos: u64, s: State, deadline: u64) {
        let l = &self.shared.layout;
        let count = s.count();
        let dead = l.max_deliveries != 0 && count >= l.max_deliveries;
        // The first claim into an empty buffer is handed out at once: claimed OPEN, it needs no
        // compare-and-swap to open (see `mark_reader`). Others wait, TAKEN.
        let how = if dead {
            Claim::DeadLetter
        } else if c.buffer.is_empty() {
            Claim::Open
        } else {
            Claim::Take
        };
        let taken = work::claim(&self.shared.cells(), pos, s, self.index, how, deadline);
        if dead {
            c.dead_letters.push((pos, taken));
        } else {
            if count > 0 {
                self.shared.count(CTRL_REDELIVERED, 1);
            }
            c.buffer.push_back((pos, taken));
        }
    }

    /// Looks behind the cursor for messages handed back (claiming up to `want` of them), and
    /// takes back deliveries whose deadline passed or whose consumer died.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn scan(
        &self,
        c: &mut Claims,
        head: u64,
        cursor: u64,
        want: usize,
        deadline: u64,
        now: u64,
        check_alive: bool,
    ) {
        let l = &self.shared.layout;
        let cells = self.shared.cells();
        let before = c.buffer.len();
        // Bounded by the capacity whatever the shared words say.
        for pos in head..cursor.min(head.wrapping_add(l.capacity as u64)) {
            match work::behind(&cells, pos) {
                Behind::Ready(s) if c.buffer.len() - before < want => {
                    self.claim_one(c, pos, s, deadline);
                }
                Behind::Ready(_) => {
                    // Handed back, not claimed (prefetch full): scan again at the next claim.
                    c.returned_seen = c.returned_seen.wrapping_sub(1);
                }
                Behind::Delivered(s) => {
                    let o = s.owner();
                    // An owner that cannot be (a garbage state) counts as dead.
                    let dead = o >= l.consumers || (check_alive && !self.owner_alive(c, o));
                    if !dead && !work::expired(&cells, pos, now) {
                        continue;
                    }
                    // A live owner that opened it may be reading it: the ring registers it as
                    // a stale reader (invariant 4 of ring::work).
                    let Some(back) = work::take_back(&cells, pos, s, dead) else {
                        // The owner acknowledged or handed it back first; undoing our reader
                        // bit may have freed an acknowledged slot: producers may have room.
                        self.shared.ring_room();
                        continue;
                    };
                    if c.buffer.len() - before < want {
                        self.claim_one(c, pos, back, deadline);
                    } else {
                        // Left for later: scan again at the next claim.
                        c.returned_seen = c.returned_seen.wrapping_sub(1);
                    }
                }
                // Given up behind the cursor (a record found torn at recovery, after it had
                // been handed back): nothing to deliver; the slot goes to the next lap so the
                // head can pass it.
                Behind::Skipped(s) => {
                    if work::pass(&cells, pos, s) {
                        self.shared.ring_room();
                    }
                }
                Behind::Acked if check_alive => {
                    // Stale readers that died let go.
                    let mask = work::stale_readers(&cells, pos);
                    for o in 0..l.consumers {
                        if mask & 1 << o != 0
                            && !self.owner_alive(c, o)
                            && work::release_stale(&cells, pos, o)
                        {
                            self.shared.ring_room();
                        }
                    }
                }
                Behind::Acked | Behind::Nothing => {}
            }
        }
    }

    fn owner_alive(&self, c: &mut Claims, o: usize) -> bool {
        if o >= MAX_PARTICIPANTS {
            return false;
        }
        if c.alive[o] == 0 {
            c.alive[o] = if self.shared.consumer_live(o) { 1 } else { 2 };
        }
        c.alive[o] == 1
    }

    /// Whether it is time to judge the producer that reserved `pos` (WRITING): only after the
    /// slot has been stuck for a check interval (a /proc read is not for the hot path).
    #[cold]
    fn judge_writer_now(&self, c: &mut Claims, pos: u64) -> bool {
        let now = Instant::now();
        match c.stuck {
            Some((p, since)) if p == pos => {
                if now - since < lock::CHECK_INTERVAL {
                    return false;
                }
                c.stuck = Some((pos, now));
                true
            }
            _ => {
                c.stuck = Some((pos, now));
                false
            }
        }
    }

    /// Moves the messages set aside (past their maximum deliveries) to the dead-letter queue,
    /// or drops them if there is none.
    #[cold]
    fn dead_letter(&self, c: &mut Claims) {
        let sh = &self.shared;
        let l = &sh.layout;
        let letters = std::mem::take(&mut c.dead_letters);
        for &(pos, s) in &letters {
            let Some(opener) = &self.dlq_opener else {
                self.hold(pos);
                let _ = self.ack(pos, s);
                sh.count(CTRL_DROPPED, 1);
                crate::log_rare!(info, queue = %sh.name, position = pos, deliveries = s.count(),
                    "dropped a message past its maximum deliveries (no dead-letter queue)");
                continue;
            };
            if c.dlq.is_none() {
                c.dlq = opener().ok();
            }
            // Opened like a delivery, so the slot stays ours while we copy it.
            let Some(s) = self.mark_reader(pos, s) else {
                continue;
            };
            let bytes: Option<Vec<u8>> = if l.durable {
                let log = sh.log.as_ref().expect("durable queues have a log");
                log.segment(pos, false)
                    .ok()
                    .and_then(|g| match g.read(pos) {
                        Record::Valid(b) => Some(b.to_vec()),
                        _ => None,
                    })
            } else {
                let r = sh.region();
                // Relaxed: ordered after our Acquire load of READY.
                let len = r.u64_at(l.slot(pos) + SLOT_LEN).load(Ordering::Relaxed) as usize;
                (len <= l.max_message_size).then(|| {
                    let p = r.ptr(l.slot(pos) + SLOT_HEADER, len);
                    // SAFETY: `len` bytes of the slot's payload, in bounds (checked by `ptr`);
                    // the slot is OPEN by us, so no producer writes it while we copy (if it is
                    // taken back, our reader bit keeps it).
                    unsafe { std::slice::from_raw_parts(p, len) }.to_vec()
                })
            };
            // If the dead-letter queue cannot be opened now, or is full, the message stays
            // taken and is retried when its deadline passes.
            let moved = match (bytes, c.dlq.as_mut()) {
                (Some(b), Some(dlq)) => dlq
                    .send_with(|buf| {
                        let max = buf.len();
                        let dst = buf
                            .get_mut(..b.len())
                            .ok_or(crate::SendError::TooLarge { len: b.len(), max })?;
                        dst.copy_from_slice(&b);
                        Ok(b.len())
                    })
                    .is_ok(),
                _ => false,
            };
            if moved {
                self.hold(pos);
                let _ = self.ack(pos, s);
                sh.count(CTRL_DEAD_LETTERED, 1);
                crate::log_rare!(info, queue = %sh.name, position = pos, deliveries = s.count(),
                    "moved a message past its maximum deliveries to the dead-letter queue");
            } else {
                // Not moved (the dead-letter queue is full): the message stays taken and is
                // retried when its deadline passes. We read it no longer: un-open it, so the
                // take-back does not register us as a reader.
                // If it was taken back meanwhile, our bit goes, unless a delivery of this
                // position we still hold (an expired one) needs it.
                crate::log_rare!(debug, queue = %sh.name, position = pos,
                    "could not move a message to the dead-letter queue yet: retried later");
                let still_views = self.views.borrow().iter().any(|&(p, _)| p == pos);
                if work::close(&sh.cells(), pos, s, self.index, still_views) {
                    sh.ring_room();
                }
            }
        }
        c.dead_letters = letters;
        c.dead_letters.clear();
    }

    /// Acknowledges delivery `s` of `pos`: the message is removed.
    pub(crate) fn ack(&self, pos: u64, s: State) -> Result<(), AckError> {
        let last_view = self.unhold(pos);
        match work::ack(&self.shared.cells(), pos, s, self.index, last_view) {
            Ok(Acked::Freed) => {
                self.freed();
                Ok(())
            }
            Ok(Acked::Held) => Ok(()),
            Err(work::Expired) => {
                // Our stale bit, if any, was let go by the ring: that may have freed the slot.
                self.freed();
                Err(AckError::Expired)
            }
        }
    }

    /// Hands delivery `s` of `pos` back to the queue. `undo` takes back the delivery count
    /// (a prefetched message the application never saw).
    pub(crate) fn nack(&self, pos: u64, s: State, undo: bool) -> Result<(), AckError> {
        // A prefetched claim (`undo`) was never handed out: no view to count.
        let last_view = !undo && self.unhold(pos);
        if work::nack(&self.shared.cells(), pos, s, self.index, undo, last_view).is_err() {
            // Our stale bit, if any, was let go: that may have freed the slot.
            self.freed();
            return Err(AckError::Expired);
        }
        self.shared.count(CTRL_RETURNED, 1);
        self.shared.ring_news();
        Ok(())
    }

    /// Counts a delivery of `pos` handed to the application (one more view of its bytes).
    #[inline]
    fn hold(&self, pos: u64) {
        self.held.set(self.held.get() + 1);
        let mut v = self.views.borrow_mut();
        match v.iter_mut().find(|(p, _)| *p == pos) {
            Some((_, n)) => *n += 1,
            None => v.push((pos, 1)),
        }
    }

    /// Counts a delivery of `pos` ended; true if it was this consumer's last view of `pos` (a
    /// consumer can hold an expired delivery and a new one of the same message: its stale mark
    /// must stay until both are gone).
    #[inline]
    fn unhold(&self, pos: u64) -> bool {
        self.held.set(self.held.get() - 1);
        if self.held.get() == 0 {
            // No delivery reads a segment we left any more. (Skipped while the claims are
            // borrowed, during a claim: the next release does it.)
            if let Ok(mut c) = self.claims.try_borrow_mut() {
                if !c.retired.is_empty() {
                    c.retired.clear();
                }
            }
        }
        let mut v = self.views.borrow_mut();
        let Some(i) = v.iter().position(|(p, _)| *p == pos) else {
            return true;
        };
        v[i].1 -= 1;
        if v[i].1 == 0 {
            v.swap_remove(i);
            true
        } else {
            false
        }
    }

    /// A slot was freed: the room doorbell.
    #[inline]
    fn freed(&self) {
        self.shared.ring_room();
    }

    #[cold]
    fn wait(&self, timeout: Option<Duration>) -> Result<Got, ReceiveError> {
        let start = Instant::now();
        let deadline = timeout.and_then(|t| start.checked_add(t));
        for _ in 0..FIRST_POLLS {
            if let g @ Got::Message(..) = self.try_once()? {
                return Ok(g);
            }
        }
        let mut spins = 0u32;
        loop {
            if let g @ Got::Message(..) = self.try_once()? {
                return Ok(g);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(ReceiveError::Timeout(timeout.unwrap_or_default()));
            }
            if now - start < self.spin {
                // With more participants than CPUs, the producer we wait for may need our CPU:
                // let it run now and then.
                spins += 1;
                if spins % 16 == 0 && self.oversubscribed.get() {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let nap = deadline.map_or(SCAN_INTERVAL, |d| (d - now).min(SCAN_INTERVAL));
            // Sleep until news (the news doorbell: a producer publishes, then rings),
            // rechecking once announced.
            let got = self
                .shared
                .layout
                .news_bell(self.shared.region())
                .sleep_unless(self.index, nap, || match self.try_once() {
                    Ok(Got::Nothing) => None,
                    got => Some(got),
                });
            if let Some(got) = got {
                return got;
            }
        }
    }
}

impl Drop for ConsumerCore {
    fn drop(&mut self) {
        // Prefetched messages the application never saw go back, their count undone.
        let buffered: Vec<_> = self.claims.get_mut().buffer.drain(..).collect();
        for (pos, s) in buffered {
            let _ = self.nack(pos, s, true);
        }
        self.claims.get_mut().dlq.take();
        self.shared.leave(Role::Consumer, self.index);
    }
}

/// Receives messages from a queue, each delivered to one consumer. Made by
/// [`crate::QueueBuilder::consumer`].
///
/// A consumer is `Send`, not `Sync`; its [`Delivery`]s borrow it.
///
/// ```
/// use ringbus::Node;
///
/// let node = Node::in_process();
/// let queue = node.queue_bytes("doc-consumer");
/// let mut producer = queue.producer()?;
/// let consumer = queue.consumer()?;
/// producer.send(b"job 1")?;
/// let job = consumer.receive()?;
/// assert_eq!(&*job, b"job 1");
/// assert_eq!(job.delivery_count(), 1);
/// job.ack()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Consumer<P: Payload + ?Sized> {
    core: ConsumerCore,
    _p: PhantomData<fn() -> P>,
}

impl<P: Payload + ?Sized> std::fmt::Debug for Consumer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.core.shared.name)
            .field("index", &self.core.index)
            .field("held", &self.core.held.get())
            .finish()
    }
}

/// The future of [`Consumer::receive_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct Receive<'a, P: Payload + ?Sized> {
    /// None once the future returned.
    consumer: Option<&'a mut Consumer<P>>,
    parking: Parking,
}

impl<P: Payload + ?Sized> std::fmt::Debug for Receive<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receive")
            .field("consumer", &self.consumer)
            .field("parking", &self.parking)
            .finish()
    }
}

impl<'a, P: Payload + ?Sized> Future for Receive<'a, P> {
    type Output = Result<Delivery<'a, P>, ReceiveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let core = &this
            .consumer
            .as_deref()
            .expect("Receive polled after it returned")
            .core;
        let bell = core.shared.layout.news_bell(core.shared.region());
        let got = match core.try_once() {
            Ok(Got::Nothing) => {
                let keep = || core.shared.clone() as Arc<dyn Send + Sync>;
                // The nap brings the scans `try_once` makes, which take back the deliveries of
                // dead consumers and of passed deadlines. A settled queue has none to take back:
                // a ring (a send) is the only news it can have, and an idle consumer then naps
                // long. Settling is judged before the handshake, so a queue that stops being
                // settled by the recheck is polled again at once instead.
                let settled = core.settled();
                let nap = if settled { QUIET_NAP } else { SCAN_INTERVAL };
                // The news handshake, as `wait`'s, with the waiter watching the word instead of
                // a blocked thread.
                let got = this
                    .parking
                    .park(bell, core.index, nap, keep, cx.waker(), || {
                        match core.try_once() {
                            Ok(Got::Nothing) if !settled || core.settled() => None,
                            got => Some(got),
                        }
                    });
                if let Some(Ok(Got::Nothing)) = got {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                got
            }
            got => {
                this.parking.finish(bell, core.index);
                Some(got)
            }
        };
        match got {
            None => Poll::Pending,
            Some(got) => {
                let consumer: &'a Consumer<P> = this.consumer.take().expect("checked above");
                Poll::Ready(got.and_then(|got| consumer.deliver(got)))
            }
        }
    }
}

impl<P: Payload + ?Sized> Drop for Receive<'_, P> {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.as_deref() {
            let core = &consumer.core;
            let bell = core.shared.layout.news_bell(core.shared.region());
            self.parking.finish(bell, core.index);
        }
    }
}

impl<P: Payload + ?Sized> std::fmt::Debug for Delivery<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("position", &self.pos)
            .field("delivery_count", &self.state.count())
            .finish()
    }
}

impl<P: Payload + ?Sized> Consumer<P> {
    pub(crate) fn new(core: ConsumerCore) -> Self {
        Consumer {
            core,
            _p: PhantomData,
        }
    }

    fn deliver(&self, got: Got) -> Result<Delivery<'_, P>, ReceiveError> {
        let Got::Message(pos, state, ptr, len) = got else {
            return Err(ReceiveError::Empty);
        };
        // SAFETY: `len` bytes at `ptr` are a message we claimed and opened (OPEN by us): no
        // producer writes the slot until it is freed, which needs our ack/nack or, if the
        // deadline passes, our reader bit to clear, which we do only when we let go. A durable
        // record is rewritten only when its file is reused, which needs the head past every
        // position of its segment, and the head passes a slot only once it is freed; its
        // segment stays mapped (the consumer's current or retired segments) while any delivery
        // is held. In-memory payloads are 32-aligned, log
        // payloads 16-aligned, and a durable queue refuses payload types aligned to more than
        // 16 (checked when built).
        match unsafe { P::view(ptr, len) } {
            Ok(view) => Ok(Delivery {
                consumer: &self.core,
                pos,
                state,
                view,
                done: false,
            }),
            Err(why) => Err(self.core.drop_invalid_held(pos, state, why)),
        }
    }

    /// Takes the next message if one is waiting: [`ReceiveError::Empty`] if none,
    /// [`ReceiveError::TooManyHeld`] if this consumer holds its prefetch of unacknowledged
    /// deliveries, [`ReceiveError::Invalid`] for a message that failed validation (it is
    /// dropped).
    #[inline]
    pub fn try_receive(&self) -> Result<Delivery<'_, P>, ReceiveError> {
        let got = self.core.try_once()?;
        self.deliver(got)
    }

    /// Waits for the next message.
    pub fn receive(&self) -> Result<Delivery<'_, P>, ReceiveError> {
        let got = self.core.try_once()?;
        if let Got::Message(..) = got {
            return self.deliver(got);
        }
        let got = self.core.wait(None)?;
        self.deliver(got)
    }

    /// Waits for the next message without blocking a thread: a future that tries at once, then
    /// sleeps in the process's waiter ([`crate::queue`] module doc, "Async") until a producer
    /// rings. The same results as [`Consumer::receive`], and the same upkeep while it waits:
    /// it wakes at least every scan interval to take back deliveries of dead consumers and
    /// judge stuck locks, as `receive` does. Compose it with the runtime's timeout for a
    /// deadline. It first spins for the handle's
    /// `spin_before_sleep` without holding its thread (module doc, "Async").
    ///
    /// It borrows the consumer mutably so that the future is `Send`; the delivery it returns
    /// keeps that borrow until it is acknowledged or dropped, so async receives hold one
    /// delivery at a time (the blocking calls may hold up to the prefetch). Cancel-safe: dropping the future loses no
    /// message (a message is claimed only by the poll that returns it; one prefetched meanwhile
    /// stays in the consumer's buffer for its next receive) and unregisters it.
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let queue = node.queue::<u64>("doc-consumer-async");
    /// let mut producer = queue.producer()?;
    /// let mut consumer = queue.consumer()?;
    /// let sender = std::thread::spawn(move || producer.send(&7));
    /// futures::executor::block_on(async {
    ///     let job = consumer.receive_async().await?;
    ///     assert_eq!(*job, 7);
    ///     job.ack()?;
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// sender.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_async(&mut self) -> Receive<'_, P> {
        Receive {
            parking: Parking::new(self.core.spin),
            consumer: Some(self),
        }
    }

    /// Waits up to `timeout` for the next message ([`ReceiveError::Timeout`]).
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Delivery<'_, P>, ReceiveError> {
        let got = self.core.try_once()?;
        if let Got::Message(..) = got {
            return self.deliver(got);
        }
        let got = self.core.wait(Some(timeout))?;
        self.deliver(got)
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.core.shared.name
    }

    /// Deliveries this consumer holds (handed out, not yet acknowledged or handed back).
    pub fn held(&self) -> usize {
        self.core.held.get()
    }

    /// Queue-wide counters kept in the segment.
    pub fn stats(&self) -> Stats {
        let s = &self.core.shared;
        Stats {
            dead_lettered: s.stat(CTRL_DEAD_LETTERED),
            dropped: s.stat(CTRL_DROPPED),
            redelivered: s.stat(CTRL_REDELIVERED),
            torn: s.stat(CTRL_TORN),
            recovered: s.stat(CTRL_RECOVERED),
            recoveries: s.stat(CTRL_RECOVERIES),
        }
    }
}

impl ConsumerCore {
    #[cold]
    fn drop_invalid_held(&self, pos: u64, s: State, why: String) -> ReceiveError {
        let _ = self.ack(pos, s);
        self.shared.count(CTRL_TORN, 1);
        crate::log_rare!(warn, queue = %self.shared.name, position = pos, why = %why,
            "dropped a message that failed validation");
        ReceiveError::Invalid(format!("message at position {pos} dropped: {why}"))
    }
}

/// Counters of a queue, shared by all its handles (see [`Consumer::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages moved to the dead-letter queue after their maximum deliveries.
    pub dead_lettered: u64,
    /// Messages dropped after their maximum deliveries (no dead-letter queue configured).
    pub dropped: u64,
    /// Deliveries beyond a message's first (nack, drop, visibility timeout, dead consumer).
    pub redelivered: u64,
    /// Records found torn or invalid (at recovery or delivery): dropped, never delivered.
    pub torn: u64,
    /// Messages found waiting by the last recovery of a durable queue.
    pub recovered: u64,
    /// Recoveries run on this durable queue (opens after every participant died).
    pub recoveries: u64,
}

/// A message delivered to one consumer, read in place. Dereferences to the message.
///
/// [`Delivery::ack`] removes it from the queue; [`Delivery::nack`], or dropping the delivery,
/// hands it back for redelivery (its delivery count stays).
pub struct Delivery<'a, P: Payload + ?Sized> {
    consumer: &'a ConsumerCore,
    pos: u64,
    state: State,
    view: &'a P::View,
    done: bool,
}

crate::topic::received_view!(Delivery<'_, P> reads P);

impl<P: Payload + ?Sized> Delivery<'_, P> {
    /// How many times this message has been delivered, this time included (1 the first time).
    pub fn delivery_count(&self) -> u32 {
        self.state.count()
    }

    /// The message's position in the queue (every message sent to it counts, from 0; for a
    /// durable queue, its offset in the log).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Acknowledges the message: it is removed from the queue. [`AckError::Expired`] if its
    /// visibility timeout passed and the queue took it back (it is or was delivered again).
    pub fn ack(mut self) -> Result<(), AckError> {
        self.done = true;
        self.consumer.ack(self.pos, self.state)
    }

    /// Hands the message back for redelivery (to any consumer). [`AckError::Expired`] as for
    /// [`Delivery::ack`].
    pub fn nack(mut self) -> Result<(), AckError> {
        self.done = true;
        self.consumer.nack(self.pos, self.state, false)
    }
}

impl<P: Payload + ?Sized> Drop for Delivery<'_, P> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.consumer.nack(self.pos, self.state, false);
        }
    }
}
