//! Errors raised to Elixir. Every variant becomes an `ArgumentError` whose message says
//! what was wrong; none leaks as a bare atom.

/// Something wrong with the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unsupported term: {kind} cannot be stored (supported: integers, floats, atoms, \
         binaries, tuples, proper lists and maps)"
    )]
    UnsupportedTerm { kind: &'static str },
    #[error("term too large: its key would exceed {limit} bytes")]
    TermTooLarge { limit: usize },
    #[error("element at position {position}: {source}")]
    InElement {
        position: usize,
        #[source]
        source: Box<Error>,
    },
    #[error(
        "expected strictly ascending terms, but the term at position {position} is not \
         greater than the one before it"
    )]
    NotAscending { position: usize },
    #[error("expected a list, got an improper list")]
    NotAList,
    #[error("this {0} is a read-only snapshot and cannot be changed")]
    ReadOnly(&'static str),
    #[error("unknown group: the group is not one of the list's groups")]
    UnknownGroup,
    #[error("duplicate group: the group at position {position} equals an earlier one")]
    DuplicateGroup { position: usize },
    #[error("too many groups: at most {limit} are supported")]
    TooManyGroups { limit: usize },
    #[error("the collection is full")]
    Full,
    #[error("expected a worker count in 1..={max}, got: {count}")]
    BadWorkerCount { count: u32, max: u32 },
    #[error("internal error: this fan-out split was already finished; please report this")]
    SplitFinished,
    #[error("internal error: a stored element could not be read back; please report this")]
    Corrupt,
    #[error("argument {position}: expected {expected}")]
    BadArgument {
        position: usize,
        expected: &'static str,
    },
    #[error(
        "expected a {kind}, got a handle that is not one: a forged or foreign reference, \
         a handle of another kind, or one made on another node or in an earlier run of the VM"
    )]
    NotAHandle { kind: &'static str },
    #[error("cannot load a {kind} from this binary: {source}")]
    BadDump {
        kind: &'static str,
        #[source]
        source: guild_kit_core::dump::LoadError,
    },
    #[error("internal error: {0}; please report this")]
    Internal(&'static str),
    #[error("expected permission bits: an integer in 0..2^64-1")]
    BadBits,
    #[error(
        "expected an overwrite {{:everyone, allow, deny}}, {{:role, role_id, allow, deny}} or \
         {{:member, member_id, allow, deny}}, with allow and deny integers in 0..2^64-1"
    )]
    BadOverwrite,
    #[error("unknown channel: the permissions have no such channel (put_channel/3 adds one)")]
    UnknownChannel,
    #[error("unknown session: the pid is not in the audience")]
    UnknownSession,
    #[error("the pid is already in the audience")]
    SessionExists,
    #[error("too many roles: an audience's sessions hold at most {limit} distinct role ids")]
    TooManyRoles { limit: usize },
}

/// `%ArgumentError{message: ...}`, raised as is so that Elixir's `rescue ArgumentError`
/// catches it without any wrapping.
#[derive(rustler::NifException)]
#[module = "ArgumentError"]
struct ArgumentError {
    message: String,
}

impl From<Error> for rustler::Error {
    fn from(error: Error) -> Self {
        rustler::Error::RaiseTerm(Box::new(ArgumentError {
            message: error.to_string(),
        }))
    }
}
