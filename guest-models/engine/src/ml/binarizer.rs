//! `Binarizer`: `y = x > threshold ? 1 : 0`, in the input's type.
//!
//! onnxruntime refuses NaN inputs; here NaN compares false and gives 0.

use super::inputs::numeric_input;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{
    binary::TypedBinOp, cast::cast, change_axes::wire_with_rank_broadcast, logic::comp_gt,
};

/// Builds the `Binarizer` op from its ONNX node.
pub fn parse(
    _ctx: &ParsingContext<'_>,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let threshold: f32 = node.get_attr_opt("threshold")?.unwrap_or(0.0);
    Ok((
        expand(Binarizer {
            threshold: rctensor0(threshold),
        }),
        vec![],
    ))
}

/// Thresholds every element.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Binarizer {
    /// f32 scalar, cast to the input type when wired (as onnxruntime does).
    threshold: Arc<Tensor>,
}

impl Expansion for Binarizer {
    fn name(&self) -> StaticName {
        "Binarizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let input_dt = model.outlet_fact(inputs[0])?.datum_type;
        let (x, dt) = numeric_input(model, prefix, "Binarizer", inputs[0])?;
        let threshold = self.threshold.cast_to_dt(dt)?.into_owned().into_arc_tensor();
        let threshold = model.add_const(format!("{prefix}.threshold"), threshold)?;
        let above = wire_with_rank_broadcast(
            format!("{prefix}.greater"),
            model,
            TypedBinOp(comp_gt(), None),
            &[x, threshold],
        )?;
        model.wire_node(format!("{prefix}.to_input_type"), cast(input_dt), &above)
    }
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{Attr::*, node, run};
    use tract_onnx::prelude::*;

    #[test]
    fn only_values_strictly_above_the_threshold_become_one() -> TractResult<()> {
        let n = node("Binarizer", vec![("threshold", Float(0.3))]);
        let out = run(&n, vec![tensor2(&[[f32::NAN, 0.3, 0.31, -1.0]])])?;
        assert_eq!(*out[0], tensor2(&[[0f32, 0.0, 1.0, 0.0]]));
        Ok(())
    }
}
