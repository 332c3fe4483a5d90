//! Decimal text of an integer, written on the stack (for header values and
//! script arguments on the hit path, where `to_string` would allocate).

use http::HeaderValue;

/// The decimal digits of a `u64`, held inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub(crate) fn new(mut number: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (number % 10) as u8;
            number /= 10;
            if number == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits are written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("0")
    }
}

/// The decimal numbers 0 to 99, back to back.
const SMALL_NUMBERS: &str = "0123456789101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// A header value holding `number` in decimal (`Age`, `Content-Length`):
/// without allocating below 100, with one copy above.
pub(crate) fn header_value(number: u64) -> HeaderValue {
    if let Ok(small) = usize::try_from(number) {
        let at = match small {
            0..=9 => Some((small, 1)),
            10..=99 => Some((10 + 2 * (small - 10), 2)),
            _ => None,
        };
        if let Some(text) = at.and_then(|(start, len)| SMALL_NUMBERS.get(start..start + len)) {
            return HeaderValue::from_static(text);
        }
    }
    // Digits are always a valid value; one copy into the header's bytes.
    HeaderValue::from_bytes(Decimal::new(number).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from(number))
}

#[cfg(test)]
mod tests {
    use super::{header_value, Decimal};

    #[test]
    fn header_values_are_decimal() {
        for n in (0..250).chain([999, 1000, 65_535, u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(header_value(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }

    #[test]
    fn matches_to_string() {
        for n in (0..1100).chain([9_999, 10_000, u64::from(u32::MAX), u64::MAX - 1, u64::MAX]) {
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
        }
    }
}
