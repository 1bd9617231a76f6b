//! The Open Inference Protocol v2 bodies (what Triton's and KServe's clients send and
//! expect): server and model metadata, a Triton-like model config, readiness, and infer
//! with the binary tensor extension.

use crate::binary::{self, Encoded};
use crate::error::{ApiError, Protocol};
use crate::oip::InferRequest;
#[cfg(any(doc, test))]
use crate::oip::ResponseOutput;
use kiln_types::{ElementType, ModelInfo, Tensor, TensorSpec};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

/// `GET /v2`.
pub fn server_metadata() -> Value {
    json!({
        "name": "kiln",
        "version": kiln_types::KILN_VERSION,
        "extensions": ["binary_tensor_data"],
    })
}

fn spec_json(s: &TensorSpec) -> Value {
    json!({ "name": s.name, "datatype": s.element_type.oip_name(), "shape": s.shape })
}

/// A served version as the metadata endpoints describe it.
pub struct Described<'a> {
    pub name: &'a str,
    pub info: &'a ModelInfo,
    pub digest: &'a str,
    pub stage: &'a str,
    pub aliases: &'a [String],
}

/// `GET /v2/models/{name}[/versions/{v}]`; `versions` lists what the request can name.
pub fn model_metadata(d: &Described<'_>, versions: Vec<String>) -> Value {
    json!({
        "name": d.name,
        "versions": versions,
        "platform": "kiln_wasm",
        "inputs": d.info.inputs.iter().map(spec_json).collect::<Vec<_>>(),
        "outputs": d.info.outputs.iter().map(spec_json).collect::<Vec<_>>(),
        "parameters": {
            "digest": d.digest,
            "stage": d.stage,
            "aliases": d.aliases,
        },
    })
}

/// `GET /v2/models/{name}[/versions/{v}]/config`.
pub fn model_config(d: &Described<'_>) -> Value {
    // Triton's type names are its OIP names with a `TYPE_` prefix (TYPE_FP32, TYPE_BOOL).
    let tensor = |s: &TensorSpec| {
        json!({
            "name": s.name,
            "data_type": format!("TYPE_{}", s.element_type.oip_name()),
            "dims": s.shape,
        })
    };
    json!({
        "name": d.name,
        "platform": "kiln_wasm",
        "backend": "kiln",
        "max_batch_size": 0,
        "input": d.info.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "output": d.info.outputs.iter().map(tensor).collect::<Vec<_>>(),
        "parameters": { "digest": { "string_value": d.digest } },
    })
}

/// `GET /v2/models/{name}[/versions/{v}]/ready`.
pub fn model_ready(name: &str, version_label: &str) -> Value {
    json!({ "name": name, "version": version_label, "ready": true })
}

/// An infer request read and checked against the model.
pub struct Prepared {
    /// The request, its inputs moved out into `inputs`.
    pub request: InferRequest,
    /// The model's inputs, in its order.
    pub inputs: Vec<Tensor>,
    /// Outputs the request names (empty: all).
    pub requested: Vec<String>,
}

/// Reads an infer body (`content_encoding` and `header_length` are the request's
/// `Content-Encoding` and `Inference-Header-Content-Length` headers) and checks it
/// against the model.
pub fn prepare(
    info: &ModelInfo,
    content_encoding: Option<&str>,
    header_length: Option<&str>,
    body: &[u8],
) -> Result<Prepared, ApiError> {
    if let Some(encoding) = content_encoding
        && encoding != "identity"
    {
        return Err(ApiError::bad_request(format!(
            "Content-Encoding {encoding} is not supported; send the body uncompressed"
        )));
    }
    let (json_part, binary_part) = binary::split(header_length, body).map_err(ApiError::bad_request)?;
    let mut request = InferRequest::from_json(json_part).map_err(|e| ApiError::bad_request(e.0))?;
    // The inputs move into the call; the request keeps what the answer needs.
    let tensors = binary::input_tensors(std::mem::take(&mut request.inputs), binary_part)
        .map_err(|m| ApiError::invalid(Protocol::Oip, m))?;
    let inputs = check_inputs(info, tensors).map_err(|m| ApiError::invalid(Protocol::Oip, m))?;
    let requested: Vec<String> = request.outputs.iter().flatten().map(|o| o.name.clone()).collect();
    if let Some(unknown) = requested
        .iter()
        .find(|r| !info.outputs.iter().any(|o| &o.name == *r))
    {
        return Err(ApiError::invalid(
            Protocol::Oip,
            format!(
                "unknown output `{unknown}`; the model's outputs are: {}",
                info.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(Prepared {
        request,
        inputs,
        requested,
    })
}

/// The infer response for the model's outputs.
pub fn response(
    name: &str,
    version_label: &str,
    request: &InferRequest,
    requested: &[String],
    outputs: &[Tensor],
) -> Result<Encoded, ApiError> {
    let mut json_outputs = Vec::new();
    let mut binary_outputs: Vec<&[u8]> = Vec::new();
    for t in outputs
        .iter()
        .filter(|t| requested.is_empty() || requested.contains(&t.name))
    {
        if binary::wants_binary(request, &t.name) {
            json_outputs.push(OutputJson::Binary(binary::binary_output_json(t)));
            binary_outputs.push(&t.data);
        } else {
            t.check_len()
                .map_err(|e| ApiError::internal(format!("encoding output `{}`: {e}", t.name)))?;
            json_outputs.push(OutputJson::Tensor {
                data: TensorValues(t),
                datatype: t.element_type.oip_name(),
                name: &t.name,
                shape: &t.shape,
            });
        }
    }
    let body = ResponseBody {
        id: request.id.as_deref(),
        model_name: name,
        model_version: version_label,
        outputs: json_outputs,
    };
    binary::encode(&body, binary_outputs).map_err(ApiError::internal)
}

/// The infer response body, written straight from the output tensors (no `Value` per
/// element). Fields in alphabetical order, the order of the `Value` maps it replaces, so
/// the bytes are the same.
#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    model_name: &'a str,
    model_version: &'a str,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutputJson<'a> {
    Tensor {
        data: TensorValues<'a>,
        datatype: &'a str,
        name: &'a str,
        shape: &'a [u64],
    },
    Binary(Value),
}

/// A tensor's elements as a flat JSON array, as [`ResponseOutput::from_tensor`] and a
/// `Value` wrote them: BOOL as booleans, integers as integers, FP16 and FP32 widened to
/// f64, NaN and infinities as `null`. The tensor's length was checked.
struct TensorValues<'a>(&'a Tensor);

impl Serialize for TensorValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let t = self.0;
        let d = &t.data;
        let mut seq = s.serialize_seq(Some(d.len() / t.element_type.size().max(1)))?;
        fn le<const N: usize>(c: &[u8]) -> [u8; N] {
            c.try_into().unwrap_or([0; N])
        }
        match t.element_type {
            ElementType::Bool => d.iter().try_for_each(|b| seq.serialize_element(&(*b != 0)))?,
            ElementType::F16 => {
                let values = t.to_f64_vec().map_err(serde::ser::Error::custom)?;
                values.iter().try_for_each(|v| seq.serialize_element(v))?
            }
            ElementType::F32 => d
                .chunks_exact(4)
                .try_for_each(|c| seq.serialize_element(&(f32::from_le_bytes(le(c)) as f64)))?,
            ElementType::F64 => d
                .chunks_exact(8)
                .try_for_each(|c| seq.serialize_element(&f64::from_le_bytes(le(c))))?,
            ElementType::I8 => d.iter().try_for_each(|b| seq.serialize_element(&(*b as i8)))?,
            ElementType::U8 => d.iter().try_for_each(|b| seq.serialize_element(b))?,
            ElementType::I16 => d
                .chunks_exact(2)
                .try_for_each(|c| seq.serialize_element(&i16::from_le_bytes(le(c))))?,
            ElementType::U16 => d
                .chunks_exact(2)
                .try_for_each(|c| seq.serialize_element(&u16::from_le_bytes(le(c))))?,
            ElementType::I32 => d
                .chunks_exact(4)
                .try_for_each(|c| seq.serialize_element(&i32::from_le_bytes(le(c))))?,
            ElementType::U32 => d
                .chunks_exact(4)
                .try_for_each(|c| seq.serialize_element(&u32::from_le_bytes(le(c))))?,
            ElementType::I64 => d
                .chunks_exact(8)
                .try_for_each(|c| seq.serialize_element(&i64::from_le_bytes(le(c))))?,
            ElementType::U64 => d
                .chunks_exact(8)
                .try_for_each(|c| seq.serialize_element(&u64::from_le_bytes(le(c))))?,
        }
        seq.end()
    }
}

/// Checks request tensors against the model's inputs (names, element types, fixed
/// dimensions) and puts them in the model's order, so mistakes get a precise message.
pub fn check_inputs(info: &kiln_types::ModelInfo, mut tensors: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    let names = || {
        info.inputs
            .iter()
            .map(|s| {
                format!(
                    "{} ({} {})",
                    s.name,
                    s.element_type.oip_name(),
                    kiln_types::format_shape(&s.shape)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(t) = tensors
        .iter()
        .find(|t| !info.inputs.iter().any(|s| s.name == t.name))
    {
        return Err(format!(
            "unknown input `{}`; the model's inputs are: {}",
            t.name,
            names()
        ));
    }
    let mut ordered = Vec::with_capacity(info.inputs.len());
    for spec in &info.inputs {
        let Some(pos) = tensors.iter().position(|t| t.name == spec.name) else {
            return Err(format!(
                "missing input `{}`; the model's inputs are: {}",
                spec.name,
                names()
            ));
        };
        let t = tensors.swap_remove(pos);
        if t.element_type != spec.element_type {
            return Err(format!(
                "input `{}`: the model takes {}, got {}",
                t.name,
                spec.element_type.oip_name(),
                t.element_type.oip_name()
            ));
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape
                .iter()
                .zip(&spec.shape)
                .all(|(got, want)| *want < 0 || *got == *want as u64);
        if !fits {
            return Err(format!(
                "input `{}`: the model takes shape {}, got {:?}",
                t.name,
                kiln_types::format_shape(&spec.shape),
                t.shape
            ));
        }
        ordered.push(t);
    }
    if let Some(t) = tensors.first() {
        return Err(format!("input `{}` is given more than once", t.name));
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The response as it was built before: a `Value` per output, through `json!`.
    fn value_tree_response(request: &InferRequest, outputs: &[Tensor]) -> Vec<u8> {
        let outputs: Vec<Value> = outputs
            .iter()
            .map(|t| {
                if binary::wants_binary(request, &t.name) {
                    binary::binary_output_json(t)
                } else {
                    serde_json::to_value(ResponseOutput::from_tensor(t).unwrap()).unwrap()
                }
            })
            .collect();
        let mut body = json!({ "model_name": "m", "model_version": "3", "outputs": outputs });
        if let Some(id) = &request.id {
            body["id"] = Value::String(id.clone());
        }
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn responses_are_written_from_the_tensors_with_the_same_bytes_as_the_value_tree() {
        let typed = |t: ElementType, bytes: Vec<u8>| Tensor {
            name: t.oip_name().to_lowercase(),
            element_type: t,
            shape: vec![2],
            data: bytes,
        };
        let outputs = vec![
            Tensor::from_f32("probabilities", &[2, 2], &[0.1, f32::NAN, f32::INFINITY, -2.5e-8]),
            Tensor::from_i64("label", &[i64::MIN, 7]),
            typed(
                ElementType::F64,
                [0.1f64, f64::NAN].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            typed(ElementType::F16, vec![0x00, 0x3c, 0x00, 0x7e]),
            typed(ElementType::Bool, vec![1, 0]),
            typed(ElementType::I8, vec![0xff, 3]),
            typed(ElementType::U8, vec![0xff, 3]),
            typed(ElementType::I16, vec![0xff, 0xff, 3, 0]),
            typed(ElementType::U16, vec![0xff, 0xff, 3, 0]),
            typed(
                ElementType::I32,
                (-5i32..-3).flat_map(|v| v.to_le_bytes()).collect(),
            ),
            typed(
                ElementType::U32,
                [u32::MAX, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            typed(
                ElementType::U64,
                [u64::MAX, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ];
        for body in [
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#,
            r#"{"id":"r1","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],
                "outputs":[{"name":"label","parameters":{"binary_data_output":true}}]}"#,
        ] {
            let request = InferRequest::from_json(body.as_bytes()).unwrap();
            let encoded = response("m", "3", &request, &[], &outputs).unwrap();
            let json_len = encoded.header_length.unwrap_or(encoded.body.len());
            assert_eq!(
                String::from_utf8_lossy(&encoded.body[..json_len]),
                String::from_utf8_lossy(&value_tree_response(&request, &outputs))
            );
        }
        let bad = Tensor {
            shape: vec![3],
            ..Tensor::from_f32("y", &[2], &[1.0, 2.0])
        };
        let request = InferRequest::from_json(br#"{"inputs":[]}"#).unwrap();
        let e = response("m", "3", &request, &[], &[bad]).err().unwrap();
        assert!(
            e.message.starts_with("encoding output `y`: ") && e.message.contains("of shape [3]"),
            "{}",
            e.message
        );
    }
}
