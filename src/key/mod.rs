//! Route-derived cache keys.
//!
//! A request maps to a *resource* (its path) and, within it, to a *variant*
//! (authority, canonical query and the configured vary-header values). GET
//! and HEAD map to the same key. The resource stays readable in the key so
//! that purges can name it, exactly or with a glob; the variant is a
//! fixed-length hash of its material.
//!
//! The authority is part of the variant, not of the resource: purges (by
//! rule, by `Location`, from a job) name paths, and a job rarely knows which
//! host names served them. So one purge of a path removes its entries for
//! every host, in one step on the resource, with no scan; the hosts' entries
//! still never mix.
//!
//! Everything here comes from the request and is untrusted, so the mapping
//! is built to be safe for any byte:
//!
//! - The resource is the decoded path (see [`target`]: one for every
//!   spelling), percent-encoded with a small safe alphabet. `%` itself is
//!   encoded, so the encoding of decoded paths is injective (`/a*` and
//!   `/a%2A` are one resource, the literal `*`; `/a%252A` is the literal
//!   `%2A`), and the encoded text never holds a Redis glob character
//!   (`*`, `?`, `[`, `]`, `\`) or a hash-tag brace (`{`, `}`). A purge built
//!   from request text therefore matches only that literal resource.
//! - A resource longer than [`MAX_RESOURCE_LEN`] keeps a readable head and
//!   ends in `#` plus a hash of the whole (`#` is always encoded elsewhere,
//!   so the form cannot be forged by a path).
//! - The full key material (path, authority, query, vary values) is stored inside
//!   the entry as its fingerprint and compared on every hit, so neither a
//!   hash collision nor a value planted under the wrong key is ever served.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, Request};

pub(crate) use self::encode::hex32;
use self::encode::{encode_into, encode_query_into};
pub use self::pattern::ResourcePattern;
use self::pattern::HASHED_HEAD_LEN;
pub(crate) use self::target::{authority_form, route_form, Malformed};
pub(crate) use self::vary::VaryNames;
use crate::util::inline::InlineBytes;

mod encode;
mod pattern;
mod target;
mod vary;

/// Longest encoded resource kept verbatim in a key.
pub(crate) const MAX_RESOURCE_LEN: usize = 512;
/// The one variant of a typed cache key.
const NAMED_VARIANT: [u8; 32] = [b'0'; 32];
/// One cached resource: every variant (host, query, vary values) of one path.
///
/// Built by the layer from a request; a [`Store`](crate::Store) turns it into
/// its own key layout (for Redis, `<prefix>{<resource>}:…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    prefix: Arc<str>,
    /// ASCII only (the resource encoding).
    resource: ResourceText,
}

impl ResourceKey {
    /// The key prefix configured on the layer (e.g. `tca:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The decoded path, in the resource encoding. Never contains `{`, `}`, `*`, `?`,
    /// `[`, `]`, `\`, white space or control bytes.
    pub fn resource(&self) -> &str {
        std::str::from_utf8(&self.resource).unwrap_or_default()
    }

    /// The encoded path's bytes, without [`resource`](Self::resource)'s
    /// UTF-8 check (for the store's key names, built on every call).
    pub(crate) fn resource_bytes(&self) -> &[u8] {
        &self.resource
    }
}

/// One cached response variant of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    resource: ResourceKey,
    /// 32 lowercase hex digits, inline.
    variant: [u8; 32],
}

impl EntryKey {
    /// The resource this variant belongs to.
    pub fn resource(&self) -> &ResourceKey {
        &self.resource
    }

    /// The variant: 32 lowercase hex digits.
    pub fn variant(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.variant).unwrap_or_default()
    }

    /// The variant's bytes, without [`variant`](Self::variant)'s UTF-8
    /// check.
    pub(crate) fn variant_bytes(&self) -> &[u8; 32] {
        &self.variant
    }

    /// Another variant of this resource (32 lowercase hex digits, as
    /// a key's own variant bytes are).
    pub(crate) fn with_variant(&self, variant: [u8; 32]) -> EntryKey {
        EntryKey {
            resource: self.resource.clone(),
            variant,
        }
    }
}

/// How the query string takes part in the key.
#[derive(Debug, Clone, Default)]
pub(crate) enum QueryKey {
    /// Every parameter, sorted by name (values of one name keep their order).
    #[default]
    All,
    /// Only these parameter names (compared after percent-decoding).
    Allow(Vec<String>),
    /// Every parameter but these names.
    Ignore(Vec<String>),
}

/// The key-derivation part of the layer's configuration.
#[derive(Debug, Clone)]
pub(crate) struct KeyConfig {
    pub(crate) prefix: Arc<str>,
    pub(crate) include_authority: bool,
    pub(crate) query: QueryKey,
    pub(crate) vary_by: Vec<HeaderName>,
}

/// A request's key and the material it was derived from.
#[derive(Debug, Clone)]
pub(crate) struct DerivedKey {
    pub(crate) key: EntryKey,
    /// The full key material; stored in the entry and checked on hits.
    pub(crate) fingerprint: Material,
}

/// Key material, inline up to 128 bytes: a path, a host and a short
/// query fit, so most requests derive their key without allocating for it.
pub(crate) type Material = InlineBytes<128>;

/// Resource text, inline up to 64 bytes.
type ResourceText = InlineBytes<64>;

impl KeyConfig {
    /// Derives the resource key of a path as it appears in a request
    /// target (still percent-encoded): every spelling of one resource gives
    /// the same key (see [`target`]).
    pub(crate) fn resource_key(&self, path: &str) -> ResourceKey {
        self.shorten(resource_text(path))
    }

    /// The resource key of an application key (the typed cache's keys):
    /// encoded like a path, so that patterns over them are safe too.
    pub(crate) fn named_key(&self, name: &str) -> EntryKey {
        let mut full = ResourceText::with_capacity(name.len());
        encode_into(&mut full, name.as_bytes());
        EntryKey {
            resource: self.shorten(full),
            variant: NAMED_VARIANT,
        }
    }

    /// The resource key for an encoded text, hashed when it is long.
    fn shorten(&self, full: ResourceText) -> ResourceKey {
        let resource = if full.len() > MAX_RESOURCE_LEN {
            let mut short = ResourceText::with_capacity(HASHED_HEAD_LEN + 33);
            short.extend_from_slice(&full[..HASHED_HEAD_LEN]);
            short.push(b'#');
            short.extend_from_slice(&hex32(xxhash_rust::xxh3::xxh3_128(&full)));
            short
        } else {
            full
        };
        ResourceKey {
            prefix: self.prefix.clone(),
            resource,
        }
    }

    /// A pattern over application keys from pieces: literal text is
    /// encoded like a key, `None` stands for a `*` wildcard.
    pub(crate) fn resource_pattern<'a>(
        &self,
        pieces: impl IntoIterator<Item = Option<&'a str>>,
    ) -> ResourcePattern {
        self.pattern(pieces, |text| std::borrow::Cow::Borrowed(text.as_bytes()))
    }

    /// A pattern over request paths from pieces: literal text is a path's
    /// text, decoded and encoded as [`resource_key`](Self::resource_key)
    /// does, so that the pattern meets every spelling; `None` stands for a
    /// `*` wildcard. A decoded `*` is a literal one.
    pub(crate) fn path_pattern<'a>(
        &self,
        pieces: impl IntoIterator<Item = Option<&'a str>>,
    ) -> ResourcePattern {
        self.pattern(pieces, |text| target::decode(text.as_bytes(), false).0)
    }

    fn pattern<'a>(
        &self,
        pieces: impl IntoIterator<Item = Option<&'a str>>,
        literal: impl Fn(&'a str) -> std::borrow::Cow<'a, [u8]>,
    ) -> ResourcePattern {
        let mut pattern = String::new();
        for piece in pieces {
            match piece {
                Some(text) => encode_into(&mut pattern, &literal(text)),
                None => pattern.push('*'),
            }
        }
        ResourcePattern::new(self.prefix.clone(), pattern)
    }

    /// Derives the entry key of a request, or [`Malformed`] when its
    /// target's escapes are malformed or decode to bytes that are not
    /// UTF-8 or hold a NUL (the layer then passes it through uncached).
    ///
    /// The resource is the decoded path (one for every spelling, so a
    /// purge through any spelling reaches them all). The variant's material
    /// keeps the path as it was spelled: an app that routes on the raw
    /// path (axum matches `/us%65rs/2` against no route, and answers 404)
    /// may answer two spellings differently, and one spelling's answer is
    /// never served for another.
    pub(crate) fn derive<B>(&self, req: &Request<B>) -> Result<DerivedKey, Malformed> {
        let path = req.uri().path();
        let spelled = encoded_path(path.as_bytes());
        // A path without `%` is its own resource; one with a `%` came out
        // of the encoding longer (it escapes `%`), which is cheaper to see
        // than to look for it again.
        let resource = if spelled.len() != path.len().max(1) {
            let (decoded, malformed) = target::decode(path.as_bytes(), false);
            target::well_formed(&decoded, malformed)?;
            Some(encoded_path(&decoded))
        } else {
            None
        };

        // Material: the path as spelled, the authority, the canonical
        // query, then each vary header. Separators are bytes that can occur
        // in none of them (the path and query are encoded; header values
        // exclude 0x00-0x02), so distinct requests never share material.
        let authority = if self.include_authority {
            target::authority_form(request_authority(req), req.uri().scheme_str())
        } else {
            std::borrow::Cow::Borrowed("")
        };
        let query = req.uri().query().unwrap_or("");
        let mut material =
            Material::with_capacity(spelled.len() + authority.len() + query.len() + 4);
        material.extend_from_slice(&spelled);
        material.push(0);
        material.extend_from_slice(authority.as_bytes());
        material.push(0);
        self.push_canonical_query(&mut material, query)?;
        for name in &self.vary_by {
            material.push(0);
            material.extend_from_slice(name.as_str().as_bytes());
            for value in req.headers().get_all(name) {
                material.push(1);
                material.extend_from_slice(value.as_bytes());
            }
            material.push(2);
        }
        let variant = hex32(xxhash_rust::xxh3::xxh3_128(&material));
        Ok(DerivedKey {
            key: EntryKey {
                resource: self.shorten(resource.unwrap_or(spelled)),
                variant,
            },
            fingerprint: material,
        })
    }

    /// The key of another variant of `key`'s resource, whose material is
    /// the first `base_len` bytes of `key`'s (its base variant's: see
    /// [`vary`]) followed by the values `request` has for `names`; the
    /// base variant itself when `names` is `None`.
    pub(crate) fn variant(
        key: &DerivedKey,
        base_len: usize,
        names: Option<&VaryNames>,
        request: &HeaderMap,
    ) -> DerivedKey {
        let base = &key.fingerprint[..base_len.min(key.fingerprint.len())];
        let mut material = Material::with_capacity(base.len() + 64);
        material.extend_from_slice(base);
        if let Some(names) = names {
            names.push_material(&mut material, request);
        }
        DerivedKey {
            key: EntryKey {
                resource: key.key.resource.clone(),
                variant: hex32(xxhash_rust::xxh3::xxh3_128(&material)),
            },
            fingerprint: material,
        }
    }

    /// Appends the query's parameters, decoded as a form decoder does,
    /// filtered by the configured names, sorted by name (values of one
    /// name keep their order, which may matter) and encoded one way.
    fn push_canonical_query(&self, out: &mut Material, query: &str) -> Result<(), Malformed> {
        if query.is_empty() {
            return Ok(());
        }
        let mut params = target::query_pairs(query)?;
        match &self.query {
            QueryKey::All => {}
            QueryKey::Allow(names) => {
                params.retain(|(name, _)| names.iter().any(|n| n.as_bytes() == name.as_ref()))
            }
            QueryKey::Ignore(names) => {
                params.retain(|(name, _)| !names.iter().any(|n| n.as_bytes() == name.as_ref()))
            }
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (name, value)) in params.iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            encode_query_into(out, name);
            out.push(b'=');
            encode_query_into(out, value);
        }
        Ok(())
    }
}

/// The authority of a request: from the target URI (HTTP/2, absolute form)
/// or else the `Host` header. Empty when neither is there or readable.
pub(crate) fn request_authority<B>(req: &Request<B>) -> &str {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("")
}

/// A path's bytes in the resource encoding (`/` for an empty one).
fn encoded_path(path: &[u8]) -> ResourceText {
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    // At least the path's length (escapes make it longer); not counted
    // exactly, which would read the path twice.
    let mut full = ResourceText::with_capacity(path.len());
    encode_into(&mut full, path);
    full
}

/// A path's resource text: its decoded bytes (malformed escapes kept as
/// they are) in the resource encoding.
fn resource_text(path: &str) -> ResourceText {
    encoded_path(&target::decode(path.as_bytes(), false).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> KeyConfig {
        KeyConfig {
            prefix: Arc::from("tca:"),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
        }
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri)
            .header("host", "Example.COM")
            .body(())
            .unwrap()
    }

    #[test]
    fn resource_is_the_path_and_hosts_are_variants() {
        let key = config().derive(&get("/users/1?b=2&a=1")).unwrap().key;
        assert_eq!(key.resource().resource(), "/users/1");
        let other_host = Request::get("/users/1?b=2&a=1")
            .header("host", "example.org")
            .body(())
            .unwrap();
        let other = config().derive(&other_host).unwrap().key;
        assert_eq!(other.resource(), key.resource());
        assert_ne!(other.variant(), key.variant());
        let same_host_other_case = Request::get("/users/1?a=1&b=2")
            .header("host", "EXAMPLE.com")
            .body(())
            .unwrap();
        assert_eq!(config().derive(&same_host_other_case).unwrap().key, key);
        assert_eq!(key.resource().prefix(), "tca:");
        assert_eq!(key.variant().len(), 32);
    }

    #[test]
    fn query_order_does_not_matter_but_repeated_values_keep_order() {
        let c = config();
        assert_eq!(
            c.derive(&get("/s?b=2&a=1")).unwrap().key,
            c.derive(&get("/s?a=1&&b=2")).unwrap().key
        );
        assert_ne!(
            c.derive(&get("/s?a=1&a=2")).unwrap().key,
            c.derive(&get("/s?a=2&a=1")).unwrap().key
        );
    }

    #[test]
    fn allowlist_and_ignore_list_filter_by_decoded_name() {
        let mut c = config();
        c.query = QueryKey::Allow(vec!["page".into()]);
        assert_eq!(
            c.derive(&get("/s?page=2&utm=x")).unwrap().key,
            c.derive(&get("/s?page=2")).unwrap().key
        );
        assert_ne!(
            c.derive(&get("/s?p%61ge=2")).unwrap().key,
            c.derive(&get("/s")).unwrap().key,
            "an encoded allowed name is still allowed"
        );
        c.query = QueryKey::Ignore(vec!["utm source".into()]);
        assert_eq!(
            c.derive(&get("/s?page=2&utm+source=x")).unwrap().key,
            c.derive(&get("/s?page=2")).unwrap().key
        );
    }

    #[test]
    fn vary_headers_split_variants() {
        let mut c = config();
        c.vary_by = vec![header::ACCEPT_LANGUAGE];
        let en = Request::get("/x")
            .header("accept-language", "en")
            .body(())
            .unwrap();
        let fr = Request::get("/x")
            .header("accept-language", "fr")
            .body(())
            .unwrap();
        let none = Request::get("/x").body(()).unwrap();
        let empty = Request::get("/x")
            .header("accept-language", "")
            .body(())
            .unwrap();
        let keys = [&en, &fr, &none, &empty].map(|r| c.derive(r).unwrap().key.variant);
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
            }
        }
    }

    #[test]
    fn authority_can_be_left_out() {
        let mut c = config();
        c.include_authority = false;
        let other_host = Request::get("/users/1")
            .header("host", "example.org")
            .body(())
            .unwrap();
        assert_eq!(
            c.derive(&get("/users/1")).unwrap().key,
            c.derive(&other_host).unwrap().key
        );
    }

    #[test]
    fn keys_with_long_material_are_derived_like_short_ones() {
        let c = config();
        let long_query = format!("/search?{}", "q=x&".repeat(60));
        let a = c.derive(&get(&long_query)).unwrap();
        let b = c.derive(&get(&long_query)).unwrap();
        assert!(a.fingerprint.spilled());
        // A resource past its inline room (64 bytes) is kept whole.
        let path = format!("/{}", "segment/".repeat(20));
        let key = c.derive(&get(&path)).unwrap().key;
        assert_eq!(key.resource().resource(), path);
        assert_eq!(key, c.derive(&get(&path)).unwrap().key);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.key, b.key);
        let upper = Request::get("/users/1")
            .header("host", "EXAMPLE.com")
            .body(())
            .unwrap();
        let lower = Request::get("/users/1")
            .header("host", "example.com")
            .body(())
            .unwrap();
        assert_eq!(
            c.derive(&upper).unwrap().fingerprint,
            c.derive(&lower).unwrap().fingerprint
        );
    }

    #[test]
    fn a_host_cannot_pose_as_part_of_the_path() {
        let c = config();
        let forged = Request::get("/1")
            .header("host", "example.com/users")
            .body(())
            .unwrap();
        let real = get("/users/1");
        assert_ne!(
            c.derive(&forged).unwrap().fingerprint,
            c.derive(&real).unwrap().fingerprint
        );
        assert_ne!(c.derive(&forged).unwrap().key, c.derive(&real).unwrap().key);
    }

    #[test]
    fn glob_characters_and_percent_are_encoded() {
        let c = config();
        let star = c.derive(&get("/users/*")).unwrap().key;
        let escaped = c.derive(&get("/users/%2A")).unwrap().key;
        let percent = c.derive(&get("/users/%252A")).unwrap().key;
        assert_eq!(star.resource().resource(), "/users/%2A");
        assert_eq!(
            escaped.resource(),
            star.resource(),
            "one resource, two spellings"
        );
        assert_ne!(
            escaped.variant(),
            star.variant(),
            "each spelling its own entry"
        );
        assert_eq!(percent.resource().resource(), "/users/%252A");
        let brackets = c.resource_key("/a[b]\\{c}?");
        assert_eq!(brackets.resource(), "/a%5Bb%5D%5C%7Bc%7D%3F");
    }

    #[test]
    fn long_resources_are_hashed_and_stay_distinct() {
        let c = config();
        let long_a = format!("/{}", "a".repeat(2000));
        let long_b = format!("/{}b", "a".repeat(1999));
        let a = c.derive(&get(&long_a)).unwrap().key;
        let b = c.derive(&get(&long_b)).unwrap().key;
        assert!(a.resource().resource().len() < MAX_RESOURCE_LEN);
        assert!(a.resource().resource().contains('#'));
        assert_ne!(a.resource(), b.resource());
    }

    #[test]
    fn patterns_encode_literals_and_keep_wildcards() {
        let c = config();
        let p = c.resource_pattern([Some("/teams/"), None, Some("/members")]);
        assert_eq!(p.pattern(), "/teams/*/members");
        assert!(p.matches("/teams/7/members"));
        assert!(p.matches("/teams/a/b/members"));
        assert!(!p.matches("/teams/7/members/x"));
        let literal = c.resource_pattern([Some("/users/*")]);
        assert_eq!(literal.pattern(), "/users/%2A");
        assert!(literal.matches("/users/%2A"));
        assert!(!literal.matches("/users/1"));
    }

    #[test]
    fn patterns_reach_long_hashed_paths() {
        let c = config();
        let long = format!("/teams/{}/members", "x".repeat(600));
        let key = c.resource_key(&long);
        assert!(key.resource().contains('#'));
        let members = c.resource_pattern([Some("/teams/"), None, Some("/members")]);
        assert!(members.matches(key.resource()));
        assert!(key.resource().starts_with(members.literal_prefix()));
        let other = c.resource_pattern([Some("/users/"), None]);
        assert!(!other.matches(key.resource()));
        let long_literal = c.resource_pattern([Some(long.as_str()), None]);
        assert_eq!(long_literal.literal_prefix().len(), HASHED_HEAD_LEN);
        assert!(long_literal.matches(key.resource()));
    }

    #[test]
    fn malformed_targets_are_not_keyed() {
        let c = config();
        for bad in [
            "/users/%zz",
            "/users/%",
            "/users/%4",
            "/users/%FF",
            "/users/%C0%AF",
            "/users/a%00b",
            "/s?q=%zz",
            "/s?q=%",
            "/s?%ff=1",
            "/s?q=%00",
        ] {
            assert_eq!(c.derive(&get(bad)).err(), Some(Malformed), "{bad}");
        }
        // A write through a malformed spelling still purges what a lenient
        // decoder (axum's) makes of it: `%zz` is the `%25zz` resource.
        assert_eq!(c.resource_key("/users/%zz"), c.resource_key("/users/%25zz"));
    }

    #[test]
    fn the_stories_of_one_resource() {
        let c = config();
        let resource = |uri: &str| c.derive(&get(uri)).unwrap().key.resource().clone();
        let key = |uri: &str| c.derive(&get(uri)).unwrap().key;
        assert_eq!(resource("/users/%32"), resource("/users/2"));
        assert_eq!(c.resource_key("/users/%32"), resource("/users/2"));
        assert_eq!(resource("/tags/caf%C3%A9"), resource("/tags/caf%c3%a9"));
        assert_eq!(resource("/u/%7Ealice"), resource("/u/~alice"));
        assert_eq!(resource("/files/a%2Fb"), resource("/files/a/b"));
        // Query names and values decoded before they are compared.
        assert_ne!(key("/s?%61=EVIL&a=1"), key("/s?a=1&%61=EVIL"));
        assert_eq!(key("/s?%61=EVIL&a=1"), key("/s?a=EVIL&a=1"));
        assert_eq!(key("/s?q=a+b"), key("/s?q=a%20b"));
        assert_eq!(key("/s?flag"), key("/s?flag="));
        assert_ne!(key("/s?q=a%2Bb"), key("/s?q=a+b"));
        assert_ne!(key("/s?a=1%26b%3D2"), key("/s?a=1&b=2"));
        let port = |host: &str| {
            let req = Request::get("/x").header("host", host).body(()).unwrap();
            c.derive(&req).unwrap().key
        };
        assert_eq!(port("api.example.com"), port("API.example.com:80"));
        assert_eq!(port("api.example.com"), port("api.example.com:443"));
        assert_ne!(port("api.example.com"), port("api.example.com:8080"));
        let https = Request::get("https://api.example.com:443/x")
            .body(())
            .unwrap();
        let http = Request::get("http://api.example.com:443/x")
            .body(())
            .unwrap();
        assert_eq!(c.derive(&https).unwrap().key, port("api.example.com"));
        assert_ne!(c.derive(&http).unwrap().key, port("api.example.com"));
    }

    /// How one byte of a generated target is spelled.
    fn spell_byte(out: &mut String, byte: u8, encode: bool, upper: bool, in_query: bool) {
        let must = !(byte.is_ascii_alphanumeric() || b"-._~!$'()*,;:@".contains(&byte));
        if byte == b' ' && in_query && !encode {
            out.push('+');
        } else if encode || must {
            if upper {
                out.push_str(&format!("%{byte:02X}"));
            } else {
                out.push_str(&format!("%{byte:02x}"));
            }
        } else {
            out.push(char::from(byte));
        }
    }

    /// One spelling of a target: segments, query pairs, host and port,
    /// each byte percent-encoded or not, in either hex case, by `coins`.
    fn spell(
        segments: &[String],
        pairs: &[(String, String)],
        host: &str,
        port: &str,
        coins: &[bool],
    ) -> Request<()> {
        let mut coin = coins.iter().copied().cycle();
        let mut uri = String::new();
        for segment in segments {
            uri.push('/');
            for &byte in segment.as_bytes() {
                let (encode, upper) = (coin.next().unwrap(), coin.next().unwrap());
                spell_byte(&mut uri, byte, encode, upper, false);
            }
        }
        if !pairs.is_empty() {
            uri.push('?');
            for (i, (name, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    uri.push('&');
                    if coin.next().unwrap() && coin.next().unwrap() {
                        uri.push('&');
                    }
                }
                for &byte in name.as_bytes() {
                    let (encode, upper) = (coin.next().unwrap(), coin.next().unwrap());
                    spell_byte(&mut uri, byte, encode, upper, true);
                }
                if !value.is_empty() || coin.next().unwrap() {
                    uri.push('=');
                }
                for &byte in value.as_bytes() {
                    let (encode, upper) = (coin.next().unwrap(), coin.next().unwrap());
                    spell_byte(&mut uri, byte, encode, upper, true);
                }
            }
        }
        let host: String = host
            .chars()
            .map(|c| {
                if coin.next().unwrap() {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        Request::get(uri.as_str())
            .header("host", format!("{host}{port}"))
            .body(())
            .unwrap()
    }

    /// The reference reading of a target, from other crates' decoders: the
    /// path as a handler's wildcard capture sees it (every escape decoded),
    /// the query as `form_urlencoded` (axum's `Query`) sees it with pairs
    /// in a stable order by name, the host lower-cased without a default
    /// port.
    fn reference(req: &Request<()>) -> (Vec<u8>, Vec<(String, String)>, String) {
        let path = percent_encoding::percent_decode_str(req.uri().path()).collect::<Vec<u8>>();
        let mut pairs: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let host = req.headers()["host"].to_str().unwrap().to_ascii_lowercase();
        let host = host
            .strip_suffix(":80")
            .or_else(|| host.strip_suffix(":443"))
            .unwrap_or(&host)
            .to_owned();
        (path, pairs, host)
    }

    fn segment() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("2"),
                Just("~"),
                Just("é"),
                Just(" "),
                Just("/"),
                Just("%"),
                Just(":"),
                Just("*"),
                Just("+")
            ],
            0..3,
        )
        .prop_map(|parts| parts.concat())
    }

    fn pair() -> impl Strategy<Value = (String, String)> {
        let text = || {
            proptest::collection::vec(
                prop_oneof![
                    Just("a"),
                    Just("b"),
                    Just(" "),
                    Just("+"),
                    Just("é"),
                    Just("="),
                    Just("&")
                ],
                0..3,
            )
            .prop_map(|parts| parts.concat())
        };
        (text().prop_filter("a name", |n| !n.is_empty()), text())
    }

    fn target() -> impl Strategy<Value = (Vec<String>, Vec<(String, String)>, String, String)> {
        (
            proptest::collection::vec(segment(), 1..3),
            proptest::collection::vec(pair(), 0..3),
            prop_oneof![Just("example.com"), Just("example.org")].prop_map(String::from),
            prop_oneof![Just(""), Just(":80"), Just(":443"), Just(":8080")].prop_map(String::from),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Two spellings share a resource (what a purge names) if and only
        /// if their paths decode alike, and an entry if and only if, on top
        /// of that, they are spelled alike and their queries and hosts read
        /// alike; a purge through either spelling's path names the
        /// resource of the other.
        #[test]
        fn spellings_share_keys_exactly_when_a_reference_decoder_agrees(
            a in target(),
            b in target(),
            same in any::<bool>(),
            coins_a in proptest::collection::vec(any::<bool>(), 1..64),
            coins_b in proptest::collection::vec(any::<bool>(), 1..64),
        ) {
            // Half the cases spell one target twice.
            let b = if same { a.clone() } else { b };
            let ra = spell(&a.0, &a.1, &a.2, &a.3, &coins_a);
            let rb = spell(&b.0, &b.1, &b.2, &b.3, &coins_b);
            let c = config();
            let (ka, kb) = (c.derive(&ra).unwrap().key, c.derive(&rb).unwrap().key);
            let (fa, fb) = (reference(&ra), reference(&rb));
            prop_assert_eq!(ka.resource() == kb.resource(), fa.0 == fb.0, "{} {}", ra.uri(), rb.uri());
            let spelled_alike = ra.uri().path() == rb.uri().path();
            prop_assert_eq!(ka == kb, spelled_alike && fa == fb, "{} {}", ra.uri(), rb.uri());
            prop_assert_eq!(
                c.resource_key(rb.uri().path()) == *ka.resource(),
                fa.0 == fb.0
            );
        }
    }

    proptest! {
        #[test]
        fn a_pattern_without_wildcards_matches_only_itself(a in "/[a-z/%*]{0,12}", b in "/[a-z/%*]{0,12}") {
            let c = config();
            let p = c.path_pattern([Some(a.as_str())]);
            let ka = c.resource_key(&a);
            let kb = c.resource_key(&b);
            prop_assert!(p.matches(ka.resource()));
            prop_assert_eq!(p.matches(kb.resource()), ka == kb);
        }

        #[test]
        fn any_path_bytes_give_a_safe_resource(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let mut out = String::new();
            encode_into(&mut out, &bytes);
            let safe = out.bytes().all(|b| b.is_ascii_graphic() && !b"{}*?[]\\#".contains(&b));
            prop_assert!(safe, "unsafe byte in {}", out);
            let key = config().resource_key(&out);
            prop_assert!(key.resource().len() <= MAX_RESOURCE_LEN);
            let clean = !key.resource().contains(['{', '}', '*', '?', '[', ']', '\\', ' ']);
            prop_assert!(clean, "unsafe resource {}", key.resource());
        }

        #[test]
        fn encoding_is_injective(a in proptest::collection::vec(any::<u8>(), 0..64), b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (mut ea, mut eb) = (String::new(), String::new());
            encode_into(&mut ea, &a);
            encode_into(&mut eb, &b);
            prop_assert_eq!(a == b, ea == eb);
        }

        #[test]
        fn any_query_derives_a_key(query in "[ -~]{0,200}") {
            let uri = format!("/p?{}", query.replace([' ', '#', '"', '<', '>', '\\', '^', '`', '{', '|', '}'], "x"));
            if let Ok(req) = Request::get(uri.as_str()).body(()) {
                match config().derive(&req) {
                    Ok(derived) => prop_assert_eq!(derived.key.variant().len(), 32),
                    // Only a malformed escape can make a printable query
                    // unkeyable.
                    Err(Malformed) => prop_assert!(query.contains('%')),
                }
            }
        }
    }
}
