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
//! The API takes and returns term-key elements ([`crate::term_key`]): member ids, group
//! ids and sort keys go in as [`Element`]s, rows come out as [`Row`]s that read back
//! the term they show. How members are laid out in the tree is this module's business.
//!
//! # Terms that are equal but not identical
//!
//! Ids, group ids and sort keys compare as Erlang's `==` does, like every other term
//! here: `2` and `2.0` are the same member. Putting a member again with an id that is
//! equal but not identical to the stored one stores the new term, and the windows that
//! show the member are told: with an update when the row stays where it was, with the
//! new row in the insert when it moves. A sort key that is equal but not identical
//! changes nothing a client sees (rows show ids), so it is stored silently. A group id
//! only selects a group; headers show the group id given to [`MemberList::new`].
//!
//! # How the ops are found
//!
//! Every change is a few rows removed from the old list and inserted into the new one
//! (`edits`). The windows it can affect overlap the span of those edits (or everything
//! below it up to the end of the list, when the list grew or shrank); they are found in
//! the window table without visiting any other window ([`windows`]). For each, a few
//! index computations give its ops; the rows those ops insert are read from the list
//! afterwards, each once however many windows show it ([`MemberList::rows_at`]).
//!
//! # Storage
//!
//! - `rows`: a [`KeyTree`] of every row in display order, so that a row's index is its
//!   rank. A member is keyed by `[group position: u16][key of sort_key][key of
//!   member_id][length of that key: u32]`, with the id's hint: the trailing length
//!   finds the id without reading the sort key, so a row's id is read directly. (The
//!   length never takes part in the order: ids are distinct and their keys prefix-free.)
//!   A non-empty group's header is keyed by `[group position][00]`, which sorts before
//!   the group's members (whose next byte is a type tag).
//! - `by_id`: a [`KeyTree`] keyed by the member id's key. Its hint slot carries the
//!   member key without the id, the sort key's hint and the id's, so a member's row is
//!   found from its id alone, both terms are kept exactly, and a change of the id's exact
//!   term is seen without decoding.
//! - `counts`: members per group; `windows`: the watched windows.
//!
//! Every part is shared between clones: [`MemberList::clone`] is an O(1) snapshot, and a
//! write after it copies only the nodes it touches.

mod counts;
mod dump;
mod edits;
mod windows;

use std::sync::Arc;

use crate::key_tree::{KeyTree, MAX_ELEMENT_LEN, MAX_LEN};
use crate::term_key::{
    element_from_parts, element_hint, element_key, CorruptKey, Element, ElementRef, Key, KeyReader,
};
#[doc(hidden)]
pub use counts::Counts;
pub use edits::Indices;
use edits::{Edits, RowId};
pub use windows::{Range, Windows};

/// Most groups a list can have (group positions are stored in two bytes).
pub const MAX_GROUPS: usize = u16::MAX as usize;
/// Bytes of group position in front of a member key.
const GROUP_PREFIX: usize = 2;
/// Bytes of id key length at the end of a member key.
const ID_LENGTH: usize = 4;
/// The byte after the group position in a header's key; member keys have a type tag
/// there, which is never zero.
const HEADER_MARK: u8 = 0;

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
    /// An element is not a valid encoding (a bug in the caller's encoder).
    Corrupt,
}

impl From<CorruptKey> for MemberListError {
    fn from(_: CorruptKey) -> Self {
        MemberListError::Corrupt
    }
}

/// A row of the flat list, borrowed from the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    element: &'a [u8],
    group: bool,
}

impl<'a> Row<'a> {
    /// True for a group header, false for a member.
    pub fn is_group(&self) -> bool {
        self.group
    }

    /// A reader at the term the row shows: the group id of a header, the member id of a
    /// member. Read one term from it.
    ///
    /// Time: O(1).
    pub fn term(&self) -> Result<KeyReader<'a>, CorruptKey> {
        if self.group {
            return KeyReader::new(self.element);
        }
        let key = element_key(self.element);
        let (rest, length) = key
            .split_at_checked(key.len().wrapping_sub(ID_LENGTH))
            .ok_or(CorruptKey)?;
        let length = u32::from_be_bytes(length.try_into().map_err(|_| CorruptKey)?) as usize;
        let start = rest.len().checked_sub(length).ok_or(CorruptKey)?;
        KeyReader::with_key_offset(self.element, start)
    }

    /// Bytes of the row's encoding: a bound on the work of reading its term.
    pub fn encoded_len(&self) -> usize {
        self.element.len()
    }
}

/// One edit of a window's copy. Rows are named by their index in the list after the
/// change ([`MemberList::rows_at`] reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert the row now at this index; rows pushed past the window's end are dropped.
    Insert(u64),
    /// Replace the row at this index with the row now there.
    Update(u64),
    /// Remove the row at this index.
    Delete(u64),
}

/// The ops of one watched window.
#[derive(Debug, Clone, Copy)]
pub struct WindowOps {
    range: Range,
    deletes: Indices,
    inserts: Indices,
    update: Option<u64>,
}

impl WindowOps {
    /// The window.
    pub fn range(&self) -> Range {
        self.range
    }

    /// True when the window's rows did not change.
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.inserts.is_empty() && self.update.is_none()
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.deletes.as_slice().len() + self.inserts.as_slice().len() + self.update.iter().len()
    }

    /// The ops, in the order a client applies them.
    pub fn ops(&self) -> impl DoubleEndedIterator<Item = Op> + '_ {
        let deletes = self.deletes.as_slice().iter().rev().map(|&y| Op::Delete(y));
        let inserts = self.inserts.as_slice().iter().map(|&x| Op::Insert(x));
        deletes
            .chain(inserts)
            .chain(self.update.iter().map(|&x| Op::Update(x)))
    }

    /// Indices of the rows the ops carry, ascending.
    pub fn rows(&self) -> impl Iterator<Item = u64> + '_ {
        self.inserts.as_slice().iter().copied().chain(self.update)
    }
}

/// What a change did, for [`MemberList::changed_windows`]. Small and owned, so that the
/// ops can be computed later from a snapshot taken right after the change.
#[derive(Debug, Clone, Default)]
pub struct Change(ChangeKind);

#[derive(Debug, Clone, Default)]
enum ChangeKind {
    /// Nothing a window shows changed.
    #[default]
    None,
    /// The row at this index shows a new term (or was touched).
    Update(u64),
    /// Rows moved.
    Edits(Edits),
}

impl Change {
    /// True when no window can have changed.
    pub fn is_empty(&self) -> bool {
        self.span().is_none()
    }

    /// The rows whose windows may have changed, `[low, high]`.
    pub fn span(&self) -> Option<(u64, u64)> {
        match &self.0 {
            ChangeKind::None => None,
            ChangeKind::Update(row) => Some((*row, *row)),
            ChangeKind::Edits(edits) => edits.span(),
        }
    }

    fn window_ops(&self, range: Range) -> WindowOps {
        let mut ops = WindowOps {
            range,
            deletes: Indices::default(),
            inserts: Indices::default(),
            update: None,
        };
        match &self.0 {
            ChangeKind::None => {}
            ChangeKind::Update(row) => ops.update = Some(*row),
            ChangeKind::Edits(edits) => (ops.deletes, ops.inserts) = edits.window(range.0, range.1),
        }
        ops
    }
}

/// The configured groups: fixed at creation, so shared by every snapshot.
#[derive(Debug)]
struct Groups {
    /// Group id elements by position.
    elements: Vec<Box<[u8]>>,
    /// Positions sorted by group key, to find a group by binary search.
    by_key: Vec<u16>,
}

impl Groups {
    fn key(&self, position: u16) -> &[u8] {
        element_key(&self.elements[position as usize])
    }

    fn position(&self, key: &[u8]) -> Option<u16> {
        self.by_key
            .binary_search_by(|&p| self.key(p).cmp(key))
            .ok()
            .map(|i| self.by_key[i])
    }
}

/// The member sidebar. See the module documentation.
#[derive(Debug, Clone)]
pub struct MemberList {
    groups: Arc<Groups>,
    /// Members per group.
    counts: Counts,
    /// Groups with at least one member (each shows a header row).
    nonempty: u64,
    /// Headers and members in display order.
    rows: KeyTree,
    by_id: KeyTree,
    windows: Windows,
}

/// What the id index holds about a member.
struct Indexed {
    /// The member's row key.
    key: Vec<u8>,
    /// The hints of the stored id and sort key.
    id_hint: Vec<u8>,
    sort_hint: Vec<u8>,
}

impl MemberList {
    /// An empty list whose groups, given as group id elements in display order, are
    /// shown in that order.
    ///
    /// Time: O(groups × log groups).
    pub fn new(groups: Vec<Element>) -> Result<Self, MemberListError> {
        if groups.len() > MAX_GROUPS {
            return Err(MemberListError::TooManyGroups);
        }
        let elements: Vec<Box<[u8]>> = groups.iter().map(|g| g.as_bytes().into()).collect();
        let mut by_key: Vec<u16> = (0..groups.len() as u16).collect();
        by_key.sort_by(|&a, &b| groups[a as usize].key().cmp(groups[b as usize].key()));
        // Equal keys sort next to each other (by position, as the sort is stable); the
        // duplicate is the first position that repeats an earlier group.
        let duplicate = by_key
            .windows(2)
            .filter(|pair| groups[pair[0] as usize].key() == groups[pair[1] as usize].key())
            .map(|pair| pair[1] as usize)
            .min();
        if let Some(position) = duplicate {
            return Err(MemberListError::DuplicateGroup(position));
        }
        Ok(MemberList {
            counts: Counts::new(groups.len()),
            groups: Arc::new(Groups { elements, by_key }),
            nonempty: 0,
            rows: KeyTree::new(),
            by_id: KeyTree::new(),
            windows: Windows::default(),
        })
    }

    /// Rows, headers included. Time: O(1).
    pub fn size(&self) -> u64 {
        self.rows.len() as u64
    }

    /// Members. Time: O(1).
    pub fn member_count(&self) -> u64 {
        self.rows.len() as u64 - self.nonempty
    }

    /// Adds a member to a group with a sort key, or moves it there if present. Returns
    /// what changed, for [`changed_windows`](Self::changed_windows).
    ///
    /// Time: O(log n + log groups).
    pub fn put(
        &mut self,
        member_id: &Element,
        group_id: &Element,
        sort_key: &Element,
    ) -> Result<Change, MemberListError> {
        let position = self
            .groups
            .position(group_id.key())
            .ok_or(MemberListError::UnknownGroup)?;
        let element = member_element(position, sort_key, member_id);
        let key = element.key();
        let without_id = &key[..key.len() - member_id.key().len() - ID_LENGTH];
        let entry = index_entry(member_id, sort_key, without_id);
        if element.as_bytes().len().max(entry.as_bytes().len()) > MAX_ELEMENT_LEN {
            return Err(MemberListError::TooLarge);
        }
        // A put adds at most a member and a header.
        if self.rows.len() + 2 > MAX_LEN {
            return Err(MemberListError::Full);
        }
        let old = self.indexed(member_id.key());
        let id_changed = old.as_ref().is_some_and(|o| o.id_hint != member_id.hint());
        if let Some(old) = &old {
            if old.key == key {
                // Same place: at most the stored terms differ (`2.0` for `2`).
                if !id_changed && old.sort_hint == sort_key.hint() {
                    return Ok(Change::default());
                }
                self.by_id.replace(&entry).expect("the length was checked");
                if !id_changed {
                    return Ok(Change::default());
                }
                let row = self
                    .rows
                    .replace(&element)
                    .ok()
                    .flatten()
                    .expect("indexed members have rows, and the length was checked");
                return Ok(Change(ChangeKind::Update(row as u64)));
            }
        }

        let mut edits = Edits {
            old_len: self.size(),
            ..Edits::default()
        };
        if let Some(old) = &old {
            self.remove_row(&old.key, &mut edits);
        }
        let header_appears = self.counts.add(position as usize, 1) == 1;
        if header_appears {
            self.nonempty += 1;
            self.rows
                .insert(&header_element(position))
                .expect("the room was checked");
        }
        // The length and the room were checked above, and the member's row is gone.
        let row = self
            .rows
            .insert(&element)
            .ok()
            .flatten()
            .expect("the member is not in the list") as u64;
        if header_appears {
            edits.inserted.push((row - 1, RowId::Header(position)));
        }
        let id = if id_changed {
            RowId::ChangedMember
        } else {
            RowId::Member
        };
        edits.inserted.push((row, id));
        // The id index holds no more entries than the list has rows.
        if old.is_some() {
            self.by_id.replace(&entry)
        } else {
            self.by_id.insert(&entry)
        }
        .expect("the length and the room were checked");
        edits.new_len = self.size();
        edits.cancel_unmoved();
        Ok(Change(ChangeKind::Edits(edits)))
    }

    /// Marks a member's displayed data as changed: an update for each watched window
    /// showing its row. Empty when the member is absent.
    ///
    /// Time: O(log n).
    pub fn touch(&self, member_id: &Element) -> Change {
        match self.index_of(member_id) {
            Some(row) => Change(ChangeKind::Update(row)),
            None => Change::default(),
        }
    }

    /// Removes a member. Empty when the member is absent.
    ///
    /// Time: O(log n).
    pub fn remove(&mut self, member_id: &Element) -> Change {
        let Some(old) = self.indexed(member_id.key()) else {
            return Change::default();
        };
        let mut edits = Edits {
            old_len: self.size(),
            ..Edits::default()
        };
        self.remove_row(&old.key, &mut edits);
        self.by_id.remove(member_id.lookup_key());
        edits.new_len = self.size();
        Change(ChangeKind::Edits(edits))
    }

    /// The row index of a member. Time: O(log n).
    pub fn index_of(&self, member_id: &Element) -> Option<u64> {
        let old = self.indexed(member_id.key())?;
        self.rows
            .position(Key::from_bytes(&old.key))
            .ok()
            .map(|row| row as u64)
    }

    /// The rows `first..=last` that exist, in order.
    ///
    /// Time: O(log n) to start, then O(1) amortized per row.
    pub fn rows(&self, first: u64, last: u64) -> impl Iterator<Item = Row<'_>> + '_ {
        let size = self.size();
        let count = if first >= size || first > last {
            0
        } else {
            last.min(size - 1) - first + 1
        };
        let start = usize::try_from(first).unwrap_or(usize::MAX);
        self.rows
            .iter_from(start)
            .take(count as usize)
            .map(|element| self.row(element))
    }

    /// The rows at `indices`, which must be ascending and below [`size`](Self::size), in
    /// one ordered walk of the tree ([`KeyTree::get_ascending`]): each node is entered
    /// once for all the rows below it, so the rows of consecutive windows, however far
    /// apart, share the descent.
    ///
    /// Time: O(log n + k) for k rows close together, O(k log n) at worst.
    pub fn rows_at(&self, indices: &[u64]) -> Vec<Row<'_>> {
        let indices: Vec<usize> = indices
            .iter()
            .map(|&x| usize::try_from(x).unwrap_or(usize::MAX))
            .collect();
        let elements = self.rows.get_ascending(&indices);
        assert_eq!(
            elements.len(),
            indices.len(),
            "rows_at: index below the size"
        );
        elements
            .into_iter()
            .map(|element| self.row(element))
            .collect()
    }

    /// Watches `range` (reference-counted). `first` must not exceed `last`.
    ///
    /// Time: O(log windows).
    pub fn watch(&mut self, range: Range) {
        debug_assert!(range.0 <= range.1);
        self.windows.watch(range);
    }

    /// Drops one watch of `range`; returns false if it was not watched.
    ///
    /// Time: O(log windows).
    pub fn unwatch(&mut self, range: Range) -> bool {
        self.windows.unwatch(range)
    }

    /// Number of distinct watched windows. Time: O(1).
    pub fn watched_len(&self) -> usize {
        self.windows.distinct()
    }

    /// The watched windows that `change` may have changed, below `below` (all when
    /// `None`), in descending order, with their ops. A window whose rows stayed the same
    /// comes with no ops. `change` must be the last change made to this list (or to the
    /// list this is a snapshot of, taken right after it).
    ///
    /// Time: O(log windows) to start, then O(log windows) at most per window; windows
    /// that cannot have changed are never visited.
    pub fn changed_windows<'a>(
        &'a self,
        change: &'a Change,
        below: Option<Range>,
    ) -> impl Iterator<Item = WindowOps> + 'a {
        let windows = change
            .span()
            .map(|(low, high)| self.windows.overlapping_desc(low, high, below));
        windows
            .into_iter()
            .flatten()
            .map(move |range| change.window_ops(range))
    }

    /// Number of groups given to [`new`](Self::new). Time: O(1).
    pub fn group_count(&self) -> usize {
        self.counts.slots()
    }

    /// The group at `position`: a row showing its id, and its member count.
    ///
    /// Time: O(1).
    pub fn group(&self, position: usize) -> Option<(Row<'_>, u64)> {
        let element = self.groups.elements.get(position)?;
        let row = Row {
            element,
            group: true,
        };
        Some((row, u64::from(self.counts.get(position))))
    }

    /// Non-empty groups in display order: the group id's element and its member count.
    ///
    /// Time: O(groups).
    pub fn groups(&self) -> impl Iterator<Item = (Row<'_>, u64)> + '_ {
        (0..self.group_count())
            .filter_map(|position| self.group(position))
            .filter(|&(_, count)| count > 0)
    }

    /// Heap bytes held natively (trees, groups, counts, windows), counting parts shared
    /// with snapshots in full.
    ///
    /// Time: O(n / 64).
    pub fn heap_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .elements
            .iter()
            .map(|g| std::mem::size_of::<Box<[u8]>>() + g.len() + 2)
            .sum();
        std::mem::size_of::<Self>()
            + self.rows.heap_bytes()
            + self.by_id.heap_bytes()
            + groups
            + self.counts.heap_bytes()
            + self.windows.heap_bytes()
    }

    fn row<'a>(&'a self, element: ElementRef<'a>) -> Row<'a> {
        let key = element.key().as_bytes();
        if key.get(GROUP_PREFIX) == Some(&HEADER_MARK) {
            Row {
                element: &self.groups.elements[group_of(key) as usize],
                group: true,
            }
        } else {
            Row {
                element: element.as_bytes(),
                group: false,
            }
        }
    }

    /// What the id index holds about the member with this id key.
    fn indexed(&self, id_key: &[u8]) -> Option<Indexed> {
        let (_, entry) = self.by_id.find(Key::from_bytes(id_key))?;
        let hints_and_prefix = entry.hint();
        let sort_and_prefix = element_key(hints_and_prefix);
        Some(Indexed {
            key: member_key(element_key(sort_and_prefix), id_key),
            id_hint: element_hint(hints_and_prefix).to_vec(),
            sort_hint: element_hint(sort_and_prefix).to_vec(),
        })
    }

    /// Takes a member's row out of the list and its group, recording the rows removed
    /// (the header first, when the group empties). The id index is the caller's to
    /// update.
    fn remove_row(&mut self, key: &[u8], edits: &mut Edits) {
        let position = group_of(key);
        let row = self
            .rows
            .remove(Key::from_bytes(key))
            .expect("indexed members are in the list") as u64;
        if self.counts.add(position as usize, -1) == 0 {
            self.nonempty -= 1;
            self.rows.remove(header_element(position).lookup_key());
            edits.removed.push((row - 1, RowId::Header(position)));
        }
        edits.removed.push((row, RowId::Member));
    }
}

fn group_of(key: &[u8]) -> u16 {
    u16::from_be_bytes([key[0], key[1]])
}

fn header_element(position: u16) -> Element {
    let [high, low] = position.to_be_bytes();
    Element::from_parts(&[], &[high, low, HEADER_MARK])
}

/// A member's row key: the key without the id, the id's key, and that key's length.
fn member_key(without_id: &[u8], id_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(without_id.len() + id_key.len() + ID_LENGTH);
    key.extend_from_slice(without_id);
    key.extend_from_slice(id_key);
    // Ids are at most `MAX_ELEMENT_LEN` bytes, well within a u32.
    key.extend_from_slice(&(id_key.len() as u32).to_be_bytes());
    key
}

/// A member's row element: the key `[position][sort key][id key][id key length]`, with
/// the id's hint.
fn member_element(position: u16, sort_key: &Element, member_id: &Element) -> Element {
    let mut without_id = Vec::with_capacity(GROUP_PREFIX + sort_key.key().len());
    without_id.extend_from_slice(&position.to_be_bytes());
    without_id.extend_from_slice(sort_key.key());
    Element::from_parts(member_id.hint(), &member_key(&without_id, member_id.key()))
}

/// The id index entry: keyed by the id's key, carrying the id's hint, the sort key's
/// hint, and the member key up to the id.
fn index_entry(member_id: &Element, sort_key: &Element, without_id: &[u8]) -> Element {
    let sort_and_prefix = element_from_parts(sort_key.hint(), without_id);
    Element::from_parts(
        &element_from_parts(member_id.hint(), &sort_and_prefix),
        member_id.key(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term_key::{Integer, KeyEncoder, Number, Token};

    fn int(v: i64) -> Element {
        Element::number(Number::Int(v))
    }

    fn float(v: f64) -> Element {
        Element::number(Number::Float(v))
    }

    /// `{a, b}` with floats where asked.
    fn pair(a: f64, a_float: bool, b: f64, b_float: bool) -> Element {
        let mut e = KeyEncoder::new();
        e.push_tuple(2);
        for (v, is_float) in [(a, a_float), (b, b_float)] {
            if is_float {
                e.push_number(Number::Float(v), false);
            } else {
                e.push_number(Number::Int(v as i64), false);
            }
        }
        e.finish()
    }

    fn read(row: Row<'_>) -> Vec<Token<'_>> {
        let mut reader = row.term().unwrap();
        let mut tokens = Vec::new();
        let mut owed = 1usize;
        while owed > 0 {
            let token = reader.next().unwrap().unwrap();
            owed -= 1;
            if let Token::Tuple(n) = token {
                owed += n;
            }
            tokens.push(token);
        }
        tokens
    }

    #[test]
    fn rows_read_back_exact_ids_after_float_sort_keys() {
        let mut list = MemberList::new(vec![int(1)]).unwrap();
        // The sort key holds floats and so does the id: the id's marks must follow the
        // sort key's numbers.
        list.put(
            &pair(1.0, true, 5.0, false),
            &int(1),
            &pair(0.5, true, -0.0, true),
        )
        .unwrap();
        list.put(&float(-0.0), &int(1), &pair(2.0, false, 3.0, true))
            .unwrap();
        let rows: Vec<Row> = list.rows(0, 9).collect();
        assert!(rows[0].is_group());
        assert_eq!(
            read(rows[1]),
            [
                Token::Tuple(2),
                Token::Float(1.0),
                Token::Integer(Integer::I64(5))
            ]
        );
        let Token::Float(zero) = read(rows[2])[0] else {
            panic!("a float")
        };
        assert!(zero == 0.0 && zero.is_sign_negative());
    }

    #[test]
    fn an_equal_but_not_identical_id_is_an_update() {
        let mut list = MemberList::new(vec![int(0)]).unwrap();
        list.watch((0, 9));
        let change = list.put(&int(2), &int(0), &int(7)).unwrap();
        assert!(!change.is_empty());
        // The same id again: nothing.
        assert!(list.put(&int(2), &int(0), &int(7)).unwrap().is_empty());
        // An equal sort key: stored, nothing shown changed.
        assert!(list
            .put(&int(2), &float(0.0), &float(7.0))
            .unwrap()
            .is_empty());
        let change = list.put(&float(2.0), &int(0), &float(7.0)).unwrap();
        let ops: Vec<Op> = list
            .changed_windows(&change, None)
            .flat_map(|w| w.ops().collect::<Vec<_>>())
            .collect();
        assert_eq!(ops, [Op::Update(1)]);
        assert_eq!(read(list.rows_at(&[1])[0]), [Token::Float(2.0)]);
        assert_eq!(list.index_of(&int(2)), Some(1));
        assert_eq!(list.member_count(), 1);
    }

    #[test]
    fn windows_that_end_at_the_last_index() {
        let mut list = MemberList::new(vec![int(0)]).unwrap();
        for range in [
            (0, u64::MAX),
            (u64::MAX, u64::MAX),
            (u64::MAX - 3, u64::MAX),
            (2, u64::MAX),
        ] {
            list.watch(range);
        }
        let ops = |list: &MemberList, change: &Change| -> Vec<(Range, Vec<Op>)> {
            let windows = list.changed_windows(change, None);
            windows
                .map(|w| (w.range(), w.ops().collect()))
                .filter(|(_, o): &(_, Vec<_>)| !o.is_empty())
                .collect()
        };
        for id in 0..6 {
            let change = list.put(&int(id), &int(0), &int(id)).unwrap();
            let got = ops(&list, &change);
            assert!(
                got.iter().all(|(range, _)| range.0 <= id as u64 + 1),
                "{got:?}"
            );
        }
        // Removing the first member shifts everything up: each window loses its top row
        // and gains the row that moved up to its bottom, which does not exist.
        // (Windows come in descending order.)
        let change = list.remove(&int(0));
        let got = ops(&list, &change);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], ((2, u64::MAX), vec![Op::Delete(2)]));
        assert_eq!(got[1], ((0, u64::MAX), vec![Op::Delete(1)]));
    }

    #[test]
    fn duplicate_groups_name_the_first_repeat() {
        let groups = vec![int(5), int(1), float(5.0), int(1)];
        assert_eq!(
            MemberList::new(groups).unwrap_err(),
            MemberListError::DuplicateGroup(2)
        );
    }

    #[test]
    fn snapshots_keep_their_rows() {
        let mut list = MemberList::new(vec![int(0), int(1)]).unwrap();
        for id in 0..1000 {
            list.put(&int(id), &int(id % 2), &int(id)).unwrap();
        }
        let snapshot = list.clone();
        for id in 0..500 {
            list.remove(&int(id));
        }
        assert_eq!(snapshot.member_count(), 1000);
        assert_eq!(snapshot.index_of(&int(0)), Some(1));
        assert_eq!(list.member_count(), 500);
        assert_eq!(list.index_of(&int(0)), None);
    }
}
