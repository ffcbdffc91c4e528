//! The sessions of one relay, and which of them get each event.
//!
//! An [`Audience`] holds up to [`MAX_SESSIONS`] sessions, each in a *slot* (a small
//! integer that stays the session's for as long as it is in the audience): its member
//! id, its roles, whether it is active, and the member-list windows it watches.
//! [`Audience::select`] answers "which sessions get this event?" as a bitmap of slots,
//! for every session at once.
//!
//! # Layout
//!
//! - Slots are a struct of arrays: member key span, role set, next slot of the same
//!   member; `occupied` and `active` are bitmaps of 64 slots per word. Freed slots are
//!   reused, so slot numbers stay below the largest number of sessions ever held.
//! - Member keys live in one byte arena (compacted when half of it is garbage); a hash
//!   table of slot numbers finds a member's first session, and the member's sessions
//!   are chained through `next_of_member`.
//! - Roles are interned to small numbers, and role sets (sorted, deduplicated role
//!   numbers) are interned too: sessions of members with the same roles share one set,
//!   and permissions are worked out once per set, not once per session.
//!
//! # The per-channel cache
//!
//! For each `(channel, required bits)` asked about, an entry keeps a bitmap of the
//! slots whose member may see the channel (active or not), along with what it was
//! computed from: the permissions' base stamp, the channel's stamp, and the *epoch* of
//! session changes it reflects. Every session change (add, remove, new roles) appends
//! its slot to a change log. A select then
//!
//! - uses the entry as it is when nothing changed;
//! - replays the log since the entry's epoch, recomputing only those slots, when only
//!   sessions changed (a change log longer than an eighth of the slots is dropped, and
//!   entries behind it are recomputed in full instead);
//! - recomputes the entry in full when its channel's overwrites or the base part of the
//!   permissions (`@everyone`, roles, owner) changed. When the base part changed only
//!   for some roles (or the owner), the sessions holding them are pushed onto the
//!   change log instead, so entries are patched rather than rebuilt.
//!
//! So an answer is never stale, and it is recomputed only when something it depends on
//! changed: a change to channel A leaves the entries of channel B alone.
//!
//! # Costs (n slots in use, k roles per session, w windows per session)
//!
//! | operation | time |
//! |---|---|
//! | [`Audience::insert`], [`Audience::set_roles`] | O(k + w log n) amortized |
//! | [`Audience::remove`] | O(k + w log n + sessions of the member) amortized |
//! | [`Audience::set_active`] | O(1) |
//! | [`Audience::select`], cached | O(n / 64 + forced sessions) |
//! | [`Audience::select`], after session changes | plus O(k) per changed session |
//! | [`Audience::select`], after a channel or base change | plus O(n + sum of set sizes + overwrites) |

use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use std::hash::BuildHasher;

use crate::permissions::{Channel, Overwrite, Permissions, ALL};

/// Most sessions an audience holds.
pub const MAX_SESSIONS: usize = 65_536;
/// Most distinct `(channel, required bits)` cache entries kept; the least recently used
/// one is dropped to make room.
pub const MAX_ENTRIES: usize = 1024;
/// A change log shorter than this is never dropped.
const MIN_LOG: usize = 1024;
/// Work units of replaying one changed slot (hash lookups of its roles), relative to
/// one slot of a full recompute.
const REPLAY_UNITS: u64 = 16;
/// Work units of putting one session into its group (a hash lookup and a push).
const GROUP_UNITS: u64 = 24;

/// Most distinct role ids an audience holds at once (role numbers take two bytes).
pub const MAX_ROLES: usize = 1 << 16;

/// A session's place in the audience.
pub type Slot = u32;
/// An interned role.
type Role = u16;
/// A watched member-list window: first and last row, inclusive.
pub type Window = (u64, u64);

/// Slot numbers fit in two bytes: the tables of slots store them so.
const _: () = assert!(MAX_SESSIONS <= 1 << 16);

/// Which sessions a select considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    /// Active sessions, plus the passive sessions of forced members.
    Active,
    /// Passive sessions only.
    Passive,
    /// Every session.
    All,
}

/// A part of the sessions: those whose slice key (given to [`Audience::insert`]) is
/// `index` modulo `count`, `count` a power of two up to 64. With a key drawn from what
/// identifies a session (its pid's hash, for the NIF), a session falls in the same
/// slice whenever it is held, so work on every session can be spread over `count`
/// calls (a relay's passive updates, a slice at a time) without any session's turn
/// coming twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSlice {
    index: u8,
    /// `count - 1`: a session is in the slice when `its slice key & mask == index`.
    mask: u8,
}

impl SlotSlice {
    /// Every session.
    pub const ALL: SlotSlice = SlotSlice { index: 0, mask: 0 };

    /// The slice `index` of `count`, or `None` unless `count` is a power of two up to
    /// 64 and `index < count`.
    pub fn new(index: u32, count: u32) -> Option<SlotSlice> {
        if !count.is_power_of_two() || count > 64 || index >= count {
            return None;
        }
        Some(SlotSlice {
            index: index as u8,
            mask: (count - 1) as u8,
        })
    }

    fn holds(self, key: u8) -> bool {
        key & 63 & self.mask == self.index
    }
}

/// What an event requires of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter<'a> {
    /// Nothing: every considered session.
    All,
    /// All of `required` in `channel` (an encoded channel id).
    Channel {
        /// The channel's id.
        channel: &'a [u8],
        /// The bits a session's member must have there.
        required: u64,
    },
    /// Watching this window.
    Window(Window),
}

/// Why a call was refused. The audience is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceError {
    /// The audience holds [`MAX_SESSIONS`] sessions.
    Full,
    /// The permissions do not know the channel.
    UnknownChannel,
    /// The member keys or role sets would exceed 4 GiB.
    TooLarge,
    /// The sessions would hold more than [`MAX_ROLES`] distinct role ids.
    TooManyRoles,
}

/// Makes room for `additional` more items, growing by a quarter rather than doubling:
/// the arrays that grow with the sessions keep at most a quarter of slack, at an
/// amortized O(1) per item all the same.
fn reserve<T>(items: &mut Vec<T>, additional: usize) {
    if items.len() + additional > items.capacity() {
        items.reserve_exact(additional.max(items.capacity() / 4).max(16));
    }
}

fn push<T>(items: &mut Vec<T>, item: T) {
    reserve(items, 1);
    items.push(item);
}

/// Appends `items` to the arena `arena(owner)`, addressed by [`Span`]s, and returns
/// their span. An arena that would pass `u32::MAX` is compacted first, and refuses the
/// items if it still would.
#[inline]
/// Whether `garbage` bytes of dead member keys in a store of `len` bytes are worth a
/// compaction: more than a page's worth, and more than half of the store.
fn compacts(garbage: usize, len: usize) -> bool {
    garbage > 4096 && garbage * 2 > len
}

fn append_span<O, T: Copy>(
    owner: &mut O,
    arena: fn(&mut O) -> &mut Vec<T>,
    compact: fn(&mut O),
    items: &[T],
) -> Result<Span, AudienceError> {
    if arena(owner).len() + items.len() > u32::MAX as usize {
        compact(owner);
        if arena(owner).len() + items.len() > u32::MAX as usize {
            return Err(AudienceError::TooLarge);
        }
    }
    let arena = arena(owner);
    let span = Span {
        start: arena.len() as u32,
        len: items.len() as u32,
    };
    reserve(arena, items.len());
    arena.extend_from_slice(items);
    Ok(span)
}

/// Heap bytes of a vector's buffer.
fn vec_bytes<T>(items: &Vec<T>) -> usize {
    items.capacity() * std::mem::size_of::<T>()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

/// A bitmap of slots, 64 per word.
#[derive(Debug, Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    #[inline]
    fn get(&self, slot: u32) -> bool {
        self.0
            .get(slot as usize / 64)
            .is_some_and(|word| word >> (slot % 64) & 1 == 1)
    }

    #[inline]
    fn set(&mut self, slot: u32, value: bool) {
        let word = slot as usize / 64;
        if word >= self.0.len() {
            if !value {
                return;
            }
            self.0.resize(word + 1, 0);
        }
        let bit = 1u64 << (slot % 64);
        if value {
            self.0[word] |= bit;
        } else {
            self.0[word] &= !bit;
        }
    }

    #[inline]
    fn word(&self, index: usize) -> u64 {
        self.0.get(index).copied().unwrap_or(0)
    }
}

/// The set bits of `words`, in ascending order.
pub fn slots_of(words: &[u64]) -> impl Iterator<Item = Slot> + '_ {
    words.iter().enumerate().flat_map(|(index, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            Some(index as u32 * 64 + bit)
        })
    })
}

/// Interned roles: each distinct role key gets a small number, counted by the role
/// sets that hold it and freed with the last one.
#[derive(Debug, Default)]
struct Roles {
    keys: Vec<Box<[u8]>>,
    sets_holding: Vec<u32>,
    free: Vec<Role>,
    table: HashTable<Role>,
}

impl Roles {
    fn find(&self, hasher: &DefaultHashBuilder, key: &[u8]) -> Option<Role> {
        let keys = &self.keys;
        self.table
            .find(hasher.hash_one(key), |&role| *keys[role as usize] == *key)
            .copied()
    }

    /// The role's number, and whether it is new (held by no set yet).
    fn intern(
        &mut self,
        hasher: &DefaultHashBuilder,
        key: &[u8],
    ) -> Result<(Role, bool), AudienceError> {
        if let Some(role) = self.find(hasher, key) {
            return Ok((role, false));
        }
        let role = match self.free.pop() {
            Some(role) => {
                self.keys[role as usize] = key.into();
                role
            }
            None if self.keys.len() < MAX_ROLES => {
                self.keys.push(key.into());
                self.sets_holding.push(0);
                (self.keys.len() - 1) as Role
            }
            None => return Err(AudienceError::TooManyRoles),
        };
        let keys = &self.keys;
        self.table.insert_unique(hasher.hash_one(key), role, |&r| {
            hasher.hash_one(&*keys[r as usize])
        });
        Ok((role, true))
    }

    fn release(&mut self, hasher: &DefaultHashBuilder, role: Role) {
        let held = &mut self.sets_holding[role as usize];
        *held -= 1;
        if *held == 0 {
            let key = &self.keys[role as usize];
            if let Ok(entry) = self
                .table
                .find_entry(hasher.hash_one(&**key), |&r| r == role)
            {
                entry.remove();
            }
            self.keys[role as usize] = Box::default();
            self.free.push(role);
        }
    }

    fn heap_bytes(&self) -> usize {
        vec_bytes(&self.keys)
            + self.keys.iter().map(|k| k.len()).sum::<usize>()
            + vec_bytes(&self.sets_holding)
            + vec_bytes(&self.free)
            + self.table.allocation_size()
    }
}

/// Interned role sets: sorted, deduplicated role numbers in one arena, counted by the
/// sessions that hold them.
#[derive(Debug, Default)]
struct RoleSets {
    spans: Vec<Span>,
    sessions: Vec<u32>,
    arena: Vec<Role>,
    garbage: usize,
    free: Vec<u32>,
    table: HashTable<u32>,
}

impl RoleSets {
    #[inline]
    fn roles(&self, set: u32) -> &[Role] {
        &self.arena[self.spans[set as usize].range()]
    }

    /// The set's number (one more session counted on it), and whether it is new.
    fn intern(
        &mut self,
        hasher: &DefaultHashBuilder,
        roles: &[Role],
    ) -> Result<(u32, bool), AudienceError> {
        let hash = hasher.hash_one(roles);
        let (spans, arena) = (&self.spans, &self.arena);
        if let Some(&set) = self
            .table
            .find(hash, |&s| arena[spans[s as usize].range()] == *roles)
        {
            self.sessions[set as usize] += 1;
            return Ok((set, false));
        }
        let span = append_span(self, |sets| &mut sets.arena, RoleSets::compact, roles)?;
        let set = match self.free.pop() {
            Some(set) => {
                self.spans[set as usize] = span;
                self.sessions[set as usize] = 1;
                set
            }
            None => {
                push(&mut self.spans, span);
                push(&mut self.sessions, 1);
                (self.spans.len() - 1) as u32
            }
        };
        let (spans, arena) = (&self.spans, &self.arena);
        self.table.insert_unique(hash, set, |&s| {
            hasher.hash_one(&arena[spans[s as usize].range()])
        });
        Ok((set, true))
    }

    /// Counts one session less on `set`. Returns true when that freed it; its roles
    /// must then be released by the caller, before the next intern.
    fn release(&mut self, hasher: &DefaultHashBuilder, set: u32) -> bool {
        let count = &mut self.sessions[set as usize];
        *count -= 1;
        if *count > 0 {
            return false;
        }
        let hash = hasher.hash_one(self.roles(set));
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == set) {
            entry.remove();
        }
        self.free.push(set);
        true
    }

    /// Frees the arena space of a set released by [`RoleSets::release`].
    fn forget(&mut self, set: u32) {
        self.garbage += self.spans[set as usize].len as usize;
        self.spans[set as usize] = Span::default();
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for (set, span) in self.spans.iter_mut().enumerate() {
            if self.sessions[set] == 0 {
                continue;
            }
            let start = arena.len() as u32;
            arena.extend_from_slice(&self.arena[span.range()]);
            span.start = start;
        }
        self.arena = arena;
        self.garbage = 0;
    }

    fn is_live(&self, set: u32) -> bool {
        self.sessions[set as usize] > 0
    }

    fn heap_bytes(&self) -> usize {
        vec_bytes(&self.spans)
            + vec_bytes(&self.sessions)
            + vec_bytes(&self.arena)
            + vec_bytes(&self.free)
            + self.table.allocation_size()
    }
}

/// The sessions: everything but permissions and caches.
#[derive(Debug, Default)]
struct Table {
    member_span: Vec<Span>,
    role_set: Vec<u32>,
    /// The next session of the same member; a slot's own number ends the chain.
    next_of_member: Vec<u16>,
    /// The session's slice key (its low six bits count): which [`SlotSlice`]s hold it.
    slice_key: Vec<u8>,
    occupied: Bits,
    active: Bits,
    free: Vec<u32>,
    len: usize,
    keys: Vec<u8>,
    key_garbage: usize,
    member_heads: HashTable<u16>,
    roles: Roles,
    sets: RoleSets,
    windows: StdHashMap<Window, BTreeSet<u32>>,
    slot_windows: StdHashMap<u32, Box<[Window]>>,
    hasher: DefaultHashBuilder,
}

impl Table {
    #[inline]
    fn member(&self, slot: u32) -> &[u8] {
        &self.keys[self.member_span[slot as usize].range()]
    }

    fn head_of(&self, member: &[u8]) -> Option<u32> {
        let (keys, spans) = (&self.keys, &self.member_span);
        self.member_heads
            .find(self.hasher.hash_one(member), |&s| {
                keys[spans[s as usize].range()] == *member
            })
            .map(|&s| u32::from(s))
    }

    /// The slots of `member`'s sessions (unordered).
    fn slots_of_member<'t>(&'t self, member: &[u8]) -> impl Iterator<Item = u32> + 't {
        let mut next = self.head_of(member);
        std::iter::from_fn(move || {
            let slot = next?;
            let after = u32::from(self.next_of_member[slot as usize]);
            next = (after != slot).then_some(after);
            Some(slot)
        })
    }

    fn is_session(&self, slot: u32) -> bool {
        self.occupied.get(slot)
    }

    /// The sessions `sessions` names among the 64 slots of word `index`.
    #[inline]
    fn considered(&self, index: usize, sessions: Sessions) -> u64 {
        let (occupied, active) = (self.occupied.word(index), self.active.word(index));
        match sessions {
            Sessions::Active => active,
            Sessions::Passive => occupied & !active,
            Sessions::All => occupied,
        }
    }

    /// The sessions `sessions` names among the 64 slots of word `index` that `slice`
    /// holds.
    fn considered_in(&self, index: usize, sessions: Sessions, slice: SlotSlice) -> u64 {
        let mut word = self.considered(index, sessions);
        if slice != SlotSlice::ALL {
            let mut left = word;
            while left != 0 {
                let bit = left.trailing_zeros() as usize;
                left &= left - 1;
                if !slice.holds(self.slice_key[index * 64 + bit]) {
                    word &= !(1 << bit);
                }
            }
        }
        word
    }

    fn slot_count(&self) -> usize {
        self.member_span.len()
    }

    fn words(&self) -> usize {
        self.slot_count().div_ceil(64)
    }

    /// Sorted, deduplicated role numbers for these keys, interning new roles. Returns
    /// the numbers and which of them are new. Nothing is left interned on error.
    fn intern_roles(&mut self, roles: &[&[u8]]) -> Result<(Vec<Role>, Vec<Role>), AudienceError> {
        let mut numbers = Vec::with_capacity(roles.len());
        let mut new = Vec::new();
        for key in roles {
            match self.roles.intern(&self.hasher, key) {
                Ok((role, is_new)) => {
                    if is_new {
                        new.push(role);
                    }
                    numbers.push(role);
                }
                Err(error) => {
                    self.drop_unheld(&new);
                    return Err(error);
                }
            }
        }
        numbers.sort_unstable();
        numbers.dedup();
        Ok((numbers, new))
    }

    /// Interns a role set for these role numbers; a new set holds each of its roles.
    /// Returns the set and whether it is new.
    fn intern_set(&mut self, numbers: &[Role]) -> Result<(u32, bool), AudienceError> {
        let (set, is_new) = self.sets.intern(&self.hasher, numbers)?;
        if is_new {
            for &role in numbers {
                self.roles.sets_holding[role as usize] += 1;
            }
        }
        Ok((set, is_new))
    }

    /// Drops roles interned for a set that was not created after all.
    fn drop_unheld(&mut self, new_roles: &[Role]) {
        for &role in new_roles {
            if self.roles.sets_holding[role as usize] == 0 {
                self.roles.sets_holding[role as usize] = 1;
                self.roles.release(&self.hasher, role);
            }
        }
    }

    fn release_set(&mut self, set: u32) {
        if self.sets.release(&self.hasher, set) {
            let roles = self.sets.roles(set).to_vec();
            for role in roles {
                self.roles.release(&self.hasher, role);
            }
            self.sets.forget(set);
        }
    }

    fn store_key(&mut self, member: &[u8]) -> Result<Span, AudienceError> {
        append_span(self, |table| &mut table.keys, Table::compact_keys, member)
    }

    fn compact_keys(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len() - self.key_garbage);
        for slot in slots_of(&self.occupied.0) {
            let span = &mut self.member_span[slot as usize];
            let start = keys.len() as u32;
            keys.extend_from_slice(&self.keys[span.range()]);
            span.start = start;
        }
        self.keys = keys;
        self.key_garbage = 0;
    }

    /// Chains `slot` into its member's sessions, right after the first one.
    fn link_member(&mut self, slot: u32) {
        let member = &self.keys[self.member_span[slot as usize].range()];
        match self.head_of(member) {
            Some(head) => {
                let after = self.next_of_member[head as usize];
                // The head was the last one: `slot` becomes the last one.
                self.next_of_member[slot as usize] = if u32::from(after) == head {
                    slot as u16
                } else {
                    after
                };
                self.next_of_member[head as usize] = slot as u16;
            }
            None => {
                self.next_of_member[slot as usize] = slot as u16;
                let (keys, spans, hasher) = (&self.keys, &self.member_span, &self.hasher);
                self.member_heads
                    .insert_unique(hasher.hash_one(member), slot as u16, |&s| {
                        hasher.hash_one(&keys[spans[s as usize].range()])
                    });
            }
        }
    }

    fn unlink_member(&mut self, slot: u32) {
        let Some(head) = self.head_of(self.member(slot)) else {
            return;
        };
        let next = u32::from(self.next_of_member[slot as usize]);
        let is_last = next == slot;
        if head == slot {
            let hash = self.hasher.hash_one(self.member(slot));
            if let Ok(entry) = self
                .member_heads
                .find_entry(hash, |&s| u32::from(s) == slot)
            {
                if is_last {
                    entry.remove();
                } else {
                    *entry.into_mut() = next as u16;
                }
            }
        } else {
            let mut at = head;
            loop {
                let after = u32::from(self.next_of_member[at as usize]);
                if after == slot {
                    // The one before `slot` takes its successor, or ends the chain.
                    self.next_of_member[at as usize] =
                        if is_last { at as u16 } else { next as u16 };
                    break;
                }
                if after == at {
                    break;
                }
                at = after;
            }
        }
        self.next_of_member[slot as usize] = slot as u16;
    }

    fn set_windows(&mut self, slot: u32, windows: &[Window]) {
        let mut wanted: Vec<Window> = windows.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let old = self.slot_windows.remove(&slot).unwrap_or_default();
        for window in old.iter() {
            if wanted.binary_search(window).is_err() {
                if let Some(slots) = self.windows.get_mut(window) {
                    slots.remove(&slot);
                    if slots.is_empty() {
                        self.windows.remove(window);
                    }
                }
            }
        }
        for window in &wanted {
            if old.binary_search(window).is_err() {
                self.windows.entry(*window).or_default().insert(slot);
            }
        }
        if !wanted.is_empty() {
            self.slot_windows.insert(slot, wanted.into_boxed_slice());
        }
    }

    fn heap_bytes(&self) -> usize {
        let slots = vec_bytes(&self.member_span)
            + vec_bytes(&self.role_set)
            + vec_bytes(&self.next_of_member)
            + vec_bytes(&self.slice_key)
            + vec_bytes(&self.occupied.0)
            + vec_bytes(&self.active.0)
            + vec_bytes(&self.free);
        // A BTreeSet node holds up to 11 slots in about 96 bytes; count 16 per slot.
        let windows = self.windows.capacity() * 64
            + self.windows.values().map(|s| s.len() * 16).sum::<usize>()
            + self.slot_windows.capacity() * 32
            + self
                .slot_windows
                .values()
                .map(|w| w.len() * std::mem::size_of::<Window>())
                .sum::<usize>();
        slots
            + vec_bytes(&self.keys)
            + self.member_heads.allocation_size()
            + self.roles.heap_bytes()
            + self.sets.heap_bytes()
            + windows
    }
}

/// What the audience knows of the permissions it last saw, per role and per role set.
#[derive(Debug, Default)]
struct Known {
    model: Option<Permissions>,
    /// Per role number: its bits, when the model knows it.
    role_bits: Vec<Option<u64>>,
    /// Per role set: base permissions (`@everyone` and its known roles), [`ALL`] for
    /// administrators. Not counting the owner.
    set_base: Vec<u64>,
}

impl Known {
    fn refresh_role(&mut self, table: &Table, role: Role) {
        let bits = self
            .model
            .as_ref()
            .and_then(|model| model.role(&table.roles.keys[role as usize]));
        let index = role as usize;
        if self.role_bits.len() <= index {
            self.role_bits.resize(index + 1, None);
        }
        self.role_bits[index] = bits;
    }

    fn refresh_set(&mut self, table: &Table, set: u32) {
        let Some(model) = &self.model else { return };
        let mut bits = model.everyone();
        for &role in table.sets.roles(set) {
            bits |= self.role_bits[role as usize].unwrap_or(0);
        }
        let index = set as usize;
        if self.set_base.len() <= index {
            let missing = index + 1 - self.set_base.len();
            reserve(&mut self.set_base, missing);
            self.set_base.resize(index + 1, 0);
        }
        self.set_base[index] = crate::permissions::admin_to_all(bits);
    }
}

#[derive(Debug)]
struct Entry {
    required: u64,
    base_stamp: u64,
    channel: Arc<Channel>,
    /// The entry reflects every session change before this epoch.
    epoch: u64,
    visible: Vec<u64>,
    last_use: u64,
}

/// Per-channel answers and the session changes they have yet to see.
/// How much work the cache has done, for tests and statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries computed in full.
    pub recomputes: u64,
    /// Slots recomputed from the change log.
    pub replayed: u64,
    /// Selects answered from an entry that needed nothing.
    pub hits: u64,
    /// Entries held now.
    pub entries: usize,
}

#[derive(Debug)]
struct Cache {
    stats: CacheStats,
    min_log: usize,
    max_entries: usize,
    entries: HashMap<Box<[u8]>, Vec<Entry>>,
    entry_count: usize,
    uses: u64,
    log: Vec<u32>,
    log_base: u64,
    overwrites: Vec<Overwrite>,
    set_visible: Vec<bool>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            stats: CacheStats::default(),
            min_log: MIN_LOG,
            max_entries: MAX_ENTRIES,
            entries: HashMap::new(),
            entry_count: 0,
            uses: 0,
            log: Vec::new(),
            log_base: 0,
            overwrites: Vec::new(),
            set_visible: Vec::new(),
        }
    }
}

impl Cache {
    fn epoch(&self) -> u64 {
        self.log_base + self.log.len() as u64
    }

    /// The bitmap of an entry (empty when there is none).
    fn visible(&self, channel: &[u8], required: u64) -> &[u64] {
        self.entries
            .get(channel)
            .and_then(|list| list.iter().find(|e| e.required == required))
            .map_or(&[], |e| &e.visible[..])
    }

    fn changed(&mut self, slot: u32, slot_count: usize) {
        self.log.push(slot);
        if self.log.len() > self.min_log.max(slot_count / 8) {
            self.log_base = self.epoch();
            self.log.clear();
        }
    }

    fn heap_bytes(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|(key, list)| {
                key.len()
                    + vec_bytes(list)
                    + list.iter().map(|e| vec_bytes(&e.visible)).sum::<usize>()
            })
            .sum();
        entries
            + self.entries.allocation_size()
            + vec_bytes(&self.log)
            + vec_bytes(&self.overwrites)
            + vec_bytes(&self.set_visible)
    }
}

/// The sessions of one relay; see the module docs.
#[derive(Debug, Default)]
pub struct Audience {
    table: Table,
    known: Known,
    cache: Cache,
    selection: Vec<u64>,
}

impl Audience {
    /// An empty audience.
    pub fn new() -> Self {
        Audience::default()
    }

    /// An empty audience that drops its change log past `min_log` changes (or an
    /// eighth of the slots) and keeps at most `max_entries` cache entries: small limits
    /// exercise the fallbacks in tests.
    pub fn with_limits(min_log: usize, max_entries: usize) -> Self {
        let mut audience = Audience::default();
        audience.cache.min_log = min_log;
        audience.cache.max_entries = max_entries.max(1);
        audience
    }

    /// Number of sessions.
    ///
    /// Time: O(1).
    pub fn len(&self) -> usize {
        self.table.len
    }

    /// True when there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// Adds a session of `member` holding `roles` (encoded ids; duplicates count once).
    ///
    /// Time: O(k + w log n) amortized.
    pub fn insert(
        &mut self,
        member: &[u8],
        roles: &[&[u8]],
        active: bool,
        windows: &[Window],
        slice_key: u8,
    ) -> Result<Slot, AudienceError> {
        if self.table.len >= MAX_SESSIONS {
            return Err(AudienceError::Full);
        }
        let set = self.intern(roles)?;
        let span = match self.table.store_key(member) {
            Ok(span) => span,
            Err(error) => {
                self.table.release_set(set);
                return Err(error);
            }
        };
        let t = &mut self.table;
        let slot = match t.free.pop() {
            Some(slot) => {
                t.member_span[slot as usize] = span;
                t.role_set[slot as usize] = set;
                t.slice_key[slot as usize] = slice_key;
                slot
            }
            None => {
                push(&mut t.member_span, span);
                push(&mut t.role_set, set);
                push(&mut t.next_of_member, 0);
                push(&mut t.slice_key, slice_key);
                (t.member_span.len() - 1) as u32
            }
        };
        t.link_member(slot);
        t.occupied.set(slot, true);
        t.active.set(slot, active);
        t.set_windows(slot, windows);
        t.len += 1;
        self.cache.changed(slot, t.slot_count());
        Ok(slot)
    }

    /// Bytes of member keys that removing the session in `slot` would copy or free at
    /// once: the whole key store when the removal compacts it, else none. A caller can
    /// move a costly removal off a latency-sensitive thread first.
    ///
    /// Time: O(1).
    pub fn remove_cost(&self, slot: Slot) -> usize {
        let t = &self.table;
        if !t.is_session(slot) {
            return 0;
        }
        let garbage = t.key_garbage + t.member_span[slot as usize].len as usize;
        if compacts(garbage, t.keys.len()) {
            t.keys.len()
        } else {
            0
        }
    }

    /// Removes the session in `slot`. Returns false when there is none.
    ///
    /// Time: O(k + w log n + sessions of the member) amortized.
    pub fn remove(&mut self, slot: Slot) -> bool {
        if !self.table.is_session(slot) {
            return false;
        }
        let t = &mut self.table;
        t.unlink_member(slot);
        let set = t.role_set[slot as usize];
        t.release_set(set);
        t.set_windows(slot, &[]);
        t.key_garbage += t.member_span[slot as usize].len as usize;
        t.member_span[slot as usize] = Span::default();
        t.occupied.set(slot, false);
        t.active.set(slot, false);
        t.free.push(slot);
        t.len -= 1;
        if compacts(t.key_garbage, t.keys.len()) {
            t.compact_keys();
        }
        self.cache.changed(slot, t.slot_count());
        true
    }

    /// Gives the session in `slot` these roles. Returns false when there is no session.
    ///
    /// Time: O(k) amortized.
    pub fn set_roles(&mut self, slot: Slot, roles: &[&[u8]]) -> Result<bool, AudienceError> {
        if !self.table.is_session(slot) {
            return Ok(false);
        }
        let set = self.intern(roles)?;
        let old = std::mem::replace(&mut self.table.role_set[slot as usize], set);
        self.table.release_set(old);
        if old != set {
            self.cache.changed(slot, self.table.slot_count());
        }
        Ok(true)
    }

    /// Gives every session of `member` these roles. Returns how many there are.
    ///
    /// Time: O(k + sessions of the member) amortized.
    pub fn set_member_roles(
        &mut self,
        member: &[u8],
        roles: &[&[u8]],
    ) -> Result<usize, AudienceError> {
        let slots: Vec<u32> = self.table.slots_of_member(member).collect();
        if slots.is_empty() {
            return Ok(0);
        }
        // Interned once, counted once per session.
        let set = self.intern(roles)?;
        self.table.sets.sessions[set as usize] += slots.len() as u32 - 1;
        for &slot in &slots {
            let old = std::mem::replace(&mut self.table.role_set[slot as usize], set);
            self.table.release_set(old);
            if old != set {
                self.cache.changed(slot, self.table.slot_count());
            }
        }
        Ok(slots.len())
    }

    /// Marks the session active or passive. Returns false when there is no session.
    ///
    /// Time: O(1).
    pub fn set_active(&mut self, slot: Slot, active: bool) -> bool {
        if !self.table.is_session(slot) {
            return false;
        }
        self.table.active.set(slot, active);
        true
    }

    /// Replaces the windows the session watches. Returns false when there is no
    /// session.
    ///
    /// Time: O(w log n).
    pub fn set_windows(&mut self, slot: Slot, windows: &[Window]) -> bool {
        if !self.table.is_session(slot) {
            return false;
        }
        self.table.set_windows(slot, windows);
        true
    }

    /// Whether `slice` holds the session in `slot` (false for a free slot).
    ///
    /// Time: O(1).
    pub fn in_slice(&self, slot: Slot, slice: SlotSlice) -> bool {
        self.table.is_session(slot) && slice.holds(self.table.slice_key[slot as usize])
    }

    /// The session in `slot`: member key, role keys (in key order), active flag and
    /// windows (sorted). `None` when there is none.
    ///
    /// Time: O(k + w).
    pub fn session(&self, slot: Slot) -> Option<SessionView<'_>> {
        let t = &self.table;
        if !t.is_session(slot) {
            return None;
        }
        let mut roles: Vec<&[u8]> = t
            .sets
            .roles(t.role_set[slot as usize])
            .iter()
            .map(|&role| &*t.roles.keys[role as usize])
            .collect();
        roles.sort_unstable();
        Some(SessionView {
            member: t.member(slot),
            roles,
            active: t.active.get(slot),
            windows: t.slot_windows.get(&slot).map_or(&[], |w| &w[..]),
        })
    }

    /// The slots in use, ascending.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        slots_of(&self.table.occupied.0)
    }

    /// How many sessions `member` has.
    ///
    /// Time: O(sessions of the member).
    pub fn member_session_count(&self, member: &[u8]) -> usize {
        self.table.slots_of_member(member).count()
    }

    /// The slots of `member`'s sessions, ascending.
    ///
    /// Time: O(sessions of the member).
    pub fn member_slots(&self, member: &[u8]) -> Vec<Slot> {
        let mut slots: Vec<u32> = self.table.slots_of_member(member).collect();
        slots.sort_unstable();
        slots
    }

    /// What the per-channel cache has done so far.
    ///
    /// Time: O(1).
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            entries: self.cache.entry_count,
            ..self.cache.stats
        }
    }

    /// Bytes of heap memory held.
    ///
    /// Time: O(entries + windows + roles).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.cache.heap_bytes()
            + vec_bytes(&self.known.role_bits)
            + vec_bytes(&self.known.set_base)
            + vec_bytes(&self.selection)
    }

    fn intern(&mut self, roles: &[&[u8]]) -> Result<u32, AudienceError> {
        let (numbers, new_roles) = self.table.intern_roles(roles)?;
        let (set, is_new) = match self.table.intern_set(&numbers) {
            Ok(interned) => interned,
            Err(error) => {
                self.table.drop_unheld(&new_roles);
                return Err(error);
            }
        };
        for &role in &new_roles {
            self.known.refresh_role(&self.table, role);
        }
        if is_new {
            self.known.refresh_set(&self.table, set);
        }
        Ok(set)
    }

    /// An estimate of the work [`Audience::prepare`] does for `model`, in units of
    /// about one slot of a full recompute, to decide where to run it.
    ///
    /// Time: O(1).
    pub fn prepare_cost(&self, model: &Permissions) -> u64 {
        let Some(known) = &self.known.model else {
            return self.full_cost();
        };
        let mut cost = 0;
        if known.base_stamp() != model.base_stamp() {
            cost += self.full_cost() + self.table.roles.keys.len() as u64;
        }
        if !known.same_channels(model) {
            cost += self.cache.entry_count as u64;
        }
        cost
    }

    fn full_cost(&self) -> u64 {
        let t = &self.table;
        (t.slot_count() + t.sets.arena.len() + t.sets.spans.len()) as u64
    }

    /// Brings what the audience knows of the permissions up to `model`: per-role and
    /// per-role-set base permissions, and which cache entries still hold. Selects do
    /// this themselves; a caller can do it first to learn the cost of the rest
    /// ([`Audience::select_cost`]) exactly.
    ///
    /// Time: nothing when `model` is the last one seen; O(roles + sum of set sizes + n)
    /// after a base change; O(entries) after a channel change.
    pub fn prepare(&mut self, model: &Permissions) {
        self.sync(model);
    }

    /// An estimate of the work [`Audience::select`] would do, in units of about one
    /// slot of a full recompute, to decide where to run it. Exact for the cache once
    /// [`Audience::prepare`] has seen `model`.
    ///
    /// Time: O(1) (plus a hash lookup of the channel).
    pub fn select_cost(&self, model: &Permissions, filter: &Filter, forced: usize) -> u64 {
        let t = &self.table;
        let mut cost = self.prepare_cost(model) + forced as u64 * 4 + t.words() as u64;
        let synced = self
            .known
            .model
            .as_ref()
            .is_some_and(|m| m.base_stamp() == model.base_stamp());
        match *filter {
            Filter::All => {}
            Filter::Window(window) => {
                cost += t.windows.get(&window).map_or(0, |s| s.len() as u64);
            }
            Filter::Channel { channel, required } => {
                let Some(current) = model.channel(channel) else {
                    return cost;
                };
                let entry = self
                    .cache
                    .entries
                    .get(channel)
                    .and_then(|list| list.iter().find(|e| e.required == required));
                cost += match entry {
                    Some(e)
                        if synced
                            && e.base_stamp == model.base_stamp()
                            && e.channel.stamp() == current.stamp()
                            && e.epoch >= self.cache.log_base =>
                    {
                        (self.cache.epoch() - e.epoch) * REPLAY_UNITS
                    }
                    _ => self.full_cost() + current.len() as u64 * 4,
                };
            }
        }
        cost
    }

    /// An estimate of the work [`Audience::group_by_channels`] would do, in the units of
    /// [`Audience::select_cost`].
    ///
    /// Time: O(channels + n / 64).
    pub fn group_cost(
        &self,
        model: &Permissions,
        channels: &[(&[u8], u64)],
        sessions: Sessions,
        slice: SlotSlice,
    ) -> u64 {
        let t = &self.table;
        let considered: u64 = (0..t.words())
            .map(|index| u64::from(t.considered_in(index, sessions, slice).count_ones()))
            .sum();
        let per_channel: u64 = channels
            .iter()
            .map(|&(channel, required)| {
                self.select_cost(model, &Filter::Channel { channel, required }, 0) + considered
            })
            .sum();
        per_channel + considered * GROUP_UNITS * channels.len().div_ceil(64) as u64
    }

    /// The slots of the sessions `sessions` names that pass `filter`, as a bitmap of 64
    /// slots per word. With [`Sessions::Active`], the passive sessions of the members
    /// in `forced` (encoded ids) are added when they pass the filter too.
    ///
    /// Time: see the module docs.
    pub fn select(
        &mut self,
        model: &Permissions,
        filter: Filter,
        sessions: Sessions,
        forced: &[&[u8]],
    ) -> Result<&[u64], AudienceError> {
        if let Filter::Channel { channel, .. } = filter {
            if model.channel(channel).is_none() {
                return Err(AudienceError::UnknownChannel);
            }
        }
        self.sync(model);
        let words = self.table.words();
        let mut selection = std::mem::take(&mut self.selection);
        selection.clear();
        selection.resize(words, 0);
        match filter {
            Filter::All => {
                for (index, word) in selection.iter_mut().enumerate() {
                    *word = self.table.considered(index, sessions);
                }
            }
            Filter::Window(window) => {
                let t = &self.table;
                for &slot in t.windows.get(&window).into_iter().flatten() {
                    let (index, bit) = (slot as usize / 64, 1u64 << (slot % 64));
                    selection[index] |= t.considered(index, sessions) & bit;
                }
            }
            Filter::Channel { channel, required } => {
                self.ensure_entry(model, channel, required)?;
                let visible = self.cache.visible(channel, required);
                for (index, word) in selection.iter_mut().enumerate() {
                    let considered = self.table.considered(index, sessions);
                    *word = considered & visible.get(index).copied().unwrap_or(0);
                }
            }
        }
        if sessions == Sessions::Active && !forced.is_empty() {
            self.add_forced(filter, forced, &mut selection);
        }
        self.selection = selection;
        Ok(&self.selection)
    }

    /// Adds the passive sessions of `forced` members that pass `filter`.
    fn add_forced(&self, filter: Filter, forced: &[&[u8]], selection: &mut [u64]) {
        let t = &self.table;
        let visible = match filter {
            Filter::Channel { channel, required } => self.cache.visible(channel, required),
            _ => &[],
        };
        for member in forced {
            for slot in t.slots_of_member(member) {
                if t.active.get(slot) {
                    continue;
                }
                let passes = match filter {
                    Filter::All => true,
                    Filter::Window(window) => t
                        .slot_windows
                        .get(&slot)
                        .is_some_and(|w| w.contains(&window)),
                    Filter::Channel { .. } => visible
                        .get(slot as usize / 64)
                        .is_some_and(|word| word >> (slot % 64) & 1 == 1),
                };
                if passes {
                    selection[slot as usize / 64] |= 1u64 << (slot % 64);
                }
            }
        }
    }

    /// Groups the sessions `sessions` names in `slice` by the channels of `channels` (encoded ids
    /// and required bits) they may see. Returns, ordered by their first slot, one group
    /// per distinct set of visible channels (as indices into `channels`, ascending) with
    /// its slots (ascending); sessions that may see none of them are left out.
    ///
    /// Time: O(channels × n / 64 + n × channels / 64) plus the cache updates of
    /// [`Audience::select`] for each channel.
    pub fn group_by_channels(
        &mut self,
        model: &Permissions,
        channels: &[(&[u8], u64)],
        sessions: Sessions,
        slice: SlotSlice,
    ) -> Result<Vec<Group>, AudienceError> {
        if channels.iter().any(|(c, _)| model.channel(c).is_none()) {
            return Err(AudienceError::UnknownChannel);
        }
        self.sync(model);
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let considered: Vec<u64> = (0..self.table.words())
            .map(|index| self.table.considered_in(index, sessions, slice))
            .collect();
        let slot_count = self.table.slot_count();
        let per_slot = channels.len().div_ceil(64);
        let mut patterns = vec![0u64; slot_count * per_slot];
        // Each entry is read right after it is brought up to date: with a small cache,
        // bringing up the next one may evict it.
        for (k, &(channel, required)) in channels.iter().enumerate() {
            self.ensure_entry(model, channel, required)?;
            let visible = self.cache.visible(channel, required);
            let (offset, bit) = (k / 64, 1u64 << (k % 64));
            for (index, &mask) in considered.iter().enumerate() {
                let mut word = mask & visible.get(index).copied().unwrap_or(0);
                while word != 0 {
                    let slot = index * 64 + word.trailing_zeros() as usize;
                    word &= word - 1;
                    patterns[slot * per_slot + offset] |= bit;
                }
            }
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut add = |group: &mut Option<usize>, pattern: &[u64], slot: u32| {
            let index = *group.get_or_insert_with(|| {
                groups.push(Group {
                    channels: slots_of(pattern).collect(),
                    slots: Vec::new(),
                });
                groups.len() - 1
            });
            groups[index].slots.push(slot);
        };
        if per_slot == 1 {
            // Up to 64 channels: a pattern is one word.
            let mut by_pattern: HashMap<u64, Option<usize>> = HashMap::new();
            for slot in slots_of(&considered) {
                let pattern = patterns[slot as usize];
                if pattern != 0 {
                    add(by_pattern.entry(pattern).or_default(), &[pattern], slot);
                }
            }
        } else {
            let mut by_pattern: HashMap<&[u64], Option<usize>> = HashMap::new();
            for slot in slots_of(&considered) {
                let at = slot as usize * per_slot;
                let pattern = &patterns[at..at + per_slot];
                if pattern.iter().any(|&w| w != 0) {
                    add(by_pattern.entry(pattern).or_default(), pattern, slot);
                }
            }
        }
        Ok(groups)
    }

    /// Brings what the audience knows of the permissions up to `model`.
    fn sync(&mut self, model: &Permissions) {
        let Some(old) = &self.known.model else {
            self.known.model = Some(model.clone());
            self.refresh_all();
            return;
        };
        let base_changed = old.base_stamp() != model.base_stamp();
        let channels_changed = !old.same_channels(model);
        if !base_changed && !channels_changed {
            return;
        }
        if channels_changed {
            let mut dropped = 0;
            self.cache.entries.retain(|channel, list| {
                let keep = model.channel(channel).is_some();
                if !keep {
                    dropped += list.len();
                }
                keep
            });
            self.cache.entry_count -= dropped;
        }
        if base_changed {
            self.sync_base(model);
        }
        self.known.model = Some(model.clone());
    }

    /// A new base part: patch the entries through the change log when only some roles
    /// (or the owner) changed and few sessions hold them; otherwise the entries see a
    /// new base stamp and recompute in full.
    fn sync_base(&mut self, model: &Permissions) {
        let old = self
            .known
            .model
            .replace(model.clone())
            .expect("synced before");
        let old_bits = std::mem::take(&mut self.known.role_bits);
        self.refresh_roles();
        if old.everyone() != model.everyone() {
            self.refresh_sets();
            return;
        }
        let t = &self.table;
        // A role changed when its bits did, or whether the model knows it.
        let changed_roles: Vec<bool> = (0..t.roles.keys.len())
            .map(|role| old_bits.get(role).copied().flatten() != self.known.role_bits[role])
            .collect();
        // Only the sets holding a changed role have a new base.
        let mut changed_sets = vec![false; t.sets.spans.len()];
        if changed_roles.contains(&true) {
            for (set, changed) in changed_sets.iter_mut().enumerate() {
                let set = set as u32;
                if t.sets.is_live(set)
                    && t.sets.roles(set).iter().any(|&r| changed_roles[r as usize])
                {
                    self.known.refresh_set(t, set);
                    *changed = true;
                }
            }
        }
        let limit = self.cache.min_log.max(t.slot_count() / 8);
        let mut slots: Vec<u32> = Vec::new();
        if changed_sets.contains(&true) {
            for slot in slots_of(&t.occupied.0) {
                if changed_sets[t.role_set[slot as usize] as usize] {
                    slots.push(slot);
                    if slots.len() > limit {
                        return;
                    }
                }
            }
        }
        if old.owner() != model.owner() {
            for owner in [old.owner(), model.owner()].into_iter().flatten() {
                slots.extend(t.slots_of_member(owner));
            }
        }
        let slot_count = t.slot_count();
        for slot in slots {
            self.cache.changed(slot, slot_count);
        }
        let (old_stamp, new_stamp) = (old.base_stamp(), model.base_stamp());
        for entry in self.cache.entries.values_mut().flatten() {
            if entry.base_stamp == old_stamp {
                entry.base_stamp = new_stamp;
            }
        }
    }

    fn refresh_all(&mut self) {
        self.refresh_roles();
        self.refresh_sets();
    }

    fn refresh_roles(&mut self) {
        let t = &self.table;
        self.known.role_bits.clear();
        self.known.role_bits.resize(t.roles.keys.len(), None);
        for role in 0..t.roles.keys.len() {
            if t.roles.sets_holding[role] > 0 {
                self.known.refresh_role(t, role as Role);
            }
        }
    }

    fn refresh_sets(&mut self) {
        let t = &self.table;
        self.known.set_base.clear();
        self.known.set_base.resize(t.sets.spans.len(), 0);
        for set in 0..t.sets.spans.len() as u32 {
            if t.sets.is_live(set) {
                self.known.refresh_set(t, set);
            }
        }
    }

    /// Brings the entry of `(channel, required)` up to date, creating it if needed.
    fn ensure_entry(
        &mut self,
        model: &Permissions,
        channel_key: &[u8],
        required: u64,
    ) -> Result<(), AudienceError> {
        let channel = model
            .channel(channel_key)
            .ok_or(AudienceError::UnknownChannel)?
            .clone();
        let Audience {
            table,
            known,
            cache,
            ..
        } = self;
        cache.uses += 1;
        let uses = cache.uses;
        let epoch = cache.epoch();
        let log_base = cache.log_base;
        let exists = cache
            .entries
            .get(channel_key)
            .is_some_and(|list| list.iter().any(|e| e.required == required));
        if !exists {
            if cache.entry_count >= cache.max_entries {
                evict_least_used(cache);
            }
            cache
                .entries
                .entry(Box::from(channel_key))
                .or_default()
                .push(Entry {
                    required,
                    base_stamp: 0,
                    channel: channel.clone(),
                    epoch: 0,
                    visible: Vec::new(),
                    last_use: 0,
                });
            cache.entry_count += 1;
        }
        let Cache {
            entries,
            log,
            overwrites,
            set_visible,
            stats,
            ..
        } = cache;
        let entry = entries
            .get_mut(channel_key)
            .and_then(|list| list.iter_mut().find(|e| e.required == required))
            .expect("just ensured");
        entry.last_use = uses;
        let fresh = exists
            && entry.base_stamp == model.base_stamp()
            && entry.channel.stamp() == channel.stamp()
            && entry.epoch >= log_base;
        let replay = &log[(entry.epoch.max(log_base) - log_base) as usize..];
        if fresh && replay.is_empty() {
            // The common case: nothing to do.
            stats.hits += 1;
            return Ok(());
        }
        let view = View::new(table, known, &channel, required, overwrites);
        if fresh {
            stats.replayed += replay.len() as u64;
            let words = table.words();
            if entry.visible.len() < words {
                entry.visible.resize(words, 0);
            }
            for &slot in replay {
                view.refresh_slot(&mut entry.visible, slot);
            }
        } else {
            stats.recomputes += 1;
            view.recompute(&mut entry.visible, set_visible);
            entry.base_stamp = model.base_stamp();
            entry.channel = channel.clone();
        }
        entry.epoch = epoch;
        Ok(())
    }
}

/// One group of [`Audience::group_by_channels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Indices of the channels the group's sessions may see, ascending.
    pub channels: Vec<u32>,
    /// The group's slots, ascending.
    pub slots: Vec<Slot>,
}

/// A session as [`Audience::session`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView<'a> {
    /// The member's encoded id.
    pub member: &'a [u8],
    /// The encoded role ids, in key order.
    pub roles: Vec<&'a [u8]>,
    /// Whether the session is active.
    pub active: bool,
    /// The watched windows, sorted.
    pub windows: &'a [Window],
}

fn evict_least_used(cache: &mut Cache) {
    let least = cache
        .entries
        .iter()
        .flat_map(|(key, list)| list.iter().map(move |e| (e.last_use, key, e.required)))
        .min_by_key(|(last_use, _, _)| *last_use)
        .map(|(_, key, required)| (key.clone(), required));
    if let Some((key, required)) = least {
        if let Some(list) = cache.entries.get_mut(&key) {
            list.retain(|e| e.required != required);
            if list.is_empty() {
                cache.entries.remove(&key);
            }
        }
        cache.entry_count -= 1;
    }
}

/// One channel's overwrites laid out for the audience: the role overwrites by role
/// number (none for roles the model does not know), so that a session's permissions
/// take array reads, not hash lookups.
struct View<'a> {
    table: &'a Table,
    known: &'a Known,
    channel: &'a Channel,
    required: u64,
    overwrites: &'a [Overwrite],
    owner: Option<&'a [u8]>,
}

impl<'a> View<'a> {
    /// Lays out `channel` in `scratch`.
    ///
    /// Time: O(roles + overwrites).
    fn new(
        table: &'a Table,
        known: &'a Known,
        channel: &'a Channel,
        required: u64,
        scratch: &'a mut Vec<Overwrite>,
    ) -> Self {
        scratch.clear();
        scratch.resize(table.roles.keys.len(), Overwrite::default());
        for (key, overwrite) in channel.roles() {
            if let Some(role) = table.roles.find(&table.hasher, key) {
                if known.role_bits[role as usize].is_some() {
                    scratch[role as usize] = overwrite;
                }
            }
        }
        View {
            table,
            known,
            channel,
            required,
            overwrites: scratch,
            owner: known.model.as_ref().and_then(|m| m.owner()),
        }
    }

    /// Whether members holding `set` (and no overwrite of their own) may see the channel.
    ///
    /// Time: O(k).
    #[inline]
    fn set_visible(&self, set: u32) -> bool {
        self.permits(self.set_permissions(set))
    }

    #[inline]
    fn set_permissions(&self, set: u32) -> u64 {
        let base = self.known.set_base[set as usize];
        if base == ALL {
            return ALL;
        }
        let mut merged = Overwrite::default();
        for &role in self.table.sets.roles(set) {
            merged = merged.merge(self.overwrites[role as usize]);
        }
        merged.apply(self.channel.everyone().apply(base))
    }

    #[inline]
    fn permits(&self, permissions: u64) -> bool {
        permissions & self.required == self.required
    }

    /// Whether the session in `slot` may see the channel.
    ///
    /// Time: O(k).
    fn slot_visible(&self, slot: u32) -> bool {
        let member = self.table.member(slot);
        if self.owner == Some(member) {
            return true;
        }
        let set = self.table.role_set[slot as usize];
        if self.known.set_base[set as usize] == ALL {
            return true;
        }
        let permissions = self.set_permissions(set);
        self.permits(match self.channel.member(member) {
            Some(overwrite) => overwrite.apply(permissions),
            None => permissions,
        })
    }

    /// Sets the bit of `slot` in `visible` to whether it is a session that may see the
    /// channel.
    #[inline]
    fn refresh_slot(&self, visible: &mut [u64], slot: u32) {
        let on = self.table.is_session(slot) && self.slot_visible(slot);
        let bit = 1u64 << (slot % 64);
        let word = &mut visible[slot as usize / 64];
        if on {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// Recomputes `visible` in full: once per role set, then once per slot, then the
    /// members with overwrites of their own and the owner.
    ///
    /// Time: O(n + sum of set sizes + overwrites).
    fn recompute(&self, visible: &mut Vec<u64>, set_visible: &mut Vec<bool>) {
        let table = self.table;
        set_visible.clear();
        set_visible.resize(table.sets.spans.len(), false);
        for (set, on) in set_visible.iter_mut().enumerate() {
            if table.sets.is_live(set as u32) {
                *on = self.set_visible(set as u32);
            }
        }
        visible.clear();
        visible.resize(table.words(), 0);
        for (index, word) in visible.iter_mut().enumerate() {
            let mut occupied = table.occupied.word(index);
            let mut bits = 0u64;
            while occupied != 0 {
                let bit = occupied.trailing_zeros();
                occupied &= occupied - 1;
                if set_visible[table.role_set[index * 64 + bit as usize] as usize] {
                    bits |= 1u64 << bit;
                }
            }
            *word = bits;
        }
        let members = self.channel.members().map(|(member, _)| member);
        for member in members.chain(self.owner) {
            for slot in table.slots_of_member(member) {
                self.refresh_slot(visible, slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{Overwrite, Target, VIEW_CHANNEL};

    fn model() -> Permissions {
        Permissions::new(VIEW_CHANNEL, [(&b"mod"[..], 0), (&b"other"[..], 0)], None)
            .with_channel(
                b"a",
                Channel::new([(Target::Role(b"mod"), Overwrite::new(0, VIEW_CHANNEL))]),
            )
            .with_channel(b"b", Channel::new([]))
    }

    #[test]
    fn slices_of_one_count_partition_the_keys() {
        assert_eq!(SlotSlice::new(0, 1), Some(SlotSlice::ALL));
        for count in [1u32, 2, 4, 8, 16, 32, 64] {
            for key in 0u8..64 {
                let holding: Vec<u32> = (0..count)
                    .filter(|&index| SlotSlice::new(index, count).unwrap().holds(key))
                    .collect();
                assert_eq!(
                    holding,
                    [u32::from(key) % count],
                    "key {key}, count {count}"
                );
            }
        }
        for (index, count) in [(0, 0), (0, 3), (0, 128), (2, 2), (64, 64)] {
            assert_eq!(SlotSlice::new(index, count), None, "{index} of {count}");
        }
    }

    fn select(audience: &mut Audience, model: &Permissions, channel: &[u8]) -> Vec<Slot> {
        let filter = Filter::Channel {
            channel,
            required: VIEW_CHANNEL,
        };
        slots_of(audience.select(model, filter, Sessions::All, &[]).unwrap()).collect()
    }

    fn audience(sessions: u32) -> Audience {
        let mut audience = Audience::new();
        for n in 0..sessions {
            let roles: &[&[u8]] = if n % 2 == 0 { &[b"mod"] } else { &[] };
            audience
                .insert(&n.to_be_bytes(), roles, true, &[], 0)
                .unwrap();
        }
        audience
    }

    #[test]
    fn remove_cost_is_the_key_store_a_removal_compacts() {
        let mut audience = audience(100);
        // Small keys leave too little garbage to compact: nothing is copied at once.
        assert_eq!(audience.remove_cost(7), 0);
        assert!(audience.remove(7));
        let big = audience
            .insert(&vec![1; 1 << 20], &[], true, &[], 0)
            .unwrap();
        let store = audience.table.keys.len();
        // Its removal leaves most of the store garbage: the store is compacted.
        assert_eq!(audience.remove_cost(big), store);
        assert!(audience.remove(big));
        assert!(audience.table.keys.len() < store);
        assert_eq!(audience.remove_cost(big), 0, "no session there any more");
    }

    #[test]
    fn a_change_to_one_channel_leaves_the_others_cached() {
        let mut audience = audience(10);
        let m = model();
        assert_eq!(select(&mut audience, &m, b"a"), [1, 3, 5, 7, 9]);
        assert_eq!(select(&mut audience, &m, b"b").len(), 10);
        assert_eq!(audience.cache_stats().recomputes, 2);

        let m = m.with_channel(
            b"b",
            Channel::new([(Target::Everyone, Overwrite::new(0, VIEW_CHANNEL))]),
        );
        assert_eq!(select(&mut audience, &m, b"a"), [1, 3, 5, 7, 9]);
        assert_eq!(
            audience.cache_stats().recomputes,
            2,
            "channel a did not change"
        );
        assert_eq!(select(&mut audience, &m, b"b"), Vec::<Slot>::new());
        assert_eq!(audience.cache_stats().recomputes, 3);
        assert_eq!(select(&mut audience, &m, b"b"), Vec::<Slot>::new());
        // Channel a after the change, and channel b now.
        assert_eq!(audience.cache_stats().hits, 2);
    }

    #[test]
    fn session_changes_are_replayed_not_recomputed() {
        let mut audience = audience(10);
        let m = model();
        select(&mut audience, &m, b"a");
        audience.set_roles(1, &[b"mod"]).unwrap();
        audience.remove(3);
        let slot = audience.insert(b"new", &[b"other"], false, &[], 0).unwrap();
        assert_eq!(slot, 3, "the freed slot is reused");
        assert_eq!(select(&mut audience, &m, b"a"), [3, 5, 7, 9]);
        let stats = audience.cache_stats();
        assert_eq!((stats.recomputes, stats.replayed), (1, 3));
        // Giving a session the roles it has changes nothing.
        audience.set_roles(5, &[]).unwrap();
        select(&mut audience, &m, b"a");
        assert_eq!(audience.cache_stats().replayed, 3);
    }

    #[test]
    fn a_role_held_by_few_is_patched_and_everyone_recomputes() {
        let mut audience = audience(100);
        audience.set_roles(7, &[b"other"]).unwrap();
        let m = model();
        assert_eq!(select(&mut audience, &m, b"b").len(), 100);
        let m = m.with_role(b"other", 0x8);
        assert_eq!(select(&mut audience, &m, b"b").len(), 100);
        let stats = audience.cache_stats();
        assert_eq!(
            (stats.recomputes, stats.replayed),
            (1, 1),
            "only slot 7 holds the role"
        );
        let m = m.with_channel(
            b"b",
            Channel::new([(Target::Everyone, Overwrite::new(0, VIEW_CHANNEL))]),
        );
        assert_eq!(
            select(&mut audience, &m, b"b"),
            [7],
            "an administrator bypasses the deny"
        );
        let m = m.with_everyone(0);
        select(&mut audience, &m, b"b");
        assert_eq!(audience.cache_stats().recomputes, 3);
    }

    #[test]
    fn the_owner_changes_only_the_owner_sessions() {
        let mut audience = audience(10);
        let m = model();
        select(&mut audience, &m, b"a");
        let owner = 4u32.to_be_bytes();
        let m = m.with_owner(Some(&owner));
        assert_eq!(select(&mut audience, &m, b"a"), [1, 3, 4, 5, 7, 9]);
        let stats = audience.cache_stats();
        assert_eq!((stats.recomputes, stats.replayed), (1, 1));
    }

    #[test]
    fn an_unknown_channel_changes_nothing() {
        let mut audience = audience(4);
        let filter = Filter::Channel {
            channel: b"nope",
            required: VIEW_CHANNEL,
        };
        assert_eq!(
            audience.select(&model(), filter, Sessions::All, &[]).err(),
            Some(AudienceError::UnknownChannel)
        );
        assert_eq!(audience.len(), 4);
        assert_eq!(audience.cache_stats(), CacheStats::default());
    }

    #[test]
    fn member_chains_survive_removals_anywhere() {
        let mut audience = Audience::new();
        let slots: Vec<Slot> = (0..5)
            .map(|_| audience.insert(b"ann", &[], true, &[], 0).unwrap())
            .collect();
        audience.insert(b"bob", &[], true, &[], 0).unwrap();
        assert_eq!(audience.member_slots(b"ann"), slots);
        for (removed, expected) in [
            (2, vec![0, 1, 3, 4]),
            (0, vec![1, 3, 4]),
            (4, vec![1, 3]),
            (1, vec![3]),
        ] {
            audience.remove(removed);
            assert_eq!(audience.member_slots(b"ann"), expected);
        }
        audience.remove(3);
        assert!(audience.member_slots(b"ann").is_empty());
        assert_eq!(audience.member_slots(b"bob"), [5]);
        assert_eq!(audience.insert(b"ann", &[], true, &[], 0).unwrap(), 3);
        assert_eq!(audience.member_slots(b"ann"), [3]);
    }

    #[test]
    fn limits_refuse_and_leave_nothing_behind() {
        let mut audience = Audience::new();
        for n in 0..MAX_SESSIONS as u32 {
            audience
                .insert(&n.to_be_bytes(), &[], false, &[], 0)
                .unwrap();
        }
        assert_eq!(
            audience.insert(b"one more", &[], false, &[], 0),
            Err(AudienceError::Full)
        );
        assert_eq!(audience.len(), MAX_SESSIONS);

        let mut audience = Audience::new();
        let keys: Vec<[u8; 4]> = (0..MAX_ROLES as u32 + 1).map(u32::to_be_bytes).collect();
        let roles: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        assert_eq!(
            audience.insert(b"ann", &roles, true, &[], 0),
            Err(AudienceError::TooManyRoles)
        );
        assert!(audience.is_empty());
        assert_eq!(audience.table.roles.table.len(), 0);
        // Every number is free again.
        audience
            .insert(b"ann", &roles[..MAX_ROLES], true, &[], 0)
            .unwrap();
        assert_eq!(audience.session(0).unwrap().roles.len(), MAX_ROLES);
    }
}
