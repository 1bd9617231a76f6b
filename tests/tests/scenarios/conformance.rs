//! Model conformance: every example goes through `kiln compile` → the sandboxed host →
//! predict, and must give onnxruntime's answers; native tract must agree too.

use kiln_tests::*;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        /// Examples this suite covers; a new example must be added here.
        const COVERED: &[&str] = &[$(stringify!($name)),*];
        mod component_matches_onnxruntime {
            use super::*;
            $(#[test] fn $name() {
                let model = loaded(stringify!($name));
                let got = model.predict(request(stringify!($name))).expect("prediction");
                assert_matches_reference(concat!("component ", stringify!($name)), &got, &expected(stringify!($name)));
            })*
        }
        mod native_tract_matches_onnxruntime {
            use super::*;
            $(#[test] fn $name() {
                let model = kiln_engine::Model::load(&onnx(stringify!($name)), &Default::default()).expect("load");
                let got = model.predict(&request(stringify!($name))).expect("prediction");
                assert_matches_reference(concat!("native ", stringify!($name)), &got, &expected(stringify!($name)));
            })*
        }
    };
}

conformance!(
    cnn,
    echo4,
    echo4_double,
    echo4_faulty,
    gbm_classifier,
    house_price_forest,
    iris_logreg,
    mlp,
    ops_array_feature_extractor,
    ops_binarizer_normalizer,
    ops_forest_binary,
    ops_gbm_binary,
    ops_imputer,
    ops_linear_svc,
    ops_onehot,
    ops_sgd_binary,
    ops_tree_regressor_avg,
    ops_tree_regressor_gbr,
    ops_tree_regressor_max,
    ops_tree_regressor_min,
    scaler_pipeline,
);

#[test]
fn every_example_with_a_reference_is_covered() {
    for name in example_names() {
        assert!(
            COVERED.contains(&name.as_str()),
            "example `{name}` has a reference but no conformance test"
        );
    }
}

#[test]
fn component_info_describes_the_forest() {
    let model = loaded("house_price_forest");
    let info = &model.info;
    assert_eq!(info.inputs.len(), 1);
    assert_eq!(info.inputs[0].shape, vec![-1, 10], "dynamic batch of 10 features");
    assert_eq!(
        info.source_digest,
        kiln_types::digest(&onnx("house_price_forest"))
    );
    assert!(
        info.metadata
            .iter()
            .any(|(k, v)| k == "tract.version" && v == kiln_engine::TRACT_VERSION)
    );
}

#[test]
fn classifier_labels_come_from_the_model() {
    let model = loaded("iris_logreg");
    assert_eq!(model.info.labels, vec!["0", "1", "2"]);
}
