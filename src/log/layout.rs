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

/// Magic word.
pub const OFF_MAGIC: usize = 0;
/// Layout version.
pub const OFF_VERSION: usize = OFF_MAGIC + U64;
/// Header length.
pub const OFF_HEADER_LEN: usize = OFF_VERSION + U32;
/// Base offset the file was created for.
pub const OFF_BASE: usize = OFF_HEADER_LEN + U32;
/// Records per segment.
pub const OFF_RECORDS: usize = OFF_BASE + U64;
/// Record stride.
pub const OFF_STRIDE: usize = OFF_RECORDS + U64;
/// Largest payload.
pub const OFF_MAX_PAYLOAD: usize = OFF_STRIDE + U32;
/// crc32c of the bytes before it.
pub const OFF_HEADER_CRC: usize = OFF_MAX_PAYLOAD + U32;
/// Syncs begun (the written-by-writers words start on their own cache line).
pub const OFF_SYNCS_BEGUN: usize = CACHE_LINE;
/// Syncs done.
pub const OFF_SYNCS_DONE: usize = OFF_SYNCS_BEGUN + U64;
/// Sync lock word.
pub const OFF_SYNC_LOCK: usize = OFF_SYNCS_DONE + U64;
/// Bytes the last completed sync covered.
pub const OFF_SYNCED_END: usize = OFF_SYNC_LOCK + U64;
/// Base + 1 of the name last made durable.
pub const OFF_NAMED: usize = OFF_SYNCED_END + U64;
/// Futex word of the sync lock's waiters.
pub const OFF_SYNC_BELL: usize = OFF_NAMED + U64;

/// Bytes before the first record of a segment file (one page).
pub const SEGMENT_HEADER: usize = 4096;

/// A record's crc.
pub const REC_CRC: usize = 0;
/// A record's payload length.
pub const REC_LEN: usize = REC_CRC + U32;
/// A record's own offset.
pub const REC_OFFSET: usize = REC_LEN + U32;
/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = REC_OFFSET + U64;
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
