//! A grouped member sidebar with watched windows, and the ops that keep each window's
//! copy up to date.
//!
//! The list a client sees is flat: for each non-empty group, in group order, a header
//! row and then the group's members ordered by sort key and then id. Clients watch
//! windows of rows (`[first, last]`, inclusive); after each change, [`MemberList`]
//! reports for every watched window whose rows changed the insert / update / delete
//! operations that bring a copy of the window up to date. A client keeps exactly the
//! rows of its window, applies the ops in order, and after an insert drops the rows
//! that fell past `last`.
//!
//! # How the ops are found
//!
//! Every change is described as rows removed from the old list (`removed`, old indices)
//! and rows inserted into the new one (`inserted`, new indices): a move is one of each,
//! plus a header when a group empties or appears. Every other row keeps its relative
//! order, so its new index follows from counting the edits before it. A window is
//! affected only if it overlaps the span of the edits (or lies below it, when the list
//! grew or shrank), and within a window only rows within a couple of places of an edit
//! or of the window's edges can enter or leave it. Ops for a window therefore cost O(1)
//! index arithmetic plus one row lookup per row that enters it, not a diff of its rows.
//!
//! # Storage
//!
//! - `members`: a [`KeyTree`] of member elements keyed by `[group position: u16][key of
//!   sort_key][key of member_id]`, so that rank in the tree is the member's place among
//!   all members. The element's hint restores the exact terms.
//! - `by_id`: a [`KeyTree`] keyed by the member id's key, whose hint slot carries the
//!   member element minus its trailing id key, so a member's current place is found from
//!   its id alone without storing the id twice in either tree.
//! - Two Fenwick trees over the groups give header positions and the group holding a row
//!   in O(log groups).

use std::collections::{BTreeMap, HashMap};

use crate::key_tree::{KeyTree, MAX_ELEMENT_LEN, MAX_LEN};
use crate::term_key::{
    element_from_parts, element_hint, element_key, Element, ElementRef, Key, KeyReader,
};

/// Most groups a list can have (group positions are stored in two bytes).
pub const MAX_GROUPS: usize = u16::MAX as usize;
/// Bytes of group position in front of a member key.
const GROUP_PREFIX: usize = 2;

/// A watched window: first and last row index, inclusive.
pub type Range = (u64, u64);

/// Why a call was refused. The list is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberListError {
    /// The group is not one of the list's groups.
    UnknownGroup,
    /// Two groups given to [`MemberList::new`] are equal; the index of the second.
    DuplicateGroup(usize),
    /// More than [`MAX_GROUPS`] groups.
    TooManyGroups,
    /// The list holds as many members as it can.
    Full,
    /// The member's sort key and id together are too large to store.
    TooLarge,
    /// `sort_and_id` is not two encoded terms.
    Corrupt,
}

/// A row of the flat list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row<'a> {
    /// A group header: the group id's element.
    Group(&'a [u8]),
    /// A member: its member element (see [`member_id_offset`]).
    Member(&'a [u8]),
}

/// One edit of a window's copy, at an absolute row index inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Insert the row at the index; rows pushed past the window's end are dropped.
    Insert(u64, Row<'a>),
    /// Replace the row at the index (its displayed data changed).
    Update(u64, Row<'a>),
    /// Remove the row at the index.
    Delete(u64),
}

/// The ops for every watched window whose rows changed, in window order.
pub type Changes<'a> = Vec<(Range, Vec<Op<'a>>)>;

/// Within a member element, the key bytes to skip before the sort key: read the member
/// id with `KeyReader::with_key_offset(element, this)`, skipping the sort key first.
pub const fn member_id_offset() -> usize {
    GROUP_PREFIX
}

/// Prefix sums over groups.
#[derive(Debug, Clone)]
struct Fenwick(Vec<u64>);

impl Fenwick {
    fn new(n: usize) -> Self {
        Fenwick(vec![0; n + 1])
    }

    fn add(&mut self, i: usize, delta: i64) {
        let mut i = i + 1;
        while i < self.0.len() {
            self.0[i] = self.0[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Sum of entries `0..i`.
    fn prefix(&self, i: usize) -> u64 {
        let (mut i, mut sum) = (i, 0);
        while i > 0 {
            sum += self.0[i];
            i &= i - 1;
        }
        sum
    }

    /// The smallest `i` whose prefix sum through `i` exceeds `target`.
    fn find(&self, mut target: u64) -> usize {
        let mut pos = 0;
        let mut step = (self.0.len() - 1).next_power_of_two();
        while step > 0 {
            if pos + step < self.0.len() && self.0[pos + step] <= target {
                pos += step;
                target -= self.0[pos];
            }
            step /= 2;
        }
        pos
    }
}

#[derive(Debug, Clone)]
struct Group {
    element: Vec<u8>,
    members: u64,
}

/// Which row an edit is about: an edit touches at most one member, so member rows need
/// no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowId {
    Header(u16),
    Member,
}

/// Rows removed from the old list and inserted into the new one.
#[derive(Debug, Default, Clone)]
struct Edits {
    /// Old indices, ascending, with the row each held.
    removed: Vec<(u64, RowId)>,
    /// New indices, ascending, with the row each holds.
    inserted: Vec<(u64, RowId)>,
    old_len: u64,
    new_len: u64,
}

impl Edits {
    /// New index of the kept row at old index `y`.
    fn destination(&self, y: u64) -> u64 {
        let mut x = y - self.removed.iter().filter(|&&(r, _)| r < y).count() as u64;
        for &(i, _) in &self.inserted {
            if i <= x {
                x += 1;
            }
        }
        x
    }

    /// Old index of the kept row at new index `x`.
    fn source(&self, x: u64) -> u64 {
        let mut y = x - self.inserted.iter().filter(|&&(i, _)| i < x).count() as u64;
        for &(r, _) in &self.removed {
            if r <= y {
                y += 1;
            }
        }
        y
    }

    /// Drops the removal and insertion of a row that comes back where it was, with the
    /// rows around it in place: a member put back at its own row, or the header of a
    /// group whose only member moved within it.
    fn cancel_unmoved(&mut self) {
        for (row, id) in self.removed.clone() {
            let Some(&(new_row, _)) = self.inserted.iter().find(|&&(_, other)| other == id) else {
                continue;
            };
            let mut without = self.clone();
            without.removed.retain(|&(r, _)| r != row);
            without.inserted.retain(|&(i, _)| i != new_row);
            if without.destination(row) == new_row {
                *self = without;
            }
        }
    }

    fn removed_at(&self, y: u64) -> Option<RowId> {
        self.removed
            .iter()
            .find(|&&(r, _)| r == y)
            .map(|&(_, id)| id)
    }

    fn inserted_at(&self, x: u64) -> Option<RowId> {
        self.inserted
            .iter()
            .find(|&&(i, _)| i == x)
            .map(|&(_, id)| id)
    }

    /// Rows of the window `[first, last]` to delete (descending) and the new indices
    /// whose rows must be inserted (ascending); both empty when the window's rows are the
    /// same before and after. Rows pushed out past `last` get no delete: the client rule
    /// drops them as the inserts come in. A row can only cross the window's edge if it
    /// sits within `removed.len()` or `inserted.len()` places of it.
    fn window(&self, first: u64, last: u64) -> (Indices, Indices) {
        let (r, i) = (self.removed.len() as u64, self.inserted.len() as u64);
        let candidates = |edits: &[(u64, RowId)], near_first: u64, near_last: u64, end: u64| {
            let mut found = Indices::default();
            let near = (first..first.saturating_add(near_first))
                .chain(last.saturating_add(1).saturating_sub(near_last)..=last);
            for x in edits.iter().map(|&(x, _)| x).chain(near) {
                if x >= first && x <= last && x < end {
                    found.insert(x);
                }
            }
            found
        };
        let mut leaving = candidates(&self.removed, r, 0, self.old_len);
        leaving.retain(|y| self.removed_at(y).is_some() || self.destination(y) < first);
        let mut entering = candidates(&self.inserted, i, r, self.new_len);
        entering
            .retain(|x| self.inserted_at(x).is_some() || !(first..=last).contains(&self.source(x)));
        if leaving.as_slice() == entering.as_slice()
            && self.same_rows(first, last, leaving.as_slice())
        {
            return (Indices::default(), Indices::default());
        }
        (leaving, entering)
    }

    /// Whether a window whose leaving and entering indices coincide keeps its rows: each
    /// such index loses and regains the same row, and every other row stays put. The
    /// shift of kept rows changes only within two places of an edit, so probing the
    /// window's start and the neighbourhood of each edit covers every stretch of it.
    fn same_rows(&self, first: u64, last: u64, swapped: &[u64]) -> bool {
        let same_row_back = swapped.iter().all(
            |&p| matches!((self.removed_at(p), self.inserted_at(p)), (Some(a), Some(b)) if a == b),
        );
        let end = last.min(self.old_len.saturating_sub(1));
        let edits = self.removed.iter().chain(&self.inserted).map(|&(e, _)| e);
        same_row_back
            && std::iter::once(first)
                .chain(edits.flat_map(|e| e.saturating_sub(3)..=e.saturating_add(3)))
                .filter(|&y| y >= first && y <= end && self.removed_at(y).is_none())
                .all(|y| self.destination(y) == y)
    }
}

/// A few row indices, sorted and distinct, without allocating: a window has at most
/// eight candidates (two edits each way, plus two places at each edge).
#[derive(Debug, Default, Clone, Copy)]
struct Indices {
    items: [u64; 8],
    len: usize,
}

impl Indices {
    fn insert(&mut self, x: u64) {
        let items = &mut self.items[..self.len];
        if let Err(at) = items.binary_search(&x) {
            self.items.copy_within(at..self.len, at + 1);
            self.items[at] = x;
            self.len += 1;
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            if keep(self.items[i]) {
                self.items[kept] = self.items[i];
                kept += 1;
            }
        }
        self.len = kept;
    }

    fn as_slice(&self) -> &[u64] {
        &self.items[..self.len]
    }
}

/// The member sidebar. See the module documentation.
#[derive(Debug, Clone)]
pub struct MemberList {
    groups: Vec<Group>,
    group_positions: HashMap<Vec<u8>, u16>,
    /// Rows per group: members plus one header when non-empty.
    rows: Fenwick,
    /// One per non-empty group.
    headers: Fenwick,
    members: KeyTree,
    by_id: KeyTree,
    ranges: BTreeMap<Range, u32>,
    /// Lengths of the watched ranges, to bound the search for overlapping ones.
    range_lengths: BTreeMap<u64, u32>,
}

impl MemberList {
    /// An empty list whose groups, given as encoded group ids in display order, are
    /// shown in that order.
    ///
    /// Time: O(groups).
    pub fn new(groups: Vec<Element>) -> Result<Self, MemberListError> {
        if groups.len() > MAX_GROUPS {
            return Err(MemberListError::TooManyGroups);
        }
        let mut group_positions = HashMap::with_capacity(groups.len());
        for (position, group) in groups.iter().enumerate() {
            if group_positions
                .insert(group.key().to_vec(), position as u16)
                .is_some()
            {
                return Err(MemberListError::DuplicateGroup(position));
            }
        }
        Ok(MemberList {
            rows: Fenwick::new(groups.len()),
            headers: Fenwick::new(groups.len()),
            groups: groups
                .into_iter()
                .map(|g| Group {
                    element: g.as_bytes().to_vec(),
                    members: 0,
                })
                .collect(),
            group_positions,
            members: KeyTree::new(),
            by_id: KeyTree::new(),
            ranges: BTreeMap::new(),
            range_lengths: BTreeMap::new(),
        })
    }

    /// Rows, headers included. Time: O(log groups).
    pub fn size(&self) -> u64 {
        self.rows.prefix(self.groups.len())
    }

    /// Members. Time: O(1).
    pub fn member_count(&self) -> u64 {
        self.members.len() as u64
    }

    /// Adds a member, or moves it if present. `group` is the group id's key and
    /// `sort_and_id` the sort key's and then the member id's encodings back to back in
    /// one element (one hint for both; see [`Element::from_parts`]). Returns the ops for
    /// the watched windows that changed.
    ///
    /// Time: O(log n + log groups) plus O(log n) per affected window.
    pub fn put(
        &mut self,
        group: &[u8],
        sort_and_id: &Element,
    ) -> Result<Changes<'_>, MemberListError> {
        let position = *self
            .group_positions
            .get(group)
            .ok_or(MemberListError::UnknownGroup)?;
        // The member id's key is what follows the sort key's.
        let mut reader =
            KeyReader::new(sort_and_id.as_bytes()).map_err(|_| MemberListError::Corrupt)?;
        reader.skip_term().map_err(|_| MemberListError::Corrupt)?;
        let id_key = &sort_and_id.key()[reader.key_offset()..];
        let mut key = Vec::with_capacity(GROUP_PREFIX + sort_and_id.key().len());
        key.extend_from_slice(&position.to_be_bytes());
        key.extend_from_slice(sort_and_id.key());
        let element = element_from_parts(sort_and_id.hint(), &key);
        let entry = index_element(&element, id_key.len());
        if element.len().max(entry.len()) > MAX_ELEMENT_LEN {
            return Err(MemberListError::TooLarge);
        }

        let old = self.member_element(id_key);
        if old.is_none() && self.members.len() >= MAX_LEN {
            return Err(MemberListError::Full);
        }
        let mut edits = Edits {
            old_len: self.size(),
            ..Edits::default()
        };
        if let Some(old) = &old {
            if element_key(old) == key {
                // Same place: at most the stored terms differ (1 versus 1.0 in a sort
                // key); store the new ones, report nothing.
                self.members.replace(ElementRef::from_bytes(&element)).ok();
                self.by_id.replace(ElementRef::from_bytes(&entry)).ok();
                return Ok(Vec::new());
            }
            self.remove_member_row(old, &mut edits);
        }
        let rank = self
            .members
            .insert(ElementRef::from_bytes(&element))
            .ok()
            .flatten()
            .expect("the member was removed or absent");
        let header_appears = self.add_to_group(position);
        let row = self.member_row(&key, rank);
        if header_appears {
            edits.inserted.push((row - 1, RowId::Header(position)));
        }
        edits.inserted.push((row, RowId::Member));
        if old.is_some() {
            self.by_id.replace(ElementRef::from_bytes(&entry)).ok();
        } else {
            self.by_id.insert(ElementRef::from_bytes(&entry)).ok();
        }
        edits.new_len = self.size();
        edits.cancel_unmoved();
        Ok(self.changes(&edits))
    }

    /// Marks a member's displayed data as changed: an update op for each watched window
    /// holding its row. Returns `None` when the member is absent.
    ///
    /// Time: O(log n) plus O(1) per window holding the row.
    pub fn touch(&self, id_key: &[u8]) -> Option<Changes<'_>> {
        let element = self.member_element(id_key)?;
        let key = element_key(&element);
        let (rank, stored) = self
            .members
            .find(Key::from_bytes(key))
            .expect("indexed members are in the tree");
        let row = self.member_row(key, rank);
        let changes = self
            .ranges_overlapping(row, row)
            .map(|range| (range, vec![Op::Update(row, Row::Member(stored.as_bytes()))]))
            .collect();
        Some(changes)
    }

    /// Removes a member. Returns the ops, or `None` when the member is absent.
    ///
    /// Time: O(log n + log groups) plus O(log n) per affected window.
    pub fn remove(&mut self, id_key: &[u8]) -> Option<Changes<'_>> {
        let element = self.member_element(id_key)?;
        let mut edits = Edits {
            old_len: self.size(),
            ..Edits::default()
        };
        self.remove_member_row(&element, &mut edits);
        self.by_id.remove(Key::from_bytes(id_key));
        edits.new_len = self.size();
        Some(self.changes(&edits))
    }

    /// The row index of a member. Time: O(log n + log groups).
    pub fn index_of(&self, id_key: &[u8]) -> Option<u64> {
        self.member_element(id_key).map(|e| self.row_of(&e))
    }

    /// The rows `first..=last` that exist.
    ///
    /// Time: O(log n + log groups + rows returned).
    pub fn rows(&self, first: u64, last: u64) -> impl Iterator<Item = Row<'_>> + '_ {
        let size = self.size();
        let end = last.min(size.saturating_sub(1));
        let count = if first >= size || first > last {
            0
        } else {
            end - first + 1
        };
        let mut next = first;
        let mut members = None;
        (0..count).map(move |_| {
            let (group, member_rank) = self.locate(next);
            next += 1;
            match member_rank {
                None => {
                    members = None;
                    Row::Group(&self.groups[group].element)
                }
                Some(rank) => {
                    let iter = members.get_or_insert_with(|| self.members.iter_from(rank as usize));
                    Row::Member(iter.next().expect("ranks below the size exist").as_bytes())
                }
            }
        })
    }

    /// Watches `[first, last]` (reference-counted) and returns its rows now.
    /// `first` must not exceed `last`.
    ///
    /// Time: O(log ranges) plus [`rows`](Self::rows).
    pub fn watch(&mut self, first: u64, last: u64) -> impl Iterator<Item = Row<'_>> + '_ {
        *self.ranges.entry((first, last)).or_insert(0) += 1;
        *self.range_lengths.entry(last - first).or_insert(0) += 1;
        self.rows(first, last)
    }

    /// Drops one watch of `[first, last]`; returns false if it was not watched.
    ///
    /// Time: O(log ranges).
    pub fn unwatch(&mut self, first: u64, last: u64) -> bool {
        let Some(count) = self.ranges.get_mut(&(first, last)) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.ranges.remove(&(first, last));
        }
        let length = self
            .range_lengths
            .get_mut(&(last - first))
            .expect("every watched range's length is counted");
        *length -= 1;
        if *length == 0 {
            self.range_lengths.remove(&(last - first));
        }
        true
    }

    /// Number of distinct watched ranges. Time: O(1).
    pub fn watched_len(&self) -> usize {
        self.ranges.len()
    }

    /// The watched ranges and how many times each is watched.
    pub fn watched(&self) -> impl Iterator<Item = (Range, u32)> + '_ {
        self.ranges.iter().map(|(&range, &count)| (range, count))
    }

    /// Non-empty groups in order: the group id's element and its member count.
    pub fn groups(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.groups
            .iter()
            .filter(|g| g.members > 0)
            .map(|g| (g.element.as_slice(), g.members))
    }

    /// Heap bytes held natively (trees, groups, ranges).
    ///
    /// Time: O(n / 64).
    pub fn heap_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .iter()
            .map(|g| std::mem::size_of::<Group>() + 2 * g.element.capacity())
            .sum();
        // BTreeMap entries cost about their size plus node overhead; count them at twice.
        let ranges = 2
            * (self.ranges.len() + self.range_lengths.len())
            * std::mem::size_of::<(Range, u32)>();
        std::mem::size_of::<Self>()
            + self.members.heap_bytes()
            + self.by_id.heap_bytes()
            + groups
            + 2 * 8 * (self.groups.len() + 1)
            + ranges
    }

    /// The member element of `id_key`, rebuilt from the id index.
    fn member_element(&self, id_key: &[u8]) -> Option<Vec<u8>> {
        let (_, stored) = self.by_id.find(Key::from_bytes(id_key))?;
        let without_id = element_hint(stored.as_bytes());
        let mut element = Vec::with_capacity(without_id.len() + id_key.len());
        element.extend_from_slice(without_id);
        element.extend_from_slice(id_key);
        Some(element)
    }

    fn row_of(&self, element: &[u8]) -> u64 {
        let key = element_key(element);
        let rank = self
            .members
            .position(Key::from_bytes(key))
            .expect("indexed members are in the tree");
        self.member_row(key, rank)
    }

    /// The row of the member with `key` at `rank` among all members: its rank plus a
    /// header for each non-empty group up to its own.
    fn member_row(&self, key: &[u8], rank: usize) -> u64 {
        rank as u64 + self.headers.prefix(group_of(key) as usize + 1)
    }

    /// The group holding row `row`, and the member rank there (`None` for its header).
    fn locate(&self, row: u64) -> (usize, Option<u64>) {
        let group = self.rows.find(row);
        if row == self.rows.prefix(group) {
            (group, None)
        } else {
            (group, Some(row - self.headers.prefix(group + 1)))
        }
    }

    fn row_at(&self, row: u64) -> Option<Row<'_>> {
        if row >= self.size() {
            return None;
        }
        Some(match self.locate(row) {
            (group, None) => Row::Group(&self.groups[group].element),
            (_, Some(rank)) => Row::Member(self.members.get(rank as usize)?.as_bytes()),
        })
    }

    /// Adds one member to a group; returns true when its header appears.
    fn add_to_group(&mut self, position: u16) -> bool {
        let group = &mut self.groups[position as usize];
        group.members += 1;
        let appears = group.members == 1;
        self.rows
            .add(position as usize, if appears { 2 } else { 1 });
        if appears {
            self.headers.add(position as usize, 1);
        }
        appears
    }

    /// Takes a member's row out of the member tree and its group, recording the rows
    /// removed (the header first, when the group empties). The id index is the caller's
    /// to update.
    fn remove_member_row(&mut self, element: &[u8], edits: &mut Edits) {
        let key = element_key(element);
        let position = group_of(key) as usize;
        let rank = self
            .members
            .remove(Key::from_bytes(key))
            .expect("indexed members are in the tree");
        let row = self.member_row(key, rank);
        let group = &mut self.groups[position];
        group.members -= 1;
        let empties = group.members == 0;
        self.rows.add(position, if empties { -2 } else { -1 });
        if empties {
            self.headers.add(position, -1);
            edits
                .removed
                .push((row - 1, RowId::Header(position as u16)));
        }
        edits.removed.push((row, RowId::Member));
    }

    fn ranges_overlapping(&self, low: u64, high: u64) -> impl Iterator<Item = Range> + '_ {
        let longest = self.range_lengths.keys().next_back().copied().unwrap_or(0);
        let from = low.saturating_sub(longest);
        self.ranges
            .range((from, 0)..=(high, u64::MAX))
            .map(|(&range, _)| range)
            .filter(move |&(first, last)| first <= high && last >= low)
    }

    fn changes(&self, edits: &Edits) -> Changes<'_> {
        let all = edits.removed.iter().chain(&edits.inserted).map(|&(x, _)| x);
        let (Some(low), Some(high)) = (all.clone().min(), all.max()) else {
            return Vec::new();
        };
        // When the list grew or shrank, every row below the edits moved.
        let high = if edits.removed.len() == edits.inserted.len() {
            high
        } else {
            u64::MAX
        };
        self.ranges_overlapping(low, high)
            .filter_map(|(first, last)| {
                let (leaving, entering) = edits.window(first, last);
                let ops: Vec<Op> = leaving
                    .as_slice()
                    .iter()
                    .rev()
                    .map(|&y| Op::Delete(y))
                    .chain(entering.as_slice().iter().map(|&x| {
                        Op::Insert(x, self.row_at(x).expect("new indices are in the list"))
                    }))
                    .collect();
                (!ops.is_empty()).then_some(((first, last), ops))
            })
            .collect()
    }
}

fn group_of(member_key: &[u8]) -> u16 {
    u16::from_be_bytes([member_key[0], member_key[1]])
}

/// The id index entry: keyed by the id key, carrying the member element minus that key.
fn index_element(member_element: &[u8], id_key_len: usize) -> Vec<u8> {
    let (without_id, id_key) = member_element.split_at(member_element.len() - id_key_len);
    element_from_parts(without_id, id_key)
}
