//! [`EdgeApp`]: the HTTP API of `kiln serve` (seed predict, OIP v2) over models an edge
//! holds in-process, for hosts that hand it a request and send back what it returns
//! (the Spin component, the Cloudflare Worker, the browser package).

use crate::error::{ApiError, Protocol};
use crate::routes::Routes;
use crate::routing::{ModelRoutes, Route, Selection, Served};
use crate::{infer, seed};
use kiln_engine::{EngineError, ModelInfo, Tensor};
use kiln_node_api::{
    FORCE_VERSION_HEADER, ModelRouting, ROUTING_KEY_HEADER, SERVED_VERSION_HEADER, VersionRoute,
};
use serde_json::{Value, json};
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

/// What differs per platform.
pub trait EdgeEnv {
    /// Wall-clock time, for `timestamp` and `processing_time`.
    fn now_unix_seconds(&self) -> f64;
    /// Randomness for request ids and the traffic split of requests without a key.
    fn random_u128(&self) -> u128;
}

/// An HTTP request as the platform received it.
pub struct EdgeRequest<'a> {
    pub method: &'a str,
    /// The path, possibly with `?query`.
    pub path: &'a str,
    /// Header names in any case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl EdgeResponse {
    fn json(status: u16, body: &Value) -> EdgeResponse {
        EdgeResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// The body as JSON (for tests and the browser package).
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl From<ApiError> for EdgeResponse {
    fn from(e: ApiError) -> Self {
        EdgeResponse::json(e.status, &e.body())
    }
}

impl From<Result<EdgeResponse, ApiError>> for EdgeResponse {
    fn from(r: Result<EdgeResponse, ApiError>) -> Self {
        r.unwrap_or_else(EdgeResponse::from)
    }
}

/// A version with its routing facts.
pub struct EdgeVersion {
    pub model: EdgeModel,
    pub label: String,
    pub weight: u32,
    pub stage: String,
    pub aliases: Vec<String>,
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
}

/// The models an edge holds and how their traffic splits.
pub struct EdgeApp {
    models: BTreeMap<String, ModelRoutes<EdgeVersion>>,
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

    fn routes(&self, model: &str) -> Result<&ModelRoutes<EdgeVersion>, ApiError> {
        self.models
            .get(model)
            .ok_or_else(|| crate::routing::RouteError::UnknownModel(model.to_string()).into())
    }

    /// Answers one request.
    pub fn handle(&self, req: &EdgeRequest<'_>, env: &dyn EdgeEnv) -> EdgeResponse {
        let started = env.now_unix_seconds();
        let path = req.path.split(['?', '#']).next().unwrap_or("");
        let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let forced = header(req.headers, FORCE_VERSION_HEADER);
        let routing_key = header(req.headers, ROUTING_KEY_HEADER);
        let selection = |selector| Selection {
            forced,
            selector,
            routing_key,
        };
        let point = || (env.random_u128() >> 64) as u64;
        let (get, post) = (
            req.method.eq_ignore_ascii_case("GET"),
            req.method.eq_ignore_ascii_case("POST"),
        );
        let wrong_method = || ApiError::method_not_allowed(req.method, path).into();
        match segs.as_slice() {
            ["v1", "models", name, "predict"] if post => {
                let mut served = None;
                let result = self.seed(name, req.body, selection(None), point, started, env, &mut served);
                with_version(result, served)
            }
            ["v2"] if get => EdgeResponse::json(200, &infer::server_metadata()),
            ["v2", "health", "live"] if get => EdgeResponse::json(200, &json!({ "live": true })),
            ["v2", "health", "ready"] if get => EdgeResponse::json(200, &json!({ "ready": true })),
            ["v2", "models", name] if get => self.metadata(name, None).into(),
            ["v2", "models", name, "versions", v] if get => self.metadata(name, Some(v)).into(),
            ["v2", "models", name, "ready"] if get => self.ready(name, None).into(),
            ["v2", "models", name, "versions", v, "ready"] if get => self.ready(name, Some(v)).into(),
            ["v2", "models", name, "config"] if get => self.config(name, None).into(),
            ["v2", "models", name, "versions", v, "config"] if get => self.config(name, Some(v)).into(),
            ["v2", "models", name, "infer"] if post => self.infer(name, selection(None), point, req),
            ["v2", "models", name, "versions", v, "infer"] if post => {
                self.infer(name, selection(Some(v)), point, req)
            }
            ["v1", "models", _, "predict"]
            | ["v2", "models", _, "infer"]
            | ["v2", "models", _, "versions", _, "infer"] => wrong_method(),
            ["v2"]
            | ["v2", "health", "live" | "ready"]
            | ["v2", "models", _]
            | ["v2", "models", _, "ready" | "config"]
            | ["v2", "models", _, "versions", _]
            | ["v2", "models", _, "versions", _, "ready" | "config"] => wrong_method(),
            _ => ApiError::no_route(req.method, path).into(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn seed(
        &self,
        name: &str,
        body: &[u8],
        selection: Selection<'_>,
        point: impl FnOnce() -> u64,
        started: f64,
        env: &dyn EdgeEnv,
        served_label: &mut Option<String>,
    ) -> Result<EdgeResponse, ApiError> {
        let request = seed::parse(body)?;
        let routes = self.routes(name)?;
        let version = request.version.clone();
        // The selection borrows the request's selector only for the routing call.
        let route = routes.route(
            name,
            Selection {
                selector: version.as_deref(),
                ..selection
            },
            point,
        )?;
        let served = &route.served;
        *served_label = Some(served.label.clone());
        let info = &served.model.info;
        let batch = request.batch;
        let request_id = request.request_id.clone();
        let (input, rows) = seed::input_tensor(name, info, request)?;
        let outputs = served
            .model
            .backend
            .predict(vec![input])
            .map_err(|e| ApiError::from_engine(Protocol::Seed, &e))?;
        let answer = seed::Answer {
            batch,
            version_label: &served.label,
            request_id: request_id.unwrap_or_else(|| uuid_v4(env.random_u128())),
            timestamp: rfc3339(env.now_unix_seconds()),
            processing_time: (env.now_unix_seconds() - started).max(0.0),
        };
        let body = seed::response_body(info, &outputs, rows, answer)?;
        Ok(EdgeResponse::json(200, &body))
    }

    fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Arc<EdgeVersion>, &ModelRoutes<EdgeVersion>), ApiError> {
        let routes = self.routes(name)?;
        let served = match version {
            Some(selector) => routes.resolve_in(name, selector)?,
            None => routes.primary_in(name)?,
        };
        Ok((served, routes))
    }

    fn metadata(&self, name: &str, version: Option<&str>) -> Result<EdgeResponse, ApiError> {
        let (served, routes) = self.resolve(name, version)?;
        let versions = match version {
            Some(_) => vec![served.label.clone()],
            None => routes.versions.keys().map(u64::to_string).collect(),
        };
        Ok(EdgeResponse::json(
            200,
            &infer::model_metadata(&described(name, &served), versions),
        ))
    }

    fn config(&self, name: &str, version: Option<&str>) -> Result<EdgeResponse, ApiError> {
        let (served, _) = self.resolve(name, version)?;
        Ok(EdgeResponse::json(
            200,
            &infer::model_config(&described(name, &served)),
        ))
    }

    fn ready(&self, name: &str, version: Option<&str>) -> Result<EdgeResponse, ApiError> {
        let (served, _) = self.resolve(name, version)?;
        Ok(EdgeResponse::json(200, &infer::model_ready(name, &served.label)))
    }

    fn infer(
        &self,
        name: &str,
        selection: Selection<'_>,
        point: impl FnOnce() -> u64,
        req: &EdgeRequest<'_>,
    ) -> EdgeResponse {
        let route = match self
            .routes(name)
            .and_then(|r| Ok(r.route(name, selection, point)?))
        {
            Ok(route) => route,
            Err(e) => return e.into(),
        };
        let label = route.served.label.clone();
        with_version(self.run_infer(name, &route, req), Some(label))
    }

    fn run_infer(
        &self,
        name: &str,
        route: &Route<EdgeVersion>,
        req: &EdgeRequest<'_>,
    ) -> Result<EdgeResponse, ApiError> {
        let served = &route.served;
        let infer::Prepared {
            request,
            inputs,
            requested,
        } = infer::prepare(
            &served.model.info,
            header(req.headers, "content-encoding"),
            header(req.headers, crate::binary::HEADER_LENGTH),
            req.body,
        )?;
        let outputs = served
            .model
            .backend
            .predict(inputs)
            .map_err(|e| ApiError::from_engine(Protocol::Oip, &e))?;
        let encoded = infer::response(name, &served.label, &request, &requested, &outputs)?;
        let mut headers = vec![("content-type".to_string(), encoded.content_type.to_string())];
        if let Some(len) = encoded.header_length {
            headers.push((crate::binary::HEADER_LENGTH.to_string(), len.to_string()));
        }
        Ok(EdgeResponse {
            status: 200,
            headers,
            body: encoded.body,
        })
    }
}

fn described<'a>(name: &'a str, v: &'a EdgeVersion) -> infer::Described<'a> {
    infer::Described {
        name,
        info: &v.model.info,
        digest: &v.model.digest,
        stage: &v.stage,
        aliases: &v.aliases,
    }
}

/// A header's trimmed value, if present and not blank.
fn header<'r>(headers: &'r [(String, String)], name: &str) -> Option<&'r str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Adds the served-version header once a version was chosen, success or not.
fn with_version(result: Result<EdgeResponse, ApiError>, label: Option<String>) -> EdgeResponse {
    let mut response = result.unwrap_or_else(EdgeResponse::from);
    if let Some(label) = label {
        response.headers.push((SERVED_VERSION_HEADER.to_string(), label));
    }
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A version-4 UUID from 128 random bits.
pub fn uuid_v4(random: u128) -> String {
    let b = ((random & !(0xF << 76)) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// RFC 3339 UTC with microseconds, from Unix seconds.
pub fn rfc3339(unix_seconds: f64) -> String {
    let micros_total = (unix_seconds.max(0.0) * 1e6).round() as u64;
    let (secs, micros) = (micros_total / 1_000_000, micros_total % 1_000_000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_uuids_are_well_formed() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_795_795_200.25), "2026-11-27T16:00:00.250000Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000000Z");
        let id = uuid_v4(u128::MAX);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(percent_decode("a%20b%zz"), "a b%zz");
    }
}
