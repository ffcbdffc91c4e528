//! What more than one bench builds its data from. A directory module, so that Cargo does
//! not take it for a bench of its own.

// Each bench target (and the dump_profile example) compiles its own copy of this
// module and uses a part of it.
#![allow(dead_code)]

use guild_kit_core::term_key::{Element, KeyEncoder, Number};

/// A member-list key `{integer, 8-byte binary}`, encoded.
pub fn member(id: i64, tag: u64) -> Element {
    let mut encoder = KeyEncoder::new();
    encoder.push_tuple(2);
    encoder.push_number(Number::Int(id), false);
    encoder.push_binary(&tag.to_be_bytes());
    encoder.finish()
}

/// SplitMix64: a deterministic sequence, so runs compare like for like.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 53-bit value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) >> 11
    }
}
