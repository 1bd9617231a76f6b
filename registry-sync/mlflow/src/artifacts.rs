//! A model version's files: artifact URIs (`mlflow-artifacts:/`, `runs:/`, `models:/`)
//! resolved to paths under the tracking server's artifact proxy, listings and downloads,
//! and the search for the version's `.onnx`, downloaded with any external tensor data
//! folded back in.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::client::{MlflowClient, MlflowError, api_error};
use super::onnx_external::inline_external_data;

/// Artifact URIs that point at other URIs (`runs:/`, `models:/`) resolve at most this deep.
const MAX_URI_HOPS: usize = 4;
/// The file name MLflow's ONNX flavor gives the model; preferred when a directory has several.
const PREFERRED: &str = "model.onnx";
/// How many directory levels below the version's root to look for an `.onnx`.
const MAX_DEPTH: usize = 3;
/// How many directories to list at most while looking.
const MAX_LISTINGS: usize = 64;

/// One entry of an artifact directory listing, relative to the listed directory.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct ArtifactFile {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default)]
    pub file_size: Option<u64>,
}

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

    /// The entries of an artifact directory; `artifact_uri` may be `mlflow-artifacts:/…`,
    /// `runs:/<run>/<path>` or `models:/…`. A file or a missing directory lists as empty.
    pub fn list_artifacts(&self, artifact_uri: &str) -> Result<Vec<ArtifactFile>, MlflowError> {
        let path = self.proxied_path(artifact_uri)?;
        self.list_proxied(&path)
    }

    /// Downloads one artifact file to `dest` (created or truncated); returns its size.
    pub fn download_artifact(&self, artifact_uri: &str, dest: &Path) -> Result<u64, MlflowError> {
        let path = self.proxied_path(artifact_uri)?;
        self.download_proxied(&path, dest)
    }

    /// Where a model version's files are, as a path under the tracking server's artifact proxy.
    pub(crate) fn version_files(&self, name: &str, version: u64) -> Result<String, MlflowError> {
        let uri = self.get_download_uri(name, version)?;
        self.proxied_path(&uri)
    }

    pub(crate) fn list_proxied(&self, path: &str) -> Result<Vec<ArtifactFile>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            files: Vec<ArtifactFile>,
        }
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts", self.base);
        let answer: Answer = self.call_json("mlflow-artifacts list", &url, &[("path", path)])?;
        Ok(answer.files)
    }

    /// Downloads with retries (the file is rewritten from the start on each attempt).
    pub(crate) fn download_proxied(&self, path: &str, dest: &Path) -> Result<u64, MlflowError> {
        self.guarded("mlflow-artifacts download", || {
            self.download_proxied_once(path, dest)
        })
    }

    fn download_proxied_once(&self, path: &str, dest: &Path) -> Result<u64, MlflowError> {
        const CALL: &str = "mlflow-artifacts download";
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            self.base,
            encode_path(path)
        );
        let response = self
            .request(&url, &[])
            .config()
            .timeout_global(Some(self.download_timeout))
            .build()
            .call()
            .map_err(|error| MlflowError::Transport {
                call: CALL,
                url: url.clone(),
                error,
            })?;
        let status = response.status().as_u16();
        let retry_after = super::client::retry_after(&response);
        let mut body = response.into_body();
        if status != 200 {
            let text = body.read_to_string().unwrap_or_default();
            return Err(super::client::with_retry_after(
                api_error(CALL, &url, status, &text),
                retry_after,
            ));
        }
        let io = |error| MlflowError::Io {
            path: dest.to_path_buf(),
            error,
        };
        let mut file = std::fs::File::create(dest).map_err(io)?;
        let size = std::io::copy(&mut body.as_reader(), &mut file).map_err(|e| MlflowError::Decode {
            call: CALL,
            url: url.clone(),
            detail: format!("reading the body failed: {e}"),
        })?;
        file.flush().and_then(|()| file.sync_all()).map_err(io)?;
        Ok(size)
    }

    /// Resolves an artifact URI to a path under `/api/2.0/mlflow-artifacts/artifacts`.
    /// `runs:/` and `models:/` URIs name other URIs; they are followed a few hops.
    pub(crate) fn proxied_path(&self, uri: &str) -> Result<String, MlflowError> {
        let mut uri = uri.to_string();
        let mut suffix: Vec<String> = Vec::new();
        for _ in 0..MAX_URI_HOPS {
            if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
                // `mlflow-artifacts://host:port/path` names the proxy by address; the
                // tracking server we talk to is the proxy, so only the path matters.
                let path = match rest.strip_prefix("//") {
                    Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                    None => rest,
                };
                let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
                parts.extend(suffix.iter().map(String::as_str));
                if parts.iter().any(|p| *p == ".." || *p == ".") {
                    return Err(MlflowError::Unsupported(format!(
                        "artifact URI '{uri}' contains '.' or '..' segments"
                    )));
                }
                return Ok(parts.join("/"));
            }
            if let Some(rest) = uri.strip_prefix("runs:/") {
                let (run_id, sub) = rest.trim_start_matches('/').split_once('/').unwrap_or((rest, ""));
                push_suffix(&mut suffix, sub);
                uri = self.get_run(run_id)?.artifact_uri;
                continue;
            }
            if let Some(rest) = uri.strip_prefix("models:/") {
                let rest = rest.trim_start_matches('/');
                let (first, sub) = rest.split_once('/').unwrap_or((rest, ""));
                if first.starts_with("m-") {
                    push_suffix(&mut suffix, sub);
                    uri = self.logged_model_artifact_uri(first)?;
                    continue;
                }
                let (version, sub) = sub.split_once('/').unwrap_or((sub, ""));
                if let Ok(version) = version.parse::<u64>() {
                    push_suffix(&mut suffix, sub);
                    uri = self.get_download_uri(first, version)?;
                    continue;
                }
            }
            break;
        }
        Err(MlflowError::Unsupported(format!(
            "artifact URI '{uri}' is not served by the MLflow tracking server; Kiln downloads through \
             the server's artifact proxy, so start `mlflow server` with --artifacts-destination \
             (proxied `mlflow-artifacts:/` URIs, the default since MLflow 2) rather than \
             --no-serve-artifacts or a client-side store"
        )))
    }

    fn logged_model_artifact_uri(&self, model_id: &str) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            model: LoggedModel,
        }
        #[derive(Deserialize)]
        struct LoggedModel {
            info: LoggedModelInfo,
        }
        #[derive(Deserialize)]
        struct LoggedModelInfo {
            artifact_uri: String,
        }
        let url = format!(
            "{}/api/2.0/mlflow/logged-models/{}",
            self.base,
            encode_path(model_id)
        );
        let answer: Answer = self.call_json("logged-models/get", &url, &[])?;
        Ok(answer.model.info.artifact_uri)
    }
}

fn is_onnx(path: &str) -> bool {
    Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn push_suffix(suffix: &mut Vec<String>, sub: &str) {
    // Collected innermost-first: each hop's sub-path goes after the ones resolved before it.
    let sub = sub.trim_matches('/');
    if !sub.is_empty() {
        suffix.insert(0, sub.to_string());
    }
}

/// Percent-encodes each segment of an artifact path, keeping the `/` separators.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(
            encode_path("1/models/m-1/artifacts/model.onnx"),
            "1/models/m-1/artifacts/model.onnx"
        );
        assert_eq!(encode_path("a b/c?d#e%"), "a%20b/c%3Fd%23e%25");
    }

    #[test]
    fn proxied_uris_resolve_without_calls() {
        let client = MlflowClient::new("http://127.0.0.1:1/").unwrap();
        assert_eq!(client.tracking_uri(), "http://127.0.0.1:1");
        assert_eq!(
            client
                .proxied_path("mlflow-artifacts:/1/models/m-8/artifacts")
                .unwrap(),
            "1/models/m-8/artifacts"
        );
        assert_eq!(
            client
                .proxied_path("mlflow-artifacts://mlflow.internal:5000/1/r/artifacts/")
                .unwrap(),
            "1/r/artifacts"
        );
        assert!(client.proxied_path("mlflow-artifacts:/1/../etc").is_err());
        let err = client
            .proxied_path("s3://bucket/1/r/artifacts")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--artifacts-destination"), "{err}");
        assert!(MlflowClient::new("sqlite:///mlflow.db").is_err());
    }
}
