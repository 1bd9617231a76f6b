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

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Name of every burn-rate alert (one rule per model, SLI and tier; labels tell them apart).
pub const ALERT_NAME: &str = "KilnErrorBudgetBurn";

/// Windows over which error ratios are recorded: the long and short windows of the tiers.
pub const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// Window of an SLO that declares none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * DAY);

/// Budget left (as a fraction) under which a met SLO is reported `at_risk`.
pub const AT_RISK_BELOW: f64 = 0.25;

const REQUESTS: &str = "kiln_requests_total";
const DURATION: &str = "kiln_request_duration_seconds";
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// The slowest tier looks back 3 days: a shorter SLO window would ask it to judge more
/// time than the budget covers.
const MIN_WINDOW: Duration = Duration::from_secs(3 * DAY);
/// Longer is more likely a typo than a plan; a year already asks the fast page for 175x.
const MAX_WINDOW: Duration = Duration::from_secs(365 * DAY);
/// How close a threshold must be to a bucket bound to be that bound ("0.1ms" parses to a
/// float one ulp away from the literal 0.0001).
const BOUND_TOLERANCE: f64 = 1e-9;

/// What went wrong with an SLO, its rules or its counters.
#[derive(Debug, Clone, PartialEq)]
pub enum SloError {
    /// A duration such as `"50ms"` or `"30d"` that does not parse.
    Duration {
        /// The text as written.
        input: String,
        /// Why it does not parse.
        reason: &'static str,
    },
    /// A model name Kiln would not register.
    Model {
        /// The name as given.
        model: String,
    },
    /// An `[models.NAME.slo]` table with neither `availability` nor `latency`.
    NoObjective {
        /// The model, empty when not known yet.
        model: String,
    },
    /// An objective outside (0, 1).
    Objective {
        /// The model, empty when not known yet.
        model: String,
        /// Which SLI.
        kind: SliKind,
        /// The value as given.
        value: f64,
    },
    /// A latency threshold that is not a positive duration.
    Threshold {
        /// The model, empty when not known yet.
        model: String,
        /// The threshold in seconds.
        seconds: f64,
    },
    /// A window outside [3d, 365d].
    Window {
        /// The model, empty when not known yet.
        model: String,
        /// The window as given.
        window: Duration,
    },
    /// A latency threshold that is not a bound of the duration histogram.
    NotABucket {
        /// The model.
        model: String,
        /// The threshold in seconds.
        seconds: f64,
        /// The nearest bound below, if any.
        below: Option<f64>,
        /// The nearest bound above, if any.
        above: Option<f64>,
    },
    /// Two SLOs for one model: their recorded series would collide.
    DuplicateModel {
        /// The model.
        model: String,
    },
    /// `rules` called without any SLO.
    NoSlos,
    /// A line of a Prometheus text exposition that does not parse.
    Exposition {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// "SLO of model iris", or just "SLO" while the table is read before its key is known.
fn whose(model: &str) -> String {
    if model.is_empty() {
        "SLO".to_string()
    } else {
        format!("SLO of model {model}")
    }
}

impl fmt::Display for SloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SloError::Duration { input, reason } => write!(
                f,
                "invalid duration {input:?}: {reason}; write a number and one unit of ms, s, m, h, d (e.g. \"50ms\", \"30d\")"
            ),
            SloError::Model { model } => write!(
                f,
                "invalid model name {model:?} in an SLO: use 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
            ),
            SloError::NoObjective { model } => write!(
                f,
                "{} declares no objective: set availability = 0.999 and/or latency = {{ threshold = \"50ms\", objective = 0.99 }}",
                whose(model)
            ),
            SloError::Objective { model, kind, value } => {
                write!(
                    f,
                    "{}: {} objective {value} is not a fraction strictly between 0 and 1",
                    whose(model),
                    kind.as_str()
                )?;
                if *value > 1.0 && *value < 100.0 {
                    write!(f, "; for {value}% write {}", num(value / 100.0))
                } else if *value == 1.0 {
                    write!(
                        f,
                        "; 1 leaves no error budget (any failure breaks it): write e.g. 0.9999"
                    )
                } else {
                    write!(f, "; write e.g. 0.999 for 99.9%")
                }
            }
            SloError::Threshold { model, seconds } => write!(
                f,
                "{}: latency threshold {seconds}s must be a positive duration such as \"50ms\"",
                whose(model)
            ),
            SloError::Window { model, window } => write!(
                f,
                "{}: window {} is outside 3d..365d; the slowest alert looks back 3d, so use at least \"3d\" (\"28d\" or \"30d\" are usual)",
                whose(model),
                format_duration(*window)
            ),
            SloError::NotABucket {
                model,
                seconds,
                below,
                above,
            } => {
                write!(
                    f,
                    "{}: latency threshold {} is not a bucket bound of {DURATION}, so the share of requests faster than it cannot be counted; use ",
                    whose(model),
                    format_seconds(*seconds)
                )?;
                match (below, above) {
                    (Some(b), Some(a)) => {
                        write!(f, "{} or {}", format_seconds(*b), format_seconds(*a))
                    }
                    (Some(b), None) => write!(f, "{} (the largest bound)", format_seconds(*b)),
                    (None, Some(a)) => write!(f, "{} (the smallest bound)", format_seconds(*a)),
                    (None, None) => write!(f, "a bound of the histogram (none were given)"),
                }
            }
            SloError::DuplicateModel { model } => write!(
                f,
                "model {model} has two SLO tables; merge them into one [models.{model}.slo]"
            ),
            SloError::NoSlos => write!(
                f,
                "no SLO declared: add a [models.NAME.slo] table (e.g. availability = 0.999) to kiln.toml"
            ),
            SloError::Exposition { line, reason } => {
                write!(f, "metrics text, line {line}: {reason}")
            }
        }
    }
}

impl std::error::Error for SloError {}

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

/// A latency objective: `objective` of the requests take at most `threshold_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "LatencyTable")]
pub struct LatencyObjective {
    /// The threshold, in seconds; must be a bucket bound of the duration histogram.
    pub threshold_seconds: f64,
    /// Share of requests that must be at least as fast, in (0, 1).
    pub objective: f64,
}

/// The `latency = { threshold = "50ms", objective = 0.99 }` inline table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyTable {
    threshold: String,
    objective: f64,
}

impl TryFrom<LatencyTable> for LatencyObjective {
    type Error = SloError;

    fn try_from(table: LatencyTable) -> Result<LatencyObjective, SloError> {
        let latency = LatencyObjective {
            threshold_seconds: parse_duration(&table.threshold)?.as_secs_f64(),
            objective: table.objective,
        };
        latency.check("")?;
        Ok(latency)
    }
}

impl LatencyObjective {
    fn check(&self, model: &str) -> Result<(), SloError> {
        check_objective(model, SliKind::Latency, self.objective)?;
        if !(self.threshold_seconds.is_finite() && self.threshold_seconds > 0.0) {
            return Err(SloError::Threshold {
                model: model.to_string(),
                seconds: self.threshold_seconds,
            });
        }
        Ok(())
    }
}

/// The objectives of one model over a rolling window.
///
/// Deserializes from the `[models.NAME.slo]` table of kiln.toml:
/// ```toml
/// [models.iris.slo]
/// availability = 0.999                                # share of requests that are not 5xx
/// latency = { threshold = "50ms", objective = 0.99 }  # share of requests at most that slow
/// window = "30d"                                      # optional, 30d by default
/// ```
/// The table sits under the model's key, so `model` is empty after deserializing unless
/// the table says `model = "..."`: set it from the key before calling [`rules`] or
/// [`report`], which [`Slo::validate`] every SLO. Values are checked while deserializing,
/// so a bad objective is reported with its place in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "SloTable")]
pub struct Slo {
    /// The model's registered name (the `model` label).
    pub model: String,
    /// Share of requests not answered with a 5xx, in (0, 1).
    pub availability: Option<f64>,
    /// Share of requests at most `threshold_seconds` long.
    pub latency: Option<LatencyObjective>,
    /// Rolling window the objectives are measured over (3d to 365d).
    pub window: Duration,
}

/// The `[models.NAME.slo]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SloTable {
    #[serde(default)]
    model: String,
    availability: Option<f64>,
    latency: Option<LatencyObjective>,
    window: Option<String>,
}

impl TryFrom<SloTable> for Slo {
    type Error = SloError;

    fn try_from(table: SloTable) -> Result<Slo, SloError> {
        let window = match table.window {
            Some(text) => parse_duration(&text)?,
            None => DEFAULT_WINDOW,
        };
        let slo = Slo {
            model: table.model,
            availability: table.availability,
            latency: table.latency,
            window,
        };
        slo.check_values()?;
        if !slo.model.is_empty() {
            check_model(&slo.model)?;
        }
        Ok(slo)
    }
}

impl Slo {
    /// An SLO, validated.
    pub fn new(
        model: impl Into<String>,
        availability: Option<f64>,
        latency: Option<LatencyObjective>,
        window: Duration,
    ) -> Result<Slo, SloError> {
        let slo = Slo {
            model: model.into(),
            availability,
            latency,
            window,
        };
        slo.validate()?;
        Ok(slo)
    }

    /// Checks the model name, that there is an objective, each objective, threshold and the window.
    pub fn validate(&self) -> Result<(), SloError> {
        check_model(&self.model)?;
        self.check_values()
    }

    fn check_values(&self) -> Result<(), SloError> {
        if self.availability.is_none() && self.latency.is_none() {
            return Err(SloError::NoObjective {
                model: self.model.clone(),
            });
        }
        if let Some(objective) = self.availability {
            check_objective(&self.model, SliKind::Availability, objective)?;
        }
        if let Some(latency) = &self.latency {
            latency.check(&self.model)?;
        }
        if self.window < MIN_WINDOW || self.window > MAX_WINDOW {
            return Err(SloError::Window {
                model: self.model.clone(),
                window: self.window,
            });
        }
        Ok(())
    }
}

impl Slo {
    /// Each declared SLI with its objective, availability first.
    pub fn objectives(&self) -> Vec<(SliKind, f64)> {
        let mut out = Vec::new();
        if let Some(objective) = self.availability {
            out.push((SliKind::Availability, objective));
        }
        if let Some(latency) = &self.latency {
            out.push((SliKind::Latency, latency.objective));
        }
        out
    }
}

fn check_objective(model: &str, kind: SliKind, value: f64) -> Result<(), SloError> {
    // 1.0 would leave no budget (every error pages at once); 0 would allow everything.
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(SloError::Objective {
            model: model.to_string(),
            kind,
            value,
        })
    }
}

/// The registry's rule for model names (kiln-registry `validate_name`), repeated here
/// because this crate depends on no registry code; it also keeps names safe to put in
/// PromQL strings and YAML without escaping.
fn check_model(model: &str) -> Result<(), SloError> {
    let mut chars = model.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && model.len() <= 128 {
        Ok(())
    } else {
        Err(SloError::Model {
            model: model.to_string(),
        })
    }
}

/// Parses a duration written as a number and one unit: `ms`, `s`, `m`, `h` or `d`
/// (`"50ms"`, `"2.5s"`, `"30d"`).
pub fn parse_duration(text: &str) -> Result<Duration, SloError> {
    let error = |reason| SloError::Duration {
        input: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(error(if trimmed.is_empty() {
            "it is empty"
        } else {
            "it does not start with a non-negative number"
        }));
    }
    // f64's parser also takes "1e3", "inf" and "nan"; the split above already kept
    // only digits and dots, so `number` is plain decimal here.
    let value: f64 = number
        .parse()
        .map_err(|_| error("the number is not a decimal number"))?;
    let seconds = match unit.trim() {
        // Division rather than multiplication by 0.001: exact for whole milliseconds, so
        // "50ms" is the same float as the bucket bound 0.05.
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * HOUR as f64,
        "d" => value * DAY as f64,
        "" => return Err(error("it has no unit")),
        _ => return Err(error("the unit is not one of ms, s, m, h, d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| error("it is too long"))
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
fn format_seconds(seconds: f64) -> String {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) => format_duration(d),
        Err(_) => format!("{seconds}s"),
    }
}

/// `x` rounded to `digits` significant digits, so `1 - 0.999` prints as `0.001` rather
/// than `0.0010000000000000009`.
fn round_sig(x: f64, digits: usize) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{:.*e}", digits.saturating_sub(1), x)
        .parse()
        .unwrap_or(x)
}

/// A number for rules and messages: 12 significant digits, no exponent.
fn num(x: f64) -> String {
    format!("{}", round_sig(x, 12))
}

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

/// The bucket bound equal to `seconds` (within float noise), or the nearest bounds around it.
fn bucket_bound(model: &str, seconds: f64, buckets: &[f64]) -> Result<f64, SloError> {
    let finite = buckets.iter().copied().filter(|b| b.is_finite());
    if let Some(bound) = finite
        .clone()
        .find(|b| (b - seconds).abs() <= BOUND_TOLERANCE * seconds.abs().max(b.abs()))
    {
        return Ok(bound);
    }
    Err(SloError::NotABucket {
        model: model.to_string(),
        seconds,
        below: finite.clone().filter(|&b| b < seconds).reduce(f64::max),
        above: finite.filter(|&b| b > seconds).reduce(f64::min),
    })
}

/// How Go's `strconv.FormatFloat(x, 'g', -1, 64)` writes a positive float: shortest
/// digits, exponent form (two-digit exponent) below 1e-4 and from 1e6 up.
fn go_float(x: f64) -> String {
    let scientific = format!("{x:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return format!("{x}");
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return format!("{x}");
    };
    if (-4..6).contains(&exponent) {
        format!("{x}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// The `le` matcher for a bucket bound. Kiln's exposition writes bounds the way Rust
/// prints floats (`le="1"`, `le="0.00005"`); Prometheus 3 rewrites `le` on ingestion to
/// the OpenMetrics form (`"1.0"`, `"5e-05"`), as does a Go exporter or an OpenMetrics
/// scrape. A matcher for only one form would silently match nothing on the other, and
/// the latency SLI would never alert; so every form is accepted.
fn le_matcher(bound: f64) -> String {
    let go = go_float(bound);
    let openmetrics = if go.contains(['.', 'e']) {
        go.clone()
    } else {
        format!("{go}.0")
    };
    let mut forms = vec![format!("{bound}")];
    for form in [go, openmetrics] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    if let [only] = forms.as_slice() {
        return format!("le=\"{only}\"");
    }
    // Character classes rather than backslashes: nothing to escape in PromQL or YAML.
    let alternatives: Vec<String> = forms
        .iter()
        .map(|f| f.replace('.', "[.]").replace('+', "[+]"))
        .collect();
    format!("le=~\"{}\"", alternatives.join("|"))
}

/// A YAML double-quoted scalar (JSON string escapes are valid YAML).
fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One SLI of one model, ready to write rules for.
struct Sli<'a> {
    model: &'a str,
    kind: SliKind,
    objective: f64,
    window: Duration,
    /// The latency threshold's bucket bound.
    bound: Option<f64>,
}

impl Sli<'_> {
    fn budget(&self) -> f64 {
        round_sig(1.0 - self.objective, 12)
    }

    /// `model="iris",slo="latency"`: selects this SLI's recorded series.
    fn selector(&self) -> String {
        format!("model=\"{}\",slo=\"{}\"", self.model, self.kind.as_str())
    }

    /// PromQL lines for the error ratio over `range`.
    fn error_ratio(&self, range: &str) -> Vec<String> {
        let model = self.model;
        match self.bound {
            None => vec![
                // Without `or`, a model with no 5xx yet (no such series) would record no
                // ratio at all instead of 0.
                "(".to_string(),
                format!("  sum by (model) (rate({REQUESTS}{{model=\"{model}\",code=~\"5..\"}}[{range}]))"),
                "  or".to_string(),
                format!("  0 * sum by (model) (rate({REQUESTS}{{model=\"{model}\"}}[{range}]))"),
                ")".to_string(),
                "/".to_string(),
                format!("sum by (model) (rate({REQUESTS}{{model=\"{model}\"}}[{range}]))"),
            ],
            Some(bound) => vec![
                "1 - (".to_string(),
                format!(
                    "  sum by (model) (rate({DURATION}_bucket{{model=\"{model}\",{}}}[{range}]))",
                    le_matcher(bound)
                ),
                "  /".to_string(),
                format!("  sum by (model) (rate({DURATION}_count{{model=\"{model}\"}}[{range}]))"),
                ")".to_string(),
            ],
        }
    }

    /// What a bad request is, for alert texts.
    fn bad_requests(&self) -> String {
        match self.bound {
            None => "failed with a 5xx".to_string(),
            Some(bound) => format!("took longer than {}", format_seconds(bound)),
        }
    }

    fn objective_text(&self) -> String {
        match self.bound {
            None => format!("{}% of requests without a 5xx", num(self.objective * 100.0)),
            Some(bound) => format!(
                "{}% of requests within {}",
                num(self.objective * 100.0),
                format_seconds(bound)
            ),
        }
    }
}

/// YAML for one rule: `- record:`/`- alert:` with a PromQL block, labels, annotations.
fn write_rule(
    out: &mut String,
    kind: &str,
    name: &str,
    expr: &[String],
    labels: &[(&str, String)],
    annotations: &[(&str, String)],
) {
    out.push_str(&format!("      - {kind}: {}\n", yaml_str(name)));
    // A literal block keeps PromQL readable and needs no YAML escaping; model names are
    // checked to hold no character that could end it.
    out.push_str("        expr: |-\n");
    for line in expr {
        out.push_str(&format!("          {line}\n"));
    }
    for (key, map) in [("labels", labels), ("annotations", annotations)] {
        if map.is_empty() {
            continue;
        }
        out.push_str(&format!("        {key}:\n"));
        for (k, v) in map {
            out.push_str(&format!("          {k}: {}\n", yaml_str(v)));
        }
    }
}

/// The rule groups of one SLI: its ratios and alerts in one group, because rules in a
/// group run in order, so the alerts read ratios of the same evaluation; the ratio over
/// the whole window in a second, slower group, because it reads the window's raw samples.
fn write_sli(out: &mut String, sli: &Sli<'_>) {
    let kind = sli.kind.as_str();
    let model = sli.model;
    let window = format_duration(sli.window);
    let budget = sli.budget();
    // Static model and slo labels on every rule, equal to those of the series: promtool
    // (and Prometheus's rule linting) tells rules apart by name and static labels only, so
    // without them every model's `slo:sli_error:ratio_rate5m` reads as a duplicate.
    let labels = [("model", model.to_string()), ("slo", kind.to_string())];

    out.push_str(&format!(
        "  - name: {}\n",
        yaml_str(&format!("kiln-slo-{model}-{kind}"))
    ));
    out.push_str("    rules:\n");
    for range in WINDOWS {
        let name = format!("slo:sli_error:ratio_rate{range}");
        write_rule(out, "record", &name, &sli.error_ratio(range), &labels, &[]);
    }
    for (name, value) in [
        ("slo:objective:ratio", num(sli.objective)),
        ("slo:error_budget:ratio", num(budget)),
        ("slo:time_period:days", num(sli.window.as_secs_f64() / DAY as f64)),
    ] {
        write_rule(out, "record", name, &[format!("vector({value})")], &labels, &[]);
    }
    write_rule(
        out,
        "record",
        "slo:current_burn_rate:ratio",
        &[format!(
            "slo:sli_error:ratio_rate5m{{{}}} / {}",
            sli.selector(),
            num(budget)
        )],
        &labels,
        &[],
    );

    let mut skipped = Vec::new();
    for tier in burn_tiers(sli.window) {
        let threshold = tier.factor * budget;
        // The error ratio is at most 1: such a tier could never fire (e.g. a 90% latency
        // objective's 14.4x page needs 144% slow requests). Say so instead of pretending.
        if threshold >= 1.0 {
            skipped.push(tier);
            continue;
        }
        let factor = num(tier.factor);
        let compare = format!("> ({factor} * {})", num(budget));
        let expr = [
            format!(
                "slo:sli_error:ratio_rate{}{{{}}} {compare}",
                tier.long,
                sli.selector()
            ),
            "and".to_string(),
            format!(
                "slo:sli_error:ratio_rate{}{{{}}} {compare}",
                tier.short,
                sli.selector()
            ),
        ];
        let alert_labels = [
            labels[0].clone(),
            labels[1].clone(),
            ("severity", tier.severity.as_str().to_string()),
            ("long", tier.long.to_string()),
            ("short", tier.short.to_string()),
        ];
        let lasts_hours = sli.window.as_secs_f64() / HOUR as f64 / tier.factor;
        let annotations = [
            (
                "summary",
                format!(
                    "{model} {kind} SLO: error budget burning {factor}x ({}% of the {window} budget in {})",
                    num(tier.budget_percent),
                    tier.long
                ),
            ),
            (
                "description",
                format!(
                    "{{{{ $value | humanizePercentage }}}} of {model} requests {} over the last {}, and more than {}% over the last {}; the objective is {} over {window} (error budget {}%). At this burn rate the whole budget is gone in {}.",
                    sli.bad_requests(),
                    tier.long,
                    num(threshold * 100.0),
                    tier.short,
                    sli.objective_text(),
                    num(budget * 100.0),
                    format_hours(lasts_hours),
                ),
            ),
        ];
        write_rule(out, "alert", ALERT_NAME, &expr, &alert_labels, &annotations);
    }
    if !skipped.is_empty() {
        let names: Vec<String> = skipped
            .iter()
            .map(|t| format!("{}x {}/{}", num(t.factor), t.long, t.short))
            .collect();
        out.push_str(&format!(
            "      # Not generated: {} (factor x budget >= 1, no error ratio can exceed it); raise the objective or shorten the window to get them.\n",
            names.join(", ")
        ));
    }

    // Over the whole window from the raw counters rather than Sloth's average of the 5m
    // ratio: one idle 5m step (NaN) would poison that average for the whole window.
    // Every 5m, because a 30d range over raw samples is the costliest query here.
    let period = format!("slo:sli_error:ratio_rate{window}");
    out.push_str(&format!(
        "  - name: {}\n    interval: 5m\n    rules:\n",
        yaml_str(&format!("kiln-slo-{model}-{kind}-period"))
    ));
    write_rule(out, "record", &period, &sli.error_ratio(&window), &labels, &[]);
    write_rule(
        out,
        "record",
        "slo:period_error_budget_remaining:ratio",
        &[format!("1 - {period}{{{}}} / {}", sli.selector(), num(budget))],
        &labels,
        &[],
    );
}

/// Hours as `"50h"` under 3 days, else days: `"5d"`, `"2.5d"`.
fn format_hours(hours: f64) -> String {
    if hours < 72.0 {
        format!("{}h", num(round_sig(hours, 3)))
    } else {
        format!("{}d", num(round_sig(hours / 24.0, 3)))
    }
}

/// A Prometheus rule file (YAML) for `slos`: per model and SLI, the error ratios
/// `slo:sli_error:ratio_rate{5m,...,3d}` and over the whole window, metadata series, and
/// the `KilnErrorBudgetBurn` alerts. `buckets` are the bounds of
/// `kiln_request_duration_seconds` (seconds); each latency threshold must be one of them.
pub fn rules(slos: &[Slo], buckets: &[f64]) -> Result<String, SloError> {
    if slos.is_empty() {
        return Err(SloError::NoSlos);
    }
    let mut models = BTreeSet::new();
    let mut slis = Vec::new();
    for slo in slos {
        slo.validate()?;
        if !models.insert(slo.model.as_str()) {
            return Err(SloError::DuplicateModel {
                model: slo.model.clone(),
            });
        }
        if let Some(objective) = slo.availability {
            slis.push(Sli {
                model: &slo.model,
                kind: SliKind::Availability,
                objective,
                window: slo.window,
                bound: None,
            });
        }
        if let Some(latency) = &slo.latency {
            slis.push(Sli {
                model: &slo.model,
                kind: SliKind::Latency,
                objective: latency.objective,
                window: slo.window,
                bound: Some(bucket_bound(&slo.model, latency.threshold_seconds, buckets)?),
            });
        }
    }
    let mut out = String::from(
        "# Kiln SLO rules, generated by `kiln slo rules` from the [models.NAME.slo] tables of\n\
         # kiln.toml: edit those and regenerate rather than editing this file.\n\
         # slo:sli_error:ratio_rate<W> = share of bad requests over W, labels {model, slo}.\n\
         # KilnErrorBudgetBurn: multi-window multi-burn-rate alerts (Google SRE workbook), labels\n\
         # {model, slo, severity, long, short}. A model without traffic records NaN and never alerts.\n\
         groups:\n",
    );
    for sli in &slis {
        write_sli(&mut out, sli);
    }
    Ok(out)
}

/// Cumulative counters of one model, summed over versions and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelCounters {
    /// The model.
    pub model: String,
    /// Requests answered (`kiln_requests_total`).
    pub requests: u64,
    /// Of those, answered with a 5xx.
    pub server_errors: u64,
    /// Requests timed (`kiln_request_duration_seconds_count`).
    pub latency_count: u64,
    /// Cumulative buckets: (upper bound in seconds, requests at most that long), ascending,
    /// without `+Inf` (that is `latency_count`).
    pub latency_buckets: Vec<(f64, u64)>,
}

impl ModelCounters {
    /// Requests at most `seconds` long, if `seconds` is a bucket bound.
    pub fn within(&self, seconds: f64) -> Option<u64> {
        let bounds: Vec<f64> = self.latency_buckets.iter().map(|&(b, _)| b).collect();
        let bound = bucket_bound(&self.model, seconds, &bounds).ok()?;
        self.latency_buckets
            .iter()
            .find(|&&(b, _)| b == bound)
            .map(|&(_, n)| n)
    }

    /// Adds another snapshot of the same model (e.g. another node's).
    pub fn add(&mut self, other: &ModelCounters) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        self.latency_count += other.latency_count;
        for &(bound, n) in &other.latency_buckets {
            self.add_bucket(bound, n);
        }
    }

    fn add_bucket(&mut self, bound: f64, n: u64) {
        match self.latency_buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, count)) => *count += n,
            None => {
                self.latency_buckets.push((bound, n));
                self.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

/// Reads `kiln_requests_total` and `kiln_request_duration_seconds_{bucket,count}` from a
/// Prometheus text exposition (a node's `/metrics`) and sums them per model. Other lines
/// are skipped unread.
pub fn counters_from_exposition(text: &str) -> Result<Vec<ModelCounters>, SloError> {
    let mut by_model: BTreeMap<String, ModelCounters> = BTreeMap::new();
    let bucket_name = format!("{DURATION}_bucket");
    let count_name = format!("{DURATION}_count");
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name != REQUESTS && name != bucket_name && name != count_name {
            continue;
        }
        let error = |reason: String| SloError::Exposition {
            line: index + 1,
            reason,
        };
        let (labels, value) = parse_sample(&line[name_end..]).map_err(error)?;
        let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let Some(model) = label("model") else {
            continue;
        };
        let count = count_value(value).map_err(|reason| error(format!("{name}: {reason}")))?;
        let entry = by_model
            .entry(model.to_string())
            .or_insert_with(|| ModelCounters {
                model: model.to_string(),
                ..ModelCounters::default()
            });
        if name == REQUESTS {
            entry.requests += count;
            if label("code").is_some_and(|c| c.len() == 3 && c.starts_with('5')) {
                entry.server_errors += count;
            }
        } else if name == count_name {
            entry.latency_count += count;
        } else {
            let Some(le) = label("le") else {
                return Err(error(format!("{name} without an le label")));
            };
            let bound: f64 = le
                .parse()
                .map_err(|_| error(format!("le={le:?} is not a number")))?;
            if bound.is_finite() {
                entry.add_bucket(bound, count);
            }
        }
    }
    Ok(by_model.into_values().collect())
}

/// A counter's value as a whole count (Go clients write counters as floats).
fn count_value(value: f64) -> Result<u64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value.round() as u64)
    } else {
        Err(format!("{value} is not a count"))
    }
}

/// The labels and value after a sample's name: `{k="v",...} 12 [timestamp]`.
fn parse_sample(rest: &str) -> Result<(Vec<(String, String)>, f64), String> {
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let mut value_start = 0;
    if rest.starts_with('{') {
        chars.next();
        loop {
            while chars.next_if(|(_, c)| c.is_whitespace() || *c == ',').is_some() {}
            match chars.peek() {
                Some((i, '}')) => {
                    value_start = i + 1;
                    break;
                }
                None => return Err("unterminated label set".to_string()),
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_') {
                key.push(c);
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if key.is_empty() || chars.next().map(|(_, c)| c) != Some('=') {
                return Err("expected label=\"value\"".to_string());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key}: value is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("label {key}: unterminated value")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {key}: unterminated value")),
                }
            }
            labels.push((key, value));
        }
    }
    let mut fields = rest[value_start..].split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = value
        .parse::<f64>()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    Ok((labels, value))
}

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

    /// kiln-serve's `kiln_request_duration_seconds` buckets (runtime/serve/src/metrics.rs).
    const BUCKETS: &[f64] = &[
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0,
    ];
    const DAYS_30: Duration = Duration::from_secs(30 * DAY);

    fn latency(threshold_seconds: f64, objective: f64) -> Option<LatencyObjective> {
        Some(LatencyObjective {
            threshold_seconds,
            objective,
        })
    }

    fn slo(model: &str, availability: Option<f64>, latency: Option<LatencyObjective>) -> Slo {
        Slo {
            model: model.to_string(),
            availability,
            latency,
            window: DAYS_30,
        }
    }

    fn duration_error(text: &str) -> String {
        match parse_duration(text) {
            Ok(d) => panic!("{text:?} parsed as {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        // The float a user's "50ms" becomes is the bucket bound itself.
        assert_eq!(parse_duration("50ms").map(|d| d.as_secs_f64()), Ok(0.05));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 30d "), Ok(DAYS_30));
        assert_eq!(parse_duration("50 ms"), Ok(Duration::from_millis(50)));
    }

    #[test]
    fn bad_durations_say_what_is_wrong_and_how_to_write_one() {
        assert!(duration_error("").contains("it is empty"));
        assert!(duration_error("50").contains("it has no unit"));
        assert!(duration_error("50us").contains("not one of ms, s, m, h, d"));
        assert!(duration_error("1e3s").contains("not one of ms, s, m, h, d"));
        assert!(duration_error("-5s").contains("does not start with a non-negative number"));
        assert!(duration_error("ms").contains("does not start with a non-negative number"));
        assert!(duration_error("1.2.3s").contains("not a decimal number"));
        assert!(duration_error("99999999999999999999999d").contains("too long"));
        assert!(duration_error("50").contains("e.g. \"50ms\""));
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit_and_parse_back() {
        for (d, text) in [
            (DAYS_30, "30d"),
            (Duration::from_secs(36 * HOUR), "36h"),
            (Duration::from_secs(90 * 60), "90m"),
            (Duration::from_secs(61), "61s"),
            (Duration::from_millis(50), "50ms"),
            (Duration::from_micros(2500), "2.5ms"),
            (Duration::from_micros(50), "0.05ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }

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

    #[test]
    fn objectives_must_be_fractions_strictly_between_0_and_1() {
        for value in [0.0, 1.0, -0.5, f64::NAN, 1.5] {
            let err = Slo::new("iris", Some(value), None, DAYS_30).err();
            assert!(
                matches!(
                    err,
                    Some(SloError::Objective {
                        kind: SliKind::Availability,
                        ..
                    })
                ),
                "{value}: {err:?}"
            );
        }
        let err = Slo::new("iris", None, latency(0.05, 1.0), DAYS_30).err();
        assert!(matches!(
            err,
            Some(SloError::Objective {
                kind: SliKind::Latency,
                ..
            })
        ));
        // A percentage instead of a fraction: the message gives the fraction to write.
        let message = Slo::new("iris", Some(99.9), None, DAYS_30)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("SLO of model iris"), "{message}");
        assert!(message.contains("for 99.9% write 0.999"), "{message}");
        let perfect = Slo::new("iris", Some(1.0), None, DAYS_30)
            .err()
            .map(|e| e.to_string());
        assert!(perfect.is_some_and(|m| m.contains("1 leaves no error budget")));
    }

    #[test]
    fn windows_shorter_than_the_slowest_alert_or_longer_than_a_year_are_refused() {
        let window = |d| Slo::new("iris", Some(0.999), None, d);
        let err = window(Duration::from_secs(DAY)).err();
        assert!(matches!(err, Some(SloError::Window { .. })), "{err:?}");
        assert!(err.is_some_and(|e| e.to_string().contains("window 1d is outside 3d..365d")));
        assert!(window(Duration::from_secs(366 * DAY)).is_err());
        assert!(window(Duration::from_secs(3 * DAY)).is_ok());
        assert!(window(Duration::from_secs(365 * DAY)).is_ok());
    }

    #[test]
    fn an_slo_needs_an_objective_a_valid_model_and_a_positive_threshold() {
        let err = Slo::new("iris", None, None, DAYS_30).err();
        assert!(matches!(err, Some(SloError::NoObjective { .. })));
        for model in ["", "iris model", "-iris", "iris\n", "ïris"] {
            let err = Slo::new(model, Some(0.999), None, DAYS_30).err();
            assert!(matches!(err, Some(SloError::Model { .. })), "{model:?}: {err:?}");
        }
        assert!(Slo::new("iris-v2.onnx_x", Some(0.999), None, DAYS_30).is_ok());
        for seconds in [0.0, -0.05, f64::INFINITY] {
            let err = Slo::new("iris", None, latency(seconds, 0.99), DAYS_30).err();
            assert!(
                matches!(err, Some(SloError::Threshold { .. })),
                "{seconds}: {err:?}"
            );
        }
    }

    #[test]
    fn the_kiln_toml_table_deserializes_with_human_durations() -> Result<(), serde_json::Error> {
        // JSON of the same shape as the TOML table (this crate has no toml dependency).
        let slo: Slo = serde_json::from_str(
            r#"{"availability": 0.999, "latency": {"threshold": "50ms", "objective": 0.99}, "window": "7d"}"#,
        )?;
        assert_eq!(slo.model, "");
        assert_eq!(slo.availability, Some(0.999));
        assert_eq!(slo.latency, latency(0.05, 0.99));
        assert_eq!(slo.window, Duration::from_secs(7 * DAY));
        // The table does not carry the model: validation wants it set.
        assert!(matches!(slo.validate(), Err(SloError::Model { .. })));
        let slo = Slo {
            model: "iris".to_string(),
            ..slo
        };
        assert_eq!(slo.validate(), Ok(()));

        let default_window: Slo = serde_json::from_str(r#"{"model": "iris", "availability": 0.99}"#)?;
        assert_eq!(default_window.window, DEFAULT_WINDOW);
        assert_eq!(default_window.validate(), Ok(()));
        Ok(())
    }

    #[test]
    fn bad_tables_fail_to_deserialize_with_the_reason() {
        let error = |json: &str| match serde_json::from_str::<Slo>(json) {
            Ok(slo) => panic!("{json} deserialized as {slo:?}"),
            Err(e) => e.to_string(),
        };
        assert!(error(r#"{"availabilty": 0.999}"#).contains("unknown field `availabilty`"));
        assert!(error(r#"{"availability": 0.999, "window": "30 days"}"#).contains("invalid duration"));
        assert!(error(r#"{"availability": 1.5}"#).contains("not a fraction"));
        assert!(error(r#"{"window": "30d"}"#).contains("declares no objective"));
        assert!(error(r#"{"latency": {"threshold": "50", "objective": 0.99}}"#).contains("it has no unit"));
        assert!(
            error(r#"{"latency": {"threshold": "0ms", "objective": 0.99}}"#).contains("positive duration")
        );
        assert!(
            error(r#"{"latency": {"threshold": 0.05, "objective": 0.99}}"#).contains("expected a string")
        );
        assert!(error(r#"{"model": "a b", "availability": 0.99}"#).contains("invalid model name"));
    }

    #[test]
    fn a_threshold_off_the_buckets_names_the_nearest_bounds() {
        let message = |seconds: f64| match rules(&[slo("iris", None, latency(seconds, 0.99))], BUCKETS) {
            Ok(_) => panic!("{seconds}s accepted"),
            Err(e) => {
                assert!(matches!(e, SloError::NotABucket { .. }), "{e:?}");
                e.to_string()
            }
        };
        assert!(message(0.06).contains("latency threshold 60ms is not a bucket bound"));
        assert!(message(0.06).contains("use 50ms or 100ms"));
        assert!(message(10.0).contains("use 5s (the largest bound)"));
        assert!(message(0.00001).contains("use 0.05ms (the smallest bound)"));
        let none = rules(&[slo("iris", None, latency(0.05, 0.99))], &[]).err();
        assert!(none.is_some_and(|e| e.to_string().contains("none were given")));
    }

    #[test]
    fn a_threshold_within_float_noise_of_a_bound_is_that_bound() -> Result<(), SloError> {
        let seconds = parse_duration("0.1ms")?.as_secs_f64();
        let yaml = rules(&[slo("iris", None, latency(seconds, 0.99))], BUCKETS)?;
        assert!(yaml.contains("le=\"0.0001\""), "{yaml}");
        Ok(())
    }

    #[test]
    fn rules_refuse_no_slos_and_two_slos_for_one_model() {
        assert_eq!(rules(&[], BUCKETS), Err(SloError::NoSlos));
        let twice = [slo("iris", Some(0.999), None), slo("iris", Some(0.99), None)];
        assert_eq!(
            rules(&twice, BUCKETS),
            Err(SloError::DuplicateModel {
                model: "iris".to_string()
            })
        );
        // rules() validates what it is given, even when built without Slo::new.
        let invalid = [slo("iris", Some(2.0), None)];
        assert!(matches!(
            rules(&invalid, BUCKETS),
            Err(SloError::Objective { .. })
        ));
    }

    #[test]
    fn le_matchers_accept_every_way_the_bound_is_written() {
        assert_eq!(le_matcher(0.05), r#"le="0.05""#);
        assert_eq!(le_matcher(2.5), r#"le="2.5""#);
        assert_eq!(le_matcher(0.0001), r#"le="0.0001""#);
        assert_eq!(le_matcher(1.0), r#"le=~"1|1[.]0""#);
        assert_eq!(le_matcher(5.0), r#"le=~"5|5[.]0""#);
        assert_eq!(le_matcher(0.00005), r#"le=~"0[.]00005|5e-05""#);
        assert_eq!(le_matcher(0.000025), r#"le=~"0[.]000025|2[.]5e-05""#);
        assert_eq!(le_matcher(1e6), r#"le=~"1000000|1e[+]06""#);
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
    }

    #[test]
    fn rules_hold_every_window_label_and_tier_of_each_sli() -> Result<(), SloError> {
        let yaml = rules(
            &[
                slo("iris", Some(0.999), latency(0.05, 0.99)),
                Slo {
                    window: Duration::from_secs(7 * DAY),
                    ..slo("fraud", Some(0.99), None)
                },
            ],
            BUCKETS,
        )?;
        for (model, kind) in [
            ("iris", "availability"),
            ("iris", "latency"),
            ("fraud", "availability"),
        ] {
            assert!(yaml.contains(&format!("  - name: \"kiln-slo-{model}-{kind}\"\n")));
            assert!(yaml.contains(&format!(
                "  - name: \"kiln-slo-{model}-{kind}-period\"\n    interval: 5m\n"
            )));
            let selector = format!("{{model=\"{model}\",slo=\"{kind}\"}}");
            for window in WINDOWS {
                assert!(
                    yaml.contains(&format!("slo:sli_error:ratio_rate{window}{selector}")),
                    "{window}"
                );
            }
        }
        assert_eq!(
            yaml.matches("- record: \"slo:sli_error:ratio_rate5m\"").count(),
            3
        );
        assert_eq!(yaml.matches("- alert: \"KilnErrorBudgetBurn\"").count(), 12);
        assert_eq!(
            yaml.matches("- record: \"slo:sli_error:ratio_rate30d\"").count(),
            2
        );
        assert_eq!(
            yaml.matches("- record: \"slo:sli_error:ratio_rate7d\"").count(),
            1
        );
        assert!(yaml.contains("kiln_requests_total{model=\"iris\",code=~\"5..\"}[1h]"));
        assert!(yaml.contains("kiln_request_duration_seconds_bucket{model=\"iris\",le=\"0.05\"}[1h]"));
        assert!(yaml.contains("kiln_request_duration_seconds_count{model=\"iris\"}[1h]"));
        assert!(yaml.contains(
            "slo:sli_error:ratio_rate1h{model=\"iris\",slo=\"availability\"} > (14.4 * 0.001)\n          and\n          slo:sli_error:ratio_rate5m{model=\"iris\",slo=\"availability\"} > (14.4 * 0.001)\n"
        ));
        assert!(
            yaml.contains(
                "slo:sli_error:ratio_rate3d{model=\"fraud\",slo=\"availability\"} > (0.2333 * 0.01)"
            )
        );
        assert!(yaml.contains("vector(0.001)"), "budget printed rounded");
        assert!(!yaml.contains("0.0010000000000000009"));
        assert!(yaml.contains(
            "summary: \"iris latency SLO: error budget burning 14.4x (2% of the 30d budget in 1h)\""
        ));
        assert!(yaml.contains(
            "requests took longer than 50ms over the last 1h, and more than 14.4% over the last 5m"
        ));
        assert!(yaml.contains("the objective is 99% of requests within 50ms over 30d (error budget 1%)"));
        assert!(yaml.contains("the whole budget is gone in 50h."));
        Ok(())
    }

    #[test]
    fn tiers_that_cannot_fire_are_left_out_and_said_so() -> Result<(), SloError> {
        // 90% within 50ms over 30d: the 14.4x page would need 144% slow requests.
        let yaml = rules(&[slo("iris", None, latency(0.05, 0.9))], BUCKETS)?;
        assert_eq!(yaml.matches("- alert: \"KilnErrorBudgetBurn\"").count(), 3);
        assert!(!yaml.contains("(14.4 * 0.1)"));
        assert!(yaml.contains("(6 * 0.1)"));
        assert!(yaml.contains("# Not generated: 14.4x 1h/5m (factor x budget >= 1"));
        Ok(())
    }

    /// A `/metrics` page as kiln-serve's prometheus 0.14 TextEncoder writes it (labels in
    /// name order, `le` last), with two versions, two endpoints and metrics around it.
    const EXPOSITION: &str = r#"# HELP kiln_build_info Kiln build information (always 1)
# TYPE kiln_build_info gauge
kiln_build_info{version="0.1.0"} 1
# HELP kiln_request_duration_seconds Time from receiving an inference request to its response, in seconds
# TYPE kiln_request_duration_seconds histogram
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="0.00005"} 0
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="0.025"} 900
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="0.05"} 980
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="1"} 1000
kiln_request_duration_seconds_bucket{endpoint="infer",model="iris",version="1",le="+Inf"} 1000
kiln_request_duration_seconds_sum{endpoint="infer",model="iris",version="1"} 21.5
kiln_request_duration_seconds_count{endpoint="infer",model="iris",version="1"} 1000
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="0.00005"} 0
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="0.025"} 50
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="0.05"} 90
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="1"} 99
kiln_request_duration_seconds_bucket{endpoint="seed",model="iris",version="2",le="+Inf"} 100
kiln_request_duration_seconds_sum{endpoint="seed",model="iris",version="2"} 7.25
kiln_request_duration_seconds_count{endpoint="seed",model="iris",version="2"} 100
kiln_request_duration_seconds_bucket{endpoint="infer",model="_unknown",version="",le="0.05"} 3
kiln_request_duration_seconds_bucket{endpoint="infer",model="_unknown",version="",le="+Inf"} 3
kiln_request_duration_seconds_count{endpoint="infer",model="_unknown",version=""} 3
# HELP kiln_requests_total Inference requests answered, by model, served version, endpoint (seed, infer) and HTTP status code
# TYPE kiln_requests_total counter
kiln_requests_total{code="200",endpoint="infer",model="iris",version="1"} 990
kiln_requests_total{code="500",endpoint="infer",model="iris",version="1"} 4
kiln_requests_total{code="503",endpoint="infer",model="iris",version="1"} 6
kiln_requests_total{code="200",endpoint="seed",model="iris",version="2"} 95
kiln_requests_total{code="400",endpoint="seed",model="iris",version="2"} 3
kiln_requests_total{code="504",endpoint="seed",model="iris",version="2"} 2
kiln_requests_total{code="404",endpoint="infer",model="_unknown",version=""} 3
# HELP kiln_shadow_requests_total Copies of requests run on a model's shadow version; never counted in kiln_requests_total
# TYPE kiln_shadow_requests_total counter
kiln_shadow_requests_total{model="iris",result="agree",version="3"} 40
kiln_fallback_total{fallback="fixed",kind="trap",model="we\"ird {x}",version="1"} 1
"#;

    #[test]
    fn exposition_counters_sum_over_versions_and_endpoints_per_model() -> Result<(), SloError> {
        let counters = counters_from_exposition(EXPOSITION)?;
        let models: Vec<&str> = counters.iter().map(|c| c.model.as_str()).collect();
        assert_eq!(models, ["_unknown", "iris"]);
        let iris = &counters[1];
        assert_eq!(iris.requests, 1100);
        // 500, 503 (shed) and 504 are server errors; 400 and 404 are not.
        assert_eq!(iris.server_errors, 12);
        assert_eq!(iris.latency_count, 1100);
        assert_eq!(
            iris.latency_buckets,
            [(0.00005, 0), (0.025, 950), (0.05, 1070), (1.0, 1099)]
        );
        assert_eq!(iris.within(0.05), Some(1070));
        assert_eq!(iris.within(parse_duration("50ms")?.as_secs_f64()), Some(1070));
        assert_eq!(iris.within(0.1), None);
        assert_eq!(counters[0].server_errors, 0);
        assert_eq!(counters[0].requests, 3);
        Ok(())
    }

    #[test]
    fn exposition_errors_give_the_line() {
        for (text, line, reason) in [
            (
                "# c\nkiln_requests_total{model=\"iris\",code=\"200\" 5\n",
                2,
                "expected label=\"value\"",
            ),
            (
                "kiln_requests_total{model=\"iris\"\n",
                1,
                "unterminated label set",
            ),
            (
                "kiln_requests_total{model=\"iris} 5\n",
                1,
                "label model: unterminated value",
            ),
            ("kiln_requests_total{model=iris} 5\n", 1, "value is not quoted"),
            (
                "kiln_requests_total{model=\"iris\"} five\n",
                1,
                "value \"five\" is not a number",
            ),
            ("kiln_requests_total{model=\"iris\"}\n", 1, "no value"),
            ("kiln_requests_total{model=\"iris\"} -3\n", 1, "-3 is not a count"),
            (
                "kiln_request_duration_seconds_bucket{model=\"iris\"} 3\n",
                1,
                "without an le label",
            ),
            (
                "kiln_request_duration_seconds_bucket{model=\"iris\",le=\"x\"} 3\n",
                1,
                "is not a number",
            ),
        ] {
            match counters_from_exposition(text) {
                Err(SloError::Exposition {
                    line: got,
                    reason: why,
                }) => {
                    assert_eq!(got, line, "{text}");
                    assert!(why.contains(reason), "{text}: {why}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn counters_of_several_nodes_add_up() -> Result<(), SloError> {
        let mut total = counters_from_exposition(EXPOSITION)?.remove(1);
        let other = ModelCounters {
            model: "iris".to_string(),
            requests: 10,
            server_errors: 1,
            latency_count: 10,
            latency_buckets: vec![(0.05, 9), (0.1, 10)],
        };
        total.add(&other);
        assert_eq!(
            (total.requests, total.server_errors, total.latency_count),
            (1110, 13, 1110)
        );
        assert_eq!(total.within(0.05), Some(1079));
        assert_eq!(total.within(0.1), Some(10));
        assert_eq!(total.latency_buckets.last(), Some(&(1.0, 1099)));
        Ok(())
    }

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
