//! The one way a NIF leaves a normal scheduler, and the one way it reports its cost.
//!
//! A NIF whose cost grows with its input is declared with [`nifs!`]. It starts on the
//! caller's normal scheduler and gets a [`Call`]. When the work turns out too big for a
//! normal scheduler (more than about a millisecond), the implementation returns
//! `Err(Exit::Dirty)` (usually through `?`, from [`Call::go_dirty_if`] or a budgeted
//! encoder): the same NIF, with the same arguments, is then rescheduled onto a dirty
//! CPU scheduler with `enif_schedule_nif`, and runs there from the top with a `Call`
//! that says so. The caller sees one NIF call and one result: no sentinel value, no
//! second stub, no round trip through Elixir. An implementation must not change any
//! state the caller can see before it gives up.
//!
//! Work that stays on the normal scheduler reports its cost with [`Call::charge`], so a
//! process calling cheap NIFs in a tight loop still yields on time. On a dirty
//! scheduler charging is a no-op: dirty schedulers have no timeslice.

use std::cell::Cell;
use std::ffi::CStr;
use std::time::Instant;

use rustler::{Env, NifResult, Term};

use crate::error::Error;
use crate::raw;

/// How a NIF's implementation is run on a dirty scheduler: [`nifs!`] implements it for a
/// type private to each NIF.
pub trait DirtyJob {
    /// The NIF's name, shown by the VM while the dirty job runs.
    const NAME: &'static CStr;

    /// Runs the implementation on a dirty scheduler with the NIF's original arguments.
    fn run<'a>(call: Call<'a>, args: &[Term<'a>]) -> NifResult<Term<'a>>;
}

/// Why an implementation stopped without a result.
#[derive(Debug)]
pub enum Exit {
    /// Raise this error to the caller.
    Raise(rustler::Error),
    /// The work is too big for a normal scheduler: rerun the call on a dirty one.
    Dirty,
}

impl From<Error> for Exit {
    fn from(error: Error) -> Self {
        Exit::Raise(error.into())
    }
}

impl From<rustler::Error> for Exit {
    fn from(error: rustler::Error) -> Self {
        Exit::Raise(error)
    }
}

/// What an implementation returns.
pub type Outcome<'a> = Result<Term<'a>, Exit>;

/// A NIF call in progress: its environment, which scheduler it runs on, and how to move
/// it to a dirty one.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    env: Env<'a>,
    /// `None` on a dirty scheduler.
    normal: Option<Reschedule>,
}

/// Most arguments a [`nifs!`] NIF takes.
pub const MAX_ARITY: usize = 6;

#[derive(Clone, Copy)]
struct Reschedule {
    name: &'static CStr,
    entry: raw::Entry,
    args: raw::Args,
}

impl<'a> Call<'a> {
    /// A call on the caller's normal scheduler, which can move to `J` on a dirty one.
    pub fn normal<J: DirtyJob>(env: Env<'a>, args: &[Term<'a>]) -> Self {
        Call {
            env,
            normal: Some(Reschedule {
                name: J::NAME,
                entry: raw::entry::<J, true>,
                args: raw::Args::new(args),
            }),
        }
    }

    /// A call already running on a dirty scheduler.
    pub fn dirty(env: Env<'a>) -> Self {
        Call { env, normal: None }
    }

    /// The environment of the calling process.
    #[inline]
    pub fn env(&self) -> Env<'a> {
        self.env
    }

    /// True on a dirty scheduler, where no budget applies.
    #[inline]
    pub fn is_dirty(&self) -> bool {
        self.normal.is_none()
    }

    /// `Some(budget)` on a normal scheduler, `None` (unlimited) on a dirty one.
    #[inline]
    pub fn budget<T>(&self, normal: T) -> Option<T> {
        self.normal.map(|_| normal)
    }

    /// `Err(Exit::Dirty)` when `too_big` on a normal scheduler; `Ok(())` otherwise, and
    /// always on a dirty scheduler, where no budget applies.
    #[inline]
    pub fn go_dirty_if(&self, too_big: bool) -> Result<(), Exit> {
        if too_big && self.normal.is_some() {
            Err(Exit::Dirty)
        } else {
            Ok(())
        }
    }

    /// Turns an implementation's outcome into the NIF's result: a term, a raise, or the
    /// whole call moved to a dirty CPU scheduler, where the implementation runs again
    /// from the top with the same arguments and its result is the caller's.
    ///
    /// A dirty call that asks to go dirty is a bug (a budget that applies there too) and
    /// raises an internal error rather than loop.
    pub fn finish(&self, outcome: Outcome<'a>) -> NifResult<Term<'a>> {
        match outcome {
            Ok(term) => Ok(term),
            Err(Exit::Raise(error)) => Err(error),
            Err(Exit::Dirty) => match self.normal {
                Some(job) => Ok(raw::schedule_dirty(
                    self.env, job.name, job.entry, &job.args,
                )),
                None => Err(Error::Internal("a dirty call ran out of budget").into()),
            },
        }
    }

    /// Charges about `micros` microseconds of work to the calling process, on a normal
    /// scheduler; a no-op on a dirty one.
    ///
    /// The VM counts a NIF call as one reduction whatever it costs, and
    /// `enif_consume_timeslice` takes whole percents of a slice (about 10 µs each), too
    /// coarse for calls of a microsecond. So small costs accumulate per scheduler thread
    /// and are charged one percent per 10 µs owed.
    #[inline]
    pub fn charge(&self, micros: u32) {
        if self.normal.is_some() {
            charge(self.env, micros);
        }
    }

    /// Charges the time since `started`, rounded up to a whole microsecond.
    pub fn charge_since(&self, started: Instant) {
        let micros = started.elapsed().as_nanos().div_ceil(1000);
        self.charge(micros.min(u128::from(u32::MAX)) as u32);
    }
}

const MICROS_PER_PERCENT: u32 = 10;

fn charge(env: Env, micros: u32) {
    thread_local! {
        static OWED: Cell<u32> = const { Cell::new(0) };
    }
    let percent = OWED.with(|owed| {
        let total = owed.get().saturating_add(micros);
        owed.set(total % MICROS_PER_PERCENT);
        total / MICROS_PER_PERCENT
    });
    if percent > 0 {
        rustler::schedule::consume_timeslice(env, percent.min(100) as i32);
    }
}

/// Decoding of one NIF argument, with an `ArgumentError` that says what was expected
/// instead of a bare `badarg`.
pub trait FromArg<'a>: Sized {
    /// Decodes `term`, the argument at `position` (zero-based).
    fn from_arg(term: Term<'a>, position: usize) -> Result<Self, Error>;
}

impl<'a> FromArg<'a> for Term<'a> {
    #[inline]
    fn from_arg(term: Term<'a>, _position: usize) -> Result<Self, Error> {
        Ok(term)
    }
}

macro_rules! plain_args {
    ($($ty:ty => $what:literal),+ $(,)?) => {$(
        impl<'a> FromArg<'a> for $ty {
            #[inline]
            fn from_arg(term: Term<'a>, position: usize) -> Result<Self, Error> {
                term.decode().map_err(|_| Error::BadArgument { position, expected: $what })
            }
        }
    )+};
}

plain_args! {
    u64 => "a non-negative integer below 2^64",
    u32 => "a non-negative integer below 2^32",
    usize => "a non-negative integer",
    bool => "a boolean",
    rustler::LocalPid => "a pid of this node",
}

/// A native structure behind an Elixir handle struct, named for error messages.
/// Declared with [`handle!`].
pub trait Handle: rustler::Resource {
    /// The Elixir module of the handle, such as `"GuildKit.SortedSet"`.
    const KIND: &'static str;
}

/// Declares a type a NIF resource and a [`Handle`] of the given kind:
///
/// ```ignore
/// handle!(SortedSet, "GuildKit.SortedSet");
/// ```
///
/// NIF arguments of type `&SortedSet` or `ResourceArc<SortedSet>` then decode with
/// [`FromArg`], and a wrong handle raises "expected a GuildKit.SortedSet, ...".
macro_rules! handle {
    // An ident, not a type: rustler's `resource_impl` wants a plain path.
    ($resource:ident, $kind:literal) => {
        #[rustler::resource_impl]
        impl rustler::Resource for $resource {}

        impl $crate::schedule::Handle for $resource {
            const KIND: &'static str = $kind;
        }
    };
}

pub(crate) use handle;

impl<'a, T: Handle + 'a> FromArg<'a> for &'a T {
    #[inline]
    fn from_arg(term: Term<'a>, _position: usize) -> Result<Self, Error> {
        term.try_get_resource::<T>()
            .ok_or(Error::NotAHandle { kind: T::KIND })
    }
}

impl<'a, T: Handle + 'a> FromArg<'a> for rustler::ResourceArc<T> {
    #[inline]
    fn from_arg(term: Term<'a>, _position: usize) -> Result<Self, Error> {
        term.decode()
            .map_err(|_| Error::NotAHandle { kind: T::KIND })
    }
}

/// Declares NIFs whose implementation takes a [`Call`]:
///
/// ```ignore
/// nifs! {
///     fn sorted_set_add(set: &SortedSet, term: Term) => add;
/// }
/// ```
///
/// declares the NIF `sorted_set_add/2`, which decodes its arguments with [`FromArg`]
/// and calls `add(call, set, term) -> Outcome` on the caller's normal scheduler, and
/// again on a dirty one if that returns `Err(Exit::Dirty)`. Each NIF needs one stub in
/// `GuildKit.Native`, as any NIF does.
macro_rules! nifs {
    ($(fn $name:ident($($arg:ident : $ty:ty),* $(,)?) => $implementation:path;)+) => {$(
        const _: () = {
            const ARITY: usize = [$(stringify!($arg)),*].len();
            assert!(ARITY <= $crate::schedule::MAX_ARITY, "a nifs! NIF takes at most MAX_ARITY arguments");

            struct Job;

            impl $crate::schedule::DirtyJob for Job {
                const NAME: &'static std::ffi::CStr =
                    match std::ffi::CStr::from_bytes_with_nul(
                        concat!(stringify!($name), "\0").as_bytes(),
                    ) {
                        Ok(name) => name,
                        Err(_) => panic!("a NIF name has no NUL byte"),
                    };

                #[allow(unused_variables, unused_mut, unused_assignments)]
                fn run<'a>(
                    call: $crate::schedule::Call<'a>,
                    args: &[rustler::Term<'a>],
                ) -> rustler::NifResult<rustler::Term<'a>> {
                    let mut position = 0;
                    let mut next = || {
                        let term = args[position];
                        position += 1;
                        (term, position - 1)
                    };
                    let outcome = (|| {
                        $(
                            let (term, at) = next();
                            let $arg: $ty = $crate::schedule::FromArg::from_arg(term, at)?;
                        )*
                        $implementation(call, $($arg),*)
                    })();
                    call.finish(outcome)
                }
            }

            // Registered as `#[rustler::nif]` would, with an entry point that does not
            // collect the arguments into a `Vec` on every call (`raw::entry`).
            rustler::codegen_runtime::inventory::submit!(rustler::Nif {
                name: concat!(stringify!($name), "\0").as_ptr()
                    as *const rustler::codegen_runtime::c_char,
                arity: ARITY as rustler::codegen_runtime::c_uint,
                flags: 0,
                raw_func: $crate::raw::entry::<Job, false>,
            });
        };
    )+};
}

pub(crate) use nifs;
