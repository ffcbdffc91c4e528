//! The audience of one relay, as `bench/permissions.exs` sets it up (15,000 sessions,
//! 100 roles, 50 channels with 0-10 overwrites, members with 0-5 roles), in pure Rust:
//!
//! - a cached select, against computing every session's permission (no cache);
//! - the first select after a channel, `@everyone`, one role's bits, or a few
//!   sessions' roles changed;
//! - the same recompute on a guild where most members hold no role (few distinct role
//!   sets), to show what interning role sets buys;
//! - grouping passive sessions by 50 channels.
//!
//! Also calibrates the work units of `Audience::select_cost` (about one slot of a full
//! recompute each). Run with `cargo bench -p guild_kit_core --bench audience`.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use guild_kit_core::audience::{slots_of, Audience, Filter, Sessions, SlotSlice};
use guild_kit_core::permissions::{Channel, Overwrite, Permissions, Target, VIEW_CHANNEL};

const SEND: u64 = 0x800;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn id(prefix: u8, n: u64) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(&n.to_be_bytes());
    key
}

struct Setup {
    perms: Permissions,
    audience: Audience,
    members: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    /// Changes made so far, so that each change is a new one.
    changes: u64,
}

/// `roles_per_member(rng)` picks how many roles a member holds.
fn setup(sessions: u64, roles_per_member: impl Fn(&mut Lcg) -> u64) -> Setup {
    let mut rng = Lcg(42);
    let roles: Vec<(Vec<u8>, u64)> = (1..=100)
        .map(|r| {
            (
                id(b'r', r),
                if r % 10 == 0 {
                    0x2000
                } else if r % 3 == 0 {
                    SEND
                } else {
                    0
                },
            )
        })
        .collect();
    let mut perms = Permissions::new(
        VIEW_CHANNEL,
        roles.iter().map(|(k, b)| (&k[..], *b)),
        Some(&id(b'm', 1)),
    );
    for c in 1..=50 {
        let overwrites: Vec<(u8, Vec<u8>, Overwrite)> = (0..rng.next(11))
            .map(|_| match rng.next(10) {
                0 => (0, vec![], Overwrite::new(0, VIEW_CHANNEL)),
                1 => (0, vec![], Overwrite::new(SEND, 0)),
                2..=5 => (
                    1,
                    id(b'r', 1 + rng.next(100)),
                    Overwrite::new(0, VIEW_CHANNEL),
                ),
                6..=8 => (
                    1,
                    id(b'r', 1 + rng.next(100)),
                    Overwrite::new(VIEW_CHANNEL, 0),
                ),
                _ => (
                    2,
                    id(b'm', 1 + rng.next(sessions)),
                    Overwrite::new(VIEW_CHANNEL, 0),
                ),
            })
            .collect();
        let channel = Channel::new(overwrites.iter().map(|(kind, key, o)| {
            let target = match kind {
                0 => Target::Everyone,
                1 => Target::Role(key),
                _ => Target::Member(key),
            };
            (target, *o)
        }));
        perms = perms.with_channel(&id(b'c', c), channel);
    }
    let mut audience = Audience::new();
    let mut members = Vec::new();
    for m in 1..=sessions {
        let count = roles_per_member(&mut rng);
        let mut held: Vec<Vec<u8>> = Vec::new();
        while (held.len() as u64) < count {
            let role = id(b'r', 1 + rng.next(100));
            if !held.contains(&role) {
                held.push(role);
            }
        }
        let refs: Vec<&[u8]> = held.iter().map(|r| &r[..]).collect();
        audience
            .insert(&id(b'm', m), &refs, true, &[], m as u8)
            .unwrap();
        members.push((id(b'm', m), held));
    }
    for c in 1..=50 {
        select(&mut audience, &perms, c);
    }
    Setup {
        perms,
        audience,
        members,
        changes: 0,
    }
}

fn select(audience: &mut Audience, perms: &Permissions, channel: u64) -> usize {
    let key = id(b'c', channel);
    let filter = Filter::Channel {
        channel: &key,
        required: VIEW_CHANNEL,
    };
    let words = audience
        .select(perms, filter, Sessions::Active, &[])
        .unwrap();
    slots_of(words).count()
}

/// Times the first select of channel `n % 50 + 1` with the permissions
/// `change(&setup.perms, n)` makes (made outside the timing), for a new `n` each time.
fn first_select_after(
    group: &mut BenchmarkGroup<WallTime>,
    setup: &mut Setup,
    what: &str,
    change: impl Fn(&Permissions, u64) -> Permissions,
) {
    let Setup {
        perms,
        audience,
        changes: n,
        ..
    } = setup;
    group.bench_function(format!("first select after {what}"), |b| {
        b.iter_batched(
            || {
                *n += 1;
                (change(perms, *n), *n % 50 + 1)
            },
            |(changed, channel)| black_box(select(audience, &changed, channel)),
            BatchSize::SmallInput,
        )
    });
}

/// A channel's overwrites change: that channel's cache entries are recomputed.
fn channel_changes(perms: &Permissions, n: u64) -> Permissions {
    let key = id(b'c', n % 50 + 1);
    let old = perms.channel(&key).unwrap();
    let mut overwrites: Vec<(Target, Overwrite)> = vec![(Target::Everyone, old.everyone())];
    overwrites.extend(old.roles().map(|(r, o)| (Target::Role(r), o)));
    overwrites.push((Target::Member(b"nobody"), Overwrite::new(n, 0)));
    perms.with_channel(&key, Channel::new(overwrites))
}

/// `@everyone` changes: every role set's permissions are recomputed.
fn everyone_changes(perms: &Permissions, n: u64) -> Permissions {
    perms.with_everyone(VIEW_CHANNEL | n << 20)
}

/// One role's bits change: the role sets that hold it are recomputed.
fn role_changes(perms: &Permissions, n: u64) -> Permissions {
    perms.with_role(&id(b'r', n % 100 + 1), n << 20)
}

fn benches(c: &mut Criterion) {
    let mut s = setup(15_000, |rng| rng.next(6));
    let mut group = c.benchmark_group("audience 15k sessions, 0-5 of 100 roles");

    group.bench_function("cached select (slots iterated)", |b| {
        let mut channel = 0;
        b.iter(|| {
            channel = channel % 50 + 1;
            black_box(select(&mut s.audience, &s.perms, channel))
        })
    });

    group.bench_function("no cache: Permissions::in_channel per session", |b| {
        let channel = id(b'c', 7);
        b.iter(|| {
            s.members
                .iter()
                .filter(|(member, roles)| {
                    let roles = roles.iter().map(|r| &r[..]);
                    s.perms.in_channel(member, roles, &channel).unwrap() & VIEW_CHANNEL
                        == VIEW_CHANNEL
                })
                .count()
        })
    });

    first_select_after(&mut group, &mut s, "a channel change", channel_changes);
    first_select_after(&mut group, &mut s, "@everyone changes", everyone_changes);
    first_select_after(&mut group, &mut s, "one role's bits change", role_changes);

    select(&mut s.audience, &s.perms, 1);
    group.bench_function("first select after 10 sessions change roles", |b| {
        b.iter(|| {
            for _ in 0..10 {
                s.changes += 1;
                let n = s.changes;
                let slot = (n * 7919 % 15_000) as u32;
                let role = id(b'r', n % 100 + 1);
                s.audience.set_roles(slot, &[&role]).unwrap();
            }
            black_box(select(&mut s.audience, &s.perms, 1))
        })
    });

    group.bench_function("group passive sessions by 50 channels", |b| {
        let keys: Vec<Vec<u8>> = (1..=50).map(|c| id(b'c', c)).collect();
        let asked: Vec<(&[u8], u64)> = keys.iter().map(|k| (&k[..], VIEW_CHANNEL)).collect();
        b.iter(|| {
            black_box(
                s.audience
                    .group_by_channels(&s.perms, &asked, Sessions::All, SlotSlice::ALL)
                    .unwrap()
                    .len(),
            )
        })
    });
    group.finish();

    // Most members hold no role, the rest one or two: few distinct role sets.
    let mut few_sets = setup(15_000, |rng| match rng.next(10) {
        0..=6 => 0,
        7..=8 => 1,
        _ => 2,
    });
    let mut group = c.benchmark_group("audience 15k sessions, 70% without roles");
    first_select_after(
        &mut group,
        &mut few_sets,
        "@everyone changes",
        everyone_changes,
    );
    group.finish();
}

criterion_group!(audience, benches);
criterion_main!(audience);
