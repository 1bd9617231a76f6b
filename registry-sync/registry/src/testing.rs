//! Helpers for tests of crates built on the registry (feature `testing`): a registry in a
//! temporary home and versions to register into it.

use std::collections::BTreeMap;

use serde_json::json;

use crate::model::{GoldenPair, NewVersion};
use crate::registry::Registry;

/// A registry in a fresh temporary home; keep the `TempDir` alive as long as the registry.
pub fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&dir.path().join("kiln")).expect("open registry");
    (dir, registry)
}

/// A registration request whose component is `content`.
pub fn new_version(name: &str, content: &[u8]) -> NewVersion {
    NewVersion {
        name: name.to_string(),
        component: content.to_vec(),
        source_digest: None,
        description: format!("{} bytes", content.len()),
        tags: BTreeMap::from([("framework".to_string(), "onnx".to_string())]),
        lineage: json!({
            "run_id": "run-1",
            "params": {"n_estimators": 100},
            "metrics": {"rmse": 0.42},
            "dataset_digest": "sha256:00",
            "environment": {"python": "3.12"},
        }),
        signature: json!({"inputs": [{"name": "features", "type": "f32", "shape": [-1, 8]}]}),
        golden: vec![GoldenPair {
            request: json!({"features": [1.0, 2.0]}),
            response: json!({"prediction": 3.5}),
        }],
    }
}

/// Registers `content` under `name` as a new version and returns its number.
pub fn register(registry: &Registry, name: &str, content: &[u8]) -> u64 {
    let (version, created) = registry
        .register(new_version(name, content), "tester")
        .expect("register");
    assert!(created, "{name}: expected a new version");
    version.version
}
