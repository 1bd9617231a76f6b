//! The routing table: which loaded model answers `{model}` for a request, by forced
//! version, explicit selector or weighted choice, and which version shadows it. It is
//! immutable; a reload or a routing push builds a new one and swaps it in atomically, and
//! a request holds the `Arc` of the version it started on until it finishes.

use kiln_api::Version;
use kiln_api::routing::{RouteError, Served};
use kiln_host::LoadedModel;
use kiln_node_api::RoutingTable;
use kiln_types::ModelInfo;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One served version: its registry identity and the loaded component (shared by every
/// version and table that uses the same digest).
pub struct ServedModel {
    /// Registered model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The version number as a string (the `model_version` of responses and metrics).
    pub version_label: String,
    /// Component digest.
    pub digest: String,
    /// Registry stage.
    pub stage: String,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Share of the model's weighted traffic (0: explicit selectors only).
    pub weight: u32,
    /// Whether the routing table marks it open to every client (`kiln_api::access`).
    pub open: bool,
    /// The loaded component.
    pub model: Arc<LoadedModel>,
}

impl Served for ServedModel {
    fn version(&self) -> u64 {
        self.version
    }
    fn stage(&self) -> &str {
        &self.stage
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn open(&self) -> bool {
        self.open
    }
}

impl Version for ServedModel {
    fn label(&self) -> &str {
        &self.version_label
    }
    fn info(&self) -> &ModelInfo {
        &self.model.info
    }
    fn digest(&self) -> &str {
        &self.digest
    }
}

/// The served versions of one model, how selectors map to them, and its shadow.
pub type ModelRoutes = kiln_api::routing::ModelRoutes<ServedModel>;
/// Where one inference request goes.
pub type Route = kiln_api::routing::Route<ServedModel>;

/// Every served model, as of one catalog generation.
#[derive(Clone, Default)]
pub struct Table {
    /// The catalog generation this table reflects.
    pub generation: u64,
    /// Routes by model name.
    pub models: BTreeMap<String, ModelRoutes>,
    /// The tokens a managed node accepts for restricted versions (from its routing table).
    pub readers: Vec<kiln_node_api::ReaderGrant>,
}

impl Table {
    /// Resolves a model name and an explicit version selector.
    pub fn resolve(&self, model: &str, selector: &str) -> Result<Arc<ServedModel>, RouteError> {
        self.routes(model)?.resolve_in(model, selector)
    }

    /// The routes of a model.
    pub fn routes(&self, model: &str) -> Result<&ModelRoutes, RouteError> {
        self.models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))
    }

    /// Components that took weighted traffic in `before` and that this table keeps with
    /// none (a rollout's previous version, a rolled-back canary): loaded for explicit
    /// calls and a rollback, idle otherwise. A component this table still weights or
    /// mirrors traffic to, under any name, is not one.
    pub fn stood_down(&self, before: &Table) -> Vec<Arc<LoadedModel>> {
        let busy: std::collections::HashSet<&str> = self
            .models
            .values()
            .flat_map(|r| {
                r.versions
                    .values()
                    .filter(|s| s.weight > 0)
                    .chain(r.shadow.iter())
            })
            .map(|s| s.digest.as_str())
            .collect();
        let was_weighted = |name: &str, s: &ServedModel| {
            before
                .models
                .get(name)
                .and_then(|r| r.versions.get(&s.version))
                .is_some_and(|p| p.weight > 0 && p.digest == s.digest)
        };
        let mut idle: HashMap<&str, Arc<LoadedModel>> = HashMap::new();
        for (name, routes) in &self.models {
            for s in routes.versions.values() {
                if s.weight == 0 && !busy.contains(s.digest.as_str()) && was_weighted(name, s) {
                    idle.insert(&s.digest, s.model.clone());
                }
            }
        }
        idle.into_values().collect()
    }

    /// Loaded components by digest (each once), shadows included.
    pub fn loaded(&self) -> HashMap<String, Arc<LoadedModel>> {
        self.models
            .values()
            .flat_map(|r| r.versions.values().chain(r.shadow.iter()))
            .map(|s| (s.digest.clone(), s.model.clone()))
            .collect()
    }

    /// The routing table being served.
    pub fn routing(&self) -> RoutingTable {
        RoutingTable {
            generation: self.generation,
            models: self
                .models
                .iter()
                .map(|(name, r)| (name.clone(), r.routing.clone()))
                .collect(),
            readers: self.readers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_lists_versions_stages_and_aliases() {
        let mut routes = ModelRoutes::default();
        routes.stages.insert("production".into(), 1);
        routes.aliases.insert("champion".into(), 1);
        assert_eq!(
            routes.describe(),
            "served versions: ; stages and aliases: champion=1, production=1"
        );
        assert!(routes.resolve("latest").is_none());
        assert!(routes.primary().is_none());
        assert!(routes.weighted(0).is_none());
        let table = Table::default();
        assert_eq!(
            table.resolve("m", "1").err(),
            Some(RouteError::UnknownModel("m".into()))
        );
    }
}
