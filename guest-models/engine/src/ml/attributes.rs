//! Reading operator attributes from ONNX nodes.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

/// A float-list attribute, also accepted in its `NAME_as_tensor` form (ai.onnx.ml opset 3
/// stores double-precision models that way); values are narrowed to f32.
pub(super) fn float_list(
    ctx: &ParsingContext<'_>,
    node: &NodeProto,
    name: &str,
) -> TractResult<Option<Vec<f32>>> {
    if let Some(v) = node.get_attr_opt_vec::<f32>(name)? {
        return Ok(Some(v));
    }
    let Some(proto) = node.get_attr_opt::<&TensorProto>(&format!("{name}_as_tensor"))? else {
        return Ok(None);
    };
    let t = ctx.load_tensor(proto)?.cast_to::<f32>()?.into_owned();
    Ok(Some(t.to_plain_array_view::<f32>()?.iter().copied().collect()))
}
