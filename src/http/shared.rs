//! What every service of one layer shares: its settings, and the owners of
//! its runtime state (the leases over the guarded store, the purges and
//! their retry queue, the decoded entry heads).

use std::sync::Arc;

use crate::http::config::Config;
use crate::http::head_cache::HeadCache;
use crate::http::vary::VaryMemo;
use crate::lease::Leases;
use crate::purge::Purges;

/// A layer's settings and state, behind one `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Lookups and fill leases, over the store guarded by the request
    /// deadline and the circuit breaker.
    pub(crate) leases: Leases,
    /// The entry heads decoded lately, reused by hits.
    pub(crate) heads: HeadCache,
    /// Purges, and the queue of those that failed.
    pub(crate) purges: Arc<Purges>,
    /// The request fields each resource was seen to vary on.
    pub(crate) vary: VaryMemo,
}
