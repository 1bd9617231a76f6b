//! Parity across every host: the same requests, good and bad, sent to `kiln serve`, to the
//! Spin router hosted by Kiln (`kiln export spin` + `kiln spin up`), to the Cloudflare
//! Worker in workerd (`kiln export cloudflare`) and to the browser package in headless
//! Chromium (the playground page of the same `kiln serve`), all holding the same registry
//! versions. Every host must answer with the same status; successful answers agree within
//! 1e-5 (ids and timings aside) and match onnxruntime's reference outputs, and errors are
//! the same JSON, word for word.

use kiln_tests::chromium::Browser;
use kiln_tests::cloudflare_worker::{self, Workerd};
use kiln_tests::kiln_process::KilnHome;
use kiln_tests::spin_app::{self, Answer};
use kiln_tests::{assert_outputs_match_onnxruntime, close_to_reference, request_json, web_package};
use serde_json::{Value, json};

/// (example, registry name) of the models every host serves.
const MODELS: [(&str, &str); 2] = [("mlp", "mlp"), ("house_price_forest", "forest")];

/// Fields that differ by design from one answer to the next.
const VOLATILE: [&str; 4] = ["id", "request_id", "timestamp", "processing_time"];

/// Where two JSON answers differ (numbers within 1e-5, volatile fields skipped), if they do.
fn differs(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            (!close_to_reference(x, y)).then(|| format!("{path}: {x} vs {y}"))
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: {} vs {} items", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (x, y))| differs(x, y, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| {
                o.keys()
                    .filter(|k| !VOLATILE.contains(&k.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            if keys(x) != keys(y) {
                return Some(format!("{path}: keys {:?} vs {:?}", keys(x), keys(y)));
            }
            keys(x)
                .iter()
                .find_map(|k| differs(&x[k], &y[k], &format!("{path}.{k}")))
        }
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

/// One request of the suite.
struct Case {
    what: String,
    method: &'static str,
    path: String,
    body: Option<String>,
    /// The browser package answers predict/infer bodies for its loaded model.
    browser: Option<(&'static str, &'static str)>,
}

fn cases(example: &str, name: &str) -> Vec<Case> {
    let request = String::from_utf8(request_json(example)).expect("UTF-8 request");
    let parsed: Value = serde_json::from_str(&request).expect("request JSON");
    let input = &parsed["inputs"][0];
    let width = input["shape"][1].as_u64().unwrap_or(0) as usize;
    let data = input["data"].as_array().cloned().unwrap_or_default();
    let row = |i: usize| Value::Array(data[i * width..(i + 1) * width].to_vec());
    let predict = format!("/v1/models/{name}/predict");
    let infer = format!("/v2/models/{name}/infer");
    let with_input = |f: &dyn Fn(&mut Value)| {
        let mut r = parsed.clone();
        f(&mut r["inputs"][0]);
        r.to_string()
    };
    let wrong_type = with_input(&|i| i["datatype"] = json!("INT8"));
    let wrong_name = with_input(&|i| i["name"] = json!("nope"));
    let wrong_shape = with_input(&|i| i["shape"] = json!([1, width + 1]));
    let mut unknown_output = parsed.clone();
    unknown_output["outputs"] = json!([{ "name": "nope" }]);
    let post = |what: &str, path: &str, body: String, protocol: &'static str| Case {
        what: format!("{name}: {what}"),
        method: "POST",
        path: path.to_string(),
        browser: Some((protocol, "")),
        body: Some(body),
    };
    let get = |what: &str, path: String| Case {
        what: format!("{name}: {what}"),
        method: "GET",
        path,
        body: None,
        browser: None,
    };
    vec![
        post(
            "seed, one row",
            &predict,
            json!({ "features": row(0) }).to_string(),
            "predict",
        ),
        post(
            "seed, two rows",
            &predict,
            json!({ "instances": [row(0), row(1)] }).to_string(),
            "predict",
        ),
        post("OIP infer", &infer, request.clone(), "infer"),
        post(
            "OIP infer, version 1 by header-free path",
            &format!("/v2/models/{name}/versions/1/infer"),
            request.clone(),
            "none",
        ),
        post(
            "seed, malformed JSON",
            &predict,
            "{\"features\": [1,".into(),
            "predict",
        ),
        post(
            "seed, one feature short",
            &predict,
            json!({ "features": data[..width - 1] }).to_string(),
            "predict",
        ),
        post(
            "seed, features not an array",
            &predict,
            json!({ "features": 3 }).to_string(),
            "predict",
        ),
        post(
            "seed, no features",
            &predict,
            json!({ "rows": [] }).to_string(),
            "predict",
        ),
        post(
            "seed, an unknown version",
            &predict,
            json!({ "features": row(0), "model_version": "9" }).to_string(),
            "predict",
        ),
        post("OIP, wrong datatype", &infer, wrong_type, "infer"),
        post("OIP, unknown input", &infer, wrong_name, "infer"),
        post("OIP, wrong shape", &infer, wrong_shape, "infer"),
        post("OIP, unknown output", &infer, unknown_output.to_string(), "infer"),
        post("OIP, not JSON", &infer, "inputs".into(), "infer"),
        get("metadata", format!("/v2/models/{name}")),
        get("version metadata", format!("/v2/models/{name}/versions/1")),
        get("readiness", format!("/v2/models/{name}/ready")),
        get("config", format!("/v2/models/{name}/config")),
        get("unknown version", format!("/v2/models/{name}/versions/7")),
    ]
    .into_iter()
    .map(|mut c| {
        // "none": the browser package serves one model without a path to pick versions.
        if c.browser.is_some_and(|(p, _)| p == "none") {
            c.browser = None;
        }
        c
    })
    .collect()
}

fn http(base: &str, case: &Case) -> Answer {
    spin_app::send(
        &format!("{base}{}", case.path),
        case.method,
        case.body.as_deref(),
        &[],
    )
}

/// The metadata's digest is each host's identity for what it loaded: the component's on
/// `kiln serve` and Spin, the bundle's on the Worker and in the browser (the bytes they
/// verified). Everything else must agree.
fn without_digest(mut v: Value) -> Value {
    if let Some(p) = v.get_mut("parameters").and_then(Value::as_object_mut) {
        p.remove("digest");
    }
    v
}

#[test]
fn runtime_spin_worker_and_browser_answer_and_fail_alike() {
    web_package::package_dir();
    let (router, vacant) = spin_app::router();
    let home = KilnHome::new();
    for (example, name) in MODELS {
        let v = home.register_example(example, name);
        home.run(&["models", "promote", name, &v.to_string(), "Production"]);
    }
    let server = home.serve("serve", &["--cache", "off"]);

    // Spin: the registry exported as a Spin app, hosted by Kiln.
    let spin_dir = home.path().join("spin-app");
    home.run(&[
        "export",
        "spin",
        "--out",
        spin_dir.to_str().unwrap_or_default(),
        "--router",
        router.to_str().unwrap_or_default(),
        "--vacant",
        vacant.to_str().unwrap_or_default(),
    ]);
    let spin = spin_app::spin_up(&home, &spin_dir.join("spin.toml"), &[]);

    // Cloudflare: the registry exported as the Worker's deployment, run in workerd.
    let worker_dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        cloudflare_worker::worker_dir().join("wrangler.toml"),
        worker_dir.path().join("wrangler.toml"),
    )
    .expect("copying wrangler.toml");
    home.run(&[
        "export",
        "cloudflare",
        "--out",
        worker_dir.path().to_str().unwrap_or_default(),
    ]);
    let vars: toml::Value = toml::from_str(
        &std::fs::read_to_string(worker_dir.path().join("wrangler.toml")).expect("wrangler.toml"),
    )
    .expect("the exported wrangler.toml parses");
    let var = |k: &str| vars["vars"][k].as_str().unwrap_or_default().to_string();
    let (models_var, routes_var) = (var("KILN_MODELS"), var("KILN_ROUTES"));
    let entries = kiln_cloudflare::manifest::parse(&models_var).expect("KILN_MODELS parses");
    let worker = Workerd::start_dir(
        worker_dir,
        &entries,
        &[
            ("KILN_MODELS", models_var.as_str()),
            ("KILN_ROUTES", routes_var.as_str()),
        ],
    );

    // The browser: the playground page of the same server.
    let browser = Browser::start();
    browser.open(&server.url("/ui/playground"));

    let mut compared = 0;
    for (example, name) in MODELS {
        browser.eval("await playground.load(args.name, 1);", json!({ "name": name }));
        for case in cases(example, name) {
            let reference = http(&server.url(""), &case);
            let hosts = [
                ("Spin", http(&spin.url(""), &case)),
                ("Worker", http(&worker.url(""), &case)),
            ];
            let reference_json: Value = serde_json::from_str(&reference.body).unwrap_or_else(|e| {
                panic!(
                    "{}: kiln serve's answer is not JSON ({e}): {}",
                    case.what, reference.body
                )
            });
            if case.what.ends_with("OIP infer") {
                assert_eq!(reference.status, 200, "{}: {}", case.what, reference.body);
                assert_outputs_match_onnxruntime(&case.what, &reference_json["outputs"], example);
            }
            let mut answers: Vec<(&str, u16, Value)> = hosts
                .iter()
                .map(|(host, a)| {
                    let body = serde_json::from_str(&a.body).unwrap_or_else(|e| {
                        panic!("{}: {host}'s answer is not JSON ({e}): {}", case.what, a.body)
                    });
                    (*host, a.status, body)
                })
                .collect();
            if let Some((protocol, _)) = case.browser {
                let b = browser.eval(
                    "return playground.inBrowser(args.protocol, args.body);",
                    json!({ "protocol": protocol, "body": case.body }),
                );
                answers.push((
                    "browser",
                    b["status"].as_u64().unwrap_or(0) as u16,
                    b["body"].clone(),
                ));
            }
            for (host, status, body) in answers {
                assert_eq!(
                    status, reference.status,
                    "{}: {host} answered {status} {body}, kiln serve {} {}",
                    case.what, reference.status, reference.body
                );
                let (a, b) = (
                    without_digest(body.clone()),
                    without_digest(reference_json.clone()),
                );
                if let Some(diff) = differs(&a, &b, "") {
                    panic!(
                        "{}: {host} and kiln serve differ at {diff}\n{host}: {body}\nkiln serve: {}",
                        case.what, reference.body
                    );
                }
                compared += 1;
            }
        }
    }
    // Unknown models and routes: the same 404s from every HTTP host.
    for path in ["/v1/models/nope/predict", "/v2/models/nope/infer", "/v3/what"] {
        let case = Case {
            what: path.into(),
            method: "POST",
            path: path.into(),
            body: Some(r#"{"features": [1.0]}"#.into()),
            browser: None,
        };
        let reference = http(&server.url(""), &case);
        assert_eq!(reference.status, 404, "{path}: {}", reference.body);
        for (host, a) in [
            ("Spin", http(&spin.url(""), &case)),
            ("Worker", http(&worker.url(""), &case)),
        ] {
            assert_eq!(
                (a.status, a.body.as_str()),
                (404, reference.body.as_str()),
                "{path} on {host}"
            );
        }
    }
    assert!(compared > 80, "only {compared} comparisons ran");
}
