//! GitOps: a declarative file (`kiln.toml`) that says which nodes the fleet has and, per
//! model, its Production version, rollout policy, static weights, shadow and nodes.
//! [`plan`] diffs it against the registry database; [`apply`] makes exactly those changes.
//!
//! What the file owns: the nodes it lists, and config nodes it does not list (removed);
//! for each model it names, the policy, weights, shadow and node list (a key left out means
//! the default: the service's policy, no weights, no shadow, every node) and, when
//! `version` is given, the Production version. What it leaves alone: models it does not
//! name, nodes that joined with `kiln serve --join`, each model's stable/previous versions
//! (the sync service's rollouts own those), aliases, tags and stages other than the
//! Production move.
//!
//! A Production change only moves the version in the registry; the running `kiln sync`
//! notices and starts the model's rollout policy (its default when the file sets none), or
//! serves the version at once on a first deployment. A model with static weights keeps them:
//! its version change touches only the registry. Apply writes the policy and fleet entry
//! before the version so the rollout it starts sees them.
//!
//! Everything is checked before anything is written. Each change is its own audited
//! transaction; if one fails (storage), applying the file again finishes the rest. A change
//! that would write nothing is not made, so applying the same file twice leaves the audit
//! log as it was.

mod change;
mod file;

use std::collections::{BTreeMap, BTreeSet};

pub use change::{Change, VersionEffect};
pub use file::{GitopsFile, ModelSpec, NodeSpec, SyncSettings, load, parse};

use kiln_registry::fleet::{FleetModel, NodeSource};
use kiln_registry::rollout::RolloutState;
use kiln_registry::{Registry, RegistryError, Stage};

/// The audit `reason` of fleet entries written from a file.
const REASON: &str = "GitOps file";

/// Checks the file against the registry: every version it names exists, and every node a
/// model names will exist after the apply. Names every problem at once.
fn check_against(registry: &Registry, file: &GitopsFile) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let live_nodes = registry.nodes()?;
    let known_nodes: BTreeSet<&str> = file
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .chain(
            live_nodes
                .iter()
                .filter(|n| n.source == NodeSource::Join)
                .map(|n| n.name.as_str()),
        )
        .collect();
    for (model, spec) in &file.models {
        let versions: BTreeSet<u64> = registry.list(Some(model))?.iter().map(|v| v.version).collect();
        let mut missing = |key: &str, v: u64| {
            if versions.contains(&v) {
                return;
            }
            let has = if versions.is_empty() {
                "the registry has no model by that name; register it with `kiln models register`".to_string()
            } else {
                format!(
                    "it has {}",
                    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )
            };
            problems.push(format!(
                "models.{model}.{key}: version {v} of {model} is not in the registry ({has})"
            ));
        };
        if let Some(v) = spec.version {
            missing("version", v);
        }
        for v in spec.weights.iter().flat_map(|w| w.keys()) {
            missing("weights", *v);
        }
        if let Some(v) = spec.shadow {
            missing("shadow", v);
        }
        for node in spec.nodes.iter().flatten() {
            if known_nodes.contains(node.as_str()) {
                continue;
            }
            let why = if live_nodes.iter().any(|n| &n.name == node) {
                "it is a config node this file does not list, so the file removes it; add it under [[nodes]]"
            } else {
                "add it under [[nodes]] or start it with `kiln serve --join`"
            };
            problems.push(format!("models.{model}.nodes: no node named `{node}`: {why}"));
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "the GitOps file does not match the registry; nothing was changed:\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(())
}

fn sorted(nodes: &Option<Vec<String>>) -> Option<Vec<String>> {
    nodes.clone().map(|mut n| {
        n.sort();
        n.dedup();
        n
    })
}

/// The changes that would make the live state match `file`, in the order [`apply`] makes
/// them: node additions and updates, node removals, then per model its policy, weights,
/// shadow, nodes and last its Production version. Fails, naming each problem, when the
/// file names versions or nodes that do not exist.
pub fn plan(registry: &Registry, file: &GitopsFile) -> anyhow::Result<Vec<Change>> {
    check_against(registry, file)?;
    let mut changes = Vec::new();

    let live: BTreeMap<String, _> = registry
        .nodes()?
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
    for spec in &file.nodes {
        match live.get(&spec.name) {
            None => changes.push(Change::AddNode {
                name: spec.name.clone(),
                url: spec.url.clone(),
            }),
            Some(n) if n.url != spec.url || n.source != NodeSource::Config => {
                changes.push(Change::UpdateNode {
                    name: spec.name.clone(),
                    from_url: n.url.clone(),
                    to_url: spec.url.clone(),
                    from_source: n.source,
                })
            }
            Some(_) => {}
        }
    }
    for n in live.values() {
        if n.source == NodeSource::Config && !file.nodes.iter().any(|s| s.name == n.name) {
            changes.push(Change::RemoveNode {
                name: n.name.clone(),
                url: n.url.clone(),
            });
        }
    }

    let fleet = registry.fleet_models()?;
    for (model, spec) in &file.models {
        let policy = registry.rollout_policy(model)?;
        if policy != spec.rollout {
            changes.push(Change::Policy {
                model: model.clone(),
                from: policy,
                to: spec.rollout.clone(),
            });
        }
        let fm = fleet.get(model).cloned().unwrap_or_default();
        if fm.weights != spec.weights {
            changes.push(Change::Weights {
                model: model.clone(),
                from: fm.weights.clone(),
                to: spec.weights.clone(),
            });
        }
        if fm.shadow != spec.shadow {
            changes.push(Change::Shadow {
                model: model.clone(),
                from: fm.shadow,
                to: spec.shadow,
            });
        }
        if sorted(&fm.nodes) != spec.nodes {
            changes.push(Change::Nodes {
                model: model.clone(),
                from: fm.nodes.clone(),
                to: spec.nodes.clone(),
            });
        }
        if fm.serving != spec.serving {
            changes.push(Change::Serving {
                model: model.clone(),
                from: fm.serving.clone(),
                to: spec.serving.clone(),
            });
        }
        let Some(to) = spec.version else {
            continue;
        };
        let mut from: Vec<u64> = registry.production(model)?.iter().map(|v| v.version).collect();
        from.sort_unstable();
        if from == [to] {
            continue;
        }
        let active = registry.active_rollout(model)?;
        let effect = if spec.weights.is_some() {
            VersionEffect::StaticWeights
        } else if let Some(r) = active.as_ref().filter(|r| r.to_version == to) {
            VersionEffect::InProgress(r.id)
        } else if active.is_none() && fm.stable.is_none() {
            VersionEffect::FirstDeployment
        } else if active.is_none() && fm.stable == Some(to) {
            VersionEffect::AlreadyServed
        } else {
            VersionEffect::Rollout {
                policy: spec.rollout.clone(),
                supersedes: active.map(|r| r.id),
            }
        };
        let rolled_back = registry
            .rollouts(Some(model), 20)?
            .into_iter()
            .find(|r| r.to_version == to && !r.state.is_active())
            .filter(|r| r.state == RolloutState::RolledBack)
            .map(|r| format!("rollout {}: {}", r.id, r.message));
        changes.push(Change::Production {
            model: model.clone(),
            from,
            to,
            effect,
            rolled_back,
        });
    }
    Ok(changes)
}

/// Makes the changes [`plan`] lists, recording `actor` in the audit log, and returns them
/// (empty when the live state already matches). Nothing is written when the file does
/// not match the registry.
pub fn apply(registry: &Registry, file: &GitopsFile, actor: &str) -> anyhow::Result<Vec<Change>> {
    let changes = plan(registry, file)?;
    let mut fleet_done = BTreeSet::new();
    for change in &changes {
        match change {
            Change::AddNode { name, url }
            | Change::UpdateNode {
                name, to_url: url, ..
            } => {
                registry.upsert_node(name, url, NodeSource::Config, actor)?;
            }
            Change::RemoveNode { name, .. } => {
                registry.remove_node(name, actor)?;
            }
            Change::Policy { model, to, .. } => {
                registry.set_rollout_policy(model, to.as_ref(), actor)?;
            }
            Change::Weights { model, .. }
            | Change::Shadow { model, .. }
            | Change::Nodes { model, .. }
            | Change::Serving { model, .. } => {
                // One write (one audit entry) for all of a model's fleet changes.
                if fleet_done.insert(model.clone()) {
                    set_fleet_entry(registry, model, &file.models[model], actor)?;
                }
            }
            Change::Production { model, to, .. } => {
                registry.transition_stage(model, *to, Stage::Production, true, actor)?;
                tracing::info!(model = %model, version = *to, "GitOps file moved the Production version");
            }
        }
    }
    Ok(changes)
}

/// Writes the file's weights, shadow and nodes into the model's fleet entry, keeping the
/// stable/previous versions the sync service set (read just before the write).
fn set_fleet_entry(
    registry: &Registry,
    model: &str,
    spec: &ModelSpec,
    actor: &str,
) -> Result<(), RegistryError> {
    let live = registry.fleet_models()?.remove(model).unwrap_or_default();
    let fm = FleetModel {
        weights: spec.weights.clone(),
        shadow: spec.shadow,
        nodes: spec.nodes.clone(),
        serving: spec.serving.clone(),
        ..live
    };
    registry.set_fleet_model(model, &fm, actor, REASON)?;
    Ok(())
}
