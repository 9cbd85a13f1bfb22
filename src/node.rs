//! A participant: where its segments live and who it is.

use std::path::{Path, PathBuf};

use crate::error::OpenError;
use crate::queue::QueueBuilder;
use crate::service::ServiceBuilder;
use crate::shape::Shape;
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

    /// A topic of exactly `shape` (read from another segment, possibly on another host:
    /// [`Shape`]), whose messages are read and written as bytes whatever their type: what a
    /// network bridge opens. The shape fixes the layout and the payload type, so the builder's
    /// layout options (capacity, policy, sizes, participants, history) are ignored; its send
    /// timeout, spin and open mode apply. Opening a segment of another shape is
    /// [`OpenError::TypeMismatch`] or [`OpenError::ConfigMismatch`], as for typed handles.
    /// A message of the wrong length for a fixed-size type is sent as it is; the typed
    /// subscribers refuse it ([`crate::ReceiveError::Invalid`]), so a bridge checks lengths
    /// against [`Shape::fixed_size`] first. [`OpenError::InvalidConfig`] if `shape` is a service's.
    pub fn topic_shaped(&self, name: &str, shape: &Shape) -> Result<TopicBuilder<Bytes>, OpenError> {
        if shape.kind() != crate::admin::Kind::Topic {
            return Err(OpenError::InvalidConfig(format!("{name}: the shape is not a topic's")));
        }
        let b: TopicBuilder<Bytes> = self.builder(name);
        Ok(b.with_shape(shape))
    }

    /// A service of exactly `shape` ([`Shape`]), whose requests and responses are read and
    /// written as bytes whatever their types: what a network bridge opens. As
    /// [`Node::topic_shaped`]: the shape fixes the layout and the types (the builder's layout
    /// options are ignored; timeouts, spin, open mode and `wait_for_server` apply), and the
    /// typed handles at the other end validate what they read. [`OpenError::InvalidConfig`] if
    /// `shape` is a topic's.
    pub fn service_shaped(
        &self,
        name: &str,
        shape: &Shape,
    ) -> Result<ServiceBuilder<Bytes, Bytes>, OpenError> {
        if shape.kind() != crate::admin::Kind::Service {
            return Err(OpenError::InvalidConfig(format!("{name}: the shape is not a service's")));
        }
        Ok(ServiceBuilder::<Bytes, Bytes>::new(self.backing.clone(), name).with_shape(shape))
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

    /// A queue of exactly the capacity, message size, participants and payload type of `shape`
    /// ([`Shape`]), read and written as bytes whatever the type: what a network bridge opens.
    /// Durability, the visibility timeout and the maximum deliveries are the builder's (the
    /// bridge keeps in-memory copies of queues other hosts own). [`OpenError::InvalidConfig`]
    /// if `shape` is not a queue's.
    pub fn queue_shaped(&self, name: &str, shape: &Shape) -> Result<QueueBuilder<Bytes>, OpenError> {
        if shape.kind() != crate::admin::Kind::Queue {
            return Err(OpenError::InvalidConfig(format!("{name}: the shape is not a queue's")));
        }
        let b: QueueBuilder<Bytes> = QueueBuilder::new(self.backing.clone(), name);
        Ok(b.with_shape(shape))
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
