//! NIFs behind `GuildKit.Audience`.
//!
//! The core (`guild_kit_core::audience`) knows sessions by slot; this adapter keeps
//! each slot's pid and finds a session's slot from its pid. Local pids are kept as they
//! are (one word each) and found through a hash table of slots; pids of other nodes,
//! which only a relay with remote sessions has, are kept in their external format.
//!
//! Every call takes the audience's lock. A select starts on the caller's normal
//! scheduler, estimates the cache work it needs, then the bytes of the list it builds,
//! and moves to a dirty CPU scheduler when either would take more than a fraction of a
//! millisecond (the cache work done before moving is kept: the rerun finds it done).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use guild_kit_core::audience::{
    slots_of, Audience, AudienceError, Filter, Sessions, SlotSlice, Window, MAX_SESSIONS,
};
use guild_kit_core::term_key::Element;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use rustler::{Atom, Encoder, Env, LocalPid, ResourceArc, Term, TermType};

use crate::atoms;
use crate::error::Error;
use crate::permissions::{Budget, PermissionsResource};
use crate::raw::{self, TermBuffer};
use crate::reaper;
use crate::schedule::{handle, nifs, Call, Exit, Outcome};
use crate::term_codec;

rustler::atoms! {
    all,
    channel,
    window,
    active,
    passive,
    member_id,
    role_ids,
    pid,
    watch,
    more,
    pids,
    count,
}

/// Cache work (in the core's units, about 5 ns each) a select does on a normal
/// scheduler before it moves to a dirty one.
const NORMAL_SELECT_UNITS: u64 = 100_000;
/// Bytes of result (list cells and pids) a select builds on a normal scheduler.
const NORMAL_RESULT_BYTES: usize = 1 << 20;
/// Nanoseconds of result building a select does on a normal scheduler: a local pid
/// takes a few, a pid of another node about a microsecond and a half (it is rebuilt
/// from its external format).
const NORMAL_RESULT_NANOS: usize = 300_000;
const LOCAL_PID_NANOS: usize = 4;
const REMOTE_PID_NANOS: usize = 1_500;
const MAP_ENTRY_NANOS: usize = 50;
/// Heap bytes of a list cell, and of a remote pid besides.
const CELL_BYTES: usize = 16;
const REMOTE_PID_BYTES: usize = 40;
/// Sessions `to_list` and `memory` walk on a normal scheduler, and sessions of one
/// member `update_member` changes there.
const NORMAL_SESSIONS: usize = 1024;
/// Bytes of member keys a removal may compact or free on a normal scheduler.
const NORMAL_COMPACT_BYTES: usize = 256 * 1024;
/// Audiences with more sessions than this are freed on the reaper thread.
const REAP_ABOVE: usize = 4096;

pub struct AudienceResource {
    state: Mutex<State>,
}

handle!(AudienceResource, "GuildKit.Audience");

impl Drop for AudienceResource {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.core.len() > REAP_ABOVE {
            reaper::drop_later(std::mem::take(state));
        }
    }
}

impl AudienceResource {
    // No code path panics while holding the lock; should one ever do so, the state is
    // still whole (each change is one core call plus table updates that cannot fail),
    // so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A session's pid as the caller gave it.
enum Pid {
    Local(LocalPid),
    /// The external term format of a pid of another node.
    Remote(Box<[u8]>),
}

fn decode_pid(term: Term, position: usize) -> Result<Pid, Error> {
    if let Ok(local) = term.decode::<LocalPid>() {
        return Ok(Pid::Local(local));
    }
    if term.get_type() == TermType::Pid {
        return Ok(Pid::Remote(term.to_binary().as_slice().into()));
    }
    Err(Error::BadArgument {
        position,
        expected: "a pid",
    })
}

#[derive(Default)]
struct State {
    core: Audience,
    /// Per slot: the session's pid. The slot of a remote session (one in `remote`)
    /// holds the pid of the process that added it instead, never read: one word a
    /// session, where an `Option` would take two.
    pids: Vec<LocalPid>,
    by_pid: HashTable<u16>,
    remote: HashMap<u32, Box<[u8]>>,
    remote_slots: HashMap<Box<[u8]>, u32>,
    /// The slots of remote sessions, 64 a word: a select counts them with popcounts.
    remote_bits: Vec<u64>,
    hasher: DefaultHashBuilder,
}

impl State {
    fn slot_of(&self, pid: &Pid) -> Option<u32> {
        match pid {
            Pid::Local(local) => {
                let pids = &self.pids;
                self.by_pid
                    .find(self.hasher.hash_one(local), |&slot| {
                        pids[slot as usize] == *local
                    })
                    .map(|&slot| u32::from(slot))
            }
            Pid::Remote(etf) => self.remote_slots.get(etf).copied(),
        }
    }

    /// Records the pid of the session in `slot`; `caller` fills the slots of remote
    /// sessions.
    fn insert(&mut self, slot: u32, pid: Pid, caller: LocalPid) {
        let index = slot as usize;
        if self.pids.len() <= index {
            // Grown by a quarter, like the core's per-slot arrays.
            let missing = index + 1 - self.pids.len();
            if self.pids.len() + missing > self.pids.capacity() {
                self.pids
                    .reserve_exact(missing.max(self.pids.capacity() / 4).max(16));
            }
            self.pids.resize(index + 1, caller);
        }
        match pid {
            Pid::Local(local) => {
                self.pids[index] = local;
                let (pids, hasher) = (&self.pids, &self.hasher);
                self.by_pid
                    .insert_unique(hasher.hash_one(local), slot as u16, |&s| {
                        hasher.hash_one(pids[s as usize])
                    });
            }
            Pid::Remote(etf) => {
                self.pids[index] = caller;
                self.remote_slots.insert(etf.clone(), slot);
                self.remote.insert(slot, etf);
                let word = index / 64;
                if self.remote_bits.len() <= word {
                    self.remote_bits.resize(word + 1, 0);
                }
                self.remote_bits[word] |= 1 << (slot % 64);
            }
        }
    }

    fn forget(&mut self, slot: u32) {
        match self.remote.remove(&slot) {
            Some(etf) => {
                self.remote_slots.remove(&etf);
                self.remote_bits[slot as usize / 64] &= !(1 << (slot % 64));
            }
            None => {
                let hash = self.hasher.hash_one(self.pids[slot as usize]);
                if let Ok(entry) = self.by_pid.find_entry(hash, |&s| u32::from(s) == slot) {
                    entry.remove();
                }
            }
        }
    }

    fn pid_of(&self, slot: u32) -> PidCopy {
        match self.remote.get(&slot) {
            None => PidCopy::Local(self.pids[slot as usize]),
            Some(etf) => PidCopy::Remote(etf.clone()),
        }
    }

    fn pid_term<'a>(&self, env: Env<'a>, slot: u32) -> Result<Term<'a>, Error> {
        match self.remote.get(&slot) {
            None => Ok(self.pids[slot as usize].encode(env)),
            Some(etf) => env
                .binary_to_term(etf)
                .map(|(term, _)| term)
                .ok_or(Error::Corrupt),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.core.heap_bytes()
            + self.pids.capacity() * std::mem::size_of::<LocalPid>()
            + self.by_pid.allocation_size()
            + self.remote.allocation_size()
            + self.remote_slots.allocation_size()
            + self.remote_bits.capacity() * 8
            + self.remote.values().map(|etf| 2 * etf.len()).sum::<usize>()
    }
}

impl From<AudienceError> for Error {
    fn from(error: AudienceError) -> Self {
        match error {
            AudienceError::Full => Error::Full,
            AudienceError::UnknownChannel => Error::UnknownChannel,
            AudienceError::TooLarge => Error::TermTooLarge {
                limit: u32::MAX as usize,
            },
            AudienceError::TooManyRoles => Error::TooManyRoles {
                limit: guild_kit_core::audience::MAX_ROLES,
            },
        }
    }
}

nifs! {
    fn audience_size(audience: &AudienceResource) => size;
    fn audience_member(audience: &AudienceResource, pid: Term) => member;
    fn audience_remove(audience: &AudienceResource, pid: Term) => remove;
    fn audience_add(audience: &AudienceResource, pid: Term, member: Term, roles: Term, active: bool, windows: Term) => add;
    fn audience_update(audience: &AudienceResource, pid: Term, roles: Term, active: Term, windows: Term) => update;
    fn audience_update_member(audience: &AudienceResource, member: Term, roles: Term) => update_member;
    fn audience_check_ids(member: Term, roles: Term) => check_ids;
    fn audience_select(audience: &AudienceResource, perms: &PermissionsResource, filter: Term, forced: Term, sessions: Term, what: Term) => select;
    fn audience_select_groups(audience: &AudienceResource, perms: &PermissionsResource, channels: Term, required: u64, sessions: Term, slice: Term) => select_groups;
    fn audience_to_list(audience: &AudienceResource, from: u64) => to_list;
    fn audience_groups_next(cursor: ResourceArc<GroupsCursor>, channels: Term) => groups_next;
    fn audience_memory(audience: &AudienceResource) => memory;
}

#[rustler::nif]
fn audience_new() -> rustler::ResourceArc<AudienceResource> {
    rustler::ResourceArc::new(AudienceResource {
        state: Mutex::new(State::default()),
    })
}

fn size<'a>(call: Call<'a>, audience: &AudienceResource) -> Outcome<'a> {
    Ok(audience.lock().core.len().encode(call.env()))
}

fn member<'a>(call: Call<'a>, audience: &AudienceResource, pid: Term<'a>) -> Outcome<'a> {
    let pid = decode_pid(pid, 1)?;
    Ok(audience.lock().slot_of(&pid).is_some().encode(call.env()))
}

fn remove<'a>(call: Call<'a>, audience: &AudienceResource, pid: Term<'a>) -> Outcome<'a> {
    let started = Instant::now();
    let pid = decode_pid(pid, 1)?;
    let mut state = audience.lock();
    let removed = match state.slot_of(&pid) {
        Some(slot) => {
            // A removal that compacts a large key store (or frees one huge key) copies
            // or frees that many bytes at once: on a dirty scheduler, before anything
            // changes.
            call.go_dirty_if(state.core.remove_cost(slot) > NORMAL_COMPACT_BYTES)?;
            state.core.remove(slot);
            state.forget(slot);
            true
        }
        None => false,
    };
    call.charge_since(started);
    Ok(removed.encode(call.env()))
}

/// A list of `{first, last}` windows.
fn decode_windows(budget: &mut Budget, windows: Term) -> Result<Vec<Window>, Exit> {
    let mut decoded = Vec::new();
    let mut rest = windows;
    while !rest.is_empty_list() {
        let (head, tail) = rest.list_get_cell().map_err(|_| Error::NotAList)?;
        budget.spend(1)?;
        let window: (u64, u64) = head.decode().map_err(|_| Error::InElement {
            position: decoded.len(),
            source: Box::new(Error::BadArgument {
                position: 0,
                expected: "a window {first, last} of integers in 0..2^64-1",
            }),
        })?;
        decoded.push(window);
        rest = tail;
    }
    Ok(decoded)
}

fn role_refs(roles: &[Element]) -> Vec<&[u8]> {
    roles.iter().map(Element::as_bytes).collect()
}

fn add<'a>(
    call: Call<'a>,
    audience: &AudienceResource,
    pid: Term<'a>,
    member: Term<'a>,
    roles: Term<'a>,
    active: bool,
    windows: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let pid_term = pid;
    let pid = decode_pid(pid, 1)?;
    let mut budget = Budget::new(&call);
    let member = budget.encode_arg(member, None)?;
    let roles = budget.encode_list(roles, false)?;
    let windows = decode_windows(&mut budget, windows)?;
    let mut state = audience.lock();
    if state.slot_of(&pid).is_some() {
        return Err(Error::SessionExists.into());
    }
    // The pid's hash: a session is in the same passive-update slice whenever it is here.
    let slice_key = pid_term.hash_phash2() as u8;
    let slot = state
        .core
        .insert(
            member.as_bytes(),
            &role_refs(&roles),
            active,
            &windows,
            slice_key,
        )
        .map_err(Error::from)?;
    state.insert(slot, pid, call.env().pid());
    call.charge_since(started);
    Ok(rustler::types::atom::ok().encode(call.env()))
}

/// `nil` keeps what the session has.
fn update<'a>(
    call: Call<'a>,
    audience: &AudienceResource,
    pid: Term<'a>,
    roles: Term<'a>,
    active: Term<'a>,
    windows: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let pid = decode_pid(pid, 1)?;
    let mut budget = Budget::new(&call);
    let roles = unless_nil(roles, |roles| budget.encode_list(roles, false))?;
    let active = unless_nil(active, |active| {
        active.decode::<bool>().map_err(|_| Error::BadArgument {
            position: 3,
            expected: "a boolean or nil",
        })
    })?;
    let windows = unless_nil(windows, |windows| decode_windows(&mut budget, windows))?;
    let mut state = audience.lock();
    let slot = state.slot_of(&pid).ok_or(Error::UnknownSession)?;
    if let Some(roles) = roles {
        state
            .core
            .set_roles(slot, &role_refs(&roles))
            .map_err(Error::from)?;
    }
    if let Some(active) = active {
        state.core.set_active(slot, active);
    }
    if let Some(windows) = windows {
        state.core.set_windows(slot, &windows);
    }
    call.charge_since(started);
    Ok(rustler::types::atom::ok().encode(call.env()))
}

/// `None` for `nil`, else what `read` makes of `term`.
fn unless_nil<'a, T, E>(
    term: Term<'a>,
    read: impl FnOnce(Term<'a>) -> Result<T, E>,
) -> Result<Option<T>, E> {
    match term.decode::<Atom>() {
        Ok(atom) if atom == atoms::nil() => Ok(None),
        _ => read(term).map(Some),
    }
}

fn update_member<'a>(
    call: Call<'a>,
    audience: &AudienceResource,
    member: Term<'a>,
    roles: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let mut budget = Budget::new(&call);
    let roles = budget.encode_list(roles, false)?;
    let Some(member) = budget.encode_lookup(member)? else {
        return Ok(0.encode(call.env()));
    };
    let mut state = audience.lock();
    call.go_dirty_if(state.core.member_session_count(member.as_bytes()) > NORMAL_SESSIONS)?;
    let updated = state
        .core
        .set_member_roles(member.as_bytes(), &role_refs(&roles))
        .map_err(Error::from)?;
    call.charge_since(started);
    Ok(updated.encode(call.env()))
}

/// Whether `member` and `roles` can be stored, as `add` would encode them (within the
/// call's byte budget, so a huge term moves the check to a dirty scheduler), storing
/// nothing.
fn check_ids<'a>(call: Call<'a>, member: Term<'a>, roles: Term<'a>) -> Outcome<'a> {
    let started = Instant::now();
    let mut budget = Budget::new(&call);
    budget.encode_arg(member, None)?;
    budget.encode_list(roles, false)?;
    call.charge_since(started);
    Ok(rustler::types::atom::ok().encode(call.env()))
}

/// A decoded filter, owning its channel key.
enum OwnedFilter {
    All,
    Channel(Element, u64),
    Window(Window),
}

impl OwnedFilter {
    fn as_filter(&self) -> Filter<'_> {
        match self {
            OwnedFilter::All => Filter::All,
            OwnedFilter::Channel(channel, required) => Filter::Channel {
                channel: channel.as_bytes(),
                required: *required,
            },
            OwnedFilter::Window(window) => Filter::Window(*window),
        }
    }
}

/// `:all`, `{:channel, id, required}` or `{:window, first, last}`, as the Elixir side
/// normalizes them.
fn decode_filter(budget: &mut Budget, filter: Term) -> Result<OwnedFilter, Exit> {
    let bad = || Error::BadArgument {
        position: 2,
        expected: ":all, {:channel, channel_id, required_bits} or {:window, first, last}",
    };
    if filter.decode::<Atom>().ok() == Some(all()) {
        return Ok(OwnedFilter::All);
    }
    let elements = raw::tuple_elements(filter).ok_or_else(bad)?;
    let fields: Vec<Term> = elements.iter().collect();
    let tag = fields.first().and_then(|tag| tag.decode::<Atom>().ok());
    match (tag, fields.as_slice()) {
        (Some(tag), [_, id, required]) if tag == channel() => {
            let required: u64 = required.decode().map_err(|_| bad())?;
            // A channel id that cannot be stored names no channel.
            let id = budget.encode_lookup(*id)?.ok_or(Error::UnknownChannel)?;
            Ok(OwnedFilter::Channel(id, required))
        }
        (Some(tag), [_, first, last]) if tag == window() => {
            let first: u64 = first.decode().map_err(|_| bad())?;
            let last: u64 = last.decode().map_err(|_| bad())?;
            Ok(OwnedFilter::Window((first, last)))
        }
        _ => Err(bad().into()),
    }
}

fn decode_sessions(sessions: Term) -> Result<Sessions, Error> {
    match sessions.decode::<Atom>() {
        Ok(atom) if atom == active() => Ok(Sessions::Active),
        Ok(atom) if atom == passive() => Ok(Sessions::Passive),
        Ok(atom) if atom == all() => Ok(Sessions::All),
        _ => Err(Error::BadArgument {
            position: 4,
            expected: ":active, :passive or :all",
        }),
    }
}

/// Runs a select under the lock: decodes, estimates, updates the cache and hands the
/// selected slots to `finish`.
fn with_selection<'a>(
    call: &Call<'a>,
    audience: &AudienceResource,
    perms: &PermissionsResource,
    filter: Term<'a>,
    forced: Term<'a>,
    sessions: Term<'a>,
    finish: impl FnOnce(&State, &[u64]) -> Outcome<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let mut budget = Budget::new(call);
    let filter = decode_filter(&mut budget, filter)?;
    let sessions = decode_sessions(sessions)?;
    let forced = budget.encode_list(forced, true)?;
    let forced = role_refs(&forced);
    let mut guard = audience.lock();
    let state = &mut *guard;
    let model = &perms.model;
    call.go_dirty_if(
        state
            .core
            .select_cost(model, &filter.as_filter(), forced.len())
            > NORMAL_SELECT_UNITS,
    )?;
    let selection = state
        .core
        .select(model, filter.as_filter(), sessions, &forced)
        .map_err(Error::from)?;
    let selection = selection.to_vec();
    let result = finish(state, &selection);
    call.charge_since(started);
    result
}

/// `what` is `:pids` for the list of pids, `:count` for how many there are.
fn select<'a>(
    call: Call<'a>,
    audience: &AudienceResource,
    perms: &PermissionsResource,
    filter: Term<'a>,
    forced: Term<'a>,
    sessions: Term<'a>,
    what: Term<'a>,
) -> Outcome<'a> {
    let count_only = match what.decode::<Atom>() {
        Ok(atom) if atom == pids() => false,
        Ok(atom) if atom == count() => true,
        _ => {
            return Err(Error::BadArgument {
                position: 5,
                expected: ":pids or :count",
            }
            .into())
        }
    };
    let env = call.env();
    with_selection(
        &call,
        audience,
        perms,
        filter,
        forced,
        sessions,
        |state, selection| {
            let count: usize = selection.iter().map(|w| w.count_ones() as usize).sum();
            if count_only {
                return Ok(count.encode(env));
            }
            let remote: usize = selection
                .iter()
                .zip(&state.remote_bits)
                .map(|(s, r)| (s & r).count_ones() as usize)
                .sum();
            let bytes = count * CELL_BYTES + remote * REMOTE_PID_BYTES;
            let nanos = count * LOCAL_PID_NANOS + remote * REMOTE_PID_NANOS;
            call.go_dirty_if(bytes > NORMAL_RESULT_BYTES || nanos > NORMAL_RESULT_NANOS)?;
            let mut pids = TermBuffer::with_capacity(env, count);
            if remote == 0 {
                for slot in slots_of(selection) {
                    pids.push(state.pids[slot as usize].encode(env));
                }
            } else {
                for slot in slots_of(selection) {
                    pids.push(state.pid_term(env, slot)?);
                }
            }
            Ok(pids.list(0))
        },
    )
}

/// `channels` is a list of `{channel_id, value}`; returns `[{%{channel_id => value},
/// [pid]}]`, one entry per distinct set of visible channels.
fn select_groups<'a>(
    call: Call<'a>,
    audience: &AudienceResource,
    perms: &PermissionsResource,
    channels: Term<'a>,
    required: u64,
    sessions: Term<'a>,
    slice: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let env = call.env();
    let sessions = decode_sessions(sessions)?;
    let slice = slice
        .decode::<(u32, u32)>()
        .ok()
        .and_then(|(index, count)| SlotSlice::new(index, count));
    let slice = slice.ok_or(Error::BadArgument {
        position: 6,
        expected: "{index, count}, count a power of two up to 64 and index below it",
    })?;
    let mut budget = Budget::new(&call);
    let pairs = channel_terms(channels)?;
    let mut elements: Vec<Element> = Vec::with_capacity(pairs.len());
    for &(channel, _) in &pairs {
        // A channel id that cannot be stored names no channel.
        elements.push(
            budget
                .encode_lookup(channel)?
                .ok_or(Error::UnknownChannel)?,
        );
    }
    let asked: Vec<(&[u8], u64)> = elements.iter().map(|e| (e.as_bytes(), required)).collect();
    let mut state = audience.lock();
    call.go_dirty_if(state.core.prepare_cost(&perms.model) > NORMAL_SELECT_UNITS)?;
    state.core.prepare(&perms.model);
    call.go_dirty_if(
        state.core.group_cost(&perms.model, &asked, sessions, slice) > NORMAL_SELECT_UNITS,
    )?;
    let groups = state
        .core
        .group_by_channels(&perms.model, &asked, sessions, slice)
        .map_err(Error::from)?;
    // The pids are taken now: the rest of the result is built from this snapshot,
    // whatever happens to the audience in between.
    let pending: VecDeque<PendingGroup> = groups
        .into_iter()
        .map(|group| PendingGroup {
            pids: group.slots.iter().map(|&slot| state.pid_of(slot)).collect(),
            channels: group.channels,
            started: false,
        })
        .collect();
    drop(state);
    let cursor = GroupsCursor {
        rest: Mutex::new(pending),
    };
    let chunk = cursor.next_chunk(env, &pairs)?;
    call.charge_since(started);
    Ok(if cursor.is_done() {
        (chunk, atoms::nil()).encode(env)
    } else {
        (chunk, ResourceArc::new(cursor)).encode(env)
    })
}

/// The rest of a `select_groups` result: `{chunk, nil | cursor}` again.
fn groups_next<'a>(
    call: Call<'a>,
    cursor: ResourceArc<GroupsCursor>,
    channels: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let env = call.env();
    let chunk = cursor.next_chunk(env, &channel_terms(channels)?)?;
    call.charge_since(started);
    Ok(if cursor.is_done() {
        (chunk, atoms::nil()).encode(env)
    } else {
        (chunk, cursor).encode(env)
    })
}

/// The argument list of `{channel_id, value}` pairs, as terms.
fn channel_terms(channels: Term) -> Result<Vec<(Term, Term)>, Error> {
    let mut pairs = Vec::new();
    let mut rest = channels;
    while !rest.is_empty_list() {
        let (head, tail) = rest.list_get_cell().map_err(|_| Error::NotAList)?;
        pairs.push(head.decode().map_err(|_| Error::BadArgument {
            position: 1,
            expected: "a list of {channel_id, value} pairs",
        })?);
        rest = tail;
    }
    Ok(pairs)
}

/// A session's pid, copied out of the audience.
enum PidCopy {
    Local(LocalPid),
    Remote(Box<[u8]>),
}

impl PidCopy {
    fn term<'a>(&self, env: Env<'a>) -> Result<Term<'a>, Error> {
        match self {
            PidCopy::Local(local) => Ok(local.encode(env)),
            PidCopy::Remote(etf) => env
                .binary_to_term(etf)
                .map(|(term, _)| term)
                .ok_or(Error::Corrupt),
        }
    }

    /// Bytes and nanoseconds of building it into a list.
    fn cost(&self) -> Cost {
        match self {
            PidCopy::Local(_) => Cost {
                bytes: CELL_BYTES,
                nanos: LOCAL_PID_NANOS,
            },
            PidCopy::Remote(_) => Cost {
                bytes: CELL_BYTES + REMOTE_PID_BYTES,
                nanos: REMOTE_PID_NANOS,
            },
        }
    }
}

/// What building part of a result costs.
#[derive(Clone, Copy, Default)]
struct Cost {
    bytes: usize,
    nanos: usize,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.bytes += other.bytes;
        self.nanos += other.nanos;
    }

    fn exceeds_chunk(&self) -> bool {
        self.bytes > CHUNK_BYTES || self.nanos > NORMAL_RESULT_NANOS
    }
}

struct PendingGroup {
    channels: Vec<u32>,
    pids: VecDeque<PidCopy>,
    /// Some of its pids were returned already.
    started: bool,
}

/// The groups of a `select_groups` result not returned yet. A result is returned in
/// chunks of at most about [`CHUNK_BYTES`] and [`NORMAL_RESULT_NANOS`] of building,
/// so that no call builds, and no caller merges into its heap, more than that at once.
/// A group too big for one chunk is split: its other parts come as `{:more, pids}`.
pub struct GroupsCursor {
    rest: Mutex<VecDeque<PendingGroup>>,
}

handle!(GroupsCursor, "GuildKit.Audience groups cursor");

/// Bytes of terms one call of a chunked result builds.
const CHUNK_BYTES: usize = 512 * 1024;

impl GroupsCursor {
    fn rest(&self) -> MutexGuard<'_, VecDeque<PendingGroup>> {
        self.rest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_done(&self) -> bool {
        self.rest().is_empty()
    }

    /// The next chunk: whole groups, and the start of the next one if it does not fit.
    fn next_chunk<'a>(
        &self,
        env: Env<'a>,
        channels: &[(Term<'a>, Term<'a>)],
    ) -> Result<Term<'a>, Error> {
        let mut rest = self.rest();
        let mut out = TermBuffer::with_capacity(env, 0);
        let mut spent = Cost::default();
        while let Some(group) = rest.front_mut() {
            let head = if group.started {
                more().encode(env)
            } else {
                spent.add(Cost {
                    bytes: 64 + group.channels.len() * 24,
                    nanos: group.channels.len() * MAP_ENTRY_NANOS,
                });
                let mut map = TermBuffer::with_capacity(env, 2 * group.channels.len());
                for &k in &group.channels {
                    map.push(channels.get(k as usize).ok_or(Error::Corrupt)?.0);
                }
                for &k in &group.channels {
                    map.push(channels.get(k as usize).ok_or(Error::Corrupt)?.1);
                }
                map.map(0)
                    .ok_or(Error::Internal("duplicate channel ids in a group"))?
            };
            let mut pids = TermBuffer::with_capacity(env, 0);
            while let Some(pid) = group.pids.front() {
                if spent.exceeds_chunk() {
                    break;
                }
                spent.add(pid.cost());
                pids.push(pid.term(env)?);
                group.pids.pop_front();
            }
            out.push((head, pids.list(0)).encode(env));
            if group.pids.is_empty() {
                rest.pop_front();
            } else {
                group.started = true;
            }
            if spent.exceeds_chunk() {
                break;
            }
        }
        Ok(out.list(0))
    }
}

/// Sessions in slot order from `from`, at most about [`CHUNK_BYTES`] and
/// [`NORMAL_RESULT_NANOS`] of them: `{sessions, next | nil}`.
fn to_list<'a>(call: Call<'a>, audience: &AudienceResource, from: u64) -> Outcome<'a> {
    let started = Instant::now();
    let state = audience.lock();
    let env = call.env();
    let mut out = TermBuffer::with_capacity(env, 0);
    let mut spent = Cost::default();
    let from = u32::try_from(from).unwrap_or(u32::MAX);
    for slot in state.core.slots().skip_while(|&slot| slot < from) {
        let session = state.core.session(slot).ok_or(Error::Corrupt)?;
        let size = Cost {
            bytes: 160
                + 2 * session.member.len()
                + session
                    .roles
                    .iter()
                    .map(|r| 24 + 2 * r.len())
                    .sum::<usize>()
                + session.windows.len() * 56,
            // A session's map takes a few microseconds; a remote pid costs more.
            nanos: 3_000
                + 150 * session.roles.len()
                + if state.remote.contains_key(&slot) {
                    REMOTE_PID_NANOS
                } else {
                    0
                },
        };
        if spent.bytes > 0 && spent.exceeds_chunk() {
            call.charge_since(started);
            return Ok((out.list(0), slot).encode(env));
        }
        spent.add(size);
        let mut roles = TermBuffer::with_capacity(env, session.roles.len());
        for role in &session.roles {
            roles.push(term_codec::decode(env, role)?);
        }
        let windows: Vec<(u64, u64)> = session.windows.to_vec();
        let fields = [
            (pid(), state.pid_term(env, slot)?),
            (member_id(), term_codec::decode(env, session.member)?),
            (role_ids(), roles.list(0)),
            (active(), session.active.encode(env)),
            (watch(), windows.encode(env)),
        ];
        let map = Term::map_from_pairs(env, &fields.map(|(key, value)| (key.to_term(env), value)))
            .map_err(|_| Error::Internal("building a session map"))?;
        out.push(map);
    }
    call.charge_since(started);
    Ok((out.list(0), atoms::nil()).encode(env))
}

fn memory<'a>(call: Call<'a>, audience: &AudienceResource) -> Outcome<'a> {
    let state = audience.lock();
    call.go_dirty_if(state.core.len() > NORMAL_SESSIONS * 16)?;
    Ok((std::mem::size_of::<AudienceResource>() + state.heap_bytes()).encode(call.env()))
}

/// Most sessions an audience holds.
#[rustler::nif]
fn audience_max_sessions() -> usize {
    MAX_SESSIONS
}
