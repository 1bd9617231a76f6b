//! `kiln inspect`: what a model component says about itself.

use super::predict::load_model;
use crate::render::describe_specs;
use kiln_host::{Host, LoadedModel};
use kiln_types::format::human_size;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `kiln inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The component .wasm.
    pub component: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln inspect`: the description to print.
pub fn run(host: &Arc<Host>, args: InspectArgs) -> anyhow::Result<String> {
    let loaded = load_model(host, &args.component, &Default::default())?;
    Ok(if args.json {
        format!("{}\n", serde_json::to_string_pretty(&inspect_json(&loaded))?)
    } else {
        inspect_text(&loaded)
    })
}

/// `kiln inspect --json`.
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
    s += &format!("size     {}\n", human_size(model.size as u64));
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
