//! NIFs behind `GuildKit.Fanout`: the per-receiver work of a fan-out, one list walk.
//!
//! A walk reads a list of receivers once. Pids of this node go into worker buckets
//! (`guild_kit_core::partition`, keyed by `:erlang.phash2/1` of the pid); pids of other
//! nodes are set aside, in reverse input order, for the Elixir side to group by node. The node
//! of a remote pid is not reachable through the NIF API (`enif_get_local_pid` fails on
//! it, and Erlang orders pids by number before node, so no comparison recovers it),
//! hence that split of the work.
//!
//! - [`fanout_split_send`] (a caller's default-mode send) builds the split in a
//!   message env of its own, in slices of [`SEND_SLICE`] receivers on the caller's
//!   normal scheduler, and `enif_send`s it to the caller's sender process: the
//!   message moves into that mailbox without being copied, and never lands on the
//!   caller's heap.
//! - [`fanout_split`] (senders and partitioners) returns the split; past
//!   [`NORMAL_RECEIVERS`] it returns `guild_kit_dirty` and the wrapper calls its dirty
//!   twin.
//! - [`fanout_check`] (a caller's `offload: true` send) only checks the list, in
//!   slices of [`CHECK_CELLS`].
//!
//! No call holds a normal scheduler for more than about 0.1 ms. Cost: about 10 ns a
//! receiver for a split (a list cell, a type check, one `enif_hash`, one cons), about
//! 2 ns for a check.

use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::time::Instant;

use guild_kit_core::partition::{Partition, MAX_BUCKETS};
use rustler::sys::{self, ErlNifHash, ErlNifPid, ErlNifTerm};
use rustler::{Encoder, Env, LocalPid, NifResult, OwnedEnv, ResourceArc, Term};

use crate::atoms;
use crate::error::Error;
use crate::raw;
use crate::schedule::{nifs, Call, Exit, Handle, Outcome};

/// Most receivers a normal-scheduler [`fanout_split`] walks before handing over to the
/// dirty twin: at about 10 ns each, 4,096 take some 40 µs, far below the 1 ms limit,
/// and the switch to a dirty scheduler (about 40 µs median on a busy machine, see
/// [`SEND_SLICE`]) is only paid by longer lists.
const NORMAL_RECEIVERS: usize = 4096;

/// Why a walk stopped early.
enum Stop {
    /// The element at this position is neither a pid nor `nil`.
    BadReceiver(usize),
    /// The budget ran out with this part of the list left unread.
    OverBudget(ErlNifTerm),
}

fn bad_receiver(env: Env, position: usize) -> Term {
    (atoms::guild_kit_bad_receiver(), position).encode(env)
}

/// The next step of a list walk.
enum Cell {
    Head(ErlNifTerm),
    /// The list ended.
    End,
    /// The budget ran out with this part of the list left unread.
    OverBudget(ErlNifTerm),
}

/// A list's cells, read one by one without recursion or allocation.
struct Cells {
    env: *mut sys::ErlNifEnv,
    rest: ErlNifTerm,
    budget: usize,
    /// Heads read so far.
    position: usize,
}

impl Cells {
    fn new(list: Term, budget: Option<usize>) -> Self {
        Cells {
            env: list.get_env().as_c_arg(),
            rest: list.as_c_arg(),
            budget: budget.unwrap_or(usize::MAX),
            position: 0,
        }
    }

    /// Time: O(1). An improper list is an error.
    #[inline]
    fn next(&mut self) -> Result<Cell, Error> {
        let mut head = ErlNifTerm::default();
        let mut tail = ErlNifTerm::default();
        // SAFETY: `rest` is a term of `env`, the env of the running call.
        if unsafe { sys::enif_get_list_cell(self.env, self.rest, &mut head, &mut tail) } == 0 {
            if unsafe { sys::enif_is_empty_list(self.env, self.rest) } != 0 {
                return Ok(Cell::End);
            }
            return Err(Error::NotAList);
        }
        if self.position == self.budget {
            return Ok(Cell::OverBudget(self.rest));
        }
        self.rest = tail;
        self.position += 1;
        Ok(Cell::Head(head))
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
    let mut cells = Cells::new(receivers, budget);
    loop {
        let head = match cells.next()? {
            Cell::Head(head) => head,
            Cell::End => return Ok(None),
            Cell::OverBudget(rest) => return Ok(Some(Stop::OverBudget(rest))),
        };
        let mut pid = MaybeUninit::<ErlNifPid>::uninit();
        // SAFETY: `head` is a term of this call's env.
        if unsafe { sys::enif_get_local_pid(raw_env, head, pid.as_mut_ptr()) } != 0 {
            local(unsafe { pid.assume_init() }, head);
        } else if unsafe { sys::enif_is_pid(raw_env, head) } != 0 {
            remote(head);
        } else if head != nil {
            // Atoms are immediates, so `nil` is this exact word and nothing else is.
            return Ok(Some(Stop::BadReceiver(cells.position - 1)));
        }
    }
}

/// A split being built: the local pids in worker buckets and the remote pids, all as
/// terms of one output env (the caller's, or a message env kept across calls).
struct Parts {
    /// One list per bucket, each in reverse input order.
    local: Partition<ErlNifTerm>,
    /// Other nodes' pids, a list in reverse input order, built as they come so that no
    /// call does more than its slice of the work.
    remote: ErlNifTerm,
    remote_count: usize,
    /// Receivers walked so far, `nil`s included, for positions in error reports.
    walked: usize,
}

impl Parts {
    fn new(out: Env, workers: u32) -> Result<Parts, Error> {
        let empty = Vec::<Term>::new().encode(out).as_c_arg();
        let local =
            Partition::with_buckets(workers, || empty).map_err(|bad| Error::BadWorkerCount {
                count: bad.0,
                max: MAX_BUCKETS,
            })?;
        Ok(Parts {
            local,
            remote: empty,
            remote_count: 0,
            walked: 0,
        })
    }

    /// Adds up to `budget` receivers from `receivers` (terms of `env`) to the split,
    /// building in `out`. A bad receiver's position counts from the first call.
    ///
    /// Time: O(min(n, budget)).
    fn add(
        &mut self,
        env: Env,
        out: Env,
        receivers: Term,
        budget: Option<usize>,
    ) -> Result<Option<Stop>, Error> {
        let raw_out = out.as_c_arg();
        let copy_remote = raw_out != env.as_c_arg();
        let Parts {
            local,
            remote,
            remote_count,
            ..
        } = self;
        let stop = walk(
            env,
            receivers,
            budget,
            |pid, term| {
                // phash2/1 of the pid: 27 bits, stable for the life of the process.
                let hash = unsafe { sys::enif_hash(ErlNifHash::ERL_NIF_PHASH2, term, 0) } as u32;
                // Consing straight onto the bucket's list, rather than collecting a
                // vector and building the list after, saved a third of the time at
                // 100k receivers.
                local.add(hash, |list| {
                    // SAFETY: `list` and the pid made here both belong to `out`.
                    *list = unsafe {
                        sys::enif_make_list_cell(raw_out, sys::enif_make_pid(raw_out, pid), *list)
                    };
                });
            },
            |term| {
                // A remote pid is boxed, so it must be copied into another env.
                let pid = if copy_remote {
                    unsafe { sys::enif_make_copy(raw_out, term) }
                } else {
                    term
                };
                // SAFETY: `pid` and `remote` both belong to `out`.
                *remote = unsafe { sys::enif_make_list_cell(raw_out, pid, *remote) };
                *remote_count += 1;
            },
        )?;
        let walked = self.walked;
        Ok(match stop {
            None => None,
            Some(Stop::BadReceiver(at)) => Some(Stop::BadReceiver(walked + at)),
            Some(Stop::OverBudget(rest)) => {
                self.walked += budget.unwrap_or(0);
                Some(Stop::OverBudget(rest))
            }
        })
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote_count == 0
    }

    /// `{buckets, counts, local_count, remote, remote_count}` in `out`: `buckets` a
    /// tuple of one list per worker, `counts` their lengths.
    ///
    /// Time: O(workers).
    fn encode(self, out: Env) -> Term {
        let counts: Vec<ErlNifTerm> = self
            .local
            .counts()
            .iter()
            .map(|count| count.encode(out).as_c_arg())
            .collect();
        let local_count = self.local.len();
        let lists = self.local.into_accumulators();
        (
            make_tuple(out, &lists),
            make_tuple(out, &counts),
            local_count,
            // SAFETY: the list was built in `out`.
            unsafe { Term::new(out, self.remote) },
            self.remote_count,
        )
            .encode(out)
    }
}

nifs! {
    fn fanout_split(receivers: Term, workers: u32) => split;
}

/// Splits `receivers` for `workers` buckets and returns
/// `{buckets, counts, local_count, remote, remote_count}` (see [`Parts::encode`]) or
/// `{guild_kit_bad_receiver, position}`, moving to a dirty scheduler past
/// [`NORMAL_RECEIVERS`]. Used by the sender and partitioner processes; callers use
/// [`fanout_split_send`].
fn split<'a>(call: Call<'a>, receivers: Term<'a>, workers: u32) -> Outcome<'a> {
    let env = call.env();
    let mut parts = Parts::new(env, workers)?;
    match parts.add(env, env, receivers, call.budget(NORMAL_RECEIVERS))? {
        None => Ok(parts.encode(env)),
        Some(Stop::OverBudget(_)) => Err(Exit::Dirty),
        Some(Stop::BadReceiver(position)) => Ok(bad_receiver(env, position)),
    }
}

/// Receivers one [`fanout_split_send`] call walks: some 80-100 µs at about 10 ns each.
///
/// A caller's split runs in such slices on its normal scheduler rather than on a
/// dirty one: with both cores busy, the hand-over to a dirty scheduler thread was
/// measured at 38 µs median but 2.2 ms at the 99th percentile (8.9 ms worst), the time
/// the OS took to run the woken thread; a slice keeps the caller on its own thread.
const SEND_SLICE: usize = 8192;

/// A caller's split under way between [`fanout_split_send`] calls, built in its own
/// message env, which the final call sends.
pub struct SplitInProgress(Mutex<Option<(OwnedEnv, Parts)>>);

#[rustler::resource_impl]
impl rustler::Resource for SplitInProgress {}

impl Handle for SplitInProgress {
    const KIND: &'static str = "fan-out split in progress";
}

nifs! {
    fn fanout_split_send(receivers: Term, workers: u32, to: LocalPid, payload: Term) => split_send;
    fn fanout_split_send_more(
        rest: Term,
        progress: ResourceArc<SplitInProgress>,
        to: LocalPid,
        payload: Term,
    ) => split_send_more;
    fn fanout_check(receivers: Term, position: usize) => check_slice;
}

/// Starts splitting `receivers` for `workers` buckets, to send the split to `to` as
/// `{guild_kit_fanout_split, split, payload}`. Walks up to [`SEND_SLICE`] receivers;
/// see [`slice`] for what it returns.
fn split_send<'a>(
    call: Call<'a>,
    receivers: Term<'a>,
    workers: u32,
    to: LocalPid,
    payload: Term<'a>,
) -> Outcome<'a> {
    let message_env = OwnedEnv::new();
    let parts = message_env.run(|out| Parts::new(out, workers))?;
    slice(call, (message_env, parts), receivers, &to, payload)
}

/// Goes on with a split started by [`fanout_split_send`], from `rest`, the list it
/// returned.
fn split_send_more<'a>(
    call: Call<'a>,
    rest: Term<'a>,
    progress: ResourceArc<SplitInProgress>,
    to: LocalPid,
    payload: Term<'a>,
) -> Outcome<'a> {
    // Only the caller that started the split holds the resource, so the lock is never
    // contended; a poisoned one (a panic in an earlier slice) still holds valid parts.
    let taken = progress.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(state) = taken else {
        return Err(Error::SplitFinished.into());
    };
    slice(call, state, rest, &to, payload)
}

/// Walks one slice and returns:
///
/// * `{local_count, remote_count}` when the list is done and the split was sent
///   (nothing is sent when both are 0);
/// * `{guild_kit_more, rest, progress}` to be passed to [`fanout_split_send_more`];
/// * `guild_kit_unsent` when `to` is no longer alive;
/// * `{guild_kit_bad_receiver, position}` (nothing is sent).
fn slice<'a>(
    call: Call<'a>,
    (message_env, mut parts): (OwnedEnv, Parts),
    receivers: Term<'a>,
    to: &LocalPid,
    payload: Term<'a>,
) -> Outcome<'a> {
    let env = call.env();
    let started = Instant::now();
    let stop = message_env.run(|out| parts.add(env, out, receivers, Some(SEND_SLICE)))?;
    // Charges the time two and a half times over, as if a timeslice were 0.4 ms rather
    // than ERTS's 1 ms, so the caller yields to the other processes of its scheduler
    // after a few slices: the slices of one send never hold the scheduler for more
    // than about half a millisecond in a row.
    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX / 3)) as u32;
    call.charge((micros * 5 / 2).max(10));
    match stop {
        Some(Stop::OverBudget(rest)) => {
            let progress =
                ResourceArc::new(SplitInProgress(Mutex::new(Some((message_env, parts)))));
            // SAFETY: `rest` is a tail of the argument, a term of `env`.
            let rest = unsafe { Term::new(env, rest) };
            Ok((atoms::guild_kit_more(), rest, progress).encode(env))
        }
        Some(Stop::BadReceiver(position)) => Ok(bad_receiver(env, position)),
        None if parts.is_empty() => Ok((0, 0).encode(env)),
        None => {
            let counts = (parts.local.len(), parts.remote_count);
            let sent = raw::send_moving(env, to, &message_env, |out| {
                (
                    atoms::guild_kit_fanout_split(),
                    parts.encode(out),
                    payload.in_env(out),
                )
                    .encode(out)
            });
            Ok(if sent {
                counts.encode(env)
            } else {
                atoms::guild_kit_unsent().encode(env)
            })
        }
    }
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
fn check_slice<'a>(call: Call<'a>, receivers: Term<'a>, position: usize) -> Outcome<'a> {
    let started = Instant::now();
    let result = check(call.env(), receivers, position);
    // The VM counts the call as one reduction; report its time so that a caller
    // checking a long list in a loop yields on time.
    call.charge_since(started);
    Ok(result?)
}

fn check<'a>(env: Env<'a>, receivers: Term<'a>, position: usize) -> NifResult<Term<'a>> {
    let nil = atoms::nil().encode(env).as_c_arg();
    let mut cells = Cells::new(receivers, Some(CHECK_CELLS));
    loop {
        match cells.next()? {
            // SAFETY: `head` is a term of this call's env. One call per element, where
            // the walk of a split needs two.
            Cell::Head(head)
                if head == nil || unsafe { sys::enif_is_pid(env.as_c_arg(), head) } != 0 => {}
            Cell::Head(_) => {
                let at = position + cells.position - 1;
                return Ok((atoms::guild_kit_bad_receiver(), at).encode(env));
            }
            Cell::End => return Ok(atoms::ok().encode(env)),
            Cell::OverBudget(rest) => {
                // SAFETY: `rest` is a tail of the argument, a term of `env`.
                let rest = unsafe { Term::new(env, rest) };
                return Ok((atoms::guild_kit_more(), rest, position + CHECK_CELLS).encode(env));
            }
        }
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
