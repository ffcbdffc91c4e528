use guild_kit_core::member_list::MemberList;
use guild_kit_core::term_key::{Element, KeyEncoder, Number};
use std::time::Instant;

fn int(v: i64) -> Element { let mut e = KeyEncoder::new(); e.push_number(Number::Int(v), false); e.finish() }
fn bin(s: &str) -> Element { let mut e = KeyEncoder::new(); e.push_binary(s.as_bytes()); e.finish() }

fn main() {
    let groups: Vec<Element> = (0..4).map(int).collect();
    let mut list = MemberList::new(groups).unwrap();
    let n = 200_000i64;
    for i in 1..=n {
        list.put(&int(100_000_000_000_000_000 + i * 7919), &int((i * 31) % 4), &bin(&format!("name{}", (i * 7) % 9973))).unwrap();
    }
    for w in 0..3000u64 { list.watch((w * 50, w * 50 + 99)); }
    let id = int(100_000_000_000_000_000 + 5 * 7919);
    for round in 0..5 {
        let t = Instant::now();
        let change = list.put(&id, &int(round % 2 * 3), &bin(if round % 2 == 0 { "aaa" } else { "zzz" })).unwrap();
        let t_put = t.elapsed();
        let t = Instant::now();
        let windows = windows_phase(&list, &change);
        let t_win = t.elapsed();
        let t = Instant::now();
        let mut idx: Vec<u64> = windows.iter().flat_map(|w| w.rows()).collect();
        idx.sort_unstable(); idx.dedup();
        let rows = list.rows_at(&idx);
        let t_rows = t.elapsed();
        println!("put {:?} windows {} in {:?} rows {} in {:?}", t_put, windows.len(), t_win, rows.len(), t_rows);
    }
}

#[inline(never)]
fn windows_phase(list: &MemberList, change: &guild_kit_core::member_list::Change) -> Vec<guild_kit_core::member_list::WindowOps> {
    list.changed_windows(change, None).collect()
}
