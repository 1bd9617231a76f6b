//! Prediction cache: API skeleton, being implemented (see the brief).

use kiln_engine::Tensor;
use std::time::Duration;

/// SHA-256 over the component digest and the canonical bytes of the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Key of `inputs` (order-independent: sorted by name) run on the component `digest`,
    /// restricted to the `requested` outputs (empty = all).
    pub fn new(digest: &str, inputs: &[Tensor], requested: &[String]) -> CacheKey {
        let _ = (digest, inputs, requested);
        todo!()
    }
}

/// Where cached predictions live.
#[derive(Clone, Debug)]
pub enum CacheConfig {
    /// No caching.
    Off,
    /// In-process LRU bounded by bytes, entries expire after `ttl`.
    Memory { max_bytes: usize, ttl: Duration },
    /// A Redis server; `timeout` bounds each call; a circuit breaker skips Redis while it is down.
    Redis { url: String, ttl: Duration, timeout: Duration },
}

/// Result of a lookup.
pub enum Lookup {
    Hit(Vec<Tensor>),
    Miss,
    /// The backend is down or timed out (or its breaker is open): serve uncached.
    Unavailable,
}

/// Counters for /metrics.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub unavailable: u64,
    pub stores: u64,
    pub store_errors: u64,
    pub entries: u64,
    pub bytes: u64,
    /// false while the backend is known to be down (breaker open).
    pub healthy: bool,
}

/// The prediction cache shared by all requests.
pub struct PredictionCache {}

impl PredictionCache {
    /// Builds the cache; a Redis that is down does not fail this (the breaker opens).
    pub async fn new(config: CacheConfig) -> anyhow::Result<PredictionCache> {
        let _ = config;
        todo!()
    }
    /// Looks `key` up; never waits on a down backend for longer than its timeout.
    pub async fn get(&self, key: &CacheKey) -> Lookup {
        let _ = key;
        todo!()
    }
    /// Stores outputs; errors are counted and logged, never returned.
    pub async fn put(&self, key: &CacheKey, outputs: &[Tensor]) {
        let _ = (key, outputs);
        todo!()
    }
    /// "off", "memory" or "redis".
    pub fn backend(&self) -> &'static str {
        todo!()
    }
    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        todo!()
    }
}
