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

mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use file::{GitopsFile, ModelSpec, NodeSpec, SyncSettings, load, parse};

use crate::fleet::{FleetModel, NodeSource};
use crate::rollout::{RolloutPlan, RolloutState, Strategy, format_duration_ms};
use crate::{Registry, RegistryError, Stage};

/// The audit `reason` of fleet entries written from a file.
const REASON: &str = "GitOps file";

/// What the running sync service does after a Production change.
#[derive(Clone, Debug, PartialEq)]
pub enum VersionEffect {
    /// Starts a rollout with this policy (None: the service's default policy).
    Rollout {
        policy: Option<RolloutPlan>,
        /// The active rollout it aborts first.
        supersedes: Option<u64>,
    },
    /// The model serves nothing yet: the version is served at once.
    FirstDeployment,
    /// The fleet already serves the version; nothing moves.
    AlreadyServed,
    /// A rollout to the version (this id) is under way; it goes on.
    InProgress(u64),
    /// The model has static weights: only the registry changes.
    StaticWeights,
}

/// One difference between the file and the live state, printed like `kubectl diff`.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// `+ node NAME URL`
    AddNode { name: String, url: String },
    /// `~ node NAME url A → B` (and/or `source join → config`).
    UpdateNode {
        name: String,
        from_url: String,
        to_url: String,
        from_source: NodeSource,
    },
    /// `- node NAME URL`: a config node the file no longer lists.
    RemoveNode { name: String, url: String },
    /// The model's rollout policy (None: the service default).
    Policy {
        model: String,
        from: Option<RolloutPlan>,
        to: Option<RolloutPlan>,
    },
    /// The model's static weights.
    Weights {
        model: String,
        from: Option<BTreeMap<u64, u32>>,
        to: Option<BTreeMap<u64, u32>>,
    },
    /// The model's shadow version.
    Shadow {
        model: String,
        from: Option<u64>,
        to: Option<u64>,
    },
    /// The nodes that serve the model (None: every node).
    Nodes {
        model: String,
        from: Option<Vec<String>>,
        to: Option<Vec<String>>,
    },
    /// The model's Production version: `from` are the current ones (usually one).
    Production {
        model: String,
        from: Vec<u64>,
        to: u64,
        effect: VersionEffect,
        /// Set when the latest rollout to this version was rolled back (its message).
        rolled_back: Option<String>,
    },
}

impl Change {
    /// The model the change is about (None for node changes).
    pub fn model(&self) -> Option<&str> {
        match self {
            Change::AddNode { .. } | Change::UpdateNode { .. } | Change::RemoveNode { .. } => None,
            Change::Policy { model, .. }
            | Change::Weights { model, .. }
            | Change::Shadow { model, .. }
            | Change::Nodes { model, .. }
            | Change::Production { model, .. } => Some(model),
        }
    }
}

fn or_none<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".to_string(), T::to_string)
}

fn weights_text(w: &Option<BTreeMap<u64, u32>>) -> String {
    match w {
        None => "none".to_string(),
        Some(w) => format!(
            "{{{}}}",
            w.iter()
                .map(|(v, w)| format!("{v}: {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn nodes_text(n: &Option<Vec<String>>) -> String {
    match n {
        None => "all".to_string(),
        Some(n) => format!("[{}]", n.join(", ")),
    }
}

/// A policy's knobs as (key, value), in file spelling, for diffs.
fn policy_fields(p: &RolloutPlan) -> Vec<(&'static str, String)> {
    let opt = |v: Option<f64>| v.map_or("none".to_string(), |v| v.to_string());
    let mut out = vec![("strategy", p.strategy.to_string())];
    if p.strategy == Strategy::Canary {
        let steps: Vec<String> = p.steps.iter().map(u32::to_string).collect();
        out.push(("steps", steps.join(",")));
    }
    out.extend([
        ("interval", format_duration_ms(p.interval_ms)),
        ("max_error_rate", p.max_error_rate.to_string()),
        ("max_error_rate_increase", opt(p.max_error_rate_increase)),
        (
            "max_p99",
            p.max_p99_ms.map_or("none".into(), |ms| format!("{ms}ms")),
        ),
        ("max_disagreement", opt(p.max_disagreement)),
        ("min_requests", p.min_requests.to_string()),
    ]);
    out
}

fn policy_full(p: &RolloutPlan) -> String {
    let rest: Vec<String> = policy_fields(p)
        .into_iter()
        .filter(|(k, v)| !matches!(*k, "strategy" | "steps" | "interval") && v != "none")
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!("{} ({})", p.summary(), rest.join(", "))
}

fn policy_diff(from: &Option<RolloutPlan>, to: &Option<RolloutPlan>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => {
            let (fa, fb) = (policy_fields(a), policy_fields(b));
            let changed: Vec<String> = fb
                .iter()
                .map(|(k, vb)| {
                    let va = fa
                        .iter()
                        .find(|(ka, _)| ka == k)
                        .map_or("none", |(_, v)| v.as_str());
                    (k, va, vb)
                })
                .filter(|(_, va, vb)| va != vb)
                .map(|(k, va, vb)| format!("{k} {va} → {vb}"))
                .collect();
            changed.join(", ")
        }
        (None, Some(b)) => format!("service default → {}", policy_full(b)),
        (Some(a), None) => format!("{} → service default", policy_full(a)),
        (None, None) => "unchanged".to_string(),
    }
}

impl fmt::Display for VersionEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionEffect::Rollout { policy, supersedes } => {
                if let Some(id) = supersedes {
                    write!(f, "aborts rollout {id}, ")?;
                }
                match policy {
                    Some(p) => write!(f, "starts {}", p.summary()),
                    None => f.write_str("starts the service's default rollout policy"),
                }
            }
            VersionEffect::FirstDeployment => f.write_str("first deployment: served at once"),
            VersionEffect::AlreadyServed => f.write_str("the fleet already serves it"),
            VersionEffect::InProgress(id) => write!(f, "rollout {id} to it goes on"),
            VersionEffect::StaticWeights => f.write_str("static weights: only the registry changes"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddNode { name, url } => write!(f, "+ node {name} {url}"),
            Change::UpdateNode {
                name,
                from_url,
                to_url,
                from_source,
            } => {
                let mut parts = Vec::new();
                if from_url != to_url {
                    parts.push(format!("url {from_url} → {to_url}"));
                }
                if *from_source != NodeSource::Config {
                    parts.push("source join → config".to_string());
                }
                write!(f, "~ node {name} {}", parts.join(", "))
            }
            Change::RemoveNode { name, url } => write!(f, "- node {name} {url}"),
            Change::Policy { model, from, to } => {
                write!(f, "~ {model}: rollout policy {}", policy_diff(from, to))
            }
            Change::Weights { model, from, to } => write!(
                f,
                "~ {model}: weights {} → {}",
                weights_text(from),
                weights_text(to)
            ),
            Change::Shadow { model, from, to } => {
                write!(f, "~ {model}: shadow {} → {}", or_none(from), or_none(to))
            }
            Change::Nodes { model, from, to } => {
                write!(f, "~ {model}: nodes {} → {}", nodes_text(from), nodes_text(to))
            }
            Change::Production {
                model,
                from,
                to,
                effect,
                rolled_back,
            } => {
                let from = if from.is_empty() {
                    "none".to_string()
                } else {
                    from.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                };
                write!(f, "~ {model}: Production {from} → {to} ({effect})")?;
                if let Some(message) = rolled_back {
                    write!(f, "; note: the last rollout to {to} was rolled back: {message}")?;
                }
                Ok(())
            }
        }
    }
}

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
            Change::Weights { model, .. } | Change::Shadow { model, .. } | Change::Nodes { model, .. } => {
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
        ..live
    };
    registry.set_fleet_model(model, &fm, actor, REASON)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_print_like_a_diff() {
        let plan = RolloutPlan::default();
        let cases = [
            (
                Change::AddNode {
                    name: "edge-3".into(),
                    url: "http://127.0.0.1:8083".into(),
                },
                "+ node edge-3 http://127.0.0.1:8083",
            ),
            (
                Change::UpdateNode {
                    name: "edge-1".into(),
                    from_url: "http://a".into(),
                    to_url: "http://b".into(),
                    from_source: NodeSource::Config,
                },
                "~ node edge-1 url http://a → http://b",
            ),
            (
                Change::RemoveNode {
                    name: "edge-4".into(),
                    url: "http://c".into(),
                },
                "- node edge-4 http://c",
            ),
            (
                Change::Production {
                    model: "house-price".into(),
                    from: vec![2],
                    to: 3,
                    effect: VersionEffect::Rollout {
                        policy: Some(plan.clone()),
                        supersedes: None,
                    },
                    rolled_back: None,
                },
                "~ house-price: Production 2 → 3 (starts canary 5,25,50,100 every 30s)",
            ),
            (
                Change::Weights {
                    model: "m".into(),
                    from: None,
                    to: Some([(3, 90), (4, 10)].into()),
                },
                "~ m: weights none → {3: 90, 4: 10}",
            ),
            (
                Change::Nodes {
                    model: "m".into(),
                    from: None,
                    to: Some(vec!["edge-1".into()]),
                },
                "~ m: nodes all → [edge-1]",
            ),
            (
                Change::Policy {
                    model: "m".into(),
                    from: Some(plan.clone()),
                    to: Some(RolloutPlan {
                        steps: vec![10, 100],
                        max_p99_ms: Some(50.0),
                        ..plan.clone()
                    }),
                },
                "~ m: rollout policy steps 5,25,50,100 → 10,100, max_p99 none → 50ms",
            ),
        ];
        for (change, text) in cases {
            assert_eq!(change.to_string(), text);
        }
        let first = Change::Policy {
            model: "m".into(),
            from: None,
            to: Some(plan),
        }
        .to_string();
        assert!(
            first.starts_with(
                "~ m: rollout policy service default → canary 5,25,50,100 every 30s (max_error_rate 0.01"
            ),
            "{first}"
        );
    }
}
