//! `GET /monitor/v1/drift/{model}[?version=V&since=15m]`: the drift of one served version's
//! traffic on this server against its reference profile (`kiln_monitor::model::drift`,
//! Evidently's default methods), and `GET /admin/v1/profiles?since=15m` (node admin API):
//! every version's merged profiles, which the sync service merges fleet-wide. The
//! `kiln_feature_drift_score` and `kiln_dataset_drift` gauges are set by each drift
//! answer and by [`refresh_gauges`], which a task runs every minute.

use crate::http::HttpError;
use crate::profiles::VersionProfile;
use crate::state::State;
use axum::Json;
use axum::extract::{Path, Query, State as Shared};
use axum::http::StatusCode;
use kiln_api::ApiError;
use kiln_monitor::drift::DriftReport;
pub use kiln_monitor::model::DriftAnswer;
use kiln_monitor::model::ModelProfile;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The window a drift query looks at by default.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(15 * 60);

/// The query string of a drift request.
#[derive(Deserialize, Default)]
pub(crate) struct DriftQuery {
    version: Option<String>,
    since: Option<String>,
}

/// Parses `since` (default [`DEFAULT_SINCE`]): a number and `s`, `m` or `h`, at most the
/// retention (1 h); 400 otherwise.
pub fn parse_since(text: Option<&str>) -> Result<Duration, ApiError> {
    text.map_or(Ok(DEFAULT_SINCE), |t| {
        kiln_monitor::model::parse_since(t).map_err(ApiError::bad_request)
    })
}

/// `GET /monitor/v1/drift/{model}`.
pub(crate) async fn drift(
    Shared(state): Shared<Arc<State>>,
    Path(model): Path<String>,
    Query(query): Query<DriftQuery>,
) -> Result<Json<DriftAnswer>, HttpError> {
    let since = parse_since(query.since.as_deref())?;
    let table = state.table();
    let routes = table.routes(&model).map_err(ApiError::from)?;
    let served = match query.version.as_deref() {
        Some(v) => routes.resolve_in(&model, v),
        None => routes.primary_in(&model),
    }
    .map_err(ApiError::from)?;
    let version = served.version;
    let catalog = state.catalog.clone();
    let name = model.clone();
    let reference = tokio::task::spawn_blocking(move || catalog.reference(&name, version))
        .await
        .map_err(|e| ApiError::internal(format!("the reference task failed: {e}")))?
        .map_err(|e| {
            ApiError::internal(format!(
                "reading the reference profile of {model}/{version}: {e:#}"
            ))
        })?;
    let Some(reference) = reference else {
        return Err(not_found(format!(
            "{model}/{version} has no reference profile to measure drift against: set one with `kiln monitor reference set {model}/{version} data.csv` (or `kiln models register … --reference data.csv`){}",
            if state.store.is_some() {
                "; a managed node's references live with the sync service: ask its /monitor/v1/drift"
            } else {
                ""
            }
        ))
        .into());
    };
    flush(&state).await;
    let Some(snapshot) = state
        .profiles
        .get(&model, version)
        .and_then(|p| p.snapshot(since))
    else {
        return Err(not_found(format!(
            "{model}/{version} had no traffic on this server in the last {}: drift needs requests to compare",
            kiln_monitor::slo::format_duration(since)
        ))
        .into());
    };
    let mut report = compute(&reference, &snapshot.profile).map_err(|e| ApiError::new(409, e))?;
    report.model = Some(model.clone());
    report.version = Some(version.to_string());
    state.metrics.drift(&model, &served.version_label, &report);
    Ok(Json(DriftAnswer {
        since: kiln_monitor::slo::format_duration(since),
        window_start: kiln_types::format::rfc3339(snapshot.from as f64),
        nodes: None,
        report,
    }))
}

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND.as_u16(), message)
}

/// The drift report of `current` against a reference; the error says why there is none.
pub fn compute(
    reference: &kiln_monitor::model::Reference,
    current: &ModelProfile,
) -> Result<DriftReport, String> {
    kiln_monitor::model::drift(&reference.profile, current, &reference.features).map_err(|e| {
        format!("drift cannot be computed: {e} (was the reference made from this model's inputs, in its feature order?)")
    })
}

/// `GET /admin/v1/profiles?since=15m`: every served version's merged profiles.
pub(crate) async fn profiles(
    Shared(state): Shared<Arc<State>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<VersionProfile>>, HttpError> {
    let since = parse_since(query.get("since").map(String::as_str))?;
    flush(&state).await;
    Ok(Json(state.profiles.all(since)))
}

/// Profiles (on the blocking pool) the requests answered so far that the profiler thread
/// has not come by yet.
async fn flush(state: &Arc<State>) {
    let state = state.clone();
    let _ = tokio::task::spawn_blocking(move || state.profiler.flush()).await;
}

/// Recomputes the drift gauges of every served version that has a reference and traffic
/// in the last [`DEFAULT_SINCE`] (on a blocking thread: it reads the catalog).
pub(crate) fn refresh_gauges(state: &State) {
    state.profiler.flush();
    let table = state.table();
    let mut alerts = Vec::new();
    for (model, routes) in &table.models {
        for served in routes.versions.values() {
            let Some(snapshot) = state
                .profiles
                .get(model, served.version)
                .and_then(|p| p.snapshot(DEFAULT_SINCE))
            else {
                continue;
            };
            match state.catalog.reference(model, served.version) {
                Ok(Some(reference)) => match compute(&reference, &snapshot.profile) {
                    Ok(report) => {
                        state.metrics.drift(model, &served.version_label, &report);
                        if report.dataset_drift {
                            alerts.push(drift_alert(model, &served.version_label, &report));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(model = %model, version = served.version, error = %e, "no drift gauges")
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(model = %model, version = served.version, error = %format!("{e:#}"), "reading a reference profile failed")
                }
            }
        }
    }
    if let Some(alerter) = &state.alerter {
        alerter.reconcile("drift", alerts);
    }
}

/// `KilnDataDrift` for a version whose dataset drifts.
fn drift_alert(model: &str, version: &str, report: &DriftReport) -> kiln_node_api::alerts::Alert {
    let since = kiln_monitor::slo::format_duration(DEFAULT_SINCE);
    kiln_node_api::alerts::Alert::new("KilnDataDrift", kiln_node_api::alerts::Severity::Ticket)
        .label("model", model)
        .label("version", version)
        .annotation(
            "summary",
            kiln_monitor::model::drift_summary(model, version, report, &since),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_seconds_minutes_and_hours_up_to_the_retention() {
        assert_eq!(parse_since(None).unwrap(), DEFAULT_SINCE);
        assert_eq!(parse_since(Some("90s")).unwrap(), Duration::from_secs(90));
        assert_eq!(parse_since(Some("15m")).unwrap(), Duration::from_secs(900));
        assert_eq!(parse_since(Some("1h")).unwrap(), Duration::from_secs(3600));
        for bad in ["2h", "0m", "15", "m", "1.5h", "15 m", "-1m"] {
            let e = parse_since(Some(bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert!(e.message.contains("since="), "{}", e.message);
        }
    }
}
