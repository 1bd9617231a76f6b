//! Open Inference Protocol v2 endpoints (what Triton's and KServe's clients call):
//! server and model metadata, health, readiness, a Triton-like model config, and infer
//! with the binary tensor extension. `{version}` accepts a number, a stage, an alias or
//! `latest`; without it, infer follows the model's weighted routing and metadata describes
//! the version with the highest weight.

use super::State;
use super::binary;
use super::error::{ApiError, Protocol, body_error};
use super::inference::{self, RequestLabels};
use super::table::ServedModel;
use crate::oip::{InferRequest, ResponseOutput};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as Shared};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kiln_engine::TensorSpec;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// `GET /v2`.
pub(crate) async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "kiln",
        "version": kiln_engine::KILN_VERSION,
        "extensions": ["binary_tensor_data"],
    }))
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

fn spec_json(s: &TensorSpec) -> Value {
    json!({ "name": s.name, "datatype": s.element_type.oip_name(), "shape": s.shape })
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
    let info = &served.model.info;
    Ok(Json(json!({
        "name": served.name,
        "versions": versions,
        "platform": "kiln_wasm",
        "inputs": info.inputs.iter().map(spec_json).collect::<Vec<_>>(),
        "outputs": info.outputs.iter().map(spec_json).collect::<Vec<_>>(),
        "parameters": {
            "digest": served.digest,
            "stage": served.stage,
            "aliases": served.aliases,
        },
    })))
}

fn config(state: &State, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let served = resolve(state, name, version)?;
    let info = &served.model.info;
    // Triton's type names are its OIP names with a `TYPE_` prefix (TYPE_FP32, TYPE_BOOL).
    let tensor = |s: &TensorSpec| {
        json!({
            "name": s.name,
            "data_type": format!("TYPE_{}", s.element_type.oip_name()),
            "dims": s.shape,
        })
    };
    Ok(Json(json!({
        "name": served.name,
        "platform": "kiln_wasm",
        "backend": "kiln",
        "max_batch_size": 0,
        "input": info.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "output": info.outputs.iter().map(tensor).collect::<Vec<_>>(),
        "parameters": { "digest": { "string_value": served.digest } },
    })))
}

fn model_is_ready(state: &State, name: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let served = resolve(state, name, version)?;
    Ok(Json(json!({
        "name": served.name,
        "version": served.version_label,
        "ready": true,
    })))
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
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        return Err(ApiError::bad_request(format!(
            "Content-Encoding {} is not supported; send the body uncompressed",
            String::from_utf8_lossy(encoding.as_bytes())
        )));
    }
    let (json_part, binary_part) = binary::split(headers, body).map_err(ApiError::bad_request)?;
    let request = InferRequest::from_json(&json_part).map_err(|e| ApiError::bad_request(e.0))?;
    let tensors =
        binary::input_tensors(&request, &binary_part).map_err(|m| ApiError::invalid(Protocol::Oip, m))?;
    let info = &served.model.info;
    let inputs = inference::check_inputs(info, tensors).map_err(|m| ApiError::invalid(Protocol::Oip, m))?;
    let requested: Vec<String> = request.outputs.iter().flatten().map(|o| o.name.clone()).collect();
    if let Some(unknown) = requested
        .iter()
        .find(|r| !info.outputs.iter().any(|o| &o.name == *r))
    {
        return Err(ApiError::invalid(
            Protocol::Oip,
            format!(
                "unknown output `{unknown}`; the model's outputs are: {}",
                info.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let (outputs, cache) =
        inference::predict(state, &route, inputs, &requested, "infer", Protocol::Oip).await?;
    labels.cache = cache;
    let mut json_outputs = Vec::new();
    let mut binary_outputs: Vec<&[u8]> = Vec::new();
    for t in outputs
        .iter()
        .filter(|t| requested.is_empty() || requested.contains(&t.name))
    {
        if binary::wants_binary(&request, &t.name) {
            json_outputs.push(binary::binary_output_json(t));
            binary_outputs.push(&t.data);
        } else {
            let out = ResponseOutput::from_tensor(t)
                .map_err(|e| ApiError::internal(format!("encoding output `{}`: {e}", t.name)))?;
            json_outputs.push(
                serde_json::to_value(out)
                    .map_err(|e| ApiError::internal(format!("encoding output `{}`: {e}", t.name)))?,
            );
        }
    }
    let mut body = json!({
        "model_name": served.name,
        "model_version": served.version_label,
        "outputs": json_outputs,
    });
    if let Some(id) = &request.id {
        body["id"] = Value::String(id.clone());
    }
    Ok(binary::response(&body, binary_outputs))
}
