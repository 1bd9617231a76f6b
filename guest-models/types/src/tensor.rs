//! Kiln's tensor: element type, shape, little-endian row-major bytes. The same model as
//! the `kiln:model` WIT tensor, wasi-nn's tensor and the Open Inference Protocol.

use crate::error::EngineError;
use serde::{Deserialize, Serialize};

/// Element types Kiln carries across the model contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl ElementType {
    /// All element types, in WIT order.
    pub const ALL: [ElementType; 12] = [
        ElementType::F16,
        ElementType::F32,
        ElementType::F64,
        ElementType::I8,
        ElementType::I16,
        ElementType::I32,
        ElementType::I64,
        ElementType::U8,
        ElementType::U16,
        ElementType::U32,
        ElementType::U64,
        ElementType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::I8 | ElementType::U8 | ElementType::Bool => 1,
            ElementType::F16 | ElementType::I16 | ElementType::U16 => 2,
            ElementType::F32 | ElementType::I32 | ElementType::U32 => 4,
            ElementType::F64 | ElementType::I64 | ElementType::U64 => 8,
        }
    }

    /// The Open Inference Protocol datatype name (`FP32`, `INT64`, `BOOL`...).
    pub fn oip_name(self) -> &'static str {
        match self {
            ElementType::F16 => "FP16",
            ElementType::F32 => "FP32",
            ElementType::F64 => "FP64",
            ElementType::I8 => "INT8",
            ElementType::I16 => "INT16",
            ElementType::I32 => "INT32",
            ElementType::I64 => "INT64",
            ElementType::U8 => "UINT8",
            ElementType::U16 => "UINT16",
            ElementType::U32 => "UINT32",
            ElementType::U64 => "UINT64",
            ElementType::Bool => "BOOL",
        }
    }

    /// Parses an Open Inference Protocol datatype name.
    pub fn from_oip_name(s: &str) -> Option<ElementType> {
        ElementType::ALL.into_iter().find(|t| t.oip_name() == s)
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.oip_name())
    }
}

/// A dense tensor with a name (empty when matched by position).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<u64>,
    /// Little-endian, row-major; booleans one byte each (0 or 1).
    pub data: Vec<u8>,
}

impl Tensor {
    /// Number of elements the shape holds, or an error when it overflows.
    pub fn element_count(shape: &[u64]) -> Result<usize, EngineError> {
        shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(|| EngineError::InvalidInput(format!("shape {shape:?} is too large")))
    }

    /// Builds an f32 tensor (tests, examples, benchmarks).
    pub fn from_f32(name: &str, shape: &[u64], values: &[f32]) -> Tensor {
        Tensor {
            name: name.to_string(),
            element_type: ElementType::F32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Builds a one-dimensional i64 tensor (tests, class-label outputs).
    pub fn from_i64(name: &str, values: &[i64]) -> Tensor {
        Tensor {
            name: name.to_string(),
            element_type: ElementType::I64,
            shape: vec![values.len() as u64],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Checks that the data length matches shape × element size.
    pub fn check_len(&self) -> Result<(), EngineError> {
        let n = Tensor::element_count(&self.shape)?;
        let expected = n
            .checked_mul(self.element_type.size())
            .ok_or_else(|| EngineError::InvalidInput(format!("tensor `{}` is too large", self.name)))?;
        if self.data.len() != expected {
            return Err(EngineError::InvalidInput(format!(
                "tensor `{}` of shape {:?} and type {} needs {} bytes of data, got {}",
                self.name,
                self.shape,
                self.element_type,
                expected,
                self.data.len()
            )));
        }
        if self.element_type == ElementType::Bool && self.data.iter().any(|b| *b > 1) {
            return Err(EngineError::InvalidInput(format!(
                "tensor `{}` is BOOL but holds bytes other than 0 and 1",
                self.name
            )));
        }
        Ok(())
    }

    /// Reads the elements as f64 (for comparisons and summaries).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, EngineError> {
        self.check_len()?;
        let d = &self.data;
        let v: Vec<f64> = match self.element_type {
            ElementType::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            ElementType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                .collect(),
            ElementType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            ElementType::I8 => d.iter().map(|b| *b as i8 as f64).collect(),
            ElementType::I16 => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
                .collect(),
            ElementType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                .collect(),
            ElementType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                .collect(),
            ElementType::U8 | ElementType::Bool => d.iter().map(|b| *b as f64).collect(),
            ElementType::U16 => d
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
                .collect(),
            ElementType::U32 => d
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                .collect(),
            ElementType::U64 => d
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                .collect(),
        };
        Ok(v)
    }
}

/// Rounds an f64 to IEEE half precision.
pub fn f16_from_f64(v: f64) -> half::f16 {
    half::f16::from_f64(v)
}
