//! `TreeEnsembleRegressor` (every scikit-learn forest and boosting regressor).
//!
//! The trees are packed into tract-onnx-opl's [`TreeEnsembleData`] layout. When every leaf
//! votes for every target (all scikit-learn models), SUM and AVERAGE run on tract's
//! `TreeEnsembleClassifier` evaluator (the per-target sum of leaf weights), then divide by
//! the tree count for AVERAGE and add `base_values`, in onnxruntime's order. MIN, MAX and
//! ensembles with partial votes run on [`TreeEnsembleScores`], which follows onnxruntime
//! exactly. The post-transform comes last.
//!
//! A 1-D input is one row (onnxruntime reads only its first feature).

use super::attributes::float_list;
use super::inputs::numeric_input;
use super::tree_ensemble::{PostTransform, parse_post_transform, parse_trees, wire_post_transform};
use super::tree_scores::TreeEnsembleScores;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{change_axes::wire_with_rank_broadcast, math};
use tract_onnx_opl::ml::tree::{Aggregate, TreeEnsemble};

/// Builds the `TreeEnsembleRegressor` op from its ONNX node.
pub fn parse(ctx: &ParsingContext<'_>, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets: i64 = node.get_attr_opt("n_targets")?.unwrap_or(1);
    node.expect_attr("n_targets", n_targets > 0, "a positive number")?;
    let n_targets = n_targets as usize;
    let aggregate = match node.get_attr_opt::<&str>("aggregate_function")?.unwrap_or("SUM") {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Avg,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => node.bail_attr("aggregate_function", &format!("unknown function {other}"))?,
    };
    let post_transform = parse_post_transform(node)?;
    // onnxruntime applies neither to a single target (its softmax would be 1 anyway).
    let post_transform = if n_targets == 1 {
        PostTransform::None
    } else {
        post_transform
    };
    let base_values = float_list(ctx, node, "base_values")?.filter(|v| !v.is_empty());
    if let Some(base) = &base_values {
        node.expect_attr("base_values", base.len() == n_targets, || {
            format!("one value per target ({n_targets}), got {}", base.len())
        })?;
    }
    let trees = parse_trees(ctx, node, "target", n_targets)?;
    let base_values = match base_values {
        Some(b) => Some(tensor1(&b).into_shape(&[1, n_targets])?.into_arc_tensor()),
        None => None,
    };
    let op = TreeEnsembleRegressor {
        ensemble: trees.ensemble,
        n_trees: trees.n_trees,
        aggregate,
        base_values,
        post_transform,
        full_votes: trees.full_votes,
    };
    Ok((expand(op), vec![]))
}

/// A tree ensemble regressor: [N, C] (or [C]) features to [N, n_targets] f32.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct TreeEnsembleRegressor {
    /// The trees, packed; its own aggregate is always `Sum`: `aggregate` is applied here.
    ensemble: TreeEnsemble,
    n_trees: usize,
    aggregate: Aggregate,
    /// f32 [1, n_targets].
    base_values: Option<Arc<Tensor>>,
    post_transform: PostTransform,
    /// Every leaf votes for every target, so every target always has a score.
    full_votes: bool,
}

impl Expansion for TreeEnsembleRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} trees, {} targets, {:?}, post-transform {:?}",
            self.n_trees, self.ensemble.n_classes, self.aggregate, self.post_transform
        )])
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
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[1], self.ensemble.n_classes.to_dim())?;
        s.given(&inputs[0].rank, move |s, rank| match rank {
            1 => s.equals(&outputs[0].shape[0], 1.to_dim()),
            2 => s.equals(&outputs[0].shape[0], &inputs[0].shape[0]),
            _ => bail!("TreeEnsembleRegressor takes a 1-D or 2-D input, got rank {rank}"),
        })?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (mut x, _) = numeric_input(model, prefix, "TreeEnsembleRegressor", inputs[0])?;
        if model.outlet_fact(x)?.rank() == 1 {
            x = model.wire_node(format!("{prefix}.add_row_axis"), AxisOp::Add(0), &[x])?[0];
        }
        if let Ok(features) = model.outlet_fact(x)?.shape[1].to_i64() {
            self.ensemble.check_n_features(features as usize)?;
        }
        let scores = if self.full_votes && matches!(self.aggregate, Aggregate::Sum | Aggregate::Avg) {
            let mut sums = model.wire_node(
                format!("{prefix}.sum"),
                TreeEnsembleScores::sums(self.ensemble.clone()),
                &[x],
            )?;
            if self.aggregate == Aggregate::Avg {
                let n = model.add_const(format!("{prefix}.n_trees"), rctensor2(&[[self.n_trees as f32]]))?;
                sums =
                    wire_with_rank_broadcast(format!("{prefix}.average"), model, math::div(), &[sums[0], n])?;
            }
            if let Some(base) = &self.base_values {
                let base = model.add_const(format!("{prefix}.base_values"), base.clone())?;
                sums = model.wire_node(format!("{prefix}.add_base_values"), math::add(), &[sums[0], base])?;
            }
            sums
        } else {
            let op = TreeEnsembleScores {
                ensemble: self.ensemble.clone(),
                aggregate: self.aggregate,
                n_trees: self.n_trees,
                base_values: self.base_values.clone(),
            };
            model.wire_node(format!("{prefix}.scores"), op, &[x])?
        };
        let scores = wire_post_transform(model, prefix, self.post_transform, scores[0])?;
        Ok(tvec!(scores))
    }
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{Attr::*, node, parse, run};
    use tract_onnx::prelude::*;

    /// One stump on feature 0: `x <= 0.5` → leaf 1, else leaf 2 (NaN → leaf 1); leaf 1
    /// votes 0.3 for target 0 and -1 for the others, leaf 2 votes 2 and 0.5.
    fn stump(n_targets: i64, post_transform: &'static str) -> tract_onnx::pb::NodeProto {
        let n = n_targets as usize;
        let mut ids = vec![0, 0];
        let mut nodes = vec![1, 2];
        let mut weights = vec![0.3, 2.0];
        for t in 1..n_targets {
            ids.extend([t, t]);
            nodes.extend([1, 2]);
            weights.extend([-1.0, 0.5]);
        }
        node(
            "TreeEnsembleRegressor",
            vec![
                ("n_targets", Int(n_targets)),
                ("nodes_nodeids", Ints(vec![0, 1, 2])),
                ("nodes_treeids", Ints(vec![0, 0, 0])),
                ("nodes_featureids", Ints(vec![0, 0, 0])),
                ("nodes_modes", Strs(vec!["BRANCH_LEQ", "LEAF", "LEAF"])),
                ("nodes_values", Floats(vec![0.5, 0.0, 0.0])),
                ("nodes_truenodeids", Ints(vec![1, 0, 0])),
                ("nodes_falsenodeids", Ints(vec![2, 0, 0])),
                ("nodes_missing_value_tracks_true", Ints(vec![1, 0, 0])),
                ("target_ids", Ints(ids)),
                ("target_nodeids", Ints(nodes)),
                ("target_treeids", Ints(vec![0; 2 * n])),
                ("target_weights", Floats(weights)),
                ("post_transform", Str(post_transform)),
            ],
        )
    }

    fn close(got: &TValue, want: &[f32]) -> TractResult<()> {
        let got: Vec<f32> = got.to_plain_array_view::<f32>()?.iter().copied().collect();
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn logistic_applies_to_several_targets_but_not_to_one_like_onnxruntime() -> TractResult<()> {
        let x = tensor2(&[[0f32], [1.0]]);
        // Reference values from onnxruntime 1.32.
        let two = run(&stump(2, "LOGISTIC"), vec![x.clone()])?;
        close(&two[0], &[0.574_442_5, 0.268_941_4, 0.880_797, 0.622_459_35])?;
        let one = run(&stump(1, "LOGISTIC"), vec![x])?;
        close(&one[0], &[0.3, 2.0])
    }

    #[test]
    fn missing_value_takes_the_branch_the_node_names() -> TractResult<()> {
        let out = run(&stump(1, "NONE"), vec![tensor2(&[[0.6f32], [f32::NAN]])])?;
        close(&out[0], &[2.0, 0.3])
    }

    #[test]
    fn child_outside_its_tree_is_refused() {
        let mut n = stump(1, "NONE");
        let falses = n.attribute.iter_mut().find(|a| a.name == "nodes_falsenodeids");
        if let Some(a) = falses {
            a.ints = vec![7, 0, 0];
        }
        let err = parse(&n).err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn tree_with_a_loop_is_refused() {
        let mut n = stump(1, "NONE");
        let falses = n.attribute.iter_mut().find(|a| a.name == "nodes_falsenodeids");
        if let Some(a) = falses {
            a.ints = vec![0, 0, 0];
        }
        let err = parse(&n).err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(err.contains("loop"), "{err}");
    }
}
