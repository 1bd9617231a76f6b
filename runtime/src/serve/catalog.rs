//! What the server should serve: the registry seen through a small trait, so the server
//! does not depend on how the registry stores its state.

use std::path::PathBuf;

/// One model version the server should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedVersion {
    /// Registered model name (the name in URLs).
    pub name: String,
    /// Version number, monotonically increasing per model.
    pub version: u64,
    /// SHA-256 (lowercase hex) of the component bytes.
    pub digest: String,
    /// "None", "Staging", "Production" or "Archived".
    pub stage: String,
    /// Aliases pointing at this version (`champion`, `challenger`...).
    pub aliases: Vec<String>,
    /// The component file (`.wasm`), named by digest.
    pub component: PathBuf,
}

/// The source of truth for what to serve (the SQLite registry in the `kiln` binary).
pub trait Catalog: Send + Sync + 'static {
    /// A cheap counter that changes on every registry change, possibly made by another
    /// process. Called every poll interval on a blocking thread.
    fn generation(&self) -> anyhow::Result<u64>;
    /// Every version to serve (Production, Staging or aliased).
    fn served(&self) -> anyhow::Result<Vec<ServedVersion>>;
}
