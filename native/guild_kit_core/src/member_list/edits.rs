//! Which rows of a window change when rows are removed from and inserted into the list.
//!
//! A change is described as rows removed from the old list (`removed`, old indices)
//! and rows inserted into the new one (`inserted`, new indices): a move is one of each,
//! plus a header when a group empties or appears. Every other row keeps its relative
//! order, so its new index follows from counting the edits before it. Within a window
//! only rows within a couple of places of an edit or of the window's edges can enter or
//! leave it, so the ops for a window cost O(1) index arithmetic, not a diff of its rows.

/// Which row an edit is about. An edit touches at most one member, so member rows need
/// no name; a member whose stored term changed (`2` put again as `2.0`) comes back as a
/// different row, so that windows showing it replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowId {
    Header(u16),
    Member,
    ChangedMember,
}

/// Rows removed from the old list and inserted into the new one.
#[derive(Debug, Default, Clone)]
pub(super) struct Edits {
    /// Old indices, ascending, with the row each held.
    pub removed: Vec<(u64, RowId)>,
    /// New indices, ascending, with the row each holds.
    pub inserted: Vec<(u64, RowId)>,
    pub old_len: u64,
    pub new_len: u64,
}

impl Edits {
    /// The rows whose windows may change: `[low, high]`, or `None` when nothing moved.
    /// When the list grew or shrank, every row below the edits moved, up to the end of
    /// the longer of the two lists; windows past that end cannot change.
    pub fn span(&self) -> Option<(u64, u64)> {
        let all = self.removed.iter().chain(&self.inserted).map(|&(x, _)| x);
        let (low, high) = (all.clone().min()?, all.max()?);
        if self.removed.len() == self.inserted.len() {
            Some((low, high))
        } else {
            Some((low, self.old_len.max(self.new_len).saturating_sub(1)))
        }
    }

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
    pub fn cancel_unmoved(&mut self) {
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

    /// Rows of the window `[first, last]` to delete (old indices, to be deleted in
    /// descending order) and the new indices whose rows must be inserted (ascending);
    /// both empty when the window's rows are the same before and after. Rows pushed out
    /// past `last` get no delete: the client rule drops them as the inserts come in. A
    /// row can only cross the window's edge if it sits within `removed.len()` or
    /// `inserted.len()` places of it.
    pub fn window(&self, first: u64, last: u64) -> (Indices, Indices) {
        if let Some(ops) = self.shifted_window(first, last) {
            return ops;
        }
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

    /// The ops of a window that no edit comes near, which is most of them: its rows all
    /// shift by the same amount, the edits before it (at most two each way, so two
    /// places of margin on each side make sure no edit reaches in), and so only rows at
    /// its edges come and go. `None` when an edit comes near.
    fn shifted_window(&self, first: u64, last: u64) -> Option<(Indices, Indices)> {
        let near = |x: u64| x.saturating_add(2) >= first && x <= last.saturating_add(2);
        let mut shift = 0i64;
        for &(y, _) in &self.removed {
            if near(y) {
                return None;
            }
            shift -= i64::from(y < first);
        }
        for &(x, _) in &self.inserted {
            if near(x) {
                return None;
            }
            shift += i64::from(x < first);
        }
        let (mut leaving, mut entering) = (Indices::default(), Indices::default());
        // How many rows move across each edge: at most the window's width. Offsets from
        // the window's ends never leave it, so nothing overflows at 2^64 − 1.
        let count = shift.unsigned_abs().min(last - first + 1);
        if shift > 0 {
            // Rows came in above: the new rows enter at the top, and the client drops
            // the ones pushed past the end.
            for x in (0..count).map(|k| first + k) {
                if x < self.new_len {
                    entering.insert(x);
                }
            }
        } else if shift < 0 {
            // Rows left above: the top rows leave, the next ones enter at the bottom.
            for y in (0..count).map(|k| first + k) {
                if y < self.old_len {
                    leaving.insert(y);
                }
            }
            for x in (0..count).rev().map(|k| last - k) {
                if x < self.new_len {
                    entering.insert(x);
                }
            }
        }
        Some((leaving, entering))
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
/// four rows leaving (two edits, two places at its top) and six entering (two edits,
/// two places at each edge).
#[derive(Debug, Default, Clone, Copy)]
pub struct Indices {
    items: [u64; 6],
    len: u8,
}

impl Indices {
    fn insert(&mut self, x: u64) {
        let len = self.len as usize;
        if let Err(at) = self.items[..len].binary_search(&x) {
            self.items.copy_within(at..len, at + 1);
            self.items[at] = x;
            self.len += 1;
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let mut kept = 0;
        for i in 0..self.len as usize {
            if keep(self.items[i]) {
                self.items[kept] = self.items[i];
                kept += 1;
            }
        }
        self.len = kept as u8;
    }

    /// The indices, ascending.
    pub fn as_slice(&self) -> &[u64] {
        &self.items[..self.len as usize]
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
