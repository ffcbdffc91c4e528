//! NIFs behind `GuildKit.MemoryEstimator`.
//!
//! The walk itself (stack, sampling, budget) is `guild_kit_core::size_walk`; this module
//! shows it real terms through [`NifView`], which reads each term with the NIF API and
//! sizes it with `guild_kit_core::size_model`.
//!
//! Each size starts on the caller's normal scheduler and moves itself to a dirty CPU
//! scheduler (`crate::schedule`) past [`NORMAL_BUDGET`] or [`NORMAL_TIME_BUDGET`],
//! where it starts over without limit. Both return
//! `{words, off_heap_bytes, exact?, visited, terms}`.
//!
//! What the NIF API shows, and how:
//! - immediates (small integers, atoms, local pids and ports, `[]`): by the primary tag
//!   of the term word ([`is_immediate`]), without a call into the VM;
//! - binaries: `enif_inspect_binary` gives the length, and where the bytes are tells
//!   heap binaries from the rest ([`is_heap_binary`]);
//! - bignums past 64 bits, bitstrings that are not whole bytes, funs and references:
//!   `enif_term_to_binary` (see `guild_kit_core::etf`), because NIF 2.16 has no accessor
//!   for their length, captured variables or node;
//! - maps: their size, entries and `enif_hash(ERL_NIF_INTERNAL_HASH, key, salt)` with
//!   OTP 25's salt for each eight levels of the trie
//!   (`guild_kit_core::size_model::map_hash_salt`): the hash OTP's hashmap trie is built
//!   on, so walked hashmaps get their exact node count.

use std::mem::MaybeUninit;
use std::time::Instant;

use guild_kit_core::etf::{self, FunEnv};
use guild_kit_core::size_model::{
    bignum_words, binary_words, bitstring_off_heap_bytes, bitstring_words, int64_words,
    map_hash_salt, off_heap_bytes, uint64_words, BinaryHome, FLOAT_WORDS, LOCAL_REF_WORDS,
    REMOTE_PID_WORDS, REMOTE_REF_WORDS,
};
use guild_kit_core::size_walk::{size_of, Interrupt, Node, Settings, Size, TermView, CLOCK_EVERY};
use rustler::sys::{
    self, ErlNifBinary, ErlNifEnv, ErlNifHash, ErlNifMapIterator, ErlNifMapIteratorEntry,
    ErlNifTerm,
};
use rustler::{Encoder, Env, Term, TermType};

use crate::raw;
use crate::schedule::{nifs, Call, Exit, Outcome};
use crate::term_codec::make_bignum;

/// Units of work (about one term each, see `size_walk`) a normal-scheduler call may
/// spend before handing over to the dirty twin: 5–25 ns a unit on the project
/// machine, so 0.1–0.5 ms. NORMAL_TIME_BUDGET below is the firmer bound.
const NORMAL_BUDGET: u64 = 20_000;

/// Wall-clock limit of a normal-scheduler call, a safety net under NORMAL_BUDGET for
/// terms that take longer to read than their units say (a machine under load, binaries
/// at a bit offset, which reading copies).
const NORMAL_TIME_BUDGET: std::time::Duration = std::time::Duration::from_micros(400);

/// Units charged for reading a term through its external format (an allocation, an
/// encoding and a release: about 0.4 µs for a reference).
const EXTERNAL_COST: u64 = 20;

/// Binaries from this size up make the walk look at the clock: reading a binary at a
/// bit offset copies it, and only the clock tells how long that took.
const CLOCK_CHECK_BYTES: usize = 64 * 1024;

/// Longest bignum magnitude (bytes) a normal-scheduler call encodes to read its length.
const NORMAL_BIGNUM_BYTES: usize = 4096;

nifs! {
    fn memory_estimate(term: Term, samples: u64, seed: u64) => estimate;
    fn memory_exact(term: Term) => exact;
}

fn estimate<'a>(call: Call<'a>, term: Term<'a>, samples: u64, seed: u64) -> Outcome<'a> {
    run(call, term, Some(samples), seed)
}

fn exact<'a>(call: Call<'a>, term: Term<'a>) -> Outcome<'a> {
    run(call, term, None, 0)
}

fn run<'a>(call: Call<'a>, term: Term<'a>, samples: Option<u64>, seed: u64) -> Outcome<'a> {
    let env = call.env();
    let bounded = !call.is_dirty();
    let settings = Settings {
        samples: samples.map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
        seed,
        budget: bounded.then_some(NORMAL_BUDGET),
        time_budget: bounded.then_some(NORMAL_TIME_BUDGET),
    };
    let started = Instant::now();
    let mut view = NifView::new(env, bounded);
    let result = size_of(&mut view, term.as_c_arg(), &settings);
    drop(view);
    call.charge_since(started);
    match result {
        Ok(size) => Ok(encode(env, &size)),
        Err(Interrupt::OverBudget) => Err(Exit::Dirty),
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

/// Real terms, as `size_walk` sees them: raw term words (8 bytes, where a rustler
/// `Term` carries its env too), read with the NIF API in the calling env.
///
/// Captured variables of funs are rebuilt from their external format into `scratch`, a
/// process-independent environment, so that even a fun capturing a large state never
/// grows the caller's heap. Only read-only inspection functions are applied to those
/// terms, with the calling env, and `scratch` is freed only when the view is dropped,
/// after the walk has finished.
struct NifView<'a> {
    env: Env<'a>,
    /// On a normal scheduler: refuse terms whose reading cost has no bound.
    bounded: bool,
    scratch: Option<Scratch>,
    /// Node name and creation of this node's references, in external format.
    local_origin: Option<Vec<u8>>,
    /// ±2^(8 · NORMAL_BIGNUM_BYTES), to bound bignums on normal schedulers.
    bignum_limits: Option<(ErlNifTerm, ErlNifTerm)>,
    /// The tuple whose elements were read last, and those elements: a large tuple is
    /// read element by element.
    last_tuple: (ErlNifTerm, *const ErlNifTerm, usize),
    /// `[]`, an immediate: any `[]` is this very word.
    nil: ErlNifTerm,
}

struct Scratch(*mut ErlNifEnv);

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated by enif_alloc_env in `NifView::scratch` and freed only here.
        unsafe { sys::enif_free_env(self.0) };
    }
}

impl<'a> NifView<'a> {
    fn new(env: Env<'a>, bounded: bool) -> Self {
        NifView {
            env,
            bounded,
            scratch: None,
            local_origin: None,
            bignum_limits: None,
            last_tuple: (ErlNifTerm::default(), std::ptr::null(), 0),
            // SAFETY: builds `[]` in the calling env.
            nil: unsafe { sys::enif_make_list_from_array(env.as_c_arg(), std::ptr::null(), 0) },
        }
    }

    fn raw_env(&self) -> *mut ErlNifEnv {
        self.env.as_c_arg()
    }

    fn scratch(&mut self) -> *mut ErlNifEnv {
        self.scratch
            // SAFETY: a fresh process-independent environment, freed by `Scratch::drop`.
            .get_or_insert_with(|| Scratch(unsafe { sys::enif_alloc_env() }))
            .0
    }

    fn integer(&mut self, raw: ErlNifTerm) -> Result<Node<ErlNifTerm>, Interrupt> {
        let env = self.raw_env();
        let mut small: i64 = 0;
        let mut unsigned: u64 = 0;
        // SAFETY: env and term come from the running NIF call.
        if unsafe { sys::enif_get_int64(env, raw, &mut small) } != 0 {
            return Ok(leaf(int64_words(small), 0, 8));
        }
        if unsafe { sys::enif_get_uint64(env, raw, &mut unsigned) } != 0 {
            return Ok(leaf(uint64_words(unsigned), 0, 8));
        }
        if self.bounded && !self.bignum_is_small(raw) {
            return Err(Interrupt::OverBudget);
        }
        // Only the external format tells a bignum's length.
        let bytes = read_external(env, raw, etf::bignum_bytes).unwrap_or(9);
        Ok(costly_leaf(
            bignum_words(bytes),
            0,
            bytes as u64,
            EXTERNAL_COST + bytes as u64 / 256,
        ))
    }

    /// True when `raw` is below 2^(8 · NORMAL_BIGNUM_BYTES) in magnitude. Comparing
    /// bignums of different lengths is O(1).
    fn bignum_is_small(&mut self, raw: ErlNifTerm) -> bool {
        let env = self.env;
        let limits = *self.bignum_limits.get_or_insert_with(|| {
            // 256^NORMAL_BIGNUM_BYTES, big-endian.
            let mut magnitude = vec![0; NORMAL_BIGNUM_BYTES + 1];
            magnitude[0] = 1;
            let limit = |negative| {
                make_bignum(env, negative, &magnitude)
                    .expect("a well-formed bignum")
                    .as_c_arg()
            };
            (limit(true), limit(false))
        });
        // SAFETY: all three terms belong to the calling env.
        unsafe { sys::enif_compare(limits.0, raw) < 0 && sys::enif_compare(raw, limits.1) < 0 }
    }

    fn binary(&mut self, raw: ErlNifTerm) -> Result<Node<ErlNifTerm>, Interrupt> {
        let env = self.raw_env();
        let mut binary = MaybeUninit::<ErlNifBinary>::uninit();
        // SAFETY: on success the struct is filled in; the bytes stay valid for the call.
        if unsafe { sys::enif_inspect_binary(env, raw, binary.as_mut_ptr()) } != 0 {
            let binary = unsafe { binary.assume_init() };
            let home = if is_heap_binary(raw, binary.data) {
                BinaryHome::Heap
            } else {
                BinaryHome::OffHeap
            };
            let len = binary.size;
            let cost = if len >= CLOCK_CHECK_BYTES {
                CLOCK_EVERY
            } else {
                0
            };
            return Ok(costly_leaf(
                binary_words(len, home),
                off_heap_bytes(len, home),
                len as u64,
                cost,
            ));
        }
        // A bitstring that is not whole bytes: its external format has the bit length,
        // at the cost of a copy.
        if self.bounded {
            return Err(Interrupt::OverBudget);
        }
        let bits = read_external(env, raw, etf::bitstring_bits).unwrap_or(1);
        Ok(leaf(
            bitstring_words(bits),
            bitstring_off_heap_bytes(bits),
            bits / 8,
        ))
    }

    fn reference(&mut self, raw: ErlNifTerm) -> Node<ErlNifTerm> {
        let env = self.raw_env();
        let local = self.local_origin.get_or_insert_with(|| {
            // SAFETY: a new reference of this node, in the calling env.
            let own = unsafe { sys::enif_make_ref(env) };
            read_external(env, own, |etf| {
                etf::reference_origin(etf).map(<[u8]>::to_vec)
            })
            .unwrap_or_default()
        });
        let is_local = read_external(env, raw, |etf| {
            etf::reference_origin(etf).map(|origin| origin == local.as_slice())
        })
        .unwrap_or(true);
        let words = if is_local {
            LOCAL_REF_WORDS
        } else {
            REMOTE_REF_WORDS
        };
        costly_leaf(words, 0, 0, EXTERNAL_COST)
    }

    fn fun(&mut self, raw: ErlNifTerm) -> Result<Node<ErlNifTerm>, Interrupt> {
        // Reading the captured variables costs as much as they are big.
        if self.bounded {
            return Err(Interrupt::OverBudget);
        }
        let no_env = Node::Fun {
            captured: 0,
            env: raw,
        };
        let Some(etf) = external(self.raw_env(), raw) else {
            return Ok(no_env);
        };
        let bytes = etf.as_slice();
        let (captured, vars) = match etf::fun_env(bytes) {
            Some(FunEnv::Local { captured, vars }) if captured > 0 => (captured, vars),
            _ => return Ok(no_env),
        };
        let tuple_etf = etf::env_as_tuple(captured, &bytes[vars..]);
        drop(etf);
        let scratch = self.scratch();
        let mut tuple = ErlNifTerm::default();
        // SAFETY: a well-formed external term; the tuple lives in `scratch`.
        let read = unsafe {
            sys::enif_binary_to_term(scratch, tuple_etf.as_ptr(), tuple_etf.len(), &mut tuple, 0)
        };
        if read == 0 {
            return Ok(no_env);
        }
        Ok(Node::Fun {
            captured,
            env: tuple,
        })
    }

    /// Reads the elements of `tuple` and keeps them for [`TermView::element`].
    fn read_tuple(&mut self, tuple: ErlNifTerm) -> usize {
        // SAFETY: a tuple of the calling env or of `scratch`; its elements live as long
        // as it does, for the call or as long as `scratch`, both longer than `self`.
        let elements = raw::tuple_elements(unsafe { Term::new(self.env, tuple) })
            .map_or(&[][..], |elements| elements.as_raw());
        self.last_tuple = (tuple, elements.as_ptr(), elements.len());
        elements.len()
    }
}

impl<'a> TermView for NifView<'a> {
    type Term = ErlNifTerm;
    type Entries = MapEntries<'a>;

    // Inlined into the walk: returning the node through memory stalls on store
    // forwarding, a third of the time of a visit.
    #[inline(always)]
    fn node(&mut self, raw: ErlNifTerm) -> Result<Node<ErlNifTerm>, Interrupt> {
        if is_immediate(raw) {
            // Small integers, atoms, local pids and ports, and [] take no heap words:
            // answer without a call into the VM, as most terms in a state are these.
            return Ok(leaf(0, 0, 8));
        }
        let env = self.raw_env();
        // SAFETY: a term of the calling env (or `scratch`); see the type's docs.
        let term = unsafe { Term::new(self.env, raw) };
        Ok(match term.get_type() {
            TermType::Integer => return self.integer(raw),
            TermType::Float => leaf(FLOAT_WORDS, 0, 8),
            TermType::Binary => return self.binary(raw),
            TermType::Tuple => Node::Tuple(self.read_tuple(raw)),
            // `[]` is an immediate, answered above: this list has a cell.
            TermType::List => Node::List,
            TermType::Map => {
                let mut size: usize = 0;
                // SAFETY: env and term come from the running NIF call.
                unsafe { sys::enif_get_map_size(env, raw, &mut size) };
                Node::Map { size }
            }
            // Local pids and ports are immediates, answered above: these are remote.
            TermType::Pid | TermType::Port => leaf(REMOTE_PID_WORDS, 0, 0),
            TermType::Ref => self.reference(raw),
            TermType::Fun => return self.fun(raw),
            // Atoms are immediates too. An unknown type would be one added by a later
            // OTP, and counts as an immediate.
            TermType::Atom | TermType::Unknown => leaf(0, 0, 0),
        })
    }

    fn element(&mut self, container: ErlNifTerm, index: usize) -> ErlNifTerm {
        if self.last_tuple.0 != container || self.last_tuple.1.is_null() {
            self.read_tuple(container);
        }
        let (_, elements, len) = self.last_tuple;
        assert!(index < len, "element {index} of a tuple of {len}");
        // SAFETY: `elements` points at the `len` elements of `container`, which live for
        // the call (or as long as `scratch`).
        unsafe { *elements.add(index) }
    }

    fn list_cell(&mut self, list: ErlNifTerm) -> Option<(ErlNifTerm, ErlNifTerm)> {
        let mut head = ErlNifTerm::default();
        let mut tail = ErlNifTerm::default();
        // SAFETY: env and term come from the running NIF call.
        let ok = unsafe { sys::enif_get_list_cell(self.raw_env(), list, &mut head, &mut tail) };
        (ok != 0).then_some((head, tail))
    }

    fn is_empty_list(&mut self, term: ErlNifTerm) -> bool {
        term == self.nil
    }

    fn entries(&mut self, map: ErlNifTerm) -> MapEntries<'a> {
        MapEntries::new(self.env, map)
    }

    #[inline]
    fn is_immediate(&mut self, term: ErlNifTerm) -> bool {
        is_immediate(term)
    }

    fn prefetch(&mut self, term: ErlNifTerm) {
        let word = term_word(term);
        if word & PRIMARY_TAG_MASK != IMMEDIATE_TAG {
            // A list cell or boxed object: its address is the word without the tag.
            // A prefetch never faults, and reads nothing the program sees.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE is part of the x86_64 baseline; prefetch has no other
            // requirement.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (word & !PRIMARY_TAG_MASK) as *const i8,
                )
            };
        }
    }

    fn key_hash(&mut self, key: ErlNifTerm, round: u32) -> u32 {
        let salt = u64::from(map_hash_salt(round));
        // SAFETY: a valid term of the calling env (or `scratch`). ERL_NIF_INTERNAL_HASH
        // is make_internal_hash(term, salt), on which OTP 25 builds its map tries.
        unsafe { sys::enif_hash(ErlNifHash::ERL_NIF_INTERNAL_HASH, key, salt) as u32 }
    }
}

/// A leaf that costs nothing beyond an ordinary visit to read.
fn leaf<T>(words: u64, off_heap_bytes: u64, payload_bytes: u64) -> Node<T> {
    costly_leaf(words, off_heap_bytes, payload_bytes, 0)
}

fn costly_leaf<T>(words: u64, off_heap_bytes: u64, payload_bytes: u64, cost: u64) -> Node<T> {
    Node::Leaf {
        words,
        off_heap_bytes,
        payload_bytes,
        cost,
    }
}

/// Primary tag of a term word: the two low bits. OTP has kept this scheme since R7.
const PRIMARY_TAG_MASK: usize = 0b11;
/// A boxed term: the address of an object that starts with a header word.
const BOXED_TAG: usize = 0b10;
/// An immediate: the whole term is in the word.
const IMMEDIATE_TAG: usize = 0b11;

fn term_word(raw: ErlNifTerm) -> usize {
    // SAFETY: ErlNifTerm is a #[repr(transparent)] wrapper of the term word (usize).
    unsafe { std::mem::transmute::<ErlNifTerm, usize>(raw) }
}

/// True for terms held entirely in their word (primary tag `0b11`): small integers,
/// atoms, local pids and ports, `[]`. They take no heap words.
fn is_immediate(raw: ErlNifTerm) -> bool {
    term_word(raw) & PRIMARY_TAG_MASK == IMMEDIATE_TAG
}

/// True when the bytes of the binary `raw` are those of a heap binary.
///
/// A boxed term is the address of its object with primary tag `0b10`, and a heap
/// binary (`ErlHeapBin`) keeps its bytes right after its two header words (thing word
/// and size). Any other binary reaches its bytes through a pointer to elsewhere: a
/// refcounted `ProcBin` to its off-heap buffer, a sub-binary to its parent's bytes (at
/// an offset), and a binary at a bit offset to a temporary aligned copy. Only addresses
/// are compared; no VM memory is read.
fn is_heap_binary(raw: ErlNifTerm, data: *const u8) -> bool {
    const HEAP_BINARY_HEADER_BYTES: usize = 2 * std::mem::size_of::<usize>();
    let raw = term_word(raw);
    raw & PRIMARY_TAG_MASK == BOXED_TAG
        && (raw & !PRIMARY_TAG_MASK) + HEAP_BINARY_HEADER_BYTES == data as usize
}

/// The external format of a term, released when dropped.
struct External(ErlNifBinary);

impl External {
    fn as_slice(&self) -> &[u8] {
        if self.0.size == 0 {
            return &[];
        }
        // SAFETY: an allocated binary of `size` bytes, alive until drop.
        unsafe { std::slice::from_raw_parts(self.0.data, self.0.size) }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        // SAFETY: allocated by enif_term_to_binary and released once.
        unsafe { sys::enif_release_binary(&mut self.0) };
    }
}

/// Reads one fact from the external format of a term.
fn read_external<T>(
    env: *mut ErlNifEnv,
    raw: ErlNifTerm,
    read: impl FnOnce(&[u8]) -> Option<T>,
) -> Option<T> {
    external(env, raw).and_then(|etf| read(etf.as_slice()))
}

fn external(env: *mut ErlNifEnv, raw: ErlNifTerm) -> Option<External> {
    let mut binary = MaybeUninit::<ErlNifBinary>::uninit();
    // SAFETY: on success the binary is allocated and must be released (External::drop).
    let ok = unsafe { sys::enif_term_to_binary(env, raw, binary.as_mut_ptr()) };
    (ok != 0).then(|| External(unsafe { binary.assume_init() }))
}

/// Entries of a map in its own order (key order for flat maps, hash order for
/// hashmaps), without the double-ended bookkeeping of `rustler::MapIterator`.
pub struct MapEntries<'a> {
    env: Env<'a>,
    iter: Option<ErlNifMapIterator>,
}

impl<'a> MapEntries<'a> {
    fn new(env: Env<'a>, map: ErlNifTerm) -> Self {
        let mut iter = MaybeUninit::<ErlNifMapIterator>::uninit();
        // SAFETY: on success the iterator is initialised and destroyed in Drop.
        let ok = unsafe {
            sys::enif_map_iterator_create(
                env.as_c_arg(),
                map,
                iter.as_mut_ptr(),
                ErlNifMapIteratorEntry::ERL_NIF_MAP_ITERATOR_HEAD,
            )
        };
        let iter = (ok != 0).then(|| unsafe { iter.assume_init() });
        MapEntries { env, iter }
    }
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = (ErlNifTerm, ErlNifTerm);

    fn next(&mut self) -> Option<Self::Item> {
        let iter = self.iter.as_mut()?;
        let env = self.env.as_c_arg();
        let mut key = ErlNifTerm::default();
        let mut value = ErlNifTerm::default();
        // SAFETY: a live iterator over a map of the calling env.
        unsafe {
            if sys::enif_map_iterator_get_pair(env, iter, &mut key, &mut value) == 0 {
                return None;
            }
            sys::enif_map_iterator_next(env, iter);
            Some((key, value))
        }
    }
}

impl Drop for MapEntries<'_> {
    fn drop(&mut self) {
        if let Some(iter) = self.iter.as_mut() {
            // SAFETY: created in `new`, destroyed once.
            unsafe { sys::enif_map_iterator_destroy(self.env.as_c_arg(), iter) };
        }
    }
}
