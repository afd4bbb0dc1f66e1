//! mimalloc as a global allocator, asking for alignment only when mimalloc's own would not do
//! (feature `mimalloc`).
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: fcgi_uring::alloc::MiMalloc = fcgi_uring::alloc::MiMalloc;
//! ```
//!
//! The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`. mimalloc 3
//! serves that from its fast path only while the size class's free list holds a block; when
//! it is empty (freed blocks wait on a local list until the plain `mi_malloc` path collects
//! them) a size that is not a power of two is over-allocated by its alignment, from the next
//! size class, every time. Two of the three allocations of every request (`http::Extensions`'
//! 148-byte table, aligned to 16, and its boxed value) took that path: about 250 instructions
//! per request more than plain `mi_malloc`, and blocks of the wrong size.
//!
//! Guarantee: every block returned is aligned as its layout asks. A layout aligned to at most
//! 16 bytes gets a plain `mi_malloc` block of its size rounded up to a multiple of its
//! alignment: mimalloc's size classes are multiples of 8 bytes, and of 16 above 16, and each
//! page's first block is 16-aligned, so a block is aligned to any power of two up to 16 that
//! divides the size asked for (the `natural_alignment_holds` test checks every size up to
//! 4 KiB). The rounding costs no memory above 16 bytes, where the size classes are 16-grained
//! anyway. Larger alignments go to the `_aligned` functions, as before.

#![allow(unsafe_code)]

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment mimalloc gives every block whose size it divides
/// (`MI_MAX_ALIGN_SIZE`).
const NATURAL_ALIGN: usize = 16;

/// mimalloc, with plain `mi_malloc` for layouts its size classes already align.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// The size to ask plain `mi_malloc` for so that its block is aligned to `align`: `size`
/// rounded up to a multiple of `align`, or `None` when `align` is above what its blocks give.
/// (`Layout` guarantees the rounded size does not overflow.)
fn natural_size(size: usize, align: usize) -> Option<usize> {
    (align <= NATURAL_ALIGN).then(|| size.next_multiple_of(align))
}

// SAFETY: each method returns memory from mimalloc (or null when it has none) aligned as the
// layout asks: plain `mi_malloc`/`mi_zalloc`/`mi_realloc` only for layouts whose alignment
// their blocks give (see the module docs), the `_aligned` functions otherwise. `mi_free` and
// `mi_realloc` accept any block from either family, so `dealloc` and `realloc` need not know
// which one allocated it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match natural_size(layout.size(), layout.align()) {
            // SAFETY: mimalloc allocates any size; the block is aligned (see `natural_size`).
            Some(size) => unsafe { mi_malloc(size).cast() },
            // SAFETY: the alignment is a power of two, as `Layout` guarantees.
            None => unsafe { mi_malloc_aligned(layout.size(), layout.align()).cast() },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match natural_size(layout.size(), layout.align()) {
            // SAFETY: as in `alloc`.
            Some(size) => unsafe { mi_zalloc(size).cast() },
            // SAFETY: as in `alloc`.
            None => unsafe { mi_zalloc_aligned(layout.size(), layout.align()).cast() },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned, which mimalloc allocated.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let ptr = ptr.cast::<c_void>();
        match natural_size(new_size, layout.align()) {
            // SAFETY: `ptr` is a block from mimalloc; a block it moves to is a plain one, so
            // aligned (see `natural_size`); one it keeps already was.
            Some(size) => unsafe { mi_realloc(ptr, size).cast() },
            // SAFETY: `ptr` is a block from mimalloc and the alignment a power of two.
            None => unsafe { mi_realloc_aligned(ptr, new_size, layout.align()).cast() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB at every alignment up to 16, many blocks at a time (so several
    /// pages of each size class are used): each block is aligned.
    #[test]
    fn natural_alignment_holds() {
        let alloc = MiMalloc;
        for size in 1..=4096usize {
            for align in [1usize, 2, 4, 8, 16] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                let blocks: Vec<*mut u8> = (0..64)
                    // SAFETY: the layout's size is not zero.
                    .map(|_| unsafe { alloc.alloc(layout) })
                    .collect();
                for &p in &blocks {
                    assert!(!p.is_null(), "size {size}: no memory");
                    assert_eq!(p as usize % align, 0, "size {size} align {align}: {p:p}");
                }
                for p in blocks {
                    // SAFETY: allocated above with this layout.
                    unsafe { alloc.dealloc(p, layout) }
                }
            }
        }
    }

    /// Layouts mimalloc's plain blocks would not align go to the aligned functions, and a
    /// reallocation, growing or shrinking, keeps the alignment and the bytes.
    #[test]
    fn other_layouts_and_reallocation() {
        let alloc = MiMalloc;
        for (size, align) in [
            (24, 16),
            (8, 16),
            (100, 64),
            (4096, 4096),
            (1 << 20, 32),
            (40, 8),
        ] {
            for new_size in [size * 3, size + 16, align.max(16), 1] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: the layout's size is not zero.
                let p = unsafe { alloc.alloc_zeroed(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                // SAFETY: `p` holds `size` bytes, zeroed by `alloc_zeroed`.
                let bytes = unsafe { std::slice::from_raw_parts_mut(p, size) };
                assert!(bytes.iter().all(|&b| b == 0));
                bytes.fill(0xA5);
                // SAFETY: `p` is this allocator's block with `layout`; `new_size` is not zero.
                let q = unsafe { alloc.realloc(p, layout, new_size) };
                assert!(!q.is_null());
                assert_eq!(
                    q as usize % align,
                    0,
                    "realloc {size} -> {new_size}, {align}"
                );
                let kept = size.min(new_size);
                // SAFETY: `q` holds at least `kept` bytes, copied from the old block.
                let copied = unsafe { std::slice::from_raw_parts(q, kept) };
                assert!(copied.iter().all(|&b| b == 0xA5));
                let new_layout = Layout::from_size_align(new_size, align).expect("valid layout");
                // SAFETY: `q` came from `realloc` with this size and alignment.
                unsafe { alloc.dealloc(q, new_layout) }
            }
        }
    }
}
