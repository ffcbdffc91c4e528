//! A versioned, self-describing binary format for moving a structure between processes,
//! nodes and files: a [`KeyTree`] of a sorted set, or a member list.
//!
//! # Layout
//!
//! All integers are little-endian.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 47 4B 44 55 4D 50 0A` (`\x89GKDUMP\n`) |
//! | 8 | 2 | format version ([`VERSION`]) |
//! | 10 | 1 | kind ([`Kind`]) |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | metadata length `M` |
//! | 16 | 8 | element count `N` |
//! | 24 | 8 | element section length `E` |
//! | 32 | 4 | CRC-32 (IEEE) of bytes `0..32` and `36..` |
//! | 36 | `M` | metadata: a kind-specific struct, in `postcard` |
//! | 36 + `M` | `E` | `N` elements, each a LEB128 length then its bytes |
//!
//! The whole dump is exactly `36 + M + E` bytes. The magic's first byte has its high bit
//! set and its last is a newline, so text-mode or 7-bit transfers that mangle a dump are
//! told apart from a dump of something else.
//!
//! Elements are the bytes the tree already holds ([`ElementRef`]), in ascending order,
//! so a dump is written with one pass over the leaves and loaded with
//! [`KeyTree::from_ascending`], without sorting or re-encoding a term.
//!
//! # Validation
//!
//! [`Dump::parse`] checks, in this order, and reports the first failure as a
//! [`LoadError`]: the magic (a foreign binary), the version (a dump from a later
//! release), the kind, the lengths against the bytes there are (truncated or extended),
//! the checksum (corrupted), then the metadata. Loaders then check every element: that
//! its length fits, that it is one well-formed term key, and that the keys are strictly
//! ascending. A dump that passes builds a valid structure; one that fails builds
//! nothing. No input panics.
//!
//! The checksum detects accidental damage, not tampering: it is not a signature. A dump
//! forged with a valid checksum still cannot break a structure's invariants, because
//! every element is validated as if the checksum were absent.

use std::fmt;
use std::sync::PoisonError;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key_tree::{BuildError, KeyTree, MAX_ELEMENT_LEN, MAX_LEN};
use crate::term_key::{ElementRef, KeyReader, Token};

/// The first eight bytes of every dump.
pub const MAGIC: [u8; 8] = *b"\x89GKDUMP\n";
/// The format version written, and the latest one read.
pub const VERSION: u16 = 1;
/// Bytes before the metadata.
pub const HEADER_LEN: usize = 36;
const CHECKSUM_AT: usize = 32;

/// What a dump holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A `GuildKit.SortedSet`.
    SortedSet = 1,
    /// A `GuildKit.MemberList`.
    MemberList = 2,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::SortedSet),
            2 => Some(Kind::MemberList),
            _ => None,
        }
    }

    /// The Elixir module whose structure this kind is.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SortedSet => "GuildKit.SortedSet",
            Kind::MemberList => "GuildKit.MemberList",
        }
    }
}

/// Why a binary could not be loaded. Nothing was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes do not start with [`MAGIC`].
    Foreign,
    /// A dump written by a later release.
    FutureVersion {
        /// The version in the dump.
        version: u16,
    },
    /// A dump of another kind of structure (or of an unknown kind).
    WrongKind {
        /// The kind asked for.
        expected: Kind,
        /// The kind byte found.
        found: u8,
    },
    /// Fewer bytes than the header says.
    Truncated {
        /// The bytes the header (or the header's own length) asks for.
        expected: u64,
        /// The bytes given.
        got: usize,
    },
    /// More bytes than the header says.
    TrailingBytes {
        /// The bytes the header asks for.
        expected: u64,
        /// The bytes given.
        got: usize,
    },
    /// The checksum does not match the bytes.
    Checksum,
    /// A header field that no writer produces.
    BadHeader(&'static str),
    /// The metadata does not decode, or contradicts the rest of the dump.
    BadMetadata(&'static str),
    /// Element `position` is malformed.
    BadElement {
        /// Zero-based position among the dump's elements.
        position: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Element `position` is not greater than the one before it.
    NotAscending {
        /// Zero-based position among the dump's elements.
        position: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Foreign => write!(
                f,
                "not a GuildKit dump (its first bytes are not the dump magic)"
            ),
            LoadError::FutureVersion { version } => write!(
                f,
                "dump format version {version} is newer than this release reads (up to {VERSION})"
            ),
            LoadError::WrongKind { expected, found } => match Kind::from_byte(*found) {
                Some(kind) => write!(
                    f,
                    "a dump of a {}, not of a {}",
                    kind.name(),
                    expected.name()
                ),
                None => write!(
                    f,
                    "a dump of an unknown kind ({found}), not of a {}",
                    expected.name()
                ),
            },
            LoadError::Truncated { expected, got } => {
                write!(
                    f,
                    "truncated dump: {got} bytes, but its header says {expected}"
                )
            }
            LoadError::TrailingBytes { expected, got } => write!(
                f,
                "{got} bytes, but the dump's header says {expected}: bytes were appended to it"
            ),
            LoadError::Checksum => {
                write!(f, "corrupted dump: its checksum does not match its bytes")
            }
            LoadError::BadHeader(why) => write!(f, "invalid dump header: {why}"),
            LoadError::BadMetadata(why) => write!(f, "invalid dump metadata: {why}"),
            LoadError::BadElement { position, why } => {
                write!(f, "invalid dump: element {position} {why}")
            }
            LoadError::NotAscending { position } => write!(
                f,
                "invalid dump: element {position} is not greater than the one before it"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// A parsed dump whose header, lengths and checksum are valid. Its metadata and
/// elements are checked by the loader of its kind.
#[derive(Debug, Clone, Copy)]
pub struct Dump<'a> {
    meta: &'a [u8],
    count: u64,
    elements: &'a [u8],
}

impl<'a> Dump<'a> {
    /// Checks the header, lengths and checksum of `bytes` as a dump of `kind`.
    ///
    /// Time: O(bytes) for the checksum.
    pub fn parse(bytes: &'a [u8], kind: Kind) -> Result<Self, LoadError> {
        let magic_seen = bytes.len().min(MAGIC.len());
        if bytes[..magic_seen] != MAGIC[..magic_seen] {
            return Err(LoadError::Foreign);
        }
        if bytes.len() < HEADER_LEN {
            return Err(LoadError::Truncated {
                expected: HEADER_LEN as u64,
                got: bytes.len(),
            });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version > VERSION {
            return Err(LoadError::FutureVersion { version });
        }
        if version == 0 {
            return Err(LoadError::BadHeader("format version 0"));
        }
        if bytes[10] != kind as u8 {
            return Err(LoadError::WrongKind {
                expected: kind,
                found: bytes[10],
            });
        }
        if bytes[11] != 0 {
            return Err(LoadError::BadHeader("the reserved byte is not 0"));
        }
        let meta_len = u64::from(u32::from_le_bytes(field(bytes, 12)));
        let count = u64::from_le_bytes(field(bytes, 16));
        let elements_len = u64::from_le_bytes(field(bytes, 24));
        let expected = (HEADER_LEN as u64)
            .saturating_add(meta_len)
            .saturating_add(elements_len);
        match (bytes.len() as u64).cmp(&expected) {
            std::cmp::Ordering::Less => {
                return Err(LoadError::Truncated {
                    expected,
                    got: bytes.len(),
                })
            }
            std::cmp::Ordering::Greater => {
                return Err(LoadError::TrailingBytes {
                    expected,
                    got: bytes.len(),
                })
            }
            std::cmp::Ordering::Equal => {}
        }
        if u32::from_le_bytes(field(bytes, CHECKSUM_AT)) != checksum(bytes) {
            return Err(LoadError::Checksum);
        }
        // Each element takes at least two bytes (a length and a byte), which bounds any
        // allocation sized by the count.
        if count > elements_len / 2 || count > MAX_LEN as u64 {
            return Err(LoadError::BadHeader(
                "the element count does not fit the element section",
            ));
        }
        let meta_end = HEADER_LEN + meta_len as usize;
        Ok(Dump {
            meta: &bytes[HEADER_LEN..meta_end],
            count,
            elements: &bytes[meta_end..],
        })
    }

    /// The metadata, decoded. All of its bytes must be used.
    pub fn metadata<M: DeserializeOwned>(&self) -> Result<M, LoadError> {
        match postcard::take_from_bytes::<M>(self.meta) {
            Ok((meta, [])) => Ok(meta),
            Ok(_) => Err(LoadError::BadMetadata("bytes left after the metadata")),
            Err(_) => Err(LoadError::BadMetadata("it does not decode")),
        }
    }

    /// The number of elements.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The elements, each checked for a length that fits the section and
    /// [`MAX_ELEMENT_LEN`], with `validate` run on each; and that there are exactly
    /// `count` of them, filling the section. Returns the element section as a
    /// [`CheckedElements`], which yields the elements again without checks.
    ///
    /// Time: O(E) plus what `validate` costs.
    pub fn check_elements(
        &self,
        mut validate: impl FnMut(u64, &'a [u8]) -> Result<(), LoadError>,
    ) -> Result<CheckedElements<'a>, LoadError> {
        let mut pos = 0;
        for position in 0..self.count {
            let element = next_element(self.elements, &mut pos)
                .map_err(|why| LoadError::BadElement { position, why })?;
            validate(position, element)?;
        }
        if pos != self.elements.len() {
            return Err(LoadError::BadHeader(
                "the element section is longer than its elements",
            ));
        }
        Ok(CheckedElements {
            bytes: self.elements,
            pos: 0,
            left: self.count as usize,
        })
    }
}

/// The elements of a dump whose framing has been checked ([`Dump::check_elements`]).
#[derive(Debug, Clone)]
pub struct CheckedElements<'a> {
    bytes: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for CheckedElements<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Checked before: cannot fail, and yields nothing more if it somehow did.
        match next_element(self.bytes, &mut self.pos) {
            Ok(element) => Some(element),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for CheckedElements<'_> {}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// CRC-32 of a dump's bytes, its own four bytes left out.
fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..CHECKSUM_AT]);
    hasher.update(&bytes[HEADER_LEN..]);
    hasher.finalize()
}

fn next_element<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<&'a [u8], &'static str> {
    let len = read_length(bytes, pos)?;
    if len == 0 {
        return Err("is empty");
    }
    if len > MAX_ELEMENT_LEN {
        return Err("is longer than an element can be");
    }
    let element = bytes
        .get(*pos..*pos + len)
        .ok_or("runs past the end of the dump")?;
    *pos += len;
    Ok(element)
}

/// A LEB128 length of at most four bytes (lengths are at most 16 MiB), in its shortest
/// form.
#[inline]
fn read_length(bytes: &[u8], pos: &mut usize) -> Result<usize, &'static str> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *bytes.get(*pos).ok_or("runs past the end of the dump")?;
        *pos += 1;
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err("has a length that is not in its shortest form");
            }
            return Ok(len);
        }
    }
    Err("has a length that is too long")
}

#[inline]
fn length_len(len: usize) -> usize {
    match len {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        _ => 4,
    }
}

#[inline]
fn push_length(out: &mut [u8], pos: &mut usize, mut len: usize) {
    while len >= 0x80 {
        out[*pos] = (len as u8) | 0x80;
        *pos += 1;
        len >>= 7;
    }
    out[*pos] = len as u8;
    *pos += 1;
}

/// What a dump will take, computed before it is written so that it can be written into
/// a buffer of exactly its size (such as a binary allocated by the VM).
#[derive(Debug, Clone)]
pub struct Plan {
    kind: Kind,
    meta: Vec<u8>,
    count: u64,
    elements_len: u64,
    /// The count and bytes of the first of two sections ([`Plan::split`]), which can
    /// then be written at the same time as the second; else all of them.
    first: (u64, u64),
}

/// Why a dump could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpError {
    /// The metadata is larger than 4 GiB, or does not serialize.
    Metadata,
    /// An element is longer than [`MAX_ELEMENT_LEN`], or empty.
    Element,
    /// The elements written differ from the planned ones (a bug in the caller).
    Mismatch,
}

impl Plan {
    /// Plans a dump of `kind` with `meta` and `elements` (the same elements, in the same
    /// order, must be given to [`Plan::write`]).
    ///
    /// Time: O(number of elements).
    pub fn new<'e, M: Serialize>(
        kind: Kind,
        meta: &M,
        elements: impl Iterator<Item = &'e [u8]>,
    ) -> Result<Self, DumpError> {
        let meta = postcard::to_allocvec(meta).map_err(|_| DumpError::Metadata)?;
        if u32::try_from(meta.len()).is_err() {
            return Err(DumpError::Metadata);
        }
        let (count, elements_len) = section_size(elements)?;
        Ok(Plan {
            kind,
            meta,
            count,
            elements_len,
            first: (count, elements_len),
        })
    }

    /// [`Plan::new`] for elements in two sections, `first` then `second`, which
    /// [`Plan::write_split`] writes at the same time.
    pub fn split<'e, M: Serialize>(
        kind: Kind,
        meta: &M,
        first: impl Iterator<Item = &'e [u8]>,
        second: impl Iterator<Item = &'e [u8]>,
    ) -> Result<Self, DumpError> {
        let mut plan = Plan::new(kind, meta, first)?;
        let (count, len) = section_size(second)?;
        plan.count += count;
        plan.elements_len += len;
        Ok(plan)
    }

    /// The dump's length in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.meta.len() + self.elements_len as usize
    }

    /// Always false: a dump has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the dump into `out`, which must be [`Plan::len`] bytes long.
    ///
    /// Time: O(bytes).
    pub fn write<'e>(
        &self,
        out: &mut [u8],
        elements: impl Iterator<Item = &'e [u8]>,
    ) -> Result<(), DumpError> {
        let all = (self.count, self.elements_len);
        self.write_sections(out, (elements, all), std::iter::empty())
    }

    /// Writes the dump into `out`, which must be [`Plan::len`] bytes long, from the two
    /// sections given to [`Plan::split`]. With more than [`PARALLEL_ABOVE`] elements the
    /// second is written (and checksummed) on a second thread while this one writes the
    /// first: a dump's time is mostly memory traffic, which two cores share out.
    ///
    /// Time: O(bytes).
    pub fn write_split<'e>(
        &self,
        out: &mut [u8],
        first: impl Iterator<Item = &'e [u8]>,
        second: impl Iterator<Item = &'e [u8]> + Send,
    ) -> Result<(), DumpError> {
        self.write_sections(out, (first, self.first), second)
    }

    /// Writes the dump from a first section of `(count, bytes)` and a second of the
    /// rest.
    fn write_sections<'e>(
        &self,
        out: &mut [u8],
        (first, (first_count, first_len)): (impl Iterator<Item = &'e [u8]>, (u64, u64)),
        second: impl Iterator<Item = &'e [u8]> + Send,
    ) -> Result<(), DumpError> {
        if out.len() != self.len() {
            return Err(DumpError::Mismatch);
        }
        self.write_header(out);
        let (head, elements) = out.split_at_mut(HEADER_LEN + self.meta.len());
        let (first_out, second_out) = elements.split_at_mut(first_len as usize);
        let second_count = self.count - first_count;
        let write_first = || write_section(first_out, first, first_count);
        let write_second = || write_section(second_out, second, second_count);
        let (first_sum, second_sum) = if self.count as usize > PARALLEL_ABOVE {
            join(write_first, write_second)
        } else {
            (write_first(), write_second())
        };
        // The CRC of bytes `0..32` and `36..`, combined from the sections' own.
        let mut sum = crc32fast::Hasher::new();
        sum.update(&head[..CHECKSUM_AT]);
        sum.update(&head[HEADER_LEN..]);
        sum.combine(&first_sum?);
        sum.combine(&second_sum?);
        head[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.finalize().to_le_bytes());
        Ok(())
    }

    fn write_header(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out[10] = self.kind as u8;
        out[11] = 0;
        out[12..16].copy_from_slice(&(self.meta.len() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.count.to_le_bytes());
        out[24..32].copy_from_slice(&self.elements_len.to_le_bytes());
        out[CHECKSUM_AT..HEADER_LEN].fill(0);
        out[HEADER_LEN..HEADER_LEN + self.meta.len()].copy_from_slice(&self.meta);
    }

    /// Writes the dump into a new vector.
    pub fn to_vec<'e>(
        &self,
        elements: impl Iterator<Item = &'e [u8]>,
    ) -> Result<Vec<u8>, DumpError> {
        let mut out = vec![0; self.len()];
        self.write(&mut out, elements)?;
        Ok(out)
    }
}

/// The number and bytes of `elements` in a dump, each checked for a length it can have.
fn section_size<'e>(mut elements: impl Iterator<Item = &'e [u8]>) -> Result<(u64, u64), DumpError> {
    let (mut count, mut len) = (0u64, 0u64);
    // `try_for_each` rather than a `for` loop: chained and flattened iterators (a tree's
    // leaves) then run as plain nested loops.
    elements.try_for_each(|element| {
        if element.is_empty() || element.len() > MAX_ELEMENT_LEN {
            return Err(DumpError::Element);
        }
        count += 1;
        len += (length_len(element.len()) + element.len()) as u64;
        Ok(())
    })?;
    Ok((count, len))
}

/// Writes `count` elements, framed, to fill `out` exactly, and returns their CRC.
fn write_section<'e>(
    out: &mut [u8],
    mut elements: impl Iterator<Item = &'e [u8]>,
    count: u64,
) -> Result<crc32fast::Hasher, DumpError> {
    let mut pos = 0;
    let mut written = 0u64;
    // As in `section_size`: internal iteration, for flattened iterators.
    elements.try_for_each(|element| {
        let end = pos + length_len(element.len()) + element.len();
        if written == count || end > out.len() {
            return Err(DumpError::Mismatch);
        }
        push_length(out, &mut pos, element.len());
        out[pos..end].copy_from_slice(element);
        pos = end;
        written += 1;
        Ok(())
    })?;
    if written != count || pos != out.len() {
        return Err(DumpError::Mismatch);
    }
    let mut sum = crc32fast::Hasher::new();
    sum.update(out);
    Ok(sum)
}

/// A sorted set's metadata: nothing yet beyond the header's count. A struct all the
/// same, so that a later version can add fields that this one's dumps decode without.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortedSetMeta {}

/// Plans the dump of a sorted set's tree (see [`Plan::write`] with
/// [`tree_elements`]).
///
/// Time: O(n).
pub fn plan_sorted_set(tree: &KeyTree) -> Result<Plan, DumpError> {
    Plan::new(Kind::SortedSet, &SortedSetMeta {}, tree_elements(tree))
}

/// The elements of `tree`, in order, as a dump holds them.
pub fn tree_elements(tree: &KeyTree) -> impl Iterator<Item = &[u8]> {
    tree.element_bytes()
}

/// A sorted set's tree as a dump.
///
/// Time: O(bytes).
pub fn dump_sorted_set(tree: &KeyTree) -> Result<Vec<u8>, DumpError> {
    plan_sorted_set(tree)?.to_vec(tree_elements(tree))
}

/// Checks that `element` is exactly one well-formed term key (with a well-formed hint):
/// what a tree's element must be for every later read of it to succeed.
///
/// Time: O(element length).
pub fn check_term_element(position: u64, element: &[u8]) -> Result<(), LoadError> {
    TermChecker::default().check(position, element)
}

/// [`check_term_element`] with a stack kept from one element to the next, so that
/// checking a million elements allocates once.
#[derive(Debug, Clone, Default)]
pub struct TermChecker {
    /// Terms still owed by each open tuple or map; `usize::MAX` marks an open list.
    owed: Vec<usize>,
}

impl TermChecker {
    /// Checks one element, as [`check_term_element`] does.
    pub fn check(&mut self, position: u64, element: &[u8]) -> Result<(), LoadError> {
        let bad = |why| LoadError::BadElement { position, why };
        let mut reader = KeyReader::new(element).map_err(|_| bad("has a malformed hint"))?;
        self.owed.clear();
        loop {
            let token = match reader.next() {
                Ok(Some(token)) => token,
                _ => return Err(bad("is not a well-formed term key")),
            };
            let done = match token {
                Token::Tuple(n) if n > 0 => {
                    self.owed.push(n);
                    false
                }
                Token::Map(n) if n > 0 => {
                    let n = n
                        .checked_mul(2)
                        .ok_or(bad("is not a well-formed term key"))?;
                    self.owed.push(n);
                    false
                }
                Token::ListStart => {
                    self.owed.push(usize::MAX);
                    false
                }
                Token::ListEnd => {
                    if self.owed.pop() != Some(usize::MAX) {
                        return Err(bad("is not a well-formed term key"));
                    }
                    true
                }
                _ => true,
            };
            if done && self.term_done() {
                break;
            }
        }
        if !reader.at_end() {
            return Err(bad("has bytes after its term"));
        }
        Ok(())
    }

    /// A term has been read: pays it to the enclosing tuples and maps. True when it was
    /// the whole element's term.
    fn term_done(&mut self) -> bool {
        loop {
            match self.owed.last_mut() {
                None => return true,
                Some(&mut usize::MAX) => return false,
                Some(n) => {
                    *n -= 1;
                    if *n > 0 {
                        return false;
                    }
                    self.owed.pop();
                }
            }
        }
    }
}

/// Elements above which a load works on two threads (checking the term keys while the
/// tree is built; a member list's two trees each on its own): the two halves cost about
/// the same, and a million elements take tens of milliseconds each, so the load takes
/// about half as long on two cores. Below it, a thread costs more than it saves.
pub(crate) const PARALLEL_ABOVE: usize = 64 * 1024;

/// Runs `a` here and `b` on a second thread at the same time, and returns both results;
/// runs `b` here after `a` when the system refuses a thread.
pub fn join<A, B: Send>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    // `b` waits in a slot, so that it can still be run here if no thread starts.
    let slot = std::sync::Mutex::new(Some(b));
    let take = || slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("guild_kit_dump".into())
            .spawn_scoped(scope, || take().map(|b| b()));
        let a = a();
        let b = match spawned {
            // A panic in `b` is a bug (no input reaches one); it is raised here, in the
            // caller's thread, as if `b` had run here.
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        };
        let b = b.or_else(|| take().map(|b| b()));
        (a, b.expect("b runs on the thread or here"))
    })
}

/// Runs `build` on `elements` while every element is checked with `check` (on a second
/// thread when there are more than [`PARALLEL_ABOVE`]), and returns what was
/// built only if every element passed.
pub fn build_checked<'a, T>(
    elements: CheckedElements<'a>,
    mut check: impl FnMut(u64, &'a [u8]) -> Result<(), LoadError> + Send,
    build: impl FnOnce(CheckedElements<'a>) -> Result<T, LoadError>,
) -> Result<T, LoadError> {
    let checked = elements.clone();
    let check_all = move || {
        checked
            .enumerate()
            .try_for_each(|(position, element)| check(position as u64, element))
    };
    if elements.len() <= PARALLEL_ABOVE {
        check_all()?;
        return build(elements);
    }
    let (built, checked) = join(|| build(elements), check_all);
    checked.and(built)
}

/// Loads a sorted set's tree from a dump.
///
/// Time: O(bytes).
pub fn load_sorted_set(bytes: &[u8]) -> Result<KeyTree, LoadError> {
    let dump = Dump::parse(bytes, Kind::SortedSet)?;
    let SortedSetMeta {} = dump.metadata()?;
    let elements = dump.check_elements(|_, _| Ok(()))?;
    let mut checker = TermChecker::default();
    build_checked(
        elements,
        move |position, element| checker.check(position, element),
        |elements| {
            KeyTree::from_ascending(elements.map(ElementRef::from_bytes)).map_err(build_error)
        },
    )
}

/// A tree build's error, for elements at the same positions as in the dump.
pub fn build_error(error: BuildError) -> LoadError {
    match error {
        BuildError::NotAscending { position } => LoadError::NotAscending {
            position: position as u64,
        },
        BuildError::TooLong { position } => LoadError::BadElement {
            position: position as u64,
            why: "is longer than an element can be",
        },
        BuildError::TooMany => LoadError::BadHeader("more elements than a tree can hold"),
    }
}
