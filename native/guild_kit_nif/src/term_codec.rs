//! Erlang terms to and from term-key elements (`guild_kit_core::term_key`).
//!
//! Both directions walk the term with an explicit heap stack, never native recursion, so
//! nesting depth is bounded by memory rather than by the scheduler's C stack.
//!
//! Encoding is budgeted in bytes of work (see [`NORMAL_BUDGET`]) and checks sizes before
//! it copies anything: a binary, tuple, map or bignum whose size alone exceeds what is
//! left of the element limit is refused at once, and one that would exceed the normal
//! budget sends the call to a dirty scheduler before a byte is copied. The stack holds
//! one entry per open tuple, list or map, never one per element, so a wide term costs
//! no memory beyond its key.

use std::cell::{Cell, RefCell};

use guild_kit_core::key_tree::MAX_ELEMENT_LEN;
use guild_kit_core::term_key::{
    Element, Elements, Escaped, Integer, KeyEncoder, KeyReader, Number, OpenMap, Token,
};
use rustler::sys::ErlNifTerm;
use rustler::types::binary::NewBinary;
use rustler::types::map::MapIterator;
use rustler::{Atom, Binary, Encoder, Env, Term, TermType};

use crate::error::Error;
use crate::raw::{self, TermBuffer, TupleElements};
use crate::schedule::{Call, Exit};

/// Work a normal-scheduler call may do on one argument (or one list of them) before it
/// moves to a dirty scheduler, in bytes: the bytes of binaries, atoms and bignums read,
/// plus [`NODE_COST`] per term node visited. See notes/sorted-set.md for what it takes.
pub const NORMAL_BUDGET: usize = 64 * 1024;
/// What visiting one term node (a number, a list cell, a tuple header...) counts, in
/// bytes of work: about what copying that many bytes costs.
pub const NODE_COST: usize = 32;
/// Bytes of work per microsecond charged to the calling process's timeslice.
pub const WORK_PER_MICRO: usize = 256;

/// Bignums at least this large in magnitude (2^1023) have more than 128 bytes of digits.
/// Their size can only be read from their external format, which copies them whole, so
/// on a normal scheduler they go dirty before that copy.
const LARGE_BIGNUM: f64 = 8.988_465_674_311_58e307;

/// Why an encoding stopped.
#[derive(Debug)]
pub enum EncodeError {
    /// The input is not storable.
    Invalid(Error),
    /// The budget ran out; retry on a dirty scheduler.
    OverBudget,
}

impl From<Error> for EncodeError {
    fn from(e: Error) -> Self {
        EncodeError::Invalid(e)
    }
}

impl From<EncodeError> for Exit {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::Invalid(error) => error.into(),
            EncodeError::OverBudget => Exit::Dirty,
        }
    }
}

/// The work left to a walk: limited on a normal scheduler, unlimited on a dirty one.
struct Meter {
    left: Option<usize>,
    spent: usize,
}

impl Meter {
    fn new(budget: Option<usize>) -> Self {
        Meter {
            left: budget,
            spent: 0,
        }
    }

    #[inline]
    fn spend(&mut self, work: usize) -> Result<(), EncodeError> {
        self.spent = self.spent.saturating_add(work);
        match &mut self.left {
            Some(left) if work > *left => Err(EncodeError::OverBudget),
            Some(left) => {
                *left -= work;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn is_limited(&self) -> bool {
        self.left.is_some()
    }

    fn micros(&self) -> u32 {
        (self.spent / WORK_PER_MICRO).min(u32::MAX as usize) as u32
    }
}

/// Encodes a term to store, within the normal budget unless `call` is dirty. A term
/// that cannot be stored raises.
pub fn encode_arg(call: &Call, term: Term) -> Result<Element, Exit> {
    let mut meter = Meter::new(call.budget(NORMAL_BUDGET));
    let element = encode_metered(term, &mut meter)?;
    call.charge(meter.micros());
    Ok(element)
}

/// Encodes a term to look up, within the normal budget unless `call` is dirty.
/// `Ok(None)` when the term cannot be stored (unsupported, or too large), and so cannot
/// be present: a term too large for the element limit is found so before it is copied.
pub fn encode_lookup(call: &Call, term: Term) -> Result<Option<Element>, Exit> {
    let mut meter = Meter::new(call.budget(NORMAL_BUDGET));
    let outcome = encode_metered(term, &mut meter);
    call.charge(meter.micros());
    match outcome {
        Ok(element) => Ok(Some(element)),
        Err(EncodeError::Invalid(_)) => Ok(None),
        Err(EncodeError::OverBudget) => Err(Exit::Dirty),
    }
}

/// Encodes every term of the proper list `list`, in order, within one normal budget
/// for the whole list unless `call` is dirty. A term that cannot be stored raises an
/// error naming its position.
///
/// Time: O(total size of the terms).
pub fn encode_list(call: &Call, list: Term) -> Result<Elements, Exit> {
    let mut meter = Meter::new(call.budget(NORMAL_BUDGET));
    let mut elements = Elements::new();
    let mut rest = list;
    let outcome = loop {
        if rest.is_empty_list() {
            break Ok(());
        }
        let Ok((head, tail)) = rest.list_get_cell() else {
            break Err(Error::NotAList.into());
        };
        if let Err(error) = meter.spend(NODE_COST) {
            break Err(error.into());
        }
        match encode_metered(head, &mut meter) {
            Ok(element) => {
                elements.push(&element);
                recycle(element);
            }
            Err(EncodeError::OverBudget) => break Err(Exit::Dirty),
            Err(EncodeError::Invalid(source)) => {
                break Err(Error::InElement {
                    position: elements.len(),
                    source: Box::new(source),
                }
                .into())
            }
        }
        rest = tail;
    };
    call.charge(meter.micros());
    outcome.map(|()| elements)
}

/// Encodes `term` into an element. `budget` limits the work (see [`NORMAL_BUDGET`]);
/// `None` means unlimited (dirty schedulers).
pub fn encode(term: Term, budget: Option<usize>) -> Result<Element, EncodeError> {
    encode_metered(term, &mut Meter::new(budget))
}

fn too_large() -> EncodeError {
    Error::TermTooLarge {
        limit: MAX_ELEMENT_LEN,
    }
    .into()
}

/// `Err` when `more` bytes on top of `written` would exceed the element limit.
#[inline]
fn check_room(written: usize, more: usize) -> Result<(), EncodeError> {
    if written.saturating_add(more) > MAX_ELEMENT_LEN {
        Err(too_large())
    } else {
        Ok(())
    }
}

fn encode_metered(term: Term, meter: &mut Meter) -> Result<Element, EncodeError> {
    // Most keys are a scalar or a flat tuple of scalars (a member-list key such as
    // `{rank, name, id}`): encode those without the work stack and its allocations.
    let element = match encode_flat(term, meter)? {
        Some(element) => element,
        None => encode_nested(term, meter)?,
    };
    if element.as_bytes().len() > MAX_ELEMENT_LEN {
        return Err(too_large());
    }
    Ok(element)
}

thread_local! {
    // The buffer of the last element handed back with `recycle`: the next encoding on
    // this scheduler thread writes into it instead of allocating.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Most bytes of a buffer kept for reuse.
const SPARE_CAPACITY: usize = 4096;

fn new_encoder() -> KeyEncoder {
    let spare = SPARE.with(Cell::take);
    if spare.capacity() == 0 {
        // Room for most keys at once rather than growing 8, 16, 32.
        return KeyEncoder::with_buffer(Vec::with_capacity(32));
    }
    KeyEncoder::with_buffer(spare)
}

/// Hands an element no longer needed back, so that the next encoding on this thread
/// reuses its buffer: lookups and inserts then allocate nothing.
pub fn recycle(element: Element) {
    let buffer = element.into_buffer();
    if buffer.capacity() <= SPARE_CAPACITY {
        SPARE.with(|spare| spare.set(buffer));
    }
}

fn is_scalar(term: Term) -> bool {
    matches!(
        term.get_type(),
        TermType::Integer | TermType::Float | TermType::Atom | TermType::Binary
    )
}

/// Encodes a scalar, or a tuple of at most 16 scalars; `None` for anything else.
fn encode_flat(term: Term, meter: &mut Meter) -> Result<Option<Element>, EncodeError> {
    if is_scalar(term) {
        let mut out = new_encoder();
        meter.spend(NODE_COST)?;
        encode_scalar(term, false, &mut out, meter, 0)?;
        return Ok(Some(out.finish()));
    }
    let Some(elements) = raw::tuple_elements(term) else {
        return Ok(None);
    };
    if elements.len() > 16 || !elements.iter().all(is_scalar) {
        return Ok(None);
    }
    meter.spend(NODE_COST * (1 + elements.len()))?;
    let mut out = new_encoder();
    out.push_tuple(elements.len());
    for element in elements.iter() {
        let written = out.key_len();
        encode_scalar(element, false, &mut out, meter, written)?;
    }
    Ok(Some(out.finish()))
}

/// What is left to do of an open compound term.
enum Work<'a> {
    Term(Term<'a>, bool),
    Tuple {
        elements: TupleElements<'a>,
        next: usize,
        exact: bool,
    },
    ListTail(Term<'a>, bool),
    /// The next key of the innermost open map. Boxed, as the next variant, to keep the
    /// stack's entries small: a term nested a million levels deep has a million of them.
    MapKeys(Box<MapKeysWork<'a>>),
    /// The values of a map, in the order of its sorted keys.
    MapValues(Box<MapValuesWork<'a>>),
}

struct MapKeysWork<'a> {
    entries: MapIterator<'a>,
    values: Vec<Term<'a>>,
    exact: bool,
}

struct MapValuesWork<'a> {
    values: Vec<Term<'a>>,
    order: Vec<usize>,
    next: usize,
    exact: bool,
}

fn encode_nested(term: Term, meter: &mut Meter) -> Result<Element, EncodeError> {
    let mut out = new_encoder();
    // The maps whose keys are being written, innermost last.
    let mut open_maps: Vec<OpenMap> = Vec::new();
    let mut stack = vec![Work::Term(term, false)];
    while let Some(work) = stack.pop() {
        meter.spend(NODE_COST)?;
        let written = out.key_len();
        match work {
            Work::Term(term, exact) => match term.get_type() {
                TermType::Integer | TermType::Float | TermType::Atom | TermType::Binary => {
                    encode_scalar(term, exact, &mut out, meter, written)?;
                }
                TermType::Tuple => {
                    let elements = raw::tuple_elements(term).ok_or(Error::Corrupt)?;
                    // Every element takes at least a byte, and a visit.
                    check_room(written, 2 + elements.len())?;
                    meter.spend(NODE_COST * elements.len())?;
                    out.push_tuple(elements.len());
                    stack.push(Work::Tuple {
                        elements,
                        next: 0,
                        exact,
                    });
                }
                TermType::List => {
                    out.push_list_start();
                    stack.push(Work::ListTail(term, exact));
                }
                TermType::Map => {
                    let size = term.map_size().map_err(|_| Error::Corrupt)?;
                    // Every entry takes at least two bytes, and visits to sort its key.
                    check_room(written, 2 + 2 * size)?;
                    meter.spend(NODE_COST * size)?;
                    let entries = MapIterator::new(term).ok_or(Error::Corrupt)?;
                    open_maps.push(out.begin_map(size));
                    stack.push(Work::MapKeys(Box::new(MapKeysWork {
                        entries,
                        values: Vec::with_capacity(size.min(4096)),
                        exact,
                    })));
                }
                other => return Err(unsupported(other).into()),
            },
            Work::Tuple {
                elements,
                next,
                exact,
            } => {
                if let Some(element) = elements.get(next) {
                    stack.push(Work::Tuple {
                        elements,
                        next: next + 1,
                        exact,
                    });
                    stack.push(Work::Term(element, exact));
                }
            }
            Work::ListTail(tail, exact) => {
                if tail.is_empty_list() {
                    out.push_list_end();
                } else if let Ok((head, rest)) = tail.list_get_cell() {
                    out.push_list_cons();
                    stack.push(Work::ListTail(rest, exact));
                    stack.push(Work::Term(head, exact));
                } else {
                    return Err(Error::UnsupportedTerm {
                        kind: "an improper list",
                    }
                    .into());
                }
            }
            Work::MapKeys(mut work) => {
                let open = open_maps.last_mut().ok_or(Error::Corrupt)?;
                if work.values.len() > open.len() {
                    out.end_map_key(open); // the key of the last entry taken is complete
                }
                if let Some((key, value)) = work.entries.next() {
                    work.values.push(value);
                    stack.push(Work::MapKeys(work));
                    stack.push(Work::Term(key, true));
                } else {
                    let open = open_maps.pop().ok_or(Error::Corrupt)?;
                    // Charged at its bound before it runs: comparisons and a move of
                    // the map's key bytes at most.
                    meter.spend(out.end_map_cost(&open))?;
                    let order = out.end_map(open);
                    let MapKeysWork { values, exact, .. } = *work;
                    stack.push(Work::MapValues(Box::new(MapValuesWork {
                        values,
                        order,
                        next: 0,
                        exact,
                    })));
                }
            }
            Work::MapValues(mut work) => {
                if let Some(&i) = work.order.get(work.next) {
                    let value = work.values[i];
                    let exact = work.exact;
                    work.next += 1;
                    stack.push(Work::MapValues(work));
                    stack.push(Work::Term(value, exact));
                }
            }
        }
        // Stop early rather than build a key that will be refused anyway.
        check_room(out.key_len(), 0)?;
    }
    Ok(out.finish())
}

fn unsupported(kind: TermType) -> Error {
    let kind = match kind {
        TermType::Pid => "a pid",
        TermType::Port => "a port",
        TermType::Ref => "a reference",
        TermType::Fun => "a fun",
        _ => "a term of unknown type",
    };
    Error::UnsupportedTerm { kind }
}

/// Writes a number, atom or binary. `written` is the element's size so far, checked
/// against the limit before anything large is copied.
fn encode_scalar(
    term: Term,
    exact: bool,
    out: &mut KeyEncoder,
    meter: &mut Meter,
    written: usize,
) -> Result<(), EncodeError> {
    match term.get_type() {
        TermType::Integer => {
            if let Ok(small) = term.decode::<i64>() {
                out.push_number(Number::Int(small), exact);
            } else if let Ok(unsigned) = term.decode::<u64>() {
                out.push_number(Number::UInt(unsigned), exact);
            } else {
                if meter.is_limited() {
                    let bound = LARGE_BIGNUM.encode(term.get_env());
                    let negative_bound = (-LARGE_BIGNUM).encode(term.get_env());
                    if term >= bound || term <= negative_bound {
                        return Err(EncodeError::OverBudget);
                    }
                }
                let etf = term.to_binary();
                let (negative, digits) = bignum_digits(etf.as_slice()).ok_or(Error::Corrupt)?;
                // A key holds at least eight bits of magnitude per byte.
                check_room(written, digits.len())?;
                meter.spend(2 * digits.len())?;
                let magnitude: Vec<u8> = digits.iter().rev().copied().collect();
                out.push_number(
                    Number::Big {
                        negative,
                        magnitude: &magnitude,
                    },
                    exact,
                );
            }
        }
        TermType::Float => {
            let float = term.decode::<f64>().map_err(|_| Error::Corrupt)?;
            out.push_number(Number::Float(float), exact);
        }
        TermType::Atom => {
            // At most 255 characters of up to 4 bytes.
            meter.spend(256)?;
            push_atom(term, out).ok_or(Error::Corrupt)?;
        }
        TermType::Binary => {
            let binary = Binary::from_term(term).map_err(|_| Error::UnsupportedTerm {
                kind: "a bitstring that is not a whole number of bytes",
            })?;
            // A binary's key holds all its bytes and a terminator: check the size, then
            // the budget, before copying any of them.
            check_room(written, binary.len() + 3)?;
            meter.spend(binary.len())?;
            out.push_binary(binary.as_slice());
        }
        other => return Err(unsupported(other).into()),
    }
    Ok(())
}

/// Sign and little-endian digits of a bignum, read from its external term format
/// (the NIF API has no direct accessor).
fn bignum_digits(etf: &[u8]) -> Option<(bool, &[u8])> {
    let (len, sign, digits_at): (usize, u8, usize) = match etf.get(1)? {
        110 => (*etf.get(2)? as usize, *etf.get(3)?, 4),
        111 => (
            u32::from_be_bytes(etf.get(2..6)?.try_into().ok()?) as usize,
            *etf.get(6)?,
            7,
        ),
        _ => return None,
    };
    Some((sign != 0, etf.get(digits_at..digits_at.checked_add(len)?)?))
}

fn push_atom(term: Term, out: &mut KeyEncoder) -> Option<()> {
    let mut buffer = [0u8; 256];
    if let Some(latin1) = raw::atom_latin1(term, &mut buffer) {
        out.push_atom_latin1(latin1);
        return Some(());
    }
    // NIF API 2.16 cannot read atoms beyond Latin-1; their external format carries UTF-8.
    let etf = term.to_binary();
    let bytes = etf.as_slice();
    let text = match bytes.get(1)? {
        118 => bytes.get(4..4 + u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize)?,
        119 => bytes.get(3..3 + *bytes.get(2)? as usize)?,
        _ => return None,
    };
    out.push_atom(text);
    Some(())
}

enum Frame {
    Tuple { arity: usize, start: usize },
    Map { size: usize, start: usize },
    List { start: usize },
}

/// Why a budgeted decoding stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The element is not one the encoder wrote.
    Corrupt,
    /// Building the term would cost more than the budget left.
    OverBudget,
}

impl From<DecodeError> for Exit {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::Corrupt => Error::Corrupt.into(),
            DecodeError::OverBudget => Exit::Dirty,
        }
    }
}

/// Rebuilds the term stored as `element`.
///
/// Time: O(element length + magnitudes of its integers).
pub fn decode<'a>(env: Env<'a>, element: &[u8]) -> Result<Term<'a>, Error> {
    let mut unlimited = usize::MAX;
    decode_within(env, element, &mut unlimited).map_err(|_| Error::Corrupt)
}

/// Rebuilds the term stored as `element`, taking what it costs from `left` (bytes of
/// work: the element's length, plus the bytes of every integer larger than 64 bits,
/// which a short key can describe). Stops with `OverBudget` before building anything
/// large that `left` does not cover.
pub fn decode_within<'a>(
    env: Env<'a>,
    element: &[u8],
    left: &mut usize,
) -> Result<Term<'a>, DecodeError> {
    *left = left
        .checked_sub(element.len())
        .ok_or(DecodeError::OverBudget)?;
    let mut reader = KeyReader::new(element).map_err(|_| DecodeError::Corrupt)?;
    let term = decode_from(env, &mut reader, left)?;
    if !reader.at_end() {
        return Err(DecodeError::Corrupt);
    }
    Ok(term)
}

/// Reads one whole term from `reader`, leaving it after that term.
///
/// Time: O(term size).
pub fn decode_next<'a>(env: Env<'a>, reader: &mut KeyReader) -> Result<Term<'a>, Error> {
    let mut unlimited = usize::MAX;
    decode_from(env, reader, &mut unlimited).map_err(|_| Error::Corrupt)
}

/// Decodes many elements with the same buffers: for the results of one call, so that
/// each element costs no allocation and no thread-local lookup.
pub struct Decoder<'a> {
    env: Env<'a>,
    frames: Vec<Frame>,
    values: TermBuffer<'a>,
}

impl<'a> Decoder<'a> {
    /// A decoder building terms in `env`.
    pub fn new(env: Env<'a>) -> Self {
        Decoder {
            env,
            frames: Vec::new(),
            values: TermBuffer::with_capacity(env, 0),
        }
    }

    /// What [`decode_within`] does, with this decoder's buffers.
    pub fn decode(&mut self, element: &[u8], left: &mut usize) -> Result<Term<'a>, DecodeError> {
        *left = left
            .checked_sub(element.len())
            .ok_or(DecodeError::OverBudget)?;
        let mut reader = KeyReader::new(element).map_err(|_| DecodeError::Corrupt)?;
        self.frames.clear();
        self.values.truncate(0);
        let term = decode_with(
            self.env,
            &mut reader,
            &mut self.frames,
            &mut self.values,
            left,
        )?;
        if !reader.at_end() {
            return Err(DecodeError::Corrupt);
        }
        Ok(term)
    }
}

fn decode_from<'a>(
    env: Env<'a>,
    reader: &mut KeyReader,
    left: &mut usize,
) -> Result<Term<'a>, DecodeError> {
    thread_local! {
        // Reused between calls on the same scheduler thread: decoding a small term then
        // allocates nothing.
        static SCRATCH: RefCell<(Vec<Frame>, Vec<ErlNifTerm>)> =
            const { RefCell::new((Vec::new(), Vec::new())) };
    }
    const KEEP_CAPACITY: usize = 1024;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let (frames, storage) = &mut *scratch;
            frames.clear();
            let mut values = TermBuffer::reuse(env, std::mem::take(storage));
            let term = decode_with(env, reader, frames, &mut values, left);
            *storage = values.into_storage();
            if storage.capacity() > KEEP_CAPACITY || frames.capacity() > KEEP_CAPACITY {
                *scratch = (Vec::new(), Vec::new());
            }
            term
        }
        Err(_) => decode_with(
            env,
            reader,
            &mut Vec::new(),
            &mut TermBuffer::with_capacity(env, 0),
            left,
        ),
    })
}

fn decode_with<'a>(
    env: Env<'a>,
    reader: &mut KeyReader,
    frames: &mut Vec<Frame>,
    values: &mut TermBuffer<'a>,
    left: &mut usize,
) -> Result<Term<'a>, DecodeError> {
    use DecodeError::Corrupt;
    loop {
        let bits = reader.peek_number_bits();
        if bits > 64 {
            // Building the magnitude walks its bits, then copies it twice.
            let cost = usize::try_from(bits / 2).unwrap_or(usize::MAX);
            *left = left.checked_sub(cost).ok_or(DecodeError::OverBudget)?;
        }
        let Some(token) = reader.next().map_err(|_| Corrupt)? else {
            break;
        };
        let value = match token {
            Token::Integer(Integer::I64(v)) => v.encode(env),
            Token::Integer(Integer::U64(v)) => v.encode(env),
            Token::Integer(Integer::Big {
                negative,
                magnitude,
            }) => make_bignum(env, negative, &magnitude).ok_or(Corrupt)?,
            Token::Float(f) => f.encode(env),
            Token::Atom(text) => make_atom(env, text).ok_or(Corrupt)?,
            Token::Binary(bytes) => {
                let mut binary = NewBinary::new(env, bytes.len());
                bytes.copy_to(binary.as_mut_slice());
                binary.into()
            }
            Token::Tuple(0) => values.tuple(values.len()),
            Token::Tuple(arity) => {
                frames.push(Frame::Tuple {
                    arity,
                    start: values.len(),
                });
                continue;
            }
            Token::Map(0) => Term::map_new(env),
            Token::Map(size) => {
                frames.push(Frame::Map {
                    size,
                    start: values.len(),
                });
                continue;
            }
            Token::ListStart => {
                frames.push(Frame::List {
                    start: values.len(),
                });
                continue;
            }
            Token::ListEnd => {
                let Some(Frame::List { start }) = frames.pop() else {
                    return Err(Corrupt);
                };
                let list = values.list(start);
                values.truncate(start);
                list
            }
        };
        if frames.is_empty() {
            return Ok(value); // a scalar, or a list: the whole term
        }
        values.push(value);
        let mut finished = value;
        // A finished term may complete the tuples and maps it closes.
        loop {
            let (start, built) = match frames.last() {
                Some(&Frame::Tuple { arity, start }) if values.len() - start == arity => {
                    (start, values.tuple(start))
                }
                Some(&Frame::Map { size, start })
                    if size.checked_mul(2) == Some(values.len() - start) =>
                {
                    (start, values.map(start).ok_or(Corrupt)?)
                }
                _ => break,
            };
            frames.pop();
            values.truncate(start);
            values.push(built);
            finished = built;
        }
        if frames.is_empty() {
            // One whole term read: the one value left.
            return if values.len() == 1 {
                Ok(finished)
            } else {
                Err(Corrupt)
            };
        }
    }
    Err(Corrupt)
}

pub(crate) fn make_bignum<'a>(env: Env<'a>, negative: bool, magnitude: &[u8]) -> Option<Term<'a>> {
    let mut etf = Vec::with_capacity(magnitude.len() + 8);
    etf.push(131);
    if magnitude.len() <= 255 {
        etf.extend_from_slice(&[110, magnitude.len() as u8]);
    } else {
        etf.push(111);
        etf.extend_from_slice(&(magnitude.len() as u32).to_be_bytes());
    }
    etf.push(u8::from(negative));
    etf.extend(magnitude.iter().rev());
    env.binary_to_term(&etf).map(|(term, _)| term)
}

fn make_atom<'a>(env: Env<'a>, text: Escaped) -> Option<Term<'a>> {
    let utf8 = match text.as_borrowed() {
        Some(plain) => std::borrow::Cow::Borrowed(plain),
        None => std::borrow::Cow::Owned(text.to_vec()),
    };
    if utf8.is_ascii() {
        return Atom::from_bytes(env, &utf8)
            .ok()
            .map(|atom| atom.encode(env));
    }
    let chars = std::str::from_utf8(&utf8).ok()?;
    if chars.chars().all(|c| (c as u32) < 256) {
        let latin1: Vec<u8> = chars.chars().map(|c| c as u8).collect();
        return Atom::from_bytes(env, &latin1)
            .ok()
            .map(|atom| atom.encode(env));
    }
    // Beyond Latin-1: build it from its external format, as NIF API 2.16 cannot.
    let mut etf = vec![131, 118];
    etf.extend_from_slice(&(utf8.len() as u16).to_be_bytes());
    etf.extend_from_slice(&utf8);
    env.binary_to_term(&etf).map(|(term, _)| term)
}
