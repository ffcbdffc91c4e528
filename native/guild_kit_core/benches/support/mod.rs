//! What more than one bench builds its data from. A directory module, so that Cargo does
//! not take it for a bench of its own.

use guild_kit_core::term_key::{Element, KeyEncoder, Number};

/// A member-list key `{integer, 8-byte binary}`, encoded.
pub fn member(id: i64, tag: u64) -> Element {
    let mut encoder = KeyEncoder::new();
    encoder.push_tuple(2);
    encoder.push_number(Number::Int(id), false);
    encoder.push_binary(&tag.to_be_bytes());
    encoder.finish()
}
