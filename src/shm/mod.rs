//! The lowest layer: named shared-memory segments and the raw regions they map.
//!
//! All mapping and all raw-pointer access to shared bytes live in this module. Layers above see a
//! [`Region`] that hands out atomics and bounds-checked raw pointers, never Rust references over bytes
//! another process may be writing.

pub(crate) mod entry;
mod header;
mod name;
mod region;
mod root;
mod segment;

pub(crate) use header::{fnv1a, CONFIG_WORDS};
pub use header::{Header, TypeIdentity, HEADER_LEN, MAGIC};
pub use name::{validate_name, MAX_NAME_LEN};
pub use region::Region;
pub(crate) use root::{map_file, open_regular, private_dir};
pub use root::{Root, SegmentLock, ROOT_ENV};
pub use segment::{Backing, OpenMode, Segment, SegmentGuard, SegmentSpec, LOCK_WAIT};
