//! Criterion benches for the member-list core, and the measurements behind its choice of
//! persistent structures for O(1) snapshots.
//!
//! - `move`: a presence change on a 1,000,000-member list with 1,000 watched windows
//!   (500 on the top ten, 500 scattered), through the windows it changed and the rows
//!   their ops carry: the core's share of `MemberList.put/4`.
//! - `snapshot`: `MemberList::clone` at a million members and the first write after it.
//! - `windows/*`: the window table (a persistent interval treap) against `im::OrdMap`
//!   and against a `BTreeMap` copied on write, for what a member list asks of it: a
//!   snapshot and the first watch after it, and finding the windows a change reaches
//!   when many windows lie above the change.
//! - `counts/*`: per-group member counts in shared chunks against `im::Vector` and a
//!   vector copied on write, for a snapshot and the first write after it.
//!
//! Run with `cargo bench -p guild_kit_core --bench member_list`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use guild_kit_core::member_list::{Counts, MemberList, Windows};
use guild_kit_core::term_key::{Element, KeyEncoder, Number};
use support::SplitMix;

mod support;

fn int(v: i64) -> Element {
    Element::number(Number::Int(v))
}

fn name(i: u64) -> Element {
    let mut e = KeyEncoder::new();
    e.push_binary(format!("n{}", i.wrapping_mul(2_654_435_761) % 9_973).as_bytes());
    e.finish()
}

/// Times `write(state)` right after `snapshot(state)`, keeping the snapshot alive
/// across the write and dropping it outside the timing.
fn after_snapshot<S, T>(
    b: &mut criterion::Bencher,
    state: &mut S,
    snapshot: impl Fn(&S) -> T,
    mut write: impl FnMut(&mut S),
) {
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let kept = snapshot(state);
            let started = Instant::now();
            write(state);
            total += started.elapsed();
            drop(black_box(kept));
        }
        total
    })
}

const MEMBERS: u64 = 1_000_000;
/// Groups: 10 roles, online, offline.
const ONLINE: i64 = 10;
const OFFLINE: i64 = 11;

fn million() -> MemberList {
    let mut list = MemberList::new((0..12).map(int).collect()).unwrap();
    for i in 0..MEMBERS {
        let group = match i % 20 {
            0 => (i / 20 % 10) as i64,
            1..=6 => ONLINE,
            _ => OFFLINE,
        };
        list.put(&int(i as i64), &int(group), &name(i)).unwrap();
    }
    list
}

fn moves(c: &mut Criterion) {
    let mut list = million();
    let mut rng = SplitMix(7);
    for _ in 0..500 {
        let first = rng.next() % 10 * 100;
        list.watch((first, first + 99));
    }
    for _ in 0..500 {
        let first = rng.next() % (MEMBERS / 100) * 100;
        list.watch((first, first + 99));
    }
    let mut group = c.benchmark_group("move");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("1M members, 1,000 windows", |b| {
        b.iter(|| {
            // Online members are ids 1..=6 mod 20: move one offline and back.
            let id = int((rng.next() % (MEMBERS / 20) * 20 + 3) as i64);
            let mut touched = 0;
            for to in [OFFLINE, ONLINE] {
                let change = list.put(&id, &int(to), &name(0)).unwrap();
                let windows: Vec<_> = list.changed_windows(&change, None).collect();
                let mut rows: Vec<u64> = windows.iter().flat_map(|w| w.rows()).collect();
                rows.sort_unstable();
                rows.dedup();
                touched += black_box(list.rows_at(&rows)).len();
            }
            touched
        })
    });
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let mut list = million();
    let mut group = c.benchmark_group("snapshot");
    group.bench_function("clone at 1M members", |b| {
        b.iter(|| black_box(list.clone()))
    });
    let mut rng = SplitMix(9);
    group.bench_function("first put after a clone at 1M members", |b| {
        after_snapshot(b, &mut list, MemberList::clone, |list| {
            let id = int((rng.next() % MEMBERS) as i64);
            list.put(&id, &int(ONLINE), &name(rng.next())).unwrap();
        })
    });
    group.finish();
}

/// The window table as `im::OrdMap`: windows by `(first, last)` with watch counts, and
/// their lengths, so that a query can start at `low - longest` (what the member list did
/// before the interval treap).
#[derive(Clone, Default)]
struct ImWindows {
    ranges: im::OrdMap<(u64, u64), u32>,
    lengths: im::OrdMap<u64, u32>,
}

impl ImWindows {
    fn watch(&mut self, range: (u64, u64)) {
        *self.ranges.entry(range).or_insert(0) += 1;
        *self.lengths.entry(range.1 - range.0).or_insert(0) += 1;
    }

    fn overlapping(&self, low: u64, high: u64) -> usize {
        let longest = self.lengths.get_max().map_or(0, |(l, _)| *l);
        self.ranges
            .range((low.saturating_sub(longest), 0)..=(high, u64::MAX))
            .filter(|((first, last), _)| *first <= high && *last >= low)
            .count()
    }
}

/// The window table as a `BTreeMap` shared by snapshots and copied whole on a write.
#[derive(Clone, Default)]
struct CowWindows {
    ranges: Arc<BTreeMap<(u64, u64), u32>>,
}

impl CowWindows {
    fn watch(&mut self, range: (u64, u64)) {
        *Arc::make_mut(&mut self.ranges).entry(range).or_insert(0) += 1;
    }
}

fn windows(c: &mut Criterion) {
    const WINDOWS: u64 = 1_000_000;
    let mut rng = SplitMix(11);
    let ranges: Vec<(u64, u64)> = (0..WINDOWS)
        .map(|_| {
            let first = rng.next() % 1_000_000;
            (first, first + 99)
        })
        .collect();
    let mut treap = Windows::default();
    let mut ordmap = ImWindows::default();
    let mut cow = CowWindows::default();
    for &range in &ranges {
        treap.watch(range);
        ordmap.watch(range);
        cow.watch(range);
    }
    let mut group = c.benchmark_group("windows");
    group.sample_size(20);
    group.bench_function("treap: first watch after a snapshot, 1M windows", |b| {
        after_snapshot(b, &mut treap, Clone::clone, |t| {
            t.watch((rng.next() % 1_000_000, 2_000_000))
        })
    });
    group.bench_function(
        "im::OrdMap: first watch after a snapshot, 1M windows",
        |b| {
            after_snapshot(b, &mut ordmap, Clone::clone, |t| {
                t.watch((rng.next() % 1_000_000, 2_000_000))
            })
        },
    );
    group.bench_function(
        "Arc<BTreeMap>: first watch after a snapshot, 1M windows",
        |b| {
            after_snapshot(b, &mut cow, Clone::clone, |t| {
                t.watch((rng.next() % 1_000_000, 2_000_000))
            })
        },
    );

    // 100,000 short windows above a change near row 50,000, and one long window over
    // everything: the change reaches two windows.
    let mut treap = Windows::default();
    let mut ordmap = ImWindows::default();
    for i in 0..100_000 {
        let first = i % 40_000;
        treap.watch((first, first + 9 + i / 40_000));
        ordmap.watch((first, first + 9 + i / 40_000));
    }
    treap.watch((0, u64::MAX / 2));
    ordmap.watch((0, u64::MAX / 2));
    treap.watch((50_000, 50_099));
    ordmap.watch((50_000, 50_099));
    group.bench_function("treap: windows reached, 100k above the change", |b| {
        b.iter(|| treap.overlapping_desc(50_010, 50_011, None).count())
    });
    group.bench_function("im::OrdMap: windows reached, 100k above the change", |b| {
        b.iter(|| ordmap.overlapping(50_010, 50_011))
    });
    group.finish();
}

fn counts(c: &mut Criterion) {
    const GROUPS: usize = 65_535;
    let mut chunked = Counts::new(GROUPS);
    let mut vector: im::Vector<u32> = std::iter::repeat_n(0, GROUPS).collect();
    let mut cow: Arc<Vec<u32>> = Arc::new(vec![0; GROUPS]);
    let mut rng = SplitMix(13);
    let mut group = c.benchmark_group("counts");
    group.bench_function("chunks: first write after a snapshot, 65,535 groups", |b| {
        after_snapshot(b, &mut chunked, Clone::clone, |c| {
            c.add(rng.next() as usize % GROUPS, 1);
        })
    });
    group.bench_function(
        "im::Vector: first write after a snapshot, 65,535 groups",
        |b| {
            after_snapshot(b, &mut vector, Clone::clone, |v| {
                let i = rng.next() as usize % GROUPS;
                v.set(i, v[i] + 1);
            })
        },
    );
    group.bench_function(
        "Arc<Vec>: first write after a snapshot, 65,535 groups",
        |b| {
            after_snapshot(b, &mut cow, Clone::clone, |c| {
                Arc::make_mut(c)[rng.next() as usize % GROUPS] += 1;
            })
        },
    );
    group.bench_function("chunks: read", |b| {
        b.iter(|| chunked.get(rng.next() as usize % GROUPS))
    });
    group.bench_function("im::Vector: read", |b| {
        b.iter(|| vector[rng.next() as usize % GROUPS])
    });
    group.finish();
}

criterion_group!(benches, moves, snapshots, windows, counts);
criterion_main!(benches);
