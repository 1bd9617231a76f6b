//! The multi-window multi-burn-rate alert tiers of the Google SRE workbook, scaled to an
//! SLO's window the way Sloth scales them; shared by the Prometheus rules and by
//! [`crate::burn`], which evaluates the same tiers in process.

use super::common::{HOUR, round_sig};
use serde::Serialize;
use std::time::Duration;

/// Severity label of a tier: pages wake someone, tickets wait for working hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fast burn: the budget is gone within days.
    Page,
    /// Slow burn: the budget will be gone before the window ends.
    Ticket,
}

impl Severity {
    /// The value of the `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One alert tier of the SRE workbook table, scaled to an SLO window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BurnTier {
    /// Page or ticket.
    pub severity: Severity,
    /// Long window (the `long` label), e.g. `"1h"`.
    pub long: &'static str,
    /// Short window (the `short` label) that makes the alert reset soon after recovery.
    pub short: &'static str,
    /// Share of the whole window's budget spent over `long` at exactly this burn rate, in %.
    pub budget_percent: f64,
    /// Burn rate (multiple of the budget) both windows must exceed, 4 significant digits.
    pub factor: f64,
}

/// (budget %, long, long hours, short, severity): the workbook's recommendation with the
/// 3x ticket tier Sloth adds between the 6x page and the 1x ticket.
const TIERS: [(f64, &str, f64, &str, Severity); 4] = [
    (2.0, "1h", 1.0, "5m", Severity::Page),
    (5.0, "6h", 6.0, "30m", Severity::Page),
    (10.0, "1d", 24.0, "2h", Severity::Ticket),
    (10.0, "3d", 72.0, "6h", Severity::Ticket),
];

/// The four burn-rate tiers for an SLO window: factor = budget% × window hours / 100 / long
/// hours (14.4, 6, 3, 1 for 30d; 3.36, 1.4, 0.7, 0.2333 for 7d).
pub fn burn_tiers(window: Duration) -> Vec<BurnTier> {
    let window_hours = window.as_secs_f64() / HOUR as f64;
    TIERS
        .iter()
        .map(|&(budget_percent, long, long_hours, short, severity)| BurnTier {
            severity,
            long,
            short,
            budget_percent,
            // 4 digits: the threshold needs no more, and "0.2333x" reads better than
            // "0.23333333333333334x" in an alert.
            factor: round_sig(budget_percent * window_hours / 100.0 / long_hours, 4),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::common::DAY;
    use crate::slo::objective::tests::DAYS_30;

    #[test]
    fn burn_factors_are_the_workbook_table_for_30_days() {
        let tiers = burn_tiers(DAYS_30);
        let got: Vec<(f64, &str, &str, Severity)> = tiers
            .iter()
            .map(|t| (t.factor, t.long, t.short, t.severity))
            .collect();
        assert_eq!(
            got,
            [
                (14.4, "1h", "5m", Severity::Page),
                (6.0, "6h", "30m", Severity::Page),
                (3.0, "1d", "2h", Severity::Ticket),
                (1.0, "3d", "6h", Severity::Ticket),
            ]
        );
    }

    #[test]
    fn burn_factors_scale_with_the_window() {
        let factors = |days: u64| -> Vec<f64> {
            burn_tiers(Duration::from_secs(days * DAY))
                .iter()
                .map(|t| t.factor)
                .collect()
        };
        // budget% × window hours / 100 / long hours, as Sloth computes it.
        assert_eq!(factors(7), [3.36, 1.4, 0.7, 0.2333]);
        assert_eq!(factors(28), [13.44, 5.6, 2.8, 0.9333]);
        assert_eq!(factors(3), [1.44, 0.6, 0.3, 0.1]);
    }
}
