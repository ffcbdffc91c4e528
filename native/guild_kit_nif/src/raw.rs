//! The NIF API calls that rustler has no safe wrapper for, each behind a safe function.
//!
//! This is the only module of the NIF crate that calls into the VM directly; every other
//! module uses rustler's safe API and these functions. Each `unsafe` block here says why
//! it is sound. What they rely on is the NIF API's contract: a term of an env stays
//! valid for as long as that env (the call, for a process env), and `enif_*` functions
//! given valid terms of that env never fail in ways that break memory safety.

use std::ffi::{c_int, c_uint, CStr};

use rustler::sys::{self, ErlNifEnv, ErlNifTerm};
use rustler::{Env, LocalPid, OwnedEnv, Term};

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
    // valid for this call (a NIF's arity is fixed, at most MAX_ARITY for `nifs!`).
    let (env, raw) = unsafe {
        (
            Env::new(&lifetime, env),
            std::slice::from_raw_parts(argv, arity),
        )
    };
    let padding = rustler::types::atom::nil().as_c_arg();
    let terms: [Term; MAX_ARITY] = std::array::from_fn(|i| {
        // SAFETY: each is an argument term of `env`, or an atom, valid in any env.
        unsafe { Term::new(env, raw.get(i).copied().unwrap_or(padding)) }
    });
    let args = &terms[..arity];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let call = if DIRTY {
            Call::dirty(env)
        } else {
            Call::normal::<J>(env, args)
        };
        J::run(call, args)
    }));
    // SAFETY: turns the result into the VM's return value (raising for errors) in the
    // env of this call, as rustler's own generated entry points do.
    unsafe { rustler::codegen_runtime::handle_nif_result(result, env).apply(env) }
}

/// The elements of a tuple, without copying them, or `None` when `term` is not one.
///
/// Time: O(1).
pub fn tuple_elements(term: Term) -> Option<TupleElements> {
    let mut arity: c_int = 0;
    let mut elements: *const ErlNifTerm = std::ptr::null();
    // SAFETY: on success `elements` points at `arity` terms owned by the tuple, which
    // lives as long as the term's env.
    let ok = unsafe {
        sys::enif_get_tuple(
            term.get_env().as_c_arg(),
            term.as_c_arg(),
            &mut arity,
            &mut elements,
        )
    };
    if ok == 0 {
        return None;
    }
    let raw: &[ErlNifTerm] = if arity == 0 {
        &[]
    } else {
        // SAFETY: see above; `arity` is positive.
        unsafe { std::slice::from_raw_parts(elements, arity as usize) }
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

    /// The element words, for walks that keep raw terms.
    pub fn as_raw(&self) -> &'a [ErlNifTerm] {
        self.raw
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

    /// The last term pushed.
    pub fn last(&self) -> Option<Term<'a>> {
        // SAFETY: every pushed word is a term of the buffer's env.
        self.raw
            .last()
            .map(|&raw| unsafe { Term::new(self.env, raw) })
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
        let items = &self.raw[start..];
        // SAFETY: the items are terms of the buffer's env.
        unsafe {
            let list = sys::enif_make_list_from_array(
                self.env.as_c_arg(),
                items.as_ptr(),
                items.len() as c_uint,
            );
            Term::new(self.env, list)
        }
    }

    /// A tuple of the terms from `start` on.
    ///
    /// Time: O(len - start).
    pub fn tuple(&self, start: usize) -> Term<'a> {
        let items = &self.raw[start..];
        // SAFETY: the items are terms of the buffer's env.
        unsafe {
            let tuple = sys::enif_make_tuple_from_array(
                self.env.as_c_arg(),
                items.as_ptr(),
                items.len() as c_uint,
            );
            Term::new(self.env, tuple)
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

/// Sends the message `build` makes in `message_env` from the calling process (whose
/// env is `caller`) to `to`, moving it into the receiver's mailbox rather than copying
/// it; the terms of `message_env` are invalid afterwards. Messages sent this way keep
/// their order with every other message from the caller to `to`, since the VM queues
/// them as signals from the calling process. Returns false when `to` is not alive.
pub fn send_moving(
    caller: Env,
    to: &LocalPid,
    message_env: &OwnedEnv,
    build: impl for<'b> FnOnce(Env<'b>) -> Term<'b>,
) -> bool {
    message_env.run(|out| {
        let message = build(out);
        // SAFETY: `caller` is the env of the calling process, and `message` a term of
        // `out`, a process-independent env (an OwnedEnv), as enif_send requires.
        unsafe {
            sys::enif_send(
                caller.as_c_arg(),
                to.as_c_arg(),
                out.as_c_arg(),
                message.as_c_arg(),
            ) != 0
        }
    })
}
