//! The Open Inference Protocol v2 endpoints in JSON: server and model metadata, health,
//! readiness, config, and infer compared with onnxruntime.

use crate::seed_api::standard;
use crate::*;
use serde_json::json;

/// Asserts an OIP JSON response's outputs equal the example's onnxruntime reference.
pub fn assert_outputs_match(example: &str, outputs: &Value, only: Option<&[&str]>) {
    let expected = example_json(&format!("{example}.expected.json"));
    let want: Vec<&Value> = expected["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| only.is_none_or(|names| names.contains(&o["name"].as_str().unwrap())))
        .collect();
    let got = outputs.as_array().expect("outputs");
    assert_eq!(got.len(), want.len(), "{example}: outputs {outputs}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["name"], w["name"]);
        assert_eq!(g["datatype"], w["datatype"], "{example}: {}", w["name"]);
        assert_eq!(g["shape"], w["shape"], "{example}: {}", w["name"]);
        let values = |v: &Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect()
        };
        assert_close(
            &format!("{example}: {}", w["name"]),
            &values(&g["data"]),
            &values(&w["data"]),
        );
    }
}

#[test]
fn oip_server_metadata_health_and_readiness() {
    let server = standard();
    let r = get(&server.url("/v2"));
    assert_eq!(r.status, 200);
    let meta = r.json();
    assert_eq!(meta["name"], "kiln");
    assert!(meta["version"].is_string());
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    assert_eq!(get(&server.url("/v2/health/live")).status, 200);
    assert_eq!(get(&server.url("/v2/health/ready")).status, 200);
}

#[test]
fn oip_model_metadata_lists_versions_and_tensors() {
    let server = standard();
    let r = get(&server.url("/v2/models/house_price"));
    assert_eq!(r.status, 200);
    let meta = r.json();
    assert_eq!(meta["name"], "house_price");
    assert_eq!(meta["versions"], json!(["1", "2", "3"]));
    assert_eq!(meta["platform"], "kiln_wasm");
    assert_eq!(meta["inputs"][0]["name"], "X");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["inputs"][0]["shape"][1], 10);
    assert_eq!(meta["outputs"][0]["name"], "variable");

    let r = get(&server.url("/v2/models/house_price/versions/champion"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["versions"], json!(["1"]));

    let r = get(&server.url("/v2/models/iris"));
    let meta = r.json();
    let outputs: Vec<&str> = meta["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["label", "probabilities"]);
    assert_eq!(meta["outputs"][0]["datatype"], "INT64");
}

#[test]
fn oip_model_ready_is_200_only_for_servable_versions() {
    let server = standard();
    for path in [
        "/v2/models/house_price/ready",
        "/v2/models/house_price/versions/1/ready",
        "/v2/models/house_price/versions/Staging/ready",
        "/v2/models/house_price/versions/latest/ready",
    ] {
        assert_eq!(get(&server.url(path)).status, 200, "{path}");
    }
    for path in ["/v2/models/house_price/versions/9/ready", "/v2/models/nope/ready"] {
        let r = get(&server.url(path));
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string());
    }
}

#[test]
fn oip_model_config_is_triton_like() {
    let server = standard();
    let r = get(&server.url("/v2/models/iris/config"));
    assert_eq!(r.status, 200);
    let config = r.json();
    assert_eq!(config["name"], "iris");
    assert_eq!(config["platform"], "kiln_wasm");
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(config["input"][0]["name"], "X");
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["input"][0]["dims"][1], 4);
    assert_eq!(config["output"][0]["data_type"], "TYPE_INT64");
    assert_eq!(
        get(&server.url("/v2/models/iris/versions/Production/config")).status,
        200
    );
}

#[test]
fn oip_json_infer_matches_onnxruntime() {
    let server = standard();
    for (model, example) in [
        ("house_price", "house_price_forest"),
        ("iris", "iris_logreg"),
        ("gbm", "gbm_classifier"),
    ] {
        let mut request = example_json(&format!("{example}.request.json"));
        request["id"] = json!(format!("req-{model}"));
        let r = post(
            &server.url(&format!("/v2/models/{model}/infer")),
            request.to_string().as_bytes(),
            &[],
        );
        assert_eq!(r.status, 200, "{model}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.content_type.starts_with("application/json"));
        let body = r.json();
        assert_eq!(body["model_name"], model);
        assert_eq!(body["id"], format!("req-{model}"));
        assert_outputs_match(example, &body["outputs"], None);
    }
}

#[test]
fn oip_infer_on_a_version_path_and_a_requested_output_subset() {
    let server = standard();
    let r = post(
        &server.url("/v2/models/house_price/versions/challenger/infer"),
        &std::fs::read(root().join("examples/models/house_price_forest.request.json")).unwrap(),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_version"], "2");

    let mut request = example_json("iris_logreg.request.json");
    request["outputs"] = json!([{ "name": "probabilities" }]);
    let r = post_json(&server.url("/v2/models/iris/infer"), &request);
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["model_version"], "1");
    assert!(body.get("id").is_none());
    assert_outputs_match("iris_logreg", &body["outputs"], Some(&["probabilities"]));
}

#[test]
fn oip_ready_turns_200_after_the_first_load_with_the_one_call_serve() {
    let catalog = Arc::new(DirCatalog::new());
    catalog.set(vec![version(
        &catalog,
        "iris",
        "iris_logreg",
        1,
        "Production",
        &[],
    )]);
    catalog.set_readable(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dyn_catalog: Arc<dyn kiln_serve::Catalog> = catalog.clone();
    let server = runtime.spawn(kiln_serve::serve(
        listener,
        host(),
        dyn_catalog,
        kiln_serve::ServeConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&format!("{base}/v2/health/live")).status, 200);
    let r = get(&format!("{base}/v2/health/ready"));
    assert_eq!(r.status, 503, "not ready while the catalog is unreadable");
    assert!(r.json()["error"].is_string());
    assert_eq!(get(&format!("{base}/v2/models/iris/ready")).status, 404);

    catalog.set_readable(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&format!("{base}/v2/health/ready")).status != 200 {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&format!("{base}/v2/models/iris/ready")).status, 200);
    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
}
