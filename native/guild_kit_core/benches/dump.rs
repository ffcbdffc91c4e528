//! Criterion benches for dumps: a 1M-member set's dump and load, the phases of a load
//! (checksum, framing, key checks, tree build), and the two choices the format made:
//! `crc32fast` against a hand-written table CRC-32, and `postcard` metadata against a
//! hand-written encoding of the same fields.
//!
//! Run with `cargo bench -p guild_kit_core --bench dump`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use guild_kit_core::dump::{dump_sorted_set, load_sorted_set, Dump, Kind, TermChecker};
use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::term_key::{Element, ElementRef};
use serde::Serialize;
use support::member;

mod support;

const MEMBERS: i64 = 1_000_000;

fn tree() -> KeyTree {
    let elements: Vec<Element> = (0..MEMBERS)
        .map(|i| member(i * 4, (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    KeyTree::from_ascending(elements.iter().map(ElementRef::from)).expect("ascending")
}

/// The textbook byte-at-a-time CRC-32 (IEEE, reflected), the hand-written alternative.
fn table_crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// Metadata shaped as a member list's: group ids and watched windows.
#[derive(Serialize)]
struct Meta {
    groups: Vec<Vec<u8>>,
    windows: Vec<(u64, u64)>,
}

fn hand_meta(meta: &Meta) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    varint(&mut out, meta.groups.len() as u64);
    for g in &meta.groups {
        varint(&mut out, g.len() as u64);
        out.extend_from_slice(g);
    }
    varint(&mut out, meta.windows.len() as u64);
    for &(a, b) in &meta.windows {
        varint(&mut out, a);
        varint(&mut out, b);
    }
    out
}

fn benches(c: &mut Criterion) {
    let tree = tree();
    let dump = dump_sorted_set(&tree).expect("dump");
    assert_eq!(table_crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);

    let mut group = c.benchmark_group("dump 1M members");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("dump_sorted_set", |b| {
        b.iter(|| dump_sorted_set(black_box(&tree)))
    });
    group.bench_function("load_sorted_set", |b| {
        b.iter(|| load_sorted_set(black_box(&dump)))
    });
    group.bench_function("crc32fast", |b| {
        b.iter(|| crc32fast::hash(black_box(&dump)))
    });
    group.bench_function("table crc32 (hand-written)", |b| {
        b.iter(|| table_crc32(black_box(&dump)))
    });
    let parsed = Dump::parse(&dump, Kind::SortedSet).expect("parse");
    group.bench_function("framing", |b| {
        b.iter(|| parsed.check_elements(|_, _| Ok(())).map(|e| e.len()))
    });
    group.bench_function("term key checks", |b| {
        b.iter(|| {
            let mut checker = TermChecker::default();
            parsed
                .check_elements(|p, e| checker.check(p, e))
                .map(|e| e.len())
        })
    });
    group.bench_function("from_ascending", |b| {
        b.iter(|| {
            let elements = parsed.check_elements(|_, _| Ok(())).expect("framed");
            KeyTree::from_ascending(elements.map(ElementRef::from_bytes)).map(|t| t.len())
        })
    });
    group.finish();

    let meta = Meta {
        groups: (0..12u8).map(|g| vec![0, 0x20, b'g', g, 0, 0]).collect(),
        windows: (0..1000u64).map(|w| (w * 100, w * 100 + 99)).collect(),
    };
    assert_eq!(
        postcard::to_allocvec(&meta).expect("meta"),
        hand_meta(&meta)
    );
    let mut group = c.benchmark_group("metadata, 12 groups and 1000 windows");
    group.bench_function("postcard", |b| {
        b.iter(|| postcard::to_allocvec(black_box(&meta)))
    });
    group.bench_function("hand-written", |b| b.iter(|| hand_meta(black_box(&meta))));
    group.finish();
}

criterion_group!(dump_benches, benches);
criterion_main!(dump_benches);
