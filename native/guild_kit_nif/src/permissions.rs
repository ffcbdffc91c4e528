//! NIFs behind `GuildKit.Permissions`.
//!
//! A `GuildKit.Permissions` is an immutable native value (`guild_kit_core::permissions`):
//! every change makes a new resource sharing what did not change with the old one, so
//! no lock is needed and a value held by any process never changes under it. Ids are
//! encoded with the term codec; the whole element (hint included) is the id, so ids
//! compare as map keys do (`=:=`).

use guild_kit_core::permissions::{Channel, Overwrite, Permissions, Target};
use guild_kit_core::term_key::Element;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rustler::{Atom, Encoder, Env, ResourceArc, Term};

use crate::error::Error;
use crate::raw::{self, TermBuffer};
use crate::reaper;
use crate::schedule::{handle, nifs, Call, Exit, Outcome};
use crate::term_codec::{self, encode_arg, encode_lookup, EncodeError};

rustler::atoms! {
    everyone,
    role,
    member,
    more,
}

/// Most roles, channels and overwrites `export` builds on a normal scheduler.
const NORMAL_ITEMS: usize = 512;
/// Most roles (or channels) a change copies on a normal scheduler: copy-on-write copies
/// the map it changes.
const NORMAL_COPY: usize = 16 * 1024;
/// Values with more roles and channels than this are freed on the reaper thread.
const REAP_ABOVE: usize = 4096;

pub struct PermissionsResource {
    pub model: Permissions,
}

handle!(PermissionsResource, "GuildKit.Permissions");

impl Drop for PermissionsResource {
    fn drop(&mut self) {
        // Only the parts no other value shares are freed, but those may be big.
        if self.model.roles().len() + self.model.channels().len() > REAP_ABOVE {
            reaper::drop_later(std::mem::take(&mut self.model));
        }
    }
}

fn wrap<'a>(call: &Call<'a>, model: Permissions) -> Term<'a> {
    ResourceArc::new(PermissionsResource { model }).encode(call.env())
}

nifs! {
    fn permissions_new(everyone: u64, roles: Term, owner: Term, channels: Term) => new;
    fn permissions_put_role(perms: &PermissionsResource, role: Term, bits: u64) => put_role;
    fn permissions_delete_role(perms: &PermissionsResource, role: Term) => delete_role;
    fn permissions_put_owner(perms: &PermissionsResource, owner: Term) => put_owner;
    fn permissions_put_channel(perms: &PermissionsResource, channel: Term, overwrites: Term) => put_channel;
    fn permissions_delete_channel(perms: &PermissionsResource, channel: Term) => delete_channel;
    fn permissions_compute(perms: &PermissionsResource, member: Term, roles: Term) => compute;
    fn permissions_compute_channel(perms: &PermissionsResource, member: Term, roles: Term, channel: Term) => compute_channel;
    fn permissions_has_channel(perms: &PermissionsResource, channel: Term) => has_channel;
    fn permissions_export(perms: &PermissionsResource) => export;
    fn permissions_export_next(cursor: ResourceArc<ExportCursor>) => export_next;
    fn permissions_put_everyone(perms: &PermissionsResource, bits: u64) => put_everyone;
    fn permissions_info(perms: &PermissionsResource) => info;
}

/// Work allowed on a normal scheduler, in the term codec's bytes ([`term_codec::NORMAL_BUDGET`]),
/// shared by all the terms of one call.
pub(crate) struct Budget {
    left: Option<usize>,
}

impl Budget {
    /// The normal budget, or none on a dirty scheduler.
    pub(crate) fn new(call: &Call) -> Self {
        Budget {
            left: call.budget(term_codec::NORMAL_BUDGET),
        }
    }

    /// Spends the cost of visiting `nodes` terms; `Err(Exit::Dirty)` when it is more
    /// than what is left.
    pub(crate) fn spend(&mut self, nodes: usize) -> Result<(), Exit> {
        self.spend_bytes(nodes.saturating_mul(term_codec::NODE_COST))
    }

    /// Spends `bytes` of work, counted as the term codec counts them.
    fn spend_bytes(&mut self, bytes: usize) -> Result<(), Exit> {
        if let Some(left) = self.left.as_mut() {
            if bytes >= *left {
                return Err(Exit::Dirty);
            }
            *left -= bytes;
        }
        Ok(())
    }

    fn encode(&mut self, term: Term) -> Result<Element, EncodeError> {
        let element = term_codec::encode(term, self.left)?;
        // What the encoder read, approximated by what it wrote, and the term itself.
        self.spend_bytes(term_codec::NODE_COST + element.as_bytes().len())
            .map_err(|_| EncodeError::OverBudget)?;
        Ok(element)
    }

    /// Encodes a term to store; an unstorable one raises, naming `position` when given.
    pub(crate) fn encode_arg(
        &mut self,
        term: Term,
        position: Option<usize>,
    ) -> Result<Element, Exit> {
        self.encode(term).map_err(|error| match (error, position) {
            (EncodeError::OverBudget, _) => Exit::Dirty,
            (EncodeError::Invalid(source), None) => source.into(),
            (EncodeError::Invalid(source), Some(position)) => Error::InElement {
                position,
                source: Box::new(source),
            }
            .into(),
        })
    }

    /// Encodes a term to look up: `None` when it cannot be stored, and so names nothing.
    pub(crate) fn encode_lookup(&mut self, term: Term) -> Result<Option<Element>, Exit> {
        match self.encode(term) {
            Ok(element) => Ok(Some(element)),
            Err(EncodeError::Invalid(_)) => Ok(None),
            Err(EncodeError::OverBudget) => Err(Exit::Dirty),
        }
    }

    /// The elements of a proper list of terms. With `lookup`, terms that cannot be
    /// stored are skipped (they name nothing stored) instead of raising.
    pub(crate) fn encode_list(&mut self, list: Term, lookup: bool) -> Result<Vec<Element>, Exit> {
        let mut elements = Vec::new();
        let mut rest = list;
        let mut position = 0;
        while !rest.is_empty_list() {
            let (head, tail) = rest.list_get_cell().map_err(|_| Error::NotAList)?;
            if lookup {
                elements.extend(self.encode_lookup(head)?);
            } else {
                elements.push(self.encode_arg(head, Some(position))?);
            }
            position += 1;
            rest = tail;
        }
        Ok(elements)
    }
}

/// The items of a proper list with their positions, each costing one node of `budget`.
fn list_items<'a>(budget: &mut Budget, list: Term<'a>) -> Result<Vec<(usize, Term<'a>)>, Exit> {
    let mut items = Vec::new();
    let mut rest = list;
    while !rest.is_empty_list() {
        let (head, tail) = rest.list_get_cell().map_err(|_| Error::NotAList)?;
        budget.spend(1)?;
        items.push((items.len(), head));
        rest = tail;
    }
    Ok(items)
}

/// The elements of a tuple of `arity`, or `error`.
fn tuple_of(term: Term, arity: usize, error: impl Fn() -> Error) -> Result<Vec<Term>, Error> {
    match raw::tuple_elements(term) {
        Some(elements) if elements.len() == arity => Ok(elements.iter().collect()),
        _ => Err(error()),
    }
}

fn bits_at(term: Term, position: usize) -> Result<u64, Error> {
    term.decode().map_err(|_| Error::InElement {
        position,
        source: Box::new(Error::BadBits),
    })
}

/// `[]` for no owner, `[member_id]` for one.
fn decode_owner(budget: &mut Budget, owner: Term) -> Result<Option<Element>, Exit> {
    let mut owner = budget.encode_list(owner, false)?;
    match owner.len() {
        0 | 1 => Ok(owner.pop()),
        _ => Err(Error::BadArgument {
            position: 2,
            expected: "[] or [owner_id]",
        }
        .into()),
    }
}

/// A list of `{id, value}` pairs, each value read by `value(budget, term, position)`.
/// `pair` says what a pair is, for the error an item of another shape raises.
fn decode_pairs<'a, V>(
    budget: &mut Budget,
    list: Term<'a>,
    pair: &'static str,
    value: impl Fn(&mut Budget, Term<'a>, usize) -> Result<V, Exit>,
) -> Result<Vec<(Element, V)>, Exit> {
    let mut decoded = Vec::new();
    for (position, item) in list_items(budget, list)? {
        let fields = tuple_of(item, 2, || Error::InElement {
            position,
            source: Box::new(Error::BadArgument {
                position: 0,
                expected: pair,
            }),
        })?;
        let id = budget.encode_arg(fields[0], Some(position))?;
        decoded.push((id, value(budget, fields[1], position)?));
    }
    Ok(decoded)
}

/// A list of overwrites: `{:everyone, allow, deny}`, `{:role, id, allow, deny}` or
/// `{:member, id, allow, deny}`.
fn decode_channel(budget: &mut Budget, overwrites: Term) -> Result<Channel, Exit> {
    let mut decoded: Vec<(u8, Option<Element>, Overwrite)> = Vec::new();
    for (position, item) in list_items(budget, overwrites)? {
        let bad = || Error::InElement {
            position,
            source: Box::new(Error::BadOverwrite),
        };
        let elements = raw::tuple_elements(item).ok_or_else(bad)?;
        let fields: Vec<Term> = elements.iter().collect();
        let kind = fields.first().and_then(|kind| kind.decode::<Atom>().ok());
        let (tag, id, bits) = match (kind, fields.as_slice()) {
            (Some(kind), [_, allow, deny]) if kind == everyone() => (0, None, (allow, deny)),
            (Some(kind), [_, id, allow, deny]) if kind == role() => (1, Some(id), (allow, deny)),
            (Some(kind), [_, id, allow, deny]) if kind == member() => (2, Some(id), (allow, deny)),
            _ => return Err(bad().into()),
        };
        let id = match id {
            Some(id) => Some(budget.encode_arg(*id, Some(position))?),
            None => None,
        };
        let allow: u64 = bits.0.decode().map_err(|_| bad())?;
        let deny: u64 = bits.1.decode().map_err(|_| bad())?;
        decoded.push((tag, id, Overwrite::new(allow, deny)));
    }
    Ok(Channel::new(decoded.iter().map(|(tag, id, overwrite)| {
        let id = id.as_ref().map_or(&[][..], |e| e.as_bytes());
        let target = match tag {
            0 => Target::Everyone,
            1 => Target::Role(id),
            _ => Target::Member(id),
        };
        (target, *overwrite)
    })))
}

fn new<'a>(
    call: Call<'a>,
    everyone_bits: u64,
    roles: Term<'a>,
    owner: Term<'a>,
    channels: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let mut budget = Budget::new(&call);
    let roles = decode_pairs(
        &mut budget,
        roles,
        "a {role_id, bits} pair",
        |_, bits, at| Ok(bits_at(bits, at)?),
    )?;
    let owner = decode_owner(&mut budget, owner)?;
    let channels = decode_pairs(
        &mut budget,
        channels,
        "a {channel_id, overwrites} pair",
        |budget, overwrites, _| decode_channel(budget, overwrites),
    )?;
    let mut model = Permissions::new(
        everyone_bits,
        roles.iter().map(|(id, bits)| (id.as_bytes(), *bits)),
        owner.as_ref().map(Element::as_bytes),
    );
    for (id, channel) in channels {
        model = model.with_channel(id.as_bytes(), channel);
    }
    call.charge_since(started);
    Ok(wrap(&call, model))
}

/// The value `change` makes from `perms`. Copy-on-write copies the map the change is
/// in, of `copied` entries: a big one is copied on a dirty scheduler.
fn changed<'a>(
    call: Call<'a>,
    copied: usize,
    change: impl FnOnce() -> Result<Permissions, Exit>,
) -> Outcome<'a> {
    let started = Instant::now();
    call.go_dirty_if(copied > NORMAL_COPY)?;
    let model = change()?;
    call.charge_since(started);
    Ok(wrap(&call, model))
}

fn put_role<'a>(
    call: Call<'a>,
    perms: &PermissionsResource,
    role: Term<'a>,
    bits: u64,
) -> Outcome<'a> {
    changed(call, perms.model.roles().len(), || {
        let role = encode_arg(&call, role)?;
        Ok(perms.model.with_role(role.as_bytes(), bits))
    })
}

fn delete_role<'a>(call: Call<'a>, perms: &PermissionsResource, role: Term<'a>) -> Outcome<'a> {
    changed(call, perms.model.roles().len(), || {
        Ok(match encode_lookup(&call, role)? {
            Some(role) => perms.model.without_role(role.as_bytes()),
            None => perms.model.clone(),
        })
    })
}

fn put_everyone<'a>(call: Call<'a>, perms: &PermissionsResource, bits: u64) -> Outcome<'a> {
    Ok(wrap(&call, perms.model.with_everyone(bits)))
}

fn put_owner<'a>(call: Call<'a>, perms: &PermissionsResource, owner: Term<'a>) -> Outcome<'a> {
    let owner = decode_owner(&mut Budget::new(&call), owner)?;
    Ok(wrap(
        &call,
        perms
            .model
            .with_owner(owner.as_ref().map(Element::as_bytes)),
    ))
}

fn put_channel<'a>(
    call: Call<'a>,
    perms: &PermissionsResource,
    channel: Term<'a>,
    overwrites: Term<'a>,
) -> Outcome<'a> {
    changed(call, perms.model.channels().len(), || {
        let mut budget = Budget::new(&call);
        let channel = budget.encode_arg(channel, None)?;
        let overwrites = decode_channel(&mut budget, overwrites)?;
        Ok(perms.model.with_channel(channel.as_bytes(), overwrites))
    })
}

fn delete_channel<'a>(
    call: Call<'a>,
    perms: &PermissionsResource,
    channel: Term<'a>,
) -> Outcome<'a> {
    changed(call, perms.model.channels().len(), || {
        Ok(match encode_lookup(&call, channel)? {
            Some(channel) => perms.model.without_channel(channel.as_bytes()),
            None => perms.model.clone(),
        })
    })
}

fn compute<'a>(
    call: Call<'a>,
    perms: &PermissionsResource,
    member: Term<'a>,
    roles: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let mut budget = Budget::new(&call);
    let roles = budget.encode_list(roles, true)?;
    let bits = match budget.encode_lookup(member)? {
        Some(member) => perms
            .model
            .base(member.as_bytes(), roles.iter().map(Element::as_bytes)),
        None => perms.model.roles_base(roles.iter().map(Element::as_bytes)),
    };
    call.charge_since(started);
    Ok(bits.encode(call.env()))
}

fn compute_channel<'a>(
    call: Call<'a>,
    perms: &PermissionsResource,
    member: Term<'a>,
    roles: Term<'a>,
    channel: Term<'a>,
) -> Outcome<'a> {
    let started = Instant::now();
    let mut budget = Budget::new(&call);
    let channel = budget
        .encode_lookup(channel)?
        .ok_or(Error::UnknownChannel)?;
    let roles = budget.encode_list(roles, true)?;
    // A member id that cannot be stored is no owner and has no overwrite: an empty key
    // (which no encoded term has) stands for it.
    let member = budget.encode_lookup(member)?;
    let member = member.as_ref().map_or(&[][..], Element::as_bytes);
    let bits = perms
        .model
        .in_channel(
            member,
            roles.iter().map(Element::as_bytes),
            channel.as_bytes(),
        )
        .ok_or(Error::UnknownChannel)?;
    call.charge_since(started);
    Ok(bits.encode(call.env()))
}

fn has_channel<'a>(call: Call<'a>, perms: &PermissionsResource, channel: Term<'a>) -> Outcome<'a> {
    let known = match encode_lookup(&call, channel)? {
        Some(channel) => perms.model.channel(channel.as_bytes()).is_some(),
        None => false,
    };
    Ok(known.encode(call.env()))
}

/// `{everyone, [owner] | [], roles, channels, nil | cursor}`: the start of the value's
/// contents, in id order, in chunks (see [`ExportCursor`]).
fn export<'a>(call: Call<'a>, perms: &PermissionsResource) -> Outcome<'a> {
    let started = Instant::now();
    let model = &perms.model;
    call.go_dirty_if(model.roles().len() + model.channels().len() > NORMAL_ITEMS)?;
    let env = call.env();
    let mut roles: Vec<(Box<[u8]>, u64)> =
        model.roles().map(|(id, bits)| (id.into(), bits)).collect();
    roles.sort_unstable();
    let mut channels: Vec<(Box<[u8]>, Arc<Channel>)> = model
        .channels()
        .map(|(id, channel)| (id.into(), channel.clone()))
        .collect();
    channels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut owner = TermBuffer::with_capacity(env, 1);
    if let Some(id) = model.owner() {
        owner.push(term_codec::decode(env, id)?);
    }
    let cursor = ExportCursor {
        rest: Mutex::new(Export {
            roles: roles.into(),
            channels: channels.into(),
            current: VecDeque::new(),
        }),
    };
    call.go_dirty_if(cursor.starts_big_channel())?;
    let (role_terms, channel_terms) = cursor.next_chunk(env)?;
    call.charge_since(started);
    let rest = if cursor.is_done() {
        crate::atoms::nil().encode(env)
    } else {
        ResourceArc::new(cursor).encode(env)
    };
    Ok((
        model.everyone(),
        owner.list(0),
        role_terms,
        channel_terms,
        rest,
    )
        .encode(env))
}

/// The rest of an export: `{roles, channels, nil | cursor}`.
fn export_next<'a>(call: Call<'a>, cursor: ResourceArc<ExportCursor>) -> Outcome<'a> {
    let started = Instant::now();
    call.go_dirty_if(cursor.starts_big_channel())?;
    let env = call.env();
    let (role_terms, channel_terms) = cursor.next_chunk(env)?;
    call.charge_since(started);
    let rest = if cursor.is_done() {
        crate::atoms::nil().encode(env)
    } else {
        cursor.encode(env)
    };
    Ok((role_terms, channel_terms, rest).encode(env))
}

/// An overwrite as `to_options/1` lists it: its kind, its role or member id (none for
/// `@everyone`), its bits.
type ListedOverwrite = (Atom, Option<Box<[u8]>>, Overwrite);

/// What an export has yet to return, in id order.
struct Export {
    roles: VecDeque<(Box<[u8]>, u64)>,
    channels: VecDeque<(Box<[u8]>, Arc<Channel>)>,
    /// The overwrites of the first channel in `channels`, once it was started.
    current: VecDeque<ListedOverwrite>,
}

/// The rest of a `to_options/1` export. Contents come in chunks of about
/// [`CHUNK_BYTES`] of terms, so that no call builds (and no caller's heap merges) more
/// than that at once; a channel whose overwrites do not fit continues in the next chunk
/// as `{:more, overwrites}`.
pub struct ExportCursor {
    rest: Mutex<Export>,
}

handle!(ExportCursor, "GuildKit.Permissions export cursor");

/// Most overwrites of one channel an export puts in order on a normal scheduler.
const NORMAL_SORT: usize = 4096;

/// Bytes of terms one chunk of an export builds: 64 KiB take about half a millisecond
/// of CPU (decoding the ids is most of it), on the caller's normal scheduler.
const CHUNK_BYTES: usize = 64 * 1024;

impl ExportCursor {
    fn rest(&self) -> std::sync::MutexGuard<'_, Export> {
        self.rest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_done(&self) -> bool {
        let rest = self.rest();
        rest.roles.is_empty() && rest.channels.is_empty()
    }

    /// True when the next chunk starts with a channel whose overwrites are too many to
    /// put in order on a normal scheduler. A chunk ends before such a channel, so it
    /// always comes first in the chunk that starts it.
    fn starts_big_channel(&self) -> bool {
        let rest = self.rest();
        rest.roles.is_empty()
            && rest.current.is_empty()
            && rest
                .channels
                .front()
                .is_some_and(|(_, channel)| channel.len() > NORMAL_SORT)
    }

    /// `(roles, channels)` worth about [`CHUNK_BYTES`] (at least one item).
    fn next_chunk<'a>(&self, env: Env<'a>) -> Result<(Term<'a>, Term<'a>), Error> {
        let mut rest = self.rest();
        let mut bytes = 0;
        // A decoded id takes about twice its encoded size; each tuple and cons a few words.
        let cost = |id: &[u8]| 64 + 2 * id.len();
        let mut roles = TermBuffer::with_capacity(env, 0);
        while bytes < CHUNK_BYTES {
            let Some((id, bits)) = rest.roles.pop_front() else {
                break;
            };
            bytes += cost(&id);
            roles.push((term_codec::decode(env, &id)?, bits).encode(env));
        }
        let mut channels = TermBuffer::with_capacity(env, 0);
        while bytes < CHUNK_BYTES {
            let Some((id, channel)) = rest.channels.front() else {
                break;
            };
            let head = if rest.current.is_empty() {
                if channel.len() > NORMAL_SORT && bytes > 0 {
                    break; // to start the next chunk, on a dirty scheduler
                }
                bytes += cost(id);
                let head = term_codec::decode(env, id)?;
                rest.current = overwrites_in_order(channel);
                head
            } else {
                more().encode(env)
            };
            let mut overwrites = TermBuffer::with_capacity(env, 0);
            while bytes < CHUNK_BYTES {
                let Some((kind, id, overwrite)) = rest.current.pop_front() else {
                    break;
                };
                let (allow, deny) = (overwrite.allow, overwrite.deny);
                overwrites.push(match id {
                    None => (kind, allow, deny).encode(env),
                    Some(id) => {
                        bytes += cost(&id);
                        (kind, term_codec::decode(env, &id)?, allow, deny).encode(env)
                    }
                });
                bytes += 64;
            }
            channels.push((head, overwrites.list(0)).encode(env));
            if rest.current.is_empty() {
                rest.channels.pop_front();
            }
        }
        Ok((roles.list(0), channels.list(0)))
    }
}

/// A channel's overwrites as merged: `@everyone` first (when it has bits), then roles,
/// then members, each in id order.
fn overwrites_in_order(channel: &Channel) -> VecDeque<ListedOverwrite> {
    let mut out = VecDeque::with_capacity(channel.len());
    if channel.everyone() != Overwrite::default() {
        out.push_back((everyone(), None, channel.everyone()));
    }
    for (kind, mut list) in [
        (role(), channel.roles().collect::<Vec<_>>()),
        (member(), channel.members().collect::<Vec<_>>()),
    ] {
        list.sort_unstable_by_key(|(id, _)| *id);
        out.extend(list.into_iter().map(|(id, o)| (kind, Some(id.into()), o)));
    }
    out
}

/// `{roles, channels}`: how many of each the value has.
fn info<'a>(call: Call<'a>, perms: &PermissionsResource) -> Outcome<'a> {
    let counts = (perms.model.roles().len(), perms.model.channels().len());
    Ok(counts.encode(call.env()))
}
