//! Test glue: a catalog kept in a directory, `catalog.json` holding a generation counter
//! and the served versions (routed as the registry routes them) or an explicit routing
//! table, components stored as `{digest}.wasm` next to it.

use kiln_node_api::RoutingTable;
use kiln_runtime::serve::{Catalog, ServedVersion, registry_routing};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize, Default)]
struct File {
    generation: u64,
    versions: Vec<Entry>,
    /// Served as is (weights, shadows) instead of the versions' registry routing.
    #[serde(default)]
    routing: Option<RoutingTable>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    version: u64,
    digest: String,
    stage: String,
    aliases: Vec<String>,
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
        let digest = kiln_runtime::aot_cache::digest(wasm);
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
        file.versions = versions
            .into_iter()
            .map(|v| Entry {
                name: v.name,
                version: v.version,
                digest: v.digest,
                stage: v.stage,
                aliases: v.aliases,
            })
            .collect();
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

    /// As the registry does: Production, Staging and aliased versions only, all traffic
    /// on Production (else the highest-numbered).
    fn routing(&self) -> anyhow::Result<RoutingTable> {
        let file = self.read()?;
        if let Some(routing) = file.routing {
            return Ok(routing);
        }
        let served = file
            .versions
            .into_iter()
            .filter(|e| matches!(e.stage.as_str(), "Production" | "Staging") || !e.aliases.is_empty())
            .map(|e| ServedVersion {
                name: e.name,
                version: e.version,
                digest: e.digest,
                stage: e.stage,
                aliases: e.aliases,
            })
            .collect();
        Ok(registry_routing(file.generation, served))
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.path().join(format!("{digest}.wasm"))
    }
}
