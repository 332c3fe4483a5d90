//! An independent decoder of the entry format, written from the layout in
//! `src/entry.rs`'s documentation, used as the fuzz targets' oracle.
//!
//! It shares no code with the crate's decoder (which is crate-private):
//! only the `http` crate's own validation of status codes, header names and
//! header values, which is what the format says a valid entry holds.
//!
//! ```text
//! magic "TCA" | version u8 = 1 | flags u8
//! status u16 | stored_at_ms u64 | ttl_ms u64
//! fingerprint: len u32, bytes
//! headers: count u32, then per header: name len u16, name, value len u32, value
//! body: len u32, bytes
//! trailers: present u8; if 1: count u32 and pairs as for headers
//! ```

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A decoded entry.
#[derive(Debug, Clone)]
pub struct RefEntry {
    pub status: StatusCode,
    pub stored_at_ms: u64,
    pub ttl_ms: u64,
    pub fingerprint: Vec<u8>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

impl RefEntry {
    /// When the entry stops being fresh (ms since the epoch).
    pub fn expires_at_ms(&self) -> u64 {
        self.stored_at_ms.saturating_add(self.ttl_ms)
    }
}

/// A cursor that fails (returns `None`) instead of reading past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn len32_bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    fn map(&mut self) -> Option<HeaderMap> {
        let count = self.u32()?;
        // An entry holds at most 1024 fields (so that a hit's own fields
        // always fit in the map).
        if count > 1024 {
            return None;
        }
        let mut map = HeaderMap::new();
        for _ in 0..count {
            let name_len = usize::from(self.u16()?);
            let name = HeaderName::from_bytes(self.take(name_len)?).ok()?;
            let value = HeaderValue::from_bytes(self.len32_bytes()?).ok()?;
            // The http crate refuses a map past its size limit; so does a
            // valid entry.
            map.try_append(name, value).ok()?;
        }
        Some(map)
    }
}

/// Decodes `value`; `None` for anything that is not a valid entry.
pub fn decode(value: &[u8]) -> Option<RefEntry> {
    let mut r = Reader { rest: value };
    if r.take(3)? != b"TCA" {
        return None;
    }
    if r.u8()? != 1 {
        return None;
    }
    // No flags are defined: a value that sets one is not an entry.
    if r.u8()? != 0 {
        return None;
    }
    let status = StatusCode::from_u16(r.u16()?).ok()?;
    let stored_at_ms = r.u64()?;
    let ttl_ms = r.u64()?;
    let fingerprint = r.len32_bytes()?.to_vec();
    let headers = r.map()?;
    let body = r.len32_bytes()?.to_vec();
    let trailers = match r.u8()? {
        0 => None,
        1 => Some(r.map()?),
        _ => return None,
    };
    if !r.rest.is_empty() {
        return None;
    }
    Some(RefEntry {
        status,
        stored_at_ms,
        ttl_ms,
        fingerprint,
        headers,
        body,
        trailers,
    })
}
