//! An append-only log of records with dense 64-bit offsets, stored in memory-mapped segment files.
//!
//! The log is the durable storage of durable queues, and is built to be reused (durable topics,
//! replay from an offset). It knows nothing about delivery: it stores record `o` where offset `o`
//! belongs, validates it when read, syncs it to disk when asked, and reuses or deletes whole
//! segment files below an offset.
//!
//! # Files
//!
//! A log is a directory (mode 0700) of segment files named by their first offset,
//! `<base as 20 decimal digits>.seg` (so names sort by offset). Each file holds a fixed number of
//! records of a fixed stride, so the place of offset `o` is computed, not searched:
//! `segment base = o - o % records`, byte `SEGMENT_HEADER + (o - base) × stride`. Records are
//! variable-length up to the log's maximum payload; a short record leaves the rest of its stride
//! unwritten (sparse pages are never dirtied, so the disk sees only what was written, rounded to
//! pages). The byte layout of a segment file is in [`layout`].
//!
//! # Writers and readers
//!
//! Each offset is written once, by the one writer its caller's protocol gave it to (for queues:
//! the producer that reserved the position), and is read only after that protocol published it.
//! That protocol lives in the crate (queues today), so the record-level API is crate-private, and
//! so is maintenance (reusing or deleting files below an offset: only the protocol knows which
//! offsets no reader holds); the public part opens and inspects a log, and documents its format.
//! A record is valid when its crc matches; an all-zero record was never written, and so is a
//! record whose offset is a whole number of segments below (left by the file's earlier use, see
//! [`Log::reuse_below`]); anything else is torn or corrupt and is never returned as data.
//!
//! # Creating segments
//!
//! A segment file is created whole under a temporary name, then linked into place with
//! `renameat2(RENAME_NOREPLACE)`: other processes see either no file or a complete header, and of
//! two processes creating the same segment one wins and the other opens the winner's file.
//! Nothing existing is ever overwritten: a file with a bad header is an error at open.

mod ahead;
mod crc;
mod flush;
pub mod layout;
mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub(crate) use ahead::Ahead;
pub(crate) use flush::Flusher;
pub(crate) use segment::Pretouch;
use segment::SegmentFile;
pub use segment::{LogSegment, Record};

use crate::error::OpenError;

pub use layout::{RECORD_ALIGN, RECORD_HEADER, SEGMENT_HEADER};

/// Files past the segment of the oldest offset still needed that
/// [`Log::remove_below`] keeps for reuse.
pub const SPARE_SEGMENTS: usize = 2;
/// Largest payload a log record may carry.
pub const MAX_RECORD: usize = 64 << 20;

/// When writes to a durable log reach the disk.
///
/// Whatever the policy, a record is in the operating system's page cache once written, so it
/// survives the exit or SIGKILL of every process. The policy decides what a crash of the whole
/// machine (or a power loss) can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// A send returns once its record is on disk (`fdatasync`). Nothing a send returned `Ok`
    /// for is lost. Concurrent senders share syncs (group commit).
    ///
    /// When the disk fails a sync, the send returns [`crate::SendError::Storage`] and the
    /// message is never delivered in this boot: its record is unsealed (it reads as never
    /// written) and that is synced in turn. After a machine crash it is not delivered either,
    /// unless the disk also failed the second sync (a dying disk): then the sealed record may
    /// have reached the disk without its unseal, and a rebuild delivers it. So treat `Storage`
    /// as "not sent, unless the disk is failing", as with any at-least-once sender.
    ///
    /// Durable topics differ: their live subscribers read a record as soon as it is sealed,
    /// before its sync, so a failed sync cannot take the message back. The send still returns
    /// `Storage`, but the message stays published (it may be delivered, and a machine crash may
    /// lose it); see `ringbus::durable`.
    Always,
    /// Records are synced at this interval by a background thread of each sending process, and
    /// when a producer is dropped: a machine crash loses at most the sends of the last interval
    /// (plus the time one sync takes).
    Batch(Duration),
    /// Never synced by ringbus: the kernel writes dirty pages back on its own schedule (about
    /// 30 s by default on Linux); a machine crash can lose anything not yet written back.
    Never,
}

/// The shape of a log: fixed when its first segment is created, checked on every open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogShape {
    /// Largest payload of a record.
    pub max_payload: usize,
    /// Records per segment file.
    pub records: u64,
}

impl LogShape {
    /// Bytes from one record to the next: header plus maximum payload, rounded up to 16.
    pub fn stride(&self) -> usize {
        (RECORD_HEADER + self.max_payload).next_multiple_of(RECORD_ALIGN)
    }

    /// Length of a segment file.
    pub fn file_len(&self) -> usize {
        SEGMENT_HEADER + self.records as usize * self.stride()
    }

    fn check(&self) -> Result<(), OpenError> {
        if self.max_payload == 0 || self.max_payload > MAX_RECORD {
            return Err(OpenError::InvalidConfig(format!(
                "log record payload {} is not in 1..={MAX_RECORD}",
                self.max_payload
            )));
        }
        if self.records == 0
            || self.records > 1 << 24
            || (self.records as usize)
                .checked_mul(self.stride())
                .map_or(true, |b| b > 1 << 40)
        {
            return Err(OpenError::InvalidConfig(format!(
                "{} records of {} bytes per segment file",
                self.records,
                self.stride()
            )));
        }
        Ok(())
    }

    /// The base offset of the segment holding offset `o`.
    pub fn base_of(&self, o: u64) -> u64 {
        o - o % self.records
    }
}

/// An open log: a directory of segment files, mapped on demand and shared by this process's
/// handles.
pub struct Log {
    dir: PathBuf,
    shape: LogShape,
    maps: Mutex<Maps>,
}

/// This process's mappings of a log's files.
#[derive(Default)]
struct Maps {
    /// By the segment each file holds now.
    by_base: BTreeMap<u64, Arc<LogSegment>>,
    /// Files left behind (below the oldest offset needed) that may come back under another
    /// name: their mappings are reused then. At most [`SPARE_SEGMENTS`] + 1, and only files
    /// that still have a name (a deleted file's mapping would hold its disk space).
    spares: Vec<Arc<SegmentFile>>,
}

impl Maps {
    /// Forgets the segment at `base`, keeping its file as a spare.
    fn retire(&mut self, base: u64) {
        if let Some(seg) = self.by_base.remove(&base) {
            if self.spares.len() > SPARE_SEGMENTS {
                self.spares.remove(0);
            }
            self.spares.push(seg.file().clone());
        }
    }

    /// Drops the spares whose files were deleted.
    fn prune(&mut self) {
        self.spares.retain(|f| f.linked());
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("shape", &self.shape)
            .finish()
    }
}

fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Log {
    /// Opens the log in `dir` (created 0700 if missing; refused unless this process's effective
    /// uid owns it and nobody else may write it), validating the header of every segment
    /// file in it: a file of garbage, of another version or of another shape is an error, and
    /// nothing is modified. Temporary files left by a creator that died are removed.
    pub fn open(dir: impl Into<PathBuf>, shape: LogShape) -> Result<Log, OpenError> {
        shape.check()?;
        let dir = dir.into();
        // Owned by us and writable by nobody else, like a root (see `shm::Root`); a new
        // directory's entry is synced.
        crate::shm::private_dir(&dir, "log directory")?;
        let log = Log::open_on_demand(dir, shape)?;
        for base in log.bases()? {
            // Validates the header (and maps the file; kept for the first reads). A file that
            // is gone by now was renamed or deleted by a live process rotating the log (its
            // records were all acknowledged): not an error.
            match log.segment(base, false) {
                Ok(_) | Err(OpenError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(log)
    }

    /// Opens the log in `dir` as [`Log::open`] does, but validates (and maps) each segment
    /// file only when it is first asked for: for logs of many files, most of which are never
    /// read by a given handle (a durable topic's retained history).
    pub(crate) fn open_on_demand(dir: impl Into<PathBuf>, shape: LogShape) -> Result<Log, OpenError> {
        shape.check()?;
        let dir = dir.into();
        // Owned by us and writable by nobody else, like a root (see `shm::Root`); a new
        // directory's entry is synced.
        crate::shm::private_dir(&dir, "log directory")?;
        Ok(Log {
            dir,
            shape,
            maps: Mutex::new(Maps::default()),
        })
    }

    /// The log's shape.
    pub fn shape(&self) -> LogShape {
        self.shape
    }

    /// Base offsets of the segment files on disk, in order. Temporary files of dead creators are
    /// removed; any other file is an error (the directory belongs to the log).
    pub fn bases(&self) -> Result<Vec<u64>, OpenError> {
        let what = self.dir.display().to_string();
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| OpenError::from_io(e, &what))? {
            let entry = entry.map_err(|e| OpenError::from_io(e, &what))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = parse_name(&name) {
                if base % self.shape.records != 0 {
                    // Written with another number of records per file.
                    return Err(OpenError::TypeMismatch {
                        expected: format!("log of {} records per file", self.shape.records),
                        found: format!("{what}/{name}, not a boundary of that"),
                    });
                }
                bases.push(base);
            } else if let Some(pid) = segment::tmp_owner(&name) {
                if !crate::sync::ProcessId::unpack(pid).is_alive() {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else {
                return Err(OpenError::Corrupt(format!(
                    "{what}/{name} is not a log segment file"
                )));
            }
        }
        bases.sort_unstable();
        Ok(bases)
    }

    fn map(&self) -> MutexGuard<'_, Maps> {
        // A poisoned map only means a panic elsewhere while it was held; it is still valid.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The segment holding offset `o`, mapped. With `create`, a missing segment is created;
    /// without, it is [`OpenError::NotFound`].
    pub(crate) fn segment(&self, o: u64, create: bool) -> Result<Arc<LogSegment>, OpenError> {
        let base = self.shape.base_of(o);
        let mut map = self.map();
        if let Some(s) = map.by_base.get(&base) {
            return Ok(s.clone());
        }
        let path = self.dir.join(file_name(base));
        let seg = match LogSegment::open(&path, base, self.shape, create, &mut map.spares)? {
            Some(s) => s,
            None if create => LogSegment::create(&self.dir, &path, base, self.shape)?,
            None => return Err(OpenError::NotFound(path.display().to_string())),
        };
        let seg = Arc::new(seg);
        map.by_base.insert(base, seg.clone());
        Ok(seg)
    }

    /// Returns the space of the segment files that hold only offsets below `o`, and forgets
    /// their mappings (handles that still hold one keep it mapped until they drop it). Returns
    /// how many files were reused or removed.
    ///
    /// Files are reused first (see [`Log::reuse_below`]); the rest are deleted, which takes
    /// milliseconds (the file system drops their cached pages).
    pub(crate) fn remove_below(&self, o: u64) -> usize {
        let (reused, _) = self.reuse_below(o);
        reused + self.delete_below(o)
    }

    /// Deletes the segment files that hold only offsets below `o`, reusing none: for logs
    /// whose readers read old records in place for as long as they like (durable topics),
    /// since a reused file is written over while a deleted one stays whole in every mapping
    /// of it until unmapped. Returns how many files were deleted.
    pub(crate) fn delete_below(&self, o: u64) -> usize {
        let Ok(bases) = self.bases() else {
            return 0;
        };
        let mut removed = 0;
        let mut map = self.map();
        for base in bases {
            if base.saturating_add(self.shape.records) > o {
                break;
            }
            map.retire(base);
            if std::fs::remove_file(self.dir.join(file_name(base))).is_ok() {
                removed += 1;
            }
        }
        map.prune();
        drop(map);
        if removed > 0 {
            let _ = sync_dir(&self.dir);
        }
        removed
    }

    /// Reuses segment files that hold only offsets below `o` as the next segments, while fewer
    /// than [`SPARE_SEGMENTS`] files lie past the segment holding `o`: each is renamed to the
    /// first segment missing past it. Returns how many files were reused and how many are
    /// left for [`Log::remove_below`]. A few system calls per file: fast enough for a consumer
    /// to call when the oldest offset it needs crosses a segment boundary.
    ///
    /// A reused file's records (of offsets a whole number of segments lower) read as never
    /// written, and its pages are in the page cache already (and mapped, in a process that
    /// mapped it before), so writers neither fault them in nor wait for the file system to
    /// allocate them. The rename is not synced here: a writer that syncs records syncs the
    /// directory first (see [`LogSegment`], header word 96).
    pub(crate) fn reuse_below(&self, o: u64) -> (usize, usize) {
        let Ok(mut bases) = self.bases() else {
            return (0, 0);
        };
        let records = self.shape.records;
        let current = self.shape.base_of(o);
        let mut ahead = bases.iter().filter(|&&b| b > current).count();
        let below: Vec<u64> = bases
            .iter()
            .copied()
            .filter(|&b| b.saturating_add(records) <= o)
            .collect();
        let (mut reused, left) = (0, below.len());
        let mut map = self.map();
        for base in below {
            map.retire(base);
            let from = self.dir.join(file_name(base));
            let mut to = current;
            // A writer may create a file at the name we chose: then the next missing one.
            while ahead < SPARE_SEGMENTS {
                to = to.saturating_add(records);
                while bases.contains(&to) {
                    to = to.saturating_add(records);
                }
                if to.checked_add(records).is_none() {
                    break;
                }
                match rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &from,
                    rustix::fs::CWD,
                    self.dir.join(file_name(to)),
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => {
                        reused += 1;
                        bases.push(to);
                        ahead += 1;
                        break;
                    }
                    Err(rustix::io::Errno::EXIST) => {
                        bases.push(to);
                        ahead += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        map.prune();
        drop(map);
        // Also forget mappings of segments another process already reused or deleted.
        self.forget_below(o);
        (reused, left - reused)
    }

    /// Forgets the mappings of segments below `o` in this process (files are untouched).
    pub(crate) fn forget_below(&self, o: u64) {
        let mut map = self.map();
        while let Some((&base, _)) = map.by_base.first_key_value() {
            if base.saturating_add(self.shape.records) > o {
                break;
            }
            map.retire(base);
        }
        map.prune();
    }

    /// Frees every segment's sync lock: for recovery after a restart, when the holders
    /// recorded are processes of an earlier boot (a process of this boot may have the same pid
    /// and start time). Only while no writer of this boot uses the log.
    pub(crate) fn clear_sync_locks(&self) -> Result<(), OpenError> {
        for base in self.bases()? {
            match self.segment(base, false) {
                Ok(seg) => seg.clear_sync_lock(),
                // Gone meanwhile: nothing to free.
                Err(OpenError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Test hook: the calling thread's next `n` log syncs fail with EIO.
#[cfg(test)]
pub(crate) fn segment_fail_syncs_for_test(n: u32) {
    segment::FAIL_SYNCS.with(|c| c.set(n));
}

/// Makes the directory's entries (created or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let d = std::fs::File::open(dir)?;
    rustix::fs::fsync(&d).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringbus-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const SHAPE: LogShape = LogShape {
        max_payload: 100,
        records: 8,
    };

    #[test]
    fn writes_read_back_and_rotate() {
        let dir = tmp("rw");
        let log = Log::open(&dir, SHAPE).unwrap();
        for o in 0..20u64 {
            let s = log.segment(o, true).unwrap();
            let msg = format!("record {o}");
            s.write(o, msg.as_bytes());
        }
        assert_eq!(log.bases().unwrap(), vec![0, 8, 16]);
        drop(log);
        let log = Log::open(&dir, SHAPE).unwrap();
        for o in 0..20u64 {
            let s = log.segment(o, false).unwrap();
            match s.read(o) {
                Record::Valid(bytes) => assert_eq!(bytes, format!("record {o}").as_bytes()),
                other => panic!("{o}: {other:?}"),
            }
        }
        assert!(matches!(
            log.segment(20, false).unwrap().read(20),
            Record::Empty
        ));
        // Segments 0 and 8 are done with: reused as the two segments past 16.
        assert_eq!(log.remove_below(17), 2);
        assert_eq!(log.bases().unwrap(), vec![16, 24, 32]);
        // Their records, of offsets a whole number of segments lower, read as never written;
        // the new ones are written over them.
        for o in 24..40u64 {
            let s = log.segment(o, true).unwrap();
            assert_eq!(s.read(o), Record::Empty, "{o}");
            assert_eq!(s.read_unchecked(o), None, "{o}");
            s.write(o, format!("again {o}").as_bytes());
        }
        drop(log);
        let log = Log::open(&dir, SHAPE).unwrap();
        for o in 16..40u64 {
            let want = if o < 20 {
                Record::Valid(format!("record {o}").into_bytes().leak())
            } else if o < 24 {
                Record::Empty
            } else {
                Record::Valid(format!("again {o}").into_bytes().leak())
            };
            assert_eq!(log.segment(o, false).unwrap().read(o), want, "{o}");
        }
        // With two files ahead already, a file done with is deleted.
        log.segment(40, true).unwrap();
        assert_eq!(log.remove_below(24), 1);
        assert_eq!(log.bases().unwrap(), vec![24, 32, 40]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_and_misplaced_records_are_refused() {
        let dir = tmp("torn");
        let log = Log::open(&dir, SHAPE).unwrap();
        let s = log.segment(0, true).unwrap();
        s.write(3, b"hello");
        s.corrupt_for_test(3, 1);
        assert!(matches!(s.read(3), Record::Corrupt(_)));
        s.write(4, b"world");
        // Offset 4's bytes read as offset 5 (copied to the wrong place) fail their offset check.
        s.copy_record_for_test(4, 5);
        assert!(matches!(s.read(5), Record::Corrupt(_)));
        assert!(matches!(s.read(4), Record::Valid(b"world")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_other_versions_and_other_files_are_refused_untouched() {
        let dir = tmp("garbage");
        let log = Log::open(&dir, SHAPE).unwrap();
        log.segment(0, true).unwrap().write(0, b"x");
        drop(log);
        let seg = dir.join(file_name(0));
        let good = std::fs::read(&seg).unwrap();

        let mut other = good.clone();
        other[8] = 99; // version
        std::fs::write(&seg, &other).unwrap();
        assert!(matches!(
            Log::open(&dir, SHAPE),
            Err(OpenError::VersionMismatch { found: 99, .. })
        ));
        assert_eq!(std::fs::read(&seg).unwrap(), other);

        let garbage: Vec<u8> = (0..good.len()).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&seg, &garbage).unwrap();
        assert!(matches!(Log::open(&dir, SHAPE), Err(OpenError::Corrupt(_))));
        assert_eq!(std::fs::read(&seg).unwrap(), garbage);

        std::fs::write(&seg, &good).unwrap();
        let wider = LogShape {
            max_payload: 200,
            ..SHAPE
        };
        assert!(matches!(
            Log::open(&dir, wider),
            Err(OpenError::TypeMismatch { .. })
        ));
        std::fs::write(dir.join("notes.txt"), b"hi").unwrap();
        assert!(matches!(Log::open(&dir, SHAPE), Err(OpenError::Corrupt(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
