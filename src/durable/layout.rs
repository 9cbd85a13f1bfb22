//! The byte layouts of a durable topic: its control file, a group's file, and the prefix of
//! every log record. Every offset is named.
//!
//! A durable topic `NAME` in directory `DIR` is the directory `DIR/topic_NAME/` (mode 0700):
//!
//! ```text
//! control              the control file (below), mapped shared by every handle
//! p000/ … p063/        one log per partition (see `log::layout`), named by partition number
//! groups/GROUP         one file per consumer group (below)
//! ```
//!
//! # Control file
//!
//! ```text
//! 0     magic          u64  "RBUSDTOP"
//!   +8    version      u32  DTOPIC_VERSION
//!   +12   partitions   u32  1..=MAX_PARTITIONS
//!   +16   max_message  u32  largest message (bytes)
//!   +20   (zero)       u32
//!   +24   records      u64  records per log segment file
//!   +32   type_hash    u64  fnv1a of the payload type's name, size and alignment
//!   +40   header_crc   u32  crc32c of bytes 0..40
//! 64    boot           u64  fnv1a of the boot id whose processes the words below belong to
//!                           (another boot's are reset at open: recovery)
//! 128   news_seq       u32  doorbell futex word (bumped by a publisher that finds sleepers)
//!   +8    news_sleepers u64 one bit per subscriber entry that sleeps
//! 192   subscribers    MAX_SUBSCRIBERS × u64: the packed process id of each subscriber's
//!                           owner, 0 when free (its index is its doorbell bit)
//! 704   partition k at 704 + k × 128 (two cache lines):
//!   +0    lock         u64  append lock: 0, or the holder's packed process id
//!   +8    last_ts      u64  timestamp of the last record (timestamps never go backwards)
//!   +64   published    u64  every offset below is sealed (Release; readers Acquire it). On a
//!                           line of its own: readers poll it, and the lock's traffic must
//!                           not take it from them.
//! ```
//!
//! # Group file
//!
//! ```text
//! 0     magic          u64  "RBUSGRP\0"
//!   +8    version      u32  GROUP_VERSION
//!   +12   partitions   u32  the topic's
//!   +16   header_crc   u32  crc32c of bytes 0..16
//! 64    generation     u64  bumped on every join and leave
//!   +8    lost         u64  messages the group lost to forced retention
//!   +16   joins        u64  tokens handed out (a member's token is unique in the file)
//! 128   members        MAX_MEMBERS × 16: owner u64 (packed process id, 0 free), token u64
//! 1152  partition k at 1152 + k × 32:
//!   +0    committed    u64  the offset the group resumes from (NO_COMMIT: none yet)
//!   +8    owner        u64  token of the member reading the partition, 0 for none
//! ```
//!
//! # Record prefix
//!
//! Every log record's payload starts with [`PREFIX`] bytes, then the message:
//!
//! ```text
//! +0    timestamp      u64  nanoseconds since the Unix epoch, never below the previous record's
//! +8    key            u64  fnv1a of the key, never 0 (`KEY_NONE`: the message has no key)
//! ```

use crate::shm::{disjoint, one_line, CACHE_LINE, U32, U64};

/// Version of the control and group layouts (and of the record prefix).
pub const DTOPIC_VERSION: u32 = 1;
/// Version of a group file's layout.
pub const GROUP_VERSION: u32 = 1;
/// Magic of a control file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RBUSDTOP");
/// Magic of a group file.
pub const GROUP_MAGIC: u64 = u64::from_le_bytes(*b"RBUSGRP\0");
/// Most partitions of one topic.
pub const MAX_PARTITIONS: usize = 64;
/// Most subscribers (group members included) of one topic at a time.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Most members of one group at a time.
pub const MAX_MEMBERS: usize = 64;
/// `committed` of a partition the group never committed.
pub const NO_COMMIT: u64 = u64::MAX;
/// `key` of a message sent without a key.
pub const KEY_NONE: u64 = 0;

crate::shm::fields! { from 0;
    /// Magic word.
    pub OFF_MAGIC: U64,
    /// Layout version.
    pub OFF_VERSION: U32,
    /// Partition count.
    pub OFF_PARTITIONS: U32,
    /// Largest message.
    pub OFF_MAX_MESSAGE: U32,
    /// Zero.
    pub OFF_ZERO: U32,
    /// Records per segment file.
    pub OFF_RECORDS: U64,
    /// Payload type digest.
    pub OFF_TYPE_HASH: U64,
    /// crc32c of the bytes before it.
    pub OFF_HEADER_CRC: U32,
}
crate::shm::fields! { from CACHE_LINE;
    /// Boot the live words belong to.
    pub OFF_BOOT: U64,
}
crate::shm::fields! { from 2 * CACHE_LINE;
    /// News doorbell futex word.
    pub OFF_NEWS_SEQ: U64,
    /// News doorbell sleepers.
    pub OFF_NEWS_SLEEPERS: U64,
}
crate::shm::fields! { from 3 * CACHE_LINE;
    /// Subscriber entries.
    pub OFF_SUBSCRIBERS: MAX_SUBSCRIBERS * U64,
    /// First partition's line.
    pub OFF_PARTITIONS_AT,
}
/// Bytes per partition in the control file.
pub const PARTITION_STRIDE: usize = 2 * CACHE_LINE;
crate::shm::fields! { from 0;
    /// Append lock (within a partition's lines).
    pub P_LOCK: U64,
    /// Last timestamp.
    pub P_LAST_TS: U64,
}
crate::shm::fields! { from CACHE_LINE;
    /// Published end.
    pub P_PUBLISHED: U64,
    /// End of the words used.
    pub P_END,
}
/// Length of a control file.
pub const CONTROL_LEN: usize = OFF_PARTITIONS_AT + MAX_PARTITIONS * PARTITION_STRIDE;

crate::shm::fields! { from 0;
    /// Magic word.
    pub G_MAGIC: U64,
    /// Layout version.
    pub G_VERSION: U32,
    /// Partition count.
    pub G_PARTITIONS: U32,
    /// crc32c of the bytes before it.
    pub G_HEADER_CRC: U32,
}
crate::shm::fields! { from CACHE_LINE;
    /// Membership generation.
    pub G_GENERATION: U64,
    /// Messages lost to forced retention.
    pub G_LOST: U64,
    /// Tokens handed out.
    pub G_JOINS: U64,
}
/// Bytes per member entry.
pub const MEMBER_STRIDE: usize = 2 * U64;
crate::shm::fields! { from 2 * CACHE_LINE;
    /// Member entries.
    pub G_MEMBERS: MAX_MEMBERS * MEMBER_STRIDE,
    /// First partition's words.
    pub G_PARTITIONS_AT,
}
/// Bytes per partition in a group file.
pub const G_PARTITION_STRIDE: usize = 4 * U64;
crate::shm::fields! { from 0;
    /// Committed offset (within a partition's words).
    pub GP_COMMITTED: U64,
    /// Owner token.
    pub GP_OWNER: U64,
}
/// Length of a group file.
pub const GROUP_LEN: usize = 4096;

crate::shm::fields! { from 0;
    /// Record timestamp.
    pub R_TIMESTAMP: U64,
    /// Record key digest.
    pub R_KEY: U64,
    /// Bytes of the prefix.
    pub PREFIX,
}

const _: () = {
    assert!(OFF_HEADER_CRC == 40 && OFF_HEADER_CRC + U32 <= OFF_BOOT);
    assert!(disjoint(OFF_BOOT, U64, OFF_NEWS_SEQ, 2 * U64));
    assert!(one_line(OFF_NEWS_SEQ, 2 * U64));
    assert!(OFF_SUBSCRIBERS == 192 && OFF_PARTITIONS_AT == 704);
    assert!(OFF_PARTITIONS_AT % CACHE_LINE == 0 && P_END <= PARTITION_STRIDE);
    assert!(P_LAST_TS + U64 <= P_PUBLISHED && P_PUBLISHED % CACHE_LINE == 0);
    assert!(G_HEADER_CRC + U32 <= G_GENERATION);
    assert!(G_PARTITIONS_AT == 1152);
    assert!(G_PARTITIONS_AT + MAX_PARTITIONS * G_PARTITION_STRIDE <= GROUP_LEN);
    // The message after the prefix keeps the log's 16-byte payload alignment.
    assert!(PREFIX % 16 == 0);
};

/// Offset of partition `k`'s line in the control file.
#[inline]
pub fn partition_at(k: usize) -> usize {
    OFF_PARTITIONS_AT + k * PARTITION_STRIDE
}

/// Offset of member `i`'s entry in a group file.
#[inline]
pub fn member_at(i: usize) -> usize {
    G_MEMBERS + i * MEMBER_STRIDE
}

/// Offset of partition `k`'s words in a group file.
#[inline]
pub fn group_partition_at(k: usize) -> usize {
    G_PARTITIONS_AT + k * G_PARTITION_STRIDE
}
