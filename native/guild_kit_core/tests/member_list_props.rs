//! Replica oracle for `MemberList`: random puts, touches, removes and watch changes;
//! every watched window keeps a replica built from `watch` and the returned ops, and
//! after every step each replica must equal the window's rows, which must equal the
//! flat list rebuilt from a plain model.

use std::collections::{BTreeMap, HashMap};

use guild_kit_core::member_list::{MemberList, Op, Row};
use guild_kit_core::term_key::{Element, Integer, KeyEncoder, KeyReader, Number, Token};
use proptest::prelude::*;

const GROUPS: u32 = 4;

fn int(v: i64) -> Element {
    let mut e = KeyEncoder::new();
    e.push_number(Number::Int(v), false);
    e.finish()
}

/// The sort key's and the id's keys back to back, as the NIF builds them.
fn sort_and_id(sort: i64, id: i64) -> Element {
    let mut e = KeyEncoder::new();
    e.push_number(Number::Int(sort), false);
    e.push_number(Number::Int(id), false);
    let element = e.finish();
    Element::from_parts(element.hint(), element.key())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelRow {
    Group(u32),
    Member(i64),
}

fn to_model(row: Row, groups: &[Element]) -> ModelRow {
    match row {
        Row::Group(element) => ModelRow::Group(
            groups
                .iter()
                .position(|g| g.as_bytes() == element)
                .expect("a known group") as u32,
        ),
        Row::Member(element) => {
            let mut reader = KeyReader::with_key_offset(element, 2).unwrap();
            reader.skip_term().unwrap();
            match reader.next().unwrap() {
                Some(Token::Integer(Integer::I64(id))) => ModelRow::Member(id),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// The flat list from the plain model: groups in order, members by (sort, id).
fn model_rows(members: &HashMap<i64, (u32, i64)>) -> Vec<ModelRow> {
    let mut by_group: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    for (&id, &(group, sort)) in members {
        by_group.entry(group).or_default().push((sort, id));
    }
    let mut rows = Vec::new();
    for (group, mut entries) in by_group {
        entries.sort_unstable();
        rows.push(ModelRow::Group(group));
        rows.extend(entries.into_iter().map(|(_, id)| ModelRow::Member(id)));
    }
    rows
}

#[derive(Debug, Clone)]
enum Step {
    Put { id: i64, group: u32, sort: i64 },
    Touch(i64),
    Remove(i64),
    Watch(u64, u64),
    Unwatch(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0i64..40, 0..GROUPS, 0i64..6).prop_map(|(id, group, sort)| Step::Put { id, group, sort }),
        2 => (0i64..40).prop_map(Step::Touch),
        3 => (0i64..40).prop_map(Step::Remove),
        1 => (0u64..50, 0u64..12).prop_map(|(first, len)| Step::Watch(first, first + len)),
        1 => any::<usize>().prop_map(Step::Unwatch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replicas_follow_the_list(steps in prop::collection::vec(step(), 1..200)) {
        let groups: Vec<Element> = (0..GROUPS as i64).map(|g| int(1000 + g)).collect();
        let mut list = MemberList::new(groups.clone()).unwrap();
        let mut model: HashMap<i64, (u32, i64)> = HashMap::new();
        // One replica per watch, like one client per watch.
        let mut replicas: Vec<((u64, u64), Vec<ModelRow>)> = Vec::new();
        let window = |rows: &[ModelRow], (first, last): (u64, u64)| -> Vec<ModelRow> {
            rows.iter().skip(first as usize).take((last - first + 1) as usize).copied().collect()
        };

        for step in steps {
            let before = model_rows(&model);
            let changes = match step.clone() {
                Step::Put { id, group, sort } => {
                    model.insert(id, (group, sort));
                    let changes = list.put(groups[group as usize].key(), &sort_and_id(sort, id)).unwrap();
                    changes.iter().map(|(r, ops)| (*r, ops.iter().map(|op| owned(op, &groups)).collect::<Vec<_>>())).collect::<Vec<_>>()
                }
                Step::Touch(id) => match list.touch(int(id).key()) {
                    Some(changes) => {
                        prop_assert!(model.contains_key(&id));
                        changes.iter().map(|(r, ops)| (*r, ops.iter().map(|op| owned(op, &groups)).collect())).collect()
                    }
                    None => { prop_assert!(!model.contains_key(&id)); Vec::new() }
                },
                Step::Remove(id) => {
                    let existed = model.remove(&id).is_some();
                    match list.remove(int(id).key()) {
                        Some(changes) => {
                            prop_assert!(existed);
                            changes.iter().map(|(r, ops)| (*r, ops.iter().map(|op| owned(op, &groups)).collect())).collect()
                        }
                        None => { prop_assert!(!existed); Vec::new() }
                    }
                }
                Step::Watch(first, last) => {
                    let rows: Vec<ModelRow> = list.watch(first, last).map(|r| to_model(r, &groups)).collect();
                    prop_assert_eq!(&rows, &window(&before, (first, last)));
                    replicas.push(((first, last), rows));
                    Vec::new()
                }
                Step::Unwatch(i) => {
                    if !replicas.is_empty() {
                        let (range, _) = replicas.remove(i % replicas.len());
                        prop_assert!(list.unwatch(range.0, range.1));
                    }
                    Vec::new()
                }
            };

            let after = model_rows(&model);
            prop_assert_eq!(list.size(), after.len() as u64);
            prop_assert_eq!(list.member_count(), model.len() as u64);
            let listed: Vec<ModelRow> = list.rows(0, u64::MAX).map(|r| to_model(r, &groups)).collect();
            prop_assert_eq!(&listed, &after);

            // Each change reaches every replica of its range; untouched ranges get none.
            let mut seen = Vec::new();
            for (range, ops) in &changes {
                prop_assert!(!seen.contains(range), "range listed twice");
                seen.push(*range);
                prop_assert!(!ops.is_empty());
                prop_assert!(replicas.iter().any(|(r, _)| r == range), "unwatched range {:?}", range);
            }
            let touching = matches!(step, Step::Touch(_));
            for (range, replica) in &mut replicas {
                if let Some((_, ops)) = changes.iter().find(|(r, _)| r == range) {
                    if !touching {
                        prop_assert_ne!(window(&before, *range), window(&after, *range), "ops for unchanged {:?}", range);
                    }
                    apply_owned(replica, ops, *range);
                } else {
                    prop_assert_eq!(window(&before, *range), window(&after, *range), "range {:?} changed without ops", range);
                }
                prop_assert_eq!(&*replica, &window(&after, *range), "replica of {:?}", range);
            }
            for id in model.keys() {
                let index = list.index_of(int(*id).key()).unwrap();
                prop_assert_eq!(after[index as usize], ModelRow::Member(*id));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OwnedOp {
    Insert(u64, ModelRow),
    Update(u64, ModelRow),
    Delete(u64),
}

fn owned(op: &Op, groups: &[Element]) -> OwnedOp {
    match *op {
        Op::Insert(i, row) => OwnedOp::Insert(i, to_model(row, groups)),
        Op::Update(i, row) => OwnedOp::Update(i, to_model(row, groups)),
        Op::Delete(i) => OwnedOp::Delete(i),
    }
}

fn apply_owned(replica: &mut Vec<ModelRow>, ops: &[OwnedOp], range: (u64, u64)) {
    let (first, last) = range;
    let window = (last - first + 1) as usize;
    for op in ops {
        match *op {
            OwnedOp::Insert(index, row) => {
                assert!(index >= first && index <= last, "{op:?} outside {range:?}");
                assert!(
                    (index - first) as usize <= replica.len(),
                    "{op:?} past the replica"
                );
                replica.insert((index - first) as usize, row);
                replica.truncate(window);
            }
            OwnedOp::Update(index, row) => {
                assert!(index >= first && index <= last, "{op:?} outside {range:?}");
                replica[(index - first) as usize] = row;
            }
            OwnedOp::Delete(index) => {
                assert!(index >= first && index <= last, "{op:?} outside {range:?}");
                replica.remove((index - first) as usize);
            }
        }
    }
}
