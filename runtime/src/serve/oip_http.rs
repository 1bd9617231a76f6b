//! Open Inference Protocol v2 endpoints (what Triton's and KServe's clients call):
//! server and model metadata, health, readiness, a Triton-like model config, and infer
//! with the binary tensor extension. `{version}` accepts a number, a stage, an alias or
//! `latest`; without it, infer follows the model's weighted routing and metadata describes
//! the version with the highest weight.

use super::State;
use super::error::{ApiError, Protocol, body_error};
use super::inference::{self, RequestLabels};
use super::table::ServedModel;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_edge::infer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// `GET /v2`.
pub(crate) async fn server_metadata() -> Json<Value> {
    Json(infer::server_metadata())
}

/// `GET /v2/health/live`: the process answers.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: 200 once the first load finished, 503 before.
pub(crate) async fn ready(Shared(state): Shared<Arc<State>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(json!({ "ready": true })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is still loading its models",
        )
        .into_response()
    }
}

fn resolve(state: &State, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
    let table = state.table();
    Ok(match version {
        Some(selector) => table.resolve(name, selector)?,
        None => table.primary(name)?,
    })
}

fn described(served: &ServedModel) -> infer::Described<'_> {
    infer::Described {
        name: &served.name,
        info: &served.model.info,
        digest: &served.digest,
        stage: &served.stage,
        aliases: &served.aliases,
    }
}

fn metadata(state: &State, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let table = state.table();
    let served = resolve(state, name, version)?;
    let versions: Vec<String> = match version {
        Some(_) => vec![served.version_label.clone()],
        None => table
            .models
            .get(name)
            .map(|r| r.versions.keys().map(u64::to_string).collect())
            .unwrap_or_default(),
    };
    Ok(Json(infer::model_metadata(&described(&served), versions)))
}

fn config(state: &State, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let served = resolve(state, name, version)?;
    Ok(Json(infer::model_config(&described(&served))))
}

fn model_is_ready(state: &State, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let served = resolve(state, name, version)?;
    Ok(Json(infer::model_ready(&served.name, &served.version_label)))
}

/// `GET /v2/models/{name}`.
pub(crate) async fn model_metadata(
    Shared(state): Shared<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}`.
pub(crate) async fn version_metadata(
    Shared(state): Shared<Arc<State>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &name, Some(&version))
}

/// `GET /v2/models/{name}/ready`: 200 when servable, 404 otherwise (tritonclient's
/// `is_model_ready` is true on 200 only).
pub(crate) async fn model_ready(
    Shared(state): Shared<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    model_is_ready(&state, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/ready`.
pub(crate) async fn version_ready(
    Shared(state): Shared<Arc<State>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_is_ready(&state, &name, Some(&version))
}

/// `GET /v2/models/{name}/config`.
pub(crate) async fn model_config(
    Shared(state): Shared<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    config(&state, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/config`.
pub(crate) async fn version_config(
    Shared(state): Shared<Arc<State>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    config(&state, &name, Some(&version))
}

/// `POST /v2/models/{name}/infer`.
pub(crate) async fn infer(
    Shared(state): Shared<Arc<State>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_recorded(state, name, None, headers, body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`.
pub(crate) async fn version_infer(
    Shared(state): Shared<Arc<State>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_recorded(state, name, Some(version), headers, body).await
}

async fn infer_recorded(
    state: Arc<State>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let mut labels = RequestLabels::new();
    match run_infer(&state, &name, version.as_deref(), &headers, body, &mut labels).await {
        Ok(response) => inference::record(&state, "infer", &labels, started, response, None),
        Err(e) => {
            let response = e.clone().into_response();
            inference::record(&state, "infer", &labels, started, response, Some(&e))
        }
    }
}

async fn run_infer(
    state: &Arc<State>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    labels: &mut RequestLabels,
) -> Result<Response, ApiError> {
    let route = state
        .table()
        .route(name, inference::selection(headers, version))?;
    let served = route.served.clone();
    labels.routed(&served);
    let body = body.map_err(|e| body_error(e, state.config.max_body_bytes))?;
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or(""))
    };
    let info = &served.model.info;
    let infer::Prepared {
        request,
        inputs,
        requested,
    } = infer::prepare(
        info,
        header(header::CONTENT_ENCODING.as_str()),
        header(kiln_edge::binary::HEADER_LENGTH),
        &body,
    )?;
    let (outputs, cache) =
        inference::predict(state, &route, inputs, &requested, "infer", Protocol::Oip).await?;
    labels.cache = cache;
    let encoded = infer::response(
        &served.name,
        &served.version_label,
        &request,
        &requested,
        &outputs,
    )?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(encoded.content_type),
        )],
        encoded.body,
    )
        .into_response();
    if let Some(len) = encoded.header_length {
        response.headers_mut().insert(
            header::HeaderName::from_static(kiln_edge::binary::HEADER_LENGTH),
            HeaderValue::from(len),
        );
    }
    Ok(response)
}
