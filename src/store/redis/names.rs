//! The Redis names of a resource and of its entries, and the script
//! arguments that carry a lease.
//!
//! This file is the only place that spells a Redis name. The invariant it
//! keeps is the key layout of the [module docs](super): a resource's hash
//! `<prefix>{<resource>}` and its expiry set `<hash>:t` share one hash tag
//! (so one Cluster slot), an entry is the hash field `v:<variant>` and its
//! fill lease `l:<variant>`, and a lease is announced as
//! `<hash>:l:<variant>`.

use bytes::Bytes;
use fred::types::{Key, Value};

use crate::key::{EntryKey, ResourceKey};
use crate::store::backend::{LeaseRequest, LeaseToken};
use crate::store::hints::HintKey;
use crate::util::decimal::Decimal;
use crate::util::inline::InlineBytes;

/// The Redis names a call on one resource sends, as slices of one buffer:
/// the resource's hash `<prefix>{<resource>}` (its entries and leases),
/// its expiry set `<hash>:t` beside it and, for a call on one entry, the
/// entry's field (`v:` or `l:`, then the variant).
///
/// fred clones every argument it sends, and a `Bytes` made from a `Vec`
/// moves to a shared allocation of its own when first cloned, so separate
/// names cost two allocations each. Slices of one buffer cost one in all:
/// the buffer, held inline in its owner when it is short.
#[derive(Clone)]
pub(super) struct KeyNames {
    /// `<hash>:t<field>`, back to back, owned by a [`NameBufferOwner`].
    all: Bytes,
    /// Where the hash name ends (`:t` follows it).
    hash: usize,
}

impl KeyNames {
    /// The names of a resource (no field).
    pub(super) fn resource(resource: &ResourceKey) -> KeyNames {
        KeyNames::build(resource, None)
    }

    /// The names of an entry's resource and of its field `kind`.
    pub(super) fn entry(kind: &[u8; 2], key: &EntryKey) -> KeyNames {
        KeyNames::build(key.resource(), Some((kind, key.variant_bytes())))
    }

    /// Writes the names of `resource` and, if given, of the field of kind
    /// `kind` and variant `variant` into one buffer.
    fn build(resource: &ResourceKey, field: Option<(&[u8; 2], &[u8])>) -> KeyNames {
        let (prefix, path) = (resource.prefix().as_bytes(), resource.resource_bytes());
        let field_len = field.map_or(0, |(kind, variant)| kind.len() + variant.len());
        let mut all = NameBuffer::with_capacity(prefix.len() + path.len() + 4 + field_len);
        all.extend_from_slice(prefix);
        all.push(b'{');
        all.extend_from_slice(path);
        all.push(b'}');
        let hash = all.len();
        all.extend_from_slice(b":t");
        if let Some((kind, variant)) = field {
            all.extend_from_slice(kind);
            all.extend_from_slice(variant);
        }
        KeyNames {
            all: Bytes::from_owner(NameBufferOwner(all)),
            hash,
        }
    }

    /// The names of a resource from its hash's name (as `SCAN` finds it).
    pub(super) fn of_hash(hash: &[u8]) -> KeyNames {
        let mut all = NameBuffer::with_capacity(hash.len() + 2);
        all.extend_from_slice(hash);
        all.extend_from_slice(b":t");
        KeyNames {
            all: Bytes::from_owner(NameBufferOwner(all)),
            hash: hash.len(),
        }
    }

    /// The hash's name, borrowed.
    pub(super) fn hash_name(&self) -> &[u8] {
        &self.all[..self.hash]
    }

    /// The hash.
    pub(super) fn hash(&self) -> Key {
        Key::from(self.all.slice(..self.hash))
    }

    /// The hash and, beside it, its sorted set of field expiries: the two
    /// keys every script on a resource is given.
    pub(super) fn keys(&self) -> [Key; 2] {
        [self.hash(), Key::from(self.all.slice(..self.hash + 2))]
    }

    /// The entry's field (empty for the names of a resource).
    pub(super) fn field(&self) -> Bytes {
        self.all.slice(self.hash + 2..)
    }

    /// Where the entry's variant starts (after `:t` and the field's kind).
    fn variant_at(&self) -> usize {
        (self.hash + 4).min(self.all.len())
    }

    /// The entry's variant, as the scripts take it.
    pub(super) fn variant(&self) -> Value {
        Value::Bytes(self.all.slice(self.variant_at()..))
    }

    /// Where this entry's hint lives.
    pub(super) fn hint(&self) -> HintKey {
        HintKey::new(self.hash_name(), &self.all[self.variant_at()..])
    }
}

/// Room for the names of all but very long prefixes and resources inline.
type NameBuffer = InlineBytes<160>;

/// The owner of a [`KeyNames`] buffer, for `Bytes::from_owner`: the
/// `Bytes` (and every slice of it fred clones) keeps it alive, and reads
/// the names through its `AsRef`.
struct NameBufferOwner(NameBuffer);

impl AsRef<[u8]> for NameBufferOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A lease as the scripts read it: the token, then the ttl in ms.
pub(super) fn lease_arg(lease: &LeaseRequest) -> Value {
    let ttl = u64::try_from(lease.ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64);
    let ttl = Decimal::new(ttl);
    let mut arg = Vec::with_capacity(32 + ttl.as_bytes().len());
    arg.extend_from_slice(lease.token.as_bytes());
    arg.extend_from_slice(ttl.as_bytes());
    Value::Bytes(Bytes::from(arg))
}

/// A bound on a resource's fields as the lookup script reads it.
pub(super) fn bound_arg(max: usize) -> Value {
    // An integer, which fred writes as its digits without allocating.
    Value::Integer(i64::try_from(max).unwrap_or(i64::MAX))
}

/// A lease's token as the scripts read it (to fence a fill or a release).
pub(super) fn token_arg(token: &LeaseToken) -> Value {
    Value::Bytes(Bytes::copy_from_slice(token.as_bytes()))
}

/// How a lease is named in announcements: `<hash>:l:<variant>`, from the
/// names of its field.
pub(super) fn lease_announced(lease: &KeyNames) -> String {
    let mut name = String::from_utf8_lossy(lease.hash_name()).into_owned();
    name.push(':');
    name.push_str(&String::from_utf8_lossy(&lease.field()));
    name
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::key::{KeyConfig, QueryKey};

    fn keys() -> KeyConfig {
        KeyConfig {
            prefix: Arc::from("tca:"),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
        }
    }

    #[test]
    fn the_lease_argument_is_the_token_then_the_ttl() {
        for (ttl, text) in [
            (Duration::from_millis(5000), "5000".to_owned()),
            (Duration::ZERO, "1".to_owned()),
            (Duration::from_secs(u64::MAX), i64::MAX.to_string()),
        ] {
            let lease = LeaseRequest {
                token: LeaseToken::new(),
                ttl,
                max_entries: None,
            };
            let Value::Bytes(arg) = lease_arg(&lease) else {
                panic!("bytes");
            };
            assert_eq!(&arg[..32], lease.token.as_bytes());
            assert_eq!(&arg[32..], text.as_bytes());
        }
    }

    #[test]
    fn names_follow_the_key_layout() {
        let key = keys().named_key("user:1");
        let variant = key.variant().to_owned();
        let text = |k: &[u8]| String::from_utf8(k.to_vec()).unwrap();
        let entry = KeyNames::entry(b"v:", &key);
        assert_eq!(text(entry.hash_name()), "tca:{user:1}");
        let both = entry.keys();
        assert_eq!(text(both[0].as_bytes()), "tca:{user:1}");
        assert_eq!(text(both[1].as_bytes()), "tca:{user:1}:t");
        assert_eq!(text(entry.hash().as_bytes()), "tca:{user:1}");
        assert_eq!(text(&entry.field()), format!("v:{variant}"));
        assert_eq!(entry.variant(), Value::Bytes(Bytes::from(variant.clone())));
        assert_eq!(
            entry.hint(),
            HintKey::new(b"tca:{user:1}", variant.as_bytes())
        );
        let lease = KeyNames::entry(b"l:", &key);
        assert_eq!(text(&lease.field()), format!("l:{variant}"));
        assert_eq!(
            lease_announced(&lease),
            format!("tca:{{user:1}}:l:{variant}")
        );
        let resource = KeyNames::resource(key.resource());
        assert_eq!(text(resource.hash_name()), "tca:{user:1}");
        assert_eq!(text(resource.keys()[1].as_bytes()), "tca:{user:1}:t");
        assert!(resource.field().is_empty());
        let scanned = KeyNames::of_hash(b"tca:{user:1}");
        assert_eq!(text(scanned.keys()[0].as_bytes()), "tca:{user:1}");
        assert_eq!(text(scanned.keys()[1].as_bytes()), "tca:{user:1}:t");
    }

    #[test]
    fn long_names_spill_to_the_heap_whole() {
        let prefix = "p".repeat(200);
        let config = KeyConfig {
            prefix: Arc::from(prefix.as_str()),
            ..keys()
        };
        let key = config.named_key("user:1");
        let entry = KeyNames::entry(b"v:", &key);
        let hash = format!("{prefix}{{user:1}}");
        assert_eq!(entry.hash_name(), hash.as_bytes());
        assert_eq!(
            &entry.field()[..],
            format!("v:{}", key.variant()).as_bytes()
        );
    }
}
