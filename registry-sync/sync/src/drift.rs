//! Fleet-wide drift: the sync service asks every node for its per-version profiles
//! (`GET /admin/v1/profiles`), merges those of one version, and measures them against
//! the version's reference profile in the registry (`kiln_monitor::model::drift`):
//! `GET /monitor/v1/drift/{model}` on the sync listener, and the drift gauges. A canary
//! step's prediction drift (its outputs against the stable version's over the step) comes
//! from the same merged profiles ([`judge_prediction_drift`]).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::time::Duration;

use kiln_monitor::model::{DriftAnswer, FleetCoverage, ModelProfile, Reference};
use kiln_monitor::shift::{PredictionShift, ShiftError, prediction_shift};
use kiln_registry::rollout::Verdict;

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

/// The `since` that covers a step which began `elapsed` ago: whole seconds, rounded up,
/// within the nodes' retention (windows are whole minutes, so a step's first minute may
/// hold the previous step's traffic: the same for both versions).
pub fn step_since(elapsed: Duration) -> String {
    let retention = kiln_monitor::model::RETENTION.as_secs();
    let seconds = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0);
    format!("{}s", seconds.clamp(1, retention))
}

/// The fleet's canary outputs against its stable version's over the last `since`.
pub fn fleet_prediction_shift(
    shared: &Shared,
    model: &str,
    canary: u64,
    stable: u64,
    since: &str,
    max: f64,
) -> Result<PredictionShift, ShiftError> {
    let fleet = fleet_profiles(shared, since);
    let empty = ModelProfile::default();
    let profile = |version| fleet.get(model, version).0.map_or(&empty, |(p, _)| p);
    prediction_shift(profile(stable), profile(canary), max)
}

/// Judges a canary step that passed its other thresholds by its prediction drift: a
/// distance above the plan's max rolls it back; fewer than `min_rows` profiled output rows
/// on either side, or outputs that cannot be compared, pause it (inconclusive, as Argo
/// Rollouts does) instead of passing it blind. With the step's verdict, the line to add to
/// its message.
pub fn judge_prediction_drift(
    min_rows: u64,
    shift: Result<PredictionShift, ShiftError>,
) -> (Verdict, String) {
    match shift {
        Ok(s) if s.canary_rows < min_rows || s.stable_rows < min_rows => {
            let line = format!(
                "too little profiled traffic to judge prediction drift: canary {} output rows, stable {}, need {min_rows} each",
                s.canary_rows, s.stable_rows
            );
            (Verdict::TooLittleTraffic(line.clone()), line)
        }
        Ok(s) if s.drifted() => {
            let line = s.summary();
            (Verdict::Broken(format!("canary {line}")), line)
        }
        Ok(s) => (Verdict::Healthy, s.summary()),
        Err(e) => {
            let line = format!("prediction drift cannot be judged: {e}");
            (Verdict::TooLittleTraffic(line.clone()), line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_monitor::drift::{ColumnDrift, ColumnKind, Method};

    fn shift(score: f64, canary_rows: u64, stable_rows: u64) -> PredictionShift {
        PredictionShift {
            stable_rows,
            canary_rows,
            columns: vec![ColumnDrift {
                name: "y".into(),
                kind: ColumnKind::Numerical,
                method: Method::Wasserstein,
                score,
                threshold: 0.1,
                drift: score > 0.1,
                psi: 0.0,
                exact: true,
            }],
        }
    }

    #[test]
    fn a_drifting_canary_is_broken_a_quiet_one_paused_and_a_close_one_passes() {
        let (v, line) = judge_prediction_drift(20, Ok(shift(0.4, 100, 300)));
        assert!(
            matches!(&v, Verdict::Broken(r) if r.contains("prediction drift: y Wasserstein distance (normed) 0.400 (max 0.1)")),
            "{v:?}"
        );
        assert!(line.contains("canary 100 rows vs stable 300 rows"), "{line}");
        // Below min rows on either side even a large distance only pauses.
        let (v, _) = judge_prediction_drift(20, Ok(shift(0.9, 100, 19)));
        assert!(
            matches!(&v, Verdict::TooLittleTraffic(r) if r.contains("stable 19, need 20")),
            "{v:?}"
        );
        let (v, line) = judge_prediction_drift(20, Ok(shift(0.05, 100, 300)));
        assert_eq!(v, Verdict::Healthy);
        assert!(line.contains("0.050"), "{line}");
        let (v, _) = judge_prediction_drift(20, Err(ShiftError::NoOutputs { side: "canary" }));
        assert!(
            matches!(&v, Verdict::TooLittleTraffic(r) if r.contains("--no-drift-profiles")),
            "{v:?}"
        );
    }

    #[test]
    fn a_step_is_covered_in_whole_seconds_within_retention() {
        assert_eq!(step_since(Duration::from_millis(1500)), "2s");
        assert_eq!(step_since(Duration::ZERO), "1s");
        assert_eq!(step_since(Duration::from_secs(30)), "30s");
        assert_eq!(step_since(Duration::from_secs(7200)), "3600s");
        assert!(check_since(&step_since(Duration::from_secs(7200))).is_ok());
    }
}
