//! Just enough of Erlang's external term format to read what NIF API 2.16 does not
//! expose: the variables a fun captured, the node a reference belongs to, the bit length
//! of a bitstring and the byte length of a bignum.
//!
//! Every function takes the output of `term_to_binary` (no compression, no atom cache)
//! for one term and returns `None` on anything it does not expect. All are O(1) apart
//! from skipping an atom's text.

/// The version byte every external term starts with.
pub const VERSION: u8 = 131;

const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const ATOM_EXT: u8 = 100;
const PID_EXT: u8 = 103;
const LARGE_TUPLE_EXT: u8 = 105;
const SMALL_BIG_EXT: u8 = 110;
const LARGE_BIG_EXT: u8 = 111;
const NEW_FUN_EXT: u8 = 112;
const EXPORT_EXT: u8 = 113;
const NEW_REFERENCE_EXT: u8 = 114;
const SMALL_ATOM_EXT: u8 = 115;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;
const BIT_BINARY_EXT: u8 = 77;
const NEW_PID_EXT: u8 = 88;
const NEWER_REFERENCE_EXT: u8 = 90;

/// What a fun carries besides its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunEnv {
    /// `fun M:F/A`: nothing captured.
    External,
    /// A closure that captured `captured` variables, encoded back to back from byte
    /// offset `vars` to the end.
    Local {
        /// Number of captured variables.
        captured: usize,
        /// Where the first one starts.
        vars: usize,
    },
}

/// Reads the environment of an encoded fun.
pub fn fun_env(etf: &[u8]) -> Option<FunEnv> {
    let body = etf.strip_prefix(&[VERSION])?;
    match *body.first()? {
        EXPORT_EXT => Some(FunEnv::External),
        NEW_FUN_EXT => {
            // Tag, Size(4), Arity(1), Uniq(16), Index(4), NumFree(4).
            let captured = read_u32(body, 26)? as usize;
            let mut at = 30;
            at += atom_len(body.get(at..)?)?; // Module
            at += small_integer_len(body.get(at..)?)?; // OldIndex
            at += small_integer_len(body.get(at..)?)?; // OldUniq
            at += pid_len(body.get(at..)?)?; // Pid
            (at <= body.len()).then_some(FunEnv::Local {
                captured,
                vars: at + 1,
            })
        }
        _ => None,
    }
}

/// The external form of a tuple of `captured` variables encoded as `vars`, so that
/// `binary_to_term` can rebuild what a fun captured.
pub fn env_as_tuple(captured: usize, vars: &[u8]) -> Vec<u8> {
    let mut etf = Vec::with_capacity(6 + vars.len());
    etf.extend_from_slice(&[VERSION, LARGE_TUPLE_EXT]);
    etf.extend_from_slice(&(captured as u32).to_be_bytes());
    etf.extend_from_slice(vars);
    etf
}

/// The node name and creation of an encoded reference, as bytes: equal for two
/// references exactly when they come from the same node incarnation.
pub fn reference_origin(etf: &[u8]) -> Option<&[u8]> {
    let body = etf.strip_prefix(&[VERSION])?;
    let creation_len = match *body.first()? {
        NEWER_REFERENCE_EXT => 4,
        NEW_REFERENCE_EXT => 1,
        _ => return None,
    };
    // Tag, Len(2), Node, Creation.
    let node = 3;
    let end = node + atom_len(body.get(node..)?)? + creation_len;
    body.get(node..end)
}

/// The length in bits of an encoded bitstring that is not whole bytes.
pub fn bitstring_bits(etf: &[u8]) -> Option<u64> {
    let body = etf.strip_prefix(&[VERSION])?;
    if *body.first()? != BIT_BINARY_EXT {
        return None;
    }
    // Tag, Len(4) bytes, Bits(1) used in the last byte.
    let bytes = u64::from(read_u32(body, 1)?);
    let last_bits = u64::from(*body.get(5)?);
    Some(bytes.checked_sub(1)? * 8 + last_bits)
}

/// Bytes of the magnitude of an encoded bignum.
pub fn bignum_bytes(etf: &[u8]) -> Option<usize> {
    let body = etf.strip_prefix(&[VERSION])?;
    match *body.first()? {
        SMALL_BIG_EXT => body.get(1).map(|&n| n as usize),
        LARGE_BIG_EXT => read_u32(body, 1).map(|n| n as usize),
        _ => None,
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Length of the encoded atom at the start of `bytes`.
fn atom_len(bytes: &[u8]) -> Option<usize> {
    let len = match *bytes.first()? {
        ATOM_EXT | ATOM_UTF8_EXT => {
            3 + u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?) as usize
        }
        SMALL_ATOM_EXT | SMALL_ATOM_UTF8_EXT => 2 + *bytes.get(1)? as usize,
        _ => return None,
    };
    (len <= bytes.len()).then_some(len)
}

fn small_integer_len(bytes: &[u8]) -> Option<usize> {
    match *bytes.first()? {
        SMALL_INTEGER_EXT => Some(2),
        INTEGER_EXT => Some(5),
        _ => None,
    }
}

fn pid_len(bytes: &[u8]) -> Option<usize> {
    let fixed = match *bytes.first()? {
        NEW_PID_EXT => 12,
        PID_EXT => 9,
        _ => return None,
    };
    Some(1 + atom_len(bytes.get(1..)?)? + fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Encodings captured from OTP 25.2.3.
    const CLOSURE: [u8; 86] = [
        131, 112, 0, 0, 0, 84, 0, 104, 22, 80, 92, 22, 134, 106, 66, 58, 183, 115, 164, 193, 119,
        122, 93, 0, 0, 0, 3, 0, 0, 0, 2, 100, 0, 8, 69, 108, 105, 120, 105, 114, 46, 70, 97, 3, 98,
        3, 64, 178, 130, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115,
        116, 0, 0, 0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 97, 1, 104, 2, 97, 1, 97, 2,
    ];
    const EXPORT: [u8; 18] = [
        131, 113, 100, 0, 5, 108, 105, 115, 116, 115, 100, 0, 3, 109, 97, 112, 97, 2,
    ];
    const REFERENCE: [u8; 36] = [
        131, 90, 0, 3, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115, 116,
        0, 0, 0, 0, 0, 2, 86, 165, 49, 208, 0, 1, 104, 204, 36, 239,
    ];

    #[test]
    fn reads_a_closure_environment() {
        // fn -> {x, y} end with x = 1, y = {1, 2}.
        let Some(FunEnv::Local { captured, vars }) = fun_env(&CLOSURE) else {
            panic!("not a closure");
        };
        assert_eq!(captured, 2);
        assert_eq!(&CLOSURE[vars..], &[97, 1, 104, 2, 97, 1, 97, 2]);
        let tuple = env_as_tuple(captured, &CLOSURE[vars..]);
        assert_eq!(tuple[..6], [131, 105, 0, 0, 0, 2]);
        assert_eq!(fun_env(&EXPORT), Some(FunEnv::External));
        assert_eq!(fun_env(&CLOSURE[..40]), None);
        assert_eq!(fun_env(&REFERENCE), None);
    }

    #[test]
    fn reads_a_reference_origin() {
        let origin = reference_origin(&REFERENCE).unwrap();
        // ATOM_EXT "nonode@nohost" then creation 0.
        assert_eq!(origin.len(), 3 + 13 + 4);
        assert_eq!(&origin[3..16], b"nonode@nohost");
        assert_eq!(reference_origin(&EXPORT), None);
        assert_eq!(reference_origin(&REFERENCE[..10]), None);
    }

    #[test]
    fn reads_bit_lengths_and_bignums() {
        // <<1::1>> and <<0, 0::3>>.
        assert_eq!(bitstring_bits(&[131, 77, 0, 0, 0, 1, 1, 128]), Some(1));
        assert_eq!(bitstring_bits(&[131, 77, 0, 0, 0, 2, 3, 0, 0]), Some(11));
        assert_eq!(bitstring_bits(&[131, 77, 0, 0, 0, 0, 3]), None);
        // 2^64 is SMALL_BIG_EXT with 9 bytes.
        assert_eq!(
            bignum_bytes(&[131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Some(9)
        );
        // 2^2400 is LARGE_BIG_EXT with 301 bytes.
        let mut big = vec![131, 111, 0, 0, 1, 45, 0];
        big.extend(std::iter::repeat_n(0, 300));
        big.push(1);
        assert_eq!(bignum_bytes(&big), Some(301));
    }
}
