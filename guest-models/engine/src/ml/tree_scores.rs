//! Tree-ensemble scores with onnxruntime's exact aggregation, for the cases tract-onnx-opl's
//! evaluator gets wrong:
//! - MIN and MAX: tract starts every target from 0, so `max` of negative leaves gives 0;
//! - a target that no reached leaf votes for: onnxruntime gives it 0 (its base value is
//!   not added), while a plain sum would give the base value.
//!
//! Per row and target, onnxruntime computes: no vote → 0; else SUM: Σw + base,
//! AVERAGE: Σw / n_trees + base, MIN / MAX: min / max of the votes + base.
//! This op reads the same packed [`TreeEnsembleData`] layout (validated when parsed).
//!
//! [`TreeEnsembleData`]: tract_onnx_opl::ml::tree::TreeEnsembleData

use tract_onnx::tract_hir::internal::*;
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble};

/// [N, C] features to [N, n_targets] f32 scores, base values included.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct TreeEnsembleScores {
    pub ensemble: TreeEnsemble,
    pub aggregate: Aggregate,
    pub n_trees: usize,
    /// f32 [1, n_targets].
    pub base_values: Option<Arc<Tensor>>,
}

impl TreeEnsembleScores {
    /// Plain per-target sums of the votes (0 where none voted), no base values. Used
    /// instead of tract-onnx-opl's evaluator, which skips to each leaf's votes by walking
    /// an ndarray iterator from the first leaf: O(leaves) per tree, ~1000x slower on a
    /// 50-tree forest.
    pub fn sums(ensemble: TreeEnsemble) -> TreeEnsembleScores {
        TreeEnsembleScores {
            ensemble,
            aggregate: Aggregate::Sum,
            n_trees: 0,
            base_values: None,
        }
    }
}

impl Op for TreeEnsembleScores {
    fn name(&self) -> StaticName {
        "TreeEnsembleScores".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} over {} trees", self.aggregate, self.n_trees)])
    }

    op_as_typed_op!();
}

impl EvalOp for TreeEnsembleScores {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext<'_>, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let input = input
            .to_plain_array_view::<f32>()?
            .into_dimensionality::<tract_ndarray::Ix2>()?;
        let (rows, features) = input.dim();
        self.ensemble.check_n_features(features)?;
        let data = &self.ensemble.data;
        let trees = data.trees.try_as_plain_ram()?;
        let trees = trees.as_slice::<u32>()?;
        let nodes = data.nodes.try_as_plain_ram()?;
        let nodes = nodes.as_slice::<u32>()?;
        let leaves = data.leaves.try_as_plain_ram()?;
        let leaves = leaves.as_slice::<u32>()?;
        let n_targets = self.ensemble.n_classes;
        let base: Vec<f32> = match &self.base_values {
            Some(b) => b.to_plain_array_view::<f32>()?.iter().copied().collect(),
            None => vec![0.0; n_targets],
        };

        let mut output = tract_ndarray::Array2::<f32>::zeros((rows, n_targets));
        let mut voted = vec![false; n_targets];
        for (row, mut out) in input.outer_iter().zip(output.outer_iter_mut()) {
            voted.iter_mut().for_each(|v| *v = false);
            for &root in trees {
                let leaf = find_leaf(nodes, root as usize, |feature| row[feature])?;
                for vote in leaves[leaf.0 * 2..leaf.1 * 2].chunks_exact(2) {
                    let (target, weight) = (vote[0] as usize, f32::from_bits(vote[1]));
                    let score = &mut out[target];
                    *score = if !voted[target] {
                        weight
                    } else {
                        match self.aggregate {
                            Aggregate::Sum | Aggregate::Avg => *score + weight,
                            Aggregate::Min => score.min(weight),
                            Aggregate::Max => score.max(weight),
                        }
                    };
                    voted[target] = true;
                }
            }
            for target in 0..n_targets {
                out[target] = match (voted[target], self.aggregate) {
                    (false, _) => 0.0,
                    (true, Aggregate::Avg) => out[target] / self.n_trees as f32 + base[target],
                    (true, _) => out[target] + base[target],
                };
            }
        }
        Ok(tvec!(output.into_dyn().into_tvalue()))
    }
}

/// Walks one tree from `root`; returns the leaf's vote range (start, end) in `leaves` rows.
fn find_leaf(nodes: &[u32], root: usize, feature: impl Fn(usize) -> f32) -> TractResult<(usize, usize)> {
    let mut at = root;
    // Parsing refused loops; the bound keeps a corrupt layout from spinning forever.
    for _ in 0..=nodes.len() / 5 {
        let n = &nodes[at * 5..][..5];
        let flags = n[4];
        if flags & 0xFF == 0 {
            return Ok((n[0] as usize, n[1] as usize));
        }
        let x = feature(n[0] as usize);
        let go_true = if x.is_nan() {
            flags & 0x0100 != 0
        } else {
            compare(flags, x, f32::from_bits(n[3]))?
        };
        at = if go_true { n[1] } else { n[2] } as usize;
    }
    bail!("corrupt tree: no leaf reached")
}

fn compare(flags: u32, x: f32, v: f32) -> TractResult<bool> {
    const EQ: u32 = Cmp::Equal as u32;
    const NE: u32 = Cmp::NotEqual as u32;
    const LT: u32 = Cmp::Less as u32;
    const GT: u32 = Cmp::Greater as u32;
    const LE: u32 = Cmp::LessEqual as u32;
    const GE: u32 = Cmp::GreaterEqual as u32;
    Ok(match flags & 0xFF {
        EQ => x == v,
        NE => x != v,
        LT => x < v,
        GT => x > v,
        LE => x <= v,
        GE => x >= v,
        other => bail!("corrupt tree node: comparison code {other}"),
    })
}

impl TypedOp for TreeEnsembleScores {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].rank() == 2, "tree ensemble input must be 2-D");
        let n = &inputs[0].shape[0];
        Ok(tvec!(f32::fact([n.clone(), self.ensemble.n_classes.to_dim()])))
    }

    as_op!();
}
