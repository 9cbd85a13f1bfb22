//! Removing what dead processes left: segments nobody alive uses, and lock files without a
//! segment.

use std::path::{Path, PathBuf};

use super::observe::observe;
use super::{Kind, Status};
use crate::error::OpenError;
use crate::shm::Root;

/// What [`clean`] did (or, in a dry run, would do) with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleaned {
    /// The file.
    pub path: PathBuf,
    /// The segment's kind, or `None` for a lock file without a segment.
    pub kind: Option<Kind>,
    /// What happened to it.
    pub outcome: Outcome,
}

/// What happened to a file [`clean`] looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Removed (with its lock file): every participant was dead, or its creator died before
    /// publishing it, or (a lock file) its segment was gone.
    Removed,
    /// Would be removed (a dry run: nothing was changed; the judgement is made again under the
    /// lock by the real run).
    WouldRemove,
    /// Left: a participant is alive.
    Live,
    /// Left: a durable queue, whose messages outlive its participants (the next open
    /// recovers it).
    Durable,
    /// Left: its lock is held (someone is opening, joining or leaving it now).
    Busy,
    /// Left: not a segment this version of ringbus reads (the reason); remove it by hand if it
    /// is yours.
    Unreadable(String),
    /// Left: its lock file could not be taken or the file could not be removed (the reason,
    /// naming the file and the fix: a lock file planted by another user, a directory in its
    /// place). The other files are still cleaned.
    Failed(String),
}

/// Removes, from directory `dir`, every segment whose registered participants are all dead
/// (or whose creator died before publishing it), with its lock file, and every lock file whose
/// segment is gone; with `dry_run`, changes nothing and says what it would remove. Returns what
/// it found, file by file.
///
/// Each removal is decided under the segment's lock, taken without waiting (a busy lock is
/// [`Outcome::Busy`]), and judged again once held, exactly as an open judges a segment: a live
/// segment is never touched. A durable queue is never removed (its messages are on disk), nor
/// a file that does not read as a segment.
///
/// ```
/// use ringbus::{admin, Node};
///
/// let root = std::env::temp_dir().join(format!("ringbus-clean-doc-{}", std::process::id()));
/// let node = Node::with_root(&root)?;
/// let publisher = node.topic::<u64>("doc-live").publisher()?;
/// let report = admin::clean(&root, false)?;
/// assert_eq!(report[0].outcome, admin::Outcome::Live); // a live publisher holds it
/// # drop(publisher);
/// # std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn clean(dir: &Path, dry_run: bool) -> Result<Vec<Cleaned>, OpenError> {
    if !crate::shm::existing_private_dir(dir, "root")? {
        return Ok(Vec::new());
    }
    let root = Root::open(dir)?;
    let mut done = Vec::new();
    for (kind, name) in super::segment_files(dir)? {
        let file = kind.file(&name);
        // Judged first without the lock, and only a file to remove is locked and judged again:
        // taking the lock of one that stays would leave a lock file beside it (beside a file
        // that is not a segment, one it never had).
        let outcome = match judge(dir, kind, &name, Outcome::Removed) {
            Outcome::Removed if dry_run => Outcome::WouldRemove,
            Outcome::Removed => match root.lock(&file, std::time::Duration::ZERO) {
                Err(OpenError::Busy(_)) => Outcome::Busy,
                // One file that cannot be locked does not stop the others being cleaned.
                Err(e) => lock_failed(e),
                Ok(_lock) => match judge(dir, kind, &name, Outcome::Removed) {
                    Outcome::Removed => match root.remove_segment(&file) {
                        Err(e) => Outcome::Failed(
                            OpenError::from_io(e, &dir.join(&file).display().to_string())
                                .to_string(),
                        ),
                        Ok(()) => {
                            // Under the lock: a process waiting on it sees it gone and retries.
                            root.remove_lock(&file);
                            Outcome::Removed
                        }
                    },
                    stays => stays,
                },
            },
            stays => stays,
        };
        done.push(Cleaned {
            path: dir.join(&file),
            kind: Some(kind),
            outcome,
        });
    }
    for file in orphan_locks(dir)? {
        let outcome = if dry_run {
            Outcome::WouldRemove
        } else {
            match root.lock(&file, std::time::Duration::ZERO) {
                Err(OpenError::Busy(_)) => Outcome::Busy,
                Err(e) => lock_failed(e),
                // Judged again under the lock: a segment created meanwhile keeps its lock file.
                Ok(_lock) if dir.join(&file).exists() => Outcome::Live,
                Ok(_lock) => {
                    root.remove_lock(&file);
                    Outcome::Removed
                }
            }
        };
        if outcome != Outcome::Live {
            done.push(Cleaned {
                path: dir.join(format!("{file}.lock")),
                kind: None,
                outcome,
            });
        }
    }
    done.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(done)
}

/// The outcome of a segment whose lock file could not be taken: error `e` (which names the lock
/// file) and the fix.
fn lock_failed(e: OpenError) -> Outcome {
    Outcome::Failed(match e {
        OpenError::Io(io) => format!("{io}: remove it if it is not a ringbus lock file"),
        e => e.to_string(),
    })
}

/// What to do with segment `name` of `kind`: `remove` if nobody alive uses it.
fn judge(dir: &Path, kind: Kind, name: &str, remove: Outcome) -> Outcome {
    let info = observe(dir, kind, name);
    match info.status {
        Status::Live => Outcome::Live,
        Status::Dead if info.durable => Outcome::Durable,
        Status::Dead | Status::Unfinished => remove,
        Status::Unreadable(why) => Outcome::Unreadable(why),
    }
}

/// The segment file names (`topic_x`) of the lock files in `dir` whose segment is missing.
fn orphan_locks(dir: &Path) -> Result<Vec<String>, OpenError> {
    let what = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| OpenError::from_io(e, &what))? {
        let entry = entry.map_err(|e| OpenError::from_io(e, &what))?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(segment) = file.strip_suffix(".lock") else {
            continue;
        };
        if Kind::of_file(segment).is_some() && !dir.join(segment).exists() {
            found.push(segment.to_string());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A lock file that cannot be taken (a directory in its place, one others may write) is
    /// reported for that file, and every other file is still cleaned.
    #[test]
    fn a_bad_lock_file_does_not_stop_the_others() {
        let dir = std::env::temp_dir().join(format!("ringbus-clean-bad-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Unfinished segments (empty files) that clean removes, one with a directory as its
        // lock file and one whose lock file the group may write.
        for f in ["topic_a", "topic_b", "topic_c"] {
            std::fs::write(dir.join(f), b"").unwrap();
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        std::fs::create_dir(dir.join("topic_a.lock")).unwrap();
        std::fs::write(dir.join("topic_b.lock"), b"").unwrap();
        std::fs::set_permissions(dir.join("topic_b.lock"), std::fs::Permissions::from_mode(0o620))
            .unwrap();
        let done = clean(&dir, false).expect("one bad lock file must not fail the whole clean");
        let outcome = |f: &str| {
            done.iter()
                .find(|c| c.path == dir.join(f))
                .map(|c| c.outcome.clone())
        };
        assert!(matches!(outcome("topic_a"), Some(Outcome::Failed(ref w)) if w.contains("topic_a.lock")), "{done:?}");
        assert!(matches!(outcome("topic_b"), Some(Outcome::Failed(ref w)) if w.contains("topic_b.lock")), "{done:?}");
        assert_eq!(outcome("topic_c"), Some(Outcome::Removed), "{done:?}");
        assert!(dir.join("topic_a").exists() && dir.join("topic_b").exists());
        assert!(!dir.join("topic_c").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
