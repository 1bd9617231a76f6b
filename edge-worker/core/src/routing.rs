//! Which version of a model answers a request: the forced version, else the request's own
//! selector, else the weighted choice (sticky by routing key). `kiln serve` and every edge
//! route with this code, so one routing key lands on the same version everywhere.

use kiln_node_api::{ModelRouting, choose_weighted, routing_point};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What routing needs to know about a served version.
pub trait Served {
    /// Registry version number.
    fn version(&self) -> u64;
    /// Registry stage (`Production`, `None`...).
    fn stage(&self) -> &str;
    /// Aliases pointing at this version.
    fn aliases(&self) -> &[String];
    /// Share of the model's weighted traffic (0: explicit selectors only).
    fn weight(&self) -> u32;
    /// Whether the routing table marks it open to every client
    /// ([`VersionRoute::open`](kiln_node_api::VersionRoute::open); see [`crate::access`]).
    fn open(&self) -> bool;
}

/// The served versions of one model, how selectors map to them, and its shadow.
pub struct ModelRoutes<T> {
    /// Served versions by number.
    pub versions: BTreeMap<u64, Arc<T>>,
    /// Lowercase stage name → highest-numbered version in that stage.
    pub stages: HashMap<String, u64>,
    /// Alias → version.
    pub aliases: HashMap<String, u64>,
    /// The version that gets a copy of the traffic, compared and never returned.
    pub shadow: Option<Arc<T>>,
    /// The routing this was built from (what a node reports it serves).
    pub routing: ModelRouting,
    /// Weights of `weighted`, in the same order, ready for [`choose_weighted`].
    weights: Vec<u32>,
    /// Every version, newest first: a growing canary keeps the range it had, so sticky
    /// keys stay on it.
    weighted: Vec<Arc<T>>,
}

impl<T> Clone for ModelRoutes<T> {
    fn clone(&self) -> Self {
        ModelRoutes {
            versions: self.versions.clone(),
            stages: self.stages.clone(),
            aliases: self.aliases.clone(),
            shadow: self.shadow.clone(),
            routing: self.routing.clone(),
            weights: self.weights.clone(),
            weighted: self.weighted.clone(),
        }
    }
}

impl<T> Default for ModelRoutes<T> {
    fn default() -> Self {
        ModelRoutes {
            versions: BTreeMap::new(),
            stages: HashMap::new(),
            aliases: HashMap::new(),
            shadow: None,
            routing: ModelRouting::default(),
            weights: Vec::new(),
            weighted: Vec::new(),
        }
    }
}

/// Where one inference request goes.
pub struct Route<T> {
    /// The version that answers.
    pub served: Arc<T>,
    /// The version that gets a copy of the request, if any.
    pub shadow: Option<Arc<T>>,
}

impl<T> Clone for Route<T> {
    fn clone(&self) -> Self {
        Route {
            served: self.served.clone(),
            shadow: self.shadow.clone(),
        }
    }
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

impl<T: Served> ModelRoutes<T> {
    /// Builds the selector maps and the weighted list from the versions.
    pub fn new(
        versions: BTreeMap<u64, Arc<T>>,
        shadow: Option<Arc<T>>,
        routing: ModelRouting,
    ) -> ModelRoutes<T> {
        let mut stages = HashMap::new();
        let mut aliases = HashMap::new();
        // Ascending order: the highest-numbered version of a stage wins.
        for (number, served) in &versions {
            let stage = served.stage();
            if !stage.is_empty() && !stage.eq_ignore_ascii_case("none") {
                stages.insert(stage.to_ascii_lowercase(), *number);
            }
            for alias in served.aliases() {
                aliases.insert(alias.clone(), *number);
            }
        }
        let weighted: Vec<Arc<T>> = versions.values().rev().cloned().collect();
        let weights = weighted.iter().map(|s| s.weight()).collect();
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
    pub fn resolve(&self, selector: &str) -> Option<&Arc<T>> {
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
    pub fn primary(&self) -> Option<&Arc<T>> {
        self.weighted.iter().max_by_key(|s| (s.weight(), s.version()))
    }

    /// The weighted choice for a point in `[0, 2^64)`; none when every weight is 0 (a
    /// model with no serving version: requests must name one).
    pub fn weighted(&self, point: u64) -> Option<&Arc<T>> {
        choose_weighted(&self.weights, point).and_then(|i| self.weighted.get(i))
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

    /// The version a selector names, or a 404-worthy error.
    pub fn resolve_in(&self, model: &str, selector: &str) -> Result<Arc<T>, RouteError> {
        self.resolve(selector)
            .cloned()
            .ok_or_else(|| RouteError::UnknownVersion {
                model: model.to_string(),
                selector: selector.to_string(),
                available: self.describe(),
            })
    }

    /// The version answering a version-less metadata request: the highest weight.
    pub fn primary_in(&self, model: &str) -> Result<Arc<T>, RouteError> {
        self.primary().cloned().ok_or_else(|| RouteError::UnknownVersion {
            model: model.to_string(),
            selector: String::new(),
            available: self.describe(),
        })
    }

    /// Where an inference request goes; `random_point` draws the point of a request
    /// without a routing key.
    pub fn route(
        &self,
        model: &str,
        selection: Selection<'_>,
        random_point: impl FnOnce() -> u64,
    ) -> Result<Route<T>, RouteError> {
        let served = match selection.forced.or(selection.selector) {
            Some(selector) => self.resolve_in(model, selector)?,
            None => {
                let point = selection.routing_key.map_or_else(random_point, routing_point);
                self.weighted(point)
                    .cloned()
                    .ok_or_else(|| RouteError::NoTraffic {
                        model: model.to_string(),
                        available: self.describe(),
                    })?
            }
        };
        // A version never shadows itself (a forced request to the shadow version).
        let shadow = self
            .shadow
            .as_ref()
            .filter(|s| s.version() != served.version())
            .cloned();
        Ok(Route { served, shadow })
    }
}

/// Why a model/version pair does not resolve (404).
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
    /// A request named no version and none of the model's versions takes unnamed traffic
    /// (nothing in Production and no `champion` alias).
    NoTraffic {
        /// The model name.
        model: String,
        /// What can be named instead.
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
            RouteError::NoTraffic { model, available } => write!(
                f,
                "model `{model}` has no version that takes requests without a version selector (nothing is in Production and no `champion` alias names one); name a version ({available})"
            ),
        }
    }
}

impl From<RouteError> for crate::error::ApiError {
    fn from(e: RouteError) -> Self {
        crate::error::ApiError::new(404, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V(u64, u32);
    impl Served for V {
        fn version(&self) -> u64 {
            self.0
        }
        fn stage(&self) -> &str {
            if self.0 == 1 { "Production" } else { "Staging" }
        }
        fn aliases(&self) -> &[String] {
            &[]
        }
        fn weight(&self) -> u32 {
            self.1
        }
        fn open(&self) -> bool {
            self.0 == 1
        }
    }

    #[test]
    fn selectors_weights_and_sticky_keys() {
        let versions: BTreeMap<u64, Arc<V>> = [(1, Arc::new(V(1, 90))), (2, Arc::new(V(2, 10)))].into();
        let routes = ModelRoutes::new(versions, None, ModelRouting::default());
        assert_eq!(routes.resolve("production").map(|v| v.0), Some(1));
        assert_eq!(routes.resolve("latest").map(|v| v.0), Some(2));
        assert_eq!(routes.primary().map(|v| v.0), Some(1));
        let pick = |key: &str| {
            routes
                .route(
                    "m",
                    Selection {
                        routing_key: Some(key),
                        ..Default::default()
                    },
                    || 0,
                )
                .unwrap()
                .served
                .0
        };
        let canary = (0..1000).filter(|i| pick(&format!("user-{i}")) == 2).count();
        assert!(
            (50..150).contains(&canary),
            "about 10 % on the canary, got {canary}"
        );
        assert_eq!(pick("user-7"), pick("user-7"));
        let forced = Selection {
            forced: Some("2"),
            selector: Some("1"),
            routing_key: None,
        };
        assert_eq!(routes.route("m", forced, || 0).unwrap().served.0, 2);
        let err = routes
            .route(
                "m",
                Selection {
                    selector: Some("9"),
                    ..Default::default()
                },
                || 0,
            )
            .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("model `m` has no served version `9` (served versions: 1, 2; stages and aliases: production=1, staging=2)".into())
        );
    }
}
