//! The lowest layer: named shared-memory segments and the raw regions they map.
//!
//! All mapping and all raw-pointer access to shared bytes live in this module. Layers above see a
//! [`Region`] that hands out atomics and bounds-checked raw pointers, never Rust references over bytes
//! another process may be writing.
//!
//! # The layout convention
//! Each segment kind's byte layout is one module (`topic::layout`, `service::layout`,
//! `queue::layout`, `log::layout`) holding its byte diagram. Fixed offsets are `const`s built in
//! order from named sizes (`CTRL_B = CTRL_A + U64`), never retyped numbers: a run of consecutive
//! fields is one [`fields!`] block (`from ORIGIN; NAME: SIZE, …`), and a field placed on purpose
//! elsewhere (a new cache line) starts a new block. `const` assertions check that fields do not
//! overlap ([`disjoint`]) and sit on the cache lines the design says ([`one_line`],
//! [`CACHE_LINE`]). Offsets that depend on a segment's configuration are computed
//! once, by the layout's constructor, from the same named sizes.

pub mod entry;
mod header;
mod name;
mod region;
mod root;
mod segment;

pub(crate) use header::{fnv1a, CONFIG_WORDS};
pub use header::{Header, TypeIdentity, HEADER_LEN};
pub(crate) use header::{MAGIC, STATE_READY};
pub use name::{validate_name, MAX_NAME_LEN};
pub use region::Region;
pub use root::Root;
pub(crate) use root::{existing_private_dir, map_read_only};
pub(crate) use root::{create_exclusive, map_file, open_regular, private_dir};
pub(crate) use segment::segment_layout;
pub use segment::{Backing, OpenMode, Segment, SegmentLayout, SegmentSpec, LOCK_WAIT};

/// Bytes of a cache line, the unit every layout places its hot words by.
pub const CACHE_LINE: usize = 64;
/// Bytes of a `u64` word of a layout.
pub const U64: usize = std::mem::size_of::<u64>();
/// Bytes of a `u32` word of a layout.
pub const U32: usize = std::mem::size_of::<u32>();

/// Declares a block of consecutive fields of a layout as `usize` offsets: `from ORIGIN;` then
/// `NAME: SIZE,` entries (each with its doc and visibility), the first at `ORIGIN` and each next
/// one at the previous offset plus the previous size (`B = A + SIZE_A`). An entry without a size
/// (`NAME,`, last) names the offset just past the block, e.g. its end or a header's length.
macro_rules! fields {
    (from $origin:expr; $($fields:tt)*) => {
        $crate::shm::fields!(@at $origin; $($fields)*);
    };
    (@at $off:expr; $(#[$m:meta])* $vis:vis $name:ident: $size:expr, $($rest:tt)*) => {
        $(#[$m])*
        $vis const $name: usize = $off;
        $crate::shm::fields!(@at $name + $size; $($rest)*);
    };
    (@at $off:expr; $(#[$m:meta])* $vis:vis $name:ident $(,)?) => {
        $(#[$m])*
        $vis const $name: usize = $off;
    };
    (@at $off:expr;) => {};
}
pub(crate) use fields;

/// Whether `[a, a + a_len)` and `[b, b + b_len)` are disjoint: for layouts' `const` assertions.
pub const fn disjoint(a: usize, a_len: usize, b: usize, b_len: usize) -> bool {
    a + a_len <= b || b + b_len <= a
}

/// Whether `[off, off + len)` lies in one cache line: for layouts' `const` assertions.
pub const fn one_line(off: usize, len: usize) -> bool {
    off / CACHE_LINE == (off + len - 1) / CACHE_LINE
}

/// Checks a configuration value of a layout: `value` (called `what` in the error) must lie in
/// `range`, and be a power of two if `power_of_two`.
pub fn check_config(
    what: &str,
    value: usize,
    range: std::ops::RangeInclusive<usize>,
    power_of_two: bool,
) -> Result<(), crate::error::OpenError> {
    if range.contains(&value) && (!power_of_two || value.is_power_of_two()) {
        return Ok(());
    }
    let kind = if power_of_two { "a power of two " } else { "" };
    Err(crate::error::OpenError::InvalidConfig(format!(
        "{what} {value} must be {kind}in {}..={}",
        range.start(),
        range.end()
    )))
}
