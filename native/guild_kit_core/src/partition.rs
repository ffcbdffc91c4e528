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

/// Why a bucket count was refused: it is zero or above [`MAX_BUCKETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBucketCount(pub u32);

/// Items split into buckets by hash, duplicates kept, with a count per bucket.
///
/// Each bucket is an accumulator `A` that the caller updates in place, so the NIF can
/// build its Erlang lists directly (one cons cell per item, no intermediate vector),
/// while `Partition<Vec<T>>` collects items in input order:
///
/// ```
/// use guild_kit_core::partition::Partition;
///
/// let mut partition = Partition::new(3).unwrap();
/// for (item, hash) in [("a", 7), ("b", 3), ("c", 4), ("a", 7)] {
///     partition.push(hash, item);
/// }
/// assert_eq!(partition.len(), 4);
/// assert_eq!(partition.counts(), &[1, 3, 0]);
/// assert_eq!(partition.into_buckets(), vec![vec!["b"], vec!["a", "c", "a"], vec![]]);
/// ```
#[derive(Debug, Clone)]
pub struct Partition<A> {
    buckets: Vec<A>,
    counts: Vec<usize>,
    len: usize,
}

impl<A> Partition<A> {
    /// A partition into `buckets` buckets, which must be in `1..=MAX_BUCKETS`, each
    /// starting as `empty()`.
    ///
    /// Time: O(buckets).
    pub fn with_buckets(buckets: u32, empty: impl FnMut() -> A) -> Result<Self, BadBucketCount> {
        if buckets == 0 || buckets > MAX_BUCKETS {
            return Err(BadBucketCount(buckets));
        }
        Ok(Partition {
            buckets: std::iter::repeat_with(empty)
                .take(buckets as usize)
                .collect(),
            counts: vec![0; buckets as usize],
            len: 0,
        })
    }

    /// Adds one item to the bucket of `hash`: `add` updates that bucket's accumulator.
    ///
    /// Time: O(1) plus `add`.
    #[inline]
    pub fn add(&mut self, hash: u32, add: impl FnOnce(&mut A)) {
        // The count was checked at construction, so the modulo cannot divide by zero.
        let index = bucket(hash, self.buckets.len() as u32);
        add(&mut self.buckets[index]);
        self.counts[index] += 1;
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

    /// Number of items in each bucket.
    ///
    /// Time: O(1).
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// The accumulators, bucket `i` holding the items whose hash is `i` modulo the
    /// count.
    ///
    /// Time: O(1).
    pub fn into_accumulators(self) -> Vec<A> {
        self.buckets
    }
}

impl<T> Partition<Vec<T>> {
    /// An empty partition into `buckets` vectors; see [`Partition::with_buckets`].
    ///
    /// Time: O(buckets).
    pub fn new(buckets: u32) -> Result<Self, BadBucketCount> {
        Self::with_buckets(buckets, Vec::new)
    }

    /// Appends `item` to the bucket of `hash`.
    ///
    /// Time: O(1) amortised.
    #[inline]
    pub fn push(&mut self, hash: u32, item: T) {
        self.add(hash, |bucket| bucket.push(item));
    }

    /// The buckets, each in input order.
    ///
    /// Time: O(1).
    pub fn into_buckets(self) -> Vec<Vec<T>> {
        self.into_accumulators()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_bucket_takes_everything() {
        let mut partition = Partition::new(1).unwrap();
        for hash in [0, 1, u32::MAX, 1 << 26] {
            partition.push(hash, hash);
        }
        assert_eq!(
            partition.into_buckets(),
            vec![vec![0, 1, u32::MAX, 1 << 26]]
        );
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
        assert_eq!(Partition::<Vec<u8>>::new(0).unwrap_err(), BadBucketCount(0));
        assert_eq!(
            Partition::<Vec<u8>>::new(MAX_BUCKETS + 1).unwrap_err(),
            BadBucketCount(MAX_BUCKETS + 1)
        );
        assert!(Partition::<Vec<u8>>::new(MAX_BUCKETS).is_ok());
    }

    #[test]
    fn empty_partition_has_empty_buckets() {
        let partition = Partition::<Vec<u8>>::new(4).unwrap();
        assert!(partition.is_empty());
        assert_eq!(partition.into_buckets(), vec![Vec::<u8>::new(); 4]);
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
            let counts = partition.counts().to_vec();
            let got = partition.into_buckets();
            prop_assert_eq!(counts, got.iter().map(Vec::len).collect::<Vec<_>>());
            prop_assert_eq!(got.len(), buckets as usize);
            for (b, bucket_items) in got.iter().enumerate() {
                let expected: Vec<(u32, u16)> = items
                    .iter()
                    .copied()
                    .filter(|&(hash, _)| (hash % buckets) as usize == b)
                    .collect();
                prop_assert_eq!(bucket_items, &expected);
            }
        }

        /// A cons-list accumulator (what the NIF builds) holds each bucket's items in
        /// reverse input order.
        #[test]
        fn prepending_accumulator_reverses(
            items in proptest::collection::vec(0u32..1000, 0..300),
            buckets in 1u32..10,
        ) {
            let mut partition = Partition::with_buckets(buckets, Vec::new).unwrap();
            for &item in &items {
                partition.add(item, |bucket: &mut Vec<u32>| bucket.insert(0, item));
            }
            for (b, bucket_items) in partition.into_accumulators().into_iter().enumerate() {
                let mut expected: Vec<u32> =
                    items.iter().copied().filter(|&item| bucket(item, buckets) == b).collect();
                expected.reverse();
                prop_assert_eq!(bucket_items, expected);
            }
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
