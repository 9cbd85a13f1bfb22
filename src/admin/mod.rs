//! Operating ringbus: what exists under a root, read without joining, and removing what dead
//! processes left.
//!
//! [`list`] and [`inspect`] map each segment file **read-only** and read its header, member
//! tables and counters with atomic loads: an observer never registers as a participant, never
//! takes a segment's lock and cannot change a byte (a store would fault), so it neither keeps a
//! dead segment alive nor disturbs a live one. What it shows is a snapshot of words other
//! processes keep moving; every word is untrusted and validated as an open validates it, and a
//! file that does not read as a segment is listed as [`Status::Unreadable`] with the reason.
//!
//! [`clean`] removes what [`Status`] calls removable, each file under its segment lock, judged
//! again once the lock is held.
//!
//! ```
//! use ringbus::{admin, Node};
//!
//! let root = std::env::temp_dir().join(format!("ringbus-admin-doc-{}", std::process::id()));
//! let node = Node::with_root(&root)?;
//! let topic = node.topic::<u64>("doc-prices");
//! let mut publisher = topic.publisher()?;
//! let subscriber = topic.subscriber()?;
//! publisher.send_copy(&1)?;
//! publisher.send_copy(&2)?;
//!
//! let found = admin::inspect(&root, "doc-prices")?;
//! assert_eq!(found.len(), 1);
//! let info = &found[0];
//! assert_eq!((info.kind, info.status.clone()), (admin::Kind::Topic, admin::Status::Live));
//! assert_eq!(info.participants.len(), 2); // the publisher and the subscriber
//! let Some(admin::Details::Topic(t)) = &info.details else { unreachable!() };
//! assert_eq!(t.subscribers[0].lag, 2); // two messages sent, none read yet
//! # drop((publisher, subscriber));
//! # std::fs::remove_dir_all(&root).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clean;
mod counters;
mod observe;
pub(crate) use observe::published;

use std::path::{Path, PathBuf};

pub use clean::{clean, Cleaned, Outcome};
pub use counters::{
    ClientCounters, ConsumerCounters, LogFile, LogInfo, ProducerCounters, PublisherCounters,
    QueueDetails, ServiceDetails, SubscriberCounters, TopicDetails,
};

use crate::error::OpenError;

/// The root directory a [`crate::Node::new`] uses: `$RINGBUS_ROOT` if set and not empty, else
/// `/dev/shm/ringbus-<euid>`. Not created.
///
/// ```
/// let root = ringbus::admin::default_root();
/// assert!(root.is_absolute() || std::env::var_os("RINGBUS_ROOT").is_some());
/// ```
pub fn default_root() -> PathBuf {
    crate::shm::Root::default_dir()
}

/// The kind of a segment: which pattern it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Publish/subscribe ([`crate::topic`]): file `topic_<name>`.
    Topic,
    /// Request/response ([`crate::service`]): file `service_<name>`.
    Service,
    /// A work queue ([`crate::queue`]): file `queue_<name>`.
    Queue,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Topic, Kind::Service, Kind::Queue];

    /// What the kind is called: `"topic"`, `"service"` or `"queue"` (also the prefix of its
    /// files' names).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Topic => "topic",
            Kind::Service => "service",
            Kind::Queue => "queue",
        }
    }

    /// The kind and segment name a file name stands for (`"topic_prices"` → topic `prices`);
    /// `None` for lock files, log directories and names no segment has.
    ///
    /// ```
    /// use ringbus::admin::Kind;
    ///
    /// assert_eq!(Kind::of_file("queue_jobs"), Some((Kind::Queue, "jobs")));
    /// assert_eq!(Kind::of_file("queue_jobs.lock"), None);
    /// assert_eq!(Kind::of_file("notes.txt"), None);
    /// assert_eq!(Kind::Topic.file("prices"), "topic_prices");
    /// ```
    pub fn of_file(file: &str) -> Option<(Kind, &str)> {
        let (prefix, name) = file.split_once('_')?;
        let kind = Kind::ALL.into_iter().find(|k| k.as_str() == prefix)?;
        // A valid name has no dot: `topic_x.lock` is not a segment.
        crate::shm::validate_name(name).is_ok().then_some((kind, name))
    }

    /// The file name of segment `name` of this kind.
    pub fn file(self, name: &str) -> String {
        format!("{}_{name}", self.as_str())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a segment stands, as an observer judges it (without its lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// At least one registered participant is alive.
    Live,
    /// Published, and no registered participant is alive (all died, or left a durable queue):
    /// the next open replaces it, or recovers it if it is a durable queue; [`clean`] removes it
    /// unless it is durable.
    Dead,
    /// Empty or never published: its creator is initialising it now, or died doing so. The next
    /// open (or [`clean`], once it holds the lock) replaces it.
    Unfinished,
    /// Not a segment this version of ringbus reads (another layout version, another kind than
    /// its name says, or garbage): the reason. Left alone by opens and by [`clean`].
    Unreadable(String),
}

impl Status {
    /// `"live"`, `"dead"`, `"unfinished"` or `"unreadable"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Dead => "dead",
            Status::Unfinished => "unfinished",
            Status::Unreadable(_) => "unreadable",
        }
    }
}

/// A registered participant of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Participant {
    /// Its role: `"publisher"`, `"subscriber"`, `"server"`, `"fallback server"` (a network
    /// bridge's, `ServiceBuilder::fallback_server`), `"client"`, `"producer"` or `"consumer"`.
    pub role: &'static str,
    /// Its entry in the role's table (the index the counters of [`Details`] name).
    pub index: usize,
    /// The process it belongs to.
    pub pid: u32,
    /// Whether that process is alive (the same check an open makes: pid and start time).
    pub alive: bool,
}

/// The payload type a segment was created for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PayloadType {
    /// The type's name (`std::any::type_name`; for a service, the request type's).
    pub name: String,
    /// Its size in bytes (0: variable length).
    pub size: u64,
    /// Its alignment in bytes.
    pub align: u64,
    /// How payloads are encoded: `"pod"`, `"bytes"` or `"rkyv"`.
    pub encoding: &'static str,
}

/// What a pattern keeps in a segment beyond its members: shape and counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Details {
    /// A topic's.
    Topic(TopicDetails),
    /// A service's.
    Service(ServiceDetails),
    /// A queue's.
    Queue(QueueDetails),
}

/// One segment file, as an observer sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Its kind.
    pub kind: Kind,
    /// The name handles open it by.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The file's length: bytes of shared memory it maps.
    pub bytes: u64,
    /// How it stands.
    pub status: Status,
    /// Whether it is a durable queue's ring (kept when its participants are gone).
    pub durable: bool,
    /// The payload type, if the header reads.
    pub payload: Option<PayloadType>,
    /// Its registered participants, live or dead (empty unless the layout reads).
    pub participants: Vec<Participant>,
    /// Shape and counters (`None` unless the layout reads).
    pub details: Option<Details>,
}

/// Every segment in directory `dir` (a root, or a durable queue's directory), sorted by name
/// and kind, read without joining. A missing directory has none.
///
/// Refuses ([`OpenError::PermissionDenied`]) a directory that is a symbolic link, belongs to
/// another user or that others may write, as an open would; a file in it that fails the same
/// checks is listed as [`Status::Unreadable`].
pub fn list(dir: &Path) -> Result<Vec<SegmentInfo>, OpenError> {
    let mut found = Vec::new();
    for (kind, name) in segment_files(dir)? {
        found.push(observe::observe(dir, kind, &name));
    }
    found.sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
    Ok(found)
}

/// The segments named `name` in directory `dir` (a topic, a service and a queue may share a
/// name), read without joining. [`OpenError::NotFound`] (holding the name) if there is none;
/// [`OpenError::InvalidName`] for a name no segment can have.
pub fn inspect(dir: &Path, name: &str) -> Result<Vec<SegmentInfo>, OpenError> {
    crate::shm::validate_name(name)?;
    if !crate::shm::existing_private_dir(dir, "root")? {
        return Err(OpenError::NotFound(name.to_string()));
    }
    let found: Vec<SegmentInfo> = Kind::ALL
        .into_iter()
        .filter(|k| dir.join(k.file(name)).exists())
        .map(|k| observe::observe(dir, k, name))
        .collect();
    if found.is_empty() {
        return Err(OpenError::NotFound(name.to_string()));
    }
    Ok(found)
}

/// The (kind, name) of every segment file in `dir`, after checking `dir` as a root.
fn segment_files(dir: &Path) -> Result<Vec<(Kind, String)>, OpenError> {
    let what = dir.display().to_string();
    if !crate::shm::existing_private_dir(dir, "root")? {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| OpenError::from_io(e, &what))? {
        let entry = entry.map_err(|e| OpenError::from_io(e, &what))?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Directories (a durable queue's log) are not segments.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some((kind, name)) = Kind::of_file(&file) {
            files.push((kind, name.to_string()));
        }
    }
    Ok(files)
}
