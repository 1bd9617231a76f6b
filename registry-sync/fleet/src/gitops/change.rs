//! The changes a GitOps plan lists, and how they print: like `kubectl diff`, one line
//! each, `+` for a node added, `-` for one removed, `~` for anything changed.

use std::collections::BTreeMap;
use std::fmt;

use kiln_node_api::{FallbackPolicy, ServingPolicy};
use kiln_registry::duration::format_ms as format_duration_ms;
use kiln_registry::fleet::NodeSource;
use kiln_registry::{RolloutPlan, Strategy};

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
    /// The model's bulkhead and fallback on the nodes (None: the nodes' own settings).
    Serving {
        model: String,
        from: Option<ServingPolicy>,
        to: Option<ServingPolicy>,
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
            | Change::Serving { model, .. }
            | Change::Production { model, .. } => Some(model),
        }
    }
}

/// A serving policy as kiln.toml spells it (`none` when unset).
fn serving_text(p: &Option<ServingPolicy>) -> String {
    let Some(p) = p else {
        return "none".to_string();
    };
    let mut parts = Vec::new();
    if let Some(n) = p.max_concurrency {
        parts.push(format!("max_concurrency = {n}"));
    }
    if let Some(n) = p.max_queue {
        parts.push(format!("max_queue = {n}"));
    }
    match &p.fallback {
        Some(FallbackPolicy::Named(name)) => parts.push(format!("fallback = \"{name}\"")),
        Some(FallbackPolicy::Fixed { outputs }) => {
            let outputs: Vec<String> = outputs
                .iter()
                .map(|(name, row)| {
                    let row: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                    format!("{name} = [{}]", row.join(", "))
                })
                .collect();
            parts.push(format!("fallback = {{ outputs = {{ {} }} }}", outputs.join(", ")));
        }
        None => {}
    }
    format!("{{ {} }}", parts.join(", "))
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
        ("max_prediction_drift", opt(p.max_prediction_drift)),
        ("min_requests", p.min_requests.to_string()),
        ("max_consecutive_errors", p.max_consecutive_errors.to_string()),
        ("max_pause", format_duration_ms(p.max_pause_ms)),
        ("max_node_downtime", format_duration_ms(p.max_node_downtime_ms)),
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
            Change::Serving { model, from, to } => {
                write!(
                    f,
                    "~ {model}: serving {} → {}",
                    serving_text(from),
                    serving_text(to)
                )
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
