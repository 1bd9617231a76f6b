//! Every client mistake gets a 4xx with a JSON `error`, never a 500.

use crate::seed_api::standard;
use crate::*;
use kiln_serve::ServeConfig;
use serde_json::json;

fn assert_error(what: &str, r: &Reply, status: u16, contains: &str) {
    assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
    assert!(
        r.content_type.starts_with("application/json"),
        "{what}: {}",
        r.content_type
    );
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(contains), "{what}: `{error}` lacks `{contains}`");
}

#[test]
fn malformed_json_is_400() {
    let server = standard();
    let r = post(
        &server.url("/v1/models/iris/predict"),
        b"{\"features\": [1, 2",
        &[],
    );
    assert_error("seed", &r, 400, "malformed JSON");
    let r = post(&server.url("/v2/models/iris/infer"), b"{not json", &[]);
    assert_error("infer", &r, 400, "malformed");
    let r = post(&server.url("/v2/models/iris/infer"), br#"{"inputs": 3}"#, &[]);
    assert_error("infer, wrong structure", &r, 400, "malformed");
}

#[test]
fn a_body_over_the_limit_is_413_json() {
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
            max_body_bytes: 1024,
            ..ServeConfig::default()
        },
    );
    let big = json!({ "features": vec![1.0; 400] }).to_string();
    assert!(big.len() > 1024);
    let r = post(&server.url("/v1/models/iris/predict"), big.as_bytes(), &[]);
    assert_error("seed", &r, 413, "1024 bytes");
    let r = post(&server.url("/v2/models/iris/infer"), big.as_bytes(), &[]);
    assert_error("infer", &r, 413, "1024 bytes");
    // Under the limit still works.
    let r = post_json(
        &server.url("/v1/models/iris/predict"),
        &json!({ "features": [5.1, 3.5, 1.4, 0.2] }),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn unknown_models_versions_and_routes_are_404_json() {
    let server = standard();
    let request = example_json("iris_logreg.request.json");
    let r = post_json(&server.url("/v2/models/nope/infer"), &request);
    assert_error("infer unknown model", &r, 404, "unknown model `nope`");
    let r = post_json(&server.url("/v2/models/iris/versions/4/infer"), &request);
    assert_error("infer unknown version", &r, 404, "served versions: 1");
    let r = get(&server.url("/v2/models/nope"));
    assert_error("metadata unknown model", &r, 404, "unknown model");
    let r = get(&server.url("/v3/whatever"));
    assert_error("unknown route", &r, 404, "no route");
    let r = get(&server.url("/v2/models/iris/infer"));
    assert_error("wrong method", &r, 405, "GET");
}

#[test]
fn oip_inputs_that_do_not_fit_the_model_are_400() {
    let server = standard();
    let url = server.url("/v2/models/iris/infer");
    let base = example_json("iris_logreg.request.json");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "datatype",
            with(&|r| r["inputs"][0]["datatype"] = json!("FP64")),
            "the model takes FP32, got FP64",
        ),
        (
            "shape",
            with(&|r| {
                r["inputs"][0]["shape"] = json!([4, 6]);
            }),
            "the model takes shape",
        ),
        (
            "count",
            with(&|r| r["inputs"][0]["shape"] = json!([5, 4])),
            "needs 20 values, got 24",
        ),
        (
            "unknown datatype",
            with(&|r| r["inputs"][0]["datatype"] = json!("FLOAT")),
            "unknown datatype",
        ),
        (
            "input name",
            with(&|r| r["inputs"][0]["name"] = json!("features")),
            "unknown input `features`",
        ),
        (
            "output name",
            with(&|r| r["outputs"] = json!([{ "name": "scores" }])),
            "unknown output `scores`",
        ),
        ("no inputs", json!({ "inputs": [] }), "no inputs"),
    ];
    for (what, request, contains) in cases {
        let r = post_json(&url, &request);
        assert_error(what, &r, 400, contains);
    }
}

#[test]
fn seed_refuses_models_without_one_feature_matrix_input() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![version(&catalog, "cnn", "cnn", 1, "Production", &[])]);
    let server = TestServer::start(catalog);
    let r = post_json(
        &server.url("/v1/models/cnn/predict"),
        &json!({ "features": vec![0.0; 784] }),
    );
    assert_error("cnn", &r, 422, "POST /v2/models/cnn/infer");
}
