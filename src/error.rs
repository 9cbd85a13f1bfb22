//! Typed errors, one enum per family of operations.
//!
//! Every error a caller can meet is a variant here: bad input, a peer that broke the shared layout,
//! a limit reached, a timeout. No operation panics on bad input or on bytes read from shared memory.

use std::io;
use std::time::Duration;

/// Opening or creating a shared segment (a topic, a service, a queue) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The name is empty, too long, or holds characters other than `[A-Za-z0-9_-]`.
    #[error("invalid name {0:?}: use 1 to {max} characters from [A-Za-z0-9_-]", max = crate::shm::MAX_NAME_LEN)]
    InvalidName(String),
    /// `open` (without create) found no segment of that name.
    #[error("no segment named {0:?}")]
    NotFound(String),
    /// `create` (exclusive) found a live segment of that name.
    #[error("a live segment named {0:?} already exists")]
    AlreadyExists(String),
    /// The segment was written by another layout version of ringbus.
    #[error("layout version mismatch: this build reads {expected}, segment has {found}")]
    VersionMismatch {
        /// The version this build understands.
        expected: u32,
        /// The version found in the segment header.
        found: u32,
    },
    /// The segment holds another payload type or another kind of segment.
    #[error("type mismatch: expected {expected}, segment holds {found}")]
    TypeMismatch {
        /// What this handle asked for.
        expected: String,
        /// What the segment header says.
        found: String,
    },
    /// The segment's bytes are not a valid ringbus segment (garbage, truncated, inconsistent).
    #[error("corrupt segment: {0}")]
    Corrupt(String),
    /// The operating system refused access (file modes, another user's directory).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A builder option is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The segment has no free publisher or subscriber entry.
    #[error("all {max} {role} entries of the segment are in use")]
    NoFreeEntry {
        /// "publisher" or "subscriber".
        role: &'static str,
        /// The configured maximum.
        max: usize,
    },
    /// The segment does not fit where shared memory lives (for instance a small /dev/shm).
    #[error("not enough shared memory: {0}")]
    NoSpace(String),
    /// The segment's lock stayed taken (a participant stopped while holding it) for the whole
    /// wait ([`crate::LOCK_WAIT`]).
    #[error("segment lock {0} stayed busy")]
    Busy(String),
    /// A durable topic was asked for an offset retention already deleted.
    #[error("partition {partition} offset {requested} is no longer retained; the earliest retained is {earliest}")]
    NotRetained {
        /// The partition.
        partition: usize,
        /// The offset asked for.
        requested: u64,
        /// The earliest offset the partition still holds.
        earliest: u64,
    },
    /// Any other I/O error.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
}

impl OpenError {
    /// Maps an I/O error met while handling the segment `what` to the matching typed error.
    pub(crate) fn from_io(e: io::Error, what: &str) -> OpenError {
        match e.kind() {
            io::ErrorKind::NotFound => OpenError::NotFound(what.to_string()),
            io::ErrorKind::AlreadyExists => OpenError::AlreadyExists(what.to_string()),
            io::ErrorKind::PermissionDenied => OpenError::PermissionDenied(format!("{what}: {e}")),
            _ if e.raw_os_error() == Some(28) => OpenError::NoSpace(format!("{what}: {e}")),
            // EFBIG: larger than the file system takes.
            _ if e.raw_os_error() == Some(27) => OpenError::NoSpace(format!(
                "{what}: {e}: ask for a smaller capacity or message size"
            )),
            // ELOOP: the path is a symbolic link, which ringbus never follows.
            _ if e.raw_os_error() == Some(40) => {
                OpenError::PermissionDenied(format!("{what} is a symbolic link"))
            }
            // The path, which the error alone does not name.
            _ => OpenError::Io(io::Error::new(e.kind(), format!("{what}: {e}"))),
        }
    }
}

/// Sending (or loaning a slot to send) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// `Block` policy: the slowest live subscriber did not make room within the timeout.
    #[error("no room in the ring within {0:?}")]
    Timeout(Duration),
    /// `Block` policy, non-blocking call: the ring is full.
    #[error("the ring is full")]
    Full,
    /// The message is larger than the topic's maximum message size.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The topic's maximum.
        max: usize,
    },
    /// Every slot of the ring is held by subscribers (cannot happen with a valid configuration).
    #[error("every slot is held by a subscriber")]
    AllSlotsHeld,
    /// rkyv serialisation failed (for instance the value does not fit the maximum size).
    #[error("serialisation failed: {0}")]
    Serialize(String),
    /// Service response: the client that made the call has left or died.
    #[error("the caller has left or died")]
    Disconnected,
    /// Durable queue: the log could not be written or synced (the I/O error).
    #[error("durable storage failed: {0}")]
    Storage(String),
    /// Queue: while this producer wrote the message, the queue judged it gone (its entry was
    /// reclaimed as a dead process's, e.g. after it was stopped for long) and passed over its
    /// position. The message was not sent; sending again is safe.
    #[error("the queue passed over this message's position (the producer was judged gone)")]
    Reclaimed,
    /// Queue: the append lock stayed held by a live process for a second
    /// (a process stopped inside it, or a corrupt lock word). Nothing was sent.
    #[error("the queue's append lock stayed held (a stopped process, or a corrupt lock word)")]
    Busy,
    /// Queue owned by another host (a network bridge keeps its local copy): the message was
    /// sent to the bridge's outbox, and the owner did not accept it within this time (the
    /// producer's `Block` timeout, or 1 s under `Fail`). Its bridge, the link or the owner may
    /// be down or slow: the message stays in the outbox and may still reach the owner later
    /// (at least once), so a resend may duplicate it.
    #[error("the owning host did not accept the message within {0:?}")]
    Unconfirmed(Duration),
    /// Queue owned by another host: the outbox of its bridge could not be opened or made
    /// (the error says why). Nothing was sent.
    #[error("the queue belongs to another host and its bridge's outbox could not be opened: {0}")]
    NoBridge(String),
}

impl SendError {
    /// The one check every loan (topic, service, queue) makes before handing out `len` bytes of
    /// a slot whose payload area holds `max`: a loan never reaches past its slot, whatever the
    /// payload type or a segment header claims.
    #[inline]
    pub(crate) fn check_fits(len: usize, max: usize) -> Result<(), SendError> {
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        Ok(())
    }
}

/// Receiving failed, or has something to report before the next message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// `try_receive`: nothing to read now.
    #[error("no message available")]
    Empty,
    /// `receive_timeout`: nothing arrived within the timeout.
    #[error("no message within {0:?}")]
    Timeout(Duration),
    /// `DropOldest` policy: this many messages were overwritten before this subscriber read them.
    /// The next call returns the oldest message still available.
    #[error("subscriber lagged: {0} messages were missed")]
    Lagged(u64),
    /// The subscriber already holds its maximum number of samples; drop one first.
    #[error("already holding the maximum of {0} samples; drop one first")]
    TooManyHeld(usize),
    /// A message failed validation (wrong length, invalid rkyv archive): it is skipped.
    #[error("invalid message skipped: {0}")]
    Invalid(String),
    /// Durable queue: the log could not be read now (the I/O error); the message stays queued.
    #[error("durable storage failed: {0}")]
    Storage(String),
    /// Queue: the claim lock stayed held by a live process for a second
    /// (a process stopped inside it, or a corrupt lock word). Nothing was received.
    #[error("the queue's claim lock stayed held (a stopped process, or a corrupt lock word)")]
    Busy,
    /// A durable topic's retention deleted messages before this reader read them (for a
    /// group: before the group committed them, when the topic's `max_bytes` forced it).
    /// Reading goes on from offset `to`, the earliest retained.
    #[error("partition {partition}: offsets {from}..{to} were deleted by retention before they were read")]
    Lost {
        /// The partition.
        partition: usize,
        /// The first offset lost.
        from: u64,
        /// The earliest retained offset, where reading goes on.
        to: u64,
    },
}

/// Acknowledging (or handing back) a queue delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The delivery's visibility timeout passed and the queue took the message back: it is (or
    /// was) delivered again, and this acknowledgement does not count.
    #[error("the delivery expired (visibility timeout) and was taken back")]
    Expired,
}

/// A call to a service failed. Every outcome of a call that is not a response is one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No response within the timeout. The call is abandoned: a response that arrives later is
    /// discarded, and the call's slot is reused once the server is done with it.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// No live server serves the service.
    #[error("no live server serves the service")]
    NoServer,
    /// The server that took the call died before it finished answering.
    #[error("the server handling the call died")]
    Disconnected,
    /// Every call slot of this client is in use (see `ServiceBuilder::max_in_flight`); wait for a
    /// response or drop a pending call first.
    #[error("all {max_in_flight} call slots of the client are in use")]
    Busy {
        /// The client's in-flight limit.
        max_in_flight: usize,
    },
    /// The request is larger than the service's maximum request size.
    #[error("request of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The service's maximum.
        max: usize,
    },
    /// rkyv serialisation of the request failed.
    #[error("serialisation failed: {0}")]
    Serialize(String),
    /// The server dropped the request without answering, or could not read it.
    #[error("the server dropped the request without answering")]
    Aborted,
    /// A response failed validation (wrong length, invalid rkyv archive); it was skipped.
    #[error("invalid response skipped: {0}")]
    Invalid(String),
    /// The call has already delivered its response, or its stream has ended.
    #[error("the call has no more responses")]
    Finished,
    /// A request loan of this client is still out: send or drop it before the next call (calls
    /// are taken in the order they were loaned).
    #[error("a request loan is still out: send or drop it first")]
    LoanOutstanding,
}

impl From<SendError> for CallError {
    fn from(e: SendError) -> CallError {
        match e {
            SendError::TooLarge { len, max } => CallError::TooLarge { len, max },
            SendError::Serialize(s) => CallError::Serialize(s),
            SendError::Timeout(d) => CallError::Timeout(d),
            SendError::Disconnected => CallError::Disconnected,
            other => CallError::Invalid(other.to_string()),
        }
    }
}
