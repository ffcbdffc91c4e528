//! Criterion benches for the sorted-set core: `KeyTree` against `std::collections::BTreeSet`
//! on the same encoded keys, and the cost of encoding a member key.
//!
//! Run with `cargo bench -p guild_kit_core --bench key_tree`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion,
};
use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::term_key::{Element, ElementRef, Elements, KeyReader};
use support::member;

mod support;

/// A small deterministic generator, so runs compare like for like.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

impl Lcg {
    /// A member not in [`sets`]`(n)`: an odd id.
    fn absent(&mut self, n: usize) -> Element {
        member((self.next() % (2 * n as u64)) as i64 | 1, 7)
    }

    /// A member of [`sets`]`(n)`.
    fn present(&mut self, n: usize) -> Element {
        let i = self.next() % n as u64;
        member(i as i64 * 2, i)
    }
}

fn sets(n: usize) -> (KeyTree, BTreeSet<Vec<u8>>) {
    let elements: Vec<Element> = (0..n as i64).map(|i| member(i * 2, i as u64)).collect();
    let tree =
        KeyTree::from_ascending(elements.iter().map(ElementRef::from)).expect("ascending members");
    let std_set = elements.iter().map(|e| e.as_bytes().to_vec()).collect();
    (tree, std_set)
}

/// Times `before(&tree)` then the insert and removal of a member not in `tree`, on a
/// copy of `tree` (of `n` members), with members drawn from `seed`.
fn bench_writes<R>(
    group: &mut BenchmarkGroup<WallTime>,
    name: &str,
    tree: &KeyTree,
    n: usize,
    seed: u64,
    before: impl Fn(&KeyTree) -> R,
) {
    let mut rng = Lcg(seed);
    group.bench_function(BenchmarkId::new(name, "KeyTree"), |b| {
        let mut tree = tree.clone();
        b.iter_batched(
            || rng.absent(n),
            |e| {
                let before = before(&tree);
                tree.insert(&e).expect("a small element");
                tree.remove(&e);
                before
            },
            BatchSize::SmallInput,
        )
    });
}

fn bench_sizes(c: &mut Criterion) {
    for n in [10_000usize, 100_000, 1_000_000] {
        let (tree, std_set) = sets(n);
        let mut group = c.benchmark_group(format!("n={n}"));
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));

        bench_writes(&mut group, "insert+remove random", &tree, n, 42, |_| ());
        let mut rng = Lcg(42);
        group.bench_function(BenchmarkId::new("insert+remove random", "BTreeSet"), |b| {
            let mut std_set = std_set.clone();
            b.iter_batched(
                || rng.absent(n).as_bytes().to_vec(),
                |e| {
                    std_set.insert(e.clone());
                    std_set.remove(&e);
                },
                BatchSize::SmallInput,
            )
        });

        let mut rng = Lcg(7);
        group.bench_function(BenchmarkId::new("position", "KeyTree"), |b| {
            b.iter_batched(
                || rng.present(n),
                |e| black_box(tree.position(&e)),
                BatchSize::SmallInput,
            )
        });
        let mut rng = Lcg(7);
        group.bench_function(BenchmarkId::new("rank (range count)", "BTreeSet"), |b| {
            b.iter_batched(
                || rng.present(n).as_bytes().to_vec(),
                |e| black_box(std_set.range(..e).count()),
                BatchSize::SmallInput,
            )
        });

        let mut rng = Lcg(9);
        group.bench_function(BenchmarkId::new("get", "KeyTree"), |b| {
            b.iter(|| black_box(tree.get(rng.next() as usize % n)))
        });
        let mut rng = Lcg(9);
        group.bench_function(BenchmarkId::new("iter 100", "KeyTree"), |b| {
            b.iter(|| {
                let start = rng.next() as usize % n;
                black_box(
                    tree.iter_from(start)
                        .take(100)
                        .map(ElementRef::len)
                        .sum::<usize>(),
                )
            })
        });
        group.bench_function(BenchmarkId::new("clone (snapshot)", "KeyTree"), |b| {
            b.iter(|| black_box(tree.clone()))
        });
        bench_writes(
            &mut group,
            "snapshot + first write",
            &tree,
            n,
            11,
            KeyTree::clone,
        );
        group.finish();
    }
}

fn bench_bulk(c: &mut Criterion) {
    let n = 1_000_000usize;
    let mut rng = Lcg(3);
    let mut shuffled = Elements::new();
    for _ in 0..n {
        let id = rng.next() % (4 * n as u64);
        shuffled.push(&member(id as i64, id));
    }
    let mut group = c.benchmark_group(format!("n={n}"));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("from_unsorted", "KeyTree"), |b| {
        b.iter(|| black_box(KeyTree::from_unsorted(&shuffled).expect("small elements")))
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut rng = Lcg(1);
    c.bench_function("encode {integer, 8-byte binary}", |b| {
        b.iter(|| black_box(member(rng.next() as i64, rng.next())))
    });
}

fn bench_read(c: &mut Criterion) {
    let elements: Vec<Element> = (0..1024).map(|i| member(i * 4, i as u64)).collect();
    let mut i = 0;
    c.bench_function("read {integer, 8-byte binary}", |b| {
        b.iter(|| {
            i = (i + 1) % elements.len();
            let mut reader = KeyReader::new(elements[i].as_bytes()).expect("an element");
            let mut tokens = 0;
            while let Some(token) = reader.next().expect("valid") {
                black_box(&token);
                tokens += 1;
            }
            tokens
        })
    });
}

criterion_group!(benches, bench_sizes, bench_bulk, bench_encode, bench_read);
criterion_main!(benches);
