//! The byte layout of a queue segment: every offset named, built in order from named sizes,
//! with compile-time checks that fields do not overlap and sit on the cache lines said here.
//! The slot state word and its transitions are `ring::work`'s.
//!
//! ```text
//! 0      segment header (256 B, see shm::header)
//! 256    control block (768 B), in 128-byte blocks (two cache lines each: the CPU's adjacent-
//!        line prefetch pairs lines, so writers of different blocks never share a pair)
//!   +0    tail          u64  next position to reserve (moved under `append`)
//!   +8    append        u64  append lock: 0, or the holder's owner word
//!         (written by producers at every message)
//!   +128  cursor        u64  next position to deliver for the first time (moved under `claim`)
//!   +136  claim         u64  claim lock: 0, or the holder's owner word
//!   +144  head          u64  every position below is acknowledged (moved under `claim`)
//!   +152  returned      u64  count of messages handed back (nack, drop, expiry): prompts scans
//!         (written by consumers at every claim)
//!   +256  dead_lettered u64  messages moved to the dead-letter queue
//!   +264  dropped       u64  messages dropped: past max deliveries with no dead-letter queue
//!   +272  redelivered   u64  deliveries beyond a message's first
//!   +280  torn          u64  records found torn or corrupt (at recovery or delivery): dropped
//!   +288  recovered     u64  messages found waiting by the last recovery
//!   +296  recoveries    u64  recoveries run (durable queues, opened with nobody alive)
//!   +304  boot          u64  hash of the boot id the segment was last recovered under
//!   +312  forwarded     u64  1: another host owns the queue, and this one is the local copy a
//!                            network bridge keeps: producers send through the outbox queue
//!                            `<name>--outbox` and wait for the owner's acceptance (0: an
//!                            ordinary queue; written once, by the bridge's producer at join)
//!   +384  room_waiters  u64  bitmap of producers (by entry) asleep on `room`
//!   +392  ready_waiters u64  bitmap of consumers (by entry) asleep on `ready`
//!   +400  room          u32  futex word producers sleep on (bumped by acks)
//!   +404  ready         u32  futex word consumers sleep on (bumped by producers)
//!         (two `sync::Doorbell`s: room = room_waiters + room, news = ready_waiters + ready)
//!         (a sleeper sets its own bit and clears it when it wakes; the bit of a participant
//!         that died asleep is cleared when its entry is reclaimed, so a crash never leaves
//!         wakers paying a futex wake per message)
//!         (both sides read the waiter counts at every message: their 128 bytes are written
//!         only by sleepers, apart from the lines producers and consumers write)
//!   +512  dlq_len       u64  length of the dead-letter queue's name (0: none)
//!   +520  dlq_name      200 bytes
//! 1024   producer table: P entries of 64 B (one line each)
//!   +0    state   u64  0 free, 1 active
//!   +8    owner   u64  pid << 32 | low 32 bits of start time
//!   +16   writing u64  position + 1 of the slot it is filling (0: none)
//!   +24   sync    u64  the producer's sync policy, for observers (`SyncCode`; written at join)
//! ..     consumer table: C entries of 64 B (one line each)
//!   +0    state    u64  as above
//!   +8    owner    u64  as above
//!   +16   prefetch u64  the consumer's prefetch, for observers (written at join)
//! ..     slots, 128-aligned: N slots of `stride` bytes (a multiple of 64)
//!   +0    state    u64  see ring::work::State
//!   +8    deadline u64  visibility deadline, CLOCK_MONOTONIC milliseconds (under `claim`)
//!   +16   stale    u64  bitmap of consumers that lost this delivery to its deadline but may
//!                       still be reading it (in memory, the slot is not reused until they let go)
//!   +24   len      u64  payload length
//!   +32   payload  max_message_size bytes (in-memory queues; durable ones keep it in the log)
//!         (the state word and the payload's first 32 bytes share a cache line)
//! ```
//!
//! In-memory stride: `round_up(32 + max_message_size, 64)`; durable: 64 (one line).
//!
//! The state word ([`State`]): `position (40 bits) << 24 | count (12) << 12 | owner (8) << 4 |
//! stale (1) << 3 | kind (3)`; kinds FREE, WRITING, READY, TAKEN (claimed), OPEN (handed to the
//! application), ACKED (acknowledged, stale readers left), SKIP (given up). The position names
//! the lap, so a stale compare-and-swap from an earlier lap fails.

use crate::error::OpenError;
use crate::log::LogShape;
use crate::loom::atomic::{AtomicU64, Ordering};
use crate::ring::work;
use crate::shm::entry::Table;
use crate::shm::{Header, Region, TypeIdentity, HEADER_LEN};
use crate::sync::doorbell::{Bells, ALL};
use crate::topic::PayloadKind;

pub use crate::ring::work::{
    State, ACKED, FREE, MAX_COUNT, OPEN, POS_BITS, READY, SKIP, STALE, TAKEN, WRITING,
};
pub use crate::shm::entry::{ACTIVE as ENTRY_ACTIVE, ENTRY_OWNER, ENTRY_STATE};

/// Segment kind of a queue.
pub const KIND_QUEUE: u32 = 3;
/// Version of this kind's byte layout (header word 8), raised on every change of it: a segment
/// of another version is refused with [`OpenError::VersionMismatch`]. 3: the slot transitions
/// moved to `ring::work` (same bytes; raised with the layout's rewrite, issue item 5). 4: each
/// entry records what observers show of its member (a producer's sync policy, a consumer's
/// prefetch). 5: the `forwarded` word (queues of other hosts, through a network bridge).
pub const LAYOUT_VERSION: u32 = 5;

/// What the outbox of a forwarded queue is named after the queue: `<name>--outbox` (module
/// doc of `ringbus-zenoh`). A queue name within 8 bytes of the 200-byte name limit has no
/// outbox, so it cannot be forwarded.
pub const OUTBOX_SUFFIX: &str = "--outbox";

/// The visibility timeout of an outbox (a bridge's forwarding attempt must end well within it).
pub const OUTBOX_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(10);

/// The outbox of forwarded queue `name` (None: the name is too long to have one).
pub fn outbox_name(name: &str) -> Option<String> {
    let out = format!("{name}{OUTBOX_SUFFIX}");
    crate::shm::validate_name(&out).is_ok().then_some(out)
}

/// A cache line.
pub const LINE: usize = 64;
/// A block of the control area: two lines (adjacent-line prefetch pairs them).
pub const BLOCK: usize = 2 * LINE;
const U64: usize = 8;
const U32: usize = 4;

/// The control block.
pub const CTRL: usize = HEADER_LEN;
crate::shm::fields! { from CTRL;
    // Producers' block.
    /// Next position to reserve.
    pub CTRL_TAIL: U64,
    /// The append lock.
    pub CTRL_APPEND: U64,
    CTRL_PRODUCERS_END,
}
crate::shm::fields! { from CTRL_TAIL + BLOCK;
    // Consumers' block.
    /// Next position to deliver for the first time.
    pub CTRL_CURSOR: U64,
    /// The claim lock.
    pub CTRL_CLAIM: U64,
    /// Every position below is acknowledged.
    pub CTRL_HEAD: U64,
    /// Messages handed back (prompts scans).
    pub CTRL_RETURNED: U64,
    CTRL_CONSUMERS_END,
}
crate::shm::fields! { from CTRL_CURSOR + BLOCK;
    // Counters' block.
    /// Messages moved to the dead-letter queue.
    pub CTRL_DEAD_LETTERED: U64,
    /// Messages dropped past their maximum deliveries.
    pub CTRL_DROPPED: U64,
    /// Deliveries beyond a message's first.
    pub CTRL_REDELIVERED: U64,
    /// Records found torn or corrupt.
    pub CTRL_TORN: U64,
    /// Messages found waiting by the last recovery.
    pub CTRL_RECOVERED: U64,
    /// Recoveries run.
    pub CTRL_RECOVERIES: U64,
    /// Hash of the boot id the segment was last recovered under.
    pub CTRL_BOOT: U64,
    /// 1: the local copy of a queue another host owns (sends go through its outbox).
    pub CTRL_FORWARDED: U64,
    CTRL_COUNTERS_END,
}
crate::shm::fields! { from CTRL_DEAD_LETTERED + BLOCK;
    // Sleepers' block.
    /// Bitmap of producers asleep on `room`.
    pub CTRL_ROOM_WAITERS: U64,
    /// Bitmap of consumers asleep on `ready`.
    pub CTRL_READY_WAITERS: U64,
    /// Futex word producers sleep on.
    pub CTRL_ROOM: U32,
    /// Futex word consumers sleep on.
    pub CTRL_READY: U32,
    CTRL_SLEEPERS_END,
}
/// Longest dead-letter queue name.
pub const DLQ_NAME_CAP: usize = 200;
crate::shm::fields! { from CTRL_ROOM_WAITERS + BLOCK;
    // Dead-letter queue's name.
    /// Length of the dead-letter queue's name (0: none).
    pub CTRL_DLQ_LEN: U64,
    /// The dead-letter queue's name.
    pub CTRL_DLQ_NAME: DLQ_NAME_CAP,
    CTRL_DLQ_END,
}
/// Bytes of the control block.
pub const CTRL_LEN: usize = 6 * BLOCK;
/// The producer table.
pub const PRODUCER_TABLE: usize = CTRL + CTRL_LEN;
/// Bytes of a producer or consumer entry.
pub const ENTRY_LEN: usize = LINE;
/// A producer entry's `writing` word (after the entry's state and owner words).
pub const PRODUCER_WRITING: usize = ENTRY_OWNER + U64;
/// A producer entry's sync policy word ([`sync_code`]), read by observers only.
pub const PRODUCER_SYNC: usize = PRODUCER_WRITING + U64;
/// A consumer entry's prefetch word, read by observers only.
pub const CONSUMER_PREFETCH: usize = ENTRY_OWNER + U64;
/// Alignment of the slots.
pub const SLOTS_ALIGN: usize = BLOCK;

crate::shm::fields! { from 0;
    /// Slot field offsets.
    pub SLOT_STATE: U64,
    /// Visibility deadline.
    pub SLOT_DEADLINE: U64,
    /// Stale-reader bitmap.
    pub SLOT_STALE: U64,
    /// Payload length.
    pub SLOT_LEN: U64,
    /// Bytes of slot header before an in-memory payload.
    pub SLOT_HEADER,
}
/// Stride of a durable queue's slots (no payload: it is in the log).
pub const DURABLE_STRIDE: usize = LINE;

// Each block holds its fields and starts a pair of lines; the blocks follow one another.
const _: () = assert!(CTRL % BLOCK == 0 && CTRL_CURSOR % BLOCK == 0);
const _: () = assert!(CTRL_DEAD_LETTERED % BLOCK == 0 && CTRL_ROOM_WAITERS % BLOCK == 0);
const _: () = assert!(CTRL_DLQ_LEN % BLOCK == 0);
const _: () = assert!(CTRL_PRODUCERS_END <= CTRL_CURSOR);
const _: () = assert!(CTRL_CONSUMERS_END <= CTRL_DEAD_LETTERED);
const _: () = assert!(CTRL_COUNTERS_END <= CTRL_ROOM_WAITERS);
const _: () = assert!(CTRL_SLEEPERS_END <= CTRL_DLQ_LEN);
const _: () = assert!(CTRL_DLQ_END <= PRODUCER_TABLE);
// The futex words are 4-aligned, the rest 8-aligned.
const _: () = assert!(CTRL_ROOM % U32 == 0 && CTRL_READY % U32 == 0 && CTRL_DLQ_NAME % U64 == 0);
// The tables start on lines; an entry is one line.
const _: () = assert!(PRODUCER_TABLE % BLOCK == 0 && ENTRY_LEN == LINE);
const _: () = assert!(PRODUCER_SYNC + U64 <= ENTRY_LEN && CONSUMER_PREFETCH + U64 <= ENTRY_LEN);
// A slot's header fits its first line, with the payload's start (32-aligned).
const _: () = assert!(SLOT_HEADER <= LINE && SLOT_HEADER % 32 == 0);
const _: () = assert!(DURABLE_STRIDE >= SLOT_HEADER && DURABLE_STRIDE % LINE == 0);
// The stale bitmap has a bit per consumer, and the count field holds every allowed count.
const _: () = assert!(MAX_PARTICIPANTS <= work::MAX_OWNERS);
const _: () = assert!(MAX_DELIVERIES < MAX_COUNT);

/// Offset of the slots of a queue with `producers` and `consumers` entries.
pub const fn slots_offset(producers: usize, consumers: usize) -> usize {
    (PRODUCER_TABLE + (producers + consumers) * ENTRY_LEN).next_multiple_of(SLOTS_ALIGN)
}

/// Bytes of a slot of a queue of messages up to `max_message_size` bytes.
pub const fn stride(max_message_size: usize, durable: bool) -> usize {
    if durable {
        DURABLE_STRIDE
    } else {
        (SLOT_HEADER + max_message_size).next_multiple_of(LINE)
    }
}

/// Largest capacity (slots) of a queue.
pub const MAX_CAPACITY: usize = 1 << 24;
/// Largest message of a queue.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;
/// Most producers, and most consumers, of one queue.
pub const MAX_PARTICIPANTS: usize = 64;
/// Most deliveries [`crate::QueueBuilder::max_deliveries`] may allow (the count field's range).
pub const MAX_DELIVERIES: u32 = 4000;

/// A sync policy as a producer entry records it: 0 none (an in-memory queue), 1 `Always`,
/// 2 `Never`, 3 `Batch`, with the interval in milliseconds above 8 bits.
pub fn sync_code(durable: bool, policy: crate::SyncPolicy) -> u64 {
    use crate::SyncPolicy::*;
    match (durable, policy) {
        (false, _) => 0,
        (true, Always) => 1,
        (true, Never) => 2,
        (true, Batch(every)) => 3 | (every.as_millis().min(1 << 40) as u64) << 8,
    }
}

/// The sync policy a producer entry's word records (`None`: none, or a word no producer
/// writes).
pub fn sync_of(code: u64) -> Option<crate::SyncPolicy> {
    use crate::SyncPolicy::*;
    match code & 0xff {
        1 => Some(Always),
        2 => Some(Never),
        3 => Some(Batch(std::time::Duration::from_millis(code >> 8))),
        _ => None,
    }
}

/// The dead-letter queue's name recorded in queue segment `r` (validated), if any.
pub(crate) fn dead_letter_name(r: &Region) -> Option<String> {
    // Relaxed: written before the segment was published.
    let len = usize::try_from(r.u64_at(CTRL_DLQ_LEN).load(Ordering::Relaxed)).ok()?;
    if len == 0 || len > DLQ_NAME_CAP {
        return None;
    }
    let bytes: Vec<u8> = (0..len.div_ceil(8))
        // Relaxed: as the length.
        .flat_map(|w| r.u64_at(CTRL_DLQ_NAME + 8 * w).load(Ordering::Relaxed).to_le_bytes())
        .take(len)
        .collect();
    let name = String::from_utf8(bytes).ok()?;
    crate::shm::validate_name(&name).is_ok().then_some(name)
}

/// Whether a segment is durable, and the payload kind, packed in one config word.
fn flags(durable: bool, kind: PayloadKind) -> u64 {
    u64::from(durable) | (kind as u64) << 8
}

/// The validated shape of a queue segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueLayout {
    pub capacity: usize,
    pub max_message_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub durable: bool,
    pub kind: PayloadKind,
    pub max_deliveries: u32,
    pub visibility_ms: u64,
    pub log_records: u64,
    pub stride: usize,
    pub consumer_table: usize,
    pub slots: usize,
    pub len: usize,
}

impl QueueLayout {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        capacity: usize,
        max_message_size: usize,
        producers: usize,
        consumers: usize,
        durable: bool,
        kind: PayloadKind,
        max_deliveries: u32,
        visibility_ms: u64,
        log_records: u64,
    ) -> Result<QueueLayout, OpenError> {
        let bad = |what: String| Err(OpenError::InvalidConfig(what));
        if !capacity.is_power_of_two() || !(2..=MAX_CAPACITY).contains(&capacity) {
            return bad(format!(
                "capacity {capacity} is not a power of two in 2..={MAX_CAPACITY}"
            ));
        }
        if !(1..=MAX_MESSAGE_SIZE).contains(&max_message_size) {
            return bad(format!(
                "max message size {max_message_size} is not in 1..={MAX_MESSAGE_SIZE}"
            ));
        }
        for (n, what) in [(producers, "producers"), (consumers, "consumers")] {
            if !(1..=MAX_PARTICIPANTS).contains(&n) {
                return bad(format!("{n} {what} is not in 1..={MAX_PARTICIPANTS}"));
            }
        }
        if max_deliveries > MAX_DELIVERIES {
            return bad(format!(
                "max deliveries {max_deliveries} exceeds {MAX_DELIVERIES}"
            ));
        }
        if visibility_ms == 0 || visibility_ms > 1 << 40 {
            return bad(format!("visibility timeout of {visibility_ms} ms"));
        }
        if durable && !(1..=1 << 24).contains(&log_records) {
            return bad(format!("{log_records} records per log segment"));
        }
        let stride = stride(max_message_size, durable);
        let consumer_table = PRODUCER_TABLE + producers * ENTRY_LEN;
        let slots = slots_offset(producers, consumers);
        let Some(len) = capacity
            .checked_mul(stride)
            .and_then(|b| b.checked_add(slots))
        else {
            return bad("queue segment size overflows".into());
        };
        Ok(QueueLayout {
            capacity,
            max_message_size,
            producers,
            consumers,
            durable,
            kind,
            max_deliveries,
            visibility_ms,
            log_records: if durable { log_records } else { 0 },
            stride,
            consumer_table,
            slots,
            len,
        })
    }

    pub(crate) fn from_header(h: &Header, region_len: usize) -> Result<QueueLayout, OpenError> {
        h.check_version(LAYOUT_VERSION)?;
        let c = &h.config;
        let small = |w: u64| usize::try_from(w).unwrap_or(usize::MAX);
        let kind = match c[5] >> 8 {
            0 => PayloadKind::Pod,
            1 => PayloadKind::Bytes,
            2 => PayloadKind::Rkyv,
            k => return Err(OpenError::Corrupt(format!("unknown payload kind {k}"))),
        };
        let l = QueueLayout::new(
            small(c[0]),
            small(c[2]),
            small(c[3]),
            small(c[4]),
            c[5] & 1 != 0,
            kind,
            u32::try_from(c[6]).unwrap_or(u32::MAX),
            c[7],
            c[8],
        )
        .map_err(|e| OpenError::Corrupt(format!("queue configuration: {e}")))?;
        if l.stride as u64 != c[1] || l.len != region_len || h.segment_len != region_len as u64 {
            return Err(OpenError::Corrupt(format!(
                "queue layout needs {} bytes (stride {}), segment has {region_len}",
                l.len, l.stride
            )));
        }
        Ok(l)
    }

    pub(crate) fn header(&self, ty: TypeIdentity) -> Header {
        Header {
            kind: KIND_QUEUE,
            version: LAYOUT_VERSION,
            segment_len: self.len as u64,
            ty,
            config: [
                self.capacity as u64,
                self.stride as u64,
                self.max_message_size as u64,
                self.producers as u64,
                self.consumers as u64,
                flags(self.durable, self.kind),
                u64::from(self.max_deliveries),
                self.visibility_ms,
                self.log_records,
            ],
        }
    }

    /// The shape of a durable queue's log: one record per position, of the ring's message
    /// size. Derived from the (validated) ring layout only, so the ring and the log never
    /// disagree on a record's size.
    pub(crate) fn log_shape(&self) -> LogShape {
        LogShape {
            max_payload: self.max_message_size,
            records: self.log_records,
        }
    }

    #[inline]
    pub(crate) fn producer_entry(&self, i: usize) -> usize {
        PRODUCER_TABLE + i * ENTRY_LEN
    }

    /// Offset of the slot of position `pos`.
    #[inline]
    pub(crate) fn slot(&self, pos: u64) -> usize {
        self.slots + (pos as usize & (self.capacity - 1)) * self.stride
    }

    /// The work ring's cells in region `r` (a segment of this layout).
    #[inline]
    pub(crate) fn cells<'a>(&'a self, r: &'a Region) -> WorkCells<'a> {
        WorkCells { r, l: self }
    }

    /// What producer `i` leaves (its part of `Members::release`): a position it reserved and
    /// never published (given up: SKIP) and its bit in the room doorbell.
    fn release_producer(&self, r: &Region, i: usize) {
        work::producer_died(&self.cells(r), i);
        self.room_bell(r).forget(i);
    }

    /// What consumer `i` leaves (its part of `Members::release`): deliveries (back to the queue,
    /// their count kept: a delivery to a consumer that died counts), stale-reader bits (an
    /// acknowledged slot it was the last reader of is freed) and its bit in the news doorbell.
    fn release_consumer(&self, r: &Region, i: usize) {
        let cells = self.cells(r);
        let (mut returned, mut freed) = (0, false);
        for slot in 0..self.capacity {
            let (back, free) = work::consumer_died(&cells, slot, i);
            returned += u64::from(back);
            freed |= free;
        }
        if returned > 0 {
            // Relaxed: a prompt to scan; consumers reread slot states with Acquire.
            r.u64_at(CTRL_RETURNED)
                .fetch_add(returned, Ordering::Relaxed);
        }
        if freed {
            self.room_bell(r).ring(ALL);
        }
        self.news_bell(r).forget(i);
    }
}

crate::shm::entry::member_tables! {
    /// The two member tables of a queue.
    QueueLayout, |l| {
        /// The producer table.
        Producer => Table::new(PRODUCER_TABLE, ENTRY_LEN, l.producers, "producer"),
        /// The consumer table.
        Consumer => Table::new(l.consumer_table, ENTRY_LEN, l.consumers, "consumer"),
    }
    release: Producer => release_producer, Consumer => release_consumer;

    /// A durable queue's segment is kept when its last member leaves (the next open recovers
    /// it); an in-memory queue's goes.
    fn outlives_members(&self) -> bool {
        self.durable
    }

    /// A producer's `writing` word starts at 0 (published by the entry's Release claim): a stale
    /// one must not make a consumer take the new producer for the filler of an old reservation.
    fn joining(&self, r: &Region, role: Role, i: usize) {
        if role == Role::Producer {
            work::producer_joined(&self.cells(r), i);
        }
    }
}

/// Consumers sleep on news of a message (rung by producers after a publish, by consumers after
/// a nack), producers on room (rung when a slot is freed).
impl Bells for QueueLayout {
    const NEWS: (usize, usize) = (CTRL_READY, CTRL_READY_WAITERS);
    const ROOM: (usize, usize) = (CTRL_ROOM, CTRL_ROOM_WAITERS);
}

/// The cells of a queue segment's work ring ([`crate::ring::work::Cells`]).
pub(crate) struct WorkCells<'a> {
    r: &'a Region,
    l: &'a QueueLayout,
}

impl work::Cells for WorkCells<'_> {
    #[inline]
    fn mask(&self) -> u64 {
        self.l.capacity as u64 - 1
    }
    #[inline]
    fn state(&self, slot: usize) -> &AtomicU64 {
        self.r
            .u64_at(self.l.slots + slot * self.l.stride + SLOT_STATE)
    }
    #[inline]
    fn deadline(&self, slot: usize) -> &AtomicU64 {
        self.r
            .u64_at(self.l.slots + slot * self.l.stride + SLOT_DEADLINE)
    }
    #[inline]
    fn stale(&self, slot: usize) -> &AtomicU64 {
        self.r
            .u64_at(self.l.slots + slot * self.l.stride + SLOT_STALE)
    }
    #[inline]
    fn tail(&self) -> &AtomicU64 {
        self.r.u64_at(CTRL_TAIL)
    }
    #[inline]
    fn writing(&self, p: usize) -> Option<&AtomicU64> {
        (p < self.l.producers).then(|| self.r.u64_at(self.l.producer_entry(p) + PRODUCER_WRITING))
    }
}
