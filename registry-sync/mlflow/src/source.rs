//! [`MlflowSource`]: what the sync service polls to learn which MLflow version a watched
//! alias or stage points at, and how such a version becomes a Kiln version.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{MlflowClient, MlflowError, MlflowVersion, RegisteredModel, Run};
use kiln_registry::{
    ModelVersion, NewVersion, Prepared, ReferenceProfile, Registry, RegistryError, Stage, validate_alias,
    validate_name,
};

/// Tag on a Kiln version: the MLflow registered model it was imported from.
pub const TAG_MODEL: &str = "mlflow.model";
/// Tag on a Kiln version: the MLflow version number it was imported from.
pub const TAG_VERSION: &str = "mlflow.version";
/// Tag on a Kiln version: the MLflow run that produced it (absent when the version has none).
pub const TAG_RUN_ID: &str = "mlflow.run_id";
/// Tag on a Kiln version: the MLflow version's `source` URI.
pub const TAG_SOURCE: &str = "mlflow.source";

/// Which MLflow pointer to follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Watch {
    /// A registered-model alias, e.g. `champion` (MLflow's recommended way to mark a release).
    Alias(String),
    /// A stage name (`Production`, `Staging`); deprecated in MLflow but still served.
    Stage(String),
}

impl Default for Watch {
    fn default() -> Self {
        Watch::Alias("champion".to_string())
    }
}

impl std::str::FromStr for Watch {
    type Err = String;
    /// `alias:NAME` or `stage:NAME` (the `--mlflow-watch` flag).
    fn from_str(s: &str) -> Result<Watch, String> {
        match s.split_once(':') {
            Some(("alias", a)) if !a.is_empty() => Ok(Watch::Alias(a.to_string())),
            Some(("stage", st)) if !st.is_empty() => Ok(Watch::Stage(st.to_string())),
            _ => Err(format!("`{s}`: use alias:NAME or stage:NAME")),
        }
    }
}

impl fmt::Display for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Watch::Alias(alias) => write!(f, "alias '{alias}'"),
            Watch::Stage(stage) => write!(f, "stage '{stage}'"),
        }
    }
}

/// What to poll: which server, which pointer, which models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlflowSourceConfig {
    /// The tracking server, e.g. `http://127.0.0.1:5000`.
    pub tracking_uri: String,
    /// The pointer to follow; `Alias("champion")` by default.
    #[serde(default)]
    pub watch: Watch,
    /// The registered models to follow; `None` follows every registered model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A watched pointer that now names another MLflow version than the last poll saw.
#[derive(Clone, Debug, PartialEq)]
pub struct MlflowChange {
    /// The MLflow registered model (and Kiln model) name.
    pub model: String,
    /// The MLflow version the pointer names now.
    pub version: u64,
    /// The version it named at the previous poll; `None` on the first poll or after the
    /// pointer was removed.
    pub previous: Option<u64>,
    /// The pointer that moved.
    pub watch: Watch,
    /// The version as `model-versions/get` returned it (source, run id, description).
    pub details: MlflowVersion,
}

/// What [`MlflowSource::import`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportOutcome {
    /// The Kiln version now standing for the MLflow version, as it is after the import.
    pub kiln_version: ModelVersion,
    /// True when no new Kiln version was registered: one tagged with this MLflow model and
    /// version existed already, or the compiled component matched an existing version.
    pub reused: bool,
    /// True when this import moved the Kiln version into Production (which starts a rollout).
    pub promoted: bool,
    /// What became of the run's reference dataset, when a [`ReferenceHook`] was given and
    /// the run logged one: `Ok` with what was stored, `Err` with why nothing was (the
    /// import itself still succeeds: a reference is optional).
    pub reference: Option<Result<String, String>>,
}

/// The caller's compile step (the same one `kiln models register` uses).
type Prepare<'a> = dyn Fn(&Path, &str, &[Value]) -> anyhow::Result<Prepared> + 'a;

/// Builds a version's reference from a dataset file: the compiled component, the file and
/// optional feature names (the step `kiln models register --reference` uses).
pub type ReferenceFn<'a> = dyn Fn(&[u8], &Path, Option<&str>) -> anyhow::Result<ReferenceProfile> + 'a;

/// How an import turns the dataset its run logged into the version's reference profile.
pub struct ReferenceHook<'a> {
    /// Profiles the dataset file as the component's input, with its outputs.
    pub profile: &'a ReferenceFn<'a>,
    /// Directories whose files a dataset's `local` source may name (a volume the training
    /// job and the sync service share); run artifacts are always read.
    pub dataset_dirs: &'a [PathBuf],
}

/// What the last poll saw of one model.
#[derive(Clone, Debug)]
struct Seen {
    fingerprint: String,
    version: Option<u64>,
}

/// Polls an MLflow tracking server for moves of a watched alias or stage, and imports the
/// versions they point at into a Kiln registry.
pub struct MlflowSource {
    config: MlflowSourceConfig,
    client: MlflowClient,
    /// Behind a mutex so that [`MlflowSource::import`] (`&self`) can forget a model whose
    /// import failed for a transient reason, making the next poll report it again.
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl MlflowSource {
    /// A source for `config`; checks the tracking URI and that the watched alias or stage
    /// can be mirrored in Kiln. Makes no network call. An `https://` tracking server is
    /// verified against the system's roots; see [`MlflowSource::new_with_tls`].
    pub fn new(config: MlflowSourceConfig) -> anyhow::Result<MlflowSource> {
        MlflowSource::new_with_tls(config, &kiln_node_api::tls::ClientTls::default())
    }

    /// [`MlflowSource::new`] whose client trusts what `tls` trusts (the system's roots plus
    /// a CA file) and presents its client certificate, if any.
    pub fn new_with_tls(
        config: MlflowSourceConfig,
        tls: &kiln_node_api::tls::ClientTls,
    ) -> anyhow::Result<MlflowSource> {
        match &config.watch {
            Watch::Alias(alias) => validate_alias(alias).with_context(|| {
                format!("the watched MLflow alias '{alias}' cannot be mirrored as a Kiln alias")
            })?,
            Watch::Stage(stage) => {
                stage
                    .parse::<Stage>()
                    .with_context(|| format!("watching MLflow stage '{stage}'"))?;
            }
        }
        let client = MlflowClient::new_with_tls(&config.tracking_uri, tls)?;
        Ok(MlflowSource {
            config,
            client,
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    /// The configuration this source was made with.
    pub fn config(&self) -> &MlflowSourceConfig {
        &self.config
    }

    /// The REST client, for callers that need more than changes.
    pub fn client(&self) -> &MlflowClient {
        &self.client
    }

    /// Forgets what was seen of `model`, so the next poll reports its current version again.
    pub fn forget(&self, model: &str) {
        self.seen_map().remove(model);
    }

    /// Asks MLflow where the watched pointer of each followed model points and returns the
    /// models where that differs from the previous poll (on the first poll: every model
    /// where the pointer is set).
    ///
    /// One `registered-models/search` per 1000 models (or one `registered-models/get` per
    /// configured model) answers that: MLflow 3.17 includes each model's aliases and the
    /// newest version per stage. These endpoints send no `ETag` and take no "changed since"
    /// filter, and an alias move does not bump `last_updated_timestamp`, so the source keeps
    /// a SHA-256 fingerprint of each model's whole entry and only looks closer (and calls
    /// `model-versions/get`) for models whose entry changed.
    ///
    /// A version that is not `READY` yet is reported once it is. A failure for one model
    /// (logged) leaves it to the next poll; only a failed search fails the poll. A removed
    /// alias or emptied stage is remembered but reported as nothing: Kiln keeps serving
    /// what it has until the pointer names another version.
    pub fn poll(&mut self) -> anyhow::Result<Vec<MlflowChange>> {
        let models = self.fetch_models()?;
        let mut seen = std::mem::take(self.seen.get_mut().unwrap_or_else(|p| p.into_inner()));
        // Models that are gone (deleted in MLflow) start afresh if they come back.
        seen.retain(|name, _| models.iter().any(|m| &m.name == name));
        let mut changes = Vec::new();
        for model in &models {
            match self.check(model, seen.get(&model.name)) {
                Ok((state, change)) => {
                    if let Some(state) = state {
                        seen.insert(model.name.clone(), state);
                    }
                    changes.extend(change);
                }
                Err(err) => {
                    tracing::warn!(model = %model.name, error = %format!("{err:#}"), "MLflow poll of one model failed; retrying at the next poll");
                }
            }
        }
        *self.seen.get_mut().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(changes)
    }

    /// Makes the Kiln registry reflect `change`: reuses the Kiln version already imported
    /// from this MLflow version (tags `mlflow.model` + `mlflow.version`), else downloads the
    /// version's `.onnx`, compiles it with `prepare` and registers it with MLflow's
    /// description, `mlflow.*` tags and the run's params, metrics and tags as lineage. Then
    /// mirrors the pointer: an alias is set on the Kiln version and the version moves to
    /// Production (archiving the previous one); a watched Production or Staging stage moves
    /// it to that stage. Every write is audited under `actor`.
    ///
    /// After a transient failure (network, MLflow 5xx, registry busy) the next poll
    /// reports the change again; after a permanent one (no `.onnx`, a model that does not
    /// compile, a name Kiln refuses) it waits for the pointer to move.
    #[allow(clippy::type_complexity)] // spelled out like `cli::run_models`, so any closure fits
    pub fn import(
        &self,
        change: &MlflowChange,
        registry: &Registry,
        prepare: &dyn Fn(&Path, &str, &[Value]) -> anyhow::Result<Prepared>,
        actor: &str,
    ) -> anyhow::Result<ImportOutcome> {
        self.import_with_reference(change, registry, prepare, None, actor)
    }

    /// [`MlflowSource::import`], and a newly registered version gets a reference profile
    /// for drift from the dataset its run logged (`mlflow.log_input`), if one can be read
    /// (see [`crate::DatasetFile`]); the reference is stored before the version is promoted.
    #[allow(clippy::type_complexity)]
    pub fn import_with_reference(
        &self,
        change: &MlflowChange,
        registry: &Registry,
        prepare: &dyn Fn(&Path, &str, &[Value]) -> anyhow::Result<Prepared>,
        reference: Option<&ReferenceHook<'_>>,
        actor: &str,
    ) -> anyhow::Result<ImportOutcome> {
        let result = self
            .import_inner(change, registry, prepare, reference, actor)
            .with_context(|| {
                format!(
                    "importing MLflow model '{}' version {} ({} of {})",
                    change.model,
                    change.version,
                    change.watch,
                    self.client.tracking_uri()
                )
            });
        if let Err(err) = &result
            && is_transient(err)
        {
            let mut seen = self.seen_map();
            if seen.get(&change.model).and_then(|s| s.version) == Some(change.version) {
                seen.remove(&change.model);
            }
        }
        result
    }

    fn import_inner(
        &self,
        change: &MlflowChange,
        registry: &Registry,
        prepare: &Prepare<'_>,
        reference: Option<&ReferenceHook<'_>>,
        actor: &str,
    ) -> anyhow::Result<ImportOutcome> {
        let name = change.model.as_str();
        validate_name(name).context("the MLflow model name is not a valid Kiln model name")?;
        let mlflow_version = change.version.to_string();
        let existing = registry.list(Some(name))?.into_iter().find(|v| {
            v.tags.get(TAG_MODEL).map(String::as_str) == Some(name)
                && v.tags.get(TAG_VERSION) == Some(&mlflow_version)
        });
        let (version, reused, reference) = match existing {
            Some(version) => (version, true, None),
            None => {
                let (version, created, reference) =
                    self.register(change, registry, prepare, reference, actor)?;
                (version, !created, reference)
            }
        };
        let target = match &change.watch {
            Watch::Alias(alias) => {
                registry.set_alias(name, alias, version.version, actor)?;
                Some(Stage::Production)
            }
            Watch::Stage(stage) => match stage.parse::<Stage>()? {
                stage @ (Stage::Production | Stage::Staging) => Some(stage),
                Stage::None | Stage::Archived => None,
            },
        };
        let mut promoted = false;
        if let Some(stage) = target {
            let moved = registry.transition_stage_detailed(name, version.version, stage, true, actor)?;
            promoted = stage == Stage::Production && moved.previous != Stage::Production;
        }
        let kiln_version = registry.get(name, version.version)?;
        tracing::info!(
            model = %name,
            mlflow_version = change.version,
            version = kiln_version.version,
            digest = %kiln_version.digest,
            reused,
            promoted,
            "imported MLflow model version"
        );
        Ok(ImportOutcome {
            kiln_version,
            reused,
            promoted,
            reference,
        })
    }

    /// Downloads, compiles and registers the change's version; `true` when newly created,
    /// and what became of its reference dataset.
    #[allow(clippy::type_complexity)]
    fn register(
        &self,
        change: &MlflowChange,
        registry: &Registry,
        prepare: &Prepare<'_>,
        reference: Option<&ReferenceHook<'_>>,
        actor: &str,
    ) -> anyhow::Result<(ModelVersion, bool, Option<Result<String, String>>)> {
        let (name, number) = (change.model.as_str(), change.version);
        let details = &change.details;
        let run = match details.run_id.as_str() {
            "" => None,
            run_id => Some(
                self.client
                    .get_run(run_id)
                    .with_context(|| format!("reading run {run_id} for the lineage"))?,
            ),
        };
        let dir = tempfile::tempdir().context("creating a temporary directory for the download")?;
        let onnx = self.client.download_onnx(name, number, dir.path())?;
        let prepared = prepare(&onnx, name, &[]).context("compiling the downloaded ONNX model")?;
        // Built before anything is stored, like `kiln models register --reference`.
        let reference = match (reference, run.as_ref()) {
            (Some(hook), Some(run)) => self.run_reference(run, &prepared.component, hook, dir.path()),
            _ => None,
        };

        let mut tags = BTreeMap::from([
            (TAG_MODEL.to_string(), name.to_string()),
            (TAG_VERSION.to_string(), number.to_string()),
            (TAG_SOURCE.to_string(), details.source.clone()),
        ]);
        if !details.run_id.is_empty() {
            tags.insert(TAG_RUN_ID.to_string(), details.run_id.clone());
        }
        let lineage = lineage(
            self.client.tracking_uri(),
            name,
            number,
            &details.run_id,
            run.as_ref(),
        );
        let (version, created) = registry.register(
            NewVersion {
                name: name.to_string(),
                component: prepared.component,
                source_digest: prepared.source_digest,
                description: details.description.clone(),
                tags,
                lineage,
                signature: prepared.signature,
                golden: prepared.golden,
            },
            actor,
        )?;
        if !created {
            tracing::info!(
                model = %name,
                mlflow_version = number,
                version = version.version,
                "MLflow version compiles to a component Kiln already has; reusing it"
            );
            let kept = reference.map(|_| {
                Err("the component matched an existing version, whose reference is kept".to_string())
            });
            return Ok((version, created, kept));
        }
        let reference = match reference {
            Some(Ok(record)) => Some(
                registry
                    .set_reference(name, version.version, &record, actor)
                    .map(|stored| {
                        format!(
                            "{} rows × {} features from {}",
                            stored.rows,
                            stored.features.len(),
                            stored.source
                        )
                    })
                    .map_err(|e| format!("storing the reference: {e}")),
            ),
            Some(Err(why)) => Some(Err(why)),
            None => None,
        };
        Ok((version, created, reference))
    }

    /// The reference profile from the dataset `run` logged: `None` when it logged none with
    /// a file source, `Err` when it did and it could not be read or profiled.
    fn run_reference(
        &self,
        run: &Run,
        component: &[u8],
        hook: &ReferenceHook<'_>,
        dir: &Path,
    ) -> Option<Result<ReferenceProfile, String>> {
        let file = match self.client.reference_dataset(run, hook.dataset_dirs, dir) {
            Ok(Some(file)) => file,
            Ok(None) => return None,
            Err(why) => return Some(Err(why)),
        };
        Some(
            (hook.profile)(component, &file.path, None)
                .map(|mut record| {
                    record.source = file.description.clone();
                    record
                })
                .map_err(|e| format!("{}: {e:#}", file.description)),
        )
    }

    fn fetch_models(&self) -> anyhow::Result<Vec<RegisteredModel>> {
        let Some(names) = &self.config.models else {
            return self
                .client
                .search_registered_models(None)
                .context("listing MLflow registered models");
        };
        let mut models = Vec::with_capacity(names.len());
        for name in names {
            match self.client.get_registered_model(name) {
                Ok(model) => models.push(model),
                Err(err) if err.is_not_found() => {
                    tracing::warn!(model = %name, "configured MLflow model does not exist (yet)");
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("reading MLflow registered model '{name}'"));
                }
            }
        }
        Ok(models)
    }

    /// The new state to remember for `model` (none: look again next poll) and its change.
    fn check(
        &self,
        model: &RegisteredModel,
        before: Option<&Seen>,
    ) -> anyhow::Result<(Option<Seen>, Option<MlflowChange>)> {
        let fingerprint = fingerprint(model);
        if before.is_some_and(|b| b.fingerprint == fingerprint) {
            return Ok((None, None));
        }
        let previous = before.and_then(|b| b.version);
        let target = match &self.config.watch {
            Watch::Alias(alias) => model.alias(alias),
            Watch::Stage(stage) => model.latest_in_stage(stage).map(|v| v.version),
        };
        let Some(version) = target.filter(|t| Some(*t) != previous) else {
            return Ok((
                Some(Seen {
                    fingerprint,
                    version: target,
                }),
                None,
            ));
        };
        let details = self
            .client
            .get_model_version(&model.name, version)
            .with_context(|| format!("reading MLflow model '{}' version {version}", model.name))?;
        if !details.is_ready() {
            tracing::info!(model = %model.name, version, status = %details.status, "MLflow version not ready yet");
            return Ok((None, None));
        }
        let change = MlflowChange {
            model: model.name.clone(),
            version,
            previous,
            watch: self.config.watch.clone(),
            details,
        };
        Ok((
            Some(Seen {
                fingerprint,
                version: target,
            }),
            Some(change),
        ))
    }

    fn seen_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// SHA-256 of the model's entry with `latest_versions` in version order, so a reordering
/// by the server is not a change.
fn fingerprint(model: &RegisteredModel) -> String {
    let mut model = model.clone();
    model.latest_versions.sort_by_key(|v| v.version);
    let bytes = serde_json::to_vec(&model).unwrap_or_default();
    kiln_types::digest(&bytes)
}

/// The lineage JSON stored with an imported version.
fn lineage(tracking_uri: &str, model: &str, version: u64, run_id: &str, run: Option<&Run>) -> Value {
    let (params, metrics, tags) = match run {
        Some(run) => (json!(run.params), json!(run.metrics), json!(run.tags)),
        None => (json!({}), json!({}), json!({})),
    };
    json!({
        "source": "mlflow",
        "tracking_uri": tracking_uri,
        "model": model,
        "version": version,
        "run_id": run_id,
        "params": params,
        "metrics": metrics,
        "tags": tags,
    })
}

/// Whether retrying the same import later may succeed.
fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<MlflowError>()
            .is_some_and(MlflowError::is_transient)
            || matches!(
                cause.downcast_ref::<RegistryError>(),
                Some(RegistryError::Storage(_))
            )
            || cause.downcast_ref::<std::io::Error>().is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(json: Value) -> RegisteredModel {
        serde_json::from_value(json).unwrap()
    }

    fn source(watch: Watch) -> MlflowSource {
        MlflowSource::new(MlflowSourceConfig {
            tracking_uri: "http://127.0.0.1:1".into(),
            watch,
            models: None,
        })
        .unwrap()
    }

    #[test]
    fn fingerprints_see_alias_moves_but_not_version_reordering() {
        let a = model(json!({"name": "m", "last_updated_timestamp": 5,
            "aliases": [{"alias": "champion", "version": "1"}],
            "latest_versions": [{"version": "1", "current_stage": "None"}, {"version": "2", "current_stage": "Staging"}]}));
        let mut moved = a.clone();
        moved.aliases.insert("champion".into(), 2);
        let mut reordered = a.clone();
        reordered.latest_versions.reverse();
        assert_ne!(
            fingerprint(&a),
            fingerprint(&moved),
            "an alias move keeps last_updated_timestamp"
        );
        assert_eq!(fingerprint(&a), fingerprint(&reordered));
    }

    #[test]
    fn an_unchanged_entry_or_an_unmoved_pointer_needs_no_call() {
        // The client points at a closed port: any network call would fail these checks.
        let source = source(Watch::Stage("production".into()));
        let m = model(json!({"name": "m", "latest_versions": [
            {"version": "3", "current_stage": "Production", "status": "READY"},
            {"version": "4", "current_stage": "Staging"}]}));
        let same = Seen {
            fingerprint: fingerprint(&m),
            version: Some(3),
        };
        assert!(matches!(source.check(&m, Some(&same)).unwrap(), (None, None)));
        let other_entry = Seen {
            fingerprint: String::new(),
            version: Some(3),
        };
        let (state, change) = source.check(&m, Some(&other_entry)).unwrap();
        assert_eq!(state.map(|s| s.version), Some(Some(3)));
        assert!(change.is_none());
        let unset = model(json!({"name": "m"}));
        let (state, change) = source.check(&unset, None).unwrap();
        assert_eq!(state.map(|s| s.version), Some(None));
        assert!(change.is_none());
    }

    #[test]
    fn a_moved_pointer_is_looked_up_and_a_failed_lookup_is_an_error() {
        let source = source(Watch::default());
        let m = model(json!({"name": "m", "aliases": [{"alias": "champion", "version": "7"}]}));
        let err = source.check(&m, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading MLflow model 'm' version 7"),
            "{err:#}"
        );
    }

    #[test]
    fn watches_that_kiln_cannot_mirror_are_refused_up_front() {
        let config = |watch| MlflowSourceConfig {
            tracking_uri: "http://127.0.0.1:1".into(),
            watch,
            models: None,
        };
        let err = MlflowSource::new(config(Watch::Alias("Champion".into())))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("cannot be mirrored"), "{err:#}");
        assert!(MlflowSource::new(config(Watch::Stage("prod".into()))).is_err());
        assert!(MlflowSource::new(config(Watch::Stage("Production".into()))).is_ok());
    }

    #[test]
    fn config_reads_from_toml_style_json_with_defaults() {
        let config: MlflowSourceConfig =
            serde_json::from_value(json!({"tracking_uri": "http://m:5000"})).unwrap();
        assert_eq!(config.watch, Watch::Alias("champion".into()));
        assert_eq!(config.models, None);
        let config: MlflowSourceConfig = serde_json::from_value(
            json!({"tracking_uri": "http://m:5000", "watch": {"stage": "Production"}, "models": ["a"]}),
        )
        .unwrap();
        assert_eq!(config.watch, Watch::Stage("Production".into()));
    }

    #[test]
    fn lineage_has_the_documented_shape() {
        let run = super::super::Run {
            params: BTreeMap::from([("max_depth".into(), "6".into())]),
            metrics: BTreeMap::from([("rmse".into(), json!(0.25))]),
            tags: BTreeMap::from([("mlflow.user".into(), "ci".into())]),
            ..Default::default()
        };
        let value = lineage("http://m", "house-price", 3, "abc", Some(&run));
        assert_eq!(
            value,
            json!({"source": "mlflow", "tracking_uri": "http://m", "model": "house-price", "version": 3,
                   "run_id": "abc", "params": {"max_depth": "6"}, "metrics": {"rmse": 0.25},
                   "tags": {"mlflow.user": "ci"}})
        );
    }
}
