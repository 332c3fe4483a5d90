//! The resource encoding: percent-encoding with a small safe alphabet that
//! leaves no glob character, brace or `%` unescaped, and hex digits.

use crate::util::inline::InlineBytes;

/// Bytes kept as they are in an encoded resource; every other byte becomes
/// `%XX`. Excludes `%` (injectivity), glob characters and braces.
fn kept_verbatim(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Bytes kept as they are in an encoded query name or value: the
/// resource alphabet less the bytes that separate parameters (`&`, `=`)
/// and `+`, which a form decoder reads as a space.
fn kept_in_query(byte: u8) -> bool {
    kept_verbatim(byte) && !matches!(byte, b'&' | b'=' | b'+')
}

/// Appends `bytes` to `out` in the resource encoding.
pub(crate) fn encode_into(out: &mut impl Encoded, bytes: &[u8]) {
    encode_with(out, bytes, kept_verbatim);
}

/// Appends a decoded query name or value to `out`, encoded so that the
/// pairs written one after another, as `name=value&…`, read back one way
/// only.
pub(crate) fn encode_query_into(out: &mut impl Encoded, bytes: &[u8]) {
    encode_with(out, bytes, kept_in_query);
}

#[inline]
fn encode_with(out: &mut impl Encoded, mut bytes: &[u8], kept: fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Runs of safe bytes (the common case: all of a path) go in at once.
    while !bytes.is_empty() {
        let safe = bytes.iter().position(|&b| !kept(b)).unwrap_or(bytes.len());
        let (run, rest) = bytes.split_at(safe);
        out.put(run);
        let Some((&byte, rest)) = rest.split_first() else {
            break;
        };
        out.put(&[
            b'%',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0x0f)],
        ]);
        bytes = rest;
    }
}

/// Where [`encode_into`] writes: text it builds, which is ASCII.
pub(crate) trait Encoded {
    /// Appends encoded bytes (ASCII only).
    fn put(&mut self, ascii: &[u8]);
}

impl Encoded for String {
    fn put(&mut self, ascii: &[u8]) {
        self.push_str(std::str::from_utf8(ascii).unwrap_or_default());
    }
}

impl<const N: usize> Encoded for InlineBytes<N> {
    fn put(&mut self, ascii: &[u8]) {
        self.extend_from_slice(ascii);
    }
}

/// `value` as 32 lowercase hex digits, most significant first.
///
/// On every hit (the variant's name) and every lease token: each half is
/// turned into its 16 digits with a few word-wide operations, not a table
/// look-up per nibble.
pub(crate) fn hex32(value: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    // Truncation intended: the high and the low 64 bits.
    out[..16].copy_from_slice(&hex16((value >> 64) as u64).to_be_bytes());
    out[16..].copy_from_slice(&hex16(value as u64).to_be_bytes());
    out
}

/// The 16 hex digits of `value`, one per byte, the most significant digit
/// in the most significant byte.
fn hex16(value: u64) -> u128 {
    const NIBBLES: u128 = 0x0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f;
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // Spread the nibbles apart, halving the width of each lane at every
    // step, until nibble k of `value` is byte k.
    let mut x = u128::from(value);
    x = (x | (x << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & NIBBLES;
    // 1 in the bytes that hold 10..=15 (adding 6 carries them into bit 4;
    // no byte exceeds 0x15, so nothing carries into the next byte).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    // '0' + d for digits, 'a' + d - 10 = '0' + d + 0x27 for letters.
    x + 0x30 * ONES + 0x27 * letters
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex32_is_the_values_32_lowercase_hex_digits() {
        for value in [
            0,
            1,
            0xabc,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            0x9a9a_9a9a_9a9a_9a9a_a9a9_a9a9_a9a9_a9a9,
            u128::from(u64::MAX),
            u128::MAX,
            0x0123_4567_89ab_cdef << 60,
        ] {
            assert_eq!(
                std::str::from_utf8(&hex32(value)).unwrap(),
                format!("{value:032x}")
            );
        }
    }

    proptest! {
        #[test]
        fn hex32_matches_the_formatter_on_any_value(value in any::<u128>()) {
            let digits = hex32(value);
            prop_assert_eq!(std::str::from_utf8(&digits).unwrap(), format!("{value:032x}"));
        }
    }
}
