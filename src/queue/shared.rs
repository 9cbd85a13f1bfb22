//! A queue segment shared by the handles of one process: opening, joining, leaving, reclaiming
//! what dead participants held, and recovering a durable queue.
//!
//! Joins, leaves, reclaims and recoveries run under the segment lock; the message path never
//! takes it.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::layout::*;
use crate::sync::doorbell::Bells;
use crate::error::OpenError;
use crate::log::{Log, LogSegment, Record};
use crate::ring::work::{self, Recorded, Reset};
use crate::shm::entry::{self, Members, Tables};
use crate::shm::{
    Backing, Header, OpenMode, Region, Segment, SegmentLayout, SegmentSpec, TypeIdentity,
};
use crate::sync::doorbell::ALL;

crate::shm::segment_layout!(QueueLayout, KIND_QUEUE, "queue");

/// One mapped queue segment, its validated layout, and (durable) its log.
pub(crate) struct QueueShared {
    pub(crate) seg: Segment,
    pub(crate) layout: QueueLayout,
    pub(crate) name: String,
    pub(crate) log: Option<Arc<Log>>,
}

/// What a queue opening wants: the layout, payload type, dead-letter queue and (durable) log
/// directory it creates the segment with.
pub(crate) struct Spec<'a> {
    pub(crate) layout: &'a QueueLayout,
    pub(crate) ty: &'a TypeIdentity,
    pub(crate) dlq: Option<&'a str>,
    pub(crate) log: Option<&'a LogDir>,
    /// Created as the forwarded copy of another host's queue (the `forwarded` word set before
    /// the segment is published, so no producer ever sees it unforwarded).
    pub(crate) forwarded: bool,
}

/// A durable queue's log directory, opened with the shape of the ring it serves: the ring found
/// in the segment (whose header wins over the opening handle's options), or the one being
/// created. Opened at most once per shape (opening validates every segment file).
pub(crate) struct LogDir {
    dir: PathBuf,
    opened: RefCell<Option<Arc<Log>>>,
}

impl LogDir {
    pub(crate) fn new(dir: PathBuf) -> LogDir {
        LogDir {
            dir,
            opened: RefCell::new(None),
        }
    }

    /// The log for a ring of layout `l`. Files of another shape are a typed error
    /// ([`OpenError::TypeMismatch`]): the log and the ring must agree on every record's place
    /// and size.
    fn open(&self, l: &QueueLayout) -> Result<Arc<Log>, OpenError> {
        let shape = l.log_shape();
        let mut opened = self.opened.borrow_mut();
        if let Some(log) = opened.as_ref().filter(|log| log.shape() == shape) {
            return Ok(log.clone());
        }
        let log = Arc::new(Log::open(self.dir.clone(), shape)?);
        *opened = Some(log.clone());
        Ok(log)
    }
}

/// A hash of this boot (`/proc/sys/kernel/random/boot_id`), or 0 if it cannot be read. Read
/// once per process.
pub(crate) fn boot_hash() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map_or(0, |id| crate::shm::fnv1a(id.trim().bytes()))
    })
}

impl SegmentSpec for Spec<'_> {
    type Layout = QueueLayout;

    fn init(&self, r: &Region) -> Result<(), OpenError> {
        self.layout.header(self.ty.clone()).write(r)?;
        work::init(&self.layout.cells(r));
        let name = self.dlq.unwrap_or("").as_bytes();
        // Relaxed, every store here: the segment is published later with Release.
        r.u64_at(CTRL_DLQ_LEN)
            .store(name.len() as u64, Ordering::Relaxed);
        let mut padded = [0u8; DLQ_NAME_CAP.next_multiple_of(8)];
        padded[..name.len()].copy_from_slice(name);
        for (i, chunk) in padded.chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            r.u64_at(CTRL_DLQ_NAME + 8 * i).store(w, Ordering::Relaxed);
        }
        r.u64_at(CTRL_BOOT).store(boot_hash(), Ordering::Relaxed);
        r.u64_at(CTRL_FORWARDED)
            .store(u64::from(self.forwarded), Ordering::Relaxed);
        if let Some(dir) = self.log {
            // A new ring over an existing log (its ring file was lost): the log is the truth.
            let log = dir.open(self.layout)?;
            if !log.bases()?.is_empty() {
                rebuild(r, self.layout, &log, false)?;
            }
        }
        Ok(())
    }

    fn segment_len(&self) -> usize {
        self.layout.len
    }

    fn check_type(&self, h: &Header) -> Result<(), OpenError> {
        let Ok(found) = QueueLayout::from_header(h, h.segment_len as usize) else {
            return Err(OpenError::Corrupt("queue configuration".into()));
        };
        // A fixed-size type must fit the slots (a crafted header may claim otherwise).
        let fits = h.ty.size == 0 || h.ty.size <= found.max_message_size as u64;
        if h.ty != *self.ty
            || !fits
            || found.kind != self.layout.kind
            || found.durable != self.layout.durable
        {
            return Err(OpenError::TypeMismatch {
                expected: format!(
                    "{}queue of {}",
                    if self.layout.durable { "durable " } else { "" },
                    self.ty
                ),
                found: format!(
                    "{}queue of {} in messages of {} bytes",
                    if found.durable { "durable " } else { "" },
                    h.ty,
                    found.max_message_size
                ),
            });
        }
        Ok(())
    }

    fn has_live_participants(&self, r: &Region) -> bool {
        let Some(l) = QueueLayout::found(r) else {
            return false;
        };
        // A durable queue last recovered under another boot: every process it records (entries,
        // lock holders) ran before the restart, whatever pid and start time a process of this
        // boot happens to share with one. Relaxed: under the segment lock.
        if l.durable && r.u64_at(CTRL_BOOT).load(Ordering::Relaxed) != boot_hash() {
            return false;
        }
        l.any_live(r)
    }

    fn durable(&self) -> bool {
        self.layout.durable
    }

    fn recover(&self, r: &Region) -> Result<(), OpenError> {
        let l = QueueLayout::read(r)?;
        let dir = self
            .log
            .ok_or_else(|| OpenError::Corrupt("a durable queue opened without its log".into()))?;
        let log = dir.open(&l)?;
        crate::log_rare!(info, log = %dir.dir.display(), "recovering a durable queue");
        recover(r, &l, &log)
    }
}

impl QueueShared {
    /// Opens (or creates, or recovers) queue `name` as `spec` wants it and registers a producer
    /// or a consumer, recording in its entry what observers show of it (`shown`: a producer's
    /// sync policy, a consumer's prefetch; see the layout); returns the entry index.
    pub(crate) fn open(
        backing: &Backing,
        name: &str,
        spec: &Spec,
        role: Role,
        shown: impl FnOnce(&QueueLayout) -> u64,
        mode: OpenMode,
    ) -> Result<(Arc<QueueShared>, usize), OpenError> {
        let log = spec.log;
        let (seg, layout, (index, log)) = Segment::open_kind(backing, name, mode, spec, |r, l| {
            if l.durable != log.is_some() {
                return Err(OpenError::Corrupt(
                    "a queue file's durability does not match its place".into(),
                ));
            }
            // The log takes the joined ring's shape, before we join (an error leaves nothing
            // registered).
            let log = log.map(|d| d.open(l)).transpose()?;
            l.reclaim_dead(r);
            let index = l.join(r, role)?;
            let word = match role {
                Role::Producer => l.producer_entry(index) + PRODUCER_SYNC,
                Role::Consumer => l.table(role).entry(index) + CONSUMER_PREFETCH,
            };
            // Relaxed: read by observers only, as a snapshot; written under the lock.
            r.u64_at(word).store(shown(l), Ordering::Relaxed);
            Ok((index, log))
        })?;
        Ok((
            Arc::new(QueueShared {
                seg,
                layout,
                name: name.to_string(),
                log,
            }),
            index,
        ))
    }

    pub(crate) fn region(&self) -> &Region {
        self.seg.region()
    }

    /// The dead-letter queue's name recorded in the segment (validated), if any.
    pub(crate) fn dead_letter_name(&self) -> Option<String> {
        dead_letter_name(self.region())
    }

    /// Leaves entry `i` of `role`. A producer's unfinished write is skipped; a consumer's
    /// deliveries are handed back (see `Members::release` for [`QueueLayout`]). An in-memory
    /// queue's segment is removed when nobody live is left; a durable one stays.
    pub(crate) fn leave(&self, role: Role, i: usize) {
        entry::leave(&self.seg, &self.layout, role, i);
    }

    /// Whether producer `p` is registered to a live process.
    pub(crate) fn producer_live(&self, p: usize) -> bool {
        self.member_live(Role::Producer, p)
    }

    /// Whether member `i` of `role` is registered to a live process.
    fn member_live(&self, role: Role, i: usize) -> bool {
        let t = self.layout.table(role);
        i < t.len && t.is_live(self.region(), i)
    }

    /// The work ring's cells.
    #[inline]
    pub(crate) fn cells(&self) -> WorkCells<'_> {
        self.layout.cells(self.region())
    }

    /// Whether consumer `c` is registered to a live process.
    pub(crate) fn consumer_live(&self, c: usize) -> bool {
        self.member_live(Role::Consumer, c)
    }

    /// Frees the entries of dead participants (handing back what they held), if the segment lock
    /// is free now.
    #[cold]
    pub(crate) fn reclaim_dead(&self) {
        entry::reclaim_dead_now(&self.seg, &self.layout);
    }

    /// Whether more producers and consumers are registered than this machine has CPUs: then
    /// spinning waits yield the CPU now and then (the one waited for may need it). Reads the
    /// entry tables: for slow paths.
    pub(crate) fn oversubscribed(&self) -> bool {
        static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let cpus = *CPUS.get_or_init(online_cpus);
        let r = self.region();
        let active: usize = QueueLayout::ROLES
            .iter()
            .map(|&role| self.layout.table(role).active(r))
            .sum();
        active > cpus
    }

    /// After a message was published or handed back: wakes one sleeping consumer, if any
    /// announced itself (the news doorbell).
    #[inline]
    pub(crate) fn ring_news(&self) {
        self.layout.news_bell(self.region()).ring(1);
    }

    /// After a slot was freed: wakes the producers asleep waiting for room, if any (the room
    /// doorbell).
    #[inline]
    pub(crate) fn ring_room(&self) {
        self.layout.room_bell(self.region()).ring(ALL);
    }

    /// Counts one of the statistics words.
    pub(crate) fn count(&self, word: usize, n: u64) {
        // Relaxed: a statistic, read for reporting only.
        self.region().u64_at(word).fetch_add(n, Ordering::Relaxed);
    }

    /// Reads one of the statistics words.
    pub(crate) fn stat(&self, word: usize) -> u64 {
        // Relaxed: a statistic.
        self.region().u64_at(word).load(Ordering::Relaxed)
    }
}

/// CPUs online on the machine (not this thread's affinity: participants pinned to different
/// CPUs do not compete).
fn online_cpus() -> usize {
    let count = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| {
            s.trim().split(',').try_fold(0usize, |n, range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                Some(n + b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1)
            })
        });
    count
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Repairs a durable queue whose participants all died, under the segment lock.
fn recover(r: &Region, l: &QueueLayout, log: &Log) -> Result<(), OpenError> {
    let started = Instant::now();
    // Everyone is dead: entries (whatever their state word says), locks and sleepers go.
    l.reclaim_all(r);
    for w in [CTRL_APPEND, CTRL_CLAIM] {
        // Relaxed: under the segment lock, with no live participant.
        r.u64_at(w).store(0, Ordering::Relaxed);
    }
    for bell in [l.news_bell(r), l.room_bell(r)] {
        for bit in 0..64 {
            bell.forget(bit);
        }
    }
    // Only this queue's producers take its log's sync locks, and none is alive (after a
    // restart, whatever pid the word names): they are free.
    log.clear_sync_locks()?;
    let boot = boot_hash();
    let restarted = r.u64_at(CTRL_BOOT).load(Ordering::Relaxed) != boot;
    if restarted {
        // The machine restarted: pages of the ring file may be older than the log's, whose
        // records the sync policy put on disk. Rebuild the ring from the log.
        rebuild(r, l, log, true)?;
        r.u64_at(CTRL_BOOT).store(boot, Ordering::Relaxed);
    } else {
        check_records(r, l, log)?;
    }
    r.u64_at(CTRL_RECOVERIES).fetch_add(1, Ordering::Relaxed);
    crate::log_rare!(
        info,
        waiting = r.u64_at(CTRL_RECOVERED).load(Ordering::Relaxed),
        rebuilt_from_log = restarted,
        micros = started.elapsed().as_micros() as u64,
        "recovered a durable queue whose participants all died"
    );
    let _ = started;
    Ok(())
}

/// Same boot: the ring is exact. Every message waiting for delivery has its record checked; a
/// torn or corrupt one is skipped (never delivered) and counted.
fn check_records(r: &Region, l: &QueueLayout, log: &Log) -> Result<(), OpenError> {
    // Relaxed, here and below: under the segment lock with no live participant.
    let mut head = r.u64_at(CTRL_HEAD).load(Ordering::Relaxed);
    let mut tail = r.u64_at(CTRL_TAIL).load(Ordering::Relaxed);
    // A producer that died in the append lock after marking its slot, then a consumer that
    // passed the slot: the cursor (and head) may be past the tail. Those positions are done with.
    let cursor = r.u64_at(CTRL_CURSOR).load(Ordering::Relaxed);
    if cursor > tail && cursor - tail <= l.capacity as u64 {
        tail = cursor;
        r.u64_at(CTRL_TAIL).store(tail, Ordering::Relaxed);
    }
    // The head moves only during claims, so it may lag: every position a lap behind the tail
    // has had its slot reused, so it is done with.
    if tail > head && tail - head > l.capacity as u64 {
        head = tail - l.capacity as u64;
        r.u64_at(CTRL_HEAD).store(head, Ordering::Relaxed);
        if r.u64_at(CTRL_CURSOR).load(Ordering::Relaxed) < head {
            r.u64_at(CTRL_CURSOR).store(head, Ordering::Relaxed);
        }
    }
    if tail < head {
        return Err(OpenError::Corrupt(format!(
            "queue positions head {head}, tail {tail} exceed the capacity"
        )));
    }
    // Every slot of the lap from the head is brought to a state a live queue can continue from,
    // whatever the entries said (everyone is dead): unfinished writes are given up, deliveries
    // go back to the queue, acknowledged slots are freed, and every message waiting (at any
    // position of the lap, also past a tail a crash or corruption left behind) has its record
    // checked. A state of no lap is given up too.
    let n = l.capacity as u64;
    let cells = l.cells(r);
    let mut seg: Option<Arc<LogSegment>> = None;
    let mut waiting = 0u64;
    let mut torn = Vec::new();
    let mut resets = Vec::new();
    let mut free = Vec::new();
    let mut end = tail;
    for pos in head..head.wrapping_add(n) {
        let to = match work::recorded(&cells, pos) {
            Recorded::Later => continue,
            Recorded::Unused => {
                free.push(pos);
                continue;
            }
            Recorded::Waiting { count } => {
                if !seg.as_ref().is_some_and(|g| g.contains(pos)) {
                    // A file gone: its records are lost (counted as torn below). Any other
                    // error may be passing (out of file descriptors or memory): the open fails,
                    // changing no message's state, rather than drop messages that are on disk.
                    seg = segment_if_any(log, l.log_shape().base_of(pos))?;
                }
                let ok = seg
                    .as_ref()
                    .is_some_and(|g| matches!(g.read(pos), Record::Valid(_)));
                if ok {
                    waiting += 1;
                    Reset::Waiting(count)
                } else {
                    torn.push(pos);
                    Reset::GivenUp
                }
            }
            Recorded::Acked => Reset::Done,
            Recorded::Writing | Recorded::Skipped | Recorded::Garbage => Reset::GivenUp,
        };
        end = end.max(pos.wrapping_add(1));
        resets.push((pos, to));
    }
    // Positions below the (new) tail are never reserved again: one still free for its lap
    // (the tail was found behind a later message) is given up, or the claim would wait on it.
    resets.extend(
        free.into_iter()
            .filter(|&pos| pos < end)
            .map(|pos| (pos, Reset::GivenUp)),
    );
    // Torn records become SKIP: never delivered; the slot is passed over wherever it is (at or
    // past the cursor by the claim, behind it by the scan). Deliveries go back (the same as
    // `take_back` of a dead owner), acknowledged slots are freed (their stale readers are dead),
    // unfinished writes are given up (as `producer_died`).
    for (pos, to) in resets {
        work::reset(&cells, pos, to);
    }
    r.u64_at(CTRL_TAIL).store(end, Ordering::Relaxed);
    r.u64_at(CTRL_RECOVERED).store(waiting, Ordering::Relaxed);
    r.u64_at(CTRL_TORN)
        .fetch_add(torn.len() as u64, Ordering::Relaxed);
    if !torn.is_empty() {
        crate::log_rare!(
            warn,
            torn = torn.len(),
            first_position = torn[0],
            "recovery found torn or missing records: skipped, never delivered"
        );
    }
    Ok(())
}

/// Rebuilds the ring from the log: every valid record from the first segment on is waiting,
/// except those the old ring (`trust_acks`) says were acknowledged. Records never written or
/// torn are skipped; the torn ones are counted.
fn rebuild(r: &Region, l: &QueueLayout, log: &Log, trust_acks: bool) -> Result<(), OpenError> {
    let bases = log.bases()?;
    let Some(&first) = bases.first() else {
        return Ok(());
    };
    let n = l.capacity as u64;
    // The end: after the last record written (valid or torn), looking from the last segment
    // back. Only segment files that exist are visited.
    let mut end = first;
    'find: for &base in bases.iter().rev() {
        // A file gone since `bases` was rotated away by a process still finishing (its
        // records were acknowledged): as if it were not there.
        let Some(seg) = segment_if_any(log, base)? else {
            continue;
        };
        for pos in (base..base + l.log_records).rev() {
            if !matches!(seg.read(pos), Record::Empty) {
                end = pos + 1;
                break 'find;
            }
        }
    }
    // At most a capacity of positions can be waiting; anything before was acknowledged (its
    // slot was reused).
    let first = first.max(end.saturating_sub(n));
    let mut kinds: Vec<Option<bool>> = vec![None; (end - first) as usize];
    let (mut torn, mut waiting) = (0u64, 0u64);
    for &base in &bases {
        if base + l.log_records <= first || base >= end {
            continue;
        }
        let Some(seg) = segment_if_any(log, base)? else {
            continue;
        };
        for pos in base.max(first)..(base + l.log_records).min(end) {
            kinds[(pos - first) as usize] = match seg.read(pos) {
                Record::Valid(_) => Some(true),
                Record::Corrupt(_) => Some(false),
                Record::Empty => None,
            };
        }
    }
    let cells = l.cells(r);
    for (i, rec) in kinds.iter().enumerate().take((end - first) as usize) {
        let pos = first + i as u64;
        // What the old ring says, if it is trusted (same boot: its acknowledgements and
        // give-ups are on disk with it).
        let old = if trust_acks {
            work::recorded(&cells, pos)
        } else {
            Recorded::Garbage
        };
        let to = match (rec, old) {
            // Freed for a later lap: acknowledged (an acknowledgement on disk is never wrong).
            (Some(true), Recorded::Later) => Reset::Done,
            // Given up (a send whose sync failed, a torn record): never delivered, whatever its
            // record says now.
            (Some(true), Recorded::Skipped) => Reset::GivenUp,
            (Some(true), old) => {
                waiting += 1;
                let count = match old {
                    Recorded::Waiting { count } => count,
                    _ => 0,
                };
                Reset::Waiting(count)
            }
            (Some(false), _) => {
                torn += 1;
                Reset::GivenUp
            }
            (None, _) => Reset::GivenUp,
        };
        // Under the segment lock with no live participant (or not yet published).
        work::reset(&cells, pos, to);
    }
    for pos in end..first + n {
        work::reset(&cells, pos, Reset::Unused);
    }
    for (w, v) in [(CTRL_HEAD, first), (CTRL_CURSOR, first), (CTRL_TAIL, end)] {
        r.u64_at(w).store(v, Ordering::Relaxed);
    }
    r.u64_at(CTRL_RECOVERED).store(waiting, Ordering::Relaxed);
    r.u64_at(CTRL_TORN).fetch_add(torn, Ordering::Relaxed);
    if torn > 0 {
        crate::log_rare!(
            warn,
            torn,
            "rebuilding from the log found torn records: skipped, never delivered"
        );
    }
    Ok(())
}

/// The log segment at `base`, or `None` if its file is gone.
fn segment_if_any(log: &Log, base: u64) -> Result<Option<Arc<LogSegment>>, OpenError> {
    match log.segment(base, false) {
        Ok(seg) => Ok(Some(seg)),
        Err(OpenError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
