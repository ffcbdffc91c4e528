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

use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use super::{
    group_of, Counts, MemberList, Windows, GROUP_PREFIX, HEADER_MARK, ID_LENGTH, MAX_GROUPS,
};
use crate::dump::{build_error, Dump, DumpError, Kind, LoadError, Plan, TermChecker};
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
        Plan::new(Kind::MemberList, &meta, self.dump_elements())
    }

    /// The elements of this list's dump, in order.
    pub fn dump_elements(&self) -> impl Iterator<Item = &[u8]> {
        let rows = self.rows.iter_from(0).map(ElementRef::as_bytes);
        rows.chain(self.by_id.iter_from(0).map(ElementRef::as_bytes))
    }

    /// This list as a dump.
    ///
    /// Time: O(bytes).
    pub fn to_dump(&self) -> Result<Vec<u8>, DumpError> {
        self.plan_dump()?.to_vec(self.dump_elements())
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
        let mut check = Check::new(list.group_count());
        let elements = dump.check_elements(|position, element| {
            if position < meta.rows {
                check.row(&mut checker, position, element)
            } else {
                check.indexed(&mut checker, position, element)
            }
        })?;
        check.finish(dump.count() - meta.rows)?;

        let rows = meta.rows as usize;
        list.rows =
            KeyTree::from_ascending(elements.clone().take(rows).map(ElementRef::from_bytes))
                .map_err(build_error)?;
        list.by_id = KeyTree::from_ascending(elements.skip(rows).map(ElementRef::from_bytes))
            .map_err(|error| match build_error(error) {
                LoadError::NotAscending { position } => LoadError::NotAscending {
                    position: position + meta.rows,
                },
                other => other,
            })?;
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

/// What the checks of a dump's elements have seen so far.
struct Check {
    /// Members per group, from the rows.
    counts: Vec<u32>,
    headers: u64,
    /// The group of the last header, and whether a member has followed it.
    group: Option<(u16, bool)>,
    members: u64,
    hasher: std::collections::hash_map::RandomState,
    /// Sums of the keyed hashes of the member rows, and of the rows the id index names.
    rows_sum: u64,
    indexed_sum: u64,
    /// A row named by an id index entry, rebuilt in place.
    row: Vec<u8>,
    /// An id or a sort key with its hint, as an element to check.
    term: Vec<u8>,
}

impl Check {
    fn new(groups: usize) -> Self {
        Check {
            counts: vec![0; groups],
            headers: 0,
            group: None,
            members: 0,
            hasher: std::collections::hash_map::RandomState::new(),
            rows_sum: 0,
            indexed_sum: 0,
            row: Vec::new(),
            term: Vec::new(),
        }
    }

    /// A row: a header `[group][00]` without a hint, or a member `[group][sort key][id
    /// key][id key length]` with the id's hint, whose id is one well-formed term.
    fn row(
        &mut self,
        checker: &mut TermChecker,
        position: u64,
        element: &[u8],
    ) -> Result<(), LoadError> {
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
        let id_len = u32::from_be_bytes(key[id_end..].try_into().expect("four bytes")) as usize;
        let id_start = id_end
            .checked_sub(id_len)
            .filter(|&start| start > GROUP_PREFIX)
            .ok_or(bad("has an id length that does not fit"))?;
        self.term.clear();
        push_varint(&mut self.term, element_hint(element).len());
        self.term.extend_from_slice(element_hint(element));
        self.term.extend_from_slice(&key[id_start..id_end]);
        checker.check(position, &self.term)?;
        self.counts[group as usize] += 1;
        self.members += 1;
        self.rows_sum = self.rows_sum.wrapping_add(self.hasher.hash_one(element));
        Ok(())
    }

    /// An id index entry: the id's key, with the hint `[id hint, [sort key hint, member
    /// key up to the id]]`; its sort key is one well-formed term.
    fn indexed(
        &mut self,
        checker: &mut TermChecker,
        position: u64,
        element: &[u8],
    ) -> Result<(), LoadError> {
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
        checker.check(position, &self.term)?;
        // The row this entry names, as `member_element` builds it.
        self.row.clear();
        push_varint(&mut self.row, id_hint.len());
        self.row.extend_from_slice(id_hint);
        self.row.extend_from_slice(without_id);
        self.row.extend_from_slice(id_key);
        self.row
            .extend_from_slice(&(id_key.len() as u32).to_be_bytes());
        self.indexed_sum = self
            .indexed_sum
            .wrapping_add(self.hasher.hash_one(&self.row[..]));
        Ok(())
    }

    /// After every element: the last header has members, and the id index names exactly
    /// the member rows.
    fn finish(&self, indexed: u64) -> Result<(), LoadError> {
        if self.group.is_some_and(|(_, members)| !members) {
            return Err(LoadError::BadHeader("a group header without members"));
        }
        if indexed != self.members || self.indexed_sum != self.rows_sum {
            return Err(LoadError::BadHeader(
                "the id index does not match the members of the rows",
            ));
        }
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
