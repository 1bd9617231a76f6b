//! Fleet-wide drift: the sync service asks every node for its per-version profiles
//! (`GET /admin/v1/profiles`), merges those of one version, and measures them against
//! the version's reference profile in the registry (`kiln_monitor::model::drift`):
//! `GET /monitor/v1/drift/{model}` on the sync listener, and the drift gauges.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::time::Duration;

use kiln_monitor::model::{DriftAnswer, FleetCoverage, ModelProfile, Reference};

use crate::node_client::NodeClient;
use crate::state::Shared;

/// The default span of a drift query.
pub const DEFAULT_SINCE: &str = "15m";

/// Why a fleet drift report could not be made, with its HTTP status.
#[derive(Debug)]
pub struct DriftRefusal {
    /// 400, 404 or 409.
    pub status: u16,
    /// What to do about it.
    pub message: String,
}

fn refuse(status: u16, message: String) -> DriftRefusal {
    DriftRefusal { status, message }
}

/// Every node's profiles over one span, merged per (model, version): one request per
/// node, whatever number of versions is asked about afterwards.
pub struct FleetProfiles {
    /// Merged profile and its oldest minute (unix seconds), by (model, version).
    merged: HashMap<(String, u64), (ModelProfile, u64)>,
    /// Nodes that answered.
    answered: Vec<String>,
    /// Nodes that could not be asked, and why.
    unreachable: Vec<(String, String)>,
    /// Profiles that did not merge (another layout), by (model, version): node and why.
    conflicts: HashMap<(String, u64), Vec<(String, String)>>,
}

impl FleetProfiles {
    /// The merged profile of `model`/`version`, and which nodes it covers.
    fn get(&self, model: &str, version: u64) -> (Option<&(ModelProfile, u64)>, FleetCoverage) {
        let key = (model.to_string(), version);
        let mut unreachable = self.unreachable.clone();
        unreachable.extend(self.conflicts.get(&key).into_iter().flatten().cloned());
        (
            self.merged.get(&key),
            FleetCoverage {
                answered: self.answered.clone(),
                unreachable,
            },
        )
    }
}

/// Asks every node for its profiles of the last `since` and merges them per version.
pub fn fleet_profiles(shared: &Shared, since: &str) -> FleetProfiles {
    let nodes: Vec<(String, String)> = shared
        .workers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(name, w)| (name.clone(), w.url.clone()))
        .collect();
    let mut fleet = FleetProfiles {
        merged: HashMap::new(),
        answered: Vec::new(),
        unreachable: Vec::new(),
        conflicts: HashMap::new(),
    };
    for (node, url) in nodes {
        let client = NodeClient::new(&url, shared.node_auth(&node), &shared.config.client_tls);
        match client.profiles(since) {
            Ok(profiles) => {
                fleet.answered.push(node.clone());
                for p in profiles {
                    let key = (p.model, p.version);
                    match fleet.merged.get_mut(&key) {
                        Some((m, from)) => {
                            if let Err(e) = m.merge(&p.profile) {
                                fleet
                                    .conflicts
                                    .entry(key)
                                    .or_default()
                                    .push((node.clone(), format!("its profile does not merge: {e}")));
                            } else {
                                *from = (*from).min(p.from);
                            }
                        }
                        None => {
                            fleet.merged.insert(key, (p.profile, p.from));
                        }
                    }
                }
            }
            Err(e) => fleet.unreachable.push((node, format!("{e:#}"))),
        }
    }
    fleet
}

/// The version a drift query without `version` is about: the model's serving version.
fn serving(shared: &Shared, model: &str) -> Result<u64, DriftRefusal> {
    let versions = shared
        .registry
        .list(Some(model))
        .map_err(|e| refuse(404, e.to_string()))?;
    kiln_fleet::serving_version(&versions).ok_or_else(|| {
        refuse(
            404,
            format!("{model} has no serving version (Production, else champion); name one with ?version=N"),
        )
    })
}

/// The registry's reference of `model`/`version`.
pub fn reference(shared: &Shared, model: &str, version: u64) -> Result<Reference, DriftRefusal> {
    let stored = shared
        .registry
        .reference(model, version)
        .map_err(|e| refuse(404, e.to_string()))?
        .ok_or_else(|| {
            refuse(
                404,
                format!(
                    "{model}/{version} has no reference profile to measure drift against: set one with `kiln monitor reference set {model}/{version} data.csv`"
                ),
            )
        })?;
    let profile = serde_json::from_str(&stored.profile).map_err(|e| {
        refuse(
            409,
            format!("the reference profile of {model}/{version} does not parse: {e}; set it again"),
        )
    })?;
    Ok(Reference {
        features: stored.features,
        profile,
    })
}

/// Checks a `since` query value: a number and s, m or h, up to the nodes' 1 h retention.
pub fn check_since(since: &str) -> Result<Duration, DriftRefusal> {
    kiln_monitor::model::parse_since(since).map_err(|e| refuse(400, e))
}

/// The fleet's drift answer for `model` (`version`: else its serving version).
pub fn answer(
    shared: &Shared,
    model: &str,
    version: Option<u64>,
    since: &str,
) -> Result<DriftAnswer, DriftRefusal> {
    check_since(since)?;
    answer_from(shared, &OnceCell::new(), model, version, since)
}

/// [`answer`] with the nodes' profiles gathered once for several answers (the monitor's
/// round): they are asked for on the first answer that has a reference to compare with.
pub fn answer_from(
    shared: &Shared,
    profiles: &OnceCell<FleetProfiles>,
    model: &str,
    version: Option<u64>,
    since: &str,
) -> Result<DriftAnswer, DriftRefusal> {
    let version = match version {
        Some(v) => v,
        None => serving(shared, model)?,
    };
    let reference = reference(shared, model, version)?;
    let (merged, coverage) = profiles
        .get_or_init(|| fleet_profiles(shared, since))
        .get(model, version);
    let Some((profile, from)) = merged.filter(|(p, _)| p.rows() > 0) else {
        return Err(refuse(
            404,
            format!(
                "{model}/{version} had no traffic on the fleet's nodes in the last {since} (nodes asked: {}; unreachable: {})",
                coverage.answered.join(", "),
                coverage
                    .unreachable
                    .iter()
                    .map(|(n, e)| format!("{n}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    };
    let mut report = kiln_monitor::model::drift(&reference.profile, profile, &reference.features)
        .map_err(|e| refuse(409, format!("drift cannot be computed: {e}")))?;
    report.model = Some(model.to_string());
    report.version = Some(version.to_string());
    shared.metrics.drift.set(model, &version.to_string(), &report);
    Ok(DriftAnswer {
        since: since.to_string(),
        window_start: kiln_types::format::rfc3339(*from as f64),
        nodes: Some(coverage),
        report,
    })
}
