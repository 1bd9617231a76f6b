//! Prediction cache: outputs of a model component for given inputs, looked up before a
//! request runs in the sandbox.
//!
//! Three backends:
//! - `off`: every lookup misses, nothing is stored.
//! - `memory`: an in-process LRU bounded by bytes (key + encoded value), entries expire
//!   after a TTL (checked on lookup).
//! - `redis`: shared by the nodes that use the same server. Every call is bounded by a
//!   timeout, and a circuit breaker skips Redis while it is down so that a dead cache costs
//!   nothing but the uncached path. The total size is bounded by the TTL and by the Redis
//!   server's own `maxmemory` policy (configure `maxmemory-policy allkeys-lru` there).
//!   `rediss://` URLs speak TLS (rustls), verified like every other Kiln client.
//!
//! In both storing backends a value larger than [`MAX_VALUE_BYTES`] is not cached: such an
//! output is rare, and caching it would evict many small ones.
//!
//! The key is a SHA-256 over a canonical encoding of the component digest, the inputs and
//! the requested outputs ([`key`]); values are stored in a small versioned binary format
//! ([`codec`]) that is validated on the way back, so a corrupt or foreign value is a miss.

pub mod codec;
mod key;
mod memory;
mod redis_backend;

use kiln_node_api::tls::ClientTls;
use kiln_types::Tensor;
use memory::MemoryCache;
use redis_backend::{RedisBackend, RedisGet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use key::{CacheKey, REDIS_KEY_PREFIX};
pub use kiln_node_api::breaker::BreakerPolicy;

/// Values whose encoding is larger than this are not cached (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// A reasonable bound for one Redis call from a request path.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(25);

/// Where cached predictions live.
#[derive(Clone, Debug)]
pub enum CacheConfig {
    /// No caching.
    Off,
    /// In-process LRU bounded by bytes, entries expire after `ttl`.
    Memory { max_bytes: usize, ttl: Duration },
    /// A Redis server; `timeout` bounds each call; a circuit breaker skips Redis while it is down.
    /// A `rediss://` URL speaks TLS, trusting what `tls` trusts (and presenting its client
    /// certificate, if any).
    Redis {
        url: String,
        ttl: Duration,
        timeout: Duration,
        tls: ClientTls,
    },
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
    /// Values found but unreadable (corrupt or foreign); each is also counted as a miss.
    pub corrupt: u64,
    /// Stores not attempted: value over [`MAX_VALUE_BYTES`], or the breaker was open.
    pub skipped_stores: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    unavailable: AtomicU64,
    stores: AtomicU64,
    store_errors: AtomicU64,
    corrupt: AtomicU64,
    skipped_stores: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

enum Backend {
    Off,
    Memory(MemoryCache),
    // Boxed: the Redis client and breaker are several times the size of the others.
    Redis(Box<RedisBackend>),
}

/// The prediction cache shared by all requests.
pub struct PredictionCache {
    backend: Backend,
    counters: Counters,
}

impl PredictionCache {
    /// Builds the cache; a Redis that is down does not fail this (the breaker opens).
    pub async fn new(config: CacheConfig) -> anyhow::Result<PredictionCache> {
        PredictionCache::with_breaker(config, BreakerPolicy::default())
    }

    /// Like [`PredictionCache::new`] with a non-default circuit breaker (Redis only).
    pub fn with_breaker(config: CacheConfig, policy: BreakerPolicy) -> anyhow::Result<PredictionCache> {
        let backend = match config {
            CacheConfig::Off => Backend::Off,
            CacheConfig::Memory { max_bytes, ttl } => Backend::Memory(MemoryCache::new(max_bytes, ttl)),
            CacheConfig::Redis {
                url,
                ttl,
                timeout,
                tls,
            } => Backend::Redis(Box::new(RedisBackend::new(&url, &tls, ttl, timeout, policy)?)),
        };
        Ok(PredictionCache {
            backend,
            counters: Counters::default(),
        })
    }

    /// Looks `key` up; never waits on a down backend for longer than its timeout.
    pub async fn get(&self, key: &CacheKey) -> Lookup {
        let c = &self.counters;
        let lookup = match &self.backend {
            Backend::Off => Lookup::Miss,
            Backend::Memory(memory) => match memory.get(key) {
                Some(outputs) => Lookup::Hit(outputs.as_ref().clone()),
                None => Lookup::Miss,
            },
            Backend::Redis(redis) => match redis.get(key).await {
                RedisGet::Hit(bytes) => match codec::decode(&bytes) {
                    Ok(outputs) => Lookup::Hit(outputs),
                    Err(e) => {
                        bump(&c.corrupt);
                        tracing::debug!(key = %key.hex(), error = %e, "unreadable cached prediction, treated as a miss");
                        Lookup::Miss
                    }
                },
                RedisGet::Miss => Lookup::Miss,
                RedisGet::Unavailable => Lookup::Unavailable,
            },
        };
        bump(match &lookup {
            Lookup::Hit(_) => &c.hits,
            Lookup::Miss => &c.misses,
            Lookup::Unavailable => &c.unavailable,
        });
        lookup
    }

    /// Stores outputs; errors are counted and logged, never returned.
    pub async fn put(&self, key: &CacheKey, outputs: &[Tensor]) {
        let c = &self.counters;
        match &self.backend {
            Backend::Off => {}
            Backend::Memory(memory) => {
                let size = codec::encoded_len(outputs);
                if size > MAX_VALUE_BYTES || !memory.put(*key, outputs.to_vec(), size) {
                    bump(&c.skipped_stores);
                } else {
                    bump(&c.stores);
                }
            }
            Backend::Redis(redis) => {
                if codec::encoded_len(outputs) > MAX_VALUE_BYTES || !redis.admits_store() {
                    bump(&c.skipped_stores);
                    return;
                }
                let value = codec::encode(outputs);
                match redis.put(key, value).await {
                    Ok(()) => bump(&c.stores),
                    Err(()) => bump(&c.store_errors),
                }
            }
        }
    }

    /// "off", "memory" or "redis".
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Off => "off",
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Current counters. `entries` and `bytes` are known for the memory backend only.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (entries, bytes, healthy) = match &self.backend {
            Backend::Off => (0, 0, true),
            Backend::Memory(memory) => {
                let (entries, bytes) = memory.size();
                (entries, bytes, true)
            }
            Backend::Redis(redis) => (0, 0, redis.healthy()),
        };
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            unavailable: load(&c.unavailable),
            stores: load(&c.stores),
            store_errors: load(&c.store_errors),
            entries,
            bytes,
            healthy,
            corrupt: load(&c.corrupt),
            skipped_stores: load(&c.skipped_stores),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, values: &[f32]) -> Tensor {
        Tensor::from_f32(name, &[1, values.len() as u64], values)
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::new("sha256:abc", &[tensor("x", &[f32::from(n)])], &[])
    }

    #[tokio::test]
    async fn off_backend_always_misses_and_never_stores() {
        let cache = PredictionCache::new(CacheConfig::Off).await.unwrap();
        assert_eq!(cache.backend(), "off");
        cache.put(&key(1), &[tensor("y", &[1.0])]).await;
        assert!(matches!(cache.get(&key(1)).await, Lookup::Miss));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.stores), (0, 1, 0));
        assert!(stats.healthy);
    }

    #[tokio::test]
    async fn memory_backend_hits_after_put_and_counts() {
        let cache = PredictionCache::new(CacheConfig::Memory {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
        assert_eq!(cache.backend(), "memory");
        assert!(matches!(cache.get(&key(1)).await, Lookup::Miss));
        let outputs = vec![tensor("y", &[0.25, 0.75])];
        cache.put(&key(1), &outputs).await;
        match cache.get(&key(1)).await {
            Lookup::Hit(got) => assert_eq!(got, outputs),
            _ => panic!("expected a hit"),
        }
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.stores), (1, 1, 1));
        assert_eq!(stats.entries, 1);
        assert_eq!(stats.bytes, 32 + codec::encoded_len(&outputs) as u64);
    }

    #[tokio::test]
    async fn memory_backend_skips_values_over_the_size_limit() {
        let cache = PredictionCache::new(CacheConfig::Memory {
            max_bytes: 64 << 20,
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
        let big = vec![tensor("y", &vec![0.0; MAX_VALUE_BYTES / 4 + 1])];
        cache.put(&key(1), &big).await;
        assert!(matches!(cache.get(&key(1)).await, Lookup::Miss));
        assert_eq!(cache.stats().skipped_stores, 1);
    }

    #[tokio::test]
    async fn invalid_redis_url_is_a_configuration_error() {
        let config = CacheConfig::Redis {
            url: "not a url".into(),
            ttl: Duration::from_secs(1),
            timeout: DEFAULT_REDIS_TIMEOUT,
            tls: ClientTls::default(),
        };
        assert!(PredictionCache::new(config).await.is_err());
        // rediss:// is accepted (TLS); the connection opens on first use.
        let tls = CacheConfig::Redis {
            url: "rediss://127.0.0.1:1/".into(),
            ttl: Duration::from_secs(1),
            timeout: DEFAULT_REDIS_TIMEOUT,
            tls: ClientTls::default(),
        };
        let cache = PredictionCache::new(tls).await.map_err(|e| format!("{e:#}"));
        assert!(cache.is_ok(), "rediss:// builds a cache: {:?}", cache.err());
    }

    #[tokio::test]
    async fn redis_down_at_startup_builds_and_reports_unavailable() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let cache = PredictionCache::new(CacheConfig::Redis {
            url: "redis://127.0.0.1:1/".into(),
            ttl: Duration::from_secs(1),
            timeout: DEFAULT_REDIS_TIMEOUT,
            tls: ClientTls::default(),
        })
        .await
        .unwrap();
        assert_eq!(cache.backend(), "redis");
        for _ in 0..BreakerPolicy::default().failure_threshold {
            assert!(matches!(cache.get(&key(1)).await, Lookup::Unavailable));
        }
        assert!(!cache.stats().healthy);
        cache.put(&key(1), &[tensor("y", &[1.0])]).await;
        let stats = cache.stats();
        assert_eq!(stats.skipped_stores, 1);
        assert_eq!(stats.unavailable, 3);
    }
}
