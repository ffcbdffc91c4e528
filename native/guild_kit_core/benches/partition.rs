//! Partitioning 100,000 hashed items into worker buckets: `Partition` (chunked buckets,
//! the path the NIF's split takes) against grouping with a std `HashMap`, the obvious
//! baseline, and with buckets whose chunks are reused from a `ChunkPool` (what the NIF
//! does), against fresh ones. Run with `cargo bench -p guild_kit_core --bench partition`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use guild_kit_core::partition::{bucket, ChunkPool, Partition};

/// Hashes spread like phash2 values (27 bits), from a fixed-seed LCG.
fn hashes(n: usize) -> Vec<u32> {
    let mut state: u64 = 0x5eed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 37) as u32
        })
        .collect()
}

fn partition(c: &mut Criterion) {
    let items = hashes(100_000);
    for buckets in [2u32, 8] {
        c.bench_function(&format!("Partition 100k into {buckets}"), |b| {
            b.iter(|| {
                let mut partition = Partition::new(buckets).unwrap();
                for &hash in &items {
                    partition.push(hash, hash);
                }
                black_box(partition.into_buckets())
            })
        });
        c.bench_function(&format!("Partition 100k into {buckets}, pooled"), |b| {
            static POOL: ChunkPool<u32> = ChunkPool::new(64);
            b.iter(|| {
                let mut partition = Partition::with_pool(buckets, &POOL).unwrap();
                for &hash in &items {
                    partition.push(hash, hash);
                }
                black_box(partition.into_buckets())
            })
        });
        c.bench_function(&format!("HashMap group 100k into {buckets}"), |b| {
            b.iter(|| {
                let mut groups: HashMap<usize, Vec<u32>> = HashMap::new();
                for &hash in &items {
                    groups.entry(bucket(hash, buckets)).or_default().push(hash);
                }
                black_box(groups)
            })
        });
    }
}

criterion_group!(benches, partition);
criterion_main!(benches);
