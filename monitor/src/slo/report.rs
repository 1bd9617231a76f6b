//! Attainment and error budget of every SLI, judged from cumulative counters: met, at
//! risk, breached or no data.

use super::common::{AT_RISK_BELOW, DURATION, SliKind, format_duration, format_seconds, round_sig};
use super::counters::ModelCounters;
use super::error::SloError;
use super::objective::Slo;
use serde::Serialize;

/// How an SLO stands according to the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloStatus {
    /// Attainment at or above the objective, at least a quarter of the budget left.
    Met,
    /// Still met, but less than [`AT_RISK_BELOW`] of the budget is left.
    AtRisk,
    /// Attainment below the objective: the budget is overspent.
    Breached,
    /// No requests counted (or no bucket at the threshold): nothing to judge.
    NoData,
}

impl SloStatus {
    /// The status as printed: `met`, `at_risk`, `breached`, `no_data`.
    pub fn as_str(self) -> &'static str {
        match self {
            SloStatus::Met => "met",
            SloStatus::AtRisk => "at_risk",
            SloStatus::Breached => "breached",
            SloStatus::NoData => "no_data",
        }
    }
}

/// Attainment and error budget of one SLI of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloReport {
    /// The model.
    pub model: String,
    /// Which SLI (`availability` or `latency`).
    pub slo: SliKind,
    /// The latency threshold, for latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_seconds: Option<f64>,
    /// The SLO's window, e.g. `"30d"` (the counters may cover more or less: see [`report`]).
    pub window: String,
    /// Share of good requests required.
    pub objective: f64,
    /// 1 − objective.
    pub error_budget: f64,
    /// Requests counted.
    pub total: u64,
    /// Good requests.
    pub good: u64,
    /// Bad requests.
    pub bad: u64,
    /// good / total; `None` without requests.
    pub attainment: Option<f64>,
    /// (allowed bad − bad) / allowed bad, negative once overspent; `None` without requests.
    pub budget_remaining: Option<f64>,
    /// Met, at risk, breached or no data.
    pub status: SloStatus,
    /// Why there is no data, when it is not simply no requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Attainment and budget of every SLI of `slos` from cumulative counters. Counters count
/// since each node started, not over the SLO window: this is the budget as far as the
/// counters reach (use the recorded `slo:period_error_budget_remaining:ratio` for the
/// window itself). `counters` holds one entry per model (sum nodes with
/// [`ModelCounters::add`]); a model missing from it reports `no_data`.
pub fn report(slos: &[Slo], counters: &[ModelCounters]) -> Result<Vec<SloReport>, SloError> {
    let mut out = Vec::new();
    for slo in slos {
        slo.validate()?;
        let counted = counters.iter().find(|c| c.model == slo.model);
        if let Some(objective) = slo.availability {
            let (total, good) = counted.map_or((0, 0), |c| {
                (c.requests, c.requests.saturating_sub(c.server_errors))
            });
            out.push(assess(
                slo,
                SliKind::Availability,
                objective,
                None,
                total,
                good,
                None,
            ));
        }
        if let Some(latency) = slo.latency {
            let seconds = latency.threshold_seconds;
            let (total, good, note) = match counted.map(|c| (c, c.within(seconds))) {
                None => (0, 0, None),
                Some((c, Some(good))) => (c.latency_count, good.min(c.latency_count), None),
                Some((_, None)) => (
                    0,
                    0,
                    Some(format!(
                        "the counters have no {DURATION} bucket at {}",
                        format_seconds(seconds)
                    )),
                ),
            };
            let objective = latency.objective;
            out.push(assess(
                slo,
                SliKind::Latency,
                objective,
                Some(seconds),
                total,
                good,
                note,
            ));
        }
    }
    Ok(out)
}

fn assess(
    slo: &Slo,
    kind: SliKind,
    objective: f64,
    threshold_seconds: Option<f64>,
    total: u64,
    good: u64,
    note: Option<String>,
) -> SloReport {
    let error_budget = round_sig(1.0 - objective, 12);
    let bad = total - good.min(total);
    let (attainment, budget_remaining, status) = if total == 0 {
        (None, None, SloStatus::NoData)
    } else {
        let allowed = error_budget * total as f64;
        let remaining = (allowed - bad as f64) / allowed;
        let status = if remaining < 0.0 {
            SloStatus::Breached
        } else if remaining < AT_RISK_BELOW {
            SloStatus::AtRisk
        } else {
            SloStatus::Met
        };
        (Some(good as f64 / total as f64), Some(remaining), status)
    };
    SloReport {
        model: slo.model.clone(),
        slo: kind,
        threshold_seconds,
        window: format_duration(slo.window),
        objective,
        error_budget,
        total,
        good,
        bad,
        attainment,
        budget_remaining,
        status,
        note,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::objective::tests::{latency, slo};

    fn counters(requests: u64, server_errors: u64) -> ModelCounters {
        ModelCounters {
            model: "iris".to_string(),
            requests,
            server_errors,
            latency_count: requests,
            latency_buckets: vec![(0.025, requests / 2), (0.05, requests - server_errors)],
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn report_computes_attainment_and_the_budget_left() -> Result<(), SloError> {
        let slos = [slo("iris", Some(0.999), None)];
        // 10000 requests at 99.9% allow 10 errors.
        let cases = [
            (5, 0.5, SloStatus::Met),
            (8, 0.2, SloStatus::AtRisk),
            (10, 0.0, SloStatus::AtRisk),
        ];
        for (errors, remaining, status) in cases {
            let r = report(&slos, &[counters(10_000, errors)])?;
            assert_eq!(r.len(), 1);
            assert_eq!(
                (r[0].total, r[0].bad, r[0].good),
                (10_000, errors, 10_000 - errors)
            );
            assert!(close(r[0].attainment, 1.0 - errors as f64 / 10_000.0));
            assert!(
                close(r[0].budget_remaining, remaining),
                "{errors}: {:?}",
                r[0].budget_remaining
            );
            assert_eq!(r[0].status, status, "{errors}");
            assert_eq!(r[0].error_budget, 0.001);
        }
        let over = report(&slos, &[counters(10_000, 12)])?;
        assert!(close(over[0].budget_remaining, -0.2));
        assert_eq!(over[0].status, SloStatus::Breached);
        Ok(())
    }

    #[test]
    fn report_counts_latency_from_the_threshold_bucket() -> Result<(), SloError> {
        let slos = [slo("iris", Some(0.999), latency(0.025, 0.6))];
        let r = report(&slos, &[counters(1000, 0)])?;
        assert_eq!(r.len(), 2);
        let lat = &r[1];
        assert_eq!(lat.slo, SliKind::Latency);
        assert_eq!(lat.threshold_seconds, Some(0.025));
        assert_eq!((lat.total, lat.good, lat.bad), (1000, 500, 500));
        // 40% allowed slow, 50% slow: overspent by a quarter.
        assert!(close(lat.budget_remaining, -0.25));
        assert_eq!(lat.status, SloStatus::Breached);
        assert_eq!(r[0].status, SloStatus::Met);
        Ok(())
    }

    #[test]
    fn report_says_no_data_without_requests_or_bucket() -> Result<(), SloError> {
        let slos = [slo("iris", Some(0.999), latency(0.1, 0.99))];
        let idle = report(&slos, &[counters(0, 0)])?;
        assert!(
            idle.iter()
                .all(|r| r.status == SloStatus::NoData && r.attainment.is_none())
        );
        let missing = report(&slos, &[])?;
        assert!(
            missing
                .iter()
                .all(|r| r.status == SloStatus::NoData && r.total == 0)
        );
        let no_bucket = report(&slos, &[counters(1000, 0)])?;
        assert_eq!(no_bucket[0].status, SloStatus::Met);
        assert_eq!(no_bucket[1].status, SloStatus::NoData);
        assert!(
            no_bucket[1]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("no kiln_request_duration_seconds bucket at 100ms"))
        );
        Ok(())
    }

    #[test]
    fn report_serializes_for_json_output() -> Result<(), Box<dyn std::error::Error>> {
        let slos = [
            slo("iris", Some(0.999), None),
            slo("fraud", None, latency(0.05, 0.99)),
        ];
        let r = report(&slos, &[counters(10_000, 8)])?;
        let json = serde_json::to_value(&r)?;
        assert_eq!(json[0]["model"], "iris");
        assert_eq!(json[0]["slo"], "availability");
        assert_eq!(json[0]["status"], "at_risk");
        assert_eq!(json[0]["window"], "30d");
        assert_eq!(json[0]["objective"], 0.999);
        assert!(json[0].get("threshold_seconds").is_none());
        assert_eq!(json[1]["slo"], "latency");
        assert_eq!(json[1]["status"], "no_data");
        assert_eq!(json[1]["attainment"], serde_json::Value::Null);
        assert_eq!(json[1]["threshold_seconds"], 0.05);
        assert_eq!(SloStatus::AtRisk.as_str(), "at_risk");
        Ok(())
    }
}
