//! Publish/subscribe topics: every subscriber sees every message, read in place.
//!
//! A topic segment holds one single-writer broadcast ring per publisher (see
//! `ring::broadcast`) and a cursor per (subscriber, ring). Publishers never contend with
//! each other; a subscriber polls the rings of all publishers, so each publisher's messages arrive
//! in the order they were sent, and messages of different publishers interleave.
//!
//! # Async
//!
//! [`Subscriber::receive_async`] waits for a message without blocking a thread, in any executor
//! (only `std::task` is used). The future tries at once; finding nothing, it spins for the
//! builder's `spin_before_sleep` without holding its thread (it wakes itself, so the executor
//! polls it again after its other ready tasks), then arms the topic's news doorbell, rechecks,
//! and registers the doorbell's futex word with the process's waiter, a thread that sleeps on
//! every registered word at once (`futex_waitv`) and wakes the future when a publisher rings.
//! Dropping the future at any point loses no message. See ARCHITECTURE.md ("Async").
//!
//! Discovery: [`TopicBuilder::subscriber_when_found`] and [`TopicBuilder::publisher_when_found`]
//! wait for another process to create the topic, [`Publisher::wait_for_subscriber`] for a first
//! live subscriber ([`crate::discovery`]).
//!
//! The sends have async forms too: [`Publisher::loan_async`], `send_copy_async` and (rkyv)
//! `send_async`. Under [`Policy::Block`] they wait for room the same way, on the topic's room
//! doorbell, which a subscriber rings when its cursor moves; they keep the blocking send's
//! deadline ([`crate::SendError::Timeout`] after the send timeout) and its check for dead
//! subscribers every [`crate::CHECK_INTERVAL`]. Under `DropOldest` they are ready at once.
//! Dropping one before it completes sends nothing and holds no slot. The futures borrow the
//! handle mutably and are `Send`.
//!
//! ```
//! use ringbus::Node;
//!
//! let node = Node::in_process();
//! let topic = node.topic::<u32>("doc-topic-async");
//! let mut publisher = topic.publisher()?;
//! let mut subscriber = topic.subscriber()?;
//! futures::executor::block_on(async {
//!     {
//!         // Nothing yet: a wait raced against a ready future loses, and is dropped (a
//!         // runtime's timeout works alike).
//!         let waiting = subscriber.receive_async();
//!         futures::pin_mut!(waiting);
//!         let first = futures::future::select(waiting, futures::future::ready(())).await;
//!         assert!(matches!(first, futures::future::Either::Right(_)));
//!     }
//!     publisher.send_copy(&5)?;
//!     assert_eq!(*subscriber.receive_async().await?, 5);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[doc(hidden)]
pub mod layout;
mod payload;
mod publisher;
mod shared;
mod subscriber;

use std::marker::PhantomData;
use std::time::Duration;

pub(crate) use layout::PayloadKind;
pub use layout::{Policy, MAX_ALIGN, MAX_CAPACITY, MAX_MESSAGE_SIZE, MAX_PARTICIPANTS};
pub(crate) use payload::{loan_views, received_view};
pub use payload::{Bytes, InPlace, Payload, Rkyv};
pub use publisher::{Loan, Publisher};
pub use subscriber::{Receive, Sample, Subscriber};

use crate::discovery::Found;
use crate::error::OpenError;
use crate::options::payload_size;
use crate::shm::OpenMode;
use layout::Role;
use layout::TopicLayout;
use shared::{Joined, TopicShared};

/// Options for opening or creating a topic. Made by [`crate::Node::topic`],
/// [`crate::Node::topic_bytes`] or [`crate::Node::topic_rkyv`].
///
/// The options shape a topic when it is created; a handle that opens an existing live topic uses
/// the topic's own shape (its payload type must match, or opening fails with
/// [`OpenError::TypeMismatch`]).
///
/// ```
/// use ringbus::{topic::Policy, Node};
/// use std::time::Duration;
///
/// let node = Node::in_process();
/// let topic = node
///     .topic::<[u64; 4]>("doc-builder")
///     .capacity(128)
///     .max_subscribers(4)
///     .history(16)
///     .policy(Policy::DropOldest)
///     .send_timeout(Duration::from_millis(50));
/// let mut publisher = topic.publisher()?;
/// publisher.send_copy(&[1, 2, 3, 4])?;
/// let late = topic.subscriber()?; // joins after the send: history gives it the message
/// assert_eq!(*late.try_receive()?, [1, 2, 3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TopicBuilder<P: Payload + ?Sized> {
    options: TopicOptions,
    _p: PhantomData<fn(&P)>,
}

// Not derived: a derived `Clone` would require `P: Clone`.
impl<P: Payload + ?Sized> Clone for TopicBuilder<P> {
    fn clone(&self) -> Self {
        TopicBuilder {
            options: self.options.clone(),
            _p: PhantomData,
        }
    }
}

crate::options::options! { TopicOptions for [P: Payload + ?Sized] TopicBuilder<P> {
    /// Slots per publisher ring: a power of two, 2 to 2^20 (default 64). Subscribers may pin up
    /// to `max_subscribers × max_held` slots; a publisher skips pinned slots, and if every slot
    /// is pinned its send fails with [`crate::SendError::AllSlotsHeld`], so keep the capacity
    /// above that product.
    capacity(slots: usize) -> capacity: usize = 64;
    /// Largest message in bytes, for byte and rkyv topics (default 4096). Ignored for `Pod` types,
    /// whose size is fixed.
    max_message_size(bytes: usize) -> max_message_size: Option<usize> = None => Some(bytes);
    max_publishers / max_subscribers = participants("Publishers", 4, "Subscribers", 8);
    /// Samples one subscriber may hold at once (1 to 6, default 2).
    max_held(n: usize) -> max_held: usize = 2;
    /// Recent messages of each publisher a late-joining subscriber receives (at most capacity
    /// − 2; default 0). Best effort at the moment of joining: messages a publisher overwrites
    /// while the subscriber joins (before it can have seen the subscriber) are passed over
    /// silently, and the subscriber starts with the oldest one still there. Losses are
    /// reported ([`crate::ReceiveError::Lagged`]) only for messages it was promised: those a
    /// publisher overwrote after it saw the subscriber (`DropOldest`).
    history(n: usize) -> history: usize = 0;
    /// Slow-subscriber policy (default [`Policy::Block`]).
    policy(policy: Policy) -> policy: Policy = Policy::Block;
    /// How long a `Block` publisher waits for room before [`crate::SendError::Timeout`]
    /// (default 1 s).
    send_timeout(timeout: Duration) -> send_timeout: Duration = Duration::from_secs(1);
    /// How long `receive`, and a send waiting for room under `Block`, spin before sleeping in
    /// the kernel (default 20 µs; zero sleeps at once).
    spin_before_sleep(spin: Duration) -> common.spin;
    /// Whether handles may create the topic ([`OpenMode::OpenOrCreate`], the default), must find
    /// a live one ([`OpenMode::OpenExisting`]: else [`OpenError::NotFound`]) or must create it
    /// ([`OpenMode::CreateNew`]: else [`OpenError::AlreadyExists`]).
    ///
    /// ```
    /// use ringbus::{Node, OpenError, OpenMode};
    /// let node = Node::in_process();
    /// let missing = node.topic::<u8>("doc-mode").open_mode(OpenMode::OpenExisting).subscriber();
    /// assert!(matches!(missing, Err(OpenError::NotFound(_))));
    /// let _first = node.topic::<u8>("doc-mode").open_mode(OpenMode::CreateNew).publisher()?;
    /// let again = node.topic::<u8>("doc-mode").open_mode(OpenMode::CreateNew).publisher();
    /// assert!(matches!(again, Err(OpenError::AlreadyExists(_))));
    /// # Ok::<(), OpenError>(())
    /// ```
    open_mode(mode: OpenMode) -> common.mode;
} }

impl<P: Payload + ?Sized> TopicBuilder<P> {
    /// Fixes the layout and payload type to `shape` (`Node::topic_shaped`).
    pub(crate) fn with_shape(mut self, shape: &crate::Shape) -> Self {
        self.options.common.shape = Some(std::sync::Arc::new(shape.clone()));
        self
    }

    fn layout(&self) -> Result<TopicLayout, OpenError> {
        let o = &self.options;
        if let Some(s) = &o.common.shape {
            return TopicLayout::from_header(&s.header, s.header.segment_len as usize);
        }
        let size = payload_size::<P>(o.max_message_size, MAX_ALIGN)?;
        TopicLayout::new(
            o.policy,
            o.capacity,
            size,
            o.max_publishers,
            o.max_subscribers,
            o.max_held,
            o.history,
            P::kind(),
        )
    }

    fn open(&self, role: Role) -> Result<(std::sync::Arc<TopicShared>, Joined), OpenError> {
        let layout = self.layout()?;
        let c = &self.options.common;
        let ty = match &c.shape {
            Some(s) => s.header.ty.clone(),
            None => P::identity(layout.max_message_size),
        };
        TopicShared::open(&c.backing, &c.name, &layout, &ty, role, c.mode)
    }

    /// Makes the topic durable: a retained, replayable log in directory `dir` (created 0700
    /// if missing; see [`crate::durable`]). The topic's name, message size and spin carry over;
    /// the ring options (capacity, policy, history...) do not apply to a durable topic.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("doc-durable-builder-{}", std::process::id()));
    /// let node = ringbus::Node::in_process();
    /// let topic = node.topic::<u32>("events").durable(&dir);
    /// let mut publisher = topic.publisher()?;
    /// let mut subscriber = topic.subscriber()?;
    /// publisher.send(&9)?;
    /// assert_eq!(*subscriber.try_receive()?, 9);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn durable(&self, dir: impl Into<std::path::PathBuf>) -> crate::durable::DurableTopicBuilder<P> {
        let o = &self.options;
        crate::durable::DurableTopicBuilder::new(
            dir.into(),
            o.common.name.clone(),
            o.max_message_size,
            o.common.spin,
        )
    }

    /// Opens (or creates) the topic and registers a publisher.
    pub fn publisher(&self) -> Result<Publisher<P>, OpenError> {
        match self.open(Role::Publisher)? {
            (shared, Joined::Publisher(index, writer)) => {
                Ok(Publisher::new(
                    shared,
                    index,
                    writer,
                    self.options.send_timeout,
                    self.options.common.spin,
                ))
            }
            _ => unreachable!("joined as publisher"),
        }
    }

    /// Opens (or creates) the topic and registers a subscriber. It receives messages sent from now
    /// on, plus up to `history` recent ones of each publisher.
    pub fn subscriber(&self) -> Result<Subscriber<P>, OpenError> {
        match self.open(Role::Subscriber)? {
            (shared, Joined::Subscriber(index, readers)) => {
                Ok(Subscriber::new(shared, index, readers, self.options.common.spin))
            }
            _ => unreachable!("joined as subscriber"),
        }
    }
}

/// Discovery: waiting without a thread for the topic to be created ([`crate::discovery`]).
impl<P: Payload + ?Sized> TopicBuilder<P> {
    /// Waits until the topic exists (as [`OpenMode::OpenExisting`] finds it), then registers a
    /// publisher. Checked at once, then at least every [`crate::discovery::DISCOVERY_NAP`].
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let topic = node.topic::<u64>("doc-publisher-when-found");
    /// let waiting = topic.publisher_when_found();
    /// let creator = topic.subscriber()?; // another process would create it
    /// let publisher = futures::executor::block_on(waiting)?;
    /// assert_eq!(publisher.topic(), "doc-publisher-when-found");
    /// # drop(creator);
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn publisher_when_found(&self) -> Found<TopicBuilder<P>, Publisher<P>> {
        Found::new(
            self.clone().open_mode(OpenMode::OpenExisting),
            TopicBuilder::publisher,
        )
    }

    /// Waits until the topic exists (as [`OpenMode::OpenExisting`] finds it), then registers a
    /// subscriber. Checked at once, then at least every [`crate::discovery::DISCOVERY_NAP`].
    ///
    /// ```
    /// use ringbus::Node;
    ///
    /// let node = Node::in_process();
    /// let topic = node.topic::<u64>("doc-subscriber-when-found");
    /// futures::executor::block_on(async {
    ///     let waiting = topic.subscriber_when_found();
    ///     let _creator = topic.publisher()?; // another process would create it
    ///     let _subscriber = waiting.await?;
    ///     Ok::<(), ringbus::OpenError>(())
    /// })?;
    /// # Ok::<(), ringbus::OpenError>(())
    /// ```
    pub fn subscriber_when_found(&self) -> Found<TopicBuilder<P>, Subscriber<P>> {
        Found::new(
            self.clone().open_mode(OpenMode::OpenExisting),
            TopicBuilder::subscriber,
        )
    }
}
