//! `kiln predict`: one Open Inference Protocol v2 request on a component (or an .onnx,
//! compiled in memory first), without a server.

use super::compile::{ModelArgs, compile_with_progress};
use kiln_api::oip::{InferRequest, InferResponse};
use kiln_host::compile::{is_wasm, read_file};
use kiln_host::{Host, HostError, LoadedModel};
use kiln_types::LoadOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Flags of `kiln predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// A component .wasm or an .onnx file.
    pub model: PathBuf,
    /// The OIP v2 infer request body (JSON); `-` reads stdin.
    #[arg(long)]
    pub request: PathBuf,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `kiln predict`: the response JSON to print.
pub fn run(host: &Arc<Host>, args: PredictArgs) -> anyhow::Result<String> {
    let options = args.model_args.load_options();
    let body = if args.request.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
        b
    } else {
        read_file(&args.request)?
    };
    let loaded = load_model(host, &args.model, &options)?;
    let response = predict(&loaded, &body)?;
    Ok(serde_json::to_string(&response)?)
}

/// Loads a component file, or compiles an ONNX file in memory first.
pub fn load_model(host: &Arc<Host>, path: &Path, options: &LoadOptions) -> anyhow::Result<LoadedModel> {
    let bytes = read_file(path)?;
    if is_wasm(&bytes) {
        return Ok(host.load(&bytes)?);
    }
    let compiled = compile_with_progress(host, &bytes, options)?;
    Ok(compiled.model)
}

/// An OIP v2 request body in, the response body out.
pub fn predict(model: &LoadedModel, request_json: &[u8]) -> Result<InferResponse, HostError> {
    let request = InferRequest::from_json(request_json).map_err(|e| HostError::InvalidInput(e.0))?;
    let inputs = request.tensors().map_err(|e| HostError::InvalidInput(e.0))?;
    let outputs = model.predict(inputs)?;
    InferResponse::new(
        &model.info.name,
        &model.info.version,
        request.id.clone(),
        &outputs,
        request.outputs.as_deref(),
    )
    .map_err(|e| HostError::InvalidInput(e.0))
}
