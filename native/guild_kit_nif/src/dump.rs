//! NIFs behind `to_binary/1` and `from_binary/1`: a structure as one binary in the
//! format of `guild_kit_core::dump`, and back.
//!
//! A dump is written from an O(1) snapshot, so writers are never held up, into a binary
//! allocated at its exact size: one refcounted binary, off the caller's heap, whatever
//! the structure's size. Dumps and loads of more than `NORMAL_BYTES` run on a dirty CPU
//! scheduler (`crate::schedule`); smaller ones stay on the caller's and are charged.

use std::time::Instant;

use guild_kit_core::dump::{self, DumpError, Kind, LoadError, Plan};
use guild_kit_core::member_list::MemberList;
use rustler::{Binary, Encoder, NewBinary, Term};

use crate::error::Error;
use crate::member_list::MemberListResource;
use crate::schedule::{nifs, Call, Exit, Outcome};
use crate::sorted_set::SortedSet;

/// Bytes of dump that one call on a normal scheduler writes or reads: about 50 µs of
/// copying, checksumming and validating.
const NORMAL_BYTES: usize = 64 * 1024;

nifs! {
    fn sorted_set_to_binary(set: &SortedSet) => sorted_set_to_binary;
    fn sorted_set_from_binary(binary: Term) => sorted_set_from_binary;
    fn member_list_to_binary(list: &MemberListResource) => member_list_to_binary;
    fn member_list_from_binary(binary: Term) => member_list_from_binary;
}

fn sorted_set_to_binary<'a>(call: Call<'a>, set: &SortedSet) -> Outcome<'a> {
    let tree = set.snapshot();
    call.go_dirty_if(!fits(dump::tree_elements(&tree), 0))?;
    let started = Instant::now();
    let plan = dump::plan_sorted_set(&tree);
    write(&call, started, plan, |plan, out| {
        plan.write(out, dump::tree_elements(&tree))
    })
}

fn sorted_set_from_binary<'a>(call: Call<'a>, binary: Term<'a>) -> Outcome<'a> {
    let tree = load(&call, binary, Kind::SortedSet, dump::load_sorted_set)?;
    Ok(SortedSet::new(tree, false).encode(call.env()))
}

/// Groups and windows a member list's dump takes on a normal scheduler at most (their
/// metadata is written in one piece).
const NORMAL_METADATA_ITEMS: usize = 1024;

fn member_list_to_binary<'a>(call: Call<'a>, list: &MemberListResource) -> Outcome<'a> {
    let snapshot = list.read().clone();
    let groups = snapshot.group_count();
    let windows = snapshot.watched_len();
    let small = groups + windows <= NORMAL_METADATA_ITEMS && {
        let group_bytes: usize = (0..groups)
            .filter_map(|position| snapshot.group(position))
            .map(|(row, _)| row.encoded_len() + 4)
            .sum();
        fits(snapshot.dump_elements(), group_bytes + windows * 24)
    };
    call.go_dirty_if(!small)?;
    let started = Instant::now();
    let plan = snapshot.plan_dump();
    write(&call, started, plan, |plan, out| {
        snapshot.write_dump(plan, out)
    })
}

/// Writes a planned dump with `write_to` into a new binary of exactly its size, and
/// charges the work since `started`.
fn write<'a>(
    call: &Call<'a>,
    started: Instant,
    plan: Result<Plan, DumpError>,
    write_to: impl FnOnce(&Plan, &mut [u8]) -> Result<(), DumpError>,
) -> Outcome<'a> {
    let plan = plan.map_err(unwritable)?;
    let mut binary = NewBinary::new(call.env(), plan.len());
    write_to(&plan, binary.as_mut_slice()).map_err(unwritable)?;
    call.charge_since(started);
    Ok(Term::from(binary))
}

fn member_list_from_binary<'a>(call: Call<'a>, binary: Term<'a>) -> Outcome<'a> {
    let list = load(&call, binary, Kind::MemberList, MemberList::from_dump)?;
    Ok(MemberListResource::new(list, false).encode(call.env()))
}

/// Loads a dump of `kind` with `load`, and charges the work.
fn load<'a, T>(
    call: &Call<'a>,
    binary: Term<'a>,
    kind: Kind,
    load: impl FnOnce(&[u8]) -> Result<T, LoadError>,
) -> Result<T, Exit> {
    let bytes = dump_bytes(call, binary)?;
    let started = Instant::now();
    let loaded = load(bytes.as_slice()).map_err(bad_dump(kind))?;
    call.charge_since(started);
    Ok(loaded)
}

/// Whether a dump of `elements` and `other_bytes` of metadata is small enough to write
/// on a normal scheduler.
///
/// Time: O(min(elements, NORMAL_BYTES)): it stops at the budget.
fn fits<'e>(elements: impl Iterator<Item = &'e [u8]>, other_bytes: usize) -> bool {
    let mut left = NORMAL_BYTES.saturating_sub(other_bytes);
    for element in elements {
        // Each element costs its bytes and its length.
        let cost = element.len() + 4;
        if cost > left {
            return false;
        }
        left -= cost;
    }
    true
}

/// The bytes of a dump argument; a large one moves the call to a dirty scheduler.
pub(crate) fn dump_bytes<'a>(call: &Call<'a>, binary: Term<'a>) -> Result<Binary<'a>, Exit> {
    let bytes = Binary::from_term(binary).map_err(|_| Error::BadArgument {
        position: 0,
        expected: "a binary made by to_binary/1",
    })?;
    call.go_dirty_if(bytes.len() > NORMAL_BYTES)?;
    Ok(bytes)
}

pub(crate) fn bad_dump(kind: Kind) -> impl FnOnce(LoadError) -> Error {
    move |source| Error::BadDump {
        kind: kind.name(),
        source,
    }
}

pub(crate) fn unwritable(_: DumpError) -> Error {
    Error::Internal("a structure could not be written as a dump")
}
