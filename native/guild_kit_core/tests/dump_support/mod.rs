//! Helpers shared by the dump tests.

use guild_kit_core::dump::HEADER_LEN;

/// Makes a dump's checksum match its bytes again, so that a mutation reaches the checks
/// behind the checksum (what a forged dump would do).
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_LEN {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[..32]);
        hasher.update(&bytes[HEADER_LEN..]);
        let sum = hasher.finalize();
        bytes[32..36].copy_from_slice(&sum.to_le_bytes());
    }
}
