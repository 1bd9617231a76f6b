//! The `kiln` command line end to end: compile, predict, inspect, and its errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models")
}

/// The shared AOT cache under `target/`, so each test component compiles once per checkout.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-test-cache/aot")
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_CACHE_DIR", cache_dir())
        .output()
        .expect("running kiln")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn compile_predict_and_inspect_the_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp.wasm");
    let onnx = models().join("mlp.onnx");
    let o = kiln(&["compile", path(&onnx), "--name", "mlp-demo", "-o", path(&out)]);
    assert!(o.status.success(), "compile failed: {}", text(&o.stderr));
    let summary = text(&o.stdout);
    let wasm = std::fs::read(&out).expect("the component was written");
    let digest = kiln_types::digest(&wasm);
    assert!(summary.contains(&format!("sha256:{digest}")), "{summary}");
    assert!(summary.contains("FP32 [-1, 10]"), "{summary}");

    let request = models().join("mlp.request.json");
    let o = kiln(&["predict", path(&out), "--request", path(&request)]);
    assert!(o.status.success(), "predict failed: {}", text(&o.stderr));
    let response: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(response["model_name"], "mlp-demo");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models().join("mlp.expected.json")).unwrap()).unwrap();
    let got = response["outputs"][0]["data"].as_array().unwrap();
    let want = expected["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!(
            (g - w).abs() <= 1e-5 || (g - w).abs() <= 1e-4 * w.abs(),
            "{g} vs onnxruntime {w}"
        );
    }

    let o = kiln(&["inspect", path(&out), "--json"]);
    assert!(o.status.success(), "inspect failed: {}", text(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["digest"], format!("sha256:{digest}"));
    assert_eq!(info["name"], "mlp-demo");
    let onnx_digest = kiln_types::digest(&std::fs::read(&onnx).unwrap());
    assert_eq!(info["source_digest"], format!("sha256:{onnx_digest}"));
    assert_eq!(info["tract_version"], kiln_engine::TRACT_VERSION);
    assert_eq!(info["inputs"][0]["shape"], serde_json::json!([-1, 10]));
    let o = kiln(&["inspect", path(&out)]);
    assert!(text(&o.stdout).contains(&format!("digest   sha256:{digest}")));
}

#[test]
fn predict_compiles_an_onnx_file_in_memory() {
    let o = kiln(&[
        "predict",
        path(&models().join("iris_logreg.onnx")),
        "--request",
        path(&models().join("iris_logreg.request.json")),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let response: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models().join("iris_logreg.expected.json")).unwrap()).unwrap();
    assert_eq!(
        response["outputs"][0]["data"], expected["outputs"][0]["data"],
        "labels are exact"
    );
}

#[test]
fn not_onnx_is_a_clear_error_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.onnx");
    std::fs::write(&bogus, b"this is not a model").unwrap();
    let out = dir.path().join("bogus.wasm");
    let o = kiln(&["compile", path(&bogus), "-o", path(&out)]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("not an ONNX model"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists(), "no half-written output");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary files left"
    );
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.wasm");
    let o = kiln(&[
        "compile",
        path(&models().join("invalid/unsupported_op.onnx")),
        "-o",
        path(&out),
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("FancyOp") && err.contains("node"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_bad_request_fails_with_a_message_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    std::fs::write(
        &req,
        r#"{"inputs":[{"name":"nope","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
    )
    .unwrap();
    let o = kiln(&[
        "predict",
        path(&models().join("mlp.onnx")),
        "--request",
        path(&req),
    ]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "nothing on stdout on failure");
    assert!(text(&o.stderr).contains("nope"), "{}", text(&o.stderr));
}
