//! NIFs behind `GuildKit.Fanout`: the per-receiver work of a fan-out, and the copies of
//! its message.
//!
//! Nothing that grows with the number of receivers or the size of the message crosses
//! between fan-out processes as an Erlang term:
//!
//! - The caller's split ([`fanout_split`], in slices of [`SPLIT_SLICE`] receivers on
//!   its own scheduler) puts the pids of this node into [`Batch`]es, one per worker
//!   bucket (`guild_kit_core::partition`, keyed by `:erlang.phash2/1` of the pid).
//!   A batch is a native vector that processes pass around as a resource term, a copy
//!   of a few words. Pids of other nodes go into a [`RemoteReceivers`] list, in an env
//!   of its own, which their sender reads in bounded chunks ([`fanout_remote_take`]).
//!   (The node of a remote pid is not reachable through the NIF API, so grouping by
//!   node stays in Elixir.)
//! - The message is copied once into a [`Message`] ([`fanout_message`]), on the
//!   caller's normal scheduler when it is small and on a dirty one otherwise, and a
//!   worker copies it from there into each receiver's mailbox ([`fanout_deliver`]),
//!   as `send/2` would, on a dirty scheduler when it is big.
//! - A batch counts the receivers it has served, so a worker that dies in the middle
//!   of one is replaced by one that resumes exactly where it stopped: a process is
//!   never killed in the middle of a NIF call.
//!
//! No call on a normal scheduler does more than about 0.2 ms of work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use guild_kit_core::partition::{ChunkPool, Chunked, Partition, MAX_BUCKETS};
use rustler::env::SavedTerm;
use rustler::types::map::MapIterator;
use rustler::{Binary, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term, TermType};

use crate::error::Error;
use crate::raw::{self, SharedTerm};
use crate::schedule::{handle, nifs, Call, Outcome};

mod atoms {
    rustler::atoms! {
        nil,
        done,
        more,
        error,
        term,
        packed,
        guild_kit_more,
        guild_kit_bad_receiver,
    }
}

// --- receivers -------------------------------------------------------------------

/// Pids of this node that one worker serves, and how many of them it has served.
pub struct Batch {
    pids: Chunked<LocalPid>,
    /// Receivers served so far. A worker resumes here, and so does its replacement
    /// when it dies; only one worker delivers a batch at a time.
    served: AtomicUsize,
}

handle!(Batch, "fan-out batch");

impl Batch {
    fn new(pids: Chunked<LocalPid>) -> Self {
        Batch {
            pids,
            served: AtomicUsize::new(0),
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::Acquire).min(self.pids.len())
    }

    fn unserved(&self) -> impl Iterator<Item = &LocalPid> + '_ {
        self.pids.iter_from(self.served())
    }

    fn unserved_count(&self) -> usize {
        self.pids.len() - self.served()
    }
}

/// The chunks of dropped batches, for the next ones: up to 64 of 32 KB (2 MiB), what
/// the caller's and the workers' batches of a 100k-receiver send take together. On
/// fresh memory the kernel's page faults cost as much as the walk that fills it
/// (`bench/RESULTS.md`).
static SPARE_CHUNKS: ChunkPool<LocalPid> = ChunkPool::new(64);

/// Empty buckets for `workers` workers, whose chunks come from [`SPARE_CHUNKS`].
fn new_partition(workers: u32) -> Result<Partition<LocalPid>, Error> {
    Partition::with_pool(workers, &SPARE_CHUNKS).map_err(|bad| Error::BadWorkerCount {
        count: bad.0,
        max: MAX_BUCKETS,
    })
}

/// Pids of other nodes, a list in an env of its own, read in chunks by a sender.
pub struct RemoteReceivers(Mutex<Option<(OwnedEnv, SavedTerm)>>);

handle!(RemoteReceivers, "fan-out remote receiver list");

/// A caller's split between [`fanout_split`] calls.
struct Split {
    local: Partition<LocalPid>,
    /// Other nodes' pids, a list in reverse input order in `remote_env`, built as they
    /// come so that no call does more than its slice of the work.
    remote_env: OwnedEnv,
    remote: SavedTerm,
    remote_count: usize,
    /// Receivers walked so far, `nil`s included, for positions in error reports.
    walked: usize,
}

/// A split under way, kept by the caller between slices.
pub struct SplitInProgress(Mutex<Option<Split>>);

handle!(SplitInProgress, "fan-out split in progress");

/// Receivers one [`fanout_split`] call walks: some 25-60 µs (3-7 ns each, warm to cold).
///
/// A caller's split runs in such slices on its normal scheduler rather than on a dirty
/// one: with both cores busy, the hand-over to a dirty scheduler thread was measured
/// at 38 µs median but 2.2 ms at the 99th percentile (8.9 ms worst), the time the OS
/// took to run the woken thread; a slice keeps the caller on its own thread.
const SPLIT_SLICE: usize = 8192;

/// Most pids a normal-scheduler [`fanout_partition`] splits (a hash and a push each,
/// a few ns); longer batches are split on a dirty scheduler.
const PARTITION_NORMAL: usize = 16_384;

/// Most pids one [`fanout_remote_take`] copies into the calling sender's heap: some
/// 25k words, so that the sender's live data (and its garbage collections) stay small,
/// and a message to another node that is decoded there in a fraction of a millisecond
/// (a message of 500k pids held its receiver 9 ms).
const REMOTE_CHUNK: usize = 4096;

nifs! {
    fn fanout_split(receivers: Term, workers: u32) => split;
    fn fanout_split_more(rest: Term, progress: &SplitInProgress) => split_more;
    fn fanout_partition(batch: &Batch, workers: u32) => partition;
    fn fanout_remote_take(remote: &RemoteReceivers) => remote_take;
    fn fanout_batch_pids(batch: &Batch) => batch_pids;
}

/// Starts splitting `receivers` (a list of pids and `nil`s) for `workers` buckets;
/// see [`slice`] for what it returns.
fn split<'a>(call: Call<'a>, receivers: Term<'a>, workers: u32) -> Outcome<'a> {
    let local = new_partition(workers)?;
    let remote_env = OwnedEnv::new();
    let remote = remote_env.save(Term::list_new_empty(call.env()));
    let split = Split {
        local,
        remote_env,
        remote,
        remote_count: 0,
        walked: 0,
    };
    slice(call, split, receivers)
}

/// Goes on with a split started by [`fanout_split`], from `rest`, the list it returned.
fn split_more<'a>(call: Call<'a>, rest: Term<'a>, progress: &SplitInProgress) -> Outcome<'a> {
    // Only the caller that started the split holds the resource, so the lock is never
    // contended; a poisoned one (a panic in an earlier slice) still holds valid parts.
    let taken = progress.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    let split = taken.ok_or(Error::SplitFinished)?;
    slice(call, split, rest)
}

/// Why a slice stopped.
enum Stop<'a> {
    Done,
    /// The slice's budget ran out with this part of the list left.
    More(Term<'a>),
    /// The element at this position is neither a pid nor `nil`.
    BadReceiver(usize),
}

/// Walks up to [`SPLIT_SLICE`] receivers and returns:
///
/// * `{batches, remote}` when the list is done: `batches` lists `{index, batch,
///   count}` for each non-empty bucket, `remote` is `{remote_receivers, count}` or
///   `nil`;
/// * `{guild_kit_more, rest, progress}`, to go on with [`fanout_split_more`];
/// * `{guild_kit_bad_receiver, position}`.
///
/// Raises `ArgumentError` for an improper list.
fn slice<'a>(call: Call<'a>, mut split: Split, receivers: Term<'a>) -> Outcome<'a> {
    let env = call.env();
    let started = Instant::now();
    let budget = call.budget(SPLIT_SLICE).unwrap_or(usize::MAX);
    let single = split.local.bucket_count() == 1;
    let nil = atoms::nil().to_term(env).as_c_arg();
    let walked = split.walked;
    let Split {
        local,
        remote_env,
        remote,
        remote_count,
        ..
    } = &mut split;
    let (stop, taken) = remote_env.run(|out| {
        let mut remote_list = remote.load(out);
        let mut rest = receivers;
        let mut taken = 0;
        let stop = loop {
            let (head, tail) = match raw::Word::of(rest).cell() {
                Some(cell) => cell,
                None if rest.is_empty_list() => break Stop::Done,
                None => return Err(Error::NotAList),
            };
            if taken == budget {
                break Stop::More(rest);
            }
            taken += 1;
            rest = tail.term(env);
            if let Some(pid) = head.local_pid() {
                // phash2/1 of the pid: 27 bits, stable for the life of the process.
                // With one bucket there is nothing to choose.
                let hash = if single {
                    0
                } else {
                    head.term(env).hash_phash2()
                };
                local.push(hash, pid);
                continue;
            }
            let head = head.term(env);
            if head.is_pid() {
                // A remote pid is boxed, so it is copied into the list's own env.
                remote_list = remote_list.list_prepend(head.in_env(out));
                *remote_count += 1;
            } else if head.as_c_arg() != nil {
                // Atoms are immediates, so `nil` is this exact word and nothing else is.
                break Stop::BadReceiver(walked + taken - 1);
            }
        };
        *remote = remote_env.save(remote_list);
        Ok((stop, taken))
    })?;
    split.walked += taken;
    // Charges the time two and a half times over, as if a timeslice were 0.4 ms rather
    // than ERTS's 1 ms, so the caller yields to the other processes of its scheduler
    // after a few slices: the slices of one send never hold the scheduler for more
    // than about half a millisecond in a row.
    let owed = started.elapsed().as_micros() * 5 / 2;
    call.charge(u32::try_from(owed).unwrap_or(u32::MAX).max(1));
    match stop {
        Stop::More(rest) => {
            let progress = ResourceArc::new(SplitInProgress(Mutex::new(Some(split))));
            Ok((atoms::guild_kit_more(), rest, progress).encode(env))
        }
        Stop::BadReceiver(position) => Ok((atoms::guild_kit_bad_receiver(), position).encode(env)),
        Stop::Done => {
            let remote = if split.remote_count == 0 {
                atoms::nil().encode(env)
            } else {
                let list = RemoteReceivers(Mutex::new(Some((split.remote_env, split.remote))));
                (ResourceArc::new(list), split.remote_count).encode(env)
            };
            Ok((encode_batches(env, split.local), remote).encode(env))
        }
    }
}

/// `[{index, batch, count}]` for the non-empty buckets.
///
/// Time: O(buckets).
fn encode_batches<'a>(env: Env<'a>, partition: Partition<LocalPid>) -> Term<'a> {
    let batches: Vec<(usize, ResourceArc<Batch>, usize)> = partition
        .into_buckets()
        .into_iter()
        .enumerate()
        .filter(|(_, pids)| !pids.is_empty())
        .map(|(index, pids)| (index, pids.len(), pids))
        .map(|(index, count, pids)| (index, ResourceArc::new(Batch::new(pids)), count))
        .collect();
    batches.encode(env)
}

/// Splits the receivers `batch` has not served yet for `workers` buckets, as
/// [`fanout_split`] does, and returns `[{index, batch, count}]`: what a partitioner
/// does with receivers that were split for another worker count (one, for
/// `offload: true`). Moves to a dirty scheduler past [`PARTITION_NORMAL`] pids.
fn partition<'a>(call: Call<'a>, batch: &Batch, workers: u32) -> Outcome<'a> {
    let env = call.env();
    call.go_dirty_if(batch.unserved_count() > PARTITION_NORMAL)?;
    let started = Instant::now();
    let mut partition = new_partition(workers)?;
    for pid in batch.unserved() {
        partition.push(pid.encode(env).hash_phash2(), *pid);
    }
    call.charge_since(started);
    Ok(encode_batches(env, partition))
}

/// Takes up to [`REMOTE_CHUNK`] pids off `remote` and returns `{pids, done}`, the pids
/// copied into the caller's heap; `done` is true once the list is empty.
fn remote_take<'a>(call: Call<'a>, remote: &RemoteReceivers) -> Outcome<'a> {
    let env = call.env();
    let started = Instant::now();
    // Only the sender that received the list reads it, so the lock is never contended.
    let mut guard = remote.0.lock().unwrap_or_else(|e| e.into_inner());
    let Some((owned, list)) = guard.as_mut() else {
        return Ok((Term::list_new_empty(env), true).encode(env));
    };
    let (taken, rest, done) = owned.run(|out| {
        let mut rest = list.load(out);
        let mut taken = Term::list_new_empty(env);
        for _ in 0..REMOTE_CHUNK {
            let Ok((head, tail)) = rest.list_get_cell() else {
                break;
            };
            taken = taken.list_prepend(head.in_env(env));
            rest = tail;
        }
        let done = rest.is_empty_list();
        (taken, owned.save(rest), done)
    });
    *list = rest;
    if done {
        *guard = None;
    }
    call.charge_since(started);
    Ok((taken, done).encode(env))
}

/// The pids `batch` has not served yet, in order (for tests and for inspection).
fn batch_pids<'a>(call: Call<'a>, batch: &Batch) -> Outcome<'a> {
    call.go_dirty_if(batch.unserved_count() > PARTITION_NORMAL)?;
    let pids: Vec<LocalPid> = batch.unserved().copied().collect();
    Ok(pids.encode(call.env()))
}

/// True once every receiver of `batch` was served.
#[rustler::nif]
fn fanout_batch_done(batch: ResourceArc<Batch>) -> bool {
    batch.unserved_count() == 0
}

// --- the message -----------------------------------------------------------------

/// The message of one fan-out, copied once for all its receivers.
pub struct Message {
    term: SharedTerm,
    /// `None` when the message is too big to copy on a normal scheduler, or of a size
    /// the NIF API cannot see (it holds a fun, a bignum or a bitstring).
    size: Option<Size>,
}

handle!(Message, "fan-out message");

/// What copying and sending a term costs.
#[derive(Clone, Copy, Debug)]
struct Size {
    /// Heap words a copy takes (`:erts_debug.flat_size/1`, about).
    words: usize,
    /// About the bytes it takes in the external term format, binaries included.
    bytes: usize,
}

/// Heap words above which a message is copied on dirty schedulers only: 256 KB, about
/// 0.1-0.2 ms to copy.
const MESSAGE_WORDS: usize = 32_768;

/// Encoded bytes up to which a message travels to another node inside the message
/// that lists its receivers there; bigger ones travel packed, in parts of this size,
/// since the receiving process decodes a message in one go (a 64 MB binary held it
/// 21 ms).
const INLINE_BYTES: usize = 256 * 1024;

/// Packed bytes that a normal-scheduler [`fanout_message_import`] decodes.
const IMPORT_NORMAL_BYTES: usize = 64 * 1024;

/// The size of `term`, walked with an explicit stack, or `None` as soon as it passes
/// `max_words` (or holds a term whose size cannot be read).
///
/// Time: O(min(size, max_words)).
fn measure(term: Term, max_words: usize) -> Option<Size> {
    let mut stack = vec![term];
    let mut size = Size { words: 0, bytes: 0 };
    while let Some(term) = stack.pop() {
        let (words, bytes) = match term.get_type() {
            TermType::Atom => (0, 8),
            TermType::Integer => match term.decode::<i64>() {
                Ok(small) if (-(1 << 59)..(1 << 59)).contains(&small) => (0, 9),
                Ok(_) => (2, 9),
                Err(_) => return None,
            },
            TermType::Float => (2, 9),
            TermType::Binary => {
                let length = Binary::from_term(term).ok()?.len();
                let words = if length <= 64 {
                    2 + length.div_ceil(8)
                } else {
                    6
                };
                (words, length + 6)
            }
            TermType::List => match term.list_get_cell() {
                Ok((head, tail)) => {
                    stack.push(tail);
                    stack.push(head);
                    (2, 1)
                }
                // `[]`, or the tail of an improper list.
                Err(_) => (0, 1),
            },
            TermType::Tuple => {
                let elements = raw::tuple_elements(term)?;
                let words = if elements.len() == 0 {
                    0
                } else {
                    1 + elements.len()
                };
                if size.words + words > max_words {
                    return None;
                }
                stack.extend(elements.iter());
                (words, 5)
            }
            TermType::Map => {
                let entries = term.map_size().ok()?;
                let words = 3 * entries + 4;
                if size.words + words > max_words {
                    return None;
                }
                for (key, value) in MapIterator::new(term)? {
                    stack.push(key);
                    stack.push(value);
                }
                (words, 5)
            }
            TermType::Pid | TermType::Port => match term.decode::<LocalPid>() {
                Ok(_) => (0, 30),
                Err(_) => (4, 30),
            },
            TermType::Ref => (5, 30),
            TermType::Fun | TermType::Unknown => return None,
        };
        size.words += words;
        size.bytes += bytes;
        if size.words > max_words {
            return None;
        }
    }
    Some(size)
}

nifs! {
    fn fanout_message(term: Term) => new_message;
    fn fanout_message_import(packed: Term) => message_import;
    fn fanout_message_export(message: &Message, pack: bool) => message_export;
    fn fanout_deliver(batch: &Batch, message: &Message) => deliver;
}

/// Copies `message` once, for all the receivers of a fan-out, and returns it as a
/// [`Message`] resource: on the caller's normal scheduler up to [`MESSAGE_WORDS`], on a
/// dirty one otherwise.
fn new_message<'a>(call: Call<'a>, message: Term<'a>) -> Outcome<'a> {
    let size = measure(message, MESSAGE_WORDS);
    call.go_dirty_if(size.is_none())?;
    let started = Instant::now();
    let message = Message {
        term: SharedTerm::copy_of(message),
        size,
    };
    call.charge_since(started);
    Ok(ResourceArc::new(message).encode(call.env()))
}

/// Decodes a message packed by [`fanout_message_export`] on another node: a binary,
/// or a list of binaries, its parts in order. Returns the [`Message`], or `error` for
/// data that is not one encoded term (nothing a caller can cause; the partitioner
/// drops it and counts the drop). Past [`IMPORT_NORMAL_BYTES`], or for parts, on a
/// dirty scheduler.
fn message_import<'a>(call: Call<'a>, packed: Term<'a>) -> Outcome<'a> {
    let env = call.env();
    let small = Binary::from_term(packed).is_ok_and(|binary| binary.len() <= IMPORT_NORMAL_BYTES);
    call.go_dirty_if(!small)?;
    let started = Instant::now();
    let Ok(bytes) = packed.decode_as_binary() else {
        return Ok(atoms::error().encode(env));
    };
    let decoded = SharedTerm::decode(bytes.as_slice(), |term| measure(term, MESSAGE_WORDS));
    call.charge_since(started);
    Ok(match decoded {
        Some((term, size)) => ResourceArc::new(Message { term, size }).encode(env),
        None => atoms::error().encode(env),
    })
}

/// The message as it travels to another node: `{term, copy}` for a message of up to
/// [`INLINE_BYTES`] when `pack` is false, `{packed, binary}` otherwise (the external
/// term format, built on a dirty scheduler when the message is big).
fn message_export<'a>(call: Call<'a>, message: &Message, pack: bool) -> Outcome<'a> {
    let env = call.env();
    let inline = message.size.filter(|size| size.bytes <= INLINE_BYTES);
    call.go_dirty_if(inline.is_none())?;
    let started = Instant::now();
    let exported = if inline.is_some() && !pack {
        (atoms::term(), message.term.copy_into(env)).encode(env)
    } else {
        let binary = message
            .term
            .encode(env)
            .ok_or(Error::Internal("a fan-out message too big to encode"))?;
        (atoms::packed(), binary).encode(env)
    };
    call.charge_since(started);
    Ok(exported)
}

/// Longest stretch a normal-scheduler [`fanout_deliver`] sends for.
const DELIVER_NORMAL: Duration = Duration::from_micros(200);

/// Longest stretch a dirty [`fanout_deliver`] sends for before it returns, so that a
/// worker being killed or shut down is not kept waiting long.
const DELIVER_DIRTY: Duration = Duration::from_millis(10);

/// Sends `message` to the receivers of `batch` that were not served yet, in order, for
/// at most [`DELIVER_NORMAL`] (or [`DELIVER_DIRTY`] for a message too big for a normal
/// scheduler, which moves there), and returns `done` or `more`. A receiver that is not
/// alive counts as served, as with `send/2`.
fn deliver<'a>(call: Call<'a>, batch: &Batch, message: &Message) -> Outcome<'a> {
    call.go_dirty_if(message.size.is_none())?;
    let env = call.env();
    let started = Instant::now();
    let limit = if call.is_dirty() {
        DELIVER_DIRTY
    } else {
        DELIVER_NORMAL
    };
    // A clock read costs about as much as a send of a small message, so small messages
    // read it every 16 sends; a big one's copy takes far longer than a read.
    let check_every = if message.size.is_some() { 16 } else { 1 };
    let first = batch.served();
    let mut next = first;
    for pid in batch.pids.iter_from(first) {
        if next > first && (next - first).is_multiple_of(check_every) && started.elapsed() >= limit
        {
            break;
        }
        // On a dirty scheduler a send fails once the worker itself is being killed:
        // that receiver was not served.
        if !message.term.send_copy(env, pid) && call.is_dirty() && !env.is_process_alive(env.pid())
        {
            break;
        }
        next += 1;
    }
    batch.served.store(next, Ordering::Release);
    call.charge_since(started);
    Ok(if next == batch.pids.len() {
        atoms::done().encode(env)
    } else {
        atoms::more().encode(env)
    })
}
