//! What every handle of a durable topic opens: the control file and one log per partition, and
//! what both sides ask of them (the published end, the earliest retained offset, a record, a
//! time lookup, retention).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::control::{remove_dead_tmps, Control, Spec};
use super::group::{groups_dir, GroupFile};
use super::layout::*;
use super::Retention;
use crate::error::OpenError;
use crate::log::{Log, LogSegment, Record};

/// An open durable topic (one per handle).
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
    pub(crate) ctl: Control,
    /// Shared with the publisher's helper thread (`log::Ahead`), which makes files ahead.
    pub(crate) logs: Vec<Arc<Log>>,
}

/// What reading an offset found.
pub(crate) enum Read<'a> {
    /// The record's payload (prefix and message).
    Valid(&'a [u8]),
    /// Missing or failing its checks: the reason.
    Bad(String),
    /// Its segment file fails its checks (a header of another shape, version, or garbage).
    BadSegment(String),
    /// Its segment file is gone (retention).
    Gone,
}

/// The directory of durable topic `name` in `parent`.
pub(crate) fn topic_dir(parent: &Path, name: &str) -> PathBuf {
    parent.join(format!("topic_{name}"))
}

impl Shared {
    /// Opens topic `name` in `parent` (creating it as `want` says, if given and missing), and
    /// recovers it if it was last used before a reboot.
    pub(crate) fn open(
        parent: &Path,
        name: &str,
        want: Option<Spec>,
    ) -> Result<Shared, OpenError> {
        crate::shm::validate_name(name)?;
        let dir = topic_dir(parent, name);
        if want.is_some() {
            crate::shm::private_dir(parent, "durable topic directory")?;
        }
        let ctl = Control::open(&dir, want)?;
        let spec = ctl.spec;
        let logs = ctl.exclusive(|| {
            remove_dead_tmps(&dir);
            remove_dead_tmps(&groups_dir(&dir));
            let logs = (0..spec.partitions)
                .map(|k| Log::open_on_demand(dir.join(format!("p{k:03}")), spec.log_shape()))
                .collect::<Result<Vec<_>, _>>()?;
            ctl.recover_if_needed(&logs, &dir)?;
            Ok(logs.into_iter().map(Arc::new).collect())
        })?;
        Ok(Shared {
            dir,
            name: name.to_string(),
            ctl,
            logs,
        })
    }

    /// The topic's shape.
    #[inline]
    pub(crate) fn spec(&self) -> &Spec {
        &self.ctl.spec
    }

    /// Partitions.
    #[inline]
    pub(crate) fn partitions(&self) -> usize {
        self.ctl.spec.partitions
    }

    /// One past the last published offset of partition `k`.
    #[inline]
    pub(crate) fn published(&self, k: usize) -> u64 {
        // Acquire: pairs with the publisher's Release store; its record is sealed before.
        self.ctl.word(k, P_PUBLISHED).load(Ordering::Acquire)
    }

    /// The earliest offset of partition `k` still retained (its first segment file's base;
    /// the published end if there is none).
    pub(crate) fn earliest(&self, k: usize) -> Result<u64, OpenError> {
        let end = self.published(k);
        Ok(self.logs[k]
            .bases()?
            .first()
            .map_or(end, |&b| b.min(end)))
    }

    /// Reads offset `o` of partition `k` (below its published end), through `cache`, the
    /// caller's mapping of the segment it read last.
    pub(crate) fn read<'a>(
        &self,
        k: usize,
        o: u64,
        cache: &'a mut Option<Arc<LogSegment>>,
    ) -> Result<Read<'a>, OpenError> {
        if !cache.as_ref().is_some_and(|s| s.contains(o)) {
            match self.logs[k].segment(o, false) {
                Ok(s) => {
                    // Older segments are done with here: drop this handle's mappings of them.
                    self.logs[k].forget_below(s.base());
                    if s.last() < self.published(k) {
                        // Catching up through a whole segment: its pages mapped in one call.
                        s.populate_read();
                    }
                    *cache = Some(s);
                }
                Err(OpenError::NotFound(_)) => return Ok(Read::Gone),
                Err(
                    e @ (OpenError::Corrupt(_)
                    | OpenError::VersionMismatch { .. }
                    | OpenError::TypeMismatch { .. }),
                ) => return Ok(Read::BadSegment(e.to_string())),
                Err(e) => return Err(e),
            }
        }
        let seg = cache.as_ref().expect("set above");
        Ok(match seg.read(o) {
            Record::Valid(b) if b.len() >= PREFIX => Read::Valid(b),
            Record::Valid(b) => Read::Bad(format!("{} bytes, shorter than the prefix", b.len())),
            Record::Empty => Read::Bad("missing (not on disk when the machine stopped)".into()),
            Record::Corrupt(why) => Read::Bad(why),
        })
    }

    /// The first offset of partition `k` whose timestamp is at or after `t` (nanoseconds since
    /// the Unix epoch); the published end if there is none. A binary search: offsets are
    /// computed places and timestamps never go backwards within a partition.
    pub(crate) fn find_time(&self, k: usize, t: u64) -> Result<u64, OpenError> {
        let end = self.published(k);
        let (mut lo, mut hi) = (self.earliest(k)?, end);
        let mut cache = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The first readable record at or after `mid` (a few unreadable ones are passed).
            let mut found = None;
            for o in mid..hi.min(mid + 64) {
                if let Read::Valid(b) = self.read(k, o, &mut cache)? {
                    found = Some((o, super::timestamp_of(b)));
                    break;
                }
            }
            match found {
                Some((o, ts)) if ts < t => lo = o + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Timestamp of the last readable record of the segment at `base` of partition `k`.
    fn newest_in(&self, k: usize, base: u64) -> Option<u64> {
        let seg = self.logs[k].segment(base, false).ok()?;
        (base..=seg.last())
            .rev()
            .take(64)
            .find_map(|o| match seg.read(o) {
                Record::Valid(b) if b.len() >= PREFIX => Some(super::timestamp_of(b)),
                _ => None,
            })
    }

    /// Applies `policy` to partition `k` at time `now` (ns since the epoch): deletes whole
    /// segment files, oldest first, that are past the policy's size or age and that every group
    /// has committed past; past `max_bytes`, files go whatever the groups committed (they are
    /// told at their next read). The segment being written and those after it are kept.
    /// Returns the files deleted.
    pub(crate) fn retain(&self, k: usize, policy: &Retention, now: u64) -> usize {
        if policy.is_unlimited() {
            return 0;
        }
        let log = &self.logs[k];
        let Ok(bases) = log.bases() else {
            return 0;
        };
        let records = self.spec().records;
        let current = log.shape().base_of(self.published(k));
        let file_len = log.shape().file_len() as u64;
        let full: Vec<u64> = bases
            .iter()
            .copied()
            .filter(|&b| b.saturating_add(records) <= current)
            .collect();
        let total = |deleted: usize| (bases.len() - deleted) as u64 * file_len;
        let mut soft = 0;
        while soft < full.len() {
            let too_big = policy.bytes.is_some_and(|b| total(soft) > b);
            let too_old = policy.age.is_some_and(|age| {
                self.newest_in(k, full[soft])
                    .is_some_and(|ts| now.saturating_sub(ts) > age.as_nanos() as u64)
            });
            if !(too_big || too_old) {
                break;
            }
            soft += 1;
        }
        // Groups protect what they have not committed; if their files cannot be listed, they
        // protect everything (only `max_bytes` deletes).
        let committed = match GroupFile::all(&self.dir, self.partitions()) {
            Ok(gs) => gs
                .iter()
                .map(|g| g.committed(k))
                .filter(|&c| c != NO_COMMIT)
                .min(),
            Err(_e) => {
                crate::log_rare!(warn, partition = k, error = %_e, "retention could not read the groups' commits");
                Some(0)
            }
        };
        let mut delete = full[..soft]
            .iter()
            .take_while(|&&b| committed.map_or(true, |c| b + records <= c))
            .count();
        while delete < full.len() && policy.max_bytes.is_some_and(|m| total(delete) > m) {
            delete += 1;
        }
        if delete == 0 {
            return 0;
        }
        let upto = full[delete - 1] + records;
        let n = log.delete_below(upto);
        if n > 0 {
            crate::log_rare!(info, partition = k, upto, "retention deleted segment files");
        }
        n
    }
}
