//! `kiln serve`: Kiln's HTTP server. The seed API (`POST /v1/models/{name}/predict`) and
//! the Open Inference Protocol v2 (`/v2/...`, with the binary tensor extension) are
//! `kiln-api`'s, the same code every edge answers with; this crate runs its calls on the
//! wasmtime host behind the prediction cache, adds Prometheus `/metrics`, shadow traffic,
//! hot reload of a weighted routing table from a [`Catalog`] (registry mode), the
//! browser playground, and the managed-node agent ([`node`]: admin API, pushed routing,
//! joining a sync service).
//!
//! It sees the registry only through the [`Catalog`] trait: the `kiln` binary supplies the
//! registry's catalog.

pub mod access;
pub mod bulkhead;
pub mod catalog;
pub mod drift;
pub mod fallback;
mod http;
mod inference;
pub mod metrics;
pub mod node;
pub mod prediction_cache;
mod profiler;
pub mod profiles;
mod redact;
mod reload;
mod server;
mod shadow;
mod state;
pub mod table;
mod ui;

pub use access::{AccessConfig, RateLimit, RateLimitKey};
pub use bulkhead::Limits;
pub use catalog::Catalog;
pub use fallback::Fallback;
pub use node::store::{NodeStore, NodeStoreError};
pub use reload::LoadReport;
pub use server::{Server, serve};
pub use state::{JoinConfig, ServeConfig};
pub use ui::{BUNDLE_SHA256_HEADER, package_dir};
