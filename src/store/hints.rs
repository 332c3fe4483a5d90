//! What one process remembers of the entries it has seen fresh in Redis,
//! so that a hit on them is one plain `HGET` instead of the lookup script.
//!
//! A hint only chooses how an entry is read, never what is served: an
//! `HGET` reads the entry from its resource's hash, which every purge
//! removes whole, so a hinted read of a purged entry finds nothing (and
//! falls back to the script). What a hint saves is the script, and what a
//! wrong or dead hint costs is one more round trip. So the table is small,
//! lock-free and 4-way set-associative (a set is one cache line; entries
//! that share a set evict each other only when five do), and it forgets
//! readily:
//!
//! - a hint ends at the entry's expiry as the script or the fill reported it;
//! - a purge of a resource, here or announced by another instance, moves
//!   that resource's epoch on, which ends every hint taken before it;
//! - a pattern purge, or a lost announcement, moves the global epoch on.
//!
//! A hint records the epochs as they were *before* the read that made it,
//! so a purge that ran while that read was in flight ends it too.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Hints kept by default: 16,384 entries in 256 KiB.
pub(super) const DEFAULT_ENTRIES: usize = 16 * 1024;
/// Slots per set.
const WAYS: usize = 4;
/// Resource epoch counters; resources that share one are purged together
/// as far as hints are concerned.
const EPOCHS: usize = 4096;
/// A stamp keeps 12 bits of each epoch.
const EPOCH_BITS: u32 = 12;
const EPOCH_MASK: u32 = (1 << EPOCH_BITS) - 1;
/// The stamp's share of a slot's data word; the deadline has the rest.
const STAMP_BITS: u32 = 2 * EPOCH_BITS;
/// Deadlines are ms since the table was made, in 40 bits (34 years).
const MAX_DEADLINE_MS: u64 = (1 << (64 - STAMP_BITS)) - 1;

/// Where an entry's hint lives and which resource epoch guards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HintKey {
    /// The entry's hash; never 0 (an empty slot).
    tag: u64,
    /// The resource's hash (of its Redis key name).
    resource: u64,
}

impl HintKey {
    /// The key of the entry `variant` in the resource whose Redis key
    /// name is `resource_name`.
    pub(super) fn new(resource_name: &[u8], variant: &[u8]) -> HintKey {
        let resource = resource_hash(resource_name);
        HintKey {
            tag: xxh3_64_with_seed(variant, resource).max(1),
            resource,
        }
    }
}

/// The hash a resource's epoch is found by, from its Redis key name (which
/// is what purge announcements carry).
pub(super) fn resource_hash(resource_name: &[u8]) -> u64 {
    xxh3_64(resource_name)
}

/// The epochs a hint was taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp(u32);

#[derive(Debug, Default)]
struct Slot {
    tag: AtomicU64,
    /// deadline (ms since `origin`) << STAMP_BITS | stamp
    data: AtomicU64,
}

/// The slots an entry may take: one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Set([Slot; WAYS]);

/// The hint table (see the module docs).
#[derive(Debug)]
pub(super) struct Hints {
    origin: Instant,
    sets: Box<[Set]>,
    epochs: Box<[AtomicU32]>,
    global: AtomicU32,
}

impl Default for Hints {
    fn default() -> Self {
        Hints::with_capacity(DEFAULT_ENTRIES)
    }
}

impl Hints {
    /// A table of `entries` hints (rounded up to whole sets); with 0 it
    /// keeps none, and every read goes through the lookup script.
    pub(super) fn with_capacity(entries: usize) -> Hints {
        Hints {
            origin: Instant::now(),
            sets: (0..entries.div_ceil(WAYS))
                .map(|_| Set::default())
                .collect(),
            epochs: (0..EPOCHS).map(|_| AtomicU32::new(0)).collect(),
            global: AtomicU32::new(0),
        }
    }

    /// Whether the table keeps any hint.
    pub(super) fn is_enabled(&self) -> bool {
        !self.sets.is_empty()
    }

    fn set_of(&self, key: &HintKey) -> Option<&Set> {
        if self.sets.is_empty() {
            return None;
        }
        Some(&self.sets[(key.tag as usize) % self.sets.len()])
    }

    /// The slot holding `key`'s hint, if one does.
    fn slot(&self, key: &HintKey) -> Option<&Slot> {
        self.set_of(key)?
            .0
            .iter()
            .find(|slot| slot.tag.load(Ordering::Acquire) == key.tag)
    }

    fn epoch(&self, resource: u64) -> &AtomicU32 {
        &self.epochs[(resource as usize) % self.epochs.len()]
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The epochs now: take it before a read, give it to [`set`](Self::set)
    /// after.
    pub(super) fn stamp(&self, key: &HintKey) -> Stamp {
        let global = self.global.load(Ordering::Acquire) & EPOCH_MASK;
        let resource = self.epoch(key.resource).load(Ordering::Acquire) & EPOCH_MASK;
        Stamp(global << EPOCH_BITS | resource)
    }

    /// Whether `key` was seen fresh, until now, under the epochs `stamp`.
    pub(super) fn is_fresh(&self, key: &HintKey, stamp: Stamp) -> bool {
        let Some(slot) = self.slot(key) else {
            return false;
        };
        let data = slot.data.load(Ordering::Acquire);
        // A writer clears the tag before it changes the data: the same tag
        // after the read means the data was this entry's.
        if slot.tag.load(Ordering::Acquire) != key.tag {
            return false;
        }
        let deadline = data >> STAMP_BITS;
        (data & ((1 << STAMP_BITS) - 1)) as u32 == stamp.0 && self.now_ms() < deadline
    }

    /// Records that `key` was read (or written) fresh for `ttl` more, by a
    /// read that began under `stamp`.
    pub(super) fn set(&self, key: &HintKey, stamp: Stamp, ttl: Duration) {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.now_ms().saturating_add(ttl).min(MAX_DEADLINE_MS);
        let Some(set) = self.set_of(key) else {
            return;
        };
        // Its own slot, else a free one, else the one that expires first.
        // Two writers racing for one slot can leave one entry's tag with
        // the other's data: a wrong hint, which costs a round trip at most.
        let expiry = |slot: &Slot| match slot.tag.load(Ordering::Acquire) {
            0 => 0,
            tag if tag == key.tag => 0,
            _ => slot.data.load(Ordering::Acquire) >> STAMP_BITS,
        };
        let slot = match self.slot(key) {
            Some(slot) => slot,
            None => set
                .0
                .iter()
                .min_by_key(|slot| expiry(slot))
                .unwrap_or(&set.0[0]),
        };
        slot.tag.store(0, Ordering::Release);
        slot.data.store(
            deadline << STAMP_BITS | u64::from(stamp.0),
            Ordering::Release,
        );
        slot.tag.store(key.tag, Ordering::Release);
    }

    /// Forgets `key` (its hinted read found nothing usable).
    pub(super) fn clear(&self, key: &HintKey) {
        if let Some(slot) = self.slot(key) {
            let _ = slot
                .tag
                .compare_exchange(key.tag, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Ends every hint of the resource with this hash (it was purged).
    pub(super) fn purged(&self, resource: u64) {
        self.epoch(resource).fetch_add(1, Ordering::AcqRel);
    }

    /// Ends every hint (a pattern purge, or announcements were lost).
    pub(super) fn purged_all(&self) {
        self.global.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(resource: &str, variant: &str) -> HintKey {
        HintKey::new(resource.as_bytes(), variant.as_bytes())
    }

    #[test]
    fn a_hint_holds_for_its_entry_until_its_ttl() {
        let hints = Hints::default();
        let (a, b) = (key("tca:{/a}", "v1"), key("tca:{/a}", "v2"));
        assert_ne!(a, b);
        let stamp = hints.stamp(&a);
        assert!(!hints.is_fresh(&a, stamp));
        hints.set(&a, stamp, Duration::from_secs(60));
        assert!(hints.is_fresh(&a, hints.stamp(&a)));
        assert!(!hints.is_fresh(&b, hints.stamp(&b)));
        hints.clear(&a);
        assert!(!hints.is_fresh(&a, hints.stamp(&a)));
        // Expired at once.
        hints.set(&b, hints.stamp(&b), Duration::ZERO);
        assert!(!hints.is_fresh(&b, hints.stamp(&b)));
        // A huge ttl saturates instead of wrapping.
        hints.set(&b, hints.stamp(&b), Duration::MAX);
        assert!(hints.is_fresh(&b, hints.stamp(&b)));
    }

    #[test]
    fn a_purge_ends_the_hints_of_its_resource_only() {
        let hints = Hints::default();
        let (a1, a2, other) = (key("p:{/a}", "1"), key("p:{/a}", "2"), key("p:{/b}", "1"));
        for k in [&a1, &a2, &other] {
            hints.set(k, hints.stamp(k), Duration::from_secs(60));
        }
        hints.purged(resource_hash(b"p:{/a}"));
        assert!(!hints.is_fresh(&a1, hints.stamp(&a1)));
        assert!(!hints.is_fresh(&a2, hints.stamp(&a2)));
        // Unless the two resources share an epoch counter (1 in 4096).
        if (a1.resource as usize) % EPOCHS != (other.resource as usize) % EPOCHS {
            assert!(hints.is_fresh(&other, hints.stamp(&other)));
        }
        hints.purged_all();
        assert!(!hints.is_fresh(&other, hints.stamp(&other)));
    }

    #[test]
    fn four_entries_share_a_set_and_a_fifth_evicts_the_first_to_expire() {
        // One set: every key falls into it.
        let hints = Hints::with_capacity(WAYS);
        let keys: Vec<HintKey> = (0..5).map(|i| key("p:{/a}", &i.to_string())).collect();
        let fresh = |k: &HintKey| hints.is_fresh(k, hints.stamp(k));
        for (i, k) in keys[..4].iter().enumerate() {
            hints.set(k, hints.stamp(k), Duration::from_secs(60 + i as u64));
        }
        assert!(keys[..4].iter().all(fresh));
        hints.set(&keys[4], hints.stamp(&keys[4]), Duration::from_secs(600));
        assert!(!fresh(&keys[0]), "the first to expire made room");
        assert!(keys[1..].iter().all(fresh));
        // A hint set again keeps its slot.
        hints.set(&keys[2], hints.stamp(&keys[2]), Duration::from_secs(1));
        assert!(keys[1..].iter().all(fresh));
    }

    #[test]
    fn a_table_of_no_entries_keeps_no_hint() {
        let hints = Hints::with_capacity(0);
        assert!(!hints.is_enabled() && Hints::default().is_enabled());
        let a = key("p:{/a}", "1");
        hints.set(&a, hints.stamp(&a), Duration::from_secs(60));
        assert!(!hints.is_fresh(&a, hints.stamp(&a)));
        hints.clear(&a);
    }

    #[test]
    fn a_read_that_overlapped_a_purge_leaves_no_hint() {
        let hints = Hints::default();
        let a = key("p:{/a}", "1");
        let before = hints.stamp(&a);
        hints.purged(resource_hash(b"p:{/a}"));
        hints.set(&a, before, Duration::from_secs(60));
        assert!(!hints.is_fresh(&a, hints.stamp(&a)));
        let before = hints.stamp(&a);
        hints.purged_all();
        hints.set(&a, before, Duration::from_secs(60));
        assert!(!hints.is_fresh(&a, hints.stamp(&a)));
    }
}
