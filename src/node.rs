//! A participant: where its segments live and who it is.

use std::path::{Path, PathBuf};

use crate::error::OpenError;
use crate::queue::QueueBuilder;
use crate::service::ServiceBuilder;
use crate::shm::{Backing, Root};
use crate::sync::ProcessId;
use crate::topic::{Bytes, Payload, Rkyv, TopicBuilder};

/// A participant in ringbus: the process identity (pid and start time) recorded in every segment
/// it joins, so peers can tell when it died, and where its segments live.
///
/// ```
/// // Shared memory under $RINGBUS_ROOT, or /dev/shm/ringbus-<uid>:
/// let node = ringbus::Node::new()?;
/// // Threads of one process only, without touching /dev/shm:
/// let local = ringbus::Node::in_process();
/// # Ok::<(), ringbus::OpenError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    backing: Backing,
}

impl Node {
    /// A node using shared memory under the default root: `$RINGBUS_ROOT` if set, else
    /// `/dev/shm/ringbus-<uid>` (created with mode 0700).
    pub fn new() -> Result<Node, OpenError> {
        Self::with_root(Root::default_dir())
    }

    /// A node using shared memory under `dir` (created with mode 0700 if missing).
    pub fn with_root(dir: impl Into<PathBuf>) -> Result<Node, OpenError> {
        Ok(Node {
            backing: Backing::Shm(Root::open(dir)?),
        })
    }

    /// A node whose segments live in this process's memory: the same API between threads, with
    /// no files and no other process involved. In-process topics of the same name are shared by
    /// every in-process node.
    pub fn in_process() -> Node {
        Node {
            backing: Backing::Local,
        }
    }

    /// The root directory, or `None` for an in-process node.
    pub fn root(&self) -> Option<&Path> {
        match &self.backing {
            Backing::Shm(root) => Some(root.path()),
            Backing::Local => None,
        }
    }

    /// This process as peers see it.
    pub fn id(&self) -> ProcessId {
        ProcessId::current()
    }

    fn builder<P: Payload + ?Sized>(&self, name: &str) -> TopicBuilder<P> {
        TopicBuilder::new(self.backing.clone(), name)
    }

    /// A topic of fixed-size plain-old-data messages.
    pub fn topic<T: bytemuck::Pod>(&self, name: &str) -> TopicBuilder<T> {
        self.builder(name)
    }

    /// A topic of variable-length byte messages.
    pub fn topic_bytes(&self, name: &str) -> TopicBuilder<Bytes> {
        self.builder(name)
    }

    /// A request/response service: requests of kind `Q`, responses of kind `R` (each a `Pod`
    /// type, [`Bytes`] or [`Rkyv<T>`]).
    pub fn service<Q: Payload + ?Sized, R: Payload + ?Sized>(
        &self,
        name: &str,
    ) -> ServiceBuilder<Q, R> {
        ServiceBuilder::new(self.backing.clone(), name)
    }

    /// A queue of fixed-size plain-old-data messages, each delivered to one consumer.
    pub fn queue<T: bytemuck::Pod>(&self, name: &str) -> QueueBuilder<T> {
        QueueBuilder::new(self.backing.clone(), name)
    }

    /// A queue of variable-length byte messages.
    pub fn queue_bytes(&self, name: &str) -> QueueBuilder<Bytes> {
        QueueBuilder::new(self.backing.clone(), name)
    }

    /// A queue of rkyv-archived `T`, validated before a consumer sees them.
    pub fn queue_rkyv<T>(&self, name: &str) -> QueueBuilder<Rkyv<T>>
    where
        Rkyv<T>: Payload,
    {
        QueueBuilder::new(self.backing.clone(), name)
    }

    /// A topic of rkyv-archived `T`, validated before a subscriber sees them.
    pub fn topic_rkyv<T>(&self, name: &str) -> TopicBuilder<Rkyv<T>>
    where
        Rkyv<T>: Payload,
    {
        self.builder(name)
    }
}
