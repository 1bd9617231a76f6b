//! `ai.onnx.ml` operators that upstream tract lacks, registered on top of tract-onnx's.
//!
//! One file per operator. Each parses its ONNX node into a tract [`Expansion`] whose
//! `wire` builds core ops (casts, comparisons, gathers, arithmetic), so tract's optimiser
//! sees through them; only the tree ensembles run a dedicated evaluator. Semantics follow
//! onnxruntime, the reference the example models are checked against.
//!
//! [`Expansion`]: tract_onnx::tract_hir::internal::Expansion

mod array_feature_extractor;
mod attributes;
mod binarizer;
mod imputer;
mod inputs;
mod int64_outputs;
mod one_hot_encoder;
mod scaler;
#[cfg(test)]
mod testing;
mod tree_ensemble;
mod tree_ensemble_classifier;
mod tree_ensemble_regressor;
mod tree_scores;
mod zip_map;

pub use int64_outputs::tdim_outputs_to_i64;

use tract_onnx::model::OnnxOpRegister;

/// Adds Kiln's `ai.onnx.ml` operators to a tract-onnx op register.
pub fn register_ops(reg: &mut OnnxOpRegister) {
    // tract-onnx has its own ArrayFeatureExtractor; Kiln's replaces it to match
    // onnxruntime's output shape (1-D data gives [1, k], indices are flattened).
    reg.insert("ArrayFeatureExtractor", array_feature_extractor::parse);
    reg.insert("Binarizer", binarizer::parse);
    reg.insert("Imputer", imputer::parse);
    reg.insert("OneHotEncoder", one_hot_encoder::parse);
    reg.insert("Scaler", scaler::parse);
    // tract-onnx has its own TreeEnsembleClassifier; Kiln's follows onnxruntime on
    // two-class ensembles (binary forests and boosting), which tract rejects or mislabels.
    reg.insert("TreeEnsembleClassifier", tree_ensemble_classifier::parse);
    reg.insert("TreeEnsembleRegressor", tree_ensemble_regressor::parse);
    reg.insert("ZipMap", zip_map::parse);
}
