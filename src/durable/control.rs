//! A durable topic's control file: created whole, validated at every open, and reset from the
//! logs after a reboot (recovery).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::layout::*;
use crate::error::OpenError;
use crate::log::{Log, LogShape, Record, RECORD_HEADER};
use crate::shm::Region;
use crate::sync::ProcessId;

/// Longest wait for the control file's lock (see [`Control::exclusive`]).
pub(crate) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a handle asks of a topic it opens (and creates it with, if missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    pub(crate) partitions: usize,
    pub(crate) max_message: usize,
    pub(crate) records: u64,
    pub(crate) type_hash: u64,
}

impl Spec {
    /// The shape of each partition's log: room for the prefix and the largest message, padded
    /// so that records start on cache lines (the stride, header included, is a multiple of
    /// 64, as the in-memory topic's slots): a record's header, prefix and the first 32 bytes
    /// of its message are then on one line, which a live reader polls for the seal.
    pub(crate) fn log_shape(&self) -> LogShape {
        LogShape {
            max_payload: record_stride(self.max_message) - RECORD_HEADER,
            records: self.records,
        }
    }
}

/// Bytes from one record to the next in a topic of messages up to `max_message` bytes: header,
/// prefix and message, rounded up to a cache line (see [`Spec::log_shape`]).
pub(crate) fn record_stride(max_message: usize) -> usize {
    (RECORD_HEADER + PREFIX + max_message).next_multiple_of(crate::shm::CACHE_LINE)
}

/// The control file, mapped.
pub(crate) struct Control {
    region: Region,
    file: File,
    pub(crate) spec: Spec,
}

/// A digest of this boot's id (0 if the kernel does not say): words written by processes of
/// another boot are reset at open.
fn boot() -> u64 {
    static BOOT: OnceLock<u64> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read("/proc/sys/kernel/random/boot_id")
            .map(|b| crate::shm::fnv1a(b).max(1))
            .unwrap_or(1)
    })
}

impl Control {
    /// Opens the control file of the topic directory `dir`, creating it (and the directory) if
    /// missing when `want` is given; `want` must then match what the file says. Without
    /// `want` (tools), any valid shape is accepted and nothing is created.
    pub(crate) fn open(dir: &Path, want: Option<Spec>) -> Result<Control, OpenError> {
        let path = dir.join("control");
        if want.is_some() {
            crate::shm::private_dir(dir, "durable topic directory")?;
        } else if !crate::shm::existing_private_dir(dir, "durable topic directory")? {
            return Err(OpenError::NotFound(dir.display().to_string()));
        }
        let (file, region) = loop {
            if let Some((file, meta)) = crate::shm::open_regular(&path)? {
                if meta.len() != CONTROL_LEN as u64 {
                    return Err(OpenError::Corrupt(format!(
                        "{}: {} bytes, a control file has {CONTROL_LEN}",
                        path.display(),
                        meta.len()
                    )));
                }
                let region = crate::shm::map_file(&file, meta.len(), &path)?
                    .expect("a control file is not empty");
                break (file, region);
            }
            let Some(spec) = want else {
                return Err(OpenError::NotFound(path.display().to_string()));
            };
            match create(dir, &path, spec) {
                Ok(made) => break made,
                // Another process created it first: open theirs.
                Err(OpenError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        };
        let spec = read_spec(&region, &path)?;
        if let Some(w) = want {
            if w.type_hash != spec.type_hash || w.max_message != spec.max_message {
                return Err(OpenError::TypeMismatch {
                    expected: format!(
                        "durable topic of messages up to {} bytes (type digest {:x})",
                        w.max_message, w.type_hash
                    ),
                    found: format!(
                        "messages up to {} bytes (type digest {:x})",
                        spec.max_message, spec.type_hash
                    ),
                });
            }
        }
        Ok(Control { region, file, spec })
    }

    /// Word `field` (`P_*`) of partition `k`.
    #[inline]
    pub(crate) fn word(&self, k: usize, field: usize) -> &AtomicU64 {
        self.region.u64_at(partition_at(k) + field)
    }

    /// Runs `f` holding the file's `flock` (opens, recoveries and resets exclude each other;
    /// the kernel drops the lock of a process that dies). Waits at most [`LOCK_WAIT`] for it
    /// (a process of the same user may hold it as long as it likes): [`OpenError::Busy`].
    pub(crate) fn exclusive<T>(
        &self,
        f: impl FnOnce() -> Result<T, OpenError>,
    ) -> Result<T, OpenError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&self.file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    // Held for an open or a recovery, which take milliseconds: poll.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(OpenError::Busy(format!(
                        "the control file's lock has been held by another process for {LOCK_WAIT:?}"
                    )))
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(OpenError::Io(e.into())),
            }
        }
        let r = f();
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
        r
    }

    /// If the live words belong to another boot (or the file is new), resets them from the
    /// logs: each partition's published end is one past its last valid record (a torn tail is
    /// dropped), every lock and entry is freed, and every group's members are forgotten.
    /// Call under [`Control::exclusive`], with every partition's log.
    pub(crate) fn recover_if_needed(&self, logs: &[Log], dir: &Path) -> Result<(), OpenError> {
        // Relaxed: under the flock, which orders us after the last recovery.
        if self.region.u64_at(OFF_BOOT).load(Ordering::Relaxed) == boot() {
            return Ok(());
        }
        let groups = super::group::GroupFile::all(dir, self.spec.partitions)?;
        for (k, log) in logs.iter().enumerate() {
            let (mut end, ts) = recovered_end(log)?;
            // Never below the first retained file: offsets below it were deleted, not lost
            // (a log whose retained files lost every record resumes after the deleted ones).
            if let Some(&first) = log.bases()?.first() {
                end = end.max(first);
            }
            clear_tail(log, end)?;
            // A commit past the end (records not on disk when the machine stopped, their
            // commit was) is moved back to it: the offsets past it will name new messages,
            // which the group must not skip.
            for g in &groups {
                let c = g.committed(k);
                if c != NO_COMMIT && c > end {
                    g.commit(k, end);
                }
            }
            // Relaxed: nobody of this boot uses the words before `boot` is stored (SeqCst) below.
            self.word(k, P_PUBLISHED).store(end, Ordering::Relaxed);
            self.word(k, P_LAST_TS).store(ts, Ordering::Relaxed);
            self.word(k, P_LOCK).store(0, Ordering::Relaxed);
            log.clear_sync_locks()?;
            if end > 0 {
                crate::log_rare!(info, partition = k, end, "recovered a durable topic partition");
            }
        }
        for i in 0..MAX_SUBSCRIBERS {
            self.region
                .u64_at(OFF_SUBSCRIBERS + i * 8)
                .store(0, Ordering::Relaxed);
        }
        self.region
            .u64_at(OFF_NEWS_SLEEPERS)
            .store(0, Ordering::Relaxed);
        for group in &groups {
            group.forget_members();
            group.sync().map_err(OpenError::Io)?;
        }
        // SeqCst: the reset words are written before any handle of this boot sees its boot.
        self.region.u64_at(OFF_BOOT).store(boot(), Ordering::SeqCst);
        rustix::fs::fdatasync(&self.file).map_err(|e| OpenError::Io(e.into()))?;
        Ok(())
    }

    /// Takes a free subscriber entry (or one whose owner died): its index, which is also the
    /// subscriber's doorbell bit.
    pub(crate) fn join_subscriber(&self) -> Result<usize, OpenError> {
        let me = ProcessId::current().pack();
        // Every entry of a dead handle is reclaimed, not just the one taken: a dead sleeper's
        // doorbell bit would make every publisher ring the kernel until the entry is reused.
        // A reclaimed entry is held (ours) while its bit is cleared, so the bit of a handle
        // that takes the entry next is never cleared by mistake.
        let mut mine = None;
        for i in 0..MAX_SUBSCRIBERS {
            let w = self.region.u64_at(OFF_SUBSCRIBERS + i * 8);
            // Relaxed: the CAS decides.
            let cur = w.load(Ordering::Relaxed);
            let dead = cur != 0 && cur != me && !ProcessId::unpack(cur).is_alive();
            if !(dead || (cur == 0 && mine.is_none())) {
                continue;
            }
            // AcqRel: an entry is taken by one handle.
            if w.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            if cur != 0 {
                self.news_bell().forget(i);
            }
            if mine.is_none() {
                mine = Some(i);
            } else {
                // Release: a plain hand-back, as `leave_subscriber`.
                w.store(0, Ordering::Release);
            }
        }
        if let Some(i) = mine {
            return Ok(i);
        }
        Err(OpenError::NoFreeEntry {
            role: "subscriber",
            max: MAX_SUBSCRIBERS,
        })
    }

    /// Frees subscriber entry `i`.
    pub(crate) fn leave_subscriber(&self, i: usize) {
        self.news_bell().forget(i);
        // Release: nothing of ours is read through the entry; a plain hand-back.
        self.region
            .u64_at(OFF_SUBSCRIBERS + i * 8)
            .store(0, Ordering::Release);
    }

    /// Live subscriber entries (for tools).
    pub(crate) fn subscribers(&self) -> usize {
        (0..MAX_SUBSCRIBERS)
            .filter(|i| {
                // Relaxed: a snapshot for display.
                let w = self
                    .region
                    .u64_at(OFF_SUBSCRIBERS + i * 8)
                    .load(Ordering::Relaxed);
                w != 0 && ProcessId::unpack(w).is_alive()
            })
            .count()
    }

    /// The doorbell every reader of the topic sleeps on.
    #[inline]
    pub(crate) fn news_bell(&self) -> crate::sync::Doorbell<'_> {
        crate::sync::Doorbell::at(&self.region, OFF_NEWS_SEQ, OFF_NEWS_SLEEPERS)
    }
}

/// A temporary file name in `dir` unique to this process and call (`.tmp-<process>-<n>`), for
/// a file made whole before it is linked into place. One left by a creator that died is
/// removed when the topic is next opened.
pub(crate) fn tmp_path(dir: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    // Relaxed: a counter for unique names.
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{:x}-{n}", ProcessId::current().pack()))
}

/// Removes the temporary files of creators that died from `dir`.
pub(crate) fn remove_dead_tmps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix(".tmp-")
            .and_then(|r| r.split_once('-'))
            .and_then(|(o, _)| u64::from_str_radix(o, 16).ok());
        if owner.is_some_and(|o| !ProcessId::unpack(o).is_alive()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Creates the control file whole under a temporary name and links it into place without
/// replacing anything ([`OpenError::AlreadyExists`] if another process won).
fn create(dir: &Path, path: &Path, spec: Spec) -> Result<(File, Region), OpenError> {
    let tmp = tmp_path(dir);
    let what = tmp.display().to_string();
    let fd = crate::shm::create_exclusive(&tmp)?;
    let made = (|| {
        rustix::fs::ftruncate(&fd, CONTROL_LEN as u64)
            .map_err(|e| OpenError::from_io(e.into(), &what))?;
        let file = File::from(fd);
        let region = crate::shm::map_file(&file, CONTROL_LEN as u64, &tmp)?
            .expect("a control file is not empty");
        let mut h = [0u8; OFF_HEADER_CRC];
        h[OFF_MAGIC..][..8].copy_from_slice(&MAGIC.to_le_bytes());
        h[OFF_VERSION..][..4].copy_from_slice(&DTOPIC_VERSION.to_le_bytes());
        h[OFF_PARTITIONS..][..4].copy_from_slice(&(spec.partitions as u32).to_le_bytes());
        h[OFF_MAX_MESSAGE..][..4].copy_from_slice(&(spec.max_message as u32).to_le_bytes());
        h[OFF_RECORDS..][..8].copy_from_slice(&spec.records.to_le_bytes());
        h[OFF_TYPE_HASH..][..8].copy_from_slice(&spec.type_hash.to_le_bytes());
        for (i, chunk) in h.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            // Relaxed: the file is ours alone until the rename publishes it (after a sync).
            region
                .u64_at(i * 8)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        region
            .u32_at(OFF_HEADER_CRC)
            .store(crc32c::crc32c(&h), Ordering::Relaxed);
        rustix::fs::fdatasync(&file).map_err(|e| OpenError::from_io(e.into(), &what))?;
        Ok((file, region))
    })();
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let linked = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    if linked.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    match linked {
        Ok(()) => {
            crate::log::sync_dir(dir).map_err(|e| OpenError::from_io(e, &what))?;
            Ok(made)
        }
        Err(rustix::io::Errno::EXIST) => Err(OpenError::AlreadyExists(path.display().to_string())),
        Err(e) => Err(OpenError::from_io(e.into(), &path.display().to_string())),
    }
}

/// Validates a control file's header and returns its shape.
fn read_spec(r: &Region, path: &Path) -> Result<Spec, OpenError> {
    let what = path.display();
    let mut h = [0u8; OFF_HEADER_CRC];
    for (i, chunk) in h.chunks_mut(8).enumerate() {
        // Relaxed: written once before the file was named.
        let w = r.u64_at(i * 8).load(Ordering::Relaxed).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    if u64_at(OFF_MAGIC) != MAGIC {
        return Err(OpenError::Corrupt(format!("{what}: not a durable topic's control file")));
    }
    if u32_at(OFF_VERSION) != DTOPIC_VERSION {
        return Err(OpenError::VersionMismatch {
            expected: DTOPIC_VERSION,
            found: u32_at(OFF_VERSION),
        });
    }
    // Relaxed: as above.
    if crc32c::crc32c(&h) != r.u32_at(OFF_HEADER_CRC).load(Ordering::Relaxed) {
        return Err(OpenError::Corrupt(format!("{what}: header checksum mismatch")));
    }
    let spec = Spec {
        partitions: u32_at(OFF_PARTITIONS) as usize,
        max_message: u32_at(OFF_MAX_MESSAGE) as usize,
        records: u64_at(OFF_RECORDS),
        type_hash: u64_at(OFF_TYPE_HASH),
    };
    if !(1..=MAX_PARTITIONS).contains(&spec.partitions) {
        return Err(OpenError::Corrupt(format!(
            "{what}: {} partitions",
            spec.partitions
        )));
    }
    // The log checks the rest of the shape when it opens.
    Ok(spec)
}

/// Unseals every record at or past `end` that is not blank (a torn tail), so that every
/// offset past the published end carries no seal until its writer completes it: readers may
/// then take a seal for publication (see `Subscriber::try_receive`).
fn clear_tail(log: &Log, end: u64) -> Result<(), OpenError> {
    let first = log.shape().base_of(end);
    for base in log.bases()?.into_iter().filter(|&b| b >= first) {
        let seg = match log.segment(base, false) {
            Ok(s) => s,
            Err(OpenError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        for o in base.max(end)..=seg.last() {
            // Any record words written (a seal, or a length or offset without one): reset, so
            // that the file's untouched pages stay untouched.
            if seg.sealed(o) || seg.read(o) != Record::Empty {
                seg.unseal(o);
            }
        }
    }
    Ok(())
}

/// One past the last valid record of `log`, and that record's timestamp: the last segment
/// file holding any valid record is read whole (records past the last valid one are a torn
/// tail, written over by the next appends).
fn recovered_end(log: &Log) -> Result<(u64, u64), OpenError> {
    for base in log.bases()?.into_iter().rev() {
        let seg = match log.segment(base, false) {
            Ok(s) => s,
            Err(OpenError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let mut last = None;
        for o in base..=seg.last() {
            match seg.read(o) {
                Record::Valid(bytes) if bytes.len() >= PREFIX => {
                    last = Some((o, super::timestamp_of(bytes)));
                }
                _ => {}
            }
        }
        if let Some((o, ts)) = last {
            return Ok((o + 1, ts));
        }
    }
    Ok((0, 0))
}
