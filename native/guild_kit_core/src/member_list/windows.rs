//! The watched windows of a member list: a persistent interval treap.
//!
//! Windows are kept in a binary search tree ordered by `(first, last)`, each node
//! carrying the largest `last` below it, so that the windows overlapping a span are
//! found in O(log w + k) for k results, however long or short the windows are: a
//! subtree whose largest `last` ends above the span, or whose smallest `first` starts
//! below it, is never entered. A window past the end of the list, or above a change,
//! therefore costs nothing.
//!
//! Balance comes from random priorities (a treap): each window's priority is a keyed
//! hash of its bounds, with a key drawn per table, so the shape is the one of a random
//! binary search tree (expected depth about 2 ln w, under 40 at a million windows)
//! whatever windows a client chooses. The recursive operations below are therefore
//! bounded by that depth.
//!
//! Nodes are `Arc`s: [`Windows::clone`] is O(1), and a write copies only the nodes on
//! its path that are still shared with a clone.

use std::hash::BuildHasher;
use std::sync::Arc;

/// A watched window: first and last row index, inclusive.
pub type Range = (u64, u64);

type Link = Option<Arc<Node>>;

#[derive(Debug, Clone)]
struct Node {
    range: Range,
    /// How many times the window is watched.
    watchers: u32,
    priority: u64,
    /// The largest `last` in this subtree.
    max_last: u64,
    left: Link,
    right: Link,
}

impl Node {
    fn refresh(&mut self) {
        let below = |link: &Link| link.as_ref().map_or(0, |n| n.max_last);
        self.max_last = self.range.1.max(below(&self.left)).max(below(&self.right));
    }
}

/// Reference-counted windows with overlap queries and O(1) snapshots.
#[derive(Debug, Clone)]
pub struct Windows {
    root: Link,
    /// Distinct windows.
    len: usize,
    key: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            root: None,
            len: 0,
            key: std::collections::hash_map::RandomState::new().hash_one(0x9e37_79b9_u64),
        }
    }
}

/// SplitMix64's finalizer: a fast mix whose output looks random for any input.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Windows {
    /// Distinct windows. Time: O(1).
    pub fn distinct(&self) -> usize {
        self.len
    }

    fn priority(&self, (first, last): Range) -> u64 {
        mix(mix(first ^ self.key) ^ last)
    }

    /// Adds one watch of `range`.
    ///
    /// Time: O(log w).
    pub fn watch(&mut self, range: Range) {
        let priority = self.priority(range);
        if insert(&mut self.root, range, priority) {
            self.len += 1;
        }
    }

    /// Drops one watch of `range`; false when it was not watched.
    ///
    /// Time: O(log w).
    pub fn unwatch(&mut self, range: Range) -> bool {
        if !self.contains(range) {
            return false;
        }
        if unwatch(&mut self.root, range) {
            self.len -= 1;
        }
        true
    }

    /// How many times `range` is watched (0 when it is not).
    ///
    /// Time: O(log w).
    pub fn watchers(&self, range: Range) -> u32 {
        let mut link = &self.root;
        while let Some(node) = link {
            link = match range.cmp(&node.range) {
                std::cmp::Ordering::Less => &node.left,
                std::cmp::Ordering::Greater => &node.right,
                std::cmp::Ordering::Equal => return node.watchers,
            };
        }
        0
    }

    fn contains(&self, range: Range) -> bool {
        self.watchers(range) > 0
    }

    /// The windows overlapping `[low, high]` whose range is below `below` (all of them
    /// when `None`), in descending order.
    ///
    /// Time: O(log w) to start, then O(log w) at most per window returned.
    pub fn overlapping_desc(&self, low: u64, high: u64, below: Option<Range>) -> Overlapping<'_> {
        let mut iter = Overlapping {
            stack: Vec::new(),
            low,
            high,
            below: below.unwrap_or((u64::MAX, u64::MAX)),
            inclusive: below.is_none(),
        };
        iter.push_spine(self.root.as_deref());
        iter
    }

    /// Heap bytes held by the nodes, counted as if none were shared with a snapshot.
    ///
    /// Time: O(1).
    pub fn heap_bytes(&self) -> usize {
        // An Arc allocation holds two counters before the node.
        self.len * (std::mem::size_of::<Node>() + 2 * std::mem::size_of::<usize>())
    }

    /// Every window and its watch count, in ascending order; for tests.
    #[doc(hidden)]
    pub fn to_vec(&self) -> Vec<(Range, u32)> {
        let mut out = Vec::with_capacity(self.len);
        let mut stack = Vec::new();
        let mut link = self.root.as_deref();
        loop {
            while let Some(node) = link {
                stack.push(node);
                link = node.left.as_deref();
            }
            let Some(node) = stack.pop() else { break };
            out.push((node.range, node.watchers));
            link = node.right.as_deref();
        }
        out
    }

    /// Checks the order, heap and augmentation invariants; for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        fn walk(node: &Node, lo: Option<Range>, hi: Option<Range>) -> (usize, u64) {
            assert!(node.watchers > 0);
            assert!(node.range.0 <= node.range.1);
            assert!(lo.is_none_or(|lo| lo < node.range), "out of order");
            assert!(hi.is_none_or(|hi| node.range < hi), "out of order");
            let mut count = 1;
            let mut max_last = node.range.1;
            for (child, lo, hi) in [
                (&node.left, lo, Some(node.range)),
                (&node.right, Some(node.range), hi),
            ] {
                if let Some(child) = child {
                    assert!(child.priority <= node.priority, "heap order");
                    let (c, m) = walk(child, lo, hi);
                    count += c;
                    max_last = max_last.max(m);
                }
            }
            assert_eq!(node.max_last, max_last, "stale max_last");
            (count, max_last)
        }
        let count = self
            .root
            .as_ref()
            .map_or(0, |root| walk(root, None, None).0);
        assert_eq!(count, self.len);
    }
}

/// Which child of a node.
#[derive(Debug, Clone, Copy)]
enum Side {
    Left,
    Right,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

impl Node {
    fn child(&mut self, side: Side) -> &mut Link {
        match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        }
    }
}

/// Adds a watch of `range` below `link`; true when the window is new.
fn insert(link: &mut Link, range: Range, priority: u64) -> bool {
    let Some(node) = link.as_mut() else {
        *link = Some(Arc::new(Node {
            range,
            watchers: 1,
            priority,
            max_last: range.1,
            left: None,
            right: None,
        }));
        return true;
    };
    let node = Arc::make_mut(node);
    let side = match range.cmp(&node.range) {
        std::cmp::Ordering::Equal => {
            node.watchers = node.watchers.saturating_add(1);
            return false;
        }
        std::cmp::Ordering::Less => Side::Left,
        std::cmp::Ordering::Greater => Side::Right,
    };
    let added = insert(node.child(side), range, priority);
    let parent = node.priority;
    let outranked = node
        .child(side)
        .as_ref()
        .is_some_and(|child| child.priority > parent);
    node.refresh();
    if outranked {
        rotate_up(link, side);
    }
    added
}

/// Drops a watch of `range`, which is present below `link`; true when its last watch
/// went and the window was removed.
fn unwatch(link: &mut Link, range: Range) -> bool {
    let node = Arc::make_mut(link.as_mut().expect("the window is present"));
    let side = match range.cmp(&node.range) {
        std::cmp::Ordering::Less => Side::Left,
        std::cmp::Ordering::Greater => Side::Right,
        std::cmp::Ordering::Equal => {
            node.watchers -= 1;
            if node.watchers > 0 {
                return false;
            }
            let (left, right) = (node.left.take(), node.right.take());
            *link = merge(left, right);
            return true;
        }
    };
    let removed = unwatch(node.child(side), range);
    node.refresh();
    removed
}

/// Joins two treaps, every window of `left` below every window of `right`.
fn merge(left: Link, right: Link) -> Link {
    match (left, right) {
        (None, other) | (other, None) => other,
        (Some(mut l), Some(mut r)) => {
            if l.priority >= r.priority {
                let node = Arc::make_mut(&mut l);
                node.right = merge(node.right.take(), Some(r));
                node.refresh();
                Some(l)
            } else {
                let node = Arc::make_mut(&mut r);
                node.left = merge(Some(l), node.left.take());
                node.refresh();
                Some(r)
            }
        }
    }
}

/// Makes the `side` child of the node at `link` its parent, keeping the order.
fn rotate_up(link: &mut Link, side: Side) {
    let mut top = link.take().expect("rotating a node");
    let top_node = Arc::make_mut(&mut top);
    let mut up = top_node.child(side).take().expect("a child to rotate up");
    let up_node = Arc::make_mut(&mut up);
    *top_node.child(side) = up_node.child(side.other()).take();
    top_node.refresh();
    *up_node.child(side.other()) = Some(top);
    up_node.refresh();
    *link = Some(up);
}

/// Windows overlapping a span, in descending order: see [`Windows::overlapping_desc`].
#[derive(Debug)]
pub struct Overlapping<'a> {
    /// Nodes whose window and left subtree are still to visit, deepest last.
    stack: Vec<&'a Node>,
    low: u64,
    high: u64,
    below: Range,
    inclusive: bool,
}

impl<'a> Overlapping<'a> {
    fn in_bound(&self, range: Range) -> bool {
        range < self.below || (self.inclusive && range == self.below)
    }

    /// Descends the right spine of `link`'s subtree, skipping what cannot overlap: a
    /// subtree that ends above `low`, and a node (with its right subtree) that starts
    /// past `high` or is not below the resume bound.
    fn push_spine(&mut self, mut link: Option<&'a Node>) {
        while let Some(node) = link {
            if node.max_last < self.low {
                return;
            }
            if node.range.0 > self.high || !self.in_bound(node.range) {
                link = node.left.as_deref();
                continue;
            }
            self.stack.push(node);
            link = node.right.as_deref();
        }
    }
}

impl Iterator for Overlapping<'_> {
    type Item = Range;

    fn next(&mut self) -> Option<Range> {
        while let Some(node) = self.stack.pop() {
            self.push_spine(node.left.as_deref());
            if node.range.1 >= self.low {
                return Some(node.range);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn agrees_with_a_btreemap() {
        let mut seed = 7;
        let mut windows = Windows::default();
        let mut model: BTreeMap<Range, u32> = BTreeMap::new();
        let mut snapshots = Vec::new();
        for step in 0..20_000 {
            let first = lcg(&mut seed) % 300;
            let range = (first, first + lcg(&mut seed) % 40);
            if lcg(&mut seed).is_multiple_of(3) {
                let present = model.get(&range).copied().unwrap_or(0) > 0;
                assert_eq!(windows.unwatch(range), present);
                if present {
                    let count = model.get_mut(&range).unwrap();
                    *count -= 1;
                    if *count == 0 {
                        model.remove(&range);
                    }
                }
            } else {
                windows.watch(range);
                *model.entry(range).or_insert(0) += 1;
            }
            if step % 1000 == 0 {
                windows.check_invariants();
                snapshots.push((windows.clone(), model.clone()));
            }
            let (low, high) = {
                let a = lcg(&mut seed) % 400;
                (a, a + lcg(&mut seed) % 60)
            };
            let below = lcg(&mut seed)
                .is_multiple_of(2)
                .then(|| (lcg(&mut seed) % 350, lcg(&mut seed)));
            let got: Vec<Range> = windows.overlapping_desc(low, high, below).collect();
            let want: Vec<Range> = model
                .keys()
                .rev()
                .copied()
                .filter(|&(f, l)| f <= high && l >= low && below.is_none_or(|b| (f, l) < b))
                .collect();
            assert_eq!(got, want, "step {step}");
        }
        windows.check_invariants();
        assert_eq!(windows.distinct(), model.len());
        // Snapshots were not disturbed by later writes.
        for (snapshot, model) in snapshots {
            snapshot.check_invariants();
            let want: Vec<(Range, u32)> = model.into_iter().collect();
            assert_eq!(snapshot.to_vec(), want);
        }
    }

    #[test]
    fn windows_past_a_span_are_not_visited() {
        let mut windows = Windows::default();
        for i in 0..100_000u64 {
            windows.watch((1_000_000 + i, 1_000_100 + i));
        }
        windows.watch((0, 9));
        let mut iter = windows.overlapping_desc(0, 999, None);
        assert_eq!(iter.next(), Some((0, 9)));
        // Only a path's worth of nodes was ever stacked.
        assert!(iter.stack.len() < 64);
        assert_eq!(iter.next(), None);
    }

    #[test]
    fn depth_stays_logarithmic_for_sorted_input() {
        fn depth(link: &Link) -> usize {
            link.as_ref()
                .map_or(0, |n| 1 + depth(&n.left).max(depth(&n.right)))
        }
        let mut windows = Windows::default();
        for i in 0..200_000u64 {
            windows.watch((i, i + 99));
        }
        assert!(depth(&windows.root) < 80, "depth {}", depth(&windows.root));
    }
}
