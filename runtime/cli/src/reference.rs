//! Reference profiles for drift, built on this machine: a CSV, `.npy` or Parquet file of model
//! inputs is read (`kiln_monitor::dataset`), checked against the model's input, profiled
//! as the nodes profile live traffic, and — when the component is at hand — run through
//! the model in batches so that the reference also holds the version's own outputs on it
//! (what prediction drift compares live outputs with).

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_api::tensor_json::Values;
use kiln_host::LoadedModel;
use kiln_monitor::dataset::{self, Dataset};
use kiln_monitor::model::ModelProfile;
use kiln_monitor::profile::ProfileConfig;
use kiln_registry::ReferenceProfile;
use kiln_types::{ElementType, Tensor};
use std::path::Path;

/// Rows per model call while profiling outputs.
const BATCH_ROWS: usize = 256;

/// Reads a reference file: `.npy` and Parquet by their magic bytes, else CSV with a header;
/// renamed by `feature_names` (comma-separated) when given.
pub fn read(path: &Path, feature_names: Option<&str>) -> anyhow::Result<Dataset> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the reference data {}", path.display()))?;
    let mut data = if bytes.starts_with(b"\x93NUMPY") {
        dataset::parse_npy(&bytes)
    } else if bytes.starts_with(b"PAR1") {
        kiln_monitor::parquet_file::parse(bytes)
    } else {
        let text = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is neither a .npy nor a Parquet file nor UTF-8 CSV text",
                path.display()
            )
        })?;
        dataset::parse_csv(&text)
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(names) = feature_names {
        let names: Vec<String> = names.split(',').map(|n| n.trim().to_string()).collect();
        data.rename(names)
            .map_err(|e| anyhow::anyhow!("--feature-names: {e}"))?;
    }
    Ok(data)
}

/// The profile of `data` as `model`'s input, with the model's outputs on it; `model`
/// `None` profiles the inputs only.
pub fn profile(data: &Dataset, model: Option<&LoadedModel>) -> anyhow::Result<ModelProfile> {
    let config = ProfileConfig::default();
    let (spec_name, element_type, batch_dim, rank1) = match model {
        Some(m) => {
            let [input] = m.info.inputs.as_slice() else {
                bail!(
                    "{} has {} inputs; a reference file maps its columns onto one input's features, so drift works for single-input models only",
                    m.info.name,
                    m.info.inputs.len()
                );
            };
            let features: i64 = input.shape.iter().skip(1).product();
            if input.shape.len() < 2 && data.columns.len() != 1
                || features > 0 && features as usize != data.columns.len()
            {
                bail!(
                    "the reference has {} columns but {}'s input `{}` has shape {:?} ({} features per row)",
                    data.columns.len(),
                    m.info.name,
                    input.name,
                    input.shape,
                    features
                );
            }
            let batch = input
                .shape
                .first()
                .copied()
                .filter(|d| *d > 0)
                .map(|d| d as usize);
            (
                input.name.clone(),
                input.element_type,
                batch,
                input.shape.len() == 1,
            )
        }
        None => ("input".to_string(), ElementType::F64, None, false),
    };
    let rows = data.rows();
    let step = batch_dim.unwrap_or(BATCH_ROWS);
    let progress = model.map(|_| {
        let bar = ProgressBar::new(rows as u64);
        bar.set_style(
            ProgressStyle::with_template("profiling the reference {bar:30} {pos}/{len} rows")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut profile = ModelProfile::default();
    let mut start = 0;
    while start < rows {
        let end = (start + step).min(rows);
        if batch_dim.is_some() && end - start != step {
            bail!(
                "the model takes batches of exactly {step} rows and the reference's {rows} rows do not divide into them"
            );
        }
        let mut tensor = batch(&spec_name, element_type, data, start, end)?;
        if rank1 {
            tensor.shape.truncate(1);
        }
        profile
            .observe_inputs(std::slice::from_ref(&tensor), config)
            .map_err(|e| anyhow::anyhow!("profiling rows {start}..{end}: {e}"))?;
        if let Some(model) = model {
            let outputs = model
                .predict(vec![tensor])
                .with_context(|| format!("running the model on reference rows {}..{}", start + 1, end))?;
            profile
                .observe_outputs(&outputs, config)
                .map_err(|e| anyhow::anyhow!("profiling the outputs of rows {start}..{end}: {e}"))?;
        }
        if let Some(bar) = &progress {
            bar.set_position(end as u64);
        }
        start = end;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(profile)
}

/// Rows `start..end` of `data` as a [rows, features] tensor of `element_type`, each cell
/// converted as the serving path converts a JSON number (`kiln_api::tensor_json`).
fn batch(
    name: &str,
    element_type: ElementType,
    data: &Dataset,
    start: usize,
    end: usize,
) -> anyhow::Result<Tensor> {
    let features = data.columns.len();
    let mut values = Values::new(Some(element_type), Some((end - start) * features));
    for row in start..end {
        for column in &data.columns {
            values.push_f64(column[row]);
        }
    }
    if let Some((i, why)) = values.misfit() {
        bail!(
            "row {}, column `{}`: {why}: it does not fit the model's {element_type:?} input",
            start + i / features + 1,
            data.names[i % features]
        );
    }
    Ok(Tensor {
        name: name.to_string(),
        element_type,
        shape: vec![(end - start) as u64, features as u64],
        data: values.into_bytes(),
    })
}

/// The reference record of `component` on the file at `data`: read, checked against the
/// model's input, profiled with the model's outputs (`kiln models register --reference`,
/// `kiln monitor reference set` and MLflow imports).
pub fn build(
    host: &std::sync::Arc<kiln_host::Host>,
    component: &[u8],
    data: &Path,
    names: Option<&str>,
) -> anyhow::Result<ReferenceProfile> {
    let model = host.load(component)?;
    let dataset = read(data, names)?;
    let profile = profile(&dataset, Some(&model))?;
    record(data, &dataset, &profile)
}

/// The registry record of a reference built from `path`.
pub fn record(path: &Path, data: &Dataset, profile: &ModelProfile) -> anyhow::Result<ReferenceProfile> {
    Ok(ReferenceProfile {
        features: data.names.clone(),
        rows: data.rows() as u64,
        source: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        profile: serde_json::to_string(profile)?,
        created_at: String::new(),
        created_by: String::new(),
    })
}
