//! NIFs behind `GuildKit.Fanout`: the per-receiver work of a fan-out in one list walk.
//!
//! A walk reads a list of receivers once. Pids of this node go into worker buckets
//! (`guild_kit_core::partition`, keyed by `:erlang.phash2/1` of the pid); pids of other
//! nodes are set aside, in input order, for the Elixir side to group by node. The node
//! of a remote pid is not reachable through the NIF API (`enif_get_local_pid` fails on
//! it, and Erlang orders pids by number before node, so no comparison recovers it),
//! hence that split of the work.
//!
//! The `_send` variants build their result in a fresh message environment and
//! `enif_send` it to the caller's sender process: the message moves into the
//! receiver's mailbox without being copied, and the caller's heap never holds it.
//!
//! Every NIF here has a normal-scheduler version that stops after [`NORMAL_RECEIVERS`]
//! receivers and returns `guild_kit_dirty`, and a `_dirty` twin without a limit that
//! the Elixir wrapper calls for longer lists: no call holds a normal scheduler for more
//! than tens of microseconds.

use std::mem::MaybeUninit;

use guild_kit_core::partition::{Partition, MAX_BUCKETS};
use rustler::sys::{self, ErlNifHash, ErlNifPid, ErlNifTerm};
use rustler::{Encoder, Env, LocalPid, NifResult, OwnedEnv, Term};

use crate::atoms;
use crate::error::Error;

/// Most receivers a normal-scheduler call walks before handing over to the dirty twin:
/// at about 10 ns each, 4,096 take some 40 µs, far below the 1 ms limit, while the
/// dirty switch (a few µs) is then amortised over at least that many receivers.
const NORMAL_RECEIVERS: usize = 4096;

/// Why a walk stopped early.
enum Stop {
    /// The element at this position is neither a pid nor `nil`.
    BadReceiver(usize),
    /// The budget ran out with this part of the list left unread.
    OverBudget(ErlNifTerm),
}

impl Stop {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Stop::BadReceiver(position) => (atoms::guild_kit_bad_receiver(), *position).encode(env),
            // The split NIFs start over on a dirty scheduler.
            Stop::OverBudget(_) => atoms::guild_kit_dirty().encode(env),
        }
    }
}

/// Walks `receivers`, a list of pids and `nil`s, calling `local` for each pid of this
/// node and `remote` for each other pid, at most `budget` elements.
///
/// Time: O(n). Raises `ArgumentError` (through [`Error`]) for an improper list.
fn walk(
    env: Env,
    receivers: Term,
    budget: Option<usize>,
    mut local: impl FnMut(ErlNifPid, ErlNifTerm),
    mut remote: impl FnMut(ErlNifTerm),
) -> Result<Option<Stop>, Error> {
    let raw_env = env.as_c_arg();
    let nil = atoms::nil().encode(env).as_c_arg();
    let budget = budget.unwrap_or(usize::MAX);
    let mut rest = receivers.as_c_arg();
    let mut position = 0usize;
    loop {
        let mut head = ErlNifTerm::default();
        let mut tail = ErlNifTerm::default();
        // SAFETY: every term comes from this call's env and lives until it returns.
        if unsafe { sys::enif_get_list_cell(raw_env, rest, &mut head, &mut tail) } == 0 {
            if unsafe { sys::enif_is_empty_list(raw_env, rest) } != 0 {
                return Ok(None);
            }
            return Err(Error::NotAList);
        }
        if position == budget {
            return Ok(Some(Stop::OverBudget(rest)));
        }
        let mut pid = MaybeUninit::<ErlNifPid>::uninit();
        if unsafe { sys::enif_get_local_pid(raw_env, head, pid.as_mut_ptr()) } != 0 {
            local(unsafe { pid.assume_init() }, head);
        } else if unsafe { sys::enif_is_pid(raw_env, head) } != 0 {
            remote(head);
        } else if head != nil {
            // Atoms are immediates, so `nil` is this exact word and nothing else is.
            return Ok(Some(Stop::BadReceiver(position)));
        }
        rest = tail;
        position += 1;
    }
}

/// The split of `receivers` for `workers` buckets, as a term of `out`:
/// `{buckets, counts, local_count, remote, remote_count}`. `buckets` is a tuple of
/// `workers` lists of local pids, each in reverse input order, `counts` their lengths,
/// `remote` the other nodes' pids in input order. `out` is either the caller's env or
/// a message env; terms are copied into it where needed.
///
/// Time: O(n + workers).
fn split_term<'o>(
    env: Env,
    out: Env<'o>,
    receivers: Term,
    workers: u32,
    budget: Option<usize>,
) -> Result<Result<(Term<'o>, usize, usize), Stop>, Error> {
    let raw_out = out.as_c_arg();
    let copy_remote = raw_out != env.as_c_arg();
    let empty = Vec::<Term>::new().encode(out).as_c_arg();
    let mut local =
        Partition::with_buckets(workers, || empty).map_err(|bad| Error::BadWorkerCount {
            count: bad.0,
            max: MAX_BUCKETS,
        })?;
    let mut remote = Vec::new();
    let stop = walk(
        env,
        receivers,
        budget,
        |pid, term| {
            // phash2/1 of the pid: 27 bits, stable for the life of the process.
            let hash = unsafe { sys::enif_hash(ErlNifHash::ERL_NIF_PHASH2, term, 0) } as u32;
            // Consing straight onto the bucket's list, rather than collecting a vector
            // and building the list after, saved a third of the time at 100k receivers.
            local.add(hash, |list| {
                // SAFETY: `list` and the pid made here both belong to `out`.
                *list = unsafe {
                    sys::enif_make_list_cell(raw_out, sys::enif_make_pid(raw_out, pid), *list)
                };
            });
        },
        |term| {
            // A remote pid is boxed, so it must be copied into another env.
            remote.push(if copy_remote {
                unsafe { sys::enif_make_copy(raw_out, term) }
            } else {
                term
            });
        },
    )?;
    if let Some(stop) = stop {
        return Ok(Err(stop));
    }
    let (local_count, remote_count) = (local.len(), remote.len());
    let counts: Vec<ErlNifTerm> = local
        .counts()
        .iter()
        .map(|count| count.encode(out).as_c_arg())
        .collect();
    let lists = local.into_accumulators();
    let split = (
        make_tuple(out, &lists),
        make_tuple(out, &counts),
        local_count,
        make_list(out, &remote),
        remote_count,
    )
        .encode(out);
    Ok(Ok((split, local_count, remote_count)))
}

/// Splits `receivers` for `workers` buckets and returns the split (see [`split_term`]),
/// `{guild_kit_bad_receiver, position}`, or `guild_kit_dirty` past the budget.
#[rustler::nif]
fn fanout_split<'a>(env: Env<'a>, receivers: Term<'a>, workers: u32) -> NifResult<Term<'a>> {
    split(env, receivers, workers, Some(NORMAL_RECEIVERS))
}

/// [`fanout_split`] without a budget, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn fanout_split_dirty<'a>(env: Env<'a>, receivers: Term<'a>, workers: u32) -> NifResult<Term<'a>> {
    split(env, receivers, workers, None)
}

fn split<'a>(
    env: Env<'a>,
    receivers: Term<'a>,
    workers: u32,
    budget: Option<usize>,
) -> NifResult<Term<'a>> {
    Ok(match split_term(env, env, receivers, workers, budget)? {
        Ok((split, _, _)) => split,
        Err(stop) => stop.encode(env),
    })
}

/// Splits `receivers` like [`fanout_split`] and sends
/// `{guild_kit_fanout_split, split, payload}` to `to` without copying it. Returns
/// `{local_count, remote_count}` (nothing is sent when both are 0),
/// `guild_kit_unsent` when `to` is not alive, or what [`fanout_split`] returns on a
/// bad receiver or past the budget (nothing is sent then either).
#[rustler::nif]
fn fanout_split_send<'a>(
    env: Env<'a>,
    receivers: Term<'a>,
    workers: u32,
    to: LocalPid,
    payload: Term<'a>,
) -> NifResult<Term<'a>> {
    split_send(env, receivers, workers, to, payload, Some(NORMAL_RECEIVERS))
}

/// [`fanout_split_send`] without a budget, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn fanout_split_send_dirty<'a>(
    env: Env<'a>,
    receivers: Term<'a>,
    workers: u32,
    to: LocalPid,
    payload: Term<'a>,
) -> NifResult<Term<'a>> {
    split_send(env, receivers, workers, to, payload, None)
}

fn split_send<'a>(
    env: Env<'a>,
    receivers: Term<'a>,
    workers: u32,
    to: LocalPid,
    payload: Term<'a>,
    budget: Option<usize>,
) -> NifResult<Term<'a>> {
    let message_env = OwnedEnv::new();
    message_env.run(|out| {
        let (split, local_count, remote_count) =
            match split_term(env, out, receivers, workers, budget)? {
                Ok(found) => found,
                Err(stop) => return Ok(stop.encode(env)),
            };
        if local_count + remote_count == 0 {
            return Ok((0, 0).encode(env));
        }
        let message = (atoms::guild_kit_fanout_split(), split, payload.in_env(out)).encode(out);
        Ok(if send(env, &to, out, message) {
            (local_count, remote_count).encode(env)
        } else {
            atoms::guild_kit_unsent().encode(env)
        })
    })
}

/// Cells one [`fanout_check`] call walks: it only reads, at about 2 ns a cell, so some
/// 0.15 ms, well inside a normal scheduler's 1 ms.
const CHECK_CELLS: usize = 65_536;

/// Checks that `receivers` is a proper list of pids and `nil`s, for `offload: true`,
/// where the caller hands the list over as is. Walks at most [`CHECK_CELLS`] cells and
/// returns `ok`, `{guild_kit_bad_receiver, position}`, or
/// `{guild_kit_more, rest, position}` for the caller to go on with the rest of the
/// list; positions count from the `position` passed in. Raises `ArgumentError` for an
/// improper list.
///
/// A walk that also copied the list into a message env and sent it was measured
/// slower (0.45 ms at 100k receivers) than this check plus `send/2`'s own copy (0.40).
#[rustler::nif]
fn fanout_check<'a>(env: Env<'a>, receivers: Term<'a>, position: usize) -> NifResult<Term<'a>> {
    Ok(
        match walk(env, receivers, Some(CHECK_CELLS), |_, _| (), |_| ())? {
            None => atoms::ok().encode(env),
            Some(Stop::BadReceiver(at)) => {
                (atoms::guild_kit_bad_receiver(), position + at).encode(env)
            }
            Some(Stop::OverBudget(rest)) => {
                // SAFETY: `rest` is a tail of the argument, a term of `env`.
                let rest = unsafe { Term::new(env, rest) };
                (atoms::guild_kit_more(), rest, position + CHECK_CELLS).encode(env)
            }
        },
    )
}

/// Sends `message`, a term of the message env `out`, from the calling process to `to`.
/// The terms move into the receiver's mailbox; `out` is left empty. Messages sent this
/// way keep their order with every other message from the caller to `to`, since ERTS
/// queues them as signals from the calling process.
fn send(env: Env, to: &LocalPid, out: Env, message: Term) -> bool {
    // SAFETY: `env` is the calling process's env, `out` a process-independent env
    // holding `message`, as enif_send requires.
    unsafe {
        sys::enif_send(
            env.as_c_arg(),
            to.as_c_arg(),
            out.as_c_arg(),
            message.as_c_arg(),
        ) != 0
    }
}

fn make_tuple<'a>(env: Env<'a>, terms: &[ErlNifTerm]) -> Term<'a> {
    // SAFETY: the elements belong to `env`.
    unsafe {
        let tuple =
            sys::enif_make_tuple_from_array(env.as_c_arg(), terms.as_ptr(), terms.len() as _);
        Term::new(env, tuple)
    }
}

fn make_list<'a>(env: Env<'a>, terms: &[ErlNifTerm]) -> Term<'a> {
    // SAFETY: the elements belong to `env`.
    unsafe {
        let list = sys::enif_make_list_from_array(env.as_c_arg(), terms.as_ptr(), terms.len() as _);
        Term::new(env, list)
    }
}
