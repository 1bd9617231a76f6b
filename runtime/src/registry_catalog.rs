//! The SQLite registry as the server's [`Catalog`]: `kiln serve` polls its generation and
//! serves every version in Production or Staging or holding an alias, with all of a
//! model's traffic on its Production version. The CLI writes the same database from
//! other processes; SQLite's WAL lets the server read while they write.

use crate::serve::catalog::{Catalog, ServedVersion, registry_routing};
use kiln_node_api::RoutingTable;
use kiln_registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;

/// A registry seen by the server.
pub struct RegistryCatalog {
    registry: Arc<Registry>,
}

impl RegistryCatalog {
    /// Wraps an open registry.
    pub fn new(registry: Arc<Registry>) -> RegistryCatalog {
        RegistryCatalog { registry }
    }
}

impl Catalog for RegistryCatalog {
    fn generation(&self) -> anyhow::Result<u64> {
        Ok(self.registry.generation()?)
    }

    fn routing(&self) -> anyhow::Result<RoutingTable> {
        // Generation first: a change committed between the two reads shows up again on
        // the next poll instead of being hidden behind an up-to-date generation.
        let generation = self.registry.generation()?;
        let versions = self
            .registry
            .served()?
            .into_iter()
            .map(|v| ServedVersion {
                name: v.name,
                version: v.version,
                digest: v.digest,
                stage: v.stage.to_string(),
                aliases: v.aliases,
            })
            .collect();
        Ok(registry_routing(generation, versions))
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.registry.blob_path(digest)
    }

    fn stored_digests(&self) -> anyhow::Result<Vec<String>> {
        let mut digests: Vec<String> = self.registry.list(None)?.into_iter().map(|v| v.digest).collect();
        digests.sort();
        digests.dedup();
        Ok(digests)
    }
}
