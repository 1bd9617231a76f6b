//! The SQLite registry as the server's [`Catalog`]: `kiln serve` polls its generation and
//! serves every version in Production or Staging or holding an alias, with a model's
//! unnamed traffic on its serving version (`kiln-fleet`'s rule: Production, else
//! `champion`). The CLI writes the same database from other processes; SQLite's WAL lets
//! the server read while they write.
//!
//! It also tells the server which bearer tokens of the inference port are readers: the
//! registry's tokens of the viewer role or above, limited to the models they cover (a
//! `node` token reads nothing).

use kiln_node_api::RoutingTable;
use kiln_registry::Registry;
use kiln_registry::auth::{Action, Identity};
use kiln_serve::Catalog;
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
        Ok(kiln_fleet::local_table(
            generation,
            self.registry.served()?,
            &self.registry.fleet_models()?,
        ))
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.registry.blob_path(digest)
    }

    fn authenticate(&self, token: &str) -> anyhow::Result<Option<Arc<dyn kiln_api::Reader>>> {
        let identity = self.registry.authenticate(token)?;
        Ok(identity
            .filter(|i| i.check(Action::Read, None).is_ok())
            .map(|i| Arc::new(TokenReader(i)) as Arc<dyn kiln_api::Reader>))
    }

    fn reference(&self, model: &str, version: u64) -> anyhow::Result<Option<kiln_monitor::model::Reference>> {
        let Some(stored) = self.registry.reference(model, version)? else {
            return Ok(None);
        };
        let profile = serde_json::from_str(&stored.profile).map_err(|e| {
            anyhow::anyhow!("the reference profile of {model}/{version} does not parse: {e}; set it again with `kiln monitor reference set`")
        })?;
        Ok(Some(kiln_monitor::model::Reference {
            features: stored.features,
            profile,
        }))
    }

    fn stored_digests(&self) -> anyhow::Result<Vec<String>> {
        let mut digests: Vec<String> = self.registry.list(None)?.into_iter().map(|v| v.digest).collect();
        digests.sort();
        digests.dedup();
        Ok(digests)
    }
}

/// A registry token that may read (viewer or higher), as the inference port sees it.
struct TokenReader(Identity);

impl kiln_api::Reader for TokenReader {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn may_read(&self, model: &str) -> bool {
        self.0.check(Action::Read, Some(model)).is_ok()
    }
}
