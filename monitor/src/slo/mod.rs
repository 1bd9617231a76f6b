//! Service level objectives per model (issue 14): the `[models.NAME.slo]` table of
//! kiln.toml, the Prometheus recording and multi-window multi-burn-rate alerting rules
//! generated from it, and a report of attainment and error budget from counters.
//!
//! Two SLIs, both over `kiln_requests_total` / `kiln_request_duration_seconds` summed
//! by `model` (so every version and endpoint of a model counts, and a rollout does not
//! split the budget):
//! - **availability**: bad = requests answered with a 5xx. Load shed with 503 counts as
//!   bad: the user did not get an answer. 429s and shadow calls are not in the counter.
//! - **latency**: bad = requests slower than the threshold = `1 - bucket{le=T} / count`.
//!   The threshold must be a bound of the histogram, or the share could only be guessed.
//!
//! The alerts follow the Google SRE workbook ("Alerting on SLOs", multiwindow,
//! multi-burn-rate) the way Sloth scales them to the SLO's window: a tier fires when the
//! error ratio over both its long and its short window exceeds `factor × budget`, where
//! `factor = budget% × window_hours / 100 / long_hours` (14.4, 6, 3, 1 for 30 days).
//!
//! No traffic: every error ratio is 0/0 = NaN, and a comparison with NaN is false, so a
//! model nobody calls never alerts (and its recorded ratios read NaN). That is deliberate:
//! an SLO measures the requests that were made; an idle model is a job for an absence
//! alert, not for the error budget.
//!
//! Pure: no I/O. The CLI reads kiln.toml and `/metrics` and writes the files.
//!
//! This file only declares the parts and re-exports everything public; the code is split
//! by job, and the files import one another only one way:
//! - `common`: the constants, the SLI kinds, and how numbers and durations are written;
//! - `error`: what can go wrong, and how each error reads;
//! - `duration`: parsing durations as kiln.toml and PromQL write them;
//! - `objective`: the objectives themselves (the table, its validation);
//! - `tiers`: the burn-rate alert tiers, scaled to an SLO's window;
//! - `rules`: the Prometheus recording and alerting rule file;
//! - `counters`: request counters per model, read from `/metrics`;
//! - `report`: attainment and error budget from those counters.

mod common;
mod counters;
mod duration;
mod error;
mod objective;
mod report;
mod rules;
mod tiers;

pub use common::{ALERT_NAME, AT_RISK_BELOW, DEFAULT_WINDOW, SliKind, WINDOWS, format_duration};
pub use counters::{ModelCounters, counters_from_exposition};
pub use duration::parse_duration;
pub use error::SloError;
pub use objective::{LatencyObjective, Slo};
pub use report::{SloReport, SloStatus, report};
pub use rules::rules;
pub use tiers::{BurnTier, Severity, burn_tiers};
