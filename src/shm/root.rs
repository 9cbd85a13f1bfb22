//! The root directory that holds a user's segments, and the files in it.
//!
//! Layout on disk: `<root>/<prefix>_<name>` is the segment, `<root>/<prefix>_<name>.lock` an empty
//! file whose `flock` serialises create / open / remove of that segment. The last participant to
//! leave removes both, holding the lock; a process that was waiting on the removed lock file sees,
//! once it holds the lock, that the path no longer names its file, and retries on a fresh one.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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
    /// The default root: `$RINGBUS_ROOT` if set, else `/dev/shm/ringbus-<uid>`.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(ROOT_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(format!(
                "/dev/shm/ringbus-{}",
                rustix::process::getuid().as_raw()
            )),
        }
    }

    /// Opens (creating with mode 0700 if missing) the root directory `dir`.
    ///
    /// Refuses a root that is a symbolic link or not a directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Root, OpenError> {
        let dir = dir.into();
        let what = dir.display().to_string();
        match DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) => return Err(OpenError::from_io(e, &what)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| OpenError::from_io(e, &what))?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(OpenError::PermissionDenied(format!(
                "root {what} is not a plain directory"
            )));
        }
        if meta.uid() == rustix::process::getuid().as_raw() && meta.mode() & 0o022 != 0 {
            return Err(OpenError::PermissionDenied(format!(
                "root {what} is writable by other users (mode {:o})",
                meta.mode() & 0o777
            )));
        }
        Ok(Root { dir })
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The path of segment file `file` (already validated by the caller).
    pub fn file_path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
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
            let ours = rustix::fs::fstat(&fd).map_err(|e| OpenError::from_io(e.into(), &what))?;
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
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| OpenError::from_io(e.into(), &what))?;
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
    let what = path.display().to_string();
    let fd = match rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
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
    Ok(Some((file, meta)))
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
