//! The JSON request parsing Kiln had before issue 13 (a `serde_json::Value` tree,
//! flattened into `Vec<&Value>`, then encoded): the baseline of the `json_parse` bench,
//! and the reference the parser's unit tests compare against. Not used by Kiln itself.

#![allow(dead_code)]

use kiln_types::{ElementType, Tensor};
use serde::Deserialize;
use serde_json::Value;

/// The old OIP request body, `data` as a `Value`.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    pub inputs: Vec<RequestInput>,
}

/// The old input.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub data: Value,
}

/// The old path: body → `Value` tree → flattened → tensors.
pub fn oip_tensors(body: &[u8]) -> Result<Vec<Tensor>, String> {
    let request: InferRequest =
        serde_json::from_slice(body).map_err(|e| format!("malformed inference request: {e}"))?;
    request.inputs.iter().map(to_tensor).collect()
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// The old `RequestInput::to_tensor`.
pub fn to_tensor(input: &RequestInput) -> Result<Tensor, String> {
    let err = |m: String| format!("input `{}`: {m}", input.name);
    let element_type = ElementType::from_oip_name(&input.datatype).ok_or_else(|| {
        err(format!(
            "unknown datatype `{}` (use one of {})",
            input.datatype,
            ElementType::ALL
                .iter()
                .map(|t| t.oip_name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if input.shape.iter().any(|d| *d < 0) {
        return Err(err(format!("shape {:?} has a negative dimension", input.shape)));
    }
    let shape: Vec<u64> = input.shape.iter().map(|d| *d as u64).collect();
    let count = Tensor::element_count(&shape).map_err(|e| err(e.message().to_string()))?;
    let mut values = Vec::new();
    flatten(&input.data, &mut values);
    if values.len() != count {
        return Err(err(format!(
            "shape {:?} needs {count} values, got {}",
            input.shape,
            values.len()
        )));
    }
    let mut data = Vec::with_capacity(count * element_type.size());
    for (i, v) in values.iter().enumerate() {
        encode(element_type, v, &mut data).map_err(|m| err(format!("value {i}: {m}")))?;
    }
    Ok(Tensor {
        name: input.name.clone(),
        element_type,
        shape,
        data,
    })
}

/// The old `encode`.
pub fn encode(t: ElementType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
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
        ElementType::F16 => out.extend(kiln_types::tensor::f16_from_f64(float(v)?).to_le_bytes()),
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

/// The old seed path for a model with one `[N, width]` input of `element_type`: body →
/// `Value` → rows of `Value`s → one flat `Value` array → tensor. Errors as
/// `(status, message)`.
pub fn seed_tensor(
    body: &[u8],
    element_type: ElementType,
    width: usize,
    one_row: bool,
) -> Result<(Tensor, usize), (u16, String)> {
    let invalid = |m: String| (422, m);
    let value: Value = serde_json::from_slice(body).map_err(|e| (400, format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid("the body must be a JSON object".into()));
    };
    match obj.remove("model_version") {
        None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Number(_)) => {}
        Some(other) => {
            return Err(invalid(format!(
                "model_version must be a string or number, got {other}"
            )));
        }
    }
    match obj.remove("request_id") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => return Err(invalid(format!("request_id must be a string, got {other}"))),
    }
    let (rows, batch) = match (obj.remove("features"), obj.remove("instances")) {
        (Some(Value::Array(row)), None) => (vec![row], false),
        (None, Some(Value::Array(rows))) => {
            if rows.is_empty() {
                return Err(invalid("instances is empty".into()));
            }
            let rows = rows
                .into_iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::Array(row) => Ok(row),
                    other => Err(invalid(format!(
                        "instance {i} must be an array of features, got {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (rows, true)
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give either `features` (one row) or `instances` (rows), not both".into(),
            ));
        }
        (Some(other), None) => {
            return Err(invalid(format!(
                "features must be an array of numbers, got {other}"
            )));
        }
        (None, Some(other)) => {
            return Err(invalid(format!(
                "instances must be an array of rows, got {other}"
            )));
        }
        (None, None) => {
            return Err(invalid(
                "the body needs `features` (one row) or `instances` (rows)".into(),
            ));
        }
    };
    if one_row && rows.len() > 1 {
        return Err(invalid(format!(
            "model `m` takes one row at a time, got {} instances; send them one by one",
            rows.len()
        )));
    }
    for (i, row) in rows.iter().enumerate() {
        if row.len() != width {
            let message = format!("expected {width} features, got {}", row.len());
            return Err(invalid(if batch {
                format!("instance {i}: {message}")
            } else {
                message
            }));
        }
    }
    let n = rows.len();
    let input = RequestInput {
        name: "X".into(),
        shape: vec![n as i64, width as i64],
        datatype: element_type.oip_name().to_string(),
        data: Value::Array(rows.into_iter().flatten().collect()),
    };
    to_tensor(&input).map(|t| (t, n)).map_err(invalid)
}
