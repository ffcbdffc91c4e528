//! NIFs behind `GuildKit.MemberList`.
//!
//! The adapter turns terms into elements and rows back into terms; the core
//! (`guild_kit_core::member_list`) does the rest. Arguments are encoded before a lock is
//! taken, within a small budget on the caller's normal scheduler (past it the call
//! moves itself to a dirty one, `crate::schedule`). A lock is held only for the change
//! itself and an O(1) snapshot of the list after it; rows are decoded from the snapshot,
//! outside the lock, so neither readers nor writers ever wait for a big result.
//!
//! Results can be large (a million rows, or ops for a million windows), so they are
//! built in bounded chunks: a call builds as much of its result as one chunk allows and,
//! if there is more, returns `{delivery, position, acc}`. `GuildKit.MemberList` then
//! calls `member_list_continue/3` until it gets a list. Each chunk is built back to
//! front onto `acc`, the part already built, so the chunks join without copying. A
//! delivery holds an O(1) snapshot of the list as the call left it, so the chunks are
//! consistent whatever happens to the list meanwhile, and no lock is held between them.
//! Each chunk is budgeted in bytes of rows decoded and in windows; one that must decode
//! a single row larger than a chunk's budget is built on a dirty CPU scheduler. So no
//! call holds a normal scheduler long, and a big result never reaches the caller as one
//! huge term (whose merge into the caller's heap would pause it).

use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use guild_kit_core::key_tree::MAX_ELEMENT_LEN;
use guild_kit_core::member_list::{
    Change, MemberList, MemberListError, Op, Range, Row, WindowOps, MAX_GROUPS,
};
use guild_kit_core::term_key::{Element, ElementRef, Integer, Token};
use rustler::{Encoder, Env, ResourceArc, Term};

use crate::atoms;
use crate::error::Error;
use crate::reaper;
use crate::schedule::{handle, nifs, Call, Exit, Outcome};
use crate::term_codec::{self, encode_arg, encode_lookup};

/// Work one chunk may do on a normal scheduler, in units of about 10 ns: about 120 µs
/// on warm caches, a few times that on cold ones.
const CHUNK_UNITS: usize = 12_000;
/// A dirty chunk's budget: it bounds the size of the result, not the time.
const DIRTY_CHUNK_UNITS: usize = 16 * CHUNK_UNITS;
/// Building a row term, beyond its bytes.
const ROW_UNITS: usize = 6;
/// Bytes of row encoding decoded per unit, for the densest terms (lists of small
/// integers, about two bytes an element); binaries decode far faster.
const BYTES_PER_UNIT: usize = 2;
/// Finding a window and building its entry, and each op in it.
const WINDOW_UNITS: usize = 8;
const OP_UNITS: usize = 2;
/// Most rows a chunk looks at.
const MAX_CHUNK_ROWS: u64 = 1024;
/// A safety net under the unit budget, for cold caches and a busy machine: a normal
/// chunk stops choosing windows after this long (building them takes about as long
/// again), and stops decoding rows after twice as long.
const CHOOSING_TIME: Duration = Duration::from_micros(100);
/// Lists larger than this are freed on the reaper thread.
const REAP_ABOVE: u64 = 4096;

rustler::atoms! {
    group,
    member,
    insert,
    update,
    delete,
}

pub struct MemberListResource {
    list: RwLock<MemberList>,
    read_only: bool,
}

handle!(MemberListResource, "GuildKit.MemberList");

impl MemberListResource {
    pub(crate) fn new(list: MemberList, read_only: bool) -> ResourceArc<Self> {
        ResourceArc::new(MemberListResource {
            list: RwLock::new(list),
            read_only,
        })
    }

    // No code path panics while holding the lock; should one ever do so, the list it
    // guards is still whole (each change is checked before it starts), so a poisoned
    // lock is taken over rather than reported.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, MemberList> {
        self.list.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, MemberList>, Error> {
        self.check_writable()?;
        Ok(self.list.write().unwrap_or_else(PoisonError::into_inner))
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::ReadOnly("GuildKit.MemberList"));
        }
        Ok(())
    }
}

impl Drop for MemberListResource {
    fn drop(&mut self) {
        let list = self.list.get_mut().unwrap_or_else(PoisonError::into_inner);
        drop_list(std::mem::replace(list, empty_list()));
    }
}

fn empty_list() -> MemberList {
    MemberList::new(Vec::new()).expect("a list without groups")
}

/// Drops a list here, or on the reaper thread when it is big.
fn drop_list(list: MemberList) {
    let parts = list
        .size()
        .max(list.watched_len() as u64)
        .max(list.group_count() as u64);
    if parts > REAP_ABOVE {
        reaper::drop_later(list);
    }
}

/// A result still being delivered in chunks: the state it describes and what to build.
pub struct Delivery {
    /// Released as soon as the last chunk is built, so that the list's next write does
    /// not copy the nodes this snapshot would otherwise still share.
    view: Mutex<Option<MemberList>>,
    work: Work,
}

handle!(Delivery, "GuildKit.MemberList delivery");

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(view) = self
            .view
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            drop_list(view);
        }
    }
}

/// What a delivery builds.
enum Work {
    /// Rows `first..=position`.
    Rows { first: u64 },
    /// `[{window, ops}]` for the windows below `position` that the change reached.
    Changes(Change),
    /// `[{group_id, count}]` for the non-empty groups below `position`.
    Groups,
}

/// Where the next chunk ends (results are built back to front).
#[derive(Debug, Clone, Copy)]
enum Position {
    /// The last row still to build.
    Row(u64),
    /// Windows below this one (all, when `None`).
    Window(Option<Range>),
    /// Groups below this position.
    Group(usize),
}

/// How a chunk ended.
enum Built<'a> {
    /// The whole result.
    Done(Term<'a>),
    /// The result so far, and where the rest ends.
    More(Position, Term<'a>),
}

impl From<MemberListError> for Error {
    fn from(error: MemberListError) -> Self {
        match error {
            MemberListError::UnknownGroup => Error::UnknownGroup,
            MemberListError::DuplicateGroup(position) => Error::DuplicateGroup { position },
            MemberListError::TooManyGroups => Error::TooManyGroups { limit: MAX_GROUPS },
            MemberListError::Full => Error::Full,
            MemberListError::TooLarge => Error::TermTooLarge {
                limit: MAX_ELEMENT_LEN,
            },
            MemberListError::Corrupt => Error::Corrupt,
        }
    }
}

nifs! {
    fn member_list_new(groups: Term) => new_list;
    fn member_list_put(list: &MemberListResource, member_id: Term, group_id: Term, sort_key: Term) => put;
    fn member_list_touch(list: &MemberListResource, member_id: Term) => touch;
    fn member_list_remove(list: &MemberListResource, member_id: Term) => remove;
    fn member_list_index_of(list: &MemberListResource, member_id: Term) => index_of;
    fn member_list_watch(list: &MemberListResource, first: u64, last: u64) => watch;
    fn member_list_unwatch(list: &MemberListResource, first: u64, last: u64) => unwatch;
    fn member_list_rows(list: &MemberListResource, first: u64, last: u64) => rows;
    fn member_list_groups(list: &MemberListResource) => groups;
    fn member_list_size(list: &MemberListResource) => size;
    fn member_list_member_count(list: &MemberListResource) => member_count;
    fn member_list_memory(list: &MemberListResource) => memory;
    fn member_list_snapshot(list: ResourceArc<MemberListResource>) => snapshot;
    fn member_list_read_only(list: &MemberListResource) => read_only;
    fn member_list_continue(delivery: Term, position: Term, acc: Term) => continue_delivery;
}

/// Builds an empty list with the given groups, on the normal scheduler unless the group
/// ids are large.
fn new_list<'a>(call: Call<'a>, groups: Term<'a>) -> Outcome<'a> {
    let encoded = term_codec::encode_list(&call, groups)?;
    if encoded.len() > MAX_GROUPS {
        return Err(Error::TooManyGroups { limit: MAX_GROUPS }.into());
    }
    let list = MemberList::new(encoded.iter().map(ElementRef::to_element).collect())
        .map_err(Error::from)?;
    Ok(MemberListResource::new(list, false).encode(call.env()))
}

fn put<'a>(
    call: Call<'a>,
    list: &MemberListResource,
    member_id: Term<'a>,
    group_id: Term<'a>,
    sort_key: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    list.check_writable()?;
    let [member_id, group_id, sort_key] =
        [member_id, group_id, sort_key].map(|term| encode_arg(&call, term));
    let (member_id, group_id, sort_key) = (member_id?, group_id?, sort_key?);
    let (change, view) = {
        let mut guard = list.write()?;
        let change = guard
            .put(&member_id, &group_id, &sort_key)
            .map_err(Error::from)?;
        (change, guard.clone())
    };
    deliver_changes(&call, view, change, Changed::Yes, started)
}

fn touch<'a>(call: Call<'a>, list: &MemberListResource, member_id: Term<'a>) -> Outcome<'a> {
    let started = Instant::now();
    let Some(id) = lookup_to_change(&call, list, member_id)? else {
        return Ok(Term::list_new_empty(call.env()));
    };
    let view = list.read().clone();
    let change = view.touch(&id);
    deliver_changes(&call, view, change, Changed::No, started)
}

fn remove<'a>(call: Call<'a>, list: &MemberListResource, member_id: Term<'a>) -> Outcome<'a> {
    let started = Instant::now();
    let Some(id) = lookup_to_change(&call, list, member_id)? else {
        return Ok(Term::list_new_empty(call.env()));
    };
    let (change, view) = {
        let mut guard = list.write()?;
        (guard.remove(&id), guard.clone())
    };
    deliver_changes(&call, view, change, Changed::Yes, started)
}

/// The id a change is about, or `None` when it cannot be in the list; raises on a
/// snapshot, which cannot change even when the id is absent.
fn lookup_to_change(
    call: &Call,
    list: &MemberListResource,
    member_id: Term,
) -> Result<Option<Element>, Exit> {
    list.check_writable()?;
    encode_lookup(call, member_id)
}

fn index_of<'a>(call: Call<'a>, list: &MemberListResource, member_id: Term<'a>) -> Outcome<'a> {
    let env = call.env();
    let index = match encode_lookup(&call, member_id)? {
        Some(id) => list.read().index_of(&id),
        None => None,
    };
    call.charge(1);
    Ok(match index {
        Some(index) => index.encode(env),
        None => atoms::nil().encode(env),
    })
}

fn watch<'a>(call: Call<'a>, list: &MemberListResource, first: u64, last: u64) -> Outcome<'a> {
    let started = Instant::now();
    check_range(first, last)?;
    // The rows as of this watch, so that the ops of every later change apply to them.
    let view = {
        let mut guard = list.write()?;
        guard.watch((first, last));
        guard.clone()
    };
    let rows = (Work::Rows { first }, Position::Row(last));
    deliver_first(&call, view, rows, Changed::Yes, started)
}

fn unwatch<'a>(call: Call<'a>, list: &MemberListResource, first: u64, last: u64) -> Outcome<'a> {
    check_range(first, last)?;
    let watched = list.write()?.unwatch((first, last));
    call.charge(1);
    Ok(watched.encode(call.env()))
}

fn rows<'a>(call: Call<'a>, list: &MemberListResource, first: u64, last: u64) -> Outcome<'a> {
    let started = Instant::now();
    check_range(first, last)?;
    let rows = (Work::Rows { first }, Position::Row(last));
    deliver_first(&call, list.read().clone(), rows, Changed::No, started)
}

fn groups<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    let started = Instant::now();
    let view = list.read().clone();
    let groups = (Work::Groups, Position::Group(view.group_count()));
    deliver_first(&call, view, groups, Changed::No, started)
}

fn size<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    Ok(list.read().size().encode(call.env()))
}

fn member_count<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    Ok(list.read().member_count().encode(call.env()))
}

fn read_only<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    Ok(list.read_only.encode(call.env()))
}

/// Lists of up to this many rows or windows are measured on a normal scheduler.
const NORMAL_MEMORY_ROWS: u64 = 32 * 1024;

fn memory<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    let guard = list.read();
    call.go_dirty_if(guard.size().max(guard.watched_len() as u64) > NORMAL_MEMORY_ROWS)?;
    let bytes = std::mem::size_of::<MemberListResource>() + guard.heap_bytes();
    Ok(bytes.encode(call.env()))
}

/// A read-only list sharing every node with `list`. A snapshot is its own snapshot.
fn snapshot<'a>(call: Call<'a>, list: ResourceArc<MemberListResource>) -> Outcome<'a> {
    if list.read_only {
        return Ok(list.encode(call.env()));
    }
    let view = list.read().clone();
    Ok(MemberListResource::new(view, true).encode(call.env()))
}

fn continue_delivery<'a>(
    call: Call<'a>,
    handle: Term<'a>,
    position: Term<'a>,
    acc: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    // The handle term is handed back as it came: encoding the resource again would make
    // a new reference term each chunk, and those count towards the caller's binary heap
    // until it collects the (large, half-built) result.
    let delivery: &Delivery = crate::schedule::FromArg::from_arg(handle, 0)?;
    let position = decode_position(&delivery.work, position)?;
    let mut view = delivery.view.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(list) = view.as_ref() else {
        return Err(Error::Internal("a member list result was continued after it was done").into());
    };
    let result = match build_chunk(&call, list, &delivery.work, position, acc, true)? {
        Built::Done(result) => {
            drop_list(view.take().expect("checked above"));
            result
        }
        Built::More(position, acc) => more(call.env(), handle, position, acc),
    };
    call.charge_since(started);
    Ok(result)
}

/// Whether a call changed the list before building its result: one that did must
/// finish on the scheduler it runs on, as going dirty would run it again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Changed {
    Yes,
    No,
}

fn deliver_changes<'a>(
    call: &Call<'a>,
    view: MemberList,
    change: Change,
    changed: Changed,
    started: Instant,
) -> Outcome<'a> {
    let work = (Work::Changes(change), Position::Window(None));
    deliver_first(call, view, work, changed, started)
}

/// Builds the first chunk of a result from `view`, a snapshot of the list as the call
/// left it (so no lock is held while rows are decoded), and charges the call's time
/// since `started`. When there is more, the rest is delivered from the same snapshot.
fn deliver_first<'a>(
    call: &Call<'a>,
    view: MemberList,
    (work, start): (Work, Position),
    changed: Changed,
    started: Instant,
) -> Outcome<'a> {
    let env = call.env();
    let empty = Term::list_new_empty(env);
    let may_go_dirty = changed == Changed::No;
    // Dropping `view` here is O(1): the list it was taken from is alive for the whole
    // call (its handle is an argument), so `view` shares all but the few nodes a
    // concurrent write may have copied since.
    let result = match build_chunk(call, &view, &work, start, empty, may_go_dirty)? {
        Built::Done(result) => result,
        Built::More(position, acc) => {
            let delivery = ResourceArc::new(Delivery {
                view: Mutex::new(Some(view)),
                work,
            });
            more(env, delivery.encode(env), position, acc)
        }
    };
    call.charge_since(started);
    Ok(result)
}

fn more<'a>(env: Env<'a>, delivery: Term<'a>, position: Position, acc: Term<'a>) -> Term<'a> {
    let position = match position {
        Position::Row(row) => row.encode(env),
        Position::Window(Some(range)) => range.encode(env),
        Position::Window(None) => atoms::nil().encode(env),
        Position::Group(group) => group.encode(env),
    };
    (delivery, position, acc).encode(env)
}

fn decode_position(work: &Work, term: Term) -> Result<Position, Error> {
    let bad = || Error::BadArgument {
        position: 1,
        expected: "a position returned with this delivery",
    };
    Ok(match work {
        Work::Rows { .. } => Position::Row(term.decode().map_err(|_| bad())?),
        Work::Changes(_) if term == atoms::nil().encode(term.get_env()) => Position::Window(None),
        Work::Changes(_) => Position::Window(Some(term.decode().map_err(|_| bad())?)),
        Work::Groups => Position::Group(term.decode().map_err(|_| bad())?),
    })
}

/// Builds one chunk of `work` ending at `position`, prepended to `acc`.
///
/// A chunk always makes progress: when even its first item is over a normal chunk's
/// budget it is built on a dirty scheduler, or, if `may_go_dirty` is false, not at all
/// (the next call, a continuation, will go dirty for it).
fn build_chunk<'a>(
    call: &Call<'a>,
    list: &MemberList,
    work: &Work,
    position: Position,
    acc: Term<'a>,
    may_go_dirty: bool,
) -> Result<Built<'a>, Exit> {
    let budget = if call.is_dirty() {
        DIRTY_CHUNK_UNITS
    } else {
        CHUNK_UNITS
    };
    let over = |first_item_units: usize| -> Result<bool, Exit> {
        if call.is_dirty() || first_item_units <= CHUNK_UNITS {
            return Ok(false);
        }
        if may_go_dirty {
            return Err(Exit::Dirty);
        }
        Ok(true)
    };
    let deadline = Deadline::new(call);
    match (work, position) {
        (Work::Rows { first }, Position::Row(last)) => {
            rows_chunk(call.env(), list, *first, last, acc, budget, deadline, over)
        }
        (Work::Changes(change), Position::Window(below)) => {
            changes_chunk(call.env(), list, change, below, acc, budget, deadline, over)
        }
        (Work::Groups, Position::Group(below)) => {
            groups_chunk(call.env(), list, below, acc, budget, over)
        }
        _ => Err(Error::Internal("a member list delivery got a position of another kind").into()),
    }
}

/// What a chunk may spend in all when its first item alone costs `first`: its budget,
/// or, after an item over it (on a dirty scheduler), that item and a budget more, so
/// that the items sharing that item's row come in the same chunk.
fn allowance_after(first: usize, budget: usize) -> usize {
    if first > budget {
        first.saturating_add(budget)
    } else {
        budget
    }
}

fn row_units(row: &Row) -> usize {
    ROW_UNITS + row.encoded_len() / BYTES_PER_UNIT
}

/// Rows `first..=last` (as far as they exist), the last ones first.
#[allow(clippy::too_many_arguments)]
fn rows_chunk<'a>(
    env: Env<'a>,
    list: &MemberList,
    first: u64,
    last: u64,
    acc: Term<'a>,
    budget: usize,
    deadline: Deadline,
    over: impl Fn(usize) -> Result<bool, Exit>,
) -> Result<Built<'a>, Exit> {
    let size = list.size();
    if first >= size || first > last {
        return Ok(Built::Done(acc));
    }
    let last = last.min(size - 1);
    let start = first.max(last.saturating_sub(MAX_CHUNK_ROWS - 1));
    let rows: Vec<Row> = list.rows(start, last).collect();
    // As many rows from the end as the budget allows, and at least one.
    let first_cost = rows.last().map_or(0, row_units);
    let allowance = allowance_after(first_cost, budget);
    let mut units = 0;
    let mut taken = 0;
    for row in rows.iter().rev() {
        let cost = row_units(row);
        if taken > 0 && units + cost > allowance {
            break;
        }
        units += cost;
        taken += 1;
    }
    if over(first_cost)? {
        return Ok(Built::More(Position::Row(last), acc));
    }
    let mut acc = acc;
    let mut built = 0u64;
    for (n, row) in rows[rows.len() - taken..].iter().rev().enumerate() {
        if n > 0 && n % 64 == 0 && deadline.passed(2 * CHOOSING_TIME) {
            break;
        }
        acc = acc.list_prepend(row_term(env, *row)?);
        built += 1;
    }
    Ok(if last + 1 - built == first {
        Built::Done(acc)
    } else {
        Built::More(Position::Row(last - built), acc)
    })
}

/// When a normal chunk should stop, whatever its unit budget says.
#[derive(Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    /// None on a dirty scheduler, where chunks are bounded by size only.
    fn new(call: &Call) -> Self {
        Deadline((!call.is_dirty()).then(Instant::now))
    }

    fn passed(&self, after: Duration) -> bool {
        self.0.is_some_and(|start| start.elapsed() > after)
    }
}

/// `{window, ops}` for the windows below `below` that `change` reached, the last first.
#[allow(clippy::too_many_arguments)]
fn changes_chunk<'a>(
    env: Env<'a>,
    list: &MemberList,
    change: &Change,
    below: Option<Range>,
    acc: Term<'a>,
    budget: usize,
    deadline: Deadline,
    over: impl Fn(usize) -> Result<bool, Exit>,
) -> Result<Built<'a>, Exit> {
    // Windows first, by their own cost; then the rows their ops carry, each read once
    // however many windows show it, in one ordered walk.
    let mut windows: Vec<WindowOps> = Vec::with_capacity(256);
    let mut units = 0;
    let mut scanned = below;
    let mut exhausted = true;
    for (n, window) in list.changed_windows(change, below).enumerate() {
        if units >= budget || (n % 32 == 31 && deadline.passed(CHOOSING_TIME)) {
            exhausted = false;
            break;
        }
        scanned = Some(window.range());
        units += WINDOW_UNITS + OP_UNITS * window.len();
        if !window.is_empty() {
            windows.push(window);
        }
    }
    let mut indices: Vec<u64> = windows.iter().flat_map(|w| w.rows()).collect();
    indices.sort_unstable();
    indices.dedup();
    let rows = list.rows_at(&indices);
    let slot = |x: u64| indices.binary_search(&x).expect("collected above");

    // Usually every window chosen fits with its rows. Otherwise keep them in the order
    // found while the budget allows, charging each row to the first window that needs
    // it, and at least one.
    let row_total: usize = rows.iter().map(row_units).sum();
    let mut needed = vec![true; rows.len()];
    let mut kept = windows.len();
    let first_cost = windows.first().map_or(0, |w| {
        WINDOW_UNITS
            + OP_UNITS * w.len()
            + w.rows().map(|x| row_units(&rows[slot(x)])).sum::<usize>()
    });
    if units + row_total > allowance_after(first_cost, budget) {
        needed.fill(false);
        let allowance = allowance_after(first_cost, budget);
        let mut spent = 0;
        kept = 0;
        for window in &windows {
            let mut cost = WINDOW_UNITS + OP_UNITS * window.len();
            for x in window.rows() {
                if !needed[slot(x)] {
                    cost += row_units(&rows[slot(x)]);
                }
            }
            if kept > 0 && spent + cost > allowance {
                break;
            }
            for x in window.rows() {
                needed[slot(x)] = true;
            }
            spent += cost;
            kept += 1;
        }
    }
    if kept > 0 && over(first_cost)? {
        return Ok(Built::More(Position::Window(below), acc));
    }
    if kept < windows.len() {
        exhausted = false;
        scanned = Some(windows[kept - 1].range());
    }

    let terms = rows
        .iter()
        .zip(&needed)
        .map(|(row, &needed)| needed.then(|| row_term(env, *row)).transpose())
        .collect::<Result<Vec<Option<Term>>, Error>>()?;
    let row_at = |x: u64| terms[slot(x)].expect("the rows of kept windows are decoded");
    let mut acc = acc;
    for window in &windows[..kept] {
        // The ops list is built from its end, as lists are.
        let ops = window
            .ops()
            .rev()
            .fold(Term::list_new_empty(env), |tail, op| {
                tail.list_prepend(match op {
                    Op::Insert(x) => (insert(), x, row_at(x)).encode(env),
                    Op::Update(x) => (update(), x, row_at(x)).encode(env),
                    Op::Delete(y) => (delete(), y).encode(env),
                })
            });
        acc = acc.list_prepend((window.range(), ops).encode(env));
    }
    Ok(if exhausted {
        Built::Done(acc)
    } else {
        Built::More(Position::Window(scanned), acc)
    })
}

/// `{group_id, count}` for the non-empty groups below `below`, the last first.
fn groups_chunk<'a>(
    env: Env<'a>,
    list: &MemberList,
    below: usize,
    acc: Term<'a>,
    budget: usize,
    over: impl Fn(usize) -> Result<bool, Exit>,
) -> Result<Built<'a>, Exit> {
    let mut units = 0;
    let mut next = below;
    let mut chosen = Vec::new();
    while next > 0 {
        let (row, count) = list
            .group(next - 1)
            .expect("positions below the count exist");
        let cost = 1 + if count > 0 { row_units(&row) } else { 0 };
        if !chosen.is_empty() && units + cost > budget {
            break;
        }
        if chosen.is_empty() && cost > CHUNK_UNITS && over(cost)? {
            return Ok(Built::More(Position::Group(next), acc));
        }
        units += cost;
        next -= 1;
        if count > 0 {
            chosen.push((row, count));
        }
        if units >= budget {
            break;
        }
    }
    let mut acc = acc;
    for (row, count) in chosen {
        let id = row_value(env, row)?;
        acc = acc.list_prepend((id, count).encode(env));
    }
    Ok(if next == 0 {
        Built::Done(acc)
    } else {
        Built::More(Position::Group(next), acc)
    })
}

/// `{:group, id}` or `{:member, id}`.
fn row_term<'a>(env: Env<'a>, row: Row) -> Result<Term<'a>, Error> {
    let value = row_value(env, row)?;
    let kind = if row.is_group() { group() } else { member() };
    Ok((kind, value).encode(env))
}

/// The term a row shows.
fn row_value<'a>(env: Env<'a>, row: Row) -> Result<Term<'a>, Error> {
    let corrupt = |_| Error::Corrupt;
    let mut reader = row.term().map_err(corrupt)?;
    // Most ids are integers: build those directly rather than through the general
    // decoder's stacks. (An integer is a whole term: nothing else follows in it.)
    if let Ok(Some(Token::Integer(Integer::I64(v)))) = reader.next() {
        return Ok(v.encode(env));
    }
    term_codec::decode_next(env, &mut row.term().map_err(corrupt)?)
}

fn check_range(first: u64, last: u64) -> Result<(), Error> {
    if first > last {
        return Err(Error::BadArgument {
            position: 1,
            expected: "a range whose first index is at most its last",
        });
    }
    Ok(())
}
