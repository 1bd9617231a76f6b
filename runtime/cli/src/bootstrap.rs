//! `kiln up` on an empty `$KILN_HOME`: the bundled example models are compiled,
//! registered with their onnxruntime reference answers as golden pairs, promoted to
//! Production and given the `champion` alias. On a later start whatever the registry
//! already holds is reused, so a restart costs no compile.

use crate::commands::compile::compile_with_progress;
use crate::register::signature;
use anyhow::Context;
use kiln_host::Host;
use kiln_registry::{GoldenPair, NewVersion, Registry, Stage};
use kiln_types::LoadOptions;
use serde_json::{Value, json};
use std::sync::Arc;

/// A model shipped inside the `kiln` binary.
pub struct Example {
    /// Registry name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// The ONNX model (built by `examples/make_examples.py`).
    pub onnx: &'static [u8],
    /// An OIP v2 request.
    pub request: &'static str,
    /// onnxruntime's answer to `request`.
    pub expected: &'static str,
    /// How it was trained.
    pub lineage: &'static str,
}

macro_rules! example_file {
    ($file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/models/",
            $file
        ))
    };
}
macro_rules! example_text {
    ($file:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/models/",
            $file
        ))
    };
}

/// The bundled examples, served by `kiln up`.
pub const EXAMPLES: &[Example] = &[
    Example {
        name: "house-price",
        description: "house price regressor: scikit-learn RandomForestRegressor, 10 features",
        onnx: example_file!("house_price_forest.onnx"),
        request: example_text!("house_price_forest.request.json"),
        expected: example_text!("house_price_forest.expected.json"),
        lineage: r#"{"framework": "scikit-learn", "estimator": "RandomForestRegressor(n_estimators=50, max_depth=10, min_samples_leaf=4, random_state=0)", "dataset": "synthetic house prices, 1500 rows, 80/20 split (examples/make_examples.py)", "features": ["sqft", "bedrooms", "bathrooms", "age", "lot_size", "garage", "distance_to_centre", "school_score", "floors", "renovated"], "converter": "skl2onnx"}"#,
    },
    Example {
        name: "iris",
        description: "iris species classifier: scikit-learn LogisticRegression, 4 features, 3 classes",
        onnx: example_file!("iris_logreg.onnx"),
        request: example_text!("iris_logreg.request.json"),
        expected: example_text!("iris_logreg.expected.json"),
        lineage: r#"{"framework": "scikit-learn", "estimator": "LogisticRegression", "dataset": "iris (sklearn.datasets.load_iris), 70/30 stratified split", "converter": "skl2onnx"}"#,
    },
    Example {
        name: "mlp",
        description: "a small multilayer perceptron (ONNX MatMul/Add/Relu)",
        onnx: example_file!("mlp.onnx"),
        request: example_text!("mlp.request.json"),
        expected: example_text!("mlp.expected.json"),
        lineage: r#"{"framework": "onnx", "dataset": "none: random weights from a fixed seed (examples/make_examples.py)"}"#,
    },
];

/// What `kiln up` did for one example.
pub struct Bootstrapped {
    pub name: &'static str,
    pub version: u64,
    pub reused: bool,
}

/// Registers and promotes every example the registry does not hold yet.
pub fn bootstrap(host: &Arc<Host>, registry: &Registry, actor: &str) -> anyhow::Result<Vec<Bootstrapped>> {
    let mut done = Vec::new();
    for (i, ex) in EXAMPLES.iter().enumerate() {
        let existing = registry.list(Some(ex.name))?;
        if let Some(v) = existing
            .iter()
            .rev()
            .find(|v| v.stage == Stage::Production)
            .or(existing.last())
        {
            done.push(Bootstrapped {
                name: ex.name,
                version: v.version,
                reused: true,
            });
            continue;
        }
        eprintln!(
            "compiling example model {} ({}/{})",
            ex.name,
            i + 1,
            EXAMPLES.len()
        );
        let options = LoadOptions {
            name: ex.name.to_string(),
            ..LoadOptions::default()
        };
        let compiled = compile_with_progress(host, ex.onnx, &options)
            .with_context(|| format!("compiling the bundled example {}", ex.name))?;
        let request: Value = serde_json::from_str(ex.request)?;
        let response: Value = serde_json::from_str(ex.expected)?;
        let lineage: Value = serde_json::from_str(ex.lineage)?;
        let (mv, _) = registry.register(
            NewVersion {
                name: ex.name.to_string(),
                component: compiled.wasm,
                source_digest: Some(kiln_types::digest(ex.onnx)),
                description: ex.description.to_string(),
                tags: [("source".to_string(), "kiln up".to_string())].into(),
                lineage: json!({"training": lineage, "golden_reference": "onnxruntime"}),
                signature: signature(&compiled.model),
                golden: vec![GoldenPair { request, response }],
            },
            actor,
        )?;
        registry.transition_stage(ex.name, mv.version, Stage::Production, true, actor)?;
        registry.set_alias(ex.name, "champion", mv.version, actor)?;
        done.push(Bootstrapped {
            name: ex.name,
            version: mv.version,
            reused: false,
        });
    }
    Ok(done)
}

/// Ready-to-paste examples for a server on `addr`.
pub fn usage(addr: &str) -> String {
    format!(
        r#"
Try it:

  # the predict API (house-price is a regressor: confidence is null)
  curl -s http://{addr}/v1/models/house-price/predict \
    -d '{{"features": [1850, 3, 2, 15, 6000, 1, 12.5, 7, 2, 1]}}'

  # a classifier: the label and its probability
  curl -s http://{addr}/v1/models/iris/predict -d '{{"features": [6.3, 3.4, 5.6, 2.4], "model_version": "champion"}}'

  # Open Inference Protocol v2 (Triton / KServe clients)
  curl -s http://{addr}/v2/models/iris/infer \
    -d '{{"inputs": [{{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [6.3, 3.4, 5.6, 2.4]}}]}}'

  # Triton's Python client (pip install 'tritonclient[http]')
  python3 - <<'PY'
import numpy as np, tritonclient.http as httpclient
c = httpclient.InferenceServerClient("{addr}")
x = httpclient.InferInput("X", [1, 4], "FP32"); x.set_data_from_numpy(np.array([[6.3, 3.4, 5.6, 2.4]], dtype=np.float32))
r = c.infer("iris", [x])
print("label", int(r.as_numpy("label")[0]), "probabilities", [round(float(p), 4) for p in r.as_numpy("probabilities")[0]])
PY

  # metrics (Prometheus text format)
  curl -s http://{addr}/metrics | grep '^kiln_requests_total'
"#
    )
}
