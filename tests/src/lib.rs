//! Shared helpers of Kiln's cross-crate test suites: one host per test process, example
//! models compiled once per checkout (components cached under `target/`), and the
//! onnxruntime reference outputs committed next to each example.

pub mod alertmanager;
pub mod chromium;
pub mod cloudflare_worker;
pub mod fleet;
pub mod kiln_process;
pub mod mlflow_server;
pub mod node_tests;
pub mod spin_app;
pub mod web_package;

use kiln_api::oip::InferRequest;
use kiln_engine::Tensor;
use kiln_host::{Host, HostConfig, LoadedModel};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `examples/models`.
pub fn models_dir() -> PathBuf {
    root().join("examples").join("models")
}

/// Where tests keep compiled components and the AOT cache between runs.
pub fn test_cache_dir() -> PathBuf {
    root().join("target").join("kiln-test-cache")
}

/// A host configuration for tests, sharing the AOT cache under `target/`.
pub fn test_config() -> HostConfig {
    HostConfig {
        cache_dir: Some(test_cache_dir().join("aot")),
        ..HostConfig::default()
    }
}

/// One host for the whole test process.
pub fn host() -> Arc<Host> {
    static HOST: OnceLock<Arc<Host>> = OnceLock::new();
    HOST.get_or_init(|| Arc::new(Host::new(test_config()).expect("creating the test host")))
        .clone()
}

/// The ONNX bytes of an example.
pub fn onnx(name: &str) -> Vec<u8> {
    let path = models_dir().join(format!("{name}.onnx"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The component of an example, compiled at most once per checkout (see
/// `compile_cached`, which also lets one compile per example run at a time).
pub fn component(name: &str) -> Vec<u8> {
    let dir = test_cache_dir().join("components");
    kiln_host::compile::compile_cached(&host(), &onnx(name), &Default::default(), &dir)
        .unwrap_or_else(|e| panic!("compiling {name}: {e}"))
}

/// An example's component, loaded on the shared host.
pub fn loaded(name: &str) -> LoadedModel {
    host()
        .load(&component(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The example's request (an OIP v2 body) as raw JSON.
pub fn request_json(name: &str) -> Vec<u8> {
    let path = models_dir().join(format!("{name}.request.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The example's request as tensors.
pub fn request(name: &str) -> Vec<Tensor> {
    InferRequest::from_json(&request_json(name))
        .and_then(|r| r.tensors())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One reference output computed by onnxruntime.
#[derive(Debug, Deserialize)]
pub struct ExpectedOutput {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    pub data: Vec<Option<f64>>,
}

#[derive(Debug, Deserialize)]
struct Expected {
    outputs: Vec<ExpectedOutput>,
}

/// The onnxruntime outputs for the example's request.
pub fn expected(name: &str) -> Vec<ExpectedOutput> {
    let path = models_dir().join(format!("{name}.expected.json"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let e: Expected = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    e.outputs
}

/// Compares outputs with onnxruntime's: names, types and shapes exactly; floats within
/// relative 1e-4 or absolute 1e-5; integers (labels) exactly.
pub fn assert_matches_reference(what: &str, got: &[Tensor], expected: &[ExpectedOutput]) {
    assert_eq!(got.len(), expected.len(), "{what}: number of outputs");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g.name, e.name, "{what}: output name");
        assert_eq!(
            g.element_type.oip_name(),
            e.datatype,
            "{what}: datatype of `{}`",
            e.name
        );
        assert_eq!(g.shape, e.shape, "{what}: shape of `{}`", e.name);
        let values = g.to_f64_vec().expect("output data");
        let float = matches!(e.datatype.as_str(), "FP16" | "FP32" | "FP64");
        for (i, (a, b)) in values.iter().zip(&e.data).enumerate() {
            let b = b.unwrap_or(f64::NAN);
            let ok = if float {
                (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 || (a - b).abs() <= 1e-4 * b.abs()
            } else {
                a == &b
            };
            assert!(ok, "{what}: `{}`[{i}] = {a}, onnxruntime says {b}", e.name);
        }
    }
}

/// Names of every example with a reference (`examples/models/*.expected.json`).
pub fn example_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models_dir())
        .expect("examples/models")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".expected.json"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Whether a value matches onnxruntime's: within 1e-5, relative above 1 (the forest
/// predicts prices near 5e5, where one f32 step is 0.03); NaN matches NaN.
pub fn close_to_reference(got: f64, want: f64) -> bool {
    (got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

/// Checks OIP outputs (`[{name, datatype, shape, data}]`, as an infer answer's `outputs`)
/// against onnxruntime's for `example`: every reference output is there, with its
/// datatype, shape and values (see [`close_to_reference`]).
pub fn assert_outputs_match_onnxruntime(what: &str, outputs: &serde_json::Value, example: &str) {
    let outputs = outputs
        .as_array()
        .unwrap_or_else(|| panic!("{what}: outputs are not a list: {outputs}"));
    let wanted = expected(example);
    assert_eq!(outputs.len(), wanted.len(), "{what}: number of outputs");
    for want in wanted {
        let got = outputs
            .iter()
            .find(|o| o["name"] == want.name.as_str())
            .unwrap_or_else(|| panic!("{what}: no output `{}` in {outputs:?}", want.name));
        assert_eq!(
            got["datatype"],
            want.datatype.as_str(),
            "{what}: datatype of {}",
            want.name
        );
        assert_eq!(
            got["shape"],
            serde_json::json!(want.shape),
            "{what}: shape of {}",
            want.name
        );
        let values: Vec<f64> = got["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: data of {}", want.name))
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        assert_eq!(values.len(), want.data.len(), "{what}: {} values", want.name);
        for (i, (g, w)) in values.iter().zip(&want.data).enumerate() {
            let w = w.unwrap_or(f64::NAN);
            assert!(
                close_to_reference(*g, w),
                "{what}: `{}`[{i}] = {g}, onnxruntime says {w}",
                want.name
            );
        }
    }
}

/// Runs a build script that writes into `target/wasm-js` (the Worker's and the browser
/// package's), once at a time across test processes (a file lock), without the test
/// harness's cargo variables (a different RUSTFLAGS would rebuild tract for wasm from
/// scratch). Panics with the script's output and `needs` when it fails.
pub fn build_wasm_js(script: &Path, lock_name: &str, envs: &[(&str, &Path)], needs: &str) -> PathBuf {
    let root = root();
    let target = root.join("target").join("wasm-js");
    std::fs::create_dir_all(&target).expect("creating target/wasm-js");
    let lock = std::fs::File::create(target.join(lock_name)).expect("creating the build lock");
    lock.lock().expect("locking the wasm-js build");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script).current_dir(&root);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let run = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let _ = lock.unlock();
    assert!(
        run.status.success(),
        "{} failed (needs {needs}):\n{}{}",
        script.display(),
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    target
}
