//! `TreeEnsembleClassifier` (every scikit-learn forest, tree and boosting classifier),
//! following onnxruntime, which treats two-class ensembles specially:
//! - three or more classes: scores are the per-class sums of leaf weights plus
//!   `base_values`; the label is the first class with the highest score; the
//!   probabilities are the post-transformed scores;
//! - two classes whose leaves all vote for class 0 (scikit-learn's binary layout): the
//!   single score `s` (sum plus the one base value) is the positive class's. With only
//!   non-negative weights (forests: `s` is a probability) the label is positive when
//!   `s > 0.5` and the probabilities are `[1 - s, s]` (`[1 - σ(s), σ(s)]` with LOGISTIC);
//!   otherwise (boosting: `s` is a margin) positive when `s > 0`, probabilities
//!   `[σ(-s), σ(s)]` with LOGISTIC, `[-s, s]` without;
//! - two classes both voted for: the label is positive when class 1's score is above 0
//!   (onnxruntime's rule), the probabilities are the post-transformed scores.
//!
//! Other two-class layouts (votes for class 1 only, two base values with one voted class,
//! base values with both voted) get answers from onnxruntime that ignore part of the model;
//! Kiln refuses them rather than guess. tract-onnx's own classifier rejects binary
//! boosting (one base value for two classes) and labels binary forests as class 0 always.

use super::attributes::float_list;
use super::inputs::numeric_input;
use super::tree_ensemble::{PostTransform, parse_post_transform, parse_trees, wire_post_transform};
use super::tree_scores::TreeEnsembleScores;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::{
    array::{Gather, Slice, TypedConcat},
    binary::TypedBinOp,
    cast::cast,
    logic::comp_gt,
    math,
    nn::{Reduce, Reducer, sigmoid},
};
use tract_onnx_opl::ml::tree::TreeEnsemble;

/// Builds the `TreeEnsembleClassifier` op from its ONNX node.
pub fn parse(ctx: &ParsingContext<'_>, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ints = node
        .get_attr_opt_vec::<i64>("classlabels_int64s")?
        .filter(|v| !v.is_empty());
    let strings = node
        .get_attr_opt_tvec::<String>("classlabels_strings")?
        .filter(|v| !v.is_empty());
    let labels = match (ints, strings) {
        (Some(ints), None) => rctensor1(&ints),
        (None, Some(strings)) => rctensor1(&strings),
        _ => node.bail("exactly one of classlabels_int64s and classlabels_strings is required")?,
    };
    let n_classes = labels.len();
    let post_transform = parse_post_transform(node)?;
    let base_values = float_list(ctx, node, "base_values")?.filter(|v| !v.is_empty());
    let trees = parse_trees(ctx, node, "class", n_classes)?;

    let layout = match (n_classes, trees.voted.as_slice(), base_values.as_deref()) {
        (2, [true, false], None | Some([_])) => Layout::Binary {
            scores_are_probabilities: trees.weights_non_negative,
        },
        (2, [true, true], None) => Layout::TwoClasses,
        (2, voted, base) => node.bail(&format!(
            "two-class layout not supported: leaves vote for classes {:?} with {} base value(s); \
             onnxruntime's answer for it ignores part of the model",
            voted
                .iter()
                .enumerate()
                .filter(|(_, v)| **v)
                .map(|(c, _)| c)
                .collect::<Vec<_>>(),
            base.map_or(0, |b| b.len())
        ))?,
        (n, _, Some(base)) if base.len() != n => node.bail_attr(
            "base_values",
            &format!("one value per class ({n}) expected, got {}", base.len()),
        )?,
        _ => Layout::Classes,
    };
    let base_values = match base_values {
        Some(b) => Some(tensor1(&b).into_shape(&[1, b.len()])?.into_arc_tensor()),
        None => None,
    };
    let op = TreeEnsembleClassifier {
        ensemble: trees.ensemble,
        labels,
        base_values,
        post_transform,
        layout,
    };
    Ok((expand(op), vec![]))
}

/// How scores become a label and probabilities (see the module documentation).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Layout {
    Classes,
    Binary { scores_are_probabilities: bool },
    TwoClasses,
}

/// A tree ensemble classifier: [N, C] features to labels [N] and probabilities [N, n_classes].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct TreeEnsembleClassifier {
    /// The trees, packed; aggregate `Sum`.
    ensemble: TreeEnsemble,
    /// i64 or String, [n_classes].
    labels: Arc<Tensor>,
    /// f32 [1, n_classes] ([1, 1] for the binary layout).
    base_values: Option<Arc<Tensor>>,
    post_transform: PostTransform,
    layout: Layout,
}

impl Expansion for TreeEnsembleClassifier {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} classes, {:?} layout, post-transform {:?}",
            self.labels.len(),
            self.layout,
            self.post_transform
        )])
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&outputs[0].datum_type, self.labels.datum_type())?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[0].shape[0], &outputs[1].shape[0])?;
        s.equals(&outputs[1].shape[1], self.labels.len().to_dim())?;
        s.given(&inputs[0].rank, move |s, rank| match rank {
            1 => s.equals(&outputs[0].shape[0], 1.to_dim()),
            2 => s.equals(&outputs[0].shape[0], &inputs[0].shape[0]),
            _ => bail!("TreeEnsembleClassifier takes a 1-D or 2-D input, got rank {rank}"),
        })?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (mut x, _) = numeric_input(model, prefix, "TreeEnsembleClassifier", inputs[0])?;
        if model.outlet_fact(x)?.rank() == 1 {
            x = model.wire_node(format!("{prefix}.add_row_axis"), AxisOp::Add(0), &[x])?[0];
        }
        if let Ok(features) = model.outlet_fact(x)?.shape[1].to_i64() {
            self.ensemble.check_n_features(features as usize)?;
        }
        let sum = TreeEnsembleScores::sums(self.ensemble.clone());
        let sums = model.wire_node(format!("{prefix}.sum"), sum, &[x])?[0];
        let (class, probabilities) = match self.layout {
            Layout::Classes => {
                let scores = self.add_base_values(model, prefix, sums)?;
                let argmax = Reduce::new(tvec!(1), Reducer::ArgMax(false));
                let class = model.wire_node(format!("{prefix}.argmax"), argmax, &[scores])?[0];
                let probabilities = wire_post_transform(model, prefix, self.post_transform, scores)?;
                (class, probabilities)
            }
            Layout::TwoClasses => {
                let class_1 = model.wire_node(format!("{prefix}.class_1"), Slice::new(1, 1, 2), &[sums])?[0];
                let class = positive_if_above(model, prefix, class_1, 0.0)?;
                let probabilities = wire_post_transform(model, prefix, self.post_transform, sums)?;
                (class, probabilities)
            }
            Layout::Binary {
                scores_are_probabilities,
            } => {
                let score = model.wire_node(format!("{prefix}.class_0"), Slice::new(1, 0, 1), &[sums])?[0];
                let s = self.add_base_values(model, prefix, score)?;
                let threshold = if scores_are_probabilities { 0.5 } else { 0.0 };
                let class = positive_if_above(model, prefix, s, threshold)?;
                let logistic = self.post_transform == PostTransform::Logistic;
                let (negative, positive) = match (scores_are_probabilities, logistic) {
                    (true, false) => (one_minus(model, prefix, s)?, s),
                    (true, true) => {
                        let p = model.wire_node(format!("{prefix}.logistic"), sigmoid(), &[s])?[0];
                        (one_minus(model, prefix, p)?, p)
                    }
                    (false, false) => (model.wire_node(format!("{prefix}.neg"), math::neg(), &[s])?[0], s),
                    (false, true) => {
                        let neg = model.wire_node(format!("{prefix}.neg"), math::neg(), &[s])?;
                        let n = model.wire_node(format!("{prefix}.logistic_neg"), sigmoid(), &neg)?[0];
                        let p = model.wire_node(format!("{prefix}.logistic"), sigmoid(), &[s])?[0];
                        (n, p)
                    }
                };
                let probabilities = model.wire_node(
                    format!("{prefix}.probabilities"),
                    TypedConcat::new(1),
                    &[negative, positive],
                )?[0];
                (class, probabilities)
            }
        };
        // `class` is [N, 1]: the index of the label.
        let class = model.wire_node(
            format!("{prefix}.class_to_i64"),
            cast(i64::datum_type()),
            &[class],
        )?;
        let class = model.wire_node(format!("{prefix}.rm_axis"), AxisOp::Rm(1), &class)?[0];
        let labels = model.add_const(format!("{prefix}.labels"), self.labels.clone())?;
        let label = model.wire_node(format!("{prefix}.label"), Gather::new(0), &[labels, class])?[0];
        Ok(tvec!(label, probabilities))
    }
}

impl TreeEnsembleClassifier {
    fn add_base_values(
        &self,
        model: &mut TypedModel,
        prefix: &str,
        scores: OutletId,
    ) -> TractResult<OutletId> {
        let Some(base) = &self.base_values else {
            return Ok(scores);
        };
        let base = model.add_const(format!("{prefix}.base_values"), base.clone())?;
        Ok(model.wire_node(format!("{prefix}.add_base_values"), math::add(), &[scores, base])?[0])
    }
}

/// 1 where `score > threshold`, else 0 (the positive and negative label indices).
fn positive_if_above(
    model: &mut TypedModel,
    prefix: &str,
    score: OutletId,
    threshold: f32,
) -> TractResult<OutletId> {
    let threshold = model.add_const(format!("{prefix}.threshold"), rctensor2(&[[threshold]]))?;
    let above = TypedBinOp(comp_gt(), None);
    Ok(model.wire_node(format!("{prefix}.positive"), above, &[score, threshold])?[0])
}

fn one_minus(model: &mut TypedModel, prefix: &str, x: OutletId) -> TractResult<OutletId> {
    let one = model.add_const(format!("{prefix}.one"), rctensor2(&[[1f32]]))?;
    Ok(model.wire_node(format!("{prefix}.one_minus"), math::sub(), &[one, x])?[0])
}

#[cfg(test)]
mod tests {
    use crate::ml::testing::{Attr::*, node, parse, run};
    use tract_onnx::prelude::*;

    /// A stump on feature 0 (`x <= 0` → leaf 1, else leaf 2); `votes[leaf]` lists the
    /// weight for each class in `classes`.
    fn stump(
        classes: &[i64],
        votes: [&[f32]; 2],
        base: Option<Vec<f32>>,
        post_transform: &'static str,
        labels: Vec<i64>,
    ) -> tract_onnx::pb::NodeProto {
        let (mut ids, mut nodes, mut weights) = (vec![], vec![], vec![]);
        for (leaf, ws) in [1, 2].into_iter().zip(votes) {
            for (c, w) in classes.iter().zip(ws) {
                ids.push(*c);
                nodes.push(leaf);
                weights.push(*w);
            }
        }
        let n = ids.len();
        let mut attrs = vec![
            ("classlabels_int64s", Ints(labels)),
            ("nodes_nodeids", Ints(vec![0, 1, 2])),
            ("nodes_treeids", Ints(vec![0, 0, 0])),
            ("nodes_featureids", Ints(vec![0, 0, 0])),
            ("nodes_modes", Strs(vec!["BRANCH_LEQ", "LEAF", "LEAF"])),
            ("nodes_values", Floats(vec![0.0, 0.0, 0.0])),
            ("nodes_truenodeids", Ints(vec![1, 0, 0])),
            ("nodes_falsenodeids", Ints(vec![2, 0, 0])),
            ("class_ids", Ints(ids)),
            ("class_nodeids", Ints(nodes)),
            ("class_treeids", Ints(vec![0; n])),
            ("class_weights", Floats(weights)),
            ("post_transform", Str(post_transform)),
        ];
        if let Some(base) = base {
            attrs.push(("base_values", Floats(base)));
        }
        node("TreeEnsembleClassifier", attrs)
    }

    /// Runs on the rows [-1] and [1] (one per leaf); checks labels and probabilities
    /// against onnxruntime 1.32's.
    fn check(n: &tract_onnx::pb::NodeProto, labels: &[i64], probabilities: &[f32]) -> TractResult<()> {
        let out = run(n, vec![tensor2(&[[-1f32], [1.0]])])?;
        assert_eq!(*out[0], tensor1(labels), "labels");
        let got: Vec<f32> = out[1].to_plain_array_view::<f32>()?.iter().copied().collect();
        assert_eq!(got.len(), probabilities.len());
        for (g, w) in got.iter().zip(probabilities) {
            assert!(
                (g - w).abs() < 1e-6,
                "probabilities {got:?}, onnxruntime {probabilities:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn binary_forest_is_positive_above_one_half() -> TractResult<()> {
        let plain = stump(&[0], [&[0.2], &[0.7]], None, "NONE", vec![0, 1]);
        check(&plain, &[0, 1], &[0.8, 0.2, 0.3, 0.7])?;
        let logistic = stump(&[0], [&[0.2], &[0.7]], None, "LOGISTIC", vec![0, 1]);
        check(
            &logistic,
            &[0, 1],
            &[0.450_166, 0.549_834, 0.331_812_26, 0.668_187_7],
        )
    }

    #[test]
    fn binary_boosting_margin_is_positive_above_zero() -> TractResult<()> {
        let plain = stump(&[0], [&[-0.4], &[0.3]], Some(vec![0.1]), "NONE", vec![0, 1]);
        check(&plain, &[0, 1], &[0.3, -0.3, -0.4, 0.4])?;
        let logistic = stump(&[0], [&[-0.4], &[0.3]], Some(vec![0.1]), "LOGISTIC", vec![0, 1]);
        check(
            &logistic,
            &[0, 1],
            &[0.574_442_5, 0.425_557_5, 0.401_312_35, 0.598_687_6],
        )
    }

    #[test]
    fn two_voted_classes_label_positive_when_class_one_scores_above_zero() -> TractResult<()> {
        let plain = stump(&[0, 1], [&[0.2, 0.1], &[0.3, 0.7]], None, "NONE", vec![0, 1]);
        check(&plain, &[1, 1], &[0.2, 0.1, 0.3, 0.7])?;
        let softmax = stump(&[0, 1], [&[-0.4, 0.2], &[0.3, -0.1]], None, "SOFTMAX", vec![0, 1]);
        check(
            &softmax,
            &[1, 0],
            &[0.354_343_7, 0.645_656_3, 0.598_687_6, 0.401_312_3],
        )
    }

    #[test]
    fn class_without_votes_scores_its_base_value_and_ties_go_to_the_first() -> TractResult<()> {
        let n = stump(
            &[0, 1],
            [&[0.2, -0.1], &[0.3, 0.7]],
            Some(vec![0.1, 0.25, 0.3]),
            "NONE",
            vec![5, 6, 7],
        );
        check(&n, &[5, 6], &[0.3, 0.15, 0.3, 0.4, 0.95, 0.3])
    }

    #[test]
    fn two_class_layout_onnxruntime_answers_inconsistently_is_refused() {
        let n = stump(&[1], [&[0.2], &[0.7]], None, "NONE", vec![0, 1]);
        let err = parse(&n).err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(err.contains("two-class layout not supported"), "{err}");
    }
}
