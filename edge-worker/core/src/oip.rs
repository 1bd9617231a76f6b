//! The Open Inference Protocol v2 (KServe / Triton) JSON bodies and their conversion to
//! and from tensors. Shared by `kiln predict`, `kiln serve` and the edge workers.

use kiln_types::{ElementType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An OIP v2 inference request body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inputs: Vec<RequestInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// One input tensor of a request; `data` is flat or nested row-major.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// A requested output.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// An OIP v2 inference response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseOutput {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    pub data: Data,
}

/// Output values, typed so floats print in their shortest exact form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Data {
    Bool(Vec<bool>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Why a request body could not become tensors (always the client's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

impl RequestInput {
    /// Converts to a tensor, checking datatype, shape, element count and ranges.
    /// `null` stands for NaN in float inputs (JSON has no NaN).
    pub fn to_tensor(&self) -> Result<Tensor, RequestError> {
        let err = |m: String| RequestError(format!("input `{}`: {m}", self.name));
        let element_type = ElementType::from_oip_name(&self.datatype).ok_or_else(|| {
            err(format!(
                "unknown datatype `{}` (use one of {})",
                self.datatype,
                ElementType::ALL
                    .iter()
                    .map(|t| t.oip_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if self.shape.iter().any(|d| *d < 0) {
            return Err(err(format!("shape {:?} has a negative dimension", self.shape)));
        }
        let shape: Vec<u64> = self.shape.iter().map(|d| *d as u64).collect();
        let count = Tensor::element_count(&shape).map_err(|e| err(e.message().to_string()))?;
        let mut values = Vec::new();
        flatten(&self.data, &mut values);
        if values.len() != count {
            return Err(err(format!(
                "shape {:?} needs {count} values, got {}",
                self.shape,
                values.len()
            )));
        }
        let mut data = Vec::with_capacity(count * element_type.size());
        for (i, v) in values.iter().enumerate() {
            encode(element_type, v, &mut data).map_err(|m| err(format!("value {i}: {m}")))?;
        }
        Ok(Tensor {
            name: self.name.clone(),
            element_type,
            shape,
            data,
        })
    }
}

fn encode(t: ElementType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let float = |v: &Value| -> Result<f64, String> {
        match v {
            Value::Null => Ok(f64::NAN),
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            other => Err(format!("{other} is not a number")),
        }
    };
    let int = |v: &Value, min: i128, max: i128| -> Result<i128, String> {
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .ok_or_else(|| format!("{n} is not an integer"))?,
            Value::Bool(b) => *b as i128,
            other => return Err(format!("{other} is not an integer")),
        };
        if n < min || n > max {
            return Err(format!("{n} is out of range for {t}"));
        }
        Ok(n)
    };
    match t {
        ElementType::F16 => out.extend(tract_f16(float(v)?)),
        ElementType::F32 => out.extend((float(v)? as f32).to_le_bytes()),
        ElementType::F64 => out.extend(float(v)?.to_le_bytes()),
        ElementType::I8 => out.extend((int(v, i8::MIN.into(), i8::MAX.into())? as i8).to_le_bytes()),
        ElementType::I16 => out.extend((int(v, i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes()),
        ElementType::I32 => out.extend((int(v, i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes()),
        ElementType::I64 => out.extend((int(v, i64::MIN.into(), i64::MAX.into())? as i64).to_le_bytes()),
        ElementType::U8 => out.push(int(v, 0, u8::MAX.into())? as u8),
        ElementType::U16 => out.extend((int(v, 0, u16::MAX.into())? as u16).to_le_bytes()),
        ElementType::U32 => out.extend((int(v, 0, u32::MAX.into())? as u32).to_le_bytes()),
        ElementType::U64 => out.extend((int(v, 0, u64::MAX.into())? as u64).to_le_bytes()),
        ElementType::Bool => match v {
            Value::Bool(b) => out.push(*b as u8),
            Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                out.push(n.as_u64().unwrap_or(0) as u8)
            }
            other => return Err(format!("{other} is not a boolean")),
        },
    }
    Ok(())
}

fn tract_f16(v: f64) -> [u8; 2] {
    kiln_types::tensor::f16_from_f64(v).to_le_bytes()
}

impl InferRequest {
    /// Parses a JSON body.
    pub fn from_json(bytes: &[u8]) -> Result<InferRequest, RequestError> {
        serde_json::from_slice(bytes).map_err(|e| RequestError(format!("malformed inference request: {e}")))
    }

    /// All inputs as tensors.
    pub fn tensors(&self) -> Result<Vec<Tensor>, RequestError> {
        if self.inputs.is_empty() {
            return Err(RequestError("the request has no inputs".into()));
        }
        self.inputs.iter().map(RequestInput::to_tensor).collect()
    }
}

impl ResponseOutput {
    /// Converts a tensor to its JSON form.
    pub fn from_tensor(t: &Tensor) -> Result<ResponseOutput, RequestError> {
        let values = t.to_f64_vec().map_err(|e| RequestError(e.to_string()))?;
        let data = match t.element_type {
            ElementType::Bool => Data::Bool(t.data.iter().map(|b| *b != 0).collect()),
            ElementType::F16 | ElementType::F32 => Data::F32(values.iter().map(|v| *v as f32).collect()),
            ElementType::F64 => Data::F64(values),
            ElementType::U64 => Data::U64(
                t.data
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            ElementType::I64 => Data::I64(
                t.data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            _ => Data::I64(values.iter().map(|v| *v as i64).collect()),
        };
        Ok(ResponseOutput {
            name: t.name.clone(),
            shape: t.shape.clone(),
            datatype: t.element_type.oip_name().to_string(),
            data,
        })
    }
}

impl InferResponse {
    /// A response for outputs of a model, keeping only `requested` outputs when given.
    pub fn new(
        model_name: &str,
        model_version: &str,
        id: Option<String>,
        outputs: &[Tensor],
        requested: Option<&[RequestOutput]>,
    ) -> Result<InferResponse, RequestError> {
        if let Some(req) = requested
            && let Some(unknown) = req.iter().find(|r| !outputs.iter().any(|o| o.name == r.name))
        {
            return Err(RequestError(format!(
                "unknown output `{}`; the model's outputs are: {}",
                unknown.name,
                outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let outputs = outputs
            .iter()
            .filter(|o| requested.is_none_or(|r| r.is_empty() || r.iter().any(|r| r.name == o.name)))
            .map(ResponseOutput::from_tensor)
            .collect::<Result<_, _>>()?;
        Ok(InferResponse {
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            id,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(datatype: &str, shape: Vec<i64>, data: Value) -> RequestInput {
        RequestInput {
            name: "x".into(),
            shape,
            datatype: datatype.into(),
            data,
            parameters: None,
        }
    }

    #[test]
    fn nested_and_flat_data_give_the_same_tensor() {
        let flat = input("FP32", vec![2, 2], serde_json::json!([1.0, 2.0, 3.5, -4.0]))
            .to_tensor()
            .unwrap();
        let nested = input("FP32", vec![2, 2], serde_json::json!([[1.0, 2.0], [3.5, -4.0]]))
            .to_tensor()
            .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.to_f64_vec().unwrap(), vec![1.0, 2.0, 3.5, -4.0]);
    }

    #[test]
    fn wrong_count_bad_type_and_out_of_range_are_refused_with_reasons() {
        let e = input("FP32", vec![2, 3], serde_json::json!([1, 2]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("needs 6 values, got 2"), "{e}");
        let e = input("FLOAT", vec![1], serde_json::json!([1]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("unknown datatype `FLOAT`"), "{e}");
        let e = input("UINT8", vec![1], serde_json::json!([300]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("out of range"), "{e}");
        let e = input("INT64", vec![1], serde_json::json!(["a"]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("not an integer"), "{e}");
    }

    #[test]
    fn null_is_nan_for_floats_and_output_round_trips() {
        let t = input("FP64", vec![2], serde_json::json!([null, 2.5]))
            .to_tensor()
            .unwrap();
        let v = t.to_f64_vec().unwrap();
        assert!(v[0].is_nan() && v[1] == 2.5);
        let out = ResponseOutput::from_tensor(&Tensor::from_f32("y", &[2], &[0.1, 2.0])).unwrap();
        assert_eq!(serde_json::to_string(&out.data).unwrap(), "[0.1,2.0]");
    }
}
