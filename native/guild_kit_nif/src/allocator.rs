//! The global allocator of the NIF library: the system allocator, counting the bytes
//! it holds, so that `GuildKit.native_memory/0` can tell how much memory GuildKit's
//! native code uses (and tests can tell that dropping structures frees it).
//!
//! Wrapping the VM's allocator instead (`enif_alloc`, rustler's `EnifAllocator`) would
//! show this memory in `:erlang.memory/0` and observer, but made allocation-heavy calls
//! slower (builds, adds and removes, member-list puts; `bench/RESULTS.md`), so the
//! system allocator stays and `GuildKit.native_memory/0` is where to look.
//!
//! One relaxed atomic add per allocation and free; no lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

pub struct CountingAllocator;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

/// Bytes currently allocated through this allocator.
pub fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded to `System` unchanged (the default `alloc_zeroed`
// goes through `alloc`); the counter is bookkeeping only.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    // Kept for the system allocator's in-place growth of large buffers.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCATED.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

/// Bytes of memory GuildKit's native code holds right now.
#[rustler::nif]
fn native_memory() -> isize {
    allocated()
}
