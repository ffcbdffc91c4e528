//! Model-based property tests: `KeyTree` against `std::collections::BTreeMap`.
//!
//! Elements are real encoded terms (binaries, and numbers that are equal but not
//! identical, through `KeyEncoder`), so the model's order on the raw values must also be
//! the tree's order on the keys, and hints must never decide a comparison.

use std::collections::BTreeMap;

use guild_kit_core::key_tree::{BuildError, KeyTree, INLINE_MAX};
use guild_kit_core::term_key::{Element, ElementRef, Elements, KeyEncoder, Number};
use proptest::prelude::*;

/// A value of the model: a binary (long ones are stored out of line), or a number
/// written as an integer or as the equal float.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number { n: i32, as_float: bool },
    Binary(Vec<u8>),
}

/// What the key order sees: numbers by value whatever their type, before binaries, and
/// binaries by their bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Order {
    Number(i32),
    Binary(Vec<u8>),
}

impl Value {
    fn order(&self) -> Order {
        match self {
            Value::Number { n, .. } => Order::Number(*n),
            Value::Binary(raw) => Order::Binary(raw.clone()),
        }
    }

    fn encode(&self) -> Element {
        let mut encoder = KeyEncoder::new();
        match self {
            Value::Number { n, as_float: false } => {
                encoder.push_number(Number::Int((*n).into()), false)
            }
            Value::Number { n, as_float: true } => {
                encoder.push_number(Number::Float(f64::from(*n)), false)
            }
            Value::Binary(raw) => encoder.push_binary(raw),
        }
        encoder.finish()
    }
}

fn value() -> impl Strategy<Value = Value> {
    // Short binaries over a tiny alphabet, zero included, so that collisions, shared
    // prefixes and escaped bytes are common; a few long enough to go out of line.
    let short = prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 255]), 0..6);
    let long = (
        prop::sample::select(vec![3u8, 4]),
        (INLINE_MAX - 8)..(INLINE_MAX + 40),
    )
        .prop_map(|(byte, len)| vec![byte; len]);
    prop_oneof![
        4 => (-20i32..20, any::<bool>()).prop_map(|(n, as_float)| Value::Number { n, as_float }),
        4 => short.prop_map(Value::Binary),
        1 => long.prop_map(Value::Binary),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Value),
    Replace(Value),
    Remove(Value),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => value().prop_map(Op::Insert),
        1 => value().prop_map(Op::Replace),
        4 => value().prop_map(Op::Remove),
        1 => Just(Op::Snapshot),
    ]
}

type Model = BTreeMap<Order, Value>;

fn bytes_of(model: &Model) -> Vec<Vec<u8>> {
    model
        .values()
        .map(|v| v.encode().as_bytes().to_vec())
        .collect()
}

/// The values encoded in one batch, and the model of the set they make: the first of
/// equal values is kept.
fn batch_and_model(values: &[Value]) -> (Elements, Model) {
    let mut batch = Elements::new();
    let mut model = Model::new();
    for value in values {
        batch.push(&value.encode());
        model.entry(value.order()).or_insert(value.clone());
    }
    (batch, model)
}

fn listed(tree: &KeyTree) -> Vec<Vec<u8>> {
    tree.iter_from(0).map(|e| e.as_bytes().to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn behaves_like_a_btreemap(ops in prop::collection::vec(op(), 1..1500)) {
        let mut tree = KeyTree::new();
        let mut model = Model::new();
        let mut snapshots: Vec<(KeyTree, Vec<Vec<u8>>)> = Vec::new();

        for op in ops {
            match op {
                Op::Insert(value) => {
                    let order = value.order();
                    let expected = (!model.contains_key(&order)).then(|| model.range(..order.clone()).count());
                    prop_assert_eq!(tree.insert(&value.encode()), Ok(expected));
                    model.entry(order).or_insert(value);
                }
                Op::Replace(value) => {
                    let order = value.order();
                    let expected = model.contains_key(&order).then(|| model.range(..order.clone()).count());
                    prop_assert_eq!(tree.replace(&value.encode()), Ok(expected));
                    if let Some(stored) = model.get_mut(&order) {
                        *stored = value;
                    }
                }
                Op::Remove(value) => {
                    let order = value.order();
                    let expected = model.contains_key(&order).then(|| model.range(..order.clone()).count());
                    prop_assert_eq!(tree.remove(&value.encode()), expected);
                    model.remove(&order);
                }
                Op::Snapshot => snapshots.push((tree.clone(), bytes_of(&model))),
            }
            prop_assert_eq!(tree.len(), model.len());
        }

        tree.check_invariants();
        prop_assert_eq!(listed(&tree), bytes_of(&model));
        for (i, value) in model.values().enumerate() {
            let element = value.encode();
            prop_assert_eq!(tree.position(&element), Ok(i));
            prop_assert_eq!(tree.get(i), Some(ElementRef::from(&element)));
        }
        for (snapshot, contents) in snapshots {
            snapshot.check_invariants();
            prop_assert_eq!(listed(&snapshot), contents);
        }
    }

    #[test]
    fn from_unsorted_sorts_and_keeps_the_first_of_equals(values in prop::collection::vec(value(), 0..700)) {
        let (batch, model) = batch_and_model(&values);
        let tree = KeyTree::from_unsorted(&batch).unwrap();
        tree.check_invariants();
        prop_assert_eq!(listed(&tree), bytes_of(&model));
    }

    #[test]
    fn from_ascending_accepts_exactly_the_strictly_ascending(values in prop::collection::vec(value(), 0..400)) {
        let elements: Vec<Element> = values.iter().map(|v| v.encode()).collect();
        let first_bad = (1..values.len()).find(|&i| values[i - 1].order() >= values[i].order());
        match KeyTree::from_ascending(elements.iter().map(ElementRef::from)) {
            Ok(tree) => {
                prop_assert_eq!(first_bad, None);
                tree.check_invariants();
                let want: Vec<Vec<u8>> = elements.iter().map(|e| e.as_bytes().to_vec()).collect();
                prop_assert_eq!(listed(&tree), want);
            }
            Err(error) => {
                let position = first_bad.expect("refused an ascending batch");
                prop_assert_eq!(error, BuildError::NotAscending { position });
            }
        }
    }

    #[test]
    fn position_of_absent_keys_counts_smaller_ones(
        values in prop::collection::vec(value(), 0..300),
        probe in value(),
    ) {
        let (batch, model) = batch_and_model(&values);
        let tree = KeyTree::from_unsorted(&batch).unwrap();
        let below = model.range(..probe.order()).count();
        let expected = if model.contains_key(&probe.order()) { Ok(below) } else { Err(below) };
        prop_assert_eq!(tree.position(&probe.encode()), expected);
    }

    #[test]
    fn iter_from_and_iter_before_match_the_model(
        values in prop::collection::vec(value(), 0..600),
        at in 0usize..650,
    ) {
        let (batch, model) = batch_and_model(&values);
        let tree = KeyTree::from_unsorted(&batch).unwrap();
        let all = bytes_of(&model);
        let forward: Vec<Vec<u8>> = tree.iter_from(at).map(|e| e.as_bytes().to_vec()).collect();
        prop_assert_eq!(tree.iter_from(at).len(), forward.len());
        prop_assert_eq!(&forward[..], &all[at.min(all.len())..]);
        let backward: Vec<Vec<u8>> = tree.iter_before(at).map(|e| e.as_bytes().to_vec()).collect();
        let want: Vec<Vec<u8>> = all[..at.min(all.len())].iter().rev().cloned().collect();
        prop_assert_eq!(tree.iter_before(at).len(), want.len());
        prop_assert_eq!(backward, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..200),
    ) {
        let mut tree = KeyTree::new();
        let mut batch = Elements::new();
        for bytes in &junk {
            let element = ElementRef::from_bytes(bytes);
            let _ = tree.insert(element);
            let _ = tree.position(element.key());
            let _ = tree.replace(element);
            batch.push(element);
        }
        for bytes in junk.iter().step_by(2) {
            let _ = tree.remove(ElementRef::from_bytes(bytes).key());
        }
        tree.check_invariants();
        let _ = KeyTree::from_ascending(batch.iter());
        KeyTree::from_unsorted(&batch).unwrap().check_invariants();
    }
}
