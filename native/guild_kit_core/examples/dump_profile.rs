//! One dump or load, for instruction counts under callgrind (which cannot run the BEAM):
//!
//!     cargo build --release -p guild_kit_core --example dump_profile
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='dump_profile::measured' \
//!         target/release/examples/dump_profile set-load 200000
//!
//! Operations: `set-dump`, `set-load`, `list-dump`, `list-load`. Only `measured` is
//! counted, so building the input is left out. `snapshot-put [N] [ROUNDS]` instead
//! prints the median time of a put with no snapshot taken beside the first put after a
//! snapshot (a clone), alternating, over ROUNDS puts (default 41). The data is shaped as in
//! `bench/handoff.exs`: set members `{4i, <<random:64>>}`; list members with large ids,
//! 8-letter names, 12 groups (5% roles, 30% online, the rest offline) and 1,000 watched
//! windows. Prints the wall-clock time of the measured call, too.

use std::hint::black_box;
use std::time::Instant;

use guild_kit_core::dump::{dump_sorted_set, load_sorted_set};
use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::member_list::MemberList;
use guild_kit_core::term_key::{Element, ElementRef, KeyEncoder, Number};
use support::{member, SplitMix};

// The benches' data builders, shared with this example.
#[path = "../benches/support/mod.rs"]
mod support;

fn int(v: i64) -> Element {
    let mut e = KeyEncoder::new();
    e.push_number(Number::Int(v), false);
    e.finish()
}

fn set(n: u64, rng: &mut SplitMix) -> KeyTree {
    let elements: Vec<Element> = (0..n)
        .map(|i| member(i as i64 * 4, rng.next().wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    KeyTree::from_ascending(elements.iter().map(ElementRef::from)).expect("ascending")
}

fn list(n: u64, rng: &mut SplitMix) -> MemberList {
    let mut list = MemberList::new((0..12).map(int).collect()).expect("groups");
    for id in 1..=n {
        let group = match rng.next() % 100 {
            r if r < 5 => (rng.next() % 10) as i64,
            r if r < 35 => 10,
            _ => 11,
        };
        let name: Vec<u8> = (0..8).map(|_| b'a' + (rng.next() % 26) as u8).collect();
        let mut sort = KeyEncoder::new();
        sort.push_binary(&name);
        let id = int(100_000_000_000_000_000 + id as i64 * 7_919);
        list.put(&id, &int(group), &sort.finish()).expect("put");
    }
    for w in 0..1000 {
        list.watch((w * 100, w * 100 + 99));
    }
    list
}

#[inline(never)]
fn measured<T>(f: impl FnOnce() -> T) -> T {
    f()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map_or("set-load", String::as_str);
    let n: u64 = args.get(2).map_or(200_000, |n| n.parse().expect("a count"));
    let mut rng = SplitMix(17);
    let started;
    match op {
        "set-dump" => {
            let tree = set(n, &mut rng);
            started = Instant::now();
            black_box(measured(|| dump_sorted_set(&tree)).expect("dump"));
        }
        "set-load" => {
            let dump = dump_sorted_set(&set(n, &mut rng)).expect("dump");
            started = Instant::now();
            black_box(measured(|| load_sorted_set(&dump)).expect("load"));
        }
        "list-dump" => {
            let list = list(n, &mut rng);
            started = Instant::now();
            black_box(measured(|| list.to_dump()).expect("dump"));
        }
        "list-load" => {
            let dump = list(n, &mut rng).to_dump().expect("dump");
            started = Instant::now();
            black_box(measured(|| MemberList::from_dump(&dump)).expect("load"));
        }
        "snapshot-put" => {
            let mut list = list(n, &mut rng);
            let rounds: usize = args.get(3).map_or(41, |r| r.parse().expect("a count"));
            let mut plain = Vec::new();
            let mut after = Vec::new();
            for round in 0..rounds {
                let id = int(100_000_000_000_000_000 + (1 + rng.next() % n) as i64 * 7_919);
                let mut sort = KeyEncoder::new();
                sort.push_binary(format!("r{round}").as_bytes());
                let sort = sort.finish();
                let group = int((rng.next() % 12) as i64);
                let snapshot = (round % 2 == 1).then(|| list.clone());
                let t = Instant::now();
                black_box(list.put(&id, &group, &sort).expect("put"));
                let took = t.elapsed();
                drop(snapshot);
                if round % 2 == 1 {
                    after.push(took)
                } else {
                    plain.push(took)
                }
            }
            plain.sort();
            after.sort();
            eprintln!(
                "put: median {:?}, after a snapshot: median {:?} (max {:?})",
                plain[plain.len() / 2],
                after[after.len() / 2],
                after.last().unwrap()
            );
            started = Instant::now();
        }
        _ => {
            panic!("unknown operation {op}: set-dump, set-load, list-dump, list-load, snapshot-put")
        }
    }
    eprintln!("{op} {n}: {:?}", started.elapsed());
}
