//! A consumer group's file: its members, who reads which partition, and the offsets it
//! committed. Mapped shared by every member; durable (it lives beside the logs).
//!
//! # Membership and assignment
//! A member takes a free entry (its owner word, by compare-and-swap) and a token unique in the
//! file, and bumps `generation`. Every member computes its share from the live entries (sticky
//! shares, see `Subscriber::rebalance_group`: the member of rank `r` of `n` reads `P/n`
//! partitions, one more if `r < P mod n`, keeping those it has). A partition is read by the
//! member whose token is in its `owner` word, and only that one:
//! - a member lets go of a partition no longer assigned to it (storing 0 with Release, after
//!   its commit), and takes an assigned one only from 0 (compare-and-swap, Acquire), then
//!   reads from the committed offset;
//! - a member found dead (its process gone) has its partitions freed first (`owner` from its
//!   token to 0, by compare-and-swap, so a later owner is never freed by mistake: tokens are
//!   unique), then its entry. The reaper reads the token between two reads of the owner
//!   word that both name the dead process, so the token is the dead member's and not that of
//!   a member that took the entry after another reaper freed it;
//! - a tool resetting the group's offsets joins as a member and takes every partition first
//!   (or gives up), so no member reads a committed offset half way through the reset.
//!
//! So a partition has at most one reader at any time, and each new reader starts where the
//! last one committed: messages past the last commit are delivered again (at least once).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::*;
use crate::error::OpenError;
use crate::shm::Region;
use crate::sync::ProcessId;

/// A group's file, mapped.
pub(crate) struct GroupFile {
    region: Region,
    file: File,
    pub(crate) name: String,
    partitions: usize,
}

/// The directory holding a topic's group files.
pub(crate) fn groups_dir(topic_dir: &Path) -> PathBuf {
    topic_dir.join("groups")
}

impl GroupFile {
    /// Opens group `name` of a topic of `partitions` partitions, creating its file if missing
    /// and `create` is set.
    pub(crate) fn open(
        topic_dir: &Path,
        name: &str,
        partitions: usize,
        create: bool,
    ) -> Result<GroupFile, OpenError> {
        crate::shm::validate_name(name)?;
        let dir = groups_dir(topic_dir);
        if create {
            crate::shm::private_dir(&dir, "groups directory")?;
        }
        let path = dir.join(name);
        loop {
            if let Some((file, meta)) = crate::shm::open_regular(&path)? {
                if meta.len() != GROUP_LEN as u64 {
                    return Err(OpenError::Corrupt(format!(
                        "{}: {} bytes, a group file has {GROUP_LEN}",
                        path.display(),
                        meta.len()
                    )));
                }
                let region = crate::shm::map_file(&file, meta.len(), &path)?
                    .expect("a group file is not empty");
                let g = GroupFile {
                    region,
                    file,
                    name: name.to_string(),
                    partitions,
                };
                g.validate(&path)?;
                return Ok(g);
            }
            if !create {
                return Err(OpenError::NotFound(path.display().to_string()));
            }
            match make(&dir, &path, partitions) {
                Ok(()) | Err(OpenError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Every valid group file of a topic (for recovery, retention and tools). A stray file, or
    /// one that fails its checks, is passed over (and logged): it is no group; whoever opens
    /// it by name is told why.
    pub(crate) fn all(topic_dir: &Path, partitions: usize) -> Result<Vec<GroupFile>, OpenError> {
        let dir = groups_dir(topic_dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OpenError::from_io(e, &dir.display().to_string())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| OpenError::from_io(e, &dir.display().to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || crate::shm::validate_name(&name).is_err() {
                continue;
            }
            match GroupFile::open(topic_dir, &name, partitions, false) {
                Ok(g) => out.push(g),
                // Removed meanwhile.
                Err(OpenError::NotFound(_)) => {}
                Err(_e) => {
                    crate::log_rare!(warn, group = name.as_str(), error = %_e, "passed over an invalid group file");
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn validate(&self, path: &Path) -> Result<(), OpenError> {
        let r = &self.region;
        // Relaxed: the header is written once before the file is named.
        let magic = r.u64_at(G_MAGIC).load(Ordering::Relaxed);
        let vp = r.u64_at(G_VERSION).load(Ordering::Relaxed);
        let crc = r.u32_at(G_HEADER_CRC).load(Ordering::Relaxed);
        if magic != GROUP_MAGIC {
            return Err(OpenError::Corrupt(format!(
                "{}: not a consumer group file",
                path.display()
            )));
        }
        let version = vp as u32;
        if version != GROUP_VERSION {
            return Err(OpenError::VersionMismatch {
                expected: GROUP_VERSION,
                found: version,
            });
        }
        if crc != header_crc(magic, vp) {
            return Err(OpenError::Corrupt(format!(
                "{}: header checksum mismatch",
                path.display()
            )));
        }
        if (vp >> 32) as usize != self.partitions {
            return Err(OpenError::TypeMismatch {
                expected: format!("group of a topic of {} partitions", self.partitions),
                found: format!("{}: {} partitions", path.display(), vp >> 32),
            });
        }
        Ok(())
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        self.region.u64_at(off)
    }

    /// The membership generation.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        // Acquire: the entries written before a bump are seen after it.
        self.word(G_GENERATION).load(Ordering::Acquire)
    }

    fn bump(&self) {
        // Release: pairs with `generation`'s Acquire.
        self.word(G_GENERATION).fetch_add(1, Ordering::Release);
    }

    /// Joins: takes a free entry (reaping dead members if none is free). Returns the entry
    /// index and the member's token.
    pub(crate) fn join(&self) -> Result<(usize, u64), OpenError> {
        let me = ProcessId::current().pack();
        for pass in 0..2 {
            if pass == 1 {
                self.reap_dead(me);
            }
            for i in 0..MAX_MEMBERS {
                let owner = self.word(member_at(i));
                // AcqRel: one joiner takes an entry; the reaper's frees happen before.
                if owner
                    .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    // Relaxed: unique by the fetch_add.
                    let token = self.word(G_JOINS).fetch_add(1, Ordering::Relaxed) + 1;
                    // Release: a reaper that reads this token (Acquire) then sees the owner
                    // word this entry's CAS wrote, not the dead owner before it (see
                    // `reap_dead`); a reader of a partition owned by this token sees it here.
                    self.word(member_at(i) + 8).store(token, Ordering::Release);
                    self.bump();
                    return Ok((i, token));
                }
            }
        }
        Err(OpenError::NoFreeEntry {
            role: "group member",
            max: MAX_MEMBERS,
        })
    }

    /// Leaves: frees the partitions `token` still owns, then entry `i`.
    pub(crate) fn leave(&self, i: usize, token: u64) {
        self.free_partitions_of(token);
        // Release: our commits happen before the entry is seen free.
        self.word(member_at(i) + 8).store(0, Ordering::Relaxed);
        self.word(member_at(i)).store(0, Ordering::Release);
        self.bump();
    }

    fn free_partitions_of(&self, token: u64) {
        if token == 0 {
            return;
        }
        for k in 0..self.partitions {
            // Release: the owner's commit is visible to the next owner's Acquire CAS.
            let _ = self.word(group_partition_at(k) + GP_OWNER).compare_exchange(
                token,
                0,
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }

    /// Frees the entries (and partitions) of members whose process died. Returns whether any
    /// was found.
    pub(crate) fn reap_dead(&self, me: u64) -> bool {
        let mut reaped = false;
        for i in 0..MAX_MEMBERS {
            // Acquire: the token stored after the owner's CAS.
            let owner = self.word(member_at(i)).load(Ordering::Acquire);
            if owner == 0 || owner == me || ProcessId::unpack(owner).is_alive() {
                continue;
            }
            let token = self.word(member_at(i) + 8).load(Ordering::Acquire);
            // The token is the dead member's only if the entry still names it: another reaper
            // may have freed the entry and a new member taken it, storing its own token (whose
            // Release store, read above with Acquire, makes the new owner visible here).
            // Acquire: as above.
            if self.word(member_at(i)).load(Ordering::Acquire) != owner {
                continue;
            }
            // Partitions first: while the entry still names the dead owner, no member can hold
            // a token of this entry other than the dead one's.
            self.free_partitions_of(token);
            if self
                .word(member_at(i))
                .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                crate::log_rare!(
                    info,
                    group = self.name.as_str(),
                    pid = ProcessId::unpack(owner).pid,
                    "a dead group member's partitions were freed"
                );
                self.bump();
                reaped = true;
            }
        }
        // Partitions owned by a token no live entry holds (a member that died between its
        // entry's reap and a claim) are freed too.
        let tokens: Vec<u64> = (0..MAX_MEMBERS)
            .filter(|&i| self.word(member_at(i)).load(Ordering::Acquire) != 0)
            .map(|i| self.word(member_at(i) + 8).load(Ordering::Acquire))
            .collect();
        for k in 0..self.partitions {
            let owner = self.owner(k);
            if owner != 0 && !tokens.contains(&owner) {
                // Re-read the entries: a joiner may have taken its token since the snapshot.
                let held = (0..MAX_MEMBERS).any(|i| {
                    self.word(member_at(i) + 8).load(Ordering::Acquire) == owner
                });
                if !held {
                    let _ = self.word(group_partition_at(k) + GP_OWNER).compare_exchange(
                        owner,
                        0,
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                }
            }
        }
        reaped
    }

    /// Whether entry `i` is still the member of `token` (an entry freed by a tool or a
    /// recovery may have been taken by another member since).
    pub(crate) fn holds(&self, i: usize, token: u64) -> bool {
        // Acquire: as in `reap_dead`.
        self.word(member_at(i)).load(Ordering::Acquire) != 0
            && self.word(member_at(i) + 8).load(Ordering::Acquire) == token
    }

    /// Entry indices of the members, in order (live or not yet reaped).
    pub(crate) fn members(&self) -> Vec<usize> {
        (0..MAX_MEMBERS)
            // Acquire: as in `reap_dead`.
            .filter(|&i| self.word(member_at(i)).load(Ordering::Acquire) != 0)
            .collect()
    }

    /// Live members (for tools).
    pub(crate) fn live_members(&self) -> usize {
        (0..MAX_MEMBERS)
            .filter(|&i| {
                let w = self.word(member_at(i)).load(Ordering::Acquire);
                w != 0 && ProcessId::unpack(w).is_alive()
            })
            .count()
    }

    /// Token of partition `k`'s owner, 0 for none.
    #[inline]
    pub(crate) fn owner(&self, k: usize) -> u64 {
        // Acquire: a take after a free sees the freeing owner's commit.
        self.word(group_partition_at(k) + GP_OWNER)
            .load(Ordering::Acquire)
    }

    /// Takes partition `k` for `token` if nobody owns it.
    pub(crate) fn take(&self, k: usize, token: u64) -> bool {
        // AcqRel: Acquire, the previous owner's commit (stored before its Release free) is
        // seen; Release, a reaper that reads this owner word sees our entry's token (stored
        // before), so it never frees a partition of a live member as an orphan's.
        self.word(group_partition_at(k) + GP_OWNER)
            .compare_exchange(0, token, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }


    /// Lets go of partition `k` if `token` owns it.
    pub(crate) fn release(&self, k: usize, token: u64) {
        // Release: our commit happens before the next owner's take.
        let _ = self.word(group_partition_at(k) + GP_OWNER).compare_exchange(
            token,
            0,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// The committed offset of partition `k` ([`NO_COMMIT`]: none).
    #[inline]
    pub(crate) fn committed(&self, k: usize) -> u64 {
        // Relaxed: read by the owner (its own stores) or after an Acquire take.
        self.word(group_partition_at(k) + GP_COMMITTED)
            .load(Ordering::Relaxed)
    }

    /// Commits offset `o` for partition `k` (the owner only; tools with no member live).
    #[inline]
    pub(crate) fn commit(&self, k: usize, o: u64) {
        // Relaxed: published to the next owner by the Release free of the partition.
        self.word(group_partition_at(k) + GP_COMMITTED)
            .store(o, Ordering::Relaxed);
    }

    /// Writes the commits to disk (for `SyncPolicy::Always`).
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        rustix::fs::fdatasync(&self.file).map_err(Into::into)
    }

    /// Messages the group lost to forced retention.
    pub(crate) fn lost(&self) -> u64 {
        self.word(G_LOST).load(Ordering::Relaxed)
    }

    /// Counts `n` messages lost to forced retention.
    pub(crate) fn add_lost(&self, n: u64) {
        // Relaxed: a counter.
        self.word(G_LOST).fetch_add(n, Ordering::Relaxed);
    }

    /// Forgets every member and owner (recovery after a reboot: their processes are gone).
    pub(crate) fn forget_members(&self) {
        for i in 0..MAX_MEMBERS {
            self.word(member_at(i)).store(0, Ordering::Relaxed);
            self.word(member_at(i) + 8).store(0, Ordering::Relaxed);
        }
        for k in 0..self.partitions {
            self.word(group_partition_at(k) + GP_OWNER)
                .store(0, Ordering::Relaxed);
        }
        self.bump();
    }
}

fn header_crc(magic: u64, version_partitions: u64) -> u32 {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&magic.to_le_bytes());
    h[8..].copy_from_slice(&version_partitions.to_le_bytes());
    crc32c::crc32c(&h)
}

/// Creates a group file whole under a temporary name and links it into place.
fn make(dir: &Path, path: &Path, partitions: usize) -> Result<(), OpenError> {
    let tmp = super::control::tmp_path(dir);
    let what = tmp.display().to_string();
    let fd = crate::shm::create_exclusive(&tmp)?;
    let made = (|| {
        rustix::fs::ftruncate(&fd, GROUP_LEN as u64)
            .map_err(|e| OpenError::from_io(e.into(), &what))?;
        let file = File::from(fd);
        let r = crate::shm::map_file(&file, GROUP_LEN as u64, &tmp)?
            .expect("a group file is not empty");
        let vp = u64::from(GROUP_VERSION) | (partitions as u64) << 32;
        // Relaxed: the file is ours alone until the rename publishes it (after a sync).
        r.u64_at(G_MAGIC).store(GROUP_MAGIC, Ordering::Relaxed);
        r.u64_at(G_VERSION).store(vp, Ordering::Relaxed);
        r.u32_at(G_HEADER_CRC)
            .store(header_crc(GROUP_MAGIC, vp), Ordering::Relaxed);
        for k in 0..partitions {
            r.u64_at(group_partition_at(k) + GP_COMMITTED)
                .store(NO_COMMIT, Ordering::Relaxed);
        }
        rustix::fs::fdatasync(&file).map_err(|e| OpenError::from_io(e.into(), &what))
    })();
    let linked = made.and_then(|()| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => OpenError::AlreadyExists(path.display().to_string()),
            e => OpenError::from_io(e.into(), &path.display().to_string()),
        })
    });
    if linked.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        crate::log::sync_dir(dir).map_err(|e| OpenError::from_io(e, &what))?;
    }
    linked
}
