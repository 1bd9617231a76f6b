//! Kiln's Cloudflare Worker in workerd (the npm package's real runtime, offline, on
//! 127.0.0.1): the example models deployed with it as bundles answer the seed API and the
//! Open Inference Protocol like onnxruntime, bad input gets the same 4xx JSON as
//! `kiln serve`, a bundle whose SHA-256 differs from `KILN_MODELS` is refused, and
//! `KILN_ROUTES` splits traffic between versions with sticky keys.

use kiln_tests::cloudflare_worker::{Deployed, Workerd};
use kiln_tests::kiln_process::{KilnHome, Reply, Server};
use kiln_tests::{assert_outputs_match_onnxruntime, close_to_reference, expected, request_json};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn examples() -> Vec<Deployed> {
    vec![
        Deployed::example("house_price_forest", "house_price_forest", 1),
        Deployed::example("mlp", "mlp", 1),
    ]
}

/// An OIP infer answer against onnxruntime's outputs: names, types, shapes, values.
fn assert_infer_matches(what: &str, body: &Value, example: &str) {
    assert_outputs_match_onnxruntime(what, &body["outputs"], example);
}

/// Sends the example's request with its input as raw little-endian bytes
/// (`Inference-Header-Content-Length`) and asks for `output` back as binary.
fn assert_binary_infer_matches(worker: &Workerd, example: &str, output: &str) {
    let req: Value = serde_json::from_slice(&request_json(example)).expect("request JSON");
    let input = &req["inputs"][0];
    let raw: Vec<u8> = input["data"]
        .as_array()
        .expect("data")
        .iter()
        .flat_map(|v| (v.as_f64().unwrap_or(f64::NAN) as f32).to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [{ "name": input["name"], "shape": input["shape"], "datatype": "FP32",
                     "parameters": { "binary_data_size": raw.len() } }],
        "outputs": [{ "name": output, "parameters": { "binary_data_output": true } }],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(worker.url(&format!("/v2/models/{example}/infer")))
        .header("inference-header-content-length", header.len().to_string())
        .send(&body[..])
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let json_len: usize = r
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a binary answer names its JSON length");
    let answer = r.body_mut().read_to_vec().expect("body");
    let (head, tail) = answer.split_at(json_len);
    let head: Value = serde_json::from_slice(head).expect("JSON header");
    let out = &head["outputs"][0];
    assert_eq!(out["name"], output, "{head}");
    assert_eq!(
        out["parameters"]["binary_data_size"].as_u64(),
        Some(tail.len() as u64),
        "{head}"
    );
    let got: Vec<f64> = tail
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    let want = expected(example)
        .into_iter()
        .find(|o| o.name == output)
        .expect("reference output");
    assert_eq!(got.len(), want.data.len(), "{head}");
    for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
        let w = w.unwrap_or(f64::NAN);
        assert!(
            close_to_reference(*g, w),
            "binary `{output}`[{i}] = {g}, onnxruntime says {w}"
        );
    }
}

/// The rows of an example's request, as seed `instances`.
fn rows(example: &str) -> Vec<Vec<f64>> {
    let req: Value = serde_json::from_slice(&request_json(example)).expect("request JSON");
    let input = &req["inputs"][0];
    let width = input["shape"][1].as_u64().expect("[N, F] input") as usize;
    let data: Vec<f64> = input["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    data.chunks(width).map(<[f64]>::to_vec).collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn worker_answers_seed_and_oip_routes_like_onnxruntime() {
    let worker = Workerd::start(&examples(), &[]);

    let live = worker.get("/v2/health/live");
    assert_eq!(live.status, 200, "{}", live.body);
    let ready = worker.get("/v2/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let server = worker.get("/v2");
    assert_eq!(server.status, 200, "{}", server.body);

    for example in ["house_price_forest", "mlp"] {
        let meta = worker.get(&format!("/v2/models/{example}"));
        assert_eq!(meta.status, 200, "{}", meta.body);
        let meta = meta.json();
        assert_eq!(meta["name"], example, "{meta}");
        assert_eq!(meta["versions"], json!(["1"]), "{meta}");
        let want_input = serde_json::from_slice::<Value>(&request_json(example)).expect("request")["inputs"]
            [0]["name"]
            .clone();
        assert_eq!(meta["inputs"][0]["name"], want_input, "{meta}");

        let body = String::from_utf8(request_json(example)).expect("utf-8");
        for path in [
            format!("/v2/models/{example}/infer"),
            format!("/v2/models/{example}/versions/1/infer"),
        ] {
            let (r, headers) = worker.post_with(&path, &body, &[("content-type", "application/json")]);
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_infer_matches(&path, &r.json(), example);
            assert_eq!(
                header(&headers, "x-kiln-model-version"),
                Some("1"),
                "{path}: {headers:?}"
            );
        }
    }

    // The binary tensor extension (what Triton's client sends): raw bytes in and out
    // through the Worker's request and response bodies.
    assert_binary_infer_matches(&worker, "mlp", "probabilities");

    // Seed API: the forest regressor predicts onnxruntime's values, one row or a batch.
    let want: Vec<f64> = expected("house_price_forest")[0]
        .data
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect();
    let forest_rows = rows("house_price_forest");
    let r = worker.post(
        "/v1/models/house_price_forest/predict",
        &json!({ "instances": forest_rows, "request_id": "cf-1" }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let got: Vec<f64> = body["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(got.len(), want.len(), "{body}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(close_to_reference(*g, *w), "row {i}: {g} vs onnxruntime {w}");
    }
    assert_eq!(body["request_id"], "cf-1");
    assert_eq!(body["model_version"], "1");
    for (i, row) in forest_rows.iter().enumerate().take(3) {
        let r = worker.post(
            "/v1/models/house_price_forest/predict",
            &json!({ "features": row }).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let body = r.json();
        let got = body["prediction"].as_f64().unwrap_or(f64::NAN);
        assert!(
            close_to_reference(got, want[i]),
            "row {i}: {got} vs onnxruntime {}",
            want[i]
        );
        assert!(body["confidence"].is_null(), "{body}");
        assert!(
            body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{body}"
        );
        assert!(
            body["timestamp"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z') || s.contains('+')),
            "{body}"
        );
    }

    // The MLP has no class labels: its seed prediction is its first output's row (the
    // logits), with no confidence, as on `kiln serve`.
    let logits = expected("mlp").into_iter().next().expect("mlp outputs");
    let width = logits.shape[1] as usize;
    let r = worker.post(
        "/v1/models/mlp/predict",
        &json!({ "instances": rows("mlp") }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let predictions = body["predictions"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(predictions.len(), logits.shape[0] as usize, "{body}");
    for (i, (got, want)) in predictions.iter().zip(logits.data.chunks(width)).enumerate() {
        let got: Vec<f64> = got
            .as_array()
            .unwrap_or_else(|| panic!("row {i}: {body}"))
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        assert_eq!(got.len(), width, "row {i}: {body}");
        for (g, w) in got.iter().zip(want) {
            let w = w.unwrap_or(f64::NAN);
            assert!(close_to_reference(*g, w), "mlp row {i}: {g} vs onnxruntime {w}");
        }
    }
    assert!(
        body["confidences"]
            .as_array()
            .is_some_and(|c| c.iter().all(Value::is_null)),
        "{body}"
    );
}

/// Bad requests, each with what makes it bad.
fn bad_requests() -> Vec<(&'static str, String, Option<String>)> {
    let mlp_row = vec![0.5_f64; 10];
    let (letters, zeros3, zeros9, zeros10) = (vec!["a"; 10], vec![0.0; 3], vec![0.0; 9], vec![0.0; 10]);
    vec![
        ("POST", "/v1/models/mlp/predict".into(), Some("{not json".into())),
        ("POST", "/v1/models/mlp/predict".into(), Some(json!({ "features": [1.0, 2.0] }).to_string())),
        ("POST", "/v1/models/mlp/predict".into(), Some(json!({ "features": letters }).to_string())),
        ("POST", "/v1/models/mlp/predict".into(), Some(json!({ "rows": [mlp_row] }).to_string())),
        ("POST", "/v1/models/mlp/predict".into(), Some(json!({ "features": mlp_row, "model_version": "9" }).to_string())),
        ("POST", "/v1/models/nope/predict".into(), Some(json!({ "features": mlp_row }).to_string())),
        (
            "POST",
            "/v2/models/mlp/infer".into(),
            Some(json!({ "inputs": [{ "name": "input", "shape": [1, 9], "datatype": "FP32", "data": zeros9 }] }).to_string()),
        ),
        (
            "POST",
            "/v2/models/mlp/infer".into(),
            Some(json!({ "inputs": [{ "name": "input", "shape": [1, 10], "datatype": "FP64", "data": zeros10 }] }).to_string()),
        ),
        (
            "POST",
            "/v2/models/mlp/infer".into(),
            Some(json!({ "inputs": [{ "name": "wrong", "shape": [1, 10], "datatype": "FP32", "data": zeros10 }] }).to_string()),
        ),
        (
            "POST",
            "/v2/models/mlp/infer".into(),
            Some(json!({ "inputs": [{ "name": "input", "shape": [1, 10], "datatype": "FP32", "data": zeros3 }] }).to_string()),
        ),
        ("POST", "/v2/models/mlp/infer".into(), Some("[]".into())),
        ("POST", "/v2/models/mlp/versions/7/infer".into(), Some(String::from_utf8(request_json("mlp")).unwrap_or_default())),
        ("GET", "/v2/models/nope".into(), None),
        ("GET", "/v2/models/mlp/versions/7".into(), None),
        ("GET", "/v1/models/mlp/predict".into(), None),
        ("GET", "/nowhere".into(), None),
    ]
}

fn send(server: &Server, method: &str, path: &str, body: Option<&str>) -> Reply {
    match (method, body) {
        ("GET", _) => server.get(path),
        (_, Some(b)) => {
            server
                .post_with(path, b, &[("content-type", "application/json")])
                .0
        }
        (_, None) => server.post(path, ""),
    }
}

#[test]
fn worker_rejects_bad_input_with_the_same_4xx_json_as_kiln_serve() {
    // One registry behind both: `kiln serve` serves it, the Worker gets it through
    // `kiln export cloudflare` (so stages and selectors are the same on both).
    let home = KilnHome::new();
    for name in ["house_price_forest", "mlp"] {
        let v = home.register_example(name, name);
        home.run(&["models", "promote", name, &v.to_string(), "Production"]);
    }
    let kiln = home.serve("serve", &["--cache", "off"]);
    let (worker, _, _) = export_and_deploy(&home);

    for (method, path, body) in bad_requests() {
        let w = send(&worker, method, &path, body.as_deref());
        let k = send(&kiln, method, &path, body.as_deref());
        assert!(
            (400..500).contains(&w.status),
            "{method} {path}: the Worker answered {} {}",
            w.status,
            w.body
        );
        assert_eq!(
            (w.status, w.json()),
            (k.status, k.json()),
            "{method} {path} {body:?}: Worker (left) and kiln serve (right) differ"
        );
        assert!(
            w.json()["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: no error message in {}",
            w.body
        );
    }

    // The Worker still serves after all that.
    let r = worker.post(
        "/v2/models/mlp/infer",
        &String::from_utf8(request_json("mlp")).unwrap_or_default(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_infer_matches("after bad input", &r.json(), "mlp");
}

#[test]
fn worker_refuses_a_bundle_whose_sha256_differs_from_kiln_models() {
    let mut models = examples();
    let expected_sha = models[0].entry.sha256.clone();
    // Tamper with one byte of the forest's ONNX after its digest went into KILN_MODELS.
    let last = models[0].bytes.len() - 1;
    models[0].bytes[last] ^= 0x5a;
    let worker = Workerd::start(&models, &[]);
    for (method, path) in [
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/mlp"),
        ("POST", "/v2/models/house_price_forest/infer"),
        ("POST", "/v1/models/mlp/predict"),
    ] {
        let r = send(&worker, method, path, Some("{}"));
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        let message = r.json()["error"].as_str().unwrap_or_default().to_string();
        for part in [
            "models/house_price_forest.v1.kmdl",
            "SHA-256",
            expected_sha.as_str(),
            "refusing",
        ] {
            assert!(
                message.contains(part),
                "{method} {path}: `{part}` missing from: {message}"
            );
        }
    }

    // A bundle named in KILN_MODELS but not deployed is refused the same way.
    let mut missing = Deployed::example("mlp", "mlp", 2);
    missing.entry.version = 3;
    let worker = Workerd::start_with_undeployed(&examples(), &missing.entry);
    let r = worker.get("/v2/health/ready");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("models/mlp.v3.kmdl") && r.body.contains("not deployed"),
        "{}",
        r.body
    );
}

/// The version that answered each of `n` seed requests (with an optional sticky key).
fn versions_seen(worker: &Workerd, n: usize, key: Option<&str>) -> Vec<String> {
    let row = rows("house_price_forest").remove(0);
    let body = json!({ "features": row }).to_string();
    (0..n)
        .map(|_| {
            let headers: Vec<(&str, &str)> = key.map(|k| vec![("x-kiln-routing-key", k)]).unwrap_or_default();
            let (r, _) = worker.post_with("/v1/models/house_price_forest/predict", &body, &headers);
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["model_version"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn worker_routes_split_traffic_by_weight_and_keep_sticky_keys() {
    let deploy = |routes: &str| {
        Workerd::start(
            &[
                Deployed::example("house_price_forest", "house_price_forest", 1),
                Deployed::example("house_price_forest", "house_price_forest", 2),
            ],
            &[("KILN_ROUTES", routes)],
        )
    };

    let worker = deploy("house_price_forest=1:0,2:100");
    assert!(
        versions_seen(&worker, 20, None).iter().all(|v| v == "2"),
        "0/100 must all go to version 2"
    );
    // A version with weight 0 is loaded but restricted, and a Worker takes no tokens:
    // naming it is refused (403), as on every host.
    let r = worker.post(
        "/v2/models/house_price_forest/versions/1/infer",
        &String::from_utf8(request_json("house_price_forest")).unwrap_or_default(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["kind"], "restricted_version", "{}", r.body);
    // The version with the traffic may be named.
    let r = worker.post(
        "/v2/models/house_price_forest/versions/2/infer",
        &String::from_utf8(request_json("house_price_forest")).unwrap_or_default(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    drop(worker);

    let worker = deploy("house_price_forest=1:100,2:0");
    assert!(
        versions_seen(&worker, 20, None).iter().all(|v| v == "1"),
        "100/0 must all go to version 1"
    );
    drop(worker);

    let worker = deploy("house_price_forest=1:50,2:50");
    let mut firsts = std::collections::BTreeSet::new();
    for k in 0..24 {
        let key = format!("user-{k}");
        let seen = versions_seen(&worker, 4, Some(&key));
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "key {key} moved between versions: {seen:?}"
        );
        firsts.insert(seen[0].clone());
    }
    assert_eq!(
        firsts.len(),
        2,
        "24 keys at 50/50 should reach both versions: {firsts:?}"
    );
    let unkeyed: std::collections::BTreeSet<String> = versions_seen(&worker, 40, None).into_iter().collect();
    assert_eq!(
        unkeyed.len(),
        2,
        "40 unkeyed requests at 50/50 reached only {unkeyed:?}"
    );
}

/// `KILN_MODELS` and `KILN_ROUTES` as `kiln export cloudflare` wrote them into wrangler.toml.
fn exported_vars(dir: &std::path::Path) -> (String, String) {
    let text = std::fs::read_to_string(dir.join("wrangler.toml")).expect("wrangler.toml");
    let parsed: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let var = |k: &str| {
        parsed["vars"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in:\n{text}"))
            .to_string()
    };
    (var("KILN_MODELS"), var("KILN_ROUTES"))
}

/// Runs `kiln export cloudflare` into a copy of the Worker directory's wrangler.toml and
/// deploys what it wrote in workerd.
fn export_and_deploy(home: &KilnHome) -> (Workerd, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        kiln_tests::cloudflare_worker::worker_dir().join("wrangler.toml"),
        dir.path().join("wrangler.toml"),
    )
    .expect("copying wrangler.toml");
    home.run(&[
        "export",
        "cloudflare",
        "--out",
        dir.path().to_str().unwrap_or_default(),
    ]);
    let (models, routes) = exported_vars(dir.path());
    let entries = kiln_cloudflare::manifest::parse(&models).expect("KILN_MODELS");
    for e in &entries {
        assert!(
            dir.path().join(e.module_name()).is_file(),
            "{} not written",
            e.module_name()
        );
    }
    let worker = Workerd::start_dir(
        dir,
        &entries,
        &[("KILN_MODELS", models.as_str()), ("KILN_ROUTES", routes.as_str())],
    );
    (worker, models, routes)
}

/// Registers the example compiled with another version label (the same predictions from
/// a component with another digest: a retrained model stand-in) as a new version.
fn register_variant(home: &KilnHome, example: &str, label: &str) -> u64 {
    let options = kiln_engine::LoadOptions {
        version: label.to_string(),
        ..Default::default()
    };
    let wasm = kiln_host::compile::compile_cached(
        &kiln_tests::host(),
        &kiln_tests::onnx(example),
        &options,
        &kiln_tests::test_cache_dir().join("components"),
    )
    .unwrap_or_else(|e| panic!("compiling {example} ({label}): {e}"));
    let path = home.path().join(format!("{example}-{label}.wasm"));
    std::fs::write(&path, wasm).expect("writing the component");
    let out = home.run(&[
        "models",
        "register",
        path.to_str().unwrap_or_default(),
        "--name",
        example,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {out}"))
}

/// Static weights for the forest through a GitOps file (`kiln sync apply`).
fn set_weights(home: &KilnHome, production: u64, weights: &[(u64, u32)]) {
    let weights: Vec<String> = weights.iter().map(|(v, w)| format!("\"{v}\" = {w}")).collect();
    let file = home.path().join("weights.toml");
    std::fs::write(
        &file,
        format!(
            "[models.house_price_forest]\nversion = {production}\nweights = {{ {} }}\n",
            weights.join(", ")
        ),
    )
    .expect("writing the GitOps file");
    home.run(&["sync", "apply", file.to_str().unwrap_or_default()]);
}

#[test]
fn export_cloudflare_deploys_the_registry_versions_and_weights() {
    let home = KilnHome::new();
    let v1 = home.register_example("house_price_forest", "house_price_forest");
    let v2 = register_variant(&home, "house_price_forest", "2");
    let mlp = home.register_example("mlp", "mlp");
    assert_ne!(v1, v2);
    home.run(&[
        "models",
        "promote",
        "house_price_forest",
        &v1.to_string(),
        "Production",
    ]);
    home.run(&["models", "promote", "mlp", &mlp.to_string(), "Production"]);

    // The Production versions, each taking all of its model's traffic.
    let (worker, models, _) = export_and_deploy(&home);
    assert!(models.contains(&format!("house_price_forest@{v1}=")), "{models}");
    assert!(models.contains(&format!("mlp@{mlp}=")), "{models}");
    assert!(!models.contains(&format!("house_price_forest@{v2}=")), "{models}");
    let seen: BTreeSet<String> = versions_seen(&worker, 10, None).into_iter().collect();
    assert_eq!(
        seen,
        [v1.to_string()].into(),
        "the Production version takes the traffic"
    );
    for example in ["house_price_forest", "mlp"] {
        let r = worker.post(
            &format!("/v2/models/{example}/infer"),
            &String::from_utf8(request_json(example)).unwrap_or_default(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_infer_matches(&format!("exported {example}"), &r.json(), example);
    }
    // The registry's stages select on the Worker as on kiln serve.
    let row = rows("house_price_forest").remove(0);
    let r = worker.post(
        "/v1/models/house_price_forest/predict",
        &json!({ "features": row, "model_version": "Production" }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model_version"], v1.to_string());
    drop(worker);

    // The registry splits the forest 50/50: the next export carries both and the weights.
    set_weights(&home, v1, &[(v1, 50), (v2, 50)]);
    let (worker, models, routes) = export_and_deploy(&home);
    for v in [v1, v2] {
        assert!(models.contains(&format!("house_price_forest@{v}=")), "{models}");
    }
    let table: Value = serde_json::from_str(&routes).unwrap_or_else(|e| panic!("{e}: {routes}"));
    let weights: BTreeSet<(u64, u64)> = table["models"]["house_price_forest"]["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("{routes}"))
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(weights, [(v1, 50), (v2, 50)].into(), "{routes}");
    let seen: BTreeSet<String> = versions_seen(&worker, 40, None).into_iter().collect();
    assert_eq!(
        seen,
        [v1.to_string(), v2.to_string()].into(),
        "40 requests at 50/50"
    );
    drop(worker);

    // All of it to version 2: the Worker follows with the next export.
    set_weights(&home, v1, &[(v1, 0), (v2, 100)]);
    let (worker, _, _) = export_and_deploy(&home);
    let seen: BTreeSet<String> = versions_seen(&worker, 20, None).into_iter().collect();
    assert_eq!(
        seen,
        [v2.to_string()].into(),
        "0/100 after the registry moved the weights"
    );
}

/// A model whose output size the request chooses: `y = Range(0, n, 1)`.
fn range_model() -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let float = pb::tensor_proto::DataType::Float as i32;
    let scalar = |name: &str, v: f32| pb::TensorProto {
        name: name.into(),
        data_type: float,
        float_data: vec![v],
        ..Default::default()
    };
    let info = |name: &str, dim| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: float,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![pb::tensor_shape_proto::Dimension {
                        value: Some(dim),
                        ..Default::default()
                    }],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "range".into(),
            node: vec![
                node("Squeeze", &["n"], "limit"),
                node("Range", &["start", "limit", "delta"], "y"),
            ],
            initializer: vec![scalar("start", 0.0), scalar("delta", 1.0)],
            input: vec![info("n", DimValue(1))],
            output: vec![info("y", DimParam("K".into()))],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn worker_answers_a_trap_with_the_trap_error_and_serves_on_from_a_fresh_instance() {
    let range = Deployed::new(
        "range",
        1,
        kiln_tests::cloudflare_worker::bundle(range_model(), "range", 1),
    );
    let worker = Workerd::start(&[range, Deployed::example("mlp", "mlp", 1)], &[]);
    let ask = |n: f64| {
        worker.post(
            "/v2/models/range/infer",
            &json!({ "inputs": [{ "name": "n", "shape": [1], "datatype": "FP32", "data": [n] }] })
                .to_string(),
        )
    };
    let r = ask(4.0);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["outputs"][0]["data"], json!([0.0, 1.0, 2.0, 3.0]));

    // 530 M floats: tract's 2.1 GB tensor, then a second copy for the answer, cannot both
    // fit in wasm32's 4 GiB: the allocation fails and the engine aborts (a trap).
    let r = ask(5.3e8);
    assert_eq!(r.status, 500, "{}", r.body);
    let body = r.json();
    assert_eq!(body["kind"], "trap", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the model trapped:")),
        "{body}"
    );

    // A fresh instance loads the models again and serves every model.
    let r = worker.post(
        "/v2/models/mlp/infer",
        &String::from_utf8(request_json("mlp")).unwrap_or_default(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_infer_matches("after the trap", &r.json(), "mlp");
    let r = ask(3.0);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["outputs"][0]["data"], json!([0.0, 1.0, 2.0]));
    let log = worker.log();
    assert!(
        log.contains("the engine trapped") && log.matches("kiln: loaded").count() >= 2,
        "{log}"
    );
}
