//! The desired state of the fleet: per node, the routing table it should serve, computed
//! from the registry (versions, stages, aliases), what each model serves between rollouts,
//! and the active rollouts' current weights.

use kiln_node_api::{ModelRouting, RoutingTable, VersionRoute};
use kiln_registry::fleet::{FleetModel, NodeRecord};
use kiln_registry::rollout::Rollout;
use kiln_registry::{ModelVersion, Registry, RegistryError, Stage};
use std::collections::BTreeMap;

/// The fleet's desired state at one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// The routing generation (changes whenever any table's content does).
    pub generation: u64,
    /// Tables by node name.
    pub tables: BTreeMap<String, RoutingTable>,
    /// Which nodes serve each model.
    pub model_nodes: BTreeMap<String, Vec<String>>,
    /// Per node, components to upload ahead of use: versions of the models it serves that
    /// are in Staging or carry an alias (release candidates), so promoting one only
    /// switches routing instead of moving megabytes to every node first.
    pub prefetch: BTreeMap<String, Vec<String>>,
}

/// Whether any client may name a version (force it, select it, download its bundle)
/// without a viewer token: it is in Production, carries an alias, or takes traffic
/// (`weight` > 0). Every other version a table holds (Staging, kept warm for a rollback,
/// rolled back) is restricted; see `kiln_api::access`. A rollout's target is also open
/// while it warms ([`model_routing`]).
pub fn is_open(v: &ModelVersion, weight: u32) -> bool {
    weight > 0 || v.stage == Stage::Production || !v.aliases.is_empty()
}

/// A version's route with `weight`, open to every client when [`is_open`] says so.
pub(crate) fn route(v: &ModelVersion, weight: u32) -> VersionRoute {
    VersionRoute {
        version: v.version,
        digest: v.digest.clone(),
        weight,
        stage: v.stage.to_string(),
        aliases: v.aliases.clone(),
        open: is_open(v, weight),
    }
}

/// A model's routing from its fleet entry and active rollout. None when it serves nothing.
pub fn model_routing(
    versions: &BTreeMap<u64, ModelVersion>,
    fm: Option<&FleetModel>,
    rollout: Option<&Rollout>,
) -> Option<ModelRouting> {
    let get = |n: u64| versions.get(&n);
    let mut routing = ModelRouting::default();
    if let Some(r) = rollout {
        let to = get(r.to_version)?;
        let from = r.from_version.and_then(get);
        let (mut weight, shadow) = r.current_weight();
        if from.is_none() {
            // A first deployment has no traffic to protect.
            weight = 100;
        }
        // The target is open while it warms at weight 0 too: it is about to take traffic,
        // and the sync service's smoke test names it.
        routing.versions.push(VersionRoute {
            open: true,
            ..route(to, weight)
        });
        if let Some(from) = from {
            routing.versions.push(route(from, 100 - weight.min(100)));
        }
        if shadow {
            routing.shadow = Some(route(to, 0));
        }
    } else {
        let fm = fm?;
        match &fm.weights {
            Some(weights) => {
                // Newest first, so sticky keys on a growing new version stay there.
                for (n, w) in weights.iter().rev() {
                    if let Some(v) = get(*n) {
                        routing.versions.push(route(v, *w));
                    }
                }
            }
            None => {
                routing.versions.push(route(get(fm.stable?)?, 100));
                if let Some(prev) = fm.previous.filter(|p| Some(*p) != fm.stable).and_then(get) {
                    routing.versions.push(route(prev, 0));
                }
            }
        }
        if let Some(shadow) = fm.shadow.and_then(get)
            && !routing
                .versions
                .iter()
                .any(|v| v.version == shadow.version && v.weight > 0)
        {
            routing.shadow = Some(route(shadow, 0));
        }
    }
    if routing.versions.iter().all(|v| v.weight == 0) {
        return None;
    }
    // During a rollout too: the policy is the model's, not a version's.
    routing.serving = fm.and_then(|f| f.serving.clone());
    Some(routing)
}

/// Versions by model, and per served model its routing and the nodes that serve it.
pub(crate) type Served = (
    BTreeMap<String, BTreeMap<u64, ModelVersion>>,
    BTreeMap<String, (ModelRouting, Vec<String>)>,
);

pub(crate) fn served_models(
    registry: &Registry,
    all_nodes: &[String],
    rollouts: &[Rollout],
) -> Result<Served, RegistryError> {
    let fleet = registry.fleet_models()?;
    let mut by_model: BTreeMap<String, BTreeMap<u64, ModelVersion>> = BTreeMap::new();
    for v in registry.list(None)? {
        by_model.entry(v.name.clone()).or_default().insert(v.version, v);
    }
    let active: BTreeMap<&str, &Rollout> = rollouts.iter().map(|r| (r.model.as_str(), r)).collect();
    let mut models: BTreeMap<String, (ModelRouting, Vec<String>)> = BTreeMap::new();
    let names: std::collections::BTreeSet<&str> = fleet
        .keys()
        .map(String::as_str)
        .chain(active.keys().copied())
        .collect();
    for name in names {
        let Some(versions) = by_model.get(name) else {
            continue;
        };
        let fm = fleet.get(name);
        if let Some(routing) = model_routing(versions, fm, active.get(name).copied()) {
            let serving = match fm.and_then(|f| f.nodes.clone()) {
                Some(list) => list.into_iter().filter(|n| all_nodes.contains(n)).collect(),
                None => all_nodes.to_vec(),
            };
            models.insert(name.to_string(), (routing, serving));
        }
    }
    Ok((by_model, models))
}

/// Computes the desired state (storing a new generation when it changed).
pub fn compute(
    registry: &Registry,
    nodes: &[NodeRecord],
    rollouts: &[Rollout],
) -> Result<Desired, RegistryError> {
    let all_nodes: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let (by_model, models) = served_models(registry, &all_nodes, rollouts)?;
    // The tokens nodes accept for restricted versions are part of what nodes serve: a
    // token created, revoked or expired moves the generation, and every node gets the
    // new list with its next push.
    let readers = registry.reader_grants()?;
    let hash = {
        let text = serde_json::to_string(&(models.iter().collect::<Vec<_>>(), &readers)).unwrap_or_default();
        kiln_types::digest(text.as_bytes())
    };
    let generation = registry.routing_generation_for(&hash)?;
    let mut tables: BTreeMap<String, RoutingTable> = all_nodes
        .iter()
        .map(|n| {
            (
                n.clone(),
                RoutingTable {
                    generation,
                    models: BTreeMap::new(),
                    readers: readers.clone(),
                },
            )
        })
        .collect();
    let mut model_nodes = BTreeMap::new();
    let mut prefetch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, (_, serving)) in &models {
        let Some(versions) = by_model.get(name) else {
            continue;
        };
        let candidates: Vec<String> = versions
            .values()
            .filter(|v| v.stage == Stage::Staging || !v.aliases.is_empty())
            .map(|v| v.digest.clone())
            .collect();
        for node in serving {
            prefetch
                .entry(node.clone())
                .or_default()
                .extend(candidates.iter().cloned());
        }
    }
    for (node, digests) in prefetch.iter_mut() {
        let served = tables.get(node).map(RoutingTable::digests).unwrap_or_default();
        digests.sort();
        digests.dedup();
        digests.retain(|d| !served.contains(d));
    }
    for (name, (routing, serving)) in models {
        for node in &serving {
            if let Some(t) = tables.get_mut(node) {
                t.models.insert(name.clone(), routing.clone());
            }
        }
        model_nodes.insert(name, serving);
    }
    Ok(Desired {
        generation,
        tables,
        model_nodes,
        prefetch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_registry::RolloutPlan;
    use kiln_registry::rollout::{Phase, Restore, RolloutState};

    fn version(n: u64) -> ModelVersion {
        ModelVersion {
            name: "m".into(),
            version: n,
            digest: format!("{n:064x}"),
            source_digest: None,
            created_at: String::new(),
            description: String::new(),
            tags: Default::default(),
            stage: Stage::None,
            aliases: vec![],
            lineage: serde_json::Value::Null,
            signature: serde_json::Value::Null,
            size: 0,
        }
    }

    fn rollout(step: usize, phase: Phase) -> Rollout {
        Rollout {
            id: 1,
            model: "m".into(),
            from_version: Some(1),
            to_version: 2,
            plan: RolloutPlan::default(),
            state: RolloutState::Progressing,
            step,
            phase,
            step_started_at: None,
            baseline: None,
            restore: Restore::default(),
            trigger: "cli".into(),
            message: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            paused_at: None,
        }
    }

    #[test]
    fn canary_weights_follow_the_step_and_phase() {
        let versions: BTreeMap<u64, ModelVersion> = [(1, version(1)), (2, version(2))].into();
        let weights = |r: &Rollout| -> Vec<(u64, u32)> {
            model_routing(&versions, None, Some(r))
                .unwrap()
                .versions
                .iter()
                .map(|v| (v.version, v.weight))
                .collect()
        };
        // Warming the first step: loaded, no traffic.
        assert_eq!(weights(&rollout(0, Phase::Warming)), vec![(2, 0), (1, 100)]);
        // ... and open, for the smoke test; the old version is open while it serves.
        let warming = model_routing(&versions, None, Some(&rollout(0, Phase::Warming))).unwrap();
        assert!(warming.versions.iter().all(|v| v.open), "{warming:?}");
        let done = model_routing(&versions, None, Some(&rollout(3, Phase::Analysing))).unwrap();
        assert_eq!(
            done.versions
                .iter()
                .map(|v| (v.version, v.open))
                .collect::<Vec<_>>(),
            vec![(2, true), (1, false)],
            "the old version at weight 0 (no stage, no alias) is restricted"
        );
        assert_eq!(weights(&rollout(0, Phase::Analysing)), vec![(2, 5), (1, 95)]);
        // Warming step 2 keeps step 1's weight until the smoke test passed.
        assert_eq!(weights(&rollout(1, Phase::Smoke)), vec![(2, 5), (1, 95)]);
        assert_eq!(weights(&rollout(3, Phase::Analysing)), vec![(2, 100), (1, 0)]);
    }

    #[test]
    fn between_rollouts_the_previous_version_stays_warm() {
        let versions: BTreeMap<u64, ModelVersion> = [(1, version(1)), (2, version(2))].into();
        let fm = FleetModel {
            stable: Some(2),
            previous: Some(1),
            ..FleetModel::default()
        };
        let r = model_routing(&versions, Some(&fm), None).unwrap();
        assert_eq!(
            r.versions
                .iter()
                .map(|v| (v.version, v.weight))
                .collect::<Vec<_>>(),
            vec![(2, 100), (1, 0)]
        );
        assert!(
            r.versions[0].open && !r.versions[1].open,
            "the previous version kept warm is restricted: {r:?}"
        );
        let fm = FleetModel {
            weights: Some([(1, 90), (2, 10)].into()),
            shadow: Some(1),
            ..FleetModel::default()
        };
        let r = model_routing(&versions, Some(&fm), None).unwrap();
        assert_eq!(
            r.versions
                .iter()
                .map(|v| (v.version, v.weight))
                .collect::<Vec<_>>(),
            vec![(2, 10), (1, 90)]
        );
        // A version that already takes traffic is not also its own shadow.
        assert!(r.shadow.is_none());
    }

    #[test]
    fn the_serving_policy_goes_to_the_nodes_between_and_during_rollouts() {
        let versions: BTreeMap<u64, ModelVersion> = [(1, version(1)), (2, version(2))].into();
        let policy = kiln_node_api::ServingPolicy {
            max_concurrency: Some(2),
            max_queue: Some(4),
            fallback: Some(kiln_node_api::FallbackPolicy::Named("previous".into())),
        };
        let fm = FleetModel {
            stable: Some(1),
            serving: Some(policy.clone()),
            ..FleetModel::default()
        };
        let between = model_routing(&versions, Some(&fm), None).unwrap();
        assert_eq!(between.serving.as_ref(), Some(&policy));
        let during = model_routing(&versions, Some(&fm), Some(&rollout(0, Phase::Analysing))).unwrap();
        assert_eq!(during.serving.as_ref(), Some(&policy));
        let without = FleetModel {
            stable: Some(1),
            ..FleetModel::default()
        };
        assert_eq!(
            model_routing(&versions, Some(&without), None).unwrap().serving,
            None
        );
    }
}
