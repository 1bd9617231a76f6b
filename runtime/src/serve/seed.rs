//! The seed API, `POST /v1/models/{name}/predict`: features in, prediction and
//! confidence out, for models with one `[N, F]` input.
//!
//! One row: `{"features": [...], "model_version"?: "latest"|"3"|"Production"|"champion",
//! "request_id"?: "..."}` → `{"prediction", "confidence", "model_version", "request_id",
//! "timestamp", "processing_time"}`. Rows: `{"instances": [[...], ...]}` →
//! `{"predictions", "confidences", ...}`. Without `model_version` (or the forced-version
//! header) the model's weighted routing picks the version. The body rules live in
//! `kiln_edge::seed`, shared with the edge workers.

use super::State;
use super::error::{ApiError, Protocol, body_error};
use super::inference::{self, RequestLabels};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as Shared};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_edge::seed;
use std::sync::Arc;
use std::time::Instant;

const INVALID: Protocol = Protocol::Seed;

/// `POST /v1/models/{name}/predict`.
pub(crate) async fn predict(
    Shared(state): Shared<Arc<State>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let mut labels = RequestLabels::new();
    match run(&state, &name, &headers, body, started, &mut labels).await {
        Ok(response) => inference::record(&state, "seed", &labels, started, response, None),
        Err(e) => {
            let response = e.clone().into_response();
            inference::record(&state, "seed", &labels, started, response, Some(&e))
        }
    }
}

async fn run(
    state: &Arc<State>,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
    labels: &mut RequestLabels,
) -> Result<Response, ApiError> {
    let table = state.table();
    if table.models.contains_key(name) {
        labels.model = name.to_string();
    }
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let request = seed::parse(&body)?;
    let route = table.route(name, inference::selection(headers, request.version.as_deref()))?;
    drop(table);
    let served = route.served.clone();
    labels.routed(&served);
    let info = &served.model.info;
    let batch = request.batch;
    let request_id = request.request_id.clone();
    let (input, rows) = seed::input_tensor(name, info, request)?;
    let (outputs, cache) = inference::predict(state, &route, vec![input], &[], "seed", INVALID).await?;
    labels.cache = cache;
    let answer = seed::Answer {
        batch,
        version_label: &served.version_label,
        request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        timestamp: now_rfc3339(),
        processing_time: started.elapsed().as_secs_f64(),
    };
    let body = seed::response_body(info, &outputs, rows, answer)?;
    Ok(Json(body).into_response())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
