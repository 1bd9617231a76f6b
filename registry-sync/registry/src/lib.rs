//! Kiln's model registry, embedded: one SQLite file plus a content-addressed blob directory
//! under a home directory (`$KILN_HOME`, default `./.kiln`).
//!
//! Embedded rather than a service so that `kiln models ...` works on a laptop with nothing
//! running, and so a serving process and the CLI can share one home: SQLite in WAL mode
//! with a 5 s busy timeout lets them read and write the same file, and a server notices
//! changes by polling [`Registry::generation`] instead of needing a notification channel.
//!
//! Durability rules: components are stored by SHA-256 and made durable before the row that
//! names them commits; every mutation and its audit entry share one transaction; the audit
//! log is hash-chained so tampering is detectable by [`Registry::verify_audit`].

mod audit;
pub mod auth;
mod blob;
pub mod duration;
mod error;
pub mod fleet;
mod model;
mod mutations;
pub mod node_reset;
pub mod plan;
pub mod reference;
mod registry;
pub mod rollout;
mod schema;
pub mod testing;

pub use audit::{GENESIS_HASH, canonical_json, entry_hash};
pub use error::RegistryError;
pub use model::{
    AuditEntry, AuditReport, GoldenPair, ModelVersion, NewVersion, Prepared, Stage, normalize_digest,
    validate_alias, validate_name,
};
pub use mutations::StageTransition;
pub use plan::{PlanOverrides, RolloutPlan, Strategy};
pub use reference::ReferenceProfile;
pub use registry::Registry;

pub use auth::{Action, Identity, Role};
