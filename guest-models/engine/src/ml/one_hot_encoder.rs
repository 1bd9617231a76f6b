//! `OneHotEncoder`: one f32 column per category, appended as a new last axis.
//!
//! Integer categories only (`cats_int64s`); float inputs are truncated to integers first,
//! as onnxruntime does. A value in no category gives a row of zeros; onnxruntime fails the
//! request instead when the node says `zeros = 0`.

use super::inputs::numeric_input;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{
    binary::TypedBinOp, cast::cast, change_axes::wire_with_rank_broadcast, logic::comp_eq,
};

/// Builds the `OneHotEncoder` op from its ONNX node.
pub fn parse(
    _ctx: &ParsingContext<'_>,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node
        .get_attr_opt_tvec::<&str>("cats_strings")?
        .is_some_and(|v| !v.is_empty())
    {
        node.bail(
            "string categories (cats_strings) are not supported: Kiln tensors carry no strings; \
             encode the categories as integers before one-hot encoding",
        )?;
    }
    let cats = node.get_attr_vec::<i64>("cats_int64s")?;
    node.expect_attr("cats_int64s", !cats.is_empty(), "at least one category")?;
    Ok((
        expand(OneHotEncoder {
            categories: rctensor1(&cats),
        }),
        vec![],
    ))
}

/// Compares each element with every category.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct OneHotEncoder {
    /// i64, [n_categories].
    categories: Arc<Tensor>,
}

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
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
        s.equals(inputs[0].rank.bex() + 1, outputs[0].rank.bex())?;
        let n = self.categories.len().to_dim();
        s.given(&inputs[0].shape, move |s, shape| {
            let mut out = shape;
            out.push(n.clone());
            s.equals(&outputs[0].shape, out)
        })?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        let (mut x, dt) = numeric_input(model, prefix, "OneHotEncoder", inputs[0])?;
        if dt != i64::datum_type() {
            x = model.wire_node(format!("{prefix}.to_i64"), cast(i64::datum_type()), &[x])?[0];
        }
        x = model.wire_node(format!("{prefix}.add_category_axis"), AxisOp::Add(rank), &[x])?[0];
        let cats = model.add_const(format!("{prefix}.categories"), self.categories.clone())?;
        let hits = wire_with_rank_broadcast(
            format!("{prefix}.equal"),
            model,
            TypedBinOp(comp_eq(), None),
            &[x, cats],
        )?;
        model.wire_node(format!("{prefix}.to_f32"), cast(f32::datum_type()), &hits)
    }
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{Attr::*, node, parse, run};
    use tract_onnx::prelude::*;

    #[test]
    fn float_input_is_truncated_to_integer_categories_like_onnxruntime() -> TractResult<()> {
        let n = node("OneHotEncoder", vec![("cats_int64s", Ints(vec![0, 1, 2]))]);
        let out = run(&n, vec![tensor1(&[1.7f32, 2.0, -0.5])])?;
        assert_eq!(*out[0], tensor2(&[[0f32, 1., 0.], [0., 0., 1.], [1., 0., 0.]]));
        Ok(())
    }

    #[test]
    fn string_categories_are_refused_with_what_to_do() {
        let n = node("OneHotEncoder", vec![("cats_strings", Strs(vec!["a", "b"]))]);
        let err = parse(&n).err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(err.contains("encode the categories as integers"), "{err}");
    }
}
