//! What the server should serve, seen through a small trait so the server does not depend
//! on where it comes from: the local registry (`kiln serve`) or a node store that the sync
//! service pushes to (`kiln serve --managed`).

use kiln_node_api::{RoutingTable, VersionRoute};
use std::path::PathBuf;

/// The source of truth for what to serve.
pub trait Catalog: Send + Sync + 'static {
    /// A cheap counter that changes on every change of what to serve, possibly made by
    /// another process. Called every poll interval on a blocking thread.
    fn generation(&self) -> anyhow::Result<u64>;
    /// The routing table to serve: per model, its versions with weights, and a shadow.
    fn routing(&self) -> anyhow::Result<RoutingTable>;
    /// Where the component with this digest is stored (whether or not it exists).
    fn component_path(&self, digest: &str) -> PathBuf;
    /// Every component digest the catalog holds (served or not), for the node state.
    fn stored_digests(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.routing()?.digests())
    }
}

/// One version a registry serves (Production, Staging or aliased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedVersion {
    /// Registered model name (the name in URLs).
    pub name: String,
    /// Version number, monotonically increasing per model.
    pub version: u64,
    /// SHA-256 (lowercase hex) of the component bytes.
    pub digest: String,
    /// "None", "Staging", "Production" or "Archived".
    pub stage: String,
    /// Aliases pointing at this version (`champion`, `challenger`...).
    pub aliases: Vec<String>,
}

/// The routing table of a registry's served versions: all of a model's traffic goes to its
/// Production version (the highest-numbered if several), or, when it has none, to its
/// highest-numbered served version. The others get weight 0: loaded and warm, answering
/// explicit selectors and the forced-version header only.
pub fn registry_routing(generation: u64, versions: Vec<ServedVersion>) -> RoutingTable {
    let mut table = RoutingTable {
        generation,
        ..RoutingTable::default()
    };
    for v in versions {
        table
            .models
            .entry(v.name)
            .or_default()
            .versions
            .push(VersionRoute {
                version: v.version,
                digest: v.digest,
                weight: 0,
                stage: v.stage,
                aliases: v.aliases,
            });
    }
    for routing in table.models.values_mut() {
        routing.versions.sort_by_key(|v| v.version);
        routing.versions.dedup_by_key(|v| v.version);
        let production = routing
            .versions
            .iter()
            .rposition(|v| v.stage.eq_ignore_ascii_case("production"));
        let chosen = production.unwrap_or(routing.versions.len().saturating_sub(1));
        if let Some(v) = routing.versions.get_mut(chosen) {
            v.weight = 100;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, version: u64, stage: &str) -> ServedVersion {
        ServedVersion {
            name: name.into(),
            version,
            digest: format!("{version:064}"),
            stage: stage.into(),
            aliases: vec![],
        }
    }

    fn weights(t: &RoutingTable, model: &str) -> Vec<(u64, u32)> {
        t.models[model]
            .versions
            .iter()
            .map(|v| (v.version, v.weight))
            .collect()
    }

    #[test]
    fn production_takes_the_traffic_else_the_highest_served_version() {
        let t = registry_routing(
            7,
            vec![
                v("a", 3, "None"),
                v("a", 1, "Production"),
                v("a", 2, "Staging"),
                v("b", 1, "Staging"),
                v("b", 2, "None"),
                v("c", 1, "Production"),
                v("c", 2, "Production"),
            ],
        );
        assert_eq!(t.generation, 7);
        assert_eq!(weights(&t, "a"), [(1, 100), (2, 0), (3, 0)]);
        assert_eq!(weights(&t, "b"), [(1, 0), (2, 100)]);
        assert_eq!(weights(&t, "c"), [(1, 0), (2, 100)]);
        assert_eq!(t.validate(), Ok(()));
    }
}
