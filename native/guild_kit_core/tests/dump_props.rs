//! Dumps of sorted sets: a round trip gives the same tree, and no mutation of a dump
//! (flipped bytes, truncation, insertion, removal, with or without a checksum made to
//! match) panics or builds an invalid tree.

mod dump_support;

use dump_support::reseal;
use guild_kit_core::dump::{
    check_term_element, dump_sorted_set, load_sorted_set, LoadError, HEADER_LEN, MAGIC, VERSION,
};
use guild_kit_core::key_tree::{KeyTree, INLINE_MAX};
use guild_kit_core::term_key::{Element, ElementRef, Elements, KeyEncoder, Number};
use proptest::prelude::*;

/// `{n, bytes}`, `n` sometimes a float: members as a guild keeps them.
fn member(n: i64, as_float: bool, bytes: &[u8]) -> Element {
    let mut encoder = KeyEncoder::new();
    encoder.push_tuple(2);
    if as_float {
        encoder.push_number(Number::Float(n as f64), false);
    } else {
        encoder.push_number(Number::Int(n), false);
    }
    encoder.push_binary(bytes);
    encoder.finish()
}

fn tree_of(members: &[(i64, bool, Vec<u8>)]) -> KeyTree {
    let mut elements = Elements::new();
    for (n, as_float, bytes) in members {
        elements.push(&member(*n, *as_float, bytes));
    }
    KeyTree::from_unsorted(&elements).unwrap()
}

fn members() -> impl Strategy<Value = Vec<(i64, bool, Vec<u8>)>> {
    let bytes = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..12),
        1 => prop::collection::vec(any::<u8>(), INLINE_MAX..INLINE_MAX + 40),
    ];
    prop::collection::vec((-1000i64..1000, any::<bool>(), bytes), 0..300)
}

fn contents(tree: &KeyTree) -> Vec<Vec<u8>> {
    tree.iter_from(0).map(|e| e.as_bytes().to_vec()).collect()
}

/// What a loaded tree must be whatever the input: structurally sound, every element a
/// well-formed term key, keys strictly ascending.
fn assert_valid(tree: &KeyTree) {
    tree.check_invariants();
    let mut previous: Option<ElementRef> = None;
    for (i, element) in tree.iter_from(0).enumerate() {
        check_term_element(i as u64, element.as_bytes()).unwrap();
        if let Some(p) = previous {
            assert!(p.key() < element.key());
        }
        previous = Some(element);
    }
}

/// The error of loading `dump` after `forge` edits a copy of it and the checksum is made
/// to match.
fn load_forged(dump: &[u8], forge: impl FnOnce(&mut [u8])) -> LoadError {
    let mut forged = dump.to_vec();
    forge(&mut forged);
    reseal(&mut forged);
    load_sorted_set(&forged).unwrap_err()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Truncate { to: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len();
    // An earlier truncation can leave nothing to flip, truncate or remove.
    if n == 0 && !matches!(mutation, Mutation::Insert { .. }) {
        return;
    }
    match mutation {
        Mutation::Flip { at, bits } => bytes[at % n] ^= bits,
        Mutation::Truncate { to } => bytes.truncate(to % n),
        Mutation::Insert { at, bytes: new } => {
            let at = at % (n + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_gives_the_same_tree(members in members()) {
        let tree = tree_of(&members);
        let dump = dump_sorted_set(&tree).unwrap();
        let loaded = load_sorted_set(&dump).unwrap();
        assert_valid(&loaded);
        prop_assert_eq!(contents(&loaded), contents(&tree));
        // A dump of the loaded tree is the same dump: the format has one form.
        prop_assert_eq!(dump_sorted_set(&loaded).unwrap(), dump);
    }

    #[test]
    fn mutated_dumps_fail_cleanly(members in members(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let tree = tree_of(&members);
        let mut dump = dump_sorted_set(&tree).unwrap();
        let original = dump.clone();
        for m in &mutations {
            apply(&mut dump, m);
        }
        match load_sorted_set(&dump) {
            Ok(loaded) => {
                // Only a mutation that undid itself gets past the checksum.
                assert_valid(&loaded);
                prop_assert_eq!(&dump, &original);
            }
            Err(_) => prop_assert_ne!(&dump, &original),
        }
    }

    #[test]
    fn forged_dumps_never_build_an_invalid_tree(members in members(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let tree = tree_of(&members);
        let mut dump = dump_sorted_set(&tree).unwrap();
        for m in &mutations {
            apply(&mut dump, m);
        }
        reseal(&mut dump);
        if let Ok(loaded) = load_sorted_set(&dump) {
            assert_valid(&loaded);
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let tree = tree_of(&[(1, false, b"a".to_vec()), (2, true, b"bb".to_vec())]);
    let dump = dump_sorted_set(&tree).unwrap();
    for len in 0..dump.len() {
        let error = load_sorted_set(&dump[..len]).unwrap_err();
        assert!(
            matches!(error, LoadError::Truncated { .. }),
            "{len}: {error:?}"
        );
    }
    assert_eq!(contents(&load_sorted_set(&dump).unwrap()), contents(&tree));
}

#[test]
fn header_errors_say_what_is_wrong() {
    let tree = tree_of(&[(1, false, b"a".to_vec())]);
    let dump = dump_sorted_set(&tree).unwrap();

    assert_eq!(load_sorted_set(b"hello").unwrap_err(), LoadError::Foreign);
    let mut foreign = dump.clone();
    foreign[0] = b'G';
    assert_eq!(load_sorted_set(&foreign).unwrap_err(), LoadError::Foreign);

    let mut future = dump.clone();
    future[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert_eq!(
        load_sorted_set(&future).unwrap_err(),
        LoadError::FutureVersion {
            version: VERSION + 1
        }
    );
    assert!(load_sorted_set(&future)
        .unwrap_err()
        .to_string()
        .contains("newer"));

    let error = load_forged(&dump, |d| d[10] = 2);
    assert_eq!(
        error.to_string(),
        "a dump of a GuildKit.MemberList, not of a GuildKit.SortedSet"
    );

    let mut corrupted = dump.clone();
    *corrupted.last_mut().unwrap() ^= 1;
    assert_eq!(
        load_sorted_set(&corrupted).unwrap_err(),
        LoadError::Checksum
    );

    let mut longer = dump.clone();
    longer.push(0);
    assert!(matches!(
        load_sorted_set(&longer).unwrap_err(),
        LoadError::TrailingBytes { .. }
    ));

    assert_eq!(&dump[..8], &MAGIC);
}

#[test]
fn elements_out_of_order_or_repeated_are_refused() {
    let a = member(1, false, b"a");
    let b = member(2, false, b"b");
    // A dump of [b, a] and of [a, a], forged from a dump of [a, b] by swapping or
    // repeating its elements (equal lengths) and resealing.
    let dump = dump_sorted_set(&tree_of(&[
        (1, false, b"a".to_vec()),
        (2, false, b"b".to_vec()),
    ]))
    .unwrap();
    let len = a.as_bytes().len();
    assert_eq!(len, b.as_bytes().len());
    let first = dump.len() - 2 * (len + 1);
    let swapped = load_forged(&dump, |d| {
        d[first + 1..first + 1 + len].copy_from_slice(b.as_bytes());
        d[first + len + 2..].copy_from_slice(a.as_bytes());
    });
    assert_eq!(swapped, LoadError::NotAscending { position: 1 });
    let repeated = load_forged(&dump, |d| {
        d[first + len + 2..].copy_from_slice(a.as_bytes());
    });
    assert_eq!(repeated, LoadError::NotAscending { position: 1 });
    // An element that is not a term key.
    assert!(matches!(
        load_forged(&dump, |d| d[first + 2] = 0xEE),
        LoadError::BadElement { position: 0, .. }
    ));
}

#[test]
fn empty_and_large_sets_round_trip() {
    let empty = KeyTree::new();
    let dump = dump_sorted_set(&empty).unwrap();
    assert_eq!(dump.len(), HEADER_LEN);
    assert!(load_sorted_set(&dump).unwrap().is_empty());

    let members: Vec<_> = (0..100_000)
        .map(|i| (i, false, (i as u32).to_be_bytes().to_vec()))
        .collect();
    let tree = tree_of(&members);
    let dump = dump_sorted_set(&tree).unwrap();
    let loaded = load_sorted_set(&dump).unwrap();
    assert_valid(&loaded);
    assert_eq!(contents(&loaded), contents(&tree));
}

#[test]
fn large_dumps_check_every_element_while_building() {
    // Above the size where elements are checked on a second thread.
    let members: Vec<_> = (0..100_000).map(|i| (i, false, vec![b'm'])).collect();
    let dump = dump_sorted_set(&tree_of(&members)).unwrap();

    // The last element's binary no longer ends with its terminator.
    assert_eq!(
        load_forged(&dump, |d| *d.last_mut().unwrap() = 7),
        LoadError::BadElement {
            position: 99_999,
            why: "is not a well-formed term key"
        }
    );

    // The last two elements swapped (they have the same length).
    let len = member(99_999, false, b"m").as_bytes().len();
    assert_eq!(len, member(99_998, false, b"m").as_bytes().len());
    let swapped = load_forged(&dump, |d| {
        let n = d.len();
        let (last, before) = (n - len, n - 2 * len - 1);
        let a = d[before..before + len].to_vec();
        let b = d[last..].to_vec();
        d[before..before + len].copy_from_slice(&b);
        d[last..].copy_from_slice(&a);
    });
    assert_eq!(swapped, LoadError::NotAscending { position: 99_999 });
}
