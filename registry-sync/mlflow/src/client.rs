//! A blocking client for the parts of MLflow's REST API 2.0 that Kiln imports from: the
//! model registry, runs (for lineage) and the tracking server's artifact proxy.
//!
//! Every call is a GET, so every call is safe to repeat: a transport failure, a 5xx, a
//! 408 or a 429 (after its `Retry-After`, up to 4 s) is retried under [`MLFLOW_RETRY`].
//! Calls go through the tracking server's circuit breaker ([`MLFLOW_BREAKER`]): after
//! five calls that failed that way in a row, calls fail at once with
//! [`MlflowError::Unavailable`] until the cool-down is over and a probe call succeeds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kiln_node_api::breaker::BreakerPolicy;
use kiln_node_api::retry::{Event, Failure, Refused, RetryPolicy, Target, ThreadPause};
use kiln_node_api::tls::ClientTls;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long to wait for a TCP connection to the tracking server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most one API call may take, start to end.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most one artifact download may take (models can be hundreds of MB).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// MLflow's largest accepted `max_results` for `registered-models/search`.
const SEARCH_PAGE_SIZE: &str = "1000";
/// Retries of one call: four attempts, 250 ms, 500 ms, 1 s apart at most (full jitter).
pub const MLFLOW_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(4),
};
/// The tracking server's breaker: open after five failed calls in a row, for 5 s,
/// doubling after each failed probe up to a minute.
pub const MLFLOW_BREAKER: BreakerPolicy = BreakerPolicy {
    failure_threshold: 5,
    initial_cooldown: Duration::from_secs(5),
    max_cooldown: Duration::from_secs(60),
};
/// The tracking server's name in status reports and metrics.
pub const TARGET: &str = "mlflow";

/// What went wrong talking to MLflow. Callers match on it to decide whether to retry
/// ([`MlflowError::is_transient`]) or to treat a missing object as absent
/// ([`MlflowError::is_not_found`]).
#[derive(thiserror::Error, Debug)]
pub enum MlflowError {
    /// The tracking server could not be reached or did not answer in time.
    #[error(
        "MLflow {call} ({url}) failed: {}; is the tracking server running and reachable?",
        kiln_node_api::tls::describe_ureq_error(url, error)
    )]
    Transport {
        call: &'static str,
        url: String,
        error: ureq::Error,
    },
    /// MLflow answered with an error status and its `error_code`/`message`.
    #[error("MLflow {call} ({url}) answered HTTP {status} {error_code}: {message}")]
    Api {
        call: &'static str,
        url: String,
        status: u16,
        error_code: String,
        message: String,
        /// The answer's `Retry-After` (429, 503), if any.
        retry_after: Option<Duration>,
    },
    /// The tracking server's circuit breaker is open after repeated failures: the call was
    /// not made.
    #[error(
        "MLflow {call} not attempted: the tracking server failed repeatedly and is given {}s to recover (circuit breaker open)",
        retry_in.as_secs().max(1)
    )]
    Unavailable { call: &'static str, retry_in: Duration },
    /// MLflow answered 200 with a body this client could not read.
    #[error("MLflow {call} ({url}) answered with an unexpected body: {detail}")]
    Decode {
        call: &'static str,
        url: String,
        detail: String,
    },
    /// The model version's artifacts hold no `.onnx` file, so there is nothing Kiln can compile.
    #[error(
        "MLflow model '{model}' version {version} has no .onnx file in its artifacts ({uri}; found: {found}); \
         log the model with mlflow.onnx.log_model or log the .onnx file into the version's source directory"
    )]
    NoOnnx {
        model: String,
        version: u64,
        uri: String,
        found: String,
    },
    /// Something this client does not handle: a non-HTTP tracking URI, an artifact store
    /// the tracking server does not proxy, a malformed artifact path.
    #[error("{0}")]
    Unsupported(String),
    /// Writing a downloaded artifact to disk failed.
    #[error("writing {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
}

impl MlflowError {
    /// True when MLflow says the model, version, alias, run or artifact does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            // A missing alias is INVALID_PARAMETER_VALUE "... alias X not found." in 3.x.
            MlflowError::Api {
                status,
                error_code,
                message,
                ..
            } => {
                *status == 404
                    || error_code == "RESOURCE_DOES_NOT_EXIST"
                    || (error_code == "INVALID_PARAMETER_VALUE" && message.contains("not found"))
            }
            _ => false,
        }
    }

    /// True for failures worth retrying unchanged: network, timeouts, 5xx, 408, 429, and
    /// calls not made because the breaker is open.
    pub fn is_transient(&self) -> bool {
        matches!(self, MlflowError::Unavailable { .. }) || self.failure().is_retryable()
    }

    /// The failure as the retry policy sees it.
    fn failure(&self) -> Failure {
        match self {
            MlflowError::Transport { .. } => Failure::Transport,
            MlflowError::Api {
                status, retry_after, ..
            } => Failure::Status {
                code: *status,
                retry_after: *retry_after,
            },
            _ => Failure::Permanent,
        }
    }
}

/// A registered model as `registered-models/search` and `registered-models/get` return it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct RegisteredModel {
    pub name: String,
    pub description: String,
    pub creation_timestamp: i64,
    /// Not bumped by alias changes (checked on 3.17.2): compare `aliases` too.
    pub last_updated_timestamp: i64,
    /// Alias → version. MLflow 3.17 includes aliases in search and get answers.
    #[serde(deserialize_with = "alias_map")]
    pub aliases: BTreeMap<String, u64>,
    /// The newest version in each stage, with `current_stage` and `status`.
    pub latest_versions: Vec<MlflowVersion>,
}

impl RegisteredModel {
    /// The version `alias` points at.
    pub fn alias(&self, alias: &str) -> Option<u64> {
        self.aliases.get(alias).copied()
    }

    /// The newest version in `stage` (case-insensitive), from `latest_versions`.
    pub fn latest_in_stage(&self, stage: &str) -> Option<&MlflowVersion> {
        self.latest_versions
            .iter()
            .filter(|v| v.current_stage.eq_ignore_ascii_case(stage))
            .max_by_key(|v| v.version)
    }
}

/// A model version as `model-versions/get` returns it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct MlflowVersion {
    pub name: String,
    #[serde(deserialize_with = "version_number")]
    pub version: u64,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    /// `None`, `Staging`, `Production` or `Archived` (stages are deprecated but still work).
    pub current_stage: String,
    pub description: String,
    /// `models:/m-<id>` for versions made by `log_model(registered_model_name=...)` in
    /// MLflow 3, `runs:/<run>/<path>` for versions created from a run's artifacts.
    pub source: String,
    pub run_id: String,
    /// `READY` once the files are in place; `PENDING_REGISTRATION` or `FAILED_REGISTRATION`.
    pub status: String,
    /// Present in `model-versions/get` answers, absent from `latest_versions`.
    pub aliases: Vec<String>,
}

impl MlflowVersion {
    /// True when the version's files are registered and can be downloaded.
    pub fn is_ready(&self) -> bool {
        self.status.is_empty() || self.status == "READY"
    }
}

/// A run's parameters, latest metric values and tags (`runs/get`).
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct Run {
    pub run_id: String,
    pub experiment_id: String,
    pub run_name: String,
    pub status: String,
    /// Where the run's artifacts live, e.g. `mlflow-artifacts:/1/<run>/artifacts`.
    pub artifact_uri: String,
    pub params: BTreeMap<String, String>,
    /// Latest value of each metric, as MLflow sent it (a number, or `"NaN"`/`"Infinity"`).
    pub metrics: BTreeMap<String, Value>,
    pub tags: BTreeMap<String, String>,
    /// Datasets logged as the run's inputs (`mlflow.log_input`), in MLflow's order.
    pub datasets: Vec<RunDataset>,
}

/// A dataset a run logged with `mlflow.log_input(dataset, context=…)`: MLflow keeps its
/// description, not its rows.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct RunDataset {
    pub name: String,
    pub digest: String,
    /// The `mlflow.data.context` tag: `training`, `validation`, `reference`, ….
    pub context: String,
    /// `local`, `http`, `code`, `s3`, ….
    pub source_type: String,
    /// The source as MLflow stores it: JSON such as `{"uri": "/data/train.csv"}` or
    /// `{"url": "https://…"}`.
    pub source: String,
}

/// A blocking MLflow REST client; every call has a connect and a total timeout.
#[derive(Clone, Debug)]
pub struct MlflowClient {
    pub(super) base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    pub(super) download_timeout: Duration,
    /// The tracking server's breaker and retry counters, shared by clones.
    target: Arc<Target>,
}

impl MlflowClient {
    /// A client for the tracking server at `tracking_uri` (`http://host:port`, with an
    /// optional path prefix). Authenticates with `MLFLOW_TRACKING_TOKEN` (bearer) or
    /// `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (basic) when set, like
    /// MLflow's own client. An `https://` server is verified against the system's roots.
    pub fn new(tracking_uri: &str) -> Result<MlflowClient, MlflowError> {
        MlflowClient::new_with_tls(tracking_uri, &ClientTls::default())
    }

    /// [`MlflowClient::new`], trusting what `tls` trusts (the system's roots plus a CA
    /// file) and presenting its client certificate, if any.
    pub fn new_with_tls(tracking_uri: &str, tls: &ClientTls) -> Result<MlflowClient, MlflowError> {
        let base = tracking_uri.trim().trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(MlflowError::Unsupported(format!(
                "MLflow tracking URI '{tracking_uri}' is not an http:// URL; point Kiln at a running \
                 `mlflow server` (e.g. http://127.0.0.1:5000), not at a file store"
            )));
        }
        kiln_node_api::check_http_url(&base)
            .map_err(|e| MlflowError::Unsupported(format!("MLflow tracking URI {e}")))?;
        let agent = tls
            .agent_config()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let authorization = match (
            env("MLFLOW_TRACKING_TOKEN"),
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(token), _, _) => Some(format!("Bearer {token}")),
            (None, Some(user), Some(password)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            _ => None,
        };
        Ok(MlflowClient {
            base,
            agent,
            authorization,
            download_timeout: DOWNLOAD_TIMEOUT,
            // A probe is one call; a download may take DOWNLOAD_TIMEOUT.
            target: Arc::new(Target::new(TARGET, "mlflow", MLFLOW_BREAKER, DOWNLOAD_TIMEOUT)),
        })
    }

    /// The same client with another limit for one artifact download.
    pub fn with_download_timeout(mut self, timeout: Duration) -> MlflowClient {
        self.download_timeout = timeout;
        self
    }

    /// The tracking server as a client target: its breaker and retry counters.
    pub fn target(&self) -> Arc<Target> {
        self.target.clone()
    }

    /// Runs one call (`attempt`, once per attempt) behind the breaker, with retries.
    pub(super) fn guarded<T>(
        &self,
        call: &'static str,
        attempt: impl FnMut() -> Result<T, MlflowError>,
    ) -> Result<T, MlflowError> {
        let on_event = |event: Event<'_, MlflowError>| match event {
            Event::Retry {
                attempt,
                delay,
                error,
            } => {
                tracing::debug!(call, attempt, delay_ms = delay.as_millis() as u64, error = %error, "MLflow call failed; retrying")
            }
            Event::Opened(_) => tracing::warn!(
                tracking_uri = %self.base,
                "MLflow circuit breaker open: calls fail at once until its cool-down ends"
            ),
            Event::Closed => {
                tracing::info!(tracking_uri = %self.base, "MLflow answers again; circuit breaker closed")
            }
        };
        self.target
            .call(
                &MLFLOW_RETRY,
                &mut ThreadPause,
                MlflowError::failure,
                on_event,
                attempt,
            )
            .map_err(|refused| match refused {
                Refused::Failed { error, .. } => error,
                Refused::Open { retry_in } => MlflowError::Unavailable { call, retry_in },
            })
    }

    /// The tracking URI this client talks to, without a trailing slash.
    pub fn tracking_uri(&self) -> &str {
        &self.base
    }

    /// Every registered model matching `filter` (MLflow's search syntax, e.g.
    /// `name LIKE 'house%'`; `None` for all), following `next_page_token` to the end.
    pub fn search_registered_models(
        &self,
        filter: Option<&str>,
    ) -> Result<Vec<RegisteredModel>, MlflowError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            registered_models: Vec<RegisteredModel>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let mut models = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("max_results", SEARCH_PAGE_SIZE)];
            if let Some(filter) = filter {
                query.push(("filter", filter));
            }
            if let Some(token) = token.as_deref() {
                query.push(("page_token", token));
            }
            let page: Page = self.get_json("registered-models/search", &query)?;
            models.extend(page.registered_models);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(models),
            }
        }
    }

    /// One registered model by name.
    pub fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            registered_model: RegisteredModel,
        }
        let answer: Answer = self.get_json("registered-models/get", &[("name", name)])?;
        Ok(answer.registered_model)
    }

    /// One model version (`model-versions/get`).
    pub fn get_model_version(&self, name: &str, version: u64) -> Result<MlflowVersion, MlflowError> {
        let version = version.to_string();
        let answer: VersionAnswer =
            self.get_json("model-versions/get", &[("name", name), ("version", &version)])?;
        Ok(answer.model_version)
    }

    /// The version an alias points at (`registered-models/alias`); a missing alias is an
    /// error for which [`MlflowError::is_not_found`] holds.
    pub fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<MlflowVersion, MlflowError> {
        let answer: VersionAnswer =
            self.get_json("registered-models/alias", &[("name", name), ("alias", alias)])?;
        Ok(answer.model_version)
    }

    /// Where a version's files are (`model-versions/get-download-uri`): an
    /// `mlflow-artifacts:/` URI for MLflow 3 logged models, the version's own `runs:/` source
    /// for versions created from run artifacts (3.17.2 does not resolve those).
    pub fn get_download_uri(&self, name: &str, version: u64) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            artifact_uri: String,
        }
        let version = version.to_string();
        let answer: Answer = self.get_json(
            "model-versions/get-download-uri",
            &[("name", name), ("version", &version)],
        )?;
        Ok(answer.artifact_uri)
    }

    /// A run's params, latest metrics and tags (`runs/get`).
    pub fn get_run(&self, run_id: &str) -> Result<Run, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            run: RawRun,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RawRun {
            info: RunInfo,
            data: RunData,
            inputs: RunInputs,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RunInputs {
            dataset_inputs: Vec<DatasetInput>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct DatasetInput {
            tags: Vec<KeyValue>,
            dataset: RawDataset,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RawDataset {
            name: String,
            digest: String,
            source_type: String,
            source: String,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RunInfo {
            run_id: String,
            run_uuid: String,
            experiment_id: String,
            run_name: String,
            status: String,
            artifact_uri: String,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RunData {
            params: Vec<KeyValue>,
            metrics: Vec<Metric>,
            tags: Vec<KeyValue>,
        }
        #[derive(Deserialize)]
        struct KeyValue {
            key: String,
            #[serde(default)]
            value: String,
        }
        #[derive(Deserialize)]
        struct Metric {
            key: String,
            #[serde(default)]
            value: Value,
        }
        let answer: Answer = self.get_json("runs/get", &[("run_id", run_id)])?;
        let RawRun { info, data, inputs } = answer.run;
        Ok(Run {
            run_id: if info.run_id.is_empty() {
                info.run_uuid
            } else {
                info.run_id
            },
            experiment_id: info.experiment_id,
            run_name: info.run_name,
            status: info.status,
            artifact_uri: info.artifact_uri,
            params: data.params.into_iter().map(|p| (p.key, p.value)).collect(),
            metrics: data.metrics.into_iter().map(|m| (m.key, m.value)).collect(),
            tags: data.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            datasets: inputs
                .dataset_inputs
                .into_iter()
                .map(|input| RunDataset {
                    name: input.dataset.name,
                    digest: input.dataset.digest,
                    context: input
                        .tags
                        .into_iter()
                        .find(|t| t.key == "mlflow.data.context")
                        .map(|t| t.value)
                        .unwrap_or_default(),
                    source_type: input.dataset.source_type,
                    source: input.dataset.source,
                })
                .collect(),
        })
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{call}", self.base);
        self.call_json(call, &url, query)
    }

    pub(super) fn request(
        &self,
        url: &str,
        query: &[(&str, &str)],
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut request = self.agent.get(url).header("Accept", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        for (key, value) in query {
            request = request.query(key, value);
        }
        request
    }

    pub(super) fn call_json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        self.guarded(call, || self.call_json_once(call, url, query))
    }

    fn call_json_once<T: DeserializeOwned>(
        &self,
        call: &'static str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let response = self
            .request(url, query)
            .call()
            .map_err(|error| MlflowError::Transport {
                call,
                url: url.to_string(),
                error,
            })?;
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|error| MlflowError::Transport {
                call,
                url: url.to_string(),
                error,
            })?;
        if status != 200 {
            return Err(with_retry_after(api_error(call, url, status, &text), retry_after));
        }
        serde_json::from_str(&text).map_err(|e| MlflowError::Decode {
            call,
            url: url.to_string(),
            detail: format!("{e} in {}", excerpt(&text)),
        })
    }
}

#[derive(Deserialize)]
struct VersionAnswer {
    model_version: MlflowVersion,
}

/// Builds an [`MlflowError::Api`] from MLflow's `{"error_code", "message"}` body, or from
/// whatever else came back (a proxy's HTML page).
pub(super) fn api_error(call: &'static str, url: &str, status: u16, body: &str) -> MlflowError {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Body {
        error_code: String,
        message: String,
    }
    let parsed: Body = serde_json::from_str(body).unwrap_or_default();
    let (error_code, message) = if parsed.error_code.is_empty() && parsed.message.is_empty() {
        (String::new(), excerpt(body))
    } else {
        (parsed.error_code, parsed.message)
    };
    MlflowError::Api {
        call,
        url: url.to_string(),
        status,
        error_code,
        message,
        retry_after: None,
    }
}

/// An answer's `Retry-After`, read now.
pub(super) fn retry_after<B>(response: &ureq::http::Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    kiln_node_api::retry::parse_retry_after(value, SystemTime::now())
}

/// `error` with the answer's `Retry-After`, when it is an [`MlflowError::Api`].
pub(super) fn with_retry_after(mut error: MlflowError, after: Option<Duration>) -> MlflowError {
    if let MlflowError::Api { retry_after, .. } = &mut error {
        *retry_after = after;
    }
    error
}

pub(super) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// MLflow sends version numbers as strings (`"3"`); accept numbers too.
fn version_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => s.parse().map_err(de::Error::custom),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| de::Error::custom(format!("bad version {n}"))),
        Value::Null => Ok(0),
        other => Err(de::Error::custom(format!("bad version {other}"))),
    }
}

/// `[{"alias": "champion", "version": "3"}]` → `{"champion": 3}`.
fn alias_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, u64>, D::Error> {
    #[derive(Deserialize)]
    struct Entry {
        alias: String,
        #[serde(deserialize_with = "version_number")]
        version: u64,
    }
    let entries: Option<Vec<Entry>> = Option::deserialize(deserializer)?;
    Ok(entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.alias, e.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_model_parses_what_mlflow_3_17_sends() {
        // Trimmed from a real `registered-models/search` answer of MLflow 3.17.2.
        let json = r#"{
            "name": "house-price", "creation_timestamp": 1795782424619,
            "last_updated_timestamp": 1795782446169,
            "latest_versions": [
                {"name": "house-price", "version": "1", "current_stage": "None",
                 "source": "models:/m-8ec6877e886a4bbc8af9142308deaf84", "run_id": "524f",
                 "status": "READY", "last_updated_timestamp": 1795782424652},
                {"name": "house-price", "version": "2", "current_stage": "Production",
                 "source": "runs:/b5ed/onnxdir", "run_id": "b5ed", "status": "READY"}
            ],
            "aliases": [{"alias": "champion", "version": "2"}]
        }"#;
        let model: RegisteredModel = serde_json::from_str(json).unwrap();
        assert_eq!(model.alias("champion"), Some(2));
        assert_eq!(model.alias("challenger"), None);
        assert_eq!(model.latest_in_stage("production").map(|v| v.version), Some(2));
        assert_eq!(model.latest_in_stage("Staging"), None);
        assert!(model.latest_versions[0].is_ready());
        let bare: RegisteredModel = serde_json::from_str(r#"{"name": "m"}"#).unwrap();
        assert!(bare.aliases.is_empty() && bare.latest_versions.is_empty());
    }

    #[test]
    fn api_errors_keep_mlflow_code_and_message() {
        let err = api_error(
            "model-versions/get",
            "http://x/api/2.0/mlflow/model-versions/get",
            404,
            r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version (name=m, version=9) not found"}"#,
        );
        let text = err.to_string();
        assert!(text.contains("model-versions/get"), "{text}");
        assert!(
            text.contains("HTTP 404 RESOURCE_DOES_NOT_EXIST: Model Version (name=m, version=9) not found"),
            "{text}"
        );
        assert!(err.is_not_found() && !err.is_transient());
        let alias = api_error(
            "registered-models/alias",
            "u",
            400,
            r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "Registered model alias nope not found."}"#,
        );
        assert!(alias.is_not_found());
        let proxy = api_error("runs/get", "u", 502, "<html>Bad Gateway</html>");
        assert!(
            proxy.is_transient() && proxy.to_string().contains("<html>Bad Gateway"),
            "{proxy}"
        );
    }
}
