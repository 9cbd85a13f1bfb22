//! Typed errors, one enum per family of operations.
//!
//! Every error a caller can meet is a variant here: bad input, a peer that broke the shared layout,
//! a limit reached, a timeout. No operation panics on bad input or on bytes read from shared memory.

use std::fmt;
use std::io;
use std::time::Duration;

/// Opening or creating a shared segment (a topic, a service, a queue) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The name is empty, too long, or holds characters other than `[A-Za-z0-9_-]`.
    InvalidName(String),
    /// `open` (without create) found no segment of that name.
    NotFound(String),
    /// `create` (exclusive) found a live segment of that name.
    AlreadyExists(String),
    /// The segment was written by another layout version of ringbus.
    VersionMismatch {
        /// The version this build understands.
        expected: u32,
        /// The version found in the segment header.
        found: u32,
    },
    /// The segment holds another payload type or another kind of segment.
    TypeMismatch {
        /// What this handle asked for.
        expected: String,
        /// What the segment header says.
        found: String,
    },
    /// The segment's bytes are not a valid ringbus segment (garbage, truncated, inconsistent).
    Corrupt(String),
    /// The operating system refused access (file modes, another user's directory).
    PermissionDenied(String),
    /// A builder option is out of range.
    InvalidConfig(String),
    /// The segment has no free publisher or subscriber entry.
    NoFreeEntry {
        /// "publisher" or "subscriber".
        role: &'static str,
        /// The configured maximum.
        max: usize,
    },
    /// The segment does not fit where shared memory lives (for instance a small /dev/shm).
    NoSpace(String),
    /// The segment's lock stayed taken (a participant stopped while holding it) for the whole
    /// wait ([`crate::LOCK_WAIT`]).
    Busy(String),
    /// Any other I/O error.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::InvalidName(n) => write!(
                f,
                "invalid name {n:?}: use 1 to {} characters from [A-Za-z0-9_-]",
                crate::shm::MAX_NAME_LEN
            ),
            OpenError::NotFound(n) => write!(f, "no segment named {n:?}"),
            OpenError::AlreadyExists(n) => write!(f, "a live segment named {n:?} already exists"),
            OpenError::VersionMismatch { expected, found } => {
                write!(
                    f,
                    "layout version mismatch: this build reads {expected}, segment has {found}"
                )
            }
            OpenError::TypeMismatch { expected, found } => {
                write!(
                    f,
                    "type mismatch: expected {expected}, segment holds {found}"
                )
            }
            OpenError::Corrupt(why) => write!(f, "corrupt segment: {why}"),
            OpenError::PermissionDenied(why) => write!(f, "permission denied: {why}"),
            OpenError::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            OpenError::NoFreeEntry { role, max } => {
                write!(f, "all {max} {role} entries of the segment are in use")
            }
            OpenError::NoSpace(why) => write!(f, "not enough shared memory: {why}"),
            OpenError::Busy(what) => write!(f, "segment lock {what} stayed busy"),
            OpenError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl OpenError {
    /// Maps an I/O error met while handling the segment `what` to the matching typed error.
    pub(crate) fn from_io(e: io::Error, what: &str) -> OpenError {
        match e.kind() {
            io::ErrorKind::NotFound => OpenError::NotFound(what.to_string()),
            io::ErrorKind::AlreadyExists => OpenError::AlreadyExists(what.to_string()),
            io::ErrorKind::PermissionDenied => OpenError::PermissionDenied(format!("{what}: {e}")),
            _ if e.raw_os_error() == Some(28) => OpenError::NoSpace(format!("{what}: {e}")),
            // ELOOP: the path is a symbolic link, which ringbus never follows.
            _ if e.raw_os_error() == Some(40) => {
                OpenError::PermissionDenied(format!("{what} is a symbolic link"))
            }
            _ => OpenError::Io(e),
        }
    }
}

/// Sending (or loaning a slot to send) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// `Block` policy: the slowest live subscriber did not make room within the timeout.
    Timeout(Duration),
    /// `Block` policy, non-blocking call: the ring is full.
    Full,
    /// The message is larger than the topic's maximum message size.
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The topic's maximum.
        max: usize,
    },
    /// Every slot of the ring is held by subscribers (cannot happen with a valid configuration).
    AllSlotsHeld,
    /// rkyv serialisation failed (for instance the value does not fit the maximum size).
    Serialize(String),
    /// Service response: the client that made the call has left or died.
    Disconnected,
    /// Durable queue: the log could not be written or synced (the I/O error).
    Storage(String),
    /// Queue: while this producer wrote the message, the queue judged it gone (its entry was
    /// reclaimed as a dead process's, e.g. after it was stopped for long) and passed over its
    /// position. The message was not sent; sending again is safe.
    Reclaimed,
    /// Queue: the append lock stayed held by a live process for a second
    /// (a process stopped inside it, or a corrupt lock word). Nothing was sent.
    Busy,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Timeout(d) => write!(f, "no room in the ring within {d:?}"),
            SendError::Full => write!(f, "the ring is full"),
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            SendError::AllSlotsHeld => write!(f, "every slot is held by a subscriber"),
            SendError::Serialize(e) => write!(f, "serialisation failed: {e}"),
            SendError::Disconnected => write!(f, "the caller has left or died"),
            SendError::Storage(e) => write!(f, "durable storage failed: {e}"),
            SendError::Busy => write!(
                f,
                "the queue's append lock stayed held (a stopped process, or a corrupt lock word)"
            ),
            SendError::Reclaimed => write!(
                f,
                "the queue passed over this message's position (the producer was judged gone)"
            ),
        }
    }
}

impl std::error::Error for SendError {}

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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiveError {
    /// `try_receive`: nothing to read now.
    Empty,
    /// `receive_timeout`: nothing arrived within the timeout.
    Timeout(Duration),
    /// `DropOldest` policy: this many messages were overwritten before this subscriber read them.
    /// The next call returns the oldest message still available.
    Lagged(u64),
    /// The subscriber already holds its maximum number of samples; drop one first.
    TooManyHeld(usize),
    /// A message failed validation (wrong length, invalid rkyv archive): it is skipped.
    Invalid(String),
    /// Durable queue: the log could not be read now (the I/O error); the message stays queued.
    Storage(String),
    /// Queue: the claim lock stayed held by a live process for a second
    /// (a process stopped inside it, or a corrupt lock word). Nothing was received.
    Busy,
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Empty => write!(f, "no message available"),
            ReceiveError::Timeout(d) => write!(f, "no message within {d:?}"),
            ReceiveError::Lagged(n) => write!(f, "subscriber lagged: {n} messages were missed"),
            ReceiveError::TooManyHeld(n) => {
                write!(
                    f,
                    "already holding the maximum of {n} samples; drop one first"
                )
            }
            ReceiveError::Invalid(why) => write!(f, "invalid message skipped: {why}"),
            ReceiveError::Storage(e) => write!(f, "durable storage failed: {e}"),
            ReceiveError::Busy => write!(
                f,
                "the queue's claim lock stayed held (a stopped process, or a corrupt lock word)"
            ),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// Acknowledging (or handing back) a queue delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// The delivery's visibility timeout passed and the queue took the message back: it is (or
    /// was) delivered again, and this acknowledgement does not count.
    Expired,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::Expired => write!(
                f,
                "the delivery expired (visibility timeout) and was taken back"
            ),
        }
    }
}

impl std::error::Error for AckError {}

/// A call to a service failed. Every outcome of a call that is not a response is one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No response within the timeout. The call is abandoned: a response that arrives later is
    /// discarded, and the call's slot is reused once the server is done with it.
    Timeout(Duration),
    /// No live server serves the service.
    NoServer,
    /// The server that took the call died before it finished answering.
    Disconnected,
    /// Every call slot of this client is in use (see `ServiceBuilder::max_in_flight`); wait for a
    /// response or drop a pending call first.
    Busy {
        /// The client's in-flight limit.
        max_in_flight: usize,
    },
    /// The request is larger than the service's maximum request size.
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The service's maximum.
        max: usize,
    },
    /// rkyv serialisation of the request failed.
    Serialize(String),
    /// The server dropped the request without answering, or could not read it.
    Aborted,
    /// A response failed validation (wrong length, invalid rkyv archive); it was skipped.
    Invalid(String),
    /// The call has already delivered its response, or its stream has ended.
    Finished,
    /// A request loan of this client is still out: send or drop it before the next call (calls
    /// are taken in the order they were loaned).
    LoanOutstanding,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no response within {d:?}"),
            CallError::NoServer => write!(f, "no live server serves the service"),
            CallError::Disconnected => write!(f, "the server handling the call died"),
            CallError::Busy { max_in_flight } => {
                write!(f, "all {max_in_flight} call slots of the client are in use")
            }
            CallError::TooLarge { len, max } => {
                write!(f, "request of {len} bytes exceeds the maximum of {max}")
            }
            CallError::Serialize(e) => write!(f, "serialisation failed: {e}"),
            CallError::Aborted => write!(f, "the server dropped the request without answering"),
            CallError::Invalid(why) => write!(f, "invalid response skipped: {why}"),
            CallError::Finished => write!(f, "the call has no more responses"),
            CallError::LoanOutstanding => {
                write!(f, "a request loan is still out: send or drop it first")
            }
        }
    }
}

impl std::error::Error for CallError {}

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
