//! The root directory that holds a user's segments, and the files in it.
//!
//! Layout on disk: `<root>/<prefix>_<name>` is the segment, `<root>/<prefix>_<name>.lock` an empty
//! file whose `flock` serialises create / open / remove of that segment. The last participant to
//! leave removes both, holding the lock; a process that was waiting on the removed lock file sees,
//! once it holds the lock, that the path no longer names its file, and retries on a fresh one.
//!
//! # Ownership
//!
//! Whoever can write a directory can remove our files from it and plant theirs, so a root (and a
//! durable queue's directory, and its log directory) must be owned by the effective uid of the
//! process and writable by nobody else; every segment, lock and log file opened from it must be
//! owned by that uid and writable by nobody else too. Anything else is refused with
//! [`OpenError::PermissionDenied`] naming the path and the fix.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::MmapOptions;
use rustix::fs::{FlockOperation, Mode, OFlags};

use super::region::Region;
use crate::error::OpenError;

/// Environment variable that overrides the default root directory.
pub const ROOT_ENV: &str = "RINGBUS_ROOT";

/// A directory holding segments, created owner-only (0700).
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// An exclusive `flock` on a segment's lock file, released on drop (or by the kernel at death).
#[derive(Debug)]
pub struct SegmentLock {
    _file: File,
}

impl Root {
    /// The default root: `$RINGBUS_ROOT` if set, else `/dev/shm/ringbus-<euid>` (the effective
    /// uid: the user that owns the files this process creates).
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(ROOT_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(format!(
                "/dev/shm/ringbus-{}",
                rustix::process::geteuid().as_raw()
            )),
        }
    }

    /// Opens (creating with mode 0700 if missing) the root directory `dir`.
    ///
    /// Refuses a root that is a symbolic link or not a directory, that another user owns, or
    /// that the group or others may write: whoever can write it can replace our segments.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Root, OpenError> {
        let dir = dir.into();
        private_dir(&dir, "root")?;
        Ok(Root { dir })
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock that guards create / open / remove of segment `file`, waiting at
    /// most `wait` (zero: one attempt). A holder that is stopped (not dead: the kernel releases a
    /// dead one's lock) makes this fail with [`OpenError::Busy`] instead of hanging.
    pub fn lock(&self, file: &str, wait: Duration) -> Result<SegmentLock, OpenError> {
        let deadline = Instant::now().checked_add(wait);
        let mut nap = Duration::from_micros(50);
        let path = self.dir.join(format!("{file}.lock"));
        let what = path.display().to_string();
        loop {
            let fd = rustix::fs::open(
                &path,
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| OpenError::from_io(e.into(), &what))?;
            // Before waiting on it: a lock file another user planted would let them hold us off.
            let ours = rustix::fs::fstat(&fd).map_err(|e| OpenError::from_io(e.into(), &what))?;
            check_owner(ours.st_uid, ours.st_mode, &what, "lock file")?;
            loop {
                match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(rustix::io::Errno::WOULDBLOCK) => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(OpenError::Busy(what));
                        }
                        // Lock holders keep it for a few system calls; polling costs little.
                        std::thread::sleep(nap);
                        nap = (nap * 2).min(Duration::from_millis(5));
                    }
                    Err(e) => return Err(OpenError::from_io(e.into(), &what)),
                }
            }
            // The holder before us may have removed the lock file: then our lock is on an orphan
            // inode that nobody else will lock, and we must start again on the current file.
            match rustix::fs::lstat(&path) {
                Ok(now) if now.st_ino == ours.st_ino && now.st_dev == ours.st_dev => {
                    return Ok(SegmentLock {
                        _file: File::from(fd),
                    })
                }
                Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(OpenError::from_io(e.into(), &what)),
            }
        }
    }

    /// Removes the lock file of segment `file`. Call only while holding that lock.
    pub fn remove_lock(&self, file: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{file}.lock")));
    }

    /// Opens and maps an existing segment. `Ok(None)` if there is none.
    ///
    /// The length mapped is the file's length at open; callers validate the header against it.
    pub fn open_segment(&self, file: &str) -> Result<Option<Region>, OpenError> {
        match open_file(&self.dir.join(file))? {
            None => Ok(None),
            // A creator died between creating the file and sizing it: an empty region.
            Some((_, 0, _)) => Ok(Some(Region::heap(0))),
            Some((_, _, Some(region))) => Ok(Some(region)),
            Some((_, _, None)) => unreachable!("a non-empty file is mapped"),
        }
    }

    /// Creates segment `file` exclusively (never following a symlink), owner-only (0600),
    /// reserves `len` bytes (so a full /dev/shm is an error now, not a SIGBUS later) and maps it.
    pub fn create_segment(&self, file: &str, len: usize) -> Result<Region, OpenError> {
        let path = self.dir.join(file);
        let what = path.display().to_string();
        let fd = create_exclusive(&path)?;
        let reserve =
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len as u64);
        if let Err(e) = reserve {
            let _ = std::fs::remove_file(&path);
            return Err(match e {
                rustix::io::Errno::NOSPC => OpenError::NoSpace(format!(
                    "{what}: {len} bytes do not fit (is /dev/shm too small?)"
                )),
                e => OpenError::from_io(e.into(), &what),
            });
        }
        let file = File::from(fd);
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| OpenError::from_io(e, &what))?;
        Ok(Region::from_map(map))
    }

    /// Removes segment `file`; a missing file is not an error.
    pub fn remove_segment(&self, file: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(file)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Opens the regular file at `path` read-write, never following a symlink, and maps it whole:
/// the file, its length, and its mapping (`None` if it is empty). `Ok(None)` if there is no file.
/// Creates file `path` for reading and writing: exclusively (so the file is ours), never through
/// a symlink, owner-only (0600), closed on exec.
pub(crate) fn create_exclusive(path: &Path) -> Result<rustix::fd::OwnedFd, OpenError> {
    rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| OpenError::from_io(e.into(), &path.display().to_string()))
}

pub(crate) fn open_file(path: &Path) -> Result<Option<(File, u64, Option<Region>)>, OpenError> {
    let Some((file, meta)) = open_regular(path)? else {
        return Ok(None);
    };
    let len = meta.len();
    let region = map_file(&file, len, path)?;
    Ok(Some((file, len, region)))
}

/// Opens the regular file at `path` read-write, never following a symlink: the file and its
/// metadata. `Ok(None)` if there is no file.
pub(crate) fn open_regular(path: &Path) -> Result<Option<(File, std::fs::Metadata)>, OpenError> {
    open_checked(path, OFlags::RDWR)
}

/// Opens the file at `path` with `access` (and never through a symbolic link, closed on exec),
/// and refuses it unless it is a regular file that [`check_owner`] accepts. `Ok(None)` if there
/// is no file.
fn open_checked(
    path: &Path,
    access: OFlags,
) -> Result<Option<(File, std::fs::Metadata)>, OpenError> {
    let what = path.display().to_string();
    let fd = match rustix::fs::open(
        path,
        access | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(OpenError::from_io(e.into(), &what)),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| OpenError::from_io(e, &what))?;
    if !meta.file_type().is_file() {
        return Err(OpenError::Corrupt(format!("{what} is not a regular file")));
    }
    check_owner(meta.uid(), meta.mode(), &what, "file")?;
    Ok(Some((file, meta)))
}

/// Refuses a file or directory (`kind`, at `what`) of owner `uid` and mode `mode` unless the
/// effective uid owns it and neither its group nor others may write it.
fn check_owner(uid: u32, mode: u32, what: &str, kind: &str) -> Result<(), OpenError> {
    let me = rustix::process::geteuid().as_raw();
    // A directory may be a shared one (/tmp): the fix is another directory, not removing it.
    let dir = mode & 0o170000 == 0o040000;
    if uid != me {
        let fix = if dir {
            format!(
                "use a directory of your own instead (e.g. `mkdir -m 700 DIR`), or, if this \
                 one should be yours, have it removed or chown it to uid {me}"
            )
        } else {
            format!("another user may have planted it; remove it or chown it to uid {me}")
        };
        return Err(OpenError::PermissionDenied(format!(
            "{kind} {what} is owned by uid {uid}, not by this process's effective uid {me}: {fix}"
        )));
    }
    if mode & 0o022 != 0 {
        let fix = if dir {
            "use a directory only you can write instead (e.g. `mkdir -m 700 DIR`), or, if this \
             one is yours alone, chmod go-w it"
        } else {
            "remove it or chmod go-w it"
        };
        return Err(OpenError::PermissionDenied(format!(
            "{kind} {what} is writable by its group or by others (mode {:o}): {fix}",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Creates directory `dir` (and its missing parents) with mode 0700 if missing, and refuses it
/// unless it is a plain directory (not a symbolic link) that [`check_owner`] accepts. `kind`
/// names it in errors ("root", "log directory").
pub(crate) fn private_dir(dir: &Path, kind: &str) -> Result<(), OpenError> {
    let what = dir.display().to_string();
    create_dirs(dir).map_err(|e| OpenError::from_io(e, &what))?;
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Err(OpenError::PermissionDenied(format!(
                "{kind} {what} is not a plain directory (a symbolic link or a file): use the \
                 path of a directory of your own"
            )))
        }
        Err(e) => return Err(OpenError::from_io(e.into(), &what)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| OpenError::from_io(e.into(), &what))?;
    check_owner(st.st_uid, st.st_mode, &what, kind)
}

/// Creates directory `dir` and its missing parents with mode 0700, and makes each new entry
/// durable by syncing the directory that holds it (a crash after `mkdir` would otherwise lose a
/// directory that files already synced inside it depend on). Returns how many directories it
/// created.
fn create_dirs(dir: &Path) -> io::Result<usize> {
    let mkdir = || rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700));
    let made = match mkdir() {
        Ok(()) => 0,
        Err(rustix::io::Errno::EXIST) => return Ok(0),
        Err(rustix::io::Errno::NOENT) => {
            let made = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => create_dirs(parent)?,
                _ => return Err(io::ErrorKind::NotFound.into()),
            };
            match mkdir() {
                Ok(()) => made,
                Err(rustix::io::Errno::EXIST) => return Ok(made),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    sync_parent(dir)?;
    Ok(made + 1)
}

/// Syncs the directory holding `path` (its entry for `path`).
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fsync(&fd).map_err(Into::into)
}

/// Opens the regular file at `path` for reading only (never through a symbolic link, refused as
/// [`open_regular`] refuses it if another user owns it or may write it) and maps it whole,
/// read-only: an observer's view, which can never change the file. `Ok(None)` if there is no
/// file; an empty file maps to an empty region.
pub(crate) fn map_read_only(path: &Path) -> Result<Option<(Region, std::fs::Metadata)>, OpenError> {
    let what = path.display().to_string();
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer (the flag does
    // nothing to a regular file, which is all that is mapped). Only the owner can truncate the
    // file under our mapping (a read past its end would be a SIGBUS); ringbus never truncates a
    // segment.
    let Some((file, meta)) = open_checked(path, OFlags::RDONLY | OFlags::NONBLOCK)? else {
        return Ok(None);
    };
    if meta.len() == 0 {
        return Ok(Some((Region::heap(0), meta)));
    }
    let len =
        usize::try_from(meta.len()).map_err(|_| OpenError::Corrupt(format!("{what} is too large")))?;
    let map = MmapOptions::new()
        .len(len)
        .map_raw_read_only(&file)
        .map_err(|e| OpenError::from_io(e, &what))?;
    Ok(Some((Region::from_map(map), meta)))
}

/// Refuses directory `dir` (`kind` names it in errors) unless it is a plain directory that
/// [`check_owner`] accepts; never creates it. `Ok(false)` if it does not exist.
pub(crate) fn existing_private_dir(dir: &Path, kind: &str) -> Result<bool, OpenError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(OpenError::from_io(e, &dir.display().to_string())),
        Ok(_) => private_dir(dir, kind).map(|()| true),
    }
}

/// Maps `len` bytes of `file` (opened from `path`) shared; `None` if `len` is 0.
pub(crate) fn map_file(file: &File, len: u64, path: &Path) -> Result<Option<Region>, OpenError> {
    let what = path.display().to_string();
    if len == 0 {
        return Ok(None);
    }
    let len_usize =
        usize::try_from(len).map_err(|_| OpenError::Corrupt(format!("{what} is too large")))?;
    let map = MmapOptions::new()
        .len(len_usize)
        .map_raw(file)
        .map_err(|e| OpenError::from_io(e, &what))?;
    Ok(Some(Region::from_map(map)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_directories_are_created_owner_only_with_their_entries_synced() {
        let base = std::env::temp_dir().join(format!("ringbus-mkdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("a").join("b");
        // Three directories created, each followed by a sync of its parent (an error there
        // would fail the call); the crash itself is not testable here.
        assert_eq!(create_dirs(&dir).unwrap(), 3);
        for d in [&base, &base.join("a"), &dir] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert_eq!(create_dirs(&dir).unwrap(), 0);
        private_dir(&base.join("c"), "test directory").unwrap();
        assert!(base.join("c").is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
