//! Prometheus metrics of the server, in their own registry, rendered as text.

use crate::prediction_cache::PredictionCache;
use crate::table::Table;
use kiln_node_api::{Histogram, ShadowStats, VersionStats};
use prometheus::core::Collector;
use prometheus::proto::Metric;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::BTreeMap;

/// Model label of requests for a model that is not served: unknown names must not grow
/// the label sets without bound.
pub const UNKNOWN_MODEL: &str = "_unknown";

/// Latency buckets of `kiln_request_duration_seconds`, in seconds: 50 µs (a cache hit) to
/// 5 s (past any sane deadline). A latency SLO's threshold must be one of them.
pub const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    inference_errors: IntCounterVec,
    cache_lookups: IntCounterVec,
    cache_up: IntGauge,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    instances_idle: IntGaugeVec,
    models_loaded: IntGauge,
    generation: IntGauge,
    /// Connections open (`--max-connections` bounds it), set when the metrics are read.
    pub(crate) connections_open: IntGauge,
    reloads: IntCounterVec,
    load_failures: IntCounterVec,
    shadow: IntCounterVec,
    /// Requests refused with 429 by `--rate-limit`.
    pub(crate) rate_limited: IntCounter,
    /// Rows the drift profiler shed (its queue was full), read from it at each scrape.
    drift_rows_shed: IntCounter,
    drift_profile_bytes: IntGauge,
    client_retries: IntCounterVec,
    client_breaker: IntGaugeVec,
    overloaded: IntCounterVec,
    fallbacks: IntCounterVec,
    bulkhead: IntGaugeVec,
    body_bytes_in_flight: IntGauge,
    /// `kiln_feature_drift_score`, `kiln_dataset_drift` of this server's traffic.
    drift: kiln_monitor::gauges::DriftGauges,
}

/// Results of a shadow request, the `result` label of `kiln_shadow_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowResult {
    /// Same outputs (floats within 1e-5 relative).
    Agree,
    /// Different outputs.
    Disagree,
    /// The shadow call failed.
    Error,
    /// Not run: too many shadow calls in flight.
    Dropped,
}

impl ShadowResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowResult::Agree => "agree",
            ShadowResult::Disagree => "disagree",
            ShadowResult::Error => "error",
            ShadowResult::Dropped => "dropped",
        }
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> anyhow::Result<T> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> anyhow::Result<Metrics> {
        let r = Registry::new();
        let requests = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_requests_total",
                    "Inference requests answered, by model, served version, endpoint (seed, infer) and HTTP status code",
                ),
                &["model", "version", "endpoint", "code"],
            ),
        )?;
        let duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "kiln_request_duration_seconds",
                    "Time from receiving an inference request to its response, in seconds",
                )
                .buckets(BUCKETS.to_vec()),
                &["model", "version", "endpoint"],
            ),
        )?;
        let inference_errors = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_inference_errors_total",
                    "Inference requests that failed in the model or the host, by error kind (timeout, memory_limit, trap, model_error, host_error, invalid_input...)",
                ),
                &["model", "version", "endpoint", "kind"],
            ),
        )?;
        let cache_lookups = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_prediction_cache_total",
                    "Prediction cache lookups by result (hit, miss, unavailable = served uncached)",
                ),
                &["result"],
            ),
        )?;
        let cache_up = register(
            &r,
            IntGauge::new(
                "kiln_prediction_cache_up",
                "1 when the prediction cache backend is reachable (or in-process), 0 when it is down or disabled",
            ),
        )?;
        let cache_entries = register(
            &r,
            IntGauge::new(
                "kiln_prediction_cache_entries",
                "Entries in the prediction cache, as the backend reports them",
            ),
        )?;
        let cache_bytes = register(
            &r,
            IntGauge::new(
                "kiln_prediction_cache_bytes",
                "Bytes held by the prediction cache, as the backend reports them",
            ),
        )?;
        let instances_idle = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_model_instances_idle",
                    "Model instances idle in the pool, by served model and version",
                ),
                &["model", "version"],
            ),
        )?;
        let models_loaded = register(
            &r,
            IntGauge::new(
                "kiln_models_loaded",
                "Distinct model components (by digest) loaded and routable",
            ),
        )?;
        let generation = register(
            &r,
            IntGauge::new(
                "kiln_routing_generation",
                "Catalog generation of the routing table being served",
            ),
        )?;
        let connections_open = register(
            &r,
            IntGauge::new(
                "kiln_http_connections_open",
                "HTTP connections open now, TLS handshakes included (at --max-connections the server stops accepting)",
            ),
        )?;
        let reloads = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_reloads_total",
                    "Routing table reloads by result (error = at least one version failed to load or the catalog could not be read)",
                ),
                &["result"],
            ),
        )?;
        let load_failures = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_model_load_failures_total",
                    "Model versions that failed to load (the previous routing keeps serving)",
                ),
                &["model"],
            ),
        )?;
        let shadow = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_shadow_requests_total",
                    "Copies of requests run on a model's shadow version, by result (agree, disagree, error, dropped = too many in flight); never counted in kiln_requests_total",
                ),
                &["model", "version", "result"],
            ),
        )?;
        let rate_limited = register(
            &r,
            IntCounter::new(
                "kiln_rate_limited_total",
                "Requests refused with 429 by the per-client rate limit (--rate-limit); never counted in kiln_requests_total",
            ),
        )?;
        let drift_rows_shed = register(
            &r,
            IntCounter::new(
                "kiln_drift_rows_shed_total",
                "Request rows not profiled for drift because the profiler (a lowest-priority thread) was behind: CPU saturation; the profiles stay a sample of the traffic",
            ),
        )?;
        let drift_profile_bytes = register(
            &r,
            IntGauge::new(
                "kiln_drift_profile_bytes",
                "Heap bytes the drift profiles' windows hold (values, sketches' retained items, value counts, names; a lower bound: allocator overhead not counted); bounded per version, it grows over the first hour of a version's traffic",
            ),
        )?;
        let client_retries = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_client_retries_total",
                    "Retried attempts of this server's own calls, by target (sync: the sync service a managed node heartbeats to) and kind",
                ),
                &["target", "kind"],
            ),
        )?;
        let client_breaker = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_client_breaker_state",
                    "Circuit breaker of each target this server calls (sync): 0 closed, 1 half-open, 2 open",
                ),
                &["target", "kind"],
            ),
        )?;
        let overloaded = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_overloaded_total",
                    "Inference requests shed with 503 overloaded (also in kiln_requests_total with code 503), by reason: bulkhead (the model's calls and queue are full), body_bytes (the node's request bytes in flight), instances (the instance pool is exhausted)",
                ),
                &["model", "version", "reason"],
            ),
        )?;
        let fallbacks = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "kiln_fallback_total",
                    "Requests whose version failed (version, kind) and were answered by the model's fallback (previous = another served version, fixed = the configured response)",
                ),
                &["model", "version", "fallback", "kind"],
            ),
        )?;
        let bulkhead = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_bulkhead_calls",
                    "Each model's bulkhead: calls running and queued now, and its limits (max_concurrent, max_queue)",
                ),
                &["model", "state"],
            ),
        )?;
        let body_bytes_in_flight = register(
            &r,
            IntGauge::new(
                "kiln_request_body_bytes_in_flight",
                "Request-body bytes reserved by requests being read, parsed or run (--max-body-bytes-in-flight bounds it)",
            ),
        )?;
        let build_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new("kiln_build_info", "Kiln build information (always 1)"),
                &["version"],
            ),
        )?;
        build_info.with_label_values(&[kiln_types::KILN_VERSION]).set(1);
        for result in ["hit", "miss", "unavailable"] {
            cache_lookups.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        let drift = kiln_monitor::gauges::DriftGauges::register(&r, "this server's")?;
        Ok(Metrics {
            drift,
            registry: r,
            requests,
            duration,
            inference_errors,
            cache_lookups,
            cache_up,
            cache_entries,
            cache_bytes,
            instances_idle,
            models_loaded,
            generation,
            connections_open,
            reloads,
            load_failures,
            shadow,
            rate_limited,
            drift_rows_shed,
            drift_profile_bytes,
            client_retries,
            client_breaker,
            overloaded,
            fallbacks,
            bulkhead,
            body_bytes_in_flight,
        })
    }

    /// Sets the drift gauges of `model`/`version` from a report (a column whose method
    /// changed keeps no stale series: the version's series are replaced).
    pub fn drift(&self, model: &str, version: &str, report: &kiln_monitor::drift::DriftReport) {
        self.drift.set(model, version, report);
    }

    /// Counts a retried attempt of a call to `target` (a peer this server calls).
    pub fn client_retry(&self, target: &str, kind: &str) {
        self.client_retries.with_label_values(&[target, kind]).inc();
    }

    /// Records the breaker state of `target`: 0 closed, 1 half-open, 2 open.
    pub fn client_breaker(&self, target: &str, kind: &str, state: i64) {
        self.client_retries.with_label_values(&[target, kind]);
        self.client_breaker.with_label_values(&[target, kind]).set(state);
    }

    /// Counts a request shed with 503 `overloaded`, and why.
    pub fn overloaded(&self, model: &str, version: &str, reason: &str) {
        self.overloaded.with_label_values(&[model, version, reason]).inc();
    }

    /// Counts a failed call of `version` answered by the model's fallback.
    pub fn fallback(&self, model: &str, version: &str, fallback: &str, kind: &str) {
        self.fallbacks
            .with_label_values(&[model, version, fallback, kind])
            .inc();
    }

    /// Refreshes the load gauges: every bulkhead, and the body bytes in flight.
    /// Sets `kiln_drift_profile_bytes`.
    pub(crate) fn set_drift_profile_bytes(&self, bytes: usize) {
        self.drift_profile_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Brings `kiln_drift_rows_shed_total` up to the profiler's count (which only grows).
    pub(crate) fn set_drift_shed(&self, rows: u64) {
        self.drift_rows_shed
            .inc_by(rows.saturating_sub(self.drift_rows_shed.get()));
    }

    pub fn set_load(&self, bulkheads: &[(String, usize, usize, crate::bulkhead::Limits)], body_bytes: usize) {
        self.bulkhead.reset();
        for (model, running, queued, limits) in bulkheads {
            for (state, value) in [
                ("running", *running),
                ("queued", *queued),
                ("max_concurrent", limits.max_concurrent),
                ("max_queue", limits.max_queue),
            ] {
                self.bulkhead
                    .with_label_values(&[model.as_str(), state])
                    .set(value as i64);
            }
        }
        self.body_bytes_in_flight.set(body_bytes as i64);
    }

    /// Counts a shadow request.
    pub fn shadow(&self, model: &str, version: &str, result: ShadowResult) {
        self.shadow
            .with_label_values(&[model, version, result.as_str()])
            .inc();
    }

    /// Request counters per (model, numeric version), summed over endpoints, from
    /// `kiln_requests_total` and `kiln_request_duration_seconds`.
    pub fn version_stats(&self) -> Vec<VersionStats> {
        let mut by_key: BTreeMap<(String, u64), VersionStats> = BTreeMap::new();
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let Some(key) = version_key(m) else { continue };
                let count = m.get_counter().get_value() as u64;
                let s = by_key.entry(key.clone()).or_insert_with(|| empty_stats(&key));
                s.requests += count;
                match label(m, "code").and_then(|c| c.parse::<u16>().ok()) {
                    Some(500..=599) => s.server_errors += count,
                    Some(400..=499) => s.client_errors += count,
                    _ => {}
                }
            }
        }
        // Shed requests are answered 503 but are capacity, not the version's fault.
        for family in self.overloaded.collect() {
            for m in family.get_metric() {
                let Some(key) = version_key(m) else { continue };
                let count = m.get_counter().get_value() as u64;
                let s = by_key.entry(key.clone()).or_insert_with(|| empty_stats(&key));
                s.overloaded += count;
                s.server_errors = s.server_errors.saturating_sub(count);
            }
        }
        // A call answered by the fallback still failed: the failing version's error (its
        // 200 is counted under the version that answered, if another version did).
        for family in self.fallbacks.collect() {
            for m in family.get_metric() {
                let Some(key) = version_key(m) else { continue };
                let count = m.get_counter().get_value() as u64;
                let s = by_key.entry(key.clone()).or_insert_with(|| empty_stats(&key));
                if label(m, "fallback") == Some("previous") {
                    s.requests += count;
                }
                s.server_errors += count;
            }
        }
        for family in self.duration.collect() {
            for m in family.get_metric() {
                let Some(key) = version_key(m) else { continue };
                let h = m.get_histogram();
                let histogram = Histogram {
                    bounds: h.get_bucket().iter().map(|b| b.upper_bound()).collect(),
                    counts: h.get_bucket().iter().map(|b| b.cumulative_count()).collect(),
                    count: h.get_sample_count(),
                    sum: h.get_sample_sum(),
                };
                by_key
                    .entry(key.clone())
                    .or_insert_with(|| empty_stats(&key))
                    .latency
                    .add(&histogram);
            }
        }
        by_key.into_values().collect()
    }

    /// Shadow counters per (model, shadow version), from `kiln_shadow_requests_total`.
    pub fn shadow_stats(&self) -> Vec<ShadowStats> {
        let mut by_key: BTreeMap<(String, u64), ShadowStats> = BTreeMap::new();
        for family in self.shadow.collect() {
            for m in family.get_metric() {
                let Some((model, version)) = version_key(m) else {
                    continue;
                };
                let count = m.get_counter().get_value() as u64;
                let s = by_key
                    .entry((model.clone(), version))
                    .or_insert_with(|| ShadowStats {
                        model,
                        version,
                        ..ShadowStats::default()
                    });
                match label(m, "result") {
                    Some("agree") => s.compared += count,
                    Some("disagree") => {
                        s.compared += count;
                        s.disagreements += count;
                    }
                    Some("error") => s.errors += count,
                    Some("dropped") => s.dropped += count,
                    _ => {}
                }
            }
        }
        by_key.into_values().collect()
    }

    /// Counts an answered inference request.
    pub fn request(&self, model: &str, version: &str, endpoint: &str, code: u16, seconds: f64) {
        let code = code.to_string();
        self.requests
            .with_label_values(&[model, version, endpoint, code.as_str()])
            .inc();
        self.duration
            .with_label_values(&[model, version, endpoint])
            .observe(seconds);
    }

    /// Counts a failed inference.
    pub fn inference_error(&self, model: &str, version: &str, endpoint: &str, kind: &str) {
        self.inference_errors
            .with_label_values(&[model, version, endpoint, kind])
            .inc();
    }

    /// Counts a cache lookup (`hit`, `miss`, `unavailable`).
    pub fn cache_lookup(&self, result: &str) {
        self.cache_lookups.with_label_values(&[result]).inc();
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Counts a version that failed to load.
    pub fn load_failure(&self, model: &str) {
        self.load_failures.with_label_values(&[model]).inc();
    }

    /// Renders the text exposition, refreshing the gauges read from the table and cache.
    pub fn render(&self, table: &Table, cache: Option<&PredictionCache>) -> anyhow::Result<String> {
        self.instances_idle.reset();
        for routes in table.models.values() {
            for served in routes.versions.values() {
                self.instances_idle
                    .with_label_values(&[served.name.as_str(), served.version_label.as_str()])
                    .set(served.model.idle_instances() as i64);
            }
        }
        self.models_loaded.set(table.loaded().len() as i64);
        self.generation.set(table.generation as i64);
        match cache.filter(|c| c.backend() != "off") {
            Some(cache) => {
                let stats = cache.stats();
                self.cache_up.set(stats.healthy as i64);
                self.cache_entries.set(stats.entries as i64);
                self.cache_bytes.set(stats.bytes as i64);
            }
            None => {
                self.cache_up.set(0);
                self.cache_entries.set(0);
                self.cache_bytes.set(0);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.get_label().iter().find(|l| l.name() == name).map(|l| l.value())
}

/// (model, version) of a sample whose version is a number (not an unknown model's).
fn version_key(m: &Metric) -> Option<(String, u64)> {
    let model = label(m, "model")?;
    let version = label(m, "version")?.parse().ok()?;
    Some((model.to_string(), version))
}

/// Zero counters of a version, with the latency buckets' bounds.
pub(crate) fn empty_stats((model, version): &(String, u64)) -> VersionStats {
    VersionStats {
        model: model.clone(),
        version: *version,
        latency: Histogram {
            bounds: BUCKETS.to_vec(),
            counts: vec![0; BUCKETS.len()],
            count: 0,
            sum: 0.0,
        },
        ..VersionStats::default()
    }
}
