//! Bucket math for fan-out: which worker serves which receiver.
//!
//! A receiver's bucket is its hash modulo the number of buckets. The NIF crate feeds
//! in `:erlang.phash2/1` of each pid (27 bits, what `enif_hash(ERL_NIF_PHASH2, ..)`
//! returns), so a receiver's bucket equals `rem(:erlang.phash2(pid), buckets)` in
//! Elixir. That is also `:erlang.phash2(pid, buckets)` when `buckets` is a power of
//! two, but not in general: `phash2/2` reduces the full 32-bit hash, which the NIF API
//! does not expose.
//!
//! The only property fan-out order depends on is that the bucket is a pure function of
//! the receiver and the bucket count: every message for one receiver then goes through
//! the same worker, whose mailbox is FIFO.

use std::sync::Mutex;

/// Most buckets a [`Partition`] accepts. Far more workers than any node has schedulers;
/// the bound keeps a bad count from allocating a huge table.
pub const MAX_BUCKETS: u32 = 1 << 16;

/// The bucket of an item whose hash is `hash`, among `buckets` buckets.
///
/// Time: O(1).
///
/// # Panics
///
/// When `buckets` is zero. [`Partition::new`] checks the count once so that callers
/// in a loop do not have to.
#[inline]
pub fn bucket(hash: u32, buckets: u32) -> usize {
    (hash % buckets) as usize
}

/// `hash % divisor` without a division instruction (some 25 cycles, a good part of what
/// a receiver costs), as two multiplications: Lemire, Kaser and Kurz, "Faster
/// Remainder by Direct Computation" (2019). Exact for every `u32` hash and divisor.
#[derive(Debug, Clone, Copy)]
struct FastRemainder {
    divisor: u32,
    /// `ceil(2^64 / divisor)`, wrapping to 0 for a divisor of 1 (whose remainder is
    /// always 0, which the formula gives).
    magic: u64,
}

impl FastRemainder {
    fn new(divisor: u32) -> Self {
        debug_assert!(divisor > 0);
        FastRemainder {
            divisor,
            magic: (u64::MAX / u64::from(divisor)).wrapping_add(1),
        }
    }

    #[inline]
    fn of(self, hash: u32) -> usize {
        let low = self.magic.wrapping_mul(u64::from(hash));
        ((u128::from(low) * u128::from(self.divisor)) >> 64) as usize
    }
}

/// Why a bucket count was refused: it is zero or above [`MAX_BUCKETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBucketCount(pub u32);

/// Items appended in chunks of at most [`Chunked::CHUNK`] items, so that growing never
/// moves or copies what is already stored: a bucket of a million receivers grows by
/// 32 KB at a time, where a vector would copy megabytes at each doubling (and fault in
/// the fresh pages in one go, which was seen to take 8 ms).
///
/// ```
/// use guild_kit_core::partition::Chunked;
///
/// let mut items = Chunked::new();
/// for i in 0..10_000 {
///     items.push(i);
/// }
/// assert_eq!(items.len(), 10_000);
/// assert_eq!(items.get(4_096), Some(&4_096));
/// assert_eq!(items.iter_from(9_998).copied().collect::<Vec<_>>(), vec![9_998, 9_999]);
/// ```
#[derive(Debug, Clone)]
pub struct Chunked<T: 'static> {
    /// Full chunks of exactly [`Chunked::CHUNK`] items.
    full: Vec<Vec<T>>,
    /// The chunk being filled: a field of its own, so that a push reads and writes one
    /// vector's length rather than the last element's of `full` (a push took 5 ns that
    /// way, against under 1 ns for a vector's).
    tail: Vec<T>,
    /// Where whole chunks come from and go back to, if anywhere.
    pool: Option<&'static ChunkPool<T>>,
}

impl<T: PartialEq + 'static> PartialEq for Chunked<T> {
    /// Equal items in equal order; where the chunks come from does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter_from(0).eq(other.iter_from(0))
    }
}

impl<T: Eq + 'static> Eq for Chunked<T> {}

impl<T: 'static> Default for Chunked<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> Drop for Chunked<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool {
            pool.give(self.full.drain(..).chain([std::mem::take(&mut self.tail)]));
        }
    }
}

impl<T: 'static> Chunked<T> {
    /// Items per chunk.
    pub const CHUNK: usize = 4096;

    /// An empty sequence; it allocates on the first push.
    ///
    /// Time: O(1).
    pub fn new() -> Self {
        Chunked {
            full: Vec::new(),
            tail: Vec::new(),
            pool: None,
        }
    }

    /// An empty sequence that takes its chunks from `pool` when it has some, and gives
    /// them back to it when dropped.
    ///
    /// Time: O(1).
    pub fn with_pool(pool: &'static ChunkPool<T>) -> Self {
        Chunked {
            full: Vec::new(),
            tail: Vec::new(),
            pool: Some(pool),
        }
    }

    /// Appends `item`. The first chunk grows like a vector (so that short sequences
    /// stay small); the others are allocated whole.
    ///
    /// Time: O(1); amortised O(1) within the first chunk.
    #[inline]
    pub fn push(&mut self, item: T) {
        if self.tail.len() == Self::CHUNK || self.tail.capacity() == 0 {
            self.grow();
        }
        self.tail.push(item);
    }

    /// A new chunk when the tail is full; for the first item, a spare chunk from the
    /// pool if it has one (else the vector grows as vectors do).
    #[cold]
    fn grow(&mut self) {
        if self.tail.len() == Self::CHUNK {
            self.start_chunk();
        } else if let Some(spare) = self.pool.and_then(ChunkPool::take) {
            self.tail = spare;
        }
    }

    #[cold]
    fn start_chunk(&mut self) {
        let fresh = self
            .pool
            .and_then(ChunkPool::take)
            .unwrap_or_else(|| Vec::with_capacity(Self::CHUNK));
        let full = std::mem::replace(&mut self.tail, fresh);
        self.full.push(full);
    }

    /// Number of items.
    ///
    /// Time: O(1).
    pub fn len(&self) -> usize {
        self.full.len() * Self::CHUNK + self.tail.len()
    }

    /// True when there is no item.
    ///
    /// Time: O(1).
    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.tail.is_empty()
    }

    /// The item at `index`, if any.
    ///
    /// Time: O(1).
    pub fn get(&self, index: usize) -> Option<&T> {
        match self.full.get(index / Self::CHUNK) {
            Some(chunk) => chunk.get(index % Self::CHUNK),
            None => self.tail.get(index - self.full.len() * Self::CHUNK),
        }
    }

    /// The items from `start` on, in order (none when `start` is past the end).
    ///
    /// Time: O(1) to start, O(1) per item.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        let in_full = self.full.len() * Self::CHUNK;
        let (first, skip) = (start / Self::CHUNK, start % Self::CHUNK);
        let tail_start = start.saturating_sub(in_full).min(self.tail.len());
        self.full
            .iter()
            .skip(first)
            .enumerate()
            .flat_map(move |(i, chunk)| chunk[if i == 0 { skip } else { 0 }..].iter())
            .chain(self.tail[tail_start..].iter())
    }
}

/// Spare chunks for [`Chunked`] sequences, at most a fixed number of them: memory that
/// was written once and so costs no page faults when it is written again. A fan-out of
/// 100,000 receivers fills 25 chunks of 32 KB at least twice; on fresh pages, clearing
/// them in the kernel took as long as the walk that filled them.
///
/// ```
/// use guild_kit_core::partition::{Chunked, ChunkPool};
///
/// static POOL: ChunkPool<u64> = ChunkPool::new(4);
/// let mut items = Chunked::with_pool(&POOL);
/// for i in 0..10_000 {
///     items.push(i);
/// }
/// drop(items);
/// assert_eq!(POOL.spare(), 3);
/// let mut again = Chunked::with_pool(&POOL);
/// again.push(7);
/// assert_eq!(POOL.spare(), 2);
/// assert_eq!(again.iter_from(0).copied().collect::<Vec<_>>(), vec![7]);
/// ```
#[derive(Debug)]
pub struct ChunkPool<T> {
    spare: Mutex<Vec<Vec<T>>>,
    most: usize,
}

impl<T: 'static> ChunkPool<T> {
    /// A pool that keeps at most `most` spare chunks.
    pub const fn new(most: usize) -> Self {
        ChunkPool {
            spare: Mutex::new(Vec::new()),
            most,
        }
    }

    /// How many spare chunks it holds.
    ///
    /// Time: O(1).
    pub fn spare(&self) -> usize {
        self.lock().len()
    }

    /// An empty chunk of [`Chunked::CHUNK`] capacity, if one is spare.
    ///
    /// Time: O(1).
    fn take(&self) -> Option<Vec<T>> {
        self.lock().pop()
    }

    /// Keeps the whole chunks among `chunks`, emptied, while there is room; the rest
    /// are freed once the lock is released.
    ///
    /// Time: O(chunks), plus dropping their items.
    fn give(&self, chunks: impl Iterator<Item = Vec<T>>) {
        let mut whole = chunks.filter(|chunk| chunk.capacity() == Chunked::<T>::CHUNK);
        let mut spare = self.lock();
        while spare.len() < self.most {
            let Some(mut chunk) = whole.next() else { break };
            chunk.clear();
            spare.push(chunk);
        }
        drop(spare);
        // `whole`, dropped here, frees what was not kept.
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<T>>> {
        // The vector is valid whatever panicked while it was held: nothing is half-done.
        self.spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Items split into buckets by hash, each bucket in input order, duplicates kept.
///
/// ```
/// use guild_kit_core::partition::Partition;
///
/// let mut partition = Partition::new(3).unwrap();
/// for (item, hash) in [("a", 7), ("b", 3), ("c", 4), ("a", 7)] {
///     partition.push(hash, item);
/// }
/// assert_eq!(partition.len(), 4);
/// let buckets: Vec<Vec<&str>> = partition
///     .into_buckets()
///     .iter()
///     .map(|bucket| bucket.iter_from(0).copied().collect())
///     .collect();
/// assert_eq!(buckets, vec![vec!["b"], vec!["a", "c", "a"], vec![]]);
/// ```
#[derive(Debug, Clone)]
pub struct Partition<T: 'static> {
    buckets: Vec<Chunked<T>>,
    remainder: FastRemainder,
    len: usize,
}

impl<T: 'static> Partition<T> {
    /// An empty partition into `buckets` buckets, which must be in `1..=MAX_BUCKETS`.
    ///
    /// Time: O(buckets).
    pub fn new(buckets: u32) -> Result<Self, BadBucketCount> {
        Self::with_chunks(buckets, Chunked::new)
    }

    /// [`Partition::new`] with buckets whose chunks come from `pool` and go back to it
    /// (see [`ChunkPool`]).
    ///
    /// Time: O(buckets).
    pub fn with_pool(buckets: u32, pool: &'static ChunkPool<T>) -> Result<Self, BadBucketCount> {
        Self::with_chunks(buckets, || Chunked::with_pool(pool))
    }

    fn with_chunks(
        buckets: u32,
        bucket: impl FnMut() -> Chunked<T>,
    ) -> Result<Self, BadBucketCount> {
        if buckets == 0 || buckets > MAX_BUCKETS {
            return Err(BadBucketCount(buckets));
        }
        Ok(Partition {
            buckets: std::iter::repeat_with(bucket)
                .take(buckets as usize)
                .collect(),
            remainder: FastRemainder::new(buckets),
            len: 0,
        })
    }

    /// Number of buckets.
    ///
    /// Time: O(1).
    pub fn bucket_count(&self) -> u32 {
        self.buckets.len() as u32
    }

    /// Appends `item` to the bucket of `hash`. With a single bucket the hash is not
    /// read, so callers may pass 0 rather than compute it.
    ///
    /// Time: O(1) amortised.
    #[inline]
    pub fn push(&mut self, hash: u32, item: T) {
        // `bucket(hash, count)`; the count was checked at construction.
        let index = self.remainder.of(hash);
        self.buckets[index].push(item);
        self.len += 1;
    }

    /// Number of items added, duplicates included.
    ///
    /// Time: O(1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no item was added.
    ///
    /// Time: O(1).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buckets, each in input order: bucket `i` holds the items whose hash is `i`
    /// modulo the count.
    ///
    /// Time: O(1).
    pub fn into_buckets(self) -> Vec<Chunked<T>> {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contents<T: Clone>(bucket: &Chunked<T>) -> Vec<T> {
        bucket.iter_from(0).cloned().collect()
    }

    #[test]
    fn one_bucket_takes_everything() {
        let mut partition = Partition::new(1).unwrap();
        for hash in [0, 1, u32::MAX, 1 << 26] {
            partition.push(hash, hash);
        }
        assert_eq!(partition.bucket_count(), 1);
        let buckets = partition.into_buckets();
        assert_eq!(buckets.len(), 1);
        assert_eq!(contents(&buckets[0]), vec![0, 1, u32::MAX, 1 << 26]);
    }

    #[test]
    fn fast_remainder_at_the_edges() {
        for divisor in [
            1,
            2,
            3,
            7,
            1000,
            MAX_BUCKETS - 1,
            MAX_BUCKETS,
            u32::MAX - 1,
            u32::MAX,
        ] {
            for hash in [
                0,
                1,
                divisor - 1,
                divisor,
                divisor.wrapping_add(1),
                (1 << 27) - 1,
                u32::MAX,
            ] {
                assert_eq!(FastRemainder::new(divisor).of(hash), bucket(hash, divisor));
            }
        }
    }

    #[test]
    fn bucket_is_the_remainder() {
        assert_eq!(bucket(0, 7), 0);
        assert_eq!(bucket(13, 7), 6);
        assert_eq!(bucket(14, 7), 0);
        assert_eq!(bucket((1 << 27) - 1, 1 << 4), 15);
    }

    #[test]
    fn refuses_bad_counts() {
        assert_eq!(Partition::<u8>::new(0).unwrap_err(), BadBucketCount(0));
        assert_eq!(
            Partition::<u8>::new(MAX_BUCKETS + 1).unwrap_err(),
            BadBucketCount(MAX_BUCKETS + 1)
        );
        assert!(Partition::<u8>::new(MAX_BUCKETS).is_ok());
    }

    #[test]
    fn empty_partition_has_empty_buckets() {
        let partition = Partition::<u8>::new(4).unwrap();
        assert!(partition.is_empty());
        assert!(partition.into_buckets().iter().all(Chunked::is_empty));
    }

    proptest! {
        /// Model: bucket `b` is the input filtered to the items whose hash is `b` mod n,
        /// in input order. This also shows that every item lands exactly once and that
        /// duplicates are kept.
        #[test]
        fn matches_filter_model(
            items in proptest::collection::vec((0u32..(1 << 27), any::<u16>()), 0..500),
            buckets in 1u32..70,
        ) {
            let mut partition = Partition::new(buckets).unwrap();
            for &(hash, item) in &items {
                partition.push(hash, (hash, item));
            }
            prop_assert_eq!(partition.len(), items.len());
            let got = partition.into_buckets();
            prop_assert_eq!(got.len(), buckets as usize);
            for (b, bucket) in got.iter().enumerate() {
                let bucket_items = contents(bucket);
                prop_assert_eq!(bucket.len(), bucket_items.len());
                let expected: Vec<(u32, u16)> = items
                    .iter()
                    .copied()
                    .filter(|&(hash, _)| (hash % buckets) as usize == b)
                    .collect();
                prop_assert_eq!(bucket_items, expected);
            }
        }

        /// Model: a vector. Lengths around chunk boundaries, reads from any start.
        #[test]
        fn chunked_matches_a_vector(
            len in prop_oneof![0usize..10, 4090usize..4100, 8190usize..8200, 0usize..20_000],
            start in 0usize..21_000,
        ) {
            let mut chunked = Chunked::new();
            for i in 0..len {
                chunked.push(i);
            }
            let model: Vec<usize> = (0..len).collect();
            prop_assert_eq!(chunked.len(), len);
            prop_assert_eq!(chunked.is_empty(), len == 0);
            prop_assert_eq!(chunked.get(start), model.get(start));
            let from: Vec<usize> = chunked.iter_from(start).copied().collect();
            prop_assert_eq!(from, model.get(start..).unwrap_or(&[]).to_vec());
        }

        /// Model: vectors. Sequences that reuse the chunks earlier ones gave back hold
        /// exactly their own items, whatever lengths came before; the pool never keeps
        /// more than its bound.
        #[test]
        fn pooled_chunks_hold_only_their_own_items(
            lens in proptest::collection::vec(
                prop_oneof![0usize..10, 4090usize..4100, 0usize..30_000],
                1..6,
            ),
            buckets in 1u32..4,
        ) {
            static POOL: ChunkPool<(usize, usize)> = ChunkPool::new(5);
            for (round, &len) in lens.iter().enumerate() {
                let mut partition = Partition::with_pool(buckets, &POOL).unwrap();
                for i in 0..len {
                    partition.push(i as u32, (round, i));
                }
                for (b, bucket) in partition.into_buckets().iter().enumerate() {
                    let model: Vec<(usize, usize)> = (0..len)
                        .filter(|&i| i % buckets as usize == b)
                        .map(|i| (round, i))
                        .collect();
                    prop_assert_eq!(bucket.len(), model.len());
                    prop_assert_eq!(contents(bucket), model);
                }
                prop_assert!(POOL.spare() <= 5);
            }
        }

        /// The division-free remainder is the remainder, for any hash and count.
        #[test]
        fn fast_remainder_is_the_remainder(hash in any::<u32>(), divisor in 1u32..) {
            prop_assert_eq!(FastRemainder::new(divisor).of(hash), bucket(hash, divisor));
        }

        /// For a power-of-two count the bucket is the hash's low bits: the reason it
        /// equals `:erlang.phash2(pid, count)` for such counts (see the module docs).
        #[test]
        fn power_of_two_buckets_are_low_bits(hash in 0u32..(1 << 27), bits in 0u32..=16) {
            let buckets = 1u32 << bits;
            prop_assert_eq!(bucket(hash, buckets), (hash & (buckets - 1)) as usize);
        }
    }
}
