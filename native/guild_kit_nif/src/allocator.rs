//! The global allocator of the NIF library: the system allocator, counting the bytes
//! it holds (the `cap` crate, with no limit), so that `GuildKit.native_memory/0` can
//! tell how much memory GuildKit's native code uses (and tests can tell that dropping
//! structures frees it). The counting is the crate's, so this crate has no unchecked code
//! for it.
//!
//! Wrapping the VM's allocator instead (`enif_alloc`, rustler's `EnifAllocator`) would
//! show this memory in `:erlang.memory/0` and observer, but made member-list puts
//! 52-64% slower on the idle machine, with churn and bulk builds about even
//! (`bench/RESULTS.md`), so the system allocator stays and `GuildKit.native_memory/0`
//! is where to look.
//!
//! One atomic add per allocation and free; no lock.

use cap::Cap;
use std::alloc::System;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes of memory GuildKit's native code holds right now.
#[rustler::nif]
fn native_memory() -> usize {
    ALLOCATOR.allocated()
}
