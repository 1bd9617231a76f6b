//! The registry's operations, once: [`RegistryApi`] is what `kiln models`, `kiln audit`,
//! `kiln rollout`, `kiln sync` (but `run`) and `kiln tokens` call. Two implementations:
//! [`crate::Authorized`] works on a registry in this process as one identity (the CLI on
//! `$KILN_HOME`, and the server for each authenticated request), and
//! [`crate::RemoteRegistry`] sends the same calls to a registry server.

use serde::{Deserialize, Serialize};

pub use kiln_registry::ReferenceProfile;
use kiln_registry::auth::{IssuedToken, NewToken, TokenInfo};
use kiln_registry::fleet::NodeRecord;
use kiln_registry::rollout::Rollout;
use kiln_registry::{
    AuditEntry, AuditReport, GoldenPair, ModelVersion, NewVersion, PlanOverrides, RegistryError, Role,
    RolloutPlan, Stage, StageTransition,
};

/// The path every registry server route starts with.
pub const API_PREFIX: &str = "/api/v1";

/// What went wrong in a registry call, by the HTTP status it maps to.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad path).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or an unknown, expired or revoked one.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: the identity's role or model scope does not allow this.
    #[error("{0}")]
    Denied(String),
    /// 404: no such model, version, alias, rollout, node or token.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: the upload is larger than the server takes.
    #[error("{0}")]
    TooLarge(String),
    /// 422: a well-formed request with invalid values (names, stages, plans).
    #[error("{0}")]
    Invalid(String),
    /// 500: the registry failed (storage, corruption). The server logs the details and
    /// answers with a generic text that names no file.
    #[error("{0}")]
    Internal(String),
    /// The client could not reach the server or read its answer.
    #[error("{0}")]
    Unreachable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthenticated(_) => 401,
            ApiError::Denied(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::Invalid(_) => 422,
            ApiError::Internal(_) => 500,
            ApiError::Unreachable(_) => 502,
        }
    }

    /// The `kind` of the JSON error body.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Denied(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Invalid(_) => "invalid",
            ApiError::Internal(_) => "internal",
            ApiError::Unreachable(_) => "unreachable",
        }
    }

    /// The error a status and message from the server stand for.
    pub fn from_status(status: u16, message: String) -> ApiError {
        match status {
            400 => ApiError::BadRequest(message),
            401 => ApiError::Unauthenticated(message),
            403 => ApiError::Denied(message),
            404 => ApiError::NotFound(message),
            409 => ApiError::Conflict(message),
            413 => ApiError::TooLarge(message),
            422 => ApiError::Invalid(message),
            _ => ApiError::Internal(format!("HTTP {status}: {message}")),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::NotFound(m) => ApiError::NotFound(m),
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            RegistryError::Invalid(m) => ApiError::Invalid(m),
            RegistryError::Corrupt(m) => ApiError::Internal(m),
            e @ RegistryError::Storage(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<kiln_registry::auth::Denied> for ApiError {
    fn from(e: kiln_registry::auth::Denied) -> ApiError {
        ApiError::Denied(e.0)
    }
}

/// A registry call's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// The caller as the registry sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The audit actor: a token's name, or `local:<os user>`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Model patterns it is limited to; empty = all.
    pub models: Vec<String>,
}

/// `register`'s answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// The version (new, or the existing one holding the same component).
    pub version: ModelVersion,
    /// Whether a new version was created.
    pub created: bool,
}

/// How `rollout_finish` ends a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// The new version takes all traffic now.
    Promote,
    /// The stable version takes all traffic back.
    Abort,
}

/// What `rollout_rollback` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RolledBack {
    /// The active rollout was stopped and rolled back.
    Rollout {
        /// The rollout, now rolled back.
        rollout: Box<Rollout>,
    },
    /// No rollout was active: the previous (warm) version serves again.
    Reverted {
        /// The version serving now.
        stable: Option<u64>,
        /// The version kept warm for a roll forward.
        previous: Option<u64>,
    },
}

/// The fleet as the registry records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The routing generation nodes should reach.
    pub generation: u64,
    /// Every managed node and its last known status.
    pub nodes: Vec<NodeRecord>,
    /// The active rollouts.
    pub rollouts: Vec<Rollout>,
}

/// One change of a GitOps plan or apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeView {
    /// The change, printed like `kubectl diff` (`+`, `-`, `~`).
    pub text: String,
    /// The model it is about, if any.
    pub model: Option<String>,
    /// For a new Production version: what the running sync service does next.
    pub next: Option<String>,
}

/// A token as `kiln tokens list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// The record.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// `active`, `expired` or `revoked`.
    pub state: String,
}

/// A token just created, with its secret (shown once).
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedView {
    /// The record.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The token; only its SHA-256 is stored.
    pub token: String,
}

impl std::fmt::Debug for IssuedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedView")
            .field("info", &self.info)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl From<IssuedToken> for IssuedView {
    fn from(t: IssuedToken) -> IssuedView {
        IssuedView {
            info: t.info,
            token: t.secret,
        }
    }
}

/// Every registry operation the CLI offers, as one identity sees them.
pub trait RegistryApi: Send + Sync {
    /// Who the calls run as.
    fn whoami(&self) -> ApiResult<WhoAmI>;
    /// Where the registry is, for messages: a directory or a URL.
    fn location(&self) -> String;

    /// Registers a component as a new version of `new.name` (or returns the version that
    /// holds it already).
    fn register(&self, new: NewVersion) -> ApiResult<Registered>;
    /// Versions of one model, or of every model the identity covers.
    fn list(&self, name: Option<&str>) -> ApiResult<Vec<ModelVersion>>;
    /// One version: `NAME/VERSION`, `NAME/STAGE`, `NAME/latest` or `NAME@ALIAS`.
    fn resolve(&self, reference: &str) -> ApiResult<ModelVersion>;
    /// The golden request/response pairs of a version.
    fn golden(&self, name: &str, version: u64) -> ApiResult<Vec<GoldenPair>>;
    /// Moves a version to a stage.
    fn transition(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
    ) -> ApiResult<StageTransition>;
    /// Points an alias at a version.
    fn set_alias(&self, name: &str, alias: &str, version: u64) -> ApiResult<ModelVersion>;
    /// Deletes an alias.
    fn delete_alias(&self, name: &str, alias: &str) -> ApiResult<()>;
    /// Sets a tag.
    fn set_tag(&self, name: &str, version: u64, key: &str, value: &str) -> ApiResult<()>;
    /// Removes a tag.
    fn delete_tag(&self, name: &str, version: u64, key: &str) -> ApiResult<()>;
    /// Sets (or replaces) a version's reference profile for drift.
    fn set_reference(
        &self,
        name: &str,
        version: u64,
        reference: &ReferenceProfile,
    ) -> ApiResult<ReferenceProfile>;
    /// A version's reference profile, if it has one.
    fn reference(&self, name: &str, version: u64) -> ApiResult<Option<ReferenceProfile>>;
    /// A version's component, checked against its digest (to run it here, e.g. on a
    /// reference file).
    fn component(&self, name: &str, version: u64) -> ApiResult<Vec<u8>>;
    /// Replaces a version's description.
    fn describe(&self, name: &str, version: u64, text: &str) -> ApiResult<()>;
    /// Deletes a version (a Production one only with `force`).
    fn delete_version(&self, name: &str, version: u64, force: bool) -> ApiResult<()>;

    /// Audit entries, oldest first (of one model, or of everything the identity covers).
    fn audit_log(&self, model: Option<&str>) -> ApiResult<Vec<AuditEntry>>;
    /// Checks the audit hash chain.
    fn verify_audit(&self) -> ApiResult<AuditReport>;

    /// Starts a rollout of `name` to `to`: the model's policy (else the default) with
    /// `plan` over it.
    fn rollout_start(&self, name: &str, to: u64, plan: PlanOverrides) -> ApiResult<Rollout>;
    /// Rollouts, newest first: of one model, or the latest of each and every active one.
    fn rollouts(&self, name: Option<&str>) -> ApiResult<Vec<Rollout>>;
    /// Pauses (`true`) or resumes (`false`) the model's active rollout.
    fn rollout_pause(&self, name: &str, pause: bool) -> ApiResult<Rollout>;
    /// Promotes or aborts the model's active rollout.
    fn rollout_finish(&self, name: &str, how: Finish) -> ApiResult<Rollout>;
    /// Rolls back the active rollout, or reverts to the previous warm version.
    fn rollout_rollback(&self, name: &str) -> ApiResult<RolledBack>;
    /// Sets the model's rollout policy (`None`: clears it); returns the policy now in force
    /// (`None`: the service default).
    fn rollout_policy(&self, name: &str, plan: Option<PlanOverrides>) -> ApiResult<Option<RolloutPlan>>;

    /// Nodes, routing generation and active rollouts.
    fn fleet_status(&self) -> ApiResult<FleetStatus>;
    /// Adds (or re-points) a config node; `false` when nothing changed.
    fn add_node(&self, name: &str, url: &str) -> ApiResult<bool>;
    /// Stops managing a node; `false` when there was none.
    fn remove_node(&self, name: &str) -> ApiResult<bool>;
    /// Asks the sync service to re-adopt a node that serves a routing generation above its
    /// own (audited): its next push replaces the node's table whatever its generation.
    fn reset_node(&self, name: &str) -> ApiResult<kiln_registry::node_reset::NodeReset>;
    /// Plans (or, with `apply`, applies) a GitOps file given as its TOML text.
    fn gitops(&self, toml: &str, apply: bool) -> ApiResult<Vec<ChangeView>>;

    /// Creates a token; its secret is in the answer only.
    fn create_token(&self, new: &NewToken) -> ApiResult<IssuedView>;
    /// Every token (without secrets).
    fn tokens(&self) -> ApiResult<Vec<TokenView>>;
    /// Revokes a token.
    fn revoke_token(&self, name: &str) -> ApiResult<TokenInfo>;
}
