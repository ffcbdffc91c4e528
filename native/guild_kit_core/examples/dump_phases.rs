use guild_kit_core::dump::*;
use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::term_key::{ElementRef, Elements, KeyEncoder, Number};
use std::time::Instant;
fn main() {
    let mut elements = Elements::new();
    let n: i64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for i in 1..=n {
        let mut e = KeyEncoder::new();
        e.push_tuple(2);
        e.push_number(Number::Int(i), false);
        e.push_binary(&(i as u64).to_be_bytes());
        elements.push(&e.finish());
    }
    let tree = KeyTree::from_ascending(elements.iter()).unwrap();
    for _ in 0..std::env::var("R")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
    {
        let t = Instant::now();
        let d = dump_sorted_set(&tree).unwrap();
        let dump_t = t.elapsed();
        let t = Instant::now();
        let dump = Dump::parse(&d, Kind::SortedSet).unwrap();
        let parse_t = t.elapsed();
        let t = Instant::now();
        let els = dump.check_elements(|_, _| Ok(())).unwrap();
        let frame_t = t.elapsed();
        let t = Instant::now();
        {
            let mut c = TermChecker::default();
            dump.check_elements(|p, e| c.check(p, e)).unwrap();
        }
        let check_t = t.elapsed();
        let t = Instant::now();
        let tr = KeyTree::from_ascending(els.map(ElementRef::from_bytes)).unwrap();
        let build_t = t.elapsed();
        let t = Instant::now();
        let mut h = crc32fast::Hasher::new();
        h.update(&d);
        let _ = h.finalize();
        let crc_t = t.elapsed();
        let t = Instant::now();
        let l = load_sorted_set(&d).unwrap();
        let load_t = t.elapsed();
        assert_eq!(l.len(), tr.len());
        println!("load {load_t:?} dump {dump_t:?} parse(crc) {parse_t:?} crc {crc_t:?} frame {frame_t:?} check {check_t:?} build {build_t:?} len {}", tr.len());
    }
}
