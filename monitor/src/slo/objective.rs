//! The objectives themselves: the `[models.NAME.slo]` table of kiln.toml, its validation,
//! and the check that a latency threshold is a bound of the duration histogram.

use super::common::{DAY, DEFAULT_WINDOW, SliKind};
use super::duration::parse_duration;
use super::error::SloError;
use serde::Deserialize;
use std::time::Duration;

/// The slowest tier looks back 3 days: a shorter SLO window would ask it to judge more
/// time than the budget covers.
const MIN_WINDOW: Duration = Duration::from_secs(3 * DAY);
/// Longer is more likely a typo than a plan; a year already asks the fast page for 175x.
const MAX_WINDOW: Duration = Duration::from_secs(365 * DAY);
/// How close a threshold must be to a bucket bound to be that bound ("0.1ms" parses to a
/// float one ulp away from the literal 0.0001).
const BOUND_TOLERANCE: f64 = 1e-9;

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
/// the table says `model = "..."`: set it from the key before calling [`rules`](fn@super::rules) or
/// [`report`](fn@super::report), which [`Slo::validate`] every SLO. Values are checked while deserializing,
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

/// The bucket bound equal to `seconds` (within float noise), or the nearest bounds around it.
pub(super) fn bucket_bound(model: &str, seconds: f64, buckets: &[f64]) -> Result<f64, SloError> {
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

#[cfg(test)]
pub mod tests {
    use super::*;

    // Shared with the tests of the other files of this module.
    pub(crate) const DAYS_30: Duration = Duration::from_secs(30 * DAY);

    pub(crate) fn latency(threshold_seconds: f64, objective: f64) -> Option<LatencyObjective> {
        Some(LatencyObjective {
            threshold_seconds,
            objective,
        })
    }

    pub(crate) fn slo(model: &str, availability: Option<f64>, latency: Option<LatencyObjective>) -> Slo {
        Slo {
            model: model.to_string(),
            availability,
            latency,
            window: DAYS_30,
        }
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
}
