//! The in-process backend: an LRU bounded by the bytes of its entries (key + encoded value
//! size), each entry expiring `ttl` after it was stored. The lock is held only to move an
//! `Arc` in or out; tensors are cloned outside it.

use super::key::CacheKey;
use kiln_types::Tensor;
use lru::LruCache;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Entry {
    outputs: Arc<Vec<Tensor>>,
    size: usize,
    expires: Instant,
}

struct State {
    lru: LruCache<CacheKey, Entry>,
    bytes: usize,
}

pub(super) struct MemoryCache {
    state: Mutex<State>,
    max_bytes: usize,
    ttl: Duration,
}

impl MemoryCache {
    pub(super) fn new(max_bytes: usize, ttl: Duration) -> MemoryCache {
        MemoryCache {
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the LRU half-updated in a way that
        // matters for a cache, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outputs stored under `key`, unless absent or expired (then dropped).
    pub(super) fn get(&self, key: &CacheKey) -> Option<Arc<Vec<Tensor>>> {
        let now = Instant::now();
        let mut state = self.lock();
        let entry = state.lru.get(key)?;
        if entry.expires > now {
            return Some(Arc::clone(&entry.outputs));
        }
        if let Some(expired) = state.lru.pop(key) {
            state.bytes -= expired.size;
        }
        None
    }

    /// Stores `outputs` (whose encoding is `value_size` bytes); false when the entry alone
    /// exceeds the byte bound and is therefore not stored.
    pub(super) fn put(&self, key: CacheKey, outputs: Vec<Tensor>, value_size: usize) -> bool {
        let size = key.0.len() + value_size;
        if size > self.max_bytes {
            return false;
        }
        let entry = Entry {
            outputs: Arc::new(outputs),
            size,
            expires: Instant::now() + self.ttl,
        };
        // Evicted entries are dropped after the lock is released.
        let mut evicted = Vec::new();
        {
            let mut state = self.lock();
            if let Some(old) = state.lru.put(key, entry) {
                state.bytes -= old.size;
                evicted.push(old);
            }
            state.bytes += size;
            while state.bytes > self.max_bytes {
                match state.lru.pop_lru() {
                    Some((_, old)) => {
                        state.bytes -= old.size;
                        evicted.push(old);
                    }
                    None => break,
                }
            }
        }
        drop(evicted);
        true
    }

    /// (entries, bytes) currently held, expired ones included until they are looked up or
    /// evicted.
    pub(super) fn size(&self) -> (u64, u64) {
        let state = self.lock();
        (state.lru.len() as u64, state.bytes as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_types::ElementType;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn outputs(bytes: usize) -> Vec<Tensor> {
        vec![Tensor {
            name: "y".into(),
            element_type: ElementType::U8,
            shape: vec![bytes as u64],
            data: vec![7; bytes],
        }]
    }

    #[test]
    fn byte_bound_evicts_least_recently_used() {
        // Each entry is 32 (key) + 100 bytes; room for three.
        let cache = MemoryCache::new(3 * 132, Duration::from_secs(60));
        for n in 0..3 {
            assert!(cache.put(key(n), outputs(100), 100));
        }
        assert_eq!(cache.size(), (3, 396));
        // Touch 0 so that 1 is now the least recently used.
        assert!(cache.get(&key(0)).is_some());
        assert!(cache.put(key(3), outputs(100), 100));
        assert_eq!(cache.size(), (3, 396));
        assert!(cache.get(&key(1)).is_none(), "LRU entry evicted");
        for n in [0, 2, 3] {
            assert!(cache.get(&key(n)).is_some(), "entry {n} kept");
        }
        // A larger entry evicts as many as needed.
        assert!(cache.put(key(4), outputs(200), 200));
        let (entries, bytes) = cache.size();
        assert!(bytes <= 396, "{bytes} bytes over the bound");
        assert_eq!(entries, 2);
    }

    #[test]
    fn entry_larger_than_the_bound_is_not_stored() {
        let cache = MemoryCache::new(100, Duration::from_secs(60));
        assert!(!cache.put(key(0), outputs(100), 100));
        assert_eq!(cache.size(), (0, 0));
    }

    #[test]
    fn replacing_a_key_keeps_the_byte_count_exact() {
        let cache = MemoryCache::new(1000, Duration::from_secs(60));
        cache.put(key(0), outputs(100), 100);
        cache.put(key(0), outputs(50), 50);
        assert_eq!(cache.size(), (1, 82));
        assert_eq!(cache.get(&key(0)).unwrap()[0].data.len(), 50);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = MemoryCache::new(1000, Duration::from_millis(50));
        cache.put(key(0), outputs(10), 10);
        assert!(cache.get(&key(0)).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(&key(0)).is_none());
        assert_eq!(cache.size(), (0, 0), "expired entry dropped on lookup");
    }
}
