//! One segment file of a log: its header, and records at computed places.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use memmap2::MmapOptions;

use super::crc::record_crc;
use super::layout::*;
use super::LogShape;
use crate::error::OpenError;
use crate::shm::Region;
use crate::sync::ProcessId;

/// How long a writer waits for the sync lock before its sync fails: far longer than a sync.
const SYNC_HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

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

/// A segment file mapped in this process, whatever its name is now: a reused file keeps its
/// mapping (see [`super::Log::remove_below`]).
pub(super) struct SegmentFile {
    /// The log's directory (synced when a name of the file must be made durable).
    dir: std::path::PathBuf,
    shape: LogShape,
    stride: usize,
    region: Region,
    file: File,
    /// Device and inode: which file this is, whatever its name.
    id: (u64, u64),
}

impl SegmentFile {
    /// Whether the file still has a name (a deleted file's mapping holds its disk space).
    pub(super) fn linked(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() > 0)
    }
}

/// A mapped segment file, under the name of the segment it holds now.
pub struct LogSegment {
    /// The first offset its name says it holds (a reused file's header names the base it was
    /// created for).
    base: u64,
    f: Arc<SegmentFile>,
}

/// The owner (packed process id) of a temporary segment file name, if `name` is one.
pub(super) fn tmp_owner(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(".tmp-")?;
    let (owner, _) = rest.split_once('-')?;
    u64::from_str_radix(owner, 16).ok()
}

/// Maps the pages of `len` bytes of `region` from `at` now (clamped to the region; `at`
/// page-aligned), writable (and dirty) for a writer so that its stores do not fault one page at
/// a time, readable for a reader. Best effort: an old kernel just faults later.
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

/// A chunk of a segment file its writer is about to reach: populating it (writable) spares the
/// writer a page fault every page. Holds the file mapped until done.
pub(crate) struct Pretouch {
    f: Arc<SegmentFile>,
    at: usize,
}

impl Pretouch {
    /// Populates the chunk (best effort, see `populate_range`).
    pub(crate) fn run(self) {
        populate_range(&self.f.region, self.at, POPULATE_CHUNK, true);
    }
}

impl std::fmt::Debug for Pretouch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretouch").field("at", &self.at).finish()
    }
}

/// Bytes a writer populates at a time, one chunk ahead of where it writes (on its own thread:
/// the kernel zeroes them shortly before the writer stores into them, so its stores find the
/// lines in cache; or on its helper's, see `log::Ahead`, to overlap that work).
const POPULATE_CHUNK: usize = 256 << 10;

/// Prefetches the line at `p` for writing (`prefetchw`, where the CPU has it: the line comes
/// exclusive, so the writer's stores do not wait for other cores to let go of it), else for
/// reading.
#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetchw(p: *const u8) {
    use std::sync::atomic::AtomicU8;
    // 0: not known yet, 1: no, 2: yes.
    static HAS: AtomicU8 = AtomicU8::new(0);
    // Relaxed: a cached fact about the CPU; racing first calls compute the same value.
    let has = match HAS.load(Ordering::Relaxed) {
        0 => {
            // Leaf 0x8000_0001 exists on every x86_64 CPU; its ECX bit 8 is PREFETCHW.
            let yes = std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        v => v == 2,
    };
    if has {
        // SAFETY: a prefetch is a hint: it neither reads nor writes memory as far as the
        // program is concerned (any address is allowed, none faults), and the CPU has the
        // instruction (checked above).
        unsafe {
            std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
        }
    } else {
        // SAFETY: as above; SSE is part of x86_64.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) }
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: how many of this thread's next syncs fail with EIO, as a failing disk makes
    /// them.
    pub(crate) static FAIL_SYNCS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this sync is to fail (tests only; always false otherwise).
#[inline]
fn fail_sync_for_test() -> bool {
    #[cfg(test)]
    {
        FAIL_SYNCS.with(|n| n.replace(n.get().saturating_sub(1)) > 0)
    }
    #[cfg(not(test))]
    false
}

/// How far ahead of the record it seals a writer prefetches one (at least 4 records ahead), and
/// the most of a record it prefetches.
const PREFETCH_BYTES: usize = 2048;

impl LogSegment {
    /// Opens and validates `path`; `Ok(None)` if there is no such file. A file mapped already
    /// (one of `spares`, under an earlier name) is taken from there, mapping and all.
    pub(super) fn open(
        path: &Path,
        base: u64,
        shape: LogShape,
        write: bool,
        spares: &mut Vec<Arc<SegmentFile>>,
    ) -> Result<Option<LogSegment>, OpenError> {
        let what = path.display().to_string();
        let Some((file, meta)) = crate::shm::open_regular(path)? else {
            return Ok(None);
        };
        let id = (meta.dev(), meta.ino());
        // The same file: a spare's open file keeps its inode number from being reused.
        if let Some(i) = spares.iter().position(|f| f.id == id && f.shape == shape) {
            return Ok(Some(LogSegment {
                base,
                f: spares.swap_remove(i),
            }));
        }
        let len = meta.len();
        let region = match crate::shm::map_file(&file, len, path)? {
            Some(r) if len >= SEGMENT_HEADER as u64 => r,
            _ => {
                return Err(OpenError::Corrupt(format!(
                    "{what}: {len} bytes is shorter than a segment header"
                )))
            }
        };
        let seg = LogSegment {
            base,
            f: Arc::new(SegmentFile {
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                shape,
                stride: shape.stride(),
                region,
                file,
                id,
            }),
        };
        seg.validate(&what, len)?;
        // The first chunks only (a whole default file, about 1 MiB): a writer populates the
        // rest one chunk ahead as it goes, and a file of a huge shape must not take an open
        // minutes of page faults.
        populate_range(&seg.f.region, 0, SEGMENT_HEADER + 8 * POPULATE_CHUNK, write);
        Ok(Some(seg))
    }

    /// Maps every page of the file now, readable (best effort): for a reader about to read a
    /// whole segment, one call instead of a page fault every few pages.
    pub(crate) fn populate_read(&self) {
        populate_range(&self.f.region, 0, self.f.region.len(), false);
    }

    /// The mapped file, for reuse under another name.
    pub(super) fn file(&self) -> &Arc<SegmentFile> {
        &self.f
    }

    fn header_bytes(&self) -> [u8; OFF_HEADER_CRC] {
        let mut h = [0u8; OFF_HEADER_CRC];
        // SAFETY: the header lies inside the mapping (its length was checked against
        // SEGMENT_HEADER); it is written once before the file gets its name and never after, so
        // copying it out races with no writer of the protocol (a hostile writer only changes
        // the bytes we then validate).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.f.region.ptr(0, OFF_HEADER_CRC),
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
        let stored_crc = self.f.region.u32_at(OFF_HEADER_CRC).load(Ordering::Relaxed);
        if crc32c::crc32c(&h) != stored_crc {
            return Err(OpenError::Corrupt(format!(
                "{what}: header checksum mismatch"
            )));
        }
        if u32_at(OFF_HEADER_LEN) as usize != SEGMENT_HEADER {
            return Err(OpenError::Corrupt(format!(
                "{what}: header length {}",
                u32_at(OFF_HEADER_LEN)
            )));
        }
        let found = LogShape {
            max_payload: u32_at(OFF_MAX_PAYLOAD) as usize,
            records: u64_at(OFF_RECORDS),
        };
        if found != self.f.shape || u32_at(OFF_STRIDE) as usize != self.f.stride {
            return Err(OpenError::TypeMismatch {
                expected: format!("log of {:?}", self.f.shape),
                found: format!("log of {found:?}"),
            });
        }
        // The base the file was created for: a reused file keeps it (its name says where it
        // is now), but it was a segment boundary of this shape.
        if u64_at(OFF_BASE) % self.f.shape.records != 0 {
            return Err(OpenError::Corrupt(format!(
                "{what}: header base {} is not a segment boundary",
                u64_at(OFF_BASE)
            )));
        }
        if len != self.f.shape.file_len() as u64 {
            return Err(OpenError::Corrupt(format!(
                "{what}: {len} bytes, the header's shape needs {}",
                self.f.shape.file_len()
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
        let fd = crate::shm::create_exclusive(&tmp)?;
        let len = shape.file_len();
        let made = (|| -> Result<LogSegment, OpenError> {
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len as u64)
                .map_err(|e| OpenError::from_io(e.into(), &what))?;
            let file = File::from(fd);
            let meta = file.metadata().map_err(|e| OpenError::from_io(e, &what))?;
            let map = MmapOptions::new()
                .len(len)
                .map_raw(&file)
                .map_err(|e| OpenError::from_io(e, &what))?;
            let seg = LogSegment {
                base,
                f: Arc::new(SegmentFile {
                    dir: dir.to_path_buf(),
                    shape,
                    stride: shape.stride(),
                    region: Region::from_map(map),
                    file,
                    id: (meta.dev(), meta.ino()),
                }),
            };
            seg.write_header();
            rustix::fs::fdatasync(&seg.f.file).map_err(|e| OpenError::from_io(e.into(), &what))?;
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
                if super::sync_dir(dir).is_ok() {
                    // Relaxed: a hint for syncers (see `sync_name`); a stale value costs a sync.
                    seg.f
                        .region
                        .u64_at(OFF_NAMED)
                        .store(base + 1, Ordering::Relaxed);
                }
                // After the header's sync: a sync would clean the pages and protect them again.
                // The first chunks now; the writer populates the rest as it goes.
                populate_range(&seg.f.region, 0, SEGMENT_HEADER + 2 * POPULATE_CHUNK, true);
                Ok(seg)
            }
            Err(rustix::io::Errno::EXIST) => {
                let _ = std::fs::remove_file(&tmp);
                LogSegment::open(path, base, shape, true, &mut Vec::new())?
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
        h[OFF_RECORDS..OFF_RECORDS + 8].copy_from_slice(&self.f.shape.records.to_le_bytes());
        h[OFF_STRIDE..OFF_STRIDE + 4].copy_from_slice(&(self.f.stride as u32).to_le_bytes());
        h[OFF_MAX_PAYLOAD..OFF_MAX_PAYLOAD + 4]
            .copy_from_slice(&(self.f.shape.max_payload as u32).to_le_bytes());
        // SAFETY: the file is ours alone (a temporary name nobody else opens) and the header
        // lies inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(h.as_ptr(), self.f.region.ptr(0, OFF_HEADER_CRC), h.len())
        };
        // Relaxed: the file is published by its rename, after an fdatasync.
        self.f
            .region
            .u32_at(OFF_HEADER_CRC)
            .store(crc32c::crc32c(&h), Ordering::Relaxed);
    }

    /// First offset of this segment.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Last offset of this segment.
    pub fn last(&self) -> u64 {
        self.base + self.f.shape.records - 1
    }

    /// Whether offset `o` lives in this segment.
    #[inline]
    pub fn contains(&self, o: u64) -> bool {
        o.wrapping_sub(self.base) < self.f.shape.records
    }

    #[inline]
    fn place(&self, o: u64) -> usize {
        assert!(
            self.contains(o),
            "offset {o} is not in segment {}",
            self.base
        );
        SEGMENT_HEADER + (o - self.base) as usize * self.f.stride
    }

    /// The payload area of record `o`, valid for `len` bytes, for a writer that owns `o` and
    /// fills it in place before [`LogSegment::commit`]. `len` past the log's maximum payload is
    /// a caller bug (panics, like any out-of-bounds pointer asked of a region).
    #[inline]
    pub(crate) fn payload_ptr(&self, o: u64, len: usize) -> *mut u8 {
        assert!(
            len <= self.f.shape.max_payload,
            "payload area of {len} bytes"
        );
        self.f.region.ptr(self.place(o) + RECORD_HEADER, len)
    }

    /// Seals record `o` whose `len` payload bytes were written through
    /// [`LogSegment::payload_ptr`]: writes its length, offset and crc. `len` must not exceed
    /// the maximum payload (asserted: a caller bug, not input). A record that starts a new
    /// chunk of the file then populates the chunk after the next.
    #[inline]
    pub(crate) fn commit(&self, o: u64, len: usize) {
        if let Some(p) = self.seal(o, len) {
            p.run();
        }
    }

    /// As [`LogSegment::commit`], but a chunk to populate is handed back to the caller (to
    /// populate on another thread, see `log::Ahead`) instead of populated here.
    #[inline]
    pub(crate) fn seal(&self, o: u64, len: usize) -> Option<Pretouch> {
        assert!(len <= self.f.shape.max_payload);
        let at = self.place(o);
        // Crossing into a new chunk: the one after it is due.
        let rel = at - SEGMENT_HEADER;
        let due = (rel % POPULATE_CHUNK < self.f.stride).then(|| Pretouch {
            f: self.f.clone(),
            at: (SEGMENT_HEADER + (rel / POPULATE_CHUNK + 2) * POPULATE_CHUNK) & !4095,
        });
        self.prefetch_write(o + (PREFETCH_BYTES / self.f.stride).max(4) as u64);
        let rec = self.f.region.ptr(at, RECORD_HEADER + len);
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[4..].copy_from_slice(&o.to_le_bytes());
        // SAFETY: the record lies inside the mapping (`ptr` checked the bounds); the caller owns
        // offset `o` (its protocol gives each offset one writer), and readers read it only after
        // the caller publishes it, so nobody reads these bytes while we write them.
        let crc = unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), rec.add(REC_LEN), head.len());
            // Length, offset and payload are contiguous: one pass.
            record_crc(std::slice::from_raw_parts(rec.add(REC_LEN), 12 + len))
        };
        // Release: the seal publishes the record to a reader that Acquires it through
        // `sealed` (durable topics); queues publish it again by their own Release.
        self.f
            .region
            .u32_at(at + REC_CRC)
            .store(crc, Ordering::Release);
        due
    }

    /// Reads record `o` if it carries a seal (a non-zero crc, loaded with Acquire: a seal
    /// stored by [`LogSegment::commit`] makes the record's bytes visible): `None` if it does
    /// not. With `check`, the record's checksum is checked, else only its length and offset
    /// (for a record the caller saw sealed by a live writer just now). Only for logs whose
    /// writers keep every unpublished record's crc at zero until it is complete (durable
    /// topics, see `durable`); a record whose crc happens to be 0 reads as unsealed, and its
    /// reader finds it by the writers' own publication instead.
    #[inline(always)]
    pub(crate) fn read_sealed(&self, o: u64, check: bool) -> Option<Record<'_>> {
        let at = self.place(o);
        let crc = self.f.region.u32_at(at + REC_CRC).load(Ordering::Acquire);
        if crc == 0 {
            return None;
        }
        // Relaxed: ordered after the seal by its Acquire.
        let len = self.f.region.u32_at(at + REC_LEN).load(Ordering::Relaxed) as usize;
        let off = self
            .f
            .region
            .u64_at(at + REC_OFFSET)
            .load(Ordering::Relaxed);
        if len > self.f.shape.max_payload {
            return Some(Record::Corrupt(format!(
                "offset {o}: length {len} exceeds the maximum"
            )));
        }
        if off != o {
            return Some(Record::Corrupt(format!("offset {o}: record says offset {off}")));
        }
        let rec = self.f.region.ptr(at, RECORD_HEADER + len);
        // SAFETY: in bounds (checked by `ptr`); a sealed record is never written again while
        // its readers' protocol can read it (see `read`).
        let (checked, payload) = unsafe {
            (
                std::slice::from_raw_parts(rec.add(REC_LEN), 12 + len),
                std::slice::from_raw_parts(rec.add(RECORD_HEADER), len),
            )
        };
        if check && record_crc(checked) != crc {
            return Some(Record::Corrupt(format!("offset {o}: checksum mismatch")));
        }
        Some(Record::Valid(payload))
    }

    /// Whether record `o` carries a seal (a non-zero crc), as [`LogSegment::read_sealed`]
    /// judges it.
    #[inline]
    pub(crate) fn sealed(&self, o: u64) -> bool {
        self.f
            .region
            .u32_at(self.place(o) + REC_CRC)
            .load(Ordering::Acquire)
            != 0
    }

    /// Asks the CPU to fetch record `o`'s lines (up to [`PREFETCH_BYTES`]) for writing, if `o`
    /// is in this segment: a reused file's lines were last read by another core, and the
    /// checksum reads the whole record back.
    #[inline]
    fn prefetch_write(&self, o: u64) {
        #[cfg(target_arch = "x86_64")]
        if self.contains(o) {
            let at = self.place(o);
            let lines = self.f.stride.min(PREFETCH_BYTES).div_ceil(64);
            for i in 0..lines {
                if at + 64 * i < self.f.region.len() {
                    prefetchw(self.f.region.ptr(at + 64 * i, 1));
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = o;
    }

    /// Undoes the seal of record `o` (zeroes its header: it reads as never written), for a
    /// writer that gives the offset up after sealing it.
    pub(crate) fn unseal(&self, o: u64) {
        let at = self.place(o);
        // Relaxed: the offset is still the caller's alone (not published).
        self.f
            .region
            .u64_at(at + REC_OFFSET)
            .store(0, Ordering::Relaxed);
        self.f
            .region
            .u32_at(at + REC_LEN)
            .store(0, Ordering::Relaxed);
        self.f
            .region
            .u32_at(at + REC_CRC)
            .store(0, Ordering::Relaxed);
    }

    /// Writes and seals record `o` (a copy of `payload`).
    #[cfg(test)]
    pub(crate) fn write(&self, o: u64, payload: &[u8]) {
        assert!(payload.len() <= self.f.shape.max_payload);
        // SAFETY: `payload_ptr` is valid for max_payload bytes, and we own offset `o` (see
        // `commit`); the source is a separate Rust slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.payload_ptr(o, payload.len()),
                payload.len(),
            )
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
        let len = self.f.region.u32_at(at + REC_LEN).load(Ordering::Relaxed) as usize;
        let off = self
            .f
            .region
            .u64_at(at + REC_OFFSET)
            .load(Ordering::Relaxed);
        if len > self.f.shape.max_payload || off != o {
            return None;
        }
        let p = self.f.region.ptr(at + RECORD_HEADER, len);
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
        let crc = self.f.region.u32_at(at + REC_CRC).load(Ordering::Relaxed);
        let len = self.f.region.u32_at(at + REC_LEN).load(Ordering::Relaxed);
        let off = self
            .f
            .region
            .u64_at(at + REC_OFFSET)
            .load(Ordering::Relaxed);
        if crc == 0 && len == 0 && off == 0 {
            return Record::Empty;
        }
        if off != o && off < o && (o - off) % self.f.shape.records == 0 {
            // Written when the file held an earlier segment (files are reused, see
            // `Log::remove_below`): never written at this offset. A record torn while it was
            // being overwritten reads so too, unless its new offset reached the file.
            return Record::Empty;
        }
        if len as usize > self.f.shape.max_payload {
            return Record::Corrupt(format!("offset {o}: length {len} exceeds the maximum"));
        }
        if off != o {
            return Record::Corrupt(format!("offset {o}: record says offset {off}"));
        }
        let rec = self.f.region.ptr(at, RECORD_HEADER + len as usize);
        // SAFETY: in bounds (checked by `ptr`); stable while borrowed (see above). Length,
        // offset and payload are contiguous: checked in one pass, as `commit` sealed them.
        let (checked, payload) = unsafe {
            (
                std::slice::from_raw_parts(rec.add(REC_LEN), 12 + len as usize),
                std::slice::from_raw_parts(rec.add(RECORD_HEADER), len as usize),
            )
        };
        if record_crc(checked) != crc {
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
        self.sync_name()?;
        let end = (self.place(o) + self.f.stride).next_multiple_of(4096);
        let begun = self.f.region.u64_at(OFF_SYNCS_BEGUN);
        let done = self.f.region.u64_at(OFF_SYNCS_DONE);
        let done_end = self.f.region.u64_at(OFF_SYNCED_END);
        // SeqCst: ordered after our record writes, and in one order with the syncer's SeqCst
        // store of the next number: a sync numbered above `mine` stored its number after this
        // load, so it began after our writes.
        // The fence orders our (non-atomic) record writes before the load.
        std::sync::atomic::fence(Ordering::SeqCst);
        let mine = begun.load(Ordering::SeqCst);
        let me = ProcessId::current().pack();
        let lock = self.f.region.u64_at(OFF_SYNC_LOCK);
        let bell = self.f.region.u32_at(OFF_SYNC_BELL);
        // Waiters sleep: a sync takes milliseconds. A holder that keeps the lock for far longer
        // than any sync is stopped (or the word is corrupt): the send fails rather than hang.
        if !crate::sync::lock::lock_sleeping(lock, bell, me, SYNC_HOLD_LIMIT) {
            return Err(std::io::Error::other(
                "the log's sync lock stayed held (a stopped process, or a corrupt lock word)",
            ));
        }
        // SeqCst: `done` and `done_end` are stored after the sync completed, under the lock.
        if done.load(Ordering::SeqCst) > mine && done_end.load(Ordering::SeqCst) >= end as u64 {
            crate::sync::lock::unlock_waking(lock, bell);
            return Ok(());
        }
        let n = begun.load(Ordering::SeqCst) + 1;
        begun.store(n, Ordering::SeqCst);
        let res = if fail_sync_for_test() {
            Err(rustix::io::Errno::IO)
        } else {
            // SAFETY: the range lies inside our mapping (`place` checked `o`; `end` is rounded
            // up to a page, and the file length is a whole number of pages past it or its end).
            unsafe {
                rustix::mm::msync(
                    self.f.region.ptr(0, end.min(self.f.region.len())).cast(),
                    end.min(self.f.region.len()),
                    rustix::mm::MsyncFlags::SYNC,
                )
            }
        };
        if res.is_ok() {
            done_end.store(end as u64, Ordering::SeqCst);
            done.store(n, Ordering::SeqCst);
        }
        crate::sync::lock::unlock_waking(lock, bell);
        res.map_err(Into::into)
    }

    /// Frees the sync lock whatever holds it (see [`super::Log::clear_sync_locks`]).
    pub(crate) fn clear_sync_lock(&self) {
        crate::sync::lock::unlock(self.f.region.u64_at(OFF_SYNC_LOCK));
    }

    /// Makes this file's name durable (a directory sync) unless the header says a syncer did
    /// already. A reused file was renamed without a sync (see `Log::remove_below`): its word
    /// names the base of its earlier name until a syncer of the new one syncs the directory.
    /// The directory is synced after the rename (we opened the file by its new name), so the
    /// rename is on disk before any record of the new name is.
    fn sync_name(&self) -> std::io::Result<()> {
        let named = self.f.region.u64_at(OFF_NAMED);
        // Relaxed: a hint; a syncer that reads a stale value syncs the directory once more.
        if named.load(Ordering::Relaxed) != self.base + 1 {
            super::sync_dir(&self.f.dir)?;
            named.store(self.base + 1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Test hook: flips bytes inside record `o`'s payload, as a torn write would leave it.
    #[cfg(test)]
    pub(crate) fn corrupt_for_test(&self, o: u64, at: usize) {
        let p = self.payload_ptr(o, self.f.shape.max_payload);
        // SAFETY: inside the payload area; tests own the log.
        unsafe { *p.add(at % self.f.shape.max_payload) ^= 0x5a };
    }

    /// Test hook: copies record `from` over record `to`.
    #[cfg(test)]
    pub(crate) fn copy_record_for_test(&self, from: u64, to: u64) {
        let (a, b) = (self.place(from), self.place(to));
        let src = self.f.region.ptr(a, self.f.stride);
        let dst = self.f.region.ptr(b, self.f.stride);
        // SAFETY: both records are inside the mapping and distinct (different offsets).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, self.f.stride) };
    }
}
