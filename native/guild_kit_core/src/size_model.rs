//! How many heap words an Erlang term takes on 64-bit OTP 25, as
//! `:erts_debug.flat_size/1` counts them: the term's own words and those of everything
//! it contains, counting shared subterms once per occurrence and excluding the one word
//! that holds the term itself.
//!
//! Each function here sizes one node of a term (a tuple's header and slots, a list's
//! cons cells, a binary's header...), never its children; [`crate::size_walk`] adds
//! them up. All of them are O(1) except the hashmap node counts.
//!
//! The figures were checked against `:erts_debug.flat_size/1` on OTP 25.2.3:
//!
//! | term | words |
//! |---|---|
//! | small integer (−2^59 … 2^59−1), atom, `[]`, local pid or port | 0 |
//! | bignum | 1 + ceil(magnitude bytes / 8): its header's arity + 1, as for floats, references and other nodes' pids, ports and references |
//! | float | 2 |
//! | list | 2 per cons cell |
//! | tuple | 1 + arity (`{}` → 0) |
//! | heap binary (≤ 64 bytes) | 2 + ceil(bytes / 8) |
//! | refcounted binary | 6 |
//! | sub-binary on byte boundaries | as its parent: 6, or a heap binary of its length |
//! | other sub-binary (bit offset, bits past the last byte) | 5 + 6, or 5 + a heap binary of its bytes and one or two more |
//! | map with 0 keys / 1–32 keys | 3 / 2n + 4 |
//! | map with more than 32 keys (a HAMT) | 3n + 2 · internal nodes |
//! | remote pid or port | 4 |
//! | local / remote reference | 3 / 5 |
//! | fun or external fun | 5 + captured variables |

/// Bytes in a word on the 64-bit emulators this model describes.
pub const WORD_BYTES: u64 = 8;

/// Largest binary OTP stores on the process heap; larger ones are refcounted.
pub const HEAP_BINARY_LIMIT: usize = 64;

/// Largest map OTP stores flat (a key tuple plus values); larger maps are HAMTs.
pub const SMALL_MAP_LIMIT: usize = 32;

/// Smallest and largest integers stored immediately in a word (60-bit fixnums).
pub const FIXNUM_MIN: i64 = -(1 << 59);
/// See [`FIXNUM_MIN`].
pub const FIXNUM_MAX: i64 = (1 << 59) - 1;

/// A boxed float: header plus the 64-bit value.
pub const FLOAT_WORDS: u64 = 2;
/// One list cell: head and tail.
pub const CONS_WORDS: u64 = 2;
/// A `ProcBin`, the on-heap handle of a refcounted binary.
pub const REFC_BINARY_WORDS: u64 = 6;
/// An `ErlSubBin`, which a slice that is not on byte boundaries keeps on top of its data.
pub const SUB_BINARY_WORDS: u64 = 5;
/// An external pid or port (one of another node, or of an earlier incarnation of this one).
pub const REMOTE_PID_WORDS: u64 = 4;
/// A reference of this node: plain, monitor, ETS table or NIF resource.
pub const LOCAL_REF_WORDS: u64 = 3;
/// A reference of another node.
pub const REMOTE_REF_WORDS: u64 = 5;
/// A fun's fixed part; each captured variable adds one slot (and its own size).
pub const FUN_WORDS: u64 = 5;
/// The fixed part of a flat map: header, size and key-tuple pointer. Empty maps have
/// only this, as their key tuple is the shared empty tuple.
pub const EMPTY_MAP_WORDS: u64 = 3;

/// Words of an integer that fits an `i64`: 0 for a fixnum, 2 for a one-digit bignum.
///
/// Time: O(1).
pub fn int64_words(value: i64) -> u64 {
    if (FIXNUM_MIN..=FIXNUM_MAX).contains(&value) {
        0
    } else {
        2
    }
}

/// Words of a tuple of `arity` elements, excluding the elements' own sizes.
///
/// Time: O(1).
pub fn tuple_words(arity: usize) -> u64 {
    if arity == 0 {
        0 // `{}` is a shared literal
    } else {
        1 + arity as u64
    }
}

/// Words of the spine of a list of `cells` cons cells.
///
/// Time: O(1).
pub fn list_words(cells: usize) -> u64 {
    CONS_WORDS * cells as u64
}

/// Words of a heap binary of `bytes` bytes: header, size and the bytes rounded up.
///
/// Time: O(1).
pub fn heap_binary_words(bytes: usize) -> u64 {
    2 + words_for_bytes(bytes as u64)
}

/// Where a binary keeps its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryHome {
    /// Inline in a heap binary on the process heap (always 64 bytes or less).
    Heap,
    /// Off the heap, behind a refcounted binary's `ProcBin`.
    OffHeap,
}

/// Words of a whole binary (not a slice of another) of `bytes` bytes kept in `home`.
///
/// Time: O(1).
pub fn binary_words(bytes: usize, home: BinaryHome) -> u64 {
    match home {
        BinaryHome::Heap => heap_binary_words(bytes),
        BinaryHome::OffHeap => REFC_BINARY_WORDS,
    }
}

/// Bytes of a binary's payload kept off the process heap: its length when off-heap.
///
/// Time: O(1).
pub fn off_heap_bytes(bytes: usize, home: BinaryHome) -> u64 {
    match home {
        BinaryHome::Heap => 0,
        BinaryHome::OffHeap => bytes as u64,
    }
}

/// Words of a sub-binary of `bytes` whole bytes and `bit_size` more bits, starting
/// `bit_offset` bits into a byte of its parent, which lives in `parent`: as
/// `:erts_debug.flat_size/1` counts it, as if it were copied.
///
/// A slice on byte boundaries counts as its parent's kind: a `ProcBin` (6 words) when
/// the parent is refcounted, else a heap binary of its own length. Anything else (a
/// bit offset, or bits past the last whole byte) keeps its `ErlSubBin` (5 words) on
/// top, over one or two more bytes.
///
/// Time: O(1).
pub fn sub_binary_words(bytes: usize, bit_size: u8, bit_offset: u8, parent: BinaryHome) -> u64 {
    let bits = u32::from(bit_size) + u32::from(bit_offset);
    let (own, extra_bytes) = match bits {
        0 => (0, 0),
        1..=8 => (SUB_BINARY_WORDS, 1),
        _ => (SUB_BINARY_WORDS, 2),
    };
    own + match parent {
        BinaryHome::OffHeap => REFC_BINARY_WORDS,
        BinaryHome::Heap => heap_binary_words(bytes + extra_bytes),
    }
}

/// Bytes of a sub-binary's payload kept off the process heap: its bytes, the last
/// partial one included, when its parent is refcounted.
///
/// Time: O(1).
pub fn sub_binary_off_heap_bytes(bytes: usize, bit_size: u8, parent: BinaryHome) -> u64 {
    match parent {
        BinaryHome::Heap => 0,
        BinaryHome::OffHeap => bytes as u64 + u64::from(bit_size > 0),
    }
}

/// Words of a fun (local or external) capturing `free` variables, excluding the
/// variables' own sizes.
///
/// Time: O(1).
pub fn fun_words(free: usize) -> u64 {
    FUN_WORDS + free as u64
}

/// Words of a flat map (at most [`SMALL_MAP_LIMIT`] keys), excluding keys and values:
/// header, size, key-tuple pointer, one slot per value and the key tuple.
///
/// Time: O(1).
pub fn flatmap_words(size: usize) -> u64 {
    if size == 0 {
        EMPTY_MAP_WORDS
    } else {
        2 * size as u64 + 4
    }
}

/// Words of a hashmap (more than [`SMALL_MAP_LIMIT`] keys) with `internal_nodes` trie
/// nodes, the root included, excluding keys and values.
///
/// Every entry is a 2-word cons cell in a slot of its parent node (3 words), every node
/// but the root sits in a slot of its parent, and every node has a header; the root has
/// a size word too: `3n + 2 · nodes`.
///
/// Time: O(1).
pub fn hashmap_words(size: usize, internal_nodes: u64) -> u64 {
    3 * size as u64 + 2 * internal_nodes
}

/// Expected words of a hashmap of `size` keys with independent uniform hashes:
/// [`hashmap_words`] with [`expected_hashmap_nodes`] nodes.
///
/// Time: O(log size).
pub fn expected_hashmap_words(size: u64) -> f64 {
    3.0 * size as f64 + 2.0 * expected_hashmap_nodes(size)
}

/// Expected internal nodes (root included) of OTP's hashmap trie holding `size` keys
/// with independent uniform hashes.
///
/// A node at depth d ≥ 1 exists for every 4d-bit hash prefix shared by two or more
/// keys, so E[nodes] = 1 + Σ_{d≥1} 16^d · P(Binomial(size, 16^−d) ≥ 2). The hash is
/// 32 bits, but OTP rehashes below depth 8, so prefixes keep behaving as independent
/// nibbles and the sum runs on. The trie words of one random map were within 1.7% of
/// the expectation at 100 keys, 1% at 1,000 and 0.06% at 100,000 (tested on real maps
/// in `test/guild_kit/memory_estimator/estimate_test.exs`).
///
/// Time: O(log size).
pub fn expected_hashmap_nodes(size: u64) -> f64 {
    let n = size as f64;
    let mut nodes = 1.0;
    let mut slots = 1.0f64;
    for depth in 1..=64 {
        slots *= 16.0;
        let expected = slots * prob_at_least_two(n, 1.0 / slots);
        nodes += expected;
        // Past the depth where prefixes outnumber pairs, each level holds about 1/16
        // of the one above; stop when the rest cannot matter.
        if slots > n && expected < 1e-9 * nodes {
            break;
        }
        debug_assert!(depth < 64, "the sum converges long before");
    }
    nodes
}

/// P(Binomial(n, p) ≥ 2), accurate also when it is tiny.
fn prob_at_least_two(n: f64, p: f64) -> f64 {
    if n < 2.0 {
        return 0.0;
    }
    let np = n * p;
    if np > 0.05 {
        // No catastrophic cancellation: the result is not small.
        let none = (n * (-p).ln_1p()).exp();
        let one = np * ((n - 1.0) * (-p).ln_1p()).exp();
        return (1.0 - none - one).max(0.0);
    }
    // Sum the tail term by term: C(n, j) p^j (1 − p)^(n − j) for j ≥ 2.
    let mut term = n * (n - 1.0) / 2.0 * p * p * ((n - 2.0) * (-p).ln_1p()).exp();
    let mut sum = 0.0;
    let mut j = 2.0;
    while term > sum * 1e-17 && j <= n {
        sum += term;
        term *= (n - j) / (j + 1.0) * p / (1.0 - p);
        j += 1.0;
    }
    sum
}

/// Counts the internal nodes (root included) of OTP's hashmap trie over keys whose
/// 32-bit map hashes are `hashes`, each paired with the key's index.
///
/// OTP descends 4 bits at a time from the low end of the hash. After 8 levels the
/// hash is spent and OTP rehashes the key salted with the round number; `rehash(index,
/// round)` must return that hash for key `index` and round ≥ 1. It is called only for
/// keys whose hashes collide in all 32 bits.
///
/// A node exists at depth d ≥ 1 for each d-nibble prefix shared by two or more keys.
/// Sorted by prefix, the keys sharing a prefix are contiguous, so the nodes are
/// Σ_i max(0, lcp_i − lcp_{i−1}) over the common-prefix lengths of neighbours.
///
/// Time: O(n log n). `hashes` is reordered.
pub fn count_hashmap_nodes<F>(hashes: &mut [(u32, usize)], mut rehash: F) -> u64
where
    F: FnMut(usize, u32) -> u32,
{
    // Round 0 is the root's level; deeper rounds only ever see colliding groups.
    let mut nodes = 1;
    let mut groups: Vec<(Vec<(u32, usize)>, u32)> = Vec::new();
    nodes += nodes_below(hashes, &mut groups, 1);
    // A group whose keys still collide after this many rehashes would be a bug in the
    // caller's hash (OTP itself cannot store it); stop rather than loop.
    const MAX_ROUNDS: u32 = 16;
    while let Some((mut group, round)) = groups.pop() {
        if round > MAX_ROUNDS {
            continue;
        }
        for entry in group.iter_mut() {
            entry.0 = rehash(entry.1, round);
        }
        nodes += nodes_below(&mut group, &mut groups, round + 1);
    }
    nodes
}

/// Nodes below one level-8k node whose keys have `hashes` in this round; pushes the
/// groups that collide in all 32 bits, for the next round.
fn nodes_below(
    hashes: &mut [(u32, usize)],
    collided: &mut Vec<(Vec<(u32, usize)>, u32)>,
    next_round: u32,
) -> u64 {
    for entry in hashes.iter_mut() {
        entry.0 = prefix_order(entry.0);
    }
    hashes.sort_unstable_by_key(|entry| entry.0);
    let mut nodes = 0u64;
    let mut previous_lcp = 0u32;
    let mut group_start = 0;
    for i in 1..hashes.len() {
        let lcp = (hashes[i - 1].0 ^ hashes[i].0).leading_zeros() / 4;
        nodes += u64::from(lcp.saturating_sub(previous_lcp));
        previous_lcp = lcp;
        if lcp < 8 {
            if i - group_start >= 2 {
                collided.push((hashes[group_start..i].to_vec(), next_round));
            }
            group_start = i;
        }
    }
    if hashes.len() - group_start >= 2 {
        collided.push((hashes[group_start..].to_vec(), next_round));
    }
    nodes
}

/// The salt OTP 25 gives `make_internal_hash` for a map key at `round` (0 for the first
/// eight trie levels, then 1, 2, ... below each multiple of eight), so that a key's hash
/// at round r is `make_internal_hash(key, map_hash_salt(r))`.
///
/// OTP 25's `make_map_hash(Key, Depth)` starts from 0 and, for a depth above 0, mixes
/// the depth and 1 into it with Bob Jenkins' 96-bit mix and the hash constant
/// `22 · 0x9e3779b9`, the same step `make_internal_hash` uses for pairs of words.
///
/// Time: O(1).
pub fn map_hash_salt(round: u32) -> u32 {
    if round == 0 {
        return 0;
    }
    const GOLDEN: u32 = 0x9e37_79b9;
    let constant = GOLDEN.wrapping_mul(22);
    let (mut a, mut b, mut c) = (constant.wrapping_add(round), constant.wrapping_add(1), 0u32);
    jenkins_mix(&mut a, &mut b, &mut c);
    c
}

/// Bob Jenkins' mix of three 32-bit words (lookup2), as OTP's term hashing uses it.
fn jenkins_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 13);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 8);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 13);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 12);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 16);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 5);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 3);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 10);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 15);
}

/// Reverses the nibbles of a hash, so that OTP's trie path (low nibble first) becomes
/// a numeric prefix (high nibble first).
#[inline]
fn prefix_order(hash: u32) -> u32 {
    let bytes_reversed = hash.swap_bytes();
    ((bytes_reversed & 0x0F0F_0F0F) << 4) | ((bytes_reversed & 0xF0F0_F0F0) >> 4)
}

fn words_for_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(WORD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_match_flat_size() {
        assert_eq!(int64_words(0), 0);
        assert_eq!(int64_words(FIXNUM_MAX), 0);
        assert_eq!(int64_words(FIXNUM_MIN), 0);
        assert_eq!(int64_words(FIXNUM_MAX + 1), 2);
        assert_eq!(int64_words(FIXNUM_MIN - 1), 2);
        assert_eq!(int64_words(i64::MIN), 2);
    }

    #[test]
    fn containers_match_flat_size() {
        assert_eq!(tuple_words(0), 0);
        assert_eq!(tuple_words(3), 4);
        assert_eq!(list_words(3), 6);
        assert_eq!(flatmap_words(0), 3);
        assert_eq!(flatmap_words(1), 6);
        assert_eq!(flatmap_words(30), 64);
        assert_eq!(fun_words(0), 5);
        assert_eq!(fun_words(2), 7);
    }

    #[test]
    fn binaries_match_flat_size() {
        assert_eq!(binary_words(0, BinaryHome::Heap), 2);
        assert_eq!(binary_words(10, BinaryHome::Heap), 4);
        assert_eq!(binary_words(64, BinaryHome::Heap), 10);
        assert_eq!(binary_words(100, BinaryHome::OffHeap), 6);
        assert_eq!(off_heap_bytes(100, BinaryHome::OffHeap), 100);
        assert_eq!(off_heap_bytes(10, BinaryHome::Heap), 0);
    }

    #[test]
    fn sub_binaries_match_flat_size() {
        use BinaryHome::{Heap, OffHeap};
        // Aligned slices count as their parent's kind.
        assert_eq!(sub_binary_words(7, 0, 0, OffHeap), 6);
        assert_eq!(sub_binary_words(20, 0, 0, Heap), 5);
        assert_eq!(sub_binary_off_heap_bytes(70, 0, OffHeap), 70);
        assert_eq!(sub_binary_off_heap_bytes(20, 0, Heap), 0);
        // <<0::size(b)>> as measured: 8 words for 1..63 bits, 11 past 64 bytes.
        for bits in [1u64, 7, 9, 63] {
            let words = sub_binary_words((bits / 8) as usize, (bits % 8) as u8, 0, Heap);
            assert_eq!(words, 8, "{bits} bits");
        }
        assert_eq!(sub_binary_words(64, 3, 0, OffHeap), 11);
        // 100 bytes at bit offset 1 of a refcounted binary; 803 bits at offset 3.
        assert_eq!(sub_binary_words(100, 0, 1, OffHeap), 11);
        assert_eq!(sub_binary_words(100, 3, 3, OffHeap), 11);
        assert_eq!(sub_binary_off_heap_bytes(100, 3, OffHeap), 101);
        // Bits spilling into a second extra byte: 10 bytes at offset 7 with 5 bits.
        assert_eq!(sub_binary_words(10, 5, 7, Heap), 5 + heap_binary_words(12));
    }

    /// A direct simulation of the trie: insert keys one nibble at a time.
    fn simulated_nodes(hashes: &[u32]) -> u64 {
        fn count(hashes: &[u32], depth: u32) -> u64 {
            if hashes.len() < 2 || depth >= 8 {
                return 0;
            }
            let mut nodes = 0;
            for nibble in 0..16 {
                let below: Vec<u32> = hashes
                    .iter()
                    .copied()
                    .filter(|h| (h >> (4 * depth)) & 0xF == nibble)
                    .collect();
                if below.len() >= 2 {
                    nodes += 1 + count(&below, depth + 1);
                }
            }
            nodes
        }
        1 + count(hashes, 0)
    }

    proptest! {
        #[test]
        fn node_count_matches_a_simulated_trie(
            hashes in proptest::collection::hash_set(any::<u32>(), 33..400)
                .prop_map(|s| s.into_iter().collect::<Vec<_>>()),
            low_bits in 4u32..32,
        ) {
            // Masking forces shared prefixes (and deep nodes) into the sample.
            let mask = if low_bits == 32 { u32::MAX } else { (1u32 << low_bits) - 1 };
            let mut masked: Vec<u32> = hashes.iter().map(|h| h & mask).collect();
            masked.sort_unstable();
            masked.dedup();
            let mut pairs: Vec<(u32, usize)> = masked.iter().copied().zip(0..).collect();
            let counted = count_hashmap_nodes(&mut pairs, |_, _| unreachable!("no collisions"));
            prop_assert_eq!(counted, simulated_nodes(&masked));
        }
    }

    #[test]
    fn colliding_hashes_continue_with_rehashed_nibbles() {
        // Keys 0 and 1 collide in round 0, then differ in the first nibble of round 1;
        // key 2 differs from both at the root.
        let mut pairs = vec![(0xABCD_1234, 0), (0xABCD_1234, 1), (0x0000_0005, 2)];
        let nodes = count_hashmap_nodes(&mut pairs, |index, round| {
            assert_eq!(round, 1);
            [0x1, 0x2, 0xF][index]
        });
        // Root, then one node per nibble of the shared 32-bit prefix below the root
        // (depths 1..=8). Round 1 separates them at once.
        assert_eq!(nodes, 1 + 8);

        // Colliding in round 1 again pushes the split one round deeper.
        let mut pairs = vec![(7, 0), (7, 1)];
        let nodes = count_hashmap_nodes(&mut pairs, |index, round| match round {
            1 => 0x55,
            _ => [0x0, 0x1][index],
        });
        assert_eq!(nodes, 1 + 8 + 8);
    }

    #[test]
    fn expected_nodes_track_real_tries() {
        // Average node counts of simulated tries with random hashes.
        let mut rng = crate::size_walk::SplitMix64::new(0x1234_5678_9ABC_DEF0);
        let mut next = || rng.next_u64() as u32;
        for size in [33usize, 100, 1000, 20_000] {
            let trials = 40;
            let mut total = 0u64;
            for _ in 0..trials {
                let mut pairs: Vec<(u32, usize)> = (0..size).map(|i| (next(), i)).collect();
                total += count_hashmap_nodes(&mut pairs, |_, _| next());
            }
            let mean = total as f64 / trials as f64;
            let model = expected_hashmap_nodes(size as u64);
            let error = (model - mean).abs() / mean;
            assert!(error < 0.03, "size {size}: model {model}, simulated {mean}");
        }
        assert_eq!(expected_hashmap_nodes(0), 1.0);
        assert_eq!(expected_hashmap_nodes(1), 1.0);
    }

    #[test]
    fn expected_nodes_stay_finite_and_grow() {
        let mut previous = 0.0;
        for exponent in 1..=9 {
            let nodes = expected_hashmap_nodes(10u64.pow(exponent));
            assert!(nodes.is_finite() && nodes > previous);
            previous = nodes;
        }
        // Per key, nodes swing in a narrow band once the map is large.
        let per_key = expected_hashmap_nodes(1_000_000) / 1e6;
        assert!((0.3..0.45).contains(&per_key), "{per_key}");
    }
}
