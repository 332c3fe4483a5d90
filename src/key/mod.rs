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
//! - The resource is percent-encoded with a small safe alphabet. `%` itself is
//!   encoded, so the encoding is injective (`/a*` and `/a%2A` stay distinct
//!   resources), and the encoded text never holds a Redis glob character
//!   (`*`, `?`, `[`, `]`, `\`) or a hash-tag brace (`{`, `}`). A purge built
//!   from request text therefore matches only that literal resource.
//! - A resource longer than [`MAX_RESOURCE_LEN`] keeps a readable head and
//!   ends in `#` plus a hash of the whole (`#` is always encoded elsewhere,
//!   so the form cannot be forged by a path).
//! - The full key material (path, authority, query, vary values) is stored inside
//!   the entry as its fingerprint and compared on every hit, so neither a
//!   hash collision nor a value planted under the wrong key is ever served.

use std::sync::Arc;

use http::{header, HeaderName, Request};

pub(crate) use self::encode::hex32;
use self::encode::{encode_into, percent_decode};
pub use self::pattern::ResourcePattern;
use self::pattern::HASHED_HEAD_LEN;
use crate::util::inline::InlineBytes;

mod encode;
mod pattern;

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

    /// The encoded path. Never contains `{`, `}`, `*`, `?`,
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
    /// target (still percent-encoded).
    pub(crate) fn resource_key(&self, path: &str) -> ResourceKey {
        self.shorten(encoded_path(path))
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

    /// A pattern from pieces: literal text is encoded like a path, `None`
    /// stands for a `*` wildcard.
    pub(crate) fn resource_pattern<'a>(
        &self,
        pieces: impl IntoIterator<Item = Option<&'a str>>,
    ) -> ResourcePattern {
        let mut pattern = String::new();
        for piece in pieces {
            match piece {
                Some(text) => encode_into(&mut pattern, text.as_bytes()),
                None => pattern.push('*'),
            }
        }
        ResourcePattern::new(self.prefix.clone(), pattern)
    }

    /// Derives the entry key of a request.
    pub(crate) fn derive<B>(&self, req: &Request<B>) -> DerivedKey {
        let full = encoded_path(req.uri().path());

        // Material: the full path, the authority, the canonical query, then
        // each vary header. Separators are bytes that can occur in none of
        // them (the path is encoded; URIs and header values exclude
        // 0x00-0x02), so distinct requests never share material.
        // Room for what usually goes in: a longer query or vary values
        // make it grow.
        let authority = if self.include_authority {
            request_authority(req).as_bytes()
        } else {
            b""
        };
        let query = req.uri().query().unwrap_or("");
        let mut material = Material::with_capacity(full.len() + authority.len() + query.len() + 3);
        material.extend_from_slice(&full);
        material.push(0);
        if authority.iter().any(u8::is_ascii_uppercase) {
            material.extend_from_slice(&authority.to_ascii_lowercase());
        } else {
            material.extend_from_slice(authority);
        }
        material.push(0);
        self.push_canonical_query(&mut material, query);
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
        DerivedKey {
            key: EntryKey {
                resource: self.shorten(full),
                variant,
            },
            fingerprint: material,
        }
    }

    fn push_canonical_query(&self, out: &mut Material, query: &str) {
        if query.is_empty() {
            return;
        }
        // Each parameter with its name, found once (not on every comparison).
        let mut params: Vec<(&str, &str)> = Vec::with_capacity(query.matches('&').count() + 1);
        params.extend(
            query
                .split('&')
                .filter(|param| !param.is_empty())
                .map(|param| (param_name(param), param))
                .filter(|(name, _)| match &self.query {
                    QueryKey::All => true,
                    QueryKey::Allow(names) => names.iter().any(|n| query_name_eq(name, n)),
                    QueryKey::Ignore(names) => !names.iter().any(|n| query_name_eq(name, n)),
                }),
        );
        // Stable: values of one name keep their order, which may matter.
        params.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (_, param)) in params.iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            out.extend_from_slice(param.as_bytes());
        }
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

fn param_name(param: &str) -> &str {
    param.split('=').next().unwrap_or(param)
}

/// Compares a raw query parameter name with a configured one, decoding the
/// raw name's percent escapes and `+`.
fn query_name_eq(raw: &str, configured: &str) -> bool {
    if !raw.contains(['%', '+']) {
        return raw == configured;
    }
    percent_decode(raw.as_bytes()) == configured.as_bytes()
}

/// A request path in the resource encoding (`/` for an empty one).
fn encoded_path(path: &str) -> ResourceText {
    let path = if path.is_empty() {
        b"/"
    } else {
        path.as_bytes()
    };
    // At least the path's length (escapes make it longer); not counted
    // exactly, which would read the path twice.
    let mut full = ResourceText::with_capacity(path.len());
    encode_into(&mut full, path);
    full
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
        let key = config().derive(&get("/users/1?b=2&a=1")).key;
        assert_eq!(key.resource().resource(), "/users/1");
        let other_host = Request::get("/users/1?b=2&a=1")
            .header("host", "example.org")
            .body(())
            .unwrap();
        let other = config().derive(&other_host).key;
        assert_eq!(other.resource(), key.resource());
        assert_ne!(other.variant(), key.variant());
        let same_host_other_case = Request::get("/users/1?a=1&b=2")
            .header("host", "EXAMPLE.com")
            .body(())
            .unwrap();
        assert_eq!(config().derive(&same_host_other_case).key, key);
        assert_eq!(key.resource().prefix(), "tca:");
        assert_eq!(key.variant().len(), 32);
    }

    #[test]
    fn query_order_does_not_matter_but_repeated_values_keep_order() {
        let c = config();
        assert_eq!(
            c.derive(&get("/s?b=2&a=1")).key,
            c.derive(&get("/s?a=1&&b=2")).key
        );
        assert_ne!(
            c.derive(&get("/s?a=1&a=2")).key,
            c.derive(&get("/s?a=2&a=1")).key
        );
    }

    #[test]
    fn allowlist_and_ignore_list_filter_by_decoded_name() {
        let mut c = config();
        c.query = QueryKey::Allow(vec!["page".into()]);
        assert_eq!(
            c.derive(&get("/s?page=2&utm=x")).key,
            c.derive(&get("/s?page=2")).key
        );
        assert_ne!(
            c.derive(&get("/s?p%61ge=2")).key,
            c.derive(&get("/s")).key,
            "an encoded allowed name is still allowed"
        );
        c.query = QueryKey::Ignore(vec!["utm source".into()]);
        assert_eq!(
            c.derive(&get("/s?page=2&utm+source=x")).key,
            c.derive(&get("/s?page=2")).key
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
        let keys = [&en, &fr, &none, &empty].map(|r| c.derive(r).key.variant);
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
        assert_eq!(c.derive(&get("/users/1")).key, c.derive(&other_host).key);
    }

    #[test]
    fn keys_with_long_material_are_derived_like_short_ones() {
        let c = config();
        let long_query = format!("/search?{}", "q=x&".repeat(60));
        let a = c.derive(&get(&long_query));
        let b = c.derive(&get(&long_query));
        assert!(a.fingerprint.spilled());
        // A resource past its inline room (64 bytes) is kept whole.
        let path = format!("/{}", "segment/".repeat(20));
        let key = c.derive(&get(&path)).key;
        assert_eq!(key.resource().resource(), path);
        assert_eq!(key, c.derive(&get(&path)).key);
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
        assert_eq!(c.derive(&upper).fingerprint, c.derive(&lower).fingerprint);
    }

    #[test]
    fn a_host_cannot_pose_as_part_of_the_path() {
        let c = config();
        let forged = Request::get("/1")
            .header("host", "example.com/users")
            .body(())
            .unwrap();
        let real = get("/users/1");
        assert_ne!(c.derive(&forged).fingerprint, c.derive(&real).fingerprint);
        assert_ne!(c.derive(&forged).key, c.derive(&real).key);
    }

    #[test]
    fn glob_characters_and_percent_are_encoded() {
        let c = config();
        let star = c.derive(&get("/users/*")).key;
        let escaped = c.derive(&get("/users/%2A")).key;
        assert_eq!(star.resource().resource(), "/users/%2A");
        assert_eq!(escaped.resource().resource(), "/users/%252A");
        let brackets = c.resource_key("/a[b]\\{c}?");
        assert_eq!(brackets.resource(), "/a%5Bb%5D%5C%7Bc%7D%3F");
    }

    #[test]
    fn long_resources_are_hashed_and_stay_distinct() {
        let c = config();
        let long_a = format!("/{}", "a".repeat(2000));
        let long_b = format!("/{}b", "a".repeat(1999));
        let a = c.derive(&get(&long_a)).key;
        let b = c.derive(&get(&long_b)).key;
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

    proptest! {
        #[test]
        fn a_pattern_without_wildcards_matches_only_itself(a in "/[a-z/%*]{0,12}", b in "/[a-z/%*]{0,12}") {
            let c = config();
            let p = c.resource_pattern([Some(a.as_str())]);
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
                let derived = config().derive(&req);
                prop_assert_eq!(derived.key.variant().len(), 32);
            }
        }
    }
}
