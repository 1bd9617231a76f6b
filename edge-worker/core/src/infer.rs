//! The Open Inference Protocol v2 bodies (what Triton's and KServe's clients send and
//! expect): server and model metadata, a Triton-like model config, readiness, and infer
//! with the binary tensor extension.

use crate::binary::{self, Encoded};
use crate::error::{ApiError, Protocol};
use crate::oip::{InferRequest, ResponseOutput};
use kiln_types::{ModelInfo, Tensor, TensorSpec};
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
    let request = InferRequest::from_json(json_part).map_err(|e| ApiError::bad_request(e.0))?;
    let tensors =
        binary::input_tensors(&request, binary_part).map_err(|m| ApiError::invalid(Protocol::Oip, m))?;
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
            json_outputs.push(binary::binary_output_json(t));
            binary_outputs.push(&t.data);
        } else {
            let out = ResponseOutput::from_tensor(t)
                .map_err(|e| ApiError::internal(format!("encoding output `{}`: {e}", t.name)))?;
            json_outputs.push(
                serde_json::to_value(out)
                    .map_err(|e| ApiError::internal(format!("encoding output `{}`: {e}", t.name)))?,
            );
        }
    }
    let mut body = json!({
        "model_name": name,
        "model_version": version_label,
        "outputs": json_outputs,
    });
    if let Some(id) = &request.id {
        body["id"] = Value::String(id.clone());
    }
    binary::encode(&body, binary_outputs).map_err(ApiError::internal)
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
