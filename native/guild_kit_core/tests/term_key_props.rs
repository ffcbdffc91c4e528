//! Property tests for term keys against a reference model of Erlang term order.
//!
//! `Value` models the supported Erlang terms; `erlang_cmp` implements the documented
//! term order (numbers compared exactly, map keys with `=:=` semantics in which
//! integers sort before floats). The key of every value must order as the model says,
//! equal keys must mean `==`, and reading a key back must give the exact value.

use std::cmp::Ordering;

use guild_kit_core::term_key::{
    element_key, Element, Integer, KeyEncoder, KeyReader, Number, Token,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Value {
    Int(i128),
    Float(f64),
    Atom(String),
    Binary(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Int(_) | Value::Float(_) => 0,
        Value::Atom(_) => 1,
        Value::Tuple(_) => 2,
        Value::Map(_) => 3,
        Value::List(_) => 4,
        Value::Binary(_) => 5,
    }
}

/// Exact comparison of an integer with a finite float.
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    let whole = f.trunc();
    if whole >= 2f64.powi(127) {
        return Ordering::Less;
    }
    if whole < -(2f64.powi(127)) {
        return Ordering::Greater;
    }
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0f64.partial_cmp(&(f - whole)).unwrap(),
        other => other,
    }
}

fn erlang_cmp(a: &Value, b: &Value, exact: bool) -> Ordering {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => x.cmp(y),
        (Float(x), Float(y)) => x.partial_cmp(y).unwrap(),
        (Int(_), Float(_)) if exact => Ordering::Less,
        (Float(_), Int(_)) if exact => Ordering::Greater,
        (Int(x), Float(y)) => cmp_int_float(*x, *y),
        (Float(x), Int(y)) => cmp_int_float(*y, *x).reverse(),
        (Atom(x), Atom(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Binary(x), Binary(y)) => x.cmp(y),
        (Tuple(x), Tuple(y)) => x.len().cmp(&y.len()).then_with(|| cmp_seq(x, y, exact)),
        (List(x), List(y)) => cmp_seq(x, y, exact).then_with(|| x.len().cmp(&y.len())),
        (Map(x), Map(y)) => x.len().cmp(&y.len()).then_with(|| {
            let (x, y) = (sorted_entries(x), sorted_entries(y));
            let keys = x
                .iter()
                .zip(&y)
                .map(|((kx, _), (ky, _))| erlang_cmp(kx, ky, true))
                .find(|o| o.is_ne());
            keys.unwrap_or_else(|| {
                x.iter()
                    .zip(&y)
                    .map(|((_, vx), (_, vy))| erlang_cmp(vx, vy, exact))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
        }),
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

fn cmp_seq(x: &[Value], y: &[Value], exact: bool) -> Ordering {
    x.iter()
        .zip(y)
        .map(|(a, b)| erlang_cmp(a, b, exact))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn sorted_entries(entries: &[(Value, Value)]) -> Vec<(Value, Value)> {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|(a, _), (b, _)| erlang_cmp(a, b, true));
    sorted
}

/// Strict structural equality (`=:=` plus the sign of zero), maps as sets of entries.
fn identical(a: &Value, b: &Value) -> bool {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => x == y,
        (Float(x), Float(y)) => x.to_bits() == y.to_bits(),
        (Atom(x), Atom(y)) => x == y,
        (Binary(x), Binary(y)) => x == y,
        (Tuple(x), Tuple(y)) | (List(x), List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| identical(a, b))
        }
        (Map(x), Map(y)) => {
            let (x, y) = (sorted_entries(x), sorted_entries(y));
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|((kx, vx), (ky, vy))| identical(kx, ky) && identical(vx, vy))
        }
        _ => false,
    }
}

fn encode_into(value: &Value, exact: bool, out: &mut KeyEncoder) {
    match value {
        Value::Int(i) => {
            if let Ok(small) = i64::try_from(*i) {
                out.push_number(Number::Int(small), exact);
            } else if let Ok(unsigned) = u64::try_from(*i) {
                out.push_number(Number::UInt(unsigned), exact);
            } else {
                let magnitude = i.unsigned_abs().to_be_bytes();
                out.push_number(
                    Number::Big {
                        negative: *i < 0,
                        magnitude: &magnitude,
                    },
                    exact,
                );
            }
        }
        Value::Float(f) => out.push_number(Number::Float(*f), exact),
        Value::Atom(text) => out.push_atom(text.as_bytes()),
        Value::Binary(bytes) => out.push_binary(bytes),
        Value::Tuple(items) => {
            out.push_tuple(items.len());
            items.iter().for_each(|item| encode_into(item, exact, out));
        }
        Value::List(items) => {
            out.push_list_start();
            for item in items {
                out.push_list_cons();
                encode_into(item, exact, out);
            }
            out.push_list_end();
        }
        Value::Map(entries) => {
            let mut open = out.begin_map(entries.len());
            for (key, _) in entries {
                encode_into(key, true, out);
                out.end_map_key(&mut open);
            }
            for i in out.end_map(open) {
                encode_into(&entries[i].1, exact, out);
            }
        }
    }
}

fn encode(value: &Value) -> Element {
    let mut encoder = KeyEncoder::new();
    encode_into(value, false, &mut encoder);
    encoder.finish()
}

fn decode(element: &[u8]) -> Value {
    fn read(tokens: &[Token], pos: &mut usize) -> Value {
        let token = tokens[*pos].clone();
        *pos += 1;
        match token {
            Token::Integer(Integer::I64(v)) => Value::Int(v.into()),
            Token::Integer(Integer::U64(v)) => Value::Int(v.into()),
            Token::Integer(Integer::Big {
                negative,
                magnitude,
            }) => {
                let v = magnitude
                    .iter()
                    .fold(0i128, |v, &byte| (v << 8) | i128::from(byte));
                Value::Int(if negative { -v } else { v })
            }
            Token::Float(f) => Value::Float(f),
            Token::Atom(text) => Value::Atom(String::from_utf8(text.to_vec()).unwrap()),
            Token::Binary(bytes) => Value::Binary(bytes.to_vec()),
            Token::Tuple(arity) => Value::Tuple((0..arity).map(|_| read(tokens, pos)).collect()),
            Token::Map(size) => {
                let keys: Vec<Value> = (0..size).map(|_| read(tokens, pos)).collect();
                let values: Vec<Value> = (0..size).map(|_| read(tokens, pos)).collect();
                Value::Map(keys.into_iter().zip(values).collect())
            }
            Token::ListStart => {
                let mut items = Vec::new();
                while tokens[*pos] != Token::ListEnd {
                    items.push(read(tokens, pos));
                }
                *pos += 1;
                Value::List(items)
            }
            Token::ListEnd => panic!("unexpected list end"),
        }
    }
    let mut reader = KeyReader::new(element).unwrap();
    let mut tokens = Vec::new();
    while let Some(token) = reader.next().unwrap() {
        tokens.push(token);
    }
    let mut pos = 0;
    let value = read(&tokens, &mut pos);
    assert_eq!(pos, tokens.len(), "trailing tokens");
    value
}

fn leaf() -> impl Strategy<Value = Value> {
    let two_53 = 1i128 << 53;
    prop_oneof![
        (-6i128..6).prop_map(Value::Int),
        any::<i64>().prop_map(|v| Value::Int(v.into())),
        any::<i128>().prop_map(Value::Int),
        (-3i128..3).prop_map(move |d| Value::Int(two_53 + d)),
        (-3i128..3).prop_map(move |d| Value::Float((two_53 + d) as f64)),
        (-6i32..6).prop_map(|v| Value::Float(v.into())),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            5e-324,
            -5e-324,
            1e-310,
            f64::MAX,
            f64::MIN,
            1e30
        ])
        .prop_map(Value::Float),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        prop::sample::select(vec!["", "a", "b", "é", "ÿ", "Ā", "日本", "a\0b"])
            .prop_map(|s| Value::Atom(s.to_string())),
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 97, 255]), 0..5)
            .prop_map(Value::Binary),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Tuple),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            prop::collection::vec((inner.clone(), inner), 0..4).prop_map(|entries| {
                // Map keys are unique under =:=.
                let mut unique: Vec<(Value, Value)> = Vec::new();
                for (k, v) in entries {
                    if !unique.iter().any(|(u, _)| erlang_cmp(u, &k, true).is_eq()) {
                        unique.push((k, v));
                    }
                }
                Value::Map(unique)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn key_order_is_erlang_term_order(a in value(), b in value()) {
        let (ka, kb) = (encode(&a), encode(&b));
        prop_assert_eq!(ka.key().cmp(kb.key()), erlang_cmp(&a, &b, false), "{:?} vs {:?}", a, b);
    }

    #[test]
    fn elements_read_back_exactly(a in value()) {
        let element = encode(&a);
        prop_assert_eq!(element_key(element.as_bytes()), element.key());
        let back = decode(element.as_bytes());
        prop_assert!(identical(&a, &back), "{:?} read back as {:?}", a, back);
    }
}
