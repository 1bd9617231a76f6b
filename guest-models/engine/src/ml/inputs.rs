//! Wiring and checking the inputs of the `ai.onnx.ml` operators.

use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::cast::cast;

/// The input as a plain number type: tract-onnx reads ONNX `Cast(to=INT64)` as a cast to
/// `TDim` (to keep shape arithmetic symbolic), so integer features arrive as `TDim`; they
/// are computed on as i64. Returns the outlet and its type.
pub(super) fn numeric_input(
    model: &mut TypedModel,
    prefix: &str,
    op: &str,
    x: OutletId,
) -> TractResult<(OutletId, DatumType)> {
    let dt = model.outlet_fact(x)?.datum_type;
    if dt == TDim::datum_type() {
        let x = model.wire_node(format!("{prefix}.tdim_to_i64"), cast(i64::datum_type()), &[x])?[0];
        return Ok((x, i64::datum_type()));
    }
    ensure!(dt.is_number(), "{op} needs a numeric input, got {dt:?}");
    Ok((x, dt))
}

/// Rule: a per-feature attribute of `len` values (1 broadcasts) fits the last input axis.
pub(super) fn last_axis_is<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    input: &'p TensorProxy,
    len: usize,
) -> InferenceResult {
    if len > 1 {
        s.given(&input.rank, move |s, rank| {
            if rank >= 1 {
                s.equals(&input.shape[rank as usize - 1], len.to_dim())?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
