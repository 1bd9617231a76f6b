//! Sources that feed the registry while the service runs: MLflow, polled on its own thread,
//! whose imports promote versions in the registry (which the controller then rolls out).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_node_api::retry::Target;

use serde_json::Value;

use kiln_mlflow::{MlflowSource, ReferenceHook};
use kiln_registry::{Prepared, Registry};

/// Something else that writes to the registry on a schedule (the MLflow watcher): polled on
/// its own thread so a slow download or compile never stalls rollouts.
pub trait Source: Send + 'static {
    /// Name for logs.
    fn name(&self) -> String;
    /// How long to wait between polls.
    fn interval(&self) -> Duration;
    /// One poll: import what changed.
    fn poll(&mut self, registry: &Registry) -> anyhow::Result<()>;
    /// The peer it calls, for the service's status and metrics (its breaker and retries).
    fn target(&self) -> Option<Arc<Target>> {
        None
    }
    /// Items that failed since the last call (each becomes an alert), oldest first.
    fn take_failures(&mut self) -> Vec<SourceFailure> {
        Vec::new()
    }
}

/// One item a source could not import.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFailure {
    /// The alert's name, e.g. `KilnMlflowImportFailed`.
    pub alertname: String,
    /// The model.
    pub model: String,
    /// The source's version of it.
    pub version: String,
    /// What failed.
    pub message: String,
}

/// The compile step the binary supplies (ONNX → component), shared with `kiln models register`.
pub type PrepareFn = dyn Fn(&Path, &str, &[Value]) -> anyhow::Result<Prepared> + Send + Sync;

/// The reference step the binary supplies (component, dataset file → reference profile),
/// shared with `kiln models register --reference`.
pub type ReferenceFn =
    dyn Fn(&[u8], &Path, Option<&str>) -> anyhow::Result<kiln_registry::ReferenceProfile> + Send + Sync;

/// MLflow as a [`Source`]: each poll imports every moved alias or stage.
pub struct MlflowPoller {
    source: MlflowSource,
    prepare: Box<PrepareFn>,
    reference: Option<(Box<ReferenceFn>, Vec<PathBuf>)>,
    interval: Duration,
    actor: String,
    failures: Vec<SourceFailure>,
}

impl MlflowPoller {
    /// Polls `source` every `interval`, compiling with `prepare`; audit entries name `actor`.
    pub fn new(
        source: MlflowSource,
        prepare: Box<PrepareFn>,
        interval: Duration,
        actor: &str,
    ) -> MlflowPoller {
        MlflowPoller {
            source,
            prepare,
            reference: None,
            interval,
            actor: actor.to_string(),
            failures: Vec::new(),
        }
    }

    /// Imports also store a reference profile for drift from the dataset the version's run
    /// logged, profiled by `profile`; local dataset files are read only inside
    /// `dataset_dirs` (run artifacts always).
    pub fn with_reference(mut self, profile: Box<ReferenceFn>, dataset_dirs: Vec<PathBuf>) -> MlflowPoller {
        self.reference = Some((profile, dataset_dirs));
        self
    }
}

impl Source for MlflowPoller {
    fn name(&self) -> String {
        "mlflow".to_string()
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn target(&self) -> Option<Arc<Target>> {
        Some(self.source.client().target())
    }

    fn take_failures(&mut self) -> Vec<SourceFailure> {
        std::mem::take(&mut self.failures)
    }

    fn poll(&mut self, registry: &Registry) -> anyhow::Result<()> {
        for change in self.source.poll()? {
            if let Some(reason) = rolled_back_here(registry, &change.model, change.version)? {
                // A restarted service sees every MLflow pointer again; one that names a
                // version Kiln rolled back must not start the same failing rollout again.
                tracing::warn!(model = %change.model, mlflow_version = change.version, reason, "not re-importing a version Kiln rolled back; move the MLflow pointer to deploy again");
                continue;
            }
            let hook = self.reference.as_ref().map(|(profile, dirs)| ReferenceHook {
                profile: profile.as_ref(),
                dataset_dirs: dirs,
            });
            match self.source.import_with_reference(
                &change,
                registry,
                self.prepare.as_ref(),
                hook.as_ref(),
                &self.actor,
            ) {
                Ok(outcome) => {
                    tracing::info!(
                        model = %change.model,
                        mlflow_version = change.version,
                        version = outcome.kiln_version.version,
                        reused = outcome.reused,
                        promoted = outcome.promoted,
                        "imported from MLflow"
                    );
                    match &outcome.reference {
                        Some(Ok(what)) => {
                            tracing::info!(model = %change.model, version = outcome.kiln_version.version, reference = %what, "reference for drift stored from the run's dataset")
                        }
                        Some(Err(why)) => {
                            tracing::warn!(model = %change.model, version = outcome.kiln_version.version, reason = %why, "the run's dataset gave no reference for drift")
                        }
                        None => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(model = %change.model, mlflow_version = change.version, error = %format!("{e:#}"), "MLflow import failed");
                    self.failures.push(SourceFailure {
                        alertname: "KilnMlflowImportFailed".to_string(),
                        model: change.model.clone(),
                        version: change.version.to_string(),
                        message: format!(
                            "importing MLflow version {} of {} failed: {e:#}",
                            change.version, change.model
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why the Kiln version imported from MLflow version `mlflow_version` of `model` must not
/// be promoted again: its latest rollout was rolled back (and nothing newer succeeded).
fn rolled_back_here(registry: &Registry, model: &str, mlflow_version: u64) -> anyhow::Result<Option<String>> {
    let tagged = registry
        .list(Some(model))
        .unwrap_or_default()
        .into_iter()
        .find(|v| {
            v.tags.get(kiln_mlflow::TAG_VERSION).map(String::as_str)
                == Some(mlflow_version.to_string().as_str())
        });
    let Some(version) = tagged else {
        return Ok(None);
    };
    let latest = registry.rollouts(Some(model), 1)?.into_iter().next();
    Ok(latest
        .filter(|r| {
            r.to_version == version.version && r.state == kiln_registry::rollout::RolloutState::RolledBack
        })
        .map(|r| {
            format!(
                "rollout {} of version {} was rolled back: {}",
                r.id, version.version, r.message
            )
        }))
}
