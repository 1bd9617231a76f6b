//! The prediction cache in the request path: the second identical request is a hit with
//! the same (onnxruntime-matching) answer, and /metrics shows it.

use crate::metrics::sample;
use crate::oip_api::assert_outputs_match;
use crate::*;
use kiln_serve::ServeConfig;
use kiln_serve::prediction_cache::{CacheConfig, PredictionCache};
use serde_json::json;

fn metrics_text(server: &TestServer) -> String {
    String::from_utf8(get(&server.url("/metrics")).body).unwrap()
}

#[test]
fn cache_memory_serves_a_repeated_request_from_the_cache() {
    let cache = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(PredictionCache::new(CacheConfig::Memory {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
        }))
        .unwrap();
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![version(
        &catalog,
        "iris",
        "iris_logreg",
        1,
        "Production",
        &[],
    )]);
    let server = TestServer::start_with(
        catalog,
        ServeConfig {
            cache: Some(Arc::new(cache)),
            ..ServeConfig::default()
        },
    );
    let request = example_json("iris_logreg.request.json");
    let url = server.url("/v2/models/iris/infer");
    let first = post_json(&url, &request);
    assert_eq!(first.status, 200);
    assert_outputs_match("iris_logreg", &first.json()["outputs"], None);
    // The store happens after the first response went out: ask until it is there.
    let mut hits = 0.0;
    let mut sent = 1.0;
    for _ in 0..50 {
        let again = post_json(&url, &request);
        sent += 1.0;
        assert_eq!(again.status, 200);
        assert_outputs_match("iris_logreg", &again.json()["outputs"], None);
        hits = sample(
            &metrics_text(&server),
            "kiln_prediction_cache_total",
            &[("result", "hit")],
        )
        .unwrap_or(0.0);
        if hits >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(hits >= 1.0, "no cache hit after repeating the request");

    let text = metrics_text(&server);
    // Every request was a hit or a miss: the first missed, and so did any repeat that came
    // before its answer was stored (on a loaded machine, more than one).
    let misses = sample(&text, "kiln_prediction_cache_total", &[("result", "miss")]).unwrap_or(0.0);
    assert!(misses >= 1.0, "{misses}");
    assert_eq!(misses + hits, sent, "{misses} misses + {hits} hits");
    assert_eq!(sample(&text, "kiln_prediction_cache_up", &[]), Some(1.0));
    assert_eq!(sample(&text, "kiln_prediction_cache_entries", &[]), Some(1.0));
    assert!(sample(&text, "kiln_prediction_cache_bytes", &[]).unwrap_or(0.0) > 0.0);
    // Hits are still requests.
    let requests = sample(
        &text,
        "kiln_requests_total",
        &[("model", "iris"), ("endpoint", "infer"), ("code", "200")],
    )
    .unwrap_or(0.0);
    assert!(requests >= 2.0, "{requests}");

    // A subset of outputs is its own entry, and correct.
    let mut subset = request.clone();
    subset["outputs"] = json!([{ "name": "label" }]);
    for _ in 0..2 {
        let r = post_json(&url, &subset);
        assert_eq!(r.status, 200);
        assert_outputs_match("iris_logreg", &r.json()["outputs"], Some(&["label"]));
    }
}
