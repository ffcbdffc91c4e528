//! NIFs behind `GuildKit.MemberList`.
//!
//! Arguments are encoded before the lock is taken; the lock is then held for the
//! change and for turning its ops into terms. Changes and reads cost O(log n) plus the
//! windows they touch; they start on the caller's normal scheduler and move themselves
//! to a dirty CPU scheduler (`crate::schedule`) when the input or the number of watched
//! windows is large.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use guild_kit_core::member_list::{
    member_id_offset, Changes, MemberList, MemberListError, Op, Row,
};
use guild_kit_core::term_key::{Element, KeyReader};
use rustler::types::tuple::make_tuple;
use rustler::{Encoder, Env, NifResult, ResourceArc, Term};

use crate::atoms;
use crate::error::Error;
use crate::reaper;
use crate::schedule::{nifs, Call, Exit, Handle, Outcome};
use crate::term_codec::{self, encode_arg as encode, encode_lookup, EncodeError};

/// Most rows a normal-scheduler read returns.
const NORMAL_ROWS: u64 = 256;
/// Most watched windows a normal-scheduler change reports on; more go dirty.
const NORMAL_WINDOWS: usize = 2_000;
/// Bytes of a two-element tuple's header in a key: the tuple tag and the arity.
const PAIR_HEADER: usize = 2;
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
}

#[rustler::resource_impl]
impl rustler::Resource for MemberListResource {}

impl Handle for MemberListResource {
    const KIND: &'static str = "GuildKit.MemberList";
}

impl MemberListResource {
    // No code path panics while holding the lock; see the note in sorted_set.rs.
    fn read(&self) -> RwLockReadGuard<'_, MemberList> {
        self.list.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, MemberList> {
        self.list.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MemberListResource {
    fn drop(&mut self) {
        let list = self.list.get_mut().unwrap_or_else(PoisonError::into_inner);
        if list.member_count() > REAP_ABOVE {
            let list = std::mem::replace(list, MemberList::new(Vec::new()).expect("no groups"));
            reaper::drop_later(list);
        }
    }
}

impl From<MemberListError> for Error {
    fn from(error: MemberListError) -> Self {
        match error {
            MemberListError::UnknownGroup => Error::UnknownGroup,
            MemberListError::DuplicateGroup(position) => Error::DuplicateGroup { position },
            MemberListError::TooManyGroups => Error::TooManyGroups {
                limit: guild_kit_core::member_list::MAX_GROUPS,
            },
            MemberListError::Full => Error::Full,
            MemberListError::TooLarge => Error::TermTooLarge {
                limit: guild_kit_core::key_tree::MAX_ELEMENT_LEN,
            },
            MemberListError::Corrupt => Error::Corrupt,
        }
    }
}

fn no_changes(env: Env) -> Term {
    Vec::<Term>::new().encode(env)
}

nifs! {
    fn member_list_put(list: &MemberListResource, member_id: Term, group_id: Term, sort_key: Term) => put;
    fn member_list_touch(list: &MemberListResource, member_id: Term) => touch;
    fn member_list_remove(list: &MemberListResource, member_id: Term) => remove;
    fn member_list_index_of(list: &MemberListResource, member_id: Term) => index_of;
    fn member_list_watch(list: &MemberListResource, first: u64, last: u64) => watch;
    fn member_list_rows(list: &MemberListResource, first: u64, last: u64) => rows;
    fn member_list_new(groups: Term) => new_list;
    fn member_list_memory(list: &MemberListResource) => memory;
}

/// Builds an empty list with the given groups, on the normal scheduler unless the group
/// ids are large.
fn new_list<'a>(call: Call<'a>, groups: Term<'a>) -> Outcome<'a> {
    let mut encoded = Vec::new();
    let mut rest = groups;
    let mut budget = call.budget(term_codec::NORMAL_BUDGET);
    while !rest.is_empty_list() {
        let (head, tail) = rest.list_get_cell().map_err(|_| Error::NotAList)?;
        let element = term_codec::encode(head, budget).map_err(|e| match e {
            EncodeError::Invalid(source) => Error::InElement {
                position: encoded.len(),
                source: Box::new(source),
            }
            .into(),
            EncodeError::OverBudget => Exit::Dirty,
        })?;
        if let Some(left) = budget.as_mut() {
            let spent = 1 + element.as_bytes().len() / 16;
            call.go_dirty_if(spent >= *left)?;
            *left -= spent;
        }
        encoded.push(element);
        if encoded.len() > guild_kit_core::member_list::MAX_GROUPS {
            return Err(Error::TooManyGroups {
                limit: guild_kit_core::member_list::MAX_GROUPS,
            }
            .into());
        }
        rest = tail;
    }
    let list = MemberList::new(encoded).map_err(Error::from)?;
    Ok(ResourceArc::new(MemberListResource {
        list: RwLock::new(list),
    })
    .encode(call.env()))
}

fn put<'a>(
    call: Call<'a>,
    list: &MemberListResource,
    member_id: Term<'a>,
    group_id: Term<'a>,
    sort_key: Term<'a>,
) -> Outcome<'a> {
    let env = call.env();
    // Sort key and member id are encoded together, for one hint covering both, and
    // their tuple header (the same two bytes for every member) is left out.
    let pair = make_tuple(env, &[sort_key, member_id]);
    let group = encode(&call, group_id)?;
    let pair = encode(&call, pair)?;
    let sort_and_id = Element::from_parts(pair.hint(), &pair.key()[PAIR_HEADER..]);
    let mut guard = list.write();
    call.go_dirty_if(guard.watched_len() > NORMAL_WINDOWS)?;
    let changes = guard.put(group.key(), &sort_and_id).map_err(Error::from)?;
    encode_changes(&call, &changes)
}

fn touch<'a>(call: Call<'a>, list: &MemberListResource, member_id: Term<'a>) -> Outcome<'a> {
    let Some(id) = encode_lookup(&call, member_id)? else {
        return Ok(no_changes(call.env()));
    };
    let guard = list.read();
    match guard.touch(id.key()) {
        Some(changes) => encode_changes(&call, &changes),
        None => Ok(no_changes(call.env())),
    }
}

fn remove<'a>(call: Call<'a>, list: &MemberListResource, member_id: Term<'a>) -> Outcome<'a> {
    let Some(id) = encode_lookup(&call, member_id)? else {
        return Ok(no_changes(call.env()));
    };
    let mut guard = list.write();
    call.go_dirty_if(guard.watched_len() > NORMAL_WINDOWS)?;
    match guard.remove(id.key()) {
        Some(changes) => encode_changes(&call, &changes),
        None => Ok(no_changes(call.env())),
    }
}

fn index_of<'a>(call: Call<'a>, list: &MemberListResource, member_id: Term<'a>) -> Outcome<'a> {
    let env = call.env();
    let Some(id) = encode_lookup(&call, member_id)? else {
        return Ok(atoms::nil().encode(env));
    };
    Ok(match list.read().index_of(id.key()) {
        Some(index) => index.encode(env),
        None => atoms::nil().encode(env),
    })
}

fn watch<'a>(call: Call<'a>, list: &MemberListResource, first: u64, last: u64) -> Outcome<'a> {
    call.go_dirty_if(!dirty_free(first, last))?;
    let mut guard = list.write();
    let rows: Vec<Row> = guard.watch(first, last).collect();
    encode_rows(&call, rows)
}

#[rustler::nif]
fn member_list_unwatch(list: &MemberListResource, first: u64, last: u64) -> bool {
    list.write().unwatch(first, last)
}

fn rows<'a>(call: Call<'a>, list: &MemberListResource, first: u64, last: u64) -> Outcome<'a> {
    call.go_dirty_if(!dirty_free(first, last))?;
    let guard = list.read();
    encode_rows(&call, guard.rows(first, last).collect())
}

/// Whether `first..=last` is small enough to read on a normal scheduler.
fn dirty_free(first: u64, last: u64) -> bool {
    last.saturating_sub(first) < NORMAL_ROWS
}

#[rustler::nif]
fn member_list_groups<'a>(env: Env<'a>, list: &'a MemberListResource) -> NifResult<Term<'a>> {
    let guard = list.read();
    let mut groups = Vec::new();
    for (element, count) in guard.groups() {
        let id = term_codec::decode(env, element)?;
        groups.push((id, count).encode(env));
    }
    Ok(groups.encode(env))
}

#[rustler::nif]
fn member_list_size(list: &MemberListResource) -> u64 {
    list.read().size()
}

#[rustler::nif]
fn member_list_member_count(list: &MemberListResource) -> u64 {
    list.read().member_count()
}

/// Lists of up to this many members are measured on a normal scheduler.
const NORMAL_MEMORY_MEMBERS: u64 = 32 * 1024;

fn memory<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    let guard = list.read();
    call.go_dirty_if(guard.member_count() > NORMAL_MEMORY_MEMBERS)?;
    Ok((std::mem::size_of::<MemberListResource>() + guard.heap_bytes()).encode(call.env()))
}

fn encode_row<'a>(env: Env<'a>, row: Row) -> NifResult<Term<'a>> {
    Ok(match row {
        Row::Group(element) => (group(), term_codec::decode(env, element)?).encode(env),
        Row::Member(element) => (member(), decode_member_id(env, element)?).encode(env),
    })
}

/// The member id inside a member element: after the group prefix and the sort key.
fn decode_member_id<'a>(env: Env<'a>, element: &[u8]) -> NifResult<Term<'a>> {
    let mut reader =
        KeyReader::with_key_offset(element, member_id_offset()).map_err(|_| Error::Corrupt)?;
    reader.skip_term().map_err(|_| Error::Corrupt)?;
    Ok(term_codec::decode_next(env, &mut reader)?)
}

fn encode_rows<'a>(call: &Call<'a>, rows: Vec<Row>) -> Outcome<'a> {
    let env = call.env();
    let terms = rows
        .into_iter()
        .map(|row| encode_row(env, row))
        .collect::<NifResult<Vec<Term>>>()?;
    call.charge(1 + (terms.len() / 6) as u32);
    Ok(terms.encode(env))
}

fn encode_changes<'a>(call: &Call<'a>, changes: &Changes) -> Outcome<'a> {
    let env = call.env();
    let mut entries = Vec::with_capacity(changes.len());
    let mut op_count = 0;
    for &((first, last), ref ops) in changes {
        let mut op_terms = Vec::with_capacity(ops.len());
        for op in ops {
            op_terms.push(match *op {
                Op::Insert(index, row) => (insert(), index, encode_row(env, row)?).encode(env),
                Op::Update(index, row) => (update(), index, encode_row(env, row)?).encode(env),
                Op::Delete(index) => (delete(), index).encode(env),
            });
        }
        op_count += ops.len();
        entries.push(((first, last), op_terms).encode(env));
    }
    // A change costs a few µs, and each op about half a µs more.
    call.charge(3 + (op_count / 2) as u32);
    Ok(entries.encode(env))
}
