//! Discord's permission model: base permissions from roles, and channel permissions
//! from permission overwrites.
//!
//! Ids (roles, members, channels) are opaque byte strings; the NIF layer uses encoded
//! terms (`term_key` elements, hint included), so two ids are the same exactly when
//! their terms are `=:=`.
//!
//! # The algorithm (Discord's "Permission Hierarchy" and "Permission Overwrites")
//!
//! Base permissions of a member holding `roles`:
//!
//! 1. the guild owner has [`ALL`];
//! 2. otherwise `p = everyone | bits(r)` for every role `r` the model knows (unknown
//!    roles are ignored, as Discord ignores deleted ones);
//! 3. if `p` has [`ADMINISTRATOR`], the member has [`ALL`].
//!
//! Permissions in a channel, starting from base `p`:
//!
//! 1. a base of [`ALL`] (owner or administrator) is the answer: no overwrite applies;
//! 2. the `@everyone` overwrite: `p = p & !deny | allow`;
//! 3. the overwrites of the member's known roles, all at once: `p = p & !(union of their
//!    denies) | (union of their allows)`;
//! 4. the member's own overwrite: `p = p & !deny | allow`.
//!
//! A channel given several overwrites for the same target (two `@everyone` overwrites,
//! or two for one role or one member) merges them into one whose allow and deny are the
//! unions of theirs, so the order of a channel's overwrites never matters.
//!
//! # Value semantics
//!
//! A [`Permissions`] never changes: every `with_*` / `without_*` returns a new value
//! and leaves the old one as it was. They share what did not change: the role map and
//! the channel map sit behind [`Arc`]s and are copied on write (a role change copies
//! the role map, O(roles); a channel change copies the channel map's pointers,
//! O(channels), and shares every other channel's overwrites). Reads are plain hash
//! lookups, which is what the hot paths (`in_channel`, the audience's cache rebuilds)
//! do; see `notes/permissions.md` for the comparison with a persistent `im` map.
//!
//! # Stamps
//!
//! Every value carries a *base stamp* (for `@everyone`, the roles and the owner) and
//! every channel a *channel stamp*: numbers taken from one process-wide counter when
//! that part is created or changed, and kept when it is shared unchanged. Two values
//! with the same base stamp have the same base part; two channels with the same stamp
//! the same overwrites. Caches (see `crate::audience`) compare stamps to know whether
//! an answer computed from one value still holds for another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;

/// `ADMINISTRATOR`: every permission, in every channel, overwrites bypassed.
pub const ADMINISTRATOR: u64 = 0x8;
/// `VIEW_CHANNEL`: the member may see the channel and its events.
pub const VIEW_CHANNEL: u64 = 0x400;
/// Every permission bit.
pub const ALL: u64 = u64::MAX;

/// An id: the bytes of an encoded term.
pub type Id = Arc<[u8]>;

/// A stamp from the process-wide counter: never 0, never handed out twice.
///
/// Time: O(1).
pub fn next_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Bits to add and bits to remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Overwrite {
    /// Bits granted.
    pub allow: u64,
    /// Bits taken away (before the allows are added).
    pub deny: u64,
}

impl Overwrite {
    /// An overwrite granting `allow` and taking away `deny`.
    pub const fn new(allow: u64, deny: u64) -> Self {
        Overwrite { allow, deny }
    }

    /// `p & !deny | allow`.
    #[inline]
    pub const fn apply(self, permissions: u64) -> u64 {
        permissions & !self.deny | self.allow
    }

    /// The overwrite whose allow and deny are the unions of both.
    #[inline]
    pub const fn merge(self, other: Overwrite) -> Overwrite {
        Overwrite {
            allow: self.allow | other.allow,
            deny: self.deny | other.deny,
        }
    }
}

/// Whom an overwrite applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every member (`@everyone`).
    Everyone,
    /// Members holding this role.
    Role(&'a [u8]),
    /// This member.
    Member(&'a [u8]),
}

/// A channel's overwrites.
#[derive(Debug, Clone)]
pub struct Channel {
    stamp: u64,
    everyone: Overwrite,
    roles: HashMap<Id, Overwrite>,
    members: HashMap<Id, Overwrite>,
}

impl PartialEq for Channel {
    /// Same overwrites (stamps aside).
    fn eq(&self, other: &Self) -> bool {
        self.everyone == other.everyone
            && self.roles == other.roles
            && self.members == other.members
    }
}

impl Channel {
    /// A channel with these overwrites; several for one target are merged.
    ///
    /// Time: O(overwrites).
    pub fn new<'a>(overwrites: impl IntoIterator<Item = (Target<'a>, Overwrite)>) -> Self {
        let mut channel = Channel {
            stamp: next_stamp(),
            everyone: Overwrite::default(),
            roles: HashMap::new(),
            members: HashMap::new(),
        };
        for (target, overwrite) in overwrites {
            match target {
                Target::Everyone => channel.everyone = channel.everyone.merge(overwrite),
                Target::Role(id) => merge_into(&mut channel.roles, id, overwrite),
                Target::Member(id) => merge_into(&mut channel.members, id, overwrite),
            }
        }
        channel
    }

    /// The stamp: equal stamps mean equal overwrites.
    #[inline]
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The `@everyone` overwrite (zero bits when there is none).
    #[inline]
    pub fn everyone(&self) -> Overwrite {
        self.everyone
    }

    /// The overwrite of a role, if the channel has one.
    ///
    /// Time: O(|role|).
    #[inline]
    pub fn role(&self, role: &[u8]) -> Option<Overwrite> {
        self.roles.get(role).copied()
    }

    /// The overwrite of a member, if the channel has one.
    ///
    /// Time: O(|member|).
    #[inline]
    pub fn member(&self, member: &[u8]) -> Option<Overwrite> {
        if self.members.is_empty() {
            return None;
        }
        self.members.get(member).copied()
    }

    /// The role overwrites, in no particular order.
    pub fn roles(&self) -> impl ExactSizeIterator<Item = (&[u8], Overwrite)> {
        self.roles.iter().map(|(id, o)| (&**id, *o))
    }

    /// The member overwrites, in no particular order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = (&[u8], Overwrite)> {
        self.members.iter().map(|(id, o)| (&**id, *o))
    }

    /// Number of overwrites once merged: `@everyone` (when it has bits), roles, members.
    pub fn len(&self) -> usize {
        usize::from(self.everyone != Overwrite::default()) + self.roles.len() + self.members.len()
    }

    /// True when the channel has no overwrite with any bits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The member's permissions in this channel after steps 2 and 3 (the `@everyone`
    /// and role overwrites) from a base that is not [`ALL`]. `known_roles` must hold
    /// only roles the model knows.
    ///
    /// Time: O(roles).
    #[inline]
    pub fn apply_roles<'r>(
        &self,
        base: u64,
        known_roles: impl IntoIterator<Item = &'r [u8]>,
    ) -> u64 {
        let mut merged = Overwrite::default();
        if !self.roles.is_empty() {
            for role in known_roles {
                if let Some(overwrite) = self.roles.get(role) {
                    merged = merged.merge(*overwrite);
                }
            }
        }
        merged.apply(self.everyone.apply(base))
    }
}

fn merge_into(map: &mut HashMap<Id, Overwrite>, id: &[u8], overwrite: Overwrite) {
    match map.get_mut(id) {
        Some(existing) => *existing = existing.merge(overwrite),
        None => {
            map.insert(Id::from(id), overwrite);
        }
    }
}

/// A guild's permissions: `@everyone`, roles, owner and channel overwrites. Immutable;
/// see the module docs.
#[derive(Debug, Clone)]
pub struct Permissions {
    base_stamp: u64,
    everyone: u64,
    owner: Option<Id>,
    roles: Arc<HashMap<Id, u64>>,
    channels: Arc<HashMap<Id, Arc<Channel>>>,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions::new(0, std::iter::empty(), None)
    }
}

impl Permissions {
    /// A model with `everyone` bits, these roles (a later duplicate replaces an earlier
    /// one) and an owner, and no channels.
    ///
    /// Time: O(roles).
    pub fn new<'a>(
        everyone: u64,
        roles: impl IntoIterator<Item = (&'a [u8], u64)>,
        owner: Option<&[u8]>,
    ) -> Self {
        Permissions {
            base_stamp: next_stamp(),
            everyone,
            owner: owner.map(Id::from),
            roles: Arc::new(
                roles
                    .into_iter()
                    .map(|(id, bits)| (Id::from(id), bits))
                    .collect(),
            ),
            channels: Arc::new(HashMap::new()),
        }
    }

    /// The base stamp: equal stamps mean equal `@everyone`, roles and owner.
    #[inline]
    pub fn base_stamp(&self) -> u64 {
        self.base_stamp
    }

    /// The `@everyone` role's bits.
    #[inline]
    pub fn everyone(&self) -> u64 {
        self.everyone
    }

    /// The owner's id, if any.
    #[inline]
    pub fn owner(&self) -> Option<&[u8]> {
        self.owner.as_deref()
    }

    /// True when `member` is the owner.
    #[inline]
    pub fn is_owner(&self, member: &[u8]) -> bool {
        self.owner.as_deref() == Some(member)
    }

    /// A role's bits, or `None` when the model does not know the role.
    ///
    /// Time: O(|role|).
    #[inline]
    pub fn role(&self, role: &[u8]) -> Option<u64> {
        self.roles.get(role).copied()
    }

    /// The roles and their bits, in no particular order.
    pub fn roles(&self) -> impl ExactSizeIterator<Item = (&[u8], u64)> {
        self.roles.iter().map(|(id, bits)| (&**id, *bits))
    }

    /// A channel's overwrites, or `None` when the model does not know the channel.
    ///
    /// Time: O(|channel|).
    #[inline]
    pub fn channel(&self, channel: &[u8]) -> Option<&Arc<Channel>> {
        self.channels.get(channel)
    }

    /// True when both values share one channel map (and so have the same channels).
    /// A caller that keeps `other` alive may rely on this: the map cannot be freed and
    /// its address reused while `other` holds it.
    ///
    /// Time: O(1).
    #[inline]
    pub fn same_channels(&self, other: &Permissions) -> bool {
        Arc::ptr_eq(&self.channels, &other.channels)
    }

    /// The channels, in no particular order.
    pub fn channels(&self) -> impl ExactSizeIterator<Item = (&[u8], &Arc<Channel>)> {
        self.channels.iter().map(|(id, channel)| (&**id, channel))
    }

    /// With `role` set to `bits`. The same value (stamps included) when nothing changes.
    ///
    /// Time: O(roles) (the role map is copied).
    pub fn with_role(&self, role: &[u8], bits: u64) -> Self {
        if self.role(role) == Some(bits) {
            return self.clone();
        }
        let mut next = self.clone();
        Arc::make_mut(&mut next.roles).insert(Id::from(role), bits);
        next.base_stamp = next_stamp();
        next
    }

    /// Without `role`. The same value when the model does not know it.
    ///
    /// Time: O(roles).
    pub fn without_role(&self, role: &[u8]) -> Self {
        if self.role(role).is_none() {
            return self.clone();
        }
        let mut next = self.clone();
        Arc::make_mut(&mut next.roles).remove(role);
        next.base_stamp = next_stamp();
        next
    }

    /// With `@everyone` set to `bits`.
    ///
    /// Time: O(1).
    pub fn with_everyone(&self, bits: u64) -> Self {
        let mut next = self.clone();
        if bits != self.everyone {
            next.everyone = bits;
            next.base_stamp = next_stamp();
        }
        next
    }

    /// With this owner (`None`: no owner).
    ///
    /// Time: O(|owner|).
    pub fn with_owner(&self, owner: Option<&[u8]>) -> Self {
        let mut next = self.clone();
        if owner != self.owner() {
            next.owner = owner.map(Id::from);
            next.base_stamp = next_stamp();
        }
        next
    }

    /// With `channel` set to these overwrites. A channel whose overwrites do not change
    /// keeps its stamp.
    ///
    /// Time: O(channels) (the channel map's pointers are copied).
    pub fn with_channel(&self, channel: &[u8], overwrites: Channel) -> Self {
        if self.channel(channel).is_some_and(|old| **old == overwrites) {
            return self.clone();
        }
        let mut next = self.clone();
        Arc::make_mut(&mut next.channels).insert(Id::from(channel), Arc::new(overwrites));
        next
    }

    /// Without `channel`. The same value when the model does not know it.
    ///
    /// Time: O(channels).
    pub fn without_channel(&self, channel: &[u8]) -> Self {
        let mut next = self.clone();
        if self.channel(channel).is_some() {
            Arc::make_mut(&mut next.channels).remove(channel);
        }
        next
    }

    /// The base permissions of `member` holding `roles` (see the module docs).
    ///
    /// Time: O(roles).
    pub fn base<'r>(&self, member: &[u8], roles: impl IntoIterator<Item = &'r [u8]>) -> u64 {
        if self.is_owner(member) {
            return ALL;
        }
        self.roles_base(roles)
    }

    /// Steps 2 and 3 of the base permissions (the owner aside).
    ///
    /// Time: O(roles).
    pub fn roles_base<'r>(&self, roles: impl IntoIterator<Item = &'r [u8]>) -> u64 {
        let mut bits = self.everyone;
        for role in roles {
            bits |= self.role(role).unwrap_or(0);
        }
        admin_to_all(bits)
    }

    /// The permissions of `member` holding `roles` in `channel`, or `None` when the
    /// model does not know the channel.
    ///
    /// Time: O(roles).
    pub fn in_channel<'r>(
        &self,
        member: &[u8],
        roles: impl IntoIterator<Item = &'r [u8]> + Clone,
        channel: &[u8],
    ) -> Option<u64> {
        let channel = self.channel(channel)?;
        let base = self.base(member, roles.clone());
        if base == ALL {
            return Some(ALL);
        }
        let known = roles
            .into_iter()
            .filter(|role| self.roles.contains_key(*role));
        let in_roles = channel.apply_roles(base, known);
        Some(match channel.member(member) {
            Some(overwrite) => overwrite.apply(in_roles),
            None => in_roles,
        })
    }
}

/// [`ALL`] when `bits` has [`ADMINISTRATOR`], else `bits`.
#[inline]
pub const fn admin_to_all(bits: u64) -> u64 {
    if bits & ADMINISTRATOR != 0 {
        ALL
    } else {
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND: u64 = 0x800;
    const EMBED: u64 = 0x4000;

    fn model() -> Permissions {
        Permissions::new(
            VIEW_CHANNEL | SEND,
            [(&b"mod"[..], 0x2000), (&b"admin"[..], ADMINISTRATOR)],
            Some(b"owner"),
        )
    }

    #[test]
    fn base_is_everyone_or_roles_and_ignores_unknown_roles() {
        let m = model();
        assert_eq!(m.base(b"ann", []), VIEW_CHANNEL | SEND);
        assert_eq!(
            m.base(b"ann", [&b"mod"[..], &b"gone"[..]]),
            VIEW_CHANNEL | SEND | 0x2000
        );
    }

    #[test]
    fn owner_and_administrators_have_everything_everywhere() {
        let m = model().with_channel(
            b"c",
            Channel::new([
                (Target::Everyone, Overwrite::new(0, ALL)),
                (Target::Member(b"owner"), Overwrite::new(0, ALL)),
                (Target::Role(b"admin"), Overwrite::new(0, ALL)),
            ]),
        );
        assert_eq!(m.base(b"owner", []), ALL);
        assert_eq!(m.base(b"x", [&b"admin"[..]]), ALL);
        assert_eq!(m.in_channel(b"owner", [], b"c"), Some(ALL));
        assert_eq!(m.in_channel(b"x", [&b"admin"[..]], b"c"), Some(ALL));
        assert_eq!(m.in_channel(b"x", [], b"c"), Some(0));
    }

    #[test]
    fn overwrites_apply_everyone_then_roles_then_member() {
        // The twilight example: @everyone allowed embeds, the member denied sending.
        let m = model().with_channel(
            b"c",
            Channel::new([
                (Target::Everyone, Overwrite::new(EMBED, 0)),
                (Target::Member(b"ann"), Overwrite::new(0, SEND)),
            ]),
        );
        assert_eq!(m.in_channel(b"ann", [], b"c"), Some(VIEW_CHANNEL | EMBED));
        assert_eq!(
            m.in_channel(b"bob", [], b"c"),
            Some(VIEW_CHANNEL | SEND | EMBED)
        );
    }

    #[test]
    fn role_overwrites_apply_all_denies_before_all_allows() {
        let m = Permissions::new(0, [(&b"a"[..], 0), (&b"b"[..], 0)], None).with_channel(
            b"c",
            Channel::new([
                (Target::Everyone, Overwrite::new(0, VIEW_CHANNEL)),
                (Target::Role(b"a"), Overwrite::new(VIEW_CHANNEL, 0)),
                (Target::Role(b"b"), Overwrite::new(0, VIEW_CHANNEL)),
            ]),
        );
        // One role allows what another denies: the allow wins.
        assert_eq!(
            m.in_channel(b"x", [&b"a"[..], &b"b"[..]], b"c"),
            Some(VIEW_CHANNEL)
        );
        assert_eq!(m.in_channel(b"x", [&b"b"[..]], b"c"), Some(0));
        // The member's own overwrite comes last.
        let m = m.with_channel(
            b"d",
            Channel::new([
                (Target::Role(b"a"), Overwrite::new(VIEW_CHANNEL, 0)),
                (Target::Member(b"x"), Overwrite::new(0, VIEW_CHANNEL)),
            ]),
        );
        assert_eq!(m.in_channel(b"x", [&b"a"[..]], b"d"), Some(0));
    }

    #[test]
    fn overwrites_of_unknown_roles_do_not_apply() {
        let m = Permissions::new(0, [], None).with_channel(
            b"c",
            Channel::new([(Target::Role(b"ghost"), Overwrite::new(VIEW_CHANNEL, 0))]),
        );
        assert_eq!(m.in_channel(b"x", [&b"ghost"[..]], b"c"), Some(0));
        let m = m.with_role(b"ghost", 0);
        assert_eq!(
            m.in_channel(b"x", [&b"ghost"[..]], b"c"),
            Some(VIEW_CHANNEL)
        );
    }

    #[test]
    fn duplicate_overwrites_merge() {
        let one = Channel::new([
            (Target::Everyone, Overwrite::new(1, 2)),
            (Target::Everyone, Overwrite::new(4, 8)),
            (Target::Role(b"r"), Overwrite::new(16, 0)),
            (Target::Role(b"r"), Overwrite::new(0, 32)),
        ]);
        assert_eq!(one.everyone(), Overwrite::new(5, 10));
        assert_eq!(one.role(b"r"), Some(Overwrite::new(16, 32)));
        assert_eq!(one.len(), 2);
    }

    #[test]
    fn unknown_channel_is_none() {
        assert_eq!(model().in_channel(b"x", [], b"nope"), None);
    }

    #[test]
    fn changes_leave_earlier_values_alone_and_stamp_what_changed() {
        let a = model().with_channel(b"c", Channel::new([]));
        let b = a.with_role(b"mod", VIEW_CHANNEL);
        assert_eq!(a.role(b"mod"), Some(0x2000));
        assert_eq!(b.role(b"mod"), Some(VIEW_CHANNEL));
        assert_ne!(a.base_stamp(), b.base_stamp());
        assert_eq!(
            a.channel(b"c").unwrap().stamp(),
            b.channel(b"c").unwrap().stamp()
        );

        // No change, no new stamp.
        assert_eq!(
            b.with_role(b"mod", VIEW_CHANNEL).base_stamp(),
            b.base_stamp()
        );
        assert_eq!(b.with_everyone(b.everyone()).base_stamp(), b.base_stamp());
        assert_eq!(b.with_owner(Some(b"owner")).base_stamp(), b.base_stamp());
        assert_eq!(b.without_role(b"nope").base_stamp(), b.base_stamp());
        let same = b.with_channel(b"c", Channel::new([]));
        assert_eq!(
            same.channel(b"c").unwrap().stamp(),
            b.channel(b"c").unwrap().stamp()
        );

        let c = b.with_channel(
            b"c",
            Channel::new([(Target::Everyone, Overwrite::new(1, 0))]),
        );
        assert_ne!(
            c.channel(b"c").unwrap().stamp(),
            b.channel(b"c").unwrap().stamp()
        );
        assert_eq!(c.base_stamp(), b.base_stamp());
        assert!(b.without_channel(b"c").channel(b"c").is_none());
        assert!(b.channel(b"c").is_some());
        assert_ne!(b.with_owner(None).base_stamp(), b.base_stamp());
        assert_ne!(b.without_role(b"mod").base_stamp(), b.base_stamp());
    }
}
