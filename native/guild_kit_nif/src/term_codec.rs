//! Erlang terms to and from term-key elements (`guild_kit_core::term_key`).
//!
//! Both directions walk the term with an explicit heap stack, never native recursion, so
//! nesting depth is bounded by memory rather than by the scheduler's C stack.

use std::cell::RefCell;
use std::os::raw::{c_int, c_uint};

use guild_kit_core::key_tree::MAX_ELEMENT_LEN;
use guild_kit_core::term_key::{Element, Escaped, Integer, KeyEncoder, KeyReader, Number, Token};
use rustler::sys::{self, ErlNifCharEncoding, ErlNifTerm};
use rustler::{Binary, Encoder, Env, Term, TermType};

use crate::error::Error;

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

/// Encodes `term` for a NIF that may run on either kind of scheduler: with the normal
/// budget unless `dirty`, and `Ok(None)` when that budget ran out.
pub fn encode_arg(term: Term, dirty: bool) -> Result<Option<Element>, Error> {
    match encode(term, (!dirty).then_some(NORMAL_BUDGET)) {
        Ok(element) => Ok(Some(element)),
        Err(EncodeError::OverBudget) => Ok(None),
        Err(EncodeError::Invalid(error)) => Err(error),
    }
}

/// Encodes a term to look up, or gives the reply to return at once: `guild_kit_dirty`
/// when a normal-scheduler budget ran out, `absent` when the term cannot be stored (and
/// so cannot be present).
pub fn encode_lookup<'a>(
    env: Env<'a>,
    term: Term<'a>,
    dirty: bool,
    absent: Term<'a>,
) -> Result<Element, Term<'a>> {
    match encode_arg(term, dirty) {
        Ok(Some(element)) => Ok(element),
        Ok(None) => Err(crate::atoms::guild_kit_dirty().encode(env)),
        Err(_) => Err(absent),
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
    let Some(elements) = tuple_elements(term) else {
        return Ok(false);
    };
    if elements.len() > 16 {
        return Ok(false);
    }
    out.push_tuple(elements.len());
    for &element in elements {
        // SAFETY: the element belongs to the tuple, alive for the whole NIF call.
        if !encode_scalar(unsafe { Term::new(term.get_env(), element) }, false, out)? {
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
            encode_node(term.get_env(), term, exact, out, &mut no_children)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn encode_nested(term: Term, budget: Option<usize>) -> Result<Element, EncodeError> {
    let env = term.get_env();
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
                spent += encode_node(env, term, exact, out, &mut stack)?;
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
    env: Env<'a>,
    term: Term<'a>,
    exact: bool,
    out: &mut KeyEncoder,
    stack: &mut Vec<Work<'a>>,
) -> Result<usize, Error> {
    let raw_env = env.as_c_arg();
    let raw = term.as_c_arg();
    match term.get_type() {
        TermType::Integer => {
            let mut small: i64 = 0;
            let mut unsigned: u64 = 0;
            // SAFETY: env and term come from the running NIF call.
            if unsafe { sys::enif_get_int64(raw_env, raw, &mut small) } != 0 {
                out.push_number(Number::Int(small), exact);
            } else if unsafe { sys::enif_get_uint64(raw_env, raw, &mut unsigned) } != 0 {
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
            let mut f: f64 = 0.0;
            // SAFETY: as above.
            unsafe { sys::enif_get_double(raw_env, raw, &mut f) };
            out.push_number(Number::Float(f), exact);
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
            let elements = tuple_elements(term).ok_or(Error::Corrupt)?;
            out.push_tuple(elements.len());
            for &element in elements.iter().rev() {
                // SAFETY: the element belongs to the tuple, alive for the whole NIF call.
                stack.push(Work::Term(unsafe { Term::new(env, element) }, exact));
            }
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

/// The elements of a tuple, or `None` when `term` is not one.
pub(crate) fn tuple_elements<'a>(term: Term<'a>) -> Option<&'a [ErlNifTerm]> {
    let mut arity: c_int = 0;
    let mut elements: *const ErlNifTerm = std::ptr::null();
    // SAFETY: on success `elements` points at `arity` terms owned by the tuple, which
    // lives as long as the NIF call (the `'a` of the term).
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
    Some(if arity == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(elements, arity as usize) }
    })
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
    let env = term.get_env().as_c_arg();
    let raw = term.as_c_arg();
    let mut len: c_uint = 0;
    // SAFETY: env and term come from the running NIF call; the buffer holds len + 1.
    let latin1 = unsafe {
        sys::enif_get_atom_length(env, raw, &mut len, ErlNifCharEncoding::ERL_NIF_LATIN1)
    };
    if latin1 != 0 {
        let mut buf = [0u8; 256];
        let written = unsafe {
            sys::enif_get_atom(
                env,
                raw,
                buf.as_mut_ptr() as *mut _,
                len + 1,
                ErlNifCharEncoding::ERL_NIF_LATIN1,
            )
        };
        if written == 0 {
            return None;
        }
        out.push_atom_latin1(&buf[..len as usize]);
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
                let (frames, values) = &mut *scratch;
                frames.clear();
                values.clear();
                let term = decode_with(env, reader, frames, values);
                if values.capacity() > KEEP_CAPACITY || frames.capacity() > KEEP_CAPACITY {
                    *scratch = (Vec::new(), Vec::new());
                }
                term
            }
            Err(_) => decode_with(env, reader, &mut Vec::new(), &mut Vec::new()),
        })
        .ok_or(Error::Corrupt)
}

fn decode_with<'a>(
    env: Env<'a>,
    reader: &mut KeyReader,
    frames: &mut Vec<Frame>,
    values: &mut Vec<ErlNifTerm>,
) -> Option<Term<'a>> {
    let raw_env = env.as_c_arg();
    while let Some(token) = reader.next().ok()? {
        let value = match token {
            Token::Integer(Integer::I64(v)) => unsafe { sys::enif_make_int64(raw_env, v) },
            Token::Integer(Integer::U64(v)) => unsafe { sys::enif_make_uint64(raw_env, v) },
            Token::Integer(Integer::Big {
                negative,
                magnitude,
            }) => make_bignum(env, negative, &magnitude)?,
            Token::Float(f) => unsafe { sys::enif_make_double(raw_env, f) },
            Token::Atom(text) => make_atom(env, text)?,
            Token::Binary(bytes) => {
                let mut term: ErlNifTerm = ErlNifTerm::default();
                // SAFETY: enif_make_new_binary returns a writable buffer of that length.
                let data = unsafe { sys::enif_make_new_binary(raw_env, bytes.len(), &mut term) };
                if !bytes.is_empty() {
                    let dst = unsafe { std::slice::from_raw_parts_mut(data, bytes.len()) };
                    bytes.copy_to(dst);
                }
                term
            }
            Token::Tuple(0) => unsafe { sys::enif_make_tuple_from_array(raw_env, [].as_ptr(), 0) },
            Token::Tuple(arity) => {
                frames.push(Frame::Tuple {
                    arity,
                    start: values.len(),
                });
                continue;
            }
            Token::Map(0) => unsafe { sys::enif_make_new_map(raw_env) },
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
                let items = &values[start..];
                let list = unsafe {
                    sys::enif_make_list_from_array(raw_env, items.as_ptr(), items.len() as c_uint)
                };
                values.truncate(start);
                list
            }
        };
        values.push(value);
        // A finished term may complete the tuples and maps it closes.
        loop {
            let (start, built) = match frames.last() {
                Some(&Frame::Tuple { arity, start }) if values.len() - start == arity => {
                    let items = &values[start..];
                    let tuple = unsafe {
                        sys::enif_make_tuple_from_array(raw_env, items.as_ptr(), arity as c_uint)
                    };
                    (start, tuple)
                }
                Some(&Frame::Map { size, start }) if values.len() - start == 2 * size => {
                    let (keys, vals) = values[start..].split_at(size);
                    let mut map: ErlNifTerm = ErlNifTerm::default();
                    let ok = unsafe {
                        sys::enif_make_map_from_arrays(
                            raw_env,
                            keys.as_ptr(),
                            vals.as_ptr(),
                            size,
                            &mut map,
                        )
                    };
                    if ok == 0 {
                        return None;
                    }
                    (start, map)
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
    Some(unsafe { Term::new(env, values[0]) })
}

pub(crate) fn make_bignum(env: Env, negative: bool, magnitude: &[u8]) -> Option<ErlNifTerm> {
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
    env.binary_to_term(&etf).map(|(term, _)| term.as_c_arg())
}

fn make_atom(env: Env, text: Escaped) -> Option<ErlNifTerm> {
    let utf8 = match text.as_borrowed() {
        Some(plain) => std::borrow::Cow::Borrowed(plain),
        None => std::borrow::Cow::Owned(text.to_vec()),
    };
    let raw_env = env.as_c_arg();
    if utf8.is_ascii() {
        // SAFETY: the pointer and length describe `utf8`.
        return Some(unsafe {
            sys::enif_make_atom_len(raw_env, utf8.as_ptr() as *const _, utf8.len())
        });
    }
    let chars = std::str::from_utf8(&utf8).ok()?;
    if chars.chars().all(|c| (c as u32) < 256) {
        let latin1: Vec<u8> = chars.chars().map(|c| c as u8).collect();
        return Some(unsafe {
            sys::enif_make_atom_len(raw_env, latin1.as_ptr() as *const _, latin1.len())
        });
    }
    // Beyond Latin-1: build it from its external format, as NIF API 2.16 cannot.
    let mut etf = vec![131, 118];
    etf.extend_from_slice(&(utf8.len() as u16).to_be_bytes());
    etf.extend_from_slice(&utf8);
    env.binary_to_term(&etf).map(|(term, _)| term.as_c_arg())
}
