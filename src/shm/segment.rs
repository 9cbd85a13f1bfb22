//! Opening a segment by name, in shared memory or in-process, with crash-safe create/open/remove.
//!
//! Every create, open, join and leave runs under the segment's lock (an `flock` for shared memory,
//! a mutex in-process). Under it, a segment is in one of three states:
//! - missing: it is created (exclusively, 0600), initialised, and its header published last;
//! - stale: empty, never published (its creator died while initialising), or with no live
//!   participant (all died): it is removed and created anew;
//! - live: its header and layout are validated against what the caller expects.
//!
//! A live segment of another type, and a segment of garbage or of another version, is a typed
//! error and is left as is (a stale one is replaced whatever it carried).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long open, join and leave wait for a segment's lock before [`OpenError::Busy`].
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

use super::entry::Members;
use super::header::{Header, HEADER_LEN, MAGIC, STATE_READY};
use super::region::Region;
use super::root::{Root, SegmentLock};
use crate::error::OpenError;

/// A segment kind's layout (topic, service, queue), as its header describes it: what the generic
/// checks of [`SegmentSpec`] need to know of the kind.
pub trait SegmentLayout: Members + Sized {
    /// The header's kind word for this kind of segment.
    const KIND: u32;
    /// What this kind is called in error messages ("topic").
    const NAME: &'static str;
    /// The layout header `h` gives, validated against the segment's real length (a
    /// [`OpenError::Corrupt`] if they are inconsistent).
    fn from_header(h: &Header, region_len: usize) -> Result<Self, OpenError>;
    /// The layout published segment `r`'s header gives, validated against `r`'s length.
    fn read(r: &Region) -> Result<Self, OpenError> {
        let h = Header::read(r)?;
        Self::from_header(&h, r.len())
    }
    /// The layout of published segment `r`, or `None` if its header or layout does not read.
    fn found(r: &Region) -> Option<Self> {
        Self::read(r).ok()
    }
}

/// Implements [`SegmentLayout`] for layout type `$layout`, whose inherent `from_header` validates
/// a header of kind word `$kind`, a kind called `$name`.
macro_rules! segment_layout {
    ($layout:ty, $kind:expr, $name:literal) => {
        impl $crate::shm::SegmentLayout for $layout {
            const KIND: u32 = $kind;
            const NAME: &'static str = $name;

            fn from_header(
                h: &$crate::shm::Header,
                region_len: usize,
            ) -> Result<Self, $crate::error::OpenError> {
                <$layout>::from_header(h, region_len)
            }
        }
    };
}
pub(crate) use segment_layout;

/// What the kind of segment (topic, service, queue) tells the generic open logic.
pub trait SegmentSpec {
    /// The kind's layout.
    type Layout: SegmentLayout;
    /// Total length of a new segment.
    fn segment_len(&self) -> usize;
    /// Writes the header (via [`Header::write`]) and initial structure of a new, zeroed segment.
    fn init(&self, r: &Region) -> Result<(), OpenError>;
    /// Validates an existing, published segment's kind and layout against its real length
    /// (a [`OpenError::Corrupt`] if they are inconsistent).
    fn check_layout(&self, r: &Region, h: &Header) -> Result<(), OpenError> {
        if h.kind != Self::Layout::KIND {
            return Err(OpenError::Corrupt(format!(
                "a {} file holds segment kind {}",
                Self::Layout::NAME,
                h.kind
            )));
        }
        Self::Layout::from_header(h, r.len()).map(|_| ())
    }
    /// Checks that a live segment carries what the caller expects ([`OpenError::TypeMismatch`]).
    fn check_type(&self, h: &Header) -> Result<(), OpenError>;
    /// Whether any participant registered in the segment (whose layout passed `check_layout`) is
    /// still alive: by default, whether any member of the layout found in the header is.
    fn has_live_participants(&self, r: &Region) -> bool {
        Self::Layout::found(r).is_some_and(|l| l.any_live(r))
    }
    /// Whether the segment keeps its data when every participant has died (durable queues).
    /// Such a segment is not replaced: [`SegmentSpec::recover`] runs on it under the lock, and
    /// leaving never removes it.
    fn durable(&self) -> bool {
        false
    }
    /// Repairs a durable segment whose participants all died (their entries, locks, unfinished
    /// writes), under the lock. Only called when [`SegmentSpec::durable`] is true.
    fn recover(&self, _r: &Region) -> Result<(), OpenError> {
        Ok(())
    }
}

/// Where segments live: files under a root directory, or the current process's memory.
#[derive(Debug, Clone)]
pub enum Backing {
    /// Shared memory files under a root directory.
    Shm(Root),
    /// Process-local memory: shared between threads, invisible to other processes.
    Local,
}

enum Place {
    Shm { root: Root, file: String },
    Local { key: String, entry: Arc<LocalEntry> },
}

struct LocalEntry {
    region: Arc<Region>,
    lock: Mutex<()>,
}

fn local_registry() -> &'static Mutex<HashMap<String, Arc<LocalEntry>>> {
    static REG: OnceLock<Mutex<HashMap<String, Arc<LocalEntry>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn lock_registry() -> MutexGuard<'static, HashMap<String, Arc<LocalEntry>>> {
    // A poisoned registry only means a panic elsewhere while it was held; the map is still valid.
    local_registry().lock().unwrap_or_else(|e| e.into_inner())
}

/// An open segment: its mapped region and where it came from.
pub struct Segment {
    region: Arc<Region>,
    place: Place,
}

/// Holds the segment lock; participants join and leave under it.
pub enum SegmentGuard<'a> {
    /// flock on the lock file.
    Shm(#[allow(dead_code)] SegmentLock),
    /// The in-process mutex.
    Local(#[allow(dead_code)] MutexGuard<'a, ()>),
}

/// How a found segment was judged.
enum Found {
    Live(Arc<Region>),
    Stale,
}

/// Whether opening may create, or must find, a live segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Join a live segment, or create it (default).
    #[default]
    OpenOrCreate,
    /// Join a live segment; [`OpenError::NotFound`] if there is none (a dead one counts as none).
    OpenExisting,
    /// Create the segment; [`OpenError::AlreadyExists`] if a live one exists.
    CreateNew,
}

impl OpenMode {
    fn check(self, live: bool, name: &str) -> Result<(), OpenError> {
        match (self, live) {
            (OpenMode::OpenExisting, false) => Err(OpenError::NotFound(name.to_string())),
            (OpenMode::CreateNew, true) => Err(OpenError::AlreadyExists(name.to_string())),
            _ => Ok(()),
        }
    }
}

impl Segment {
    /// Opens segment `name` of `spec`'s kind (file `<kind>_<name>`, after [`validate_name`]) as
    /// [`Segment::open`] does; `join` runs under the lock with the layout the segment's header
    /// gives, which is returned with the segment.
    ///
    /// [`validate_name`]: super::validate_name
    pub fn open_kind<S: SegmentSpec, T>(
        backing: &Backing,
        name: &str,
        mode: OpenMode,
        spec: &S,
        join: impl FnOnce(&Region, &S::Layout) -> Result<T, OpenError>,
    ) -> Result<(Segment, S::Layout, T), OpenError> {
        super::validate_name(name)?;
        let file = format!("{}_{name}", S::Layout::NAME);
        let (seg, (layout, joined)) = Segment::open(backing, &file, mode, spec, |r| {
            let layout = S::Layout::read(r)?;
            let joined = join(r, &layout)?;
            Ok((layout, joined))
        })?;
        Ok((seg, layout, joined))
    }

    /// Opens segment `file` (already a validated file name) as `mode` allows, creating it if
    /// missing or stale, and runs `join` under the lock so the caller registers before anyone can
    /// judge the segment unused.
    pub fn open<S: SegmentSpec, T>(
        backing: &Backing,
        file: &str,
        mode: OpenMode,
        spec: &S,
        join: impl FnOnce(&Region) -> Result<T, OpenError>,
    ) -> Result<(Segment, T), OpenError> {
        match backing {
            Backing::Shm(root) => {
                let _lock = root.lock(file, LOCK_WAIT)?;
                let existing = root.open_segment(file)?;
                let missing = existing.is_none();
                let found = Self::judge(existing, spec, mode)?;
                if let Err(e) = mode.check(matches!(found, Found::Live(_)), file) {
                    if missing {
                        // Nothing to guard: do not leave a lock file behind for a probe.
                        root.remove_lock(file);
                    }
                    return Err(e);
                }
                let region = match found {
                    Found::Live(r) => r,
                    Found::Stale => {
                        root.remove_segment(file)
                            .map_err(|e| OpenError::from_io(e, file))?;
                        let created = root
                            .create_segment(file, spec.segment_len())
                            .and_then(|r| Self::create(r, spec));
                        match created {
                            Ok(region) => Arc::new(region),
                            Err(e) => {
                                // Nothing half-made is left behind, nor a lock file that
                                // guards nothing (we hold the lock: waiters retry afresh).
                                let _ = root.remove_segment(file);
                                root.remove_lock(file);
                                return Err(e);
                            }
                        }
                    }
                };
                let t = join(&region)?;
                let seg = Segment {
                    region,
                    place: Place::Shm {
                        root: root.clone(),
                        file: file.to_string(),
                    },
                };
                Ok((seg, t))
            }
            Backing::Local => {
                let mut reg = lock_registry();
                let existing = match reg.get(file).cloned() {
                    Some(e) => match Self::judge(Some(e.region.clone()), spec, mode)? {
                        Found::Live(_) => Some(e),
                        Found::Stale => None,
                    },
                    None => None,
                };
                mode.check(existing.is_some(), file)?;
                let entry = match existing {
                    Some(e) => e,
                    None => {
                        let region =
                            Arc::new(Self::create(Region::heap(spec.segment_len()), spec)?);
                        let e = Arc::new(LocalEntry {
                            region,
                            lock: Mutex::new(()),
                        });
                        reg.insert(file.to_string(), e.clone());
                        e
                    }
                };
                let t = {
                    let _g = entry.lock.lock().unwrap_or_else(|e| e.into_inner());
                    join(&entry.region)?
                };
                let seg = Segment {
                    region: entry.region.clone(),
                    place: Place::Local {
                        key: file.to_string(),
                        entry,
                    },
                };
                Ok((seg, t))
            }
        }
    }

    fn create<S: SegmentSpec>(region: Region, spec: &S) -> Result<Region, OpenError> {
        spec.init(&region)?;
        Header::publish(&region);
        Ok(region)
    }

    fn judge<S: SegmentSpec>(
        found: Option<impl Into<Arc<Region>>>,
        spec: &S,
        mode: OpenMode,
    ) -> Result<Found, OpenError> {
        let Some(r) = found else {
            return Ok(Found::Stale);
        };
        let r: Arc<Region> = r.into();
        if r.is_empty() {
            return Ok(Found::Stale);
        }
        if r.len() < HEADER_LEN {
            return Err(OpenError::Corrupt(format!(
                "segment of {} bytes is shorter than its header",
                r.len()
            )));
        }
        let ready = Header::state(&r) == STATE_READY;
        // Relaxed: ordered after the Acquire load of `state` above.
        let magic = r.u64_at(0).load(std::sync::atomic::Ordering::Relaxed);
        if !ready && (magic == 0 || magic == MAGIC) {
            // Zero-filled or half-written by a creator that died before publishing: we hold the
            // lock it held while initialising.
            return Ok(Found::Stale);
        }
        if magic != MAGIC {
            return Err(OpenError::Corrupt(format!("bad magic {magic:#018x}")));
        }
        let h = Header::read(&r)?;
        spec.check_layout(&r, &h)?;
        if !spec.has_live_participants(&r) {
            if !spec.durable() {
                // Every participant died: whatever it carried, it is reclaimed.
                return Ok(Found::Stale);
            }
            // A durable segment outlives its participants: it is repaired, never replaced.
            spec.check_type(&h)?;
            spec.recover(&r)?;
        }
        if mode != OpenMode::CreateNew {
            spec.check_type(&h)?;
        }
        Ok(Found::Live(r))
    }

    /// The mapped region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Takes the segment lock if it is free now (for housekeeping on hot paths: never waits).
    pub fn try_lock(&self) -> Option<SegmentGuard<'_>> {
        match &self.place {
            Place::Shm { root, file } => {
                root.lock(file, Duration::ZERO).ok().map(SegmentGuard::Shm)
            }
            Place::Local { entry, .. } => match entry.lock.try_lock() {
                Ok(g) => Some(SegmentGuard::Local(g)),
                Err(std::sync::TryLockError::Poisoned(e)) => {
                    Some(SegmentGuard::Local(e.into_inner()))
                }
                Err(std::sync::TryLockError::WouldBlock) => None,
            },
        }
    }

    /// Runs `leave` under the lock; if it reports the segment unused, removes the segment's name so
    /// the next open creates it anew. The memory stays mapped until every handle is dropped.
    ///
    /// If the lock stays busy for [`LOCK_WAIT`], runs `abandon` instead (without the lock): it
    /// must mark the caller's entry so that the next reclaim treats it as dead.
    pub fn leave(&self, leave: impl FnOnce(&Region) -> bool, abandon: impl FnOnce(&Region)) {
        match &self.place {
            Place::Shm { root, file } => {
                let Ok(_lock) = root.lock(file, LOCK_WAIT) else {
                    abandon(&self.region);
                    return;
                };
                if leave(&self.region) {
                    let _ = root.remove_segment(file);
                    // Under the lock: waiters on this lock file notice it was removed and retry.
                    root.remove_lock(file);
                }
            }
            Place::Local { key, entry } => {
                let mut reg = lock_registry();
                let unused = {
                    let _g = entry.lock.lock().unwrap_or_else(|e| e.into_inner());
                    leave(&self.region)
                };
                if unused && reg.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                    reg.remove(key);
                }
            }
        }
    }
}
