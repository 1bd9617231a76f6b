//! `Scaler`: `y = (x - offset) * scale` per feature, as f32 (StandardScaler, MinMaxScaler...).

use super::attributes::float_list;
use super::inputs::{last_axis_is, numeric_input};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{cast::cast, change_axes::wire_with_rank_broadcast, math};

/// Builds the `Scaler` op from its ONNX node.
pub fn parse(ctx: &ParsingContext<'_>, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset = float_list(ctx, node, "offset")?.unwrap_or_else(|| vec![0.0]);
    let scale = float_list(ctx, node, "scale")?.unwrap_or_else(|| vec![1.0]);
    node.expect_attr("offset", !offset.is_empty(), "at least one value")?;
    node.expect_attr("scale", !scale.is_empty(), "at least one value")?;
    Ok((
        expand(Scaler {
            offset: rctensor1(&offset),
            scale: rctensor1(&scale),
        }),
        vec![],
    ))
}

/// Offsets then scales the last axis; a one-value attribute applies to every feature.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Scaler {
    offset: Arc<Tensor>,
    scale: Arc<Tensor>,
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        last_axis_is(s, &inputs[0], self.offset.len())?;
        last_axis_is(s, &inputs[0], self.scale.len())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (mut x, dt) = numeric_input(model, prefix, "Scaler", inputs[0])?;
        if dt != f32::datum_type() {
            x = model.wire_node(format!("{prefix}.to_f32"), cast(f32::datum_type()), &[x])?[0];
        }
        let offset = model.add_const(format!("{prefix}.offset"), self.offset.clone())?;
        let scale = model.add_const(format!("{prefix}.scale"), self.scale.clone())?;
        let centred =
            wire_with_rank_broadcast(format!("{prefix}.sub_offset"), model, math::sub(), &[x, offset])?;
        wire_with_rank_broadcast(
            format!("{prefix}.mul_scale"),
            model,
            math::mul(),
            &[centred[0], scale],
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{Attr::*, node, run};
    use tract_onnx::prelude::*;

    #[test]
    fn int64_input_is_offset_and_scaled_to_f32() -> TractResult<()> {
        let n = node(
            "Scaler",
            vec![
                ("offset", Floats(vec![1.0, 2.0])),
                ("scale", Floats(vec![0.5, 2.0])),
            ],
        );
        let out = run(&n, vec![tensor2(&[[1i64, -1], [-1, 4]])])?;
        assert_eq!(*out[0], tensor2(&[[0f32, -6.0], [-1.0, 4.0]]));
        Ok(())
    }
}
