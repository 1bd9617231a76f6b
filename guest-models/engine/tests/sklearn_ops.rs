//! The example models (`examples/models`, made by `examples/make_examples.py`) give the
//! answers onnxruntime gives: every output, by name, within 1e-4 relative or 1e-5
//! absolute for floats, exactly for integers. They cover the `ai.onnx.ml` operators Kiln
//! adds to tract.

use kiln_engine::{ElementType, EngineError, LoadOptions, Model, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const REL_TOL: f64 = 1e-4;
const ABS_TOL: f64 = 1e-5;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn load(name: &str, options: &LoadOptions) -> Model {
    let path = models_dir().join(format!("{name}.onnx"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Model::load(&bytes, options).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// An Open Inference Protocol tensor (`name`, `shape`, `datatype`, `data`) as a Kiln tensor;
/// `null` in float data is NaN.
fn oip_tensor(v: &Value) -> Tensor {
    let name = v["name"].as_str().expect("tensor name").to_string();
    let datatype = v["datatype"].as_str().expect("tensor datatype");
    let element_type = ElementType::from_oip_name(datatype).unwrap_or_else(|| panic!("datatype {datatype}"));
    let shape: Vec<u64> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim"))
        .collect();
    let data = v["data"].as_array().expect("data");
    let float = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
    let int = |x: &Value| {
        x.as_i64()
            .unwrap_or_else(|| panic!("{name}: {x} is not an integer"))
    };
    let bytes: Vec<u8> = match element_type {
        ElementType::F32 => data
            .iter()
            .flat_map(|x| (float(x) as f32).to_le_bytes())
            .collect(),
        ElementType::F64 => data.iter().flat_map(|x| float(x).to_le_bytes()).collect(),
        ElementType::I64 => data.iter().flat_map(|x| int(x).to_le_bytes()).collect(),
        ElementType::I32 => data.iter().flat_map(|x| (int(x) as i32).to_le_bytes()).collect(),
        ElementType::Bool => data.iter().map(|x| x.as_bool().expect("bool") as u8).collect(),
        other => panic!("{name}: the test reads no {other} data"),
    };
    Tensor {
        name,
        element_type,
        shape,
        data: bytes,
    }
}

/// Rows `0..rows` of a tensor whose first axis is the batch.
fn first_rows(t: &Tensor, rows: u64) -> Tensor {
    let row_bytes = t.data.len() / t.shape[0] as usize;
    let mut shape = t.shape.clone();
    shape[0] = rows;
    Tensor {
        data: t.data[..row_bytes * rows as usize].to_vec(),
        shape,
        ..t.clone()
    }
}

fn assert_close(model: &str, got: &Tensor, want: &Tensor) {
    let what = format!("{model}: output `{}`", want.name);
    assert_eq!(got.name, want.name, "{what}: name");
    assert_eq!(got.element_type, want.element_type, "{what}: element type");
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let (g, w) = (
        got.to_f64_vec().expect("output data"),
        want.to_f64_vec().expect("expected data"),
    );
    let float = matches!(
        want.element_type,
        ElementType::F16 | ElementType::F32 | ElementType::F64
    );
    for (i, (g, w)) in g.iter().zip(&w).enumerate() {
        let ok = if float {
            let diff = (g - w).abs();
            diff <= ABS_TOL || diff <= REL_TOL * w.abs() || (g.is_nan() && w.is_nan())
        } else {
            g == w
        };
        assert!(ok, "{what}[{i}]: got {g}, onnxruntime {w}");
    }
}

/// Runs NAME on its request and compares with onnxruntime: the whole batch, then the
/// first row alone (the batch dimension is symbolic, so both sizes must work).
fn check_example(name: &str) {
    let dir = models_dir();
    let model = load(name, &LoadOptions::default());
    let request = read_json(&dir.join(format!("{name}.request.json")));
    let expected = read_json(&dir.join(format!("{name}.expected.json")));
    let inputs: Vec<Tensor> = request["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(oip_tensor)
        .collect();
    let want: Vec<Tensor> = expected["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(oip_tensor)
        .collect();

    let got = model
        .predict(&inputs)
        .unwrap_or_else(|e| panic!("{name}: predict: {e}"));
    assert_eq!(
        got.iter().map(|t| &t.name).collect::<Vec<_>>(),
        want.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "{name}: output names, in graph order"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_close(name, g, w);
    }

    let one_row: Vec<Tensor> = inputs.iter().map(|t| first_rows(t, 1)).collect();
    let got = model
        .predict(&one_row)
        .unwrap_or_else(|e| panic!("{name}: predict one row: {e}"));
    for (g, w) in got.iter().zip(&want) {
        assert_close(&format!("{name} (first row alone)"), g, &first_rows(w, 1));
    }

    if let Some(labels) = expected.get("labels").and_then(Value::as_array) {
        let labels: Vec<String> = labels
            .iter()
            .map(|l| l.as_str().expect("label").to_string())
            .collect();
        assert_eq!(model.info().labels, labels, "{name}: class labels");
    }
}

macro_rules! matches_onnxruntime {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_example($name);
            }
        )*

        const EXAMPLES: &[&str] = &[$($name),*];
    };
}

matches_onnxruntime! {
    mlp_matmul_gemm_relu_softmax_matches_onnxruntime => "mlp",
    cnn_conv_maxpool_global_average_pool_matches_onnxruntime => "cnn",
    house_price_random_forest_tree_ensemble_regressor_matches_onnxruntime => "house_price_forest",
    iris_logistic_regression_linear_classifier_matches_onnxruntime => "iris_logreg",
    gradient_boosting_classifier_with_zipmap_returns_probabilities_as_onnxruntime => "gbm_classifier",
    binary_gradient_boosting_classifier_matches_onnxruntime => "ops_gbm_binary",
    binary_random_forest_classifier_labels_match_onnxruntime => "ops_forest_binary",
    standard_scaler_pipeline_scaler_matches_onnxruntime => "scaler_pipeline",
    binarizer_and_normalizer_feature_union_matches_onnxruntime => "ops_binarizer_normalizer",
    imputer_replaces_nan_like_onnxruntime => "ops_imputer",
    one_hot_encoder_on_int64_columns_with_unknown_category_matches_onnxruntime => "ops_onehot",
    array_feature_extractor_column_transformer_matches_onnxruntime => "ops_array_feature_extractor",
    tree_regressor_average_two_targets_base_values_all_branch_modes_matches_onnxruntime => "ops_tree_regressor_avg",
    tree_regressor_max_aggregate_matches_onnxruntime => "ops_tree_regressor_max",
    tree_regressor_min_with_partial_votes_gives_zero_like_onnxruntime => "ops_tree_regressor_min",
    gradient_boosting_regressor_sum_with_base_value_matches_onnxruntime => "ops_tree_regressor_gbr",
    linear_svc_three_class_matches_onnxruntime => "ops_linear_svc",
    binary_sgd_classifier_with_array_feature_extractor_on_1d_classes_matches_onnxruntime => "ops_sgd_binary",
    identity_echo_matches_onnxruntime => "echo4",
    mul_echo_double_matches_onnxruntime => "echo4_double",
    slice_relu_cast_squeeze_gather_echo_faulty_on_valid_rows_matches_onnxruntime => "echo4_faulty",
}

#[test]
fn every_example_model_is_checked_against_onnxruntime() {
    let mut on_disk: Vec<String> = std::fs::read_dir(models_dir())
        .expect("examples/models")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".onnx")
                .map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(
        on_disk, tested,
        "add a test line for every examples/models/*.onnx"
    );
}

#[test]
fn tree_regressor_runs_with_a_fixed_batch_size_too() {
    let options = LoadOptions {
        input_shapes: BTreeMap::from([("X".to_string(), vec![6, 10])]),
        ..LoadOptions::default()
    };
    let model = load("house_price_forest", &options);
    let dir = models_dir();
    let request = read_json(&dir.join("house_price_forest.request.json"));
    let expected = read_json(&dir.join("house_price_forest.expected.json"));
    let inputs: Vec<Tensor> = request["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(oip_tensor)
        .collect();
    let got = model.predict(&inputs).expect("predict");
    assert_eq!(model.info().outputs[0].shape, vec![6, 1]);
    assert_close(
        "house_price_forest (fixed batch)",
        &got[0],
        &oip_tensor(&expected["outputs"][0]),
    );
}

#[test]
fn model_with_unknown_operator_is_refused_naming_operator_and_node() {
    let bytes = std::fs::read(models_dir().join("invalid/unsupported_op.onnx")).expect("unsupported_op.onnx");
    match Model::load(&bytes, &LoadOptions::default()) {
        Err(EngineError::Unsupported(message)) => {
            assert!(message.contains("FancyOp"), "names the operator: {message}");
            assert!(message.contains("fancy_node"), "names the node: {message}");
        }
        other => panic!("expected EngineError::Unsupported, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_onnx_are_invalid_input() {
    let not_onnx = b"{\"this\": \"is json, not an ONNX protobuf\"}";
    match Model::load(not_onnx, &LoadOptions::default()) {
        Err(EngineError::InvalidInput(_)) => {}
        other => panic!("expected EngineError::InvalidInput, got {other:?}"),
    }
}
