//! `ZipMap`: onnxruntime turns class probabilities into a sequence of {label: probability}
//! maps. Kiln returns them as the plain [N, n_classes] tensor, in class-label order (the
//! labels are in the model info), so this op passes its input through.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::identity::Identity;

/// Builds the `ZipMap` op from its ONNX node.
pub fn parse(
    _ctx: &ParsingContext<'_>,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ZipMap), vec![]))
}

/// Passes the probabilities through unchanged.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ZipMap;

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        // A node of its own keeps the ZipMap output's name on the model output.
        model.wire_node(prefix, Identity, inputs)
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;

    #[test]
    fn zipmap_output_is_the_probability_tensor_under_its_onnx_name() -> TractResult<()> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/models/gbm_classifier.onnx"
        );
        let mut model = crate::model::onnx_framework().model_for_path(path)?;
        let n = model.sym("N");
        model.set_input_fact(0, f32::fact([n.to_dim(), 8.to_dim()]).into())?;
        let typed = model.into_optimized()?;
        let probabilities = typed.output_outlets()?[1];
        assert_eq!(typed.outlet_label(probabilities), Some("output_probability"));
        let fact = typed.outlet_fact(probabilities)?;
        assert_eq!(fact.datum_type, f32::datum_type());
        assert_eq!(fact.shape.to_tvec(), tvec![n.to_dim(), 3.to_dim()]);
        Ok(())
    }
}
