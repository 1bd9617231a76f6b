//! Triton's own Python client (`tritonclient[http]`, unmodified) against `kiln serve`:
//! health, model readiness, metadata, config, and inference with binary and JSON tensors,
//! checked against onnxruntime's outputs.

use kiln_tests::kiln_process::KilnHome;
use kiln_tests::{expected, models_dir, root};
use serde_json::Value;
use std::process::Command;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 || (a - b).abs() <= 1e-4 * b.abs()
}

fn assert_outputs(what: &str, got: &Value, example: &str) {
    for e in expected(example) {
        let o = &got[&e.name];
        let shape: Vec<u64> = serde_json::from_value(o["shape"].clone()).unwrap_or_default();
        assert_eq!(shape, e.shape, "{what}: shape of {}", e.name);
        let data: Vec<f64> = serde_json::from_value(o["data"].clone()).unwrap_or_default();
        assert_eq!(data.len(), e.data.len(), "{what}: length of {}", e.name);
        for (i, (a, b)) in data.iter().zip(&e.data).enumerate() {
            let b = b.unwrap_or(f64::NAN);
            assert!(
                close(*a, b),
                "{what}: {}[{i}] = {a}, onnxruntime says {b}",
                e.name
            );
        }
    }
}

#[test]
fn tritonclient_speaks_to_kiln_serve_with_binary_and_json_tensors() {
    let home = KilnHome::new();
    for (example, name) in [("iris_logreg", "iris"), ("house_price_forest", "house-price")] {
        let v = home.register_example(example, name);
        home.run(&["models", "promote", name, &v.to_string(), "Production"]);
    }
    let server = home.serve("serve", &["--cache", "off"]);
    for (example, name) in [("iris_logreg", "iris"), ("house_price_forest", "house-price")] {
        let out = Command::new("python3")
            .arg(root().join("tests/python/triton_client_check.py"))
            .arg(&server.addr)
            .arg(name)
            .arg(models_dir().join(format!("{example}.request.json")))
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "tritonclient script failed:\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
        assert_eq!(r["live"], true);
        assert_eq!(r["ready"], true);
        assert_eq!(r["model_ready"], true, "{name} ready");
        assert_eq!(r["unknown_model_ready"], false);
        assert_eq!(r["metadata"]["name"], name);
        assert_eq!(r["metadata"]["versions"], serde_json::json!(["1"]));
        let inputs = r["metadata"]["inputs"].as_array().expect("inputs");
        assert_eq!(inputs[0]["name"], "X");
        assert_eq!(inputs[0]["datatype"], "FP32");
        assert_eq!(r["config"]["name"], name);
        assert!(
            r["server_metadata"]["extensions"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == "binary_tensor_data")),
            "{}",
            r["server_metadata"]
        );
        assert_outputs(&format!("{name} binary"), &r["binary"], example);
        assert_outputs(&format!("{name} json"), &r["json"], example);
        assert_outputs(&format!("{name} default outputs"), &r["default"], example);
        assert_eq!(r["binary_id"], "req-binary");
        assert_eq!(r["json_id"], "req-json");
        assert_eq!(r["subset"].as_array().map(Vec::len), Some(1), "{}", r["subset"]);
        let unknown = r["unknown_model_error"].as_str().expect("unknown model refused");
        assert!(unknown.contains("no-such-model"), "{unknown}");
        let bad = r["bad_shape_error"].as_str().expect("bad shape refused");
        assert!(!bad.is_empty());
    }
}
