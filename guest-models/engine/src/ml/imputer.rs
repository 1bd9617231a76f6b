//! `Imputer`: replaces missing values (NaN, or `replaced_value_*`) with a per-feature value.

use super::attributes::float_list;
use super::inputs::{last_axis_is, numeric_input};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{
    binary::TypedBinOp,
    cast::cast,
    change_axes::wire_with_rank_broadcast,
    logic::{Iff, comp_eq, comp_ne},
};

/// Builds the `Imputer` op from its ONNX node.
pub fn parse(ctx: &ParsingContext<'_>, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let floats = float_list(ctx, node, "imputed_value_floats")?.filter(|v| !v.is_empty());
    let ints = node
        .get_attr_opt_vec::<i64>("imputed_value_int64s")?
        .filter(|v| !v.is_empty());
    let op = match (floats, ints) {
        (Some(values), None) => {
            let replaced: f32 = node.get_attr_opt("replaced_value_float")?.unwrap_or(0.0);
            Imputer {
                imputed: rctensor1(&values),
                replaced: rctensor0(replaced),
                replaces_nan: replaced.is_nan(),
            }
        }
        (None, Some(values)) => {
            let replaced: i64 = node.get_attr_opt("replaced_value_int64")?.unwrap_or(0);
            Imputer {
                imputed: rctensor1(&values),
                replaced: rctensor0(replaced),
                replaces_nan: false,
            }
        }
        (Some(_), Some(_)) => {
            node.bail("only one of imputed_value_floats and imputed_value_int64s may be set")?
        }
        (None, None) => node.bail("one of imputed_value_floats and imputed_value_int64s is required")?,
    };
    Ok((expand(op), vec![]))
}

/// Replaces elements equal to `replaced` (or NaN when `replaced` is NaN) along the last axis.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Imputer {
    /// f32 or i64, one value per feature (or one for all).
    imputed: Arc<Tensor>,
    /// Scalar of the same type as `imputed`.
    replaced: Arc<Tensor>,
    /// `replaced` is NaN: match NaNs (which equal nothing, not even NaN).
    replaces_nan: bool,
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
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
        last_axis_is(s, &inputs[0], self.imputed.len())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let input_dt = model.outlet_fact(inputs[0])?.datum_type;
        let (x, dt) = numeric_input(model, prefix, "Imputer", inputs[0])?;
        let float_values = self.imputed.datum_type().is_float();
        ensure!(
            dt.is_float() == float_values,
            "Imputer with {} imputed values cannot take a {dt:?} input",
            if float_values { "float" } else { "int64" }
        );
        let imputed = self.imputed.cast_to_dt(dt)?.into_owned().into_arc_tensor();
        let imputed = model.add_const(format!("{prefix}.imputed"), imputed)?;
        let missing = if self.replaces_nan {
            // NaN is the only value not equal to itself.
            model.wire_node(format!("{prefix}.is_nan"), TypedBinOp(comp_ne(), None), &[x, x])?
        } else {
            let replaced = self.replaced.cast_to_dt(dt)?.into_owned().into_arc_tensor();
            let replaced = model.add_const(format!("{prefix}.replaced"), replaced)?;
            wire_with_rank_broadcast(
                format!("{prefix}.is_missing"),
                model,
                TypedBinOp(comp_eq(), None),
                &[x, replaced],
            )?
        };
        let out =
            wire_with_rank_broadcast(format!("{prefix}.select"), model, Iff, &[missing[0], imputed, x])?;
        if input_dt == dt {
            return Ok(out);
        }
        model.wire_node(format!("{prefix}.to_input_type"), cast(input_dt), &out)
    }
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{Attr::*, node, run};
    use tract_onnx::prelude::*;

    #[test]
    fn int64_replaced_value_is_imputed() -> TractResult<()> {
        let n = node(
            "Imputer",
            vec![
                ("imputed_value_int64s", Ints(vec![7])),
                ("replaced_value_int64", Int(-1)),
            ],
        );
        let out = run(&n, vec![tensor2(&[[1i64, -1], [-1, 4]])])?;
        assert_eq!(*out[0], tensor2(&[[1i64, 7], [7, 4]]));
        Ok(())
    }

    #[test]
    fn float_replaced_value_other_than_nan_is_imputed_per_feature() -> TractResult<()> {
        let n = node(
            "Imputer",
            vec![
                ("imputed_value_floats", Floats(vec![7.0, 8.0])),
                ("replaced_value_float", Float(0.0)),
            ],
        );
        let out = run(&n, vec![tensor2(&[[1f32, 0.0], [0.0, 4.0]])])?;
        assert_eq!(*out[0], tensor2(&[[1f32, 8.0], [7.0, 4.0]]));
        Ok(())
    }
}
