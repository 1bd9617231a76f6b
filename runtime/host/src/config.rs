//! Host settings, with defaults that work on a laptop.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How model instances are reused between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh instance for every call (from a pre-instantiated component): no state
    /// survives a request.
    PerRequest,
    /// Up to `pool_size` instances are kept and reused; an instance that trapped is
    /// dropped.
    Pooled,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Isolation, String> {
        match s {
            "per-request" => Ok(Isolation::PerRequest),
            "pooled" => Ok(Isolation::Pooled),
            other => Err(format!("`{other}`: use per-request or pooled")),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::PerRequest => "per-request",
            Isolation::Pooled => "pooled",
        })
    }
}

/// Settings of a [`crate::Host`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Wall-clock budget of one call into a model.
    pub deadline: Duration,
    /// Linear memory cap of one model instance, in bytes.
    pub memory_limit: usize,
    /// Instance reuse policy.
    pub isolation: Isolation,
    /// Instances kept per model in `pooled` mode.
    pub pool_size: usize,
    /// Calls a pooled instance serves before it is replaced by a fresh one.
    pub max_instance_reuse: u32,
    /// Largest request (sum of input tensor bytes) accepted.
    pub max_request_bytes: usize,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Instance slots of the pooling allocator (all models together).
    pub instance_slots: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            deadline: Duration::from_secs(1),
            memory_limit: 512 << 20,
            isolation: Isolation::Pooled,
            pool_size: 4,
            max_instance_reuse: 1000,
            max_request_bytes: 64 << 20,
            cache_dir: Some(default_cache_dir()),
            instance_slots: 128,
        }
    }
}

/// `$KILN_HOME` (default `./.kiln`).
pub fn kiln_home() -> PathBuf {
    std::env::var_os("KILN_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".kiln"))
}

/// `$KILN_CACHE_DIR`, else `$KILN_HOME/cache/aot`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("KILN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| kiln_home().join("cache").join("aot"))
}
