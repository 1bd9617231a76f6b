//! The axum adapter of Kiln's HTTP API: every request the router has no route of its own
//! for goes to `kiln-api` ([`kiln_api::begin`]), whose inference calls run here on the
//! prediction cache and the sandbox ([`crate::inference`]) before `kiln-api` encodes the
//! answer. Statuses, headers and error texts come from `kiln-api`, the same code the Spin
//! component, the Cloudflare Worker and the browser package answer with; this file only
//! moves bytes between axum and it, and counts and logs what it answered.

use crate::access::Caller;
use crate::inference::{self, CacheUse};
use crate::metrics::UNKNOWN_MODEL;
use crate::state::State;
use crate::table::Table;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State as Shared};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kiln_api::{ApiError, Step};
use std::sync::Arc;
use std::time::Instant;

/// An error answer of the server's own routes (metrics, admin, playground), in the
/// API's JSON shape.
#[derive(Debug, Clone)]
pub struct HttpError(pub ApiError);

impl<E: Into<ApiError>> From<E> for HttpError {
    fn from(e: E) -> HttpError {
        HttpError(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut error = self.0;
        // Internal failures (the node store, the playground's files) name paths: those go
        // to the log, the answer names a reference.
        if error.status == 500 && error.kind == Some("host_error") {
            error.message = crate::redact::internal_message("the server failed", &error.message);
        }
        to_axum(kiln_api::Response::from(error))
    }
}

/// The host as `kiln-api` sees it: the system clock, a CSPRNG, and whether the first load
/// finished.
#[derive(Clone, Copy)]
struct ServeEnv {
    ready: bool,
    max_json_bytes: usize,
}

impl kiln_api::Env for ServeEnv {
    fn now_unix_seconds(&self) -> f64 {
        kiln_types::format::unix_now()
    }

    fn random_u128(&self) -> u128 {
        // uuid's generator is a fast thread-local CSPRNG already in the build.
        uuid::Uuid::new_v4().as_u128()
    }

    fn ready(&self) -> bool {
        self.ready
    }

    fn max_json_bytes(&self) -> usize {
        self.max_json_bytes
    }
}

/// Bodies up to this size are parsed on the async worker; larger ones on the blocking
/// pool, so a big JSON body cannot hold a worker that health checks need.
const PARSE_INLINE_BYTES: usize = 256 << 10;

/// Kiln's HTTP API (the router's fallback).
pub(crate) async fn api(
    Shared(state): Shared<Arc<State>>,
    caller: Option<Extension<Caller>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // The body's bytes are reserved against the node's budget before it is read: what
    // the client declares, or the limit when it does not say.
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return HttpError(ApiError::too_large(limit)).into_response();
    }
    // The routing table this request is served from, start to end.
    let table = state.table();
    // An inference call to a model whose bulkhead is full (every slot running, the queue
    // full) is shed before its body is read and parsed: under overload a 503 must cost
    // far less than a 200, or shedding does not free the server.
    if method == Method::POST
        && let Some(model) = inference_model(uri.path())
        && let Some(routes) = table.models.get(model)
        && state.bulkhead(model, routes.routing.serving.as_ref()).is_full()
    {
        let e = ApiError::overloaded(format!(
            "model `{model}` is at capacity: its calls and queue are full (its bulkhead's limits); retry later"
        ));
        return shed_before_reading(&state, &table, uri.path(), e, "bulkhead", started);
    }
    let _budget = match state.body_budget.reserve(declared.unwrap_or(limit)) {
        Ok(permit) => permit,
        Err(e) => return shed_before_reading(&state, &table, uri.path(), e, "body_bytes", started),
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(e) => return HttpError(read_error(&e, limit)).into_response(),
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let reader = caller.and_then(|c| c.0.reader.clone());
    let env = ServeEnv {
        ready: state.is_ready(),
        max_json_bytes: state.config.max_json_bytes,
    };
    let path = uri.path().to_string();
    let method = method.as_str().to_string();
    let routed_on = table.clone();
    let begin = move || {
        let request = kiln_api::Request {
            method: &method,
            path: &path,
            headers: &headers,
            body: &body,
            // Set by `access::authenticate` on every route that may name a version.
            reader: reader.as_deref(),
        };
        kiln_api::begin(&routed_on.models, &request, &env)
    };
    // A client that does not say its body's size may send a large one.
    let step = if declared.is_some_and(|n| n <= PARSE_INLINE_BYTES) {
        begin()
    } else {
        match tokio::task::spawn_blocking(begin).await {
            Ok(step) => step,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    };
    let (response, ran) = match step {
        Step::Done(response) => (response, None),
        Step::Run(mut call) => {
            let inputs = std::mem::take(&mut call.inputs);
            let digest = call.route.served.digest.clone();
            let outcome = inference::predict(
                &state,
                &table,
                &call.route,
                inputs,
                &call.requested,
                call.endpoint,
            )
            .await;
            let mut fallback_header = None;
            if let Some((header, answered_by)) = outcome.fallback {
                if let Some(other) = answered_by {
                    call.route.served = other;
                }
                fallback_header = Some(header);
            }
            let mut response = call.finish(outcome.result, &env);
            if let Some(value) = fallback_header {
                response
                    .headers
                    .push((crate::fallback::FALLBACK_HEADER.to_string(), value));
            }
            (response, Some((digest, outcome.cache, outcome.shed)))
        }
    };
    record(&state, &response, started, ran.as_ref());
    to_axum(response)
}

/// The model an inference path names (`/v1/models/{m}/predict`,
/// `/v2/models/{m}[/versions/{v}]/infer`), as written in the path.
fn inference_model(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "v1", "models", m, "predict"]
        | ["", "v2", "models", m, "infer"]
        | ["", "v2", "models", m, "versions", _, "infer"] => Some(m),
        _ => None,
    }
}

/// A 503 `overloaded` for a request shed before its body was read (`reason`: the
/// model's bulkhead is full, or the node's body bytes in flight are at their limit),
/// counted under its model when the path names a served one; no version was chosen.
fn shed_before_reading(
    state: &State,
    table: &Table,
    path: &str,
    e: ApiError,
    reason: &'static str,
    started: Instant,
) -> Response {
    let model = inference_model(path)
        .filter(|m| table.models.contains_key(*m))
        .unwrap_or(UNKNOWN_MODEL);
    let endpoint = if path.starts_with("/v1/") { "seed" } else { "infer" };
    state.metrics.overloaded(model, "", reason);
    state
        .metrics
        .request(model, "", endpoint, 503, started.elapsed().as_secs_f64());
    tracing::debug!(model, reason, "request shed before its body was read");
    to_axum(kiln_api::Response::from(e))
}

/// Maps a body-reading failure: over the limit → 413, otherwise 400.
fn read_error(e: &axum::Error, limit: usize) -> ApiError {
    // axum wraps http-body-util's `LengthLimitError`, whose text this is.
    let over = e.to_string().contains("length limit exceeded");
    if over {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(format!("could not read the request body: {e}"))
    }
}

/// Counts and logs an answered inference request.
fn record(
    state: &State,
    response: &kiln_api::Response,
    started: Instant,
    ran: Option<&(String, CacheUse, Option<&'static str>)>,
) {
    let Some(inference) = &response.inference else {
        return;
    };
    let model = inference.model.as_deref().unwrap_or(UNKNOWN_MODEL);
    let version = inference.version.as_deref().unwrap_or("");
    let endpoint = inference.endpoint.as_str();
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status;
    state.metrics.request(model, version, endpoint, status, seconds);
    let (digest, cache) = ran.map_or(("", CacheUse::Off), |(d, c, _)| (d.as_str(), *c));
    if let Some((_, _, Some(reason))) = ran {
        state.metrics.overloaded(model, version, reason);
        return;
    }
    if status < 400 {
        tracing::debug!(
            model,
            version,
            digest,
            endpoint,
            status,
            cache = cache.as_str(),
            seconds,
            "request served"
        );
        return;
    }
    let body = response.json_body().unwrap_or_default();
    let error = body["error"].as_str().unwrap_or_default();
    if status >= 500 {
        let kind = body["kind"].as_str().unwrap_or_default();
        tracing::warn!(
            model,
            version,
            digest,
            endpoint,
            status,
            kind,
            error,
            "request failed"
        );
    } else {
        tracing::debug!(model, version, endpoint, status, error, "request refused");
    }
}

/// A `kiln-api` response as axum's.
fn to_axum(r: kiln_api::Response) -> Response {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &r.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Maps a body-reading failure: over the limit → 413, otherwise 400.
pub(crate) fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(format!("could not read the request body: {e}"))
    }
}

/// Turns any error response that is not already JSON (an extractor's plain-text
/// rejection, say) into `{"error": "..."}`, so clients can always parse errors.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status.canonical_reason().unwrap_or("request failed").to_string(),
    };
    let body = ApiError::new(status.as_u16(), text).body().to_string();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
