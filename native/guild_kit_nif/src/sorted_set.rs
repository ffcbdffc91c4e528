//! NIFs behind `GuildKit.SortedSet`.
//!
//! The set is a `KeyTree` behind an `RwLock`. Every lock is held for O(log n) work at
//! most: terms are encoded before the lock is taken, and anything that walks many
//! elements first takes an O(1) copy-on-write snapshot and then works without the lock.
//!
//! Each operation whose cost grows with its input starts on the caller's normal
//! scheduler with a budget in bytes and moves itself to a dirty CPU scheduler past it
//! (`crate::schedule`). Results that grow with the set (slices, `to_list`) are built in
//! bounded chunks, each on a dirty scheduler: one dirty call could build a list of any
//! length, but the caller would then pay for merging it into its heap in one pause.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use guild_kit_core::key_tree::{BuildError, InsertError, KeyTree, MAX_ELEMENT_LEN};
use guild_kit_core::term_key::Element;
use rustler::{Encoder, Env, NifResult, ResourceArc, Term};

use crate::atoms;
use crate::error::Error;
use crate::reaper;
use crate::schedule::{handle, nifs, Call, Exit, FromArg, Outcome};
use crate::term_codec::{
    decode_within, encode_arg, encode_list, encode_lookup, recycle, DecodeError, Decoder,
    NODE_COST, WORK_PER_MICRO,
};

/// Bytes of elements (plus `NODE_COST` each) that one call on a normal scheduler turns
/// into terms: a whole slice or `at/3`'s element.
const DECODE_BUDGET: usize = 64 * 1024;
/// The same, for one chunk of a larger range, built on a dirty scheduler: bounded too,
/// so that no call hands its caller more than about half a megabyte of terms to merge
/// into its heap.
const DIRTY_CHUNK_BUDGET: usize = 256 * 1024;
/// What one add, remove or lookup on a large set is charged to the caller's timeslice:
/// about what it takes at a million members (a few cache misses per tree level), so
/// that a process calling them in a loop still yields about every millisecond.
const TREE_OP_MICROS: u32 = 2;
/// Trees larger than this are freed on the reaper thread.
const REAP_ABOVE: usize = 4096;
/// Trees of up to this many elements are measured on a normal scheduler.
const NORMAL_MEMORY_ELEMENTS: usize = 64 * 1024;

pub struct SortedSet {
    tree: RwLock<KeyTree>,
    read_only: bool,
}

handle!(SortedSet, "GuildKit.SortedSet");

impl SortedSet {
    pub(crate) fn new(tree: KeyTree, read_only: bool) -> ResourceArc<SortedSet> {
        ResourceArc::new(SortedSet {
            tree: RwLock::new(tree),
            read_only,
        })
    }

    // No code path panics while holding the lock; should one ever do so, the tree it
    // guards is still whole (every mutation is a single KeyTree call), so a poisoned
    // lock is taken over rather than reported.
    fn read(&self) -> RwLockReadGuard<'_, KeyTree> {
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, KeyTree>, Error> {
        if self.read_only {
            return Err(Error::ReadOnly("GuildKit.SortedSet"));
        }
        Ok(self.tree.write().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn snapshot(&self) -> KeyTree {
        self.read().clone()
    }
}

impl Drop for SortedSet {
    fn drop(&mut self) {
        let tree = std::mem::take(self.tree.get_mut().unwrap_or_else(PoisonError::into_inner));
        if tree.len() > REAP_ABOVE {
            reaper::drop_later(tree);
        }
    }
}

impl From<InsertError> for Error {
    fn from(error: InsertError) -> Self {
        match error {
            InsertError::TooLong => Error::TermTooLarge {
                limit: MAX_ELEMENT_LEN,
            },
            InsertError::Full => Error::Full,
        }
    }
}

impl From<BuildError> for Error {
    fn from(error: BuildError) -> Self {
        match error {
            BuildError::TooLong { position } => Error::InElement {
                position,
                source: Box::new(Error::TermTooLarge {
                    limit: MAX_ELEMENT_LEN,
                }),
            },
            BuildError::TooMany => Error::Full,
            BuildError::NotAscending { position } => Error::NotAscending { position },
        }
    }
}

// NIFs borrow the resource (`&SortedSet`) rather than take a `ResourceArc`: the argument
// term keeps it alive for the call, and borrowing skips two atomic reference-count
// updates per call.
type Set = ResourceArc<SortedSet>;

fn index_or_nil(env: Env, index: Option<usize>) -> Term {
    match index {
        Some(i) => i.encode(env),
        None => atoms::nil().encode(env),
    }
}

nifs! {
    fn sorted_set_add(set: &SortedSet, term: Term) => add;
    fn sorted_set_remove(set: &SortedSet, term: Term) => remove;
    fn sorted_set_find_index(set: &SortedSet, term: Term) => find_index;
    fn sorted_set_at(set: &SortedSet, index: u64, default: Term) => at;
    fn sorted_set_slice(set: &SortedSet, start: u64, amount: u64) => slice;
    fn sorted_set_slice_rest(snapshot: &SortedSet, start: u64, stop: u64, tail: Term) => slice_rest;
    fn sorted_set_memory(set: &SortedSet) => memory;
    fn sorted_set_from_list(list: Term, strictly_ascending: bool) => from_list;
}

#[rustler::nif]
fn sorted_set_new() -> Set {
    SortedSet::new(KeyTree::new(), false)
}

fn add<'a>(call: Call<'a>, set: &SortedSet, term: Term<'a>) -> Outcome<'a> {
    if set.read_only {
        return Err(Error::ReadOnly("GuildKit.SortedSet").into());
    }
    let element = encode_arg(&call, term)?;
    let index = set.write()?.insert(&element).map_err(Error::from)?;
    tree_op_done(&call, element, index)
}

fn remove<'a>(call: Call<'a>, set: &SortedSet, term: Term<'a>) -> Outcome<'a> {
    if set.read_only {
        return Err(Error::ReadOnly("GuildKit.SortedSet").into());
    }
    let Some(element) = encode_lookup(&call, term)? else {
        return Ok(index_or_nil(call.env(), None));
    };
    let index = set.write()?.remove(&element);
    tree_op_done(&call, element, index)
}

fn find_index<'a>(call: Call<'a>, set: &SortedSet, term: Term<'a>) -> Outcome<'a> {
    // A term no set can hold is in none.
    let Some(element) = encode_lookup(&call, term)? else {
        return Ok(index_or_nil(call.env(), None));
    };
    let index = set.read().position(&element).ok();
    tree_op_done(&call, element, index)
}

/// Ends an add, remove or lookup: the element's buffer is kept for the next one, the
/// work charged, and the index (or nil) returned.
fn tree_op_done<'a>(call: &Call<'a>, element: Element, index: Option<usize>) -> Outcome<'a> {
    recycle(element);
    call.charge(TREE_OP_MICROS);
    Ok(index_or_nil(call.env(), index))
}

/// The term at `index`, or `default` past the end.
fn at<'a>(call: Call<'a>, set: &SortedSet, index: u64, default: Term<'a>) -> Outcome<'a> {
    let tree = set.read();
    let Some(element) = usize::try_from(index).ok().and_then(|i| tree.get(i)) else {
        return Ok(default);
    };
    let mut left = call.budget(DECODE_BUDGET).unwrap_or(usize::MAX);
    let term = decode_within(call.env(), element.as_bytes(), &mut left)?;
    call.charge(TREE_OP_MICROS + (element.len() / WORK_PER_MICRO) as u32);
    Ok(term)
}

/// The terms at `start..start + amount` that exist, as a list; or, when they are more
/// than one call should build, `{snapshot, stop, list}`: the terms `stop..` of the range
/// and a read-only snapshot of the set to build the rest from with
/// `sorted_set_slice_rest`, so that every chunk reads the same version of the set.
/// Small slices are built on the caller's scheduler, the chunks of large ones on a
/// dirty scheduler (see `prepend_chunk`).
fn slice<'a>(call: Call<'a>, set: &SortedSet, start: u64, amount: u64) -> Outcome<'a> {
    let env = call.env();
    let tree = set.read();
    let (start, end) = clamp_range(&tree, start, amount);
    let (stop, list) = prepend_chunk(&call, &tree, start, end, Term::list_new_empty(env))?;
    if stop == start {
        return Ok(list);
    }
    // O(1); for a set that is written to later, its next write copies the nodes on
    // its path once.
    let snapshot = SortedSet::new(tree.clone(), true);
    drop(tree);
    Ok((snapshot, stop, list).encode(env))
}

/// Prepends the terms `start..stop` of `snapshot` (clamped to what exists) onto `tail`,
/// one chunk of them: returns `{new_stop, list}`, done when `new_stop == start`.
fn slice_rest<'a>(
    call: Call<'a>,
    snapshot: &SortedSet,
    start: u64,
    stop: u64,
    tail: Term<'a>,
) -> Outcome<'a> {
    if !tail.is_list() {
        return Err(Error::BadArgument {
            position: 3,
            expected: "a list",
        }
        .into());
    }
    let tree = snapshot.read();
    let len = tree.len();
    let stop = usize::try_from(stop).unwrap_or(usize::MAX).min(len);
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(stop);
    let (stop, list) = prepend_chunk(&call, &tree, start, stop, tail)?;
    Ok((stop, list).encode(call.env()))
}

/// Prepends elements `start..stop` onto `tail` from the back, the last one first, until
/// the chunk's budget is spent. Returns the index of the first element prepended and
/// the list.
///
/// On a normal scheduler only a range that fits `DECODE_BUDGET` whole is built (a
/// small slice, the end of a large one); a larger one moves the call to a dirty
/// scheduler, which builds one chunk of `DIRTY_CHUNK_BUDGET` and always takes at least
/// one element. Large results thus cost the caller's scheduler a few microseconds a
/// chunk, and each chunk's terms are few enough to merge into its heap at once.
///
/// Time: O(log n + elements taken).
fn prepend_chunk<'a>(
    call: &Call<'a>,
    tree: &KeyTree,
    start: usize,
    stop: usize,
    tail: Term<'a>,
) -> Result<(usize, Term<'a>), Exit> {
    let started = Instant::now();
    call.go_dirty_if(!fits(tree, start, stop, DECODE_BUDGET))?;
    let env = call.env();
    let mut list = tail;
    let mut left = if call.is_dirty() {
        DIRTY_CHUNK_BUDGET
    } else {
        DECODE_BUDGET
    };
    let mut next = stop;
    let mut decoder = Decoder::new(env);
    for element in tree.iter_before(stop).take(stop - start) {
        // The first element of a chunk is always taken: on a dirty scheduler whatever
        // it costs, on a normal one if it fits the budget (else the call goes dirty).
        let mut unlimited = usize::MAX;
        let budget = if next == stop && call.is_dirty() {
            &mut unlimited
        } else {
            &mut left
        };
        let term = match decoder.decode(element.as_bytes(), budget) {
            Ok(term) => term,
            Err(DecodeError::OverBudget) if next < stop => break,
            Err(error) => return Err(error.into()),
        };
        left = left.saturating_sub(NODE_COST);
        list = list.list_prepend(term);
        next -= 1;
    }
    call.charge_since(started);
    Ok((next, list))
}

/// Whether elements `start..stop` take at most `budget` bytes (plus `NODE_COST` each).
///
/// Time: O(log n + min(stop - start, budget / NODE_COST)).
fn fits(tree: &KeyTree, start: usize, stop: usize, budget: usize) -> bool {
    let mut left = budget;
    tree.iter_before(stop).take(stop - start).all(|element| {
        let cost = NODE_COST + element.len();
        let fits = cost <= left;
        left = left.saturating_sub(cost);
        fits
    })
}

/// Limits `start..start + amount` to what exists, so huge amounts allocate nothing.
fn clamp_range(tree: &KeyTree, start: u64, amount: u64) -> (usize, usize) {
    let len = tree.len();
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(len);
    let amount = usize::try_from(amount)
        .unwrap_or(usize::MAX)
        .min(len - start);
    (start, start + amount)
}

// O(1) NIFs: no budget, but the handle is still decoded by `FromArg`, for an error that
// says what is wrong with it.

#[rustler::nif]
fn sorted_set_size(set: Term) -> NifResult<usize> {
    let set: &SortedSet = FromArg::from_arg(set, 0)?;
    Ok(set.read().len())
}

#[rustler::nif]
fn sorted_set_read_only(set: Term) -> NifResult<bool> {
    let set: &SortedSet = FromArg::from_arg(set, 0)?;
    Ok(set.read_only)
}

/// A read-only copy sharing every node with `set`. A snapshot is its own snapshot.
#[rustler::nif]
fn sorted_set_snapshot(set: Term) -> NifResult<Set> {
    let set: Set = FromArg::from_arg(set, 0)?;
    if set.read_only {
        return Ok(set);
    }
    Ok(SortedSet::new(set.snapshot(), true))
}

fn memory<'a>(call: Call<'a>, set: &SortedSet) -> Outcome<'a> {
    let tree = set.snapshot();
    call.go_dirty_if(tree.len() > NORMAL_MEMORY_ELEMENTS)?;
    Ok((std::mem::size_of::<SortedSet>() + tree.heap_bytes()).encode(call.env()))
}

/// Builds a set from a list. With `strictly_ascending`, the terms must already be in
/// strictly ascending order; otherwise they are sorted and de-duplicated, keeping the
/// first of equal terms. Short lists are built on the normal scheduler.
fn from_list<'a>(call: Call<'a>, list: Term<'a>, strictly_ascending: bool) -> Outcome<'a> {
    let elements = encode_list(&call, list)?;
    let started = Instant::now();
    let tree = if strictly_ascending {
        KeyTree::from_ascending(elements.iter())
    } else {
        KeyTree::from_unsorted(&elements)
    }
    .map_err(Error::from)?;
    call.charge_since(started);
    Ok(SortedSet::new(tree, false).encode(call.env()))
}
