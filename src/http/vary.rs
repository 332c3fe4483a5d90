//! The layer's side of `Vary` (the key side is [`crate::key::vary`]): which
//! variant a request is looked up under, what the layer remembers of the
//! fields each resource varies on, and where a response that varies is
//! stored.
//!
//! A request is looked up under the variant the memo names for its base
//! variant, or under the base variant itself. A vary record found there
//! sends the lookup, once, to the variant it names (and teaches the memo).
//! A response is stored under the variant its own `Vary` gives, which is
//! the looked-up one unless the origin started (or stopped) varying, or
//! varies on other fields now; every fill of a varied response writes the
//! resource's vary record again, fenced by the same lease as the entry.
//!
//! The memo only chooses where to look: an entry is served only when its
//! fingerprint (the full key material, the vary values with it) is the
//! request's, and a wrong or forgotten memo costs a miss or a round trip.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::HeaderMap;

use crate::key::{DerivedKey, EntryKey, KeyConfig, VaryNames};
use crate::lease::Fill;

/// Base variants whose names the memo keeps (a `[u8; 32]` key and an
/// `Arc` each).
const MEMO_ENTRIES: u64 = 16 * 1024;

/// The fields each resource's responses were seen to vary on, by base
/// variant, in this process.
pub(crate) struct VaryMemo {
    /// Whether any response has varied yet: until then a lookup does not
    /// consult the map.
    seen: AtomicBool,
    names: moka::sync::Cache<[u8; 32], VaryNames>,
}

impl std::fmt::Debug for VaryMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaryMemo")
            .field("entries", &self.names.entry_count())
            .finish()
    }
}

impl Default for VaryMemo {
    fn default() -> Self {
        VaryMemo {
            seen: AtomicBool::new(false),
            names: moka::sync::Cache::new(MEMO_ENTRIES),
        }
    }
}

impl VaryMemo {
    /// The names the base variant `base` was last seen to vary on.
    pub(crate) fn get(&self, base: &[u8; 32]) -> Option<VaryNames> {
        if !self.seen.load(Ordering::Relaxed) {
            return None;
        }
        self.names.get(base)
    }

    /// Remembers what the base variant `base` varies on (`None`: nothing
    /// past the configured fields).
    pub(crate) fn set(&self, base: &[u8; 32], names: Option<&VaryNames>) {
        match names {
            Some(names) => {
                self.seen.store(true, Ordering::Relaxed);
                self.names.insert(*base, names.clone());
            }
            None if self.seen.load(Ordering::Relaxed) => self.names.invalidate(base),
            None => {}
        }
    }
}

/// Where a request's key stands among its resource's variants.
#[derive(Debug)]
pub(crate) struct Varying {
    /// The base variant: the key without the fields a `Vary` named.
    pub(crate) base: [u8; 32],
    /// How much of the key's material is the base variant's.
    pub(crate) base_len: usize,
    /// The fields the key was derived with (`None`: it is the base).
    pub(crate) names: Option<VaryNames>,
    /// The request's header fields, kept on a miss that may be stored:
    /// a response that varies on other fields than `names` is stored
    /// under the variant they give.
    pub(crate) request: Option<HeaderMap>,
    /// Whether the lookup went back to the base variant once already.
    pub(crate) looked_again: bool,
}

impl Varying {
    /// A request's position for its base key `key`.
    pub(crate) fn of_base(key: &DerivedKey) -> Varying {
        Varying {
            base: *key.key.variant_bytes(),
            base_len: key.fingerprint.len(),
            names: None,
            request: None,
            looked_again: false,
        }
    }

    /// Whether a miss of this variant should be looked up again from the
    /// base variant: the fill it waited on went elsewhere (the resource
    /// varies otherwise now), or was let go (its answer may have been one
    /// that varies otherwise, which its holder could not store). Once.
    pub(crate) fn should_look_again<T>(&self, fill: &Fill<T>) -> bool {
        self.names.is_some()
            && !self.looked_again
            && (fill.filled_elsewhere || fill.detail == Some("fill-released"))
    }

    /// The base variant's entry key (where the vary record is kept).
    pub(crate) fn base_key(&self, key: &DerivedKey) -> EntryKey {
        key.key.with_variant(self.base)
    }

    /// The key of the variant `names` give within `key`'s resource.
    pub(crate) fn key_for(
        &self,
        key: &DerivedKey,
        names: Option<&VaryNames>,
        request: &HeaderMap,
    ) -> DerivedKey {
        KeyConfig::variant(key, self.base_len, names, request)
    }
}

/// Where a response is stored, and the vary record written with it.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The entry's key (the looked-up one, or the variant the response's
    /// `Vary` gives).
    pub(crate) key: DerivedKey,
    /// The base variant and its record, when the response varies.
    pub(crate) record: Option<(EntryKey, Bytes)>,
}

/// Where the response to the request looked up as `key` is stored, given
/// the fields its `Vary` names past the configured ones; `None` when it
/// cannot be (its fields differ from the looked-up ones and the request's
/// were not kept). The memo learns the response's fields.
pub(crate) fn place(
    memo: &VaryMemo,
    key: DerivedKey,
    varying: &Varying,
    vary: Option<&VaryNames>,
) -> Option<Placement> {
    if varying.names.as_ref() != vary {
        memo.set(&varying.base, vary);
    }
    let record = vary.map(|names| (varying.base_key(&key), names.record()));
    if varying.names.as_ref() == vary {
        return Some(Placement { key, record });
    }
    let request = varying.request.as_ref()?;
    Some(Placement {
        key: varying.key_for(&key, vary, request),
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::QueryKey;
    use http::Request;

    fn names(vary: &str) -> VaryNames {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::VARY, vary.parse().unwrap());
        VaryNames::of_response(&headers, &[]).unwrap().unwrap()
    }

    #[test]
    fn a_response_is_placed_where_its_own_vary_says() {
        let keys = KeyConfig {
            prefix: "tca:".into(),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
        };
        let request = Request::get("/a?q=1")
            .header("host", "example.com")
            .header("accept-language", "fr")
            .body(())
            .unwrap();
        let base = keys.derive(&request).unwrap();
        let memo = VaryMemo::default();
        let language = names("accept-language");

        // Looked up under the base, no Vary: stored there, no record.
        let mut varying = Varying::of_base(&base);
        let placed = place(&memo, base.clone(), &varying, None).unwrap();
        assert_eq!(placed.key.key, base.key);
        assert!(placed.record.is_none());

        // Looked up under the base, the response varies: without the
        // request's fields it cannot be placed; with them it goes under
        // the variant, whose material extends the base's, and the record
        // goes under the base. The memo learns the names.
        assert!(place(&memo, base.clone(), &varying, Some(&language)).is_none());
        assert_eq!(memo.get(&varying.base), Some(language.clone()));
        varying.request = Some(request.headers().clone());
        let placed = place(&memo, base.clone(), &varying, Some(&language)).unwrap();
        assert_ne!(placed.key.key, base.key);
        assert_eq!(placed.key.key.resource(), base.key.resource());
        assert!(placed.key.fingerprint.starts_with(&base.fingerprint));
        let (at, record) = placed.record.unwrap();
        assert_eq!(at, base.key);
        assert_eq!(VaryNames::from_record(&record), Some(language.clone()));

        // Looked up under that variant, the same Vary: stored in place.
        let variant = placed.key;
        varying.names = Some(language.clone());
        let again = place(&memo, variant.clone(), &varying, Some(&language)).unwrap();
        assert_eq!(again.key.key, variant.key);
        assert!(again.record.is_some());

        // It stopped varying: stored under the base, the memo forgets.
        let whole = place(&memo, variant.clone(), &varying, None).unwrap();
        assert_eq!(whole.key.key, base.key);
        assert_eq!(whole.key.fingerprint, base.fingerprint);
        assert!(whole.record.is_none());
        assert_eq!(memo.get(&varying.base), None);
    }
}
