//! What a model is and how to load it.

use crate::tensor::ElementType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How to load a model: identity and input facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// Model name (defaults to the ONNX graph name, else `model`).
    pub name: String,
    /// Version label recorded in the component.
    pub version: String,
    /// Input shapes by input name; `-1` marks the dynamic batch dimension.
    pub input_shapes: BTreeMap<String, Vec<i64>>,
}

/// Name, element type and shape (`-1` for dynamic dimensions) of an input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<i64>,
}

/// What a model is: the `kiln:model` `model-info` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// SHA-256 of the source ONNX bytes, hex.
    pub source_digest: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Class labels of a classifier, in score order.
    pub labels: Vec<String>,
    pub metadata: Vec<(String, String)>,
}

/// `[-1, 10]` style.
pub fn format_shape(shape: &[i64]) -> String {
    format!(
        "[{}]",
        shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    )
}
