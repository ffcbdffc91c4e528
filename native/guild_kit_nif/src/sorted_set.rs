//! NIFs behind `GuildKit.SortedSet`.
//!
//! The set is a `KeyTree` behind an `RwLock`. Every lock is held for O(log n) work at
//! most: terms are encoded before the lock is taken, and anything that walks many
//! elements first takes an O(1) copy-on-write snapshot and then works without the lock.
//!
//! Each operation whose cost grows with its input starts on the caller's normal
//! scheduler with a small budget and moves itself to a dirty CPU scheduler past it
//! (`crate::schedule`).

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::term_key::element_key;
use rustler::{Encoder, Env, ResourceArc, Term};

use crate::atoms;
use crate::error::Error;
use crate::raw::TermBuffer;
use crate::reaper;
use crate::schedule::{nifs, Call, Handle, Outcome};
use crate::term_codec::{self, encode_arg, encode_lookup, EncodeError};

/// Most elements a normal-scheduler slice decodes.
const NORMAL_SLICE_ELEMENTS: usize = 256;
/// Most element bytes a normal-scheduler read decodes.
const NORMAL_DECODE_BYTES: usize = 64 * 1024;
/// Trees larger than this are freed on the reaper thread.
const REAP_ABOVE: usize = 4096;

pub struct SortedSet {
    tree: RwLock<KeyTree>,
    read_only: bool,
}

#[rustler::resource_impl]
impl rustler::Resource for SortedSet {}

impl Handle for SortedSet {
    const KIND: &'static str = "GuildKit.SortedSet";
}

impl SortedSet {
    fn new(tree: KeyTree, read_only: bool) -> ResourceArc<SortedSet> {
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

    fn snapshot(&self) -> KeyTree {
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
    let index = set.write()?.insert(element.as_bytes());
    call.charge(1);
    Ok(index_or_nil(call.env(), index))
}

fn remove<'a>(call: Call<'a>, set: &SortedSet, term: Term<'a>) -> Outcome<'a> {
    if set.read_only {
        return Err(Error::ReadOnly("GuildKit.SortedSet").into());
    }
    let Some(element) = encode_lookup(&call, term)? else {
        return Ok(atoms::nil().encode(call.env()));
    };
    let index = set.write()?.remove(element.key());
    call.charge(1);
    Ok(index_or_nil(call.env(), index))
}

fn find_index<'a>(call: Call<'a>, set: &SortedSet, term: Term<'a>) -> Outcome<'a> {
    let Some(element) = encode_lookup(&call, term)? else {
        return Ok(atoms::nil().encode(call.env()));
    };
    let index = set.read().position(element.key()).ok();
    call.charge(1);
    Ok(index_or_nil(call.env(), index))
}

/// The term at `index`, or `default` past the end.
fn at<'a>(call: Call<'a>, set: &SortedSet, index: u64, default: Term<'a>) -> Outcome<'a> {
    let tree = set.read();
    let Some(element) = usize::try_from(index).ok().and_then(|i| tree.get(i)) else {
        return Ok(default);
    };
    call.go_dirty_if(element.len() > NORMAL_DECODE_BYTES)?;
    let term = term_codec::decode(call.env(), element)?;
    call.charge(1);
    Ok(term)
}

fn slice<'a>(call: Call<'a>, set: &SortedSet, start: u64, amount: u64) -> Outcome<'a> {
    if call.is_dirty() {
        // Walk a snapshot so that writers are never held up by a long read.
        let tree = set.snapshot();
        let (start, amount) = clamp_range(&tree, start, amount);
        return decode_list(call.env(), &tree, start, amount);
    }
    let tree = set.read();
    let (start, amount) = clamp_range(&tree, start, amount);
    call.go_dirty_if(amount > NORMAL_SLICE_ELEMENTS)?;
    let bytes: usize = tree.iter_from(start).take(amount).map(<[u8]>::len).sum();
    call.go_dirty_if(bytes > NORMAL_DECODE_BYTES)?;
    // About 0.1-0.2 µs to decode a small element.
    call.charge(1 + (amount / 6) as u32);
    decode_list(call.env(), &tree, start, amount)
}

/// Limits `start..start + amount` to what exists, so huge amounts allocate nothing.
fn clamp_range(tree: &KeyTree, start: u64, amount: u64) -> (usize, usize) {
    let len = tree.len();
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(len);
    let amount = usize::try_from(amount)
        .unwrap_or(usize::MAX)
        .min(len - start);
    (start, amount)
}

fn decode_list<'a>(env: Env<'a>, tree: &KeyTree, start: usize, amount: usize) -> Outcome<'a> {
    let mut terms = TermBuffer::with_capacity(env, amount);
    for element in tree.iter_from(start).take(amount) {
        terms.push(term_codec::decode(env, element)?);
    }
    Ok(terms.list(0))
}

#[rustler::nif]
fn sorted_set_size(set: &SortedSet) -> usize {
    set.read().len()
}

#[rustler::nif]
fn sorted_set_read_only(set: &SortedSet) -> bool {
    set.read_only
}

/// A read-only copy sharing every node with `set`. A snapshot is its own snapshot.
#[rustler::nif]
fn sorted_set_snapshot(set: Set) -> Set {
    if set.read_only {
        return set;
    }
    SortedSet::new(set.snapshot(), true)
}

/// Trees of up to this many elements are measured on a normal scheduler.
const NORMAL_MEMORY_ELEMENTS: usize = 64 * 1024;

fn memory<'a>(call: Call<'a>, set: &SortedSet) -> Outcome<'a> {
    let tree = set.snapshot();
    call.go_dirty_if(tree.len() > NORMAL_MEMORY_ELEMENTS)?;
    Ok((std::mem::size_of::<SortedSet>() + tree.heap_bytes()).encode(call.env()))
}

/// Builds a set from a list. With `strictly_ascending`, the terms must already be in
/// strictly ascending order; otherwise they are sorted and de-duplicated, keeping the
/// first of equal terms. Short lists are built on the normal scheduler.
fn from_list<'a>(call: Call<'a>, list: Term<'a>, strictly_ascending: bool) -> Outcome<'a> {
    // All elements go into one buffer: a million small allocations would cost as much to
    // free as to make, and freeing them contends with the schedulers' allocator.
    let mut arena: Vec<u8> = Vec::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut rest = list;
    let mut budget = call.budget(term_codec::NORMAL_BUDGET);
    while !rest.is_empty_list() {
        let (head, tail) = rest.list_get_cell().map_err(|_| Error::NotAList)?;
        let element = term_codec::encode(head, budget).map_err(|e| match e {
            EncodeError::Invalid(source) => Error::InElement {
                position: spans.len(),
                source: Box::new(source),
            }
            .into(),
            EncodeError::OverBudget => crate::schedule::Exit::Dirty,
        })?;
        if let Some(left) = budget.as_mut() {
            // One unit per 16 bytes encoded, as the encoder counts them, and one a term.
            let spent = 1 + element.as_bytes().len() / 16;
            call.go_dirty_if(spent >= *left)?;
            *left -= spent;
        }
        spans.push(Span {
            start: arena.len(),
            len: element.as_bytes().len(),
        });
        arena.extend_from_slice(element.as_bytes());
        rest = tail;
    }
    let key = |span: &Span| element_key(&arena[span.start..span.start + span.len]);
    if strictly_ascending {
        if let Some(i) = (1..spans.len()).find(|&i| key(&spans[i - 1]) >= key(&spans[i])) {
            return Err(Error::NotAscending { position: i }.into());
        }
    } else {
        // Stable, so that among equal terms the first one listed survives the dedup.
        spans.sort_by(|a, b| key(a).cmp(key(b)));
        spans.dedup_by(|later, earlier| key(later) == key(earlier));
    }
    let tree = KeyTree::from_sorted(
        spans
            .iter()
            .map(|span| &arena[span.start..span.start + span.len]),
    );
    Ok(SortedSet::new(tree, false).encode(call.env()))
}

/// Where one encoded element lies in a shared buffer.
struct Span {
    start: usize,
    len: usize,
}
