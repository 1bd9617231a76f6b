//! Compiled components on disk, keyed by component digest and the engine's compatibility
//! hash (wasmtime version + settings), so a cached component never recompiles and a stale
//! artifact is never loaded into a different engine.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of `.cwasm` artifacts.
#[derive(Debug, Clone)]
pub struct AotCache {
    dir: Option<PathBuf>,
    engine_hash: String,
}

/// Where a component came from, for logs, metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded (memory-mapped) from the cache.
    Hit,
    /// Compiled with Cranelift and stored.
    Compiled,
    /// Compiled; caching is disabled.
    Uncached,
}

struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl AotCache {
    /// A cache in `dir` (created on first store) for `engine`; `None` disables caching.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> AotCache {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        AotCache { dir, engine_hash }
    }

    /// The artifact path for a component digest.
    pub fn path_for(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_hash)))
    }

    /// The component with `digest` from the cache, if it holds a usable artifact (a
    /// memory map: nothing of the component's wasm is read).
    pub fn load_cached(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path_for(digest)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache directory holds only artifacts this code serialized with an
        // engine of the same compatibility hash (it is in the file name); wasmtime checks
        // the header again and refuses anything else.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(digest, path = %path.display(), error = %e, "cached artifact unusable; recompiling");
                None
            }
        }
    }

    /// Loads the component with `digest` from the cache, or compiles `wasm` and stores it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let Some(path) = self.path_for(digest) else {
            let c = Component::new(engine, wasm)
                .map_err(anyhow::Error::from)
                .context("compiling the component")?;
            return Ok((c, CacheOutcome::Uncached));
        };
        if let Some(c) = self.load_cached(engine, digest) {
            return Ok((c, CacheOutcome::Hit));
        }
        let started = std::time::Instant::now();
        let component = Component::new(engine, wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component with Cranelift")?;
        let bytes = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("serializing the compiled component")?;
        if let Err(e) = kiln_types::durable::write(&path, &bytes) {
            tracing::warn!(digest, error = %e, "could not store the compiled component in the cache");
        }
        tracing::debug!(
            digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled component"
        );
        Ok((component, CacheOutcome::Compiled))
    }
}
