//! What a rollout does: its strategy, steps, analysis interval and thresholds. The same
//! shape is the per-model policy that registry changes start, the `kiln rollout start`
//! flags, and a GitOps file's `rollout = {...}` table.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::RegistryError;

/// How traffic moves to the new version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Weighted steps (5 % → 25 % → …) with analysis at each.
    Canary,
    /// Warm the new version everywhere, smoke-test it, switch all traffic at once, watch it
    /// for one interval, keep the old one warm for an instant rollback.
    BlueGreen,
    /// Switch at once, no analysis (static deployments, first deployments).
    Direct,
}

impl Strategy {
    /// The name used in flags, files and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue-green",
            Strategy::Direct => "direct",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "canary" => Ok(Strategy::Canary),
            "blue-green" | "bluegreen" | "blue_green" => Ok(Strategy::BlueGreen),
            "direct" | "immediate" => Ok(Strategy::Direct),
            other => Err(RegistryError::Invalid(format!(
                "unknown rollout strategy `{other}`: use canary, blue-green or direct"
            ))),
        }
    }
}

/// A rollout plan: the strategy and what decides each step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutPlan {
    /// How traffic moves.
    pub strategy: Strategy,
    /// Canary weights in percent, ascending, ending at 100.
    pub steps: Vec<u32>,
    /// Analysis interval per step, in milliseconds.
    pub interval_ms: u64,
    /// Roll back when the canary's 5xx rate exceeds this (0.05 = 5 %).
    pub max_error_rate: f64,
    /// Roll back when the canary's 5xx rate exceeds the stable version's by more than this.
    pub max_error_rate_increase: Option<f64>,
    /// Roll back when the canary's p99 latency exceeds this, in milliseconds.
    pub max_p99_ms: Option<f64>,
    /// Shadow the new version for one interval before its first weighted step, and roll
    /// back when its answers disagree with the stable version's on more than this share.
    pub max_disagreement: Option<f64>,
    /// Roll back when the canary's outputs drift from the stable version's on the same
    /// traffic window by more than this distance (normed Wasserstein for numerical output
    /// columns, Jensen–Shannon otherwise; Evidently flags 0.1). Judged at the end of each
    /// step where both versions serve (canary only).
    pub max_prediction_drift: Option<f64>,
    /// Fewest canary requests (across nodes) a step needs to be judged; fewer at the end of
    /// the interval pauses the rollout and says so.
    pub min_requests: u64,
    /// Roll back, even below `min_requests`, once the canary has answered this many
    /// requests with a 5xx and none successfully since its step's analysis began (0: off).
    pub max_consecutive_errors: u64,
    /// Longest a rollout stays paused, in milliseconds: then it is rolled back (the new
    /// version's weight goes to 0).
    pub max_pause_ms: u64,
    /// Longest a node that serves the model may stay failing once it failed during the
    /// rollout, in milliseconds: the rollout holds meanwhile, then is rolled back.
    pub max_node_downtime_ms: u64,
}

impl Default for RolloutPlan {
    fn default() -> Self {
        RolloutPlan {
            strategy: Strategy::Canary,
            steps: vec![5, 25, 50, 100],
            interval_ms: 30_000,
            max_error_rate: 0.01,
            max_error_rate_increase: Some(0.005),
            max_p99_ms: None,
            max_disagreement: None,
            max_prediction_drift: None,
            min_requests: 20,
            max_consecutive_errors: 5,
            max_pause_ms: 3_600_000,
            max_node_downtime_ms: 30_000,
        }
    }
}

impl RolloutPlan {
    /// Checks the plan, normalising what it can (steps for blue-green and direct are [100]).
    pub fn validated(mut self) -> Result<RolloutPlan, RegistryError> {
        let bad = |m: String| Err(RegistryError::Invalid(m));
        if self.strategy != Strategy::Canary {
            self.steps = vec![100];
        }
        if self.steps.is_empty() {
            return bad("a canary needs at least one step, e.g. --steps 5,25,50,100".into());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) || self.steps.iter().any(|s| *s == 0 || *s > 100) {
            return bad(format!(
                "canary steps must be ascending percentages in 1..=100, got {:?}",
                self.steps
            ));
        }
        if self.steps.last() != Some(&100) {
            self.steps.push(100);
        }
        if self.interval_ms < 100 && self.strategy != Strategy::Direct {
            return bad(format!(
                "the analysis interval must be at least 100 ms, got {} ms",
                self.interval_ms
            ));
        }
        for (name, v) in [
            ("max-error-rate", Some(self.max_error_rate)),
            ("max-error-rate-increase", self.max_error_rate_increase),
            ("max-disagreement", self.max_disagreement),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return bad(format!("{name} is a share between 0 and 1, got {v}"));
            }
        }
        if let Some(d) = self.max_prediction_drift {
            if !(d.is_finite() && d > 0.0) {
                return bad(format!(
                    "max-prediction-drift is a positive distance (Evidently flags 0.1), got {d}"
                ));
            }
            if self.strategy != Strategy::Canary {
                return bad(format!(
                    "max-prediction-drift compares the new version's outputs with the stable version's on the same traffic, which only a canary has; the {} strategy moves all traffic at once",
                    self.strategy
                ));
            }
        }
        if let Some(p) = self.max_p99_ms
            && p <= 0.0
        {
            return bad(format!("max-p99 must be positive, got {p} ms"));
        }
        if self.max_pause_ms < 1000 {
            return bad(format!(
                "max-pause must be at least 1s, got {}",
                crate::duration::format_ms(self.max_pause_ms)
            ));
        }
        if self.max_node_downtime_ms < 100 {
            return bad(format!(
                "max-node-downtime must be at least 100ms, got {}",
                crate::duration::format_ms(self.max_node_downtime_ms)
            ));
        }
        Ok(self)
    }

    /// The number of analysis steps, counting the shadow step when there is one.
    pub fn step_count(&self) -> usize {
        self.steps.len() + usize::from(self.has_shadow_step())
    }

    /// Whether step 0 shadows the new version instead of giving it traffic.
    pub fn has_shadow_step(&self) -> bool {
        self.strategy == Strategy::Canary && self.max_disagreement.is_some()
    }

    /// The new version's weight (percent) at `step`, and whether it runs as the shadow.
    pub fn weight_at(&self, step: usize) -> (u32, bool) {
        if self.has_shadow_step() {
            if step == 0 {
                return (0, true);
            }
            return (self.steps.get(step - 1).copied().unwrap_or(100), false);
        }
        (self.steps.get(step).copied().unwrap_or(100), false)
    }

    /// One line for tables: `canary 5,25,50,100 every 30s`.
    pub fn summary(&self) -> String {
        match self.strategy {
            Strategy::Canary => format!(
                "canary {}{} every {}",
                if self.has_shadow_step() { "shadow," } else { "" },
                self.steps
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                crate::duration::format_ms(self.interval_ms)
            ),
            Strategy::BlueGreen => format!(
                "blue-green, bake {}",
                crate::duration::format_ms(self.interval_ms)
            ),
            Strategy::Direct => "direct".to_string(),
        }
    }
}

/// Changes to a plan, each optional: the `kiln rollout start` / `policy` flags and a
/// GitOps file's `rollout = {...}` table (keys spelled with underscores) are both this.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanOverrides {
    /// `canary`, `blue-green` or `direct`.
    pub strategy: Option<String>,
    /// Canary weights in percent.
    pub steps: Option<Vec<u32>>,
    /// Analysis interval per step (canary) or bake time (blue-green): `30s`, `500ms`, `2m`.
    pub interval: Option<String>,
    pub max_error_rate: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    /// Canary p99 latency above which to roll back: `50ms`, `1s`.
    pub max_p99: Option<String>,
    pub max_disagreement: Option<f64>,
    /// Canary output drift from the stable version's above which to roll back: `0.1`.
    pub max_prediction_drift: Option<f64>,
    pub min_requests: Option<u64>,
    /// Canary 5xx answers with no success in a step that roll it back below
    /// `min_requests` (0: off).
    pub max_consecutive_errors: Option<u64>,
    /// Longest pause before the rollout is rolled back: `1h`, `30m`.
    pub max_pause: Option<String>,
    /// Longest a node may fail during the rollout before it is rolled back: `30s`.
    pub max_node_downtime: Option<String>,
}

impl PlanOverrides {
    /// `base` with these changes, checked.
    pub fn apply(&self, base: RolloutPlan) -> Result<RolloutPlan, RegistryError> {
        let mut p = base;
        if let Some(s) = &self.strategy {
            p.strategy = s.parse()?;
        }
        if let Some(s) = &self.steps {
            p.steps = s.clone();
        }
        if let Some(i) = &self.interval {
            p.interval_ms = crate::duration::parse_ms(i)?;
        }
        if let Some(v) = self.max_error_rate {
            p.max_error_rate = v;
        }
        if let Some(v) = self.max_error_rate_increase {
            p.max_error_rate_increase = Some(v);
        }
        if let Some(v) = &self.max_p99 {
            p.max_p99_ms = Some(crate::duration::parse_ms(v)? as f64);
        }
        if let Some(v) = self.max_disagreement {
            p.max_disagreement = Some(v);
        }
        if let Some(v) = self.max_prediction_drift {
            p.max_prediction_drift = Some(v);
        }
        if let Some(v) = self.min_requests {
            p.min_requests = v;
        }
        if let Some(v) = self.max_consecutive_errors {
            p.max_consecutive_errors = v;
        }
        if let Some(v) = &self.max_pause {
            p.max_pause_ms = crate::duration::parse_ms(v)?;
        }
        if let Some(v) = &self.max_node_downtime {
            p.max_node_downtime_ms = crate::duration::parse_ms(v)?;
        }
        p.validated()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_change_only_what_they_name() {
        let o = PlanOverrides {
            strategy: Some("blue-green".into()),
            interval: Some("2m".into()),
            max_p99: Some("50ms".into()),
            ..PlanOverrides::default()
        };
        let p = o.apply(RolloutPlan::default()).unwrap();
        assert_eq!(p.strategy, Strategy::BlueGreen);
        assert_eq!((p.interval_ms, p.max_p99_ms), (120_000, Some(50.0)));
        assert_eq!(p.min_requests, RolloutPlan::default().min_requests);
        let bad = PlanOverrides {
            interval: Some("soon".into()),
            ..PlanOverrides::default()
        };
        assert!(bad.apply(RolloutPlan::default()).is_err());
    }

    #[test]
    fn plans_are_checked_and_steps_end_at_100() {
        let p = RolloutPlan {
            steps: vec![10, 50],
            ..RolloutPlan::default()
        }
        .validated()
        .unwrap();
        assert_eq!(p.steps, vec![10, 50, 100]);
        assert!(
            RolloutPlan {
                steps: vec![50, 10],
                ..RolloutPlan::default()
            }
            .validated()
            .is_err()
        );
        let bg = RolloutPlan {
            strategy: Strategy::BlueGreen,
            ..RolloutPlan::default()
        }
        .validated()
        .unwrap();
        assert_eq!(bg.steps, vec![100]);
        assert!(
            RolloutPlan {
                max_error_rate: 2.0,
                ..RolloutPlan::default()
            }
            .validated()
            .is_err()
        );
    }

    #[test]
    fn fail_safe_knobs_have_defaults_and_are_checked() {
        // A plan stored before these fields existed reads with their defaults.
        let old: RolloutPlan = serde_json::from_str(r#"{"strategy":"canary","min_requests":5}"#).unwrap();
        assert_eq!(old.max_consecutive_errors, 5);
        assert_eq!(old.max_pause_ms, 3_600_000);
        assert_eq!(old.max_node_downtime_ms, 30_000);
        let o = PlanOverrides {
            max_consecutive_errors: Some(0),
            max_pause: Some("2m".into()),
            max_node_downtime: Some("5s".into()),
            ..PlanOverrides::default()
        };
        let p = o.apply(RolloutPlan::default()).unwrap();
        assert_eq!(
            (p.max_consecutive_errors, p.max_pause_ms, p.max_node_downtime_ms),
            (0, 120_000, 5_000)
        );
        let too_short = PlanOverrides {
            max_pause: Some("0s".into()),
            ..PlanOverrides::default()
        };
        assert!(too_short.apply(RolloutPlan::default()).is_err());
    }

    #[test]
    fn prediction_drift_needs_a_canary_and_a_positive_distance() {
        let o = PlanOverrides {
            max_prediction_drift: Some(0.1),
            ..PlanOverrides::default()
        };
        assert_eq!(
            o.apply(RolloutPlan::default()).unwrap().max_prediction_drift,
            Some(0.1)
        );
        for bad in [0.0, -0.1, f64::NAN] {
            let o = PlanOverrides {
                max_prediction_drift: Some(bad),
                ..PlanOverrides::default()
            };
            assert!(o.apply(RolloutPlan::default()).is_err(), "{bad}");
        }
        let blue_green = PlanOverrides {
            strategy: Some("blue-green".into()),
            max_prediction_drift: Some(0.1),
            ..PlanOverrides::default()
        };
        let e = blue_green.apply(RolloutPlan::default()).unwrap_err().to_string();
        assert!(e.contains("only a canary"), "{e}");
        // Plans stored before the field existed read without it.
        let old: RolloutPlan = serde_json::from_str(r#"{"strategy":"canary"}"#).unwrap();
        assert_eq!(old.max_prediction_drift, None);
    }

    #[test]
    fn a_shadow_step_comes_first() {
        let p = RolloutPlan {
            steps: vec![50, 100],
            max_disagreement: Some(0.01),
            ..RolloutPlan::default()
        };
        assert_eq!(p.step_count(), 3);
        assert_eq!(p.weight_at(0), (0, true));
        assert_eq!(p.weight_at(1), (50, false));
        assert_eq!(p.weight_at(2), (100, false));
    }
}
