//! `/metrics`: the labelled series appear after requests, with HELP for each family, and
//! unknown model names collapse into one label value.

use crate::seed_api::standard;
use crate::*;
use serde_json::json;

/// The value of the first sample of `name` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_requests_errors_and_models() {
    let server = standard();
    let row = &request_rows("house_price_forest")[0];
    for _ in 0..3 {
        let r = post_json(
            &server.url("/v1/models/house_price/predict"),
            &json!({ "features": row }),
        );
        assert_eq!(r.status, 200);
    }
    let r = post_json(
        &server.url("/v1/models/house_price/predict"),
        &json!({ "features": [1] }),
    );
    assert_eq!(r.status, 422);
    let request = example_json("iris_logreg.request.json");
    assert_eq!(
        post_json(&server.url("/v2/models/iris/infer"), &request).status,
        200
    );
    for i in 0..5 {
        let r = post_json(&server.url(&format!("/v2/models/random-{i}/infer")), &request);
        assert_eq!(r.status, 404);
    }

    let r = get(&server.url("/metrics"));
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    let text = String::from_utf8(r.body).unwrap();

    let requests = |labels: &[(&str, &str)]| sample(&text, "kiln_requests_total", labels);
    assert_eq!(
        requests(&[
            ("model", "house_price"),
            ("version", "1"),
            ("endpoint", "seed"),
            ("code", "200")
        ]),
        Some(3.0)
    );
    assert_eq!(
        requests(&[
            ("model", "house_price"),
            ("version", "1"),
            ("endpoint", "seed"),
            ("code", "422")
        ]),
        Some(1.0)
    );
    assert_eq!(
        requests(&[
            ("model", "iris"),
            ("version", "1"),
            ("endpoint", "infer"),
            ("code", "200")
        ]),
        Some(1.0)
    );
    assert_eq!(
        requests(&[
            ("model", "_unknown"),
            ("version", ""),
            ("endpoint", "infer"),
            ("code", "404")
        ]),
        Some(5.0),
        "unknown names share one label value"
    );
    assert!(!text.contains("random-"), "no label per unknown model name");
    assert_eq!(
        sample(
            &text,
            "kiln_request_duration_seconds_count",
            &[("model", "house_price"), ("endpoint", "seed")]
        ),
        Some(4.0)
    );
    assert!(text.contains("kiln_request_duration_seconds_bucket{endpoint=\"seed\",model=\"house_price\",version=\"1\",le=\"0.00005\"}")
        || text.contains("le=\"0.00005\""));
    assert_eq!(
        sample(
            &text,
            "kiln_model_instances_idle",
            &[("model", "iris"), ("version", "1")]
        )
        .map(|v| v >= 0.0),
        Some(true)
    );
    assert_eq!(
        sample(&text, "kiln_models_loaded", &[]),
        Some(3.0),
        "the forest's 3 versions share one component"
    );
    assert_eq!(sample(&text, "kiln_routing_generation", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "kiln_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "kiln_prediction_cache_up", &[]),
        Some(0.0),
        "no cache configured"
    );
    assert_eq!(
        sample(&text, "kiln_prediction_cache_total", &[("result", "hit")]),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "kiln_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .is_some()
    );
    // The drift profiles of the two models' traffic hold memory, and say how much: at
    // least 9 columns of 4 values (the forest has more; the profiler thread
    // comes by every 20 ms).
    let mut profile_bytes = sample(&text, "kiln_drift_profile_bytes", &[]).unwrap_or(0.0);
    for _ in 0..100 {
        if profile_bytes > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let text = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
        profile_bytes = sample(&text, "kiln_drift_profile_bytes", &[]).unwrap_or(0.0);
    }
    assert!(
        profile_bytes >= 9.0 * 4.0 * 8.0,
        "kiln_drift_profile_bytes {profile_bytes}"
    );
    for family in [
        "kiln_requests_total",
        "kiln_request_duration_seconds",
        "kiln_prediction_cache_total",
        "kiln_prediction_cache_up",
        "kiln_prediction_cache_entries",
        "kiln_prediction_cache_bytes",
        "kiln_model_instances_idle",
        "kiln_models_loaded",
        "kiln_routing_generation",
        "kiln_reloads_total",
        "kiln_build_info",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "HELP for {family}");
    }
}
