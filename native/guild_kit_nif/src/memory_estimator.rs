//! NIFs behind `GuildKit.MemoryEstimator`.
//!
//! The walk itself (stack, sampling, budget) is `guild_kit_core::size_walk`; this module
//! shows it real terms through [`NifView`], which reads each term in place
//! ([`raw::Word::shape`]: its word and, for a boxed term, its object's header) and sizes
//! it with `guild_kit_core::size_model`. Reading a term is O(1) whatever it holds:
//! nothing is encoded, copied or allocated in the VM, not a fun's captured variables,
//! not a binary at a bit offset, not a bignum. Maps are read with rustler's map API,
//! and their keys hashed with `enif_hash(ERL_NIF_INTERNAL_HASH, key, salt)` and OTP
//! 25's salt for each eight levels of the trie (`size_model::map_hash_salt`), on which
//! OTP builds its hashmap tries, so walked hashmaps get their exact node count.
//!
//! Each size starts on the caller's normal scheduler and moves itself to a dirty CPU
//! scheduler (`crate::schedule`) past [`NORMAL_BUDGET`] or [`NORMAL_TIME_BUDGET`],
//! where it starts over without a budget. Both return
//! `{words, off_heap_bytes, exact?, visited, terms}`; `memory_estimate` returns
//! `:timeout` instead once its time limit has passed.

use std::time::{Duration, Instant};

use guild_kit_core::size_model::{
    map_hash_salt, sub_binary_off_heap_bytes, sub_binary_words, BinaryHome, FUN_WORDS,
    REFC_BINARY_WORDS, SUB_BINARY_WORDS,
};
use guild_kit_core::size_walk::{size_of, Interrupt, Node, Settings, Size, TermView};
use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, NifResult, Term};

use crate::error::Error;
use crate::raw::{self, FlatMapProbe, FunProbe, Shape, SubBinaryProbe, Thing, ThingKind, Word};
use crate::schedule::{nifs, Call, Exit, FromArg, Outcome};

/// Units of work (about one term each, see `size_walk`) a normal-scheduler call may
/// spend before handing over to a dirty scheduler: a few nanoseconds to a few tens a
/// unit, so well under a millisecond. NORMAL_TIME_BUDGET below is the firmer bound.
const NORMAL_BUDGET: u64 = 20_000;

/// Wall-clock limit of a normal-scheduler call, a safety net under NORMAL_BUDGET for a
/// machine under load, where units take longer than they should.
const NORMAL_TIME_BUDGET: Duration = Duration::from_micros(400);

/// Most probes `memory_confirm_layout` reads: it is called once, with a dozen.
const MAX_PROBES: usize = 64;

rustler::atoms! {
    infinity,
    timeout,
}

nifs! {
    fn memory_estimate(term: Term, samples: u64, seed: u64, limit: TimeLimit) => estimate;
    fn memory_exact(term: Term) => exact;
}

fn estimate<'a>(
    call: Call<'a>,
    term: Term<'a>,
    samples: u64,
    seed: u64,
    limit: TimeLimit,
) -> Outcome<'a> {
    run(call, term, Some(samples), seed, limit.0)
}

fn exact<'a>(call: Call<'a>, term: Term<'a>) -> Outcome<'a> {
    run(call, term, None, 0, None)
}

/// How long a walk may take before it gives up for good: `:infinity`, or microseconds.
struct TimeLimit(Option<Duration>);

impl<'a> FromArg<'a> for TimeLimit {
    fn from_arg(term: Term<'a>, position: usize) -> Result<Self, Error> {
        if term.decode::<Atom>().is_ok_and(|atom| atom == infinity()) {
            return Ok(TimeLimit(None));
        }
        term.decode::<u64>()
            .map(|micros| TimeLimit(Some(Duration::from_micros(micros))))
            .map_err(|_| Error::BadArgument {
                position,
                expected: "a time limit: microseconds, or :infinity",
            })
    }
}

fn run<'a>(
    call: Call<'a>,
    term: Term<'a>,
    samples: Option<u64>,
    seed: u64,
    limit: Option<Duration>,
) -> Outcome<'a> {
    let env = call.env();
    let started = Instant::now();
    let settings = Settings {
        samples: samples.map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
        seed,
        budget: call.budget(NORMAL_BUDGET),
        time_budget: call.budget(NORMAL_TIME_BUDGET),
        deadline: limit.map(|limit| started + limit),
    };
    let result = size_of(&mut NifView::new(env), Word::of(term), &settings);
    call.charge_since(started);
    match result {
        Ok(size) => Ok(encode(env, &size)),
        Err(Interrupt::OverBudget) => Err(Exit::Dirty),
        Err(Interrupt::Deadline) => Ok(timeout().encode(env)),
    }
}

fn encode<'a>(env: Env<'a>, size: &Size) -> Term<'a> {
    (
        size.words.round() as u64,
        size.off_heap_bytes.round() as u64,
        size.exact,
        size.visited,
        size.terms.round() as u64,
    )
        .encode(env)
}

/// Checks the layouts of funs, sub-binaries and flat maps on probes that Elixir made
/// (see `raw::confirm_layout`): `funs` is a list of `{fun, arity, env, creator}`,
/// `sub_binaries` of `{sub_binary, parent, bytes, bit_size, bit_offset}` and `maps` of
/// `{map, keys, values}`. Returns whether they hold; from then on, those are read in
/// place. A plain NIF: at most MAX_PROBES probes of each kind, O(1) each.
#[rustler::nif]
fn memory_confirm_layout<'a>(
    funs: Term<'a>,
    sub_binaries: Term<'a>,
    maps: Term<'a>,
) -> NifResult<bool> {
    let funs: Vec<(Term, u8, Vec<Term>, Term)> =
        probes(funs, 0, "a short list of {fun, arity, env, creator}")?;
    let sub_binaries: Vec<(Term, Term, usize, u8, u8)> = probes(
        sub_binaries,
        1,
        "a short list of {sub_binary, parent, bytes, bits, offset}",
    )?;
    let maps: Vec<(Term, Vec<Term>, Vec<Term>)> =
        probes(maps, 2, "a short list of {map, keys, values}")?;
    let funs: Vec<FunProbe> = funs
        .into_iter()
        .map(|(fun, arity, captured, creator)| FunProbe {
            fun,
            arity,
            captured,
            creator,
        })
        .collect();
    let sub_binaries: Vec<SubBinaryProbe> = sub_binaries
        .into_iter()
        .map(
            |(sub_binary, parent, bytes, bit_size, bit_offset)| SubBinaryProbe {
                sub_binary,
                parent,
                bytes,
                bit_size,
                bit_offset,
            },
        )
        .collect();
    let maps: Vec<FlatMapProbe> = maps
        .into_iter()
        .map(|(map, keys, values)| FlatMapProbe { map, keys, values })
        .collect();
    Ok(raw::confirm_layout(&funs, &sub_binaries, &maps))
}

/// Decodes a proper list of at most MAX_PROBES probes (cheap to decode whatever its
/// elements are: each is a small tuple, or fails at once).
fn probes<'a, T: rustler::Decoder<'a>>(
    list: Term<'a>,
    position: usize,
    expected: &'static str,
) -> Result<Vec<T>, Error> {
    list.list_length()
        .ok()
        .filter(|&length| length <= MAX_PROBES)
        .and_then(|_| list.decode().ok())
        .ok_or(Error::BadArgument { position, expected })
}

/// Real terms, as `size_walk` sees them: term words, read in place.
struct NifView<'a> {
    env: Env<'a>,
    /// `[]`, an immediate: any `[]` is this very word.
    nil: Word<'a>,
    /// The tuple or fun whose elements were read last, and those elements: the walk
    /// asks for them one at a time.
    last: (Word<'a>, &'a [Word<'a>]),
}

impl<'a> NifView<'a> {
    fn new(env: Env<'a>) -> Self {
        let nil = Word::of(Term::list_new_empty(env));
        NifView {
            env,
            nil,
            last: (nil, &[]),
        }
    }

    fn thing(&self, thing: Thing) -> Node<Word<'a>> {
        let words = thing.words as u64;
        match thing.kind {
            ThingKind::HeapBinary => leaf(words, 0, thing.size as u64),
            ThingKind::RefcBinary => leaf(words, thing.size as u64, thing.size as u64),
            // A hash reads every digit of a bignum.
            ThingKind::Bignum => leaf(words, 0, 8 * (words - 1)),
            ThingKind::Float | ThingKind::Reference | ThingKind::External => leaf(words, 0, 8),
            ThingKind::Unknown => Node::Opaque { words },
        }
    }

    fn sub_binary(&self, sub: raw::SubBinary<'a>) -> Node<Word<'a>> {
        let parent = match sub.parent.shape() {
            Shape::Thing(Thing {
                kind: ThingKind::RefcBinary,
                ..
            }) => BinaryHome::OffHeap,
            Shape::Thing(Thing {
                kind: ThingKind::HeapBinary,
                ..
            }) => BinaryHome::Heap,
            _ => return unread_sub_binary(),
        };
        leaf(
            sub_binary_words(sub.bytes, sub.bit_size, sub.bit_offset, parent),
            sub_binary_off_heap_bytes(sub.bytes, sub.bit_size, parent),
            sub.bytes as u64,
        )
    }
}

/// A sub-binary whose layout is not confirmed: counted as one at a bit offset of a
/// refcounted binary, its most common kind past 64 bytes, and not exact.
fn unread_sub_binary<T>() -> Node<T> {
    Node::Opaque {
        words: SUB_BINARY_WORDS + REFC_BINARY_WORDS,
    }
}

impl<'a> TermView for NifView<'a> {
    type Term = Word<'a>;
    type Entries = MapEntries<'a>;

    // Inlined into the walk: returning the node through memory stalls on store
    // forwarding, a third of the time of a visit.
    #[inline(always)]
    fn node(&mut self, word: Word<'a>) -> Node<Word<'a>> {
        match word.shape() {
            // Small integers, atoms, local pids and ports, and [] take no heap words.
            Shape::Immediate => leaf(0, 0, 8),
            Shape::Cell => Node::List,
            Shape::Tuple(elements) => {
                self.last = (word, elements);
                Node::Tuple(elements.len())
            }
            Shape::FlatMap { keys, .. } => Node::Map { size: keys.len() },
            Shape::Map => Node::Map {
                size: word.term(self.env).map_size().unwrap_or(0),
            },
            Shape::Fun(Some(fun)) => {
                self.last = (word, fun.captured);
                // A fun made on another node keeps its creator's pid, an object too.
                let extra_words = match fun.creator.shape() {
                    Shape::Thing(creator) => creator.words as u64,
                    _ => 0,
                };
                Node::Fun {
                    captured: fun.captured.len(),
                    env: word,
                    extra_words,
                }
            }
            Shape::Fun(None) => Node::Opaque { words: FUN_WORDS },
            Shape::SubBinary(Some(sub)) => self.sub_binary(sub),
            Shape::SubBinary(None) => unread_sub_binary(),
            Shape::Thing(thing) => self.thing(thing),
        }
    }

    fn element(&mut self, container: Word<'a>, index: usize) -> Word<'a> {
        if self.last.0 != container {
            let elements = match container.shape() {
                Shape::Tuple(elements) => elements,
                Shape::Fun(Some(fun)) => fun.captured,
                _ => &[],
            };
            self.last = (container, elements);
        }
        self.last.1[index]
    }

    #[inline(always)]
    fn list_cell(&mut self, list: Word<'a>) -> Option<(Word<'a>, Word<'a>)> {
        list.cell()
    }

    #[inline]
    fn is_empty_list(&mut self, word: Word<'a>) -> bool {
        word == self.nil
    }

    fn entries(&mut self, map: Word<'a>) -> MapEntries<'a> {
        match map.shape() {
            Shape::FlatMap { keys, values } => MapEntries::Flat(keys.iter().zip(values)),
            _ => MapEntries::Hashed(MapIterator::new(map.term(self.env))),
        }
    }

    #[inline]
    fn is_immediate(&mut self, word: Word<'a>) -> bool {
        word.is_immediate()
    }

    #[inline]
    fn prefetch(&mut self, word: Word<'a>) {
        word.prefetch();
    }

    fn key_hash(&mut self, key: Word<'a>, round: u32) -> u32 {
        // OTP 25 builds its map tries on 32-bit internal hashes.
        key.term(self.env)
            .hash_internal(u64::from(map_hash_salt(round))) as u32
    }
}

fn leaf<T>(words: u64, off_heap_bytes: u64, payload_bytes: u64) -> Node<T> {
    Node::Leaf {
        words,
        off_heap_bytes,
        payload_bytes,
    }
}

/// Entries of a map in its own order (key order for flat maps, hash order for
/// hashmaps): read in place from a flat map, through rustler from a hashmap.
pub enum MapEntries<'a> {
    Flat(std::iter::Zip<std::slice::Iter<'a, Word<'a>>, std::slice::Iter<'a, Word<'a>>>),
    Hashed(Option<MapIterator<'a>>),
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = (Word<'a>, Word<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            MapEntries::Flat(entries) => entries.next().map(|(&key, &value)| (key, value)),
            MapEntries::Hashed(entries) => {
                let (key, value) = entries.as_mut()?.next()?;
                Some((Word::of(key), Word::of(value)))
            }
        }
    }
}
