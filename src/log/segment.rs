//! One segment file of a log: its header, and records at computed places.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;

use memmap2::MmapOptions;
use rustix::fs::{Mode, OFlags};

use super::{LogShape, LOG_VERSION, RECORD_HEADER, SEGMENT_HEADER};
use crate::error::OpenError;
use crate::shm::Region;
use crate::sync::ProcessId;

const MAGIC: u64 = u64::from_le_bytes(*b"RBUSLOG\0");
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_BASE: usize = 16;
const OFF_RECORDS: usize = 24;
const OFF_STRIDE: usize = 32;
const OFF_MAX_PAYLOAD: usize = 36;
const OFF_HEADER_CRC: usize = 40;
const OFF_SYNCS_BEGUN: usize = 64;
const OFF_SYNCS_DONE: usize = 72;
const OFF_SYNC_LOCK: usize = 80;
const OFF_SYNCED_END: usize = 88;

const REC_CRC: usize = 0;
const REC_LEN: usize = 4;
const REC_OFFSET: usize = 8;

/// What reading an offset found.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A record whose crc, length and offset check out.
    Valid(&'a [u8]),
    /// Never written (all zero).
    Empty,
    /// Torn or corrupt: present but failing a check (the reason).
    Corrupt(String),
}

/// A mapped segment file.
pub struct LogSegment {
    base: u64,
    shape: LogShape,
    stride: usize,
    region: Region,
    file: File,
}

/// The owner (packed process id) of a temporary segment file name, if `name` is one.
pub(super) fn tmp_owner(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(".tmp-")?;
    let (owner, _) = rest.split_once('-')?;
    u64::from_str_radix(owner, 16).ok()
}

/// Maps the pages of `region` now, writable (and dirty) for a writer so that its stores do not
/// fault one page at a time, readable for a reader. Best effort: an old kernel just faults later.
fn populate(region: &Region, write: bool) {
    populate_range(region, 0, region.len(), write);
}

/// As [`populate`], for `len` bytes from `at` (clamped to the region; `at` page-aligned).
fn populate_range(region: &Region, at: usize, len: usize, write: bool) {
    let advice = if write {
        rustix::mm::Advice::LinuxPopulateWrite
    } else {
        rustix::mm::Advice::LinuxPopulateRead
    };
    if at >= region.len() {
        return;
    }
    let len = len.min(region.len() - at);
    // SAFETY: the range lies inside our mapping (clamped above, checked by `ptr`); populating
    // changes no byte of it (a write populate dirties pages without changing their contents).
    let _ = unsafe { rustix::mm::madvise(region.ptr(at, len).cast(), len, advice) };
}

/// Bytes a writer populates at a time, one chunk ahead of where it writes: the kernel zeroes
/// them just before the writer stores into them, so its stores find the lines in cache.
const POPULATE_CHUNK: usize = 256 << 10;

impl LogSegment {
    /// Opens and validates `path`; `Ok(None)` if there is no such file.
    pub(super) fn open(
        path: &Path,
        base: u64,
        shape: LogShape,
        write: bool,
    ) -> Result<Option<LogSegment>, OpenError> {
        let what = path.display().to_string();
        let Some((file, len, region)) = crate::shm::open_file(path)? else {
            return Ok(None);
        };
        let region = match region {
            Some(r) if len >= SEGMENT_HEADER as u64 => r,
            _ => {
                return Err(OpenError::Corrupt(format!(
                    "{what}: {len} bytes is shorter than a segment header"
                )))
            }
        };
        let seg = LogSegment {
            base,
            shape,
            stride: shape.stride(),
            region,
            file,
        };
        seg.validate(&what, len)?;
        populate(&seg.region, write);
        Ok(Some(seg))
    }

    fn header_bytes(&self) -> [u8; OFF_HEADER_CRC] {
        let mut h = [0u8; OFF_HEADER_CRC];
        // SAFETY: the header lies inside the mapping (its length was checked against
        // SEGMENT_HEADER); it is written once before the file gets its name and never after, so
        // copying it out races with no writer of the protocol (a hostile writer only changes
        // the bytes we then validate).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.region.ptr(0, OFF_HEADER_CRC),
                h.as_mut_ptr(),
                OFF_HEADER_CRC,
            )
        };
        h
    }

    fn validate(&self, what: &str, len: u64) -> Result<(), OpenError> {
        let h = self.header_bytes();
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        if u64_at(OFF_MAGIC) != MAGIC {
            return Err(OpenError::Corrupt(format!(
                "{what}: not a ringbus log segment"
            )));
        }
        // Version before checksum: another version may lay its header out differently.
        let version = u32_at(OFF_VERSION);
        if version != LOG_VERSION {
            return Err(OpenError::VersionMismatch {
                expected: LOG_VERSION,
                found: version,
            });
        }
        // Relaxed: written once before the file was named (see `create`).
        let stored_crc = self.region.u32_at(OFF_HEADER_CRC).load(Ordering::Relaxed);
        if crc32c::crc32c(&h) != stored_crc {
            return Err(OpenError::Corrupt(format!(
                "{what}: header checksum mismatch"
            )));
        }
        if u32_at(OFF_HEADER_LEN) as usize != SEGMENT_HEADER || u64_at(OFF_BASE) != self.base {
            return Err(OpenError::Corrupt(format!(
                "{what}: header says base {} (header length {})",
                u64_at(OFF_BASE),
                u32_at(OFF_HEADER_LEN)
            )));
        }
        let found = LogShape {
            max_payload: u32_at(OFF_MAX_PAYLOAD) as usize,
            records: u64_at(OFF_RECORDS),
        };
        if found != self.shape || u32_at(OFF_STRIDE) as usize != self.stride {
            return Err(OpenError::TypeMismatch {
                expected: format!("log of {:?}", self.shape),
                found: format!("log of {found:?}"),
            });
        }
        if len != self.shape.file_len() as u64 {
            return Err(OpenError::Corrupt(format!(
                "{what}: {len} bytes, the header's shape needs {}",
                self.shape.file_len()
            )));
        }
        Ok(())
    }

    /// Creates the segment file whole under a temporary name and links it to `path` without
    /// replacing anything; if another process won the race, opens its file instead.
    pub(super) fn create(
        dir: &Path,
        path: &Path,
        base: u64,
        shape: LogShape,
    ) -> Result<LogSegment, OpenError> {
        // Unique per creator (process and call), so concurrent creators never share one.
        static CREATES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CREATES.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{:x}-{n}-{base}", ProcessId::current().pack()));
        let what = tmp.display().to_string();
        let fd = rustix::fs::open(
            &tmp,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| OpenError::from_io(e.into(), &what))?;
        let len = shape.file_len();
        let made = (|| -> Result<LogSegment, OpenError> {
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len as u64)
                .map_err(|e| OpenError::from_io(e.into(), &what))?;
            let file = File::from(fd);
            let map = MmapOptions::new()
                .len(len)
                .map_raw(&file)
                .map_err(|e| OpenError::from_io(e, &what))?;
            let seg = LogSegment {
                base,
                shape,
                stride: shape.stride(),
                region: Region::from_map(map),
                file,
            };
            seg.write_header();
            rustix::fs::fdatasync(&seg.file).map_err(|e| OpenError::from_io(e.into(), &what))?;
            Ok(seg)
        })();
        let seg = match made {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                let _ = super::sync_dir(dir);
                // After the header's sync: a sync would clean the pages and protect them again.
                // The first chunks now; the writer populates the rest as it goes.
                populate_range(&seg.region, 0, SEGMENT_HEADER + 2 * POPULATE_CHUNK, true);
                Ok(seg)
            }
            Err(rustix::io::Errno::EXIST) => {
                let _ = std::fs::remove_file(&tmp);
                LogSegment::open(path, base, shape, true)?
                    .ok_or_else(|| OpenError::NotFound(path.display().to_string()))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(OpenError::from_io(e.into(), &path.display().to_string()))
            }
        }
    }

    fn write_header(&self) {
        let mut h = [0u8; OFF_HEADER_CRC];
        h[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC.to_le_bytes());
        h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&LOG_VERSION.to_le_bytes());
        h[OFF_HEADER_LEN..OFF_HEADER_LEN + 4]
            .copy_from_slice(&(SEGMENT_HEADER as u32).to_le_bytes());
        h[OFF_BASE..OFF_BASE + 8].copy_from_slice(&self.base.to_le_bytes());
        h[OFF_RECORDS..OFF_RECORDS + 8].copy_from_slice(&self.shape.records.to_le_bytes());
        h[OFF_STRIDE..OFF_STRIDE + 4].copy_from_slice(&(self.stride as u32).to_le_bytes());
        h[OFF_MAX_PAYLOAD..OFF_MAX_PAYLOAD + 4]
            .copy_from_slice(&(self.shape.max_payload as u32).to_le_bytes());
        // SAFETY: the file is ours alone (a temporary name nobody else opens) and the header
        // lies inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(h.as_ptr(), self.region.ptr(0, OFF_HEADER_CRC), h.len())
        };
        // Relaxed: the file is published by its rename, after an fdatasync.
        self.region
            .u32_at(OFF_HEADER_CRC)
            .store(crc32c::crc32c(&h), Ordering::Relaxed);
    }

    /// First offset of this segment.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Last offset of this segment.
    pub fn last(&self) -> u64 {
        self.base + self.shape.records - 1
    }

    /// Whether offset `o` lives in this segment.
    #[inline]
    pub fn contains(&self, o: u64) -> bool {
        o.wrapping_sub(self.base) < self.shape.records
    }

    #[inline]
    fn place(&self, o: u64) -> usize {
        assert!(
            self.contains(o),
            "offset {o} is not in segment {}",
            self.base
        );
        SEGMENT_HEADER + (o - self.base) as usize * self.stride
    }

    /// The payload area of record `o` (`max_payload` bytes), for a writer that owns `o` and
    /// fills it in place before [`LogSegment::commit`].
    #[inline]
    pub(crate) fn payload_ptr(&self, o: u64) -> *mut u8 {
        self.region
            .ptr(self.place(o) + RECORD_HEADER, self.shape.max_payload)
    }

    /// Seals record `o` whose `len` payload bytes were written through
    /// [`LogSegment::payload_ptr`]: writes its length, offset and crc. `len` must not exceed
    /// the maximum payload (asserted: a caller bug, not input).
    #[inline]
    pub(crate) fn commit(&self, o: u64, len: usize) {
        assert!(len <= self.shape.max_payload);
        let at = self.place(o);
        // Crossing into a new chunk: populate the one after it.
        let rel = at - SEGMENT_HEADER;
        if rel % POPULATE_CHUNK < self.stride {
            let next = SEGMENT_HEADER + (rel / POPULATE_CHUNK + 2) * POPULATE_CHUNK;
            populate_range(&self.region, next & !4095, POPULATE_CHUNK, true);
        }
        let rec = self.region.ptr(at, RECORD_HEADER + len);
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[4..].copy_from_slice(&o.to_le_bytes());
        // SAFETY: the record lies inside the mapping (`ptr` checked the bounds); the caller owns
        // offset `o` (its protocol gives each offset one writer), and readers read it only after
        // the caller publishes it, so nobody reads these bytes while we write them.
        let crc = unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), rec.add(REC_LEN), head.len());
            // Length, offset and payload are contiguous: one pass.
            crc32c::crc32c(std::slice::from_raw_parts(rec.add(REC_LEN), 12 + len))
        };
        // Relaxed: published with the record by the caller's Release.
        self.region
            .u32_at(at + REC_CRC)
            .store(crc, Ordering::Relaxed);
    }

    /// Undoes the seal of record `o` (zeroes its header: it reads as never written), for a
    /// writer that gives the offset up after sealing it.
    pub(crate) fn unseal(&self, o: u64) {
        let at = self.place(o);
        // Relaxed: the offset is still the caller's alone (not published).
        self.region
            .u64_at(at + REC_OFFSET)
            .store(0, Ordering::Relaxed);
        self.region.u32_at(at + REC_LEN).store(0, Ordering::Relaxed);
        self.region.u32_at(at + REC_CRC).store(0, Ordering::Relaxed);
    }

    /// Writes and seals record `o` (a copy of `payload`).
    #[cfg(test)]
    pub(crate) fn write(&self, o: u64, payload: &[u8]) {
        assert!(payload.len() <= self.shape.max_payload);
        // SAFETY: `payload_ptr` is valid for max_payload bytes, and we own offset `o` (see
        // `commit`); the source is a separate Rust slice.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), self.payload_ptr(o), payload.len())
        };
        self.commit(o, payload.len());
    }

    /// Reads record `o` checking its length and offset but not its checksum: for records
    /// published by a live writer's protocol (complete by construction) or already checked by
    /// [`LogSegment::read`] since they were written. `None` if the checks fail.
    #[inline]
    pub(crate) fn read_unchecked(&self, o: u64) -> Option<&[u8]> {
        let at = self.place(o);
        // Relaxed: as in `read`.
        let len = self.region.u32_at(at + REC_LEN).load(Ordering::Relaxed) as usize;
        let off = self.region.u64_at(at + REC_OFFSET).load(Ordering::Relaxed);
        if len > self.shape.max_payload || off != o {
            return None;
        }
        let p = self.region.ptr(at + RECORD_HEADER, len);
        // SAFETY: in bounds (checked by `ptr`); stable while borrowed (see `read`).
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// Reads and validates record `o`. The bytes returned are in the mapping: the caller's
    /// protocol must guarantee nobody writes offset `o` while they are borrowed (records are
    /// written once; a hostile writer is outside the threat model, see ARCHITECTURE.md).
    pub(crate) fn read(&self, o: u64) -> Record<'_> {
        let at = self.place(o);
        // Relaxed: the caller's protocol ordered the record's publication before this read
        // (Acquire); the checks below catch anything torn.
        let crc = self.region.u32_at(at + REC_CRC).load(Ordering::Relaxed);
        let len = self.region.u32_at(at + REC_LEN).load(Ordering::Relaxed);
        let off = self.region.u64_at(at + REC_OFFSET).load(Ordering::Relaxed);
        if crc == 0 && len == 0 && off == 0 {
            return Record::Empty;
        }
        if len as usize > self.shape.max_payload {
            return Record::Corrupt(format!("offset {o}: length {len} exceeds the maximum"));
        }
        if off != o {
            return Record::Corrupt(format!("offset {o}: record says offset {off}"));
        }
        let rec = self.region.ptr(at, RECORD_HEADER + len as usize);
        // SAFETY: in bounds (checked by `ptr`); stable while borrowed (see above).
        let (head, payload) = unsafe {
            (
                std::slice::from_raw_parts(rec.add(REC_LEN), 12),
                std::slice::from_raw_parts(rec.add(RECORD_HEADER), len as usize),
            )
        };
        if crc32c::crc32c_append(crc32c::crc32c(head), payload) != crc {
            return Record::Corrupt(format!("offset {o}: checksum mismatch"));
        }
        Record::Valid(payload)
    }

    /// Makes sure every record up to offset `o` that was written before the call is on disk,
    /// sharing syncs with other writers (group commit).
    ///
    /// A sync writes back the dirty pages from the first record to the end of record `o`
    /// (`msync(MS_SYNC)` of that range: an `fdatasync` limited to it, so pages mapped writable
    /// ahead of the writers are not written while still empty). Syncs of one segment are
    /// serialised by a lock in its header, and each is numbered when it begins. A writer reads
    /// the number begun after writing: a sync with a higher number began after its writes, and
    /// if it reached at least as far, ours is not needed.
    pub(crate) fn sync_covering(&self, o: u64) -> std::io::Result<()> {
        let end = (self.place(o) + self.stride).next_multiple_of(4096);
        let begun = self.region.u64_at(OFF_SYNCS_BEGUN);
        let done = self.region.u64_at(OFF_SYNCS_DONE);
        let done_end = self.region.u64_at(OFF_SYNCED_END);
        // SeqCst: ordered after our record writes, and in one order with the syncer's SeqCst
        // store of the next number: a sync numbered above `mine` stored its number after this
        // load, so it began after our writes.
        // The fence orders our (non-atomic) record writes before the load.
        std::sync::atomic::fence(Ordering::SeqCst);
        let mine = begun.load(Ordering::SeqCst);
        let me = ProcessId::current().pack();
        let lock = self.region.u64_at(OFF_SYNC_LOCK);
        crate::sync::lock::lock(lock, me, None);
        // SeqCst: `done` and `done_end` are stored after the sync completed, under the lock.
        if done.load(Ordering::SeqCst) > mine && done_end.load(Ordering::SeqCst) >= end as u64 {
            crate::sync::lock::unlock(lock);
            return Ok(());
        }
        let n = begun.load(Ordering::SeqCst) + 1;
        begun.store(n, Ordering::SeqCst);
        // SAFETY: the range lies inside our mapping (`place` checked `o`; `end` is rounded up
        // to a page, and the file length is a whole number of pages past it or its end).
        let res = unsafe {
            rustix::mm::msync(
                self.region.ptr(0, end.min(self.region.len())).cast(),
                end.min(self.region.len()),
                rustix::mm::MsyncFlags::SYNC,
            )
        };
        if res.is_ok() {
            done_end.store(end as u64, Ordering::SeqCst);
            done.store(n, Ordering::SeqCst);
        }
        crate::sync::lock::unlock(lock);
        res.map_err(Into::into)
    }

    /// Test hook: flips bytes inside record `o`'s payload, as a torn write would leave it.
    #[cfg(test)]
    pub(crate) fn corrupt_for_test(&self, o: u64, at: usize) {
        let p = self.payload_ptr(o);
        // SAFETY: inside the payload area; tests own the log.
        unsafe { *p.add(at % self.shape.max_payload) ^= 0x5a };
    }

    /// Test hook: copies record `from` over record `to`.
    #[cfg(test)]
    pub(crate) fn copy_record_for_test(&self, from: u64, to: u64) {
        let (a, b) = (self.place(from), self.place(to));
        let src = self.region.ptr(a, self.stride);
        let dst = self.region.ptr(b, self.stride);
        // SAFETY: both records are inside the mapping and distinct (different offsets).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, self.stride) };
    }
}
