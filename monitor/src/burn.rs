//! The SLO burn-rate alerts evaluated in process, for the servers that alert by
//! themselves (the sync service over the fleet's counters, `kiln serve --alertmanager`
//! over its own): the same tiers and thresholds as the Prometheus rules of [`crate::slo`],
//! over a history of cumulative counters sampled by the caller.
//!
//! A window's error ratio is (bad now − bad then) / (requests now − requests then), where
//! "then" is the newest sample at least the window's length old, or the oldest sample when
//! the history is younger than the window: like Prometheus' `rate()` over a range that
//! starts before the first sample, a young process judges its long windows on what it has
//! seen. No requests in a window: no ratio, no alert (as the rules' NaN).

use crate::slo::{BurnTier, ModelCounters, Severity, SliKind, Slo, burn_tiers};
use std::collections::VecDeque;
use std::time::Duration;

/// The longest window any tier reads (3 days): older samples are dropped.
pub const HORIZON: Duration = Duration::from_secs(3 * 24 * 3600);

/// A burning SLO tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Burn {
    /// The model.
    pub model: String,
    /// Availability or latency.
    pub slo: SliKind,
    /// Page or ticket.
    pub severity: Severity,
    /// The tier's windows (`long`, `short`) and factor.
    pub tier: BurnTier,
    /// Error ratio over the long window.
    pub long_ratio: f64,
    /// Error ratio over the short window.
    pub short_ratio: f64,
    /// The threshold both exceeded: factor × error budget.
    pub threshold: f64,
}

impl Burn {
    /// The labels of its `KilnErrorBudgetBurn` alert besides `alertname`: `model`, `slo`,
    /// `severity`, `long`, `short` (the same as the Prometheus rules').
    pub fn labels(&self) -> [(&'static str, String); 5] {
        [
            ("model", self.model.clone()),
            ("slo", self.slo.as_str().to_string()),
            ("severity", self.severity.as_str().to_string()),
            ("long", self.tier.long.to_string()),
            ("short", self.tier.short.to_string()),
        ]
    }

    /// Its alert's summary.
    pub fn summary(&self) -> String {
        format!(
            "{} is burning its {} error budget at {:.1}x (over {}: {:.3}% bad; over {}: {:.3}% bad; the {}x tier fires above {:.3}%)",
            self.model,
            self.slo.as_str(),
            self.long_ratio / (self.threshold / self.tier.factor),
            self.tier.long,
            self.long_ratio * 100.0,
            self.tier.short,
            self.short_ratio * 100.0,
            self.tier.factor,
            self.threshold * 100.0
        )
    }
}

/// Cumulative counters of one model over time.
#[derive(Debug, Default)]
pub struct BurnHistory {
    /// (seconds since an arbitrary origin, counters), oldest first.
    samples: VecDeque<(f64, ModelCounters)>,
}

fn window_seconds(text: &str) -> f64 {
    crate::slo::parse_duration(text).map_or(0.0, |d| d.as_secs_f64())
}

impl BurnHistory {
    /// Records the model's cumulative counters at time `t` (seconds, monotonic); samples
    /// older than [`HORIZON`] before it are dropped, but the newest of those is kept as the
    /// base of the longest window.
    pub fn push(&mut self, t: f64, counters: ModelCounters) {
        self.samples.push_back((t, counters));
        while self.samples.len() > 2 && self.samples[1].0 <= t - HORIZON.as_secs_f64() {
            self.samples.pop_front();
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was pushed.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The sample a window of `seconds` ending at the newest sample starts from.
    fn base(&self, seconds: f64) -> Option<&ModelCounters> {
        let (now, _) = self.samples.back()?;
        let start = now - seconds;
        self.samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= start)
            .or_else(|| self.samples.front())
            .map(|(_, c)| c)
    }

    /// Error ratio of `kind` over the last `seconds` (`None` without requests in it).
    pub fn error_ratio(&self, slo: &Slo, kind: SliKind, seconds: f64) -> Option<f64> {
        let (_, now) = self.samples.back()?;
        let then = self.base(seconds)?;
        let (total, bad) = match kind {
            SliKind::Availability => {
                let total = now.requests.checked_sub(then.requests)?;
                let bad = now.server_errors.checked_sub(then.server_errors)?;
                (total, bad)
            }
            SliKind::Latency => {
                let threshold = slo.latency?.threshold_seconds;
                let total = now.latency_count.checked_sub(then.latency_count)?;
                let fast = now
                    .within(threshold)?
                    .checked_sub(then.within(threshold).unwrap_or(0))?;
                (total, total.saturating_sub(fast))
            }
        };
        (total > 0).then(|| bad as f64 / total as f64)
    }

    /// The tiers of `slo` burning now: both windows' error ratios above factor × budget.
    pub fn burning(&self, slo: &Slo) -> Vec<Burn> {
        let mut out = Vec::new();
        for (kind, objective) in slo.objectives() {
            let budget = 1.0 - objective;
            for tier in burn_tiers(slo.window) {
                let threshold = tier.factor * budget;
                // A tier whose threshold is 100 % errors or more can never fire.
                if threshold >= 1.0 {
                    continue;
                }
                let long = self.error_ratio(slo, kind, window_seconds(tier.long));
                let short = self.error_ratio(slo, kind, window_seconds(tier.short));
                if let (Some(long_ratio), Some(short_ratio)) = (long, short)
                    && long_ratio > threshold
                    && short_ratio > threshold
                {
                    out.push(Burn {
                        model: slo.model.clone(),
                        slo: kind,
                        severity: tier.severity,
                        tier,
                        long_ratio,
                        short_ratio,
                        threshold,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::LatencyObjective;

    fn counters(requests: u64, errors: u64) -> ModelCounters {
        ModelCounters {
            model: "iris".into(),
            requests,
            server_errors: errors,
            latency_count: requests,
            latency_buckets: vec![(0.05, requests - errors)],
        }
    }

    fn slo() -> Slo {
        Slo::new(
            "iris",
            Some(0.999),
            Some(LatencyObjective {
                threshold_seconds: 0.05,
                objective: 0.99,
            }),
            Duration::from_secs(30 * 86_400),
        )
        .unwrap()
    }

    /// One sample a minute for `minutes`, `rate` requests a minute, `errors` of them bad.
    fn history(minutes: u64, rate: u64, errors: u64) -> BurnHistory {
        let mut h = BurnHistory::default();
        for m in 0..=minutes {
            h.push(m as f64 * 60.0, counters(m * rate, m * errors));
        }
        h
    }

    #[test]
    fn an_outage_pages_and_tickets_and_healthy_traffic_fires_nothing() {
        // 2 % errors = 20x the 0.1 % budget: every availability tier (14.4, 6, 3, 1) burns.
        let outage = history(120, 1000, 20).burning(&slo());
        let availability: Vec<_> = outage.iter().filter(|b| b.slo == SliKind::Availability).collect();
        assert_eq!(availability.len(), 4, "{outage:?}");
        assert!((availability[0].long_ratio - 0.02).abs() < 1e-12);
        assert_eq!(availability[0].threshold, 14.4 * (1.0 - 0.999));
        // The same 2 % slow requests are 2x the latency budget (1 %): only the 1x ticket.
        let latency: Vec<_> = outage.iter().filter(|b| b.slo == SliKind::Latency).collect();
        assert_eq!(latency.iter().map(|b| b.tier.factor).collect::<Vec<_>>(), [1.0]);
        // 0.0999 % errors: under the budget, nothing.
        assert!(
            history(120, 10_000, 9)
                .burning(&slo())
                .iter()
                .all(|b| b.slo != SliKind::Availability)
        );
    }

    #[test]
    fn a_cleared_spike_stops_the_fast_page_once_its_short_window_is_clean() {
        let mut h = BurnHistory::default();
        // 10 minutes at 20 % errors, then 10 clean minutes.
        for m in 0..=20u64 {
            let errors = m.min(10) * 200;
            h.push(m as f64 * 60.0, counters(m * 1000, errors));
        }
        let burns = h.burning(&slo());
        assert!(
            !burns
                .iter()
                .any(|b| b.slo == SliKind::Availability && b.tier.short == "5m"),
            "the 5m window is clean: {burns:?}"
        );
        assert!(
            burns.iter().any(|b| b.tier.long == "6h"),
            "the 30m window still holds the spike: {burns:?}"
        );
    }

    #[test]
    fn no_requests_no_ratio_and_counter_resets_give_no_ratio() {
        let mut h = BurnHistory::default();
        h.push(0.0, counters(0, 0));
        h.push(60.0, counters(0, 0));
        assert_eq!(h.error_ratio(&slo(), SliKind::Availability, 300.0), None);
        assert!(h.burning(&slo()).is_empty());
        h.push(120.0, counters(100, 50));
        h.push(180.0, counters(10, 0));
        assert_eq!(h.error_ratio(&slo(), SliKind::Availability, 60.0), None);
    }

    #[test]
    fn history_keeps_three_days_and_the_base_before_them() {
        let mut h = BurnHistory::default();
        for hour in 0..=100u64 {
            h.push(hour as f64 * 3600.0, counters(hour * 100, 0));
        }
        assert!(h.len() <= 74, "{}", h.len());
        assert_eq!(
            h.error_ratio(&slo(), SliKind::Availability, 3.0 * 86_400.0),
            Some(0.0)
        );
    }
}
