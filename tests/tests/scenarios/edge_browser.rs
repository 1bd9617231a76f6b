//! The browser package (`edge-worker/browser`) in real headless Chromium, loaded by the
//! playground page `kiln serve` serves at `/ui/playground`: a registry version's bundle is
//! fetched from the server and checked against its SHA-256, predictions match
//! onnxruntime's reference outputs, tampered bytes or a wrong digest are refused, and bad
//! input gets the same status and error JSON in the browser as from the server.

use kiln_tests::chromium::Browser;
use kiln_tests::kiln_process::{KilnHome, Server};
use kiln_tests::{assert_outputs_match_onnxruntime, request_json, web_package};
use serde_json::{Value, json};

/// (example file, registry name).
const MODELS: [(&str, &str); 2] = [("mlp", "mlp"), ("house_price_forest", "forest")];

/// A registry with the example MLP and forest in Production, served by `kiln serve`.
fn serve_examples(home: &KilnHome) -> Server {
    for (example, name) in MODELS {
        let v = home.register_example(example, name);
        home.run(&["models", "promote", name, &v.to_string(), "Production"]);
    }
    home.serve("serve", &["--cache", "off"])
}

/// Chromium on the playground page, with the served versions listed.
fn open_playground(server: &Server) -> Browser {
    let browser = Browser::start();
    browser.open(&server.url("/ui/playground"));
    let list = browser.eval("return await playground.listVersions();", Value::Null);
    assert_eq!(
        list["package"], true,
        "the server finds the browser package: {list}"
    );
    browser
}

#[test]
fn browser_package_loads_registry_versions_and_matches_onnxruntime() {
    web_package::package_dir();
    let home = KilnHome::new();
    let server = serve_examples(&home);
    let browser = open_playground(&server);
    let list = browser.eval("return playground.state.list;", Value::Null);
    let rows = browser.eval(
        "return document.querySelectorAll('#versions tbody tr').length;",
        Value::Null,
    );
    assert_eq!(rows, 2, "the page lists both served versions");

    for (example, name) in MODELS {
        let listed = list["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .unwrap_or_else(|| panic!("{name} not listed: {list}"));
        let version = &listed["versions"][0];
        let sha256 = version["bundle_sha256"].as_str().unwrap_or_default().to_string();
        assert_eq!(sha256.len(), 64, "{name}: bundle digest listed: {version}");

        // The bundle route serves bytes whose SHA-256 is the one in its header and listing.
        let r = ureq::get(server.url(&format!("/v1/models/{name}/versions/1/bundle")))
            .call()
            .expect("GET bundle");
        let header = r
            .headers()
            .get("x-kiln-bundle-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = r.into_body().read_to_vec().expect("bundle bytes");
        assert_eq!(header, sha256, "{name}: header and listing agree");
        assert_eq!(
            kiln_types::digest(&bytes),
            sha256,
            "{name}: bytes match the digest"
        );
        assert!(bytes.starts_with(b"KILNMDL1"), "{name}: a Kiln bundle");

        // The page loads it into the browser package; info() describes the version.
        let info = browser.eval(
            "return await playground.load(args.name, 1);",
            json!({"name": name}),
        );
        assert_eq!(info["name"], name, "{info}");
        assert_eq!(info["version"], 1, "{info}");
        assert_eq!(info["digest"], sha256.as_str(), "{info}");
        assert_eq!(
            info["inputs"], version["inputs"],
            "{name}: the browser sees the server's inputs"
        );
        assert_eq!(info["outputs"], version["outputs"], "{name}: and outputs");

        // predict() with typed arrays: the request's data as a Float32Array, shape inferred.
        let request: Value = serde_json::from_slice(&request_json(example)).expect("request JSON");
        let input = &request["inputs"][0];
        let outputs = browser.eval(
            "const out = playground.state.model.predict({ [args.name]: new Float32Array(args.data) });\n\
             return out.map((o) => ({ ...o, data: Array.from(o.data, Number) }));",
            json!({"name": input["name"], "data": input["data"]}),
        );
        assert_outputs_match_onnxruntime(&format!("{name} predict(typed arrays)"), &outputs, example);

        // predict() with the Open Inference Protocol's input objects (plain arrays).
        let outputs = browser.eval(
            "const out = playground.state.model.predict(args.inputs);\n\
             return out.map((o) => ({ ...o, data: Array.from(o.data, Number) }));",
            json!({"inputs": request["inputs"]}),
        );
        assert_outputs_match_onnxruntime(&format!("{name} predict(OIP inputs)"), &outputs, example);
    }
}

#[test]
fn browser_package_refuses_a_tampered_bundle_or_a_wrong_digest() {
    web_package::package_dir();
    let home = KilnHome::new();
    let server = serve_examples(&home);
    let browser = open_playground(&server);

    // A digest that is not the bundle's: the page's load is refused before anything runs.
    let wrong = "0".repeat(64);
    let err = browser
        .run(
            "return await playground.load('mlp', 1, { sha256: args.wrong });",
            json!({"wrong": wrong}),
        )
        .expect_err("a wrong digest must be refused");
    assert!(
        err.contains("refusing the model") && err.contains(&wrong),
        "{err}"
    );
    assert_eq!(
        browser.eval("return playground.state.model === null;", Value::Null),
        true
    );

    // The right digest over bytes changed in flight: refused too.
    let err = browser
        .run(
            "const v = playground.state.list.models.find((m) => m.name === 'mlp').versions[0];\n\
             const bytes = new Uint8Array(await (await fetch(v.bundle_url)).arrayBuffer());\n\
             bytes[bytes.length - 10] ^= 0x01;\n\
             const { KilnModel } = await playground.kiln();\n\
             await KilnModel.load(bytes, { sha256: v.bundle_sha256 });",
            Value::Null,
        )
        .expect_err("tampered bytes must be refused");
    assert!(err.contains("refusing the model"), "{err}");

    // No digest at all: refused with a message saying what to pass.
    let err = browser
        .run(
            "const { KilnModel } = await playground.kiln();\n\
             await KilnModel.load('/v1/models/mlp/versions/1/bundle', {});",
            Value::Null,
        )
        .expect_err("a load without a digest must be refused");
    assert!(err.contains("sha256"), "{err}");

    // And the untouched bytes with the listed digest load.
    let info = browser.eval("return await playground.load('mlp', 1);", Value::Null);
    assert_eq!(info["name"], "mlp");
}

/// The browser's answer and the server's for one request body, through the page.
fn both(browser: &Browser, protocol: &str, body: &str) -> (Value, Value) {
    let r = browser.eval(
        "return await playground.predictBoth(args.protocol, args.body);",
        json!({"protocol": protocol, "body": body}),
    );
    (r["browser"].clone(), r["server"].clone())
}

#[test]
fn browser_answers_and_errors_match_kiln_serve_for_the_same_requests() {
    web_package::package_dir();
    let home = KilnHome::new();
    let server = serve_examples(&home);
    let browser = open_playground(&server);

    for (example, name) in MODELS {
        browser.eval("await playground.load(args.name, 1);", json!({"name": name}));
        let request = String::from_utf8(request_json(example)).expect("UTF-8 request");

        // The example request through the Open Inference Protocol: both answer 200 with
        // onnxruntime's outputs, and with the same JSON but for the request id.
        let (b, s) = both(&browser, "infer", &request);
        assert_eq!(
            (b["status"].as_u64(), s["status"].as_u64()),
            (Some(200), Some(200)),
            "{name}: {b} / {s}"
        );
        assert_outputs_match_onnxruntime(
            &format!("{name} infer in the browser"),
            &b["body"]["outputs"],
            example,
        );
        assert_outputs_match_onnxruntime(
            &format!("{name} infer on the server"),
            &s["body"]["outputs"],
            example,
        );
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
            }
            v
        };
        assert_eq!(
            strip(&b["body"]),
            strip(&s["body"]),
            "{name}: the same infer answer"
        );

        // The seed API with one row: the same answer but for ids and timings.
        let request: Value = serde_json::from_str(&request).expect("request JSON");
        let row = request["inputs"][0]["shape"][1].as_u64().unwrap_or(0) as usize;
        let features: Vec<Value> = request["inputs"][0]["data"]
            .as_array()
            .map(|d| d[..row].to_vec())
            .unwrap_or_default();
        let (b, s) = both(&browser, "predict", &json!({"features": features}).to_string());
        assert_eq!(
            (b["status"].as_u64(), s["status"].as_u64()),
            (Some(200), Some(200)),
            "{name}: {b} / {s}"
        );
        for key in ["prediction", "confidence", "model_version"] {
            assert_eq!(b["body"][key], s["body"][key], "{name}: seed `{key}`: {b} / {s}");
        }
        assert!(b["body"]["request_id"].is_string(), "{name}: a request id: {b}");

        // Bad input: the same status and the same error JSON, byte for byte.
        let input = request["inputs"][0]["name"].as_str().unwrap_or_default();
        let bad = [
            ("predict", json!({"features": [1.0, 2.0, 3.0]}).to_string()),
            ("predict", json!({"features": "abc"}).to_string()),
            ("predict", json!({"rows": [[1.0]]}).to_string()),
            ("predict", "{\"features\": [1, 2,".to_string()),
            ("infer", "not json".to_string()),
            (
                "infer",
                json!({"inputs": [{"name": input, "shape": [1, row], "datatype": "INT32",
                "data": vec![1; row]}]})
                .to_string(),
            ),
            (
                "infer",
                json!({"inputs": [{"name": input, "shape": [1, row + 1], "datatype": "FP32",
                "data": vec![1.0; row + 1]}]})
                .to_string(),
            ),
            (
                "infer",
                json!({"inputs": [{"name": input, "shape": [1, row], "datatype": "FP32",
                "data": [1.0]}]})
                .to_string(),
            ),
            (
                "infer",
                json!({"inputs": [{"name": "nope", "shape": [1, row], "datatype": "FP32",
                "data": vec![1.0; row]}]})
                .to_string(),
            ),
            ("infer", json!({"inputs": []}).to_string()),
        ];
        for (protocol, body) in bad {
            let (b, s) = both(&browser, protocol, &body);
            let status = s["status"].as_u64().unwrap_or(0);
            assert!(
                (400..500).contains(&status),
                "{name} {protocol} {body}: the server says {s}"
            );
            assert!(
                s["body"]["error"].is_string(),
                "{name} {protocol} {body}: error JSON {s}"
            );
            assert_eq!(b, s, "{name} {protocol} {body}: browser and server differ");
        }
    }
}

#[test]
fn playground_page_buttons_load_a_version_and_show_matching_answers() {
    web_package::package_dir();
    let home = KilnHome::new();
    let server = serve_examples(&home);
    let browser = open_playground(&server);
    // What a user does: pick the first listed version, press "Load in browser", then
    // "Predict" with the sample request the page fills in, for each of the two APIs.
    let wait = "const until = async (f) => { for (let i = 0; i < 600; i++) { const v = f(); if (v) return v; \
                await new Promise((r) => setTimeout(r, 50)); } throw new Error('timed out'); };";
    let loaded = browser.eval(
        &format!(
            "{wait}\n\
             document.querySelector('#versions tbody tr input').click();\n\
             document.getElementById('load').click();\n\
             return await until(() => /loaded|refus|error/i.test(document.getElementById('status').textContent) \
               && document.getElementById('status').textContent);"
        ),
        Value::Null,
    );
    assert!(
        loaded.as_str().is_some_and(|s| s.contains("digest verified")),
        "{loaded}"
    );
    for protocol in ["infer", "predict"] {
        let shown = browser.eval(
            &format!(
                "{wait}\n\
                 const p = document.getElementById('protocol'); p.value = args.protocol; p.onchange();\n\
                 document.getElementById('compare').textContent = '';\n\
                 document.getElementById('predict').click();\n\
                 const text = await until(() => document.getElementById('compare').textContent);\n\
                 return {{ text, cls: document.getElementById('compare').className,\n\
                   browser: JSON.parse(document.getElementById('browser').textContent),\n\
                   server: JSON.parse(document.getElementById('server').textContent) }};"
            ),
            json!({"protocol": protocol}),
        );
        assert_eq!(
            shown["cls"], "ok",
            "{protocol}: the page shows agreement: {shown}"
        );
        assert!(
            shown["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("same answer")),
            "{shown}"
        );
        assert!(shown["browser"].get("error").is_none(), "{protocol}: {shown}");
        assert_eq!(
            shown["browser"]["model_version"], shown["server"]["model_version"],
            "{protocol}: {shown}"
        );
    }
}

/// The playground and a restricted (Staging) version: without a token the page refuses it
/// and says why; with a viewer token typed into its field (kept in sessionStorage) it
/// loads the bundle and the server answers the forced version; a token limited to another
/// model is refused by the server.
#[test]
fn the_playground_needs_a_viewer_token_for_a_restricted_version() {
    web_package::package_dir();
    let home = KilnHome::new();
    let v = home.register_example("mlp", "mlp");
    home.run(&["models", "promote", "mlp", &v.to_string(), "Staging"]);
    let viewer = kiln_tests::fleet::make_token(&home, "browser-viewer", "viewer");
    let server = home.serve("serve", &["--cache", "off"]);
    let browser = open_playground(&server);
    let listed = browser.eval(
        "return playground.state.list.models.find((m) => m.name === 'mlp').versions[0];",
        Value::Null,
    );
    assert_eq!(listed["open"], false, "Staging is restricted: {listed}");
    let cell = browser.eval(
        "return document.querySelector('#versions tbody tr').textContent;",
        Value::Null,
    );
    assert!(
        cell.as_str().unwrap_or_default().contains("viewer token"),
        "{cell}"
    );

    let refused = browser.run("return await playground.load('mlp', args.v);", json!({"v": v}));
    let why = refused.expect_err("a restricted version loads only with a token");
    assert!(
        why.contains("restricted") && why.contains("viewer token"),
        "{why}"
    );

    let set_token = "const f = document.getElementById('token'); f.value = args.t; \
                     f.dispatchEvent(new Event('input')); return sessionStorage.getItem('kiln-token');";
    let stored = browser.eval(set_token, json!({"t": viewer}));
    assert_eq!(stored, viewer.as_str(), "the token is kept in the tab");
    let info = browser.eval("return await playground.load('mlp', args.v);", json!({"v": v}));
    assert_eq!(info["version"], json!(v), "{info}");
    let body = String::from_utf8(request_json("mlp")).unwrap();
    let both = browser.eval(
        "return await playground.predictBoth('infer', args.body);",
        json!({"body": body}),
    );
    assert_eq!(both["server"]["status"], 200, "{both}");
    assert_outputs_match_onnxruntime(
        "mlp (server, viewer token)",
        &both["server"]["body"]["outputs"],
        "mlp",
    );

    // A token limited to another model: the page sends it, the server refuses it.
    let other = home.run(&[
        "tokens",
        "create",
        "--name",
        "fraud-only",
        "--role",
        "viewer",
        "--model",
        "fraud-*",
    ]);
    browser.eval(set_token, json!({"t": other.trim()}));
    let answer = browser.eval(
        "return await playground.onServer('mlp', args.v, 'infer', args.body);",
        json!({"v": v, "body": body}),
    );
    assert_eq!(answer["status"], 403, "{answer}");
    assert_eq!(answer["body"]["kind"], "restricted_version", "{answer}");
}
