//! The stored value: one cached response, in a versioned binary encoding.
//!
//! Bytes read back from a store are untrusted: another version of this
//! crate, another program, a truncated write or an attacker with access to
//! Redis may have put them there. So [`Entry::decode`] checks every length
//! against what is left before it reads or allocates, validates the status,
//! header names and header values, and returns an error (never a panic) on
//! anything it does not understand. The caller treats that as a miss and
//! removes the value.
//!
//! The body is not copied on decode: it is a slice of the value's `Bytes`,
//! and so are header values.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic "TCA" | version u8 = 1 | flags u8
//! status u16 | stored_at_ms u64 | ttl_ms u64
//! if flags & 1: while_revalidate_ms u32 | if_error_ms u32   the entry's own stale windows
//! fingerprint: len u32, bytes       the full key material, checked on read
//! headers: count u32, then per header: name len u16, name, value len u32, value
//! body: len u32, bytes
//! trailers: present u8; if 1: count u32 and pairs as for headers
//! ```

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::util::time::StaleWindows;

const MAGIC: &[u8; 3] = b"TCA";
const VERSION: u8 = 1;
/// magic + version + flags + status + stored_at + ttl
const FIXED_HEADER_LEN: usize = 3 + 1 + 1 + 2 + 8 + 8;
/// The flag of an entry that carries its own stale windows.
const OWN_WINDOWS: u8 = 1;
/// Most header (or trailer) fields an entry may hold.
const MAX_FIELDS: usize = 1024;
/// name len (2) + value len (4): the least one encoded header takes.
const MIN_HEADER_LEN: usize = 6;

/// A cached response as read back from the store.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
    /// Wall-clock time of the store, milliseconds since the Unix epoch.
    pub(crate) stored_at_ms: u64,
    /// Freshness lifetime, milliseconds.
    pub(crate) ttl_ms: u64,
    /// How long it may be served stale, where its response said
    /// otherwise than the layer's settings (`None`: the layer's).
    pub(crate) stale: Option<StaleWindows>,
    /// The key material the entry was stored under.
    pub(crate) fingerprint: Bytes,
    /// Whether `headers` are as a hit sends them but for the values of
    /// `Age` and `Cache-Status`, which are there to be replaced: the
    /// `Content-Length` is the body's (none on 204 and 304). Set by
    /// the layer's head cache; a plain decode leaves the headers as stored.
    pub(crate) hit_ready: bool,
}

/// What goes into an entry when it is written; borrowed so that a recorded
/// body is copied once, straight into the encoded value.
#[derive(Debug)]
pub(crate) struct EntryParts<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [Bytes],
    pub(crate) trailers: Option<&'a HeaderMap>,
    pub(crate) stored_at_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) stale: Option<StaleWindows>,
    pub(crate) fingerprint: &'a [u8],
}

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("value is not a tower-cache-aside entry")]
    BadMagic,
    #[error("entry format version {0} is not supported")]
    Version(u8),
    #[error("entry is truncated")]
    Truncated,
    #[error("entry has an invalid {0}")]
    Invalid(&'static str),
    #[error("entry has trailing bytes")]
    TrailingBytes,
}

/// A length that does not fit the format's field is a response this crate
/// refuses to store; the caller skips the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response too large to encode")]
pub(crate) struct EncodeError;

impl EntryParts<'_> {
    /// Encodes the entry into one contiguous value.
    pub(crate) fn encode(&self) -> Result<Bytes, EncodeError> {
        let body_len: usize = self.body.iter().map(Bytes::len).sum();
        let mut buf = BytesMut::with_capacity(
            FIXED_HEADER_LEN
                + if self.stale.is_some() { 8 } else { 0 }
                + 4
                + self.fingerprint.len()
                + encoded_map_len(self.headers)
                + 4
                + body_len
                + 1
                + self.trailers.map_or(0, encoded_map_len),
        );
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(if self.stale.is_some() { OWN_WINDOWS } else { 0 });
        buf.put_u16(self.status.as_u16());
        buf.put_u64(self.stored_at_ms);
        buf.put_u64(self.ttl_ms);
        if let Some(windows) = self.stale {
            // Windows are at most a day; past 49 days they would saturate.
            let ms = |window: Duration| u32::try_from(window.as_millis()).unwrap_or(u32::MAX);
            buf.put_u32(ms(windows.while_revalidate));
            buf.put_u32(ms(windows.if_error));
        }
        put_len32(&mut buf, self.fingerprint.len())?;
        buf.put_slice(self.fingerprint);
        put_map(&mut buf, self.headers)?;
        put_len32(&mut buf, body_len)?;
        for chunk in self.body {
            buf.put_slice(chunk);
        }
        match self.trailers {
            Some(trailers) => {
                buf.put_u8(1);
                put_map(&mut buf, trailers)?;
            }
            None => buf.put_u8(0),
        }
        Ok(buf.freeze())
    }
}

/// Sets `headers`' `Content-Length` as entries are stored and hits send
/// it: `body_len` in plain decimal digits, and none on a status without a
/// body (204, 304). A value already right is left as it is.
pub(crate) fn set_content_length(status: StatusCode, headers: &mut HeaderMap, body_len: usize) {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        headers.remove(http::header::CONTENT_LENGTH);
    } else if !has_content_length(headers, body_len) {
        // Fails only on a map at its capacity: the field is left out then.
        let length = crate::util::decimal::header_value(body_len as u64);
        let _ = headers.try_insert(http::header::CONTENT_LENGTH, length);
    }
}

/// Whether `headers` hold exactly one `Content-Length`, equal to `length`.
fn has_content_length(headers: &HeaderMap, length: usize) -> bool {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        // As the layer writes it: plain decimal digits. Any other spelling
        // of the same number ("+5", "05") is replaced by that.
        (Some(value), None) => {
            value.as_bytes() == crate::util::decimal::Decimal::new(length as u64).as_bytes()
        }
        _ => false,
    }
}

fn encoded_map_len(map: &HeaderMap) -> usize {
    4 + map
        .iter()
        .map(|(name, value)| MIN_HEADER_LEN + name.as_str().len() + value.len())
        .sum::<usize>()
}

fn put_len32(buf: &mut BytesMut, len: usize) -> Result<(), EncodeError> {
    buf.put_u32(u32::try_from(len).map_err(|_| EncodeError)?);
    Ok(())
}

fn put_map(buf: &mut BytesMut, map: &HeaderMap) -> Result<(), EncodeError> {
    put_len32(buf, map.len())?;
    for (name, value) in map {
        let name = name.as_str().as_bytes();
        buf.put_u16(u16::try_from(name.len()).map_err(|_| EncodeError)?);
        buf.put_slice(name);
        put_len32(buf, value.len())?;
        buf.put_slice(value.as_bytes());
    }
    Ok(())
}

impl Entry {
    /// Decodes a value read from a store. Never panics; never allocates more
    /// than the value's own size (plus a header map bounded by it).
    pub(crate) fn decode(mut value: Bytes) -> Result<Entry, DecodeError> {
        let head = Head::take(&mut value)?;
        Entry::from_head(head, value)
    }

    /// The entry whose head is `head`, from what followed that head in its
    /// value: the body, then the trailers.
    pub(crate) fn from_head(head: Head, mut rest: Bytes) -> Result<Entry, DecodeError> {
        let body = take_bytes(&mut rest, head.body_len)?;
        let trailers = match take_u8(&mut rest)? {
            0 => None,
            1 => Some(take_map(&mut rest)?),
            _ => return Err(DecodeError::Invalid("trailer flag")),
        };
        if rest.has_remaining() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Entry {
            status: head.status,
            headers: head.headers,
            body,
            trailers,
            stored_at_ms: head.stored_at_ms,
            ttl_ms: head.ttl_ms,
            stale: head.stale,
            fingerprint: head.fingerprint,
            hit_ready: false,
        })
    }
}

/// An entry's head: everything in its value before the body (the fixed
/// fields, the fingerprint, the headers and the body's length), decoded.
/// What a hit needs besides the body; [`crate::http::head_cache`] keeps the heads it
/// has decoded, to reuse on values that start with the same bytes.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) stored_at_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) stale: Option<StaleWindows>,
    pub(crate) fingerprint: Bytes,
    /// The length of the body that follows the head.
    pub(crate) body_len: usize,
}

impl Head {
    /// Decodes the head at the start of `value`, and leaves `value` at the
    /// body. The same checks as [`Entry::decode`].
    pub(crate) fn take(value: &mut Bytes) -> Result<Head, DecodeError> {
        if value.len() < FIXED_HEADER_LEN {
            return Err(if value.starts_with(&MAGIC[..value.len().min(3)]) {
                DecodeError::Truncated
            } else {
                DecodeError::BadMagic
            });
        }
        if &value[..3] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        value.advance(3);
        let version = value.get_u8();
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = value.get_u8();
        if flags & !OWN_WINDOWS != 0 {
            // A flag this version does not define: the value is not ours.
            return Err(DecodeError::Invalid("flags"));
        }
        let status =
            StatusCode::from_u16(value.get_u16()).map_err(|_| DecodeError::Invalid("status"))?;
        let stored_at_ms = value.get_u64();
        let ttl_ms = value.get_u64();
        let stale = if flags & OWN_WINDOWS != 0 {
            if value.remaining() < 8 {
                return Err(DecodeError::Truncated);
            }
            let while_revalidate = Duration::from_millis(u64::from(value.get_u32()));
            let if_error = Duration::from_millis(u64::from(value.get_u32()));
            Some(StaleWindows {
                while_revalidate,
                if_error,
            })
        } else {
            None
        };
        let fingerprint = take_len32(value)?;
        let headers = take_map(value)?;
        if value.remaining() < 4 {
            return Err(DecodeError::Truncated);
        }
        let body_len = usize::try_from(value.get_u32()).map_err(|_| DecodeError::Truncated)?;
        Ok(Head {
            status,
            headers,
            stored_at_ms,
            ttl_ms,
            stale,
            fingerprint,
            body_len,
        })
    }
}

fn take_u8(value: &mut Bytes) -> Result<u8, DecodeError> {
    if value.remaining() < 1 {
        return Err(DecodeError::Truncated);
    }
    Ok(value.get_u8())
}

fn take_bytes(value: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    if value.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(value.split_to(len))
}

fn take_len32(value: &mut Bytes) -> Result<Bytes, DecodeError> {
    if value.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    let len = usize::try_from(value.get_u32()).map_err(|_| DecodeError::Truncated)?;
    take_bytes(value, len)
}

fn take_map(value: &mut Bytes) -> Result<HeaderMap, DecodeError> {
    if value.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    let count = usize::try_from(value.get_u32()).map_err(|_| DecodeError::Truncated)?;
    // Each header takes at least MIN_HEADER_LEN bytes: a count larger than
    // what is left can only be a lie, so refuse it before allocating.
    if count > value.remaining() / MIN_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    // Far more fields than any response has, and far fewer than a header
    // map holds, so that the fields a hit adds always fit.
    if count > MAX_FIELDS {
        return Err(DecodeError::Invalid("header count"));
    }
    // Room for the fields a hit adds (`Age`, `Cache-Status`, maybe
    // `Content-Length`), so that the map is allocated once.
    let mut map = HeaderMap::try_with_capacity(count + 3)
        .map_err(|_| DecodeError::Invalid("header count"))?;
    for _ in 0..count {
        if value.remaining() < 2 {
            return Err(DecodeError::Truncated);
        }
        let name_len = usize::from(value.get_u16());
        let name = take_bytes(value, name_len)?;
        let name =
            HeaderName::from_bytes(&name).map_err(|_| DecodeError::Invalid("header name"))?;
        let raw = take_len32(value)?;
        let value = HeaderValue::from_maybe_shared(raw)
            .map_err(|_| DecodeError::Invalid("header value"))?;
        map.try_append(name, value)
            .map_err(|_| DecodeError::Invalid("header count"))?;
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_parts<'a>(
        headers: &'a HeaderMap,
        body: &'a [Bytes],
        trailers: Option<&'a HeaderMap>,
    ) -> EntryParts<'a> {
        EntryParts {
            status: StatusCode::OK,
            headers,
            body,
            trailers,
            stored_at_ms: 1_700_000_000_000,
            ttl_ms: 60_000,
            stale: None,
            fingerprint: b"example.com/users/1\0q=",
        }
    }

    #[test]
    fn an_entry_s_own_stale_windows_round_trip() {
        let headers = HeaderMap::new();
        let body = [Bytes::from_static(b"x")];
        let plain = sample_parts(&headers, &body, None).encode().unwrap();
        assert_eq!(Entry::decode(plain.clone()).unwrap().stale, None);
        let windows = StaleWindows {
            while_revalidate: Duration::from_millis(1_500),
            if_error: Duration::ZERO,
        };
        let own = EntryParts {
            stale: Some(windows),
            ..sample_parts(&headers, &body, None)
        }
        .encode()
        .unwrap();
        assert_eq!(own.len(), plain.len() + 8);
        let entry = Entry::decode(own.clone()).unwrap();
        assert_eq!(entry.stale, Some(windows));
        assert_eq!(&entry.body[..], b"x");
        for len in 0..own.len() {
            assert!(Entry::decode(own.slice(..len)).is_err(), "prefix of {len}");
        }
        // A window past what 32 bits of milliseconds hold saturates.
        let far = EntryParts {
            stale: Some(StaleWindows {
                while_revalidate: Duration::from_secs(u64::MAX),
                if_error: Duration::from_secs(1),
            }),
            ..sample_parts(&headers, &body, None)
        }
        .encode()
        .unwrap();
        let windows = Entry::decode(far).unwrap().stale.unwrap();
        assert_eq!(
            windows.while_revalidate,
            Duration::from_millis(u64::from(u32::MAX))
        );
        assert_eq!(windows.if_error, Duration::from_secs(1));
        // A flag this version does not know is refused.
        let mut unknown = own.to_vec();
        unknown[4] |= 2;
        assert_eq!(
            Entry::decode(Bytes::from(unknown)).unwrap_err(),
            DecodeError::Invalid("flags")
        );
    }

    #[test]
    fn round_trips_status_headers_body_and_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = [Bytes::from_static(b"{\"id\":"), Bytes::from_static(b"1}")];
        let encoded = sample_parts(&headers, &body, Some(&trailers))
            .encode()
            .unwrap();

        let entry = Entry::decode(encoded).unwrap();
        assert_eq!(entry.status, StatusCode::OK);
        assert_eq!(entry.headers, headers);
        assert_eq!(&entry.body[..], b"{\"id\":1}");
        assert_eq!(entry.trailers, Some(trailers));
        assert_eq!(entry.stored_at_ms, 1_700_000_000_000);
        assert_eq!(entry.ttl_ms, 60_000);
        assert_eq!(&entry.fingerprint[..], b"example.com/users/1\0q=");
    }

    fn with_lengths(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                http::header::CONTENT_LENGTH,
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn content_length_counts_only_as_one_plain_decimal_equal_to_the_body() {
        assert!(has_content_length(&with_lengths(&["5"]), 5));
        assert!(has_content_length(&with_lengths(&["0"]), 0));
        assert!(has_content_length(&with_lengths(&["16384"]), 16384));
        for (values, length) in [
            (&["6"][..], 5),
            (&["05"][..], 5),
            (&["+5"][..], 5),
            (&[" 5"][..], 5),
            (&["5", "5"][..], 5),
            (&[][..], 0),
        ] {
            assert!(
                !has_content_length(&with_lengths(values), length),
                "{values:?}"
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        let body = [Bytes::from_static(b"hello")];
        let encoded = sample_parts(&headers, &body, None).encode().unwrap();
        for len in 0..encoded.len() {
            assert!(
                Entry::decode(encoded.slice(..len)).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn too_many_fields_are_refused() {
        let mut headers = HeaderMap::new();
        for i in 0..=MAX_FIELDS {
            headers.append(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let encoded = sample_parts(&headers, &[], None).encode().unwrap();
        assert_eq!(
            Entry::decode(encoded).unwrap_err(),
            DecodeError::Invalid("header count")
        );
    }

    #[test]
    fn other_versions_and_foreign_values_are_refused() {
        let headers = HeaderMap::new();
        let encoded = sample_parts(&headers, &[], None).encode().unwrap();
        let mut newer = encoded.to_vec();
        newer[3] = 2;
        assert_eq!(
            Entry::decode(Bytes::from(newer)).unwrap_err(),
            DecodeError::Version(2)
        );
        assert_eq!(
            Entry::decode(Bytes::from_static(b"{\"json\":true, \"padding\": 1234567}"))
                .unwrap_err(),
            DecodeError::BadMagic
        );
    }

    #[test]
    fn a_huge_declared_header_count_is_refused_without_allocating() {
        let headers = HeaderMap::new();
        let encoded = sample_parts(&headers, &[], None).encode().unwrap();
        let mut lying = encoded.to_vec();
        // header count sits right after the fingerprint
        let at = FIXED_HEADER_LEN + 4 + b"example.com/users/1\0q=".len();
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Entry::decode(Bytes::from(lying)).unwrap_err(),
            DecodeError::Truncated
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Entry::decode(Bytes::from(bytes));
        }

        #[test]
        fn decoding_mutated_entries_never_panics(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        ) {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("text/plain"));
            let body = [Bytes::from_static(b"some body")];
            let mut encoded = sample_parts(&headers, &body, Some(&headers)).encode().unwrap().to_vec();
            let len = encoded.len();
            for (at, byte) in flips {
                encoded[at % len] = byte;
            }
            let _ = Entry::decode(Bytes::from(encoded));
        }
    }
}
