//! What every target shares: a fresh private directory per input, and patches applied to a valid
//! file, so the fuzzer explores files close to real ones (an input is a list of patches).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory for one input (removed by [`Scratch`]'s drop).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringbus-fuzz-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Applies `input` to `file` as patches: each 10 bytes are an offset (u64, taken modulo the
/// file's length plus 64: a patch may extend the file) and a 2-byte value written there, in
/// place. Files are never shrunk: a live handle maps them, and a file shrunk under a mapping
/// faults (SIGBUS) whatever the reader checks; truncation is covered by `tests/mutation.rs`,
/// whose cases mutate files no process maps.
pub fn patch(file: &Path, input: &[u8]) {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(file) else {
        return;
    };
    let len = f.metadata().map_or(0, |m| m.len()) as usize;
    for c in input.chunks_exact(10) {
        let at = u64::from_le_bytes(c[..8].try_into().unwrap()) as usize % (len + 64);
        let _ = f.write_all_at(&c[8..10], at as u64);
    }
}
