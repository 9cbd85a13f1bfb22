//! Durable topics: a retained, replayable event log with offsets, consumer groups and
//! retention (what Kafka gives), on the same `log` storage as durable queues.
//!
//! [`crate::TopicBuilder::durable`] turns a topic into a durable one: every message is appended
//! to a log with a dense 64-bit offset per partition and a timestamp, and stays there until
//! retention deletes its segment file. Subscribers read the mapped log files in place, the
//! newest messages (at shared-memory latency: the publisher's record is in the page cache both
//! map) and old ones alike; a subscriber starts where [`StartAt`] says: the earliest retained
//! message, the newest, an offset, or the first message at or after a time.
//!
//! # Partitions, keys and groups
//!
//! A topic has a fixed number of partitions ([`DurableTopicBuilder::partitions`], default 1),
//! each its own log with its own offsets. [`Publisher::send_keyed`] sends all messages of a key
//! to one partition, so they stay in order; [`Publisher::send`] spreads messages without a key
//! over the partitions in turn. A plain subscriber reads every partition. In a consumer group
//! ([`Subscriber::group`]) each partition is read by one member at a time, from the offset the
//! group last committed: the members share the work, every message of a key goes to the same
//! member in order, and different groups each see every message. Partitions move when a member
//! joins, leaves or dies; see ARCHITECTURE.md ("Durable topics") for why partitions, and for
//! the crash argument.
//!
//! Compaction (keeping only the last message per key) is not built: retention is by size and
//! age only.
//!
//! ```
//! use ringbus::durable::StartAt;
//!
//! let dir = std::env::temp_dir().join(format!("doc-durable-{}", std::process::id()));
//! let node = ringbus::Node::in_process();
//! let topic = node.topic::<u64>("payments").durable(&dir).partitions(2);
//! let mut publisher = topic.publisher()?;
//! for v in 0..4u64 {
//!     publisher.send_keyed(&v.to_le_bytes(), &v)?;
//! }
//! // A group member alone in its group reads every partition, then commits.
//! let mut billing = topic.subscriber_at(StartAt::Earliest)?.group("billing")?;
//! let mut seen = Vec::new();
//! while let Ok(m) = billing.try_receive() {
//!     seen.push(*m);
//! }
//! billing.commit()?;
//! seen.sort();
//! assert_eq!(seen, [0, 1, 2, 3]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod control;
mod group;
#[doc(hidden)]
pub mod layout;
mod publisher;
mod shared;
mod subscriber;

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use publisher::{key_digest, Publisher};
pub use subscriber::{AutoCommit, Subscriber};

use crate::error::OpenError;
use crate::log::SyncPolicy;
use crate::topic::Payload;
use control::Spec;
use layout::*;
use shared::Shared;

/// Where a subscriber starts reading, in every partition it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest message retention kept.
    Earliest,
    /// After the newest message: only messages published from now on.
    Latest,
    /// This offset (the same number in every partition). Below the earliest retained it is
    /// [`OpenError::NotRetained`]; past the newest, the subscriber waits for it.
    Offset(u64),
    /// The first message stamped at or after this time (found by a binary search of the log:
    /// timestamps never go backwards within a partition).
    Time(SystemTime),
}

/// How long a durable topic keeps messages: whole segment files go, oldest first. Applied by
/// publishers each time a partition moves to a new segment file, and by
/// [`Publisher::apply_retention`].
///
/// `bytes` and `age` are the goals, met as soon as every consumer group has committed the
/// messages a file holds; `max_bytes` is the hard limit, met whatever the groups committed
/// (a group that loses messages so is told by [`crate::ReceiveError::Lost`] at its next read,
/// and counts them, as Kafka's `auto.offset.reset` would surface it). The segment being
/// written is never deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most about this many bytes of segment files per partition.
    pub bytes: Option<u64>,
    /// Delete a file once its newest message is older than this.
    pub age: Option<Duration>,
    /// Never keep more than this many bytes per partition, even if a group has not committed
    /// them.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Keep everything (the default).
    pub fn unlimited() -> Retention {
        Retention::default()
    }

    fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.age.is_none() && self.max_bytes.is_none()
    }
}

/// Options of a durable topic. Made by [`crate::TopicBuilder::durable`], which keeps the
/// topic's name, message size and spin.
///
/// The shape (partitions, message size, records per file, payload type) is fixed when the topic
/// is first created in its directory; a handle asking for another payload type or message size
/// fails with [`OpenError::TypeMismatch`], and the partition count and file size of the existing
/// topic are used.
pub struct DurableTopicBuilder<P: Payload + ?Sized> {
    dir: PathBuf,
    name: String,
    max_message_size: Option<usize>,
    spin: Duration,
    partitions: usize,
    segment_records: Option<u64>,
    sync: SyncPolicy,
    retention: Retention,
    helper_thread: bool,
    _p: PhantomData<fn(&P)>,
}

impl<P: Payload + ?Sized> std::fmt::Debug for DurableTopicBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableTopicBuilder")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .field("sync", &self.sync)
            .field("retention", &self.retention)
            .field("helper_thread", &self.helper_thread)
            .finish_non_exhaustive()
    }
}

impl<P: Payload + ?Sized> Clone for DurableTopicBuilder<P> {
    fn clone(&self) -> Self {
        DurableTopicBuilder {
            dir: self.dir.clone(),
            name: self.name.clone(),
            partitions: self.partitions,
            segment_records: self.segment_records,
            sync: self.sync,
            retention: self.retention,
            helper_thread: self.helper_thread,
            max_message_size: self.max_message_size,
            spin: self.spin,
            _p: PhantomData,
        }
    }
}

/// Target size of a segment file when [`DurableTopicBuilder::segment_records`] is not given.
const SEGMENT_BYTES: usize = 8 << 20;

impl<P: Payload + ?Sized> DurableTopicBuilder<P> {
    pub(crate) fn new(
        dir: PathBuf,
        name: String,
        max_message_size: Option<usize>,
        spin: Duration,
    ) -> Self {
        DurableTopicBuilder {
            dir,
            name,
            max_message_size,
            spin,
            partitions: 1,
            segment_records: None,
            sync: SyncPolicy::Batch(Duration::from_millis(10)),
            retention: Retention::default(),
            helper_thread: true,
            _p: PhantomData,
        }
    }

    /// Partitions (1 to 64, default 1), fixed when the topic is created.
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = n;
        self
    }

    /// Records per segment file (default: as many as fill about 8 MiB). Retention deletes
    /// whole files.
    pub fn segment_records(mut self, n: u64) -> Self {
        self.segment_records = Some(n);
        self
    }

    /// When a publisher's records reach the disk (default `Batch(10 ms)`), as for durable
    /// queues. Under `Always` a send returns once its record is on disk, and a group member's
    /// commit once the group file is.
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// How long messages are kept (default: for ever).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Whether each publisher made from this builder gets a helper thread (default `true`),
    /// which gets the segment file ready ahead of it: it maps the pages of the next 256 KiB
    /// chunk (a fresh page costs the kernel about 3 µs to provide, most of an append's time
    /// otherwise) and creates the next file half way through the current one. With it, 64 B
    /// appends ran 1.3 to 1.7 times as fast here (`ringbus bench durable`).
    ///
    /// The thread is started at the publisher's first chunk and joined when it drops, and a
    /// publisher never waits for it. On a machine whose every CPU is busy (for example a
    /// publisher and a subscriber spinning on the only two), it takes its time from them, a
    /// context switch each time it wakes: measured here, the live one-way p99.9 of a durable
    /// topic rose from about 1.2 µs to about 4 µs (p50 unchanged). Turn it off there, and
    /// the publisher populates its chunks and makes its files itself, in its sends.
    ///
    /// ```
    /// use ringbus::{Node, SyncPolicy};
    /// # let dir = std::env::temp_dir().join(format!("ringbus-doc-helper-{}", std::process::id()));
    /// let topic = Node::in_process()
    ///     .topic::<u64>("ticks")
    ///     .durable(&dir)
    ///     .sync_policy(SyncPolicy::Never)
    ///     .helper_thread(false);
    /// let mut publisher = topic.publisher()?;
    /// assert_eq!(publisher.send(&1)?, (0, 0));
    /// # drop(publisher);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn helper_thread(mut self, on: bool) -> Self {
        self.helper_thread = on;
        self
    }

    fn spec(&self) -> Result<Spec, OpenError> {
        crate::shm::check_config("partitions", self.partitions, 1..=MAX_PARTITIONS, false)?;
        let max_message = crate::options::payload_size::<P>(self.max_message_size, 16)?;
        let id = P::identity(max_message);
        let type_hash = crate::shm::fnv1a(
            id.name
                .bytes()
                .chain(id.size.to_le_bytes())
                .chain(id.align.to_le_bytes()),
        );
        let stride = control::record_stride(max_message);
        let records = self
            .segment_records
            .unwrap_or((SEGMENT_BYTES / stride).clamp(16, 1 << 20) as u64);
        Ok(Spec {
            partitions: self.partitions,
            max_message,
            records,
            type_hash,
        })
    }

    fn open(&self) -> Result<Shared, OpenError> {
        Shared::open(&self.dir, &self.name, Some(self.spec()?))
    }

    /// Opens (or creates) the topic and makes a publisher.
    pub fn publisher(&self) -> Result<Publisher<P>, OpenError> {
        Ok(Publisher::new(
            self.open()?,
            self.sync,
            self.retention,
            self.helper_thread,
        ))
    }

    /// Opens (or creates) the topic and makes a subscriber that reads from the newest message
    /// on ([`StartAt::Latest`]).
    pub fn subscriber(&self) -> Result<Subscriber<P>, OpenError> {
        self.subscriber_at(StartAt::Latest)
    }

    /// Opens (or creates) the topic and makes a subscriber that starts at `start`.
    pub fn subscriber_at(&self, start: StartAt) -> Result<Subscriber<P>, OpenError> {
        Subscriber::new(self.open()?, start, self.spin, self.sync)
    }
}

/// A message read from a durable topic, in place in the mapped log file. Dereferences to the
/// payload.
pub struct Message<'a, P: Payload + ?Sized> {
    view: &'a P::View,
    partition: usize,
    offset: u64,
    timestamp: u64,
    key: u64,
}

crate::topic::received_view!(Message<'_, P> reads P);

impl<P: Payload + ?Sized> std::fmt::Debug for Message<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl<P: Payload + ?Sized> Message<'_, P> {
    /// The partition it was read from.
    pub fn partition(&self) -> usize {
        self.partition
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// When it was appended, in nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp
    }

    /// The digest of its key ([`key_digest`]), or `None` if it was sent without one.
    pub fn key_digest(&self) -> Option<u64> {
        (self.key != KEY_NONE).then_some(self.key)
    }
}

/// The timestamp in a record's prefix (`bytes` holds at least [`PREFIX`] bytes).
pub(crate) fn timestamp_of(bytes: &[u8]) -> u64 {
    // A record shorter than the prefix is refused before it is read; 0 if one gets here.
    bytes
        .get(R_TIMESTAMP..R_TIMESTAMP + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// What [`inspect`] reports of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The earliest retained offset.
    pub earliest: u64,
    /// One past the newest offset.
    pub end: u64,
    /// Segment files on disk.
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
}

/// What [`inspect`] reports of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Live members.
    pub members: usize,
    /// Per partition, the committed offset (`None`: never committed).
    pub committed: Vec<Option<u64>>,
    /// Messages published and not yet committed, over all partitions (uncommitted partitions
    /// count from their earliest retained offset).
    pub lag: u64,
    /// Messages lost to forced retention.
    pub lost: u64,
}

/// What [`inspect`] reports of a durable topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Largest message in bytes.
    pub max_message_size: usize,
    /// Records per segment file.
    pub segment_records: u64,
    /// Live subscribers (group members included).
    pub subscribers: usize,
    /// Per partition.
    pub partitions: Vec<PartitionInfo>,
    /// Every consumer group, by name.
    pub groups: Vec<GroupInfo>,
}

/// The durable topics in directory `dir` (their names), for tools.
pub fn list(dir: &Path) -> Result<Vec<String>, OpenError> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(OpenError::from_io(e, &dir.display().to_string())),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(topic) = name.strip_prefix("topic_") {
            if e.path().join("control").is_file() && crate::shm::validate_name(topic).is_ok() {
                names.push(topic.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Reports durable topic `name` of directory `dir`: offsets and files of each partition, and
/// each consumer group's commits and lag. Changes nothing (other than recovering a topic last
/// used before a reboot, as any open does).
pub fn inspect(dir: &Path, name: &str) -> Result<TopicInfo, OpenError> {
    let shared = Shared::open(dir, name, None)?;
    let n = shared.partitions();
    let mut partitions = Vec::with_capacity(n);
    for k in 0..n {
        let files = shared.logs[k].bases()?.len();
        partitions.push(PartitionInfo {
            earliest: shared.earliest(k)?,
            end: shared.published(k),
            files,
            bytes: files as u64 * shared.logs[k].shape().file_len() as u64,
        });
    }
    let groups = group::GroupFile::all(&shared.dir, n)?
        .into_iter()
        .map(|g| {
            let committed: Vec<Option<u64>> = (0..n)
                .map(|k| Some(g.committed(k)).filter(|&c| c != NO_COMMIT))
                .collect();
            let lag = (0..n)
                .map(|k| {
                    let from = committed[k].unwrap_or(partitions[k].earliest);
                    partitions[k].end.saturating_sub(from)
                })
                .sum();
            GroupInfo {
                name: g.name.clone(),
                members: g.live_members(),
                committed,
                lag,
                lost: g.lost(),
            }
        })
        .collect();
    Ok(TopicInfo {
        name: name.to_string(),
        max_message_size: shared.spec().max_message,
        segment_records: shared.spec().records,
        subscribers: shared.ctl.subscribers(),
        partitions,
        groups,
    })
}

/// Sets consumer group `group` of durable topic `name` (in `dir`) to resume from `to` in every
/// partition, as `kafka-consumer-groups --reset-offsets` does: the group must exist and have no
/// live member ([`OpenError::Busy`] otherwise). Returns the offsets set.
pub fn reset_group(dir: &Path, name: &str, group: &str, to: StartAt) -> Result<Vec<u64>, OpenError> {
    let shared = Shared::open(dir, name, None)?;
    let n = shared.partitions();
    let g = group::GroupFile::open(&shared.dir, group, n, false)?;
    shared.ctl.exclusive(|| {
        g.reap_dead(0);
        let live = g.live_members();
        let busy = |live: usize| {
            OpenError::Busy(format!(
                "group {group} of topic {name} has {live} live member(s): stop them first"
            ))
        };
        if live > 0 {
            return Err(busy(live));
        }
        // The reset holds every partition as a member would, so that a member joining now
        // reads the new offsets (its take, after our release, sees our commits), not the old.
        let (entry, token) = g.join()?;
        let held: Vec<bool> = (0..n).map(|k| g.take(k, token)).collect();
        let result = if held.iter().all(|&h| h) {
            (|| {
                let mut set = Vec::with_capacity(n);
                for k in 0..n {
                    let o = match to {
                        // Past the end: clamp, as Kafka does.
                        StartAt::Offset(o) => o.max(shared.earliest(k)?).min(shared.published(k)),
                        other => subscriber::start_offset(&shared, k, other)?,
                    };
                    g.commit(k, o);
                    set.push(o);
                }
                g.sync().map_err(OpenError::Io)?;
                Ok(set)
            })()
        } else {
            Err(busy(g.live_members().saturating_sub(1).max(1)))
        };
        g.leave(entry, token);
        result
    })
}
