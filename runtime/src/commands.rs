//! The `kiln` subcommands as library functions, so tests reach them without a process.

use crate::compile::{self, CompiledModel, Step, is_wasm, read_file};
use crate::error::HostError;
use crate::host::{Host, LoadedModel};
use crate::oip::{InferRequest, InferResponse};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_engine::model::format_shape;
use kiln_engine::{LoadOptions, ModelInfo, TensorSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Parses `NAME=1,10` (`-1` for the batch dimension).
pub fn parse_input_shape(s: &str) -> Result<(String, Vec<i64>), String> {
    let (name, dims) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=D1,D2,..."))?;
    let dims = dims
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<i64>()
                .map_err(|_| format!("`{d}` in `{s}` is not an integer"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// Load options from CLI flags.
pub fn load_options(
    name: Option<String>,
    version: Option<String>,
    shapes: Vec<(String, Vec<i64>)>,
) -> LoadOptions {
    LoadOptions {
        name: name.unwrap_or_default(),
        version: version.unwrap_or_default(),
        input_shapes: shapes.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// Compiles with a progress bar on stderr.
pub fn compile_with_progress(
    host: &Arc<Host>,
    onnx: &[u8],
    options: &LoadOptions,
) -> Result<CompiledModel, HostError> {
    let bar = ProgressBar::new(Step::ALL.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut started = false;
    let result = compile::compile(host, onnx, options, &mut |step| {
        if started {
            bar.inc(1);
        }
        started = true;
        bar.set_message(step.label());
    });
    bar.finish_and_clear();
    result
}

/// Default output path: the model path with `.wasm`.
pub fn default_output(model: &Path) -> PathBuf {
    model.with_extension("wasm")
}

/// `kiln compile`: writes the component atomically and returns a summary.
pub fn compile_file(
    host: &Arc<Host>,
    model: &Path,
    options: &LoadOptions,
    out: Option<PathBuf>,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let onnx = read_file(model)?;
    let compiled = compile_with_progress(host, &onnx, options)?;
    let out = out.unwrap_or_else(|| default_output(model));
    crate::aot_cache::write_atomically(&out, &compiled.wasm)
        .with_context(|| format!("writing {}", out.display()))?;
    let steps: Vec<String> = compiled
        .timings
        .iter()
        .map(|(s, d)| format!("{} {:.2} s", step_name(*s), d.as_secs_f64()))
        .collect();
    let mut s = format!("compiled {} -> {}\n", model.display(), out.display());
    s += &format!("  digest   sha256:{}\n", compiled.digest);
    s += &format!("  size     {}\n", human_size(compiled.wasm.len()));
    s += &describe_specs(&compiled.model.info, "  ");
    s += &format!(
        "  elapsed  {:.2} s ({})\n",
        started.elapsed().as_secs_f64(),
        steps.join(", ")
    );
    Ok(s)
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Validate => "validate",
        Step::PreInitialize => "pre-initialize",
        Step::Compile => "compile",
        Step::Verify => "verify",
    }
}

/// Bytes as `12.3 MB`.
pub fn human_size(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn spec_line(s: &TensorSpec) -> String {
    format!("{} {} {}", s.name, s.element_type, format_shape(&s.shape))
}

fn describe_specs(info: &ModelInfo, indent: &str) -> String {
    let mut s = String::new();
    for (i, spec) in info.inputs.iter().enumerate() {
        s += &format!(
            "{indent}{} {}\n",
            if i == 0 { "inputs  " } else { "        " },
            spec_line(spec)
        );
    }
    for (i, spec) in info.outputs.iter().enumerate() {
        s += &format!(
            "{indent}{} {}\n",
            if i == 0 { "outputs " } else { "        " },
            spec_line(spec)
        );
    }
    s
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

/// `kiln predict`: an OIP v2 request body in, the response body out.
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

/// `kiln inspect` as JSON.
pub fn inspect_json(model: &LoadedModel) -> serde_json::Value {
    let meta: serde_json::Map<String, serde_json::Value> = model
        .info
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "name": model.info.name,
        "version": model.info.version,
        "digest": format!("sha256:{}", model.digest),
        "size": model.size,
        "source_digest": format!("sha256:{}", model.info.source_digest),
        "kiln_version": meta.get("kiln.version"),
        "tract_version": meta.get("tract.version"),
        "inputs": model.info.inputs,
        "outputs": model.info.outputs,
        "labels": model.info.labels,
        "metadata": meta,
    })
}

/// `kiln inspect` for people.
pub fn inspect_text(model: &LoadedModel) -> String {
    let i = &model.info;
    let mut s = format!(
        "model    {}{}\n",
        i.name,
        if i.version.is_empty() {
            String::new()
        } else {
            format!(" ({})", i.version)
        }
    );
    s += &format!("digest   sha256:{}\n", model.digest);
    s += &format!("size     {}\n", human_size(model.size));
    s += &format!("source   sha256:{} (ONNX)\n", i.source_digest);
    s += &describe_specs(i, "");
    if !i.labels.is_empty() {
        s += &format!("labels   {}\n", i.labels.join(", "));
    }
    for (k, v) in &i.metadata {
        s += &format!("{:<8} {v}\n", format!("{k}:"));
    }
    s
}
