//! The Spin edge (edge-worker/spin) hosted by `kiln spin up`: the root spin.toml's router
//! and bundled models answer like onnxruntime and fail like `kiln serve`; Spin variables
//! split traffic between versions without a rebuild; `kiln export spin` turns a registry
//! into a Spin app that serves its versions.

use kiln_tests::assert_outputs_match_onnxruntime;
use kiln_tests::kiln_process::KilnHome;
use kiln_tests::spin_app::{self, Answer, SpinServer};
use serde_json::{Value, json};

fn post(server: &SpinServer, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    server.send("POST", path, Some(body), headers)
}

#[test]
fn spin_router_hosted_by_kiln_serves_the_bundled_models_like_onnxruntime_and_fails_like_kiln_serve() {
    let manifest = spin_app::bundled_app();
    let home = KilnHome::new();
    // The forest's routing as `kiln serve` will have it below (Production), as a routing
    // table's JSON: the form `kiln export spin` writes.
    let routes = json!({"generation": 1, "models": {"house-price": {"versions": [
        {"version": 1, "digest": "", "weight": 100, "stage": "Production", "aliases": []}
    ]}}});
    let spin = spin_app::spin_up(
        &home,
        &manifest,
        &[("SPIN_VARIABLE_KILN_ROUTES", &routes.to_string())],
    );

    // OIP v2: every bundled model answers its example request like onnxruntime.
    for (name, example) in spin_app::BUNDLED {
        let request = String::from_utf8(kiln_tests::request_json(example)).expect("UTF-8");
        let a = post(&spin, &format!("/v2/models/{name}/infer"), &request, &[]);
        assert_eq!(a.status, 200, "{name}: {}", a.body);
        assert_eq!(a.header("x-kiln-model-version"), Some("1"), "{name}");
        let body = a.json();
        assert_eq!(body["model_name"], name);
        assert_eq!(body["model_version"], "1");
        assert_outputs_match_onnxruntime(&format!("spin {name}"), &body["outputs"], example);
        let meta = spin.send("GET", &format!("/v2/models/{name}"), None, &[]);
        assert_eq!(meta.status, 200, "{}", meta.body);
        assert_eq!(meta.json()["versions"], json!(["1"]));
    }

    // The seed API: the forest's first example row, against onnxruntime's first output.
    let request: Value =
        serde_json::from_slice(&kiln_tests::request_json("house_price_forest")).expect("JSON");
    let row: Vec<Value> = request["inputs"][0]["data"].as_array().expect("data")[..10].to_vec();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(kiln_tests::models_dir().join("house_price_forest.expected.json")).expect("read"),
    )
    .expect("JSON");
    let want = expected["outputs"][0]["data"][0].as_f64().expect("number");
    let a = post(
        &spin,
        "/v1/models/house-price/predict",
        &json!({ "features": row }).to_string(),
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let body = a.json();
    let got = body["prediction"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (got - want).abs() <= 1e-4 * want.abs(),
        "seed prediction {got}, onnxruntime {want}"
    );
    assert_eq!(body["model_version"], "1");
    assert!(
        body["request_id"].as_str().is_some_and(|id| id.len() == 36),
        "{body}"
    );
    assert_eq!(
        spin.send("GET", "/v2/health/live", None, &[]).json(),
        json!({ "live": true })
    );

    // Bad input: the same statuses and bodies as `kiln serve` on the same component.
    let version = home.register_example("house_price_forest", "house-price");
    home.run(&[
        "models",
        "promote",
        "house-price",
        &version.to_string(),
        "production",
    ]);
    let serve = home.serve("serve", &[]);
    let bad: [(&str, &str, Option<&str>); 8] = [
        (
            "POST",
            "/v1/models/house-price/predict",
            Some(r#"{"features": [1, 2]}"#),
        ),
        (
            "POST",
            "/v1/models/house-price/predict",
            Some(r#"{"features": [1, "#),
        ),
        (
            "POST",
            "/v1/models/house-price/predict",
            Some(r#"{"features": "many"}"#),
        ),
        ("POST", "/v1/models/nope/predict", Some(r#"{"features": [1]}"#)),
        (
            "POST",
            "/v2/models/house-price/infer",
            Some(r#"{"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}"#),
        ),
        ("POST", "/v2/models/house-price/infer", Some(r#"{"inputs": []}"#)),
        (
            "POST",
            "/v2/models/house-price/versions/9/infer",
            Some(r#"{"inputs": []}"#),
        ),
        ("GET", "/v1/models/house-price/predict", None),
    ];
    for (method, path, body) in bad {
        let from_spin = spin.send(method, path, body, &[]);
        let from_serve = spin_app::send(&format!("http://{}{path}", serve.addr), method, body, &[]);
        assert!(
            (400..500).contains(&from_spin.status),
            "{method} {path}: the Spin router answered {} {}",
            from_spin.status,
            from_spin.body
        );
        assert_eq!(
            (from_spin.status, from_spin.json()),
            (from_serve.status, from_serve.json()),
            "{method} {path}: Spin router vs kiln serve"
        );
    }
}

/// Which echo version answered: v1 returns its input, v2 (`echo4_double`) doubles it.
fn echo_version(a: &Answer) -> u64 {
    assert_eq!(a.status, 200, "{}", a.body);
    let body = a.json();
    let first = body["outputs"][0]["data"][0].as_f64().expect("data");
    let v = if first == 1.0 {
        1
    } else if first == 2.0 {
        2
    } else {
        panic!("unexpected echo output {body}")
    };
    assert_eq!(
        a.header("x-kiln-model-version"),
        Some(v.to_string().as_str()),
        "{}",
        a.body
    );
    v
}

#[test]
fn spin_variables_split_traffic_and_kiln_export_spin_serves_the_registry() {
    let home = KilnHome::new();
    assert_eq!(home.register_example("echo4", "echo"), 1);
    assert_eq!(home.register_example("echo4_double", "echo"), 2);
    home.run(&["models", "promote", "echo", "1", "production"]);
    home.run(&["models", "promote", "echo", "2", "staging"]);
    // Static fleet weights (GitOps): v1 takes the traffic, v2 is held at weight 0.
    let gitops = home.path().join("kiln.toml");
    std::fs::write(
        &gitops,
        "[models.echo]\nversion = 1\nweights = { \"1\" = 100, \"2\" = 0 }\n",
    )
    .expect("writing the GitOps file");
    home.run(&["sync", "apply", gitops.to_str().unwrap_or_default()]);
    let out = home.path().join("spin-app");
    let report = spin_app::export(&home, &out);
    assert!(
        report.contains("model-a echo") && report.contains("model-b echo"),
        "{report}"
    );
    let manifest = out.join("spin.toml");
    let request = String::from_utf8(kiln_tests::request_json("echo4")).expect("UTF-8");
    let infer =
        |s: &SpinServer, headers: &[(&str, &str)]| post(s, "/v2/models/echo/infer", &request, headers);

    // As exported: v1 takes the traffic; v2 (Staging, weight 0) is loaded but restricted,
    // and an edge takes no tokens, so naming it is refused (403) however it is named.
    let spin = spin_app::spin_up(&home, &manifest, &[]);
    for _ in 0..10 {
        assert_eq!(echo_version(&infer(&spin, &[])), 1);
    }
    for refused in [
        post(&spin, "/v2/models/echo/versions/2/infer", &request, &[]),
        infer(&spin, &[("x-kiln-version", "Staging")]),
        infer(
            &spin,
            &[("x-kiln-version", "2"), ("authorization", "Bearer kiln_any")],
        ),
    ] {
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.json()["kind"], "restricted_version", "{}", refused.body);
    }
    assert_eq!(
        echo_version(&post(&spin, "/v2/models/echo/versions/1/infer", &request, &[])),
        1,
        "the open version stays nameable"
    );
    let meta = spin.send("GET", "/v2/models/echo/versions/2", None, &[]).json();
    assert_eq!(meta["parameters"]["stage"], "Staging", "{meta}");
    assert!(
        report.contains(meta["parameters"]["digest"].as_str().unwrap_or("-")),
        "{meta}"
    );
    drop(spin);

    // The operator moves the weights with SPIN_VARIABLE_KILN_ROUTES: no rebuild, no export.
    for (routes, want) in [("echo=1:0,2:100", 2), ("echo=1:100,2:0", 1)] {
        let spin = spin_app::spin_up(&home, &manifest, &[("SPIN_VARIABLE_KILN_ROUTES", routes)]);
        for _ in 0..20 {
            assert_eq!(echo_version(&infer(&spin, &[])), want, "routes {routes}");
        }
    }

    // A 50/50 split: a routing key always lands on the same version, and keys spread.
    let spin = spin_app::spin_up(
        &home,
        &manifest,
        &[("SPIN_VARIABLE_KILN_ROUTES", "echo=1:50,2:50")],
    );
    let mut seen = [0u32; 3];
    for k in 0..24 {
        let key = format!("user-{k}");
        let first = echo_version(&infer(&spin, &[("x-kiln-routing-key", &key)]));
        for _ in 0..3 {
            assert_eq!(
                echo_version(&infer(&spin, &[("x-kiln-routing-key", &key)])),
                first,
                "key {key} moved"
            );
        }
        seen[first as usize] += 1;
    }
    assert!(
        seen[1] > 0 && seen[2] > 0,
        "a 50/50 split sent every key one way: {seen:?}"
    );
    drop(spin);

    // A digest in kiln_models that does not match the bound component refuses to start.
    let text = std::fs::read_to_string(&manifest).expect("reading the manifest");
    let digest = text
        .split("=echo@1#")
        .nth(1)
        .map(|rest| rest[..64].to_string())
        .expect("the export names v1's digest");
    let forged = text.replace(&digest, &"0".repeat(64));
    let forged_path = out.join("forged.toml");
    std::fs::write(&forged_path, forged).expect("writing the forged manifest");
    let res = home.run_raw(&[
        "spin",
        "up",
        "--from",
        forged_path.to_str().unwrap_or_default(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("refusing to serve"), "{err}");
}
