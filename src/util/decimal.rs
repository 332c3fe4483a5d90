//! Decimal text of an integer, written on the stack (for header values and
//! script arguments on the hit path, where `to_string` would allocate).

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

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn matches_to_string() {
        for n in (0..1100).chain([9_999, 10_000, u64::from(u32::MAX), u64::MAX - 1, u64::MAX]) {
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
        }
    }
}
