//! Cranelift's incremental compilation cache, on disk. Every model component carries the
//! same guest code with different data (the snapshot), so compiling a new model's
//! component is mostly cache hits: the engine is compiled once, the model is data.

use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::PathBuf;
use wasmtime::CacheStore;

/// Compiled functions keyed by Cranelift's cache key, one checksummed file each.
#[derive(Debug)]
pub struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    /// A cache in `dir` (created on first insert).
    pub fn new(dir: PathBuf) -> FunctionCache {
        FunctionCache { dir }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name = kiln_types::digest(key);
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        // 32-byte SHA-256 of the value, then the value: a torn or edited entry is a miss.
        if bytes.len() < 32 {
            return None;
        }
        let (sum, value) = bytes.split_at(32);
        (Sha256::digest(value).as_slice() == sum).then(|| Cow::Owned(value.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let mut bytes = Sha256::digest(&value).to_vec();
        bytes.extend_from_slice(&value);
        kiln_types::durable::write(&path, &bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(dir.path().to_path_buf());
        assert!(cache.get(b"k").is_none());
        assert!(cache.insert(b"k", vec![1, 2, 3]));
        assert_eq!(cache.get(b"k").as_deref(), Some(&[1u8, 2, 3][..]));
        let path = cache.path(b"k");
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(cache.get(b"k").is_none(), "a corrupt entry must not be used");
    }
}
