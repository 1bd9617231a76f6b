//! The OIP binary tensor data extension (Triton's `binary_tensor_data`): a JSON header
//! whose length is in `Inference-Header-Content-Length`, followed by the raw
//! little-endian bytes of the inputs (or outputs) that carry `binary_data_size`.

use crate::oip::{InferRequest, RequestInput};
use kiln_types::{ElementType, Tensor};
use serde_json::Value;

/// The header giving the JSON part's length in bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a body into its JSON header and the binary part after it; `header_length` is
/// the value of [`HEADER_LENGTH`], if the request had one.
pub fn split<'a>(header_length: Option<&str>, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), String> {
    let Some(value) = header_length else {
        return Ok((body, &[]));
    };
    let length: usize = value
        .trim()
        .parse()
        .map_err(|_| format!("the {HEADER_LENGTH} header is not a byte count"))?;
    if length > body.len() {
        return Err(format!(
            "{HEADER_LENGTH} says the JSON header is {length} bytes, but the body has only {}",
            body.len()
        ));
    }
    Ok(body.split_at(length))
}

/// `parameters.binary_data_size` of an input, if given.
fn binary_size(input: &RequestInput) -> Result<Option<usize>, String> {
    let Some(size) = input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) else {
        return Ok(None);
    };
    size.as_u64()
        .and_then(|s| usize::try_from(s).ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "input `{}`: binary_data_size must be a byte count, got {size}",
                input.name
            )
        })
}

/// A request's inputs (taken out of it) as tensors, taking binary inputs from `binary`
/// in order; JSON inputs keep the bytes their `data` was read into.
pub fn input_tensors(inputs: Vec<RequestInput>, binary: &[u8]) -> Result<Vec<Tensor>, String> {
    if inputs.is_empty() {
        return Err("the request has no inputs".into());
    }
    let mut offset = 0usize;
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let Some(size) = binary_size(&input)? else {
            tensors.push(input.into_tensor().map_err(|e| e.0)?);
            continue;
        };
        if input.datatype == "BYTES" {
            return Err(format!(
                "input `{}`: the BYTES datatype is not supported; Kiln models take numeric and BOOL tensors",
                input.name
            ));
        }
        let element_type = ElementType::from_oip_name(&input.datatype)
            .ok_or_else(|| format!("input `{}`: unknown datatype `{}`", input.name, input.datatype))?;
        if input.shape.iter().any(|d| *d < 0) {
            return Err(format!(
                "input `{}`: shape {:?} has a negative dimension",
                input.name, input.shape
            ));
        }
        let shape: Vec<u64> = input.shape.iter().map(|d| *d as u64).collect();
        let expected = Tensor::element_count(&shape)
            .ok()
            .and_then(|n| n.checked_mul(element_type.size()))
            .ok_or_else(|| format!("input `{}`: shape {:?} is too large", input.name, input.shape))?;
        if size != expected {
            return Err(format!(
                "input `{}`: shape {:?} of {} needs {expected} bytes, but binary_data_size is {size}",
                input.name, input.shape, input.datatype
            ));
        }
        let end = offset
            .checked_add(size)
            .filter(|end| *end <= binary.len())
            .ok_or_else(|| {
                format!(
                    "input `{}`: the binary data ends after {} bytes, before this input's {size} bytes",
                    input.name,
                    binary.len()
                )
            })?;
        tensors.push(Tensor {
            name: input.name,
            element_type,
            shape,
            data: binary[offset..end].to_vec(),
        });
        offset = end;
    }
    if offset != binary.len() {
        return Err(format!(
            "{} bytes of binary data follow the JSON header, but the inputs' binary_data_size add up to {offset}",
            binary.len()
        ));
    }
    Ok(tensors)
}

/// Whether an output should be returned as binary: its own `binary_data_output`
/// parameter, else the request's.
pub fn wants_binary(request: &InferRequest, output: &str) -> bool {
    let flag = |p: Option<&serde_json::Map<String, Value>>| {
        p.and_then(|p| p.get("binary_data_output"))
            .and_then(Value::as_bool)
    };
    request
        .outputs
        .as_ref()
        .and_then(|outs| outs.iter().find(|o| o.name == output))
        .and_then(|o| flag(o.parameters.as_ref()))
        .or_else(|| flag(request.parameters.as_ref()))
        .unwrap_or(false)
}

/// The JSON description of an output sent as binary.
pub fn binary_output_json(t: &Tensor) -> Value {
    serde_json::json!({
        "name": t.name,
        "datatype": t.element_type.oip_name(),
        "shape": t.shape,
        "parameters": { "binary_data_size": t.data.len() },
    })
}

/// An encoded infer response.
pub struct Encoded {
    /// `application/json`, or `application/octet-stream` with binary outputs.
    pub content_type: &'static str,
    /// The JSON header's length when binary outputs follow it.
    pub header_length: Option<usize>,
    /// The bytes to send.
    pub body: Vec<u8>,
}

/// A response: plain JSON when `binary` is empty, else the JSON header followed by the
/// binary outputs (with [`HEADER_LENGTH`]).
pub fn encode(json: &impl serde::Serialize, binary: Vec<&[u8]>) -> Result<Encoded, String> {
    let mut body = serde_json::to_vec(json).map_err(|e| format!("encoding the response: {e}"))?;
    if binary.is_empty() {
        return Ok(Encoded {
            content_type: "application/json",
            header_length: None,
            body,
        });
    }
    let json_len = body.len();
    body.reserve(binary.iter().map(|b| b.len()).sum());
    for part in binary {
        body.extend_from_slice(part);
    }
    Ok(Encoded {
        content_type: "application/octet-stream",
        header_length: Some(json_len),
        body,
    })
}
