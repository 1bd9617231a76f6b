//! Test support: builds one `ai.onnx.ml` node, parses it with Kiln's register and runs it.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

/// An attribute value for [`node`].
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(&'static str),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strs(Vec<&'static str>),
}

/// A node of `op_type` with the given attributes.
pub fn node(op_type: &str, attrs: Vec<(&str, Attr)>) -> NodeProto {
    let attribute = attrs
        .into_iter()
        .map(|(name, value)| {
            let mut a = AttributeProto {
                name: name.to_string(),
                ..Default::default()
            };
            let t = match value {
                Attr::Int(i) => {
                    a.i = i;
                    AttributeType::Int
                }
                Attr::Float(f) => {
                    a.f = f;
                    AttributeType::Float
                }
                Attr::Str(s) => {
                    a.s = s.as_bytes().to_vec();
                    AttributeType::String
                }
                Attr::Ints(v) => {
                    a.ints = v;
                    AttributeType::Ints
                }
                Attr::Floats(v) => {
                    a.floats = v;
                    AttributeType::Floats
                }
                Attr::Strs(v) => {
                    a.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
                    AttributeType::Strings
                }
            };
            a.r#type = t as i32;
            a
        })
        .collect();
    NodeProto {
        op_type: op_type.to_string(),
        domain: "ai.onnx.ml".to_string(),
        name: format!("test_{op_type}"),
        attribute,
        ..Default::default()
    }
}

/// Parses `node` with Kiln's op register.
pub fn parse(node: &NodeProto) -> TractResult<Box<dyn InferenceOp>> {
    let onnx = crate::model::onnx_framework();
    let proto = ModelProto::default();
    let ctx = ParsingContext {
        onnx_operator_set_version: 17,
        framework: &onnx,
        model: &proto,
        parent_graphs: vec![],
        model_dir: None,
        template: InferenceModel::default(),
    };
    let builder = onnx.op_register.0.get(&node.op_type).context("no such op")?;
    Ok(builder(&ctx, node)?.0)
}

/// Parses `node`, runs it (optimised) on `inputs`, returns its outputs.
pub fn run(node: &NodeProto, inputs: Vec<Tensor>) -> TractResult<TVec<TValue>> {
    let op = parse(node)?;
    let mut model = InferenceModel::default();
    let sources = inputs
        .iter()
        .enumerate()
        .map(|(ix, t)| {
            model.add_source(
                format!("input{ix}"),
                InferenceFact::dt_shape(t.datum_type(), t.shape()),
            )
        })
        .collect::<TractResult<TVec<_>>>()?;
    let outputs = model.wire_node("op", op, &sources)?;
    model.select_output_outlets(&outputs)?;
    let plan = model.into_optimized()?.into_runnable()?;
    plan.run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
}
