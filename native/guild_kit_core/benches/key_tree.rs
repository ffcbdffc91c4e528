//! Criterion benches for the sorted-set core: `KeyTree` against `std::collections::BTreeSet`
//! on the same encoded keys, and the cost of encoding a member key.
//!
//! Run with `cargo bench -p guild_kit_core --bench key_tree`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::term_key::{Element, ElementRef, Elements, KeyEncoder, KeyReader, Number};

/// A member-list key `{integer, 8-byte binary}`, encoded.
fn member(id: i64, tag: u64) -> Element {
    let mut encoder = KeyEncoder::new();
    encoder.push_tuple(2);
    encoder.push_number(Number::Int(id), false);
    encoder.push_binary(&tag.to_be_bytes());
    encoder.finish()
}

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

fn sets(n: usize) -> (KeyTree, BTreeSet<Vec<u8>>) {
    let elements: Vec<Element> = (0..n as i64).map(|i| member(i * 2, i as u64)).collect();
    let tree = KeyTree::from_ascending(elements.iter().map(Element::as_element_ref))
        .expect("ascending members");
    let std_set = elements.iter().map(|e| e.as_bytes().to_vec()).collect();
    (tree, std_set)
}

fn bench_sizes(c: &mut Criterion) {
    for n in [10_000usize, 100_000, 1_000_000] {
        let (tree, std_set) = sets(n);
        let mut group = c.benchmark_group(format!("n={n}"));
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));

        let mut rng = Lcg(42);
        group.bench_function(BenchmarkId::new("insert+remove random", "KeyTree"), |b| {
            let mut tree = tree.clone();
            b.iter_batched(
                || member((rng.next() % (2 * n as u64)) as i64 | 1, 7),
                |e| {
                    tree.insert(&e).expect("a small element");
                    tree.remove(&e);
                },
                BatchSize::SmallInput,
            )
        });
        let mut rng = Lcg(42);
        group.bench_function(BenchmarkId::new("insert+remove random", "BTreeSet"), |b| {
            let mut std_set = std_set.clone();
            b.iter_batched(
                || {
                    member((rng.next() % (2 * n as u64)) as i64 | 1, 7)
                        .as_bytes()
                        .to_vec()
                },
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
                || {
                    let i = rng.next() % n as u64;
                    member(i as i64 * 2, i)
                },
                |e| black_box(tree.position(&e)),
                BatchSize::SmallInput,
            )
        });
        let mut rng = Lcg(7);
        group.bench_function(BenchmarkId::new("rank (range count)", "BTreeSet"), |b| {
            b.iter_batched(
                || {
                    let i = rng.next() % n as u64;
                    member(i as i64 * 2, i).as_bytes().to_vec()
                },
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
        let mut rng = Lcg(11);
        group.bench_function(BenchmarkId::new("snapshot + first write", "KeyTree"), |b| {
            let mut tree = tree.clone();
            b.iter_batched(
                || member((rng.next() % (2 * n as u64)) as i64 | 1, 7),
                |e| {
                    let snapshot = tree.clone();
                    tree.insert(&e).expect("a small element");
                    tree.remove(&e);
                    snapshot
                },
                BatchSize::SmallInput,
            )
        });
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
