//! `ai.onnx.ml` operators that upstream tract lacks, registered on top of tract-onnx's.
//!
//! One file per operator. Each parses its ONNX node into a tract [`Expansion`] whose
//! `wire` builds core ops (casts, comparisons, gathers, arithmetic), so tract's optimiser
//! sees through them; only the tree ensembles run a dedicated evaluator. Semantics follow
//! onnxruntime, the reference the example models are checked against.
//!
//! [`Expansion`]: tract_onnx::tract_hir::internal::Expansion

mod array_feature_extractor;
mod binarizer;
mod imputer;
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

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::cast::cast;

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

/// A float-list attribute, also accepted in its `NAME_as_tensor` form (ai.onnx.ml opset 3
/// stores double-precision models that way); values are narrowed to f32.
fn float_list(ctx: &ParsingContext, node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    if let Some(v) = node.get_attr_opt_vec::<f32>(name)? {
        return Ok(Some(v));
    }
    let Some(proto) = node.get_attr_opt::<&TensorProto>(&format!("{name}_as_tensor"))? else {
        return Ok(None);
    };
    let t = ctx.load_tensor(proto)?.cast_to::<f32>()?.into_owned();
    Ok(Some(t.to_plain_array_view::<f32>()?.iter().copied().collect()))
}

/// The input as a plain number type: tract-onnx reads ONNX `Cast(to=INT64)` as a cast to
/// `TDim` (to keep shape arithmetic symbolic), so integer features arrive as `TDim`; they
/// are computed on as i64. Returns the outlet and its type.
fn numeric_input(
    model: &mut TypedModel,
    prefix: &str,
    op: &str,
    x: OutletId,
) -> TractResult<(OutletId, DatumType)> {
    let dt = model.outlet_fact(x)?.datum_type;
    if dt == TDim::datum_type() {
        let x = model.wire_node(format!("{prefix}.tdim_to_i64"), cast(i64::datum_type()), &[x])?[0];
        return Ok((x, i64::datum_type()));
    }
    ensure!(dt.is_number(), "{op} needs a numeric input, got {dt:?}");
    Ok((x, dt))
}

/// Rule: a per-feature attribute of `len` values (1 broadcasts) fits the last input axis.
fn last_axis_is<'r, 'p: 'r>(s: &mut Solver<'r>, input: &'p TensorProxy, len: usize) -> InferenceResult {
    if len > 1 {
        s.given(&input.rank, move |s, rank| {
            if rank >= 1 {
                s.equals(&input.shape[rank as usize - 1], len.to_dim())?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
