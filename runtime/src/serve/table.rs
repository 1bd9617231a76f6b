//! The routing table: which loaded model answers `{model}` at a version selector. It is
//! immutable; the reloader builds a new one and swaps it in atomically, and a request
//! holds the `Arc` of the version it started on until it finishes.

use crate::host::LoadedModel;
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
    /// The loaded component.
    pub model: Arc<LoadedModel>,
}

/// The served versions of one model and how selectors map to them.
#[derive(Clone, Default)]
pub struct ModelRoutes {
    /// Served versions by number.
    pub versions: BTreeMap<u64, Arc<ServedModel>>,
    /// Lowercase stage name → highest-numbered version in that stage.
    pub stages: HashMap<String, u64>,
    /// Alias → version.
    pub aliases: HashMap<String, u64>,
}

impl ModelRoutes {
    /// Builds the stage and alias maps from the versions.
    pub fn from_versions(versions: BTreeMap<u64, Arc<ServedModel>>) -> ModelRoutes {
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
        ModelRoutes {
            versions,
            stages,
            aliases,
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

impl Table {
    /// Resolves a model name and version selector.
    pub fn resolve(&self, model: &str, selector: &str) -> Result<Arc<ServedModel>, RouteError> {
        let routes = self
            .models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        routes
            .resolve(selector)
            .cloned()
            .ok_or_else(|| RouteError::UnknownVersion {
                model: model.to_string(),
                selector: selector.to_string(),
                available: routes.describe(),
            })
    }

    /// Loaded components by digest (each once).
    pub fn loaded(&self) -> HashMap<String, Arc<LoadedModel>> {
        self.models
            .values()
            .flat_map(|r| r.versions.values())
            .map(|s| (s.digest.clone(), s.model.clone()))
            .collect()
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
        let table = Table::default();
        assert_eq!(
            table.resolve("m", "1").err(),
            Some(RouteError::UnknownModel("m".into()))
        );
    }
}
