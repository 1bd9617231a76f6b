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
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State as Shared};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
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
struct ServeEnv {
    ready: bool,
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
}

/// Kiln's HTTP API (the router's fallback).
pub(crate) async fn api(
    Shared(state): Shared<Arc<State>>,
    caller: Option<Extension<Caller>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(e) => return HttpError(body_error(e, state.config.max_body_bytes)).into_response(),
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let request = kiln_api::Request {
        method: method.as_str(),
        path: uri.path(),
        headers: &headers,
        body: &body,
        // Set by `access::authenticate` on every route that may name a version.
        reader: caller.as_ref().and_then(|c| c.reader.as_deref()),
    };
    let env = ServeEnv {
        ready: state.is_ready(),
    };
    let step = kiln_api::begin(&state.table().models, &request, &env);
    let (response, ran) = match step {
        Step::Done(response) => (response, None),
        Step::Run(mut call) => {
            let inputs = std::mem::take(&mut call.inputs);
            let digest = call.route.served.digest.clone();
            let (outputs, cache) =
                inference::predict(&state, &call.route, inputs, &call.requested, call.endpoint).await;
            (call.finish(outputs, &env), Some((digest, cache)))
        }
    };
    record(&state, &response, started, ran.as_ref());
    to_axum(response)
}

/// Counts and logs an answered inference request.
fn record(state: &State, response: &kiln_api::Response, started: Instant, ran: Option<&(String, CacheUse)>) {
    let Some(inference) = &response.inference else {
        return;
    };
    let model = inference.model.as_deref().unwrap_or(UNKNOWN_MODEL);
    let version = inference.version.as_deref().unwrap_or("");
    let endpoint = inference.endpoint.as_str();
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status;
    state.metrics.request(model, version, endpoint, status, seconds);
    let (digest, cache) = ran.map_or(("", CacheUse::Off), |(d, c)| (d.as_str(), *c));
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
