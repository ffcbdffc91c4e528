//! An order-statistic, copy-on-write B+tree of term-key elements.
//!
//! [`KeyTree`] stores a set of elements (see [`crate::term_key`]) ordered by their
//! keys, and answers rank queries: the index of an element and the element at an index,
//! both in O(log n). It stores [`ElementRef`]s and looks up by [`Key`]s: two types, so
//! that an element's bytes (hint included) cannot be passed where a key is meant.
//!
//! The layout is chosen for cache misses, which dominate at a million elements:
//!
//! - **One allocation per node for searching.** A node's search arrays (key prefixes,
//!   end offsets, child counts, child pointers) are fixed-size arrays inside the node,
//!   so reaching a node brings its search data with it; only the key bytes live in a
//!   separate buffer, packed back to back.
//! - **Prefix search.** Every key in a node starts with the same `skip` bytes (keys
//!   between two separators share a prefix). The node keeps, per key, the next four
//!   bytes as a `u32` and counts through that dense array; full keys are compared only
//!   among the few whose four bytes tie, so a search reads few key bytes, if any.
//! - **Counted branches.** A branch keeps each child's element count; rank queries sum
//!   the counts left of the path.
//! - **Copy-on-write.** Children are `Arc`s. [`KeyTree::clone`] is O(1) and gives an
//!   independent snapshot; a later write copies only the nodes on its path that are still
//!   shared (`Arc::make_mut`).
//! - **Bounded copies.** Elements longer than [`INLINE_MAX`] bytes live in their own
//!   shared allocation, which nodes point to. Copying a node (a write after a snapshot,
//!   a split) therefore copies at most `INLINE_MAX` bytes per entry, however large the
//!   elements are, and a large element that becomes a separator is shared, not copied.
//!
//! No input makes these functions panic: elements that are too long or a tree that is
//! full are reported as errors ([`InsertError`], [`BuildError`]) before anything
//! changes.

use std::cmp::Ordering;
use std::mem::size_of;
use std::sync::Arc;

use crate::term_key::{element_key, ElementRef, Elements, Key};

/// Most elements a leaf holds; a leaf that grows past it splits in two.
pub const LEAF_MAX: usize = 128;
const LEAF_MIN: usize = LEAF_MAX / 4;
const LEAF_CAP: usize = LEAF_MAX + 1;
/// Most children a branch holds.
pub const BRANCH_MAX: usize = 128;
const BRANCH_MIN: usize = BRANCH_MAX / 4;
const BRANCH_CAP: usize = BRANCH_MAX + 1;
/// Fill of leaves and branches built in bulk: full enough to be compact, with room for
/// a few inserts before the first split.
const BULK_LEAF_FILL: usize = LEAF_MAX * 7 / 8;
const BULK_BRANCH_FILL: usize = BRANCH_MAX * 7 / 8;

/// Most elements a tree holds: child counts are `u32`.
pub const MAX_LEN: usize = u32::MAX as usize;

/// Longest element the tree accepts (16 MiB). It bounds the work that one element can
/// cause (encoding, comparing, copying); node offsets do not depend on it, since
/// elements longer than [`INLINE_MAX`] are stored out of line.
pub const MAX_ELEMENT_LEN: usize = 16 << 20;

/// Longest element stored inside a node's byte buffer; longer ones get an allocation of
/// their own. A node's buffer then holds at most `(LEAF_MAX + 1) * INLINE_MAX` bytes
/// (64.5 KiB), which bounds what copying a node costs.
pub const INLINE_MAX: usize = 512;

/// Why [`KeyTree::insert`] or [`KeyTree::replace`] refused an element. The tree is
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The element is longer than [`MAX_ELEMENT_LEN`].
    TooLong,
    /// The tree holds [`MAX_LEN`] elements already.
    Full,
}

/// Why a tree could not be built from a batch of elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// The element at this position of the batch is longer than [`MAX_ELEMENT_LEN`].
    TooLong {
        /// Zero-based position in the batch.
        position: usize,
    },
    /// The batch has more than [`MAX_LEN`] elements.
    TooMany,
    /// The element at this position is not greater than the one before it (for
    /// [`KeyTree::from_ascending`]).
    NotAscending {
        /// Zero-based position in the batch.
        position: usize,
    },
}

/// Bytes `skip..skip + 4` of `key`, zero-padded, as a big-endian integer. For keys that
/// share their first `skip` bytes, this order agrees with the order of the keys (a key
/// that ends early pads with zeros, the smallest byte), so only ties need the full keys.
/// Four bytes past the shared prefix tell most neighbours apart at a third of the
/// memory of storing eight.
#[inline]
fn prefix_at(key: &[u8], skip: usize) -> u32 {
    let rest = key.get(skip..).unwrap_or(&[]);
    match *rest {
        [a, b, c, d, ..] => u32::from_be_bytes([a, b, c, d]),
        _ => {
            let mut buf = [0u8; 4];
            buf[..rest.len()].copy_from_slice(rest);
            u32::from_be_bytes(buf)
        }
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Longest shared prefix a node records; it is kept inline so that placing a probe
/// against it reads no key bytes.
const SHARED_MAX: usize = 16;

/// Entries per block of a node's search arrays: one cache line of `u32`s. A search
/// reads the blocks' summaries, then one block, rather than the whole array.
const BLOCK: usize = 16;
/// Blocks of a node of `CAP` entries.
const fn blocks(cap: usize) -> usize {
    cap.div_ceil(BLOCK)
}
const LEAF_BLOCKS: usize = blocks(LEAF_CAP);
const BRANCH_BLOCKS: usize = blocks(BRANCH_CAP);

/// One element as a node holds it: inline bytes, or a shared out-of-line allocation.
#[derive(Clone, Copy, Debug)]
enum Entry<'a> {
    Inline(&'a [u8]),
    Large(&'a Arc<[u8]>),
}

impl<'a> Entry<'a> {
    #[inline]
    fn bytes(self) -> &'a [u8] {
        match self {
            Entry::Inline(bytes) => bytes,
            Entry::Large(shared) => shared,
        }
    }

    fn to_owned(self) -> OwnedEntry {
        match self {
            Entry::Inline(bytes) => OwnedEntry::Inline(bytes.to_vec()),
            Entry::Large(shared) => OwnedEntry::Large(Arc::clone(shared)),
        }
    }
}

/// An [`Entry`] that owns (or shares) its bytes: a separator on its way up a split.
#[derive(Clone, Debug)]
enum OwnedEntry {
    Inline(Vec<u8>),
    Large(Arc<[u8]>),
}

impl OwnedEntry {
    fn as_entry(&self) -> Entry<'_> {
        match self {
            OwnedEntry::Inline(bytes) => Entry::Inline(bytes),
            OwnedEntry::Large(shared) => Entry::Large(shared),
        }
    }
}

/// Where a node keeps an out-of-line element, if the entry is one.
type Slot = Option<Arc<[u8]>>;

/// Up to `CAP` elements packed back to back, with inline search arrays.
///
/// `repr(C)` keeps the fields a search reads first (lengths, the key buffer's address,
/// the shared prefix) together in the node's first cache line, ahead of the arrays.
/// `BLOCKS` must be `blocks(CAP)`: stable Rust cannot compute it from `CAP` here.
///
/// `repr(C, align(64))` puts what a search reads first (lengths, the shared prefix,
/// the block summaries) in the node's first cache line, ahead of the arrays.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Packed<const CAP: usize, const BLOCKS: usize> {
    len: u32,
    /// Every key in the node starts with the same `skip` bytes (at most `SHARED_MAX`),
    /// which are `shared[..skip]`. A lower bound: removals leave it as it is, and it is
    /// recomputed when nodes split or merge.
    skip: u32,
    shared: [u8; SHARED_MAX],
    /// `firsts[b]` is `prefixes[b * BLOCK]`, or `u32::MAX` for a block past the end.
    firsts: [u32; BLOCKS],
    /// The inline elements' bytes, in the order they were added rather than in key
    /// order, so that an insert appends instead of shifting the bytes after it. Removed
    /// elements leave `dead` bytes, reclaimed once they are as many as the live ones.
    /// An out-of-line element takes no bytes here.
    bytes: Vec<u8>,
    dead: u32,
    /// `large[i]` is element `i` when it is stored out of line. `None` until the node
    /// holds such an element; then `CAP` slots.
    large: Option<Box<[Slot]>>,
    /// `prefixes[i]` is `prefix_at(key i, skip)`.
    prefixes: [u32; CAP],
    /// `spans[i]` locates element `i` in `bytes`: its start, shifted left by
    /// `SPAN_LEN_BITS`, and its length (at most `INLINE_MAX`).
    spans: [u32; CAP],
}

/// Bits of a span that hold the length of an inline element (up to `INLINE_MAX`).
const SPAN_LEN_BITS: u32 = 10;
const _: () = assert!(INLINE_MAX < 1 << SPAN_LEN_BITS);
// Live and dead bytes together stay under twice a full node's, within a span's start.
const _: () = assert!(2 * (LEAF_CAP + 1) * INLINE_MAX < 1 << (32 - SPAN_LEN_BITS));

#[inline]
fn span(start: usize, len: usize) -> u32 {
    ((start as u32) << SPAN_LEN_BITS) | len as u32
}

impl<const CAP: usize, const BLOCKS: usize> Default for Packed<CAP, BLOCKS> {
    fn default() -> Self {
        Packed {
            len: 0,
            skip: 0,
            shared: [0; SHARED_MAX],
            firsts: [u32::MAX; BLOCKS],
            bytes: Vec::new(),
            dead: 0,
            large: None,
            prefixes: [0; CAP],
            spans: [0; CAP],
        }
    }
}

impl<const CAP: usize, const BLOCKS: usize> Packed<CAP, BLOCKS> {
    fn from_entries<'a>(entries: impl IntoIterator<Item = Entry<'a>>) -> Self {
        let entries: Vec<Entry<'a>> = entries.into_iter().collect();
        Self::from_sorted(&entries)
    }

    /// A node of `entries`, which must ascend, built in one pass: the shared prefix is
    /// known from the first and last keys before any entry is placed, and the inline
    /// bytes take one allocation of their exact size. Pushing them one by one instead
    /// costs three times the instructions (a neighbour comparison, a buffer growth and
    /// a summary update per entry, then every prefix again), which is most of a load.
    ///
    /// Time: O(bytes of `entries`).
    fn from_sorted(entries: &[Entry<'_>]) -> Self {
        debug_assert!(entries.len() <= CAP);
        let mut packed = Packed::default();
        let skip = match entries {
            [first, .., last] => {
                common_prefix_len(element_key(first.bytes()), element_key(last.bytes()))
                    .min(SHARED_MAX)
            }
            _ => 0,
        };
        if skip > 0 {
            packed.shared[..skip].copy_from_slice(&element_key(entries[0].bytes())[..skip]);
        }
        packed.skip = skip as u32;
        let inline_len: usize = entries
            .iter()
            .map(|entry| match entry {
                Entry::Inline(bytes) if bytes.len() <= INLINE_MAX => bytes.len(),
                _ => 0,
            })
            .sum();
        let mut bytes = Vec::with_capacity(inline_len);
        for (i, entry) in entries.iter().enumerate() {
            let element = entry.bytes();
            let out_of_line = match *entry {
                Entry::Large(shared) => Some(Arc::clone(shared)),
                Entry::Inline(element) if element.len() > INLINE_MAX => Some(Arc::from(element)),
                Entry::Inline(_) => None,
            };
            if let Some(shared) = out_of_line {
                let large = packed
                    .large
                    .get_or_insert_with(|| (0..CAP).map(|_| None).collect());
                large[i] = Some(shared);
                packed.spans[i] = span(bytes.len(), 0);
            } else {
                packed.spans[i] = span(bytes.len(), element.len());
                bytes.extend_from_slice(element);
            }
            packed.prefixes[i] = prefix_at(element_key(element), skip);
        }
        packed.bytes = bytes;
        packed.len = entries.len() as u32;
        packed.refresh_firsts(0);
        packed
    }

    #[inline]
    fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    fn entry(&self, i: usize) -> Entry<'_> {
        if let Some(large) = &self.large {
            if let Some(shared) = &large[i] {
                return Entry::Large(shared);
            }
        }
        let span = self.spans[i];
        let start = (span >> SPAN_LEN_BITS) as usize;
        let len = (span & ((1 << SPAN_LEN_BITS) - 1)) as usize;
        Entry::Inline(&self.bytes[start..start + len])
    }

    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        self.entry(i).bytes()
    }

    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        element_key(self.get(i))
    }

    fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// `Ok(i)` when element `i` has the key `probe`, else `Err(insertion index)`.
    #[inline]
    fn search(&self, probe: &[u8]) -> Result<usize, usize> {
        let n = self.len();
        if n == 0 {
            return Err(0);
        }
        let skip = self.skip as usize;
        if skip > 0 {
            // A probe outside the shared prefix lies before or after every key.
            match probe[..skip.min(probe.len())].cmp(&self.shared[..skip]) {
                Ordering::Less => return Err(0),
                Ordering::Greater => return Err(n),
                Ordering::Equal if probe.len() < skip => return Err(0),
                Ordering::Equal => {}
            }
        }
        let wanted = prefix_at(probe, skip);
        // Count rather than bisect, in two steps: the block summaries (in the node's
        // first cache line) say which block the probe falls in, then that block's line
        // of prefixes says where. Branch-free counts vectorise, and a search reads two
        // lines of prefixes where a binary search would wait for several in turn.
        let block = self
            .firsts
            .iter()
            .map(|&first| usize::from(first < wanted))
            .sum::<usize>();
        let mut low = match block.checked_sub(1) {
            None => 0,
            Some(b) => {
                let start = b * BLOCK;
                let end = (start + BLOCK).min(n);
                start
                    + self.prefixes[start..end]
                        .iter()
                        .map(|&p| usize::from(p < wanted))
                        .sum::<usize>()
            }
        };
        let mut high = low
            + self.prefixes[low..n]
                .iter()
                .take_while(|&&p| p == wanted)
                .count();
        let probe_rest = &probe[skip..];
        while low < high {
            let mid = (low + high) / 2;
            // Every key of the node is at least `skip` bytes long (they share them).
            match self.key(mid)[skip..].cmp(probe_rest) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// Inserts `entry` at `i`. The node must not be full.
    fn insert(&mut self, i: usize, entry: Entry<'_>) {
        let n = self.len();
        debug_assert!(n < CAP && i <= n);
        let element = entry.bytes();
        let key = element_key(element);
        // A key added in the middle lies between two keys that share the prefix; one
        // added at either end may share less of it.
        let mut skip = self.skip as usize;
        if n == 0 {
            skip = 0;
        } else if skip > 0 && (i == 0 || i == n) {
            let neighbour = if i == 0 { self.key(0) } else { self.key(n - 1) };
            skip = skip.min(common_prefix_len(key, neighbour));
        }
        let out_of_line = match entry {
            Entry::Large(shared) => Some(Arc::clone(shared)),
            Entry::Inline(bytes) if bytes.len() > INLINE_MAX => Some(Arc::from(bytes)),
            Entry::Inline(_) => None,
        };
        let inline: &[u8] = if out_of_line.is_some() { &[] } else { element };
        // Grow by a quarter at a time rather than doubling: nodes are many and small,
        // and doubling would leave a third of their key memory unused on average.
        let start = self.bytes.len();
        if self.bytes.capacity() - start < inline.len() {
            self.bytes.reserve_exact(inline.len().max(start / 4 + 32));
        }
        self.bytes.extend_from_slice(inline);
        self.spans.copy_within(i..n, i + 1);
        self.spans[i] = span(start, inline.len());
        if out_of_line.is_some() || self.large.is_some() {
            let large = self
                .large
                .get_or_insert_with(|| (0..CAP).map(|_| None).collect());
            large[i..=n].rotate_right(1);
            large[i] = out_of_line;
        }
        self.prefixes.copy_within(i..n, i + 1);
        self.len += 1;
        if skip == self.skip as usize {
            self.prefixes[i] = prefix_at(key, skip);
            self.refresh_firsts(i);
        } else {
            self.rebuild_prefixes(skip);
        }
    }

    /// Recomputes the block summaries from the block holding entry `from` on; blocks
    /// past the end read `u32::MAX`. Stops at the first such block already so, which
    /// makes an append touch one or two.
    #[inline]
    fn refresh_firsts(&mut self, from: usize) {
        let used = self.len().div_ceil(BLOCK);
        for b in from / BLOCK..BLOCKS {
            if b < used {
                self.firsts[b] = self.prefixes[b * BLOCK];
            } else if self.firsts[b] == u32::MAX {
                break;
            } else {
                self.firsts[b] = u32::MAX;
            }
        }
    }

    fn remove(&mut self, i: usize) {
        let n = self.len();
        self.dead += self.spans[i] & ((1 << SPAN_LEN_BITS) - 1);
        self.spans.copy_within(i + 1..n, i);
        self.prefixes.copy_within(i + 1..n, i);
        if let Some(large) = &mut self.large {
            large[i] = None;
            large[i..n].rotate_left(1);
        }
        self.len -= 1;
        self.refresh_firsts(i);
        if self.dead as usize * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// Rewrites the inline bytes in key order, without the dead ones, with room for a
    /// quarter more. Time: O(node).
    fn compact(&mut self) {
        let live: usize = (0..self.len())
            .map(|i| (self.spans[i] & ((1 << SPAN_LEN_BITS) - 1)) as usize)
            .sum();
        let mut bytes = Vec::with_capacity(live + live / 4);
        let mut spans = self.spans;
        for (i, span_of) in spans.iter_mut().enumerate().take(self.len()) {
            if let Entry::Inline(element) = self.entry(i) {
                *span_of = span(bytes.len(), element.len());
                bytes.extend_from_slice(element);
            }
        }
        self.spans = spans;
        self.bytes = bytes;
        self.dead = 0;
    }

    /// Recomputes `skip` as the prefix shared by the first and last keys (and so by all
    /// of them), and every prefix. Time: O(node).
    fn refresh(&mut self) {
        let n = self.len();
        let skip = if n < 2 {
            0
        } else {
            common_prefix_len(self.key(0), self.key(n - 1))
        };
        self.rebuild_prefixes(skip);
    }

    fn rebuild_prefixes(&mut self, skip: usize) {
        let skip = skip.min(SHARED_MAX);
        self.skip = skip as u32;
        if skip > 0 {
            let mut shared = [0u8; SHARED_MAX];
            shared[..skip].copy_from_slice(&self.key(0)[..skip]);
            self.shared = shared;
        }
        for i in 0..self.len() {
            self.prefixes[i] = prefix_at(self.key(i), skip);
        }
        self.refresh_firsts(0);
    }

    /// Moves elements `at..` into a new node.
    fn split_off(&mut self, at: usize) -> Self {
        let n = self.len();
        let right = Self::from_entries((at..n).map(|i| self.entry(i)));
        if let Some(large) = &mut self.large {
            large[at..n].fill(None);
        }
        self.len = at as u32;
        self.compact();
        self.refresh();
        right
    }

    /// Heap bytes held by this node's buffers and out-of-line elements.
    fn heap_bytes(&self) -> usize {
        let large = self.large.as_ref().map_or(0, |large| {
            large.len() * size_of::<Slot>()
                + large
                    .iter()
                    .flatten()
                    .map(|shared| ARC_HEADER + shared.len())
                    .sum::<usize>()
        });
        self.bytes.capacity() + large
    }
}

/// The two counters an `Arc` allocation holds before its value.
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// A node reference: leaves and branches are separate allocations of their own size.
#[derive(Clone, Debug)]
enum Node {
    Leaf(Arc<Leaf>),
    Branch(Arc<Branch>),
}

type Leaf = Packed<LEAF_CAP, LEAF_BLOCKS>;

impl Node {
    fn count(&self) -> usize {
        match self {
            Node::Leaf(leaf) => leaf.len(),
            Node::Branch(branch) => branch.total(),
        }
    }

    fn underfull(&self) -> bool {
        match self {
            Node::Leaf(leaf) => leaf.len() < LEAF_MIN,
            Node::Branch(branch) => branch.len() < BRANCH_MIN,
        }
    }
}

/// The element count under each child of a branch, with a sum per block of children,
/// so that the elements before a child (a rank) are read from two cache lines rather
/// than summed over up to eight.
#[derive(Clone, Debug)]
struct Counts {
    per_child: [u32; BRANCH_CAP],
    per_block: [u32; BRANCH_BLOCKS],
}

impl Counts {
    fn new() -> Self {
        Counts {
            per_child: [0; BRANCH_CAP],
            per_block: [0; BRANCH_BLOCKS],
        }
    }

    #[inline]
    fn get(&self, child: usize) -> usize {
        self.per_child[child] as usize
    }

    /// Adds `delta` (which may be negative) to the count of `child`.
    #[inline]
    fn add(&mut self, child: usize, delta: i64) {
        let apply = |count: &mut u32| *count = (i64::from(*count) + delta) as u32;
        apply(&mut self.per_child[child]);
        apply(&mut self.per_block[child / BLOCK]);
    }

    fn set(&mut self, child: usize, count: usize) {
        let old = self.get(child);
        self.add(child, count as i64 - old as i64);
    }

    /// Elements under the children before `child`.
    #[inline]
    fn before(&self, child: usize) -> usize {
        let block = child / BLOCK;
        let blocks: usize = self.per_block[..block].iter().map(|&c| c as usize).sum();
        blocks
            + self.per_child[block * BLOCK..child]
                .iter()
                .map(|&c| c as usize)
                .sum::<usize>()
    }

    /// The child holding the element at `index` (which must exist), and the index within
    /// that child.
    #[inline]
    fn locate(&self, mut index: usize) -> (usize, usize) {
        let mut block = 0;
        while block + 1 < BRANCH_BLOCKS && index >= self.per_block[block] as usize {
            index -= self.per_block[block] as usize;
            block += 1;
        }
        let mut child = block * BLOCK;
        while index >= self.per_child[child] as usize {
            index -= self.per_child[child] as usize;
            child += 1;
        }
        (child, index)
    }

    /// Makes room for a child at `i` of a branch of `n`, counting `count` elements.
    fn insert(&mut self, i: usize, n: usize, count: usize) {
        self.per_child.copy_within(i..n, i + 1);
        self.per_child[i] = count as u32;
        self.recompute_blocks();
    }

    /// Drops child `i` of a branch of `n`.
    fn remove(&mut self, i: usize, n: usize) {
        self.per_child.copy_within(i + 1..n, i);
        self.per_child[n - 1] = 0;
        self.recompute_blocks();
    }

    fn recompute_blocks(&mut self) {
        for (block, sum) in self.per_block.iter_mut().enumerate() {
            let start = block * BLOCK;
            let end = (start + BLOCK).min(BRANCH_CAP);
            *sum = self.per_child[start..end].iter().sum();
        }
    }
}

#[derive(Clone, Debug)]
struct Branch {
    /// `separators` key `i` is at most every key of child `i + 1` and greater than every
    /// key of child `i`.
    separators: Packed<BRANCH_CAP, BRANCH_BLOCKS>,
    /// Elements under each child.
    counts: Counts,
    children: [Option<Node>; BRANCH_CAP],
    len: u32,
}

impl Branch {
    /// A branch over `children` (with their element counts), separated by `separators`.
    fn from_parts(children: Vec<(Node, usize)>, separators: &[OwnedEntry]) -> Self {
        debug_assert_eq!(children.len(), separators.len() + 1);
        let mut branch = Branch {
            separators: Packed::from_entries(separators.iter().map(OwnedEntry::as_entry)),
            counts: Counts::new(),
            children: std::array::from_fn(|_| None),
            len: children.len() as u32,
        };
        for (i, (child, count)) in children.into_iter().enumerate() {
            branch.children[i] = Some(child);
            branch.counts.per_child[i] = count as u32;
        }
        branch.counts.recompute_blocks();
        branch
    }

    #[inline]
    fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    fn child(&self, i: usize) -> &Node {
        self.children[i]
            .as_ref()
            .expect("children 0..len are present")
    }

    fn total(&self) -> usize {
        self.counts.per_block.iter().map(|&c| c as usize).sum()
    }

    /// The child whose range holds `probe`, and the number of elements before it.
    #[inline]
    fn route(&self, probe: &[u8]) -> (usize, usize) {
        let child = match self.separators.search(probe) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        (child, self.counts.before(child))
    }

    /// The child holding the element at `index`, and the index within that child.
    #[inline]
    fn route_index(&self, index: usize) -> (usize, usize) {
        self.counts.locate(index)
    }

    /// Puts `child` (holding `count` elements) at `i`, after separator `i - 1`.
    fn insert_child(&mut self, i: usize, child: Node, count: usize, separator: Entry<'_>) {
        let n = self.len();
        self.children[i..=n].rotate_right(1);
        self.children[i] = Some(child);
        self.counts.insert(i, n, count);
        self.separators.insert(i - 1, separator);
        self.len += 1;
    }

    fn parts(&self) -> (Vec<(Node, usize)>, Vec<OwnedEntry>) {
        let children = (0..self.len())
            .map(|i| (self.child(i).clone(), self.counts.get(i)))
            .collect();
        let separators = self.separators.entries().map(Entry::to_owned).collect();
        (children, separators)
    }

    fn split(&mut self, mid: usize) -> Split {
        let (mut children, mut separators) = self.parts();
        let right_children = children.split_off(mid);
        let right_separators = separators.split_off(mid);
        let separator = separators.pop().expect("mid > 0");
        let right = Branch::from_parts(right_children, &right_separators);
        let right_count = right.total();
        *self = Branch::from_parts(children, &separators);
        Split {
            separator,
            right: Node::Branch(Arc::new(right)),
            right_count,
        }
    }

    /// Restores the minimum fill of child `i` by merging it with a neighbour or, when the
    /// two do not fit in one node, sharing their contents evenly. Rare, so it goes
    /// through plain vectors for clarity.
    fn rebalance(&mut self, i: usize) {
        if self.len() < 2 {
            return;
        }
        let (l, r) = if i > 0 { (i - 1, i) } else { (i, i + 1) };
        let separator = self.separators.entry(l).to_owned();
        let merged = match (self.child(l), self.child(r)) {
            (Node::Leaf(left), Node::Leaf(right)) => {
                let entries: Vec<Entry> = left.entries().chain(right.entries()).collect();
                if entries.len() <= LEAF_MAX {
                    Err(Node::Leaf(Arc::new(Leaf::from_entries(entries))))
                } else {
                    let mid = entries.len() / 2;
                    Ok((
                        Node::Leaf(Arc::new(Leaf::from_entries(entries[..mid].iter().copied()))),
                        entries[mid].to_owned(),
                        Node::Leaf(Arc::new(Leaf::from_entries(entries[mid..].iter().copied()))),
                    ))
                }
            }
            (Node::Branch(left), Node::Branch(right)) => {
                let (mut children, mut separators) = left.parts();
                let (right_children, right_separators) = right.parts();
                children.extend(right_children);
                separators.push(separator);
                separators.extend(right_separators);
                if children.len() <= BRANCH_MAX {
                    Err(Node::Branch(Arc::new(Branch::from_parts(
                        children,
                        &separators,
                    ))))
                } else {
                    let mid = children.len() / 2;
                    let right_children = children.split_off(mid);
                    let right_separators = separators.split_off(mid);
                    let up = separators.pop().expect("mid > 0");
                    Ok((
                        Node::Branch(Arc::new(Branch::from_parts(children, &separators))),
                        up,
                        Node::Branch(Arc::new(Branch::from_parts(
                            right_children,
                            &right_separators,
                        ))),
                    ))
                }
            }
            _ => unreachable!("siblings are at the same depth"),
        };
        match merged {
            // One node now: drop the right child and the separator between them.
            Err(node) => {
                let n = self.len();
                self.counts.set(l, node.count());
                self.children[l] = Some(node);
                self.children[r].take();
                self.children[r..n].rotate_left(1);
                self.counts.remove(r, n);
                self.separators.remove(l);
                self.len -= 1;
            }
            // Two nodes again, with a new separator between them.
            Ok((left, up, right)) => {
                self.counts.set(l, left.count());
                self.counts.set(r, right.count());
                self.children[l] = Some(left);
                self.children[r] = Some(right);
                self.separators.remove(l);
                self.separators.insert(l, up.as_entry());
            }
        }
    }
}

/// The right half of a node that split, and the separator that goes up.
struct Split {
    separator: OwnedEntry,
    right: Node,
    right_count: usize,
}

/// Where a node sits: on the tree's left or right edge. Runs of inserts at either end of
/// the whole tree (increasing ids, say) would leave every node half full after an even
/// split; there the split leaves the new node at the minimum fill instead.
#[derive(Clone, Copy)]
struct Edge {
    leftmost: bool,
    rightmost: bool,
}

impl Edge {
    /// Where the split point of a node of `len` entries goes, given that the entry that
    /// overflowed it went in at `pos`.
    fn split_point(self, pos: usize, len: usize, min: usize) -> usize {
        if self.rightmost && pos + 1 == len {
            len - min
        } else if self.leftmost && pos == 0 {
            min
        } else {
            len / 2
        }
    }

    fn child(self, child: usize, len: usize) -> Edge {
        Edge {
            leftmost: self.leftmost && child == 0,
            rightmost: self.rightmost && child + 1 == len,
        }
    }
}

fn split_leaf(leaf: &mut Leaf, at: usize) -> Split {
    let right = leaf.split_off(at);
    Split {
        separator: right.entry(0).to_owned(),
        right_count: right.len(),
        right: Node::Leaf(Arc::new(right)),
    }
}

/// An ordered set of term-key elements with rank queries and O(1) snapshots.
///
/// Elements are ordered by their keys; lookups take bare [`Key`]s, so the hints that
/// restore floats never take part in the order. Cloning is O(1): the clone shares every
/// node, and each side copies a node only when it writes to one that is still shared.
#[derive(Clone, Debug)]
pub struct KeyTree {
    root: Node,
    len: usize,
}

impl Default for KeyTree {
    fn default() -> Self {
        KeyTree {
            root: Node::Leaf(Arc::default()),
            len: 0,
        }
    }
}

impl KeyTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of elements. Time: O(1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the tree holds no element. Time: O(1).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `element` unless an element with the same key is present (the present one is
    /// kept). Returns the index of the new element, or `Ok(None)` when it was present.
    ///
    /// Time: O(log n); when the path is shared with a snapshot, plus copying its nodes,
    /// at most `INLINE_MAX` bytes per entry.
    pub fn insert<'e>(
        &mut self,
        element: impl Into<ElementRef<'e>>,
    ) -> Result<Option<usize>, InsertError> {
        let element = storable(element.into())?;
        if self.len >= MAX_LEN {
            return match self.position(element.key()) {
                Ok(_) => Ok(None),
                Err(_) => Err(InsertError::Full),
            };
        }
        let edge = Edge {
            leftmost: true,
            rightmost: true,
        };
        let key = element.key().as_bytes();
        let Some((index, split)) =
            insert_into(&mut self.root, Entry::Inline(element.as_bytes()), key, edge)
        else {
            return Ok(None);
        };
        self.len += 1;
        if let Some(split) = split {
            let left = std::mem::replace(&mut self.root, Node::Leaf(Arc::default()));
            self.root = Node::Branch(Arc::new(Branch::from_parts(
                vec![
                    (left, self.len - split.right_count),
                    (split.right, split.right_count),
                ],
                &[split.separator],
            )));
        }
        Ok(Some(index))
    }

    /// Removes the element whose key is `key`. Returns its index, or `None` when absent.
    ///
    /// Time: O(log n).
    pub fn remove<'k>(&mut self, key: impl Into<Key<'k>>) -> Option<usize> {
        let index = remove_from(&mut self.root, key.into().as_bytes())?;
        self.len -= 1;
        loop {
            let only_child = match &self.root {
                Node::Branch(branch) if branch.len() == 1 => branch.child(0).clone(),
                _ => break,
            };
            self.root = only_child;
        }
        Some(index)
    }

    /// `Ok(index)` of the element whose key is `key`, or `Err(i)` where `i` is the number
    /// of elements less than `key` (where it would be inserted).
    ///
    /// Time: O(log n).
    pub fn position<'k>(&self, key: impl Into<Key<'k>>) -> Result<usize, usize> {
        let probe = key.into().as_bytes();
        let (leaf, before) = self.leaf_for(probe);
        leaf.search(probe)
            .map(|i| before + i)
            .map_err(|i| before + i)
    }

    /// The index and the element whose key is `key`, in one descent.
    ///
    /// Time: O(log n).
    pub fn find<'k>(&self, key: impl Into<Key<'k>>) -> Option<(usize, ElementRef<'_>)> {
        let probe = key.into().as_bytes();
        let (leaf, before) = self.leaf_for(probe);
        let i = leaf.search(probe).ok()?;
        Some((before + i, ElementRef::from_bytes(leaf.get(i))))
    }

    /// The leaf where `probe` is or would be, and the number of elements in the leaves
    /// before it.
    ///
    /// Time: O(log n).
    #[inline]
    fn leaf_for(&self, probe: &[u8]) -> (&Leaf, usize) {
        let mut node = &self.root;
        let mut before = 0;
        loop {
            match node {
                Node::Leaf(leaf) => return (leaf, before),
                Node::Branch(branch) => {
                    let (child, skipped) = branch.route(probe);
                    before += skipped;
                    node = branch.child(child);
                }
            }
        }
    }

    /// Replaces the element that has the same key as `element` (the hint may differ).
    /// Returns its index, or `Ok(None)` (changing nothing) when no element has that key.
    ///
    /// Time: O(log n).
    pub fn replace<'e>(
        &mut self,
        element: impl Into<ElementRef<'e>>,
    ) -> Result<Option<usize>, InsertError> {
        let element = storable(element.into())?;
        // Look first, so that an absent key copies no node shared with a snapshot.
        if self.position(element.key()).is_err() {
            return Ok(None);
        }
        Ok(replace_in(
            &mut self.root,
            Entry::Inline(element.as_bytes()),
            element.key().as_bytes(),
        ))
    }

    /// The element at `index` in ascending order.
    ///
    /// Time: O(log n).
    pub fn get(&self, index: usize) -> Option<ElementRef<'_>> {
        if index >= self.len {
            return None;
        }
        let mut node = &self.root;
        let mut index = index;
        loop {
            match node {
                Node::Leaf(leaf) => return Some(ElementRef::from_bytes(leaf.get(index))),
                Node::Branch(branch) => {
                    let (child, within) = branch.route_index(index);
                    index = within;
                    node = branch.child(child);
                }
            }
        }
    }

    /// Iterates the elements from `index` on, in ascending order.
    ///
    /// Time: O(log n) to start, then O(1) amortized per element.
    pub fn iter_from(&self, index: usize) -> Iter<'_> {
        Iter::new(self, index, true)
    }

    /// Iterates the elements before index `end` in descending order: `end - 1`, then
    /// `end - 2`, down to 0. An `end` past the last element starts from the last one.
    ///
    /// Time: O(log n) to start, then O(1) amortized per element.
    pub fn iter_before(&self, end: usize) -> Iter<'_> {
        Iter::new(self, end, false)
    }

    /// Every element's bytes, in ascending order, read leaf by leaf: for a pass over the
    /// whole tree (a dump), where [`KeyTree::iter_from`]'s per-element bookkeeping
    /// (direction, remaining count, climbing) costs more than reading the element.
    /// Driven with `for_each` or `try_for_each`, it runs as a loop per leaf.
    ///
    /// Time: O(n).
    pub fn element_bytes(&self) -> impl Iterator<Item = &[u8]> + '_ {
        Leaves {
            stack: vec![&self.root],
        }
        .flat_map(|leaf| (0..leaf.len()).map(move |i| leaf.get(i)))
    }

    /// Builds a tree from elements in strictly ascending key order.
    ///
    /// Returns an error, and builds nothing, when an element is not greater than the one
    /// before it, when one is longer than [`MAX_ELEMENT_LEN`] or when there are more than
    /// [`MAX_LEN`].
    ///
    /// Time: O(n).
    pub fn from_ascending<'a, I>(elements: I) -> Result<Self, BuildError>
    where
        I: IntoIterator<Item = ElementRef<'a>>,
        I::IntoIter: ExactSizeIterator,
    {
        Self::build(elements.into_iter(), true)
    }

    /// Builds a tree from elements in any order. Among elements with equal keys the
    /// first one in `elements` is kept.
    ///
    /// Returns an error, and builds nothing, when an element is longer than
    /// [`MAX_ELEMENT_LEN`] or when there are more than [`MAX_LEN`].
    ///
    /// Time: O(n log n).
    pub fn from_unsorted(elements: &Elements) -> Result<Self, BuildError> {
        if elements.len() > MAX_LEN {
            return Err(BuildError::TooMany);
        }
        if let Some(position) = elements.iter().position(|e| e.len() > MAX_ELEMENT_LEN) {
            return Err(BuildError::TooLong { position });
        }
        let mut sorted: Vec<ElementRef> = elements.iter().collect();
        // Stable, so that among equal keys the first one listed survives the dedup.
        sorted.sort_by(|a, b| a.key().cmp(&b.key()));
        sorted.dedup_by(|later, earlier| later.key() == earlier.key());
        Self::build(sorted.into_iter(), false)
    }

    fn build<'a>(
        elements: impl ExactSizeIterator<Item = ElementRef<'a>>,
        check_order: bool,
    ) -> Result<Self, BuildError> {
        let n = elements.len();
        if n > MAX_LEN {
            return Err(BuildError::TooMany);
        }
        if n == 0 {
            return Ok(Self::new());
        }
        // Each level is a list of (node, element count, first element).
        let mut level: Vec<(Node, usize, OwnedEntry)> = Vec::new();
        let mut elements = elements.enumerate();
        let mut previous: Option<Key> = None;
        let mut entries = Vec::with_capacity(BULK_LEAF_FILL + 1);
        // Leaves are sized evenly so that none falls under the minimum fill.
        for size in even_sizes(n, BULK_LEAF_FILL) {
            entries.clear();
            for (position, element) in elements.by_ref().take(size) {
                if element.len() > MAX_ELEMENT_LEN {
                    return Err(BuildError::TooLong { position });
                }
                let key = element.key();
                if check_order && previous.is_some_and(|p| p >= key) {
                    return Err(BuildError::NotAscending { position });
                }
                debug_assert!(previous.is_none_or(|p| p < key), "build: not ascending");
                previous = Some(key);
                entries.push(Entry::Inline(element.as_bytes()));
            }
            let leaf = Leaf::from_sorted(&entries);
            let first = leaf.entry(0).to_owned();
            level.push((Node::Leaf(Arc::new(leaf)), size, first));
        }
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut nodes = level.into_iter();
            for size in even_sizes(nodes.len(), BULK_BRANCH_FILL) {
                let group: Vec<_> = nodes.by_ref().take(size).collect();
                let count = group.iter().map(|(_, c, _)| c).sum();
                let mut firsts = group.iter().map(|(_, _, first)| first.clone());
                let first = firsts.next().expect("groups are non-empty");
                let separators: Vec<OwnedEntry> = firsts.collect();
                let children = group.into_iter().map(|(node, c, _)| (node, c)).collect();
                let branch = Branch::from_parts(children, &separators);
                next.push((Node::Branch(Arc::new(branch)), count, first));
            }
            level = next;
        }
        let (root, len, _) = level.pop().expect("n > 0");
        Ok(KeyTree { root, len })
    }

    /// Heap bytes held by the nodes of this tree, counted as if no node were shared with a
    /// snapshot.
    ///
    /// Time: O(n / LEAF_MAX).
    pub fn heap_bytes(&self) -> usize {
        let mut total = size_of::<Self>();
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            total += ARC_HEADER;
            match node {
                Node::Leaf(leaf) => total += size_of::<Leaf>() + leaf.heap_bytes(),
                Node::Branch(branch) => {
                    total += size_of::<Branch>() + branch.separators.heap_bytes();
                    stack.extend((0..branch.len()).map(|i| branch.child(i)));
                }
            }
        }
        total
    }

    /// Checks every structural invariant; for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        fn check_packed<const CAP: usize, const BLOCKS: usize>(packed: &Packed<CAP, BLOCKS>) {
            let skip = packed.skip as usize;
            assert!(skip <= SHARED_MAX);
            let live: usize = (0..packed.len())
                .filter_map(|i| match packed.entry(i) {
                    Entry::Inline(bytes) => Some(bytes.len()),
                    Entry::Large(_) => None,
                })
                .sum();
            assert_eq!(
                live + packed.dead as usize,
                packed.bytes.len(),
                "dead bytes miscounted"
            );
            assert!(
                packed.dead as usize * 2 <= packed.bytes.len().max(1),
                "dead bytes kept"
            );
            for i in 0..packed.len() {
                assert_eq!(
                    packed.key(i)[..skip],
                    packed.shared[..skip],
                    "skip too long"
                );
                assert_eq!(
                    packed.prefixes[i],
                    prefix_at(packed.key(i), skip),
                    "stale prefix"
                );
                let out_of_line = matches!(packed.entry(i), Entry::Large(_));
                assert_eq!(out_of_line, packed.get(i).len() > INLINE_MAX, "misplaced");
            }
            for (b, &first) in packed.firsts.iter().enumerate() {
                let want = if b * BLOCK < packed.len() {
                    packed.prefixes[b * BLOCK]
                } else {
                    u32::MAX
                };
                assert_eq!(first, want, "stale block summary");
            }
            if let Some(large) = &packed.large {
                assert_eq!(large.len(), CAP);
                assert!(large[packed.len()..].iter().all(Option::is_none));
            }
        }
        fn walk<'a>(
            node: &'a Node,
            is_root: bool,
            depth: usize,
            leaf_depth: &mut Option<usize>,
            out: &mut Vec<&'a [u8]>,
        ) -> usize {
            match node {
                Node::Leaf(leaf) => {
                    check_packed(&**leaf);
                    assert!(is_root || leaf.len() >= LEAF_MIN, "leaf underfull");
                    assert!(leaf.len() <= LEAF_MAX, "leaf overfull");
                    assert_eq!(*leaf_depth.get_or_insert(depth), depth, "uneven depth");
                    out.extend(leaf.entries().map(Entry::bytes));
                    leaf.len()
                }
                Node::Branch(branch) => {
                    check_packed(&branch.separators);
                    assert!(branch.len() >= if is_root { 2 } else { BRANCH_MIN });
                    assert!(branch.len() <= BRANCH_MAX);
                    assert_eq!(branch.separators.len() + 1, branch.len());
                    assert!(branch.children[branch.len()..].iter().all(Option::is_none));
                    assert!(branch.counts.per_child[branch.len()..]
                        .iter()
                        .all(|&c| c == 0));
                    let mut copy = branch.counts.clone();
                    copy.recompute_blocks();
                    assert_eq!(copy.per_block, branch.counts.per_block, "stale block count");
                    let mut total = 0;
                    for i in 0..branch.len() {
                        let start = out.len();
                        let count = walk(branch.child(i), false, depth + 1, leaf_depth, out);
                        assert_eq!(count, branch.counts.get(i), "stale count");
                        if i > 0 {
                            let separator = branch.separators.key(i - 1);
                            assert!(separator <= element_key(out[start]));
                            assert!(element_key(out[start - 1]) < separator);
                        }
                        total += count;
                    }
                    total
                }
            }
        }
        let mut out = Vec::new();
        let count = walk(&self.root, true, 0, &mut None, &mut out);
        assert_eq!(count, self.len);
        for pair in out.windows(2) {
            assert!(element_key(pair[0]) < element_key(pair[1]), "out of order");
        }
    }

    /// The elements at `indices`, which must ascend (repeats allowed), in one ordered
    /// walk: each node on the way is entered once for all the indices below it, so `k`
    /// indices cost one descent plus, per index, a step in its leaf and per distinct
    /// child a step in its branch, rather than `k` descents from the root. Indices from
    /// the first one at or past [`len`](Self::len) on are left out.
    ///
    /// Time: O(log n + k) for indices close together, O(k log n) at worst when they are
    /// scattered; always at most the cost of `k` calls to [`get`](Self::get).
    pub fn get_ascending(&self, indices: &[usize]) -> Vec<ElementRef<'_>> {
        debug_assert!(
            indices.windows(2).all(|w| w[0] <= w[1]),
            "indices must ascend"
        );
        let indices = &indices[..indices.partition_point(|&i| i < self.len)];
        let mut out = Vec::with_capacity(indices.len());
        // (node, index of its first element, the indices below it); a stack rather than
        // recursion, children pushed last to first so that they are visited in order.
        let mut stack = vec![(&self.root, 0usize, indices)];
        while let Some((node, offset, below)) = stack.pop() {
            match node {
                Node::Leaf(leaf) => {
                    out.extend(
                        below
                            .iter()
                            .map(|&i| ElementRef::from_bytes(leaf.get(i - offset))),
                    );
                }
                Node::Branch(branch) => {
                    let start = stack.len();
                    let mut rest = below;
                    while let Some(&first) = rest.first() {
                        let (child, within) = branch.route_index(first - offset);
                        let child_start = first - within;
                        let child_end = child_start + branch.counts.get(child);
                        let n = rest.iter().take_while(|&&i| i < child_end).count();
                        stack.push((branch.child(child), child_start, &rest[..n]));
                        rest = &rest[n..];
                    }
                    stack[start..].reverse();
                }
            }
        }
        out
    }
}

/// `element`, unless it is too long to store.
#[inline]
fn storable(element: ElementRef<'_>) -> Result<ElementRef<'_>, InsertError> {
    if element.len() > MAX_ELEMENT_LEN {
        return Err(InsertError::TooLong);
    }
    Ok(element)
}

/// Splits `n` items into the fewest groups of at most `fill`, as evenly as possible.
fn even_sizes(n: usize, fill: usize) -> impl Iterator<Item = usize> {
    let groups = n.div_ceil(fill).max(1);
    (0..groups).map(move |g| n / groups + usize::from(g < n % groups))
}

fn insert_into(
    node: &mut Node,
    element: Entry<'_>,
    key: &[u8],
    edge: Edge,
) -> Option<(usize, Option<Split>)> {
    match node {
        Node::Leaf(leaf) => {
            let pos = leaf.search(key).err()?;
            let leaf = Arc::make_mut(leaf);
            leaf.insert(pos, element);
            let split = (leaf.len() > LEAF_MAX).then(|| {
                let at = edge.split_point(pos, leaf.len(), LEAF_MIN);
                split_leaf(leaf, at)
            });
            Some((pos, split))
        }
        Node::Branch(branch) => {
            let (child, before) = branch.route(key);
            // A branch shared with a snapshot is copied on the way down even when the
            // element turns out to be present: a redundant copy, never a wrong one.
            let branch = Arc::make_mut(branch);
            let child_edge = edge.child(child, branch.len());
            let child_node = branch.children[child].as_mut().expect("routed to a child");
            let (index, split) = insert_into(child_node, element, key, child_edge)?;
            branch.counts.add(child, 1);
            let mut grown_at = child;
            if let Some(split) = split {
                branch.counts.add(child, -(split.right_count as i64));
                branch.insert_child(
                    child + 1,
                    split.right,
                    split.right_count,
                    split.separator.as_entry(),
                );
                grown_at = child + 1;
            }
            let split = (branch.len() > BRANCH_MAX).then(|| {
                let mid = edge.split_point(grown_at, branch.len(), BRANCH_MIN);
                branch.split(mid)
            });
            Some((before + index, split))
        }
    }
}

fn replace_in(node: &mut Node, element: Entry<'_>, key: &[u8]) -> Option<usize> {
    match node {
        Node::Leaf(leaf) => {
            let pos = leaf.search(key).ok()?;
            let leaf = Arc::make_mut(leaf);
            // Same key, so the same place and prefix: swap the bytes.
            leaf.remove(pos);
            leaf.insert(pos, element);
            Some(pos)
        }
        Node::Branch(branch) => {
            let (child, before) = branch.route(key);
            let branch = Arc::make_mut(branch);
            let child_node = branch.children[child].as_mut().expect("routed to a child");
            Some(before + replace_in(child_node, element, key)?)
        }
    }
}

fn remove_from(node: &mut Node, probe: &[u8]) -> Option<usize> {
    match node {
        Node::Leaf(leaf) => {
            let pos = leaf.search(probe).ok()?;
            Arc::make_mut(leaf).remove(pos);
            Some(pos)
        }
        Node::Branch(branch) => {
            let (child, before) = branch.route(probe);
            let branch = Arc::make_mut(branch);
            let child_node = branch.children[child].as_mut().expect("routed to a child");
            let index = remove_from(child_node, probe)?;
            branch.counts.add(child, -1);
            if branch.child(child).underfull() {
                branch.rebalance(child);
            }
            Some(before + index)
        }
    }
}

/// The leaves of a tree, left to right: a depth-first walk with an explicit stack
/// (children pushed last to first).
struct Leaves<'a> {
    stack: Vec<&'a Node>,
}

impl<'a> Iterator for Leaves<'a> {
    type Item = &'a Leaf;

    fn next(&mut self) -> Option<&'a Leaf> {
        loop {
            match self.stack.pop()? {
                Node::Leaf(leaf) => return Some(leaf),
                Node::Branch(branch) => {
                    self.stack
                        .extend((0..branch.len()).rev().map(|i| branch.child(i)));
                }
            }
        }
    }
}

/// Iterator over a [`KeyTree`], ascending from [`KeyTree::iter_from`] or descending
/// from [`KeyTree::iter_before`].
#[derive(Debug)]
pub struct Iter<'a> {
    /// Branches above the current leaf, with the child being visited in each.
    stack: Vec<(&'a Branch, usize)>,
    leaf: Option<&'a Leaf>,
    /// Ascending: the next element of the leaf. Descending: one past it.
    pos: usize,
    remaining: usize,
    ascending: bool,
}

impl<'a> Iter<'a> {
    /// Starts at `index` (ascending), or just before it (descending).
    fn new(tree: &'a KeyTree, index: usize, ascending: bool) -> Self {
        let remaining = if ascending {
            tree.len.saturating_sub(index)
        } else {
            index.min(tree.len)
        };
        let mut iter = Iter {
            stack: Vec::new(),
            leaf: None,
            pos: 0,
            remaining,
            ascending,
        };
        if remaining == 0 {
            return iter;
        }
        let mut node = &tree.root;
        let mut index = if ascending { index } else { remaining - 1 };
        loop {
            match node {
                Node::Leaf(leaf) => {
                    iter.leaf = Some(leaf);
                    iter.pos = if ascending { index } else { index + 1 };
                    return iter;
                }
                Node::Branch(branch) => {
                    let (child, within) = branch.route_index(index);
                    index = within;
                    iter.stack.push((branch, child));
                    node = branch.child(child);
                }
            }
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = ElementRef<'a>;

    fn next(&mut self) -> Option<ElementRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            let leaf = self.leaf?;
            if self.ascending && self.pos < leaf.len() {
                self.pos += 1;
                self.remaining -= 1;
                return Some(ElementRef::from_bytes(leaf.get(self.pos - 1)));
            }
            if !self.ascending && self.pos > 0 {
                self.pos -= 1;
                self.remaining -= 1;
                return Some(ElementRef::from_bytes(leaf.get(self.pos)));
            }
            // Climb to the nearest branch with a child left to visit in this direction,
            // then take the leaf at the near edge below it.
            self.leaf = None;
            while let Some((branch, current)) = self.stack.pop() {
                let next = if self.ascending {
                    current + 1
                } else {
                    current.wrapping_sub(1)
                };
                if next < branch.len() {
                    self.stack.push((branch, next));
                    let mut node = branch.child(next);
                    while let Node::Branch(b) = node {
                        let edge = if self.ascending { 0 } else { b.len() - 1 };
                        self.stack.push((b, edge));
                        node = b.child(edge);
                    }
                    if let Node::Leaf(l) = node {
                        self.leaf = Some(l);
                        self.pos = if self.ascending { 0 } else { l.len() };
                    }
                    break;
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term_key::{Element, KeyEncoder, Number};
    use std::collections::BTreeSet;

    fn element(i: u32) -> Element {
        Element::number(Number::Int(i.into()))
    }

    fn bytes(i: u32) -> Vec<u8> {
        element(i).as_bytes().to_vec()
    }

    /// `{i, <<len bytes>>}`: long elements whose keys differ early.
    fn long_element(i: u32, len: usize) -> Element {
        let mut encoder = KeyEncoder::new();
        encoder.push_tuple(2);
        encoder.push_number(Number::Int(i.into()), false);
        encoder.push_binary(&vec![7u8; len]);
        encoder.finish()
    }

    fn listed(tree: &KeyTree) -> Vec<Vec<u8>> {
        tree.iter_from(0).map(|e| e.as_bytes().to_vec()).collect()
    }

    /// `steps` pseudo-random `(remove, value)` operations from `seed`, on values below
    /// `range`: every third one a remove, the others inserts.
    fn operations(seed: u32, steps: usize, range: u32) -> impl Iterator<Item = (bool, u32)> {
        let mut x = seed;
        (0..steps).map(move |step| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (step % 3 == 2, (x >> 8) % range)
        })
    }

    #[test]
    fn insert_get_rank_remove_against_btreeset() {
        let mut tree = KeyTree::new();
        let mut model = BTreeSet::new();
        for (remove, v) in operations(12345, 20_000, 5000) {
            if remove {
                let expected = model.iter().position(|&m| m == v);
                assert_eq!(tree.remove(&element(v)), expected);
                model.remove(&v);
            } else {
                let expected = (!model.contains(&v)).then(|| model.range(..v).count());
                assert_eq!(tree.insert(&element(v)), Ok(expected));
                model.insert(v);
            }
        }
        tree.check_invariants();
        assert_eq!(
            listed(&tree),
            model.iter().map(|&v| bytes(v)).collect::<Vec<_>>()
        );
        for (i, &v) in model.iter().enumerate() {
            assert_eq!(tree.position(&element(v)), Ok(i));
            assert_eq!(tree.get(i), Some((&element(v)).into()));
        }
        assert_eq!(tree.get(model.len()), None);
    }

    fn tree_of(range: std::ops::Range<u32>) -> KeyTree {
        bulk(&range.map(element).collect::<Vec<_>>())
    }

    /// A tree built from ascending `elements` in one go.
    fn bulk(elements: &[Element]) -> KeyTree {
        KeyTree::from_ascending(elements.iter().map(ElementRef::from)).unwrap()
    }

    /// `tree` takes less than `percent` % of the heap bytes of `bulk`.
    fn assert_heap_below(tree: &KeyTree, bulk: &KeyTree, percent: usize) {
        let (got, bulk) = (tree.heap_bytes(), bulk.heap_bytes());
        assert!(got * 100 < bulk * percent, "{got} vs {bulk}");
    }

    #[test]
    fn snapshots_are_independent() {
        let mut tree = tree_of(0..10_000);
        let snapshot = tree.clone();
        for i in (0..10_000).step_by(2) {
            tree.remove(&element(i));
        }
        tree.insert(&element(20_000)).unwrap();
        assert_eq!(snapshot.len(), 10_000);
        assert_eq!(tree.len(), 5_001);
        assert_eq!(snapshot.get(0), Some((&element(0)).into()));
        assert_eq!(tree.get(0), Some((&element(1)).into()));
        snapshot.check_invariants();
        tree.check_invariants();
    }

    #[test]
    fn from_ascending_builds_a_valid_tree_at_every_size() {
        for n in [0, 1, 2, 15, 16, 55, 56, 57, 64, 65, 1000, 3137, 100_000] {
            let tree = tree_of(0..n);
            tree.check_invariants();
            assert_eq!(tree.len(), n as usize);
            assert_eq!(tree.iter_from(0).count(), n as usize);
        }
    }

    #[test]
    fn from_ascending_refuses_disorder_and_duplicates_at_their_position() {
        let elements: Vec<Element> = [1, 2, 5, 4].into_iter().map(element).collect();
        assert_eq!(
            KeyTree::from_ascending(elements.iter().map(ElementRef::from)).unwrap_err(),
            BuildError::NotAscending { position: 3 }
        );
        let mut float_one = KeyEncoder::new();
        float_one.push_number(Number::Float(1.0), false);
        let equal = [element(0), element(1), float_one.finish()];
        assert_eq!(
            KeyTree::from_ascending(equal.iter().map(ElementRef::from)).unwrap_err(),
            BuildError::NotAscending { position: 2 }
        );
    }

    #[test]
    fn from_unsorted_sorts_and_keeps_the_first_of_equal_keys() {
        let mut float_two = KeyEncoder::new();
        float_two.push_number(Number::Float(2.0), false);
        let float_two = float_two.finish();
        let mut batch = Elements::new();
        for e in [
            element(3),
            float_two.clone(),
            element(1),
            element(2),
            element(3),
        ] {
            batch.push(&e);
        }
        let tree = KeyTree::from_unsorted(&batch).unwrap();
        tree.check_invariants();
        let want = [bytes(1), float_two.as_bytes().to_vec(), bytes(3)];
        assert_eq!(listed(&tree), want);
    }

    #[test]
    fn oversize_elements_are_refused_and_change_nothing() {
        let huge = vec![0u8; MAX_ELEMENT_LEN + 1];
        let mut tree = tree_of(0..100);
        let snapshot = tree.clone();
        assert_eq!(
            tree.insert(ElementRef::from_bytes(&huge)),
            Err(InsertError::TooLong)
        );
        assert_eq!(
            tree.replace(ElementRef::from_bytes(&huge)),
            Err(InsertError::TooLong)
        );
        assert_eq!(listed(&tree), listed(&snapshot));
        let mut batch = Elements::new();
        batch.push(&element(1));
        batch.push(ElementRef::from_bytes(&huge));
        assert_eq!(
            KeyTree::from_unsorted(&batch).unwrap_err(),
            BuildError::TooLong { position: 1 }
        );
        assert_eq!(
            KeyTree::from_ascending(batch.iter()).unwrap_err(),
            BuildError::TooLong { position: 1 }
        );
    }

    #[test]
    fn bytes_that_are_not_elements_never_panic() {
        let mut tree = tree_of(0..300);
        for junk in [&[][..], &[0x80], &[0xFF, 0xFF], &[5, 1], &[0]] {
            let _ = tree.insert(ElementRef::from_bytes(junk));
            let _ = tree.replace(ElementRef::from_bytes(junk));
            let _ = tree.position(Key::from_bytes(junk));
            let _ = tree.remove(Key::from_bytes(junk));
            let _ = tree.find(Key::from_bytes(junk));
        }
        tree.check_invariants();
    }

    #[test]
    fn iter_from_starts_anywhere() {
        let elements: Vec<Vec<u8>> = (0..5000).map(bytes).collect();
        let tree = tree_of(0..5000);
        for start in [0, 1, 48, 49, 2500, 4999, 5000, 6000] {
            let got: Vec<&[u8]> = tree
                .iter_from(start)
                .take(100)
                .map(ElementRef::as_bytes)
                .collect();
            let want: Vec<&[u8]> = elements
                .iter()
                .skip(start)
                .take(100)
                .map(|v| &v[..])
                .collect();
            assert_eq!(got, want, "start {start}");
        }
    }

    #[test]
    fn iter_before_walks_down_from_anywhere() {
        for n in [0u32, 1, 100, 113, 20_000] {
            let tree = tree_of(0..n);
            for end in [0, 1, 2, 111, 112, 113, 5000, n as usize, n as usize + 7] {
                let got: Vec<Vec<u8>> = tree
                    .iter_before(end)
                    .map(|e| e.as_bytes().to_vec())
                    .collect();
                let top = end.min(n as usize) as u32;
                let want: Vec<Vec<u8>> = (0..top).rev().map(bytes).collect();
                assert_eq!(got, want, "n {n}, end {end}");
                assert_eq!(tree.iter_before(end).len(), top as usize);
            }
        }
    }

    #[test]
    fn removing_everything_leaves_an_empty_valid_tree() {
        let mut tree = tree_of(0..20_000);
        for i in (0..20_000).rev() {
            assert!(tree.remove(&element(i)).is_some());
        }
        tree.check_invariants();
        assert!(tree.is_empty());
        assert!(tree.iter_from(0).next().is_none());
    }

    #[test]
    fn a_full_node_of_inline_elements_fits_its_offsets() {
        // A node holds up to LEAF_MAX + 1 (or BRANCH_MAX + 1) entries just before it
        // splits; longer elements are out of line.
        let most = LEAF_MAX.max(BRANCH_MAX) + 1;
        assert!(most * INLINE_MAX <= u32::MAX as usize);
    }

    #[test]
    fn find_and_replace_work_on_keys() {
        let mut tree = tree_of(0..1000);
        let found = tree
            .find(&element(500))
            .map(|(i, e)| (i, e.as_bytes().to_vec()));
        assert_eq!(found, Some((500, bytes(500))));
        assert!(tree.find(&element(5000)).is_none());
        // An element with the same key and a different hint: 7.0 for 7.
        let mut encoder = KeyEncoder::new();
        encoder.push_number(Number::Float(7.0), false);
        let float_seven = encoder.finish();
        assert_eq!(tree.replace(&float_seven), Ok(Some(7)));
        assert_eq!(tree.get(7), Some((&float_seven).into()));
        assert_eq!(tree.replace(&element(5000)), Ok(None));
        assert_eq!(tree.len(), 1000);
        tree.check_invariants();
    }

    #[test]
    fn runs_of_appends_and_prepends_keep_nodes_well_filled() {
        let bulk = tree_of(0..50_000);
        let mut ascending = KeyTree::new();
        let mut descending = KeyTree::new();
        for i in 0..50_000 {
            ascending.insert(&element(i)).unwrap();
            descending.insert(&element(49_999 - i)).unwrap();
        }
        ascending.check_invariants();
        descending.check_invariants();
        // Even splits would leave these trees half full: about 1.7 times the bulk size.
        assert_heap_below(&ascending, &bulk, 130);
        assert_heap_below(&descending, &bulk, 130);
    }

    #[test]
    fn random_inserts_keep_memory_close_to_a_bulk_build() {
        // Members of about 50 bytes, so that element bytes weigh as much as the arrays.
        let elements: Vec<Element> = (0..50_000).map(|i| long_element(i, 40)).collect();
        let bulk = bulk(&elements);
        let mut tree = KeyTree::new();
        // 7919 is prime to 50,000: every member once, in scattered order.
        for i in 0..50_000usize {
            tree.insert(&elements[i * 7919 % 50_000]).unwrap();
        }
        assert_eq!(tree.len(), 50_000);
        // Splits leave nodes between half and fully filled (about 1.07 times the bulk
        // build here); keeping the whole node's byte capacity on both sides of a split
        // would make it about 1.17.
        assert_heap_below(&tree, &bulk, 112);
    }

    #[test]
    fn probes_outside_a_nodes_shared_prefix_are_placed_at_its_ends() {
        // Keys 1000..1063 share several leading bytes; probes far below and above do not.
        let tree = tree_of(1000..1064);
        assert_eq!(tree.position(&element(5)), Err(0));
        assert_eq!(tree.position(&element(1_000_000)), Err(64));
        assert_eq!(tree.position(&element(1032)), Ok(32));
        assert_eq!(tree.position(Key::from_bytes(&[])), Err(0));
        let mut tree = tree;
        assert_eq!(tree.insert(&element(5)), Ok(Some(0)));
        assert_eq!(tree.insert(&element(1_000_000)), Ok(Some(65)));
        tree.check_invariants();
    }

    /// Every third member is long; short and long ones share nodes.
    fn long_or_short(i: u32) -> usize {
        if i.is_multiple_of(3) {
            INLINE_MAX + (i as usize % 40)
        } else {
            4
        }
    }

    #[test]
    fn large_elements_live_out_of_line_through_splits_and_merges() {
        let mut tree = KeyTree::new();
        let mut model = BTreeSet::new();
        for (remove, i) in operations(99, 6_000, 700) {
            let e = long_element(i, long_or_short(i));
            if remove {
                assert_eq!(tree.remove(&e).is_some(), model.remove(&i));
            } else {
                assert_eq!(tree.insert(&e).unwrap().is_some(), model.insert(i));
            }
        }
        tree.check_invariants();
        let want: Vec<Vec<u8>> = model
            .iter()
            .map(|&i| {
                let len = long_or_short(i);
                long_element(i, len).as_bytes().to_vec()
            })
            .collect();
        assert_eq!(listed(&tree), want);
    }

    #[test]
    fn a_write_after_a_snapshot_copies_no_large_element() {
        // 100 elements of 1 MB in one leaf: the write copies the leaf's pointers only.
        let elements: Vec<Element> = (0..100).map(|i| long_element(i, 1 << 20)).collect();
        let mut tree = bulk(&elements);
        let snapshot = tree.clone();
        let Node::Leaf(leaf) = &tree.root else {
            panic!("one leaf expected")
        };
        assert!(leaf.bytes.len() <= 2 * LEAF_CAP * INLINE_MAX);
        tree.insert(&element(1)).unwrap();
        tree.remove(&elements[50]);
        let Node::Leaf(leaf) = &tree.root else {
            panic!("one leaf expected")
        };
        assert!(leaf.bytes.len() < 1024, "{} inline bytes", leaf.bytes.len());
        assert_eq!(snapshot.len(), 100);
        assert_eq!(tree.len(), 100);
        snapshot.check_invariants();
        tree.check_invariants();
        // The out-of-line elements are shared, not copied, between the two.
        let (Node::Leaf(a), Node::Leaf(b)) = (&tree.root, &snapshot.root) else {
            panic!("leaves expected")
        };
        let Entry::Large(first_a) = a.entry(1) else {
            panic!("large")
        };
        let Entry::Large(first_b) = b.entry(0) else {
            panic!("large")
        };
        assert!(Arc::ptr_eq(first_a, first_b));
    }

    #[test]
    fn heap_bytes_counts_out_of_line_elements() {
        let small = tree_of(0..100).heap_bytes();
        let elements: Vec<Element> = (0..100).map(|i| long_element(i, 10_000)).collect();
        let large = bulk(&elements).heap_bytes();
        assert!(large > small + 100 * 10_000, "{large} vs {small}");
    }

    /// `KeyTree::get_ascending` against one `get` per index.
    mod get_ascending {
        use super::*;
        use proptest::prelude::*;

        fn one_by_one<'a>(tree: &'a KeyTree, indices: &[usize]) -> Vec<ElementRef<'a>> {
            indices.iter().map_while(|&i| tree.get(i)).collect()
        }

        #[test]
        fn empty_tree_and_no_indices() {
            assert!(KeyTree::new().get_ascending(&[0, 1]).is_empty());
            assert!(tree_of(0..10).get_ascending(&[]).is_empty());
        }

        #[test]
        fn a_single_leaf() {
            let tree = tree_of(0..5);
            let got = tree.get_ascending(&[0, 2, 2, 4]);
            assert_eq!(got, one_by_one(&tree, &[0, 2, 2, 4]));
        }

        #[test]
        fn every_index_and_scattered_ones_of_a_deep_tree() {
            let tree = tree_of(0..300_000);
            let all: Vec<usize> = (0..tree.len()).collect();
            assert_eq!(tree.get_ascending(&all), one_by_one(&tree, &all));
            let scattered: Vec<usize> = (0..500).map(|i| i * 599 + i % 7).collect();
            assert_eq!(
                tree.get_ascending(&scattered),
                one_by_one(&tree, &scattered)
            );
        }

        #[test]
        fn indices_past_the_end_are_left_out() {
            let tree = tree_of(0..1_000);
            let got = tree.get_ascending(&[3, 999, 1_000, 5_000]);
            assert_eq!(got, one_by_one(&tree, &[3, 999]));
        }

        #[test]
        fn after_writes_and_on_a_snapshot() {
            let mut tree = tree_of(0..20_000);
            let snapshot = tree.clone();
            for i in (0..20_000).step_by(3) {
                tree.remove(&element(i));
            }
            for i in 20_000..25_000 {
                tree.insert(&element(i)).unwrap();
            }
            let indices: Vec<usize> = (0..30_000).step_by(11).collect();
            assert_eq!(tree.get_ascending(&indices), one_by_one(&tree, &indices));
            assert_eq!(
                snapshot.get_ascending(&indices),
                one_by_one(&snapshot, &indices)
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn agrees_with_one_lookup_per_index(
                size in 0u32..40_000,
                removed in proptest::collection::vec(0u32..40_000, 0..200),
                mut indices in proptest::collection::vec(0usize..41_000, 0..300),
            ) {
                let mut tree = tree_of(0..size);
                for i in removed {
                    tree.remove(&element(i));
                }
                indices.sort_unstable();
                prop_assert_eq!(tree.get_ascending(&indices), one_by_one(&tree, &indices));
            }
        }
    }
}
