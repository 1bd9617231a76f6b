//! A rollout's prediction drift: the canary's outputs against the stable version's, both
//! profiled over the same traffic window, so that a new version whose answers move away
//! from the current one's can be rolled back before it takes all the traffic (a rollout
//! plan's `max_prediction_drift`).
//!
//! Each output column is scored by a distance ([`drift::distance_method`]): the normed
//! Wasserstein distance for numerical columns with more than 5 unique values, else the
//! Jensen–Shannon distance. Unlike a p-value, a distance does not shrink as traffic grows,
//! so one threshold means the same on a quiet model and a busy one. The step's score is
//! the largest column's.

use crate::drift::{self, ColumnDrift, DriftError};
use crate::model::ModelProfile;

/// The canary's outputs against the stable version's.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionShift {
    /// Output rows profiled for the stable version and the canary.
    pub stable_rows: u64,
    pub canary_rows: u64,
    /// Per output column: its distance, the threshold, and whether it is above it.
    pub columns: Vec<ColumnDrift>,
}

impl PredictionShift {
    /// The column with the largest distance.
    pub fn worst(&self) -> Option<&ColumnDrift> {
        self.columns.iter().max_by(|a, b| a.score.total_cmp(&b.score))
    }

    /// Whether any column's distance is above the threshold.
    pub fn drifted(&self) -> bool {
        self.columns.iter().any(|c| c.drift)
    }

    /// One line for rollout messages: the worst column, its method and score.
    pub fn summary(&self) -> String {
        let worst = match self.worst() {
            Some(c) => format!(
                "{} {} {:.3} (max {})",
                c.name,
                c.method.display_name(),
                c.score,
                c.threshold
            ),
            None => "no output columns".to_string(),
        };
        format!(
            "prediction drift: {worst}; canary {} rows vs stable {} rows",
            self.canary_rows, self.stable_rows
        )
    }
}

/// Why a prediction shift cannot be measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShiftError {
    /// One side has no profiled outputs (no traffic, or profiles off on the nodes).
    #[error(
        "the {side} version has no profiled outputs in the window (no traffic, or the nodes run \
         with --no-drift-profiles)"
    )]
    NoOutputs {
        /// `"stable"` or `"canary"`.
        side: &'static str,
    },
    /// The columns cannot be compared.
    #[error("{0}")]
    Drift(#[from] DriftError),
}

/// Scores the canary's outputs against the stable version's; a column drifts when its
/// distance is above `max`.
pub fn prediction_shift(
    stable: &ModelProfile,
    canary: &ModelProfile,
    max: f64,
) -> Result<PredictionShift, ShiftError> {
    let s = stable
        .outputs
        .as_ref()
        .filter(|t| t.rows() > 0)
        .ok_or(ShiftError::NoOutputs { side: "stable" })?;
    let c = canary
        .outputs
        .as_ref()
        .filter(|t| t.rows() > 0)
        .ok_or(ShiftError::NoOutputs { side: "canary" })?;
    if !s.names().eq(c.names()) {
        return Err(DriftError::ColumnsMismatch {
            table: "outputs",
            reference: s.names().map(str::to_string).collect(),
            current: c.names().map(str::to_string).collect(),
        }
        .into());
    }
    let columns = s
        .columns()
        .zip(c.columns())
        .map(|((name, sc), (_, cc))| {
            let method = drift::distance_method(sc, cc);
            let mut column = drift::column_drift_by(name, sc, cc, method)?;
            column.threshold = max;
            column.drift = column.score > max;
            Ok(column)
        })
        .collect::<Result<Vec<_>, DriftError>>()?;
    Ok(PredictionShift {
        stable_rows: s.rows(),
        canary_rows: c.rows(),
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::Method;
    use crate::profile::ProfileConfig;
    use kiln_types::Tensor;

    fn outputs(values: &[f32], classes: &[i64]) -> ModelProfile {
        let config = ProfileConfig::default();
        let mut p = ModelProfile::default();
        let n = values.len() as u64;
        p.observe_outputs(
            &[
                Tensor::from_f32("score", &[n], values),
                Tensor::from_i64("label", classes),
            ],
            config,
        )
        .unwrap();
        p
    }

    /// A deterministic spread of `n` values around `center`.
    fn spread(n: usize, center: f32) -> Vec<f32> {
        (0..n).map(|i| center + ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn the_same_answers_do_not_drift_and_shifted_ones_do() {
        let labels: Vec<i64> = (0..500).map(|i| (i % 3) as i64).collect();
        let stable = outputs(&spread(500, 0.0), &labels);
        let same = outputs(&spread(300, 0.0), &labels[..300]);
        let shift = prediction_shift(&stable, &same, 0.1).unwrap();
        assert_eq!((shift.stable_rows, shift.canary_rows), (500, 300));
        let methods: Vec<Method> = shift.columns.iter().map(|c| c.method).collect();
        assert_eq!(methods, [Method::Wasserstein, Method::Jensenshannon]);
        assert!(!shift.drifted(), "{}", shift.summary());

        // Scores moved by one std (~0.29), labels all to one class.
        let moved = outputs(&spread(300, 0.3), &[2; 300]);
        let shift = prediction_shift(&stable, &moved, 0.1).unwrap();
        assert!(shift.columns.iter().all(|c| c.drift), "{:?}", shift.columns);
        let w = &shift.columns[0];
        assert!((w.score - 1.0).abs() < 0.05, "{}", shift.summary());
        assert!(shift.summary().starts_with("prediction drift: score Wasserstein"));
        // A higher threshold lets the same shift through for the scores, not the labels.
        let shift = prediction_shift(&stable, &moved, 2.0).unwrap();
        assert!(!shift.drifted(), "{}", shift.summary());
    }

    #[test]
    fn a_side_without_outputs_or_with_other_columns_cannot_be_judged() {
        let stable = outputs(&spread(10, 0.0), &[1; 10]);
        assert_eq!(
            prediction_shift(&stable, &ModelProfile::default(), 0.1),
            Err(ShiftError::NoOutputs { side: "canary" })
        );
        assert_eq!(
            prediction_shift(&ModelProfile::default(), &stable, 0.1),
            Err(ShiftError::NoOutputs { side: "stable" })
        );
        let mut other = ModelProfile::default();
        other
            .observe_outputs(
                &[Tensor::from_f32("y", &[2], &[1.0, 2.0])],
                ProfileConfig::default(),
            )
            .unwrap();
        assert!(matches!(
            prediction_shift(&stable, &other, 0.1),
            Err(ShiftError::Drift(DriftError::ColumnsMismatch { .. }))
        ));
    }
}
