//! Test glue: a catalog kept in a directory, `catalog.json` holding a generation counter
//! and the served versions (routed by `kiln-fleet`'s rule, as `kiln serve` routes a local
//! registry) or an explicit routing table, components stored as `{digest}.wasm` next to it.

use kiln_node_api::RoutingTable;
use kiln_serve::Catalog;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Serialize, Deserialize, Default)]
struct File {
    generation: u64,
    versions: Vec<ServedVersion>,
    /// Served as is (weights, shadows) instead of the versions' registry routing.
    #[serde(default)]
    routing: Option<RoutingTable>,
}

/// One version a registry serves (Production, Staging or aliased).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ServedVersion {
    pub name: String,
    pub version: u64,
    pub digest: String,
    pub stage: String,
    pub aliases: Vec<String>,
}

impl ServedVersion {
    /// As the registry records it (what `kiln-fleet` routes).
    fn model_version(self) -> kiln_registry::ModelVersion {
        kiln_registry::ModelVersion {
            name: self.name,
            version: self.version,
            digest: self.digest,
            source_digest: None,
            created_at: String::new(),
            description: String::new(),
            tags: Default::default(),
            stage: self.stage.parse().expect("a registry stage"),
            aliases: self.aliases,
            lineage: serde_json::Value::Null,
            signature: serde_json::Value::Null,
            size: 0,
        }
    }
}

/// A catalog in a temporary directory.
pub struct DirCatalog {
    dir: tempfile::TempDir,
}

impl Default for DirCatalog {
    fn default() -> Self {
        DirCatalog::new()
    }
}

impl DirCatalog {
    /// An empty catalog at generation 0.
    pub fn new() -> DirCatalog {
        let catalog = DirCatalog {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        catalog.write(&File::default());
        catalog
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("catalog.json")
    }

    fn read(&self) -> anyhow::Result<File> {
        Ok(serde_json::from_slice(&std::fs::read(self.path())?)?)
    }

    fn write(&self, file: &File) {
        // Atomic replace, as a registry in another process would commit.
        let tmp = self.dir.path().join("catalog.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(file).unwrap()).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }

    /// Stores a component by digest; returns (digest, path).
    pub fn store(&self, wasm: &[u8]) -> (String, PathBuf) {
        let digest = kiln_types::digest(wasm);
        let path = self.dir.path().join(format!("{digest}.wasm"));
        if !path.exists() {
            std::fs::write(&path, wasm).unwrap();
        }
        (digest, path)
    }

    /// Makes the catalog unreadable (as a registry being migrated), or readable again.
    pub fn set_readable(&self, readable: bool) {
        let hidden = self.dir.path().join("catalog.json.hidden");
        let (from, to) = if readable {
            (hidden, self.path())
        } else {
            (self.path(), hidden)
        };
        std::fs::rename(from, to).unwrap();
    }

    /// Replaces the served versions and bumps the generation.
    pub fn set(&self, versions: Vec<ServedVersion>) {
        let mut file = self.read().unwrap_or_default();
        file.generation += 1;
        file.routing = None;
        file.versions = versions;
        self.write(&file);
    }

    /// Serves an explicit routing table (its generation is replaced by the next one).
    pub fn set_routing(&self, mut routing: RoutingTable) {
        let mut file = self.read().unwrap_or_default();
        file.generation += 1;
        routing.generation = file.generation;
        file.routing = Some(routing);
        self.write(&file);
    }
}

impl Catalog for DirCatalog {
    fn generation(&self) -> anyhow::Result<u64> {
        Ok(self.read()?.generation)
    }

    /// As `kiln serve` serves a local registry: Production, Staging and aliased versions
    /// loaded, the traffic on the serving version (`kiln-fleet`'s rule).
    fn routing(&self) -> anyhow::Result<RoutingTable> {
        let file = self.read()?;
        if let Some(routing) = file.routing {
            return Ok(routing);
        }
        let served = file
            .versions
            .into_iter()
            .filter(|e| matches!(e.stage.as_str(), "Production" | "Staging") || !e.aliases.is_empty())
            .map(ServedVersion::model_version)
            .collect();
        Ok(kiln_fleet::local_table(
            file.generation,
            served,
            &Default::default(),
        ))
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.path().join(format!("{digest}.wasm"))
    }

    /// [`VIEWER_TOKEN`] reads every model; no other token is known.
    fn authenticate(&self, token: &str) -> anyhow::Result<Option<Arc<dyn kiln_api::Reader>>> {
        Ok((token == VIEWER_TOKEN).then(|| Arc::new(Viewer) as Arc<dyn kiln_api::Reader>))
    }
}

/// The one bearer token the test catalog accepts as a viewer's, for restricted versions.
pub const VIEWER_TOKEN: &str = "kiln_test_viewer";

struct Viewer;

impl kiln_api::Reader for Viewer {
    fn name(&self) -> &str {
        "test-viewer"
    }
    fn may_read(&self, _model: &str) -> bool {
        true
    }
}
