//! Running a served model for a request: the prediction cache first, then the sandboxed
//! call on a blocking thread, with errors mapped and counted, and a copy of the request
//! handed to the model's shadow version when it has one.

use super::State;
use super::error::{ApiError, Protocol};
use super::shadow;
use super::table::{Route, Selection, ServedModel};
use crate::prediction_cache::{CacheKey, Lookup};
use axum::http::{HeaderMap, HeaderValue};
use kiln_engine::Tensor;
use kiln_node_api::{FORCE_VERSION_HEADER, ROUTING_KEY_HEADER, SERVED_VERSION_HEADER};
use std::sync::Arc;

/// Models whose recent calls take at most this long run on the async worker itself.
const INLINE_LATENCY: std::time::Duration = std::time::Duration::from_micros(250);

/// How the prediction cache took part in a request (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache configured.
    Off,
    /// Answered from the cache.
    Hit,
    /// Computed and stored.
    Miss,
    /// The cache was down; computed without it.
    Unavailable,
}

impl CacheUse {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Off => "off",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Unavailable => "unavailable",
        }
    }
}

/// A header's value when present, valid text and not blank.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The version selection of a request: its headers plus its own selector, if any.
pub(crate) fn selection<'a>(headers: &'a HeaderMap, selector: Option<&'a str>) -> Selection<'a> {
    Selection {
        forced: header_text(headers, FORCE_VERSION_HEADER),
        selector,
        routing_key: header_text(headers, ROUTING_KEY_HEADER),
    }
}

/// Outputs of the routed version for `inputs`, restricted to `requested` outputs when
/// not empty (from the cache when it has them). A cache failure never fails the request.
/// After a success, the route's shadow (if any) gets a copy of the inputs.
pub(crate) async fn predict(
    state: &Arc<State>,
    route: &Route,
    inputs: Vec<Tensor>,
    requested: &[String],
    endpoint: &'static str,
    protocol: Protocol,
) -> Result<(Vec<Tensor>, CacheUse), ApiError> {
    let served = &route.served;
    // The copy for the shadow is the only per-request clone, and only with a shadow.
    let shadow_inputs = route.shadow.as_ref().map(|_| inputs.clone());
    let mut cache_use = CacheUse::Off;
    let mut store = None;
    if let Some(cache) = state.config.cache.as_ref().filter(|c| c.backend() != "off") {
        let key = CacheKey::new(&served.digest, &inputs, requested);
        match cache.get(&key).await {
            Lookup::Hit(outputs) => {
                state.metrics.cache_lookup("hit");
                // A cache hit still feeds the shadow: caching must not hide its answers.
                if let (Some(shadow), Some(copy)) = (&route.shadow, shadow_inputs) {
                    shadow::spawn(state, shadow.clone(), copy, outputs.clone(), requested);
                }
                return Ok((outputs, CacheUse::Hit));
            }
            Lookup::Miss => {
                state.metrics.cache_lookup("miss");
                cache_use = CacheUse::Miss;
                store = Some((cache.clone(), key));
            }
            Lookup::Unavailable => {
                state.metrics.cache_lookup("unavailable");
                cache_use = CacheUse::Unavailable;
            }
        }
    }
    let model = served.model.clone();
    let inline = !model.needs_own_thread() && model.typical_latency().is_some_and(|t| t <= INLINE_LATENCY);
    let result = if inline {
        // A fast model runs right here on the async worker: handing a 5–20 µs call to
        // the blocking pool costs more than the call (two thread wake-ups, ~40 % of the
        // server's CPU in a profile; measured with wrk, house-price forest, 32
        // connections, 2 shared cores: 34k req/s on the pool, 45k inline).
        let retry = inputs.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.predict(inputs))) {
            Ok(result) => result,
            Err(_) => {
                // The model used WASI I/O (stderr, say), which cannot run on an async
                // worker; its instance was dropped while unwinding. From now on it runs on
                // the blocking pool, starting with this request.
                tracing::warn!(model = %served.name, version = served.version, "model needs its own thread; not running it inline any more");
                model.set_needs_own_thread();
                on_blocking_pool(model, retry).await?
            }
        }
    } else {
        // A slow, not yet measured or I/O-using model runs on the blocking pool, so it
        // cannot stall other connections for up to its deadline.
        on_blocking_pool(model, inputs).await?
    };
    match result {
        Ok(outputs) => {
            if let Some((cache, key)) = store {
                let kept: Vec<Tensor> = if requested.is_empty() {
                    outputs.clone()
                } else {
                    outputs
                        .iter()
                        .filter(|o| requested.contains(&o.name))
                        .cloned()
                        .collect()
                };
                // Stored after the response is on its way; `put` logs its own failures.
                tokio::spawn(async move { cache.put(&key, &kept).await });
            }
            if let (Some(shadow), Some(copy)) = (&route.shadow, shadow_inputs) {
                shadow::spawn(state, shadow.clone(), copy, outputs.clone(), requested);
            }
            Ok((outputs, cache_use))
        }
        Err(e) => {
            state
                .metrics
                .inference_error(&served.name, &served.version_label, endpoint, e.kind());
            if e.is_client_error() {
                tracing::debug!(
                    model = %served.name,
                    version = served.version,
                    digest = %served.digest,
                    kind = e.kind(),
                    error = %e,
                    "request refused by the model"
                );
            } else {
                tracing::warn!(
                    model = %served.name,
                    version = served.version,
                    digest = %served.digest,
                    kind = e.kind(),
                    error = %e,
                    "inference failed"
                );
            }
            Err(ApiError::from_host(protocol, &e))
        }
    }
}

/// Runs one call on tokio's blocking pool.
async fn on_blocking_pool(
    model: Arc<crate::host::LoadedModel>,
    inputs: Vec<Tensor>,
) -> Result<Result<Vec<Tensor>, crate::error::HostError>, ApiError> {
    tokio::task::spawn_blocking(move || model.predict(inputs))
        .await
        .map_err(|e| ApiError::internal(format!("the prediction task failed: {e}")))
}

/// Metric and log labels of one request, filled in as the request is resolved.
pub(crate) struct RequestLabels {
    /// Served model name, or [`super::metrics::UNKNOWN_MODEL`].
    pub model: String,
    /// Served version number, or empty.
    pub version: String,
    /// Component digest, or empty.
    pub digest: String,
    /// How the cache took part.
    pub cache: CacheUse,
}

impl RequestLabels {
    /// Labels of a request not yet routed.
    pub fn new() -> RequestLabels {
        RequestLabels {
            model: super::metrics::UNKNOWN_MODEL.to_string(),
            version: String::new(),
            digest: String::new(),
            cache: CacheUse::Off,
        }
    }

    /// Records a route.
    pub fn routed(&mut self, served: &ServedModel) {
        self.model = served.name.clone();
        self.version = served.version_label.clone();
        self.digest = served.digest.clone();
    }
}

/// Counts and logs an answered inference request.
pub(crate) fn record(
    state: &State,
    endpoint: &'static str,
    labels: &RequestLabels,
    started: std::time::Instant,
    response: axum::response::Response,
    error: Option<&ApiError>,
) -> axum::response::Response {
    let mut response = response;
    // Once a version was chosen, the client learns which one, success or not.
    if !labels.version.is_empty()
        && let Ok(value) = HeaderValue::from_str(&labels.version)
    {
        response.headers_mut().insert(SERVED_VERSION_HEADER, value);
    }
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state
        .metrics
        .request(&labels.model, &labels.version, endpoint, status, seconds);
    match error {
        Some(e) if e.status.is_server_error() => tracing::warn!(
            model = %labels.model,
            version = %labels.version,
            digest = %labels.digest,
            endpoint,
            status,
            kind = e.kind.unwrap_or(""),
            error = %e.message,
            "request failed"
        ),
        Some(e) => tracing::debug!(
            model = %labels.model,
            version = %labels.version,
            endpoint,
            status,
            error = %e.message,
            "request refused"
        ),
        None => tracing::debug!(
            model = %labels.model,
            version = %labels.version,
            digest = %labels.digest,
            endpoint,
            status,
            cache = labels.cache.as_str(),
            seconds,
            "request served"
        ),
    }
    response
}
