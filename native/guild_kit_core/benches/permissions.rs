//! `Permissions` as built (copy-on-write `hashbrown` maps behind `Arc`s) against the
//! same model on `im`'s persistent hash maps, the candidate for value semantics: the
//! cost of a change (a role, a channel among 500) and of the reads the hot paths do
//! (role lookups, `in_channel`). Run with `cargo bench -p guild_kit_core --bench permissions`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use guild_kit_core::permissions::{Channel, Overwrite, Permissions, Target, VIEW_CHANNEL};

fn id(prefix: u8, n: u64) -> Vec<u8> {
    let mut key = vec![prefix];
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// The same model on `im`: what `Permissions` would be with persistent maps.
#[derive(Clone)]
struct ImPermissions {
    everyone: u64,
    roles: im::HashMap<Arc<[u8]>, u64>,
    channels: im::HashMap<Arc<[u8]>, Arc<ImChannel>>,
}

struct ImChannel {
    everyone: Overwrite,
    roles: im::HashMap<Arc<[u8]>, Overwrite>,
}

impl ImPermissions {
    fn in_channel(&self, roles: &[&[u8]], channel: &[u8]) -> Option<u64> {
        let channel = self.channels.get(channel)?;
        let mut base = self.everyone;
        for role in roles {
            base |= self.roles.get(*role).copied().unwrap_or(0);
        }
        let mut merged = Overwrite::default();
        for role in roles {
            if self.roles.contains_key(*role) {
                if let Some(o) = channel.roles.get(*role) {
                    merged = merged.merge(*o);
                }
            }
        }
        Some(merged.apply(channel.everyone.apply(base)))
    }
}

fn benches(c: &mut Criterion) {
    let roles: Vec<(Vec<u8>, u64)> = (0..250).map(|r| (id(b'r', r), r << 10)).collect();
    let overwrites = |c: u64| -> Vec<(Vec<u8>, Overwrite)> {
        (0..15)
            .map(|o| {
                (
                    id(b'r', (c * 7 + o * 13) % 250),
                    Overwrite::new(VIEW_CHANNEL, o),
                )
            })
            .collect()
    };
    let mut cow = Permissions::new(VIEW_CHANNEL, roles.iter().map(|(k, b)| (&k[..], *b)), None);
    let mut persistent = ImPermissions {
        everyone: VIEW_CHANNEL,
        roles: roles.iter().map(|(k, b)| (Arc::from(&k[..]), *b)).collect(),
        channels: im::HashMap::new(),
    };
    for ch in 0..500 {
        let list = overwrites(ch);
        cow = cow.with_channel(
            &id(b'c', ch),
            Channel::new(list.iter().map(|(k, o)| (Target::Role(k), *o))),
        );
        persistent.channels.insert(
            Arc::from(&id(b'c', ch)[..]),
            Arc::new(ImChannel {
                everyone: Overwrite::default(),
                roles: list.iter().map(|(k, o)| (Arc::from(&k[..]), *o)).collect(),
            }),
        );
    }
    let held: Vec<Vec<u8>> = (0..5).map(|r| id(b'r', r * 37 % 250)).collect();
    let held: Vec<&[u8]> = held.iter().map(|r| &r[..]).collect();
    let channel = id(b'c', 123);

    let mut group = c.benchmark_group("250 roles, 500 channels of 15 overwrites");
    group.bench_function("copy-on-write: in_channel, 5 roles", |b| {
        b.iter(|| black_box(cow.in_channel(b"member", held.iter().copied(), &channel)))
    });
    group.bench_function("im: in_channel, 5 roles", |b| {
        b.iter(|| black_box(persistent.in_channel(&held, &channel)))
    });
    group.bench_function("copy-on-write: role lookup", |b| {
        b.iter(|| black_box(cow.role(held[2])))
    });
    group.bench_function("im: role lookup", |b| {
        b.iter(|| black_box(persistent.roles.get(held[2]).copied()))
    });
    let mut n = 0;
    group.bench_function("copy-on-write: put a role", |b| {
        b.iter(|| {
            n += 1;
            black_box(cow.with_role(held[1], n))
        })
    });
    group.bench_function("im: put a role", |b| {
        b.iter(|| {
            n += 1;
            let mut next = persistent.clone();
            next.roles.insert(Arc::from(held[1]), n);
            black_box(next)
        })
    });
    let list = overwrites(9);
    group.bench_function("copy-on-write: put a channel", |b| {
        b.iter(|| {
            let channel = Channel::new(list.iter().map(|(k, o)| (Target::Role(k), *o)));
            black_box(cow.with_channel(b"c-new", channel))
        })
    });
    group.bench_function("im: put a channel", |b| {
        b.iter(|| {
            let mut next = persistent.clone();
            next.channels.insert(
                Arc::from(&b"c-new"[..]),
                Arc::new(ImChannel {
                    everyone: Overwrite::default(),
                    roles: list.iter().map(|(k, o)| (Arc::from(&k[..]), *o)).collect(),
                }),
            );
            black_box(next)
        })
    });
    group.finish();
}

criterion_group!(permissions, benches);
criterion_main!(permissions);
