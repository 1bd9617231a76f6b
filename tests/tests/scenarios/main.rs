//! Kiln's cross-crate scenarios, one module (file) per scenario, linked into one test
//! binary: each of these links wasmtime, tract and every Kiln crate, so one binary instead
//! of thirty saves about 4 GB of disk and thirty links in CI. Run one scenario with
//! `cargo test -p kiln-tests --test scenarios <file name>::`, e.g. `tls::`.

mod bad_input;
mod client_retries;
mod conformance;
mod drift_serve;
mod edge_browser;
mod edge_cloudflare;
mod edge_parity;
mod edge_spin;
mod fleet_credentials;
mod fuzz_parsers;
mod grafana;
mod hot_reload_under_load;
mod inference_access;
mod kiln_up;
mod local_serving_policy;
mod mlflow_rollout;
mod mlflow_source;
mod monitor_fleet_alerts;
mod onnx_node_tests;
mod readme_fleet_tour;
mod readme_tour;
mod registry_server;
mod rollout_analysis;
mod rollout_canary;
mod rollout_fail_safe;
mod rollout_faults;
mod serve_metrics_promtool;
mod serve_redis_cache;
mod serve_tritonclient;
mod server_limits;
mod serving_rule;
mod sync_breaker;
mod sync_prefetch;
mod tls;
