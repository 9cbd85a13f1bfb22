//! The shape and counters of each pattern's segment, read with loads only. Every word is a
//! snapshot of values other processes keep moving, and untrusted: differences saturate, and
//! every loop is bounded by the validated layout.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::log::SyncPolicy;
use crate::queue::layout::{self as ql, QueueLayout};
use crate::ring::broadcast::{self, Cells as _};
use crate::ring::call::{self, Cells as _};
use crate::ring::work::{self, Cells as _, State};
use crate::service::layout::{Role as ServiceRole, ServiceLayout};
use crate::shm::entry::Tables;
use crate::shm::Region;
use crate::topic::layout::{Policy, Role as TopicRole, TopicLayout, CTRL_RINGS_USED};

/// A topic's shape and the progress of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicDetails {
    /// What a publisher does when a subscriber is a whole ring behind.
    pub policy: Policy,
    /// Slots per publisher's ring.
    pub capacity: usize,
    /// Largest message in bytes.
    pub max_message_size: usize,
    /// Messages a joining subscriber may still read from before it joined.
    pub history: usize,
    /// Publisher entries the topic has.
    pub max_publishers: usize,
    /// Subscriber entries the topic has.
    pub max_subscribers: usize,
    /// Every taken publisher entry's counters.
    pub publishers: Vec<PublisherCounters>,
    /// Every taken subscriber entry's counters.
    pub subscribers: Vec<SubscriberCounters>,
}

/// A publisher's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublisherCounters {
    /// Its entry (as in [`super::Participant::index`]).
    pub index: usize,
    /// Messages sent on its ring (by it and by earlier publishers of the same entry).
    pub sent: u64,
}

/// A subscriber's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberCounters {
    /// Its entry (as in [`super::Participant::index`]).
    pub index: usize,
    /// Its read positions summed over the rings: grows by one per message it moves past (read,
    /// or lost to a lap; and by one per position a publisher gave up without a message, when it
    /// left). The difference of two readings over an interval is its rate.
    pub read: u64,
    /// Messages sent that it has not read yet, over every ring. More than the capacity on a
    /// `DropOldest` topic: it was lapped, and loses the oldest at its next receive.
    pub lag: u64,
}

/// A service's shape and the calls of its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceDetails {
    /// Calls each client may have in flight.
    pub max_in_flight: usize,
    /// Largest request in bytes.
    pub max_request_size: usize,
    /// Largest response in bytes.
    pub max_response_size: usize,
    /// Responses of a stream a server may write ahead of its client.
    pub stream_depth: usize,
    /// Server entries the service has.
    pub max_servers: usize,
    /// Client entries the service has.
    pub max_clients: usize,
    /// Every taken client entry's counters.
    pub clients: Vec<ClientCounters>,
}

/// A client's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCounters {
    /// Its entry (as in [`super::Participant::index`]).
    pub index: usize,
    /// Calls taken by a server so far (the ring's position servers reached).
    pub taken: u64,
    /// Calls posted that no server has taken yet.
    pub waiting: usize,
    /// Calls a server took whose last response the client has not read yet.
    pub in_service: usize,
    /// Calls it abandoned at their timeout (`call`, `wait` or `wait_timeout` ending in
    /// `CallError::Timeout`; a `next_response_timeout` that expires leaves the call going and
    /// is not counted).
    pub timeouts: u64,
}

/// A queue's shape, its messages and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDetails {
    /// Messages the queue holds, sent and not yet acknowledged.
    pub capacity: usize,
    /// Largest message in bytes.
    pub max_message_size: usize,
    /// Deliveries before a message is dead-lettered (0: unlimited).
    pub max_deliveries: u32,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub visibility_timeout: Duration,
    /// The dead-letter queue's name, if it has one.
    pub dead_letter: Option<String>,
    /// Messages ever reserved by producers (the queue's next position).
    pub sent: u64,
    /// Messages waiting to be delivered (first deliveries and redeliveries).
    pub depth: u64,
    /// Messages delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Deliveries beyond a message's first.
    pub redelivered: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages dropped past their maximum deliveries (no dead-letter queue).
    pub dropped: u64,
    /// Records found torn or corrupt, and passed over.
    pub torn: u64,
    /// Recoveries run (durable queues opened with nobody alive).
    pub recoveries: u64,
    /// Messages the last recovery found waiting.
    pub recovered: u64,
    /// Every taken producer entry's settings.
    pub producers: Vec<ProducerCounters>,
    /// Every taken consumer entry's settings and deliveries.
    pub consumers: Vec<ConsumerCounters>,
    /// A durable queue's log (`None` for a queue in memory).
    pub log: Option<LogInfo>,
}

/// A producer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerCounters {
    /// Its entry (as in [`super::Participant::index`]).
    pub index: usize,
    /// Its sync policy (`None` in memory).
    pub sync: Option<SyncPolicy>,
}

/// A consumer's settings and deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerCounters {
    /// Its entry (as in [`super::Participant::index`]).
    pub index: usize,
    /// Deliveries it may hold unacknowledged at once.
    pub prefetch: u64,
    /// Deliveries it holds now (claimed, not yet acknowledged).
    pub in_flight: u64,
}

/// A durable queue's log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogInfo {
    /// The directory.
    pub dir: PathBuf,
    /// Its files, by name.
    pub files: Vec<LogFile>,
    /// Bytes its files take on disk (allocated blocks: less than their length if sparse).
    pub disk_bytes: u64,
}

/// A file of a durable queue's log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogFile {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
}

/// Relaxed, for every load here: an observer's snapshot orders nothing, and each value is used
/// on its own.
fn load(r: &Region, off: usize) -> u64 {
    r.u64_at(off).load(Ordering::Relaxed)
}

pub(super) fn topic(l: &TopicLayout, r: &Region) -> TopicDetails {
    let used = load(r, CTRL_RINGS_USED);
    let rings: Vec<usize> = (0..l.max_publishers.min(64))
        .filter(|p| used & (1 << p) != 0)
        .collect();
    let pubs = l.table(TopicRole::Publisher);
    let publishers = (0..pubs.len)
        .filter(|&i| pubs.owner(r, i).is_some())
        .map(|index| PublisherCounters {
            index,
            sent: l.cells(r, index).msgs().load(Ordering::Relaxed),
        })
        .collect();
    let subs = l.table(TopicRole::Subscriber);
    let subscribers = (0..subs.len)
        .filter(|&i| subs.owner(r, i).is_some())
        .map(|index| {
            let (mut read, mut lag) = (0u64, 0u64);
            for &p in &rings {
                let ring = l.cells(r, p);
                let tail = ring.tail().load(Ordering::Relaxed);
                let cursor = ring.cursor(index).load(Ordering::Relaxed);
                read = read.wrapping_add(cursor);
                lag = lag.saturating_add(unread(&ring, cursor, tail));
            }
            SubscriberCounters { index, read, lag }
        })
        .collect();
    TopicDetails {
        policy: l.policy,
        capacity: l.capacity,
        max_message_size: l.max_message_size,
        history: l.history,
        max_publishers: l.max_publishers,
        max_subscribers: l.max_subscribers,
        publishers,
        subscribers,
    }
}

/// Messages of ring `ring` from position `cursor` to `tail`: the positions whose slot holds a
/// committed message (a writer that leaves or skips a pinned slot moves `tail` past a position
/// without one). More than a lap apart, the reader was lapped: every position counts.
fn unread(ring: &impl broadcast::Cells, cursor: u64, tail: u64) -> u64 {
    let behind = tail.saturating_sub(cursor);
    if behind > ring.mask() {
        return behind;
    }
    (cursor..tail)
        .filter(|&pos| {
            let slot = (pos & ring.mask()) as usize;
            ring.stamp(slot).load(Ordering::Relaxed) == broadcast::stamp(pos, broadcast::COMMITTED)
        })
        .count() as u64
}

pub(super) fn service(l: &ServiceLayout, r: &Region) -> ServiceDetails {
    let clients = l.table(ServiceRole::Client);
    let clients = (0..clients.len)
        .filter(|&i| clients.owner(r, i).is_some())
        .map(|index| {
            let ring = l.ring(r, index);
            let (mut waiting, mut in_service) = (0, 0);
            for slot in 0..l.in_flight {
                match call::status(&ring, slot) {
                    call::Status::Posted { .. } => waiting += 1,
                    call::Status::Taken { pos, .. }
                        if ring.ended(slot).load(Ordering::Relaxed) != pos.wrapping_add(1) =>
                    {
                        in_service += 1
                    }
                    _ => {}
                }
            }
            ClientCounters {
                index,
                taken: ring.head().load(Ordering::Relaxed),
                waiting,
                in_service,
                timeouts: ring.timeouts().load(Ordering::Relaxed),
            }
        })
        .collect();
    ServiceDetails {
        max_in_flight: l.in_flight,
        max_request_size: l.max_request,
        max_response_size: l.max_response,
        stream_depth: l.depth,
        max_servers: l.max_servers,
        max_clients: l.max_clients,
        clients,
    }
}

pub(super) fn queue(l: &QueueLayout, r: &Region, log: Option<PathBuf>) -> QueueDetails {
    let head = load(r, ql::CTRL_HEAD);
    let tail = load(r, ql::CTRL_TAIL);
    let cells = l.cells(r);
    let consumers_table = l.table(ql::Role::Consumer);
    let mut held = vec![0u64; consumers_table.len];
    let (mut depth, mut in_flight) = (0, 0);
    // Every message sent and not acknowledged sits between the head and the tail, at most a
    // capacity apart (more is garbage: a lap is all the ring holds).
    let span = tail.saturating_sub(head).min(l.capacity as u64);
    for pos in head..head + span {
        let s = State(cells.state((pos & cells.mask()) as usize).load(Ordering::Relaxed));
        if !s.is_for(pos) {
            continue;
        }
        match s.kind() {
            work::READY => depth += 1,
            work::TAKEN | work::OPEN => {
                in_flight += 1;
                if let Some(n) = held.get_mut(s.owner()) {
                    *n += 1;
                }
            }
            _ => {}
        }
    }
    let producers_table = l.table(ql::Role::Producer);
    let producers = (0..producers_table.len)
        .filter(|&i| producers_table.owner(r, i).is_some())
        .map(|index| ProducerCounters {
            index,
            sync: ql::sync_of(load(r, l.producer_entry(index) + ql::PRODUCER_SYNC)),
        })
        .collect();
    let consumers = (0..consumers_table.len)
        .filter(|&i| consumers_table.owner(r, i).is_some())
        .map(|index| ConsumerCounters {
            index,
            prefetch: load(r, consumers_table.entry(index) + ql::CONSUMER_PREFETCH),
            in_flight: held[index],
        })
        .collect();
    QueueDetails {
        capacity: l.capacity,
        max_message_size: l.max_message_size,
        max_deliveries: l.max_deliveries,
        visibility_timeout: Duration::from_millis(l.visibility_ms),
        dead_letter: ql::dead_letter_name(r),
        sent: tail,
        depth,
        in_flight,
        redelivered: load(r, ql::CTRL_REDELIVERED),
        dead_lettered: load(r, ql::CTRL_DEAD_LETTERED),
        dropped: load(r, ql::CTRL_DROPPED),
        torn: load(r, ql::CTRL_TORN),
        recoveries: load(r, ql::CTRL_RECOVERIES),
        recovered: load(r, ql::CTRL_RECOVERED),
        producers,
        consumers,
        log: log.map(log_info),
    }
}

/// The files of a durable queue's log directory `dir` (none if it cannot be read).
fn log_info(dir: PathBuf) -> LogInfo {
    use std::os::unix::fs::MetadataExt;
    let mut files: Vec<(LogFile, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((
                LogFile {
                    path: e.path(),
                    bytes: meta.len(),
                },
                meta.blocks().saturating_mul(512),
            ))
        })
        .collect();
    files.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    LogInfo {
        dir,
        disk_bytes: files.iter().map(|(_, d)| d).sum(),
        files: files.into_iter().map(|(f, _)| f).collect(),
    }
}
