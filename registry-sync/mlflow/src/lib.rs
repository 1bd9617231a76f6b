//! MLflow as a source of models and promotion events.
//!
//! Teams that train with MLflow mark a release by pointing an alias (`champion`) or, in
//! older setups, a stage (`Production`) at a registered model version. [`MlflowSource`]
//! watches that pointer through MLflow's REST API 2.0 and [`MlflowSource::import`] turns the
//! version it names into a Kiln version: the `.onnx` is downloaded through the tracking
//! server's artifact proxy, compiled by the caller's `prepare`, registered with MLflow's
//! description, `mlflow.*` tags and the run's params, metrics and tags as lineage, then
//! given the same alias and moved to Production. The Kiln registry stays the one place
//! rollouts start from; MLflow only says what should be there.
//!
//! Polling rather than webhooks. MLflow 3.3+ can send HMAC-signed webhooks (3.17.2 has
//! `model_version_alias.created`/`.deleted`, but no event for stage transitions), yet a
//! stock 3.17.2 server will not deliver them to a typical Kiln: only `https` URLs are
//! accepted unless `MLFLOW_WEBHOOK_ALLOWED_SCHEMES` is changed, loopback and private
//! addresses are refused unless `MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`, stored secrets
//! need `MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`, the server must be able to reach Kiln, and
//! a delivery missed while Kiln is down is gone after 3 retries. Polling needs none of
//! that, catches up after downtime by construction, and costs one search request per
//! 1000 models per poll (see [`MlflowSource::poll`] for how changes are detected without
//! ETags). A webhook receiver could later just trigger an early poll.

mod artifacts;
mod client;
mod dataset;
mod onnx_external;
mod source;

pub use artifacts::ArtifactFile;
pub use client::{
    CALL_TIMEOUT, CONNECT_TIMEOUT, DOWNLOAD_TIMEOUT, MlflowClient, MlflowError, MlflowVersion,
    RegisteredModel, Run, RunDataset,
};
pub use dataset::{DatasetFile, MAX_DATASET_BYTES};
pub use onnx_external::inline_external_data;
pub use source::{
    ImportOutcome, MlflowChange, MlflowSource, MlflowSourceConfig, ReferenceFn, ReferenceHook, TAG_MODEL,
    TAG_RUN_ID, TAG_SOURCE, TAG_VERSION, Watch,
};
