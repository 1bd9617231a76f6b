//! Prometheus metrics of the server, in their own registry, rendered as text.

use super::table::Table;
use crate::prediction_cache::PredictionCache;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Model label of requests for a model that is not served: unknown names must not grow
/// the label sets without bound.
pub const UNKNOWN_MODEL: &str = "_unknown";

/// Latency buckets, in seconds: 50 µs (a cache hit) to 5 s (past any sane deadline).
const BUCKETS: &[f64] = &[
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
    reloads: IntCounterVec,
    load_failures: IntCounterVec,
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
        let build_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new("kiln_build_info", "Kiln build information (always 1)"),
                &["version"],
            ),
        )?;
        build_info.with_label_values(&[kiln_engine::KILN_VERSION]).set(1);
        for result in ["hit", "miss", "unavailable"] {
            cache_lookups.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        Ok(Metrics {
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
            reloads,
            load_failures,
        })
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
