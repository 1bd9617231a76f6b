//! Running a served model for a request: the prediction cache first, then a slot in the
//! model's bulkhead, then the sandboxed call (inline when fast and small, else on the
//! blocking pool), with errors mapped and counted, the model's fallback when it failed,
//! and a copy of the request handed to the model's shadow version when it has one.

use crate::bulkhead::Slot;
use crate::fallback::{Fallback, fixed_outputs};
use crate::prediction_cache::{CacheKey, Lookup};
use crate::shadow;
use crate::state::State;
use crate::table::{Route, ServedModel, Table};
use kiln_api::{Endpoint, Failure, FailureKind};
use kiln_host::{HostError, LoadedModel};
use kiln_types::Tensor;
use std::sync::Arc;

/// Models whose recent calls take at most this much CPU time, on inputs of at most
/// [`INLINE_BYTES`], run on the async worker itself.
const INLINE_LATENCY: std::time::Duration = std::time::Duration::from_micros(250);
/// Larger inputs always run on the blocking pool: a batch can take many times a
/// single row's time, and must not hold an async worker (health, metrics and admin
/// routes share them).
const INLINE_BYTES: usize = 64 << 10;
/// How long an inline call may hold the async worker before it is stopped and run
/// again on the blocking pool (epoch ticks are 5 ms, so it stops within 10–15 ms).
const INLINE_DEADLINE: std::time::Duration = std::time::Duration::from_millis(10);
/// Inputs hashed for the prediction cache on the blocking pool above this size.
const HASH_INLINE_BYTES: usize = 1 << 20;

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

/// What happened to a request besides its outputs.
pub(crate) struct Outcome {
    /// The outputs, or why there are none.
    pub(crate) result: Result<Vec<Tensor>, Failure>,
    /// How the cache took part.
    pub(crate) cache: CacheUse,
    /// Why it was shed (`bulkhead`, `instances`), if it was.
    pub(crate) shed: Option<&'static str>,
    /// When the model's fallback answered: the `x-kiln-fallback` value, and the version
    /// that answered if it was another one.
    pub(crate) fallback: Option<(String, Option<Arc<ServedModel>>)>,
}

/// Outputs of the routed version for `inputs`, restricted to `requested` outputs when
/// not empty (from the cache when it has them), and how the cache took part. A cache
/// failure never fails the request. The call waits for a slot in the model's bulkhead
/// (or is shed); a failed call is answered by the model's fallback if it has one. After
/// a success, the route's shadow (if any) gets a copy of the inputs.
pub(crate) async fn predict(
    state: &Arc<State>,
    table: &Table,
    route: &Route,
    inputs: Vec<Tensor>,
    requested: &[String],
    endpoint: Endpoint,
) -> Outcome {
    let endpoint_label = endpoint.as_str();
    let served = &route.served;
    let outcome = |result, cache| Outcome {
        result,
        cache,
        shed: None,
        fallback: None,
    };
    // Drift: what this version sees (and, below, what it answers).
    let profile = state
        .config
        .drift_profiles
        .then(|| state.profiles.version(&served.name, served.version));
    if let Some(p) = &profile {
        state.profiler.observe(p, &inputs, true);
    }
    // Besides the profiler's copy of the profiled columns (at most 64 a row), the copy for
    // the shadow is the only per-request clone, and only with a shadow.
    let shadow_inputs = route.shadow.as_ref().map(|_| inputs.clone());
    let mut cache_use = CacheUse::Off;
    let mut store = None;
    let mut inputs = inputs;
    if let Some(cache) = state.config.cache.as_ref().filter(|c| c.backend() != "off") {
        let (key, given_back) = cache_key(&served.digest, inputs, requested).await;
        inputs = given_back;
        match cache.get(&key).await {
            Lookup::Hit(outputs) => {
                state.metrics.cache_lookup("hit");
                if let Some(p) = &profile {
                    state.profiler.observe(p, &outputs, false);
                }
                // A cache hit still feeds the shadow: caching must not hide its answers.
                if let (Some(shadow), Some(copy)) = (&route.shadow, shadow_inputs) {
                    shadow::spawn(state, shadow.clone(), copy, outputs.clone(), requested);
                }
                return outcome(Ok(outputs), CacheUse::Hit);
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
    // The model's serving policy (kiln.toml, through the routing table), if any.
    let policy = table
        .models
        .get(&served.name)
        .and_then(|r| r.routing.serving.as_ref());
    // A slot in the model's bulkhead, waiting at most one call's deadline for it.
    let bulkhead = state.bulkhead(&served.name, policy);
    let slot = match bulkhead.enter(&served.name, state.host.config().deadline).await {
        Ok(slot) => slot,
        Err(e) => {
            tracing::debug!(model = %served.name, version = served.version, "request shed: the model's bulkhead is full");
            return Outcome {
                result: Err(Failure::new(FailureKind::Overloaded, e.message)),
                cache: cache_use,
                shed: Some("bulkhead"),
                fallback: None,
            };
        }
    };
    let rows = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1);
    let fallback = state.fallback(&served.name, policy);
    // The inputs are needed again only by a `previous` fallback.
    let retry_inputs = matches!(fallback, Some(Fallback::Previous)).then(|| inputs.clone());
    let result = run(served.model.clone(), inputs, slot).await;
    match result {
        Ok(outputs) => {
            if let Some(p) = &profile {
                state.profiler.observe(p, &outputs, false);
            }
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
            outcome(Ok(outputs), cache_use)
        }
        Err(HostError::Overloaded(message)) => {
            tracing::warn!(model = %served.name, version = served.version, error = %message, "request shed: no instance slot");
            Outcome {
                result: Err(Failure::new(FailureKind::Overloaded, message)),
                cache: cache_use,
                shed: Some("instances"),
                fallback: None,
            }
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
                return outcome(Err(failure(&e)), cache_use);
            }
            tracing::warn!(
                model = %served.name,
                version = served.version,
                digest = %served.digest,
                kind = e.kind(),
                error = %e,
                "inference failed"
            );
            if let Some(fallback) = &fallback
                && let Some((outputs, answered_by)) =
                    fall_back(state, table, route, fallback, retry_inputs, rows).await
            {
                state
                    .metrics
                    .fallback(&served.name, &served.version_label, fallback.as_str(), e.kind());
                let header = format!(
                    "{}; failed-version={}; kind={}",
                    fallback.as_str(),
                    served.version_label,
                    e.kind()
                );
                return Outcome {
                    result: Ok(outputs),
                    cache: cache_use,
                    shed: None,
                    fallback: Some((header, answered_by)),
                };
            }
            outcome(Err(failure(&e)), cache_use)
        }
    }
}

/// Runs one call holding `slot` of its model's bulkhead, which is freed the moment the
/// call ends (on the thread that ran it): on the async worker when the model is fast and the input small (a
/// 5–20 µs call costs less than handing it to the blocking pool: measured with wrk,
/// house-price forest, 32 connections, 2 shared cores, 34k req/s on the pool, 45k
/// inline), else on the blocking pool. Either is safe for models that write to
/// stderr: the host's WASI streams never enter the tokio runtime.
async fn run(model: Arc<LoadedModel>, inputs: Vec<Tensor>, slot: Slot) -> Result<Vec<Tensor>, HostError> {
    let bytes: usize = inputs.iter().map(|t| t.data.len()).sum();
    let inline = bytes <= INLINE_BYTES && model.typical_latency().is_some_and(|t| t <= INLINE_LATENCY);
    if !inline {
        return on_blocking_pool(model, inputs, slot).await;
    }
    // A model that is fast on average may still loop on one input: inline, it gets
    // [`INLINE_DEADLINE`], then the call starts over on the blocking pool with the
    // whole deadline (models are pure functions of their inputs, so running it again
    // is safe), and its latency average sends later calls there too.
    let again = inputs.clone();
    match model.predict_within(inputs, INLINE_DEADLINE) {
        Err(HostError::Timeout(_)) => on_blocking_pool(model, again, slot).await,
        done => done,
    }
}

/// The prediction cache's key of a request: hashed on the blocking pool for large
/// inputs. The inputs come back with it.
async fn cache_key(digest: &str, inputs: Vec<Tensor>, requested: &[String]) -> (CacheKey, Vec<Tensor>) {
    let bytes: usize = inputs.iter().map(|t| t.data.len()).sum();
    if bytes <= HASH_INLINE_BYTES {
        return (CacheKey::new(digest, &inputs, requested), inputs);
    }
    let (digest, requested) = (digest.to_string(), requested.to_vec());
    let hashed = tokio::task::spawn_blocking(move || {
        let key = CacheKey::new(&digest, &inputs, &requested);
        (key, inputs)
    });
    match hashed.await {
        Ok(done) => done,
        // The closure does not panic; if it did, the inputs went with it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The fallback's answer for a failed call, and the other version that gave it (for
/// `previous`); `None` when the fallback cannot answer (no other version, or it failed
/// too), and the original failure stands.
async fn fall_back(
    state: &Arc<State>,
    table: &Table,
    route: &Route,
    fallback: &Fallback,
    inputs: Option<Vec<Tensor>>,
    rows: u64,
) -> Option<(Vec<Tensor>, Option<Arc<ServedModel>>)> {
    let served = &route.served;
    match fallback {
        Fallback::Fixed(outputs) => match fixed_outputs(&served.model.info, outputs, rows) {
            Ok(tensors) => Some((tensors, None)),
            Err(e) => {
                tracing::warn!(model = %served.name, error = %e, "the fixed fallback does not fit the model; answering the failure");
                None
            }
        },
        Fallback::Previous => {
            let routes = table.models.get(&served.name)?;
            // The newest other version older than the failing one, else the newest other.
            let other = routes
                .versions
                .range(..served.version)
                .next_back()
                .or_else(|| routes.versions.range(served.version + 1..).next_back())
                .map(|(_, v)| v.clone())?;
            // The other version's call takes a slot of the model's bulkhead too.
            let policy = routes.routing.serving.as_ref();
            let slot = match state
                .bulkhead(&served.name, policy)
                .enter(&served.name, state.host.config().deadline)
                .await
            {
                Ok(slot) => slot,
                Err(_) => {
                    tracing::warn!(model = %served.name, "no bulkhead slot for the fallback version; answering the failure");
                    return None;
                }
            };
            let result = run(other.model.clone(), inputs?, slot).await;
            match result {
                Ok(outputs) => Some((outputs, Some(other))),
                Err(e) => {
                    tracing::warn!(model = %served.name, version = other.version, kind = e.kind(), error = %e, "the fallback version failed too");
                    None
                }
            }
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
        HostError::Overloaded(_) => FailureKind::Overloaded,
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

/// Runs one call on tokio's blocking pool; the slot is freed there when the call ends.
async fn on_blocking_pool(
    model: Arc<LoadedModel>,
    inputs: Vec<Tensor>,
    slot: Slot,
) -> Result<Vec<Tensor>, HostError> {
    tokio::task::spawn_blocking(move || {
        let result = model.predict(inputs);
        drop(slot);
        result
    })
    .await
    .unwrap_or_else(|e| {
        Err(HostError::Host(anyhow::anyhow!(
            "the prediction task failed: {e}"
        )))
    })
}
