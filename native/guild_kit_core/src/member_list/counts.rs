//! Member counts per group, in chunks shared between snapshots.
//!
//! A list has up to 65,535 groups. Copying all their counts on the first write after a
//! snapshot would cost that write a quarter of a megabyte; in chunks of
//! [`CHUNK`] counts it copies one chunk and the chunk table (at most 128 pointers).

use std::sync::Arc;

/// Counts per chunk.
const CHUNK: usize = 512;

/// A fixed number of `u32` counters with O(1) clones.
#[derive(Debug, Clone)]
pub struct Counts {
    chunks: Arc<Vec<Arc<[u32; CHUNK]>>>,
    len: usize,
}

impl Counts {
    /// `len` counters, all zero.
    pub fn new(len: usize) -> Self {
        let zero = Arc::new([0; CHUNK]);
        Counts {
            chunks: Arc::new(vec![zero; len.div_ceil(CHUNK)]),
            len,
        }
    }

    /// The counter at `i < len`. Time: O(1).
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.chunks[i / CHUNK][i % CHUNK]
    }

    /// Adds `delta` to the counter at `i < len` and returns its new value; the counter
    /// must stay within `u32`. Time: O(1), plus one chunk copied if a clone shares it.
    pub fn add(&mut self, i: usize, delta: i32) -> u32 {
        let chunk = Arc::make_mut(&mut Arc::make_mut(&mut self.chunks)[i / CHUNK]);
        let count = &mut chunk[i % CHUNK];
        *count = count.wrapping_add_signed(delta);
        *count
    }

    /// Number of counters. Time: O(1).
    pub fn slots(&self) -> usize {
        self.len
    }

    /// Heap bytes, counting every chunk as if it were not shared.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * (std::mem::size_of::<[u32; CHUNK]>() + 3 * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_do_not_see_later_writes() {
        let mut counts = Counts::new(1500);
        counts.add(0, 3);
        counts.add(1499, 1);
        let snapshot = counts.clone();
        assert_eq!(counts.add(1499, 1), 2);
        assert_eq!(counts.add(700, -0), 0);
        assert_eq!((snapshot.get(0), snapshot.get(1499)), (3, 1));
        assert_eq!((counts.get(0), counts.get(1499)), (3, 2));
        assert_eq!(counts.slots(), 1500);
    }
}
