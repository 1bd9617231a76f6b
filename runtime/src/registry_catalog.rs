//! The SQLite registry as the server's [`Catalog`]: `kiln serve` polls its generation and
//! serves every version in Production or Staging or holding an alias. The CLI writes the
//! same database from other processes; SQLite's WAL lets the server read while they write.

use crate::serve::catalog::{Catalog, ServedVersion};
use kiln_registry::Registry;
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

    fn served(&self) -> anyhow::Result<Vec<ServedVersion>> {
        Ok(self
            .registry
            .served()?
            .into_iter()
            .map(|v| ServedVersion {
                component: self.registry.blob_path(&v.digest),
                name: v.name,
                version: v.version,
                digest: v.digest,
                stage: v.stage.to_string(),
                aliases: v.aliases,
            })
            .collect())
    }
}
