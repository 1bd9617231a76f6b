//! `kiln compile`: an ONNX model into a pre-initialized model component, with progress.

use crate::render::describe_specs;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_host::compile::{self, CompiledModel, Step, read_file};
use kiln_host::{Host, HostError};
use kiln_types::LoadOptions;
use kiln_types::format::human_size;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What a model is compiled as (also `kiln predict`'s flags for an .onnx).
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Model name recorded in the component (default: the ONNX graph name).
    #[arg(long)]
    pub name: Option<String>,
    /// Version label recorded in the component.
    #[arg(long = "model-version")]
    pub model_version: Option<String>,
    /// Fix an input's shape: NAME=1,10 (-1 for the batch dimension). Repeatable.
    #[arg(long = "input-shape", value_parser = parse_input_shape)]
    pub input_shapes: Vec<(String, Vec<i64>)>,
}

impl ModelArgs {
    /// The load options these flags describe.
    pub fn load_options(self) -> LoadOptions {
        LoadOptions {
            name: self.name.unwrap_or_default(),
            version: self.model_version.unwrap_or_default(),
            input_shapes: self.input_shapes.into_iter().collect::<BTreeMap<_, _>>(),
        }
    }
}

/// Flags of `kiln compile`.
#[derive(clap::Args)]
pub struct CompileArgs {
    /// The .onnx file.
    pub model: PathBuf,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Output component (default: MODEL with a .wasm extension).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

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

/// `kiln compile`: writes the component durably and returns a summary.
pub fn run(host: &Arc<Host>, args: CompileArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let model = args.model;
    let options = args.model_args.load_options();
    let onnx = read_file(&model)?;
    let compiled = compile_with_progress(host, &onnx, &options)?;
    let out = args.output.unwrap_or_else(|| default_output(&model));
    kiln_types::durable::write(&out, &compiled.wasm).with_context(|| format!("writing {}", out.display()))?;
    let steps: Vec<String> = compiled
        .timings
        .iter()
        .map(|(s, d)| format!("{} {:.2} s", step_name(*s), d.as_secs_f64()))
        .collect();
    let mut s = format!("compiled {} -> {}\n", model.display(), out.display());
    s += &format!("  digest   sha256:{}\n", compiled.digest);
    s += &format!("  size     {}\n", human_size(compiled.wasm.len() as u64));
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
