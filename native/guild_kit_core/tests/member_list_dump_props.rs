//! Dumps of member lists: a loaded list has the same rows, indexes, groups and watched
//! windows, and behaves the same under later changes; no mutation of a dump (with or
//! without a checksum made to match) panics, or builds a list that misbehaves later.

mod dump_support;

use dump_support::reseal;
use guild_kit_core::member_list::{Change, MemberList, Row};
use guild_kit_core::term_key::{Element, KeyEncoder, Number};
use proptest::prelude::*;

const GROUPS: i64 = 4;

fn number(value: i64, float: bool) -> Element {
    Element::number(if float {
        Number::Float(value as f64)
    } else {
        Number::Int(value)
    })
}

/// A sort key `{value, "name"}`, sometimes with a float.
fn sort_key(value: i64, float: bool) -> Element {
    let mut e = KeyEncoder::new();
    e.push_tuple(2);
    e.push_number(
        if float {
            Number::Float(value as f64)
        } else {
            Number::Int(value)
        },
        false,
    );
    e.push_binary(b"name");
    e.finish()
}

#[derive(Debug, Clone)]
enum Step {
    Put {
        id: (i64, bool),
        group: i64,
        sort: (i64, bool),
    },
    Remove(i64),
    Watch(u64, u64),
    Unwatch(u64, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => ((0i64..40, any::<bool>()), 0..GROUPS, (0i64..5, any::<bool>()))
            .prop_map(|(id, group, sort)| Step::Put { id, group, sort }),
        2 => (0i64..40).prop_map(Step::Remove),
        2 => (0u64..45, 0u64..12).prop_map(|(first, len)| Step::Watch(first, first + len)),
        1 => (0u64..45, 0u64..12).prop_map(|(first, len)| Step::Unwatch(first, first + len)),
    ]
}

fn new_list() -> MemberList {
    MemberList::new((0..GROUPS).map(|g| number(1000 + g, false)).collect()).unwrap()
}

fn apply(list: &mut MemberList, step: &Step) -> Option<Change> {
    match *step {
        Step::Put { id, group, sort } => list
            .put(
                &number(id.0, id.1),
                &number(1000 + group, false),
                &sort_key(sort.0, sort.1),
            )
            .ok(),
        Step::Remove(id) => Some(list.remove(&number(id, false))),
        Step::Watch(first, last) => {
            list.watch((first, last));
            None
        }
        Step::Unwatch(first, last) => {
            list.unwatch((first, last));
            None
        }
    }
}

fn rows(list: &MemberList) -> Vec<Row<'_>> {
    list.rows(0, u64::MAX).collect()
}

fn changed(list: &MemberList, change: &Change) -> Vec<((u64, u64), Vec<String>)> {
    list.changed_windows(change, None)
        .map(|w| (w.range(), w.ops().map(|op| format!("{op:?}")).collect()))
        .collect()
}

/// Everything a caller can see of a list, and that a replica depends on.
fn assert_same(loaded: &MemberList, list: &MemberList) {
    assert_eq!(loaded.size(), list.size());
    assert_eq!(loaded.member_count(), list.member_count());
    assert_eq!(rows(loaded), rows(list));
    assert_eq!(
        loaded.groups().collect::<Vec<_>>(),
        list.groups().collect::<Vec<_>>()
    );
    assert_eq!(loaded.watched_len(), list.watched_len());
    for id in 0..40 {
        assert_eq!(
            loaded.index_of(&number(id, false)),
            list.index_of(&number(id, false))
        );
    }
    // The same dump: the same trees, counts and windows with their watch counts.
    assert_eq!(loaded.to_dump().unwrap(), list.to_dump().unwrap());
}

fn mutate(bytes: &mut Vec<u8>, (kind, at, byte): (u8, usize, u8)) {
    let n = bytes.len();
    // An earlier truncation can leave nothing to flip or remove: then only an insert applies.
    let kind = if n == 0 { 2 } else { kind };
    match kind % 4 {
        0 => bytes[at % n] ^= byte | 1,
        1 => bytes.truncate(at % n),
        2 => bytes.insert(at % (n + 1), byte),
        _ => {
            bytes.remove(at % n);
        }
    }
}

/// Whatever a load gave must work like any list: every row reads, changes apply, and
/// its own dump loads again.
fn exercise(mut list: MemberList, steps: &[Step]) {
    for row in list.rows(0, u64::MAX) {
        let _ = row.term().and_then(|mut reader| reader.skip_term());
    }
    for step in steps {
        if let Some(change) = apply(&mut list, step) {
            let _ = changed(&list, &change);
        }
    }
    let again = MemberList::from_dump(&list.to_dump().unwrap()).unwrap();
    assert_eq!(rows(&again), rows(&list));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_loaded_list_is_the_same_list(
        before in prop::collection::vec(step(), 0..120),
        after in prop::collection::vec(step(), 0..60),
    ) {
        let mut list = new_list();
        for step in &before {
            apply(&mut list, step);
        }
        let mut loaded = MemberList::from_dump(&list.to_dump().unwrap()).unwrap();
        assert_same(&loaded, &list);
        // And it changes as the original does, with the same ops for every window.
        for step in &after {
            let a = apply(&mut list, step);
            let b = apply(&mut loaded, step);
            if let (Some(a), Some(b)) = (a, b) {
                prop_assert_eq!(changed(&loaded, &b), changed(&list, &a));
            }
        }
        assert_same(&loaded, &list);
    }

    #[test]
    fn mutated_dumps_fail_cleanly_or_load_a_working_list(
        before in prop::collection::vec(step(), 0..80),
        mutations in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4),
        resealed in any::<bool>(),
        after in prop::collection::vec(step(), 0..30),
    ) {
        let mut list = new_list();
        for step in &before {
            apply(&mut list, step);
        }
        let original = list.to_dump().unwrap();
        let mut dump = original.clone();
        for &m in &mutations {
            mutate(&mut dump, m);
        }
        if resealed {
            reseal(&mut dump);
        }
        match MemberList::from_dump(&dump) {
            Ok(loaded) => {
                if !resealed {
                    prop_assert_eq!(&dump, &original);
                }
                exercise(loaded, &after);
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let mut list = new_list();
    for id in 0..5 {
        list.put(
            &number(id, id % 2 == 0),
            &number(1000 + id % 2, false),
            &sort_key(id, true),
        )
        .unwrap();
    }
    list.watch((0, 3));
    list.watch((0, 3));
    let dump = list.to_dump().unwrap();
    for len in 0..dump.len() {
        assert!(MemberList::from_dump(&dump[..len]).is_err(), "{len}");
    }
    assert_same(&MemberList::from_dump(&dump).unwrap(), &list);
}

#[test]
fn a_sorted_set_dump_is_not_a_member_list() {
    let set = guild_kit_core::key_tree::KeyTree::new();
    let dump = guild_kit_core::dump::dump_sorted_set(&set).unwrap();
    let error = MemberList::from_dump(&dump).unwrap_err();
    assert_eq!(
        error.to_string(),
        "a dump of a GuildKit.SortedSet, not of a GuildKit.MemberList"
    );
}

#[test]
fn large_lists_load_on_two_threads_and_still_check_everything() {
    // More elements than a load handles on one thread.
    let mut list = new_list();
    for id in 0..40_000 {
        list.put(
            &number(id, false),
            &number(1000 + id % GROUPS, false),
            &sort_key(id % 97, false),
        )
        .unwrap();
    }
    list.watch((0, 99));
    let dump = list.to_dump().unwrap();
    // Its two trees written on two threads, it is the dump one pass writes.
    let plan = list.plan_dump().unwrap();
    assert_eq!(plan.to_vec(list.dump_elements()).unwrap(), dump);
    assert_same(&MemberList::from_dump(&dump).unwrap(), &list);

    // The id index's last entry names a row that is not there; the rows' last member
    // is out of place. Both are found, whatever the checksum says.
    for at in [dump.len() - 1, dump.len() / 2] {
        let mut forged = dump.clone();
        forged[at] ^= 0x02;
        reseal(&mut forged);
        assert!(
            MemberList::from_dump(&forged).is_err(),
            "a flip at {at} loaded"
        );
    }
}
