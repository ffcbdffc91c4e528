//! `Audience` against a plain list of sessions filtered one by one with the plain
//! permission model: random session changes (adds, removes, new roles for a session or
//! a member, activity, windows) interleaved with permission changes and selects, some
//! with permissions kept from before a change. Every select and grouping must equal
//! the filtered list, whatever the cache held: this is the test of cache invalidation.
//! Small change-log and entry limits exercise the fallbacks.

mod common;

use std::collections::BTreeMap;

use common::*;
use guild_kit_core::audience::{slots_of, Audience, Filter, Sessions, SlotSlice, Window};
use guild_kit_core::permissions::{Permissions, VIEW_CHANNEL};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Session {
    member: u8,
    roles: Vec<u8>,
    active: bool,
    windows: Vec<Window>,
}

#[derive(Debug, Clone)]
enum FilterKind {
    All,
    Channel(u8, u64),
    Window(Window),
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, Vec<u8>, bool, Vec<Window>),
    Remove(usize),
    SetRoles(usize, Vec<u8>),
    SetMemberRoles(u8, Vec<u8>),
    SetActive(usize, bool),
    SetWindows(usize, Vec<Window>),
    Permissions(Change),
    Select(FilterKind, u8, Vec<u8>),
    SelectWithOld(usize, FilterKind),
    /// Channels, which sessions, and the slice: `index` of `1 << log2_count`.
    Group(Vec<u8>, u8, (u32, u32)),
}

fn roles() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0u8..14, 0..6)
}

fn windows() -> impl Strategy<Value = Vec<Window>> {
    proptest::collection::vec((0u64..3).prop_map(|w| (w * 10, w * 10 + 9)), 0..3)
}

fn filter() -> impl Strategy<Value = FilterKind> {
    prop_oneof![
        1 => Just(FilterKind::All),
        6 => (0u8..6, prop_oneof![4 => Just(VIEW_CHANNEL), 1 => Just(VIEW_CHANNEL | 0x800), 1 => Just(0u64)])
            .prop_map(|(c, r)| FilterKind::Channel(c, r)),
        1 => (0u64..3).prop_map(|w| FilterKind::Window((w * 10, w * 10 + 9))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..10, roles(), any::<bool>(), windows()).prop_map(|(m, r, a, w)| Op::Insert(m, r, a, w)),
        3 => any::<usize>().prop_map(Op::Remove),
        3 => (any::<usize>(), roles()).prop_map(|(i, r)| Op::SetRoles(i, r)),
        2 => (0u8..10, roles()).prop_map(|(m, r)| Op::SetMemberRoles(m, r)),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, a)| Op::SetActive(i, a)),
        1 => (any::<usize>(), windows()).prop_map(|(i, w)| Op::SetWindows(i, w)),
        4 => change().prop_map(Op::Permissions),
        8 => (filter(), 0u8..3, proptest::collection::vec(0u8..10, 0..3))
            .prop_map(|(f, s, forced)| Op::Select(f, s, forced)),
        2 => (any::<usize>(), filter()).prop_map(|(i, f)| Op::SelectWithOld(i, f)),
        2 => (
            proptest::collection::vec(0u8..6, 0..5),
            0u8..3,
            (0u32..4).prop_flat_map(|log2| (0..1u32 << log2, Just(log2)))
        )
            .prop_map(|(c, s, slice)| Op::Group(c, s, slice)),
    ]
}

fn sessions_of(code: u8) -> Sessions {
    match code {
        0 => Sessions::Active,
        1 => Sessions::Passive,
        _ => Sessions::All,
    }
}

fn keys(roles: &[u8]) -> Vec<Vec<u8>> {
    roles.iter().map(|&r| role_id(r)).collect()
}

fn refs(keys: &[Vec<u8>]) -> Vec<&[u8]> {
    keys.iter().map(|k| &k[..]).collect()
}

/// What a select must return: the plain list filtered session by session.
fn expected(
    model: &Model,
    sessions: &BTreeMap<u32, Session>,
    filter: &FilterKind,
    which: Sessions,
    forced: &[u8],
) -> Option<Vec<u32>> {
    if let FilterKind::Channel(c, _) = filter {
        model.channels.get(c)?;
    }
    Some(
        sessions
            .iter()
            .filter(|(_, s)| match which {
                Sessions::Active => s.active || forced.contains(&s.member),
                Sessions::Passive => !s.active,
                Sessions::All => true,
            })
            .filter(|(_, s)| match filter {
                FilterKind::All => true,
                FilterKind::Window(w) => s.windows.contains(w),
                FilterKind::Channel(c, required) => {
                    model.in_channel(s.member, &s.roles, *c).unwrap() & required == *required
                }
            })
            .map(|(&slot, _)| slot)
            .collect(),
    )
}

fn run_select(
    audience: &mut Audience,
    perms: &Permissions,
    filter: &FilterKind,
    which: Sessions,
    forced: &[u8],
) -> Option<Vec<u32>> {
    let channel_key;
    let filter = match *filter {
        FilterKind::All => Filter::All,
        FilterKind::Window(w) => Filter::Window(w),
        FilterKind::Channel(c, required) => {
            channel_key = channel_id(c);
            Filter::Channel {
                channel: &channel_key,
                required,
            }
        }
    };
    let forced_keys: Vec<Vec<u8>> = forced.iter().map(|&m| member_id(m)).collect();
    let forced_refs = refs(&forced_keys);
    let _cost = audience.select_cost(perms, &filter, forced_refs.len());
    audience
        .select(perms, filter, which, &forced_refs)
        .ok()
        .map(|words| slots_of(words).collect())
}

fn pick(sessions: &BTreeMap<u32, Session>, index: usize) -> Option<u32> {
    if sessions.is_empty() {
        return None;
    }
    sessions.keys().nth(index % sessions.len()).copied()
}

fn run(ops: &[Op], min_log: usize, max_entries: usize) -> Result<(), TestCaseError> {
    let mut audience = Audience::with_limits(min_log, max_entries);
    let mut sessions: BTreeMap<u32, Session> = BTreeMap::new();
    let mut model = Model {
        everyone: VIEW_CHANNEL,
        ..Model::default()
    };
    let mut perms = Permissions::new(VIEW_CHANNEL, [], None);
    let mut history: Vec<(Model, Permissions)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Insert(member, roles, active, windows) => {
                let keys = keys(roles);
                let slot = audience
                    .insert(&member_id(*member), &refs(&keys), *active, windows, *member)
                    .unwrap();
                prop_assert!(
                    !sessions.contains_key(&slot),
                    "slot {} reused while held",
                    slot
                );
                let mut windows = windows.clone();
                windows.sort();
                windows.dedup();
                sessions.insert(
                    slot,
                    Session {
                        member: *member,
                        roles: roles.clone(),
                        active: *active,
                        windows,
                    },
                );
            }
            Op::Remove(index) => {
                if let Some(slot) = pick(&sessions, *index) {
                    prop_assert!(audience.remove(slot));
                    sessions.remove(&slot);
                    prop_assert!(!audience.remove(slot));
                }
            }
            Op::SetRoles(index, roles) => {
                if let Some(slot) = pick(&sessions, *index) {
                    let keys = keys(roles);
                    prop_assert!(audience.set_roles(slot, &refs(&keys)).unwrap());
                    sessions.get_mut(&slot).unwrap().roles = roles.clone();
                }
            }
            Op::SetMemberRoles(member, roles) => {
                let keys = keys(roles);
                let count = audience
                    .set_member_roles(&member_id(*member), &refs(&keys))
                    .unwrap();
                let mut expected = 0;
                for s in sessions.values_mut().filter(|s| s.member == *member) {
                    s.roles = roles.clone();
                    expected += 1;
                }
                prop_assert_eq!(count, expected);
            }
            Op::SetActive(index, active) => {
                if let Some(slot) = pick(&sessions, *index) {
                    prop_assert!(audience.set_active(slot, *active));
                    sessions.get_mut(&slot).unwrap().active = *active;
                }
            }
            Op::SetWindows(index, windows) => {
                if let Some(slot) = pick(&sessions, *index) {
                    prop_assert!(audience.set_windows(slot, windows));
                    let mut windows = windows.clone();
                    windows.sort();
                    windows.dedup();
                    sessions.get_mut(&slot).unwrap().windows = windows;
                }
            }
            Op::Permissions(change) => {
                history.push((model.clone(), perms.clone()));
                perms = apply(&mut model, &perms, change);
            }
            Op::Select(filter, which, forced) => {
                let which = sessions_of(*which);
                let got = run_select(&mut audience, &perms, filter, which, forced);
                let want = expected(&model, &sessions, filter, which, forced);
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
            Op::SelectWithOld(index, filter) => {
                if !history.is_empty() {
                    let (old_model, old_perms) = history[index % history.len()].clone();
                    let got = run_select(&mut audience, &old_perms, filter, Sessions::Active, &[]);
                    let want = expected(&old_model, &sessions, filter, Sessions::Active, &[]);
                    prop_assert_eq!(got, want, "step {}: {:?} with old permissions", step, op);
                }
            }
            Op::Group(channels, which, (index, log2_count)) => {
                let count = 1u32 << log2_count;
                let slice = SlotSlice::new(*index, count).unwrap();
                let mut channels = channels.clone();
                channels.sort();
                channels.dedup();
                let channel_keys: Vec<Vec<u8>> = channels.iter().map(|&c| channel_id(c)).collect();
                let asked: Vec<(&[u8], u64)> = channel_keys
                    .iter()
                    .map(|k| (&k[..], VIEW_CHANNEL))
                    .collect();
                let which = sessions_of(*which);
                let got = audience
                    .group_by_channels(&perms, &asked, which, slice)
                    .ok()
                    .map(|groups| {
                        groups
                            .into_iter()
                            .map(|g| (g.channels, g.slots))
                            .collect::<Vec<_>>()
                    });
                let want = if channels.iter().all(|c| model.channels.contains_key(c)) {
                    let mut groups: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
                    for (&slot, s) in &sessions {
                        let considered = match which {
                            Sessions::Active => s.active,
                            Sessions::Passive => !s.active,
                            Sessions::All => true,
                        };
                        // Exactly one slice of `count` holds the session: the one its
                        // slice key (here its member) names.
                        let holding: Vec<u32> = (0..count)
                            .filter(|&i| audience.in_slice(slot, SlotSlice::new(i, count).unwrap()))
                            .collect();
                        prop_assert_eq!(&holding, &[u32::from(s.member % 64) % count]);
                        if !considered || holding[0] != *index {
                            continue;
                        }
                        let seen: Vec<u32> = channels
                            .iter()
                            .enumerate()
                            .filter(|(_, &c)| {
                                model.in_channel(s.member, &s.roles, c).unwrap() & VIEW_CHANNEL
                                    == VIEW_CHANNEL
                            })
                            .map(|(k, _)| k as u32)
                            .collect();
                        if seen.is_empty() {
                            continue;
                        }
                        match groups.iter_mut().find(|(c, _)| *c == seen) {
                            Some((_, slots)) => slots.push(slot),
                            None => groups.push((seen, vec![slot])),
                        }
                    }
                    Some(groups)
                } else {
                    None
                };
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
        }
        prop_assert_eq!(audience.len(), sessions.len());
    }
    // What the audience reports of each session is what it was given.
    for (&slot, s) in &sessions {
        let view = audience.session(slot).unwrap();
        prop_assert_eq!(view.member, &member_id(s.member)[..]);
        let mut roles = keys(&s.roles);
        roles.sort();
        roles.dedup();
        prop_assert_eq!(view.roles, refs(&roles));
        prop_assert_eq!(view.active, s.active);
        prop_assert_eq!(view.windows, &s.windows[..]);
    }
    prop_assert_eq!(
        audience.slots().collect::<Vec<_>>(),
        sessions.keys().copied().collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn selects_equal_the_filtered_sessions(ops in proptest::collection::vec(op(), 1..150)) {
        run(&ops, 1024, 1024)?;
    }

    #[test]
    fn selects_equal_the_filtered_sessions_with_tiny_cache_limits(
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        run(&ops, 2, 2)?;
    }
}

/// Thousands of sessions sharing few role sets, so that role-set interning, arena
/// compaction and change-log dropping all happen.
#[test]
fn big_churn_keeps_selects_exact() {
    let mut audience = Audience::new();
    let mut sessions: BTreeMap<u32, Session> = BTreeMap::new();
    let mut model = Model {
        everyone: VIEW_CHANNEL,
        ..Model::default()
    };
    let mut perms = Permissions::new(VIEW_CHANNEL, [], None);
    for change in [
        Change::PutRole(1, 0),
        Change::PutRole(2, VIEW_CHANNEL),
        Change::PutChannel(
            0,
            vec![
                (Kind::Everyone, 0, 0, VIEW_CHANNEL),
                (Kind::Role, 2, VIEW_CHANNEL, 0),
            ],
        ),
        Change::PutChannel(
            1,
            vec![
                (Kind::Role, 1, 0, VIEW_CHANNEL),
                (Kind::Member, 7, VIEW_CHANNEL, 0),
            ],
        ),
    ] {
        perms = apply(&mut model, &perms, &change);
    }
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let filters = [
        FilterKind::Channel(0, VIEW_CHANNEL),
        FilterKind::Channel(1, VIEW_CHANNEL),
    ];
    for round in 0..40_000u32 {
        let r = next() % 10;
        if r < 5 || sessions.len() < 100 {
            let member = (next() % 3000) as u8;
            let roles: Vec<u8> = (0..next() % 3).map(|_| (next() % 4) as u8).collect();
            let keys = keys(&roles);
            let slot = audience
                .insert(
                    &member_id(member),
                    &refs(&keys),
                    next() % 2 == 0,
                    &[],
                    member,
                )
                .unwrap();
            sessions.insert(
                slot,
                Session {
                    member,
                    roles,
                    active: true,
                    windows: vec![],
                },
            );
            let active = audience.session(slot).unwrap().active;
            sessions.get_mut(&slot).unwrap().active = active;
        } else if r < 8 {
            let slot = pick(&sessions, next() as usize).unwrap();
            audience.remove(slot);
            sessions.remove(&slot);
        } else {
            let slot = pick(&sessions, next() as usize).unwrap();
            let roles: Vec<u8> = (0..next() % 3).map(|_| (next() % 4) as u8).collect();
            audience.set_roles(slot, &refs(&keys(&roles))).unwrap();
            sessions.get_mut(&slot).unwrap().roles = roles;
        }
        if round % 997 == 0 {
            let role = (next() % 4) as u8;
            let bits = if next() % 2 == 0 { VIEW_CHANNEL } else { 0 };
            perms = apply(&mut model, &perms, &Change::PutRole(role, bits));
        }
        if round % 101 == 0 {
            for filter in &filters {
                assert_eq!(
                    run_select(&mut audience, &perms, filter, Sessions::All, &[]),
                    expected(&model, &sessions, filter, Sessions::All, &[]),
                    "round {round}"
                );
            }
        }
    }
}
