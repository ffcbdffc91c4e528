//! Erlang terms to and from term-key elements (`guild_kit_core::term_key`).
//!
//! Both directions walk the term with an explicit heap stack, never native recursion, so
//! nesting depth is bounded by memory rather than by the scheduler's C stack.

use std::cell::RefCell;

use guild_kit_core::key_tree::MAX_ELEMENT_LEN;
use guild_kit_core::term_key::{Element, Escaped, Integer, KeyEncoder, KeyReader, Number, Token};
use rustler::sys::ErlNifTerm;
use rustler::types::binary::NewBinary;
use rustler::{Atom, Binary, Encoder, Env, Term, TermType};

use crate::error::Error;
use crate::raw::{self, TermBuffer};
use crate::schedule::{Call, Exit};

/// How much work a walk may do on a normal scheduler before it gives up and asks to be
/// rerun on a dirty one. One unit is a term node or 16 bytes of binary or atom text;
/// 4,096 units take roughly 50 µs.
pub const NORMAL_BUDGET: usize = 4096;

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

enum Work<'a> {
    Term(Term<'a>, bool),
    ListTail(Term<'a>, bool),
    BeginMapKey,
    EndMapKey,
    AssembleMap { values: Vec<Term<'a>>, exact: bool },
}

impl From<EncodeError> for Exit {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::Invalid(error) => error.into(),
            EncodeError::OverBudget => Exit::Dirty,
        }
    }
}

/// Encodes a term to store, within the normal budget unless `call` is dirty. A term
/// that cannot be stored raises.
pub fn encode_arg(call: &Call, term: Term) -> Result<Element, Exit> {
    Ok(encode(term, call.budget(NORMAL_BUDGET))?)
}

/// Encodes a term to look up, within the normal budget unless `call` is dirty.
/// `Ok(None)` when the term cannot be stored, and so cannot be present.
pub fn encode_lookup(call: &Call, term: Term) -> Result<Option<Element>, Exit> {
    match encode(term, call.budget(NORMAL_BUDGET)) {
        Ok(element) => Ok(Some(element)),
        Err(EncodeError::Invalid(_)) => Ok(None),
        Err(EncodeError::OverBudget) => Err(Exit::Dirty),
    }
}

/// Encodes `term` into an element. `budget` limits the work (see [`NORMAL_BUDGET`]);
/// `None` means unlimited (dirty schedulers).
pub fn encode(term: Term, budget: Option<usize>) -> Result<Element, EncodeError> {
    // Most keys are a scalar or a flat tuple of scalars (a member-list key such as
    // `{rank, name, id}`): encode those without the work stack and its allocations.
    let mut flat = KeyEncoder::new();
    let element = if encode_flat(term, &mut flat)? {
        flat.finish()
    } else {
        encode_nested(term, budget)?
    };
    if element.as_bytes().len() > MAX_ELEMENT_LEN {
        return Err(too_large());
    }
    Ok(element)
}

fn too_large() -> EncodeError {
    Error::TermTooLarge {
        limit: MAX_ELEMENT_LEN,
    }
    .into()
}

/// Encodes a scalar, or a tuple of at most 16 scalars. Returns `false` (leaving `out` in
/// an unspecified state) for anything else.
fn encode_flat(term: Term, out: &mut KeyEncoder) -> Result<bool, EncodeError> {
    if encode_scalar(term, false, out)? {
        return Ok(true);
    }
    let Some(elements) = raw::tuple_elements(term) else {
        return Ok(false);
    };
    if elements.len() > 16 {
        return Ok(false);
    }
    out.push_tuple(elements.len());
    for element in elements.iter() {
        if !encode_scalar(element, false, out)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes `term` if it is a number, atom or binary and returns whether it was.
fn encode_scalar(term: Term, exact: bool, out: &mut KeyEncoder) -> Result<bool, Error> {
    match term.get_type() {
        TermType::Integer | TermType::Float | TermType::Atom | TermType::Binary => {
            let mut no_children = Vec::new();
            encode_node(term, exact, out, &mut no_children)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn encode_nested(term: Term, budget: Option<usize>) -> Result<Element, EncodeError> {
    let mut spent = 0usize;
    let budget = budget.unwrap_or(usize::MAX);
    let mut stack = vec![Work::Term(term, false)];
    // The encoder being written is the last one; map keys get their own.
    let mut encoders = vec![KeyEncoder::new()];
    let mut finished_keys: Vec<KeyEncoder> = Vec::new();
    while let Some(work) = stack.pop() {
        spent += 1;
        if spent > budget {
            return Err(EncodeError::OverBudget);
        }
        let out = encoders.last_mut().expect("an encoder is always open");
        match work {
            Work::Term(term, exact) => {
                spent += encode_node(term, exact, out, &mut stack)?;
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
            Work::BeginMapKey => encoders.push(KeyEncoder::new()),
            Work::EndMapKey => {
                let key = encoders.pop().expect("opened by BeginMapKey");
                finished_keys.push(key);
            }
            Work::AssembleMap { values, exact } => {
                let keys = finished_keys.split_off(finished_keys.len() - values.len());
                let order = out.push_map(keys);
                for &i in order.iter().rev() {
                    stack.push(Work::Term(values[i], exact));
                }
            }
        }
        // Stop early rather than build a key that will be refused anyway.
        if encoders
            .last()
            .is_some_and(|e| e.key_len() > MAX_ELEMENT_LEN)
        {
            return Err(too_large());
        }
    }
    Ok(encoders.pop().expect("the root encoder").finish())
}

/// Writes one node and pushes the work for its children. Returns extra budget spent.
fn encode_node<'a>(
    term: Term<'a>,
    exact: bool,
    out: &mut KeyEncoder,
    stack: &mut Vec<Work<'a>>,
) -> Result<usize, Error> {
    match term.get_type() {
        TermType::Integer => {
            if let Ok(small) = term.decode::<i64>() {
                out.push_number(Number::Int(small), exact);
            } else if let Ok(unsigned) = term.decode::<u64>() {
                out.push_number(Number::UInt(unsigned), exact);
            } else {
                let (negative, magnitude) = bignum_parts(term).ok_or(Error::Corrupt)?;
                out.push_number(
                    Number::Big {
                        negative,
                        magnitude: &magnitude,
                    },
                    exact,
                );
                return Ok(magnitude.len() / 16);
            }
        }
        TermType::Float => {
            let float = term.decode::<f64>().map_err(|_| Error::Corrupt)?;
            out.push_number(Number::Float(float), exact);
        }
        TermType::Atom => {
            push_atom(term, out).ok_or(Error::Corrupt)?;
        }
        TermType::Binary => {
            let binary = Binary::from_term(term).map_err(|_| Error::UnsupportedTerm {
                kind: "a bitstring that is not a whole number of bytes",
            })?;
            out.push_binary(binary.as_slice());
            return Ok(binary.len() / 16);
        }
        TermType::Tuple => {
            let elements = raw::tuple_elements(term).ok_or(Error::Corrupt)?;
            out.push_tuple(elements.len());
            stack.extend(
                elements
                    .iter()
                    .rev()
                    .map(|element| Work::Term(element, exact)),
            );
        }
        TermType::List => {
            out.push_list_start();
            stack.push(Work::ListTail(term, exact));
        }
        TermType::Map => {
            let mut keys = Vec::new();
            let mut values = Vec::new();
            for (key, value) in rustler::types::map::MapIterator::new(term).ok_or(Error::Corrupt)? {
                keys.push(key);
                values.push(value);
            }
            stack.push(Work::AssembleMap { values, exact });
            for key in keys.into_iter().rev() {
                stack.push(Work::EndMapKey);
                stack.push(Work::Term(key, true));
                stack.push(Work::BeginMapKey);
            }
        }
        TermType::Pid => return Err(Error::UnsupportedTerm { kind: "a pid" }),
        TermType::Port => return Err(Error::UnsupportedTerm { kind: "a port" }),
        TermType::Ref => {
            return Err(Error::UnsupportedTerm {
                kind: "a reference",
            })
        }
        TermType::Fun => return Err(Error::UnsupportedTerm { kind: "a fun" }),
        TermType::Unknown => {
            return Err(Error::UnsupportedTerm {
                kind: "a term of unknown type",
            })
        }
    }
    Ok(0)
}

/// Sign and big-endian magnitude of a bignum, read from its external term format
/// (the NIF API has no direct accessor).
fn bignum_parts(term: Term) -> Option<(bool, Vec<u8>)> {
    let etf = term.to_binary();
    let bytes = etf.as_slice();
    let (len, sign, digits_at) = match bytes.get(1)? {
        110 => (*bytes.get(2)? as usize, *bytes.get(3)?, 4),
        111 => (
            u32::from_be_bytes(bytes.get(2..6)?.try_into().ok()?) as usize,
            *bytes.get(6)?,
            7,
        ),
        _ => return None,
    };
    let mut magnitude = bytes.get(digits_at..digits_at + len)?.to_vec();
    magnitude.reverse(); // ETF digits are little-endian
    Some((sign != 0, magnitude))
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

/// Rebuilds the term stored as `element`.
///
/// Time: O(element length).
pub fn decode<'a>(env: Env<'a>, element: &[u8]) -> Result<Term<'a>, Error> {
    let mut reader = KeyReader::new(element).map_err(|_| Error::Corrupt)?;
    let term = decode_next(env, &mut reader)?;
    if !reader.at_end() {
        return Err(Error::Corrupt);
    }
    Ok(term)
}

/// Reads one whole term from `reader`, leaving it after that term.
///
/// Time: O(term size).
pub fn decode_next<'a>(env: Env<'a>, reader: &mut KeyReader) -> Result<Term<'a>, Error> {
    thread_local! {
        // Reused between calls on the same scheduler thread: decoding a small term then
        // allocates nothing.
        static SCRATCH: RefCell<(Vec<Frame>, Vec<ErlNifTerm>)> =
            const { RefCell::new((Vec::new(), Vec::new())) };
    }
    const KEEP_CAPACITY: usize = 1024;
    SCRATCH
        .with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                let (frames, storage) = &mut *scratch;
                frames.clear();
                let mut values = TermBuffer::reuse(env, std::mem::take(storage));
                let term = decode_with(env, reader, frames, &mut values);
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
            ),
        })
        .ok_or(Error::Corrupt)
}

fn decode_with<'a>(
    env: Env<'a>,
    reader: &mut KeyReader,
    frames: &mut Vec<Frame>,
    values: &mut TermBuffer<'a>,
) -> Option<Term<'a>> {
    while let Some(token) = reader.next().ok()? {
        let value = match token {
            Token::Integer(Integer::I64(v)) => v.encode(env),
            Token::Integer(Integer::U64(v)) => v.encode(env),
            Token::Integer(Integer::Big {
                negative,
                magnitude,
            }) => make_bignum(env, negative, &magnitude)?,
            Token::Float(f) => f.encode(env),
            Token::Atom(text) => make_atom(env, text)?,
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
                    return None;
                };
                let list = values.list(start);
                values.truncate(start);
                list
            }
        };
        values.push(value);
        // A finished term may complete the tuples and maps it closes.
        loop {
            let (start, built) = match frames.last() {
                Some(&Frame::Tuple { arity, start }) if values.len() - start == arity => {
                    (start, values.tuple(start))
                }
                Some(&Frame::Map { size, start }) if values.len() - start == 2 * size => {
                    (start, values.map(start)?)
                }
                _ => break,
            };
            frames.pop();
            values.truncate(start);
            values.push(built);
        }
        if frames.is_empty() {
            break; // one whole term read
        }
    }
    if !frames.is_empty() || values.len() != 1 {
        return None;
    }
    values.last()
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
