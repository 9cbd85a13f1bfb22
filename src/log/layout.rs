//! The byte layout of a log segment file, every offset named.
//!
//! ```text
//! 0     segment header (one page)
//!   +0    magic          u64  "RBUSLOG\0"
//!   +8    version        u32  LOG_VERSION
//!   +12   header_len     u32  SEGMENT_HEADER
//!   +16   base           u64  first offset the file was created for (a reused file keeps it:
//!                             its name is the truth)
//!   +24   records        u64  records per segment
//!   +32   stride         u32  bytes per record (a multiple of RECORD_ALIGN)
//!   +36   max_payload    u32
//!   +40   header_crc     u32  crc32c of bytes 0..40
//!   +64   syncs_begun    u64  group commit: syncs numbered when they begin (its own line)
//!   +72   syncs_done     u64  the number of the last completed sync
//!   +80   sync_lock      u64  0, or the holder's owner word
//!   +88   synced_end     u64  bytes the last completed sync covered
//!   +96   named          u64  base + 1 of the file's name last made durable (directory synced)
//!   +104  sync_bell      u32  futex word bumped when the sync lock is released
//! 4096  records: `records` × `stride`
//!   +0    crc            u32  crc32c of bytes 4..16 and the payload
//!   +4    len            u32  payload length
//!   +8    offset         u64  the record's own offset (a record copied elsewhere fails)
//!   +16   payload        len bytes, 16-aligned
//! ```
//!
//! Offset `o` of a log lives in the file of base `o - o % records`, at byte
//! `SEGMENT_HEADER + (o - base) × stride`.

use crate::shm::{disjoint, one_line, CACHE_LINE, U32, U64};

/// Version of the log's file layout; a segment of another version is refused at open. (3: the
/// sync bell; 2 had none.)
pub const LOG_VERSION: u32 = 3;
/// Magic of a segment file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RBUSLOG\0");

crate::shm::fields! { from 0;
    /// Magic word.
    pub OFF_MAGIC: U64,
    /// Layout version.
    pub OFF_VERSION: U32,
    /// Header length.
    pub OFF_HEADER_LEN: U32,
    /// Base offset the file was created for.
    pub OFF_BASE: U64,
    /// Records per segment.
    pub OFF_RECORDS: U64,
    /// Record stride.
    pub OFF_STRIDE: U32,
    /// Largest payload.
    pub OFF_MAX_PAYLOAD: U32,
    /// crc32c of the bytes before it.
    pub OFF_HEADER_CRC: U32,
}
crate::shm::fields! { from CACHE_LINE;
    /// Syncs begun (the written-by-writers words start on their own cache line).
    pub OFF_SYNCS_BEGUN: U64,
    /// Syncs done.
    pub OFF_SYNCS_DONE: U64,
    /// Sync lock word.
    pub OFF_SYNC_LOCK: U64,
    /// Bytes the last completed sync covered.
    pub OFF_SYNCED_END: U64,
    /// Base + 1 of the name last made durable.
    pub OFF_NAMED: U64,
    /// Futex word of the sync lock's waiters.
    pub OFF_SYNC_BELL: U32,
}

/// Bytes before the first record of a segment file (one page).
pub const SEGMENT_HEADER: usize = 4096;

crate::shm::fields! { from 0;
    /// A record's crc.
    pub REC_CRC: U32,
    /// A record's payload length.
    pub REC_LEN: U32,
    /// A record's own offset.
    pub REC_OFFSET: U64,
    /// Bytes before a record's payload.
    pub RECORD_HEADER,
}

/// Alignment of record payloads (and of strides).
pub const RECORD_ALIGN: usize = 16;

const _: () = {
    // The checksummed part ends where the crc starts, and the mutable words on their own line.
    assert!(OFF_HEADER_CRC == 40 && OFF_HEADER_CRC + U32 <= OFF_SYNCS_BEGUN);
    assert!(one_line(
        OFF_SYNCS_BEGUN,
        OFF_SYNC_BELL + U32 - OFF_SYNCS_BEGUN
    ));
    assert!(disjoint(
        OFF_MAGIC,
        OFF_HEADER_CRC + U32,
        OFF_SYNCS_BEGUN,
        OFF_SYNC_BELL + U32
    ));
    assert!(OFF_SYNC_BELL + U32 <= SEGMENT_HEADER);
    assert!(RECORD_HEADER == 16 && RECORD_HEADER % RECORD_ALIGN == 0);
    assert!(SEGMENT_HEADER % RECORD_ALIGN == 0);
};
