//! Host tests, one integration binary with a module per feature (as wasmtime does).

mod aot_cache;
mod sandbox;

use kiln_host::{Host, HostConfig, Isolation};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The shared AOT cache under `target/`, so each test component compiles once per checkout.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-test-cache/aot")
}

/// A host with a short deadline and a small memory cap.
pub fn strict_host(isolation: Isolation) -> Arc<Host> {
    Arc::new(
        Host::new(HostConfig {
            deadline: Duration::from_millis(200),
            memory_limit: 64 << 20,
            isolation,
            cache_dir: Some(cache_dir()),
            ..HostConfig::default()
        })
        .expect("host"),
    )
}
