//! int64 model outputs. tract-onnx reads ONNX `Cast(to=INT64)` as a cast to `TDim` (to keep
//! shape arithmetic symbolic), so a classifier whose labels leave through such a Cast (every
//! skl2onnx classifier with ZipMap, and binary linear ones) would return `TDim`, which no
//! caller can carry. This turns those outputs back into i64.

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core::ops::cast::cast;

/// Casts every `TDim` output of a typed model to i64, keeping the output's ONNX name.
/// Call it between `into_typed()` and `into_optimized()`.
pub fn tdim_outputs_to_i64(model: &mut TypedModel) -> TractResult<()> {
    let mut outputs = model.output_outlets()?.to_vec();
    for output in outputs.iter_mut() {
        if model.outlet_fact(*output)?.datum_type != TDim::datum_type() {
            continue;
        }
        let label = match model.outlet_label(*output) {
            Some(label) => label.to_string(),
            None => model.node(output.node).name.clone(),
        };
        let name = model.unique_name(format!("{label}.to_i64")).into_owned();
        let as_i64 = model.wire_node(name, cast(i64::datum_type()), &[*output])?[0];
        model.set_outlet_label(*output, format!("{label}.tdim"))?;
        model.set_outlet_label(as_i64, label)?;
        *output = as_i64;
    }
    model.select_output_outlets(&outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_labels_cast_to_int64_come_out_as_i64() -> TractResult<()> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/models/ops_sgd_binary.onnx"
        );
        let mut model = crate::model::onnx_framework().model_for_path(path)?;
        let n = model.sym("N");
        model.set_input_fact(0, f32::fact([n.to_dim(), 6.to_dim()]).into())?;
        let mut typed = model.into_typed()?;
        tdim_outputs_to_i64(&mut typed)?;
        let typed = typed.into_optimized()?;
        let label = typed.output_outlets()?[0];
        assert_eq!(typed.outlet_fact(label)?.datum_type, i64::datum_type());
        assert_eq!(typed.outlet_label(label), Some("label"));
        let x = tensor2(&[[0f32; 6], [1f32; 6]]);
        let out = typed.into_runnable()?.run(tvec!(x.into_tvalue()))?;
        assert_eq!(out[0].datum_type(), i64::datum_type());
        assert_eq!(out[0].shape(), &[2]);
        Ok(())
    }
}
