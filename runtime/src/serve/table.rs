//! The routing table: which loaded model answers `{model}` for a request, by forced
//! version, explicit selector or weighted choice, and which version shadows it. It is
//! immutable; a reload or a routing push builds a new one and swaps it in atomically, and
//! a request holds the `Arc` of the version it started on until it finishes.

use crate::host::LoadedModel;
use kiln_node_api::{ModelRouting, RoutingTable, choose_weighted, routing_point};
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
    /// The loaded component.
    pub model: Arc<LoadedModel>,
}

/// The served versions of one model, how selectors map to them, and its shadow.
#[derive(Clone, Default)]
pub struct ModelRoutes {
    /// Served versions by number.
    pub versions: BTreeMap<u64, Arc<ServedModel>>,
    /// Lowercase stage name → highest-numbered version in that stage.
    pub stages: HashMap<String, u64>,
    /// Alias → version.
    pub aliases: HashMap<String, u64>,
    /// The version that gets a copy of the traffic, compared and never returned.
    pub shadow: Option<Arc<ServedModel>>,
    /// The routing this was built from (what the node reports it serves).
    pub routing: ModelRouting,
    /// Weights of `weighted`, in the same order, ready for [`choose_weighted`].
    weights: Vec<u32>,
    /// Every version, newest first: a growing canary keeps the range it had, so sticky
    /// keys stay on it.
    weighted: Vec<Arc<ServedModel>>,
}

/// Where one inference request goes.
#[derive(Clone)]
pub struct Route {
    /// The version that answers.
    pub served: Arc<ServedModel>,
    /// The version that gets a copy of the request, if any.
    pub shadow: Option<Arc<ServedModel>>,
}

/// How a request names the version it wants, strongest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    /// The `x-kiln-version` header.
    pub forced: Option<&'a str>,
    /// The request's own selector (seed `model_version`, OIP `/versions/{v}`).
    pub selector: Option<&'a str>,
    /// The `x-kiln-routing-key` header (sticky weighted choice); random when absent.
    pub routing_key: Option<&'a str>,
}

impl ModelRoutes {
    /// Builds the selector maps and the weighted list from the versions.
    pub fn new(
        versions: BTreeMap<u64, Arc<ServedModel>>,
        shadow: Option<Arc<ServedModel>>,
        routing: ModelRouting,
    ) -> ModelRoutes {
        let mut stages = HashMap::new();
        let mut aliases = HashMap::new();
        // Ascending order: the highest-numbered version of a stage wins.
        for (number, served) in &versions {
            if !served.stage.is_empty() && !served.stage.eq_ignore_ascii_case("none") {
                stages.insert(served.stage.to_ascii_lowercase(), *number);
            }
            for alias in &served.aliases {
                aliases.insert(alias.clone(), *number);
            }
        }
        let weighted: Vec<Arc<ServedModel>> = versions.values().rev().cloned().collect();
        let weights = weighted.iter().map(|s| s.weight).collect();
        ModelRoutes {
            versions,
            stages,
            aliases,
            shadow,
            routing,
            weights,
            weighted,
        }
    }

    /// The version a selector names: `latest` (or empty), a number, a stage
    /// (case-insensitive) or an alias.
    pub fn resolve(&self, selector: &str) -> Option<&Arc<ServedModel>> {
        let selector = selector.trim();
        if selector.is_empty() || selector.eq_ignore_ascii_case("latest") {
            return self.versions.values().next_back();
        }
        if let Ok(n) = selector.parse::<u64>() {
            return self.versions.get(&n);
        }
        let number = self
            .aliases
            .get(selector)
            .or_else(|| self.stages.get(&selector.to_ascii_lowercase()))?;
        self.versions.get(number)
    }

    /// The version with the highest weight (the newest among equals): what a request
    /// without a selector most likely gets, and what version-less metadata describes.
    pub fn primary(&self) -> Option<&Arc<ServedModel>> {
        self.weighted.iter().max_by_key(|s| (s.weight, s.version))
    }

    /// The weighted choice for a point in `[0, 2^64)`.
    pub fn weighted(&self, point: u64) -> Option<&Arc<ServedModel>> {
        match choose_weighted(&self.weights, point) {
            Some(i) => self.weighted.get(i),
            // Every weight 0 (a table that skipped validation): the primary answers.
            None => self.primary(),
        }
    }

    /// Human-readable list of what can be selected, for 404 messages.
    pub fn describe(&self) -> String {
        let versions: Vec<String> = self.versions.keys().map(u64::to_string).collect();
        let mut named: Vec<String> = self
            .stages
            .iter()
            .map(|(s, v)| format!("{s}={v}"))
            .chain(self.aliases.iter().map(|(a, v)| format!("{a}={v}")))
            .collect();
        named.sort();
        let mut text = format!("served versions: {}", versions.join(", "));
        if !named.is_empty() {
            text.push_str(&format!("; stages and aliases: {}", named.join(", ")));
        }
        text
    }
}

/// Every served model, as of one catalog generation.
#[derive(Clone, Default)]
pub struct Table {
    /// The catalog generation this table reflects.
    pub generation: u64,
    /// Routes by model name.
    pub models: BTreeMap<String, ModelRoutes>,
}

/// Why a model/version pair does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No model by that name.
    UnknownModel(String),
    /// The model exists but nothing matches the selector.
    UnknownVersion {
        /// The model name.
        model: String,
        /// The selector asked for.
        selector: String,
        /// What exists instead.
        available: String,
    },
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::UnknownModel(m) => write!(f, "unknown model `{m}`"),
            RouteError::UnknownVersion {
                model,
                selector,
                available,
            } => write!(
                f,
                "model `{model}` has no served version `{selector}` ({available})"
            ),
        }
    }
}

/// A random point for requests without a routing key. uuid's generator is a fast
/// thread-local CSPRNG already in the build; quality well beyond what a traffic split needs.
fn random_point() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

impl Table {
    /// Resolves a model name and an explicit version selector.
    pub fn resolve(&self, model: &str, selector: &str) -> Result<Arc<ServedModel>, RouteError> {
        let routes = self.routes(model)?;
        resolve_in(model, routes, selector)
    }

    /// The routes of a model.
    pub fn routes(&self, model: &str) -> Result<&ModelRoutes, RouteError> {
        self.models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))
    }

    /// The version answering a version-less metadata request: the highest weight.
    pub fn primary(&self, model: &str) -> Result<Arc<ServedModel>, RouteError> {
        let routes = self.routes(model)?;
        routes
            .primary()
            .cloned()
            .ok_or_else(|| RouteError::UnknownVersion {
                model: model.to_string(),
                selector: String::new(),
                available: routes.describe(),
            })
    }

    /// Where an inference request goes: the forced version, else the explicit selector,
    /// else the weighted choice (sticky by routing key, random without one).
    pub fn route(&self, model: &str, selection: Selection<'_>) -> Result<Route, RouteError> {
        let routes = self.routes(model)?;
        let served = match selection.forced.or(selection.selector) {
            Some(selector) => resolve_in(model, routes, selector)?,
            None => {
                let point = selection.routing_key.map_or_else(random_point, routing_point);
                routes
                    .weighted(point)
                    .cloned()
                    .ok_or_else(|| RouteError::UnknownVersion {
                        model: model.to_string(),
                        selector: String::new(),
                        available: routes.describe(),
                    })?
            }
        };
        // A version never shadows itself (a forced request to the shadow version).
        let shadow = routes
            .shadow
            .as_ref()
            .filter(|s| s.version != served.version)
            .cloned();
        Ok(Route { served, shadow })
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
        }
    }
}

fn resolve_in(model: &str, routes: &ModelRoutes, selector: &str) -> Result<Arc<ServedModel>, RouteError> {
    routes
        .resolve(selector)
        .cloned()
        .ok_or_else(|| RouteError::UnknownVersion {
            model: model.to_string(),
            selector: selector.to_string(),
            available: routes.describe(),
        })
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
