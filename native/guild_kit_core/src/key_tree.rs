//! An order-statistic, copy-on-write B+tree of byte elements.
//!
//! [`KeyTree`] stores a set of elements (see [`crate::term_key`]) ordered by
//! [`compare_elements`], and answers rank queries: the index of an element and the
//! element at an index, both in O(log n).
//!
//! - **Packed leaves.** A leaf keeps its elements back to back in one byte buffer with
//!   a `u32` end offset each, so an element costs its own length plus four bytes, and a
//!   search touches one or two cache lines per probe.
//! - **Counted branches.** A branch keeps, for each child, its element count; rank
//!   queries sum the counts left of the path.
//! - **Copy-on-write.** Children are `Arc`s. [`KeyTree::clone`] is O(1) and gives an
//!   independent snapshot; a later write copies only the nodes on its path that are still
//!   shared (`Arc::make_mut`).

use std::mem::size_of;
use std::sync::Arc;

use crate::term_key::compare_elements;

/// Most elements a leaf holds; a leaf that grows past it splits in two.
pub const LEAF_MAX: usize = 64;
const LEAF_MIN: usize = LEAF_MAX / 4;
/// Most children a branch holds.
pub const BRANCH_MAX: usize = 64;
const BRANCH_MIN: usize = BRANCH_MAX / 4;
/// Fill of leaves and branches built by [`KeyTree::from_sorted`]: full enough to be
/// compact, with room for a few inserts before the first split.
const BULK_LEAF_FILL: usize = LEAF_MAX * 7 / 8;
const BULK_BRANCH_FILL: usize = BRANCH_MAX * 7 / 8;

/// Longest element the tree accepts. `LEAF_MAX + 1` of them must fit the `u32`
/// offsets of one leaf (a leaf holds one extra element just before it splits).
pub const MAX_ELEMENT_LEN: usize = 32 << 20;

/// Elements packed back to back.
#[derive(Clone, Default, Debug)]
struct Packed {
    bytes: Vec<u8>,
    /// `ends[i]` is the end offset of element `i` in `bytes`.
    ends: Vec<u32>,
}

impl Packed {
    #[inline]
    fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.ends[i] as usize]
    }

    /// `Ok(i)` when element `i` equals `probe`, else `Err(insertion index)`.
    #[inline]
    fn search(&self, probe: &[u8]) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = (low + high) / 2;
            match compare_elements(self.get(mid), probe) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// Grows capacity by a quarter at a time rather than doubling: leaves are many and
    /// small, and doubling would leave a third of their memory unused on average.
    fn reserve(&mut self, bytes: usize) {
        let free = self.bytes.capacity() - self.bytes.len();
        if free < bytes {
            self.bytes
                .reserve_exact(bytes.max(self.bytes.len() / 4 + 32));
        }
        if self.ends.capacity() == self.ends.len() {
            self.ends.reserve_exact(8);
        }
    }

    fn insert(&mut self, i: usize, element: &[u8]) {
        let start = self.start(i);
        let n = element.len();
        self.reserve(n);
        let old_len = self.bytes.len();
        self.bytes.resize(old_len + n, 0);
        self.bytes.copy_within(start..old_len, start + n);
        self.bytes[start..start + n].copy_from_slice(element);
        for end in &mut self.ends[i..] {
            *end += n as u32;
        }
        self.ends.insert(i, (start + n) as u32);
    }

    fn push(&mut self, element: &[u8]) {
        self.reserve(element.len());
        self.bytes.extend_from_slice(element);
        self.ends.push(self.bytes.len() as u32);
    }

    fn remove(&mut self, i: usize) {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        let n = (end - start) as u32;
        self.bytes.drain(start..end);
        self.ends.remove(i);
        for e in &mut self.ends[i..] {
            *e -= n;
        }
    }

    /// Moves elements `at..` into a new `Packed`.
    fn split_off(&mut self, at: usize) -> Packed {
        let start = self.start(at);
        let bytes = self.bytes[start..].to_vec();
        let ends = self.ends[at..].iter().map(|&e| e - start as u32).collect();
        self.bytes.truncate(start);
        self.ends.truncate(at);
        self.bytes.shrink_to(start + start / 4);
        Packed { bytes, ends }
    }

    fn append(&mut self, other: &Packed) {
        let base = self.bytes.len() as u32;
        self.reserve(other.bytes.len());
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|&e| e + base));
    }

    fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * size_of::<u32>()
    }
}

#[derive(Clone, Debug)]
struct Branch {
    /// `separators[i]` is at most every element of `children[i + 1]` and greater than
    /// every element of `children[i]`.
    separators: Packed,
    children: Vec<Arc<Node>>,
    /// Elements under each child.
    counts: Vec<usize>,
}

impl Branch {
    /// The child whose range holds `probe`, and the number of elements before it.
    #[inline]
    fn route(&self, probe: &[u8]) -> (usize, usize) {
        let child = match self.separators.search(probe) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        (child, self.counts[..child].iter().sum())
    }

    fn split(&mut self) -> Split {
        let mid = self.children.len() / 2;
        let children = self.children.split_off(mid);
        let counts = self.counts.split_off(mid);
        let mut separators = self.separators.split_off(mid - 1);
        let separator = separators.get(0).to_vec();
        separators.remove(0);
        let right_count = counts.iter().sum();
        Split {
            separator,
            right: Arc::new(Node::Branch(Branch {
                separators,
                children,
                counts,
            })),
            right_count,
        }
    }

    /// Restores the minimum fill of `children[i]` by merging it with a neighbour and,
    /// when the two do not fit in one node, splitting the result evenly.
    fn rebalance(&mut self, i: usize) {
        if self.children.len() < 2 {
            return;
        }
        let (l, r) = if i > 0 { (i - 1, i) } else { (i, i + 1) };
        let right = self.children.remove(r);
        let right_count = self.counts.remove(r);
        let mut separator = self.separators.get(l).to_vec();
        self.separators.remove(l);
        self.counts[l] += right_count;
        let left = Arc::make_mut(&mut self.children[l]);
        let too_big = match (left, &*right) {
            (Node::Leaf(left), Node::Leaf(right)) => {
                left.append(right);
                left.len() > LEAF_MAX
            }
            (Node::Branch(left), Node::Branch(right)) => {
                left.separators.push(&separator);
                left.separators.append(&right.separators);
                left.children.extend(right.children.iter().cloned());
                left.counts.extend_from_slice(&right.counts);
                left.children.len() > BRANCH_MAX
            }
            _ => unreachable!("siblings are at the same depth"),
        };
        if too_big {
            let split = match Arc::make_mut(&mut self.children[l]) {
                Node::Leaf(leaf) => split_leaf(leaf),
                Node::Branch(branch) => branch.split(),
            };
            separator = split.separator;
            self.counts[l] -= split.right_count;
            self.children.insert(r, split.right);
            self.counts.insert(r, split.right_count);
            self.separators.insert(l, &separator);
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(Packed),
    Branch(Branch),
}

impl Node {
    fn underfull(&self) -> bool {
        match self {
            Node::Leaf(leaf) => leaf.len() < LEAF_MIN,
            Node::Branch(branch) => branch.children.len() < BRANCH_MIN,
        }
    }
}

/// The right half of a node that split, and the separator that goes up.
struct Split {
    separator: Vec<u8>,
    right: Arc<Node>,
    right_count: usize,
}

fn split_leaf(leaf: &mut Packed) -> Split {
    let right = leaf.split_off(leaf.len() / 2);
    Split {
        separator: right.get(0).to_vec(),
        right_count: right.len(),
        right: Arc::new(Node::Leaf(right)),
    }
}

/// An ordered set of byte elements with rank queries and O(1) snapshots.
///
/// Elements are compared with [`compare_elements`], so an element is a term key plus
/// an optional hint. Cloning is O(1): the clone shares every node, and each side copies
/// a node only when it writes to one that is still shared.
#[derive(Clone, Debug)]
pub struct KeyTree {
    root: Arc<Node>,
    len: usize,
}

impl Default for KeyTree {
    fn default() -> Self {
        KeyTree {
            root: Arc::new(Node::Leaf(Packed::default())),
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

    /// Adds `element` unless an equal one is present (the present one is kept).
    /// Returns the index of the new element, or `None` when it was present.
    ///
    /// `element.len()` must not exceed [`MAX_ELEMENT_LEN`].
    ///
    /// Time: O(log n).
    pub fn insert(&mut self, element: &[u8]) -> Option<usize> {
        assert!(element.len() <= MAX_ELEMENT_LEN, "element too long");
        let (index, split) = insert_into(&mut self.root, element)?;
        self.len += 1;
        if let Some(split) = split {
            let left = std::mem::replace(&mut self.root, Arc::new(Node::Leaf(Packed::default())));
            let mut separators = Packed::default();
            separators.push(&split.separator);
            self.root = Arc::new(Node::Branch(Branch {
                separators,
                children: vec![left, split.right],
                counts: vec![self.len - split.right_count, split.right_count],
            }));
        }
        Some(index)
    }

    /// Removes the element equal to `probe`. Returns its index, or `None` when absent.
    ///
    /// Time: O(log n).
    pub fn remove(&mut self, probe: &[u8]) -> Option<usize> {
        let index = remove_from(&mut self.root, probe)?;
        self.len -= 1;
        loop {
            let only_child = match &*self.root {
                Node::Branch(branch) if branch.children.len() == 1 => branch.children[0].clone(),
                _ => break,
            };
            self.root = only_child;
        }
        Some(index)
    }

    /// `Ok(index)` of the element equal to `probe`, or `Err(i)` where `i` is the number of
    /// elements less than `probe` (where it would be inserted).
    ///
    /// Time: O(log n).
    pub fn position(&self, probe: &[u8]) -> Result<usize, usize> {
        let mut node = &*self.root;
        let mut before = 0;
        loop {
            match node {
                Node::Leaf(leaf) => {
                    return leaf
                        .search(probe)
                        .map(|i| before + i)
                        .map_err(|i| before + i)
                }
                Node::Branch(branch) => {
                    let (child, skipped) = branch.route(probe);
                    before += skipped;
                    node = &branch.children[child];
                }
            }
        }
    }

    /// The element at `index` in ascending order.
    ///
    /// Time: O(log n).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        if index >= self.len {
            return None;
        }
        let mut node = &*self.root;
        let mut index = index;
        loop {
            match node {
                Node::Leaf(leaf) => return Some(leaf.get(index)),
                Node::Branch(branch) => {
                    let mut child = 0;
                    while index >= branch.counts[child] {
                        index -= branch.counts[child];
                        child += 1;
                    }
                    node = &branch.children[child];
                }
            }
        }
    }

    /// Iterates the elements from `index` on, in ascending order.
    ///
    /// Time: O(log n) to start, then O(1) amortized per element.
    pub fn iter_from(&self, index: usize) -> Iter<'_> {
        let mut iter = Iter {
            stack: Vec::new(),
            leaf: None,
            pos: 0,
            remaining: self.len.saturating_sub(index),
        };
        if iter.remaining == 0 {
            return iter;
        }
        let mut node = &*self.root;
        let mut index = index;
        loop {
            match node {
                Node::Leaf(leaf) => {
                    iter.leaf = Some(leaf);
                    iter.pos = index;
                    return iter;
                }
                Node::Branch(branch) => {
                    let mut child = 0;
                    while index >= branch.counts[child] {
                        index -= branch.counts[child];
                        child += 1;
                    }
                    iter.stack.push((branch, child + 1));
                    node = &branch.children[child];
                }
            }
        }
    }

    /// Builds a tree from elements in strictly ascending order.
    ///
    /// The caller guarantees the order (checked in debug builds) and that no element is
    /// longer than [`MAX_ELEMENT_LEN`].
    ///
    /// Time: O(n).
    pub fn from_sorted<'a, I>(elements: I) -> Self
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: ExactSizeIterator,
    {
        let elements = elements.into_iter();
        let n = elements.len();
        if n == 0 {
            return Self::new();
        }
        // Level 0: leaves, sized evenly so that none falls under the minimum fill.
        let mut level: Vec<(Arc<Node>, usize, Vec<u8>)> = Vec::new();
        let mut elements = elements.peekable();
        let mut previous: Option<&[u8]> = None;
        for size in even_sizes(n, BULK_LEAF_FILL) {
            let mut leaf = Packed::default();
            let first = elements.peek().map(|e| e.to_vec()).unwrap_or_default();
            for element in elements.by_ref().take(size) {
                debug_assert!(
                    previous.is_none_or(|p| compare_elements(p, element).is_lt()),
                    "from_sorted: elements must be strictly ascending"
                );
                previous = Some(element);
                leaf.push(element);
            }
            leaf.bytes.shrink_to_fit();
            leaf.ends.shrink_to_fit();
            level.push((Arc::new(Node::Leaf(leaf)), size, first));
        }
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut nodes = level.into_iter();
            for size in even_sizes(nodes.len(), BULK_BRANCH_FILL) {
                let group: Vec<_> = nodes.by_ref().take(size).collect();
                let mut separators = Packed::default();
                for (_, _, first) in &group[1..] {
                    separators.push(first);
                }
                let count = group.iter().map(|(_, c, _)| c).sum();
                let mut group = group.into_iter();
                let (head, head_count, first) = group.next().expect("groups are non-empty");
                let mut children = vec![head];
                let mut counts = vec![head_count];
                for (child, child_count, _) in group {
                    children.push(child);
                    counts.push(child_count);
                }
                next.push((
                    Arc::new(Node::Branch(Branch {
                        separators,
                        children,
                        counts,
                    })),
                    count,
                    first,
                ));
            }
            level = next;
        }
        let (root, len, _) = level.pop().expect("n > 0");
        KeyTree { root, len }
    }

    /// Heap bytes held by the nodes of this tree, counted as if no node were shared with a
    /// snapshot.
    ///
    /// Time: O(n / LEAF_MAX).
    pub fn heap_bytes(&self) -> usize {
        // An Arc allocation holds two counters before the node.
        const ARC_HEADER: usize = 2 * size_of::<usize>();
        let mut total = size_of::<Self>();
        let mut stack = vec![&*self.root];
        while let Some(node) = stack.pop() {
            total += ARC_HEADER + size_of::<Node>();
            match node {
                Node::Leaf(leaf) => total += leaf.heap_bytes(),
                Node::Branch(branch) => {
                    total += branch.separators.heap_bytes()
                        + branch.children.capacity() * size_of::<Arc<Node>>()
                        + branch.counts.capacity() * size_of::<usize>();
                    stack.extend(branch.children.iter().map(|c| &**c));
                }
            }
        }
        total
    }

    /// Checks every structural invariant; for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        fn walk<'a>(
            node: &'a Node,
            is_root: bool,
            depth: usize,
            leaf_depth: &mut Option<usize>,
            out: &mut Vec<&'a [u8]>,
        ) -> usize {
            match node {
                Node::Leaf(leaf) => {
                    assert!(is_root || leaf.len() >= LEAF_MIN, "leaf underfull");
                    assert!(leaf.len() <= LEAF_MAX, "leaf overfull");
                    assert_eq!(*leaf_depth.get_or_insert(depth), depth, "uneven depth");
                    out.extend((0..leaf.len()).map(|i| leaf.get(i)));
                    leaf.len()
                }
                Node::Branch(branch) => {
                    assert!(branch.children.len() >= if is_root { 2 } else { BRANCH_MIN });
                    assert!(branch.children.len() <= BRANCH_MAX);
                    assert_eq!(branch.separators.len() + 1, branch.children.len());
                    assert_eq!(branch.counts.len(), branch.children.len());
                    let mut total = 0;
                    for (i, child) in branch.children.iter().enumerate() {
                        let start = out.len();
                        let count = walk(child, false, depth + 1, leaf_depth, out);
                        assert_eq!(count, branch.counts[i], "stale count");
                        if i > 0 {
                            let separator = branch.separators.get(i - 1);
                            assert!(compare_elements(separator, out[start]).is_le());
                            assert!(compare_elements(out[start - 1], separator).is_lt());
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
            assert!(compare_elements(pair[0], pair[1]).is_lt(), "out of order");
        }
    }
}

/// Splits `n` items into the fewest groups of at most `fill`, as evenly as possible.
fn even_sizes(n: usize, fill: usize) -> impl Iterator<Item = usize> {
    let groups = n.div_ceil(fill).max(1);
    (0..groups).map(move |g| n / groups + usize::from(g < n % groups))
}

fn insert_into(node: &mut Arc<Node>, element: &[u8]) -> Option<(usize, Option<Split>)> {
    match Arc::make_mut(node) {
        Node::Leaf(leaf) => {
            let pos = leaf.search(element).err()?;
            leaf.insert(pos, element);
            let split = (leaf.len() > LEAF_MAX).then(|| split_leaf(leaf));
            Some((pos, split))
        }
        Node::Branch(branch) => {
            let (child, before) = branch.route(element);
            let (index, split) = insert_into(&mut branch.children[child], element)?;
            branch.counts[child] += 1;
            if let Some(split) = split {
                branch.counts[child] -= split.right_count;
                branch.children.insert(child + 1, split.right);
                branch.counts.insert(child + 1, split.right_count);
                branch.separators.insert(child, &split.separator);
            }
            let split = (branch.children.len() > BRANCH_MAX).then(|| branch.split());
            Some((before + index, split))
        }
    }
}

fn remove_from(node: &mut Arc<Node>, probe: &[u8]) -> Option<usize> {
    match Arc::make_mut(node) {
        Node::Leaf(leaf) => {
            let pos = leaf.search(probe).ok()?;
            leaf.remove(pos);
            Some(pos)
        }
        Node::Branch(branch) => {
            let (child, before) = branch.route(probe);
            let index = remove_from(&mut branch.children[child], probe)?;
            branch.counts[child] -= 1;
            if branch.children[child].underfull() {
                branch.rebalance(child);
            }
            Some(before + index)
        }
    }
}

/// Ascending iterator over a [`KeyTree`], from [`KeyTree::iter_from`].
#[derive(Debug)]
pub struct Iter<'a> {
    /// Branches above the current leaf, with the next child to visit in each.
    stack: Vec<(&'a Branch, usize)>,
    leaf: Option<&'a Packed>,
    pos: usize,
    remaining: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            let leaf = self.leaf?;
            if self.pos < leaf.len() {
                self.pos += 1;
                self.remaining -= 1;
                return Some(leaf.get(self.pos - 1));
            }
            // Climb to the nearest branch with an unvisited child, then take the leftmost
            // leaf below it.
            self.leaf = None;
            while let Some((branch, next)) = self.stack.pop() {
                if next < branch.children.len() {
                    self.stack.push((branch, next + 1));
                    let mut node = &*branch.children[next];
                    while let Node::Branch(b) = node {
                        self.stack.push((b, 1));
                        node = &b.children[0];
                    }
                    if let Node::Leaf(l) = node {
                        self.leaf = Some(l);
                        self.pos = 0;
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
    use std::collections::BTreeSet;

    fn element(i: u32) -> Vec<u8> {
        // Fixed-width big-endian: a prefix-free encoding whose byte order is numeric.
        i.to_be_bytes().to_vec()
    }

    #[test]
    fn insert_get_rank_remove_against_btreeset() {
        let mut tree = KeyTree::new();
        let mut model = BTreeSet::new();
        let mut x: u32 = 12345;
        for step in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let v = (x >> 8) % 5000;
            let e = element(v);
            if step % 3 == 2 {
                let expected = model.iter().position(|m: &Vec<u8>| m == &e);
                assert_eq!(tree.remove(&e), expected);
                model.remove(&e);
            } else {
                let expected = (!model.contains(&e)).then(|| model.range(..e.clone()).count());
                assert_eq!(tree.insert(&e), expected);
                model.insert(e);
            }
        }
        tree.check_invariants();
        let listed: Vec<Vec<u8>> = tree.iter_from(0).map(|e| e.to_vec()).collect();
        assert_eq!(listed, model.iter().cloned().collect::<Vec<_>>());
        for (i, e) in model.iter().enumerate() {
            assert_eq!(tree.position(e), Ok(i));
            assert_eq!(tree.get(i), Some(&e[..]));
        }
        assert_eq!(tree.get(model.len()), None);
    }

    #[test]
    fn snapshots_are_independent() {
        let mut tree = KeyTree::from_sorted(
            (0..10_000)
                .map(element)
                .collect::<Vec<_>>()
                .iter()
                .map(|v| &v[..]),
        );
        let snapshot = tree.clone();
        for i in (0..10_000).step_by(2) {
            tree.remove(&element(i));
        }
        tree.insert(&element(20_000));
        assert_eq!(snapshot.len(), 10_000);
        assert_eq!(tree.len(), 5_001);
        assert_eq!(snapshot.get(0), Some(&element(0)[..]));
        assert_eq!(tree.get(0), Some(&element(1)[..]));
        snapshot.check_invariants();
        tree.check_invariants();
    }

    #[test]
    fn from_sorted_builds_a_valid_tree_at_every_size() {
        for n in [0, 1, 2, 15, 16, 55, 56, 57, 64, 65, 1000, 3137, 100_000] {
            let elements: Vec<Vec<u8>> = (0..n).map(element).collect();
            let tree = KeyTree::from_sorted(elements.iter().map(|v| &v[..]));
            tree.check_invariants();
            assert_eq!(tree.len(), n as usize);
            assert_eq!(tree.iter_from(0).count(), n as usize);
        }
    }

    #[test]
    fn iter_from_starts_anywhere() {
        let elements: Vec<Vec<u8>> = (0..5000).map(element).collect();
        let tree = KeyTree::from_sorted(elements.iter().map(|v| &v[..]));
        for start in [0, 1, 48, 49, 2500, 4999, 5000, 6000] {
            let got: Vec<&[u8]> = tree.iter_from(start).take(100).collect();
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
    fn removing_everything_leaves_an_empty_valid_tree() {
        let elements: Vec<Vec<u8>> = (0..20_000).map(element).collect();
        let mut tree = KeyTree::from_sorted(elements.iter().map(|v| &v[..]));
        for e in elements.iter().rev() {
            assert!(tree.remove(e).is_some());
        }
        tree.check_invariants();
        assert!(tree.is_empty());
        assert_eq!(tree.iter_from(0).next(), None);
    }
}
