//! Which version of a model serves: one rule, used by `kiln serve` on a local registry,
//! by the sync service when it deploys a model to the fleet, and by the edge exporters.
//!
//! **The rule.** A model's serving version is its Production version (the highest-numbered
//! if several), else the version its `champion` alias names (MLflow's meaning of
//! `champion`: the version to serve when nothing is in Production), else none. A model with
//! no serving version takes no unnamed traffic anywhere: `kiln serve` keeps its Staging and
//! aliased versions loaded for requests that name them, and the fleet and the edges do not
//! deploy it.
//!
//! Once the sync service has deployed a model, the fleet's own state (its stable version,
//! static weights, an active rollout's current split) says what nodes and edges serve;
//! the rule then decides only where the next rollout goes.

use std::collections::BTreeMap;

use kiln_node_api::{ModelRouting, RoutingTable};
use kiln_registry::fleet::FleetModel;
use kiln_registry::{ModelVersion, Registry, RegistryError, Stage};

use crate::desired::{route, served_models};

/// The alias that names the version to serve when a model has no Production version.
pub const SERVED_ALIAS: &str = kiln_registry::auth::CHAMPION;

/// The serving version among one model's versions (see the module docs), if any.
pub fn serving_version<'a>(versions: impl IntoIterator<Item = &'a ModelVersion>) -> Option<u64> {
    let mut production = None;
    let mut champion = None;
    for v in versions {
        if v.stage == Stage::Production {
            production = production.max(Some(v.version));
        }
        if v.aliases.iter().any(|a| a == SERVED_ALIAS) {
            champion = Some(v.version);
        }
    }
    production.or(champion)
}

/// Versions grouped by model name.
fn by_model(versions: Vec<ModelVersion>) -> BTreeMap<String, Vec<ModelVersion>> {
    let mut models: BTreeMap<String, Vec<ModelVersion>> = BTreeMap::new();
    for v in versions {
        models.entry(v.name.clone()).or_default().push(v);
    }
    models
}

/// Each model's serving version, from one read of the registry.
pub fn targets(registry: &Registry) -> Result<BTreeMap<String, u64>, RegistryError> {
    Ok(by_model(registry.list(None)?)
        .into_iter()
        .filter_map(|(name, versions)| serving_version(&versions).map(|v| (name, v)))
        .collect())
}

/// What `kiln serve` serves from a local registry, as of `generation`: every version in
/// Production or Staging or named by an alias (`served`, as [`Registry::served`] lists
/// them) is loaded; the model's serving version takes all its unnamed traffic and the
/// others answer only requests that name them (weight 0). A model's serving policy
/// (bulkhead, fallback) is its `fleet` entry's, set by `kiln sync apply` from kiln.toml.
pub fn local_table(
    generation: u64,
    served: Vec<ModelVersion>,
    fleet: &BTreeMap<String, FleetModel>,
) -> RoutingTable {
    let mut table = RoutingTable {
        generation,
        ..RoutingTable::default()
    };
    for (name, mut versions) in by_model(served) {
        versions.sort_by_key(|v| v.version);
        versions.dedup_by_key(|v| v.version);
        let target = serving_version(&versions);
        let routing = ModelRouting {
            versions: versions
                .iter()
                .map(|v| route(v, if Some(v.version) == target { 100 } else { 0 }))
                .collect(),
            shadow: None,
            serving: fleet.get(&name).and_then(|f| f.serving.clone()),
        };
        table.models.insert(name, routing);
    }
    table
}

/// What an edge outside the fleet (a Spin app, a Cloudflare Worker) should serve now:
/// every model the fleet serves, with the nodes' weights (active rollouts included), so one
/// registry rollout reaches nodes and edges alike; a model the sync service has not
/// deployed yet serves its serving version, as its first deployment would. Reads only: the
/// table carries the registry's generation.
pub fn edge_table(registry: &Registry) -> Result<RoutingTable, RegistryError> {
    let rollouts = registry.active_rollouts()?;
    let (by_version, models) = served_models(registry, &[], &rollouts)?;
    let mut table = RoutingTable {
        generation: registry.generation()?,
        models: models
            .into_iter()
            .map(|(name, (routing, _))| (name, routing))
            .collect(),
        // Edges check no tokens: no grant goes to them.
        readers: Vec::new(),
    };
    for (name, versions) in &by_version {
        if table.models.contains_key(name) {
            continue;
        }
        if let Some(v) = serving_version(versions.values()).and_then(|t| versions.get(&t)) {
            table.models.insert(
                name.clone(),
                ModelRouting {
                    versions: vec![route(v, 100)],
                    shadow: None,
                    serving: None,
                },
            );
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::is_open;

    fn v(version: u64, stage: Stage, aliases: &[&str]) -> ModelVersion {
        ModelVersion {
            name: "m".into(),
            version,
            digest: format!("{version:064x}"),
            source_digest: None,
            created_at: String::new(),
            description: String::new(),
            tags: Default::default(),
            stage,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            lineage: serde_json::Value::Null,
            signature: serde_json::Value::Null,
            size: 0,
        }
    }

    fn weights(t: &RoutingTable) -> Vec<(u64, u32)> {
        t.models["m"]
            .versions
            .iter()
            .map(|r| (r.version, r.weight))
            .collect()
    }

    #[test]
    fn production_then_champion_then_nothing() {
        let staging_and_champion = [v(2, Stage::None, &["champion"]), v(3, Stage::Staging, &[])];
        assert_eq!(serving_version(&staging_and_champion), Some(2));
        let two_production = [
            v(1, Stage::Production, &[]),
            v(2, Stage::Production, &[]),
            v(3, Stage::Staging, &["champion"]),
        ];
        assert_eq!(serving_version(&two_production), Some(2));
        assert_eq!(serving_version(&[v(3, Stage::Staging, &["challenger"])]), None);
    }

    #[test]
    fn the_local_table_loads_every_served_version_and_weights_the_serving_one() {
        let t = local_table(
            7,
            vec![v(3, Stage::Staging, &[]), v(2, Stage::None, &["champion"])],
            &BTreeMap::new(),
        );
        assert_eq!(t.generation, 7);
        assert_eq!(weights(&t), [(2, 100), (3, 0)]);
        let staging_only = local_table(1, vec![v(3, Stage::Staging, &[])], &BTreeMap::new());
        assert_eq!(
            weights(&staging_only),
            [(3, 0)],
            "no serving version: no unnamed traffic"
        );
    }

    #[test]
    fn the_local_table_carries_the_models_serving_policy() {
        let policy = kiln_node_api::ServingPolicy {
            max_concurrency: Some(3),
            max_queue: Some(0),
            fallback: None,
        };
        let fleet = BTreeMap::from([(
            "m".to_string(),
            FleetModel {
                serving: Some(policy.clone()),
                ..FleetModel::default()
            },
        )]);
        let t = local_table(1, vec![v(1, Stage::Production, &[])], &fleet);
        assert_eq!(t.models["m"].serving, Some(policy));
        let other = BTreeMap::from([("other".to_string(), fleet["m"].clone())]);
        assert_eq!(
            local_table(1, vec![v(1, Stage::Production, &[])], &other).models["m"].serving,
            None
        );
    }

    #[test]
    fn production_aliased_and_weighted_versions_are_open_staging_is_not() {
        let t = local_table(
            1,
            vec![
                v(1, Stage::Production, &[]),
                v(2, Stage::None, &["challenger"]),
                v(3, Stage::Staging, &[]),
            ],
            &BTreeMap::new(),
        );
        let open: Vec<(u64, bool)> = t.models["m"]
            .versions
            .iter()
            .map(|r| (r.version, r.open))
            .collect();
        assert_eq!(open, [(1, true), (2, true), (3, false)]);
        assert!(is_open(&v(4, Stage::Staging, &[]), 5), "a canary is open");
        assert!(!is_open(&v(4, Stage::Archived, &[]), 0));
    }
}
