//! Bad requests get typed errors that say what was wrong, never a host panic, and the
//! model keeps serving afterwards.

use kiln_engine::{ElementType, Tensor};
use kiln_host::{Host, HostConfig, HostError};
use kiln_tests::*;
use std::sync::Arc;

fn mlp_input(rows: u64) -> Tensor {
    let values: Vec<f32> = (0..rows * 10).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
    Tensor::from_f32(&request("mlp")[0].name, &[rows, 10], &values)
}

fn invalid(result: Result<Vec<Tensor>, HostError>) -> String {
    match result {
        Err(HostError::InvalidInput(m)) => m,
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
}

#[test]
fn wrong_name_shape_type_count_and_empty_are_typed_invalid_input_errors() {
    let model = loaded("mlp");
    let good = mlp_input(2);

    let mut wrong_name = good.clone();
    wrong_name.name = "not_an_input".into();
    let m = invalid(model.predict(vec![wrong_name]));
    assert!(m.contains("not_an_input") && m.contains(&good.name), "{m}");

    let m = invalid(model.predict(vec![Tensor::from_f32(&good.name, &[2, 9], &[0.0; 18])]));
    assert!(m.contains("shape") && m.contains("[2, 9]"), "{m}");

    let m = invalid(model.predict(vec![Tensor::from_f32(&good.name, &[20], &[0.0; 20])]));
    assert!(m.contains("shape"), "rank mismatch: {m}");

    let mut as_f64 = good.clone();
    as_f64.element_type = ElementType::F64;
    as_f64.data = vec![0; 2 * 10 * 8];
    let m = invalid(model.predict(vec![as_f64]));
    assert!(m.contains("FP32") && m.contains("FP64"), "{m}");

    let m = invalid(model.predict(vec![good.clone(), good.clone()]));
    assert!(m.contains("takes 1 input"), "{m}");
    let m = invalid(model.predict(vec![]));
    assert!(m.contains("got 0"), "{m}");

    let m = invalid(model.predict(vec![Tensor::from_f32(&good.name, &[0, 10], &[])]));
    assert!(m.contains("empty"), "{m}");

    let mut short = good.clone();
    short.data.truncate(7);
    let m = invalid(model.predict(vec![short]));
    assert!(m.contains("bytes"), "{m}");

    // Still serving.
    let out = model.predict(vec![good]).expect("a good request after bad ones");
    assert_eq!(out[0].shape[0], 2);
}

#[test]
fn a_request_over_the_size_limit_is_refused_before_it_reaches_the_model() {
    let host = Arc::new(
        Host::new(HostConfig {
            max_request_bytes: 4096,
            ..test_config()
        })
        .unwrap(),
    );
    let model = host.load(&component("mlp")).unwrap();
    match model.predict(vec![mlp_input(200)]) {
        Err(HostError::TooLarge(m)) => assert!(m.contains("8000") && m.contains("4096"), "{m}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(model.predict(vec![mlp_input(3)]).is_ok());
}

#[test]
fn a_large_batch_within_limits_runs() {
    let model = loaded("mlp");
    let out = model.predict(vec![mlp_input(4096)]).expect("batch of 4096");
    assert_eq!(out[0].shape[0], 4096);
}

#[test]
fn malformed_oip_requests_say_what_is_wrong() {
    let model = loaded("mlp");
    let err = kiln_cli::commands::predict::predict(&model, b"{not json").unwrap_err();
    assert!(
        matches!(err, HostError::InvalidInput(ref m) if m.contains("malformed")),
        "{err}"
    );
    let err = kiln_cli::commands::predict::predict(
        &model,
        br#"{"inputs":[{"name":"x","shape":[1,10],"datatype":"FP32","data":[1,2]}]}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, HostError::InvalidInput(ref m) if m.contains("needs 10 values, got 2")),
        "{err}"
    );
}
