//! A member list as a dump (`crate::dump`), and back.
//!
//! The dump holds the list's two trees as they are, so that both are written with one
//! pass over their leaves and loaded with [`KeyTree::from_ascending`], without a sort:
//! the rows (headers and members, in display order), then the id index (in id order).
//! The metadata holds the group ids, the number of rows, and the watched windows with
//! their watch counts.
//!
//! A load validates everything a later operation relies on, as if the checksum were
//! absent: every group id, member id and sort key is one well-formed term; each
//! non-empty group has exactly one header, right before its members; both trees are
//! strictly ascending; and the id index holds exactly the members of the rows. That
//! last check compares the two sets through a sum of keyed hashes (SipHash with a
//! key drawn for each load, so that no dump can be made to collide on purpose): each
//! id index entry names the row it must have, and the sums and counts of those rows
//! and of the member rows must be equal.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use super::{
    group_of, Counts, MemberList, Windows, GROUP_PREFIX, HEADER_MARK, ID_LENGTH, MAX_GROUPS,
};
use crate::dump::{
    build_error, join, Dump, DumpError, Kind, LoadError, Plan, TermChecker, PARALLEL_ABOVE,
};
use crate::key_tree::KeyTree;
use crate::term_key::{element_hint, element_key, Element, ElementRef};

/// Most watches a dump may restore (each one is a `watch` of O(log windows)), which
/// bounds the work a forged dump can cause.
const MAX_WATCHES: u64 = 1 << 24;

/// What a member list's dump holds besides its trees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MemberListMeta {
    /// The group id elements, in display order.
    groups: Vec<Vec<u8>>,
    /// How many of the dump's elements are rows; the rest are the id index.
    rows: u64,
    /// Watched windows, ascending, with their watch counts.
    windows: Vec<(u64, u64, u32)>,
}

impl MemberList {
    /// Plans this list's dump (see [`Plan::write`] with [`MemberList::dump_elements`]).
    ///
    /// Time: O(n + windows).
    pub fn plan_dump(&self) -> Result<Plan, DumpError> {
        let meta = MemberListMeta {
            groups: self.groups.elements.iter().map(|g| g.to_vec()).collect(),
            rows: self.rows.len() as u64,
            windows: self
                .windows
                .to_vec()
                .into_iter()
                .map(|((first, last), watchers)| (first, last, watchers))
                .collect(),
        };
        Plan::split(
            Kind::MemberList,
            &meta,
            self.rows.element_bytes(),
            self.by_id.element_bytes(),
        )
    }

    /// Writes this list's dump, planned by [`MemberList::plan_dump`], into `out` (of
    /// [`Plan::len`] bytes): the rows and the id index each on a thread of its own when
    /// large.
    ///
    /// Time: O(bytes).
    pub fn write_dump(&self, plan: &Plan, out: &mut [u8]) -> Result<(), DumpError> {
        plan.write_split(out, self.rows.element_bytes(), self.by_id.element_bytes())
    }

    /// The elements of this list's dump, in order.
    pub fn dump_elements(&self) -> impl Iterator<Item = &[u8]> {
        self.rows.element_bytes().chain(self.by_id.element_bytes())
    }

    /// This list as a dump.
    ///
    /// Time: O(bytes).
    pub fn to_dump(&self) -> Result<Vec<u8>, DumpError> {
        let plan = self.plan_dump()?;
        let mut out = vec![0; plan.len()];
        self.write_dump(&plan, &mut out)?;
        Ok(out)
    }

    /// Loads a list from a dump made by [`MemberList::to_dump`].
    ///
    /// Time: O(bytes + windows × log windows).
    pub fn from_dump(bytes: &[u8]) -> Result<MemberList, LoadError> {
        let dump = Dump::parse(bytes, Kind::MemberList)?;
        let meta: MemberListMeta = dump.metadata()?;
        let mut checker = TermChecker::default();

        if meta.groups.len() > MAX_GROUPS {
            return Err(LoadError::BadMetadata("more groups than a list can have"));
        }
        let mut groups = Vec::with_capacity(meta.groups.len());
        for (position, group) in meta.groups.iter().enumerate() {
            checker
                .check(position as u64, group)
                .map_err(|_| LoadError::BadMetadata("a group id is not a well-formed term"))?;
            groups.push(Element::from_parts(element_hint(group), element_key(group)));
        }
        let mut list = MemberList::new(groups)
            .map_err(|_| LoadError::BadMetadata("two group ids are equal"))?;

        if meta.rows > dump.count() {
            return Err(LoadError::BadMetadata("more rows than elements"));
        }
        // The rows and the id index are checked and built at the same time, each on a
        // thread of its own; their hash sums are compared at the end.
        let elements = dump.check_elements(|_, _| Ok(()))?;
        let rows = meta.rows as usize;
        let (row_elements, index_elements) = (elements.clone().take(rows), elements.skip(rows));
        let hasher = RandomState::new();
        let mut rows_check = RowsCheck::new(list.group_count(), hasher.clone());
        let mut index_check = IndexCheck::new(hasher);
        let load_rows = || {
            for (position, element) in row_elements.clone().enumerate() {
                rows_check.row(position as u64, element)?;
            }
            KeyTree::from_ascending(row_elements.map(ElementRef::from_bytes)).map_err(build_error)
        };
        let load_index = || {
            for (position, element) in index_elements.clone().enumerate() {
                index_check.indexed(position as u64 + meta.rows, element)?;
            }
            KeyTree::from_ascending(index_elements.map(ElementRef::from_bytes)).map_err(|error| {
                match build_error(error) {
                    LoadError::NotAscending { position } => LoadError::NotAscending {
                        position: position + meta.rows,
                    },
                    other => other,
                }
            })
        };
        let (rows_tree, index_tree) = if dump.count() as usize > PARALLEL_ABOVE {
            join(load_rows, load_index)
        } else {
            (load_rows(), load_index())
        };
        let (rows_tree, index_tree) = (rows_tree?, index_tree?);
        rows_check.finish(&index_check)?;
        list.rows = rows_tree;
        list.by_id = index_tree;
        let check = rows_check;
        let mut counts = Counts::new(check.counts.len());
        for (group, &count) in check.counts.iter().enumerate() {
            let mut left = count;
            while left > 0 {
                let step = left.min(i32::MAX as u32);
                counts.add(group, step as i32);
                left -= step;
            }
        }
        list.counts = counts;
        list.nonempty = check.headers;
        list.windows = windows(&meta.windows)?;
        Ok(list)
    }
}

/// The windows of a dump, checked: each non-empty and watched, ascending, and not more
/// watches in all than [`MAX_WATCHES`].
fn windows(dumped: &[(u64, u64, u32)]) -> Result<Windows, LoadError> {
    let mut windows = Windows::default();
    let mut watches = 0u64;
    let mut previous = None;
    for &(first, last, watchers) in dumped {
        if first > last || watchers == 0 || previous >= Some((first, last)) {
            return Err(LoadError::BadMetadata(
                "a watched window is empty, unwatched or out of order",
            ));
        }
        previous = Some((first, last));
        watches += u64::from(watchers);
        if watches > MAX_WATCHES {
            return Err(LoadError::BadMetadata(
                "more watches than a dump can restore",
            ));
        }
        for _ in 0..watchers {
            windows.watch((first, last));
        }
    }
    Ok(windows)
}

/// What the checks of a dump's rows have seen so far.
struct RowsCheck {
    checker: TermChecker,
    /// Members per group.
    counts: Vec<u32>,
    headers: u64,
    /// The group of the last header, and whether a member has followed it.
    group: Option<(u16, bool)>,
    members: u64,
    hasher: RandomState,
    /// The sum of the keyed hashes of the member rows.
    sum: u64,
    /// An id with its hint, as an element to check.
    term: Vec<u8>,
}

impl RowsCheck {
    fn new(groups: usize, hasher: RandomState) -> Self {
        RowsCheck {
            checker: TermChecker::default(),
            counts: vec![0; groups],
            headers: 0,
            group: None,
            members: 0,
            hasher,
            sum: 0,
            term: Vec::new(),
        }
    }

    /// A row: a header `[group][00]` without a hint, or a member `[group][sort key][id
    /// key][id key length]` with the id's hint, whose id is one well-formed term.
    fn row(&mut self, position: u64, element: &[u8]) -> Result<(), LoadError> {
        let bad = |why| LoadError::BadElement { position, why };
        let key = element_key(element);
        if key.len() <= GROUP_PREFIX {
            return Err(bad("is not a row"));
        }
        let group = group_of(key);
        if group as usize >= self.counts.len() {
            return Err(bad("is in a group the list does not have"));
        }
        if key[GROUP_PREFIX] == HEADER_MARK {
            if element != super::header_element(group).as_bytes() {
                return Err(bad("is not a group header"));
            }
            if self
                .group
                .is_some_and(|(g, members)| g >= group || !members)
            {
                return Err(bad("is a header out of place"));
            }
            self.group = Some((group, false));
            self.headers += 1;
            return Ok(());
        }
        if self.group.map(|(g, _)| g) != Some(group) {
            return Err(bad("is a member without its group's header"));
        }
        self.group = Some((group, true));
        // The id: its key ends the row key before its length.
        let Some(id_end) = key.len().checked_sub(ID_LENGTH) else {
            return Err(bad("is not a row"));
        };
        let mut length = [0; ID_LENGTH];
        length.copy_from_slice(&key[id_end..]);
        let id_len = u32::from_be_bytes(length) as usize;
        let id_start = id_end
            .checked_sub(id_len)
            .filter(|&start| start > GROUP_PREFIX)
            .ok_or(bad("has an id length that does not fit"))?;
        self.term.clear();
        push_varint(&mut self.term, element_hint(element).len());
        self.term.extend_from_slice(element_hint(element));
        self.term.extend_from_slice(&key[id_start..id_end]);
        self.checker.check(position, &self.term)?;
        self.counts[group as usize] += 1;
        self.members += 1;
        self.sum = self.sum.wrapping_add(self.hasher.hash_one(element));
        Ok(())
    }

    /// After every element: the last header has members, and the id index names exactly
    /// the member rows.
    fn finish(&self, index: &IndexCheck) -> Result<(), LoadError> {
        if self.group.is_some_and(|(_, members)| !members) {
            return Err(LoadError::BadHeader("a group header without members"));
        }
        if index.entries != self.members || index.sum != self.sum {
            return Err(LoadError::BadHeader(
                "the id index does not match the members of the rows",
            ));
        }
        Ok(())
    }
}

/// What the checks of a dump's id index have seen so far.
struct IndexCheck {
    checker: TermChecker,
    entries: u64,
    hasher: RandomState,
    /// The sum of the keyed hashes of the rows the entries name.
    sum: u64,
    /// A row named by an entry, rebuilt in place.
    row: Vec<u8>,
    /// A sort key with its hint, as an element to check.
    term: Vec<u8>,
}

impl IndexCheck {
    fn new(hasher: RandomState) -> Self {
        IndexCheck {
            checker: TermChecker::default(),
            entries: 0,
            hasher,
            sum: 0,
            row: Vec::new(),
            term: Vec::new(),
        }
    }

    /// An id index entry: the id's key, with the hint `[id hint, [sort key hint, member
    /// key up to the id]]`; its sort key is one well-formed term.
    fn indexed(&mut self, position: u64, element: &[u8]) -> Result<(), LoadError> {
        let bad = |why| LoadError::BadElement { position, why };
        let id_key = element_key(element);
        let hints = element_hint(element);
        let id_hint = element_hint(hints);
        let sort_and_prefix = element_key(hints);
        let sort_hint = element_hint(sort_and_prefix);
        let without_id = element_key(sort_and_prefix);
        if id_key.is_empty() || without_id.len() <= GROUP_PREFIX {
            return Err(bad("is not an id index entry"));
        }
        self.term.clear();
        push_varint(&mut self.term, sort_hint.len());
        self.term.extend_from_slice(sort_hint);
        self.term.extend_from_slice(&without_id[GROUP_PREFIX..]);
        self.checker.check(position, &self.term)?;
        // The row this entry names, as `member_element` builds it.
        self.row.clear();
        push_varint(&mut self.row, id_hint.len());
        self.row.extend_from_slice(id_hint);
        self.row.extend_from_slice(without_id);
        self.row.extend_from_slice(id_key);
        self.row
            .extend_from_slice(&(id_key.len() as u32).to_be_bytes());
        self.sum = self.sum.wrapping_add(self.hasher.hash_one(&self.row[..]));
        self.entries += 1;
        Ok(())
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
