//! The entry heads this process has decoded, kept to be reused when the
//! store hands back a value that starts with the same bytes.
//!
//! Decoding an entry is the largest piece of a hit in the layer's own
//! code: building its header map parses and hashes every field name and
//! checks every value. But a hot entry is read again and again unchanged,
//! so its head (everything before the body: status, times, fingerprint,
//! headers and the body's length, see [`crate::entry`]) decodes to the same
//! thing every time. [`HeadCache::decode`] keeps, for each entry it decodes,
//! a copy of the head's bytes and the head decoded from that copy, with its
//! header map already as a hit sends it (see [`Entry::hit_ready`]). The
//! next value read for that entry whose first bytes equal the copy is
//! answered with a clone of the decoded head and the value's own body.
//!
//! Reuse never changes what is served: it is taken only when the new
//! value's head is byte for byte the one decoded before, so the result is
//! what decoding the new value would give. What follows the head (the
//! body, the trailer flag, the end) is read from the new value each time.
//! A purge, a new fill or a planted value changes the head (its stored-at
//! time at least) and is decoded afresh.
//!
//! The table is bounded: [`DEFAULT_DECODED_HEADS`] heads in 4-way sets chosen by a
//! hash of the entry's variant. A newcomer takes the way that holds its
//! entry's older head, else a free way; a full set takes it only on one
//! read in [`ADMIT_ONE_IN`], replacing its ways in turn, so that a few
//! entries more than a set holds, read in turn, do not each push the next
//! out (the ones kept are reused, the others decode as they would without
//! the table). Heads over [`MAX_HEAD_BYTES`] bytes or with more than
//! [`MAX_HEAD_FIELDS`] fields are not kept. A kept head is at most about
//! 3.5 KiB (its bytes, its map of at most 19 fields with names of its
//! own) and typically about 1 KiB, so the table holds at most about 7 MiB;
//! the empty table is 52 KiB. Each way has its own lock, taken with
//! `try_lock` only: a reader that finds it held decodes the value itself
//! rather than wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue};

use crate::entry::{DecodeError, Entry, Head};
use crate::settings::{DEFAULT_DECODED_HEADS, MAX_DECODED_HEADS};

/// Ways per set.
const WAYS: usize = 4;
/// A full set takes a newcomer on one read in this many.
const ADMIT_ONE_IN: u32 = 8;
/// The largest head kept, in bytes (a typical head, with a short
/// fingerprint and a few fields, is 100 to 300 bytes).
pub(crate) const MAX_HEAD_BYTES: usize = 512;
/// The most fields a kept head may hold.
pub(crate) const MAX_HEAD_FIELDS: usize = 16;

/// A decoded head and the bytes it was decoded from.
#[derive(Debug)]
struct Kept {
    /// The entry's tag (see [`HeadCache::decode`]).
    tag: u64,
    /// A copy of the head's bytes (not a slice of the value it came in,
    /// which would keep the store's whole read buffer alive).
    raw: Bytes,
    /// Decoded from `raw`, its headers made ready for a hit.
    head: Head,
}

#[derive(Debug, Default)]
struct Set {
    /// Each way's tag, read before its lock is tried (0: empty).
    tags: [AtomicU64; WAYS],
    ways: [Mutex<Option<Arc<Kept>>>; WAYS],
    /// The way the next newcomer takes when none is free.
    next: AtomicUsize,
}

/// The table of decoded heads (see the module docs).
#[derive(Debug)]
pub(crate) struct HeadCache {
    sets: Box<[Set]>,
    /// Decodes that reused a kept head.
    #[cfg(test)]
    reused: AtomicUsize,
}

impl Default for HeadCache {
    fn default() -> Self {
        HeadCache::with_capacity(DEFAULT_DECODED_HEADS)
    }
}

impl HeadCache {
    /// A table of `heads` heads (at most [`MAX_DECODED_HEADS`]; rounded up to
    /// whole sets, and to a power of two of them); with 0 it keeps none
    /// and every value is decoded.
    pub(crate) fn with_capacity(heads: usize) -> HeadCache {
        let sets = match heads.min(MAX_DECODED_HEADS).div_ceil(WAYS) {
            0 => 0,
            sets => sets.next_power_of_two(),
        };
        HeadCache {
            sets: (0..sets).map(|_| Set::default()).collect(),
            #[cfg(test)]
            reused: AtomicUsize::new(0),
        }
    }

    /// Decodes `value`, the stored value of the entry whose variant hashes
    /// to `tag`: with the head kept for that entry when `value` starts with
    /// its bytes, else in full (keeping its head for next time).
    ///
    /// The result equals `Entry::decode(value)` with its headers made
    /// ready for a hit ([`Entry::hit_ready`]).
    pub(crate) fn decode(&self, tag: u64, value: Bytes) -> Result<Entry, DecodeError> {
        let tag = tag.max(1);
        let Some(set) = self.set_of(tag) else {
            return Entry::decode(value);
        };
        if let Some(kept) = set.find(tag) {
            if value.starts_with(&kept.raw) {
                let rest = value.slice(kept.raw.len()..);
                let mut entry = Entry::from_head(kept.head.clone(), rest)?;
                entry.hit_ready = true;
                #[cfg(test)]
                self.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(entry);
            }
        }
        // A full set takes a newcomer only now and then, so that a few
        // more entries than a set holds, read in turn, do not each push the
        // next one out (then every read would decode twice): the four kept
        // go on being reused, and the others decode as they would without
        // the table.
        let Some(way) = set.way_for(tag) else {
            return Entry::decode(value);
        };
        let mut rest = value;
        let start = rest.clone();
        let head = Head::take(&mut rest)?;
        let head_len = start.len() - rest.len();
        if head_len > MAX_HEAD_BYTES || head.headers.len() > MAX_HEAD_FIELDS {
            return Entry::from_head(head, rest);
        }
        // Decoded a second time, from a copy of just the head's bytes: what
        // is kept then borrows nothing from the store's read buffer and
        // holds no byte more than the head (the first decode told its
        // length). This runs once per entry written, not per hit.
        let raw = Bytes::copy_from_slice(&start[..head_len]);
        let mut head = Head::take(&mut raw.clone())?;
        make_hit_ready(&mut head);
        // A clone's map is allocated to size, the decoded one's with room
        // to grow: the clone is kept, the entry gets the other. Kept only
        // if the entry is whole.
        let kept = head.clone();
        let mut entry = Entry::from_head(head, rest)?;
        entry.hit_ready = true;
        set.keep(
            way,
            Arc::new(Kept {
                tag,
                raw,
                head: kept,
            }),
        );
        Ok(entry)
    }

    /// How many heads the table can keep.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    fn set_of(&self, tag: u64) -> Option<&Set> {
        if self.sets.is_empty() {
            return None;
        }
        // The length is a power of two.
        let index = (tag as usize) & (self.sets.len() - 1);
        self.sets.get(index)
    }
}

impl Set {
    /// The way whose tag is `tag` (0: a free way).
    fn way_of(&self, tag: u64) -> Option<usize> {
        self.tags
            .iter()
            .position(|t| t.load(Ordering::Relaxed) == tag)
    }

    /// The head kept under `tag`, if any (and if its lock is free).
    fn find(&self, tag: u64) -> Option<Arc<Kept>> {
        let way = self.way_of(tag)?;
        let kept = self.ways.get(way)?.try_lock().ok()?.clone()?;
        // The tag is only a filter: what matters is the bytes, compared by
        // the caller.
        (kept.tag == tag).then_some(kept)
    }

    /// The way a head with `tag` is kept in: the one that holds the tag,
    /// else a free one, else, once in [`ADMIT_ONE_IN`] calls, the way
    /// whose turn it is; `None` when the set is full and it is not its
    /// turn.
    fn way_for(&self, tag: u64) -> Option<usize> {
        if let Some(way) = self.way_of(tag).or_else(|| self.way_of(0)) {
            return Some(way);
        }
        if fastrand::u32(..ADMIT_ONE_IN) != 0 {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % WAYS)
    }

    /// Keeps `kept` in `way` (unless another thread holds it).
    fn keep(&self, way: usize, kept: Arc<Kept>) {
        let Some(lock) = self.ways.get(way) else {
            return;
        };
        let Ok(mut slot) = lock.try_lock() else {
            return;
        };
        let tag = kept.tag;
        *slot = Some(kept);
        if let Some(t) = self.tags.get(way) {
            t.store(tag, Ordering::Relaxed);
        }
    }
}

/// Puts a kept head's headers in the shape a hit sends, so that a hit
/// clones them and replaces two values: `Content-Length` as the body's
/// length (none on a status without a body), and `Age` and `Cache-Status`
/// present, their values to be replaced. A map cloned from this one has
/// room for nothing more, so every field a hit sends is in it already.
fn make_hit_ready(head: &mut Head) {
    let headers = &mut head.headers;
    crate::entry::set_content_length(head.status, headers, head.body_len);
    let _ = headers.try_insert(header::AGE, HeaderValue::from_static("0"));
    let _ = headers.try_insert(
        crate::http::cache_status::CACHE_STATUS,
        HeaderValue::from_static("tower-cache-aside; hit"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryParts;
    use crate::http::lookup::{Cacheable, Usable};
    use crate::http::response;
    use crate::key::{KeyConfig, QueryKey};
    use crate::lease::Fill;
    use crate::util::time::Freshness;
    use http::{HeaderMap, Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use proptest::prelude::*;

    const STORED_AT: u64 = 1_700_000_000_000;

    fn encode(status: StatusCode, headers: &[(&str, &str)], body: &[u8]) -> Bytes {
        encode_at(status, headers, body, STORED_AT, None)
    }

    fn encode_at(
        status: StatusCode,
        headers: &[(&str, &str)],
        body: &[u8],
        stored_at_ms: u64,
        trailers: Option<&HeaderMap>,
    ) -> Bytes {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        EntryParts {
            status,
            headers: &map,
            body: &[Bytes::copy_from_slice(body)],
            trailers,
            stored_at_ms,
            ttl_ms: 60_000,
            stale: None,
            fingerprint: b"/a\0example.com\0",
        }
        .encode()
        .unwrap()
    }

    /// The same bytes in an allocation of their own, as a second read
    /// from the store gives them.
    fn reread(value: &Bytes) -> Bytes {
        Bytes::from(value.to_vec())
    }

    fn cacheable(is_head: bool) -> Cacheable {
        let keys = KeyConfig {
            prefix: "tca:".into(),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
        };
        let request = Request::get("/a")
            .header("host", "example.com")
            .body(())
            .unwrap();
        let key = keys.derive(&request).unwrap();
        Cacheable {
            varying: crate::http::vary::Varying::of_base(&key),
            key,
            is_head,
            route: Default::default(),
            requested_ms: 0,
            revalidation: None,
            max_variants: 1,
            fill: Fill::default(),
        }
    }

    /// What a hit on `entry` sends: status, headers, body.
    async fn served(
        entry: Entry,
        is_head: bool,
        conditional: Option<&HeaderMap>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let freshness = Freshness::at(entry.stored_at_ms, entry.ttl_ms, STORED_AT + 1_500);
        let usable = Usable {
            entry,
            freshness,
            on_error: false,
        };
        let response = response::hit::<Full<Bytes>>(
            &crate::http::policy::PolicyConfig::for_tests(),
            &cacheable(is_head),
            usable,
            conditional,
            response::Served::Fresh,
        );
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn a_reused_head_serves_what_a_full_decode_serves() {
        let mut if_none_match = HeaderMap::new();
        if_none_match.insert(
            http::header::IF_NONE_MATCH,
            HeaderValue::from_static("\"v1\""),
        );
        let many: Vec<(String, String)> = (0..=MAX_HEAD_FIELDS)
            .map(|i| (format!("x-field-{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let json = ("content-type", "application/json");
        let cases: Vec<(&str, Bytes, bool, Option<&HeaderMap>)> = vec![
            (
                "right length",
                encode(StatusCode::OK, &[json, ("content-length", "5")], b"hello"),
                false,
                None,
            ),
            (
                "no length",
                encode(StatusCode::OK, &[json], b"hello"),
                false,
                None,
            ),
            (
                "length spelt otherwise",
                encode(StatusCode::OK, &[("content-length", "05")], b"hello"),
                false,
                None,
            ),
            (
                "two lengths",
                encode(
                    StatusCode::OK,
                    &[("content-length", "5"), ("content-length", "5")],
                    b"hello",
                ),
                false,
                None,
            ),
            (
                "no content",
                encode(StatusCode::NO_CONTENT, &[("content-length", "0")], b""),
                false,
                None,
            ),
            (
                "not found",
                encode(StatusCode::NOT_FOUND, &[json], b"{}"),
                false,
                None,
            ),
            (
                "head",
                encode(StatusCode::OK, &[json], b"hello"),
                true,
                None,
            ),
            (
                "etag matched",
                encode(StatusCode::OK, &[json, ("etag", "\"v1\"")], b"hello"),
                false,
                Some(&if_none_match),
            ),
            (
                "etag not matched",
                encode(StatusCode::OK, &[json, ("etag", "\"v2\"")], b"hello"),
                false,
                Some(&if_none_match),
            ),
            (
                "stored age and cache-status",
                encode(
                    StatusCode::OK,
                    &[("age", "7"), ("cache-status", "upstream; hit")],
                    b"hello",
                ),
                false,
                None,
            ),
            (
                "too many fields to keep",
                encode(StatusCode::OK, &many, b"hello"),
                false,
                None,
            ),
            (
                "trailers",
                encode_at(
                    StatusCode::OK,
                    &[json],
                    b"hello",
                    STORED_AT,
                    Some(&trailers),
                ),
                false,
                None,
            ),
        ];
        for (name, value, is_head, conditional) in cases {
            let heads = HeadCache::default();
            let plain = served(Entry::decode(value.clone()).unwrap(), is_head, conditional).await;
            let first = heads.decode(7, value.clone()).unwrap();
            let first = served(first, is_head, conditional).await;
            let again = heads.decode(7, reread(&value)).unwrap();
            let again = served(again, is_head, conditional).await;
            assert_eq!(first, plain, "{name}: first read");
            assert_eq!(again, plain, "{name}: read again");
        }
    }

    #[test]
    fn a_head_is_reused_only_for_the_same_bytes() {
        let heads = HeadCache::default();
        let first = encode(StatusCode::OK, &[("etag", "\"v1\"")], b"one");
        let kept = heads.decode(7, first.clone()).unwrap();
        // Read again, in another buffer: the fingerprint is the kept
        // copy's, not a slice of the new value.
        let again = heads.decode(7, reread(&first)).unwrap();
        assert_eq!(again.fingerprint.as_ptr(), kept.fingerprint.as_ptr());
        assert!(again.hit_ready);
        assert_eq!(heads.reused.load(Ordering::Relaxed), 1);

        // A fill in the same millisecond with another body: the head is
        // the same bytes (the length too), the body is the new value's.
        let same_head = encode(StatusCode::OK, &[("etag", "\"v1\"")], b"two");
        assert_eq!(&heads.decode(7, same_head).unwrap().body[..], b"two");

        // Another head under the same tag (a purge and a new fill): decoded
        // afresh and kept in place of the old one.
        let newer = encode_at(
            StatusCode::OK,
            &[("etag", "\"v2\"")],
            b"three",
            STORED_AT + 1,
            None,
        );
        let entry = heads.decode(7, newer.clone()).unwrap();
        assert_eq!(entry.headers["etag"], "\"v2\"");
        assert_eq!(entry.stored_at_ms, STORED_AT + 1);
        assert_eq!(&entry.body[..], b"three");
        let again = heads.decode(7, reread(&newer)).unwrap();
        assert_eq!(again.fingerprint.as_ptr(), entry.fingerprint.as_ptr());
    }

    #[test]
    fn a_kept_head_does_not_excuse_a_broken_tail() {
        let heads = HeadCache::default();
        let value = encode(StatusCode::OK, &[], b"hello");
        heads.decode(7, value.clone()).unwrap();
        let mut longer = value.to_vec();
        longer.push(0);
        assert_eq!(
            heads.decode(7, Bytes::from(longer)).unwrap_err(),
            DecodeError::TrailingBytes
        );
        for len in 0..value.len() {
            assert!(
                heads.decode(7, value.slice(..len)).is_err(),
                "prefix of {len}"
            );
        }
        let mut flag = value.to_vec();
        *flag.last_mut().unwrap() = 9;
        assert_eq!(
            heads.decode(7, Bytes::from(flag)).unwrap_err(),
            DecodeError::Invalid("trailer flag")
        );
    }

    #[test]
    fn more_entries_than_a_set_holds_are_each_served_their_own() {
        let heads = HeadCache::with_capacity(WAYS);
        let values: Vec<Bytes> = (0..3 * WAYS as u64)
            .map(|i| encode_at(StatusCode::OK, &[], &i.to_be_bytes(), STORED_AT + i, None))
            .collect();
        for _ in 0..3 {
            for (i, value) in values.iter().enumerate() {
                // Tags that all fall in the one set.
                let entry = heads.decode(i as u64 + 1, reread(value)).unwrap();
                assert_eq!(entry.stored_at_ms, STORED_AT + i as u64);
                assert_eq!(&entry.body[..], &(i as u64).to_be_bytes());
            }
        }
    }

    #[test]
    fn a_full_set_keeps_reusing_what_it_holds() {
        fastrand::seed(7);
        let heads = HeadCache::with_capacity(WAYS);
        let values: Vec<Bytes> = (0..WAYS as u64 + 1)
            .map(|i| encode_at(StatusCode::OK, &[], b"x", STORED_AT + i, None))
            .collect();
        let rounds = 100;
        for _ in 0..rounds {
            // One entry more than the set holds, read in turn.
            for (i, value) in values.iter().enumerate() {
                let entry = heads.decode(i as u64 + 1, reread(value)).unwrap();
                assert_eq!(entry.stored_at_ms, STORED_AT + i as u64);
            }
        }
        // Replacing on every read would reuse nothing; here the set's four
        // are reused but for the reads after a newcomer was let in.
        let reused = heads.reused.load(Ordering::Relaxed);
        assert!(reused > rounds * WAYS * 3 / 4, "reused {reused}");
    }

    #[test]
    fn threads_sharing_a_table_each_get_their_own_values() {
        // Two sets' worth of entries, each written again now and then, read
        // by four threads at once: whatever the locks and the sets do, each
        // decode gives back what its own value holds.
        let heads = HeadCache::with_capacity(2 * WAYS);
        let value = |key: u64, version: u64| {
            encode_at(
                StatusCode::OK,
                &[
                    ("x-key", &key.to_string()),
                    ("x-version", &version.to_string()),
                ],
                &(key * 1000 + version).to_be_bytes(),
                STORED_AT + version,
                None,
            )
        };
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let heads = &heads;
                scope.spawn(move || {
                    for i in 0..2_000u64 {
                        let key = (i + thread) % (3 * WAYS as u64);
                        let version = (i / 97) % 3;
                        let entry = heads.decode(key + 1, value(key, version)).unwrap();
                        assert_eq!(&entry.body[..], &(key * 1000 + version).to_be_bytes());
                        assert_eq!(entry.headers["x-key"], key.to_string().as_str());
                        assert_eq!(entry.headers["x-version"], version.to_string().as_str());
                        assert_eq!(entry.stored_at_ms, STORED_AT + version);
                    }
                });
            }
        });
        assert!(heads.reused.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_table_of_no_heads_decodes_everything() {
        let heads = HeadCache::with_capacity(0);
        let value = encode(StatusCode::OK, &[], b"hello");
        let first = heads.decode(7, value.clone()).unwrap();
        let again = heads.decode(7, reread(&value)).unwrap();
        assert!(!again.hit_ready);
        assert_eq!(heads.reused.load(Ordering::Relaxed), 0);
        assert_ne!(again.fingerprint.as_ptr(), first.fingerprint.as_ptr());
        assert_eq!(&again.body[..], b"hello");
    }

    proptest! {
        #[test]
        fn decoding_through_kept_heads_agrees_with_a_full_decode(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            tag in 0u64..4,
        ) {
            // One table for every case, so that mutated values meet heads
            // kept from others.
            static HEADS: std::sync::OnceLock<HeadCache> = std::sync::OnceLock::new();
            let heads = HEADS.get_or_init(|| HeadCache::with_capacity(8));
            let mut value = encode(
                StatusCode::OK,
                &[("content-type", "text/plain"), ("content-length", "9")],
                b"some body",
            )
            .to_vec();
            let len = value.len();
            for (at, byte) in flips {
                value[at % len] = byte;
            }
            let value = Bytes::from(value);
            let plain = Entry::decode(value.clone());
            let reused = heads.decode(tag, value);
            prop_assert_eq!(plain.is_ok(), reused.is_ok());
            if let (Ok(plain), Ok(reused)) = (plain, reused) {
                prop_assert_eq!(plain.status, reused.status);
                prop_assert_eq!(plain.body, reused.body);
                prop_assert_eq!(plain.fingerprint, reused.fingerprint);
                prop_assert_eq!(plain.stored_at_ms, reused.stored_at_ms);
                prop_assert_eq!(plain.ttl_ms, reused.ttl_ms);
                prop_assert_eq!(plain.trailers, reused.trailers);
                for (name, value) in &plain.headers {
                    if name != header::CONTENT_LENGTH {
                        prop_assert!(reused.headers.get_all(name).iter().any(|v| v == value));
                    }
                }
            }
        }
    }
}
