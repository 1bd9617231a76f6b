//! `ArrayFeatureExtractor`: gathers columns of the last axis.
//!
//! Shapes follow onnxruntime: the indices are flattened to k values; data of shape
//! [..., C] gives [..., k], and 1-D data [C] gives [1, k].

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{array::Gather, cast::cast};

/// Builds the `ArrayFeatureExtractor` op from its ONNX node.
pub fn parse(
    _ctx: &ParsingContext<'_>,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ArrayFeatureExtractor), vec![]))
}

/// Selects the last-axis elements named by an index tensor.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ArrayFeatureExtractor;

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, data, indices| {
            ensure!(
                !data.is_empty(),
                "ArrayFeatureExtractor needs data of rank 1 or more"
            );
            let k: TDim = indices.iter().product();
            let mut out: TVec<TDim> = if data.len() == 1 {
                tvec!(1.to_dim())
            } else {
                data[..data.len() - 1].into()
            };
            out.push(k);
            s.equals(&outputs[0].shape, out)
        })?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        ensure!(rank >= 1, "ArrayFeatureExtractor needs data of rank 1 or more");
        let mut indices = inputs[1];
        let index_fact = model.outlet_fact(indices)?.clone();
        if index_fact.datum_type != i64::datum_type() {
            indices = model.wire_node(
                format!("{prefix}.indices_to_i64"),
                cast(i64::datum_type()),
                &[indices],
            )?[0];
        }
        if index_fact.rank() != 1 {
            let from: TVec<TDim> = index_fact.shape.iter().cloned().collect();
            let k: TDim = from.iter().product();
            let op = if from.is_empty() {
                AxisOp::Add(0)
            } else {
                AxisOp::Reshape(0, from, tvec!(k))
            };
            indices = model.wire_node(format!("{prefix}.flatten_indices"), op, &[indices])?[0];
        }
        let mut out = model.wire_node(
            format!("{prefix}.gather"),
            Gather::new(rank - 1),
            &[inputs[0], indices],
        )?;
        if rank == 1 {
            out = model.wire_node(format!("{prefix}.add_row_axis"), AxisOp::Add(0), &out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{node, run};
    use tract_onnx::prelude::*;

    #[test]
    fn shapes_follow_onnxruntime() -> TractResult<()> {
        let n = node("ArrayFeatureExtractor", vec![]);
        let indices = tensor2(&[[1i64, 1], [2, 0]]);
        // 1-D data: one row of k values.
        let out = run(&n, vec![tensor1(&[0f32, 1., 2.]), indices.clone()])?;
        assert_eq!(*out[0], tensor2(&[[1f32, 1., 2., 0.]]));
        // 2-D data: the last axis becomes k.
        let out = run(&n, vec![tensor2(&[[0f32, 1., 2.], [3., 4., 5.]]), indices])?;
        assert_eq!(*out[0], tensor2(&[[1f32, 1., 2., 0.], [4., 4., 5., 3.]]));
        Ok(())
    }
}
