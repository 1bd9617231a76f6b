//! Running a served model for a request: the prediction cache first, then the sandboxed
//! call on a blocking thread, with errors mapped and counted, and a copy of the request
//! handed to the model's shadow version when it has one.

use crate::prediction_cache::{CacheKey, Lookup};
use crate::shadow;
use crate::state::State;
use crate::table::Route;
use kiln_api::{Endpoint, Failure, FailureKind};
use kiln_host::{HostError, LoadedModel};
use kiln_types::Tensor;
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

/// Outputs of the routed version for `inputs`, restricted to `requested` outputs when
/// not empty (from the cache when it has them), and how the cache took part. A cache
/// failure never fails the request. After a success, the route's shadow (if any) gets a
/// copy of the inputs.
pub(crate) async fn predict(
    state: &Arc<State>,
    route: &Route,
    inputs: Vec<Tensor>,
    requested: &[String],
    endpoint: Endpoint,
) -> (Result<Vec<Tensor>, Failure>, CacheUse) {
    let endpoint_label = endpoint.as_str();
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
                return (Ok(outputs), CacheUse::Hit);
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
                on_blocking_pool(model, retry).await
            }
        }
    } else {
        // A slow, not yet measured or I/O-using model runs on the blocking pool, so it
        // cannot stall other connections for up to its deadline.
        on_blocking_pool(model, inputs).await
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
            (Ok(outputs), cache_use)
        }
        Err(e) => {
            state
                .metrics
                .inference_error(&served.name, &served.version_label, endpoint_label, e.kind());
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
            (Err(failure(&e)), cache_use)
        }
    }
}

/// A host error as every Kiln host classifies it (the message is the host's own).
pub(crate) fn failure(e: &HostError) -> Failure {
    let kind = match e {
        HostError::InvalidInput(_) => FailureKind::InvalidInput,
        HostError::Unsupported(_) => FailureKind::Unsupported,
        HostError::TooLarge(_) => FailureKind::TooLarge,
        HostError::Timeout(_) => FailureKind::Timeout,
        HostError::MemoryLimit(_) => FailureKind::MemoryLimit,
        HostError::Trap(_) => FailureKind::Trap,
        HostError::Model(_) => FailureKind::Model,
        HostError::Host(_) => FailureKind::Host,
    };
    let message = match e {
        // The host's own failures can name files and caches: those details go to the log.
        HostError::Host(_) => {
            crate::redact::internal_message("the host failed to run the model", &e.to_string())
        }
        other => other.to_string(),
    };
    Failure::new(kind, message)
}

/// Runs one call on tokio's blocking pool.
async fn on_blocking_pool(model: Arc<LoadedModel>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, HostError> {
    tokio::task::spawn_blocking(move || model.predict(inputs))
        .await
        .unwrap_or_else(|e| {
            Err(HostError::Host(anyhow::anyhow!(
                "the prediction task failed: {e}"
            )))
        })
}
