//! [`EdgeApp`]: Kiln's HTTP API over models an edge holds in-process and runs one request
//! at a time (the Spin component, the Cloudflare Worker, the browser package). It is
//! [`api::begin`] and [`Call::finish`](crate::api::Call::finish) with the model run in
//! between, on the edge's own engine.

use crate::api::{self, Env, Models, Request, Response, Step, Version};
use crate::error::Failure;
use crate::routes::Routes;
use crate::routing::{ModelRoutes, Served};
use kiln_node_api::{ModelRouting, VersionRoute};
use kiln_types::{EngineError, ModelInfo, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs one model version.
pub trait Backend {
    /// Runs the model on inputs already checked against its info.
    fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>;
}

/// One model version held by an edge.
pub struct EdgeModel {
    /// Registry model name.
    pub name: String,
    /// Registry version number.
    pub version: u64,
    /// SHA-256 (hex) of what was loaded (component or bundle).
    pub digest: String,
    pub info: ModelInfo,
    pub backend: Box<dyn Backend>,
}

/// A version with its routing facts.
pub struct EdgeVersion {
    pub model: EdgeModel,
    pub label: String,
    pub weight: u32,
    pub stage: String,
    pub aliases: Vec<String>,
    /// Whether the routes mark it open to every client (see [`crate::access`]).
    pub open: bool,
}

impl Served for EdgeVersion {
    fn version(&self) -> u64 {
        self.model.version
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

impl Version for EdgeVersion {
    fn label(&self) -> &str {
        &self.label
    }
    fn info(&self) -> &ModelInfo {
        &self.model.info
    }
    fn digest(&self) -> &str {
        &self.model.digest
    }
}

/// The models an edge holds and how their traffic splits.
pub struct EdgeApp {
    models: Models<EdgeVersion>,
}

impl EdgeApp {
    /// Builds the app; every version `routes` names must be among `models`. A model the
    /// routes do not name serves its highest version.
    pub fn new(models: Vec<EdgeModel>, routes: Routes) -> Result<EdgeApp, String> {
        let mut by_name: BTreeMap<String, BTreeMap<u64, EdgeModel>> = BTreeMap::new();
        for m in models {
            let name = m.name.clone();
            let version = m.version;
            if by_name
                .entry(name.clone())
                .or_default()
                .insert(version, m)
                .is_some()
            {
                return Err(format!("model `{name}` version {version} is given twice"));
            }
        }
        if let Some(name) = routes.models.keys().find(|n| !by_name.contains_key(*n)) {
            return Err(format!(
                "the routes name model `{name}`, which this edge does not hold (it holds: {})",
                by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut out = BTreeMap::new();
        for (name, held) in by_name {
            let routing = match routes.models.get(&name) {
                Some(r) => r.clone(),
                None => ModelRouting {
                    versions: held
                        .keys()
                        .next_back()
                        .map(|v| VersionRoute {
                            version: *v,
                            weight: 100,
                            ..Default::default()
                        })
                        .into_iter()
                        .collect(),
                    shadow: None,
                    serving: None,
                },
            };
            if let Some(missing) = routing.versions.iter().find(|r| !held.contains_key(&r.version)) {
                return Err(format!(
                    "the routes give model `{name}` version {}, which this edge does not hold (it holds: {})",
                    missing.version,
                    held.keys().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ));
            }
            let mut versions = BTreeMap::new();
            // `ModelRoutes` shares versions through `Arc` for the threaded runtime; an edge
            // runs one request at a time and its backends need not be `Send` (JS handles).
            #[allow(clippy::arc_with_non_send_sync)]
            for (number, model) in held {
                let route = routing.versions.iter().find(|r| r.version == number);
                versions.insert(
                    number,
                    Arc::new(EdgeVersion {
                        label: number.to_string(),
                        weight: route.map_or(0, |r| r.weight),
                        stage: route.map(|r| r.stage.clone()).unwrap_or_default(),
                        aliases: route.map(|r| r.aliases.clone()).unwrap_or_default(),
                        open: route.is_some_and(|r| r.open),
                        model,
                    }),
                );
            }
            // Edges do not run shadows: nothing here compares or counts them.
            out.insert(name, ModelRoutes::new(versions, None, routing));
        }
        Ok(EdgeApp { models: out })
    }

    /// Every held version, by model then version.
    pub fn versions(&self) -> impl Iterator<Item = &EdgeVersion> {
        self.models
            .values()
            .flat_map(|r| r.versions.values().map(|v| v.as_ref()))
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request<'_>, env: &dyn Env) -> Response {
        match api::begin(&self.models, req, env) {
            Step::Done(response) => response,
            Step::Run(mut call) => {
                let inputs = std::mem::take(&mut call.inputs);
                let outputs = call
                    .route
                    .served
                    .model
                    .backend
                    .predict(inputs)
                    .map_err(Failure::from);
                call.finish(outputs, env)
            }
        }
    }
}
