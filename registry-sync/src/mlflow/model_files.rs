//! Getting a model version's ONNX file out of MLflow: find the `.onnx` among the version's
//! artifacts, download it through the tracking server's artifact proxy, and fold any
//! external tensor data back into it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::client::{ArtifactFile, MlflowClient, MlflowError};
use super::onnx_external::inline_external_data;

/// The file name MLflow's ONNX flavor gives the model; preferred when a directory has several.
const PREFERRED: &str = "model.onnx";
/// How many directory levels below the version's root to look for an `.onnx`.
const MAX_DEPTH: usize = 3;
/// How many directories to list at most while looking.
const MAX_LISTINGS: usize = 64;

impl MlflowClient {
    /// Downloads the ONNX model of `name` version `version` into `dir` and returns the path
    /// of a self-contained `.onnx` (external tensor data inlined). Fails with
    /// [`MlflowError::NoOnnx`] (inside the `anyhow::Error`) when the version has no `.onnx`.
    pub fn download_onnx(&self, name: &str, version: u64, dir: &Path) -> anyhow::Result<PathBuf> {
        let root = self
            .version_files(name, version)
            .with_context(|| format!("locating the files of MLflow model '{name}' version {version}"))?;
        let onnx = self
            .find_onnx(name, version, &root)
            .with_context(|| format!("looking for the .onnx of MLflow model '{name}' version {version}"))?;
        let downloaded = dir.join("downloaded.onnx");
        let size = self
            .download_proxied(&onnx, &downloaded)
            .with_context(|| format!("downloading {onnx} of MLflow model '{name}' version {version}"))?;
        tracing::info!(model = %name, version, artifact = %onnx, size, "downloaded ONNX model from MLflow");

        let bytes =
            std::fs::read(&downloaded).with_context(|| format!("reading {}", downloaded.display()))?;
        let onnx_dir = onnx.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        let side_dir = dir.join("external");
        let mut load = |location: &str| -> anyhow::Result<Vec<u8>> {
            let remote = if onnx_dir.is_empty() {
                location.to_string()
            } else {
                format!("{onnx_dir}/{location}")
            };
            let local = side_dir.join(location.replace('/', "_"));
            std::fs::create_dir_all(&side_dir)?;
            self.download_proxied(&remote, &local)?;
            Ok(std::fs::read(&local)?)
        };
        let inlined = inline_external_data(&bytes, &mut load)
            .with_context(|| format!("MLflow model '{name}' version {version} ({onnx})"))?;
        let path = dir.join("model.onnx");
        match inlined {
            Some(inlined) => {
                tracing::info!(model = %name, version, size = inlined.len(), "inlined external tensor data");
                std::fs::write(&path, inlined).with_context(|| format!("writing {}", path.display()))?;
                let _ = std::fs::remove_file(&downloaded);
                let _ = std::fs::remove_dir_all(&side_dir);
            }
            None => {
                std::fs::rename(&downloaded, &path).with_context(|| format!("writing {}", path.display()))?
            }
        }
        Ok(path)
    }

    /// The proxied path of the version's `.onnx`: breadth-first below `root`, the
    /// shallowest `.onnx`, `model.onnx` first; several other candidates at the same depth
    /// are ambiguous. A `root` that is itself an `.onnx` file is used as is.
    fn find_onnx(&self, name: &str, version: u64, root: &str) -> Result<String, MlflowError> {
        let mut queue = VecDeque::from([(root.to_string(), 0usize)]);
        let mut seen: Vec<String> = Vec::new();
        let mut listings = 0;
        let mut found_depth = None;
        let mut candidates: Vec<String> = Vec::new();
        while let Some((dir, depth)) = queue.pop_front() {
            if found_depth.is_some_and(|d| depth > d) || listings >= MAX_LISTINGS {
                break;
            }
            listings += 1;
            let entries = self.list_proxied(&dir)?;
            if entries.is_empty() && depth == 0 && is_onnx(root) {
                return Ok(root.to_string());
            }
            for ArtifactFile { path, is_dir, .. } in entries {
                // The proxy lists names relative to the directory; keep only the last part
                // in case a server sends paths relative to the artifact root.
                let file = path.rsplit('/').next().unwrap_or(&path).to_string();
                let full = if dir.is_empty() {
                    file.clone()
                } else {
                    format!("{dir}/{file}")
                };
                let shown = full
                    .strip_prefix(root)
                    .unwrap_or(&full)
                    .trim_start_matches('/')
                    .to_string();
                if is_dir {
                    if depth < MAX_DEPTH {
                        queue.push_back((full, depth + 1));
                    }
                    seen.push(format!("{shown}/"));
                } else {
                    if is_onnx(&file) {
                        found_depth = Some(depth);
                        candidates.push(full);
                    }
                    seen.push(shown);
                }
            }
        }
        if let Some(preferred) = candidates
            .iter()
            .find(|c| c.ends_with(&format!("/{PREFERRED}")) || *c == PREFERRED)
        {
            return Ok(preferred.clone());
        }
        match candidates.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(MlflowError::NoOnnx {
                model: name.to_string(),
                version,
                uri: format!("mlflow-artifacts:/{root}"),
                found: if seen.is_empty() {
                    "nothing".to_string()
                } else {
                    seen.join(", ")
                },
            }),
            several => Err(MlflowError::Unsupported(format!(
                "MLflow model '{name}' version {version} has several .onnx files ({}) and none is named \
                 {PREFERRED}; register a version whose source directory holds one model",
                several.join(", ")
            ))),
        }
    }
}

fn is_onnx(path: &str) -> bool {
    Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}
