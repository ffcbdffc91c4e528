//! Order-preserving byte keys for Erlang terms.
//!
//! A *key* is a byte string built from a term such that, for any two supported terms `a`
//! and `b`:
//!
//! 1. **Order**: `key(a).cmp(key(b))` (plain `memcmp`) equals the Erlang term order of
//!    `a` and `b` (`a < b`, `a == b`, `a > b`).
//! 2. **Equality**: `key(a) == key(b)` exactly when `a == b` in Erlang (so `1` and `1.0`,
//!    or `0.0` and `-0.0`, share a key).
//! 3. **Prefix freedom**: no key is a proper prefix of another, so keys concatenate
//!    without separators and a comparison is always decided inside both keys.
//!
//! Because `==` erases the difference between `1` and `1.0`, a key alone cannot give the
//! stored term back. An *element* is therefore `varint(hint length) ++ hint ++ key`, where
//! the hint (usually empty, so the element is one `00` byte longer than its key) records
//! which numbers were floats. [`element_key`] finds the key inside an element;
//! [`KeyReader`] rebuilds the exact term.
//!
//! # Layout
//!
//! | term | bytes |
//! |---|---|
//! | integer / float | sign tag, then the magnitude (below) |
//! | atom | `0x20`, UTF-8 text escaped, `00 00` |
//! | tuple | `0x60`, arity as an ordered varint, elements |
//! | map | `0x70`, size as an ordered varint, keys in *exact* mode sorted by key, then the values in that order |
//! | list | `0x80`, `01 element` per element, `00` |
//! | binary | `0x90`, bytes escaped, `00 00` |
//!
//! Tags follow Erlang's type order: number < atom < tuple < map < nil < list < binary
//! (`[]` encodes as `80 00`, below every non-empty list). Escaping turns each `00` into
//! `00 FF`, so the terminator `00 00` sorts below any continuation.
//!
//! A nonzero number is `2^E × 1.f`. Its magnitude is `E + EXPONENT_BIAS` as an ordered
//! varint followed by the bits of `f` (trailing zeros dropped) in groups of seven, each
//! byte `bits << 1 | more`, where `more` is 1 on every group but the last. A shorter
//! fraction sorts first exactly when its missing bits are zeros. Negative numbers store
//! the complement of the magnitude bytes, which reverses their order and keeps them
//! prefix-free. Integers and floats share this form, so comparisons between them are
//! exact: `2^53 + 1 > 2^53 * 1.0`, as in Erlang.
//!
//! Map keys are compared with `=:=` semantics, in which all integers sort before all
//! floats. Inside map keys (*exact mode*) floats therefore take their own tags
//! (`0x13..=0x15`) above the integer tags.
//!
//! The hint is a sequence of varints, one per float that the key leaves ambiguous, in key
//! order: `ordinal << 1 | negative_zero`, where `ordinal` counts the number tokens of the
//! key from zero.

/// Type tags. Their numeric order is Erlang's type order.
pub mod tag {
    /// Negative number (integer, or float outside map keys).
    pub const NUMBER_NEG: u8 = 0x10;
    /// Zero (integer, or float outside map keys).
    pub const NUMBER_ZERO: u8 = 0x11;
    /// Positive number (integer, or float outside map keys).
    pub const NUMBER_POS: u8 = 0x12;
    /// Negative float inside a map key.
    pub const EXACT_FLOAT_NEG: u8 = 0x13;
    /// Zero float inside a map key.
    pub const EXACT_FLOAT_ZERO: u8 = 0x14;
    /// Positive float inside a map key.
    pub const EXACT_FLOAT_POS: u8 = 0x15;
    /// Atom.
    pub const ATOM: u8 = 0x20;
    /// Tuple.
    pub const TUPLE: u8 = 0x60;
    /// Map.
    pub const MAP: u8 = 0x70;
    /// List, including `[]`.
    pub const LIST: u8 = 0x80;
    /// Binary.
    pub const BINARY: u8 = 0x90;
}

const LIST_CONS: u8 = 0x01;
const LIST_END: u8 = 0x00;
const ESCAPE_ZERO: u8 = 0xFF;
/// Makes `E` non-negative for every float (the smallest subnormal is `2^-1074`).
const EXPONENT_BIAS: i64 = 1100;
/// Erlang integers have fewer bits than this (OTP 25 raises `system_limit` at 2^25 bits;
/// the margin covers later releases).
const MAX_INTEGER_BITS: usize = 1 << 28;

/// Why a byte string is not a valid element. Elements come from [`KeyEncoder`], so this
/// only reports corruption or a bug, never user input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptKey;

/// The key inside an element (what comparisons use): the bytes after the hint.
///
/// Time: O(1).
#[inline]
pub fn element_key(element: &[u8]) -> &[u8] {
    match element.first() {
        // The common case: a one-byte hint length.
        Some(&hint_len) if hint_len < 0x80 => element.get(1 + hint_len as usize..).unwrap_or(&[]),
        Some(_) => {
            let mut pos = 0;
            read_plain_varint(element, &mut pos)
                .ok()
                .and_then(|hint_len| element.get(pos + usize::try_from(hint_len).ok()?..))
                .unwrap_or(&[])
        }
        None => &[],
    }
}

/// The hint inside an element (opaque bytes before the key).
///
/// Time: O(1).
pub fn element_hint(element: &[u8]) -> &[u8] {
    let mut pos = 0;
    read_plain_varint(element, &mut pos)
        .ok()
        .and_then(|hint_len| element.get(pos..pos + usize::try_from(hint_len).ok()?))
        .unwrap_or(&[])
}

/// Builds an element from a hint and a key. Data structures use the hint slot to carry
/// bytes that travel with a key without taking part in its order.
pub fn element_from_parts(hint: &[u8], key: &[u8]) -> Vec<u8> {
    let mut element = Vec::with_capacity(hint.len() + key.len() + 2);
    push_plain_varint(&mut element, hint.len() as u64);
    element.extend_from_slice(hint);
    element.extend_from_slice(key);
    element
}

/// A lookup key: the bytes that comparisons use, without a hint.
///
/// Lookups take a `Key` and stores take an [`ElementRef`], so the two cannot be mixed
/// up: an element's bytes passed as a probe would compare its hint as if it were part
/// of the term. Keys order by their bytes, which is Erlang term order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key<'a>(&'a [u8]);

/// The byte-view accessors of a borrowed-bytes newtype, each with the doc comment
/// given before its name (the two newtypes' bytes mean different things).
macro_rules! byte_view {
    (
        $view:ident,
        $(#[$from_bytes:meta])* from_bytes,
        $(#[$as_bytes:meta])* as_bytes,
        $(#[$len:meta])* len,
        $(#[$is_empty:meta])* is_empty $(,)?
    ) => {
        impl<'a> $view<'a> {
            $(#[$from_bytes])*
            #[inline]
            pub fn from_bytes(bytes: &'a [u8]) -> Self {
                $view(bytes)
            }

            $(#[$as_bytes])*
            #[inline]
            pub fn as_bytes(self) -> &'a [u8] {
                self.0
            }

            $(#[$len])*
            #[inline]
            pub fn len(self) -> usize {
                self.0.len()
            }

            $(#[$is_empty])*
            #[inline]
            pub fn is_empty(self) -> bool {
                self.0.is_empty()
            }
        }
    };
}

byte_view! {
    Key,
    /// Declares `bytes` a key (as built by [`KeyEncoder`], or cut from one by a data
    /// structure that knows its layout).
    from_bytes,
    /// The bytes.
    as_bytes,
    /// Length in bytes.
    len,
    /// True for the empty key (which no term has).
    is_empty,
}

/// A stored element, borrowed: `varint(hint length) ++ hint ++ key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElementRef<'a>(&'a [u8]);

byte_view! {
    ElementRef,
    /// Declares `bytes` an element (as built by [`KeyEncoder`] or
    /// [`element_from_parts`]). Bytes that are not one read as an element with an
    /// empty or truncated key; they never cause a panic.
    from_bytes,
    /// The whole element.
    as_bytes,
    /// Length in bytes, hint included.
    len,
    /// True for zero bytes (never an element built by [`KeyEncoder`]).
    is_empty,
}

impl<'a> ElementRef<'a> {
    /// The key inside the element: what it is ordered and looked up by.
    ///
    /// Time: O(1).
    #[inline]
    pub fn key(self) -> Key<'a> {
        Key(element_key(self.0))
    }

    /// The hint inside the element.
    ///
    /// Time: O(1).
    #[inline]
    pub fn hint(self) -> &'a [u8] {
        element_hint(self.0)
    }

    /// An owned copy.
    pub fn to_element(self) -> Element {
        let key_start = self.0.len() - element_key(self.0).len();
        Element {
            bytes: self.0.to_vec(),
            key_start,
        }
    }
}

impl<'a> From<&'a Element> for ElementRef<'a> {
    #[inline]
    fn from(element: &'a Element) -> Self {
        ElementRef(element.as_bytes())
    }
}

impl<'a> From<ElementRef<'a>> for Key<'a> {
    #[inline]
    fn from(element: ElementRef<'a>) -> Self {
        element.key()
    }
}

impl<'a> From<&'a Element> for Key<'a> {
    #[inline]
    fn from(element: &'a Element) -> Self {
        Key(element.key())
    }
}

/// Elements packed back to back in one buffer, in the order they were pushed.
///
/// A million elements built one by one would be a million allocations, as costly to
/// free as to make; here they are two vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    bytes: Vec<u8>,
    /// `ends[i]` is the end offset of element `i` in `bytes`.
    ends: Vec<usize>,
}

impl Elements {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a copy of `element`.
    ///
    /// Time: O(element length), amortized.
    pub fn push<'e>(&mut self, element: impl Into<ElementRef<'e>>) {
        self.bytes.extend_from_slice(element.into().as_bytes());
        self.ends.push(self.bytes.len());
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Element `i`, if there is one.
    ///
    /// Time: O(1).
    pub fn get(&self, i: usize) -> Option<ElementRef<'_>> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(ElementRef(&self.bytes[start..end]))
    }

    /// The elements in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = ElementRef<'_>> + ExactSizeIterator {
        (0..self.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            ElementRef(&self.bytes[start..self.ends[i]])
        })
    }
}

/// An encoded term: `varint(hint length) ++ hint ++ key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    bytes: Vec<u8>,
    key_start: usize,
}

impl Element {
    /// An element from a hint (as returned by [`Element::hint`]) and a key.
    pub fn from_parts(hint: &[u8], key: &[u8]) -> Element {
        let bytes = element_from_parts(hint, key);
        Element {
            key_start: bytes.len() - key.len(),
            bytes,
        }
    }

    /// The element of a number on its own (outside map keys): what
    /// [`KeyEncoder::push_number`] with `exact == false` and [`KeyEncoder::finish`] make.
    ///
    /// Time: O(size of the number).
    pub fn number(number: Number<'_>) -> Element {
        let mut encoder = KeyEncoder::new();
        encoder.push_number(number, false);
        encoder.finish()
    }

    /// The key alone: what comparisons and lookups use.
    pub fn key(&self) -> &[u8] {
        &self.bytes[self.key_start..]
    }

    /// The whole element: what is stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The hint alone (float marks; empty for most terms).
    pub fn hint(&self) -> &[u8] {
        element_hint(&self.bytes)
    }

    /// The element's buffer, for a later [`KeyEncoder::with_buffer`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    /// The key, typed for lookups (see [`Key`]).
    pub fn lookup_key(&self) -> Key<'_> {
        Key(self.key())
    }
}

/// A number as the NIF layer reads it from a term.
#[derive(Debug, Clone, Copy)]
pub enum Number<'a> {
    /// An integer that fits in `i64`.
    Int(i64),
    /// A positive integer in `(i64::MAX, u64::MAX]`.
    UInt(u64),
    /// Any integer, as a sign and a big-endian magnitude (leading zero bytes allowed).
    Big {
        /// True for negative values.
        negative: bool,
        /// Big-endian magnitude.
        magnitude: &'a [u8],
    },
    /// A float (Erlang floats are always finite).
    Float(f64),
}

/// A map whose keys a [`KeyEncoder`] is writing in place, back to back after its header
/// ([`KeyEncoder::begin_map`]): the keys of nested maps are written once, where they
/// end up, rather than built apart and copied into each enclosing map.
#[derive(Debug, Clone)]
pub struct OpenMap {
    /// Where the first key starts: key bytes, number tokens and float marks so far.
    start: Mark,
    /// Where each finished key ends.
    ends: Vec<Mark>,
}

/// A position in a [`KeyEncoder`]: bytes of its buffer, number tokens and float marks.
#[derive(Debug, Clone, Copy)]
struct Mark {
    bytes: usize,
    numbers: u32,
    marks: usize,
}

impl OpenMap {
    /// Keys completed so far.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True before the first key is complete.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where key `i` starts and ends.
    fn span(&self, i: usize) -> (Mark, Mark) {
        let start = if i == 0 { self.start } else { self.ends[i - 1] };
        (start, self.ends[i])
    }
}

/// Builds one element (a key plus its hint).
///
/// The encoder is a flat writer: the caller walks the term (with an explicit stack) and
/// calls one method per node, in pre-order. A map's keys are written in place between
/// [`KeyEncoder::begin_map`] and [`KeyEncoder::end_map`], which puts them in key order;
/// its values follow, in that order.
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    /// One byte reserved for the hint length (zero when there is no hint), then the key.
    key: Vec<u8>,
    /// Number tokens written so far (the ordinal of the next one).
    numbers: u32,
    /// `(ordinal, negative_zero)` of each ambiguous float, in order.
    float_marks: Vec<(u32, bool)>,
}

impl Default for KeyEncoder {
    fn default() -> Self {
        let mut key = Vec::with_capacity(32);
        key.push(0);
        KeyEncoder {
            key,
            numbers: 0,
            float_marks: Vec::new(),
        }
    }
}

impl KeyEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty encoder that writes into `buffer` (emptied first): with the buffer of an
    /// element no longer needed ([`Element::into_buffer`]), encoding allocates nothing.
    pub fn with_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        buffer.push(0);
        KeyEncoder {
            key: buffer,
            numbers: 0,
            float_marks: Vec::new(),
        }
    }

    /// Bytes of key written so far (the hint is not counted).
    pub fn key_len(&self) -> usize {
        self.key.len() - 1
    }

    /// Writes a number. `exact` is true inside map keys.
    ///
    /// Time: O(size of the number).
    pub fn push_number(&mut self, number: Number<'_>, exact: bool) {
        let ordinal = self.numbers;
        self.numbers += 1;
        match number {
            Number::Int(v) => {
                push_integer_u64(&mut self.key, v < 0, v.unsigned_abs());
            }
            Number::UInt(v) => push_integer_u64(&mut self.key, false, v),
            Number::Big {
                negative,
                magnitude,
            } => push_integer_big(&mut self.key, negative, magnitude),
            Number::Float(f) => {
                let negative_zero = f == 0.0 && f.is_sign_negative();
                push_float(&mut self.key, f, exact);
                if !exact || negative_zero {
                    self.float_marks.push((ordinal, negative_zero));
                }
            }
        }
    }

    /// Writes an atom from its UTF-8 text.
    pub fn push_atom(&mut self, utf8: &[u8]) {
        self.key.push(tag::ATOM);
        push_escaped(&mut self.key, utf8);
    }

    /// Writes an atom from Latin-1 text (what NIF API 2.16 returns), as UTF-8.
    pub fn push_atom_latin1(&mut self, latin1: &[u8]) {
        self.key.push(tag::ATOM);
        for &byte in latin1 {
            if byte < 0x80 {
                push_escaped_byte(&mut self.key, byte);
            } else {
                self.key.push(0xC0 | (byte >> 6));
                self.key.push(0x80 | (byte & 0x3F));
            }
        }
        self.key.extend_from_slice(&[0, 0]);
    }

    /// Writes a binary.
    pub fn push_binary(&mut self, bytes: &[u8]) {
        self.key.push(tag::BINARY);
        push_escaped(&mut self.key, bytes);
    }

    /// Starts a tuple; its `arity` elements follow.
    pub fn push_tuple(&mut self, arity: usize) {
        self.key.push(tag::TUPLE);
        push_ordered_varint(&mut self.key, arity as u64);
    }

    /// Starts a list; each element is announced by [`push_list_cons`](Self::push_list_cons)
    /// and the list ends with [`push_list_end`](Self::push_list_end).
    pub fn push_list_start(&mut self) {
        self.key.push(tag::LIST);
    }

    /// Announces the next list element.
    pub fn push_list_cons(&mut self) {
        self.key.push(LIST_CONS);
    }

    /// Ends a list.
    pub fn push_list_end(&mut self) {
        self.key.push(LIST_END);
    }

    /// Writes the header of a map of `size` entries; its keys follow, each written (in
    /// exact mode) and then closed with [`end_map_key`](Self::end_map_key), then
    /// [`end_map`](Self::end_map).
    pub fn begin_map(&mut self, size: usize) -> OpenMap {
        self.key.push(tag::MAP);
        push_ordered_varint(&mut self.key, size as u64);
        OpenMap {
            start: self.mark(),
            ends: Vec::with_capacity(size.min(4096)),
        }
    }

    /// Marks the key written since the last one (or since `begin_map`) as complete.
    pub fn end_map_key(&mut self, map: &mut OpenMap) {
        map.ends.push(self.mark());
    }

    /// The most work [`end_map`](Self::end_map) can take for `map`, in bytes read or
    /// written: none for a map of at most one key. Else the check for key order reads
    /// each key at most twice; a sort, each key at most twice per merge level, of which
    /// there are at most `ceil(log2(k)) + 1` for k keys; the move writes each key once.
    pub fn end_map_cost(&self, map: &OpenMap) -> usize {
        let count = map.len();
        if count < 2 {
            return 0;
        }
        let levels = (usize::BITS - (count - 1).leading_zeros()) as usize + 1;
        (self.key.len() - map.start.bytes).saturating_mul(2 + 2 * levels + 1)
    }

    /// Puts the keys of `map`, the last thing written, in key order. Returns the order
    /// in which the caller must then encode the values: `order[i]` is the index (in
    /// the order the keys were written) of the i-th key in key order.
    ///
    /// Time: O(k) key comparisons for k keys already in key order (a map small enough
    /// for the VM to keep its keys in term order, unless integers and floats mix);
    /// otherwise O(k log k) comparisons plus one move of the keys' bytes.
    pub fn end_map(&mut self, map: OpenMap) -> Vec<usize> {
        let count = map.len();
        let key = |i: usize| {
            let (start, end) = map.span(i);
            &self.key[start.bytes..end.bytes]
        };
        if (1..count).all(|i| key(i - 1) < key(i)) {
            return (0..count).collect();
        }
        let mut order: Vec<usize> = (0..count).collect();
        order.sort_by(|&a, &b| key(a).cmp(key(b)));

        let first = map.start;
        let keys = self.key.split_off(first.bytes);
        let marks = self.float_marks.split_off(first.marks);
        let mut numbers = first.numbers;
        for &i in &order {
            let (start, end) = map.span(i);
            self.key
                .extend_from_slice(&keys[start.bytes - first.bytes..end.bytes - first.bytes]);
            // Float marks count number tokens from the start of the whole element.
            self.float_marks.extend(
                marks[start.marks - first.marks..end.marks - first.marks]
                    .iter()
                    .map(|&(ordinal, negative_zero)| {
                        (ordinal - start.numbers + numbers, negative_zero)
                    }),
            );
            numbers += end.numbers - start.numbers;
        }
        order
    }

    fn mark(&self) -> Mark {
        Mark {
            bytes: self.key.len(),
            numbers: self.numbers,
            marks: self.float_marks.len(),
        }
    }

    /// The element: hint length, hint, key.
    pub fn finish(mut self) -> Element {
        if self.float_marks.is_empty() {
            // The reserved byte already says "no hint".
            return Element {
                bytes: self.key,
                key_start: 1,
            };
        }
        let mut hint = Vec::new();
        for &(ordinal, negative_zero) in &self.float_marks {
            push_plain_varint(
                &mut hint,
                (u64::from(ordinal) << 1) | u64::from(negative_zero),
            );
        }
        let mut bytes = Vec::with_capacity(hint.len() + self.key.len() + 4);
        push_plain_varint(&mut bytes, hint.len() as u64);
        bytes.extend_from_slice(&hint);
        let key_start = bytes.len();
        self.key.remove(0);
        bytes.append(&mut self.key);
        Element { bytes, key_start }
    }
}

fn push_escaped_byte(out: &mut Vec<u8>, byte: u8) {
    out.push(byte);
    if byte == 0 {
        out.push(ESCAPE_ZERO);
    }
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    let mut rest = bytes;
    // Copy runs without zero bytes in one go; most binaries have none.
    while let Some(zero) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..=zero]);
        out.push(ESCAPE_ZERO);
        rest = &rest[zero + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, 0]);
}

/// Writes `v` so that byte order equals numeric order and no encoding is a prefix of
/// another: 1 byte below 2^7, 2 below 2^14, 3 below 2^21, else `E0` and 8 bytes.
fn push_ordered_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v < 0x4000 {
        out.extend_from_slice(&[0x80 | (v >> 8) as u8, v as u8]);
    } else if v < 0x20_0000 {
        out.extend_from_slice(&[0xC0 | (v >> 16) as u8, (v >> 8) as u8, v as u8]);
    } else {
        out.push(0xE0);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn read_ordered_varint(bytes: &[u8], pos: &mut usize, complement: bool) -> Result<u64, CorruptKey> {
    let flip = if complement { 0xFF } else { 0 };
    let byte = |i: usize| bytes.get(i).map(|b| b ^ flip).ok_or(CorruptKey);
    let first = byte(*pos)?;
    let (value, width) = if first < 0x80 {
        (u64::from(first), 1)
    } else if first < 0xC0 {
        (
            (u64::from(first & 0x3F) << 8) | u64::from(byte(*pos + 1)?),
            2,
        )
    } else if first < 0xE0 {
        let v = (u64::from(first & 0x1F) << 16)
            | (u64::from(byte(*pos + 1)?) << 8)
            | u64::from(byte(*pos + 2)?);
        (v, 3)
    } else {
        let mut v = 0u64;
        for i in 1..=8 {
            v = (v << 8) | u64::from(byte(*pos + i)?);
        }
        (v, 9)
    };
    *pos += width;
    Ok(value)
}

/// LEB128, for the hint, which is never compared.
fn push_plain_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_plain_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, CorruptKey> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or(CorruptKey)?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CorruptKey)
}

/// Writes a nonzero magnitude `2^exponent × 1.f`, where the fraction bits of `f` are the
/// first `fraction_bits` bits (MSB first) of `fraction`, the last of them a one.
/// `complement` flips every written byte (negative numbers).
fn push_magnitude(
    out: &mut Vec<u8>,
    exponent: i64,
    fraction: &[u8],
    fraction_bits: usize,
    complement: bool,
) {
    let start = out.len();
    push_ordered_varint(out, (exponent + EXPONENT_BIAS) as u64);
    if fraction_bits == 0 {
        out.push(0);
    } else {
        let mut acc: u32 = 0; // pending bits, right-aligned
        let mut acc_bits = 0usize;
        let mut emitted = 0usize;
        let mut bytes = fraction.iter();
        while emitted < fraction_bits {
            while acc_bits < 7 {
                acc = (acc << 8) | u32::from(*bytes.next().unwrap_or(&0));
                acc_bits += 8;
            }
            let group = ((acc >> (acc_bits - 7)) & 0x7F) as u8;
            acc_bits -= 7;
            emitted += 7;
            let more = u8::from(emitted < fraction_bits);
            out.push((group << 1) | more);
        }
    }
    if complement {
        for byte in &mut out[start..] {
            *byte = !*byte;
        }
    }
}

fn push_integer_u64(out: &mut Vec<u8>, negative: bool, magnitude: u64) {
    if magnitude == 0 {
        out.push(tag::NUMBER_ZERO);
        return;
    }
    out.push(if negative {
        tag::NUMBER_NEG
    } else {
        tag::NUMBER_POS
    });
    let exponent = 63 - magnitude.leading_zeros() as usize;
    // Drop the leading one; left-align the remaining bits.
    let fraction = if exponent == 0 {
        0
    } else {
        magnitude << (64 - exponent)
    };
    let fraction_bits = if fraction == 0 {
        0
    } else {
        64 - fraction.trailing_zeros() as usize
    };
    push_magnitude(
        out,
        exponent as i64,
        &fraction.to_be_bytes(),
        fraction_bits,
        negative,
    );
}

fn push_integer_big(out: &mut Vec<u8>, negative: bool, magnitude: &[u8]) {
    let Some(first) = magnitude.iter().position(|&b| b != 0) else {
        out.push(tag::NUMBER_ZERO);
        return;
    };
    let magnitude = &magnitude[first..];
    if magnitude.len() <= 8 {
        let mut buf = [0u8; 8];
        buf[8 - magnitude.len()..].copy_from_slice(magnitude);
        push_integer_u64(out, negative, u64::from_be_bytes(buf));
        return;
    }
    out.push(if negative {
        tag::NUMBER_NEG
    } else {
        tag::NUMBER_POS
    });
    let lead = magnitude[0].leading_zeros() as usize;
    let exponent = magnitude.len() * 8 - lead - 1;
    // The fraction is the magnitude shifted left past its leading one.
    let shift = lead + 1;
    let fraction: Vec<u8> = (0..magnitude.len())
        .map(|i| {
            let next = magnitude.get(i + 1).copied().unwrap_or(0);
            if shift == 8 {
                next
            } else {
                (magnitude[i] << shift) | (next >> (8 - shift))
            }
        })
        .collect();
    let fraction_bits = match trailing_zero_bits(&fraction) {
        zeros if zeros == fraction.len() * 8 => 0,
        zeros => fraction.len() * 8 - zeros,
    };
    push_magnitude(out, exponent as i64, &fraction, fraction_bits, negative);
}

/// Trailing zero bits of a big-endian bit string.
fn trailing_zero_bits(bytes: &[u8]) -> usize {
    let mut zeros = 0;
    for &b in bytes.iter().rev() {
        if b == 0 {
            zeros += 8;
        } else {
            return zeros + b.trailing_zeros() as usize;
        }
    }
    zeros
}

fn push_float(out: &mut Vec<u8>, f: f64, exact: bool) {
    let (neg_tag, zero_tag, pos_tag) = if exact {
        (
            tag::EXACT_FLOAT_NEG,
            tag::EXACT_FLOAT_ZERO,
            tag::EXACT_FLOAT_POS,
        )
    } else {
        (tag::NUMBER_NEG, tag::NUMBER_ZERO, tag::NUMBER_POS)
    };
    if f == 0.0 {
        out.push(zero_tag);
        return;
    }
    let negative = f < 0.0;
    out.push(if negative { neg_tag } else { pos_tag });
    let bits = f.to_bits();
    let biased = ((bits >> 52) & 0x7FF) as i64;
    let stored = bits & ((1u64 << 52) - 1);
    let (exponent, fraction) = if biased == 0 {
        // Subnormal: value = stored × 2^-1074; its leading one sets the exponent.
        let top = 63 - stored.leading_zeros() as i64;
        let rest = stored & !(1u64 << top);
        let fraction = if top == 0 { 0 } else { rest << (64 - top) };
        (top - 1074, fraction)
    } else {
        (biased - 1023, stored << 12)
    };
    let fraction_bits = if fraction == 0 {
        0
    } else {
        64 - fraction.trailing_zeros() as usize
    };
    push_magnitude(
        out,
        exponent,
        &fraction.to_be_bytes(),
        fraction_bits,
        negative,
    );
}

/// An escaped byte string inside a key (atom text or binary), without its terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a> {
    raw: &'a [u8],
    len: usize,
}

impl<'a> Escaped<'a> {
    /// Length after unescaping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the unescaped string is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, borrowed when nothing was escaped.
    pub fn as_borrowed(&self) -> Option<&'a [u8]> {
        (self.raw.len() == self.len).then_some(self.raw)
    }

    /// Writes the unescaped bytes into `dst`, which must be [`len`](Self::len) long.
    pub fn copy_to(&self, dst: &mut [u8]) {
        if let Some(plain) = self.as_borrowed() {
            dst.copy_from_slice(plain);
            return;
        }
        let mut out = 0;
        let mut i = 0;
        while i < self.raw.len() {
            dst[out] = self.raw[i];
            out += 1;
            i += if self.raw[i] == 0 { 2 } else { 1 };
        }
    }

    /// The unescaped bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v);
        v
    }
}

/// Reads an escaped string starting at `pos`, leaving `pos` after its terminator.
fn read_escaped<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<Escaped<'a>, CorruptKey> {
    let start = *pos;
    let mut len = 0;
    let mut i = start;
    loop {
        let zero = bytes[i..].iter().position(|&b| b == 0).ok_or(CorruptKey)?;
        len += zero;
        i += zero;
        match bytes.get(i + 1) {
            Some(0) => {
                *pos = i + 2;
                return Ok(Escaped {
                    raw: &bytes[start..i],
                    len,
                });
            }
            Some(&ESCAPE_ZERO) => {
                len += 1;
                i += 2;
            }
            _ => return Err(CorruptKey),
        }
    }
}

/// An integer read back from a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integer {
    /// Fits in `i64`.
    I64(i64),
    /// Fits in `u64` but not `i64`.
    U64(u64),
    /// Larger: sign and big-endian magnitude without leading zeros.
    Big {
        /// True for negative values.
        negative: bool,
        /// Big-endian magnitude.
        magnitude: Vec<u8>,
    },
}

/// One node of a term, read back in pre-order by [`KeyReader`].
#[derive(Debug, Clone, PartialEq)]
pub enum Token<'a> {
    /// An integer.
    Integer(Integer),
    /// A float.
    Float(f64),
    /// An atom; the bytes are UTF-8.
    Atom(Escaped<'a>),
    /// A binary.
    Binary(Escaped<'a>),
    /// A tuple of this arity; its elements follow.
    Tuple(usize),
    /// A map of this size; its keys (in key order) then its values follow.
    Map(usize),
    /// A list starts; elements follow until [`Token::ListEnd`].
    ListStart,
    /// The current list ends.
    ListEnd,
}

/// Reads an element back as a stream of [`Token`]s.
///
/// The reader keeps no stack: arities and sizes are reported and the caller rebuilds the
/// nesting with its own explicit stack.
#[derive(Debug)]
pub struct KeyReader<'a> {
    key: &'a [u8],
    pos: usize,
    numbers: u32,
    hint: &'a [u8],
    hint_pos: usize,
    next_mark: Option<(u32, bool)>,
}

impl<'a> KeyReader<'a> {
    /// A reader over one element.
    ///
    /// Time: O(1) to start.
    pub fn new(element: &'a [u8]) -> Result<Self, CorruptKey> {
        Self::with_key_offset(element, 0)
    }

    /// A reader over an element whose key starts with `offset` bytes that are not part
    /// of the term (a caller's own prefix, such as a group position).
    pub fn with_key_offset(element: &'a [u8], offset: usize) -> Result<Self, CorruptKey> {
        let mut pos = 0;
        let hint_len =
            usize::try_from(read_plain_varint(element, &mut pos)?).map_err(|_| CorruptKey)?;
        let hint = element.get(pos..pos + hint_len).ok_or(CorruptKey)?;
        let mut reader = KeyReader {
            key: element.get(pos + hint_len + offset..).ok_or(CorruptKey)?,
            pos: 0,
            numbers: 0,
            hint,
            hint_pos: 0,
            next_mark: None,
        };
        reader.advance_mark()?;
        Ok(reader)
    }

    fn advance_mark(&mut self) -> Result<(), CorruptKey> {
        self.next_mark = if self.hint_pos < self.hint.len() {
            let v = read_plain_varint(self.hint, &mut self.hint_pos)?;
            let ordinal = u32::try_from(v >> 1).map_err(|_| CorruptKey)?;
            Some((ordinal, v & 1 == 1))
        } else {
            None
        };
        Ok(())
    }

    /// The next token, or `None` at the end of the key.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Token<'a>>, CorruptKey> {
        // A cons byte only announces the element after it. A loop, not a recursive call:
        // a corrupt key could hold millions of them in a row.
        let first = loop {
            let Some(&byte) = self.key.get(self.pos) else {
                return Ok(None);
            };
            self.pos += 1;
            if byte != LIST_CONS {
                break byte;
            }
        };
        let token = match first {
            LIST_END => Token::ListEnd,
            tag::NUMBER_NEG..=tag::EXACT_FLOAT_POS => self.read_number(first)?,
            tag::ATOM => Token::Atom(read_escaped(self.key, &mut self.pos)?),
            tag::BINARY => Token::Binary(read_escaped(self.key, &mut self.pos)?),
            tag::TUPLE => Token::Tuple(self.read_count()?),
            tag::MAP => Token::Map(self.read_count()?),
            tag::LIST => Token::ListStart,
            _ => return Err(CorruptKey),
        };
        Ok(Some(token))
    }

    /// The number of bits of the next token's magnitude when it is an integer or float
    /// (`E + 1` for `2^E × 1.f`, at least 1 for any nonzero number), else 0; the reader
    /// does not move.
    ///
    /// A key does not bound what reading it builds: `2^N` has a key of a dozen bytes
    /// and a magnitude of `N` bits, which [`KeyReader::next`] allocates and fills. A
    /// caller with a budget checks this first.
    ///
    /// Time: O(1).
    #[inline]
    pub fn peek_number_bits(&self) -> u64 {
        let mut pos = self.pos;
        while self.key.get(pos) == Some(&LIST_CONS) {
            pos += 1;
        }
        let Some(&first) = self.key.get(pos) else {
            return 0;
        };
        let complement = match first {
            tag::NUMBER_NEG | tag::EXACT_FLOAT_NEG => true,
            tag::NUMBER_POS | tag::EXACT_FLOAT_POS => false,
            _ => return 0,
        };
        pos += 1;
        match read_ordered_varint(self.key, &mut pos, complement) {
            Ok(biased) => biased
                .saturating_sub(EXPONENT_BIAS as u64)
                .saturating_add(1),
            Err(_) => 0,
        }
    }

    /// True when every token has been read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.key.len()
    }

    /// How many bytes of the key have been read.
    pub fn key_offset(&self) -> usize {
        self.pos
    }

    /// Reads past one whole term, keeping float marks in step.
    ///
    /// Time: O(term size), with an explicit counter stack.
    pub fn skip_term(&mut self) -> Result<(), CorruptKey> {
        // Terms still owed by each open tuple or map; `usize::MAX` marks a list.
        let mut owed: Vec<usize> = Vec::new();
        loop {
            let done = match self.next()?.ok_or(CorruptKey)? {
                Token::Tuple(n) if n > 0 => {
                    owed.push(n);
                    false
                }
                Token::Map(n) if n > 0 => {
                    owed.push(n.checked_mul(2).ok_or(CorruptKey)?);
                    false
                }
                Token::ListStart => {
                    owed.push(usize::MAX);
                    false
                }
                Token::ListEnd => {
                    if owed.pop() != Some(usize::MAX) {
                        return Err(CorruptKey);
                    }
                    true
                }
                _ => true,
            };
            if done {
                // A finished term pays what it owes to the enclosing tuples and maps.
                loop {
                    match owed.last_mut() {
                        None => return Ok(()),
                        Some(&mut usize::MAX) => break,
                        Some(n) => {
                            *n -= 1;
                            if *n > 0 {
                                break;
                            }
                            owed.pop();
                        }
                    }
                }
            }
        }
    }

    fn read_count(&mut self) -> Result<usize, CorruptKey> {
        let v = read_ordered_varint(self.key, &mut self.pos, false)?;
        usize::try_from(v).map_err(|_| CorruptKey)
    }

    fn read_number(&mut self, tag_byte: u8) -> Result<Token<'a>, CorruptKey> {
        let ordinal = self.numbers;
        self.numbers += 1;
        let mark = match self.next_mark {
            Some((o, negative_zero)) if o == ordinal => {
                self.advance_mark()?;
                Some(negative_zero)
            }
            _ => None,
        };
        let is_float = tag_byte >= tag::EXACT_FLOAT_NEG || mark.is_some();
        let (negative, zero) = match tag_byte {
            tag::NUMBER_NEG | tag::EXACT_FLOAT_NEG => (true, false),
            tag::NUMBER_ZERO | tag::EXACT_FLOAT_ZERO => (false, true),
            _ => (false, false),
        };
        if zero {
            return Ok(if is_float {
                Token::Float(if mark == Some(true) { -0.0 } else { 0.0 })
            } else {
                Token::Integer(Integer::I64(0))
            });
        }
        if !is_float {
            if let Some(magnitude) = self.read_u64_magnitude(negative)? {
                return Ok(Token::Integer(small_integer(negative, magnitude)));
            }
        }
        let (exponent, fraction) = self.read_magnitude(negative)?;
        if is_float {
            float_from_parts(negative, exponent, fraction).map(Token::Float)
        } else {
            integer_from_parts(negative, exponent, fraction).map(Token::Integer)
        }
    }

    /// The magnitude of an integer below 2^64, read without the 128-bit arithmetic of
    /// [`KeyReader::read_magnitude`]: the common case. `None`, reading nothing, for a
    /// larger one.
    #[inline]
    fn read_u64_magnitude(&mut self, complement: bool) -> Result<Option<u64>, CorruptKey> {
        let mut pos = self.pos;
        let biased = read_ordered_varint(self.key, &mut pos, complement)?;
        let exponent = match biased.checked_sub(EXPONENT_BIAS as u64) {
            Some(exponent) if exponent < 64 => exponent as u32,
            _ => return Ok(None),
        };
        let flip = if complement { 0xFF } else { 0 };
        // An integer of `exponent + 1` bits has at most `exponent` fraction bits: at most
        // nine groups of seven.
        let mut fraction: u64 = 0;
        let mut bits = 0u32;
        loop {
            let byte = self.key.get(pos).ok_or(CorruptKey)? ^ flip;
            pos += 1;
            if bits == 63 {
                return Err(CorruptKey);
            }
            fraction = (fraction << 7) | u64::from(byte >> 1);
            bits += 7;
            if byte & 1 == 0 {
                break;
            }
        }
        let fraction = if bits > exponent {
            let below = bits - exponent;
            if fraction & ((1 << below) - 1) != 0 {
                return Err(CorruptKey); // an integer has no bits below 2^0
            }
            fraction >> below
        } else {
            fraction << (exponent - bits)
        };
        self.pos = pos;
        Ok(Some((1u64 << exponent) | fraction))
    }

    /// Reads `E + bias` and the seven-bit groups of the fraction.
    fn read_magnitude(&mut self, complement: bool) -> Result<(i64, Fraction), CorruptKey> {
        let biased = read_ordered_varint(self.key, &mut self.pos, complement)?;
        let exponent = i64::try_from(biased).map_err(|_| CorruptKey)? - EXPONENT_BIAS;
        let flip = if complement { 0xFF } else { 0 };
        // Up to 18 groups (126 bits) accumulate in a u128, which covers every float and
        // every integer below 2^127 without allocating; longer fractions are bignums.
        let mut acc: u128 = 0;
        let mut groups = 0usize;
        let mut large: Vec<u8> = Vec::new();
        loop {
            let byte = self.key.get(self.pos).ok_or(CorruptKey)? ^ flip;
            self.pos += 1;
            let group = byte >> 1;
            if groups < 18 {
                acc = (acc << 7) | u128::from(group);
            } else {
                if groups == 18 {
                    large = (acc << 2).to_be_bytes().to_vec();
                }
                push_bits(&mut large, groups * 7, group);
            }
            groups += 1;
            if byte & 1 == 0 {
                break;
            }
        }
        let fraction = if groups <= 18 {
            Fraction::Small(acc << (128 - 7 * groups))
        } else {
            Fraction::Large(large)
        };
        Ok((exponent, fraction))
    }
}

/// The bits of `f` in `1.f`, left-aligned (MSB first).
#[derive(Debug)]
enum Fraction {
    Small(u128),
    Large(Vec<u8>),
}

impl Fraction {
    fn bit(&self, i: usize) -> bool {
        match self {
            Fraction::Small(bits) => i < 128 && (bits >> (127 - i)) & 1 == 1,
            Fraction::Large(bytes) => bit(bytes, i),
        }
    }

    /// True when no bit at position `from` or later is set.
    fn zero_from(&self, from: usize) -> bool {
        match self {
            Fraction::Small(bits) => from >= 128 || bits << from == 0,
            Fraction::Large(bytes) => (from..bytes.len() * 8).all(|i| !bit(bytes, i)),
        }
    }
}

/// Writes the seven bits of `group` at bit offset `at` of a growing big-endian string.
fn push_bits(bits: &mut Vec<u8>, at: usize, group: u8) {
    for j in 0..7 {
        let i = at + j;
        if bits.len() * 8 <= i {
            bits.push(0);
        }
        if group & (0x40 >> j) != 0 {
            bits[i / 8] |= 0x80 >> (i % 8);
        }
    }
}

fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

/// An integer of magnitude below 2^64.
#[inline]
fn small_integer(negative: bool, magnitude: u64) -> Integer {
    if !negative {
        match i64::try_from(magnitude) {
            Ok(small) => Integer::I64(small),
            Err(_) => Integer::U64(magnitude),
        }
    } else if magnitude <= 1u64 << 63 {
        Integer::I64((magnitude as i64).wrapping_neg())
    } else {
        Integer::Big {
            negative,
            magnitude: magnitude.to_be_bytes().to_vec(),
        }
    }
}

fn integer_from_parts(
    negative: bool,
    exponent: i64,
    fraction: Fraction,
) -> Result<Integer, CorruptKey> {
    let exponent = usize::try_from(exponent).map_err(|_| CorruptKey)?;
    // No Erlang integer is that large (`system_limit`): only a corrupt key says so, and
    // believing it would allocate without bound.
    if exponent >= MAX_INTEGER_BITS {
        return Err(CorruptKey);
    }
    if !fraction.zero_from(exponent) {
        return Err(CorruptKey); // an integer has no bits below 2^0
    }
    if exponent < 64 {
        let high = match fraction {
            Fraction::Small(bits) => (bits >> 64) as u64,
            Fraction::Large(_) => return Err(CorruptKey),
        };
        let v = if exponent == 0 {
            1
        } else {
            (1u64 << exponent) | (high >> (64 - exponent))
        };
        return Ok(small_integer(negative, v));
    }
    // Big-endian magnitude: a one at bit `exponent`, then the fraction bits.
    let total_bits = exponent + 1;
    let len = total_bits.div_ceil(8);
    let mut magnitude = vec![0u8; len];
    let pad = len * 8 - total_bits;
    magnitude[pad / 8] |= 0x80 >> (pad % 8);
    for i in 0..exponent {
        if fraction.bit(i) {
            let j = pad + 1 + i;
            magnitude[j / 8] |= 0x80 >> (j % 8);
        }
    }
    Ok(Integer::Big {
        negative,
        magnitude,
    })
}

fn float_from_parts(negative: bool, exponent: i64, fraction: Fraction) -> Result<f64, CorruptKey> {
    let Fraction::Small(bits) = fraction else {
        return Err(CorruptKey);
    };
    if !(-1074..=1023).contains(&exponent) || bits << 52 != 0 {
        return Err(CorruptKey);
    }
    let f = (bits >> 76) as u64; // the top 52 bits
    let bits = if exponent >= -1022 {
        (((exponent + 1023) as u64) << 52) | f
    } else {
        // Subnormal: significand 1.f scaled down to 2^-1074 units.
        let shift = exponent + 1074; // 0..=51
        let significand = (1u64 << 52) | f;
        if significand.trailing_zeros() < (52 - shift) as u32 {
            return Err(CorruptKey);
        }
        significand >> (52 - shift)
    };
    let sign = if negative { 1u64 << 63 } else { 0 };
    Ok(f64::from_bits(bits | sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Vec<u8> {
        Element::number(Number::Int(v)).into_buffer()
    }

    fn float(v: f64) -> Vec<u8> {
        Element::number(Number::Float(v)).into_buffer()
    }

    fn big(negative: bool, magnitude: &[u8]) -> Vec<u8> {
        Element::number(Number::Big {
            negative,
            magnitude,
        })
        .into_buffer()
    }

    fn key(element: &[u8]) -> &[u8] {
        element_key(element)
    }

    fn read_all(element: &[u8]) -> Vec<Token<'_>> {
        let mut reader = KeyReader::new(element).unwrap();
        let mut tokens = vec![];
        while let Some(t) = reader.next().unwrap() {
            tokens.push(t);
        }
        tokens
    }

    #[test]
    fn integers_and_floats_that_are_equal_share_a_key() {
        for v in [-7, -1, 0, 1, 2, 1 << 53] {
            assert_eq!(key(&int(v)), key(&float(v as f64)), "{v}");
        }
        assert_eq!(key(&int(0)), key(&float(-0.0)));
    }

    #[test]
    fn integer_float_comparison_is_exact() {
        let two_53 = 9007199254740992.0f64;
        assert!(key(&int((1 << 53) + 1)) > key(&float(two_53)));
        assert!(key(&int(-(1 << 53) - 1)) < key(&float(-two_53)));
        assert!(key(&float(0.5)) < key(&int(1)));
        assert!(key(&float(-0.5)) > key(&int(-1)));
        assert!(key(&float(f64::MIN_POSITIVE / 4.0)) > key(&int(0)));
    }

    #[test]
    fn numbers_sort_numerically() {
        // Integers and floats in one order. An integral float has its integer's key
        // (`integers_and_floats_that_are_equal_share_a_key`), so each value stands once.
        let ordered = [
            float(f64::MIN),
            float(-1e300),
            int(i64::MIN),
            int(-1000),
            float(-3.5),
            int(-2),
            int(-1),
            float(-f64::MIN_POSITIVE),
            float(-5e-324),
            int(0),
            float(5e-324),
            float(1e-310),
            float(f64::MIN_POSITIVE),
            float(0.1),
            float(0.5),
            int(1),
            float(1.5),
            int(2),
            int(3),
            int(127),
            int(128),
            int(1000),
            int(i64::MAX),
            float(1e20),
            float(f64::MAX),
        ];
        for (i, pair) in ordered.windows(2).enumerate() {
            assert!(key(&pair[0]) < key(&pair[1]), "at {i}: {pair:?}");
        }
    }

    #[test]
    fn bignums_sort_and_round_trip() {
        let two_64 = [1, 0, 0, 0, 0, 0, 0, 0, 0];
        let two_64_plus_1 = [1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(key(&int(i64::MAX)) < key(&big(false, &two_64)));
        assert!(key(&big(false, &two_64)) < key(&big(false, &two_64_plus_1)));
        assert!(key(&big(true, &two_64_plus_1)) < key(&big(true, &two_64)));
        assert!(key(&big(true, &two_64)) < key(&int(i64::MIN)));
        assert_eq!(
            key(&big(false, &two_64)),
            key(&float(18446744073709551616.0))
        );
        assert_eq!(
            read_all(&big(false, &two_64_plus_1)),
            vec![Token::Integer(Integer::Big {
                negative: false,
                magnitude: two_64_plus_1.to_vec()
            })]
        );
        assert_eq!(
            read_all(&big(false, &[0, 0, 5])),
            vec![Token::Integer(Integer::I64(5))]
        );
        assert_eq!(
            read_all(&big(true, &[0x80, 0, 0, 0, 0, 0, 0, 0])),
            vec![Token::Integer(Integer::I64(i64::MIN))]
        );
        assert_eq!(
            read_all(&big(false, &[0xFF; 8])),
            vec![Token::Integer(Integer::U64(u64::MAX))]
        );
    }

    #[test]
    fn numbers_round_trip_with_their_type() {
        for v in [0i64, 1, -1, 5, 127, 128, -129, i64::MAX, i64::MIN, 1 << 40] {
            assert_eq!(read_all(&int(v)), vec![Token::Integer(Integer::I64(v))]);
        }
        for v in [0.0, 1.0, -2.5, 1e-310, 5e-324, f64::MAX, f64::MIN, 0.1] {
            assert_eq!(read_all(&float(v)), vec![Token::Float(v)]);
        }
        match read_all(&float(-0.0))[0] {
            Token::Float(f) => assert!(f == 0.0 && f.is_sign_negative()),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_strings_order_like_erlang_binaries() {
        let bin = |b: &[u8]| {
            let mut e = KeyEncoder::new();
            e.push_binary(b);
            e.finish().as_bytes().to_vec()
        };
        let ordered: [&[u8]; 6] = [b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0"];
        for pair in ordered.windows(2) {
            assert!(bin(pair[0]) < bin(pair[1]), "{pair:?}");
        }
        let element = bin(b"a\0b\0");
        match read_all(&element)[0] {
            Token::Binary(e) => assert_eq!(e.to_vec(), b"a\0b\0"),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn latin1_atoms_encode_as_utf8() {
        let mut a = KeyEncoder::new();
        a.push_atom_latin1(&[b'a', 0xE9]);
        let mut b = KeyEncoder::new();
        b.push_atom("aé".as_bytes());
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn hints_never_decide_a_comparison_with_a_key() {
        let tuple = |first: Number, second: Number| {
            let mut e = KeyEncoder::new();
            e.push_tuple(2);
            e.push_number(first, false);
            e.push_number(second, false);
            e.finish()
        };
        let stored = tuple(Number::Int(2), Number::Float(3.0));
        let probe = tuple(Number::Float(2.0), Number::Int(3));
        assert_ne!(stored.as_bytes(), probe.as_bytes());
        assert_eq!(stored.key(), probe.key());
        assert_eq!(element_key(stored.as_bytes()), probe.key());
    }

    #[test]
    fn empty_list_sorts_below_lists_and_above_maps() {
        let empty = {
            let mut e = KeyEncoder::new();
            e.push_list_start();
            e.push_list_end();
            e.finish().as_bytes().to_vec()
        };
        let one = {
            let mut e = KeyEncoder::new();
            e.push_list_start();
            e.push_list_cons();
            e.push_number(Number::Int(0), false);
            e.push_list_end();
            e.finish().as_bytes().to_vec()
        };
        let map = {
            let mut e = KeyEncoder::new();
            let open = e.begin_map(0);
            e.end_map(open);
            e.finish().as_bytes().to_vec()
        };
        assert!(map < empty && empty < one);
        assert_eq!(read_all(&one).len(), 3);
    }

    #[test]
    fn end_map_cost_bounds_the_order_check_the_sort_and_the_move() {
        let cost_of = |keys: usize| {
            let mut e = KeyEncoder::new();
            let mut open = e.begin_map(keys);
            let first_key = e.key_len();
            for i in 0..keys {
                e.push_number(Number::Int(i as i64), true);
                e.end_map_key(&mut open);
            }
            let bytes = e.key_len() - first_key;
            (e.end_map_cost(&open), bytes)
        };
        assert_eq!(cost_of(0).0, 0);
        assert_eq!(cost_of(1).0, 0);
        // Two keys: one merge level more than log2(2) = 1, so 2 + 2 * 2 + 1 passes.
        let (cost, bytes) = cost_of(2);
        assert_eq!(cost, 7 * bytes);
        // 1,000 keys: ceil(log2(1000)) = 10, 11 merge levels.
        let (cost, bytes) = cost_of(1000);
        assert_eq!(cost, (2 + 2 * 11 + 1) * bytes);
    }

    #[test]
    fn map_keys_put_integers_before_floats() {
        let map_with_key = |number: Number| {
            let mut e = KeyEncoder::new();
            let mut open = e.begin_map(1);
            e.push_number(number, true);
            e.end_map_key(&mut open);
            let order = e.end_map(open);
            assert_eq!(order, vec![0]);
            e.push_atom(b"v");
            e.finish().as_bytes().to_vec()
        };
        let int_two = map_with_key(Number::Int(2));
        let float_one = map_with_key(Number::Float(1.0));
        assert!(int_two < float_one);
        let tokens = read_all(&float_one);
        assert_eq!(tokens[1], Token::Float(1.0));
    }

    #[test]
    fn corrupt_elements_are_errors_not_panics() {
        let corrupt: [&[u8]; 7] = [
            &[0, 0x20, 1],
            &[0, 0x12],
            &[0, 0x33],
            &[5, 0x11],
            &[0, 0x12, 0x04, 0x4C, 0x01],
            &[0x80],
            &[0, 0x12, 0x04, 0x4C, 0x00, 0x90, 1, 2],
        ];
        for bytes in corrupt {
            let tokens = KeyReader::new(bytes).and_then(|mut reader| {
                let mut tokens = vec![];
                while let Some(token) = reader.next()? {
                    tokens.push(token);
                }
                Ok(tokens)
            });
            assert!(tokens.is_err(), "{bytes:?} read as {tokens:?}");
        }
        assert_eq!(element_key(&[]), &[] as &[u8]);
        assert_eq!(element_key(&[9]), &[] as &[u8]);
        assert_eq!(element_hint(&[9]), &[] as &[u8]);
        let built = element_from_parts(b"hint", b"key");
        assert_eq!(
            (element_hint(&built), element_key(&built)),
            (&b"hint"[..], &b"key"[..])
        );
    }

    #[test]
    fn skip_term_passes_exactly_one_term() {
        let mut e = KeyEncoder::new();
        e.push_tuple(3);
        // {[1.5, {x}], %{}, 7.0}
        e.push_list_start();
        e.push_list_cons();
        e.push_number(Number::Float(1.5), false);
        e.push_list_cons();
        e.push_tuple(1);
        e.push_atom(b"x");
        e.push_list_end();
        let open = e.begin_map(0);
        e.end_map(open);
        e.push_number(Number::Float(7.0), false);
        let element = e.finish();
        let mut reader = KeyReader::new(element.as_bytes()).unwrap();
        assert_eq!(reader.next().unwrap(), Some(Token::Tuple(3)));
        reader.skip_term().unwrap();
        reader.skip_term().unwrap();
        // The float mark of 1.5 was consumed in step, so 7.0 still reads as a float.
        assert_eq!(reader.next().unwrap(), Some(Token::Float(7.0)));
        assert!(reader.at_end());
    }

    #[test]
    fn peek_number_bits_sees_a_magnitude_before_it_is_built() {
        let mut two_to_the_million = vec![0u8; 125_001];
        two_to_the_million[0] = 1;
        let element = big(true, &two_to_the_million);
        assert!(element.len() < 20, "{} bytes", element.len());
        let reader = KeyReader::new(&element).unwrap();
        assert_eq!(reader.peek_number_bits(), 1_000_001);
        for (element, bits) in [(int(5), 3), (int(-1), 1), (int(0), 0), (float(0.5), 1)] {
            assert_eq!(KeyReader::new(&element).unwrap().peek_number_bits(), bits);
        }
        let mut e = KeyEncoder::new();
        e.push_list_start();
        e.push_list_cons();
        e.push_number(Number::Int(1 << 40), false);
        e.push_list_end();
        let element = e.finish();
        let mut reader = KeyReader::new(element.as_bytes()).unwrap();
        assert_eq!(reader.peek_number_bits(), 0);
        assert_eq!(reader.next(), Ok(Some(Token::ListStart)));
        assert_eq!(reader.peek_number_bits(), 41);
    }

    #[test]
    fn corrupt_keys_cannot_recurse_or_allocate_without_bound() {
        // Ten million cons bytes in a row: read in a loop, not one call per byte.
        let mut runs = vec![0, tag::LIST];
        runs.extend(std::iter::repeat_n(LIST_CONS, 10_000_000));
        let mut reader = KeyReader::new(&runs).unwrap();
        assert_eq!(reader.next(), Ok(Some(Token::ListStart)));
        assert_eq!(reader.next(), Ok(None));
        // An integer claiming 2^40 bits: refused, not allocated.
        let mut huge = vec![0, tag::NUMBER_POS];
        push_ordered_varint(&mut huge, (1u64 << 40) + EXPONENT_BIAS as u64);
        huge.push(0);
        let mut reader = KeyReader::new(&huge).unwrap();
        assert_eq!(reader.next(), Err(CorruptKey));
    }

    #[test]
    fn typed_views_agree_with_the_byte_functions() {
        let mut e = KeyEncoder::new();
        e.push_tuple(2);
        e.push_number(Number::Float(2.0), false);
        e.push_binary(b"x");
        let element = e.finish();
        let view = ElementRef::from(&element);
        assert_eq!(view.key().as_bytes(), element.key());
        assert_eq!(view.hint(), element.hint());
        assert_eq!(Key::from(&element), element.lookup_key());
        assert_eq!(view.to_element(), element);
        let mut list = Elements::new();
        list.push(&element);
        list.push(ElementRef::from_bytes(&[0, 0x11]));
        assert_eq!(list.len(), 2);
        assert_eq!(list.get(0), Some(view));
        assert_eq!(list.get(2), None);
        assert_eq!(
            list.iter().next_back().map(|e| e.as_bytes()),
            Some(&[0, 0x11][..])
        );
    }

    #[test]
    fn long_fractions_round_trip() {
        // 2^200 + 1 needs 29 seven-bit groups: the allocation path.
        let mut magnitude = vec![0u8; 26];
        magnitude[0] = 1;
        magnitude[25] = 1;
        let element = big(false, &magnitude);
        assert_eq!(
            read_all(&element),
            vec![Token::Integer(Integer::Big {
                negative: false,
                magnitude
            })]
        );
    }
}
