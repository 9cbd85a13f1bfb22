//! The receiving side of a durable topic: a cursor per partition over the logs, read in place;
//! in a group, over the partitions the group gives this member, resuming from its commits.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::GroupFile;
use super::layout::*;
use super::shared::{Read, Shared};
use super::{Message, StartAt};
use crate::error::{OpenError, ReceiveError};
use crate::log::{LogSegment, Record, SyncPolicy};
use crate::sync::doorbell::ALL;
use crate::sync::ProcessId;
use crate::topic::Payload;

/// Longest single sleep of a waiting receive; it rechecks (and honours its deadline) at least
/// this often.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Reads a durable topic: every message of every partition from its start position, or, in a
/// consumer group ([`Subscriber::group`]), the messages of the partitions the group gives it.
/// Made by [`super::DurableTopicBuilder::subscriber`] (from the newest message on) or
/// [`super::DurableTopicBuilder::subscriber_at`].
///
/// Messages are read in place from the mapped log files, live ones and old ones alike; each
/// record's checksum is checked first. A record that fails its checks is reported once
/// ([`ReceiveError::Invalid`], naming partition and offset) and passed over; a position that
/// retention deleted before it was read is reported as [`ReceiveError::Lost`] and reading goes
/// on from the earliest retained offset.
///
/// ```
/// use ringbus::durable::StartAt;
///
/// let dir = std::env::temp_dir().join(format!("doc-dsub-{}", std::process::id()));
/// let node = ringbus::Node::in_process();
/// let topic = node.topic::<u64>("prices").durable(&dir);
/// let mut publisher = topic.publisher()?;
/// for v in 0..3u64 {
///     publisher.send(&v)?;
/// }
/// // A late subscriber replays what the log kept.
/// let mut replay = topic.subscriber_at(StartAt::Earliest)?;
/// let m = replay.try_receive()?;
/// assert_eq!((*m, m.offset()), (0, 0));
/// assert_eq!(*replay.try_receive()?, 1);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Subscriber<P: Payload + ?Sized> {
    shared: Shared,
    /// The subscriber entry (and doorbell bit) of this handle.
    entry: usize,
    /// Per partition, the next offset to read.
    next: Vec<u64>,
    /// Per partition, the segment last read.
    segs: Vec<Option<Arc<LogSegment>>>,
    /// Per partition, whether this handle reads it (all, or a group's share).
    mine: Vec<bool>,
    next_partition: usize,
    /// Per partition, polls that found the next record unsealed (see `poll`).
    unsealed_polls: Vec<u32>,
    /// Per partition, the offset last found unsealed in a mapped segment (`u64::MAX`: none).
    watching: Vec<u64>,
    start: StartAt,
    spin: Duration,
    policy: SyncPolicy,
    group: Option<Member>,
    _p: PhantomData<fn(&P)>,
}

crate::debug_fields!(Subscriber<P>: next, mine, start);

/// What [`Subscriber::poll`] found at an offset.
enum Poll {
    /// No message there yet.
    NotYet,
    /// The record's payload (prefix and message), in this handle's mapping.
    Ready(*const u8, usize),
    /// A record that fails its checks: passed over.
    Bad(String),
    /// Its segment file fails its checks (header): the file is passed over whole.
    BadSegment(String),
    /// Its segment file is gone (retention).
    Gone,
    /// The log could not be read.
    Failed(OpenError),
}

/// A record `Subscriber::next_record` found: where, and its payload in the handle's mapping.
struct Found {
    partition: usize,
    offset: u64,
    ptr: *const u8,
    len: usize,
}

/// When a group member commits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoCommit {
    /// After this many messages were received since the last commit.
    pub every: u64,
    /// Or once this long has passed since the last commit.
    pub interval: Duration,
}

impl Default for AutoCommit {
    /// Every 100 messages or 100 ms.
    fn default() -> Self {
        AutoCommit {
            every: 100,
            interval: Duration::from_millis(100),
        }
    }
}

/// A subscriber's membership of a group.
struct Member {
    file: GroupFile,
    index: usize,
    token: u64,
    me: u64,
    generation: u64,
    /// Every partition assigned to this member is owned by it.
    settled: bool,
    detect: Duration,
    next_check: Instant,
    auto: Option<AutoCommit>,
    received: u64,
    last_commit: Instant,
}

impl<P: Payload + ?Sized> Subscriber<P> {
    pub(crate) fn new(
        shared: Shared,
        start: StartAt,
        spin: Duration,
        policy: SyncPolicy,
    ) -> Result<Subscriber<P>, OpenError> {
        let n = shared.partitions();
        let mut next = vec![0; n];
        for (k, next) in next.iter_mut().enumerate() {
            *next = start_offset(&shared, k, start)?;
        }
        let entry = shared.ctl.join_subscriber()?;
        Ok(Subscriber {
            shared,
            entry,
            next,
            segs: vec![None; n],
            mine: vec![true; n],
            next_partition: 0,
            unsealed_polls: vec![0; n],
            watching: vec![u64::MAX; n],
            start,
            spin,
            policy,
            group: None,
            _p: PhantomData,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.shared.name
    }

    /// The next offset this handle reads in partition `k` (its position).
    pub fn position(&self, k: usize) -> Option<u64> {
        self.next.get(k).copied()
    }

    /// The partitions this handle reads now (all of them, or its group's share).
    pub fn assigned(&self) -> Vec<usize> {
        (0..self.mine.len()).filter(|&k| self.mine[k]).collect()
    }

    /// Moves every partition this handle reads to `start`.
    pub fn seek(&mut self, start: StartAt) -> Result<(), OpenError> {
        for k in 0..self.next.len() {
            if self.mine[k] {
                self.next[k] = start_offset(&self.shared, k, start)?;
                self.watching[k] = u64::MAX;
            }
        }
        Ok(())
    }

    /// Joins consumer group `group` (a name as for topics): from now on this handle reads only
    /// the partitions the group assigns it, each from the group's committed offset (or, for a
    /// partition the group never committed, from this subscriber's start position: the
    /// builder's [`StartAt`], `Latest` for [`super::DurableTopicBuilder::subscriber`]).
    ///
    /// Each partition is read by one member of the group at a time; they are shared out again
    /// when a member joins, leaves (drops its handle) or dies (its process is found gone within
    /// the detection interval, 100 ms by default, see [`Subscriber::set_detect_interval`]).
    /// Messages are committed automatically ([`AutoCommit::default`]) unless
    /// [`Subscriber::set_auto_commit`] says otherwise.
    ///
    /// At least once: a member that takes a partition over reads it from the last commit, so
    /// the messages received after that commit are delivered again, and nothing before it.
    ///
    /// A member lets go of a partition that is no longer its share inside a receive call (or
    /// [`Subscriber::try_receive`]); one that stops calling them keeps its partitions until it
    /// does, or drops the handle, or dies. A handle is in one group at a time: joining another
    /// leaves the first, as dropping the handle would.
    pub fn group(mut self, group: &str) -> Result<Subscriber<P>, OpenError> {
        self.leave_group();
        let file = GroupFile::open(&self.shared.dir, group, self.shared.partitions(), true)?;
        let (index, token) = file.join()?;
        self.mine.iter_mut().for_each(|m| *m = false);
        self.group = Some(Member {
            file,
            index,
            token,
            me: ProcessId::current().pack(),
            generation: 0,
            settled: false,
            detect: Duration::from_millis(100),
            next_check: Instant::now(),
            auto: Some(AutoCommit::default()),
            received: 0,
            last_commit: Instant::now(),
        });
        // Other members re-share the partitions now, not at their next detection interval.
        self.shared.ctl.news_bell().wake(ALL);
        self.rebalance();
        Ok(self)
    }

    /// How often a group member checks that the others are alive (default 100 ms): a dead
    /// member's partitions are read again within about this long.
    pub fn set_detect_interval(&mut self, every: Duration) {
        if let Some(m) = &mut self.group {
            m.detect = every.max(Duration::from_millis(1));
            m.next_check = m.next_check.min(Instant::now() + m.detect);
        }
    }

    /// When a group member commits by itself (`None`: only when [`Subscriber::commit`] is
    /// called). An automatic commit is made at a receive, and covers the messages received
    /// before that call (the caller was done with them when it asked for the next); dropping
    /// the handle commits everything it received.
    pub fn set_auto_commit(&mut self, auto: Option<AutoCommit>) {
        if let Some(m) = &mut self.group {
            m.auto = auto;
        }
    }

    /// Commits, for a group member, every message received so far: after a restart or a
    /// rebalance the group resumes after them. Under [`SyncPolicy::Always`] the commit is on
    /// disk when this returns. A subscriber outside any group has nothing to commit.
    pub fn commit(&mut self) -> Result<(), ReceiveError> {
        let Some(m) = &mut self.group else {
            return Ok(());
        };
        for k in 0..self.next.len() {
            if self.mine[k] && m.file.owner(k) == m.token {
                m.file.commit(k, self.next[k]);
            }
        }
        m.received = 0;
        m.last_commit = Instant::now();
        if self.policy == SyncPolicy::Always {
            m.file
                .sync()
                .map_err(|e| ReceiveError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    /// Leaves the group this handle is in, if any: commits (under auto-commit) and frees its
    /// partitions and entry.
    fn leave_group(&mut self) {
        if self.group.as_ref().is_some_and(|m| m.auto.is_some()) {
            let _ = self.commit();
        }
        if let Some(m) = self.group.take() {
            m.file.leave(m.index, m.token);
            self.shared.ctl.news_bell().wake(ALL);
            self.mine.iter_mut().for_each(|x| *x = true);
        }
    }

    /// Messages the group lost to forced retention (0 outside a group).
    pub fn group_lost(&self) -> u64 {
        self.group.as_ref().map_or(0, |m| m.file.lost())
    }

    /// Re-shares the group's partitions if its membership changed (or a detection interval
    /// passed): lets go of partitions no longer this member's (committing them first under
    /// auto-commit) and takes the free ones assigned to it.
    #[inline]
    fn rebalance(&mut self) {
        if self.group.is_some() {
            self.rebalance_group();
        }
    }

    fn rebalance_group(&mut self) {
        let Some(m) = &mut self.group else {
            return;
        };
        let now = Instant::now();
        if now >= m.next_check {
            m.next_check = now + m.detect;
            m.file.reap_dead(m.me);
        } else if m.settled && m.file.generation() == m.generation {
            return;
        }
        m.generation = m.file.generation();
        let members = m.file.members();
        let rank = members.iter().position(|&i| i == m.index);
        let Some(rank) = rank.filter(|_| m.file.holds(m.index, m.token)) else {
            // Our entry was freed (a reboot's recovery, or a tool): join again.
            if let Ok((index, token)) = m.file.join() {
                m.index = index;
                m.token = token;
            }
            m.settled = false;
            self.mine.iter_mut().for_each(|x| *x = false);
            return;
        };
        // Sticky shares: the member of rank r reads P/n partitions, one more if r < P mod n.
        // It keeps what it has up to its share, lets go of the rest (highest first), and takes
        // free ones (lowest first) while below it; so when a member dies, only its partitions
        // move.
        let (n, parts) = (members.len(), self.next.len());
        let share = parts / n + usize::from(rank < parts % n);
        let mut released = false;
        for k in 0..parts {
            if self.mine[k] && m.file.owner(k) != m.token {
                // Taken from us (a tool, or a member that judged us dead): no longer ours.
                self.mine[k] = false;
            }
        }
        let mut count = self.mine.iter().filter(|&&x| x).count();
        for k in (0..parts).rev() {
            if count <= share {
                break;
            }
            if self.mine[k] {
                if m.auto.is_some() {
                    m.file.commit(k, self.next[k]);
                }
                m.file.release(k, m.token);
                self.mine[k] = false;
                released = true;
                count -= 1;
            }
        }
        for k in 0..parts {
            if count >= share {
                break;
            }
            if !self.mine[k] && m.file.owner(k) == 0 && m.file.take(k, m.token) {
                let mut c = m.file.committed(k);
                if c == NO_COMMIT {
                    // The group's first reader of the partition: its start position is
                    // committed at once, so that a successor resumes there too.
                    c = start_offset(&self.shared, k, self.start)
                        .or_else(|_| self.shared.earliest(k))
                        .unwrap_or(0);
                    m.file.commit(k, c);
                }
                self.next[k] = c;
                self.segs[k] = None;
                self.watching[k] = u64::MAX;
                self.mine[k] = true;
                count += 1;
            }
        }
        let settled = count == share;
        m.settled = settled;
        if released {
            self.shared.ctl.news_bell().wake(ALL);
        }
    }

    /// Commits if the auto-commit policy says it is time (before a receive: what was received
    /// before is done with).
    #[inline]
    fn auto_commit(&mut self) {
        if self.group.is_none() {
            return;
        }
        let due = self.group.as_ref().is_some_and(|m| {
            m.auto.is_some_and(|a| {
                m.received > 0 && (m.received >= a.every || m.last_commit.elapsed() >= a.interval)
            })
        });
        if due {
            let _ = self.commit();
        }
    }

    /// Maps the segment of partition `k`'s next offset if it exists and is not mapped yet (see
    /// `poll`); a missing file is no error: it is made when the writer gets there.
    fn map_head(&mut self, k: usize) {
        let o = self.next[k];
        if self.segs[k].as_ref().is_some_and(|s| s.contains(o)) {
            return;
        }
        if let Ok(seg) = self.shared.logs[k].segment(o, false) {
            self.shared.logs[k].forget_below(seg.base());
            self.segs[k] = Some(seg);
        }
    }

    /// Whether a partition this handle reads has a record to read (sealed, or published).
    fn has_record(&self) -> bool {
        (0..self.next.len()).any(|k| {
            let o = self.next[k];
            self.mine[k]
                && (self.segs[k]
                    .as_ref()
                    .is_some_and(|s| s.contains(o) && s.sealed(o))
                    || o < self.shared.published(k))
        })
    }

    /// Whether a waiting receive has something to do: a record, or (in a group) a membership
    /// change or a liveness check due.
    fn ready(&self) -> bool {
        if let Some(m) = &self.group {
            if m.file.generation() != m.generation || Instant::now() >= m.next_check {
                return true;
            }
        }
        self.has_record()
    }

    /// Receives the next message if one is there: partitions are read in turn, each in offset
    /// order. [`ReceiveError::Empty`] if none is.
    pub fn try_receive(&mut self) -> Result<Message<'_, P>, ReceiveError> {
        self.rebalance();
        self.auto_commit();
        self.read_next()
    }

    /// Reads the next record of the partitions this handle reads now.
    #[inline]
    fn read_next(&mut self) -> Result<Message<'_, P>, ReceiveError> {
        match self.next_record()? {
            Some(found) => self.message(found),
            None => Err(ReceiveError::Empty),
        }
    }

    /// Finds the next record of the partitions this handle reads now and moves past it.
    fn next_record(&mut self) -> Result<Option<Found>, ReceiveError> {
        let n = self.next.len();
        // Round robin from `next_partition` (below `n`), wrapped by a subtraction rather than
        // a division per message (a replay ran about 7% faster).
        for i in 0..n {
            let k = self.next_partition + i;
            let k = if k >= n { k - n } else { k };
            if !self.mine[k] {
                continue;
            }
            let o = self.next[k];
            let (ptr, len) = match self.poll(k, o) {
                Poll::NotYet => continue,
                Poll::Ready(ptr, len) => (ptr, len),
                Poll::Failed(e) => return Err(ReceiveError::Storage(e.to_string())),
                Poll::Bad(why) => {
                    self.next[k] = o + 1;
                    crate::log_rare!(warn, partition = k, offset = o, "passed over a bad record");
                    return Err(ReceiveError::Invalid(format!(
                        "partition {k} offset {o}: {why}"
                    )));
                }
                Poll::BadSegment(why) => {
                    let to = self.shared.logs[k].shape().base_of(o) + self.shared.spec().records;
                    self.next[k] = to;
                    crate::log_rare!(warn, partition = k, offset = o, "passed over a bad segment file");
                    return Err(ReceiveError::Invalid(format!(
                        "partition {k} offsets {o}..{to}: {why}"
                    )));
                }
                Poll::Gone => return Err(self.lost(k, o)),
            };
            self.next[k] = o + 1;
            self.next_partition = if k + 1 == n { 0 } else { k + 1 };
            if let Some(m) = &mut self.group {
                m.received += 1;
            }
            return Ok(Some(Found {
                partition: k,
                offset: o,
                ptr,
                len,
            }));
        }
        Ok(None)
    }

    /// The message of a record `next_record` found (borrowing this handle, which holds its
    /// mapping).
    #[inline]
    fn message(&self, f: Found) -> Result<Message<'_, P>, ReceiveError> {
        let (k, o) = (f.partition, f.offset);
        // The log's records have room to the end of a cache line; a message is refused past
        // the topic's own limit (a record no publisher of this topic wrote).
        let max = self.shared.spec().max_message;
        if f.len - PREFIX > max {
            return Err(ReceiveError::Invalid(format!(
                "partition {k} offset {o}: message of {} bytes, the topic's limit is {max}",
                f.len - PREFIX
            )));
        }
        // SAFETY: `f.ptr` is valid for `f.len` bytes (a record `poll` checked against its
        // mapping, held by `self.segs[k]` until this handle reads partition `k` again, which
        // needs `&mut self`), and `f.len >= PREFIX`.
        let prefix = unsafe { std::slice::from_raw_parts(f.ptr, PREFIX) };
        let timestamp = super::timestamp_of(prefix);
        let key = u64::from_le_bytes(prefix[R_KEY..][..8].try_into().expect("8 bytes"));
        // SAFETY: the message follows the prefix in the record: `len - PREFIX` bytes, 16-
        // aligned (log payloads are 16-aligned, PREFIX is a multiple of 16, and payload types
        // of durable topics align to at most 16, checked by the builder). The mapping is
        // held by `self.segs[k]`, which the returned message borrows (through `&self`, while
        // the caller's `&mut self` is borrowed), and a published record is never written again
        // (segment files are deleted whole, never reused, and a deleted file stays mapped).
        let view = unsafe { P::view(f.ptr.add(PREFIX), f.len - PREFIX) };
        match view {
            Ok(view) => Ok(Message {
                view,
                partition: k,
                offset: o,
                timestamp,
                key,
            }),
            Err(why) => Err(ReceiveError::Invalid(format!(
                "partition {k} offset {o}: {why}"
            ))),
        }
    }

    /// Looks at offset `o` of partition `k`: ready when sealed in the segment this handle
    /// maps already, or when published. A seal is written last, on a complete record, and a
    /// sealed record is published as it is (by its writer, or by the next one if its writer
    /// died); polling the seal, in the record's own cache line, spares a live reader a second
    /// line transfer per message.
    #[inline(always)]
    fn poll(&mut self, k: usize, o: u64) -> Poll {
        if let Some(seg) = &self.segs[k] {
            if seg.contains(o) {
                // Seen unsealed, then sealed: written just now by a live writer, whose seal is
                // its last store; its checksum guards records at rest (what replays read), and
                // only its length and offset are checked.
                let watched = self.watching[k] == o;
                match seg.read_sealed(o, !watched) {
                    Some(Record::Valid(b)) if b.len() >= PREFIX => {
                        return Poll::Ready(b.as_ptr(), b.len())
                    }
                    Some(Record::Valid(b)) => {
                        return Poll::Bad(format!("{} bytes, shorter than the prefix", b.len()))
                    }
                    Some(Record::Corrupt(why)) => return Poll::Bad(why),
                    Some(Record::Empty) | None => {}
                }
                // Unsealed: not written yet, or a hole below the published end (lost in a
                // machine crash, or a record whose checksum happens to be 0). The end, on the
                // line the publisher stores to at every send, is read only at every 16th such
                // poll: a hole is rare, and polling two lines would slow noticing a seal.
                self.watching[k] = o;
                self.unsealed_polls[k] = self.unsealed_polls[k].wrapping_add(1);
                if self.unsealed_polls[k] % 16 != 0 {
                    return Poll::NotYet;
                }
            }
        }
        if o >= self.shared.published(k) {
            // Past the end, in a segment not mapped here: a record may be sealed there all the
            // same (its writer died between seal and publication; the next writer publishes it
            // as it is), and every reader must see it alike. Mapped at every 16th such poll: a
            // failed open when the file does not exist yet is a system call.
            self.unsealed_polls[k] = self.unsealed_polls[k].wrapping_add(1);
            if self.unsealed_polls[k] % 16 == 0 {
                self.map_head(k);
            }
            return Poll::NotYet;
        }
        match self.shared.read(k, o, &mut self.segs[k]) {
            Err(e) => Poll::Failed(e),
            Ok(Read::Valid(b)) => Poll::Ready(b.as_ptr(), b.len()),
            Ok(Read::Bad(why)) => Poll::Bad(why),
            Ok(Read::BadSegment(why)) => Poll::BadSegment(why),
            Ok(Read::Gone) => Poll::Gone,
        }
    }

    /// Partition `k`'s segment holding `o` is gone: moves to the earliest retained offset and
    /// reports the loss.
    fn lost(&mut self, k: usize, o: u64) -> ReceiveError {
        let earliest = match self.shared.earliest(k) {
            Ok(e) => e,
            Err(e) => {
                self.next[k] = o;
                return ReceiveError::Storage(e.to_string());
            }
        };
        if earliest <= o {
            // A file missing in the middle (removed by hand): pass its offsets over.
            let to = self.shared.logs[k].shape().base_of(o) + self.shared.spec().records;
            self.next[k] = to;
            return ReceiveError::Invalid(format!(
                "partition {k} offsets {o}..{to}: segment file missing"
            ));
        }
        self.next[k] = earliest;
        if let Some(m) = &self.group {
            m.file.add_lost(earliest - o);
        }
        ReceiveError::Lost {
            partition: k,
            from: o,
            to: earliest,
        }
    }

    /// Waits for the next message (spinning first, then sleeping on the topic's doorbell).
    pub fn receive(&mut self) -> Result<Message<'_, P>, ReceiveError> {
        loop {
            self.wait(None, Duration::ZERO)?;
            if let Some(found) = self.next_record()? {
                return self.message(found);
            }
        }
    }

    /// Waits at most `timeout` for the next message ([`ReceiveError::Timeout`]).
    pub fn receive_timeout(&mut self, timeout: Duration) -> Result<Message<'_, P>, ReceiveError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // No deadline (too far to represent): as `receive`.
            self.wait(deadline, timeout)?;
            if let Some(found) = self.next_record()? {
                return self.message(found);
            }
        }
    }

    /// Waits until a partition this handle reads has a record (then the caller's
    /// `next_record`, with no rebalance in between, finds it, or the error it is; at worst, for
    /// a hole below the published end, after a few more rounds), or `deadline` passes
    /// ([`ReceiveError::Timeout`] of `timeout`). Membership changes and liveness checks are
    /// handled meanwhile.
    fn wait(&mut self, deadline: Option<Instant>, timeout: Duration) -> Result<(), ReceiveError> {
        let start = Instant::now();
        loop {
            self.rebalance();
            // A member waiting for messages still commits what it received, when it is time.
            self.auto_commit();
            if self.has_record() {
                return Ok(());
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(ReceiveError::Timeout(timeout));
            }
            if now < start + self.spin {
                std::hint::spin_loop();
                continue;
            }
            // About to sleep: every head segment mapped, so that a sealed record a dead writer
            // left unpublished counts as news too.
            for k in 0..self.next.len() {
                if self.mine[k] {
                    self.map_head(k);
                }
            }
            if self.has_record() {
                continue;
            }
            let mut nap = MAX_SLEEP;
            if let Some(d) = deadline {
                nap = nap.min(d - now);
            }
            if let Some(m) = &self.group {
                nap = nap.min(m.next_check.saturating_duration_since(now));
            }
            let bell = self.shared.ctl.news_bell();
            bell.sleep_unless(self.entry, nap, || self.ready().then_some(()));
        }
    }
}

/// The offset of partition `k` that `start` names.
pub(crate) fn start_offset(shared: &Shared, k: usize, start: StartAt) -> Result<u64, OpenError> {
    Ok(match start {
        StartAt::Earliest => shared.earliest(k)?,
        StartAt::Latest => shared.published(k),
        StartAt::Offset(o) => {
            let earliest = shared.earliest(k)?;
            if o < earliest {
                return Err(OpenError::NotRetained {
                    partition: k,
                    requested: o,
                    earliest,
                });
            }
            o
        }
        StartAt::Time(t) => shared.find_time(
            k,
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        )?,
    })
}

impl<P: Payload + ?Sized> Drop for Subscriber<P> {
    fn drop(&mut self) {
        self.leave_group();
        self.shared.ctl.leave_subscriber(self.entry);
    }
}
