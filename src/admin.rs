//! Operating ringbus: what exists under a root, read without joining, and removing what dead
//! processes left.

use std::path::PathBuf;

/// The root directory a [`crate::Node::new`] uses: `$RINGBUS_ROOT` if set and not empty, else
/// `/dev/shm/ringbus-<euid>`. Not created.
///
/// ```
/// let root = ringbus::admin::default_root();
/// assert!(root.is_absolute() || std::env::var_os("RINGBUS_ROOT").is_some());
/// ```
pub fn default_root() -> PathBuf {
    crate::shm::Root::default_dir()
}
