//! Shadow traffic: a copy of each request runs on the shadow version, whose answers are
//! compared (agree, disagree, error) and counted, never returned, and never counted as
//! served requests; copies over the in-flight limit are dropped and counted.

use crate::metrics::sample;
use crate::routing::{route, table};
use crate::*;
use kiln_node_api::{NodeState, ShadowStats};
use kiln_serve::prediction_cache::{CacheConfig, PredictionCache};
use serde_json::json;
use std::time::Instant;

/// Three models served by the iris classifier (v1), shadowed by v2: the same classifier
/// recompiled (`same`), a linear SVM over the same four features (`other`), and the
/// house-price forest, which takes ten features (`broken`).
fn shadow_server(config: ServeConfig) -> TestServer {
    let catalog = Arc::new(DirCatalog::new());
    let (iris, _) = catalog.store(&component("iris_logreg"));
    let (same, _) = catalog.store(&component_variant("iris_logreg", "2"));
    let (other, _) = catalog.store(&component("ops_linear_svc"));
    let (broken, _) = catalog.store(&component("house_price_forest"));
    let served = || vec![route(1, &iris, 100, "Production", &[])];
    catalog.set_routing(table(
        0,
        vec![
            ("same", served(), Some(route(2, &same, 0, "Staging", &[]))),
            ("other", served(), Some(route(2, &other, 0, "Staging", &[]))),
            ("broken", served(), Some(route(2, &broken, 0, "Staging", &[]))),
        ],
    ));
    TestServer::start_with(catalog, config)
}

fn shadows(server: &TestServer) -> Vec<ShadowStats> {
    let r = admin("GET", &server.url("/admin/v1/state"), b"");
    assert_eq!(r.status, 200);
    let state: NodeState = serde_json::from_slice(&r.body).unwrap();
    state.shadows
}

/// The shadow counters once `total` copies per model are accounted for.
fn settled(server: &TestServer, total: u64) -> Vec<ShadowStats> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = shadows(server);
        let done = now.iter().all(|s| s.compared + s.errors + s.dropped >= total);
        if done && now.len() == 3 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "shadow counters never settled: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn of<'a>(stats: &'a [ShadowStats], model: &str) -> &'a ShadowStats {
    stats.iter().find(|s| s.model == model).unwrap()
}

#[test]
fn shadow_answers_are_compared_and_counted_and_never_returned() {
    // A cache too: a cache hit still feeds the shadow.
    let cache = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(PredictionCache::new(CacheConfig::Memory {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
        }))
        .unwrap();
    let server = shadow_server(ServeConfig {
        cache: Some(Arc::new(cache)),
        ..admin_config()
    });
    let (_, labels) = reference("iris_logreg", "label");
    let rows = request_rows("iris_logreg");
    let request = example_json("iris_logreg.request.json");
    for model in ["same", "other", "broken"] {
        for (i, row) in rows.iter().enumerate() {
            let r = post_json(
                &server.url(&format!("/v1/models/{model}/predict")),
                &json!({ "features": row }),
            );
            assert_eq!(r.status, 200, "{model}: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.served_version.as_deref(), Some("1"));
            let body = r.json();
            assert_eq!(
                body["model_version"], "1",
                "{model}: the client sees the served version"
            );
            assert_eq!(body["prediction"].as_f64(), Some(labels[i]), "{model} row {i}");
        }
        // The same OIP request twice: the second is a cache hit.
        for _ in 0..2 {
            let r = post_json(&server.url(&format!("/v2/models/{model}/infer")), &request);
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["model_version"], "1");
            crate::oip_api::assert_outputs_match("iris_logreg", &r.json()["outputs"], None);
        }
    }
    let total = rows.len() as u64 + 2;
    let stats = settled(&server, total);
    eprintln!("shadow counters: {stats:?}");
    let same = of(&stats, "same");
    assert_eq!(
        (same.version, same.compared, same.disagreements, same.errors),
        (2, total, 0, 0)
    );
    let other = of(&stats, "other");
    assert_eq!((other.compared, other.errors), (total, 0));
    assert!(other.disagreements > 0, "a different model disagrees: {other:?}");
    let broken = of(&stats, "broken");
    assert_eq!(
        (broken.compared, broken.errors),
        (0, total),
        "ten-feature inputs do not fit"
    );

    let metrics = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
    assert_eq!(
        sample(
            &metrics,
            "kiln_shadow_requests_total",
            &[("model", "same"), ("version", "2"), ("result", "agree")]
        ),
        Some(total as f64)
    );
    assert_eq!(
        sample(
            &metrics,
            "kiln_shadow_requests_total",
            &[("model", "broken"), ("version", "2"), ("result", "error")]
        ),
        Some(total as f64)
    );
    assert!(
        sample(&metrics, "kiln_prediction_cache_total", &[("result", "hit")]).unwrap_or(0.0) >= 3.0,
        "the repeated requests were cache hits"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("kiln_requests_total{") && l.contains("version=\"2\"")),
        "the shadow never counts as served"
    );
}

#[test]
fn shadow_copies_over_the_in_flight_limit_are_dropped_and_counted() {
    let server = shadow_server(ServeConfig {
        max_shadow_in_flight: 0,
        ..admin_config()
    });
    for _ in 0..4 {
        let r = post_json(
            &server.url("/v1/models/same/predict"),
            &json!({ "features": [6.3, 3.4, 5.6, 2.4] }),
        );
        assert_eq!(r.status, 200);
    }
    let stats = shadows(&server);
    let same = of(&stats, "same");
    assert_eq!((same.dropped, same.compared, same.errors), (4, 0, 0));
    assert_eq!(of(&stats, "other").dropped, 0);
}
