//! The permission math against a plain model: roles in a `BTreeMap`, each channel's
//! overwrites as the list they were given in, and Discord's algorithm written out
//! literally over that list. Random guilds (owner, administrators, unknown roles,
//! duplicate overwrites) and random changes; every member's base and channel
//! permissions must agree after every change, and values kept from before a change
//! must not see it.

mod common;

use std::collections::BTreeMap;

use common::*;
use guild_kit_core::permissions::Permissions;
use proptest::prelude::*;

fn check(model: &Model, perms: &Permissions, members: &[(u8, Vec<u8>)]) {
    for (member, roles) in members {
        let role_keys: Vec<Vec<u8>> = roles.iter().map(|&r| role_id(r)).collect();
        let role_refs: Vec<&[u8]> = role_keys.iter().map(|k| &k[..]).collect();
        assert_eq!(
            perms.base(&member_id(*member), role_refs.iter().copied()),
            model.base(*member, roles),
            "base of {member} with {roles:?}"
        );
        for channel in 0u8..6 {
            assert_eq!(
                perms.in_channel(
                    &member_id(*member),
                    role_refs.iter().copied(),
                    &channel_id(channel)
                ),
                model.in_channel(*member, roles, channel),
                "member {member} with {roles:?} in channel {channel}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn permissions_match_the_plain_model(
        everyone in bits(),
        roles in proptest::collection::btree_map(0u8..12, bits(), 0..12),
        owner in proptest::option::of(0u8..8),
        members in proptest::collection::vec((0u8..8, proptest::collection::vec(0u8..14, 0..6)), 1..12),
        changes in proptest::collection::vec(change(), 1..25),
    ) {
        let role_keys: Vec<(Vec<u8>, u64)> = roles.iter().map(|(&r, &b)| (role_id(r), b)).collect();
        let owner_key = owner.map(member_id);
        let mut perms = Permissions::new(
            everyone,
            role_keys.iter().map(|(k, b)| (&k[..], *b)),
            owner_key.as_deref(),
        );
        let mut model = Model { everyone, roles, owner, channels: BTreeMap::new() };
        check(&model, &perms, &members);
        for change in &changes {
            let (before_model, before) = (model.clone(), perms.clone());
            perms = apply(&mut model, &perms, change);
            check(&model, &perms, &members);
            // The value kept from before the change does not see it.
            check(&before_model, &before, &members);
        }
    }

    #[test]
    fn stamps_change_exactly_when_their_part_does(
        changes in proptest::collection::vec(change(), 1..25),
    ) {
        let mut model = Model::default();
        let mut perms = Permissions::default();
        for change in &changes {
            let before_model = model.clone();
            let next = apply(&mut model, &perms, change);
            let base_same = before_model.everyone == model.everyone
                && before_model.roles == model.roles
                && before_model.owner == model.owner;
            prop_assert_eq!(next.base_stamp() == perms.base_stamp(), base_same);
            for c in 0u8..5 {
                let (old, new) = (perms.channel(&channel_id(c)), next.channel(&channel_id(c)));
                if let (Some(old), Some(new)) = (old, new) {
                    // The same merged overwrites keep their stamp; any difference is a new one.
                    prop_assert_eq!(old.stamp() == new.stamp(), **old == **new);
                }
            }
            perms = next;
        }
    }
}
