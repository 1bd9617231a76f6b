//! The drift gauges every Kiln server exposes (`kiln serve` for its own traffic, the sync
//! service for the fleet's), with the `prometheus` feature: `kiln_feature_drift_score`
//! and `kiln_dataset_drift`.

use crate::drift::DriftReport;
use crate::model::gauge_series;
use prometheus::{GaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Mutex;

/// (model, version).
type VersionKey = (String, String);
/// (feature, method) of one `kiln_feature_drift_score` series.
type Series = (String, &'static str);

/// The two drift gauges, registered in a Prometheus registry.
pub struct DriftGauges {
    feature: GaugeVec,
    dataset: GaugeVec,
    /// The (feature, method) series last set per (model, version), so that a new report
    /// replaces them all (a column's method can change with its data).
    series: Mutex<HashMap<VersionKey, Vec<Series>>>,
}

impl DriftGauges {
    /// Creates the gauges in `registry`; `scope` says whose traffic they measure (for the
    /// help text: "this server's", "the fleet's").
    pub fn register(registry: &Registry, scope: &str) -> prometheus::Result<DriftGauges> {
        let feature = GaugeVec::new(
            Opts::new(
                "kiln_feature_drift_score",
                format!(
                    "Drift score of an input feature (or `output:NAME` for an output column) of a version over {scope} last 15 minutes against its reference, by Evidently's default method (ks, chisquare, z: a p-value, drift below 0.05; wasserstein, jensenshannon: a distance, drift from 0.1)"
                ),
            ),
            &["model", "version", "feature", "method"],
        )?;
        let dataset = GaugeVec::new(
            Opts::new(
                "kiln_dataset_drift",
                format!(
                    "1 when at least half of a version's input features drifted over {scope} last 15 minutes (Evidently's dataset drift rule), else 0"
                ),
            ),
            &["model", "version"],
        )?;
        registry.register(Box::new(feature.clone()))?;
        registry.register(Box::new(dataset.clone()))?;
        Ok(DriftGauges {
            feature,
            dataset,
            series: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the gauges of `model`/`version` from `report`, replacing its earlier series.
    pub fn set(&self, model: &str, version: &str, report: &DriftReport) {
        let series = gauge_series(report);
        let mut last = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model.to_string(), version.to_string());
        for (feature, method) in last.remove(&key).unwrap_or_default() {
            let _ = self
                .feature
                .remove_label_values(&[model, version, feature.as_str(), method]);
        }
        for (feature, method, score) in &series {
            self.feature
                .with_label_values(&[model, version, feature.as_str(), method])
                .set(*score);
        }
        last.insert(key, series.into_iter().map(|(f, m, _)| (f, m)).collect());
        self.dataset
            .with_label_values(&[model, version])
            .set(if report.dataset_drift { 1.0 } else { 0.0 });
    }
}
