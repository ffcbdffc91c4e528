//! Model-based property tests: `KeyTree` against `std::collections::BTreeSet`.
//!
//! Elements are real encoded keys (binaries through `KeyEncoder`), so the model's order
//! on the raw bytes must also equal the tree's order on the keys.

use std::collections::BTreeSet;

use guild_kit_core::key_tree::KeyTree;
use guild_kit_core::term_key::{Element, KeyEncoder};
use proptest::prelude::*;

fn encode(raw: &[u8]) -> Element {
    let mut encoder = KeyEncoder::new();
    encoder.push_binary(raw);
    encoder.finish()
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>),
    Remove(Vec<u8>),
    Snapshot,
}

fn raw_value() -> impl Strategy<Value = Vec<u8>> {
    // Short values over a tiny alphabet, zero included, so that collisions, shared
    // prefixes and escaped bytes are common.
    prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 255]), 0..6)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => raw_value().prop_map(Op::Insert),
        4 => raw_value().prop_map(Op::Remove),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn behaves_like_a_btreeset(ops in prop::collection::vec(op(), 1..1500)) {
        let mut tree = KeyTree::new();
        let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut snapshots: Vec<(KeyTree, Vec<Vec<u8>>)> = Vec::new();

        for op in ops {
            match op {
                Op::Insert(raw) => {
                    let element = encode(&raw);
                    let expected = (!model.contains(&raw)).then(|| model.range(..raw.clone()).count());
                    prop_assert_eq!(tree.insert(element.as_bytes()), expected);
                    model.insert(raw);
                }
                Op::Remove(raw) => {
                    let element = encode(&raw);
                    let expected = model.contains(&raw).then(|| model.range(..raw.clone()).count());
                    prop_assert_eq!(tree.remove(element.key()), expected);
                    model.remove(&raw);
                }
                Op::Snapshot => snapshots.push((tree.clone(), model.iter().cloned().collect())),
            }
            prop_assert_eq!(tree.len(), model.len());
        }

        tree.check_invariants();
        let expected: Vec<Element> = model.iter().map(|raw| encode(raw)).collect();
        let listed: Vec<&[u8]> = tree.iter_from(0).collect();
        prop_assert_eq!(listed, expected.iter().map(Element::as_bytes).collect::<Vec<_>>());
        for (i, element) in expected.iter().enumerate() {
            prop_assert_eq!(tree.position(element.key()), Ok(i));
            prop_assert_eq!(tree.get(i), Some(element.as_bytes()));
        }
        for (snapshot, contents) in snapshots {
            snapshot.check_invariants();
            let listed: Vec<Vec<u8>> = snapshot.iter_from(0).map(<[u8]>::to_vec).collect();
            let expected: Vec<Vec<u8>> = contents.iter().map(|raw| encode(raw).as_bytes().to_vec()).collect();
            prop_assert_eq!(listed, expected);
        }
    }

    #[test]
    fn position_of_absent_keys_counts_smaller_ones(
        present in prop::collection::btree_set(raw_value(), 0..300),
        probe in raw_value(),
    ) {
        let elements: Vec<Element> = present.iter().map(|raw| encode(raw)).collect();
        let tree = KeyTree::from_sorted(elements.iter().map(Element::as_bytes));
        let below = present.range(..probe.clone()).count();
        let expected = if present.contains(&probe) { Ok(below) } else { Err(below) };
        prop_assert_eq!(tree.position(encode(&probe).key()), expected);
    }

    #[test]
    fn iter_from_matches_skip(
        present in prop::collection::btree_set(raw_value(), 0..400),
        start in 0usize..450,
    ) {
        let elements: Vec<Element> = present.iter().map(|raw| encode(raw)).collect();
        let tree = KeyTree::from_sorted(elements.iter().map(Element::as_bytes));
        let got: Vec<&[u8]> = tree.iter_from(start).collect();
        let want: Vec<&[u8]> = elements.iter().skip(start).map(Element::as_bytes).collect();
        prop_assert_eq!(tree.iter_from(start).len(), want.len());
        prop_assert_eq!(got, want);
    }
}
