//! What `TreeEnsembleRegressor` (leaves named `target_*`) and `TreeEnsembleClassifier`
//! (`class_*`) share: parsing the trees into tract-onnx-opl's packed [`TreeEnsembleData`]
//! layout, and the post-transform.
//!
//! tract reads that layout without bounds checks, so parsing checks what it relies on:
//! children and leaves refer to nodes of their own tree, no tree loops, leaf target (class)
//! ids are in range. Node ids need not be contiguous nor trees numbered from 0. `BRANCH_GTE`
//! nodes are stored as `BRANCH_LT` with the children swapped, because tract's layout cannot
//! hold `>=` (it decodes that code as a leaf).

use super::attributes::float_list;
use std::collections::HashMap;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::pb_helpers::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::nn::{Softmax, sigmoid};
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble, TreeEnsembleData};

/// What is applied to the aggregated scores.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
}

/// The `post_transform` attribute; PROBIT and SOFTMAX_ZERO are refused.
pub fn parse_post_transform(node: &NodeProto) -> TractResult<PostTransform> {
    match node.get_attr_opt::<&str>("post_transform")?.unwrap_or("NONE") {
        "NONE" => Ok(PostTransform::None),
        "LOGISTIC" => Ok(PostTransform::Logistic),
        "SOFTMAX" => Ok(PostTransform::Softmax),
        other => node.bail_attr(
            "post_transform",
            &format!("{other} is not supported (Kiln supports NONE, LOGISTIC and SOFTMAX)"),
        ),
    }
}

/// Wires the post-transform over the last axis of `scores`.
pub fn wire_post_transform(
    model: &mut TypedModel,
    prefix: &str,
    post_transform: PostTransform,
    scores: OutletId,
) -> TractResult<OutletId> {
    Ok(match post_transform {
        PostTransform::None => scores,
        PostTransform::Logistic => model.wire_node(format!("{prefix}.logistic"), sigmoid(), &[scores])?[0],
        PostTransform::Softmax => {
            let axes = tvec!(model.outlet_fact(scores)?.rank() - 1);
            let softmax = Softmax {
                axes,
                ..Softmax::default()
            };
            model.wire_node(format!("{prefix}.softmax"), softmax, &[scores])?[0]
        }
    })
}

/// A parsed ensemble and what its leaves vote for.
pub struct ParsedTrees {
    /// The packed trees; aggregate `Sum`.
    pub ensemble: TreeEnsemble,
    pub n_trees: usize,
    /// Every leaf votes for every target (class).
    pub full_votes: bool,
    /// Per target (class): whether any leaf votes for it.
    pub voted: Vec<bool>,
    /// No leaf weight is negative.
    pub weights_non_negative: bool,
}

/// One ONNX tree node, as read from the `nodes_*` attributes.
struct OnnxNode {
    tree: i64,
    id: i64,
    feature: usize,
    value: f32,
    mode: Option<Cmp>,
    true_id: i64,
    false_id: i64,
    nan_is_true: bool,
}

fn parse_mode(node: &NodeProto, mode: &str) -> TractResult<Option<Cmp>> {
    Ok(Some(match mode {
        "BRANCH_LEQ" => Cmp::LessEqual,
        "BRANCH_LT" => Cmp::Less,
        "BRANCH_GTE" => Cmp::GreaterEqual,
        "BRANCH_GT" => Cmp::Greater,
        "BRANCH_EQ" => Cmp::Equal,
        "BRANCH_NEQ" => Cmp::NotEqual,
        "LEAF" => return Ok(None),
        other => node.bail_attr("nodes_modes", &format!("unknown mode {other}"))?,
    }))
}

fn attr_of_len<'a, T: AttrTVecType<'a>>(node: &'a NodeProto, name: &str, n: usize) -> TractResult<Vec<T>> {
    let v = node.get_attr_vec::<T>(name)?;
    node.expect_attr(name, v.len() == n, || format!("{n} values, got {}", v.len()))?;
    Ok(v)
}

fn floats_of_len(ctx: &ParsingContext<'_>, node: &NodeProto, name: &str, n: usize) -> TractResult<Vec<f32>> {
    let Some(v) = float_list(ctx, node, name)? else {
        return node.bail_attr(name, "missing (nor is its _as_tensor form present)");
    };
    node.expect_attr(name, v.len() == n, || format!("{n} values, got {}", v.len()))?;
    Ok(v)
}

/// Reads the `nodes_*` and `{leaf}_*` attributes (`leaf` is `target` or `class`) for
/// `n_targets` targets (classes).
pub fn parse_trees(
    ctx: &ParsingContext<'_>,
    node: &NodeProto,
    leaf: &str,
    n_targets: usize,
) -> TractResult<ParsedTrees> {
    let n = node.get_attr_slice::<i64>("nodes_nodeids")?.len();
    node.expect_attr("nodes_nodeids", n > 0, "at least one node")?;
    let ids = attr_of_len::<i64>(node, "nodes_nodeids", n)?;
    let trees = attr_of_len::<i64>(node, "nodes_treeids", n)?;
    let features = attr_of_len::<i64>(node, "nodes_featureids", n)?;
    let true_ids = attr_of_len::<i64>(node, "nodes_truenodeids", n)?;
    let false_ids = attr_of_len::<i64>(node, "nodes_falsenodeids", n)?;
    let modes = attr_of_len::<&str>(node, "nodes_modes", n)?;
    let values = floats_of_len(ctx, node, "nodes_values", n)?;
    let nan_is_true = match node.get_attr_opt_vec::<i64>("nodes_missing_value_tracks_true")? {
        Some(v) if !v.is_empty() => {
            node.expect_attr("nodes_missing_value_tracks_true", v.len() == n, || {
                format!("{n} values, got {}", v.len())
            })?;
            v.into_iter().map(|b| b != 0).collect()
        }
        _ => vec![false; n],
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        node.expect_attr("nodes_featureids", features[i] >= 0, "non-negative feature ids")?;
        nodes.push(OnnxNode {
            tree: trees[i],
            id: ids[i],
            feature: features[i] as usize,
            value: values[i],
            mode: parse_mode(node, modes[i])?,
            true_id: true_ids[i],
            false_id: false_ids[i],
            nan_is_true: nan_is_true[i],
        });
    }
    // Rows sorted by (tree, node id): each tree is a contiguous block, its root first.
    nodes.sort_by_key(|n| (n.tree, n.id));
    let mut row_of: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
    let mut tree_roots: Vec<u32> = vec![];
    for (row, nd) in nodes.iter().enumerate() {
        if row_of.insert((nd.tree, nd.id), row).is_some() {
            node.bail_attr(
                "nodes_nodeids",
                &format!("node {} of tree {} is defined twice", nd.id, nd.tree),
            )?;
        }
        if row == 0 || nodes[row - 1].tree != nd.tree {
            tree_roots.push(row as u32);
        }
    }

    // Leaf weights, grouped by leaf row in attribute order.
    let n_leaves = node.get_attr_slice::<i64>(&format!("{leaf}_ids"))?.len();
    let leaf_ids = attr_of_len::<i64>(node, &format!("{leaf}_nodeids"), n_leaves)?;
    let leaf_trees = attr_of_len::<i64>(node, &format!("{leaf}_treeids"), n_leaves)?;
    let leaf_targets = attr_of_len::<i64>(node, &format!("{leaf}_ids"), n_leaves)?;
    let leaf_weights = floats_of_len(ctx, node, &format!("{leaf}_weights"), n_leaves)?;
    let mut weights_of: Vec<Vec<(u32, f32)>> = vec![vec![]; n];
    for i in 0..n_leaves {
        let Some(&row) = row_of.get(&(leaf_trees[i], leaf_ids[i])) else {
            return node.bail_attr(
                &format!("{leaf}_nodeids"),
                &format!(
                    "weight for node {} of tree {}, which does not exist",
                    leaf_ids[i], leaf_trees[i]
                ),
            );
        };
        if nodes[row].mode.is_some() {
            node.bail_attr(
                &format!("{leaf}_nodeids"),
                &format!(
                    "weight for node {} of tree {}, which is not a leaf",
                    leaf_ids[i], leaf_trees[i]
                ),
            )?;
        }
        let target = leaf_targets[i];
        node.expect_attr(
            &format!("{leaf}_ids"),
            target >= 0 && (target as usize) < n_targets,
            || format!("ids below {n_targets}, got {target}"),
        )?;
        weights_of[row].push((target as u32, leaf_weights[i]));
    }

    let mut packed_nodes: Vec<u32> = Vec::with_capacity(n * 5);
    let mut packed_leaves: Vec<u32> = vec![];
    let mut max_feature = 0;
    let mut full_votes = true;
    for (row, nd) in nodes.iter().enumerate() {
        match nd.mode {
            Some(mode) => {
                let child = |id: i64, which: &str| -> TractResult<u32> {
                    match row_of.get(&(nd.tree, id)) {
                        Some(&r) => Ok(r as u32),
                        None => node.bail_attr(
                            &format!("nodes_{which}nodeids"),
                            &format!(
                                "node {} of tree {} points to node {id}, which does not exist",
                                nd.id, nd.tree
                            ),
                        ),
                    }
                };
                let (mut t, mut f) = (child(nd.true_id, "true")?, child(nd.false_id, "false")?);
                let (mut mode, mut nan_is_true) = (mode, nd.nan_is_true);
                if mode == Cmp::GreaterEqual {
                    // tract's packed layout cannot hold `>=` (it decodes 6 as a leaf):
                    // `x >= v` is `!(x < v)`, so swap the children and where NaN goes.
                    mode = Cmp::Less;
                    std::mem::swap(&mut t, &mut f);
                    nan_is_true = !nan_is_true;
                }
                max_feature = max_feature.max(nd.feature);
                packed_nodes.extend([
                    nd.feature as u32,
                    t,
                    f,
                    nd.value.to_bits(),
                    (0x0100 * nan_is_true as u32) | mode as u32,
                ]);
            }
            None => {
                let mut targets: Vec<u32> = weights_of[row].iter().map(|(t, _)| *t).collect();
                targets.sort_unstable();
                targets.dedup();
                full_votes &= targets.len() == n_targets;
                let start = packed_leaves.len() as u32 / 2;
                for (target, weight) in &weights_of[row] {
                    packed_leaves.extend([*target, weight.to_bits()]);
                }
                let end = packed_leaves.len() as u32 / 2;
                packed_nodes.extend([start, end, 0, 0, 0]);
            }
        }
    }
    check_no_loops(node, &packed_nodes, &tree_roots)?;

    let n_trees = tree_roots.len();
    let data = TreeEnsembleData {
        trees: rctensor1(&tree_roots),
        nodes: tensor1(&packed_nodes).into_shape(&[n, 5])?.into_arc_tensor(),
        leaves: tensor1(&packed_leaves)
            .into_shape(&[packed_leaves.len() / 2, 2])?
            .into_arc_tensor(),
    };
    let mut voted = vec![false; n_targets];
    leaf_targets.iter().for_each(|t| voted[*t as usize] = true);
    Ok(ParsedTrees {
        ensemble: TreeEnsemble::build(data, max_feature, n_targets, Aggregate::Sum)?,
        n_trees,
        full_votes,
        voted,
        weights_non_negative: leaf_weights.iter().all(|w| *w >= 0.0),
    })
}

/// Refuses trees in which a walk from the root can revisit a node (it would never end).
fn check_no_loops(node: &NodeProto, packed: &[u32], roots: &[u32]) -> TractResult<()> {
    let n = packed.len() / 5;
    // 0: unseen, 1: on the current path, 2: done.
    let mut state = vec![0u8; n];
    for &root in roots {
        let mut stack = vec![(root as usize, false)];
        while let Some((row, leaving)) = stack.pop() {
            if leaving {
                state[row] = 2;
                continue;
            }
            match state[row] {
                1 => node.bail("a tree has a loop (a node is its own descendant)")?,
                2 => continue,
                _ => {}
            }
            state[row] = 1;
            stack.push((row, true));
            let r = &packed[row * 5..][..5];
            if r[4] & 0xFF != 0 {
                stack.push((r[1] as usize, false));
                stack.push((r[2] as usize, false));
            }
        }
    }
    Ok(())
}
