//! Variants by a response's `Vary`: the request header fields a resource's
//! responses vary on, how their values take part in the key, and the
//! record of those names that the resource keeps in the store.
//!
//! A request's key is first derived without them (the *base* variant: path,
//! authority, query and the configured `vary_by` values). A response whose
//! `Vary` names other request fields is stored under a variant whose
//! material is the base's followed by those fields' normalised values, and
//! the base variant holds a *vary record* that lists the names. A lookup
//! that finds the record derives the variant it names and looks again; the
//! layer memoises the names per base variant, so a hit is one round trip
//! once a process has seen the resource.
//!
//! Normalised values (RFC 9111 section 4.1 lets a cache normalise what is
//! known to mean the same): a field's lines are joined with commas and
//! trimmed of white space; for the content negotiation fields (`Accept`,
//! `Accept-Charset`, `Accept-Encoding`, `Accept-Language`), whose members
//! are case-insensitive tokens, each comma-separated member outside a
//! quoted string is trimmed, empty members are dropped, and letters are
//! lowered. An absent field and an empty one are different values.
//!
//! The record is read back from the store and untrusted: [`VaryNames::from_record`]
//! checks every byte and fails on anything it did not write.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName};

use crate::util::inline::InlineBytes;

/// Most request fields a `Vary` may name for the layer to store its
/// response (past the configured `vary_by` ones).
pub(crate) const MAX_VARY_NAMES: usize = 8;
/// The start of a vary record; an entry starts `TCA`.
const RECORD_MAGIC: &[u8; 3] = b"TCV";
const RECORD_VERSION: u8 = 1;
/// Separators of the vary part of key material: bytes no header value
/// holds (values exclude 0x00-0x08), and not those the base material uses
/// (0, 1, 2).
const VARY_PART: u8 = 3;
const PRESENT: u8 = 4;
const ABSENT: u8 = 5;

/// The request fields a resource's responses vary on, past the configured
/// `vary_by` ones: lowercase, sorted, distinct, at most [`MAX_VARY_NAMES`],
/// never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaryNames(Arc<[HeaderName]>);

impl VaryNames {
    /// The names a response's `Vary` adds to the configured `vary_by`:
    /// `Ok(None)` when it adds none, `Err("vary")` for `Vary: *`, a name
    /// that is not a field name, or more than [`MAX_VARY_NAMES`] names.
    pub(crate) fn of_response(
        headers: &HeaderMap,
        vary_by: &[HeaderName],
    ) -> Result<Option<VaryNames>, &'static str> {
        let mut names: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::VARY) {
            let Ok(value) = value.to_str() else {
                return Err("vary");
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Err("vary");
                }
                // `from_bytes` lowers letters: names compare as the RFC says.
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return Err("vary");
                };
                // A record holds a name's length in one byte.
                if name.as_str().len() > usize::from(u8::MAX) {
                    return Err("vary");
                }
                if !vary_by.contains(&name) && !names.contains(&name) {
                    if names.len() == MAX_VARY_NAMES {
                        return Err("vary");
                    }
                    names.push(name);
                }
            }
        }
        if names.is_empty() {
            return Ok(None);
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(Some(VaryNames(names.into())))
    }

    /// The names.
    #[cfg(test)]
    pub(crate) fn names(&self) -> &[HeaderName] {
        &self.0
    }

    /// The vary record that lists these names.
    pub(crate) fn record(&self) -> Bytes {
        let len: usize = self.0.iter().map(|n| 1 + n.as_str().len()).sum();
        let mut out = BytesMut::with_capacity(RECORD_MAGIC.len() + 2 + len);
        out.put_slice(RECORD_MAGIC);
        out.put_u8(RECORD_VERSION);
        // At most MAX_VARY_NAMES names of at most 255 bytes each
        // (`of_response` refuses more), so every length fits its byte.
        out.put_u8(u8::try_from(self.0.len()).unwrap_or(u8::MAX));
        for name in self.0.iter() {
            let name = name.as_str().as_bytes();
            out.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.put_slice(name);
        }
        out.freeze()
    }

    /// Whether a stored value is a vary record (rather than an entry).
    pub(crate) fn is_record(value: &[u8]) -> bool {
        value.starts_with(RECORD_MAGIC)
    }

    /// Reads a vary record back; `None` unless it is exactly what
    /// [`record`](Self::record) writes for valid names.
    pub(crate) fn from_record(value: &[u8]) -> Option<VaryNames> {
        let rest = value.strip_prefix(RECORD_MAGIC)?;
        let (&[version, count], mut rest) = rest.split_first_chunk::<2>()?;
        let count = usize::from(count);
        if version != RECORD_VERSION || count == 0 || count > MAX_VARY_NAMES {
            return None;
        }
        let mut names: Vec<HeaderName> = Vec::with_capacity(count);
        for _ in 0..count {
            let (&len, tail) = rest.split_first()?;
            let len = usize::from(len);
            if len == 0 || tail.len() < len {
                return None;
            }
            let (bytes, tail) = tail.split_at(len);
            let name = HeaderName::from_bytes(bytes).ok()?;
            // Lowercase as written, and in strictly ascending order.
            if name.as_str().as_bytes() != bytes
                || names
                    .last()
                    .is_some_and(|last| last.as_str() >= name.as_str())
            {
                return None;
            }
            names.push(name);
            rest = tail;
        }
        rest.is_empty().then(|| VaryNames(names.into()))
    }

    /// Appends the vary part of a key's material: each name with its
    /// request's normalised value, or a mark that it is absent.
    pub(crate) fn push_material<const N: usize>(
        &self,
        out: &mut InlineBytes<N>,
        request: &HeaderMap,
    ) {
        out.push(VARY_PART);
        for name in self.0.iter() {
            out.extend_from_slice(name.as_str().as_bytes());
            let mut lines = request.get_all(name).iter().peekable();
            if lines.peek().is_none() {
                out.push(ABSENT);
                continue;
            }
            out.push(PRESENT);
            let negotiation = is_negotiation(name);
            let mut first = true;
            for line in lines {
                if negotiation {
                    for member in members(line.as_bytes()) {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        push_lowered(out, member);
                    }
                } else {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(trim(line.as_bytes()));
                }
            }
        }
    }
}

/// The content negotiation fields, whose members are case-insensitive.
fn is_negotiation(name: &HeaderName) -> bool {
    name == header::ACCEPT
        || name == header::ACCEPT_CHARSET
        || name == header::ACCEPT_ENCODING
        || name == header::ACCEPT_LANGUAGE
}

/// Each byte of `text` with whether it is outside a quoted string (its
/// quotes and escapes are inside).
fn outside_quotes(text: &[u8]) -> impl Iterator<Item = (u8, bool)> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    text.iter().map(move |&b| {
        let inside = quoted || b == b'"';
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        }
        (b, !inside)
    })
}

/// A field line's comma-separated members, trimmed, empty ones left out;
/// a comma inside a quoted string does not separate.
fn members(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, (b, outside)) in outside_quotes(line).enumerate() {
        if b == b',' && outside {
            pieces.push(&line[start..i]);
            start = i + 1;
        }
    }
    pieces.push(&line[start..]);
    pieces.into_iter().map(trim).filter(|m| !m.is_empty())
}

/// Appends a member with its letters lowered, but inside quoted strings,
/// whose text is case-sensitive.
fn push_lowered<const N: usize>(out: &mut InlineBytes<N>, member: &[u8]) {
    for (b, outside) in outside_quotes(member) {
        out.push(if outside { b.to_ascii_lowercase() } else { b });
    }
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn names(vary: &[&str]) -> Result<Option<Vec<String>>, &'static str> {
        let pairs: Vec<(&str, &str)> = vary.iter().map(|v| ("vary", *v)).collect();
        VaryNames::of_response(&headers(&pairs), &[header::ACCEPT_LANGUAGE])
            .map(|n| n.map(|n| n.names().iter().map(|n| n.as_str().to_owned()).collect()))
    }

    fn material(names: &VaryNames, request: &[(&str, &str)]) -> Vec<u8> {
        let mut out = InlineBytes::<128>::new();
        names.push_material(&mut out, &headers(request));
        out.to_vec()
    }

    #[test]
    fn a_response_s_vary_names_are_read_as_the_rfc_says() {
        assert_eq!(names(&[]), Ok(None));
        assert_eq!(names(&["Accept-Language"]), Ok(None), "keyed already");
        assert_eq!(
            names(&["Origin, accept-encoding", "ORIGIN"]),
            Ok(Some(vec!["accept-encoding".into(), "origin".into()]))
        );
        assert_eq!(
            names(&[" , User-Agent ,"]),
            Ok(Some(vec!["user-agent".into()]))
        );
        assert_eq!(names(&["accept, *"]), Err("vary"));
        assert_eq!(names(&["bad name"]), Err("vary"));
        assert_eq!(names(&[&"x".repeat(256)]), Err("vary"));
        assert!(names(&[&"x".repeat(255)]).is_ok());
        let many: Vec<String> = (0..=MAX_VARY_NAMES).map(|i| format!("x-{i}")).collect();
        assert_eq!(names(&[&many.join(",")]), Err("vary"));
        assert!(names(&[&many[..MAX_VARY_NAMES].join(",")]).is_ok());
    }

    #[test]
    fn values_are_normalised_only_where_they_mean_the_same() {
        let n = VaryNames::of_response(&headers(&[("vary", "accept-encoding, user-agent")]), &[])
            .unwrap()
            .unwrap();
        let m = |r: &[(&str, &str)]| material(&n, r);
        assert_eq!(
            m(&[("accept-encoding", "GZIP,  br"), ("user-agent", "a")]),
            m(&[
                ("accept-encoding", "gzip"),
                ("accept-encoding", "br,"),
                ("user-agent", " a ")
            ])
        );
        assert_ne!(
            m(&[("accept-encoding", "br, gzip"), ("user-agent", "a")]),
            m(&[("accept-encoding", "gzip, br"), ("user-agent", "a")]),
            "order is kept"
        );
        assert_ne!(
            m(&[("user-agent", "A")]),
            m(&[("user-agent", "a")]),
            "other fields keep their case"
        );
        assert_ne!(m(&[]), m(&[("accept-encoding", "")]), "absent is not empty");
        assert_ne!(
            m(&[("accept-encoding", "x;q=\"a, b\"")]),
            m(&[("accept-encoding", "x;q=\"a,b\"")]),
            "a quoted comma does not separate"
        );
        assert_ne!(
            m(&[("accept-encoding", "x;q=\"A\"")]),
            m(&[("accept-encoding", "x;q=\"a\"")]),
            "a quoted string keeps its case"
        );
        assert_eq!(
            m(&[("accept-encoding", "X;Q=\"A\\\"b\", Y")]),
            m(&[("accept-encoding", "x;q=\"A\\\"b\",y")]),
            "outside it, letters are lowered"
        );
    }

    #[test]
    fn records_read_back_only_as_written() {
        let n = VaryNames::of_response(&headers(&[("vary", "origin, accept")]), &[])
            .unwrap()
            .unwrap();
        let record = n.record();
        assert!(VaryNames::is_record(&record));
        assert_eq!(VaryNames::from_record(&record), Some(n.clone()));
        for len in 0..record.len() {
            assert_eq!(VaryNames::from_record(&record[..len]), None, "cut at {len}");
        }
        let mut longer = record.to_vec();
        longer.push(b'x');
        assert_eq!(VaryNames::from_record(&longer), None);
        // Out of order, upper case, a bad version, no names.
        assert_eq!(
            VaryNames::from_record(b"TCV\x01\x02\x06origin\x06accept"),
            None
        );
        assert_eq!(VaryNames::from_record(b"TCV\x01\x01\x06Origin"), None);
        assert_eq!(VaryNames::from_record(b"TCV\x02\x01\x06origin"), None);
        assert_eq!(VaryNames::from_record(b"TCV\x01\x00"), None);
    }

    proptest! {
        #[test]
        fn any_bytes_read_as_a_record_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut value = b"TCV\x01".to_vec();
            value.extend_from_slice(&bytes);
            if let Some(names) = VaryNames::from_record(&value) {
                prop_assert_eq!(&names.record()[..], &value[..]);
            }
        }
    }
}
