//! The plain permission model the property tests compare against: roles in a
//! `BTreeMap`, each channel's overwrites as the list they were given in, and Discord's
//! algorithm written out literally over that list; plus strategies for random guilds
//! and changes.

#![allow(dead_code)]

use std::collections::BTreeMap;

use guild_kit_core::permissions::{
    Channel, Overwrite, Permissions, Target, ADMINISTRATOR, ALL, VIEW_CHANNEL,
};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Everyone,
    Role,
    Member,
}

pub type Listed = (Kind, u8, u64, u64);

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub everyone: u64,
    pub roles: BTreeMap<u8, u64>,
    pub owner: Option<u8>,
    pub channels: BTreeMap<u8, Vec<Listed>>,
}

pub fn role_id(n: u8) -> Vec<u8> {
    vec![b'r', n]
}

pub fn member_id(n: u8) -> Vec<u8> {
    vec![b'm', n]
}

pub fn channel_id(n: u8) -> Vec<u8> {
    vec![b'c', n]
}

impl Model {
    pub fn base(&self, member: u8, roles: &[u8]) -> u64 {
        if self.owner == Some(member) {
            return ALL;
        }
        let mut p = self.everyone;
        for role in roles {
            if let Some(bits) = self.roles.get(role) {
                p |= bits;
            }
        }
        if p & ADMINISTRATOR == ADMINISTRATOR {
            ALL
        } else {
            p
        }
    }

    pub fn in_channel(&self, member: u8, roles: &[u8], channel: u8) -> Option<u64> {
        let overwrites = self.channels.get(&channel)?;
        let base = self.base(member, roles);
        if base == ALL {
            return Some(ALL);
        }
        // @everyone's overwrite, then the member's roles' together, then the member's own.
        let applies = |kind: Kind, id: u8| match kind {
            Kind::Everyone => true,
            Kind::Role => roles.contains(&id) && self.roles.contains_key(&id),
            Kind::Member => id == member,
        };
        let mut p = base;
        for phase in [Kind::Everyone, Kind::Role, Kind::Member] {
            let (mut allow, mut deny) = (0, 0);
            for &(kind, id, a, d) in overwrites {
                if kind == phase && applies(kind, id) {
                    allow |= a;
                    deny |= d;
                }
            }
            p &= !deny;
            p |= allow;
        }
        Some(p)
    }
}

pub fn channel_of(listed: &[Listed]) -> Channel {
    let ids: Vec<Vec<u8>> = listed
        .iter()
        .map(|&(kind, id, _, _)| match kind {
            Kind::Everyone => Vec::new(),
            Kind::Role => role_id(id),
            Kind::Member => member_id(id),
        })
        .collect();
    Channel::new(
        listed
            .iter()
            .zip(&ids)
            .map(|(&(kind, _, allow, deny), id)| {
                let target = match kind {
                    Kind::Everyone => Target::Everyone,
                    Kind::Role => Target::Role(id),
                    Kind::Member => Target::Member(id),
                };
                (target, Overwrite::new(allow, deny))
            }),
    )
}

pub fn bits() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        3 => Just(VIEW_CHANNEL),
        2 => Just(ADMINISTRATOR),
        1 => Just(ALL),
        6 => (0u64..16).prop_map(|b| (b & 7) << 9 | (b >> 3) << 3),
        2 => any::<u64>(),
    ]
}

pub fn overwrite() -> impl Strategy<Value = Listed> {
    (
        prop_oneof![Just(Kind::Everyone), Just(Kind::Role), Just(Kind::Member)],
        0u8..12,
        bits(),
        bits(),
    )
}

#[derive(Debug, Clone)]
pub enum Change {
    PutRole(u8, u64),
    DeleteRole(u8),
    Everyone(u64),
    Owner(Option<u8>),
    PutChannel(u8, Vec<Listed>),
    DeleteChannel(u8),
}

pub fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u8..12, bits()).prop_map(|(r, b)| Change::PutRole(r, b)),
        2 => (0u8..12).prop_map(Change::DeleteRole),
        1 => bits().prop_map(Change::Everyone),
        1 => proptest::option::of(0u8..8).prop_map(Change::Owner),
        4 => (0u8..5, proptest::collection::vec(overwrite(), 0..15))
            .prop_map(|(c, o)| Change::PutChannel(c, o)),
        1 => (0u8..5).prop_map(Change::DeleteChannel),
    ]
}

pub fn apply(model: &mut Model, perms: &Permissions, change: &Change) -> Permissions {
    match change {
        Change::PutRole(r, b) => {
            model.roles.insert(*r, *b);
            perms.with_role(&role_id(*r), *b)
        }
        Change::DeleteRole(r) => {
            model.roles.remove(r);
            perms.without_role(&role_id(*r))
        }
        Change::Everyone(b) => {
            model.everyone = *b;
            perms.with_everyone(*b)
        }
        Change::Owner(o) => {
            model.owner = *o;
            perms.with_owner(o.map(member_id).as_deref())
        }
        Change::PutChannel(c, listed) => {
            model.channels.insert(*c, listed.clone());
            perms.with_channel(&channel_id(*c), channel_of(listed))
        }
        Change::DeleteChannel(c) => {
            model.channels.remove(c);
            perms.without_channel(&channel_id(*c))
        }
    }
}
