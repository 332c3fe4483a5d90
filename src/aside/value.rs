//! The stored form of a typed value: a small header, then the codec's bytes.
//!
//! ```text
//! "TCV" | version u8 = 1 | codec u8 | kind u8 (0 value, 1 none)
//! stored_at_ms u64 | ttl_ms u64 | key: len u32, bytes | payload (the rest)
//! ```
//!
//! `kind` 1 is the negative-cache marker: "the source has no such value".
//! It is a header field, so no payload can ever be mistaken for it. The
//! key is checked on read (a long key's Redis name is hashed).

use bytes::{Buf, BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 3] = b"TCV";
const VERSION: u8 = 1;
const FIXED_LEN: usize = 3 + 1 + 1 + 1 + 8 + 8 + 4;

/// A decoded stored value.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) codec: u8,
    /// `None`: the negative marker.
    pub(crate) payload: Option<Bytes>,
    pub(crate) stored_at_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) key: Bytes,
}

pub(crate) fn encode(
    codec: u8,
    payload: Option<&[u8]>,
    stored_at_ms: u64,
    ttl_ms: u64,
    key: &str,
) -> Option<Bytes> {
    let body = payload.unwrap_or_default();
    let mut buf = BytesMut::with_capacity(FIXED_LEN + key.len() + body.len());
    buf.put_slice(MAGIC);
    buf.put_u8(VERSION);
    buf.put_u8(codec);
    buf.put_u8(u8::from(payload.is_none()));
    buf.put_u64(stored_at_ms);
    buf.put_u64(ttl_ms);
    buf.put_u32(u32::try_from(key.len()).ok()?);
    buf.put_slice(key.as_bytes());
    buf.put_slice(body);
    Some(buf.freeze())
}

/// Decodes a stored value; `None` for anything that is not one.
pub(crate) fn decode(mut value: Bytes) -> Option<Stored> {
    if value.len() < FIXED_LEN || &value[..3] != MAGIC {
        return None;
    }
    value.advance(3);
    if value.get_u8() != VERSION {
        return None;
    }
    let codec = value.get_u8();
    let kind = value.get_u8();
    let stored_at_ms = value.get_u64();
    let ttl_ms = value.get_u64();
    let key_len = usize::try_from(value.get_u32()).ok()?;
    if value.remaining() < key_len {
        return None;
    }
    let key = value.split_to(key_len);
    let payload = match kind {
        0 => Some(value),
        1 if value.is_empty() => None,
        _ => return None,
    };
    Some(Stored {
        codec,
        payload,
        stored_at_ms,
        ttl_ms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_values_and_the_negative_marker() {
        let value = encode(1, Some(b"{\"a\":1}"), 5, 60_000, "user:1").unwrap();
        let stored = decode(value).unwrap();
        assert_eq!(stored.codec, 1);
        assert_eq!(stored.payload.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(&stored.key[..], b"user:1");
        assert_eq!((stored.stored_at_ms, stored.ttl_ms), (5, 60_000));

        let none = decode(encode(1, None, 5, 1_000, "user:2").unwrap()).unwrap();
        assert!(none.payload.is_none());
        // An empty payload is a value, not the marker.
        let empty = decode(encode(1, Some(b""), 5, 1_000, "k").unwrap()).unwrap();
        assert_eq!(empty.payload.as_deref(), Some(&b""[..]));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Bytes::from(bytes));
        }
    }
}
