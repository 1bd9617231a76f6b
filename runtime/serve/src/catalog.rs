//! What the server should serve, seen through a small trait so the server does not depend
//! on where it comes from: the local registry (`kiln serve`, the `kiln` binary's catalog
//! over `kiln-fleet`'s rule) or a node store that the sync service pushes to
//! (`kiln serve --managed`).

use kiln_node_api::RoutingTable;
use std::path::PathBuf;
use std::sync::Arc;

/// The source of truth for what to serve.
pub trait Catalog: Send + Sync + 'static {
    /// A cheap counter that changes on every change of what to serve, possibly made by
    /// another process. Called every poll interval on a blocking thread.
    fn generation(&self) -> anyhow::Result<u64>;
    /// The routing table to serve: per model, its versions with weights, and a shadow.
    fn routing(&self) -> anyhow::Result<RoutingTable>;
    /// Where the component with this digest is stored (whether or not it exists).
    fn component_path(&self, digest: &str) -> PathBuf;
    /// Every component digest the catalog holds (served or not), for the node state.
    fn stored_digests(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.routing()?.digests())
    }
    /// The reader a bearer token of the inference port stands for: one allowed to name
    /// restricted versions of the models it may read (`kiln_api::access`). `None` for a
    /// token that is not one. Called on a blocking thread, at most once per token every
    /// few seconds (the server caches the answer). The default knows no tokens (a managed
    /// node's store).
    fn authenticate(&self, _token: &str) -> anyhow::Result<Option<Arc<dyn kiln_api::Reader>>> {
        Ok(None)
    }
    /// The reference profile of `model`/`version` that drift is measured against, if one
    /// was set (`kiln models register --reference`). Called on a blocking thread. The
    /// default has none (a managed node: the sync service holds references and measures
    /// the fleet's drift).
    fn reference(
        &self,
        _model: &str,
        _version: u64,
    ) -> anyhow::Result<Option<kiln_monitor::model::Reference>> {
        Ok(None)
    }
}
