//! What the other files of this module share, importing none of them: the constants, the
//! kinds of SLI, and how numbers and durations are written in rules and messages.

use serde::Serialize;
use std::time::Duration;

/// Name of every burn-rate alert (one rule per model, SLI and tier; labels tell them apart).
pub const ALERT_NAME: &str = "KilnErrorBudgetBurn";

/// Windows over which error ratios are recorded: the long and short windows of the tiers.
pub const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// Window of an SLO that declares none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * DAY);

/// Budget left (as a fraction) under which a met SLO is reported `at_risk`.
pub const AT_RISK_BELOW: f64 = 0.25;

pub(super) const REQUESTS: &str = "kiln_requests_total";
pub(super) const DURATION: &str = "kiln_request_duration_seconds";
pub(super) const HOUR: u64 = 3600;
pub(super) const DAY: u64 = 24 * HOUR;

/// Which service level indicator an objective is about (the `slo` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SliKind {
    /// Share of requests not answered with a 5xx.
    Availability,
    /// Share of requests answered within the threshold.
    Latency,
}

impl SliKind {
    /// The value of the `slo` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SliKind::Availability => "availability",
            SliKind::Latency => "latency",
        }
    }
}

/// `x` rounded to `digits` significant digits, so `1 - 0.999` prints as `0.001` rather
/// than `0.0010000000000000009`.
pub(super) fn round_sig(x: f64, digits: usize) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{:.*e}", digits.saturating_sub(1), x)
        .parse()
        .unwrap_or(x)
}

/// A number for rules and messages: 12 significant digits, no exponent.
pub(super) fn num(x: f64) -> String {
    format!("{}", round_sig(x, 12))
}

/// A duration in the largest unit that writes it exactly: `"30d"`, `"36h"`, `"50ms"`,
/// `"2.5ms"` (also a valid PromQL duration when whole milliseconds).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ms", num(d.as_secs_f64() * 1000.0));
    }
    for (unit, size) in [("d", DAY * 1000), ("h", HOUR * 1000), ("m", 60_000), ("s", 1000)] {
        let size = u128::from(size);
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        return "0s".to_string();
    }
    format!("{ms}ms")
}

/// Seconds as a human duration (`0.05` → `"50ms"`), or `"{x}s"` for what `Duration` cannot hold.
pub(super) fn format_seconds(seconds: f64) -> String {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) => format_duration(d),
        Err(_) => format!("{seconds}s"),
    }
}
