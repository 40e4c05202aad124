//! The process allocator of the `lb` and `sample-backend` binaries: mimalloc, called through its
//! plain entry points.
//!
//! Compiled into the binaries (`#[path]` module), not the library, which forbids `unsafe`.
//!
//! The `mimalloc` crate's `GlobalAlloc` calls `mi_malloc_aligned` for every allocation. mimalloc
//! takes its fast path there only up to 1 KiB; larger blocks (lb's 4 KiB head buffers, body
//! chunks) go through the generic aligned path, about 1,900 instructions per keep-alive request
//! (callgrind, `benches/instructions.py`). Every mimalloc block is at least 8-byte aligned, so a
//! layout that asks for no more than that is served by `mi_malloc`/`mi_zalloc`/`mi_realloc`;
//! the aligned calls remain for the rest.
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Every block mimalloc returns is aligned to at least this.
const PLAIN_ALIGN: usize = 8;

/// mimalloc as the global allocator.
pub struct Mimalloc;

// SAFETY: mimalloc is thread-safe; each call forwards the layout's size, and its alignment
// whenever that exceeds what every mimalloc block already has; `mi_free` takes any block.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of the calls above.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from one of the calls above with this layout's alignment.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for_across_sizes() {
        for align in [1, 2, 4, 8, 16, 64, 4096] {
            for size in [1, 7, 8, 24, 1000, 1025, 4096, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed with its layout.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "realloc {size}/{align}"
                    );
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
