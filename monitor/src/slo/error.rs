//! What can go wrong with an SLO, its rules or its counters, and how each error reads:
//! what failed, why, and what to write instead.

use super::common::{DURATION, SliKind, format_duration, format_seconds, num};
use std::fmt;
use std::time::Duration;

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
