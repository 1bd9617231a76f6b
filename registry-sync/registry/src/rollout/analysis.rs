//! Judging a rollout step from the nodes' own counters: the canary's 5xx rate, its rate
//! increase over the stable version, its p99 latency and, on a shadow step, how often its
//! answers disagreed with the stable version's. Requests shed as `overloaded` (a full
//! bulkhead: capacity, not the version) are shown but are neither errors nor judged
//! requests.

use kiln_node_api::{ShadowStats, VersionStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::plan::RolloutPlan;

/// Counters of one model on one node at one moment: per version, and per shadow version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NodeCounters {
    /// The node's process instance (counters restart with it).
    pub instance_id: String,
    /// Per version number.
    pub versions: BTreeMap<u64, VersionStats>,
    /// Per shadow version number.
    pub shadows: BTreeMap<u64, ShadowStats>,
}

/// Counters of every node, by node name.
pub type FleetCounters = BTreeMap<String, NodeCounters>;

/// What happened to one version during a step, summed over nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct StepFigures {
    /// Canary requests (shed ones included), 5xx answers and p99 (seconds).
    pub canary_requests: u64,
    pub canary_errors: u64,
    pub canary_p99: Option<f64>,
    /// Canary requests refused with a 4xx (the caller's fault: no error, no success).
    pub canary_client_errors: u64,
    /// Canary requests shed with a 503 `overloaded` (capacity: no error, not judged).
    pub canary_overloaded: u64,
    /// Stable requests (shed ones included) and 5xx answers.
    pub stable_requests: u64,
    pub stable_errors: u64,
    /// Stable requests shed with a 503 `overloaded`.
    pub stable_overloaded: u64,
    /// Shadow comparisons, disagreements and errors (shadow step only).
    pub shadow_compared: u64,
    pub shadow_disagreements: u64,
    pub shadow_errors: u64,
}

impl StepFigures {
    /// Canary requests the version answered itself (not shed as overloaded): what rates
    /// and `min_requests` count.
    pub fn canary_judged(&self) -> u64 {
        self.canary_requests.saturating_sub(self.canary_overloaded)
    }
    /// Stable requests the version answered itself.
    pub fn stable_judged(&self) -> u64 {
        self.stable_requests.saturating_sub(self.stable_overloaded)
    }
    /// Canary requests answered successfully (neither 5xx, 4xx nor shed).
    pub fn canary_successes(&self) -> u64 {
        self.canary_judged()
            .saturating_sub(self.canary_errors)
            .saturating_sub(self.canary_client_errors)
    }
    /// Canary 5xx share of the requests it answered (0 without any).
    pub fn canary_error_rate(&self) -> f64 {
        ratio(self.canary_errors, self.canary_judged())
    }
    /// Stable 5xx share of the requests it answered.
    pub fn stable_error_rate(&self) -> f64 {
        ratio(self.stable_errors, self.stable_judged())
    }
    /// One line for messages and status tables.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "canary {} req, {:.1}% errors, p99 {}; stable {} req, {:.1}% errors",
            self.canary_requests,
            100.0 * self.canary_error_rate(),
            self.canary_p99.map_or("-".to_string(), format_seconds),
            self.stable_requests,
            100.0 * self.stable_error_rate()
        );
        if self.canary_overloaded > 0 || self.stable_overloaded > 0 {
            s.push_str(&format!(
                "; shed as overloaded: canary {}, stable {} (capacity, not errors)",
                self.canary_overloaded, self.stable_overloaded
            ));
            if self.stable_overloaded == 0 {
                s.push_str(", only the canary shed load");
            }
        }
        if self.shadow_compared > 0 || self.shadow_errors > 0 {
            s.push_str(&format!(
                "; shadow {} compared, {:.1}% disagree, {} errors",
                self.shadow_compared,
                100.0 * ratio(self.shadow_disagreements, self.shadow_compared),
                self.shadow_errors
            ));
        }
        s
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn format_seconds(s: f64) -> String {
    if s.is_infinite() {
        "above the top bucket".to_string()
    } else if s < 1.0 {
        format!("≤{}ms", (s * 1000.0 * 100.0).round() / 100.0)
    } else {
        format!("≤{s}s")
    }
}

/// Sums what happened between `baseline` and `now` for the canary and stable versions.
pub fn step_figures(
    baseline: &FleetCounters,
    now: &FleetCounters,
    canary: u64,
    stable: Option<u64>,
) -> StepFigures {
    let mut canary_total = VersionStats::default();
    let mut stable_total = VersionStats::default();
    let mut shadow_total = ShadowStats::default();
    for (node, current) in now {
        let before = baseline
            .get(node)
            .filter(|b| b.instance_id == current.instance_id);
        let delta = |v: u64| -> Option<VersionStats> {
            let cur = current.versions.get(&v)?;
            Some(match before.and_then(|b| b.versions.get(&v)) {
                Some(b) => cur.since(b),
                None => cur.clone(),
            })
        };
        if let Some(d) = delta(canary) {
            canary_total.add(&d);
        }
        if let Some(d) = stable.and_then(delta) {
            stable_total.add(&d);
        }
        if let Some(cur) = current.shadows.get(&canary) {
            let d = match before.and_then(|b| b.shadows.get(&canary)) {
                Some(b) => cur.since(b),
                None => cur.clone(),
            };
            shadow_total.compared += d.compared;
            shadow_total.disagreements += d.disagreements;
            shadow_total.errors += d.errors;
        }
    }
    StepFigures {
        canary_requests: canary_total.requests,
        canary_errors: canary_total.server_errors,
        canary_p99: canary_total.latency.quantile(0.99),
        canary_client_errors: canary_total.client_errors,
        canary_overloaded: canary_total.overloaded,
        stable_requests: stable_total.requests,
        stable_errors: stable_total.server_errors,
        stable_overloaded: stable_total.overloaded,
        shadow_compared: shadow_total.compared,
        shadow_disagreements: shadow_total.disagreements,
        shadow_errors: shadow_total.errors,
    }
}

/// The analysis outcome of a step so far.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// A threshold is broken: roll back, saying why.
    Broken(String),
    /// The interval is over and the canary is healthy: next step.
    Healthy,
    /// The interval is over with too little traffic to judge: pause, saying so.
    TooLittleTraffic(String),
    /// Keep watching.
    Watching,
}

/// Judges a step. A canary that has failed `max_consecutive_errors` times and never
/// succeeded in the step is broken whatever the traffic; the other thresholds are checked
/// as soon as there are `min_requests` judged canary requests (so a broken canary is
/// rolled back within the interval it breaks in); the step passes only when its interval
/// is over.
pub fn judge(plan: &RolloutPlan, shadow_step: bool, figures: &StepFigures, interval_over: bool) -> Verdict {
    let min = plan.min_requests.max(1);
    let max_failures = plan.max_consecutive_errors;
    if shadow_step {
        let seen = figures.shadow_compared + figures.shadow_errors;
        if max_failures > 0 && figures.shadow_errors >= max_failures && figures.shadow_compared == 0 {
            return Verdict::Broken(format!(
                "the shadow failed {} time(s) and never answered in the step (max consecutive errors {max_failures}) ({})",
                figures.shadow_errors,
                figures.summary()
            ));
        }
        if seen >= min {
            let error_rate = ratio(figures.shadow_errors, seen);
            if error_rate > plan.max_error_rate {
                return Verdict::Broken(format!(
                    "shadow error rate {:.1}% > max {:.1}% ({})",
                    100.0 * error_rate,
                    100.0 * plan.max_error_rate,
                    figures.summary()
                ));
            }
            if let Some(max) = plan.max_disagreement {
                let rate = ratio(figures.shadow_disagreements, figures.shadow_compared);
                if rate > max {
                    return Verdict::Broken(format!(
                        "shadow disagreement {:.1}% > max {:.1}% ({})",
                        100.0 * rate,
                        100.0 * max,
                        figures.summary()
                    ));
                }
            }
        }
        if !interval_over {
            return Verdict::Watching;
        }
        if seen < min {
            return Verdict::TooLittleTraffic(format!(
                "too little traffic to judge the shadow step: {seen} shadowed requests, need {min}"
            ));
        }
        return Verdict::Healthy;
    }
    if max_failures > 0 && figures.canary_errors >= max_failures && figures.canary_successes() == 0 {
        return Verdict::Broken(format!(
            "canary error rate {:.1}%: {} 5xx answer(s) and none successful in the step (max consecutive errors {max_failures}) ({})",
            100.0 * figures.canary_error_rate(),
            figures.canary_errors,
            figures.summary()
        ));
    }
    if figures.canary_judged() >= min {
        let rate = figures.canary_error_rate();
        if rate > plan.max_error_rate {
            return Verdict::Broken(format!(
                "canary error rate {:.1}% > max {:.1}% ({})",
                100.0 * rate,
                100.0 * plan.max_error_rate,
                figures.summary()
            ));
        }
        if let Some(max_increase) = plan.max_error_rate_increase
            && figures.stable_judged() >= min
            && rate - figures.stable_error_rate() > max_increase
        {
            return Verdict::Broken(format!(
                "canary error rate {:.1}% is {:.1} points above stable's {:.1}% (max +{:.1}) ({})",
                100.0 * rate,
                100.0 * (rate - figures.stable_error_rate()),
                100.0 * figures.stable_error_rate(),
                100.0 * max_increase,
                figures.summary()
            ));
        }
        if let (Some(max_ms), Some(p99)) = (plan.max_p99_ms, figures.canary_p99)
            && p99 * 1000.0 > max_ms
        {
            return Verdict::Broken(format!(
                "canary p99 {} > max {max_ms}ms ({})",
                format_seconds(p99),
                figures.summary()
            ));
        }
    }
    if !interval_over {
        return Verdict::Watching;
    }
    if figures.canary_judged() < min {
        let shed = if figures.canary_overloaded > 0 {
            format!(" ({} more shed as overloaded)", figures.canary_overloaded)
        } else {
            String::new()
        };
        return Verdict::TooLittleTraffic(format!(
            "too little traffic to judge: {} canary requests in the step{shed}, need {min}",
            figures.canary_judged()
        ));
    }
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_node_api::Histogram;

    fn stats(requests: u64, errors: u64) -> VersionStats {
        VersionStats {
            model: "m".into(),
            version: 0,
            requests,
            server_errors: errors,
            client_errors: 0,
            overloaded: 0,
            latency: Histogram {
                bounds: vec![0.001, 0.01],
                counts: vec![requests, requests],
                count: requests,
                sum: 0.0,
            },
        }
    }

    fn node(instance: &str, canary: (u64, u64), stable: (u64, u64)) -> NodeCounters {
        NodeCounters {
            instance_id: instance.into(),
            versions: [(2, stats(canary.0, canary.1)), (1, stats(stable.0, stable.1))].into(),
            shadows: BTreeMap::new(),
        }
    }

    #[test]
    fn figures_are_deltas_summed_over_nodes_and_restarts_count_whole() {
        let base: FleetCounters = [
            ("a".into(), node("i1", (10, 1), (100, 0))),
            ("b".into(), node("i2", (5, 0), (50, 0))),
        ]
        .into();
        let now: FleetCounters = [
            ("a".into(), node("i1", (30, 3), (300, 0))),
            // b restarted: its counters count whole.
            ("b".into(), node("i9", (7, 1), (20, 0))),
        ]
        .into();
        let f = step_figures(&base, &now, 2, Some(1));
        assert_eq!(f.canary_requests, 20 + 7);
        assert_eq!(f.canary_errors, 2 + 1);
        assert_eq!(f.stable_requests, 200 + 20);
        assert_eq!(f.canary_p99, Some(0.001));
    }

    #[test]
    fn broken_healthy_and_too_little() {
        let plan = RolloutPlan::default();
        let mut f = StepFigures {
            canary_requests: 100,
            canary_errors: 10,
            stable_requests: 1000,
            ..Default::default()
        };
        assert!(matches!(judge(&plan, false, &f, false), Verdict::Broken(m) if m.contains("error rate")));
        f.canary_errors = 0;
        assert_eq!(judge(&plan, false, &f, false), Verdict::Watching);
        assert_eq!(judge(&plan, false, &f, true), Verdict::Healthy);
        f.canary_requests = 3;
        assert!(
            matches!(judge(&plan, false, &f, true), Verdict::TooLittleTraffic(m) if m.contains("3 canary requests"))
        );
        let slow = RolloutPlan {
            max_p99_ms: Some(5.0),
            ..RolloutPlan::default()
        };
        let f = StepFigures {
            canary_requests: 100,
            canary_p99: Some(0.01),
            ..Default::default()
        };
        assert!(matches!(judge(&slow, false, &f, false), Verdict::Broken(m) if m.contains("p99")));
    }

    #[test]
    fn a_canary_failing_every_request_is_broken_below_min_requests() {
        let plan = RolloutPlan {
            min_requests: 1000,
            ..RolloutPlan::default()
        };
        let mut f = StepFigures {
            canary_requests: 4,
            canary_errors: 4,
            stable_requests: 80,
            ..Default::default()
        };
        // Four failures: not yet (the default is 5).
        assert_eq!(judge(&plan, false, &f, false), Verdict::Watching);
        f.canary_requests = 5;
        f.canary_errors = 5;
        assert!(
            matches!(judge(&plan, false, &f, false), Verdict::Broken(m) if m.contains("none successful") && m.contains("max consecutive errors 5"))
        );
        // One success in the step: the rule does not apply (min_requests decides).
        f.canary_requests = 6;
        assert_eq!(judge(&plan, false, &f, false), Verdict::Watching);
        assert!(matches!(
            judge(&plan, false, &f, true),
            Verdict::TooLittleTraffic(_)
        ));
        // Client errors and shed requests are no successes.
        f.canary_client_errors = 1;
        assert!(matches!(judge(&plan, false, &f, false), Verdict::Broken(_)));
        // Off.
        let off = RolloutPlan {
            max_consecutive_errors: 0,
            ..plan.clone()
        };
        assert_eq!(judge(&off, false, &f, false), Verdict::Watching);
        // The shadow step has the same rule.
        let s = StepFigures {
            shadow_errors: 5,
            ..Default::default()
        };
        assert!(matches!(judge(&plan, true, &s, false), Verdict::Broken(m) if m.contains("shadow failed 5")));
    }

    #[test]
    fn overload_is_shown_and_never_an_error() {
        let base: FleetCounters = [("a".into(), node("i1", (0, 0), (0, 0)))].into();
        let mut now = node("i1", (100, 0), (100, 0));
        if let Some(c) = now.versions.get_mut(&2) {
            c.overloaded = 60;
        }
        let now: FleetCounters = [("a".into(), now)].into();
        let f = step_figures(&base, &now, 2, Some(1));
        assert_eq!(
            (f.canary_overloaded, f.canary_errors, f.canary_judged()),
            (60, 0, 40)
        );
        assert!(
            f.summary().contains("shed as overloaded: canary 60, stable 0"),
            "{}",
            f.summary()
        );
        assert!(
            f.summary().contains("only the canary shed load"),
            "{}",
            f.summary()
        );
        // Shed requests neither fail the canary nor count towards min_requests.
        let plan = RolloutPlan {
            min_requests: 50,
            ..RolloutPlan::default()
        };
        assert!(
            matches!(judge(&plan, false, &f, true), Verdict::TooLittleTraffic(m) if m.contains("40 canary requests") && m.contains("60 more shed"))
        );
        let g = StepFigures {
            canary_requests: 100,
            canary_overloaded: 100,
            ..Default::default()
        };
        assert_eq!(g.canary_error_rate(), 0.0);
        assert_eq!(
            judge(&RolloutPlan::default(), false, &g, false),
            Verdict::Watching
        );
        // Errors are a share of what the canary answered, not of what it shed.
        let h = StepFigures {
            canary_requests: 100,
            canary_overloaded: 80,
            canary_errors: 2,
            ..Default::default()
        };
        assert!((h.canary_error_rate() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn shadow_disagreement_breaks_a_shadow_step() {
        let plan = RolloutPlan {
            max_disagreement: Some(0.05),
            ..RolloutPlan::default()
        };
        let f = StepFigures {
            shadow_compared: 100,
            shadow_disagreements: 40,
            ..Default::default()
        };
        assert!(matches!(judge(&plan, true, &f, false), Verdict::Broken(m) if m.contains("disagreement")));
    }
}
