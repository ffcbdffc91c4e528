//! The NIF API calls that rustler has no safe wrapper for, each behind a safe function.
//!
//! This is the only module of the NIF crate that calls into the VM directly; every other
//! module uses rustler's safe API and these functions. Each block of unchecked code here
//! says why it is sound. What they rely on is the NIF API's contract: a term of an env stays
//! valid for as long as that env (the call, for a process env), and `enif_*` functions
//! given valid terms of that env never fail in ways that break memory safety.

use std::ffi::{c_int, c_uint, CStr};

use rustler::sys::{self, ErlNifEnv, ErlNifTerm};
use rustler::{Env, LocalPid, OwnedBinary, OwnedEnv, Term};

use crate::schedule::{Call, DirtyJob, MAX_ARITY};

/// A NIF entry point, as the VM calls it.
pub type Entry = unsafe extern "C" fn(*mut ErlNifEnv, c_int, *const ErlNifTerm) -> ErlNifTerm;

/// The arguments of a call, kept to pass them on to `enif_schedule_nif`.
#[derive(Clone, Copy)]
pub struct Args {
    terms: [ErlNifTerm; MAX_ARITY],
    len: usize,
}

impl Args {
    /// Copies up to [`MAX_ARITY`] argument terms (a NIF has a fixed arity, checked by
    /// the `nifs!` macro's tests; more would be a bug and are cut off).
    pub fn new(args: &[Term]) -> Self {
        let mut terms = [ErlNifTerm::default(); MAX_ARITY];
        let len = args.len().min(MAX_ARITY);
        for (slot, arg) in terms.iter_mut().zip(args) {
            *slot = arg.as_c_arg();
        }
        Args { terms, len }
    }
}

/// Reschedules the running NIF call as `entry` on a dirty CPU scheduler with `args`;
/// the NIF must return the term this gives.
pub fn schedule_dirty<'a>(
    env: Env<'a>,
    name: &'static CStr,
    entry: Entry,
    args: &Args,
) -> Term<'a> {
    // SAFETY: `env` is the env of the running NIF call and the arguments are terms of
    // it (copied from the call's own arguments); `name` is NUL-terminated and static;
    // the returned term is handed back to the VM as the NIF's result, as required.
    unsafe {
        let scheduled = sys::enif_schedule_nif(
            env.as_c_arg(),
            name.as_ptr(),
            sys::ERL_NIF_DIRTY_JOB_CPU_BOUND as c_int,
            entry,
            args.len as c_int,
            args.terms.as_ptr(),
        );
        Term::new(env, scheduled)
    }
}

/// The entry point of `J` as the VM calls it: on the caller's normal scheduler
/// (`DIRTY == false`, registered by `nifs!`) or, rescheduled there, on a dirty one.
/// What rustler generates for a `#[rustler::nif]`, minus its per-call `Vec` of the
/// arguments: they are wrapped on the stack, and `J` decodes them itself.
///
/// # Safety
///
/// Called by the VM only, with a process env and `argc` argument terms of it.
pub unsafe extern "C" fn entry<J: DirtyJob, const DIRTY: bool>(
    env: *mut ErlNifEnv,
    argc: c_int,
    argv: *const ErlNifTerm,
) -> ErlNifTerm {
    let lifetime = ();
    let arity = (argc.max(0) as usize).min(MAX_ARITY);
    // SAFETY: the VM passes the calling process's env and `argc` terms of that env,
    // valid for this call (a NIF's arity is fixed, at most MAX_ARITY for `nifs!`); the
    // padding is an atom, valid in any env; the result is turned into the VM's return
    // value (raising for errors) in that env, as rustler's own generated entry points do.
    unsafe {
        let env = Env::new(&lifetime, env);
        let raw = std::slice::from_raw_parts(argv, arity);
        let padding = rustler::types::atom::nil().as_c_arg();
        let terms: [Term; MAX_ARITY] =
            std::array::from_fn(|i| Term::new(env, raw.get(i).copied().unwrap_or(padding)));
        let args = &terms[..arity];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let call = if DIRTY {
                Call::dirty(env)
            } else {
                Call::normal::<J>(env, args)
            };
            J::run(call, args)
        }));
        rustler::codegen_runtime::handle_nif_result(result, env).apply(env)
    }
}

/// The elements of a tuple, without copying them, or `None` when `term` is not one.
///
/// Time: O(1).
pub fn tuple_elements(term: Term) -> Option<TupleElements> {
    let mut arity: c_int = 0;
    let mut elements: *const ErlNifTerm = std::ptr::null();
    // SAFETY: on success `elements` points at `arity` terms owned by the tuple, which
    // lives as long as the term's env (`{}` may give a dangling pointer: not read).
    let raw: &[ErlNifTerm] = unsafe {
        if sys::enif_get_tuple(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            &mut arity,
            &mut elements,
        ) == 0
        {
            return None;
        }
        if arity == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(elements, arity as usize)
        }
    };
    Some(TupleElements {
        env: term.get_env(),
        raw,
    })
}

/// The elements of a tuple, read in place.
#[derive(Clone, Copy)]
pub struct TupleElements<'a> {
    env: Env<'a>,
    raw: &'a [ErlNifTerm],
}

impl<'a> TupleElements<'a> {
    /// The arity.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// The elements in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Term<'a>> + ExactSizeIterator + 'a {
        let this = *self;
        self.raw.iter().map(move |&raw| this.term(raw))
    }

    /// Element `i`, if the tuple has one.
    ///
    /// Time: O(1).
    pub fn get(&self, i: usize) -> Option<Term<'a>> {
        self.raw.get(i).map(|&raw| self.term(raw))
    }

    fn term(&self, raw: ErlNifTerm) -> Term<'a> {
        // SAFETY: `raw` is one of the tuple's elements, a term of `env` alive as long as
        // the tuple.
        unsafe { Term::new(self.env, raw) }
    }
}

/// The text of an atom whose name is Latin-1 (every atom NIF API 2.16 can read),
/// written into `buffer`; `None` for other atoms and for terms that are not atoms.
pub fn atom_latin1<'b>(term: Term, buffer: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    let env = term.get_env().as_c_arg();
    let raw = term.as_c_arg();
    // SAFETY: env and term come from the running NIF call; `buffer` holds 256 bytes,
    // one more than the longest atom name.
    let written = unsafe {
        sys::enif_get_atom(
            env,
            raw,
            buffer.as_mut_ptr() as *mut _,
            buffer.len() as c_uint,
            sys::ErlNifCharEncoding::ERL_NIF_LATIN1,
        )
    };
    // The count includes the NUL terminator; 0 means not an atom, or not Latin-1.
    (written > 0).then(|| &buffer[..written as usize - 1])
}

/// Terms of one env collected to build a list or a tuple, without rustler's per-call
/// copy into a second vector.
pub struct TermBuffer<'a> {
    env: Env<'a>,
    raw: Vec<ErlNifTerm>,
}

impl<'a> TermBuffer<'a> {
    /// An empty buffer for terms of `env`, with room for `capacity`.
    pub fn with_capacity(env: Env<'a>, capacity: usize) -> Self {
        TermBuffer {
            env,
            raw: Vec::with_capacity(capacity),
        }
    }

    /// Appends `term`, which must belong to the buffer's env (terms of other envs are
    /// copied in first, as `Term::in_env` does).
    #[inline]
    pub fn push(&mut self, term: Term<'a>) {
        let term = if term.get_env() == self.env {
            term
        } else {
            term.in_env(self.env)
        };
        self.raw.push(term.as_c_arg());
    }

    /// An empty buffer for terms of `env` that reuses `storage`'s allocation (from
    /// [`TermBuffer::into_storage`], possibly of another call).
    pub fn reuse(env: Env<'a>, mut storage: Vec<ErlNifTerm>) -> Self {
        storage.clear();
        TermBuffer { env, raw: storage }
    }

    /// The allocation, emptied, to be reused by a later [`TermBuffer::reuse`]. The
    /// words left in it are no terms of any env, only capacity.
    pub fn into_storage(mut self) -> Vec<ErlNifTerm> {
        self.raw.clear();
        self.raw
    }

    /// Terms pushed so far.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Drops the terms from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.raw.truncate(len);
    }

    /// A proper list of the terms from `start` on.
    ///
    /// Time: O(len - start).
    pub fn list(&self, start: usize) -> Term<'a> {
        self.make_from(start, false)
    }

    /// A tuple of the terms from `start` on.
    ///
    /// Time: O(len - start).
    pub fn tuple(&self, start: usize) -> Term<'a> {
        self.make_from(start, true)
    }

    // A flag rather than the `enif_*` function as an argument: rustler declares those
    // `extern "C"` on some targets and as Rust-ABI wrappers on others, so no one
    // function pointer type fits them everywhere.
    #[inline]
    fn make_from(&self, start: usize, tuple: bool) -> Term<'a> {
        let items = &self.raw[start..];
        let (env, ptr, len) = (self.env.as_c_arg(), items.as_ptr(), items.len() as c_uint);
        // SAFETY: the items are terms of the buffer's env.
        unsafe {
            let term = if tuple {
                sys::enif_make_tuple_from_array(env, ptr, len)
            } else {
                sys::enif_make_list_from_array(env, ptr, len)
            };
            Term::new(self.env, term)
        }
    }

    /// A map of the pairs `keys[i] => values[i]`, where the keys are the terms from
    /// `start` on of the first half and the values of the second half; `None` when two
    /// keys are equal.
    ///
    /// Time: O(n log n).
    pub fn map(&self, start: usize) -> Option<Term<'a>> {
        let items = &self.raw[start..];
        let (keys, values) = items.split_at(items.len() / 2);
        let mut map = ErlNifTerm::default();
        // SAFETY: keys and values are terms of the buffer's env, equally many.
        unsafe {
            let ok = sys::enif_make_map_from_arrays(
                self.env.as_c_arg(),
                keys.as_ptr(),
                values.as_ptr(),
                keys.len(),
                &mut map,
            );
            (ok != 0).then(|| Term::new(self.env, map))
        }
    }
}

// --- fan-out ---

/// A term kept in an environment of its own, which any number of threads may read at
/// once: the message of a fan-out, which every worker copies into its receivers'
/// mailboxes.
///
/// The env is written only while the value is built, when nothing else can see it;
/// afterwards every method only reads it.
pub struct SharedTerm {
    env: OwnedEnv,
    term: ErlNifTerm,
}

// SAFETY: a `SharedTerm` is written only by its constructors, before it can be shared.
// Its methods only read the term (`enif_send` and `enif_make_copy` copy it out,
// `enif_term_to_binary` encodes it), and the NIF API asks for synchronisation only when
// "you write to a shared state ... This includes terms in process independent
// environments that are shared between threads" (erl_nif, "Threads and concurrency").
// Reference-counted binaries in the term are counted atomically by the VM.
unsafe impl Sync for SharedTerm {}

impl SharedTerm {
    /// A copy of `term` in a new env.
    ///
    /// Time: O(size of the term).
    pub fn copy_of(term: Term) -> SharedTerm {
        let env = OwnedEnv::new();
        let term = env.run(|shared| term.in_env(shared).as_c_arg());
        SharedTerm { env, term }
    }

    /// The term encoded in `bytes` (the external term format, as
    /// `:erlang.term_to_binary/1` makes it, which may create atoms), with what `inspect`
    /// says of it, or `None` when `bytes` is not exactly one encoded term.
    ///
    /// Time: O(bytes + size of the term).
    pub fn decode<R>(bytes: &[u8], inspect: impl FnOnce(Term) -> R) -> Option<(SharedTerm, R)> {
        let env = OwnedEnv::new();
        let decoded = env.run(|shared| {
            let mut term = ErlNifTerm::default();
            // SAFETY: `shared` is a live process-independent env and `bytes` is
            // `bytes.len()` readable bytes; `term` is read only when the decoding
            // succeeded, when it is a term of `shared`.
            let decoded = unsafe {
                let used = sys::enif_binary_to_term(
                    shared.as_c_arg(),
                    bytes.as_ptr(),
                    bytes.len(),
                    &mut term,
                    0,
                );
                (used == bytes.len()).then(|| Term::new(shared, term))
            };
            decoded.map(|decoded| (term, inspect(decoded)))
        })?;
        Some((
            SharedTerm {
                env,
                term: decoded.0,
            },
            decoded.1,
        ))
    }

    /// Sends a copy of the term to `to` from the calling process, whose env is `caller`
    /// (as `send/2` does: the copy goes to the receiver's mailbox, nothing is built in
    /// `caller`). False when `to` is not alive, or when the caller is being killed while
    /// on a dirty scheduler.
    ///
    /// Time: O(size of the term).
    #[inline]
    pub fn send_copy(&self, caller: Env, to: &LocalPid) -> bool {
        // SAFETY: `caller` is the env of the running NIF call; with no message env,
        // enif_send copies `self.term`, a term of a live env that is only read.
        unsafe {
            sys::enif_send(
                caller.as_c_arg(),
                to.as_c_arg(),
                std::ptr::null_mut(),
                self.term,
            ) != 0
        }
    }

    /// A copy of the term in `env`.
    ///
    /// Time: O(size of the term).
    pub fn copy_into<'a>(&self, env: Env<'a>) -> Term<'a> {
        // SAFETY: enif_make_copy reads `self.term` (a term of a live env) and builds the
        // copy in `env`, the env of the running call.
        unsafe { Term::new(env, sys::enif_make_copy(env.as_c_arg(), self.term)) }
    }

    /// The term in the external term format, as `:erlang.term_to_binary/1` encodes it,
    /// or `None` when it is too big to encode (a system limit).
    ///
    /// Time: O(size of the term).
    pub fn encode<'a>(&self, env: Env<'a>) -> Option<Term<'a>> {
        let mut binary = std::mem::MaybeUninit::<sys::ErlNifBinary>::uninit();
        // SAFETY: `self.term` is a term of a live env, which encoding only reads; on
        // success the VM filled in `binary`, a new binary that `OwnedBinary` now owns.
        let owned = unsafe {
            if sys::enif_term_to_binary(self.env_ptr(), self.term, binary.as_mut_ptr()) == 0 {
                return None;
            }
            OwnedBinary::from_raw(binary.assume_init())
        };
        Some(owned.release(env).to_term(env))
    }

    fn env_ptr(&self) -> *mut ErlNifEnv {
        self.env.run(|shared| shared.as_c_arg())
    }
}

// --- memory estimator ---
//
// `GuildKit.MemoryEstimator` sizes terms by reading their objects where they lie, as
// `:erts_debug.flat_size/1` does: a header word says what a boxed object is and how
// many words it takes, and the few fields beyond that (a fun's captured variables, a
// sub-binary's bit offset and parent, a flat map's keys and values) are read only once
// their layout has been confirmed on probe terms (`confirm_layout`). Nothing is
// copied, encoded or allocated in the VM, whatever the term holds.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

/// A term of the env whose lifetime is `'a`, as its bare word.
///
/// The size walk keeps millions of these on its stack, where a `Term` would carry its
/// env as well. Only this module makes them: from terms of that env (`Word::of`), or
/// from the term slots of objects of that env (list cells, tuple elements, flat maps'
/// keys and values, captured variables, a sub-binary's parent). So every `Word<'a>` is a term of the one env whose
/// lifetime is `'a`: rustler gives every env its own invariant lifetime.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct Word<'a> {
    raw: ErlNifTerm,
    env: PhantomData<Env<'a>>,
}

/// The bits of a term word. `ErlNifTerm` keeps its word private, and its derived `Hash`
/// writes exactly that word, so this reads it without a transmute (and compiles to a
/// plain move).
#[inline(always)]
fn term_bits(raw: ErlNifTerm) -> usize {
    struct Bits(usize);
    impl std::hash::Hasher for Bits {
        fn finish(&self) -> u64 {
            self.0 as u64
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0 = bytes
                .try_into()
                .map(usize::from_ne_bytes)
                .unwrap_or_default();
        }
        fn write_usize(&mut self, word: usize) {
            self.0 = word;
        }
    }
    let mut bits = Bits(0);
    std::hash::Hash::hash(&raw, &mut bits);
    bits.0
}

/// The two low bits of a term word: OTP's primary tag, the same since R7.
const PRIMARY_TAG: usize = 0b11;
const LIST_TAG: usize = 0b01;
const BOXED_TAG: usize = 0b10;
const IMMEDIATE_TAG: usize = 0b11;

/// The four low bits of an immediate: a pid of this node is `0b0011` (OTP's
/// `_TAG_IMMED1_PID`, the same since R7).
const IMMEDIATE1_TAG_MASK: usize = 0b1111;
const LOCAL_PID_TAG: usize = 0b0011;

/// A header word: subtag in bits 2..6 (with the primary tag 0b00), arity above.
const HEADER_SUBTAG: usize = 0b11_1111;
const HEADER_ARITY_SHIFT: u32 = 6;
const TUPLE_SUBTAG: usize = 0x00;
const POSITIVE_BIGNUM_SUBTAG: usize = 0x08;
const NEGATIVE_BIGNUM_SUBTAG: usize = 0x0C;
const REFERENCE_SUBTAG: usize = 0x10;
const FUN_SUBTAG: usize = 0x14;
const FLOAT_SUBTAG: usize = 0x18;
const EXPORT_SUBTAG: usize = 0x1C;
const REFC_BINARY_SUBTAG: usize = 0x20;
const HEAP_BINARY_SUBTAG: usize = 0x24;
const SUB_BINARY_SUBTAG: usize = 0x28;
const EXTERNAL_PID_SUBTAG: usize = 0x30;
const EXTERNAL_PORT_SUBTAG: usize = 0x34;
const EXTERNAL_REFERENCE_SUBTAG: usize = 0x38;
const MAP_SUBTAG: usize = 0x3C;

/// OTP 25's header of every fun (`HEADER_FUN`): arity 3 counts the entry pointer, the
/// off-heap link and the word holding the arity and captured-variable count (one byte
/// each); the creator pid and the captured variables follow.
const OTP25_FUN_HEADER: usize = (3 << HEADER_ARITY_SHIFT) | FUN_SUBTAG;
const OTP25_FUN_COUNTS: usize = 3;
const OTP25_FUN_CREATOR: usize = 4;
/// OTP 25's header of every sub-binary (`HEADER_SUB_BIN`): arity 3 counts the size in
/// bytes, the byte offset and the word holding the bit size, bit offset and writable
/// flag (one byte each); the parent binary follows.
const OTP25_SUB_BINARY_HEADER: usize = (3 << HEADER_ARITY_SHIFT) | SUB_BINARY_SUBTAG;
const OTP25_SUB_BINARY_SIZE: usize = 1;
const OTP25_SUB_BINARY_BITS: usize = 3;
const OTP25_SUB_BINARY_PARENT: usize = 4;

/// The header of every flat map (`MAP_HEADER_FLATMAP`, OTP 18 on: map type 0, arity
/// field 1, no bitmap): its size, its key tuple and its values follow. Hashmap headers
/// differ in type or bitmap.
const FLATMAP_HEADER: usize = (0b1_00 << HEADER_ARITY_SHIFT) | MAP_SUBTAG;
const FLATMAP_SIZE: usize = 1;
const FLATMAP_KEYS: usize = 2;
const FLATMAP_VALUES: usize = 3;

/// Set once `confirm_layout` has seen the layouts of funs, sub-binaries and flat maps
/// on probes.
static LAYOUT_CONFIRMED: AtomicBool = AtomicBool::new(false);

/// What a term is, read from its word and, for a boxed term, its object.
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    /// Held whole in its word: small integer, atom, local pid or port, `[]`.
    Immediate,
    /// A list cell: read it with [`Word::cell`].
    Cell,
    /// A tuple and its elements.
    Tuple(&'a [Word<'a>]),
    /// A flat map (at most 32 keys), its keys and values in its own order, when its
    /// layout is confirmed.
    FlatMap {
        keys: &'a [Word<'a>],
        values: &'a [Word<'a>],
    },
    /// Any other map: read it with rustler's map API.
    Map,
    /// A fun, with what it references, when OTP 25's layout is confirmed.
    Fun(Option<Fun<'a>>),
    /// A sub-binary (a slice of another binary, or a bitstring that is not whole
    /// bytes), when OTP 25's layout is confirmed: its own header words say nothing of
    /// its parent.
    SubBinary(Option<SubBinary<'a>>),
    /// Any other object, whose header arity counts the words after the header.
    Thing(Thing),
}

/// What a fun references besides its code.
#[derive(Clone, Copy, Debug)]
pub struct Fun<'a> {
    /// How many arguments it takes.
    pub arity: u8,
    /// The pid of the process that made it, or the atom `external` for `fun M:F/A`.
    pub creator: Word<'a>,
    /// The variables it captured.
    pub captured: &'a [Word<'a>],
}

/// The fields of a sub-binary that its size depends on.
#[derive(Clone, Copy, Debug)]
pub struct SubBinary<'a> {
    /// Whole bytes.
    pub bytes: usize,
    /// Bits past the whole bytes (0..8).
    pub bit_size: u8,
    /// Offset in bits of its first byte inside the parent's bytes (0..8).
    pub bit_offset: u8,
    /// The binary it is a slice of: a heap or a refcounted binary.
    pub parent: Word<'a>,
}

/// An object sized by its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thing {
    /// What it is.
    pub kind: ThingKind,
    /// Its words, header included: `1 + arity`.
    pub words: usize,
    /// The second word: the byte size of a heap or refcounted binary.
    pub size: usize,
}

/// Kinds of [`Thing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThingKind {
    Bignum,
    Float,
    Reference,
    HeapBinary,
    RefcBinary,
    /// A pid, port or reference of another node (or an earlier run of this one), or
    /// an export fun of OTP 24 and earlier.
    External,
    /// A subtag this build does not know, or a fun or sub-binary whose header is not
    /// OTP 25's: only its header word was read.
    Unknown,
}

impl<'a> Word<'a> {
    /// The word of `term`.
    #[inline]
    pub fn of(term: Term<'a>) -> Self {
        Word {
            raw: term.as_c_arg(),
            env: PhantomData,
        }
    }

    #[inline(always)]
    fn bits(self) -> usize {
        term_bits(self.raw)
    }

    /// The term again, in `env`, the env of lifetime `'a`.
    #[inline]
    pub fn term(self, env: Env<'a>) -> Term<'a> {
        // SAFETY: a Word<'a> is a term of the env whose lifetime is 'a (see the type's
        // docs), and `env` is that env since rustler gives each env its own lifetime.
        unsafe { Term::new(env, self.raw) }
    }

    /// True for a term held whole in its word; such terms take no heap words.
    #[inline]
    pub fn is_immediate(self) -> bool {
        self.bits() & PRIMARY_TAG == IMMEDIATE_TAG
    }

    /// Reads what the term is, in O(1), without calling into the VM.
    #[inline]
    pub fn shape(self) -> Shape<'a> {
        self.read(LAYOUT_CONFIRMED.load(Ordering::Relaxed))
    }

    /// The head and tail of a list cell; `None` for anything else. The fast path of
    /// [`Word::shape`] for list spines.
    #[inline(always)]
    pub fn cell(self) -> Option<(Word<'a>, Word<'a>)> {
        if self.bits() & PRIMARY_TAG != LIST_TAG {
            return None;
        }
        let at = (self.bits() & !PRIMARY_TAG) as *const Word<'a>;
        // SAFETY: a term of a live env (see the type) with a list tag points at a cons
        // cell of two terms of that env (OTP's tagging since R7); Word<'a> is a
        // #[repr(transparent)] term word.
        unsafe { Some((*at, *at.add(1))) }
    }

    /// The pid when the term is a pid of this node; `None` for anything else.
    /// What `enif_get_local_pid` does (OTP's `is_internal_pid`: the immediate-1 tag),
    /// without the call: a fan-out walks millions of them.
    #[inline(always)]
    pub fn local_pid(self) -> Option<LocalPid> {
        if self.bits() & IMMEDIATE1_TAG_MASK != LOCAL_PID_TAG {
            return None;
        }
        // SAFETY: `ErlNifPid` is a #[repr(C)] struct of one term word, which is what
        // `enif_get_local_pid` stores in it; the word is a local pid by its tag.
        Some(LocalPid::from_c_arg(unsafe {
            std::mem::transmute::<ErlNifTerm, sys::ErlNifPid>(self.raw)
        }))
    }

    /// Hints to the CPU that the term's cell or object is about to be read.
    #[inline]
    pub fn prefetch(self) {
        if self.bits() & PRIMARY_TAG != IMMEDIATE_TAG {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never faults
            // and reads nothing the program sees, whatever the address.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (self.bits() & !PRIMARY_TAG) as *const i8,
                )
            };
        }
    }

    #[inline]
    fn read(self, layout_confirmed: bool) -> Shape<'a> {
        let tag = self.bits() & PRIMARY_TAG;
        if tag == IMMEDIATE_TAG {
            return Shape::Immediate;
        }
        if tag != LIST_TAG && tag != BOXED_TAG {
            // A header word is never a term.
            return Shape::Thing(Thing {
                kind: ThingKind::Unknown,
                words: 0,
                size: 0,
            });
        }
        if tag == LIST_TAG {
            return Shape::Cell;
        }
        let at = (self.bits() & !PRIMARY_TAG) as *const usize;
        // SAFETY: a term of a live env (see the type) with a boxed tag points at an
        // object that starts with a header word; OTP has tagged terms this way since
        // R7. The header's arity
        // counts the words that follow it in tuples and in the things read as such
        // (the garbage collector skips them by it), so words 1..=arity are in the
        // object; a map's header arity is no size, and a map is read past its header
        // only when its header is a flat map's and once
        // `confirm_layout` has found its size, key tuple and values where OTP puts
        // them. A fun or sub-binary whose header is OTP 25's has at least 1 + arity
        // words; the fields beyond them (a fun's creator and captured variables, their
        // count, a sub-binary's parent) are read only once `confirm_layout` has found
        // them where OTP 25 puts them. Tuple elements, keys, values, captured variables
        // and the parent are terms of the same env, and Word<'a> is a
        // #[repr(transparent)] term word.
        unsafe {
            let header = *at;
            if header == FLATMAP_HEADER && layout_confirmed {
                let size = *at.add(FLATMAP_SIZE);
                let keys = *at.add(FLATMAP_KEYS);
                // The key tuple: a boxed tuple of `size` elements.
                let keys_at = (keys & !PRIMARY_TAG) as *const usize;
                if keys & PRIMARY_TAG != BOXED_TAG
                    || *keys_at != (size << HEADER_ARITY_SHIFT) | TUPLE_SUBTAG
                {
                    return Shape::Map;
                }
                return Shape::FlatMap {
                    keys: std::slice::from_raw_parts(keys_at.add(1).cast::<Word<'a>>(), size),
                    values: std::slice::from_raw_parts(
                        at.add(FLATMAP_VALUES).cast::<Word<'a>>(),
                        size,
                    ),
                };
            }
            let arity = header >> HEADER_ARITY_SHIFT;
            let thing = |kind| {
                Shape::Thing(Thing {
                    kind,
                    words: 1 + arity,
                    size: if arity > 0 { *at.add(1) } else { 0 },
                })
            };
            match header & HEADER_SUBTAG {
                TUPLE_SUBTAG => Shape::Tuple(std::slice::from_raw_parts(
                    at.add(1).cast::<Word<'a>>(),
                    arity,
                )),
                MAP_SUBTAG => Shape::Map,
                FUN_SUBTAG if header == OTP25_FUN_HEADER => {
                    Shape::Fun(layout_confirmed.then(|| {
                        let counts = *at.add(OTP25_FUN_COUNTS);
                        Fun {
                            arity: counts as u8,
                            creator: *at.add(OTP25_FUN_CREATOR).cast::<Word<'a>>(),
                            captured: std::slice::from_raw_parts(
                                at.add(OTP25_FUN_CREATOR + 1).cast::<Word<'a>>(),
                                (counts >> 8) & 0xFF,
                            ),
                        }
                    }))
                }
                SUB_BINARY_SUBTAG if header == OTP25_SUB_BINARY_HEADER => {
                    Shape::SubBinary(layout_confirmed.then(|| {
                        let bits = *at.add(OTP25_SUB_BINARY_BITS);
                        SubBinary {
                            bytes: *at.add(OTP25_SUB_BINARY_SIZE),
                            bit_size: bits as u8,
                            bit_offset: (bits >> 8) as u8,
                            parent: *at.add(OTP25_SUB_BINARY_PARENT).cast::<Word<'a>>(),
                        }
                    }))
                }
                POSITIVE_BIGNUM_SUBTAG | NEGATIVE_BIGNUM_SUBTAG => thing(ThingKind::Bignum),
                FLOAT_SUBTAG => thing(ThingKind::Float),
                REFERENCE_SUBTAG => thing(ThingKind::Reference),
                HEAP_BINARY_SUBTAG => thing(ThingKind::HeapBinary),
                REFC_BINARY_SUBTAG => thing(ThingKind::RefcBinary),
                EXTERNAL_PID_SUBTAG
                | EXTERNAL_PORT_SUBTAG
                | EXTERNAL_REFERENCE_SUBTAG
                | EXPORT_SUBTAG => thing(ThingKind::External),
                _ => Shape::Thing(Thing {
                    kind: ThingKind::Unknown,
                    words: 1,
                    size: 0,
                }),
            }
        }
    }
}

/// A fun made by Elixir code, and what `:erlang.fun_info/2` says it holds.
pub struct FunProbe<'a> {
    pub fun: Term<'a>,
    pub arity: u8,
    /// Its `:env`.
    pub captured: Vec<Term<'a>>,
    /// Its `:pid`: the calling process for a closure made there, or the atom
    /// `external` for `fun M:F/A` (`:erlang.fun_info(f, :pid)` says `:undefined`).
    pub creator: Term<'a>,
}

/// A sub-binary made by Elixir code by matching into `parent`, and where.
pub struct SubBinaryProbe<'a> {
    pub sub_binary: Term<'a>,
    pub parent: Term<'a>,
    pub bytes: usize,
    pub bit_size: u8,
    pub bit_offset: u8,
}

/// A flat map made by Elixir code, and its keys and values (`:maps.keys/1` and
/// `:maps.values/1`, which list them in the map's own order).
pub struct FlatMapProbe<'a> {
    pub map: Term<'a>,
    pub keys: Vec<Term<'a>>,
    pub values: Vec<Term<'a>>,
}

/// Confirms OTP 25's layout of funs and sub-binaries, and OTP's layout of flat maps, on
/// probes of known contents, and from then on lets [`Word::shape`] read captured
/// variables, parents, keys and values. Returns false (and reads nothing past the
/// probes' headers) unless every probe has the header of its layout, and false unless
/// every field is where the layout puts it. Probes must vary in arity, captured
/// variables, bit sizes, offsets and map sizes for the check to mean anything.
pub fn confirm_layout<'a>(
    funs: &[FunProbe<'a>],
    sub_binaries: &[SubBinaryProbe<'a>],
    maps: &[FlatMapProbe<'a>],
) -> bool {
    let headers_match = funs
        .iter()
        .all(|probe| matches!(Word::of(probe.fun).read(false), Shape::Fun(None)))
        && sub_binaries.iter().all(|probe| {
            matches!(
                Word::of(probe.sub_binary).read(false),
                Shape::SubBinary(None)
            )
        });
    if !headers_match || funs.is_empty() || sub_binaries.is_empty() || maps.is_empty() {
        return false;
    }
    let funs_match = funs.iter().all(|probe| {
        let Shape::Fun(Some(fun)) = Word::of(probe.fun).read(true) else {
            return false;
        };
        same_words(fun.captured, &probe.captured)
            && fun.creator == Word::of(probe.creator)
            && fun.arity == probe.arity
    });
    let sub_binaries_match = sub_binaries.iter().all(|probe| {
        let Shape::SubBinary(Some(sub)) = Word::of(probe.sub_binary).read(true) else {
            return false;
        };
        sub.bytes == probe.bytes
            && sub.bit_size == probe.bit_size
            && sub.bit_offset == probe.bit_offset
            && sub.parent == Word::of(probe.parent)
    });
    // The flat-map branch of `read` looks past a map's header only when it is a flat
    // map's.
    let maps_match = maps.iter().all(|probe| {
        let Shape::FlatMap { keys, values } = Word::of(probe.map).read(true) else {
            return false;
        };
        same_words(keys, &probe.keys) && same_words(values, &probe.values)
    });
    let confirmed = funs_match && sub_binaries_match && maps_match;
    if confirmed {
        LAYOUT_CONFIRMED.store(true, Ordering::Relaxed);
    }
    confirmed
}

/// True when `words` are the words of `terms`, in order.
fn same_words<'a>(words: &[Word<'a>], terms: &[Term<'a>]) -> bool {
    words.len() == terms.len()
        && words
            .iter()
            .zip(terms)
            .all(|(&word, &term)| word == Word::of(term))
}
