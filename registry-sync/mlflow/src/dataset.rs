//! A run's reference dataset for drift: of the datasets the run logged
//! (`mlflow.log_input(mlflow.data.from_pandas(df, source=…), context=…)`), the best-placed
//! one whose file Kiln can read safely. MLflow stores a dataset's description, not its rows,
//! so the rows come from:
//! - **the run's artifacts**: a file with the same name as the dataset's source, anywhere
//!   in the top two levels of the run's artifact tree (`mlflow.log_artifact("train.csv")`
//!   beside `from_pandas(df, source="train.csv")`), downloaded through the tracking
//!   server's artifact proxy, like the model; or
//! - **a local file** (`source_type` `local`) inside a directory the operator allowed
//!   (`--mlflow-dataset-dir`): a training job and the sync service that share a volume.
//!
//! Nothing else is read: a dataset's source is whatever a tracking-server user wrote, so
//! neither arbitrary paths on the sync service's machine nor arbitrary URLs are followed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::client::{MlflowClient, Run, RunDataset};

/// Contexts by preference: an explicit reference, then the training data, then held-out
/// data; any other context comes after these.
const CONTEXTS: [&str; 7] = [
    "reference",
    "training",
    "train",
    "validation",
    "eval",
    "evaluation",
    "test",
];

/// Largest dataset file read (bytes).
pub const MAX_DATASET_BYTES: u64 = 256 << 20;

/// How many artifact directories to list at most while looking for a dataset file.
const MAX_LISTINGS: usize = 16;

/// A dataset file ready to profile.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetFile {
    /// Where the file is (downloaded into the caller's directory, or the allowed local file).
    pub path: PathBuf,
    /// Which dataset and where from, for the reference's `source` and the logs.
    pub description: String,
}

/// The file-like location in a dataset's source JSON: `uri` (local) or `url` (http).
fn location(dataset: &RunDataset) -> Option<String> {
    let source: Value = serde_json::from_str(&dataset.source).ok()?;
    ["uri", "url"]
        .iter()
        .find_map(|k| source.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

/// The last segment of a path or URL, without query or fragment.
fn file_name(location: &str) -> Option<&str> {
    let end = location.find(['?', '#']).unwrap_or(location.len());
    let name = location[..end].rsplit(['/', '\\']).next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

fn rank(context: &str) -> usize {
    CONTEXTS
        .iter()
        .position(|c| c.eq_ignore_ascii_case(context))
        .unwrap_or(CONTEXTS.len())
}

/// The run's datasets that name a file, best first (stable within a context).
pub fn candidates(run: &Run) -> Vec<(&RunDataset, String)> {
    let mut found: Vec<(&RunDataset, String)> = run
        .datasets
        .iter()
        .filter_map(|d| location(d).map(|l| (d, l)))
        .filter(|(_, l)| file_name(l).is_some())
        .collect();
    found.sort_by_key(|(d, _)| rank(&d.context));
    found
}

fn describe(dataset: &RunDataset) -> String {
    let context = if dataset.context.is_empty() {
        "no context".to_string()
    } else {
        dataset.context.clone()
    };
    format!(
        "MLflow dataset '{}' ({context}, digest {})",
        dataset.name, dataset.digest
    )
}

/// `path` (a plain path or `file://` URI) if it is an existing file inside one of `allowed`.
fn allowed_local(path: &str, allowed: &[PathBuf]) -> Option<PathBuf> {
    let plain = path.strip_prefix("file://").unwrap_or(path);
    let real = std::fs::canonicalize(plain).ok()?;
    let inside = allowed
        .iter()
        .filter_map(|dir| std::fs::canonicalize(dir).ok())
        .any(|dir| real.starts_with(&dir));
    (inside && real.is_file()).then_some(real)
}

impl MlflowClient {
    /// The run's artifact file called `name` in the top two levels of its tree, as a path
    /// under the artifact proxy, with its size.
    fn find_run_artifact(&self, run: &Run, name: &str) -> Result<Option<(String, Option<u64>)>, String> {
        let root = self.proxied_path(&run.artifact_uri).map_err(|e| e.to_string())?;
        let mut dirs = vec![(root, 0usize)];
        let mut listings = 0;
        while let Some((dir, depth)) = dirs.pop() {
            if listings == MAX_LISTINGS {
                break;
            }
            listings += 1;
            let entries = self.list_proxied(&dir).map_err(|e| e.to_string())?;
            for entry in entries {
                let full = format!("{dir}/{}", entry.path.rsplit('/').next().unwrap_or(&entry.path));
                if entry.is_dir {
                    if depth < 1 {
                        dirs.push((full, depth + 1));
                    }
                } else if file_name(&entry.path) == Some(name) {
                    return Ok(Some((full, entry.file_size)));
                }
            }
        }
        Ok(None)
    }

    /// The best reference dataset of `run` that can be read, downloaded into `dir` when it
    /// is an artifact. `Ok(None)`: the run logged no dataset with a file source. `Err`:
    /// it did, and why none could be read.
    pub fn reference_dataset(
        &self,
        run: &Run,
        allowed_dirs: &[PathBuf],
        dir: &Path,
    ) -> Result<Option<DatasetFile>, String> {
        let candidates = candidates(run);
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut why = Vec::new();
        for (dataset, location) in candidates {
            let Some(name) = file_name(&location) else {
                continue;
            };
            match self.find_run_artifact(run, name) {
                Ok(Some((path, size))) => {
                    if size.is_some_and(|s| s > MAX_DATASET_BYTES) {
                        why.push(format!(
                            "{}: the artifact {path} is larger than {} MiB",
                            describe(dataset),
                            MAX_DATASET_BYTES >> 20
                        ));
                        continue;
                    }
                    let dest = dir.join(format!("reference-{name}"));
                    match self.download_proxied(&path, &dest) {
                        Ok(_) => {
                            return Ok(Some(DatasetFile {
                                path: dest,
                                description: format!("{}, run artifact {name}", describe(dataset)),
                            }));
                        }
                        Err(e) => why.push(format!("{}: downloading {path}: {e}", describe(dataset))),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => why.push(format!("{}: listing the run's artifacts: {e}", describe(dataset))),
            }
            if dataset.source_type == "local"
                && let Some(path) = allowed_local(&location, allowed_dirs)
            {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size > MAX_DATASET_BYTES {
                    why.push(format!(
                        "{}: {} is larger than {} MiB",
                        describe(dataset),
                        path.display(),
                        MAX_DATASET_BYTES >> 20
                    ));
                    continue;
                }
                return Ok(Some(DatasetFile {
                    description: format!("{}, file {}", describe(dataset), path.display()),
                    path,
                }));
            }
            why.push(format!(
                "{}: no run artifact is called {name}{}",
                describe(dataset),
                if dataset.source_type == "local" {
                    format!(", and {location} is not a file inside a --mlflow-dataset-dir")
                } else {
                    String::new()
                }
            ));
        }
        Err(format!(
            "{}; log the file with the run (mlflow.log_artifact) or allow its directory with --mlflow-dataset-dir",
            why.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(name: &str, context: &str, source_type: &str, source: &str) -> RunDataset {
        RunDataset {
            name: name.into(),
            digest: "d".into(),
            context: context.into(),
            source_type: source_type.into(),
            source: source.into(),
        }
    }

    #[test]
    fn datasets_with_a_file_come_best_context_first() {
        let run = Run {
            datasets: vec![
                dataset("eval", "eval", "local", r#"{"uri": "/data/eval.csv"}"#),
                dataset("code", "reference", "code", r#"{"tags": {}}"#),
                dataset(
                    "other",
                    "weird",
                    "http",
                    r#"{"url": "https://h/x/other.npy?sig=1"}"#,
                ),
                dataset(
                    "train",
                    "training",
                    "local",
                    r#"{"uri": "file:///data/train.csv"}"#,
                ),
                dataset("bad", "reference", "local", "not json"),
            ],
            ..Run::default()
        };
        let candidates = candidates(&run);
        let found: Vec<(&str, Option<&str>)> = candidates
            .iter()
            .map(|(d, l)| (d.name.as_str(), file_name(l)))
            .collect();
        assert_eq!(
            found,
            [
                ("train", Some("train.csv")),
                ("eval", Some("eval.csv")),
                ("other", Some("other.npy"))
            ]
        );
    }

    #[test]
    fn local_files_are_read_only_inside_an_allowed_directory() {
        let allowed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = allowed.path().join("ref.csv");
        std::fs::write(&inside, "a\n1\n").unwrap();
        let outside = elsewhere.path().join("ref.csv");
        std::fs::write(&outside, "a\n1\n").unwrap();
        let dirs = [allowed.path().to_path_buf()];
        assert!(allowed_local(inside.to_str().unwrap(), &dirs).is_some());
        assert!(allowed_local(&format!("file://{}", inside.display()), &dirs).is_some());
        assert_eq!(allowed_local(outside.to_str().unwrap(), &dirs), None);
        // `..` cannot climb out: the path is resolved before it is compared.
        let other = elsewhere.path().file_name().unwrap().to_string_lossy();
        let climbing = format!("{}/../{other}/ref.csv", allowed.path().display());
        assert_eq!(allowed_local(&climbing, &dirs), None);
        assert_eq!(allowed_local(inside.to_str().unwrap(), &[]), None);
        assert_eq!(
            allowed_local(allowed.path().to_str().unwrap(), &dirs),
            None,
            "a directory"
        );
    }
}
