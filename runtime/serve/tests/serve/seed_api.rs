//! The seed API: one row and batches, regressors (confidence null) and classifiers
//! (label and top probability), version selectors, feature-count errors.

use crate::*;
use serde_json::json;

/// A server with `house_price` v1 (Production, champion), v2 (Staging, challenger) and
/// v3 (None, nightly) — all the forest, one shared component — plus `iris` and `gbm`.
pub fn standard() -> TestServer {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![
        version(
            &catalog,
            "house_price",
            "house_price_forest",
            1,
            "Production",
            &["champion"],
        ),
        version(
            &catalog,
            "house_price",
            "house_price_forest",
            2,
            "Staging",
            &["challenger"],
        ),
        version(
            &catalog,
            "house_price",
            "house_price_forest",
            3,
            "None",
            &["nightly"],
        ),
        version(&catalog, "iris", "iris_logreg", 1, "Production", &[]),
        version(&catalog, "gbm", "gbm_classifier", 1, "Production", &[]),
    ]);
    TestServer::start(catalog)
}

fn predict_url(server: &TestServer, model: &str) -> String {
    server.url(&format!("/v1/models/{model}/predict"))
}

#[test]
fn seed_single_rows_of_the_forest_regressor_match_onnxruntime_with_null_confidence() {
    let server = standard();
    let (_, want) = reference("house_price_forest", "variable");
    for (i, row) in request_rows("house_price_forest").iter().enumerate() {
        let r = post_json(&predict_url(&server, "house_price"), &json!({ "features": row }));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.content_type.starts_with("application/json"));
        let body = r.json();
        let got = body["prediction"].as_f64().expect("a number");
        assert!(close(got, want[i]), "row {i}: {got} vs onnxruntime {}", want[i]);
        assert!(
            body["confidence"].is_null(),
            "a regressor has no confidence: {body}"
        );
        assert_eq!(
            body["model_version"], "1",
            "without a selector the Production version takes all the traffic"
        );
        let id = body["request_id"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
        let ts = body["timestamp"].as_str().unwrap();
        let parsed = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
        let took = body["processing_time"].as_f64().unwrap();
        assert!((0.0..5.0).contains(&took), "processing_time {took}");
    }
}

#[test]
fn seed_batch_of_the_forest_regressor_matches_onnxruntime() {
    let server = standard();
    let (_, want) = reference("house_price_forest", "variable");
    let rows = request_rows("house_price_forest");
    let r = post_json(
        &predict_url(&server, "house_price"),
        &json!({ "instances": rows, "request_id": "batch-1" }),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    let got: Vec<f64> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_close("predictions", &got, &want);
    assert_eq!(body["confidences"], json!([null, null, null, null, null, null]));
    assert_eq!(body["request_id"], "batch-1");
    assert!(body.get("prediction").is_none());
}

fn classifier_case(model: &str, example: &str, label: &str, probabilities: &str) {
    let server = standard();
    let (_, labels) = reference(example, label);
    let (shape, probs) = reference(example, probabilities);
    let classes = shape[1] as usize;
    let top: Vec<f64> = probs
        .chunks(classes)
        .map(|row| row.iter().copied().fold(f64::MIN, f64::max))
        .collect();
    let rows = request_rows(example);
    let r = post_json(&predict_url(&server, model), &json!({ "instances": rows }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    let got_labels: Vec<f64> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().expect("an integer class label") as f64)
        .collect();
    assert_eq!(got_labels, labels, "{model}: labels");
    let got_conf: Vec<f64> = body["confidences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_close(&format!("{model}: confidences"), &got_conf, &top);
    assert_eq!(body["model_version"], "1");

    // One row, with a request id that comes back.
    let r = post_json(
        &predict_url(&server, model),
        &json!({ "features": rows[0], "request_id": "abc-123", "model_version": "Production" }),
    );
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["prediction"].as_i64().unwrap() as f64, labels[0]);
    assert!(close(body["confidence"].as_f64().unwrap(), top[0]));
    assert_eq!(body["request_id"], "abc-123");
}

#[test]
fn seed_iris_classifier_predicts_the_label_with_the_top_probability() {
    classifier_case("iris", "iris_logreg", "label", "probabilities");
}

#[test]
fn seed_gbm_classifier_predicts_the_label_with_the_top_probability() {
    classifier_case("gbm", "gbm_classifier", "output_label", "output_probability");
}

#[test]
fn seed_wrong_feature_count_is_422_with_the_counts() {
    let server = standard();
    let r = post_json(
        &predict_url(&server, "house_price"),
        &json!({ "features": [1.0, 2.0, 3.0] }),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json(), json!({ "error": "expected 10 features, got 3" }));

    let r = post_json(
        &predict_url(&server, "house_price"),
        &json!({ "instances": [vec![0.0; 10], vec![1.0, 2.0]] }),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "instance 1: expected 10 features, got 2");

    let r = post_json(
        &predict_url(&server, "iris"),
        &json!({ "features": [1, 2, "x", 4] }),
    );
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("not a number"));

    let r = post_json(&predict_url(&server, "iris"), &json!({ "rows": [1, 2, 3, 4] }));
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("features"));
}

#[test]
fn seed_version_selectors_pick_number_stage_alias_and_latest() {
    let server = standard();
    let row = &request_rows("house_price_forest")[0];
    let cases: &[(serde_json::Value, &str)] = &[
        (json!("1"), "1"),
        (json!(2), "2"),
        (json!("3"), "3"),
        (json!("Production"), "1"),
        (json!("production"), "1"),
        (json!("Staging"), "2"),
        (json!("champion"), "1"),
        (json!("challenger"), "2"),
        (json!("nightly"), "3"),
        (json!("latest"), "3"),
        (serde_json::Value::Null, "1"),
    ];
    for (selector, want) in cases {
        let r = post_json(
            &predict_url(&server, "house_price"),
            &json!({ "features": row, "model_version": selector }),
        );
        assert_eq!(r.status, 200, "selector {selector}");
        assert_eq!(r.json()["model_version"], *want, "selector {selector}");
    }
    for selector in [json!("7"), json!("Archived"), json!("nobody")] {
        let r = post_json(
            &predict_url(&server, "house_price"),
            &json!({ "features": row, "model_version": selector }),
        );
        assert_eq!(r.status, 404, "selector {selector}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("served versions: 1, 2, 3") && error.contains("champion=1"),
            "404 names what exists: {error}"
        );
    }
    let r = post_json(&predict_url(&server, "nope"), &json!({ "features": row }));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown model `nope`");
}

#[test]
fn seed_regressor_with_several_values_per_row_returns_arrays() {
    // The host's test guest echoes its [N, 4] input: four values per row.
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![version_of(
        &catalog,
        "echo",
        kiln_host::guest::TEST_GUEST_WASM,
        1,
        "Production",
        &[],
    )]);
    let server = TestServer::start(catalog);
    let r = post_json(
        &predict_url(&server, "echo"),
        &json!({ "features": [1.5, 2.0, -3.0, 4.25] }),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["prediction"], json!([1.5, 2.0, -3.0, 4.25]));
    assert!(body["confidence"].is_null());
}
