//! A raw region of memory shared with other threads or processes.
//!
//! A region is either a file mapping (`MmapRaw`, shared between processes) or a zeroed heap block
//! (shared between threads of one process). Either way other parties write the bytes concurrently, so
//! the region never hands out `&[u8]`: it hands out atomics, or raw pointers whose use the caller
//! justifies.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::MmapRaw;

/// Alignment of every region: a page, so that any layout offset aligned to 64 is aligned in memory.
pub const REGION_ALIGN: usize = 4096;

enum Backing {
    Map(#[allow(dead_code)] MmapRaw),
    Heap(Layout),
}

/// A mapped or allocated block of bytes, at least `REGION_ALIGN` (a page) aligned.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: the region is only accessed through atomics and raw pointers whose users follow the
// ring protocols; nothing in it is tied to the creating thread.
unsafe impl Send for Region {}
// SAFETY: as above: shared access goes through atomics, and raw-pointer writes are made exclusive
// by the protocols of the layers above (a slot is written only by its ring's single writer).
unsafe impl Sync for Region {}

impl Region {
    /// Wraps a shared file mapping. A read-only mapping (an observer's, `admin`) is only ever
    /// loaded from: a store through it would fault, never change the file.
    pub fn from_map(map: MmapRaw) -> Region {
        let len = map.len();
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        debug_assert_eq!(base.as_ptr() as usize % REGION_ALIGN, 0);
        Region {
            base,
            len,
            backing: Backing::Map(map),
        }
    }

    /// Allocates a zeroed, page-aligned block for in-process use.
    pub fn heap(len: usize) -> Region {
        let layout = Layout::from_size_align(len.max(REGION_ALIGN), REGION_ALIGN)
            .expect("region length overflows a Layout");
        // SAFETY: layout has a non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Region {
            base,
            len,
            backing: Backing::Heap(layout),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn check(&self, off: usize, size: usize, align: usize) {
        // Offsets come from layouts validated against `len` when the segment was opened, so a failure
        // here is a bug in ringbus, not bad input: it must stop before any out-of-bounds access.
        assert!(
            off % align == 0 && size <= self.len && off <= self.len - size,
            "region access out of bounds: off={off} size={size} len={}",
            self.len
        );
    }

    /// The 64-bit atomic word at byte offset `off` (a multiple of 8).
    #[inline]
    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8, 8);
        // SAFETY: in bounds and 8-aligned (checked; the base is page-aligned). AtomicU64 has the
        // size and alignment of u64 and any bit pattern is valid; the memory lives as long as self.
        unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU64) }
    }

    /// The 32-bit atomic word at byte offset `off` (a multiple of 4).
    #[inline]
    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned (checked); same argument as `u64_at`.
        unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU32) }
    }

    /// A raw pointer to `len` bytes at `off`. Bounds are checked; what the caller does with the
    /// pointer is the caller's protocol to justify.
    #[inline]
    pub fn ptr(&self, off: usize, len: usize) -> *mut u8 {
        self.check(off, len, 1);
        // SAFETY: off + len <= self.len (checked), so the result stays inside the allocation.
        unsafe { self.base.as_ptr().add(off) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: allocated in `heap` with this exact layout and not freed before.
            unsafe { alloc::dealloc(self.base.as_ptr(), layout) }
        }
    }
}
