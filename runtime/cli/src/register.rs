//! Turns a file into what the registry stores: an `.onnx` is compiled into a component
//! first (so the registry only ever holds verified components), a `.wasm` is loaded to
//! prove it is a Kiln model, and golden requests are run to record their responses.

use crate::commands::compile::compile_with_progress;
use crate::commands::inspect::inspect_json;
use crate::commands::predict::predict;
use anyhow::Context;
use kiln_host::compile::{is_wasm, read_file};
use kiln_host::{Host, LoadedModel};
use kiln_registry::{GoldenPair, Prepared};
use kiln_types::LoadOptions;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Compiles or verifies `path` for registration under `name`, and answers each golden
/// request with the model's own response (a regression anchor for smoke tests).
pub fn prepare(host: &Arc<Host>, path: &Path, name: &str, golden: &[Value]) -> anyhow::Result<Prepared> {
    let bytes = read_file(path)?;
    let (component, source_digest, model) = if is_wasm(&bytes) {
        let model = host
            .load(&bytes)
            .with_context(|| format!("{} is not a loadable Kiln model component", path.display()))?;
        let source = model.info.source_digest.clone();
        (bytes, source, model)
    } else {
        let options = LoadOptions {
            name: name.to_string(),
            ..LoadOptions::default()
        };
        let source = kiln_types::digest(&bytes);
        let compiled = compile_with_progress(host, &bytes, &options)
            .with_context(|| format!("compiling {}", path.display()))?;
        (compiled.wasm, source, compiled.model)
    };
    let golden = golden_pairs(&model, golden)?;
    Ok(Prepared {
        component,
        source_digest: (!source_digest.is_empty()).then_some(source_digest),
        signature: signature(&model),
        golden,
    })
}

/// What the registry keeps of a component's interface.
pub fn signature(model: &LoadedModel) -> Value {
    let mut v = inspect_json(model);
    if let Some(o) = v.as_object_mut() {
        // The registry records the digest and size itself.
        o.remove("digest");
        o.remove("size");
    }
    v
}

/// Runs each request and pairs it with the response.
pub fn golden_pairs(model: &LoadedModel, requests: &[Value]) -> anyhow::Result<Vec<GoldenPair>> {
    requests
        .iter()
        .enumerate()
        .map(|(i, request)| {
            let body = serde_json::to_vec(request)?;
            let response = predict(model, &body)
                .with_context(|| format!("golden request {} fails on this model", i + 1))?;
            Ok(GoldenPair {
                request: request.clone(),
                response: serde_json::to_value(response)?,
            })
        })
        .collect()
}
